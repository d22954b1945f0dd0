/// @file learners/column_partition.hpp
/// @brief How the columns of the influence matrix are split over ranks: contiguous ranges of
///        the global column space, whole storage panels each, balanced by the entries of M a
///        column carries. A pure function of the model's shape and masks: no MPI here (the
///        MPI part, include/sparse_rtrl/mpi/, computes it on every rank alike).
///
/// Why by stored entries and not by column count: in a stack of L layers, layer k keeps the
/// blocks M^{k,0} ... M^{k,k} (learners/rtrl.hpp), so a column of layer m's parameters has rows
/// in every block k >= m: n_m + ... + n_{L-1} of them. A step streams every stored entry of M once
/// (propagation, and the cross-layer term of the blocks below the diagonal), so the entries a
/// rank stores are both its memory and, to first order, its step time. The per-entry work also
/// has a part proportional to the active coupling nonzeros of the row (activity times the
/// recurrent pattern), which this model leaves out: at the sparse design point (activity and
/// density 0.05) it is a few multiply-adds per entry against the load and store every entry
/// costs, and it is the same per entry within a block. Pruned weights have no column at all.
///
/// Why whole panels: M is stored in panels of kChunk columns (detail/influence_storage.hpp), and
/// the kernels treat a panel's last, partial chunk differently from a whole one. A shard that
/// starts and ends on a panel boundary of the global column space (the last shard ends at the
/// last column) runs every column through exactly the operations one process runs, so the
/// sharded result is bitwise the one-process result. Hence at most as many ranks as panels.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/influence_storage.hpp>
#include <sparse_rtrl/model/influence_layout.hpp>
#include <sparse_rtrl/model/model.hpp>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {

/// @brief The work of every column, layer by layer: layer m's parameters own @c columns[m]
/// consecutive global columns (after those of layers 0..m-1), each of cost @c cost[m] (the rows
/// it has in M: the units of layers m..L-1).
struct ColumnWork {
  std::vector<Index> columns;
  std::vector<std::uint64_t> cost;

  Index total_columns() const {
    Index p = 0;
    for (Index c : columns) p += c;
    return p;
  }
};

/// @brief A split of the global columns [0, P) into one contiguous range per rank.
class ColumnPartition {
 public:
  ColumnPartition() = default;

  /// @brief Splits @p work over @p ranks ranks: every range but the last starts and ends on a
  /// multiple of @p align (the storage's panel width; 1 for no alignment), every range holds at
  /// least one aligned block, and the ranges' costs are as even as whole blocks allow (each
  /// boundary is the block boundary nearest to its share r / ranks of the total cost, the lower
  /// one on a tie). Deterministic: the same input gives the same split on every rank.
  /// Throws std::invalid_argument for ranks < 1, align < 1, malformed work, or more ranks than
  /// aligned blocks ("more ranks than there is work to split").
  ColumnPartition(const ColumnWork& work, int ranks, Index align) {
    const char* where = "sparse_rtrl::ColumnPartition()";
    if (ranks < 1) detail::fail(where, "ranks must be >= 1, received " + std::to_string(ranks));
    if (align < 1) detail::fail(where, "align must be >= 1, received " + std::to_string(align));
    if (work.columns.size() != work.cost.size() || work.columns.empty())
      detail::fail(where, "work needs one column count and one cost per layer (at least one layer), received " +
                              std::to_string(work.columns.size()) + " column counts and " +
                              std::to_string(work.cost.size()) + " costs");
    for (std::size_t m = 0; m < work.columns.size(); ++m)
      if (work.columns[m] < 0)
        detail::fail(where, "layer " + std::to_string(m) + " has a negative column count (" +
                                std::to_string(work.columns[m]) + ")");
    columns_ = work.total_columns();
    const Index blocks = (columns_ + align - 1) / align;
    if (Index(ranks) > blocks)
      detail::fail(where, "cannot split " + std::to_string(columns_) + " influence columns over " +
                              std::to_string(ranks) + " ranks: a rank owns whole panels of " + std::to_string(align) +
                              " columns (so that it computes every column bitwise as one process does), and there are " +
                              std::to_string(blocks) + "; use at most " + std::to_string(blocks) +
                              " ranks for this model, or a larger model");
    // prefix[b]: the cost of the columns before block b's first column.
    std::vector<std::uint64_t> prefix(std::size_t(blocks + 1), 0);
    {
      std::size_t m = 0;
      Index layer_end = work.columns[0];
      for (Index b = 0; b < blocks; ++b) {
        std::uint64_t cost = 0;
        for (Index c = b * align; c < std::min<Index>((b + 1) * align, columns_);) {
          while (c >= layer_end) layer_end += work.columns[++m];
          const Index take = std::min<Index>(std::min<Index>((b + 1) * align, columns_), layer_end) - c;
          cost += std::uint64_t(take) * work.cost[m];
          c += take;
        }
        prefix[std::size_t(b + 1)] = prefix[std::size_t(b)] + cost;
      }
    }
    const std::uint64_t total = prefix.back();
    std::vector<Index> block_bound(std::size_t(ranks + 1), 0);
    block_bound[std::size_t(ranks)] = blocks;
    for (int r = 1; r < ranks; ++r) {
      // The share r/ranks of the total, compared as prefix * ranks against r * total (exact in
      // integers: no rounding can make ranks disagree).
      const std::uint64_t target = std::uint64_t(r) * total;
      Index b = 0;
      while (b < blocks && prefix[std::size_t(b)] * std::uint64_t(ranks) < target) ++b;
      // b: the first boundary at or past the target; b - 1 may be nearer.
      if (b > 0) {
        const std::uint64_t above = prefix[std::size_t(b)] * std::uint64_t(ranks) - target;
        const std::uint64_t below = target - prefix[std::size_t(b - 1)] * std::uint64_t(ranks);
        if (below <= above) --b;
      }
      // At least one block per range, before and after.
      b = std::max<Index>(b, block_bound[std::size_t(r - 1)] + 1);
      b = std::min<Index>(b, blocks - Index(ranks - r));
      block_bound[std::size_t(r)] = b;
    }
    bounds_.resize(std::size_t(ranks + 1));
    work_.resize(std::size_t(ranks));
    for (int r = 0; r <= ranks; ++r) bounds_[std::size_t(r)] = std::min<Index>(block_bound[std::size_t(r)] * align, columns_);
    for (int r = 0; r < ranks; ++r)
      work_[std::size_t(r)] = prefix[std::size_t(block_bound[std::size_t(r + 1)])] - prefix[std::size_t(block_bound[std::size_t(r)])];
  }

  int ranks() const { return int(work_.size()); }
  /// All columns (P_kept over all layers).
  Index columns() const { return columns_; }
  /// Rank r's columns: [begin(r), end(r)).
  Index begin(int rank) const { return bounds_.at(std::size_t(rank)); }
  Index end(int rank) const { return bounds_.at(std::size_t(rank) + 1); }
  /// The ranks + 1 boundaries, 0 first and columns() last.
  const std::vector<Index>& bounds() const { return bounds_; }
  /// Rank r's cost (the stored entries of M its columns carry).
  std::uint64_t work(int rank) const { return work_.at(std::size_t(rank)); }
  /// The rank owning global column c.
  int owner(Index column) const {
    if (column < 0 || column >= columns_)
      throw std::out_of_range("sparse_rtrl::ColumnPartition::owner(): column must be in [0, " +
                              std::to_string(columns_) + "), received " + std::to_string(column));
    int r = 0;
    while (bounds_[std::size_t(r + 1)] <= column) ++r;
    return r;
  }

  friend bool operator==(const ColumnPartition& a, const ColumnPartition& b) {
    return a.columns_ == b.columns_ && a.bounds_ == b.bounds_;
  }
  friend bool operator!=(const ColumnPartition& a, const ColumnPartition& b) { return !(a == b); }

 private:
  Index columns_ = 0;
  std::vector<Index> bounds_;
  std::vector<std::uint64_t> work_;
};

/// @brief Where each global column of the per-layer layouts @p from (layer 0's columns first)
/// lands in the layouts @p to of the same layers, or -1 when its parameter has no column there
/// (pruned): how a mask change carries influence columns over. Columns kept by both keep their
/// relative order, so the map is increasing on the columns it keeps.
inline std::vector<Index> column_map(const std::vector<InfluenceLayout>& from, const std::vector<InfluenceLayout>& to) {
  if (from.size() != to.size())
    detail::fail("sparse_rtrl::column_map()", "layouts of " + std::to_string(from.size()) + " and " +
                                                  std::to_string(to.size()) + " layers");
  Index total = 0;
  for (const auto& l : from) total += l.columns();
  std::vector<Index> map(std::size_t(total), -1);
  Index of = 0, nf = 0;
  for (std::size_t m = 0; m < from.size(); ++m) {
    const InfluenceLayout& a = from[m];
    const InfluenceLayout& b = to[m];
    const Index n = a.units();
    for (Index rr = 0; rr < 3 * n; ++rr) {
      const Index* wk = a.w_inputs(rr);
      for (Index e = 0; e < a.w_count(rr); ++e) {
        const Index c = b.column_of_W(rr, wk[e]);
        map[std::size_t(of + a.column_of_W(rr, wk[e]))] = c >= 0 ? nf + c : -1;
      }
      const Index* rj = a.r_inputs(rr);
      for (Index e = 0; e < a.r_count(rr); ++e) {
        const Index c = b.column_of_R(rr, rj[e]);
        map[std::size_t(of + a.column_of_R(rr, rj[e]))] = c >= 0 ? nf + c : -1;
      }
      map[std::size_t(of + a.column_of_bW(rr))] = nf + b.column_of_bW(rr);
      map[std::size_t(of + a.column_of_bR(rr))] = nf + b.column_of_bR(rr);
    }
    if (a.tracks_theta() && b.tracks_theta())
      for (Index j = 0; j < n; ++j) map[std::size_t(of + a.theta_column(j))] = nf + b.theta_column(j);
    of += a.columns();
    nf += b.columns();
  }
  return map;
}

/// The column work of @p model's current masks and modes (columns per layer as
/// InfluenceLayout counts them; cost of a column of layer m: the units of layers m..L-1).
template <typename Scalar, typename Surrogate>
ColumnWork column_work(const Model<Scalar, Surrogate>& model) {
  ColumnWork work;
  const Index L = model.layers();
  for (Index m = 0; m < L; ++m) {
    work.columns.push_back(InfluenceLayout(model.mask(m), model.events(m)).columns());
    std::uint64_t rows = 0;
    for (Index k = m; k < L; ++k) rows += std::uint64_t(model.units(k));
    work.cost.push_back(rows);
  }
  return work;
}

/// The split the column-sharded learner uses for @p model on @p ranks ranks: aligned to the
/// influence storage's panel width (detail::kChunk<Scalar>, which depends on the SIMD width the
/// code was compiled for: every rank must be built alike, which the consistency check verifies).
template <typename Scalar, typename Surrogate>
ColumnPartition partition_columns(const Model<Scalar, Surrogate>& model, int ranks) {
  return ColumnPartition(column_work(model), ranks, detail::kChunk<Scalar>);
}

}  // namespace sparse_rtrl
