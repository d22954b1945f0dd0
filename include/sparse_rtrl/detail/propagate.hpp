/// @file detail/propagate.hpp
/// @brief The RTRL propagation kernel: M <- diag(decay) M + C M[active rows], in place.
///
/// This is the J_t M_{t-1} product of model.md ("RTRL") with J_t = diag(decay) + A_t diag(s).
/// C holds A_t diag(s_{t-1}) restricted to the active source rows (s != 0) and to A's pattern
/// (R's mask), compressed by target row. M is stored as panels of kChunk columns
/// (detail/influence_storage.hpp). For each panel the active rows are copied to a scratch
/// (512 bytes per active row with AVX-512) first, so every target row can be overwritten in
/// place (M needs no second n x P buffer); then the panel's rows stream through once, sequentially, each accumulated in kAccumulators
/// SIMD registers over its source rows and stored once. While a panel is computed, the rows a
/// few ahead and the next panel's active rows are prefetched.
///
/// Every column sees the same sequence of operations however the panels are split over threads
/// (the padding of the last panel makes every panel a full chunk), so results are bitwise
/// independent of the number of threads.
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <sparse_rtrl/parallel/denormals.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/influence_storage.hpp>
#include <sparse_rtrl/detail/multiply_add.hpp>
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

/// How far ahead of the row being computed its panel is prefetched (for writing), in bytes.
/// The pass over a panel is sequential, but hardware prefetchers alone fall behind it. By
/// Little's law the distance must cover the memory latency at the rate the kernel consumes M:
/// about 100 ns at 40-80 GB/s is 4-8 KB. Measured on a 2-core AMD EPYC (Zen 5, AVX-512, 512-byte
/// rows), BM_PropagationKernel/26/27/24000 took 0.96-1.26 ms with 8 rows (4 KB) ahead, 0.86-0.93
/// ms with 12-24 rows (6-12 KB) and a little more with 32 rows (16 KB): 8 KB sits in the middle
/// of that plateau. Stated in bytes so that a 256-bit build (256-byte rows) prefetches as far.
/// Override with -DSPARSE_RTRL_PREFETCH_BYTES=<bytes> (0: none).
#ifndef SPARSE_RTRL_PREFETCH_BYTES
#define SPARSE_RTRL_PREFETCH_BYTES 8192
#endif
/// Rows of one panel (kChunk scalars each) in SPARSE_RTRL_PREFETCH_BYTES, at least 1 unless 0.
template <typename Scalar>
constexpr Index prefetch_rows() {
  constexpr Index row_bytes = kChunk<Scalar> * Index(sizeof(Scalar));
  constexpr Index bytes = SPARSE_RTRL_PREFETCH_BYTES;
  return bytes <= 0 ? 0 : std::max<Index>(1, (bytes + row_bytes - 1) / row_bytes);
}

/// Scalars of scratch one thread needs for up to n active rows of one panel.
template <typename Scalar>
Index propagation_scratch_size(Index n) {
  return std::max<Index>(n, 1) * kChunk<Scalar>;
}

/// The kernel's scratch, aligned for Eigen's widest packet (64 bytes with AVX-512). A plain
/// std::vector is 16-byte aligned: at 128 KB and above glibc serves it from mmap at a page + 16
/// bytes, so every 64-byte load of a scratch row straddled two cache lines. Measured on a 2-core
/// AMD EPYC (Zen 5, AVX-512), BM_PropagationKernel/26/27/256 (in cache) ran at 80 or 115
/// GFLOP/s from run to run as the allocation landed; aligned it runs at the faster rate.
template <typename Scalar>
using PropagationScratch = std::vector<Scalar, Eigen::aligned_allocator<Scalar>>;

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

/// A partial chunk (width < kChunk) at the end of a column range of the cross-layer term:
/// packet by packet, then scalar columns. Always the same columns, so the thread split never
/// moves a column between paths.
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
    for (Index e = 0; e < entries; ++e) a = multiply_add(coef[e], scratch[source[e] * stride + c], a);
    out[c] = a;
  }
}

/// The first @p width <= kChunk columns of a chunk: propagate_chunk when the chunk is whole,
/// else propagate_partial_chunk (a partial chunk is always the same columns of a layer, the last
/// ones, so a column never moves between the two paths).
template <typename Scalar>
inline void propagate_chunk_upto(Scalar* out, Scalar decay, const Scalar* scratch, Index stride, const Index* source,
                                 const Scalar* coef, Index entries, Index width) {
  if (width == kChunk<Scalar>)
    propagate_chunk<Scalar>(out, decay, scratch, stride, source, coef, entries);
  else
    propagate_partial_chunk<Scalar>(out, decay, scratch, stride, source, coef, entries, width);
}

template <typename Scalar>
inline void prefetch_chunk(const Scalar* p, bool for_write) {
#if defined(__GNUC__) || defined(__clang__)
  const char* b = reinterpret_cast<const char*>(p);
  for (std::size_t off = 0; off < std::size_t(kChunk<Scalar>) * sizeof(Scalar); off += 64) {
    if (for_write)
      __builtin_prefetch(b + off, 1, 3);
    else
      __builtin_prefetch(b + off, 0, 3);
  }
#else
  (void)p;
  (void)for_write;
#endif
}

/// Panels [p_begin, p_end) of M <- diag(decay) M + C M[C.active]. scratch must hold
/// propagation_scratch_size<Scalar>(M.rows()) scalars.
template <typename Scalar>
void propagate_panels(InfluenceStorage<Scalar>& M, Index p_begin, Index p_end, const Scalar* decay,
                      const Coupling<Scalar>& C, Scalar* scratch) {
  constexpr Index W = kChunk<Scalar>;
  static_assert(InfluenceStorage<Scalar>::kPanel == W, "a panel is one register chunk wide");
  constexpr Index ahead = prefetch_rows<Scalar>();
  const Index n = M.rows(), k = C.active_count;
  const Index* active = C.active.data();
  for (Index p = p_begin; p < p_end; ++p) {
    Scalar* base = M.panel(p);
    // Panels are contiguous: near a panel's end the rows ahead are the next panel's first ones.
    const Index prefetch_end = (p + 1 < p_end ? 2 : 1) * n;
    for (Index a = 0; a < k; ++a) std::memcpy(scratch + a * W, base + active[a] * W, sizeof(Scalar) * std::size_t(W));
    // The next panel's active rows are scattered through it: fetch them while this one runs.
    if (p + 1 < p_end)
      for (Index a = 0; a < k; ++a) prefetch_chunk(M.panel(p + 1) + active[a] * W, false);
    for (Index i = 0; i < n; ++i) {
      if (ahead > 0 && i + ahead < prefetch_end) prefetch_chunk(base + (i + ahead) * W, true);
      const Index b = C.row_ptr[std::size_t(i)];
      propagate_chunk<Scalar>(base + i * W, decay[i], scratch, W, C.source.data() + b, C.coef.data() + b,
                              C.row_ptr[std::size_t(i + 1)] - b);
    }
  }
}

/// Below this many multiply-adds a step runs on one thread: waking a team costs more.
constexpr double kParallelMinFma = 2e5;

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

/// M <- diag(decay) M + C M[C.active], in place, over all of M's columns, on the pool's threads.
/// The panels are split into one contiguous range per thread; ranges share nothing but the
/// read-only coupling, so threads never synchronise inside the product. Each thread runs its
/// range with subnormals flushed when @p flush_subnormals. scratch holds pool.threads() *
/// scratch_stride scalars, scratch_stride >= propagation_scratch_size(M.rows()).
template <typename Scalar>
void propagate_in_place(InfluenceStorage<Scalar>& M, const Scalar* decay, const Coupling<Scalar>& C, Scalar* scratch,
                        Index scratch_stride, parallel::ThreadPool& pool, bool flush_subnormals) {
  SPARSE_RTRL_ASSERT(scratch_stride >= propagation_scratch_size<Scalar>(M.rows()));
  constexpr Index W = kChunk<Scalar>;
  split_columns<Scalar>(M.cols(), double(C.nnz() + M.rows()) * double(M.cols()), pool, flush_subnormals,
                        [&](int t, Index begin, Index end) {
                          propagate_panels(M, begin / W, (end + W - 1) / W, decay, C,
                                           scratch + Index(t) * scratch_stride);
                        });
}

/// Columns [c_begin, c_end) of M += C Mprev, where C's sources are rows of another influence
/// matrix Mprev with the same column panels (c_end <= Mprev.cols()): the cross-layer term
/// B^k_t D^{k-1}_t of a stack (model.md, "Stacked layers"). Same chunk sequence per column as
/// propagate_panels (decay 1 multiplies exactly), so results do not depend on the split.
/// c_begin is a multiple of kChunk.
template <typename Scalar>
void cross_add_columns(InfluenceStorage<Scalar>& M, Index c_begin, Index c_end, const InfluenceStorage<Scalar>& Mprev,
                       const Coupling<Scalar>& C) {
  constexpr Index W = kChunk<Scalar>;
  const Index n = M.rows();
  for (Index p = c_begin / W; p * W < c_end; ++p) {
    Scalar* base = M.panel(p);
    const Scalar* sources = Mprev.panel(p);
    const Index width = std::min<Index>(W, c_end - p * W);
    for (Index i = 0; i < n; ++i) {
      const Index b = C.row_ptr[std::size_t(i)];
      const Index entries = C.row_ptr[std::size_t(i + 1)] - b;
      if (entries == 0) continue;
      propagate_chunk_upto<Scalar>(base + i * W, Scalar(1), sources, W, C.source.data() + b, C.coef.data() + b,
                                   entries, width);
    }
  }
}

/// M[:, 0:P) += C Mprev[:, 0:P) on the pool's threads, chunk-aligned column ranges (as
/// propagate_in_place).
template <typename Scalar>
void cross_add_in_place(InfluenceStorage<Scalar>& M, Index P, const InfluenceStorage<Scalar>& Mprev,
                        const Coupling<Scalar>& C, parallel::ThreadPool& pool, bool flush_subnormals) {
  SPARSE_RTRL_ASSERT(P <= M.cols() && P <= Mprev.cols());
  split_columns<Scalar>(P, double(C.nnz()) * double(P), pool, flush_subnormals, [&](int, Index begin, Index end) {
    cross_add_columns(M, begin, end, Mprev, C);
  });
}

}  // namespace detail
}  // namespace sparse_rtrl
