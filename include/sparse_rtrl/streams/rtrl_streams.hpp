/// @file rtrl_streams.hpp
/// @brief B streams learning one shared model by exact RTRL: one call advances all of them,
///        in parallel, with results that do not depend on the number of threads.
///
/// Each stream (a sequence of a minibatch, an environment, a sensor) has its own state c, its own
/// influence matrix M and its own accumulated gradient: an Rtrl over the shared Model, run with
/// the streams' thread team. gradient() is the sum of the streams' gradients, added in stream
/// order 0, 1, ..., B - 1, so it is bitwise the same for any number of threads, and bitwise the
/// sum of B independent Rtrl learners fed the same data.
///
/// Parallelism (parallel/thread_pool.hpp): with B >= threads, the streams are split into
/// contiguous blocks, one per thread, each stream's step running whole on one thread; with
/// B < threads, the streams run one after another and each step's columns are split over all
/// threads (as Rtrl with RtrlOptions::threads). Every thread flushes subnormals unless
/// RtrlOptions::flush_subnormals is false.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/parallel/denormals.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/propagate.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/parallel/thread_pool.hpp>
#include <sparse_rtrl/learners/rtrl.hpp>
#include <sparse_rtrl/detail/gradient_front_end.hpp>
#include <sparse_rtrl/detail/learner_state.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {

namespace mpi {
template <typename Scalar, typename Surrogate>
class ShardedRtrlStreams;
}

/// @brief B streams over one Model, advanced together (exact RTRL per stream).
///
/// Per step: step(X) with X a B x d matrix (row b is stream b's input); then, for a loss,
/// accumulate_gradient(G) with G a B x n matrix (row b is dL/dy_t of stream b; a row of zeros
/// adds nothing). Streams start and end sequences independently with reset(b). Pruning: set the
/// model's mask (set_mask() here, Model::set_mask, or MagnitudePruner::prune(model)); every
/// stream follows before the next step. Allocation-free steps.
/// @tparam Scalar float or double.
/// @tparam Surrogate pseudo-derivative policy (surrogate.hpp).
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class RtrlStreams : public detail::GradientFrontEnd<RtrlStreams<Scalar, Surrogate>, Scalar> {
 public:
  static constexpr const char* name = "sparse_rtrl::RtrlStreams";
  using Model = sparse_rtrl::Model<Scalar, Surrogate>;
  using Learner = Rtrl<Scalar, Surrogate>;
  using Cell = typename Learner::Cell;
  using Parameters = EgruParameters<Scalar>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  /// @param streams B >= 1.
  /// @param options as for Rtrl; threads is the size of the team all streams share.
  /// Throws std::invalid_argument for B < 1 or threads < 1, and std::length_error, before
  /// allocating anything large, when B influence matrices (reported by state_bytes()) exceed the
  /// machine's physical memory or cannot be allocated.
  RtrlStreams(Model& model, Index streams, RtrlOptions options = {}) : RtrlStreams(model, streams, options, ColumnShard{}) {}
  /// Every stream tracks only the columns of @p shard (Rtrl's ColumnShard): the local part of
  /// mpi::ShardedRtrlStreams. (The memory check still counts whole influence matrices.)
  RtrlStreams(Model& model, Index streams, RtrlOptions options, ColumnShard shard)
      : model_(&model), options_(checked(streams, options)), pool_(options_.threads), n_(model.units()),
        d_(model.inputs()) {
    const char* where = "sparse_rtrl::RtrlStreams::RtrlStreams()";
    const double bytes = require_memory(where, model, nullptr, 0, streams);
    RtrlOptions per_stream = options_;
    per_stream.threads = 1;  // the streams' team runs them; no stream owns threads
    try {
      streams_.reserve(std::size_t(streams));
      for (Index b = 0; b < streams; ++b) streams_.emplace_back(model, per_stream, shard);
      Index max_units = 0;
      for (Index k = 0; k < model.layers(); ++k) max_units = std::max(max_units, model.units(k));
      scratch_stride_ = detail::propagation_scratch_size<Scalar>(max_units);
      scratch_.resize(std::size_t(pool_.threads()) * std::size_t(scratch_stride_));
      outputs_.setZero(streams, n_);
      forward_ok_.assign(std::size_t(streams), 0);
      events_.setZero(streams, n_);
    } catch (const std::bad_alloc&) {
      detail::allocation_failure(where, "the streams' influence matrices", std::size_t(bytes));
    } catch (const std::length_error&) {
      detail::allocation_failure(where, "the streams' influence matrices", std::size_t(bytes));
    }
  }
  /// A temporary model would be destroyed while referenced: refused at compile time.
  RtrlStreams(Model&& model, Index streams, RtrlOptions options = {}) = delete;

  /// B (0 only in a moved-from object, whose other members then throw std::logic_error).
  Index streams() const { return Index(streams_.size()); }
  Index units() const { return n_; }
  Index inputs() const { return d_; }
  int threads() const { return pool_.threads(); }
  const RtrlOptions& options() const { return options_; }
  Model& model() { return *model_; }
  const Model& model() const { return *model_; }
  const ParameterMask& mask() const { return model_->mask(); }
  /// The model's cell (mutable for an optimizer, as Model::cell()).
  const Cell& cell() const { return model_->cell(); }
  Cell& cell() { return model_->cell(); }
  /// Which parameter of layer k owns which influence column (the same for every stream).
  const InfluenceLayout& layout(Index layer = 0) const {
    require_streams("layout()");
    return streams_.front().layout(layer);
  }
  /// First influence column (and gradient column) of layer k's parameters.
  Index column_offset(Index layer) const {
    require_streams("column_offset()");
    return streams_.front().column_offset(layer);
  }
  /// Layers of the model.
  Index layers() const { return model_->layers(); }
  /// Stream b's learner state (read-only: state, output, influence, gradient, counters).
  const Learner& stream(Index b) const { return streams_[std::size_t(require_stream("stream()", b))]; }

  /// @brief Advances every stream one step: row b of @p X (B x d, finite) is stream b's x_t.
  /// Checks everything first and changes nothing on a throw (std::invalid_argument); a step
  /// whose state would become non-finite in any stream is refused in all of them.
  template <typename X>
  void step(const Eigen::MatrixBase<X>& X_batch) {
    const char* where = "sparse_rtrl::RtrlStreams::step()";
    require_streams("step()");
    require_batch(where, "X", X_batch, inputs());
    // Shapes, and a mask change followed by every stream (a stream that throws here, out of
    // memory, is left as it was and follows at the next call), then the mask enforced once.
    for (auto& s : streams_) s.phases().prepare(where);
    model_->enforce_mask();
    const Index B = streams();
    // Phase 1: every stream's forward pass into its next cache (reads the model only, changes
    // no stream), then committed in all streams or refused in all.
    pool_.run(teams(), [&](int t) {
      detail::SubnormalGuard guard(options_.flush_subnormals);
      for (Index b = block_begin(t); b < block_begin(t + 1); ++b)
        forward_ok_[std::size_t(b)] = streams_[std::size_t(b)].phases().forward(X_batch.row(b));
    });
    for (Index b = 0; b < B; ++b)
      if (!forward_ok_[std::size_t(b)]) streams_[std::size_t(b)].phases().fail_non_finite_state(where);
    for (auto& s : streams_) s.phases().commit_forward();
    // Phase 2: influence matrices and states.
    if (B >= pool_.threads()) {
      pool_.run(teams(), [&](int t) {
        detail::SubnormalGuard guard(options_.flush_subnormals);
        for (Index b = block_begin(t); b < block_begin(t + 1); ++b) streams_[std::size_t(b)].phases().propagate();
      });
    } else {
      detail::SubnormalGuard guard(options_.flush_subnormals);
      for (auto& s : streams_) s.phases().propagate_on(pool_, scratch_.data(), scratch_stride_);
    }
    for (Index b = 0; b < B; ++b) {
      outputs_.row(b) = streams_[std::size_t(b)].output().transpose();
      events_.row(b) = streams_[std::size_t(b)].events().transpose();
    }
  }

  /// @brief Adds every stream's loss gradient: row b of @p G (B x n, finite) is dL/dy_t of
  /// stream b (zeros: no loss in that stream this step). See Rtrl::accumulate_gradient.
  template <typename G>
  void accumulate_gradient(const Eigen::MatrixBase<G>& G_batch) {
    const char* where = "sparse_rtrl::RtrlStreams::accumulate_gradient()";
    require_streams("accumulate_gradient()");
    require_batch(where, "G", G_batch, units());
    for (Index b = 0; b < streams(); ++b)
      if (!G_batch.row(b).isZero(0)) require_stepped(where, b);
    pool_.run(teams(), [&](int t) {
      detail::SubnormalGuard guard(options_.flush_subnormals);
      for (Index b = block_begin(t); b < block_begin(t + 1); ++b) {
        auto& s = streams_[std::size_t(b)];
        if (G_batch.row(b).isZero(0)) continue;
        s.phases().accumulate_output_unchecked(G_batch.row(b));
      }
    });
    require_finite_gradients(where);
  }
  /// The same with a loss on the events too: row b of @p G_o (B x n) is dL/do_t of stream b.
  template <typename G, typename GO>
  void accumulate_gradient(const Eigen::MatrixBase<G>& G_batch, const Eigen::MatrixBase<GO>& G_events) {
    const char* where = "sparse_rtrl::RtrlStreams::accumulate_gradient()";
    require_streams("accumulate_gradient()");
    require_batch(where, "G", G_batch, units());
    require_batch(where, "G_events", G_events, units());
    for (Index b = 0; b < streams(); ++b)
      if (!G_batch.row(b).isZero(0) || !G_events.row(b).isZero(0)) require_stepped(where, b);
    pool_.run(teams(), [&](int t) {
      detail::SubnormalGuard guard(options_.flush_subnormals);
      for (Index b = block_begin(t); b < block_begin(t + 1); ++b) {
        auto& s = streams_[std::size_t(b)];
        if (G_batch.row(b).isZero(0) && G_events.row(b).isZero(0)) continue;
        s.phases().accumulate_output_unchecked(G_batch.row(b), G_events.row(b));
      }
    });
    require_finite_gradients(where);
  }

  // gradient(), gradient(out), gradient(k), gradient(k, out): the sum over streams (in stream
  // order) of the accumulated gradients in parameter layout (detail::GradientFrontEnd).
  /// The summed gradient per influence column (size P_kept), streams added in order.
  const Vector& gradient_columns() {
    sum_columns();
    return sum_;
  }
  /// Zeroes every stream's accumulated gradient.
  void zero_gradient() {
    for (auto& s : streams_) s.zero_gradient();
  }

  /// Every stream starts a new sequence from c_0 = 0 (gradients are kept).
  void reset() {
    for (auto& s : streams_) s.reset();
  }
  /// Stream b starts a new sequence from c_0 = 0 (episodes end at different times).
  void reset(Index b) { streams_[std::size_t(require_stream("reset()", b))].reset(); }
  /// Stream b starts a new sequence from the given c_0 (size n, finite).
  template <typename C0>
  void reset(Index b, const Eigen::MatrixBase<C0>& c0) {
    streams_[std::size_t(require_stream("reset()", b))].reset(c0);
  }

  /// Sets the model's mask (Model::set_mask) and re-lays every stream's columns now (they would
  /// otherwise follow at the next step). Allocates. Masks whose B influence matrices exceed the
  /// machine's memory are refused (std::length_error) before the model changes.
  void set_mask(const ParameterMask& mask, Index layer = 0) {
    const char* where = "sparse_rtrl::RtrlStreams::set_mask()";
    require_streams("set_mask()");
    streams_.front().phases().require_parameter_shapes(where);
    mask.require_matches(model_->parameters(layer), where);
    require_memory(where, *model_, &mask, layer, streams());
    model_->set_mask(mask, layer);
    follow_all();
  }
  /// Re-lays every stream's columns for the model's current mask, if it changed (step() and
  /// gradient() do this themselves).
  void follow_mask() {
    require_streams("follow_mask()");
    follow_all();
  }

  /// y_t of every stream after the last step, B x n.
  const Matrix& outputs() const { return outputs_; }
  /// o_t of every stream after the last step, B x n.
  const Matrix& events() const { return events_; }

  /// Bytes of all B influence matrices (B x n x P_kept scalars).
  std::size_t influence_bytes() const {
    std::size_t bytes = 0;
    for (const auto& s : streams_) bytes += s.influence_bytes();
    return bytes;
  }
  /// Bytes of the learner state that grows with B and P: influence matrices, per-stream
  /// gradients and the kernel scratch.
  std::size_t state_bytes() const {
    std::size_t bytes = influence_bytes() + sizeof(Scalar) * scratch_.size();
    for (const auto& s : streams_)
      bytes += sizeof(Scalar) * std::size_t(s.gradient_columns().size()) + s.scratch_bytes();
    return bytes;
  }
  /// Work counters summed over streams (since their last reset_work()).
  WorkCounters total_work() const {
    WorkCounters w;
    for (const auto& s : streams_) w += s.total_work();
    return w;
  }
  WorkCounters last_step_work() const {
    WorkCounters w;
    for (const auto& s : streams_) w += s.last_step_work();
    return w;
  }
  void reset_work() {
    for (auto& s : streams_) s.reset_work();
  }

  // ---- Checkpoints (io/checkpoint.hpp). ----
  /// One Rtrl::StagedState per stream, in stream order (stage each with stream(b).stage_state()).
  using StagedState = std::vector<typename Learner::StagedState>;
  /// @brief Replaces every stream's state (staged[b] for stream b, see Rtrl::restore_state())
  /// and outputs()/events(). Every stream is checked before any changes (std::invalid_argument,
  /// nothing changed).
  void restore_state(StagedState&& staged) {
    const char* where = "sparse_rtrl::RtrlStreams::restore_state()";
    require_streams("restore_state()");
    if (staged.size() != streams_.size())
      detail::fail(where, "one state per stream: " + std::to_string(streams_.size()) + " streams, received " +
                              std::to_string(staged.size()));
    for (std::size_t b = 0; b < streams_.size(); ++b) streams_[b].phases().check_restorable(staged[b], where);
    for (std::size_t b = 0; b < streams_.size(); ++b) {
      streams_[b].phases().commit_state(staged[b]);
      outputs_.row(Index(b)) = streams_[b].output().transpose();
      events_.row(Index(b)) = streams_[b].events().transpose();
    }
  }

 private:
  template <typename, typename>
  friend class mpi::ShardedRtrlStreams;
  static RtrlOptions checked(Index streams, RtrlOptions options) {
    const char* where = "sparse_rtrl::RtrlStreams::RtrlStreams()";
    if (streams < 1) detail::fail(where, "streams must be >= 1, received " + std::to_string(streams));
    if (options.threads < 1)
      detail::fail(where, "options.threads must be >= 1, received " + std::to_string(options.threads));
    return options;
  }

  /// Refuses, before anything large is allocated, B influence matrices that exceed this
  /// machine's physical memory (or overflow size_t). Returns their bytes.
  /// @p replace: a mask for layer @p layer to count instead of the model's (nullptr: none).
  static double require_memory(const char* where, const Model& model, const ParameterMask* replace, Index layer,
                               Index streams) {
    double per_stream = 0;
    Index width = 0, n = 0;
    for (Index k = 0; k < model.layers(); ++k) {
      const ParameterMask& mask = (replace && k == layer) ? *replace : model.mask(k);
      width += InfluenceLayout(mask, model.events(k)).columns();
      n = model.units(k);
      per_stream += detail::InfluenceStorage<Scalar>::bytes_for(n, width);
    }
    const Index columns = width;
    const double total = per_stream * double(streams);
    detail::require_memory(where, std::to_string(streams) + " streams", total,
                           "of influence matrices, " + std::to_string(per_stream / 1e9) + " GB each: " +
                               std::to_string(model.layers()) + " layer(s), top n = " + std::to_string(n) +
                               ", P_kept = " + std::to_string(columns),
                           "use fewer streams, fewer units or a sparser mask");
    return total;
  }

  /// After the read-outs (on the calling thread: the pool's tasks must not throw): every stream's
  /// gradient finite, else the first overflowed influence entry is named (Rtrl).
  void require_finite_gradients(const char* where) const {
    for (Index b = 0; b < streams(); ++b) {
      try {
        streams_[std::size_t(b)].phases().require_finite_gradient(where);
      } catch (const std::overflow_error& e) {
        throw std::overflow_error(std::string(e.what()) + " (stream " + std::to_string(b) + ")");
      }
    }
  }

  void require_streams(const char* what) const {
    if (streams_.empty()) detail::fail_moved_from(("sparse_rtrl::RtrlStreams::" + std::string(what)).c_str());
  }

  void require_stepped(const char* where, Index b) const {
    try {
      streams_[std::size_t(b)].phases().require_stepped(where);
    } catch (const std::logic_error& e) {
      throw std::logic_error(std::string(e.what()) + " (stream " + std::to_string(b) + ")");
    }
  }

  void follow_all() {
    for (auto& s : streams_) s.follow_mask();
  }

  template <typename M>
  void require_batch(const char* where, const char* name, const Eigen::MatrixBase<M>& m, Index cols) const {
    if (m.rows() != streams() || m.cols() != cols)
      detail::fail(where, std::string(name) + " must be " + detail::shape_string(streams(), cols) +
                              " (streams x " + (cols == inputs() && std::string(name) == "X" ? "inputs" : "units") +
                              "), received " + detail::shape_string(m.rows(), m.cols()));
    detail::require_finite(where, name, m);
  }

  Index require_stream(const char* what, Index b) const {
    if (b < 0 || b >= streams())
      throw std::out_of_range("sparse_rtrl::RtrlStreams::" + std::string(what) + ": stream must be in [0, " +
                              std::to_string(streams()) + "), received " + std::to_string(b));
    return b;
  }

  /// Tasks of a streams-parallel phase: one per thread, at most one per stream.
  int teams() const { return int(std::min<Index>(Index(pool_.threads()), streams())); }
  /// First stream of task t's contiguous block.
  Index block_begin(int t) const { return streams() * Index(t) / Index(teams()); }

  void sum_columns() {
    require_streams("gradient()");
    follow_all();  // every stream on the model's current layout before the sum
    sum_ = streams_.front().gradient_columns();
    for (std::size_t b = 1; b < streams_.size(); ++b) sum_ += streams_[b].gradient_columns();
  }

  Model* model_;
  RtrlOptions options_;
  parallel::ThreadPool pool_;
  std::vector<Learner> streams_;
  detail::PropagationScratch<Scalar> scratch_;
  Index scratch_stride_ = 0;
  Matrix outputs_, events_;
  std::vector<char> forward_ok_;  ///< per stream, phase 1 of step(): its c_t is finite
  Vector sum_;
  Index n_ = 0, d_ = 0;
};

}  // namespace sparse_rtrl
