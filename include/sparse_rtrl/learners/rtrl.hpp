/// @file rtrl.hpp
/// @brief Exact RTRL for EGRUs and stacks of them, with activity- and parameter-sparse
///        influence updates.
///
/// One layer: M_t = J_t M_{t-1} + Mbar_t,  J_t = diag(z (1 - theta psi_{t-1})) + A_t diag(s_{t-1})
/// (model.md "RTRL"; Subramoney 2023, Eq. 9). Nothing is approximated: the rows of M_{t-1} with
/// s_{t-1} = 0 are multiplied by zero, so skipping them changes no bit of the product's
/// mathematical value; pruned weights have no column.
///
/// A stack of L layers (model.md, "Stacked layers"): the influence matrix is block
/// lower-triangular. Layer k keeps M^k = [M^{k,0} ... M^{k,k}] (n_k rows; the columns of the
/// parameters of layers 0..k, in the learner's global column order) and updates it by
///   M^k_t = J^k_t M^k_{t-1} + [B^k_t D^{k-1}_t, Mbar^k_t],  D^{k-1}_t = diag(s^{k-1}_t) M^{k-1}_t
///   (+ the direct threshold term -c psi on theta^{k-1}'s own columns),
/// with B^k_t = dc^k_t/dy^{k-1}_t on W^k's pattern and on the active units of layer k-1 only
/// (s^{k-1}_t = 0 rows of D are zero). Exact through depth: the same gradient as BPTT.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/parallel/denormals.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/immediate_jacobian.hpp>
#include <sparse_rtrl/detail/influence_storage.hpp>
#include <sparse_rtrl/detail/learner_state.hpp>
#include <sparse_rtrl/detail/propagate.hpp>
#include <sparse_rtrl/parallel/thread_pool.hpp>
#include <sparse_rtrl/model/egru_cell.hpp>
#include <sparse_rtrl/model/influence_layout.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>
#include <sparse_rtrl/learners/column_partition.hpp>
#include <sparse_rtrl/learners/work_counters.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {

template <typename Scalar, typename Surrogate>
class RtrlStreams;
namespace mpi {
template <typename Scalar, typename Surrogate>
class ShardedRtrl;
}

/// @brief Which share of the influence columns a learner tracks: shard @c rank of @c ranks,
/// the column range ColumnPartition gives it for the model's current masks (re-cut when they
/// change). The default, 0 of 1, is every column. A shard with ranks > 1 is the local part of
/// the column-sharded learner of the MPI part (mpi::ShardedRtrl), which gathers its gradient.
struct ColumnShard {
  int rank = 0;
  int ranks = 1;
};

/// @brief Options of the RTRL learner.
struct RtrlOptions {
  /// Skip rows of M whose unit has s_{t-1} = 0 (exact). false gives the dense-RTRL baseline,
  /// which multiplies every row.
  bool skip_silent_rows = true;
  /// Threads this learner's step uses (>= 1): the calling thread plus threads - 1 workers the
  /// learner owns (parallel/thread_pool.hpp). The columns of M are split between them; every
  /// result is bitwise the same for any number of threads.
  int threads = 1;
  /// Flush subnormal floats to zero during step() and accumulate_gradient(), on every thread that
  /// touches M, restoring each thread's mode afterwards (denormals.hpp: long-silent rows of M
  /// decay into subnormals, which are 6-13x slower on Intel CPUs). false: strict IEEE.
  bool flush_subnormals = true;
};

/// @brief Real-time recurrent learning: advances state and influence matrix together.
///
/// Usage per step: step(x_t); then, if the step has a loss, accumulate_gradient(dL/dy_t) (on the
/// output layer; accumulate_gradient_at(k, ...) for layer k of a stack). gradient() returns the
/// sum of all accumulated loss gradients in parameter layout (gradient(k) for layer k of a stack).
/// The learner references a Model (model.hpp) and holds only one stream's state: c per layer,
/// the influence blocks, the accumulated gradient, counters. Parameters may be changed between
/// steps through the model (online learning); the influence matrix then mixes Jacobians of
/// successive parameter values, as RTRL always does online. Mask changes made on the model
/// (Model::set_mask, pruning) are followed before the next step. For B streams over one model
/// see RtrlStreams (rtrl_streams.hpp).
///
/// Column space: the parameters of layer k own the columns [column_offset(k), column_offset(k) +
/// layout(k).columns()) of gradient_columns(); influence(k) has column_offset(k) +
/// layout(k).columns() columns. One layer: offset 0, as layout() describes.
/// @tparam Scalar float or double.
/// @tparam Surrogate pseudo-derivative policy (surrogate.hpp).
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class Rtrl {
 public:
  using Model = sparse_rtrl::Model<Scalar, Surrogate>;
  using Cell = EgruCell<Scalar, Surrogate>;
  using Parameters = EgruParameters<Scalar>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using InfluenceMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  /// Tracks the kept parameters of @p model's masks. The model is referenced, not copied: it
  /// must outlive this learner and stay at one address (model.hpp).
  explicit Rtrl(Model& model, RtrlOptions options = {}) : Rtrl(model, options, ColumnShard{}) {}
  /// @brief Tracks only the columns [column_begin(), column_end()) of shard @p shard (see
  /// ColumnShard): M and gradient_columns() hold those columns alone, and each is computed bitwise
  /// as the whole learner computes it. Throws std::invalid_argument for a shard outside
  /// [0, ranks) or more ranks than panels of columns.
  Rtrl(Model& model, RtrlOptions options, ColumnShard shard)
      : model_(&model), options_(checked(options)), shard_(checked(shard)), pool_(options_.threads) {
    model.enforce_mask();
    const Index L = model.layers();
    layers_.resize(std::size_t(L));
    Index max_units = 0;
    for (Index k = 0; k < L; ++k) {
      Layer& l = layers_[std::size_t(k)];
      l.n = model.units(k);
      l.d = model.cell(k).inputs();
      l.events = model.events(k);
      max_units = std::max(max_units, l.n);
      l.cache.resize(l.n, l.d);
      l.cache.set_zero();  // defined values before the first step (a checkpoint saves them)
      l.next.resize(l.n, l.d);
      l.state.setZero(l.n);
      l.initial_state.setZero(l.n);
      l.dL_dc.setZero(l.n);
      l.theta_direct.setZero(l.n);
      l.c_psi.setZero(l.n);
    }
    std::vector<InfluenceLayout> layouts;
    for (Index k = 0; k < L; ++k) layouts.emplace_back(model.mask(k), layers_[std::size_t(k)].events);
    // Refused before M is allocated and zeroed when it cannot fit (as RtrlStreams and Snap).
    double bytes = 0;
    Index width = 0;
    for (Index k = 0; k < L; ++k) {
      width += layouts[std::size_t(k)].columns();
      bytes += detail::InfluenceStorage<Scalar>::bytes_for(layers_[std::size_t(k)].n, width);
    }
    if (shard_.ranks > 1) {
      // This shard's part only (the split is checked, and refused, here).
      std::vector<Index> units;
      for (const Layer& l : layers_) units.push_back(l.n);
      const auto window = shard_window(layouts, units);
      bytes = 0;
      width = 0;
      for (Index k = 0; k < L; ++k) {
        width += layouts[std::size_t(k)].columns();
        bytes += detail::InfluenceStorage<Scalar>::bytes_for(
            layers_[std::size_t(k)].n, std::max<Index>(0, std::min(width, window.second) - window.first));
      }
    }
    detail::require_memory("sparse_rtrl::Rtrl::Rtrl()", "the influence matrices", bytes,
                           std::to_string(L) + " layer(s), top n = " + std::to_string(units()) + ", P_kept = " +
                               std::to_string(width),
                           "use fewer units or a sparser mask");
    install(std::move(layouts), nullptr);
    scratch_stride_ = detail::propagation_scratch_size<Scalar>(max_units);
    scratch_.resize(std::size_t(pool_.threads()) * std::size_t(scratch_stride_));
    last_layer_.resize(std::size_t(L));
    total_layer_.resize(std::size_t(L));
    mask_version_ = model.mask_version();
  }
  /// A temporary model would be destroyed while referenced: refused at compile time.
  Rtrl(Model&& model, RtrlOptions options = {}) = delete;

  /// Layers of the model (1 for a single cell).
  Index layers() const { return Index(layers_.size()); }
  /// Units of the output layer (the top of a stack).
  Index units() const { return detail::live_back(layers_, "sparse_rtrl::Rtrl").n; }
  /// Units of layer k.
  Index units(Index layer) const { return at(layer).n; }
  Index inputs() const { return detail::live_front(layers_, "sparse_rtrl::Rtrl").d; }
  /// The model this learner reads (and an optimizer updates).
  Model& model() { return *model_; }
  const Model& model() const { return *model_; }
  /// The model's cell of layer k. Mutable, e.g. for an optimizer: keep the shapes and keep
  /// values finite; step() checks both (a changed shape, or a non-finite value that reaches the
  /// state, throws std::invalid_argument before anything of the learner changes) and re-zeroes
  /// masked weights.
  const Cell& cell(Index layer = 0) const { return model_->cell(layer); }
  Cell& cell(Index layer = 0) { return model_->cell(layer); }
  /// The model's mask of layer k.
  const ParameterMask& mask(Index layer = 0) const { return model_->mask(layer); }
  /// Which parameter of layer k owns which of its columns (offset by column_offset(k)).
  /// layout(), column_offset() and columns() describe the model's current masks: after a change
  /// of them (pruning, Model::set_mask) that this learner has not followed yet, they throw
  /// std::logic_error (call follow_mask(), or step()) rather than report the old layout.
  const InfluenceLayout& layout(Index layer = 0) const {
    require_mask_followed("sparse_rtrl::Rtrl::layout()");
    return at(layer).layout;
  }
  /// First column of layer k's parameters in gradient_columns() and in the influence blocks.
  Index column_offset(Index layer) const {
    require_mask_followed("sparse_rtrl::Rtrl::column_offset()");
    return at(layer).offset;
  }
  /// Columns over all layers (the size of gradient_columns()).
  Index columns() const {
    require_mask_followed("sparse_rtrl::Rtrl::columns()");
    return detail::live_back(layers_, "sparse_rtrl::Rtrl").width;
  }
  /// Columns of layer k's influence blocks as stored now (influence(k), for_each_influence_segment):
  /// laid out for layout_mask(k), which differs from the model's mask until the learner follows it.
  /// (Of a shard: the columns of [column_begin(), column_end()) among them.)
  Index influence_columns(Index layer) const { return local_width(at(layer).width); }
  /// The shard this learner tracks (0 of 1: every column).
  const ColumnShard& shard() const { return shard_; }
  /// The global columns this learner tracks, [column_begin(), column_end()) of [0, columns()):
  /// all of them unless it is a shard. gradient_columns() and influence(k) hold these.
  Index column_begin() const { return col_begin_; }
  Index column_end() const { return col_end_; }
  const RtrlOptions& options() const { return options_; }

  /// @brief Changes which weights of layer k exist, at any step (e.g. pruning during training):
  /// sets the model's mask (Model::set_mask) and follows it at once.
  ///
  /// Weights the new mask prunes are set to zero and their columns (influence and accumulated
  /// gradient) dropped; columns kept by both masks are carried over unchanged, so pruning
  /// disturbs nothing else. A revived weight (pruned before, kept now) starts from value zero
  /// with a zero influence column: its gradient is exact for a weight that exists from this
  /// step on, not for one that existed all along. Other learners of the model follow the same
  /// way before their next step (a learner that missed several changes carries over the columns
  /// kept by both its last mask and the current one). Allocates (not for the per-step hot path).
  void set_mask(const ParameterMask& mask, Index layer = 0) {
    const char* where = "sparse_rtrl::Rtrl::set_mask()";
    require_parameter_shapes(where);
    mask.require_matches(model_->parameters(layer), where);
    model_->set_mask(mask, layer);
    follow_mask();
  }

  /// Re-lays the influence columns for the model's current masks if they changed since this
  /// learner last looked (step() does this itself). Allocates only when they changed; on a
  /// throw (a reshaped model: std::invalid_argument; no memory) the learner is unchanged.
  void follow_mask() {
    if (layers_.empty()) detail::fail_moved_from("sparse_rtrl::Rtrl::follow_mask()");
    if (mask_version_ == model_->mask_version()) return;
    require_parameter_shapes("sparse_rtrl::Rtrl::follow_mask()");
    std::vector<InfluenceLayout> next;
    for (Index k = 0; k < layers(); ++k) next.emplace_back(model_->mask(k), layers_[std::size_t(k)].events);
    install(std::move(next), &layers_);
    mask_version_ = model_->mask_version();
  }

  /// Starts a new sequence from c_0 = 0 in every layer: clears M and the step's cache. Keeps the
  /// gradient.
  void reset() {
    if (layers_.empty()) detail::fail_moved_from("sparse_rtrl::Rtrl::reset()");
    for (auto& l : layers_) l.initial_state.setZero();
    restart();
  }
  /// Starts a new sequence from the given c_0 (size n, finite) of a one-layer model.
  template <typename C0>
  void reset(const Eigen::MatrixBase<C0>& c0) {
    const char* where = "sparse_rtrl::Rtrl::reset()";
    require_single_layer(where);
    detail::require_vector(where, "c0", c0, units());
    detail::require_finite(where, "c0", c0);
    for (Index i = 0; i < units(); ++i) layers_[0].initial_state(i) = c0(i);
    restart();
  }

  /// @brief Advances every layer's c_{t-1} -> c_t and M_{t-1} -> M_t for input x_t (size d,
  /// finite). Allocates nothing, except on the first step after a change of the model's masks
  /// (the columns are re-laid, follow_mask()).
  template <typename X>
  void step(const Eigen::MatrixBase<X>& x) {
    const char* where = "sparse_rtrl::Rtrl::step()";
    detail::require_vector(where, "x", x, inputs());
    detail::require_finite(where, "x", x);
    prepare_step(where);
    model_->enforce_mask();
    detail::SubnormalGuard flush(options_.flush_subnormals);
    if (!forward(x)) fail_non_finite_state(where);
    commit_forward();
    propagate_single();
  }

  /// @brief Adds the gradient of a loss on this step's output (the output layer of a stack),
  /// given dL/dy_t (size n, finite): (dL/dc_t)^T M_t with dL/dc_t = dL/dy_t * s_t, plus theta's
  /// direct term -dL/dy_t c_t psi_t. Reads only rows with dL/dc_t != 0.
  template <typename G>
  void accumulate_gradient(const Eigen::MatrixBase<G>& dL_dy) {
    accumulate_gradient_at(layers() - 1, dL_dy);
  }
  /// @brief The same for a loss on this step's output and on its events o_t (e.g. an activity
  /// regulariser): dL/dc_t = dL/dy_t s_t + dL/do_t psi_t, and theta's direct term
  /// -(dL/dy_t c_t + dL/do_t) psi_t, since do/dc = psi and do/dtheta = -psi under the surrogate.
  /// In GRU mode the events are constant and dL/do_t contributes nothing.
  template <typename G, typename GO>
  void accumulate_gradient(const Eigen::MatrixBase<G>& dL_dy, const Eigen::MatrixBase<GO>& dL_do) {
    accumulate_gradient_at(layers() - 1, dL_dy, dL_do);
  }
  /// A loss on layer k's output y^k_t (size n_k): its gradient reaches the parameters of layers
  /// 0..k (dL/dtheta^m += (dL/dy^k_t)^T D^{k,m}_t).
  template <typename G>
  void accumulate_gradient_at(Index layer, const Eigen::MatrixBase<G>& dL_dy) {
    const char* where = "sparse_rtrl::Rtrl::accumulate_gradient()";
    Layer& l = at(layer);
    require_stepped(where);
    require_output_gradient(where, "dL_dy", dL_dy, l.n);
    set_output_gradient(l, dL_dy);
    detail::SubnormalGuard flush(options_.flush_subnormals);
    read_out(std::size_t(layer));
    require_finite_gradient(where, std::size_t(layer));
  }
  /// A loss on layer k's output and events.
  template <typename G, typename GO>
  void accumulate_gradient_at(Index layer, const Eigen::MatrixBase<G>& dL_dy, const Eigen::MatrixBase<GO>& dL_do) {
    const char* where = "sparse_rtrl::Rtrl::accumulate_gradient()";
    Layer& l = at(layer);
    require_stepped(where);
    require_output_gradient(where, "dL_dy", dL_dy, l.n);
    require_output_gradient(where, "dL_do", dL_do, l.n);
    set_output_gradient(l, dL_dy, dL_do);
    detail::SubnormalGuard flush(options_.flush_subnormals);
    read_out(std::size_t(layer));
    require_finite_gradient(where, std::size_t(layer));
  }

  /// The accumulated gradient of a one-layer model, in parameter layout (pruned entries are
  /// zero). A stack has one per layer: gradient(k).
  Parameters gradient() const {
    require_single_layer("sparse_rtrl::Rtrl::gradient()");
    return gradient(Index(0));
  }
  /// Allocation-free form (one-layer model): writes into @p out (resized if its shapes differ).
  /// After a change of the model's mask that this learner has not followed yet, the entries the
  /// new mask prunes are reported as zero, as after following it.
  void gradient(Parameters& out) const {
    require_single_layer("sparse_rtrl::Rtrl::gradient()");
    gradient(Index(0), out);
  }
  /// The accumulated gradient of layer k's parameters.
  Parameters gradient(Index layer) const {
    Parameters out(units(layer), at(layer).d);
    gradient(layer, out);
    return out;
  }
  /// Allocation-free form for layer k.
  void gradient(Index layer, Parameters& out) const {
    require_whole("sparse_rtrl::Rtrl::gradient()");
    const Layer& l = at(layer);
    l.layout.scatter(grad_.segment(l.offset, l.layout.columns()), out);
    if (mask_version_ != model_->mask_version() && model_->mask(layer).units() == l.n &&
        model_->mask(layer).inputs() == l.d)
      model_->mask(layer).apply(out);
  }
  /// The accumulated gradient per influence column (size columns(), all layers; of a shard: its
  /// columns [column_begin(), column_end()) only).
  const Vector& gradient_columns() const { return grad_; }
  void zero_gradient() {
    if (layers_.empty()) detail::fail_moved_from("sparse_rtrl::Rtrl::zero_gradient()");
    grad_.setZero();
  }

  /// c_t of the output layer (of layer k), the carried (pre-reset) state.
  const Vector& state() const { return detail::live_back(layers_, "sparse_rtrl::Rtrl").state; }
  const Vector& state(Index layer) const { return at(layer).state; }
  /// y_t = o_t c_t of the last step (GRU mode: c_t), of the output layer (of layer k).
  const Vector& output() const { return detail::live_back(layers_, "sparse_rtrl::Rtrl").cache.y; }
  const Vector& output(Index layer) const { return at(layer).cache.y; }
  /// o_t of the last step.
  const Vector& events() const { return detail::live_back(layers_, "sparse_rtrl::Rtrl").cache.o; }
  const Vector& events(Index layer) const { return at(layer).cache.o; }
  /// s_t = dy_t/dc_t of the last step.
  const Vector& output_derivative() const { return detail::live_back(layers_, "sparse_rtrl::Rtrl").cache.s; }
  const Vector& output_derivative(Index layer) const { return at(layer).cache.s; }
  /// Everything the last step computed (gates, local derivatives).
  const EgruStepCache<Scalar>& last_step_cache() const { return detail::live_back(layers_, "sparse_rtrl::Rtrl").cache; }
  const EgruStepCache<Scalar>& last_step_cache(Index layer) const { return at(layer).cache; }
  Index steps() const { return steps_; }

  /// M_t of a one-layer model, n x P_kept, columns as layout() describes: a copy (M is stored
  /// in column panels for the kernel, detail/influence_storage.hpp), O(n P).
  InfluenceMatrix influence() const {
    require_single_layer("sparse_rtrl::Rtrl::influence()");
    return layers_[0].M.to_matrix();
  }
  /// Layer k's blocks [M^{k,0} ... M^{k,k}]: n_k x (column_offset(k) + layout(k).columns()), a
  /// copy.
  InfluenceMatrix influence(Index layer) const { return at(layer).M.to_matrix(); }
  /// Calls f(values, count) over row i of influence(layer), in column order, a contiguous
  /// segment at a time (no copy: for streaming M out, e.g. to a file).
  template <typename F>
  void for_each_influence_segment(Index layer, Index i, F&& f) const {
    const auto& M = at(layer).M;
    if (i < 0 || i >= M.rows())
      throw std::out_of_range("sparse_rtrl::Rtrl::for_each_influence_segment(): row must be in [0, " +
                              std::to_string(M.rows()) + "), received " + std::to_string(i));
    M.for_each_row_segment(i, std::forward<F>(f));
  }
  /// Bytes of the influence matrix (sum over layers k of n_k x columns of layers 0..k).
  std::size_t influence_bytes() const {
    std::size_t bytes = 0;
    for (const auto& l : layers_) bytes += l.M.value_bytes();
    return bytes;
  }
  /// Bytes of the kernel's scratch: one panel's active rows (n x kChunk at most) per thread.
  std::size_t scratch_bytes() const { return sizeof(Scalar) * scratch_.size(); }
  /// Threads the step uses (RtrlOptions::threads).
  int threads() const { return pool_.threads(); }

  /// Work of the last step / since reset_work(), over all layers (multiply-adds of the
  /// cross-layer blocks included in propagation_fma and also counted in cross_layer_fma).
  const WorkCounters& last_step_work() const { return last_; }
  const WorkCounters& total_work() const { return total_; }
  /// The same for layer k alone (its rows of M).
  const WorkCounters& last_step_work(Index layer) const { return last_layer_[std::size_t(check_layer(layer))]; }
  const WorkCounters& total_work(Index layer) const { return total_layer_[std::size_t(check_layer(layer))]; }
  void reset_work() {
    total_ = WorkCounters{};
    for (auto& w : total_layer_) w = WorkCounters{};
  }

  /// False only for a state restored so (a checkpoint of an older version saved after a failed
  /// step): then accumulate_gradient() throws std::logic_error until the next successful step.
  /// A refused step() changes nothing, this flag included.
  bool last_step_valid() const { return steps_valid_; }
  /// True when the columns are laid out for the model's current masks; false after a change of
  /// the model's masks that this learner follows only at its next step (or follow_mask()).
  bool mask_followed() const { return mask_version_ == model_->mask_version(); }
  /// The mask layer k's columns are laid out for: the model's once followed (see mask_followed()).
  ParameterMask layout_mask(Index layer) const {
    const InfluenceLayout& l = at(layer).layout;
    const Index n = l.units(), d = l.inputs();
    ParameterMask::BoolMatrix keep_W = ParameterMask::BoolMatrix::Constant(3 * n, d, false);
    ParameterMask::BoolMatrix keep_R = ParameterMask::BoolMatrix::Constant(3 * n, n, false);
    for (Index rr = 0; rr < 3 * n; ++rr) {
      for (Index e = 0; e < l.w_count(rr); ++e) keep_W(rr, l.w_inputs(rr)[e]) = true;
      for (Index e = 0; e < l.r_count(rr); ++e) keep_R(rr, l.r_inputs(rr)[e]) = true;
    }
    return ParameterMask(std::move(keep_W), std::move(keep_R));
  }

  // ---- Checkpoints (io/checkpoint.hpp): the whole stream state, replaced all at once. ----
  class StagedState;
  /// @brief A detached stream state for this learner, laid out for @p masks (one per layer, the
  /// model's n and d): zero influence, gradient, state and counters, for the caller to fill, then
  /// to swap in with restore_state() once the model has those masks. Allocates as much as the
  /// learner (n x P_kept per layer); throws std::invalid_argument (masks of other sizes, a
  /// reshaped model) or std::length_error, and changes nothing. With @p zero_influence false the
  /// influence values are left unset instead of zeroed (one pass over n x P_kept less), for a
  /// caller that writes every one of them (StagedState::write_influence), as a checkpoint load
  /// does.
  StagedState stage_state(std::vector<ParameterMask> masks, bool zero_influence = true) const {
    const char* where = "sparse_rtrl::Rtrl::stage_state()";
    require_whole(where);
    require_parameter_shapes(where);
    if (masks.size() != layers_.size())
      detail::fail(where, "one mask per layer: " + std::to_string(layers_.size()) + " layers, received " +
                              std::to_string(masks.size()) + " masks");
    StagedState staged;
    staged.layers_.resize(layers_.size());
    std::vector<InfluenceLayout> layouts;
    std::vector<const ParameterMask::BoolMatrix*> keep_W;
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const Layer& from = layers_[k];
      if (masks[k].units() != from.n || masks[k].inputs() != from.d)
        detail::fail(where, "layer " + std::to_string(k) + ": the mask is for n = " + std::to_string(masks[k].units()) +
                                ", d = " + std::to_string(masks[k].inputs()) + ", the layer has n = " +
                                std::to_string(from.n) + ", d = " + std::to_string(from.d));
      Layer& l = staged.layers_[k];
      l.n = from.n;
      l.d = from.d;
      l.events = from.events;
      l.cache.resize(l.n, l.d);
      l.cache.set_zero();
      l.next.resize(l.n, l.d);
      for (Vector* v : {&l.state, &l.initial_state, &l.dL_dc, &l.theta_direct, &l.c_psi}) v->setZero(l.n);
      layouts.emplace_back(masks[k], l.events);
      keep_W.push_back(&masks[k].W());
    }
    install_into(staged.layers_, staged.grad_, std::move(layouts), keep_W, nullptr, zero_influence);
    staged.layer_last_work.assign(layers_.size(), WorkCounters{});
    staged.layer_total_work.assign(layers_.size(), WorkCounters{});
    staged.masks_ = std::move(masks);
    for (const Layer& l : staged.layers_)
      staged.written_.push_back(zero_influence ? l.M.value_bytes() / sizeof(Scalar) : std::size_t(0));
    return staged;
  }

  /// @brief Replaces this learner's whole stream state by @p staged (from stage_state() of this
  /// learner or of one of the same model's shapes). The model must now have exactly the masks it
  /// was staged for, unless staged.mask_followed is false (a state saved before following a mask
  /// change: the learner then follows the model's masks at its next step, as it would have).
  /// Checks first (std::invalid_argument, the learner unchanged); after the checks nothing can
  /// fail.
  void restore_state(StagedState&& staged) {
    require_whole("sparse_rtrl::Rtrl::restore_state()");
    check_restorable(staged, "sparse_rtrl::Rtrl::restore_state()");
    commit_state(staged);
  }

 private:
  /// One layer's stream state.
  struct Layer {
    Index n = 0, d = 0;
    bool events = true;
    InfluenceLayout layout;
    Index offset = 0;  ///< first global column of this layer's parameters
    Index width = 0;   ///< columns of M^k: offset + layout.columns()
    EgruStepCache<Scalar> cache;
    /// The step being computed: forward() writes here and commit_forward() swaps it with cache,
    /// so a refused step leaves cache (output(), events(), the read-out) as it was.
    EgruStepCache<Scalar> next;
    Vector state, initial_state, dL_dc, theta_direct, c_psi;
    detail::InfluenceStorage<Scalar> M;
    detail::Coupling<Scalar> coupling;  ///< A_t diag(s_{t-1}) on the active rows
    std::vector<Scalar> a_values;
    std::vector<Index> position;
    std::vector<Index> readout_rows;    ///< n slots: rows with dL/dc != 0 of the current read-out
    std::vector<Scalar> readout_coef;   ///< their dL/dc
    // Cross-layer term (k > 0): B^k_t diag(s^{k-1}_t) on W^k's connection pattern (the union of
    // its three gate blocks) and the active units of layer k - 1, CSR by target row; sources
    // are rows of M^{k-1}.
    std::vector<Index> input_row_ptr, input_cols;
    detail::Coupling<Scalar> cross;
    std::vector<Scalar> b_values;  ///< B_ij per pattern entry
  };


 public:
  /// @brief Checkpoint form of a learner's stream state (see stage_state()). The values are
  /// public; the layout (which columns exist) is fixed by the masks it was staged for.
  class StagedState {
   public:
    StagedState() = default;
    Index layers() const { return Index(layers_.size()); }
    /// c_t of layer k (size n_k).
    Vector& state(Index k) { return layer(k).state; }
    /// The last step's cache of layer k (resized for n_k, d_k): what output(), events() and
    /// accumulate_gradient() read until the next step.
    EgruStepCache<Scalar>& step_cache(Index k) { return layer(k).cache; }
    /// Layer k's influence blocks: n_k rows of influence_columns(k) scalars.
    Index influence_columns(Index k) { return layer(k).width; }
    /// Writes @p count values of layer k's influence blocks in row-major order from element
    /// @p first (row first / influence_columns(k)): how a row-major file is read into place.
    /// A state staged with its influence unset (stage_state(masks, false)) must be written in
    /// order, from element 0 up, without gaps, and completely before restore_state() takes it:
    /// a write past the written part throws std::out_of_range, and restore_state() refuses a
    /// state with unwritten values.
    void write_influence(Index k, std::size_t first, const Scalar* values, std::size_t count) {
      auto& M = layer(k).M;
      const std::size_t total = M.value_bytes() / sizeof(Scalar);
      std::size_t& written = written_[std::size_t(k)];
      if (first > total || count > total - first)
        throw std::out_of_range("sparse_rtrl::Rtrl::StagedState::write_influence(): elements [" +
                                std::to_string(first) + ", " + std::to_string(first + count) + ") outside the " +
                                std::to_string(total) + " of layer " + std::to_string(k));
      if (first > written)
        throw std::out_of_range("sparse_rtrl::Rtrl::StagedState::write_influence(): layer " + std::to_string(k) +
                                " was staged unset and is written up to element " + std::to_string(written) +
                                ": a write from element " + std::to_string(first) + " would leave a gap");
      M.write_row_major(first, values, count);
      written = std::max(written, first + count);
    }
    /// The accumulated gradient per column (size: the columns of all layers).
    Vector& gradient() { return grad_; }
    /// The masks the state is laid out for.
    const std::vector<ParameterMask>& masks() const { return masks_; }
    /// @brief Refuses values no learner can hold (std::invalid_argument naming the entry, as a
    /// checkpoint names it after @p prefix: "gradient", "l0/state", "l0/influence",
    /// "l0/cache/y", "steps"): a non-finite value, or steps outside [0, 2^53]. restore_state()
    /// calls it; a loader calls it early to fail before anything is committed. O(n P).
    void validate_values(const char* where, const std::string& prefix = "") const {
      detail::require_step_count(where, prefix + "steps", std::int64_t(steps));
      if (!grad_.allFinite()) detail::require_finite(where, (prefix + "gradient").c_str(), grad_);
      for (std::size_t k = 0; k < layers_.size(); ++k) {
        const Layer& l = layers_[k];
        const std::string p = prefix + "l" + std::to_string(k) + "/";
        if (!l.state.allFinite()) detail::require_finite(where, (p + "state").c_str(), l.state);
        detail::require_finite_cache(where, p, l.cache);
        const std::size_t set = k < written_.size() ? written_[k] : 0;
        std::size_t at = 0;
        for (Index i = 0; i < l.n; ++i)
          l.M.for_each_row_segment(i, [&](const Scalar* v, Index count) {
            for (Index e = 0; e < count; ++e, ++at)
              if (at < set && !std::isfinite(static_cast<double>(v[e]))) {
                std::ostringstream s;
                s << p << "influence must be finite, received " << v[e] << " at (" << i << ", "
                  << at - std::size_t(i) * std::size_t(l.width) << ")";
                detail::fail(where, s.str());
              }
          });
      }
    }

    Index steps = 0;            ///< steps() since the last reset
    bool steps_valid = true;    ///< last_step_valid()
    bool mask_followed = true;  ///< mask_followed(): false lets masks() differ from the model's
    WorkCounters last_work;     ///< last_step_work()
    WorkCounters total_work;    ///< total_work()
    std::vector<WorkCounters> layer_last_work, layer_total_work;  ///< per layer (size L)

   private:
    friend class Rtrl;
    Layer& layer(Index k) {
      if (k < 0 || k >= layers())
        throw std::out_of_range("sparse_rtrl::Rtrl::StagedState: layer must be in [0, " + std::to_string(layers()) +
                                "), received " + std::to_string(k));
      return layers_[std::size_t(k)];
    }
    std::vector<Layer> layers_;
    Vector grad_;
    std::vector<ParameterMask> masks_;
    std::vector<std::size_t> written_;  ///< per layer: influence values [0, written) are set
  };

 private:
  /// The checks of restore_state(): the model still has this learner's shapes and modes, the
  /// state was staged for them and for the model's current masks, its counters are sized.
  void check_restorable(const StagedState& staged, const char* where) const {
    require_parameter_shapes(where);
    if (staged.layers_.size() != layers_.size() || staged.masks_.size() != layers_.size())
      detail::fail(where, "the state has " + std::to_string(staged.layers_.size()) + " layers, this learner " +
                              std::to_string(layers_.size()) + " (stage it with stage_state())");
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const Layer& l = staged.layers_[k];
      if (l.n != layers_[k].n || l.d != layers_[k].d || l.events != layers_[k].events)
        detail::fail(where, "layer " + std::to_string(k) + ": the state was staged for other shapes or mode");
      if (staged.mask_followed && !(staged.masks_[k] == model_->mask(Index(k))))
        detail::fail(where, "layer " + std::to_string(k) +
                                ": the model's mask is not the one the state was staged for (set the model's masks first)");
      const std::size_t total = l.M.value_bytes() / sizeof(Scalar);
      if (k >= staged.written_.size() || staged.written_[k] < total)
        detail::fail(where, "layer " + std::to_string(k) + ": the state was staged with its influence unset and only " +
                                std::to_string(k < staged.written_.size() ? staged.written_[k] : 0) + " of its " +
                                std::to_string(total) + " values were written (write_influence)");
    }
    if (staged.layer_last_work.size() != layers_.size() || staged.layer_total_work.size() != layers_.size())
      detail::fail(where, "layer_last_work and layer_total_work must have one entry per layer");
    staged.validate_values(where);
  }

  /// Swaps a checked state in; cannot fail.
  void commit_state(StagedState& staged) noexcept {
    layers_.swap(staged.layers_);
    grad_.swap(staged.grad_);
    steps_ = staged.steps;
    steps_valid_ = staged.steps_valid;
    last_ = staged.last_work;
    total_ = staged.total_work;
    last_layer_.swap(staged.layer_last_work);
    total_layer_.swap(staged.layer_total_work);
    // A staged state holds every column (shards refuse checkpoints): its window is all of them.
    col_begin_ = 0;
    col_end_ = layers_.back().width;
    // Not followed: a version the model's counter never reaches, so the next step follows.
    mask_version_ = staged.mask_followed ? model_->mask_version() : ~std::uint64_t(0);
  }

  /// Columns of [0, width) inside this learner's window [col_begin_, col_end_).
  Index local_width(Index width) const { return std::max<Index>(0, std::min(width, col_end_) - col_begin_); }
  /// What only a learner of every column can do (a shard's gradient is gathered by its MPI
  /// learner; checkpoints of shards are not supported yet).
  void require_whole(const char* where) const {
    if (shard_.ranks > 1)
      throw std::logic_error(std::string(where) + ": this learner tracks column shard " + std::to_string(shard_.rank) +
                             " of " + std::to_string(shard_.ranks) +
                             " only (use the MPI learner's gradient(); checkpoints of shards are not supported yet)");
  }
  static ColumnShard checked(ColumnShard shard) {
    if (shard.ranks < 1 || shard.rank < 0 || shard.rank >= shard.ranks)
      detail::fail("sparse_rtrl::Rtrl::Rtrl()", "the shard must be in [0, ranks) with ranks >= 1, received shard " +
                                                    std::to_string(shard.rank) + " of " + std::to_string(shard.ranks));
    return shard;
  }
  /// The global column window of this learner's shard for @p layouts (ColumnPartition, aligned
  /// to the storage's panels: every column then runs through the kernels as in the whole
  /// learner). Throws std::invalid_argument for more ranks than panels.
  std::pair<Index, Index> shard_window(const std::vector<InfluenceLayout>& layouts, const std::vector<Index>& units) const {
    ColumnWork work;
    for (std::size_t m = 0; m < layouts.size(); ++m) {
      work.columns.push_back(layouts[m].columns());
      std::uint64_t rows = 0;
      for (std::size_t k = m; k < units.size(); ++k) rows += std::uint64_t(units[k]);
      work.cost.push_back(rows);
    }
    if (shard_.ranks == 1) return {0, work.total_columns()};
    const ColumnPartition part(work, shard_.ranks, detail::kChunk<Scalar>);
    return {part.begin(shard_.rank), part.end(shard_.rank)};
  }

  Layer& at(Index layer) { return layers_[std::size_t(check_layer(layer))]; }
  const Layer& at(Index layer) const { return layers_[std::size_t(check_layer(layer))]; }
  void require_mask_followed(const char* where) const {
    if (!mask_followed())
      throw std::logic_error(std::string(where) +
                             ": the model's masks changed (pruning or Model::set_mask) since this learner laid out "
                             "its columns; call follow_mask() (step() does) before reading its layout");
  }
  Index check_layer(Index layer) const {
    if (layers_.empty()) detail::fail_moved_from("sparse_rtrl::Rtrl");
    if (layer < 0 || layer >= layers())
      throw std::out_of_range("sparse_rtrl::Rtrl: layer must be in [0, " + std::to_string(layers()) +
                              "), received " + std::to_string(layer));
    return layer;
  }
  void require_single_layer(const char* where) const {
    if (layers_.empty()) detail::fail_moved_from(where);
    if (layers() != 1)
      throw std::logic_error(std::string(where) + ": the model is a stack of " + std::to_string(layers()) +
                             " layers: pass the layer (e.g. gradient(k), influence(k))");
  }

  // ---- The step in phases (RtrlStreams runs them for B streams on a shared pool). ----

  /// Checks that the model still has this learner's shapes and modes and follows a mask change.
  /// Runs on the calling thread (it may allocate, on a mask change). The caller then runs
  /// Model::enforce_mask() once (it writes to the model when a pruned weight was written).
  void prepare_step(const char* where) {
    require_parameter_shapes(where);
    follow_mask();
  }

  /// Every layer's c_t and local derivatives into its next cache (x already checked), layer k
  /// reading y^{k-1}_t there. Reads the model only and writes nothing else: false when a c_t is
  /// not finite, and then the learner is as before the call (the refused step is invisible).
  template <typename X>
  bool forward(const Eigen::MatrixBase<X>& x) {
    return detail::forward_into_next(layers_, *model_, x, /*event_sparse=*/options_.skip_silent_rows);
  }

  /// Makes a successful forward() the last step's cache: swaps of Eigen's buffers, no
  /// allocation, no throw.
  void commit_forward() noexcept {
    detail::commit_next(layers_);
    steps_valid_ = true;
  }

  /// A non-finite parameter (written through the model) shows in c_t: the step is refused before
  /// anything of the learner changes. O(n) per step; the full O(P) parameter scan runs only to name the
  /// culprit.
  [[noreturn]] void fail_non_finite_state(const char* where) const { detail::fail_non_finite_state(where, *model_); }


  /// M_{t-1} -> M_t and c_{t-1} -> c_t of every layer, bottom up, after a successful forward(),
  /// the products' columns split over @p pool's threads (scratch: pool.threads() *
  /// scratch_stride scalars).
  void propagate(parallel::ThreadPool& pool, Scalar* scratch, Index scratch_stride) {
    WorkCounters total;
    total.steps = 1;
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      Layer& l = layers_[k];
      const Index n = l.n;
      WorkCounters w;
      w.steps = 1;
      w.units = std::uint64_t(n);
      for (Index j = 0; j < n; ++j) w.event_units += l.cache.o_prev(j) != Scalar(0);
      build_coupling(l, model_->parameters(Index(k)).R);
      w.active_rows = std::uint64_t(l.coupling.active_count);
      w.coupling_nonzeros = std::uint64_t(l.coupling.nnz());
      if (!options_.skip_silent_rows) {
        w.active_rows = 0;
        for (Index j = 0; j < n; ++j) w.active_rows += l.cache.s_prev(j) != Scalar(0);
      }
      // J^k_t M^k_{t-1}: the dominant product (model.md "RTRL"), over all of layer k's blocks.
      detail::propagate_in_place(l.M, l.cache.decay.data(), l.coupling, scratch, scratch_stride, pool,
                                 options_.flush_subnormals);
      std::uint64_t dense_width = 0;
      for (std::size_t m = 0; m <= k; ++m) dense_width += std::uint64_t(layers_[m].layout.dense_columns());
      w.propagation_fma = std::uint64_t(l.coupling.nnz() + n) * std::uint64_t(local_width(l.width));
      w.dense_propagation_fma = (std::uint64_t(n) * std::uint64_t(n) + std::uint64_t(n)) * dense_width;
      if (k > 0) {
        // + B^k_t D^{k-1}_t over the blocks of layers 0..k-1 ("Stacked layers").
        const Layer& below = layers_[k - 1];
        build_cross(l, below, model_->parameters(Index(k)).W);
        detail::cross_add_in_place(l.M, local_width(l.offset), below.M, l.cross, pool, options_.flush_subnormals);
        add_cross_threshold_term(l, below);
        w.cross_layer_fma = std::uint64_t(l.cross.nnz()) * std::uint64_t(local_width(l.offset));
        w.dense_cross_layer_fma =
            std::uint64_t(n) * std::uint64_t(below.n) * (dense_width - std::uint64_t(l.layout.dense_columns()));
        w.propagation_fma += w.cross_layer_fma;
        w.dense_propagation_fma += w.dense_cross_layer_fma;
      }
      add_immediate_jacobian(l, model_->parameters(Index(k)).theta);
      l.state = l.cache.c;
      last_layer_[k] = w;
      total_layer_[k] += w;
      w.steps = 0;
      total += w;
    }
    ++steps_;
    last_ = total;
    total_ += total;
  }

  /// A loss on the output layer, inputs already checked (RtrlStreams, one stream per task).
  template <typename G>
  void accumulate_output_unchecked(const Eigen::MatrixBase<G>& dL_dy) {
    set_output_gradient(layers_.back(), dL_dy);
    read_out(layers_.size() - 1);
  }
  template <typename G, typename GO>
  void accumulate_output_unchecked(const Eigen::MatrixBase<G>& dL_dy, const Eigen::MatrixBase<GO>& dL_do) {
    set_output_gradient(layers_.back(), dL_dy, dL_do);
    read_out(layers_.size() - 1);
  }

  /// propagate() on this learner's own threads and scratch.
  void propagate_single() { propagate(pool_, scratch_.data(), scratch_stride_); }

  static RtrlOptions checked(RtrlOptions options) {
    if (options.threads < 1)
      detail::fail("sparse_rtrl::Rtrl::Rtrl()",
                   "options.threads must be >= 1, received " + std::to_string(options.threads));
    return options;
  }

  /// Installs new layouts for every layer, with M and the gradient carried over column by column
  /// from @p old (nullptr at construction: zeros). Everything that can throw (allocations)
  /// happens before the first member changes, so a throw leaves the learner as it was.
  void install(std::vector<InfluenceLayout> next, const std::vector<Layer>* old) {
    std::vector<const ParameterMask::BoolMatrix*> keep_W;
    for (Index k = 0; k < layers(); ++k) keep_W.push_back(&model_->mask(k).W());
    std::vector<Index> units;
    for (const Layer& l : layers_) units.push_back(l.n);
    const std::pair<Index, Index> window = shard_window(next, units);  // may throw: nothing changed yet
    install_into(layers_, grad_, std::move(next), keep_W, old, true, window);
    col_begin_ = window.first;
    col_end_ = window.second;
  }

  /// install() into @p dst and @p dst_grad (this learner's, or a StagedState's layers, whose
  /// n, d, events, cache and state vectors are set), @p keep_W: W's mask of each layer (the
  /// cross-layer pattern). @p old (may be &dst) carries columns over from this learner's grad_
  /// (columns of this learner's window, [col_begin_, col_end_), into @p window's). @p window:
  /// the global columns the new storage holds ({0, -1}: all).
  void install_into(std::vector<Layer>& dst, Vector& dst_grad, std::vector<InfluenceLayout> next,
                    const std::vector<const ParameterMask::BoolMatrix*>& keep_W, const std::vector<Layer>* old,
                    bool zero_influence = true, std::pair<Index, Index> window = {0, -1}) const {
    const std::size_t L = dst.size();
    std::vector<Index> offsets(L + 1, 0);
    for (std::size_t k = 0; k < L; ++k) offsets[k + 1] = offsets[k] + next[k].columns();
    if (window.second < 0) window = {0, offsets[L]};
    const Index wb = window.first, we = window.second;
    const auto in_window = [&](Index width) { return std::max<Index>(0, std::min(width, we) - wb); };
    // Where each old global column goes (-1: dropped). (column_map: a pruned weight of layer
    // m > 0 maps to -1, not to nf - 1, the last column of layer m - 1, which an inline
    // `nf + column_of_W()` gave, overwriting that column with the pruned weight's.)
    std::vector<Index> new_of_old;
    if (old) {
      std::vector<InfluenceLayout> from;
      for (const Layer& l : *old) from.push_back(l.layout);
      new_of_old = column_map(from, next);
    }
    std::vector<detail::InfluenceStorage<Scalar>> storage;
    storage.reserve(L);
    std::vector<detail::Coupling<Scalar>> coupling(L), cross(L);
    std::vector<std::vector<Scalar>> a_values(L), b_values(L);
    std::vector<std::vector<Index>> input_ptr(L), input_cols(L);
    Vector grad = Vector::Zero(we - wb);
    for (std::size_t k = 0; k < L; ++k) {
      const Index n = dst[k].n;
      storage.emplace_back(n, in_window(offsets[k + 1]), zero_influence || old);
      coupling[k].reserve(n, next[k].coupling_nonzeros());
      a_values[k].resize(std::size_t(next[k].coupling_nonzeros()));
      if (k > 0) {
        connection_pattern(*keep_W[k], n, input_ptr[k], input_cols[k]);
        cross[k].reserve(n, Index(input_cols[k].size()));
        b_values[k].resize(input_cols[k].size());
      }
      if (old) {
        const Layer& o = (*old)[k];
        auto& M = storage[k];
        const Index end = std::min(we, offsets[k + 1]);
        for (Index i = 0; i < n; ++i) {
          auto row = M.row(i);
          for (Index c = 0; c < o.M.cols(); ++c) {
            const Index to = new_of_old[std::size_t(c + col_begin_)];
            if (to >= wb && to < end) row[to - wb] = o.M(i, c);
          }
        }
      }
    }
    if (old)
      for (Index c = 0; c < grad_.size(); ++c) {
        const Index to = new_of_old[std::size_t(c + col_begin_)];
        if (to >= wb && to < we) grad(to - wb) = grad_(c);
      }
    std::vector<std::vector<Index>> position(L);
    for (std::size_t k = 0; k < L; ++k) position[k].assign(std::size_t(dst[k].n), -1);
    std::vector<std::vector<Index>> readout_rows(L);
    std::vector<std::vector<Scalar>> readout_coef(L);
    for (std::size_t k = 0; k < L; ++k) {
      readout_rows[k].assign(std::size_t(dst[k].n), 0);
      readout_coef[k].assign(std::size_t(dst[k].n), Scalar(0));
    }
    // No-throw from here on: moves of vectors, Eigen matrices and storages.
    for (std::size_t k = 0; k < L; ++k) {
      Layer& l = dst[k];
      l.layout = std::move(next[k]);
      l.offset = offsets[k];
      l.width = offsets[k + 1];
      l.M = std::move(storage[k]);
      l.coupling = std::move(coupling[k]);
      l.a_values = std::move(a_values[k]);
      l.position = std::move(position[k]);
      l.readout_rows = std::move(readout_rows[k]);
      l.readout_coef = std::move(readout_coef[k]);
      l.input_row_ptr = std::move(input_ptr[k]);
      l.input_cols = std::move(input_cols[k]);
      l.cross = std::move(cross[k]);
      l.b_values = std::move(b_values[k]);
    }
    dst_grad = std::move(grad);
  }

  /// CSR of the connections input j -> unit i kept in any of W's three gate blocks.
  static void connection_pattern(const ParameterMask::BoolMatrix& keep, Index n, std::vector<Index>& ptr,
                                 std::vector<Index>& cols) {
    ptr.assign(std::size_t(n + 1), 0);
    cols.clear();
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < keep.cols(); ++j)
        if (keep(i, j) || keep(n + i, j) || keep(2 * n + i, j)) cols.push_back(j);
      ptr[std::size_t(i + 1)] = Index(cols.size());
    }
  }

  /// The model's parameters may be replaced through cell(): a changed shape or mode would make
  /// every buffer here the wrong size. O(L) per step.
  void require_parameter_shapes(const char* where) const {
    if (layers_.empty()) detail::fail_moved_from(where);
    if (model_->layers() != layers())
      detail::fail(where, "the model has " + std::to_string(model_->layers()) + " layers, this learner was built for " +
                              std::to_string(layers()) + " (construct a new learner)");
    for (Index k = 0; k < layers(); ++k) {
      const Layer& l = layers_[std::size_t(k)];
      // Built only on failure: this check runs every step.
      const auto layer = [&] { return layers() > 1 ? "layer " + std::to_string(k) + ": " : std::string(); };
      if (model_->events(k) != l.events)
        detail::fail(where, layer() + "the model's cell changed mode since construction: it was built in " +
                                (l.events ? "events" : "GRU") + " mode, the model's cell is now in " +
                                (l.events ? "GRU" : "events") + " mode (construct a new learner)");
      const auto& p = model_->parameters(k);
      const Index n = l.n, d = l.d;
      if (!p.has_shape(n, d)) {
        std::ostringstream s;
        s << layer() << "the cell's parameters changed shape since construction (through cell()): expected W "
          << detail::shape_string(3 * n, d) << ", R " << detail::shape_string(3 * n, n) << ", bW, bR " << 3 * n
          << ", theta " << n << "; received W " << detail::shape_string(p.W.rows(), p.W.cols()) << ", R "
          << detail::shape_string(p.R.rows(), p.R.cols()) << ", bW " << p.bW.size() << ", bR " << p.bR.size()
          << ", theta " << p.theta.size();
        detail::fail(where, s.str());
      }
    }
  }

  void require_stepped(const char* where) const {
    if (steps_ == 0)
      throw std::logic_error(std::string(where) + ": call step() first: the loss is on y_t of a step");
    if (!steps_valid_)
      throw std::logic_error(std::string(where) + ": the last step() failed; step again first");
  }

  /// dL/dc_t = dL/dy_t s_t and theta's direct term -dL/dy_t c_t psi_t (model.md "RTRL").
  template <typename G>
  static void set_output_gradient(Layer& l, const Eigen::MatrixBase<G>& dL_dy) {
    for (Index i = 0; i < l.n; ++i) {
      l.dL_dc(i) = dL_dy(i) * l.cache.s(i);
      l.theta_direct(i) = -dL_dy(i) * l.cache.c(i) * l.cache.psi(i);
    }
  }
  /// With a loss on the events too: do/dc = psi and do/dtheta = -psi under the surrogate.
  template <typename G, typename GO>
  static void set_output_gradient(Layer& l, const Eigen::MatrixBase<G>& dL_dy, const Eigen::MatrixBase<GO>& dL_do) {
    for (Index i = 0; i < l.n; ++i) {
      l.dL_dc(i) = dL_dy(i) * l.cache.s(i) + dL_do(i) * l.cache.psi(i);
      l.theta_direct(i) = -(dL_dy(i) * l.cache.c(i) + dL_do(i)) * l.cache.psi(i);
    }
  }

  template <typename G>
  void require_output_gradient(const char* where, const char* name, const Eigen::MatrixBase<G>& g, Index n) const {
    detail::require_vector(where, name, g, n);
    detail::require_finite(where, name, g);
  }

  /// After a read-out of layer k: the gradient columns it touched are finite. O(width_k), against
  /// the read-out's O(rows x width_k). An influence matrix that overflowed (model.md, "Thresholds
  /// and the bound on c") shows here first; the cold path names the entry.
  void require_finite_gradient(const char* where, std::size_t k) const {
    const Layer& l = layers_[k];
    if (grad_.head(local_width(l.width)).allFinite()) return;
    fail_non_finite_influence(where);
  }

  /// Names the first non-finite influence entry (layer, row, the parameter owning the column)
  /// and the likely cause; std::overflow_error. The gradient accumulated so far is not finite:
  /// zero_gradient() and reset() before going on.
  [[noreturn]] void fail_non_finite_influence(const char* where) const {
    std::ostringstream s;
    s << where << ": ";
    bool found = false;
    for (std::size_t k = 0; k < layers_.size() && !found; ++k) {
      const Layer& l = layers_[k];
      for (Index i = 0; i < l.n && !found; ++i) {
        Index c = 0;
        l.M.for_each_row_segment(i, [&](const Scalar* v, Index count) {
          for (Index e = 0; e < count && !found; ++e, ++c)
            if (!std::isfinite(static_cast<double>(v[e]))) {
              found = true;
              // Column c belongs to the layer m whose column range holds it.
              const Index g = c + col_begin_;  // global column (a shard stores its window)
              std::size_t m = 0;
              while (m + 1 <= k && layers_[m + 1].offset <= g) ++m;
              s << "the influence matrix of layer " << k << " is not finite: M(" << i << ", " << g << ") = " << v[e]
                << ", the influence of layer " << m << "'s parameter "
                << layers_[m].layout.parameter_name(g - layers_[m].offset) << " on unit " << i;
            }
        });
      }
    }
    if (!found) s << "the accumulated gradient is not finite (the influence matrix is finite: the loss gradients were too large)";
    // The likely cause: a negative threshold lets |c| grow without bound when the update gate
    // saturates, and M with it.
    double lowest = 0;
    Index at_layer = -1, at_unit = -1;
    for (Index k = 0; k < layers(); ++k) {
      const auto& theta = model_->parameters(k).theta;
      for (Index j = 0; j < theta.size(); ++j)
        if (double(theta(j)) < lowest) {
          lowest = double(theta(j));
          at_layer = k;
          at_unit = j;
        }
    }
    if (at_layer >= 0)
      s << "; likely cause: negative thresholds (theta[" << at_unit << "] of layer " << at_layer << " = " << lowest
        << "), under which |c| grows without bound; keep theta >= 0 with clamp_thresholds() after each optimizer step";
    else
      s << "; likely cause: states or parameters too large (thresholds are all >= 0)";
    s << ". The gradient is not finite: call zero_gradient() and reset()";
    throw std::overflow_error(s.str());
  }

  /// gradient[0 : width_k) += (dL/dc^k_t)^T M^k_t over rows with dL/dc != 0, plus theta^k's
  /// direct term.
  void read_out(std::size_t k) {
    Layer& l = layers_[k];
    const Index width = local_width(l.width);
    Index rows = 0;
    for (Index i = 0; i < l.n; ++i) {
      const Scalar gi = l.dL_dc(i);
      if (gi == Scalar(0)) continue;
      l.readout_rows[std::size_t(rows)] = i;
      l.readout_coef[std::size_t(rows)] = gi;
      ++rows;
    }
    const std::uint64_t fma = std::uint64_t(rows) * std::uint64_t(width);
    // Panel by panel (M's storage order), each panel's gradient segment accumulated in registers
    // over the rows in increasing i (the propagation kernel with decay 1 and the rows as
    // sources), panels split over the learner's threads: bitwise the same for any thread count.
    constexpr Index W = detail::kChunk<Scalar>;
    if (rows > 0 && width > 0)
      detail::split_columns<Scalar>(
          width, double(fma), pool_, options_.flush_subnormals, [&](int, Index begin, Index end) {
            for (Index p = begin / W; p * W < end; ++p)
              detail::propagate_chunk_upto<Scalar>(grad_.data() + p * W, Scalar(1), l.M.panel(p), W,
                                                   l.readout_rows.data(), l.readout_coef.data(), rows,
                                                   std::min<Index>(W, width - p * W));
          });
    if (l.layout.tracks_theta())
      for (Index j = 0; j < l.n; ++j) {
        const Index c = l.offset + l.layout.theta_column(j);
        if (c >= col_begin_ && c < col_end_) grad_(c - col_begin_) += l.theta_direct(j);
      }
    std::uint64_t dense_width = 0;
    for (std::size_t m = 0; m <= k; ++m) dense_width += std::uint64_t(layers_[m].layout.dense_columns());
    const std::uint64_t dense = std::uint64_t(l.n) * dense_width;
    for (WorkCounters* w : {&last_, &total_, &last_layer_[k], &total_layer_[k]}) {
      w->readout_fma += fma;
      w->dense_readout_fma += dense;
    }
  }

  void restart() {
    for (auto& l : layers_) {
      l.state = l.initial_state;
      l.M.set_zero();
    }
    steps_ = 0;
    steps_valid_ = true;
  }

  /// A_t on R's pattern (detail::coupling_entry), and the compressed coupling A_t diag(s_{t-1})
  /// over active source rows.
  template <typename RMatrix>
  void build_coupling(Layer& l, const RMatrix& R) {
    const Index n = l.n;
    const auto& ptr = l.layout.coupling_row_ptr();
    const auto& cols = l.layout.coupling_cols();
    Index k = 0;
    for (Index j = 0; j < n; ++j) {
      const bool active = !options_.skip_silent_rows || l.cache.s_prev(j) != Scalar(0);
      l.position[std::size_t(j)] = active ? k : -1;
      if (active) l.coupling.active[std::size_t(k++)] = j;
      l.c_psi(j) = l.cache.c_prev(j) * l.cache.psi_prev(j);
    }
    l.coupling.active_count = k;
    Index e = 0;
    for (Index i = 0; i < n; ++i) {
      l.coupling.row_ptr[std::size_t(i)] = e;
      for (Index p = ptr[std::size_t(i)]; p < ptr[std::size_t(i + 1)]; ++p) {
        const Index j = cols[std::size_t(p)];
        const Scalar a = detail::coupling_entry(R, l.cache, n, i, j);
        l.a_values[std::size_t(p)] = a;
        const Index pos = l.position[std::size_t(j)];
        if (pos >= 0) {
          // Only silent rows are skipped, not coefficients that happen to vanish (saturated
          // gates): the work then depends on activity and pattern alone, as documented.
          l.coupling.source[std::size_t(e)] = pos;
          l.coupling.coef[std::size_t(e)] = a * l.cache.s_prev(j);
          ++e;
        }
      }
    }
    l.coupling.row_ptr[std::size_t(n)] = e;
  }

  /// B^k_t[i, j] = dc_i/dy^{k-1}_j = sum over gates of dc/da_gate W^k_gate[i, j] (the input
  /// enters every gate's pre-activation outside the reset gate), on W^k's pattern; the
  /// compressed coupling B^k_t diag(s^{k-1}_t) over active units j of layer k - 1, whose rows of
  /// M^{k-1}_t are the sources.
  template <typename WMatrix>
  void build_cross(Layer& l, const Layer& below, const WMatrix& W) {
    const Index n = l.n;
    Index e = 0;
    for (Index i = 0; i < n; ++i) {
      l.cross.row_ptr[std::size_t(i)] = e;
      const Scalar ar = l.cache.dc_da(i), az = l.cache.dc_da(n + i), ag = l.cache.dc_da(2 * n + i);
      for (Index p = l.input_row_ptr[std::size_t(i)]; p < l.input_row_ptr[std::size_t(i + 1)]; ++p) {
        const Index j = l.input_cols[std::size_t(p)];
        const Scalar b = ar * W(i, j) + az * W(n + i, j) + ag * W(2 * n + i, j);
        l.b_values[std::size_t(p)] = b;
        const Scalar s = below.cache.s(j);
        if (!options_.skip_silent_rows || s != Scalar(0)) {
          l.cross.source[std::size_t(e)] = j;
          l.cross.coef[std::size_t(e)] = b * s;
          ++e;
        }
      }
    }
    l.cross.row_ptr[std::size_t(n)] = e;
  }

  /// The direct part of D^{k-1,k-1}_t: y^{k-1}_j depends on theta^{k-1}_j also directly
  /// (dy/dtheta = -c psi), reaching layer k through B^k.
  void add_cross_threshold_term(Layer& l, const Layer& below) {
    if (!below.layout.tracks_theta()) return;
    // The threshold columns of layer k - 1 (global below.offset + theta_column(j)): a shard
    // writes those in its window only.
    const Index first = below.offset + below.layout.theta_column(0), last = first + below.n;
    if (last <= col_begin_ || first >= col_end_) return;
    for (Index i = 0; i < l.n; ++i) {
      auto row = l.M.row(i);
      for (Index p = l.input_row_ptr[std::size_t(i)]; p < l.input_row_ptr[std::size_t(i + 1)]; ++p) {
        const Index j = l.input_cols[std::size_t(p)];
        const Index c = below.offset + below.layout.theta_column(j);
        if (c < col_begin_ || c >= col_end_) continue;
        const Scalar cp = below.cache.c(j) * below.cache.psi(j);
        if (cp != Scalar(0)) row[c - col_begin_] -= l.b_values[std::size_t(p)] * cp;
      }
    }
  }

  /// M_t += Mbar_t: the immediate Jacobian at fixed c_{t-1}. Each weight feeding unit i has one
  /// nonzero, in row i, inside unit i's contiguous column range; recurrent weights from silent
  /// presynaptic units (y_{t-1, j} = 0) contribute nothing and are skipped.
  template <typename Theta>
  void add_immediate_jacobian(Layer& l, const Theta& theta) {
    const Index n = l.n;
    if (shard_.ranks == 1) {
      for (Index i = 0; i < n; ++i)
        detail::add_unit_immediate_jacobian(l.layout, l.cache, i, l.M.row(i), l.offset + l.layout.unit_begin(i));
    } else {
      // A shard: the units whose columns meet the window, each column written only inside it.
      Scalar sink = 0;
      for (Index i = 0; i < n; ++i) {
        const Index first = l.offset + l.layout.unit_begin(i), last = l.offset + l.layout.unit_end(i);
        if (last <= col_begin_ || first >= col_end_) continue;
        detail::add_unit_immediate_jacobian(l.layout, l.cache, i, WindowRow{l.M.row(i), col_begin_, col_end_, &sink},
                                            first);
      }
    }
    if (!l.layout.tracks_theta()) return;
    const Index theta_first = l.offset + l.layout.theta_column(0);
    if (theta_first + n <= col_begin_ || theta_first >= col_end_) return;
    // Thresholds act through h_{t-1} (the diagonal) and y_{t-1} (dy/dtheta = -c psi, spread by
    // A_t's column).
    const auto& ptr = l.layout.coupling_row_ptr();
    const auto& cols = l.layout.coupling_cols();
    const auto inside = [&](Index c) { return c >= col_begin_ && c < col_end_; };
    for (Index i = 0; i < n; ++i) {
      auto row = l.M.row(i);
      const Index ci = l.offset + l.layout.theta_column(i);
      if (inside(ci)) row[ci - col_begin_] += detail::threshold_reset_entry(l.cache, theta, i);
      for (Index p = ptr[std::size_t(i)]; p < ptr[std::size_t(i + 1)]; ++p) {
        const Index j = cols[std::size_t(p)];
        const Index cj = l.offset + l.layout.theta_column(j);
        if (l.c_psi(j) != Scalar(0) && inside(cj)) row[cj - col_begin_] -= l.a_values[std::size_t(p)] * l.c_psi(j);
      }
    }
  }

  /// A row of a shard's M seen through global column indices: writes outside the window
  /// [begin, end) go to a discarded sink (the immediate Jacobian of a unit whose columns straddle
  /// the window's edge).
  struct WindowRow {
    typename detail::InfluenceStorage<Scalar>::RowRef row;
    Index begin, end;
    Scalar* sink;
    Scalar& operator[](Index c) const { return c >= begin && c < end ? row[c - begin] : *sink; }
  };

  template <typename, typename>
  friend class RtrlStreams;
  template <typename, typename>
  friend class mpi::ShardedRtrl;

  Model* model_;
  RtrlOptions options_;
  ColumnShard shard_;
  Index col_begin_ = 0, col_end_ = 0;  ///< the global columns M and grad_ hold (all, unless a shard)
  parallel::ThreadPool pool_;
  std::uint64_t mask_version_ = 0;
  std::vector<Layer> layers_;
  Vector grad_;
  std::vector<Scalar> scratch_;
  Index scratch_stride_ = 0;
  Index steps_ = 0;
  bool steps_valid_ = true;
  WorkCounters last_, total_;
  std::vector<WorkCounters> last_layer_, total_layer_;
};

}  // namespace sparse_rtrl
