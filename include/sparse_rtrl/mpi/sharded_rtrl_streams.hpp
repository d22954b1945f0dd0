/// @file mpi/sharded_rtrl_streams.hpp
/// @brief B streams over one model with every stream's influence matrix split by columns over
///        MPI ranks: the sharded counterpart of RtrlStreams, bitwise its result on every rank.
///
/// Each rank runs an RtrlStreams of its column window (ColumnShard): every stream's forward step
/// on every rank, each stream's columns of the window propagated and read out there. The
/// gradient is summed over the streams in stream order column by column on the rank that owns the
/// column (exactly RtrlStreams' order), then the ranks' slices are gathered in place: no
/// reduction crosses ranks, so the result is RtrlStreams' bit for bit. The stream-group split
/// (ranks owning streams, issue 22's part 2) can sit on top of this.
#pragma once

#include <sparse_rtrl/mpi/sharded_rtrl.hpp>
#include <sparse_rtrl/streams/rtrl_streams.hpp>

#include <memory>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace mpi {

/// @brief RtrlStreams with M split by columns over the ranks of a communicator. The same rules as
/// ShardedRtrl: every rank constructs one for the same model (checked) and calls the same
/// functions with the same arguments; step() and accumulate_gradient() send nothing (but the
/// first step after a mask change, which re-cuts the split, collectively); the gradient accessors
/// gather (collective).
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class ShardedRtrlStreams : public sparse_rtrl::detail::GradientFrontEnd<ShardedRtrlStreams<Scalar, Surrogate>, Scalar> {
 public:
  static constexpr const char* name = "sparse_rtrl::mpi::ShardedRtrlStreams";
  using Model = sparse_rtrl::Model<Scalar, Surrogate>;
  using Local = RtrlStreams<Scalar, Surrogate>;
  using Learner = Rtrl<Scalar, Surrogate>;
  using Parameters = EgruParameters<Scalar>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  /// Collective over @p comm, as ShardedRtrl's constructor; @p streams B >= 1 (the same on every
  /// rank: part of the check).
  ShardedRtrlStreams(Model& model, Index streams, MPI_Comm comm = MPI_COMM_WORLD, RtrlOptions options = {})
      : comm_(comm) {
    const char* where = "sparse_rtrl::mpi::ShardedRtrlStreams::ShardedRtrlStreams()";
    {
      // The stream count joins the model's fingerprint.
      ModelFingerprint f = fingerprint(model, options);
      Hasher h;
      h.u64(f.options);
      h.u64(std::uint64_t(streams));
      f.options = h.value();
      require_same_fingerprint(comm_, f, where);
    }
    try {
      partition_ = partition_columns(model, comm_.size());
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string(where) + ": " + e.what());
    }
    std::exception_ptr failure;
    try {
      local_ = std::make_unique<Local>(model, streams, options, ColumnShard{comm_.rank(), comm_.size()});
    } catch (...) {
      failure = std::current_exception();
    }
    comm_.agree(failure, where);
    mask_version_ = model.mask_version();
  }
  ShardedRtrlStreams(Model&& model, Index streams, MPI_Comm comm = MPI_COMM_WORLD, RtrlOptions options = {}) = delete;

  Index streams() const { return local_->streams(); }
  Index units() const { return local_->units(); }
  Index inputs() const { return local_->inputs(); }
  Index layers() const { return local_->layers(); }
  Model& model() { return local_->model(); }
  const Model& model() const { return local_->model(); }
  const InfluenceLayout& layout(Index layer = 0) const { return local_->layout(layer); }
  Index column_offset(Index layer) const { return local_->column_offset(layer); }

  /// Row b of @p X is stream b's input (the same on every rank). Sends nothing unless the
  /// model's masks changed (then collective: follow_mask()).
  template <typename X>
  void step(const Eigen::MatrixBase<X>& X_batch) {
    follow_mask();
    local_->step(X_batch);
  }
  template <typename G>
  void accumulate_gradient(const Eigen::MatrixBase<G>& G_batch) {
    local_->accumulate_gradient(G_batch);
  }
  template <typename G, typename GO>
  void accumulate_gradient(const Eigen::MatrixBase<G>& G_batch, const Eigen::MatrixBase<GO>& G_events) {
    local_->accumulate_gradient(G_batch, G_events);
  }

  /// Collective: the gradient summed over the streams in stream order, per column, on every rank
  /// (RtrlStreams::gradient_columns() bit for bit).
  const Vector& gradient_columns() {
    follow_mask();
    local_->follow_all();
    const int R = comm_.size();
    whole_.resize(partition_.columns());
    counts_.resize(std::size_t(R));
    displs_.resize(std::size_t(R));
    for (int r = 0; r < R; ++r) {
      displs_[std::size_t(r)] = checked_count(partition_.begin(r), "gradient columns");
      counts_[std::size_t(r)] = checked_count(partition_.end(r) - partition_.begin(r), "gradient columns");
    }
    const Index b = partition_.begin(comm_.rank()), n = partition_.end(comm_.rank()) - b;
    // This rank's columns summed over its streams in stream order (RtrlStreams' sum, but of
    // the window only: the streams' other columns are zero here).
    const auto& streams = local_->streams_;
    whole_.segment(b, n) = streams.front().gradient_columns().segment(b, n);
    for (std::size_t s = 1; s < streams.size(); ++s) whole_.segment(b, n) += streams[s].gradient_columns().segment(b, n);
    comm_.allgatherv<Scalar>(nullptr, counts_[std::size_t(comm_.rank())], whole_.data(), counts_.data(), displs_.data());
    return whole_;
  }
  // Collective: gradient(), gradient(out), gradient(k), gradient(k, out), the summed gradient in
  // parameter layout (detail::GradientFrontEnd over gradient_columns()).
  void zero_gradient() { local_->zero_gradient(); }
  void reset() { local_->reset(); }
  void reset(Index b) { local_->reset(b); }
  const Matrix& outputs() const { return local_->outputs(); }
  const Matrix& events() const { return local_->events(); }

  /// Collective when the model's masks changed: re-cuts the split and moves every stream's kept
  /// columns to their new owners (as ShardedRtrl::follow_mask()).
  void follow_mask() {
    if (mask_version_ == local_->model().mask_version()) return;
    std::vector<Learner*> learners;
    for (Learner& s : local_->streams_) learners.push_back(&s);
    partition_ = ShardedRtrl<Scalar, Surrogate>::recut_learners(
        comm_, partition_, learners, "sparse_rtrl::mpi::ShardedRtrlStreams::follow_mask()");
    mask_version_ = local_->model().mask_version();
  }

  const ColumnPartition& partition() const { return partition_; }
  Index column_begin() const { return partition_.begin(comm_.rank()); }
  Index column_end() const { return partition_.end(comm_.rank()); }
  const Communicator& communicator() const { return comm_; }
  /// This rank's RtrlStreams of its column window.
  const Local& local() const { return *local_; }
  /// Bytes of this rank's part of the B influence matrices.
  std::size_t influence_bytes() const { return local_->influence_bytes(); }

 private:
  Communicator comm_;
  ColumnPartition partition_;
  std::unique_ptr<Local> local_;
  std::uint64_t mask_version_ = 0;
  Vector whole_;
  std::vector<int> counts_, displs_;
};

}  // namespace mpi
}  // namespace sparse_rtrl
