/// @file detail/propagate.hpp
/// @brief The RTRL propagation kernel: M <- diag(decay) M + C M[active rows], in place.
///
/// This is the J_t M_{t-1} product of model.md ("RTRL") with J_t = diag(decay) + A_t diag(s).
/// C holds A_t diag(s_{t-1}) restricted to the active source rows (s != 0) and to A's pattern
/// (R's mask), compressed by target row. Columns of M are processed in tiles: the active rows'
/// tile is copied to a small scratch first, so every target row can be overwritten in place
/// (M needs no second n x P buffer), and the scratch stays in cache while all n target rows
/// stream through it. Inside a tile, a chunk of kChunk columns of one target row is accumulated
/// in registers over all its source rows before being stored once.
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <sparse_rtrl/detail/check.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace sparse_rtrl {
namespace detail {

/// Coupling coefficients of one step (A_t diag(s_{t-1}) on active sources), CSR by target row.
template <typename Scalar>
struct Coupling {
  std::vector<Index> active;    ///< source rows j with s_j != 0 (or all rows for dense RTRL)
  std::vector<Index> row_ptr;   ///< n + 1
  std::vector<Index> source;    ///< compact source index (position in `active`) per entry
  std::vector<Scalar> coef;     ///< A_ij * s_j per entry
  Index nnz() const { return row_ptr.empty() ? 0 : row_ptr.back(); }

  void reserve(Index n, Index pattern_nnz) {
    active.reserve(std::size_t(n));
    row_ptr.assign(std::size_t(n + 1), 0);
    source.resize(std::size_t(pattern_nnz));
    coef.resize(std::size_t(pattern_nnz));
  }
};

/// Register-resident chunk: 256 bytes, i.e. 8 AVX registers of accumulators.
template <typename Scalar>
constexpr Index kChunk = Index(256 / sizeof(Scalar));

/// Bytes of scratch the active-row tile may use: small enough that the tile and the target rows
/// streaming past it both stay in L1. Measured on the 26-active-row, P = 24000 benchmark case
/// (bench_rtrl, BM_PropagationKernel) on AMD EPYC with 48 KiB L1d and 1 MiB L2, CPU time per
/// call over three runs: 16 KiB 2.28-2.41 ms, 24 KiB 2.05-2.35, 32 KiB 2.35-2.58, 48 KiB
/// 2.58-3.03, 128-512 KiB 2.7-2.96. Override with -DSPARSE_RTRL_SCRATCH_KIB=<KiB> for other caches.
#ifndef SPARSE_RTRL_SCRATCH_KIB
#define SPARSE_RTRL_SCRATCH_KIB 24
#endif
constexpr Index kScratchBytes = Index(SPARSE_RTRL_SCRATCH_KIB) * 1024;

/// Scalars of scratch needed for n rows (the largest tile ever used).
template <typename Scalar>
Index propagation_scratch_size(Index n) {
  return std::max<Index>(kScratchBytes / Index(sizeof(Scalar)), n * kChunk<Scalar>);
}

/// Width of the column tile for k active rows: as wide as the cache budget allows, a multiple
/// of the chunk, at least one chunk.
template <typename Scalar>
Index propagation_tile_width(Index k, Index columns) {
  const Index budget = kScratchBytes / Index(sizeof(Scalar));
  Index width = k > 0 ? budget / k : columns;
  width = std::max<Index>(kChunk<Scalar>, (width / kChunk<Scalar>) * kChunk<Scalar>);
  return std::min<Index>(width, std::max<Index>(columns, Index(1)));
}

template <typename Scalar, Index Width>
inline void propagate_row_chunk(Scalar* target, Scalar decay, const Scalar* scratch,
                                Index scratch_stride, const Index* source, const Scalar* coef,
                                Index entries, Index width) {
  using Chunk = Eigen::Array<Scalar, Width, 1>;
  using ChunkMap = Eigen::Map<Chunk>;
  using ConstChunkMap = Eigen::Map<const Chunk>;
  if constexpr (Width != Eigen::Dynamic) {
    (void)width;
    ChunkMap out(target);
    Chunk acc = decay * out;
    for (Index e = 0; e < entries; ++e) acc += coef[e] * ConstChunkMap(scratch + source[e] * scratch_stride);
    out = acc;
  } else {
    ChunkMap out(target, width);
    out *= decay;
    for (Index e = 0; e < entries; ++e)
      out += coef[e] * ConstChunkMap(scratch + source[e] * scratch_stride, width);
  }
}

template <typename Scalar>
inline void prefetch_chunk(const Scalar* p) {
#if defined(__GNUC__) || defined(__clang__)
  for (Index b = 0; b < Index(sizeof(Scalar)) * kChunk<Scalar>; b += 64)
    __builtin_prefetch(reinterpret_cast<const char*>(p) + b, 1, 3);
#else
  (void)p;
#endif
}

/// Columns [c_begin, c_end) of M (row-major, n rows, leading dimension ld) <- diag(decay) M +
/// C M[C.active]. scratch must hold propagation_scratch_size<Scalar>(n) scalars.
template <typename Scalar>
void propagate_columns(Scalar* M, Index n, Index c_begin, Index c_end, Index ld, const Scalar* decay,
                       const Coupling<Scalar>& C, Scalar* scratch) {
  const Index k = Index(C.active.size());
  const Index tile = propagation_tile_width<Scalar>(k, c_end - c_begin);
  constexpr Index chunk = kChunk<Scalar>;
  for (Index c0 = c_begin; c0 < c_end; c0 += tile) {
    const Index w = std::min<Index>(tile, c_end - c0);
    for (Index a = 0; a < k; ++a)
      std::memcpy(scratch + a * tile, M + C.active[std::size_t(a)] * ld + c0, sizeof(Scalar) * std::size_t(w));
    const Index full = (w / chunk) * chunk;
    for (Index i = 0; i < n; ++i) {
      Scalar* row = M + i * ld + c0;
      // The next target row's segment is in another page: start fetching it now, chunk by
      // chunk, so it is in cache when its turn comes (hardware prefetchers stop at pages).
      const Scalar* next = i + 1 < n ? row + ld : row;
      const Index b = C.row_ptr[std::size_t(i)];
      const Index entries = C.row_ptr[std::size_t(i + 1)] - b;
      const Index* src = C.source.data() + b;
      const Scalar* cf = C.coef.data() + b;
      for (Index cc = 0; cc < full; cc += chunk) {
        prefetch_chunk<Scalar>(next + cc);
        propagate_row_chunk<Scalar, chunk>(row + cc, decay[i], scratch + cc, tile, src, cf, entries, chunk);
      }
      if (full < w)
        propagate_row_chunk<Scalar, Eigen::Dynamic>(row + full, decay[i], scratch + full, tile, src, cf,
                                                    entries, w - full);
    }
  }
}

/// Threads the kernel may use: OpenMP's maximum when the including program is compiled with
/// OpenMP (-fopenmp), else 1.
inline int propagation_max_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Below this many multiply-adds a step runs on one thread: a parallel region costs more.
constexpr double kParallelMinFma = 2e6;

/// M <- diag(decay) M + C M[C.active], in place, over all P columns. With OpenMP the columns are
/// split into one contiguous, chunk-aligned range per thread; ranges share nothing but the
/// read-only coupling, so threads never synchronise. scratch must hold
/// propagation_max_threads() * propagation_scratch_size<Scalar>(n) scalars.
template <typename Scalar>
void propagate_in_place(Scalar* M, Index n, Index P, Index ld, const Scalar* decay,
                        const Coupling<Scalar>& C, Scalar* scratch) {
#if defined(_OPENMP)
  const double fma = double(C.nnz() + n) * double(P);
  const int threads = fma < kParallelMinFma ? 1 : propagation_max_threads();
  if (threads > 1) {
    const Index per_scratch = propagation_scratch_size<Scalar>(n);
#pragma omp parallel num_threads(threads)
    {
      const Index t = omp_get_thread_num(), T = omp_get_num_threads();
      const Index chunks = (P + kChunk<Scalar> - 1) / kChunk<Scalar>;
      const Index begin = std::min<Index>(P, (chunks * t / T) * kChunk<Scalar>);
      const Index end = std::min<Index>(P, (chunks * (t + 1) / T) * kChunk<Scalar>);
      if (begin < end) propagate_columns(M, n, begin, end, ld, decay, C, scratch + t * per_scratch);
    }
    return;
  }
#endif
  propagate_columns(M, n, Index(0), P, ld, decay, C, scratch);
}

}  // namespace detail
}  // namespace sparse_rtrl
