/// @file detail/crc32.hpp
/// @brief CRC-32 as zip (and so NumPy's .npz) uses it: polynomial 0xEDB88320 (reflected),
///        initial value and final xor 0xFFFFFFFF; crc32("123456789") = 0xCBF43926.
///
/// Two implementations, the same function: on x86 CPUs with PCLMULQDQ (chosen at run time, no
/// compiler flag needed) the folding method of Intel's "Fast CRC Computation for Generic
/// Polynomials Using PCLMULQDQ Instruction" (Gopal et al. 2009; the constants are the paper's for
/// the reflected polynomial, as Chromium's zlib and Linux use them), about 10 GB/s; elsewhere, and
/// for the tail, slicing-by-8 (8 KiB of tables, about 2 GB/s). So verifying a checkpoint of a
/// large influence matrix costs little next to reading it. The tests compare both on every length.
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <smmintrin.h>  // SSE4.1 (and SSE2)
#include <wmmintrin.h>  // PCLMULQDQ
#define SPARSE_RTRL_CRC32_PCLMUL 1
#endif

namespace sparse_rtrl {
namespace detail {

using Crc32Tables = std::array<std::array<std::uint32_t, 256>, 8>;

constexpr Crc32Tables make_crc32_tables() {
  Crc32Tables t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
    t[0][i] = c;
  }
  for (std::size_t s = 1; s < 8; ++s)
    for (std::size_t i = 0; i < 256; ++i) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFFu];
  return t;
}

inline constexpr Crc32Tables kCrc32Tables = make_crc32_tables();

/// The table method on the CRC register (the inverted CRC).
inline std::uint32_t crc32_register_tables(std::uint32_t c, const unsigned char* p, std::size_t size) {
  const auto& t = kCrc32Tables;
  while (size >= 8) {
    std::uint32_t lo, hi;
    std::memcpy(&lo, p, 4);  // little-endian hosts only (checked in io/npz.hpp)
    std::memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = t[7][lo & 0xFFu] ^ t[6][(lo >> 8) & 0xFFu] ^ t[5][(lo >> 16) & 0xFFu] ^ t[4][lo >> 24] ^
        t[3][hi & 0xFFu] ^ t[2][(hi >> 8) & 0xFFu] ^ t[1][(hi >> 16) & 0xFFu] ^ t[0][hi >> 24];
    p += 8;
    size -= 8;
  }
  while (size--) c = t[0][(c ^ *p++) & 0xFFu] ^ (c >> 8);
  return c;
}

#if defined(SPARSE_RTRL_CRC32_PCLMUL)
/// True when this CPU has PCLMULQDQ and SSE4.1 (checked once).
inline bool crc32_has_pclmul() {
  static const bool yes = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
  return yes;
}

/// Folding by carry-less multiplication on the CRC register; @p size >= 64 and a multiple of 16.
/// Four 128-bit lanes fold 64 bytes per round (k1, k2), then fold into one lane (k3, k4), then
/// 128 -> 64 bits (k5) and a Barrett reduction to 32 bits (the polynomial and mu).
__attribute__((target("pclmul,sse4.1"))) inline std::uint32_t crc32_register_pclmul(std::uint32_t c,
                                                                                    const unsigned char* p,
                                                                                    std::size_t size) {
  alignas(16) static const std::uint64_t k1k2[] = {0x0154442bd4u, 0x01c6e41596u};
  alignas(16) static const std::uint64_t k3k4[] = {0x01751997d0u, 0x00ccaa009eu};
  alignas(16) static const std::uint64_t k5k0[] = {0x0163cd6124u, 0x0000000000u};
  alignas(16) static const std::uint64_t poly[] = {0x01db710641u, 0x01f7011641u};
  const auto load = [](const unsigned char* q) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(q)); };
  __m128i x1 = load(p), x2 = load(p + 16), x3 = load(p + 32), x4 = load(p + 48);
  x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128(int(c)));
  __m128i x0 = _mm_load_si128(reinterpret_cast<const __m128i*>(k1k2));
  p += 64;
  size -= 64;
  while (size >= 64) {
    const __m128i x5 = _mm_clmulepi64_si128(x1, x0, 0x00), x6 = _mm_clmulepi64_si128(x2, x0, 0x00),
                  x7 = _mm_clmulepi64_si128(x3, x0, 0x00), x8 = _mm_clmulepi64_si128(x4, x0, 0x00);
    x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, x0, 0x11), x5), load(p));
    x2 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x2, x0, 0x11), x6), load(p + 16));
    x3 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x3, x0, 0x11), x7), load(p + 32));
    x4 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x4, x0, 0x11), x8), load(p + 48));
    p += 64;
    size -= 64;
  }
  x0 = _mm_load_si128(reinterpret_cast<const __m128i*>(k3k4));
  for (__m128i next : {x2, x3, x4}) {
    const __m128i x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, x0, 0x11), next), x5);
  }
  while (size >= 16) {
    const __m128i x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, x0, 0x11), load(p)), x5);
    p += 16;
    size -= 16;
  }
  // 128 -> 64 bits.
  x2 = _mm_clmulepi64_si128(x1, x0, 0x10);
  const __m128i low32 = _mm_setr_epi32(~0, 0, ~0, 0);
  x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), x2);
  x0 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(k5k0));
  x2 = _mm_srli_si128(x1, 4);
  x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), x0, 0x00), x2);
  // Barrett reduction to 32 bits.
  x0 = _mm_load_si128(reinterpret_cast<const __m128i*>(poly));
  x2 = _mm_clmulepi64_si128(_mm_and_si128(x1, low32), x0, 0x10);
  x2 = _mm_clmulepi64_si128(_mm_and_si128(x2, low32), x0, 0x00);
  x1 = _mm_xor_si128(x1, x2);
  return std::uint32_t(_mm_extract_epi32(x1, 1));
}
#endif

/// Which implementation crc32_update() uses for long buffers (for tests and benchmarks).
enum class Crc32Method { automatic, tables };

/// Continues a CRC-32: crc32_update(crc32_update(0, a), b) == crc32 of a followed by b.
inline std::uint32_t crc32_update(std::uint32_t crc, const void* data, std::size_t size,
                                  Crc32Method method = Crc32Method::automatic) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  std::uint32_t c = ~crc;
#if defined(SPARSE_RTRL_CRC32_PCLMUL)
  if (method == Crc32Method::automatic && size >= 64 && crc32_has_pclmul()) {
    const std::size_t folded = size & ~std::size_t(15);
    c = crc32_register_pclmul(c, p, folded);
    p += folded;
    size -= folded;
  }
#else
  (void)method;
#endif
  return ~crc32_register_tables(c, p, size);
}

/// CRC-32 of one buffer.
inline std::uint32_t crc32(const void* data, std::size_t size) { return crc32_update(0, data, size); }

}  // namespace detail
}  // namespace sparse_rtrl
