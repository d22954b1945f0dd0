/// @file mpi/sharded_rtrl.hpp
/// @brief Exact RTRL with the influence matrix split by columns over MPI ranks: each rank owns
///        a contiguous, panel-aligned range of M's global columns (ColumnPartition), runs the
///        full forward step itself, and propagates and reads out only its columns. No message
///        per step; gradient() gathers the ranks' slices (MPI_Allgatherv into place, no
///        reduction), so every rank gets the one-process Rtrl gradient bit for bit.
///
/// Why this is exact and bitwise: given the state trajectory, each column of M_t depends only on
/// the same column of M_{t-1} and on the coupling built from the forward step
/// (M_t[:, C] = J_t M_{t-1}[:, C] + Mbar_t[:, C]), which every rank computes identically from its
/// identical model and inputs. The read-out grad[c] += sum_i coef_i M[i, c] sums rows in the same
/// order for every column. Each rank's local learner is an Rtrl restricted to its column window
/// (ColumnShard), whose windows start and end on the storage's panel boundaries, so every column
/// passes through exactly the operations the one-process learner gives it.
#pragma once

#include <sparse_rtrl/detail/gradient_front_end.hpp>
#include <sparse_rtrl/learners/column_partition.hpp>
#include <sparse_rtrl/learners/rtrl.hpp>
#include <sparse_rtrl/mpi/communicator.hpp>
#include <sparse_rtrl/mpi/consistency.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace mpi {

template <typename Scalar, typename Surrogate>
class StreamGrid;
template <typename Scalar, typename Surrogate>
class GridCheckpoint;
template <typename Scalar, typename Surrogate>
class ShardedRtrlStreams;

/// @brief The column-sharded RTRL learner (docs/distributed.md).
///
/// Every rank of the communicator constructs one for its own copy of the same model (same bits:
/// checked at construction) and then calls the same member functions with the same arguments in
/// the same order (the same inputs and loss gradients: each rank computes the forward step and
/// dL/dy itself). step() and accumulate_gradient() send nothing, except the first step after a
/// mask change (pruning), which re-cuts the split and moves the columns that change owner
/// (MPI_Alltoallv). Collective: the constructor, gradient() and gradient_columns(), set_mask(),
/// follow_mask(), and step() after a mask change. Errors that depend only on the shared data
/// (bad input, a non-finite state) are raised on every rank alike; a failure of one rank alone
/// inside a collective operation (no memory) is made collective (Communicator::agree()).
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class ShardedRtrl : public sparse_rtrl::detail::GradientFrontEnd<ShardedRtrl<Scalar, Surrogate>, Scalar> {
 public:
  static constexpr const char* name = "sparse_rtrl::mpi::ShardedRtrl";
  using Model = sparse_rtrl::Model<Scalar, Surrogate>;
  using Local = Rtrl<Scalar, Surrogate>;
  using Parameters = EgruParameters<Scalar>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  /// @brief Collective over @p comm: duplicates it (Communicator), checks that every rank holds
  /// the same model and options (std::invalid_argument on every rank otherwise, naming rank and
  /// item), cuts the columns into comm's size ranges (refused on every rank when there are more
  /// ranks than panels) and builds this rank's shard. The model must outlive the learner.
  explicit ShardedRtrl(Model& model, MPI_Comm comm = MPI_COMM_WORLD, RtrlOptions options = {})
      : comm_(comm) {
    const char* where = "sparse_rtrl::mpi::ShardedRtrl::ShardedRtrl()";
    partition_ = checked_partition(comm_, model, options, where);
    std::exception_ptr failure;
    try {
      local_ = std::make_unique<Local>(model, options, ColumnShard{comm_.rank(), comm_.size()});
    } catch (...) {
      failure = std::current_exception();
    }
    comm_.agree(failure, where);
    mask_version_ = model.mask_version();
  }
  ShardedRtrl(Model&& model, MPI_Comm comm = MPI_COMM_WORLD, RtrlOptions options = {}) = delete;

  // ---- The learner (as Rtrl) ----
  Index layers() const { return local_->layers(); }
  Index units() const { return local_->units(); }
  Index units(Index layer) const { return local_->units(layer); }
  Index inputs() const { return local_->inputs(); }
  Model& model() { return local_->model(); }
  const Model& model() const { return local_->model(); }
  const RtrlOptions& options() const { return local_->options(); }
  /// Column layout of layer k (global columns, as the one-process Rtrl's).
  const InfluenceLayout& layout(Index layer = 0) const { return local_->layout(layer); }
  Index column_offset(Index layer) const { return local_->column_offset(layer); }
  /// All columns (P_kept over all layers).
  Index columns() const { return local_->columns(); }

  /// Advances c and this rank's columns of M for input x_t (the same on every rank). Sends
  /// nothing, unless the model's masks changed since the last step (then collective: the split
  /// is re-cut, follow_mask()).
  template <typename X>
  void step(const Eigen::MatrixBase<X>& x) {
    follow_mask();
    local_->step(x);
  }
  /// A loss on the output layer (dL/dy_t; and dL/do_t), the same on every rank: reads out this
  /// rank's columns. Sends nothing.
  template <typename G>
  void accumulate_gradient(const Eigen::MatrixBase<G>& dL_dy) {
    local_->accumulate_gradient(dL_dy);
  }
  template <typename G, typename GO>
  void accumulate_gradient(const Eigen::MatrixBase<G>& dL_dy, const Eigen::MatrixBase<GO>& dL_do) {
    local_->accumulate_gradient(dL_dy, dL_do);
  }
  /// A loss on layer k's output.
  template <typename G>
  void accumulate_gradient_at(Index layer, const Eigen::MatrixBase<G>& dL_dy) {
    local_->accumulate_gradient_at(layer, dL_dy);
  }
  template <typename G, typename GO>
  void accumulate_gradient_at(Index layer, const Eigen::MatrixBase<G>& dL_dy, const Eigen::MatrixBase<GO>& dL_do) {
    local_->accumulate_gradient_at(layer, dL_dy, dL_do);
  }

  /// @brief Collective: the whole accumulated gradient per column on every rank (size
  /// columns()), the ranks' slices gathered in place (MPI_Allgatherv; no arithmetic, so the
  /// one-process Rtrl's gradient_columns() bit for bit). A mask change not followed yet is
  /// followed first (follow_mask(), as RtrlStreams::gradient() does). The reference stays valid
  /// until the next call; allocation-free after the first call (or a mask change).
  const Vector& gradient_columns() {
    follow_mask();
    gather();
    return whole_;
  }
  /// This rank's slice [column_begin(), column_end()) of the gradient: no communication.
  Eigen::VectorBlock<const Vector> local_gradient_columns() const {
    return local_->gradient_columns().segment(column_begin(), column_end() - column_begin());
  }
  // Collective: gradient(), gradient(out), gradient(k), gradient(k, out), the gathered gradient
  // in parameter layout (detail::GradientFrontEnd over gradient_columns()).
  void zero_gradient() { local_->zero_gradient(); }
  void reset() { local_->reset(); }
  template <typename C0>
  void reset(const Eigen::MatrixBase<C0>& c0) {
    local_->reset(c0);
  }

  const Vector& state() const { return local_->state(); }
  const Vector& state(Index layer) const { return local_->state(layer); }
  const Vector& output() const { return local_->output(); }
  const Vector& output(Index layer) const { return local_->output(layer); }
  const Vector& events() const { return local_->events(); }
  const Vector& events(Index layer) const { return local_->events(layer); }
  const Vector& output_derivative() const { return local_->output_derivative(); }
  const Vector& output_derivative(Index layer) const { return local_->output_derivative(layer); }
  Index steps() const { return local_->steps(); }

  /// @brief Collective: changes layer k's mask on this rank's model (every rank passes the same
  /// mask) and follows it at once (follow_mask()).
  void set_mask(const ParameterMask& mask, Index layer = 0) {
    local_->model().set_mask(mask, layer);
    follow_mask();
  }
  /// @brief Collective when the model's masks changed since the split was cut (step() calls it):
  /// cuts the columns of the new masks anew and moves every kept column (its influence in every
  /// layer's blocks, and its accumulated gradient) to its new owner with one MPI_Alltoallv per
  /// layer and one for the gradient. Columns of pruned weights are dropped, revived ones start at
  /// zero, as in Rtrl::set_mask(). Transient memory: the columns that move, twice.
  void follow_mask() {
    if (mask_version_ == local_->model().mask_version()) return;
    recut();
  }

  // ---- Sharding ----
  /// The split of the columns over the ranks (the same on every rank).
  const ColumnPartition& partition() const { return partition_; }
  /// This rank's columns [column_begin(), column_end()).
  Index column_begin() const { return local_->column_begin(); }
  Index column_end() const { return local_->column_end(); }
  int rank() const { return comm_.rank(); }
  int ranks() const { return comm_.size(); }
  const Communicator& communicator() const { return comm_; }
  /// This rank's learner: an Rtrl of its column window (its influence(k), work counters, ...).
  const Local& local() const { return *local_; }
  /// Bytes of this rank's part of the influence matrices.
  std::size_t influence_bytes() const { return local_->influence_bytes(); }

 private:
  template <typename, typename>
  friend class StreamGrid;  // runs its streams' steps in phases (mpi/stream_grid.hpp)
  template <typename, typename>
  friend class GridCheckpoint;

  /// The ranks' gradient slices into whole_ (MPI_Allgatherv in place).
  void gather() {
    const int R = comm_.size();
    if (whole_.size() != partition_.columns()) whole_.resize(partition_.columns());
    counts_.resize(std::size_t(R));
    displs_.resize(std::size_t(R));
    for (int r = 0; r < R; ++r) {
      displs_[std::size_t(r)] = checked_count(partition_.begin(r), "gradient columns");
      counts_[std::size_t(r)] = checked_count(partition_.end(r) - partition_.begin(r), "gradient columns");
    }
    whole_.segment(partition_.begin(comm_.rank()), counts_[std::size_t(comm_.rank())]) = local_gradient_columns();
    comm_.allgatherv<Scalar>(nullptr, counts_[std::size_t(comm_.rank())], whole_.data(), counts_.data(), displs_.data());
  }

  void recut() {
    partition_ = recut_learners(comm_, partition_, std::vector<Local*>{local_.get()},
                                "sparse_rtrl::mpi::ShardedRtrl::follow_mask()");
    mask_version_ = local_->model().mask_version();
  }

  template <typename, typename>
  friend class ShardedRtrlStreams;

  /// @brief The re-cut of follow_mask() for this rank's local learners (one per stream, all of
  /// one model, laid out alike): every rank computes the same old and new splits and the same
  /// column map, so each knows, for every pair of ranks, which columns go from one to the other,
  /// in increasing column order; the values travel in that order (MPI_Alltoallv per layer and
  /// one for the gradient, learner after learner) and land in place. Returns the new split.
  static ColumnPartition recut_learners(const Communicator& comm, const ColumnPartition& before,
                                        const std::vector<Local*>& learners, const char* where) {
    Local& first = *learners.front();
    Model& model = first.model();
    first.require_parameter_shapes(where);
    const int R = comm.size(), me = comm.rank();
    const std::size_t L = first.layers_.size();
    std::vector<InfluenceLayout> from, next;
    std::vector<Index> old_offsets(L + 1, 0);
    for (std::size_t k = 0; k < L; ++k) {
      from.push_back(first.layers_[k].layout);
      next.emplace_back(model.mask(Index(k)), first.layers_[k].events);
      old_offsets[k + 1] = old_offsets[k] + from[k].columns();
    }
    // Pure and the same on every rank (the masks are: every rank applied the same change), so
    // a split with more ranks than panels is refused on every rank alike, before any message.
    const ColumnPartition after = partition_columns(model, R);
    const std::vector<Index> map = column_map(from, next);
    // The columns rank s sends to rank q, for a block of old width `width`: old columns c in s's
    // old range and below `width` whose new column is kept, in q's new range.
    auto for_each_move = [&](int s, int q, Index width, auto&& f) {
      const Index end = std::min(before.end(s), width);
      for (Index c = before.begin(s); c < end; ++c) {
        const Index to = map[std::size_t(c)];
        if (to >= 0 && to >= after.begin(q) && to < after.end(q)) f(c, to);
      }
    };
    const std::size_t ranks = std::size_t(R);
    std::vector<int> scount(ranks), sdispl(ranks), rcount(ranks), rdispl(ranks);
    for (Local* learner : learners) {
      Local& local = *learner;
      std::exception_ptr failure;
      std::vector<std::vector<Scalar>> received(L + 1);
      // Blocks k = 0..L-1 (n_k rows each), then the gradient (one row, all columns; the local
      // learner's gradient is indexed globally).
      for (std::size_t k = 0; k <= L; ++k) {
        const bool grad = k == L;
        const Index rows = grad ? 1 : local.layers_[k].n;
        const Index width = grad ? old_offsets[L] : old_offsets[k + 1];
        std::vector<Scalar> send;
        try {
          std::int64_t at = 0;
          for (int q = 0; q < R; ++q) {
            std::int64_t count = 0;
            for_each_move(me, q, width, [&](Index, Index) { count += rows; });
            sdispl[std::size_t(q)] = checked_count(at, "columns moved by a mask change");
            scount[std::size_t(q)] = checked_count(count, "columns moved by a mask change");
            at += count;
          }
          at = 0;
          for (int s = 0; s < R; ++s) {
            std::int64_t count = 0;
            for_each_move(s, me, width, [&](Index, Index) { count += rows; });
            rdispl[std::size_t(s)] = checked_count(at, "columns moved by a mask change");
            rcount[std::size_t(s)] = checked_count(count, "columns moved by a mask change");
            at += count;
          }
          send.reserve(std::size_t(sdispl.back()) + std::size_t(scount.back()));
          received[k].resize(std::size_t(at));
          for (int q = 0; q < R; ++q)
            for_each_move(me, q, width, [&](Index c, Index) {
              if (grad)
                send.push_back(local.grad_(c));
              else
                for (Index i = 0; i < rows; ++i) send.push_back(local.layers_[k].M(i, c - before.begin(me)));
            });
        } catch (...) {
          failure = std::current_exception();
        }
        comm.agree(failure, where);
        comm.alltoallv(send.data(), scount.data(), sdispl.data(), received[k].data(), rcount.data(), rdispl.data());
      }
      // Lay the columns out for the new masks and this rank's new range (zeros), then put every
      // received column in its place.
      try {
        std::vector<InfluenceLayout> layouts = next;
        local.install(std::move(layouts), nullptr);
      } catch (...) {
        failure = std::current_exception();
      }
      comm.agree(failure, where);
      SPARSE_RTRL_ASSERT(local.column_begin() == after.begin(me) && local.column_end() == after.end(me));
      for (std::size_t k = 0; k <= L; ++k) {
        const bool grad = k == L;
        const Index rows = grad ? 1 : local.layers_[k].n;
        const Index width = grad ? old_offsets[L] : old_offsets[k + 1];
        std::size_t at = 0;
        for (int s = 0; s < R; ++s)
          for_each_move(s, me, width, [&](Index, Index to) {
            if (grad)
              local.grad_(to) = received[k][at++];
            else
              for (Index i = 0; i < rows; ++i) local.layers_[k].M(i, to - after.begin(me)) = received[k][at++];
          });
      }
      local.mask_version_ = model.mask_version();
    }
    return after;
  }

  Communicator comm_;
  ColumnPartition partition_;
  std::unique_ptr<Local> local_;
  std::uint64_t mask_version_ = 0;
  Vector whole_;
  std::vector<int> counts_, displs_;
};

}  // namespace mpi
}  // namespace sparse_rtrl
