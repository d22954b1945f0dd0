/// @file timing.hpp
/// @brief Wall-clock time for the examples' progress lines (the only lines of their output that
///        differ from run to run).
#pragma once

#include <chrono>

namespace examples {

using Clock = std::chrono::steady_clock;

/// Wall-clock seconds since @p start.
inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace examples
