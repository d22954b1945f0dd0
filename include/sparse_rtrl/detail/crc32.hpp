/// @file detail/crc32.hpp
/// @brief CRC-32 as zip (and so NumPy's .npz) uses it: polynomial 0xEDB88320 (reflected),
///        initial value and final xor 0xFFFFFFFF; crc32("123456789") = 0xCBF43926.
///
/// Three implementations, the same function, chosen at run time (no compiler flag needed): on
/// x86 CPUs with AVX-512 (F, VL) and VPCLMULQDQ, folding four 512-bit registers, 256 bytes per
/// round; on x86 CPUs with PCLMULQDQ, the folding method of Intel's "Fast CRC Computation for
/// Generic Polynomials Using PCLMULQDQ Instruction" (Gopal et al. 2009; the constants are the
/// paper's for the reflected polynomial, as Chromium's zlib and Linux use them) on four 128-bit
/// registers; elsewhere, and for the tail, slicing-by-8 (8 KiB of tables). On a 1 MiB buffer in
/// cache (-O2, one Zen 5 core of a VM): about 55, 14 and 2 GB/s. So verifying a checkpoint of a
/// large influence matrix costs little next to reading it. The tests compare all three on every
/// length to 2000 at every alignment modulo 64.
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>  // SSE4.1, PCLMULQDQ, AVX-512 and VPCLMULQDQ (used only in target() functions)
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
/// The folding constants, derived: k(n) = bitreflect32(x^n mod P) << 1 (33 bits; P = 0x104C11DB7,
/// the unreflected polynomial). Moving a 128-bit lane d bits further along the message multiplies
/// its low qword (the earlier bytes, in the reflected order) by k(d + 32) and its high qword by
/// k(d - 32): the paper's k1, k2 = k(4*128 + 32), k(4*128 - 32) fold 4 x 128-bit lanes by 512 bits,
/// k3, k4 = k(128 + 32), k(128 - 32) fold by 128 bits, and k5 = k(64). The literals (kCrc32Fold*)
/// are static_assert-ed equal to this function (and the Barrett pair to P and floor(x^64 / P)
/// reflected to 33 bits) below, so a mistyped constant does not compile.
constexpr std::uint64_t crc32_fold_constant(unsigned n) {
  std::uint64_t r = 1;  // x^n mod P, one power at a time
  for (unsigned i = 0; i < n; ++i) {
    r <<= 1;
    if (r & (std::uint64_t(1) << 32)) r ^= 0x104C11DB7u;
  }
  std::uint64_t reflected = 0;
  for (int b = 0; b < 32; ++b)
    if (r & (std::uint64_t(1) << b)) reflected |= std::uint64_t(1) << (31 - b);
  return reflected << 1;
}
/// @p v (33 bits) with its bit order reversed.
constexpr std::uint64_t crc32_reflect33(std::uint64_t v) {
  std::uint64_t r = 0;
  for (int b = 0; b < 33; ++b)
    if (v & (std::uint64_t(1) << b)) r |= std::uint64_t(1) << (32 - b);
  return r;
}
/// floor(x^64 / P) by long division over GF(2) (the quotient has degree 32; its top bit is the
/// first step, which leaves x^64 - P x^32 = (P - x^32) x^32, below 2^64).
constexpr std::uint64_t crc32_barrett_mu() {
  std::uint64_t q = std::uint64_t(1) << 32, rem = std::uint64_t(0x04C11DB7u) << 32;
  for (int s = 31; s >= 0; --s)
    if (rem & (std::uint64_t(1) << (s + 32))) {
      q |= std::uint64_t(1) << s;
      rem ^= std::uint64_t(0x104C11DB7u) << s;
    }
  return q;
}

// The constants {k(d + 32), k(d - 32)} that move a 128-bit lane d bits, then k5 and the Barrett
// pair {P', mu}; checked here against their derivation above.
alignas(16) inline constexpr std::uint64_t kCrc32Fold2048[2] = {0x011542778a, 0x01322d1430};
alignas(16) inline constexpr std::uint64_t kCrc32Fold1536[2] = {0x01821d8bc0, 0x012e958ac4};
alignas(16) inline constexpr std::uint64_t kCrc32Fold1024[2] = {0x01e88ef372, 0x014a7fe880};
alignas(16) inline constexpr std::uint64_t kCrc32Fold512[2] = {0x0154442bd4, 0x01c6e41596};  // k1, k2
alignas(16) inline constexpr std::uint64_t kCrc32Fold384[2] = {0x003db1ecdc, 0x0174359406};
alignas(16) inline constexpr std::uint64_t kCrc32Fold256[2] = {0x00f1da05aa, 0x015a546366};
alignas(16) inline constexpr std::uint64_t kCrc32Fold128[2] = {0x01751997d0, 0x00ccaa009e};  // k3, k4
alignas(16) inline constexpr std::uint64_t kCrc32K5[2] = {0x0163cd6124, 0};
alignas(16) inline constexpr std::uint64_t kCrc32Barrett[2] = {0x01db710641, 0x01f7011641};  // P', mu

constexpr bool crc32_moves_by(const std::uint64_t (&k)[2], unsigned d) {
  return k[0] == crc32_fold_constant(d + 32) && k[1] == crc32_fold_constant(d - 32);
}
static_assert(crc32_moves_by(kCrc32Fold2048, 2048) && crc32_moves_by(kCrc32Fold1536, 1536) &&
                  crc32_moves_by(kCrc32Fold1024, 1024) && crc32_moves_by(kCrc32Fold512, 512) &&
                  crc32_moves_by(kCrc32Fold384, 384) && crc32_moves_by(kCrc32Fold256, 256) &&
                  crc32_moves_by(kCrc32Fold128, 128) && kCrc32K5[0] == crc32_fold_constant(64),
              "CRC-32 folding constants");
static_assert(kCrc32Barrett[0] == crc32_reflect33(0x104C11DB7u) &&
                  kCrc32Barrett[1] == crc32_reflect33(crc32_barrett_mu()),
              "CRC-32 Barrett constants");

/// True when this CPU has PCLMULQDQ and SSE4.1 (checked once).
inline bool crc32_has_pclmul() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
  }();
  return yes;
}

/// True when this CPU (and OS: the compiler's check includes the AVX-512 state in XCR0) has
/// AVX512F, AVX512VL and VPCLMULQDQ, besides PCLMULQDQ and SSE4.1 (checked once).
inline bool crc32_has_vpclmul() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return crc32_has_pclmul() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("vpclmulqdq");
  }();
  return yes;
}

/// The end shared by both folding kernels: folds the 128-bit remainder @p x1 over the 16-byte
/// blocks at @p p (@p size a multiple of 16) by 128 bits each (k3, k4), then 128 -> 64 bits (k5)
/// and a Barrett reduction to 32 bits (P' and mu). Returns the CRC register.
__attribute__((target("pclmul,sse4.1"))) inline std::uint32_t crc32_pclmul_finish(__m128i x1, const unsigned char* p,
                                                                                  std::size_t size) {
  __m128i x0 = _mm_load_si128(reinterpret_cast<const __m128i*>(kCrc32Fold128));
  while (size >= 16) {
    const __m128i x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, x0, 0x11),
                                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
                       x5);
    p += 16;
    size -= 16;
  }
  // 128 -> 64 bits.
  __m128i x2 = _mm_clmulepi64_si128(x1, x0, 0x10);
  const __m128i low32 = _mm_setr_epi32(~0, 0, ~0, 0);
  x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), x2);
  x0 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(kCrc32K5));
  x2 = _mm_srli_si128(x1, 4);
  x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), x0, 0x00), x2);
  // Barrett reduction to 32 bits.
  x0 = _mm_load_si128(reinterpret_cast<const __m128i*>(kCrc32Barrett));
  x2 = _mm_clmulepi64_si128(_mm_and_si128(x1, low32), x0, 0x10);
  x2 = _mm_clmulepi64_si128(_mm_and_si128(x2, low32), x0, 0x00);
  x1 = _mm_xor_si128(x1, x2);
  return std::uint32_t(_mm_extract_epi32(x1, 1));
}

/// Folding by carry-less multiplication on the CRC register; @p size >= 64 and a multiple of 16.
/// Four 128-bit lanes fold 64 bytes per round (k1, k2), then fold into one lane (k3, k4), then
/// crc32_pclmul_finish().
__attribute__((target("pclmul,sse4.1"))) inline std::uint32_t crc32_register_pclmul(std::uint32_t c,
                                                                                    const unsigned char* p,
                                                                                    std::size_t size) {
  const auto load = [](const unsigned char* q) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(q)); };
  __m128i x1 = load(p), x2 = load(p + 16), x3 = load(p + 32), x4 = load(p + 48);
  x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128(int(c)));
  __m128i x0 = _mm_load_si128(reinterpret_cast<const __m128i*>(kCrc32Fold512));
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
  x0 = _mm_load_si128(reinterpret_cast<const __m128i*>(kCrc32Fold128));
  for (__m128i next : {x2, x3, x4}) {
    const __m128i x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, x0, 0x11), next), x5);
  }
  return crc32_pclmul_finish(x1, p, size);
}

/// @p x with each 128-bit lane moved by the distance of @p k (per lane {k(d + 32), k(d - 32)}),
/// xor @p y (0x96 is the three-way xor).
__attribute__((target("avx512f,vpclmulqdq"))) inline __m512i crc32_fold_zmm(__m512i x, __m512i k, __m512i y) {
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), y, 0x96);
}

/// The pair @p k in all four 128-bit lanes (_mm512_set4_epi64 lists the high qword first).
__attribute__((target("avx512f"))) inline __m512i crc32_in_lanes(const std::uint64_t (&k)[2]) {
  const auto lo = static_cast<long long>(k[0]), hi = static_cast<long long>(k[1]);
  return _mm512_set4_epi64(hi, lo, hi, lo);
}

/// The same folding on 512-bit registers (VPCLMULQDQ multiplies all four 128-bit lanes of a zmm
/// register at once); @p size >= 64 and a multiple of 16. From 256 bytes, four zmm registers fold
/// 256 bytes per round (each 128-bit lane moves 4 * 512 bits: k(2048 +- 32)), then fold into one
/// (by 1536, 1024 and 512 bits); one zmm register folds the remaining 64-byte blocks (by 512 bits:
/// the paper's k1, k2), its four lanes fold into one (by 384, 256 and 128 bits), and
/// crc32_pclmul_finish() does the rest.
__attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.1"))) inline std::uint32_t crc32_register_vpclmul(
    std::uint32_t c, const unsigned char* p, std::size_t size) {
  const __m512i k2048 = crc32_in_lanes(kCrc32Fold2048), k1536 = crc32_in_lanes(kCrc32Fold1536),
                k1024 = crc32_in_lanes(kCrc32Fold1024), k512 = crc32_in_lanes(kCrc32Fold512);
  // Lane i moves (3 - i) * 128 bits: 384, 256, 128, and lane 3 not at all (zero constants).
  const __m512i k384_256_128 =
      _mm512_set_epi64(0, 0, static_cast<long long>(kCrc32Fold128[1]), static_cast<long long>(kCrc32Fold128[0]),
                       static_cast<long long>(kCrc32Fold256[1]), static_cast<long long>(kCrc32Fold256[0]),
                       static_cast<long long>(kCrc32Fold384[1]), static_cast<long long>(kCrc32Fold384[0]));
  __m512i x = _mm512_xor_si512(_mm512_loadu_si512(p), _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                                        static_cast<int>(c)));
  p += 64;
  size -= 64;
  if (size >= 192) {
    __m512i x1 = _mm512_loadu_si512(p), x2 = _mm512_loadu_si512(p + 64), x3 = _mm512_loadu_si512(p + 128);
    p += 192;
    size -= 192;
    while (size >= 256) {
      x = crc32_fold_zmm(x, k2048, _mm512_loadu_si512(p));
      x1 = crc32_fold_zmm(x1, k2048, _mm512_loadu_si512(p + 64));
      x2 = crc32_fold_zmm(x2, k2048, _mm512_loadu_si512(p + 128));
      x3 = crc32_fold_zmm(x3, k2048, _mm512_loadu_si512(p + 192));
      p += 256;
      size -= 256;
    }
    x = crc32_fold_zmm(x2, k512, crc32_fold_zmm(x1, k1024, crc32_fold_zmm(x, k1536, x3)));
  }
  while (size >= 64) {
    x = crc32_fold_zmm(x, k512, _mm512_loadu_si512(p));
    p += 64;
    size -= 64;
  }
  const __m512i y = _mm512_xor_si512(_mm512_clmulepi64_epi128(x, k384_256_128, 0x00),
                                     _mm512_clmulepi64_epi128(x, k384_256_128, 0x11));
  // Zero-masking extracts keeping all four elements, i.e. the plain ones: GCC 12 warns
  // (-Wuninitialized) about the plain ones' undefined source operand in a target() function.
  const __m128i x1 =
      _mm_ternarylogic_epi64(_mm512_maskz_extracti32x4_epi32(0xF, y, 0), _mm512_maskz_extracti32x4_epi32(0xF, y, 1),
                             _mm512_maskz_extracti32x4_epi32(0xF, y, 2), 0x96);
  return crc32_pclmul_finish(_mm_xor_si128(x1, _mm512_maskz_extracti32x4_epi32(0xF, x, 3)), p, size);
}
#endif

/// Which implementation crc32_update() uses for long buffers (for tests and benchmarks).
/// automatic: VPCLMULQDQ from 256 bytes, else PCLMULQDQ from 64 bytes, whichever the CPU has,
/// else tables. The others force one kernel (from 64 bytes; shorter buffers and the last
/// size % 16 bytes go through the tables either way); a forced kernel that this CPU (or build)
/// lacks falls back to the tables: see crc32_method_supported().
enum class Crc32Method { automatic, tables, pclmul, vpclmul };

/// Whether @p method runs as named here (automatic and tables always do).
inline bool crc32_method_supported(Crc32Method method) {
  switch (method) {
    case Crc32Method::automatic:
    case Crc32Method::tables:
      return true;
#if defined(SPARSE_RTRL_CRC32_PCLMUL)
    case Crc32Method::pclmul:
      return crc32_has_pclmul();
    case Crc32Method::vpclmul:
      return crc32_has_vpclmul();
#else
    case Crc32Method::pclmul:
    case Crc32Method::vpclmul:
      return false;
#endif
  }
  return false;
}

/// Continues a CRC-32: crc32_update(crc32_update(0, a), b) == crc32 of a followed by b.
inline std::uint32_t crc32_update(std::uint32_t crc, const void* data, std::size_t size,
                                  Crc32Method method = Crc32Method::automatic) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  std::uint32_t c = ~crc;
#if defined(SPARSE_RTRL_CRC32_PCLMUL)
  if (size >= 64 && method != Crc32Method::tables) {
    const std::size_t folded = size & ~std::size_t(15);
    bool done = true;
    if ((method == Crc32Method::vpclmul || (method == Crc32Method::automatic && size >= 256)) && crc32_has_vpclmul())
      c = crc32_register_vpclmul(c, p, folded);
    else if ((method == Crc32Method::pclmul || method == Crc32Method::automatic) && crc32_has_pclmul())
      c = crc32_register_pclmul(c, p, folded);
    else
      done = false;
    if (done) {
      p += folded;
      size -= folded;
    }
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
