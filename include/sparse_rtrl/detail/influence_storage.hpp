/// @file detail/influence_storage.hpp
/// @brief Memory of an influence matrix: column panels one register chunk wide, each panel's
///        rows contiguous, on Linux backed by transparent huge pages when large.
///
/// Why panels and not a row-major matrix: a step reads and writes all of M once (model.md,
/// "RTRL"), so its floor is streaming M through memory, and the propagation kernel should read
/// M in the order it is stored. The kernel works on one register chunk of columns (kChunk:
/// 128 floats with AVX-512) at a time: for each chunk it copies the active rows to a scratch
/// (512 bytes per active row: in L1 up to about 64 active rows) and then passes every row of
/// that chunk through registers. Row-major storage makes that pass walk down n rows at a stride
/// of a whole row (P scalars: 665 KB at n = 1024), a short burst and a new page per row; the
/// earlier remedy, wide column tiles, pushed the scratch out of L1. With
/// M stored as panels of n x kChunk (panel p holds columns [p kChunk, (p + 1) kChunk) of every
/// row, row after row) the same pass is one sequential read and write of n kChunk scalars, which
/// hardware prefetchers follow, and the active rows of the next panel can be fetched early.
/// Measured on a 2-core AMD EPYC (AVX-512), one thread, the previous row-major kernel and this
/// one run alternately: the kernel on the n = 256 90/90 shape 2.51 -> 1.57 ms; whole steps at
/// activity and weight density 0.05: n = 512 7.5 -> 5.0-5.5 ms, n = 1024 61-63 -> 43-44 ms.
///
/// The last panel is padded to a whole chunk with zeros, so the kernel needs no partial path
/// and every column goes through the same operations (results do not depend on the split of
/// panels over threads). Element (i, c) lives at panel(c / kChunk)[i kChunk + c mod kChunk].
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <sparse_rtrl/detail/check.hpp>

#include <Eigen/Core>

#include <algorithm>
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

template <typename Scalar>
using Packet = typename Eigen::internal::packet_traits<Scalar>::type;
template <typename Scalar>
constexpr Index kPacketSize = Index(Eigen::internal::unpacket_traits<Packet<Scalar>>::size);

/// Accumulator packets per chunk: 8 keeps 8 vector registers of sums live plus a broadcast
/// coefficient, which fits the 16 registers of SSE/AVX and leaves AVX-512 room for loads.
constexpr Index kAccumulators = 8;
/// Columns of one register-resident chunk (128 floats with AVX-512, 64 with AVX, 32 with SSE):
/// also the width of a panel of M.
template <typename Scalar>
constexpr Index kChunk = kAccumulators * kPacketSize<Scalar>;

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

  /// Columns per panel.
  static constexpr Index kPanel = kChunk<Scalar>;
  static constexpr std::size_t kLine = 64;
  static constexpr std::size_t kHugePage = std::size_t(2) << 20;

  /// One row of M seen through the panels: row[c] is M(i, c).
  class RowRef {
   public:
    RowRef(Scalar* first, Index panel_stride) : first_(first), panel_stride_(panel_stride) {}
    Scalar& operator[](Index c) const { return first_[(c / kPanel) * panel_stride_ + c % kPanel]; }

   private:
    Scalar* first_;
    Index panel_stride_;
  };

  InfluenceStorage() = default;
  /// rows x cols, zeroed.
  InfluenceStorage(Index rows, Index cols) : InfluenceStorage(rows, cols, true) {}
  /// rows x cols; the values are left unset when !zero (for a copy that overwrites every value:
  /// the padding is zeroed either way).
  InfluenceStorage(Index rows, Index cols, bool zero)
      : rows_(rows), cols_(cols), panels_((std::max<Index>(cols, 0) + kPanel - 1) / kPanel) {
    allocate();
    if (zero)
      set_zero();
    else
      zero_padding();
  }
  InfluenceStorage(const InfluenceStorage& other) : rows_(other.rows_), cols_(other.cols_), panels_(other.panels_) {
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
    std::swap(panels_, other.panels_);
  }

  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  Index panels() const { return panels_; }
  /// Scalars from one panel to the next (rows() * kPanel).
  Index panel_stride() const { return rows_ * kPanel; }
  /// Panel p: rows() rows of kPanel scalars each, row after row.
  Scalar* panel(Index p) { return data_ + p * panel_stride(); }
  const Scalar* panel(Index p) const { return data_ + p * panel_stride(); }

  Scalar& operator()(Index i, Index c) { return row(i)[c]; }
  Scalar operator()(Index i, Index c) const { return data_[(c / kPanel) * panel_stride() + i * kPanel + c % kPanel]; }
  RowRef row(Index i) { return RowRef(data_ + i * kPanel, panel_stride()); }

  /// Calls f(segment, count) over row i's values in column order, one contiguous segment per
  /// panel (count = kPanel except in the last panel).
  template <typename F>
  void for_each_row_segment(Index i, F&& f) const {
    for (Index p = 0; p < panels_; ++p) f(panel(p) + i * kPanel, std::min<Index>(kPanel, cols_ - p * kPanel));
  }
  /// Writes @p count values in row-major order, starting at element @p first (row first / cols,
  /// column first mod cols): how a row-major stream (a file) lands in the panels.
  void write_row_major(std::size_t first, const Scalar* values, std::size_t count) {
    const std::size_t cols = std::size_t(cols_);
    while (count > 0) {
      const Index i = Index(first / cols), c = Index(first % cols);
      const Index p = c / kPanel, o = c % kPanel;
      const std::size_t take = std::min<std::size_t>(count, std::size_t(std::min<Index>(kPanel - o, cols_ - c)));
      std::memcpy(panel(p) + i * kPanel + o, values, take * sizeof(Scalar));
      values += take;
      first += take;
      count -= take;
    }
  }
  /// A dense row-major copy.
  Matrix to_matrix() const {
    Matrix m(rows_, cols_);
    for (Index i = 0; i < rows_; ++i) {
      Index c = 0;
      for_each_row_segment(i, [&](const Scalar* s, Index count) {
        std::memcpy(m.data() + i * cols_ + c, s, std::size_t(count) * sizeof(Scalar));
        c += count;
      });
    }
    return m;
  }

  /// Bytes of the n x P values themselves (what the matrix holds, without padding).
  std::size_t value_bytes() const { return sizeof(Scalar) * std::size_t(rows_) * std::size_t(cols_); }
  /// Bytes allocated (with the last panel's padding and page rounding).
  std::size_t allocated_bytes() const { return bytes_; }
  /// Bytes a rows x cols matrix occupies (before page rounding).
  static double bytes_for(Index rows, Index cols) {
    return double(rows) * double((std::max<Index>(cols, 0) + kPanel - 1) / kPanel) * double(kPanel) *
           double(sizeof(Scalar));
  }

  void set_zero() {
    if (bytes_) std::memset(static_cast<void*>(data_), 0, bytes_);
  }

 private:
  void zero_padding() {
    if (!bytes_) return;
    const Index last = panels_ - 1, used = cols_ - last * kPanel;
    if (used < kPanel)
      for (Index i = 0; i < rows_; ++i)
        std::memset(static_cast<void*>(panel(last) + i * kPanel + used), 0, std::size_t(kPanel - used) * sizeof(Scalar));
    const std::size_t tail = std::size_t(panels_) * std::size_t(panel_stride()) * sizeof(Scalar);
    std::memset(reinterpret_cast<char*>(data_) + tail, 0, bytes_ - tail);
  }

  void allocate() {
    const char* where = "sparse_rtrl influence matrix";
    const double want = bytes_for(rows_, cols_);
    if (want > double(std::numeric_limits<std::size_t>::max() / 2))
      allocation_failure(where, "the influence matrix", std::numeric_limits<std::size_t>::max());
    std::size_t bytes = std::size_t(rows_) * std::size_t(panels_) * std::size_t(kPanel) * sizeof(Scalar);
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
  Index rows_ = 0, cols_ = 0, panels_ = 0;
};

}  // namespace detail
}  // namespace sparse_rtrl
