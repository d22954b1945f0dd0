/// @file activity_regularizer.hpp
/// @brief A loss on the events o_t that pushes the network toward a target event rate.
///
/// L_reg,t = strength * (rate_t - target)^2 with rate_t = mean_i o_t,i. Its gradient is a loss
/// on o_t: dL/do_t,i = 2 strength (rate_t - target) / n, which Rtrl::accumulate_gradient(dL_dy,
/// dL_do) and Bptt::backward(G, G_events) carry exactly through the surrogate (do/dc = psi,
/// do/dtheta = -psi). Only units inside the surrogate's window feel it, so a narrow eps makes
/// the regulariser act on the units near threshold, the ones whose events it can change.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>

#include <Eigen/Core>

#include <cmath>
#include <sstream>

namespace sparse_rtrl {

template <typename Scalar>
class ActivityRegularizer {
 public:
  /// @param target_rate desired fraction of units with events per step, in [0, 1].
  /// @param strength weight of the penalty, >= 0.
  ActivityRegularizer(Scalar target_rate, Scalar strength) : target_(target_rate), strength_(strength) {
    const char* where = "sparse_rtrl::ActivityRegularizer::ActivityRegularizer()";
    if (!(target_rate >= 0 && target_rate <= 1)) {
      std::ostringstream s;
      s << "target_rate must be in [0, 1], received " << target_rate;
      detail::fail(where, s.str());
    }
    if (!(std::isfinite(strength) && strength >= 0)) {
      std::ostringstream s;
      s << "strength must be finite and >= 0, received " << strength;
      detail::fail(where, s.str());
    }
  }

  Scalar target_rate() const { return target_; }
  Scalar strength() const { return strength_; }

  /// Penalty of one step's events o (a row or column vector of size n >= 1, entries 0 or 1,
  /// e.g. Rtrl::events()); anything else throws std::invalid_argument.
  template <typename O>
  Scalar loss(const Eigen::MatrixBase<O>& o) const {
    const Scalar gap = rate("sparse_rtrl::ActivityRegularizer::loss()", o) - target_;
    return strength_ * gap * gap;
  }

  /// Writes dL/do (size n) into @p dL_do; o as for loss(). Allocates nothing; on a throw
  /// @p dL_do is unchanged.
  template <typename O, typename G>
  void gradient(const Eigen::MatrixBase<O>& o, Eigen::MatrixBase<G>& dL_do) const {
    const char* where = "sparse_rtrl::ActivityRegularizer::gradient()";
    const Scalar r = rate(where, o);
    detail::require_vector(where, "dL_do", dL_do, o.size());
    const Scalar g = Scalar(2) * strength_ * (r - target_) / Scalar(o.size());
    for (Index i = 0; i < o.size(); ++i) dL_do(i) = g;
  }

 private:
  /// Mean of o after checking that o is a non-empty vector of 0s and 1s.
  template <typename O>
  static Scalar rate(const char* where, const Eigen::MatrixBase<O>& o) {
    if (o.size() == 0) detail::fail(where, "events vector o must not be empty");
    if (o.rows() != 1 && o.cols() != 1)
      detail::fail(where, "o must be a vector of events, received " + detail::shape_string(o.rows(), o.cols()));
    Index count = 0;
    for (Index i = 0; i < o.size(); ++i) {
      const Scalar v = o(i);
      if (v == Scalar(1)) {
        ++count;
      } else if (v != Scalar(0)) {
        std::ostringstream s;
        s << "events must be 0 or 1, received " << v << " at " << i;
        detail::fail(where, s.str());
      }
    }
    return Scalar(count) / Scalar(o.size());
  }

  Scalar target_, strength_;
};

}  // namespace sparse_rtrl
