/// @file mpi/grid.hpp
/// @brief The rank grid: ranks = stream groups x column shards. Which rank is which, which
///        streams a group advances, and choose_grid(), which picks a grid from the number of
///        ranks, the streams and the memory a rank may use. MPI-free (pure functions).
///
/// Rank r of the communicator is group r / shards, shard r % shards: the shards of one group are
/// neighbours (on a cluster, ranks of a node are consecutive, so a group's gradient gather stays
/// on a node when shards divide the ranks per node), and the ranks holding the same columns of
/// different groups form the chain of the ordered stream sum (mpi/ordered_sum.hpp).
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/influence_storage.hpp>
#include <sparse_rtrl/learners/column_partition.hpp>
#include <sparse_rtrl/model/influence_layout.hpp>
#include <sparse_rtrl/model/model.hpp>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace sparse_rtrl {
namespace mpi {

/// @brief groups x shards ranks: each stream group advances a contiguous block of the B
/// streams (group g: [B g / groups, B (g + 1) / groups)), each of its streams split by columns
/// over the group's shards.
struct Grid {
  int groups = 1;
  int shards = 1;
  int ranks() const { return groups * shards; }
  int group_of(int rank) const { return rank / shards; }
  int shard_of(int rank) const { return rank % shards; }
  /// Group g's streams [first_stream(g, B), first_stream(g + 1, B)).
  static Index first_stream(int group, int groups, Index streams) {
    return Index(std::int64_t(streams) * group / groups);
  }
  Index first_stream(int group, Index streams) const { return first_stream(group, groups, streams); }
  /// The group that advances stream b.
  int group_of_stream(Index b, Index streams) const {
    int g = int(std::int64_t(b) * groups / streams);
    while (g + 1 < groups && first_stream(g + 1, streams) <= b) ++g;
    while (g > 0 && first_stream(g, streams) > b) --g;
    return g;
  }
  friend bool operator==(const Grid& a, const Grid& b) { return a.groups == b.groups && a.shards == b.shards; }
  std::string str() const { return std::to_string(groups) + " groups x " + std::to_string(shards) + " shards"; }
};

/// @brief Refuses a grid that cannot cover @p ranks ranks and @p streams streams
/// (std::invalid_argument naming both): groups, shards >= 1, groups x shards == ranks, and at
/// most one group per stream. (More shards than panels of columns is refused by the column
/// split, mpi::checked_partition.) A pure function: every rank reaches the same verdict.
inline void require_grid(const Grid& grid, int ranks, Index streams, const char* where) {
  std::string why;
  if (grid.groups < 1 || grid.shards < 1)
    why = "groups and shards must be >= 1";
  else if (std::int64_t(grid.groups) * grid.shards != ranks)
    why = "groups x shards must equal the " + std::to_string(ranks) + " ranks of the communicator";
  else if (streams < 1)
    why = "streams must be >= 1";
  else if (Index(grid.groups) > streams)
    why = "more stream groups than the " + std::to_string(streams) + " streams (each group needs a stream)";
  if (!why.empty())
    throw std::invalid_argument(std::string(where) + ": the grid " + std::to_string(grid.groups) + " groups x " +
                                std::to_string(grid.shards) + " shards cannot cover " + std::to_string(ranks) +
                                " ranks and " + std::to_string(streams) + " streams: " + why);
}

/// Bytes of one stream's influence matrices for @p model's masks (every layer's blocks).
template <typename Scalar, typename Surrogate>
double stream_influence_bytes(const Model<Scalar, Surrogate>& model) {
  double bytes = 0;
  Index width = 0;
  for (Index k = 0; k < model.layers(); ++k) {
    width += InfluenceLayout(model.mask(k), model.events(k)).columns();
    bytes += detail::InfluenceStorage<Scalar>::bytes_for(model.units(k), width);
  }
  return bytes;
}

/// @brief The grid for @p ranks ranks and @p streams streams whose ranks each hold at most
/// @p bytes_per_rank of influence matrices: the fewest column shards that fit (shards repeat the
/// forward step and gather the gradient; stream groups do neither, so streams are split first),
/// among the divisors of @p ranks that leave at most one group per stream and one panel per
/// shard. A rank's influence bytes are estimated as (its group's streams, rounded up) x (one
/// stream's bytes) / shards, plus one panel of slack for the panel-aligned split. Throws
/// std::invalid_argument, the same on every rank, when no grid fits, naming the smallest memory
/// per rank that would.
template <typename Scalar, typename Surrogate>
Grid choose_grid(int ranks, Index streams, const Model<Scalar, Surrogate>& model, double bytes_per_rank) {
  const char* where = "sparse_rtrl::mpi::choose_grid()";
  if (ranks < 1 || streams < 1 || !(bytes_per_rank > 0))
    throw std::invalid_argument(std::string(where) + ": ranks and streams must be >= 1 and bytes_per_rank > 0, received " +
                                std::to_string(ranks) + ", " + std::to_string(streams) + ", " +
                                std::to_string(bytes_per_rank));
  const double per_stream = stream_influence_bytes(model);
  Index columns = 0, top = 0;
  for (Index k = 0; k < model.layers(); ++k) {
    columns += InfluenceLayout(model.mask(k), model.events(k)).columns();
    top += model.units(k);
  }
  const Index panel = detail::kChunk<Scalar>;
  const Index panels = std::max<Index>(1, (columns + panel - 1) / panel);
  double best = -1;
  for (int shards = 1; shards <= ranks; ++shards) {
    if (ranks % shards) continue;
    const int groups = ranks / shards;
    if (Index(groups) > streams || Index(shards) > panels) continue;
    const Index mine = (streams + groups - 1) / groups;
    const double need = double(mine) * (per_stream / shards + double(sizeof(Scalar)) * double(top) * double(panel));
    if (need <= bytes_per_rank) return Grid{groups, shards};
    if (best < 0 || need < best) best = need;
  }
  throw std::invalid_argument(std::string(where) + ": no grid of " + std::to_string(ranks) + " ranks over " +
                              std::to_string(streams) + " streams keeps a rank's influence matrices within " +
                              std::to_string(bytes_per_rank / 1e9) + " GB (one stream: " +
                              std::to_string(per_stream / 1e9) + " GB; " +
                              (best < 0 ? std::string("no grid covers these ranks at all")
                                        : "the best grid needs " + std::to_string(best / 1e9) + " GB per rank") +
                              "): use more ranks, fewer streams or a sparser mask");
}

}  // namespace mpi
}  // namespace sparse_rtrl
