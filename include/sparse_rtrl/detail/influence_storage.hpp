/// @file detail/influence_storage.hpp
/// @brief Memory of an influence matrix: row-major, rows padded to whole cache lines, and on
///        Linux backed by transparent huge pages when large.
///
/// Why not a plain Eigen matrix: the propagation kernel walks down all n rows of M at a stride of
/// a whole row for every column tile. With 4 KiB pages every row is another page (a TLB miss per
/// row at n = 1024, where M is 700 MB); 2 MiB pages cut that by 512. Padding each row to a
/// multiple of 64 bytes keeps every row segment cache-line aligned, so a tile row of 2 KiB
/// touches 32 lines, not 33.
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <sparse_rtrl/detail/check.hpp>

#include <Eigen/Core>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <sstream>
#include <stdexcept>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace sparse_rtrl {
namespace detail {

/// Thrown when a learner's state cannot be allocated: says how much and for what.
inline void allocation_failure(const char* where, const char* what, std::size_t bytes) {
  std::ostringstream s;
  s << where << ": cannot allocate " << what << " of " << bytes << " bytes (" << double(bytes) / 1e9
    << " GB); use fewer units, a sparser mask or fewer streams";
  throw std::length_error(s.str());
}

template <typename Scalar>
class InfluenceStorage {
 public:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Map = Eigen::Map<Matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
  using ConstMap = Eigen::Map<const Matrix, Eigen::Unaligned, Eigen::OuterStride<>>;

  static constexpr std::size_t kLine = 64;
  static constexpr std::size_t kHugePage = std::size_t(2) << 20;

  InfluenceStorage() = default;
  /// rows x cols, zeroed.
  InfluenceStorage(Index rows, Index cols) : rows_(rows), cols_(cols), stride_(padded_stride(cols)) {
    allocate();
    set_zero();
  }
  InfluenceStorage(const InfluenceStorage& other)
      : rows_(other.rows_), cols_(other.cols_), stride_(other.stride_) {
    allocate();
    if (bytes_) std::memcpy(data_, other.data_, bytes_);
  }
  InfluenceStorage(InfluenceStorage&& other) noexcept { swap(other); }
  InfluenceStorage& operator=(InfluenceStorage other) noexcept {
    swap(other);
    return *this;
  }
  ~InfluenceStorage() { std::free(data_); }

  void swap(InfluenceStorage& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    std::swap(rows_, other.rows_);
    std::swap(cols_, other.cols_);
    std::swap(stride_, other.stride_);
  }

  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  /// Scalars from one row to the next (>= cols()).
  Index stride() const { return stride_; }
  Scalar* data() { return data_; }
  const Scalar* data() const { return data_; }
  /// Bytes of the n x P values themselves (what the matrix holds, without row padding).
  std::size_t value_bytes() const { return sizeof(Scalar) * std::size_t(rows_) * std::size_t(cols_); }
  /// Bytes allocated (with row padding and page rounding).
  std::size_t allocated_bytes() const { return bytes_; }

  Map map() { return Map(data_, rows_, cols_, Eigen::OuterStride<>(stride_)); }
  ConstMap map() const { return ConstMap(data_, rows_, cols_, Eigen::OuterStride<>(stride_)); }

  void set_zero() {
    if (bytes_) std::memset(static_cast<void*>(data_), 0, bytes_);
  }

  /// A row stride of whole cache lines, and not a multiple of 4 KiB (rows a multiple of 4 KiB
  /// apart would all map to the same cache sets).
  static Index padded_stride(Index cols) {
    const Index per_line = Index(kLine / sizeof(Scalar));
    Index stride = ((std::max<Index>(cols, 1) + per_line - 1) / per_line) * per_line;
    if ((std::size_t(stride) * sizeof(Scalar)) % 4096 == 0) stride += per_line;
    return stride;
  }

 private:
  void allocate() {
    const char* where = "sparse_rtrl influence matrix";
    const double want = double(rows_) * double(stride_) * double(sizeof(Scalar));
    if (want > double(std::numeric_limits<std::size_t>::max() / 2))
      allocation_failure(where, "the influence matrix", std::numeric_limits<std::size_t>::max());
    std::size_t bytes = std::size_t(rows_) * std::size_t(stride_) * sizeof(Scalar);
    if (bytes == 0) return;
    const std::size_t align = bytes >= kHugePage ? kHugePage : kLine;
    bytes = ((bytes + align - 1) / align) * align;
    data_ = static_cast<Scalar*>(std::aligned_alloc(align, bytes));
    if (!data_) allocation_failure(where, "the influence matrix", bytes);
    bytes_ = bytes;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // A hint: where transparent huge pages are "madvise" (a common default) this enables them
    // for M; where they are "never" it does nothing, and a failure is harmless.
    if (align == kHugePage) (void)madvise(data_, bytes_, MADV_HUGEPAGE);
#endif
  }

  Scalar* data_ = nullptr;
  std::size_t bytes_ = 0;
  Index rows_ = 0, cols_ = 0, stride_ = 0;
};

}  // namespace detail
}  // namespace sparse_rtrl
