/// @file threshold_constraint.hpp
/// @brief Keeps the event thresholds theta in a range after an optimizer step (opt-in).
///
/// The bound |c_t| < 1 (model.md, "Thresholds and the bound on c") holds only for theta >= 0:
/// with theta_i < 0 a firing unit's reset h = c - theta adds |theta| to c, and with the update
/// gate saturated (z -> 1) c then grows by |theta| per step, without bound. Gradient descent
/// does drive thresholds negative on long online runs (docs/model.md has the soak that found
/// it). Nothing in the model forbids theta < 0, so this is a projection the caller applies after
/// each optimizer step, not a default:
///
///     adam.step(model, g);
///     clamp_thresholds(model);   // theta <- min(max(theta, 0), +inf)
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/model/egru_parameters.hpp>
#include <sparse_rtrl/model/model.hpp>

#include <cmath>
#include <limits>
#include <sstream>

namespace sparse_rtrl {

namespace detail {
template <typename Scalar>
void require_threshold_range(const char* where, Scalar lo, Scalar hi) {
  // Negated comparisons also refuse NaN; -inf as lo or +inf as hi means "no bound".
  if (!(lo <= hi) || (std::isinf(lo) && lo > 0) || (std::isinf(hi) && hi < 0)) {
    std::ostringstream s;
    s << "the range must have min_threshold <= max_threshold, neither NaN, received [" << lo << ", " << hi << "]";
    fail(where, s.str());
  }
}
}  // namespace detail

/// @brief theta <- clamp(theta, @p min_threshold, @p max_threshold), elementwise, in place.
/// Projected gradient descent onto the box: applied after each optimizer step it keeps every
/// threshold in range. Allocation-free, O(n).
/// @return the number of thresholds that were moved.
template <typename Scalar>
Index clamp_thresholds(EgruParameters<Scalar>& params, Scalar min_threshold = Scalar(0),
                       Scalar max_threshold = std::numeric_limits<Scalar>::infinity()) {
  detail::require_threshold_range("sparse_rtrl::clamp_thresholds()", min_threshold, max_threshold);
  Index moved = 0;
  for (Index i = 0; i < params.theta.size(); ++i) {
    Scalar& t = params.theta(i);
    const Scalar c = t < min_threshold ? min_threshold : (t > max_threshold ? max_threshold : t);
    moved += c != t;
    t = c;
  }
  return moved;
}

/// @brief The same for every layer of @p model.
template <typename Scalar, typename Surrogate>
Index clamp_thresholds(Model<Scalar, Surrogate>& model, Scalar min_threshold = Scalar(0),
                       Scalar max_threshold = std::numeric_limits<Scalar>::infinity()) {
  detail::require_threshold_range("sparse_rtrl::clamp_thresholds()", min_threshold, max_threshold);
  Index moved = 0;
  for (Index k = 0; k < model.layers(); ++k)
    moved += clamp_thresholds(model.parameters(k), min_threshold, max_threshold);
  return moved;
}

}  // namespace sparse_rtrl
