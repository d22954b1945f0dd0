/// @file detail/propagate.hpp
/// @brief The RTRL propagation kernel: M <- diag(decay) M + C M[active rows], in place.
///
/// This is the J_t M_{t-1} product of model.md ("RTRL") with J_t = diag(decay) + A_t diag(s).
/// C holds A_t diag(s_{t-1}) restricted to the active source rows (s != 0) and to A's pattern
/// (R's mask), compressed by target row. Columns of M are processed in tiles: the active rows'
/// tile is copied to a scratch first, so every target row can be overwritten in place (M needs
/// no second n x P buffer), and the scratch stays in cache while all n target rows stream
/// through it. Inside a tile, a chunk of kAccumulators SIMD packets of one target row is
/// accumulated in registers over all its source rows before being stored once.
///
/// Every column sees the same sequence of operations whatever the tile width and however the
/// columns are split over threads (splits and tiles are chunk-aligned; only the last P mod chunk
/// columns take the partial-chunk path, always), so results are bitwise independent of the
/// number of threads.
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <sparse_rtrl/parallel/denormals.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/parallel/thread_pool.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cstring>
#include <vector>

namespace sparse_rtrl {
namespace detail {

/// Coupling coefficients of one step (A_t diag(s_{t-1}) on active sources), CSR by target row.
/// Sized once by reserve(): filling it allocates nothing (also in a copy of its owner).
template <typename Scalar>
struct Coupling {
  std::vector<Index> active;    ///< n slots; the first active_count are the source rows j with s_j != 0
  Index active_count = 0;
  std::vector<Index> row_ptr;   ///< n + 1
  std::vector<Index> source;    ///< compact source index (position in `active`) per entry
  std::vector<Scalar> coef;     ///< A_ij * s_j per entry
  Index nnz() const { return row_ptr.empty() ? 0 : row_ptr.back(); }

  void reserve(Index n, Index pattern_nnz) {
    active.assign(std::size_t(n), 0);
    active_count = 0;
    row_ptr.assign(std::size_t(n + 1), 0);
    source.resize(std::size_t(pattern_nnz));
    coef.resize(std::size_t(pattern_nnz));
  }
};

template <typename Scalar>
using Packet = typename Eigen::internal::packet_traits<Scalar>::type;
template <typename Scalar>
constexpr Index kPacketSize = Index(Eigen::internal::unpacket_traits<Packet<Scalar>>::size);

/// Accumulator packets per chunk: 8 keeps 8 vector registers of sums live plus a broadcast
/// coefficient, which fits the 16 registers of SSE/AVX and leaves AVX-512 room for loads.
constexpr Index kAccumulators = 8;
/// Columns of one register-resident chunk (128 floats with AVX-512, 64 with AVX, 32 with SSE).
template <typename Scalar>
constexpr Index kChunk = kAccumulators * kPacketSize<Scalar>;

/// Bytes of scratch the active-row tile aims at: about an L1 data cache, so that the tile and
/// the target rows streaming past it stay close. Override with -DSPARSE_RTRL_SCRATCH_KIB=<KiB>.
#ifndef SPARSE_RTRL_SCRATCH_KIB
#define SPARSE_RTRL_SCRATCH_KIB 32
#endif
constexpr Index kScratchBytes = Index(SPARSE_RTRL_SCRATCH_KIB) * 1024;
/// Narrowest tile, in bytes of one row: with many active rows the L1 budget alone would give
/// one-chunk tiles, and each tile would then walk all n rows of M touching a few cache lines per
/// row at a stride of a whole row (a TLB miss and a short DRAM burst per row). Wider tiles keep
/// each row's segment a long contiguous burst; the scratch then lives in L2.
#ifndef SPARSE_RTRL_MIN_TILE_BYTES
#define SPARSE_RTRL_MIN_TILE_BYTES 2048
#endif
constexpr Index kMinTileBytes = Index(SPARSE_RTRL_MIN_TILE_BYTES);
/// Rows ahead whose segment is prefetched while a row is computed.
#ifndef SPARSE_RTRL_PREFETCH_ROWS
#define SPARSE_RTRL_PREFETCH_ROWS 2
#endif
constexpr Index kPrefetchRows = SPARSE_RTRL_PREFETCH_ROWS;

template <typename Scalar>
constexpr Index min_tile_width() {
  return std::max<Index>(kChunk<Scalar>, (kMinTileBytes / Index(sizeof(Scalar)) / kChunk<Scalar>) * kChunk<Scalar>);
}

/// Scalars of scratch one thread needs for up to n active rows (the largest tile ever used).
template <typename Scalar>
Index propagation_scratch_size(Index n) {
  return std::max<Index>(kScratchBytes / Index(sizeof(Scalar)), n * min_tile_width<Scalar>());
}

/// Width of the column tile for k active rows: as wide as the cache budget allows, a multiple
/// of the chunk, at least min_tile_width().
template <typename Scalar>
Index propagation_tile_width(Index k, Index columns) {
  const Index budget = kScratchBytes / Index(sizeof(Scalar));
  Index width = k > 0 ? budget / k : columns;
  width = std::max<Index>(min_tile_width<Scalar>(), (width / kChunk<Scalar>) * kChunk<Scalar>);
  return std::min<Index>(width, std::max<Index>(columns, Index(1)));
}

/// One full chunk of a target row: out = decay * out + sum_e coef[e] * scratch_row(source[e]).
template <typename Scalar>
inline void propagate_chunk(Scalar* out, Scalar decay, const Scalar* scratch, Index stride,
                            const Index* source, const Scalar* coef, Index entries) {
  using namespace Eigen::internal;
  using P = Packet<Scalar>;
  constexpr Index L = kPacketSize<Scalar>;
  const P d = pset1<P>(decay);
  P a0 = pmul(d, ploadu<P>(out + 0 * L)), a1 = pmul(d, ploadu<P>(out + 1 * L));
  P a2 = pmul(d, ploadu<P>(out + 2 * L)), a3 = pmul(d, ploadu<P>(out + 3 * L));
  P a4 = pmul(d, ploadu<P>(out + 4 * L)), a5 = pmul(d, ploadu<P>(out + 5 * L));
  P a6 = pmul(d, ploadu<P>(out + 6 * L)), a7 = pmul(d, ploadu<P>(out + 7 * L));
  for (Index e = 0; e < entries; ++e) {
    const P c = pset1<P>(coef[e]);
    const Scalar* s = scratch + source[e] * stride;
    a0 = pmadd(c, ploadu<P>(s + 0 * L), a0);
    a1 = pmadd(c, ploadu<P>(s + 1 * L), a1);
    a2 = pmadd(c, ploadu<P>(s + 2 * L), a2);
    a3 = pmadd(c, ploadu<P>(s + 3 * L), a3);
    a4 = pmadd(c, ploadu<P>(s + 4 * L), a4);
    a5 = pmadd(c, ploadu<P>(s + 5 * L), a5);
    a6 = pmadd(c, ploadu<P>(s + 6 * L), a6);
    a7 = pmadd(c, ploadu<P>(s + 7 * L), a7);
  }
  pstoreu(out + 0 * L, a0);
  pstoreu(out + 1 * L, a1);
  pstoreu(out + 2 * L, a2);
  pstoreu(out + 3 * L, a3);
  pstoreu(out + 4 * L, a4);
  pstoreu(out + 5 * L, a5);
  pstoreu(out + 6 * L, a6);
  pstoreu(out + 7 * L, a7);
}
static_assert(kAccumulators == 8, "propagate_chunk is written out for 8 accumulators");

/// The last, partial chunk (width < kChunk): packet by packet, then scalar columns. Always the
/// same columns (the last P mod kChunk), so the thread split never moves a column between paths.
template <typename Scalar>
inline void propagate_partial_chunk(Scalar* out, Scalar decay, const Scalar* scratch, Index stride,
                                    const Index* source, const Scalar* coef, Index entries, Index width) {
  using namespace Eigen::internal;
  using P = Packet<Scalar>;
  constexpr Index L = kPacketSize<Scalar>;
  const P d = pset1<P>(decay);
  Index c = 0;
  for (; c + L <= width; c += L) {
    P a = pmul(d, ploadu<P>(out + c));
    for (Index e = 0; e < entries; ++e) a = pmadd(pset1<P>(coef[e]), ploadu<P>(scratch + source[e] * stride + c), a);
    pstoreu(out + c, a);
  }
  for (; c < width; ++c) {
    Scalar a = decay * out[c];
    for (Index e = 0; e < entries; ++e) a += coef[e] * scratch[source[e] * stride + c];
    out[c] = a;
  }
}

template <typename Scalar>
inline void prefetch_for_write(const Scalar* p, Index count) {
#if defined(__GNUC__) || defined(__clang__)
  const char* b = reinterpret_cast<const char*>(p);
  for (Index off = 0; off < count * Index(sizeof(Scalar)); off += 64) __builtin_prefetch(b + off, 1, 3);
#else
  (void)p;
  (void)count;
#endif
}

/// Columns [c_begin, c_end) of M (row-major, n rows, leading dimension ld) <- diag(decay) M +
/// C M[C.active]. scratch must hold propagation_scratch_size<Scalar>(n) scalars.
template <typename Scalar>
void propagate_columns(Scalar* M, Index n, Index c_begin, Index c_end, Index ld, const Scalar* decay,
                       const Coupling<Scalar>& C, Scalar* scratch) {
  const Index k = C.active_count;
  const Index tile = propagation_tile_width<Scalar>(k, c_end - c_begin);
  constexpr Index chunk = kChunk<Scalar>;
  for (Index c0 = c_begin; c0 < c_end; c0 += tile) {
    const Index w = std::min<Index>(tile, c_end - c0);
    for (Index a = 0; a < k; ++a)
      std::memcpy(scratch + a * tile, M + C.active[std::size_t(a)] * ld + c0, sizeof(Scalar) * std::size_t(w));
    const Index full = (w / chunk) * chunk;
    for (Index i = 0; i < n; ++i) {
      Scalar* row = M + i * ld + c0;
      // Rows further down are in other pages, where hardware prefetchers stop: fetch the segment
      // of a row kPrefetchRows ahead while this one is computed.
      if (i + kPrefetchRows < n) prefetch_for_write(row + kPrefetchRows * ld, w);
      const Index b = C.row_ptr[std::size_t(i)];
      const Index entries = C.row_ptr[std::size_t(i + 1)] - b;
      const Index* src = C.source.data() + b;
      const Scalar* cf = C.coef.data() + b;
      for (Index cc = 0; cc < full; cc += chunk)
        propagate_chunk<Scalar>(row + cc, decay[i], scratch + cc, tile, src, cf, entries);
      if (full < w) propagate_partial_chunk<Scalar>(row + full, decay[i], scratch + full, tile, src, cf, entries, w - full);
    }
  }
}

/// Below this many multiply-adds a step runs on one thread: waking a team costs more.
constexpr double kParallelMinFma = 2e5;

/// M <- diag(decay) M + C M[C.active], in place, over all P columns, on the pool's threads. The
/// columns are split into one contiguous, chunk-aligned range per thread; ranges share nothing
/// but the read-only coupling, so threads never synchronise inside the product. Each thread runs
/// its range with subnormals flushed when @p flush_subnormals. scratch holds
/// pool.threads() * scratch_stride scalars, scratch_stride >= propagation_scratch_size(n).
/// Runs body(thread, begin, end) over P columns split into one contiguous, chunk-aligned range
/// per thread (one range on the calling thread below kParallelMinFma multiply-adds), each
/// worker with subnormals flushed when @p flush_subnormals.
template <typename Scalar, typename Body>
void split_columns(Index P, double fma, parallel::ThreadPool& pool, bool flush_subnormals, Body&& body) {
  const Index chunks = (P + kChunk<Scalar> - 1) / kChunk<Scalar>;
  const Index parts = fma < kParallelMinFma ? 1 : std::min<Index>(Index(pool.threads()), chunks);
  if (parts <= 1) {
    body(0, Index(0), P);
    return;
  }
  pool.run(int(parts), [&](int t) {
    SubnormalGuard guard(flush_subnormals);
    const Index begin = std::min<Index>(P, (chunks * t / parts) * kChunk<Scalar>);
    const Index end = std::min<Index>(P, (chunks * (t + 1) / parts) * kChunk<Scalar>);
    if (begin < end) body(t, begin, end);
  });
}

template <typename Scalar>
void propagate_in_place(Scalar* M, Index n, Index P, Index ld, const Scalar* decay, const Coupling<Scalar>& C,
                        Scalar* scratch, Index scratch_stride, parallel::ThreadPool& pool, bool flush_subnormals) {
  SPARSE_RTRL_ASSERT(scratch_stride >= propagation_scratch_size<Scalar>(n));
  split_columns<Scalar>(P, double(C.nnz() + n) * double(P), pool, flush_subnormals, [&](int t, Index begin, Index end) {
    propagate_columns(M, n, begin, end, ld, decay, C, scratch + Index(t) * scratch_stride);
  });
}

/// Columns [c_begin, c_end) of M (n rows, leading dimension ld) += C Mprev, where C's sources
/// are rows of another matrix Mprev (leading dimension ld_prev): the cross-layer term
/// B^k_t D^{k-1}_t of a stack (model.md, "Stacked layers"). Same chunk sequence per column as
/// propagate_columns (decay 1 multiplies exactly), so results do not depend on the split.
template <typename Scalar>
void cross_add_columns(Scalar* M, Index n, Index c_begin, Index c_end, Index ld, const Scalar* Mprev, Index ld_prev,
                       const Coupling<Scalar>& C) {
  constexpr Index chunk = kChunk<Scalar>;
  const Index width = c_end - c_begin;
  const Index full = (width / chunk) * chunk;
  for (Index i = 0; i < n; ++i) {
    const Index b = C.row_ptr[std::size_t(i)];
    const Index entries = C.row_ptr[std::size_t(i + 1)] - b;
    if (entries == 0) continue;
    Scalar* row = M + i * ld + c_begin;
    const Index* src = C.source.data() + b;
    const Scalar* cf = C.coef.data() + b;
    for (Index cc = 0; cc < full; cc += chunk)
      propagate_chunk<Scalar>(row + cc, Scalar(1), Mprev + c_begin + cc, ld_prev, src, cf, entries);
    if (full < width)
      propagate_partial_chunk<Scalar>(row + full, Scalar(1), Mprev + c_begin + full, ld_prev, src, cf, entries,
                                      width - full);
  }
}

/// M[:, 0:P) += C Mprev[:, 0:P) on the pool's threads, chunk-aligned column ranges (as
/// propagate_in_place).
template <typename Scalar>
void cross_add_in_place(Scalar* M, Index n, Index P, Index ld, const Scalar* Mprev, Index ld_prev,
                        const Coupling<Scalar>& C, parallel::ThreadPool& pool, bool flush_subnormals) {
  split_columns<Scalar>(P, double(C.nnz()) * double(P), pool, flush_subnormals, [&](int, Index begin, Index end) {
    cross_add_columns(M, n, begin, end, ld, Mprev, ld_prev, C);
  });
}

}  // namespace detail
}  // namespace sparse_rtrl
