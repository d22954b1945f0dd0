/// @file config.hpp
/// @brief Version, and the switch that lets public headers include detail/ ones.
#pragma once

#define SPARSE_RTRL_VERSION_MAJOR 0
#define SPARSE_RTRL_VERSION_MINOR 1
#define SPARSE_RTRL_VERSION_PATCH 0

// Public headers include this first; detail/ headers #error without it, so users who include an
// internal header directly are told to use the umbrella header instead.
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#define SPARSE_RTRL_INTERNAL_INCLUDE_OK
#endif

namespace sparse_rtrl {
/// @brief "major.minor.patch" of the headers in use (equals CMake's project version).
inline constexpr const char* version_string = "0.1.0";
}  // namespace sparse_rtrl
