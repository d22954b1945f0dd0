/// @file detail/multiply_add.hpp
/// @brief a * b + c with the same rounding in every context (detail::multiply_add).
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <cmath>

namespace sparse_rtrl {
namespace detail {

/// a * b + c, fused into one rounding where the target has an FMA instruction and as two
/// roundings where it has none, whatever the context it is inlined into. GCC contracts a * b + c
/// into an FMA by default (-ffp-contract=fast) but not in every context: moved into another
/// loop, the same source line of the immediate Jacobian gave other bits. The scalar arithmetic
/// the learners' results depend on is spelled out with it, so that moving code keeps the bits.
template <typename Scalar>
inline Scalar multiply_add(Scalar a, Scalar b, Scalar c) {
#if defined(__FP_FAST_FMA) && defined(__FP_FAST_FMAF)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

}  // namespace detail
}  // namespace sparse_rtrl
