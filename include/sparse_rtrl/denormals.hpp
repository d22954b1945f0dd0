/// @file denormals.hpp
/// @brief Opt-in flushing of subnormal floats for the calling thread, for the RTRL hot path.
///
/// Why: entries of the influence matrix M of long-silent units decay geometrically (by z each
/// step) and end up subnormal (|m| < 1.2e-38 in float). Arithmetic on subnormals is slow on many
/// CPUs: on this project's AMD EPYC the sparse step at n = 256 (bench_rtrl) took 3.35 ms with
/// them and 2.52 ms with flush-to-zero / denormals-are-zero set, for the same counted work.
///
/// What it changes: values below the smallest normal number (1.2e-38 float, 2.2e-308 double)
/// are read and written as zero. The gradient then differs from the IEEE result by at most such
/// amounts per entry, far below float rounding of any gradient of normal size, but it is no
/// longer bitwise the unflushed result: that is why it is opt-in.
///
/// Usage: `sparse_rtrl::ScopedFlushDenormals guard;` in the thread that calls Rtrl::step(); the
/// previous mode is restored when the guard leaves scope. On targets without SSE control
/// registers it does nothing and active() returns false.
#pragma once

#if defined(__SSE__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 1)
#include <xmmintrin.h>
#define SPARSE_RTRL_HAVE_MXCSR 1
#endif

namespace sparse_rtrl {

class ScopedFlushDenormals {
 public:
  ScopedFlushDenormals() {
#if defined(SPARSE_RTRL_HAVE_MXCSR)
    saved_ = _mm_getcsr();
    // FTZ (bit 15): results that would be subnormal become zero; DAZ (bit 6): subnormal inputs
    // are read as zero.
    _mm_setcsr(saved_ | kFlushToZero | kDenormalsAreZero);
#endif
  }
  ~ScopedFlushDenormals() {
#if defined(SPARSE_RTRL_HAVE_MXCSR)
    _mm_setcsr(saved_);
#endif
  }
  ScopedFlushDenormals(const ScopedFlushDenormals&) = delete;
  ScopedFlushDenormals& operator=(const ScopedFlushDenormals&) = delete;

  /// True when this target lets the guard change the mode.
  static constexpr bool active() {
#if defined(SPARSE_RTRL_HAVE_MXCSR)
    return true;
#else
    return false;
#endif
  }

 private:
  static constexpr unsigned kFlushToZero = 0x8000u;
  static constexpr unsigned kDenormalsAreZero = 0x0040u;
  unsigned saved_ = 0;
};

}  // namespace sparse_rtrl
