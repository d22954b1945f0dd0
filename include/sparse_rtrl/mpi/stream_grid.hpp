/// @file mpi/stream_grid.hpp
/// @brief B streams over a grid of MPI ranks (stream groups x column shards): the distributed
///        RtrlStreams. Each group advances a contiguous block of the streams, each stream's
///        influence matrix split by columns over the group's shards (mpi::ShardedRtrl); the
///        gradient is summed over all streams in global stream order, so every rank gets the
///        one-process RtrlStreams gradient bit for bit, for any grid.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/gradient_front_end.hpp>
#include <sparse_rtrl/mpi/communicator.hpp>
#include <sparse_rtrl/mpi/consistency.hpp>
#include <sparse_rtrl/mpi/grid.hpp>
#include <sparse_rtrl/mpi/ordered_sum.hpp>
#include <sparse_rtrl/mpi/sharded_rtrl.hpp>
#include <sparse_rtrl/parallel/denormals.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace mpi {

namespace detail_grid {
/// A communicator of the ranks of @p parent with the same @p color, ordered by @p key
/// (MPI_Comm_split, then owned as a Communicator).
inline Communicator split(const Communicator& parent, int color, int key) {
  MPI_Comm raw = MPI_COMM_NULL;
  check(MPI_Comm_split(parent.get(), color, key, &raw), "MPI_Comm_split");
  Communicator out(raw);
  MPI_Comm_free(&raw);
  return out;
}
}  // namespace detail_grid

/// @brief B streams of exact RTRL over one model, on a grid of ranks (docs/distributed.md,
/// "Stream groups and the grid").
///
/// Every rank of the communicator constructs one over its own copy of the same model (checked)
/// and calls the same member functions with the same arguments: step(X) with the B x d inputs of
/// all streams (or only this rank's rows, local_streams() x d) and accumulate_gradient(G) with
/// the B x n loss gradients (or this rank's rows); a rank reads only its group's rows.
/// gradient() is collective: the ordered chained sum over the groups (mpi/ordered_sum.hpp), then
/// the shards' slices gathered (MPI_Allgatherv), the same bits on every rank as
/// RtrlStreams::gradient() of one process. step() and accumulate_gradient() exchange one int per
/// call over all ranks (whether any stream failed), so that a stream refused on one group (a
/// non-finite state, an overflowed gradient) is refused on every rank, with every stream as it
/// was: no rank is left waiting.
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class StreamGrid : public sparse_rtrl::detail::GradientFrontEnd<StreamGrid<Scalar, Surrogate>, Scalar> {
 public:
  static constexpr const char* name = "sparse_rtrl::mpi::StreamGrid";
  using Model = sparse_rtrl::Model<Scalar, Surrogate>;
  using Stream = ShardedRtrl<Scalar, Surrogate>;
  using Parameters = EgruParameters<Scalar>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  /// @brief Collective over @p comm: checks the grid (require_grid) and that every rank holds
  /// the same model (std::invalid_argument on every rank otherwise), splits comm into the
  /// groups' and the shards' communicators and builds this rank's streams, each a ShardedRtrl
  /// over its group. The model must outlive the learner.
  StreamGrid(Model& model, Index streams, Grid grid, MPI_Comm comm = MPI_COMM_WORLD, RtrlOptions options = {})
      : world_(comm),
        grid_(checked(grid, world_, streams)),
        group_comm_(detail_grid::split(world_, grid_.group_of(world_.rank()), grid_.shard_of(world_.rank()))),
        chain_(detail_grid::split(world_, grid_.shard_of(world_.rank()), grid_.group_of(world_.rank()))),
        streams_(streams) {
    const char* where = "sparse_rtrl::mpi::StreamGrid::StreamGrid()";
    require_same_model(world_, model, options, where);
    group_ = grid_.group_of(world_.rank());
    shard_ = grid_.shard_of(world_.rank());
    first_ = grid_.first_stream(group_, streams);
    end_ = grid_.first_stream(group_ + 1, streams);
    // Each group builds its streams over its own communicator; a failure in one group (too many
    // shards for the panels, no memory) is made known to every rank.
    std::exception_ptr failure;
    try {
      for (Index b = first_; b < end_; ++b)
        local_.push_back(std::make_unique<Stream>(model, group_comm_.get(), options));
    } catch (...) {
      failure = std::current_exception();
    }
    world_.agree(failure, where);
    model_ = &model;
  }
  StreamGrid(Model&& model, Index streams, Grid grid, MPI_Comm comm = MPI_COMM_WORLD, RtrlOptions options = {}) = delete;

  // ---- Shape and placement ----
  /// B, all streams of all groups.
  Index streams() const { return streams_; }
  /// This rank's streams: [first_stream(), end_stream()) of the global indices.
  Index first_stream() const { return first_; }
  Index end_stream() const { return end_; }
  Index local_streams() const { return end_ - first_; }
  bool owns(Index b) const { return b >= first_ && b < end_; }
  const Grid& grid() const { return grid_; }
  int group() const { return group_; }
  int shard() const { return shard_; }
  int rank() const { return world_.rank(); }
  int ranks() const { return world_.size(); }
  Model& model() { return *model_; }
  const Model& model() const { return *model_; }
  Index layers() const { return model_->layers(); }
  Index units() const { return model_->units(); }
  Index inputs() const { return model_->inputs(); }
  /// Stream b (global index, owned by this rank): its ShardedRtrl (state, outputs, its columns).
  const Stream& stream(Index b) const { return *local_[std::size_t(require_local(b, "stream()"))]; }
  /// The column split of every stream over the group's shards.
  const ColumnPartition& partition() const { return local_.front()->partition(); }
  Index columns() const { return local_.front()->columns(); }
  const InfluenceLayout& layout(Index layer = 0) const { return local_.front()->layout(layer); }
  Index column_offset(Index layer) const { return local_.front()->column_offset(layer); }
  /// Bytes of this rank's influence matrices (its streams x n x its columns).
  std::size_t influence_bytes() const {
    std::size_t bytes = 0;
    for (const auto& s : local_) bytes += s->influence_bytes();
    return bytes;
  }
  const Communicator& communicator() const { return world_; }
  const Communicator& group_communicator() const { return group_comm_; }
  const Communicator& chain_communicator() const { return chain_; }

  // ---- The learner ----
  /// @brief Advances this rank's streams one step: row b of @p X is stream b's x_t (X is B x d,
  /// or local_streams() x d with row i for stream first_stream() + i). Collective (one int over
  /// all ranks; a mask change: the group's re-cut, ShardedRtrl::follow_mask()). Bad input on any
  /// rank (shape, a non-finite value in a rank's rows), or a state that would become non-finite in
  /// any stream of any group, refuses the step on every rank (std::invalid_argument), every stream
  /// as it was: all forward passes run, and all ranks agree, before any is committed.
  template <typename X>
  void step(const Eigen::MatrixBase<X>& X_batch) {
    const char* where = "sparse_rtrl::mpi::StreamGrid::step()";
    std::exception_ptr refused;
    int failed = -1;
    Index offset = 0;
    try {
      offset = require_batch(where, "X", X_batch, inputs());
      for (auto& s : local_) s->follow_mask();  // the group's ranks check the same rows: all or none come here
      for (auto& s : local_) s->local_->phases().prepare(where);
      model_->enforce_mask();
      sparse_rtrl::detail::SubnormalGuard flush(local_.front()->options().flush_subnormals);
      for (std::size_t i = 0; i < local_.size(); ++i)
        if (!local_[i]->local_->phases().forward(X_batch.row(offset + Index(i)))) {
          failed = int(first_ + Index(i));
          break;
        }
    } catch (...) {
      refused = std::current_exception();
    }
    const int bad_stream = settle(refused, failed, where);
    if (bad_stream >= 0) {
      if (owns(bad_stream)) local_[std::size_t(bad_stream - first_)]->local_->phases().fail_non_finite_state(where);
      sparse_rtrl::detail::fail(where, "the state c_t of stream " + std::to_string(bad_stream) +
                                           " became non-finite (on its group's ranks); the step is refused in every "
                                           "stream on every rank");
    }
    sparse_rtrl::detail::SubnormalGuard flush(local_.front()->options().flush_subnormals);
    for (auto& s : local_) {
      auto phases = s->local_->phases();
      phases.commit_forward();
      phases.propagate();
    }
  }

  /// @brief Adds the loss gradient of every stream: row b of @p G (B x n, or local_streams() x n)
  /// is dL/dy_t of stream b (zeros: no loss there). Collective (two ints over all ranks): bad
  /// input on any rank is refused on every rank before any gradient changes
  /// (std::invalid_argument); an overflowed gradient in any stream throws std::overflow_error on
  /// every rank (the gradients then hold the overflow, as in RtrlStreams).
  template <typename G>
  void accumulate_gradient(const Eigen::MatrixBase<G>& G_batch) {
    const char* where = "sparse_rtrl::mpi::StreamGrid::accumulate_gradient()";
    accumulate(where, G_batch, [&](std::size_t, Index row) { return G_batch.row(row).isZero(0); },
               [&](auto& phases, Index row) { phases.accumulate_output_unchecked(G_batch.row(row)); });
  }
  /// The same with a loss on the events too (rows of @p G_events: dL/do_t).
  template <typename G, typename GO>
  void accumulate_gradient(const Eigen::MatrixBase<G>& G_batch, const Eigen::MatrixBase<GO>& G_events) {
    const char* where = "sparse_rtrl::mpi::StreamGrid::accumulate_gradient()";
    accumulate(
        where, G_batch,
        [&](std::size_t, Index row) {
          if (G_events.rows() != G_batch.rows() || G_events.cols() != units())
            sparse_rtrl::detail::fail(where, "G_events must have G's shape " +
                                                 sparse_rtrl::detail::shape_string(G_batch.rows(), units()) +
                                                 ", received " +
                                                 sparse_rtrl::detail::shape_string(G_events.rows(), G_events.cols()));
          sparse_rtrl::detail::require_finite(where, "G_events", G_events.row(row));
          return G_batch.row(row).isZero(0) && G_events.row(row).isZero(0);
        },
        [&](auto& phases, Index row) { phases.accumulate_output_unchecked(G_batch.row(row), G_events.row(row)); });
  }

  /// @brief Collective: the gradient per column summed over all B streams in stream order
  /// 0..B-1, on every rank (size columns()): RtrlStreams::gradient_columns() bit for bit. The
  /// chained sum of this rank's column slice over the groups (ordered_sum()), then the group's
  /// slices gathered. Valid until the next call.
  const Vector& gradient_columns() {
    for (auto& s : local_) s->follow_mask();
    const ColumnPartition& part = partition();
    parts_.clear();
    for (const auto& s : local_) parts_.push_back(s->local_gradient_columns().data());
    ordered_sum<Scalar>(chain_, parts_, part.end(shard_) - part.begin(shard_), slice_);
    const int S = group_comm_.size();
    if (whole_.size() != part.columns()) whole_.resize(part.columns());
    counts_.resize(std::size_t(S));
    displs_.resize(std::size_t(S));
    for (int r = 0; r < S; ++r) {
      displs_[std::size_t(r)] = checked_count(part.begin(r), "gradient columns");
      counts_[std::size_t(r)] = checked_count(part.end(r) - part.begin(r), "gradient columns");
    }
    whole_.segment(part.begin(shard_), slice_.size()) = slice_;
    group_comm_.allgatherv<Scalar>(nullptr, counts_[std::size_t(shard_)], whole_.data(), counts_.data(),
                                   displs_.data());
    return whole_;
  }
  // Collective: gradient(), gradient(out), gradient(k), gradient(k, out), the summed gradient in
  // parameter layout (detail::GradientFrontEnd over gradient_columns()).
  void zero_gradient() {
    for (auto& s : local_) s->zero_gradient();
  }
  /// Every stream starts a new sequence from c_0 = 0 (gradients kept). Local.
  void reset() {
    for (auto& s : local_) s->reset();
  }
  /// Stream b (global index) starts a new sequence: every rank calls it, the owners act. Local.
  void reset(Index b) {
    require_stream(b, "reset()");
    if (owns(b)) local_[std::size_t(b - first_)]->reset();
  }
  template <typename C0>
  void reset(Index b, const Eigen::MatrixBase<C0>& c0) {
    const char* where = "sparse_rtrl::mpi::StreamGrid::reset()";
    require_stream(b, "reset()");
    // Checked on every rank alike, so that a bad c0 is refused everywhere, not by the owners only.
    if (layers() != 1) throw std::logic_error(std::string(where) + ": the model is a stack: reset(b) starts from zeros");
    sparse_rtrl::detail::require_vector(where, "c0", c0, units());
    sparse_rtrl::detail::require_finite(where, "c0", c0);
    if (owns(b)) local_[std::size_t(b - first_)]->reset(c0);
  }
  /// y_t of this rank's streams after the last step, local_streams() x n (row i: stream
  /// first_stream() + i).
  Matrix local_outputs() const {
    Matrix out(local_streams(), units());
    for (std::size_t i = 0; i < local_.size(); ++i) out.row(Index(i)) = local_[i]->output().transpose();
    return out;
  }

 private:
  template <typename, typename>
  friend class GridCheckpoint;

  Index require_local(Index b, const char* what) const {
    if (!owns(b))
      throw std::out_of_range("sparse_rtrl::mpi::StreamGrid::" + std::string(what) + ": stream " + std::to_string(b) +
                              " is not on this rank (it holds [" + std::to_string(first_) + ", " +
                              std::to_string(end_) + "))");
    return b - first_;
  }
  void require_stream(Index b, const char* what) const {
    if (b < 0 || b >= streams_)
      throw std::out_of_range("sparse_rtrl::mpi::StreamGrid::" + std::string(what) + ": stream must be in [0, " +
                              std::to_string(streams_) + "), received " + std::to_string(b));
  }
  /// Rows B (all streams) or local_streams(); returns the row of this rank's first stream.
  template <typename M>
  Index require_batch(const char* where, const char* name, const Eigen::MatrixBase<M>& m, Index cols) const {
    if ((m.rows() != streams_ && m.rows() != local_streams()) || m.cols() != cols)
      sparse_rtrl::detail::fail(where, std::string(name) + " must be " +
                                           sparse_rtrl::detail::shape_string(streams_, cols) + " (all streams) or " +
                                           sparse_rtrl::detail::shape_string(local_streams(), cols) +
                                           " (this rank's), received " +
                                           sparse_rtrl::detail::shape_string(m.rows(), m.cols()));
    const Index offset = m.rows() == streams_ ? first_ : 0;
    sparse_rtrl::detail::require_finite(where, name, m.middleRows(offset, local_streams()));
    return offset;
  }
  /// @brief The one int of a call, over all ranks (MPI_Allreduce(MIN): integers, order-free):
  /// this rank's outcome is its rank when it refused (@p refused), R + b when its stream b
  /// failed (@p stream), nothing otherwise. A refusal anywhere throws on every rank (a rank that
  /// refused its own exception, the others std::invalid_argument naming the first such rank);
  /// else returns the first failed stream, or -1.
  int settle(std::exception_ptr refused, int stream, const char* where) const {
    const int R = world_.size();
    const long long none = std::numeric_limits<long long>::max();
    long long in = refused ? world_.rank() : stream >= 0 ? R + stream : none, out = 0;
    check(MPI_Allreduce(&in, &out, 1, MPI_LONG_LONG, MPI_MIN, world_.get()), "MPI_Allreduce");
    if (refused) std::rethrow_exception(refused);
    if (out == none) return -1;
    if (out < R)
      sparse_rtrl::detail::fail(where, "refused on rank " + std::to_string(out) +
                                           " (see its error: bad input there); refused on every rank, nothing changed");
    return int(out - R);
  }
  /// accumulate_gradient(): checks (shapes, finite rows, streams stepped) agreed on by all
  /// ranks before any gradient changes, then the read-outs, then the overflow check agreed.
  template <typename G, typename Zero, typename Add>
  void accumulate(const char* where, const Eigen::MatrixBase<G>& G_batch, Zero&& zero, Add&& add) {
    std::exception_ptr refused;
    Index offset = 0;
    std::vector<char>& active = active_;
    try {
      offset = require_batch(where, "G", G_batch, units());
      active.assign(local_.size(), 0);
      for (std::size_t i = 0; i < local_.size(); ++i) {
        active[i] = !zero(i, offset + Index(i));
        if (active[i]) local_[i]->local_->phases().require_stepped(where);
      }
    } catch (...) {
      refused = std::current_exception();
    }
    settle(refused, -1, where);
    {
      sparse_rtrl::detail::SubnormalGuard flush(local_.front()->options().flush_subnormals);
      for (std::size_t i = 0; i < local_.size(); ++i)
        if (active[i]) {
          auto phases = local_[i]->local_->phases();
          add(phases, offset + Index(i));
        }
    }
    int bad = -1;
    for (std::size_t i = 0; i < local_.size() && bad < 0; ++i)
      if (!local_[i]->local_gradient_columns().allFinite()) bad = int(first_ + Index(i));
    const int first_bad = settle(nullptr, bad, where);
    if (first_bad < 0) return;
    throw std::overflow_error(std::string(where) + ": the accumulated gradient of stream " + std::to_string(first_bad) +
                              " overflowed (not finite); refused on every rank");
  }

  /// Every rank must pass the same B and grid (they decide who steps which stream), checked
  /// first, on every rank: only then can require_grid() refuse on all ranks alike, before the
  /// communicator splits (a grid refused on one rank only left the others waiting in them).
  static Grid checked(const Grid& grid, const Communicator& world, Index streams) {
    const char* where = "sparse_rtrl::mpi::StreamGrid::StreamGrid()";
    const std::vector<std::uint64_t> all = world.allgather(
        std::vector<std::uint64_t>{std::uint64_t(streams), std::uint64_t(grid.groups), std::uint64_t(grid.shards)});
    for (int r = 1; r < world.size(); ++r)
      for (std::size_t i = 0; i < 3; ++i)
        if (all[3 * std::size_t(r) + i] != all[i])
          sparse_rtrl::detail::fail(where, "every rank must pass the same streams and grid: rank " + std::to_string(r) +
                                               " passed B = " + std::to_string(all[3 * std::size_t(r)]) + ", grid " +
                                               std::to_string(all[3 * std::size_t(r) + 1]) + " x " +
                                               std::to_string(all[3 * std::size_t(r) + 2]) + ", rank 0 B = " +
                                               std::to_string(all[0]) + ", grid " + std::to_string(all[1]) + " x " +
                                               std::to_string(all[2]));
    require_grid(grid, world.size(), streams, where);
    return grid;
  }

  Communicator world_;
  Grid grid_;
  Communicator group_comm_, chain_;
  Index streams_ = 0, first_ = 0, end_ = 0;
  int group_ = 0, shard_ = 0;
  Model* model_ = nullptr;
  std::vector<std::unique_ptr<Stream>> local_;
  std::vector<const Scalar*> parts_;
  Vector slice_, whole_;
  std::vector<int> counts_, displs_;
  std::vector<char> active_;
};

}  // namespace mpi
}  // namespace sparse_rtrl
