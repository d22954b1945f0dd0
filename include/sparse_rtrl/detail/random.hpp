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

}  // namespace detail
}  // namespace sparse_rtrl
