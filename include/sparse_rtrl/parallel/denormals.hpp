/// @file denormals.hpp
/// @brief Subnormal floats on the RTRL hot path: flushed by default, strict IEEE on request.
///
/// Why: entries of the influence matrix M of long-silent units decay geometrically (by z each
/// step) and end up subnormal (|m| < 1.2e-38 in float). Arithmetic on subnormals takes a slow
/// microcode path on most x86 CPUs: on an Intel Xeon the n = 256 sparse step becomes 6-13x slower
/// after a few hundred steps, on an AMD EPYC about 1.3x. The learners therefore run every step
/// (on every thread that touches M) with subnormals flushed, and restore the caller's mode after.
///
/// What it changes: results that would be below the smallest normal number (1.2e-38 float,
/// 2.2e-308 double) are written as zero, and such inputs are read as zero. Nothing else: normal
/// numbers round exactly as under IEEE. An entry of M or of the gradient can then differ from the
/// strict-IEEE value by at most about that threshold, far below float rounding of any gradient of
/// normal size; the golden PyTorch cases pass at 1e-10 either way (tests/learners/golden.test.cpp).
/// Learners take an option for strict IEEE (RtrlOptions::flush_subnormals = false).
///
/// Targets: x86 / x86-64 with SSE (MXCSR bits FTZ and DAZ) and AArch64 (FPCR.FZ). Elsewhere the
/// guards do nothing and flush_subnormals_supported() is false: results are then strict IEEE and
/// long runs may be slower on CPUs with slow subnormals.
#pragma once

#include <cstdint>

#if defined(__SSE__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 1)
#include <xmmintrin.h>
#define SPARSE_RTRL_HAVE_MXCSR 1
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define SPARSE_RTRL_HAVE_FPCR 1
#endif

namespace sparse_rtrl {

/// True when this target lets the library flush subnormals (x86 SSE, AArch64).
constexpr bool flush_subnormals_supported() {
#if defined(SPARSE_RTRL_HAVE_MXCSR) || defined(SPARSE_RTRL_HAVE_FPCR)
  return true;
#else
  return false;
#endif
}

namespace detail {

#if defined(SPARSE_RTRL_HAVE_MXCSR)
using FloatControlWord = unsigned;
// FTZ (bit 15): results that would be subnormal become zero; DAZ (bit 6): subnormal inputs are
// read as zero.
constexpr FloatControlWord kFlushBits = 0x8000u | 0x0040u;
// Bits 0-5 are sticky exception flags (status, not mode): inexact arithmetic sets them at any
// time, so they are neither compared nor restored.
constexpr FloatControlWord kStatusBits = 0x003Fu;
inline FloatControlWord read_float_control() { return _mm_getcsr(); }
inline void write_float_control(FloatControlWord w) { _mm_setcsr(w); }
#elif defined(SPARSE_RTRL_HAVE_FPCR)
using FloatControlWord = std::uint64_t;
// FPCR.FZ (bit 24) flushes subnormal inputs and outputs of single and double precision.
constexpr FloatControlWord kFlushBits = FloatControlWord(1) << 24;
constexpr FloatControlWord kStatusBits = 0;  // AArch64 keeps the flags in FPSR, not FPCR
inline FloatControlWord read_float_control() {
  FloatControlWord w;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(w));
  return w;
}
inline void write_float_control(FloatControlWord w) { __asm__ __volatile__("msr fpcr, %0" : : "r"(w)); }
#else
using FloatControlWord = unsigned;
constexpr FloatControlWord kFlushBits = 0;
constexpr FloatControlWord kStatusBits = 0;
inline FloatControlWord read_float_control() { return 0; }
inline void write_float_control(FloatControlWord) {}
#endif

/// The floating-point mode of the calling thread (rounding, flushing, exception masks), without
/// the sticky exception flags.
inline FloatControlWord read_float_mode() { return read_float_control() & ~kStatusBits; }

/// RAII: for its lifetime the calling thread flushes subnormals (when @p flush) or keeps its
/// mode; the previous mode is restored on destruction (exception flags raised meanwhile are
/// kept, as a caller testing them expects). Writes the control register only when the mode
/// actually changes (it serialises the pipeline on some CPUs).
class SubnormalGuard {
 public:
  explicit SubnormalGuard(bool flush) {
    if (!flush || kFlushBits == 0) return;
    saved_ = read_float_control();
    if ((saved_ & kFlushBits) == kFlushBits) return;
    write_float_control(saved_ | kFlushBits);
    changed_ = true;
  }
  ~SubnormalGuard() {
    if (changed_) write_float_control((read_float_control() & kStatusBits) | (saved_ & ~kStatusBits));
  }
  SubnormalGuard(const SubnormalGuard&) = delete;
  SubnormalGuard& operator=(const SubnormalGuard&) = delete;

 private:
  FloatControlWord saved_ = 0;
  bool changed_ = false;
};

}  // namespace detail

/// @brief Flushes subnormals in the calling thread for the guard's lifetime, for code of your
/// own around the learners (they already flush inside their steps unless told not to).
/// The previous mode is restored when the guard leaves scope; a no-op where
/// flush_subnormals_supported() is false.
class ScopedFlushDenormals {
 public:
  ScopedFlushDenormals() : guard_(true) {}
  ScopedFlushDenormals(const ScopedFlushDenormals&) = delete;
  ScopedFlushDenormals& operator=(const ScopedFlushDenormals&) = delete;

  /// True when this target lets the guard change the mode.
  static constexpr bool active() { return flush_subnormals_supported(); }

 private:
  detail::SubnormalGuard guard_;
};

}  // namespace sparse_rtrl
