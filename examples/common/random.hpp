/// @file random.hpp
/// @brief The examples' random numbers: uniform and normal numbers and shuffling indices from
///        the raw output of mt19937_64, whose sequence the C++ standard fixes. The
///        std::*_distribution classes are implementation-defined, and the examples' data sets
///        and results must be the same on every platform.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>

namespace examples {

class Random {
 public:
  explicit Random(std::uint64_t seed) : engine_(seed) {}
  /// Uniform in [0, 1), from the top 53 bits.
  double uniform() { return double(engine_() >> 11) * (1.0 / 9007199254740992.0); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * float(uniform()); }
  /// Standard normal (Box-Muller); 1 - u keeps the logarithm finite.
  float normal() {
    // pi rounded to float first: the spiral data set was generated with that constant.
    constexpr double kTwoPi = 2.0 * double(3.14159265358979f);
    const double u = 1.0 - uniform(), v = uniform();
    return float(std::sqrt(-2.0 * std::log(u)) * std::cos(kTwoPi * v));
  }
  /// Uniform in {0, ..., k - 1}, k >= 1.
  std::size_t below(std::size_t k) { return std::min(k - 1, std::size_t(uniform() * double(k))); }

 private:
  std::mt19937_64 engine_;
};

}  // namespace examples
