/// @file readout.hpp
/// @brief A linear readout of the EGRU's event output: logits_t = V y_t + b (V is k x n).
///
/// The readout is the link between a loss (loss.hpp) and the recurrent learners: backward()
/// turns dL/dlogits_t into dL/dy_t = V^T dL/dlogits_t, which is exactly what
/// Rtrl::accumulate_gradient() takes, or what goes into row t of Bptt::backward()'s G. On the way
/// it accumulates its own gradient, dL/dV += dL/dlogits_t y_t^T and dL/db += dL/dlogits_t, so a
/// loss at any subset of steps sums into one gradient that an optimizer (optimizer.hpp) consumes.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/random.hpp>
#include <sparse_rtrl/model/egru_parameters.hpp>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

namespace sparse_rtrl {

/// @brief Parameters (or their gradient) of a linear readout with k outputs reading n units.
///
/// Like EgruParameters, the same struct holds values and gradients, so optimizers see one layout.
/// @tparam Scalar float or double.
template <typename Scalar>
struct ReadoutParameters {
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  Matrix V;  ///< k x n weights
  Vector b;  ///< k biases

  ReadoutParameters() = default;

  /// All-zero parameters for k outputs reading n units.
  ReadoutParameters(Index n_outputs, Index n_units) {
    const char* where = "sparse_rtrl::ReadoutParameters::ReadoutParameters()";
    detail::require_positive_size(where, "n_outputs", n_outputs);
    detail::require_positive_size(where, "n_units", n_units);
    V.setZero(n_outputs, n_units);
    b.setZero(n_outputs);
  }

  Index outputs() const { return V.rows(); }
  Index units() const { return V.cols(); }
  /// Number of scalars over both tensors.
  Index size() const { return V.size() + b.size(); }

  void set_zero() {
    V.setZero();
    b.setZero();
  }

  /// Throws std::invalid_argument (naming @p where) unless shapes agree and values are finite.
  void validate(const char* where) const {
    detail::require_positive_size(where, "number of outputs (V.rows())", V.rows());
    detail::require_positive_size(where, "number of units (V.cols())", V.cols());
    detail::require_shape(where, "b", b, V.rows(), 1);
    detail::require_finite(where, "V", V);
    detail::require_finite(where, "b", b);
  }

  /// Element-wise sum; both operands must have the same shapes (else std::invalid_argument
  /// naming both, and *this is unchanged: Eigen's own check is compiled out under NDEBUG, and a
  /// mismatch would write past V's end).
  ReadoutParameters& operator+=(const ReadoutParameters& other) {
    if (V.rows() != other.V.rows() || V.cols() != other.V.cols() || b.size() != other.b.size())
      detail::fail("sparse_rtrl::ReadoutParameters::operator+=()",
                   "shapes must agree, received this: V " + detail::shape_string(V.rows(), V.cols()) +
                       ", b " + std::to_string(b.size()) + " and other: V " +
                       detail::shape_string(other.V.rows(), other.V.cols()) + ", b " +
                       std::to_string(other.b.size()));
    V += other.V;
    b += other.b;
    return *this;
  }
};

/// @brief Initialisation of a readout: V uniform in [-1/sqrt(n), 1/sqrt(n)] (torch.nn.Linear's
///        range), b = 0, from a portable seeded generator (same seed, same weights everywhere).
struct ReadoutInitOptions {
  std::uint64_t seed = 0;  ///< seeds the portable generator
};

/// @brief logits = V y + b, with its own gradient accumulator.
///
/// Per step with a loss: forward(y_t, logits); loss gives dL/dlogits; backward(y_t, dL/dlogits,
/// dL_dy) accumulates dV, db and writes dL/dy_t for the recurrent learner. y_t must be the same
/// vector in both calls (Rtrl::output() after Rtrl::step()). gradient() holds the sum over all
/// backward() calls since zero_gradient().
/// @tparam Scalar float or double.
template <typename Scalar>
class LinearReadout {
  static_assert(std::is_floating_point<Scalar>::value, "LinearReadout: Scalar must be float or double");

 public:
  using Parameters = ReadoutParameters<Scalar>;
  using Matrix = typename Parameters::Matrix;
  using Vector = typename Parameters::Vector;

  /// @brief Seeded random weights, zero bias (see ReadoutInitOptions).
  /// @param n_outputs k, the number of logits.
  /// @param n_units n, the size of the recurrent layer's output y.
  /// @param init seed of the generator.
  LinearReadout(Index n_outputs, Index n_units, const ReadoutInitOptions& init = {})
      : params_(n_outputs, n_units), grad_(n_outputs, n_units) {
    detail::UniformRandom rng(init.seed);
    const double k = 1.0 / std::sqrt(static_cast<double>(n_units));
    for (Index j = 0; j < params_.V.cols(); ++j)
      for (Index i = 0; i < params_.V.rows(); ++i) params_.V(i, j) = static_cast<Scalar>(rng.uniform(-k, k));
  }

  /// @brief User-given parameters (validated: b must have V.rows() entries, all finite).
  explicit LinearReadout(Parameters params) : params_(std::move(params)) {
    params_.validate("sparse_rtrl::LinearReadout::LinearReadout()");
    grad_ = Parameters(outputs(), units());
  }

  Index outputs() const { return params_.V.rows(); }
  Index units() const { return params_.V.cols(); }

  const Parameters& parameters() const { return params_; }
  /// Mutable parameters, e.g. for an optimizer. Shapes must not change.
  Parameters& parameters() { return params_; }
  /// The gradient accumulated by backward() since the last zero_gradient().
  const Parameters& gradient() const { return grad_; }
  /// Mutable gradient, e.g. for clip_gradient_norm().
  Parameters& gradient() { return grad_; }
  void zero_gradient() { grad_.set_zero(); }

  /// @brief logits = V y + b. Allocation-free. Non-finite logits (a non-finite V or b) throw
  /// std::invalid_argument naming the parameter.
  /// @param y the recurrent output y_t (size n, row or column vector, finite).
  /// @param logits output, size k (preallocated).
  template <typename Y>
  void forward(const Eigen::MatrixBase<Y>& y, Eigen::Ref<Vector> logits) const {
    const char* where = "sparse_rtrl::LinearReadout::forward()";
    require_input(where, y);
    detail::require_vector(where, "logits", logits, outputs());
    // Element by element, not `logits = b`: GCC 12 at -O3 cannot tell that the size check above
    // has run and warns (-Wstringop-overflow) on Eigen's packet store into the Ref, in every
    // program that calls this; the loop is bounded by the Ref's own size (k once validated).
    for (Index i = 0; i < logits.size(); ++i) logits(i) = params_.b(i);
    for (Index j = 0; j < units(); ++j) {
      // Event outputs are mostly zero: a silent unit's column costs nothing.
      const Scalar yj = y(j);
      if (yj != Scalar(0)) logits.noalias() += yj * params_.V.col(j);
    }
    // A non-finite V or b (written through parameters()) shows in the logits: named here rather
    // than handed on as NaN. O(k); the O(kn) scan of the parameters runs only on failure.
    if (!logits.allFinite()) {
      params_.validate(where);
      detail::fail(where, "the logits are not finite (V and b are finite: y or the weights are too large)");
    }
  }

  /// Allocating form of forward().
  template <typename Y>
  Vector forward(const Eigen::MatrixBase<Y>& y) const {
    Vector logits(outputs());
    forward(y, logits);
    return logits;
  }

  /// @brief Accumulates dV += g y^T, db += g for g = dL/dlogits, and writes dL/dy = V^T g.
  /// Allocation-free.
  /// @param y the same y_t that forward() read (size n, finite).
  /// @param dL_dlogits g (size k, finite).
  /// @param dL_dy output, size n (preallocated): pass it to Rtrl::accumulate_gradient().
  template <typename Y, typename G>
  void backward(const Eigen::MatrixBase<Y>& y, const Eigen::MatrixBase<G>& dL_dlogits,
                Eigen::Ref<Vector> dL_dy) {
    const char* where = "sparse_rtrl::LinearReadout::backward()";
    require_input(where, y);
    detail::require_vector(where, "dL_dlogits", dL_dlogits, outputs());
    detail::require_finite(where, "dL_dlogits", dL_dlogits);
    detail::require_vector(where, "dL_dy", dL_dy, units());
    const Index k = outputs();
    for (Index j = 0; j < units(); ++j) {
      const Scalar yj = y(j);
      Scalar acc(0);
      for (Index i = 0; i < k; ++i) {
        const Scalar gi = dL_dlogits(i);
        acc += params_.V(i, j) * gi;
        grad_.V(i, j) += gi * yj;
      }
      dL_dy(j) = acc;
    }
    for (Index i = 0; i < k; ++i) grad_.b(i) += dL_dlogits(i);
  }

  /// Allocating form of backward(); returns dL/dy.
  template <typename Y, typename G>
  Vector backward(const Eigen::MatrixBase<Y>& y, const Eigen::MatrixBase<G>& dL_dlogits) {
    Vector dL_dy(units());
    backward(y, dL_dlogits, dL_dy);
    return dL_dy;
  }

 private:
  template <typename Y>
  void require_input(const char* where, const Eigen::MatrixBase<Y>& y) const {
    detail::require_vector(where, "y", y, units());
    detail::require_finite(where, "y", y);
  }

  Parameters params_;
  Parameters grad_;
};

}  // namespace sparse_rtrl
