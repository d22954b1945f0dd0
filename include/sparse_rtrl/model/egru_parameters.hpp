/// @file egru_parameters.hpp
/// @brief EGRU parameters in torch.nn.GRU layout (model.md, "Parameters").
///
/// Gate order in every stacked block is (r, z, g): rows [0, n) are the reset gate, [n, 2n) the
/// update gate, [2n, 3n) the candidate. The same struct holds gradients, in the same layout.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/random.hpp>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

namespace sparse_rtrl {

using Index = Eigen::Index;

/// Index of the gate blocks inside the stacked 3n rows.
enum Gate : int { kResetGate = 0, kUpdateGate = 1, kCandidateGate = 2 };

/// @brief Parameters (or their gradient) of one EGRU layer with n units and d inputs.
/// @tparam Scalar float or double.
template <typename Scalar>
struct EgruParameters {
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  Matrix W;      ///< 3n x d, torch weight_ih_l0
  Matrix R;      ///< 3n x n, torch weight_hh_l0
  Vector bW;     ///< 3n, torch bias_ih_l0
  Vector bR;     ///< 3n, torch bias_hh_l0
  Vector theta;  ///< n, per-unit event threshold (no torch counterpart)

  EgruParameters() = default;

  /// All-zero parameters for n units and d inputs.
  EgruParameters(Index n_units, Index n_inputs) {
    const char* where = "sparse_rtrl::EgruParameters::EgruParameters()";
    detail::require_positive_size(where, "n_units", n_units);
    detail::require_positive_size(where, "n_inputs", n_inputs);
    detail::require_layer_sizes(where, n_units, n_inputs);
    W.setZero(3 * n_units, n_inputs);
    R.setZero(3 * n_units, n_units);
    bW.setZero(3 * n_units);
    bR.setZero(3 * n_units);
    theta.setZero(n_units);
  }

  Index units() const { return R.cols(); }
  Index inputs() const { return W.cols(); }
  /// Number of scalars over all five tensors.
  Index size() const { return W.size() + R.size() + bW.size() + bR.size() + theta.size(); }

  /// True when all five tensors are shaped for n units and d inputs (O(1)).
  bool has_shape(Index n_units, Index n_inputs) const {
    return W.rows() == 3 * n_units && W.cols() == n_inputs && R.rows() == 3 * n_units &&
           R.cols() == n_units && bW.size() == 3 * n_units && bR.size() == 3 * n_units &&
           theta.size() == n_units;
  }

  /// The five shapes, e.g. "n = 3, d = 2 (W 9 x 2, R 9 x 3, bW 9, bR 9, theta 3)", for messages.
  std::string shape_string() const {
    return "n = " + std::to_string(units()) + ", d = " + std::to_string(inputs()) + " (W " +
           detail::shape_string(W.rows(), W.cols()) + ", R " + detail::shape_string(R.rows(), R.cols()) +
           ", bW " + std::to_string(bW.size()) + ", bR " + std::to_string(bR.size()) + ", theta " +
           std::to_string(theta.size()) + ")";
  }

  void set_zero() {
    W.setZero();
    R.setZero();
    bW.setZero();
    bR.setZero();
    theta.setZero();
  }

  /// Throws std::invalid_argument (naming @p where) unless shapes agree and values are finite.
  void validate(const char* where) const {
    // n is read off R's rows (3n); every other shape is checked against it.
    if (R.rows() % 3 != 0 || R.rows() == 0)
      detail::fail(where, "R must be 3n x n with n > 0, received " + detail::shape_string(R.rows(), R.cols()));
    const Index n = R.rows() / 3;
    const Index d = W.cols();
    detail::require_positive_size(where, "number of inputs (W.cols())", d);
    detail::require_shape(where, "W", W, 3 * n, d);
    detail::require_shape(where, "R", R, 3 * n, n);
    detail::require_shape(where, "bW", bW, 3 * n, 1);
    detail::require_shape(where, "bR", bR, 3 * n, 1);
    detail::require_shape(where, "theta", theta, n, 1);
    detail::require_finite(where, "W", W);
    detail::require_finite(where, "R", R);
    detail::require_finite(where, "bW", bW);
    detail::require_finite(where, "bR", bR);
    detail::require_finite(where, "theta", theta);
  }

  /// Element-wise sum; both operands must have the same five shapes (else
  /// std::invalid_argument naming both, and *this is unchanged).
  EgruParameters& operator+=(const EgruParameters& other) {
    const bool same = W.rows() == other.W.rows() && W.cols() == other.W.cols() &&
                      R.rows() == other.R.rows() && R.cols() == other.R.cols() &&
                      bW.size() == other.bW.size() && bR.size() == other.bR.size() &&
                      theta.size() == other.theta.size();
    if (!same)
      detail::fail("sparse_rtrl::EgruParameters::operator+=()",
                   "shapes must agree, received this: " + shape_string() + " and other: " + other.shape_string());
    W += other.W;
    R += other.R;
    bW += other.bW;
    bR += other.bR;
    theta += other.theta;
    return *this;
  }

  template <typename Other>
  EgruParameters<Other> cast() const {
    EgruParameters<Other> out;
    out.W = W.template cast<Other>();
    out.R = R.template cast<Other>();
    out.bW = bW.template cast<Other>();
    out.bR = bR.template cast<Other>();
    out.theta = theta.template cast<Other>();
    return out;
  }
};

/// @brief Options of the default initialisation.
template <typename Scalar>
struct InitOptions {
  std::uint64_t seed = 0;       ///< seeds the portable generator: same seed, same weights
  Scalar threshold = Scalar(0.3);  ///< every theta_i (model.md default)
};

/// @brief torch.nn.GRU's initialisation: every weight and bias uniform in [-1/sqrt(n), 1/sqrt(n)];
///        thresholds constant.
template <typename Scalar>
EgruParameters<Scalar> init_torch_like(Index n_units, Index n_inputs,
                                       const InitOptions<Scalar>& options = {}) {
  const char* where = "sparse_rtrl::init_torch_like()";
  detail::require_positive_size(where, "n_units", n_units);
  detail::require_positive_size(where, "n_inputs", n_inputs);
  detail::require_layer_sizes(where, n_units, n_inputs);
  if (!std::isfinite(static_cast<double>(options.threshold))) {
    std::ostringstream s;
    s << "options.threshold must be finite, received " << options.threshold;
    detail::fail(where, s.str());
  }
  EgruParameters<Scalar> p(n_units, n_inputs);
  detail::UniformRandom rng(options.seed);
  const double k = 1.0 / std::sqrt(static_cast<double>(n_units));
  auto fill = [&](auto& m) {
    for (Index j = 0; j < m.cols(); ++j)
      for (Index i = 0; i < m.rows(); ++i) m(i, j) = static_cast<Scalar>(rng.uniform(-k, k));
  };
  fill(p.W);
  fill(p.R);
  fill(p.bW);
  fill(p.bR);
  p.theta.setConstant(options.threshold);
  return p;
}

}  // namespace sparse_rtrl
