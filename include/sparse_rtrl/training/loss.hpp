/// @file loss.hpp
/// @brief Per-step losses on a readout's logits, each returning L and dL/dlogits.
///
///   softmax cross-entropy, integer class c:  L = logsumexp(l) - l_c,  dL/dl = softmax(l) - e_c
///   mean-squared error, target u (size k):   L = (1/k) sum_i (l_i - u_i)^2,  dL/dl = (2/k)(l - u)
/// (the mean over the k outputs, as torch.nn.MSELoss with reduction 'mean').
///
/// A loss is a function of one step's logits. Where losses are taken is the caller's loop: at
/// every step (sequence labelling, online prediction), or only at chosen steps (e.g. the last
/// step of a sequence for classification). A step without a loss simply makes no call:
///
///     rtrl.step(x_t);
///     if (has_loss(t)) {
///       readout.forward(rtrl.output(), logits);
///       L += softmax_cross_entropy(logits, label(t), dL_dlogits);
///       readout.backward(rtrl.output(), dL_dlogits, dL_dy);
///       rtrl.accumulate_gradient(dL_dy);
///     }
///
/// which gives the gradient of the sum of the losses taken; for BPTT, row t of G is dL_dy at a
/// step with a loss and zero elsewhere. Scale the returned gradient (e.g. by 1/T) for a mean.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/model/egru_parameters.hpp>

#include <Eigen/Core>

#include <cmath>
#include <string>
#include <type_traits>

namespace sparse_rtrl {

/// @brief A loss value and its gradient with respect to the logits (allocating loss forms).
template <typename Scalar>
struct LossAndGradient {
  Scalar loss;                                    ///< L
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> gradient;  ///< dL/dlogits, size k
};

/// @brief Softmax cross-entropy of logits against class @p target, numerically stable
///        (log-sum-exp shifted by the largest logit, so no exp overflows). Allocation-free.
/// @param logits l, size k >= 1, finite (row or column vector).
/// @param target the true class, in [0, k).
/// @param dL_dlogits output, size k (preallocated): softmax(l) - e_target.
/// @return L = logsumexp(l) - l_target >= 0.
template <typename L>
typename L::Scalar softmax_cross_entropy(
    const Eigen::MatrixBase<L>& logits, Index target,
    Eigen::Ref<Eigen::Matrix<typename L::Scalar, Eigen::Dynamic, 1>> dL_dlogits) {
  using Scalar = typename L::Scalar;
  static_assert(std::is_floating_point<Scalar>::value, "softmax_cross_entropy: logits must be float or double");
  const char* where = "sparse_rtrl::softmax_cross_entropy()";
  const Index k = logits.size();
  if (k < 1 || (logits.rows() != 1 && logits.cols() != 1))
    detail::fail(where, "logits must be a nonempty vector, received " + detail::shape_string(logits.rows(), logits.cols()));
  detail::require_finite(where, "logits", logits);
  if (target < 0 || target >= k)
    detail::fail(where, "target must be in [0, " + std::to_string(k) + "), received " + std::to_string(target));
  detail::require_vector(where, "dL_dlogits", dL_dlogits, k);
  // Read before writing: dL_dlogits may be the same vector as logits.
  const Scalar l_target = logits(target);
  Scalar top = logits(0);
  for (Index i = 1; i < k; ++i) top = std::max(top, logits(i));
  // Every exp argument is <= 0, and the largest term is exp(0) = 1, so the sum is in [1, k].
  Scalar sum(0);
  for (Index i = 0; i < k; ++i) {
    dL_dlogits(i) = std::exp(logits(i) - top);
    sum += dL_dlogits(i);
  }
  const Scalar log_sum = std::log(sum);
  dL_dlogits /= sum;
  dL_dlogits(target) -= Scalar(1);
  // L = top + log_sum - l_target; grouped so that a confident correct prediction gives exactly
  // log(sum) (small) instead of a difference of two large numbers.
  return log_sum + (top - l_target);
}

/// Allocating form of softmax_cross_entropy().
template <typename L>
LossAndGradient<typename L::Scalar> softmax_cross_entropy(const Eigen::MatrixBase<L>& logits, Index target) {
  LossAndGradient<typename L::Scalar> out;
  out.gradient.resize(logits.size());
  out.loss = softmax_cross_entropy(logits, target, out.gradient);
  return out;
}

/// @brief Mean-squared error (1/k) sum (l - u)^2 and its gradient (2/k)(l - u). Allocation-free.
/// @param prediction l, size k >= 1, finite (row or column vector).
/// @param target u, size k, finite (row or column vector).
/// @param dL_dprediction output, size k (preallocated).
template <typename P, typename U>
typename P::Scalar mean_squared_error(
    const Eigen::MatrixBase<P>& prediction, const Eigen::MatrixBase<U>& target,
    Eigen::Ref<Eigen::Matrix<typename P::Scalar, Eigen::Dynamic, 1>> dL_dprediction) {
  using Scalar = typename P::Scalar;
  static_assert(std::is_floating_point<Scalar>::value, "mean_squared_error: prediction must be float or double");
  static_assert(std::is_same<Scalar, typename U::Scalar>::value,
                "mean_squared_error: prediction and target must have the same scalar type");
  const char* where = "sparse_rtrl::mean_squared_error()";
  const Index k = prediction.size();
  if (k < 1 || (prediction.rows() != 1 && prediction.cols() != 1))
    detail::fail(where, "prediction must be a nonempty vector, received " +
                            detail::shape_string(prediction.rows(), prediction.cols()));
  detail::require_finite(where, "prediction", prediction);
  detail::require_vector(where, "target", target, k);
  detail::require_finite(where, "target", target);
  detail::require_vector(where, "dL_dprediction", dL_dprediction, k);
  Scalar sum(0);
  const Scalar scale = Scalar(2) / Scalar(k);
  // Bounded by the output's own size (equal to k once validated): GCC's -Warray-bounds cannot
  // tell that a mismatch has already thrown.
  for (Index i = 0; i < dL_dprediction.size(); ++i) {
    const Scalar e = prediction(i) - target(i);
    sum += e * e;
    dL_dprediction(i) = scale * e;
  }
  return sum / Scalar(k);
}

/// Allocating form of mean_squared_error().
template <typename P, typename U>
LossAndGradient<typename P::Scalar> mean_squared_error(const Eigen::MatrixBase<P>& prediction,
                                                       const Eigen::MatrixBase<U>& target) {
  LossAndGradient<typename P::Scalar> out;
  out.gradient.resize(prediction.size());
  out.loss = mean_squared_error(prediction, target, out.gradient);
  return out;
}

}  // namespace sparse_rtrl
