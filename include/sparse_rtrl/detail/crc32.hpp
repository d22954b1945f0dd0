/// @file detail/crc32.hpp
/// @brief CRC-32 as zip (and so NumPy's .npz) uses it: polynomial 0xEDB88320 (reflected),
///        initial value and final xor 0xFFFFFFFF; crc32("123456789") = 0xCBF43926.
///
/// Slicing-by-8 (Intel's "slicing-by-N" tables, 8 KiB): eight bytes per table round instead of
/// one, several times faster than the byte-wise table, so verifying a checkpoint of a large
/// influence matrix costs little next to reading it. Portable C++ (no CPU-specific instructions).
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

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

/// Continues a CRC-32: crc32_update(crc32_update(0, a), b) == crc32 of a followed by b.
inline std::uint32_t crc32_update(std::uint32_t crc, const void* data, std::size_t size) {
  const auto& t = kCrc32Tables;
  const unsigned char* p = static_cast<const unsigned char*>(data);
  std::uint32_t c = ~crc;
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
  return ~c;
}

/// CRC-32 of one buffer.
inline std::uint32_t crc32(const void* data, std::size_t size) { return crc32_update(0, data, size); }

}  // namespace detail
}  // namespace sparse_rtrl
