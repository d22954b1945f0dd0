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

/// Keeps a function out of line. For a short loop that must stay vectorised: inlined into a
/// large caller, GCC 12 has compiled the mask checks of Model::enforce_mask() as scalar loops
/// (12x slower) although the same loop alone vectorises.
#if defined(__GNUC__) || defined(__clang__)
#define SPARSE_RTRL_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define SPARSE_RTRL_NOINLINE __declspec(noinline)
#else
#define SPARSE_RTRL_NOINLINE
#endif

namespace sparse_rtrl {
/// @brief "major.minor.patch" of the headers in use (equals CMake's project version).
inline constexpr const char* version_string = "0.1.0";
}  // namespace sparse_rtrl
