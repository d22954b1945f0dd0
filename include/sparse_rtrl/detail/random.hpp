/// @file detail/random.hpp
/// @brief A portable seeded uniform generator: std::uniform_real_distribution differs between
///        standard libraries, and our initialisations must be reproducible everywhere.
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <cstdint>
#include <random>

namespace sparse_rtrl {
namespace detail {

class UniformRandom {
 public:
  explicit UniformRandom(std::uint64_t seed) : engine_(seed) {}
  /// Uniform in [0, 1) with 53 random bits.
  double next() { return static_cast<double>(engine_() >> 11) * (1.0 / 9007199254740992.0); }
  /// Uniform in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * next(); }

 private:
  std::mt19937_64 engine_;
};

/// Random signs +-1 (UORO's nu) from splitmix64 (Steele, Lea and Flood 2014): a 64-bit state
/// that a checkpoint saves as one integer, the same bits on every platform, 64 signs per draw.
class SignRandom {
 public:
  explicit SignRandom(std::uint64_t state) : state_(state) {}
  std::uint64_t next_word() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  /// count signs into out, one 64-bit draw per 64 of them (the rest of the last draw dropped).
  template <typename Scalar>
  void fill_signs(Scalar* out, std::int64_t count) {
    for (std::int64_t i = 0; i < count; i += 64) {
      const std::uint64_t w = next_word();
      for (std::int64_t b = 0; b < 64 && i + b < count; ++b) out[i + b] = ((w >> b) & 1u) ? Scalar(1) : Scalar(-1);
    }
  }
  std::uint64_t state() const { return state_; }

 private:
  std::uint64_t state_;
};

}  // namespace detail
}  // namespace sparse_rtrl
