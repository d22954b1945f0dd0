/// @file learner_base.hpp
/// @brief The skeleton every online learner of an EGRU stack shares (Rtrl, Snap, and the learners
///        built on them): the model reference, the per-layer stream state, the gradient, the step
///        and work counters, every accessor and check, the layer-by-layer forward loop, the
///        read-out front ends and one detached stream state (StreamState) that restore_state()
///        and checkpoints take for every learner through one path.
///
/// CRTP, as Eigen's DenseBase holds what its matrices share: LearnerBase<Derived, ...> calls the
/// derived learner's hooks statically (no virtual call on the hot path). A learner keeps only
/// what is its own: how it propagates its influence (propagate_step()), how it reads the
/// influence out into the gradient (read_out()), what its layers hold beyond LearnerLayer, and
/// its checks before a step (prepare_step()). The hooks a derived learner defines:
///
///   static constexpr LearnerText text{...};             // its name ("sparse_rtrl::Rtrl"), hints
///   void prepare_step(const char* where);                // shapes, masks (may allocate)
///   bool event_sparse_forward() const;                   // EgruCell::forward's event_sparse
///   bool flush_subnormals() const;                       // SubnormalGuard around step / read-out
///   void propagate_step();                               // after a committed forward: M_{t-1} -> M_t,
///                                                        // last_layer_ filled, then finish_step()
///   void read_out(std::size_t layer);                    // gradient += (dL/dc)^T M over layer's rows
///   [[noreturn]] void fail_non_finite_gradient(const char* where) const;
///   void clear_influence();                              // reset(): M = 0
///   std::vector<Layer> stage_layers(const std::vector<ParameterMask>&, bool zero_influence) const;
///   void check_staged_layers(const std::vector<Layer>&, const char* where) const;  // beyond n, d, mode
///
/// Layer (the learner's per-layer type) derives from detail::LearnerLayer<Scalar> and provides
/// its influence in checkpoint order: influence_entry(), influence_shape(), influence_values(),
/// write_influence(first, values, count), for_each_influence_segment(f), zero_influence().
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/learner_state.hpp>
#include <sparse_rtrl/learners/work_counters.hpp>
#include <sparse_rtrl/model/egru_cell.hpp>
#include <sparse_rtrl/model/influence_layout.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>
#include <sparse_rtrl/parallel/denormals.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sparse_rtrl {

namespace detail {

/// The per-layer stream state every learner keeps; a learner's own layer type derives from it.
template <typename Scalar>
struct LearnerLayer {
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  Index n = 0, d = 0;
  bool events = true;
  InfluenceLayout layout;
  Index offset = 0;  ///< first global column of this layer's parameters
  Index width = 0;   ///< columns of the parameters of layers 0..k: offset + layout.columns()
  EgruStepCache<Scalar> cache;
  /// The step being computed: forward() writes here and commit_forward() swaps it with cache,
  /// so a refused step leaves cache (output(), events(), the read-out) as it was.
  EgruStepCache<Scalar> next;
  Vector state, dL_dc, theta_direct;

  /// Sizes for n units and d inputs, all zero (a checkpoint saves the cache before any step).
  void shape(Index units, Index inputs, bool event_mode) {
    n = units;
    d = inputs;
    events = event_mode;
    cache.resize(n, d);
    cache.set_zero();
    next.resize(n, d);
    state.setZero(n);
    dL_dc.setZero(n);
    theta_direct.setZero(n);
  }
};

/// "sparse_rtrl::Rtrl::step()" in a fixed buffer: a function-local static of this type names the
/// method in the learners' errors, built once and without allocating (their hot paths allocate
/// nothing, first calls included: tests/learners/alloc.test.cpp counts every operator new).
class QualifiedName {
 public:
  QualifiedName(const char* owner, const char* method) {
    std::size_t at = 0;
    for (const char* part : {owner, "::", method})
      for (; *part != '\0' && at + 1 < sizeof(text_); ++part) text_[at++] = *part;
    text_[at] = '\0';
  }
  const char* c_str() const { return text_; }

 private:
  char text_[128] = {};
};

}  // namespace detail

/// What a learner's errors say of it (LearnerBase): its qualified name, how to address one layer
/// of a stack, and what to do after a mask change it has not followed.
struct LearnerText {
  const char* name;               ///< "sparse_rtrl::Rtrl"
  const char* per_layer_example;  ///< "influence(k)": a per-layer accessor, for the stack error
  const char* stale_layout_hint;  ///< "call follow_mask() ...", after an unfollowed mask change
};

namespace detail {

/// CSR of the connections input j -> unit i kept in any of W's three gate blocks (the
/// cross-layer pattern of a stack: which units of layer k - 1 reach unit i of layer k).
inline void connection_pattern(const ParameterMask::BoolMatrix& keep, Index n, std::vector<Index>& ptr,
                               std::vector<Index>& cols) {
  ptr.assign(std::size_t(n + 1), 0);
  cols.clear();
  for (Index i = 0; i < n; ++i) {
    for (Index j = 0; j < keep.cols(); ++j)
      if (keep(i, j) || keep(n + i, j) || keep(2 * n + i, j)) cols.push_back(j);
    ptr[std::size_t(i + 1)] = Index(cols.size());
  }
}

}  // namespace detail

template <typename Derived, typename Scalar, typename Surrogate, typename Layer>
class LearnerBase;
template <typename Learner>
class StepPhases;

/// @brief One stream's state of a learner, detached from it: what restore_state() swaps in and
/// what a checkpoint saves and loads, the same type and path for every learner (Rtrl, Snap, ...).
///
/// Staged by the learner's stage_state(masks) (zero, laid out for the masks, for a loader to fill)
/// or stage_state() (a copy of the learner's current state). The values are public through the
/// accessors; which influence entries exist is fixed by the masks (and the learner's pattern).
/// The influence of layer k is a sequence of influence_values(k) scalars in the order a
/// checkpoint stores them (Rtrl: the n_k x influence_columns(k) blocks row-major; Snap: the kept
/// entries owner by owner).
template <typename Scalar, typename Layer>
class StreamState {
 public:
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  StreamState() = default;

  Index layers() const { return Index(layers_.size()); }
  /// c_t of layer k (size n_k).
  Vector& state(Index k) { return layer(k).state; }
  const Vector& state(Index k) const { return layer(k).state; }
  /// The last step's cache of layer k (resized for n_k, d_k): what output(), events() and
  /// accumulate_gradient() read until the next step.
  EgruStepCache<Scalar>& step_cache(Index k) { return layer(k).cache; }
  const EgruStepCache<Scalar>& step_cache(Index k) const { return layer(k).cache; }
  /// The accumulated gradient per column (size: the columns of all layers).
  Vector& gradient() { return grad_; }
  const Vector& gradient() const { return grad_; }
  /// The masks the state is laid out for.
  const std::vector<ParameterMask>& masks() const { return masks_; }

  /// The checkpoint entry that holds layer k's influence ("influence" or "kept") and its shape.
  const char* influence_entry() const { return Layer::influence_entry(); }
  std::vector<Index> influence_shape(Index k) const { return layer(k).influence_shape(); }
  /// Scalars of layer k's influence (the product of influence_shape(k)).
  std::size_t influence_values(Index k) const { return layer(k).influence_values(); }
  /// Columns of layer k's influence blocks (Rtrl's row length; the whole count for a flat one).
  Index influence_columns(Index k) const {
    const std::vector<Index> s = influence_shape(k);
    return s.back();
  }
  /// A copy of layer k's influence in checkpoint order.
  Vector influence(Index k) const {
    Vector out(Index(influence_values(k)));
    Index at = 0;
    layer(k).for_each_influence_segment([&](const Scalar* v, Index count) {
      std::copy(v, v + count, out.data() + at);
      at += count;
    });
    return out;
  }
  /// Calls f(values, count) over layer k's influence in checkpoint order (no copy).
  template <typename F>
  void for_each_influence_segment(Index k, F&& f) const {
    layer(k).for_each_influence_segment(std::forward<F>(f));
  }
  /// Writes @p count values of layer k's influence from element @p first (checkpoint order): how a
  /// file is read into place. A state staged with its influence unset (stage_state(masks, false))
  /// must be written in order, from element 0 up, without gaps, and completely before
  /// restore_state() takes it: a write past the written part throws std::out_of_range, and
  /// restore_state() refuses a state with unwritten values.
  void write_influence(Index k, std::size_t first, const Scalar* values, std::size_t count) {
    Layer& l = layer(k);
    const std::size_t total = l.influence_values();
    std::size_t& written = written_[std::size_t(k)];
    if (first > total || count > total - first)
      throw std::out_of_range(std::string(name_) + "::StreamState::write_influence(): elements [" +
                              std::to_string(first) + ", " + std::to_string(first + count) + ") outside the " +
                              std::to_string(total) + " of layer " + std::to_string(k));
    if (first > written)
      throw std::out_of_range(std::string(name_) + "::StreamState::write_influence(): layer " + std::to_string(k) +
                              " was staged unset and is written up to element " + std::to_string(written) +
                              ": a write from element " + std::to_string(first) + " would leave a gap");
    l.write_influence(first, values, count);
    written = std::max(written, first + count);
  }

  /// @brief Refuses values no learner can hold (std::invalid_argument naming the entry, as a
  /// checkpoint names it after @p prefix: "gradient", "l0/state", "l0/influence" (or "l0/kept"),
  /// "l0/cache/y", "steps"): a non-finite value, or steps outside [0, 2^53]. restore_state() calls
  /// it; a loader calls it early to fail before anything is committed. O(n P).
  void validate_values(const char* where, const std::string& prefix = "") const {
    detail::require_step_count(where, prefix + "steps", std::int64_t(steps));
    if (!grad_.allFinite()) detail::require_finite(where, (prefix + "gradient").c_str(), grad_);
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const Layer& l = layers_[k];
      const std::string p = prefix + "l" + std::to_string(k) + "/";
      if (!l.state.allFinite()) detail::require_finite(where, (p + "state").c_str(), l.state);
      detail::require_finite_cache(where, p, l.cache);
      const std::size_t set = k < written_.size() ? written_[k] : 0;
      const std::vector<Index> shape = l.influence_shape();
      const std::size_t row = std::size_t(shape.back());
      std::size_t at = 0;
      l.for_each_influence_segment([&](const Scalar* v, Index count) {
        for (Index e = 0; e < count; ++e, ++at)
          if (at < set && !std::isfinite(static_cast<double>(v[e]))) {
            std::ostringstream s;
            s << p << Layer::influence_entry() << " must be finite, received " << v[e] << " at (";
            if (shape.size() == 2) s << at / row << ", ";
            s << at % row << ")";
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
  template <typename, typename, typename, typename>
  friend class LearnerBase;
  Layer& layer(Index k) { return layers_[std::size_t(check(k))]; }
  const Layer& layer(Index k) const { return layers_[std::size_t(check(k))]; }
  Index check(Index k) const {
    if (k < 0 || k >= layers())
      throw std::out_of_range(std::string(name_) + "::StreamState: layer must be in [0, " + std::to_string(layers()) +
                              "), received " + std::to_string(k));
    return k;
  }
  const char* name_ = "sparse_rtrl";
  std::vector<Layer> layers_;
  Vector grad_;
  std::vector<ParameterMask> masks_;
  std::vector<std::size_t> written_;  ///< per layer: influence values [0, written) are set
};

/// @brief What every learner of an EGRU stack shares (see learner_base.hpp).
///
/// Usage per step: step(x_t); then, if the step has a loss, accumulate_gradient(dL/dy_t) (on the
/// output layer; accumulate_gradient_at(k, ...) for layer k of a stack). gradient() returns the
/// sum of all accumulated loss gradients in parameter layout (gradient(k) for layer k of a stack).
/// The learner references a Model (model.hpp): it must outlive the learner and stay at one
/// address. Column space: the parameters of layer k own the columns [column_offset(k),
/// column_offset(k) + layout(k).columns()) of gradient_columns().
template <typename Derived, typename Scalar, typename Surrogate, typename Layer>
class LearnerBase {
 public:
  using Model = sparse_rtrl::Model<Scalar, Surrogate>;
  using Cell = EgruCell<Scalar, Surrogate>;
  using Parameters = EgruParameters<Scalar>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using StagedState = StreamState<Scalar, Layer>;
  using value_type = Scalar;

  /// Layers of the model (1 for a single cell).
  Index layers() const { return Index(layers_.size()); }
  /// Units of the output layer (the top of a stack).
  Index units() const { return live_back().n; }
  /// Units of layer k.
  Index units(Index layer) const { return at(layer).n; }
  Index inputs() const { return detail::live_front(layers_, Derived::text.name).d; }
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
  /// of them (pruning, Model::set_mask) that this learner has not followed, they throw
  /// std::logic_error rather than report the old layout.
  const InfluenceLayout& layout(Index layer = 0) const {
    static const detail::QualifiedName where(Derived::text.name, "layout()");
    require_layout_current(where.c_str());
    return at(layer).layout;
  }
  /// First column of layer k's parameters in gradient_columns().
  Index column_offset(Index layer) const {
    static const detail::QualifiedName where(Derived::text.name, "column_offset()");
    require_layout_current(where.c_str());
    return at(layer).offset;
  }
  /// Columns over all layers (the size of gradient_columns()).
  Index columns() const {
    static const detail::QualifiedName where(Derived::text.name, "columns()");
    require_layout_current(where.c_str());
    return live_back().width;
  }
  /// True when the columns are laid out for the model's current masks.
  bool mask_followed() const { return mask_version_ == model_->mask_version(); }

  /// Starts a new sequence from c_0 = 0 in every layer: clears the influence and the step's
  /// cache. Keeps the gradient.
  void reset() {
    static const detail::QualifiedName where(Derived::text.name, "reset()");
    if (layers_.empty()) detail::fail_moved_from(where.c_str());
    for (auto& l : layers_) l.state.setZero();
    restart();
  }
  /// Starts a new sequence from the given c_0 (size n, finite) of a one-layer model.
  template <typename C0>
  void reset(const Eigen::MatrixBase<C0>& c0) {
    static const detail::QualifiedName where(Derived::text.name, "reset()");
    require_single_layer(where.c_str());
    detail::require_vector(where.c_str(), "c0", c0, units());
    detail::require_finite(where.c_str(), "c0", c0);
    for (Index i = 0; i < units(); ++i) layers_[0].state(i) = c0(i);
    restart();
  }

  /// @brief Advances every layer's c_{t-1} -> c_t and its influence for input x_t (size d,
  /// finite). A changed shape or mode of the model, or a non-finite state, throws
  /// std::invalid_argument before anything of the learner changes.
  template <typename X>
  void step(const Eigen::MatrixBase<X>& x) {
    static const detail::QualifiedName where_s(Derived::text.name, "step()");
    const char* where = where_s.c_str();
    {
      // The step's checks and Model::enforce_mask() (a pass over every weight and mask entry)
      // count as "other": unattributed, they were 6% of a step that no phase showed.
      detail::ScopedPhase timed(time_phases_, phase_times_.other);
      detail::require_vector(where, "x", x, inputs());
      detail::require_finite(where, "x", x);
      derived().prepare_step(where);
      model_->enforce_mask();
    }
    detail::SubnormalGuard flush(derived().flush_subnormals());
    bool finite;
    {
      detail::ScopedPhase timed(time_phases_, phase_times_.forward);
      finite = forward(x);
    }
    if (!finite) fail_non_finite_state(where);
    commit_forward();
    derived().propagate_step();
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
    static const detail::QualifiedName where_s(Derived::text.name, "accumulate_gradient()");
    const char* where = where_s.c_str();
    Layer& l = at(layer);
    require_stepped(where);
    require_output_gradient(where, "dL_dy", dL_dy, l.n);
    set_output_gradient(l, dL_dy);
    read_out_checked(where, std::size_t(layer));
  }
  /// A loss on layer k's output and events.
  template <typename G, typename GO>
  void accumulate_gradient_at(Index layer, const Eigen::MatrixBase<G>& dL_dy, const Eigen::MatrixBase<GO>& dL_do) {
    static const detail::QualifiedName where_s(Derived::text.name, "accumulate_gradient()");
    const char* where = where_s.c_str();
    Layer& l = at(layer);
    require_stepped(where);
    require_output_gradient(where, "dL_dy", dL_dy, l.n);
    require_output_gradient(where, "dL_do", dL_do, l.n);
    set_output_gradient(l, dL_dy, dL_do);
    read_out_checked(where, std::size_t(layer));
  }

  /// The accumulated gradient of a one-layer model, in parameter layout (pruned entries are
  /// zero). A stack has one per layer: gradient(k).
  Parameters gradient() const {
    static const detail::QualifiedName where(Derived::text.name, "gradient()");
    require_single_layer(where.c_str());
    return gradient(Index(0));
  }
  /// Allocation-free form (one-layer model): writes into @p out (resized if its shapes differ).
  /// After a change of the model's mask that this learner has not followed yet, the entries the
  /// new mask prunes are reported as zero, as after following it.
  void gradient(Parameters& out) const {
    static const detail::QualifiedName where(Derived::text.name, "gradient()");
    require_single_layer(where.c_str());
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
    const Layer& l = at(layer);
    l.layout.scatter(grad_.segment(l.offset, l.layout.columns()), out);
    if (mask_version_ != model_->mask_version() && model_->mask(layer).units() == l.n &&
        model_->mask(layer).inputs() == l.d)
      model_->mask(layer).apply(out);
  }
  /// The accumulated gradient per influence column (size columns(), all layers).
  const Vector& gradient_columns() const { return grad_; }
  void zero_gradient() {
    static const detail::QualifiedName where(Derived::text.name, "zero_gradient()");
    if (layers_.empty()) detail::fail_moved_from(where.c_str());
    grad_.setZero();
  }

  /// c_t of the output layer (of layer k), the carried (pre-reset) state.
  const Vector& state() const { return live_back().state; }
  const Vector& state(Index layer) const { return at(layer).state; }
  /// y_t = o_t c_t of the last step (GRU mode: c_t), of the output layer (of layer k).
  const Vector& output() const { return live_back().cache.y; }
  const Vector& output(Index layer) const { return at(layer).cache.y; }
  /// o_t of the last step.
  const Vector& events() const { return live_back().cache.o; }
  const Vector& events(Index layer) const { return at(layer).cache.o; }
  /// s_t = dy_t/dc_t of the last step.
  const Vector& output_derivative() const { return live_back().cache.s; }
  const Vector& output_derivative(Index layer) const { return at(layer).cache.s; }
  /// Everything the last step computed (gates, local derivatives).
  const EgruStepCache<Scalar>& last_step_cache() const { return live_back().cache; }
  const EgruStepCache<Scalar>& last_step_cache(Index layer) const { return at(layer).cache; }
  Index steps() const { return steps_; }
  /// False only for a state restored so (a checkpoint saved after a failed step): then
  /// accumulate_gradient() throws std::logic_error until the next successful step. A refused
  /// step() changes nothing, this flag included.
  bool last_step_valid() const { return steps_valid_; }

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
    phase_times_ = PhaseTimes{};
  }
  /// Seconds spent per phase since construction or reset_work(), when the learner records them
  /// (RtrlOptions::time_phases); zeros otherwise. Not saved by checkpoints.
  const PhaseTimes& phase_times() const { return phase_times_; }

  // ---- Checkpoints (io/checkpoint.hpp): the whole stream state, replaced all at once. ----

  /// @brief A detached stream state for this learner, laid out for @p masks (one per layer, the
  /// model's n and d): zero influence, gradient, state and counters, for the caller to fill, then
  /// to swap in with restore_state() once the model has those masks. Allocates as much as the
  /// learner's influence; throws std::invalid_argument (masks of other sizes, a reshaped model,
  /// masks a learner with a fixed pattern cannot take) or std::length_error, and changes nothing.
  /// With @p zero_influence false the influence values are left unset instead of zeroed, for a
  /// caller that writes every one of them (StreamState::write_influence), as a checkpoint load does.
  StagedState stage_state(std::vector<ParameterMask> masks, bool zero_influence = true) const {
    static const detail::QualifiedName where_s(Derived::text.name, "stage_state()");
    const char* where = where_s.c_str();
    require_parameter_shapes(where);
    if (masks.size() != layers_.size())
      detail::fail(where, "one mask per layer: " + std::to_string(layers_.size()) + " layers, received " +
                              std::to_string(masks.size()) + " masks");
    for (std::size_t k = 0; k < layers_.size(); ++k)
      if (masks[k].units() != layers_[k].n || masks[k].inputs() != layers_[k].d)
        detail::fail(where, "layer " + std::to_string(k) + ": the mask is for n = " + std::to_string(masks[k].units()) +
                                ", d = " + std::to_string(masks[k].inputs()) + ", the layer has n = " +
                                std::to_string(layers_[k].n) + ", d = " + std::to_string(layers_[k].d));
    StagedState staged;
    staged.name_ = Derived::text.name;
    staged.layers_ = derived().stage_layers(masks, zero_influence);
    staged.grad_.setZero(staged.layers_.back().width);
    staged.layer_last_work.assign(layers_.size(), WorkCounters{});
    staged.layer_total_work.assign(layers_.size(), WorkCounters{});
    staged.masks_ = std::move(masks);
    for (const Layer& l : staged.layers_) staged.written_.push_back(zero_influence ? l.influence_values() : 0);
    return staged;
  }
  /// A copy of this learner's whole stream state (a snapshot; restore_state() of it returns the
  /// learner to this point as long as the model keeps its masks).
  StagedState stage_state() const {
    static const detail::QualifiedName where(Derived::text.name, "stage_state()");
    if (layers_.empty()) detail::fail_moved_from(where.c_str());
    StagedState staged;
    staged.name_ = Derived::text.name;
    staged.layers_ = layers_;
    staged.grad_ = grad_;
    staged.steps = steps_;
    staged.steps_valid = steps_valid_;
    staged.mask_followed = mask_followed();
    staged.last_work = last_;
    staged.total_work = total_;
    staged.layer_last_work = last_layer_;
    staged.layer_total_work = total_layer_;
    for (Index k = 0; k < layers(); ++k) staged.masks_.push_back(layout_mask(k));
    for (const Layer& l : staged.layers_) staged.written_.push_back(l.influence_values());
    return staged;
  }

  /// @brief Replaces this learner's whole stream state by @p staged (from stage_state() of this
  /// learner or of one of the same model's shapes). The model must now have exactly the masks it
  /// was staged for, unless staged.mask_followed is false (a state saved before following a mask
  /// change: the learner then follows the model's masks at its next step, as it would have).
  /// Checks first (std::invalid_argument, the learner unchanged); after the checks nothing can
  /// fail.
  void restore_state(StagedState&& staged) {
    static const detail::QualifiedName where(Derived::text.name, "restore_state()");
    check_restorable(staged, where.c_str());
    commit_state(staged);
  }

  /// The checkpoint entry holding a layer's influence ("influence": Rtrl's n_k x
  /// influence_columns(k) blocks; "kept": Snap's kept entries) and its shape for layer k.
  static const char* influence_entry() { return Layer::influence_entry(); }
  std::vector<Index> influence_shape(Index layer) const { return at(layer).influence_shape(); }
  /// Calls f(values, count) over layer k's influence in checkpoint order, a contiguous segment
  /// at a time (no copy: how a checkpoint streams it to the file).
  template <typename F>
  void for_each_influence_segment(Index layer, F&& f) const {
    at(layer).for_each_influence_segment(std::forward<F>(f));
  }

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

  /// The step in phases, for drivers of many learners over one model (RtrlStreams, the MPI
  /// learners): see StepPhases.
  StepPhases<Derived> phases() { return StepPhases<Derived>(derived()); }
  StepPhases<const Derived> phases() const { return StepPhases<const Derived>(derived()); }

 protected:
  friend class StepPhases<Derived>;
  friend class StepPhases<const Derived>;

  explicit LearnerBase(Model& model) : model_(&model) {}
  LearnerBase(const LearnerBase&) = default;
  LearnerBase(LearnerBase&&) noexcept = default;
  LearnerBase& operator=(const LearnerBase&) = default;
  LearnerBase& operator=(LearnerBase&&) noexcept = default;
  ~LearnerBase() = default;

  Derived& derived() { return static_cast<Derived&>(*this); }
  const Derived& derived() const { return static_cast<const Derived&>(*this); }

  /// Sizes every layer from the model (n, d, mode; zero state and cache) and the counters; the
  /// derived constructor then lays out its influence.
  void shape_layers() {
    const Index L = model_->layers();
    layers_.resize(std::size_t(L));
    for (Index k = 0; k < L; ++k) layers_[std::size_t(k)].shape(model_->units(k), model_->cell(k).inputs(), model_->events(k));
    last_layer_.assign(std::size_t(L), WorkCounters{});
    total_layer_.assign(std::size_t(L), WorkCounters{});
    mask_version_ = model_->mask_version();
  }

  Layer& at(Index layer) { return layers_[std::size_t(check_layer(layer))]; }
  const Layer& at(Index layer) const { return layers_[std::size_t(check_layer(layer))]; }
  const Layer& live_back() const { return detail::live_back(layers_, Derived::text.name); }

  Index check_layer(Index layer) const {
    if (layers_.empty()) detail::fail_moved_from(Derived::text.name);
    if (layer < 0 || layer >= layers())
      throw std::out_of_range(std::string(Derived::text.name) + ": layer must be in [0, " +
                              std::to_string(layers()) + "), received " + std::to_string(layer));
    return layer;
  }
  void require_single_layer(const char* where) const {
    if (layers_.empty()) detail::fail_moved_from(where);
    if (layers() != 1)
      throw std::logic_error(std::string(where) + ": the model is a stack of " + std::to_string(layers()) +
                             " layers: pass the layer (e.g. gradient(k), " + Derived::text.per_layer_example + ")");
  }
  void require_stepped(const char* where) const {
    if (steps_ == 0)
      throw std::logic_error(std::string(where) + ": call step() first: the loss is on y_t of a step");
    if (!steps_valid_)
      throw std::logic_error(std::string(where) + ": the last step() failed; step again first");
  }
  void require_layout_current(const char* where) const {
    if (layers_.empty()) detail::fail_moved_from(where);
    if (!mask_followed())
      throw std::logic_error(std::string(where) +
                             ": the model's masks changed (pruning or Model::set_mask) since this learner laid out "
                             "its columns; " + Derived::text.stale_layout_hint);
  }

  /// prepare_step() of a learner whose pattern is fixed by the masks it was built with (Snap,
  /// TruncatedBptt, Uoro): a mask change since construction is std::logic_error ("... since this
  /// Snap was built; <stale_layout_hint>"), then the shapes are checked.
  void require_masks_unchanged(const char* where) const {
    if (!mask_followed()) {
      const std::string name = Derived::text.name;
      throw std::logic_error(std::string(where) + ": the model's mask changed since this " +
                             name.substr(name.rfind(':') + 1) + " was built; " + Derived::text.stale_layout_hint);
    }
    require_parameter_shapes(where);
  }

  /// The model's parameters may be replaced through cell(): a changed layer count, shape or mode
  /// would make every buffer here the wrong size. O(L) per step.
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

  template <typename G>
  static void require_output_gradient(const char* where, const char* name, const Eigen::MatrixBase<G>& g, Index n) {
    detail::require_vector(where, name, g, n);
    detail::require_finite(where, name, g);
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

  /// The read-out of layer k under the learner's subnormal policy, then the check that the
  /// gradient columns it touched are finite (O(width_k), against the read-out's O(rows width_k)).
  void read_out_checked(const char* where, std::size_t k) {
    {
      detail::SubnormalGuard flush(derived().flush_subnormals());
      read_out_counted(k);
    }
    if (!grad_.head(layers_[k].width).allFinite()) derived().fail_non_finite_gradient(where);
  }

  /// The derived learner's read-out of layer k, its multiply-adds counted against the dense
  /// read-out's n_k x (dense columns of layers 0..k).
  void read_out_counted(std::size_t k) {
    detail::ScopedPhase timed(time_phases_, phase_times_.readout);
    const std::uint64_t fma = derived().read_out(k);
    std::uint64_t dense_width = 0;
    for (std::size_t m = 0; m <= k; ++m) dense_width += std::uint64_t(layers_[m].layout.dense_columns());
    const std::uint64_t dense = std::uint64_t(layers_[k].n) * dense_width;
    for (WorkCounters* w : {&last_, &total_, &last_layer_[k], &total_layer_[k]}) {
      w->readout_fma += fma;
      w->dense_readout_fma += dense;
    }
  }

  // The derived learner's hooks as StepPhases reaches them (the derived learner befriends only
  // its base).
  void prepare_step_of_derived(const char* where) { derived().prepare_step(where); }
  void propagate_step_of_derived() { derived().propagate_step(); }
  template <typename... Args>
  void propagate_of_derived(Args&&... args) {
    derived().propagate(std::forward<Args>(args)...);
  }
  void require_finite_gradient_all(const char* where) const {
    if (!grad_.allFinite()) derived().fail_non_finite_gradient(where);
  }
  template <typename... G>
  void accumulate_top_unchecked(const G&... g) {
    set_output_gradient(layers_.back(), g...);
    read_out_counted(layers_.size() - 1);
  }

  /// Every layer's c_t and local derivatives into its next cache (x already checked), layer k
  /// reading y^{k-1}_t there. Reads the model only and writes nothing else: false when a c_t is
  /// not finite, and then the learner is as before the call (the refused step is invisible).
  template <typename X>
  bool forward(const Eigen::MatrixBase<X>& x) {
    return detail::forward_into_next(layers_, *model_, x, derived().event_sparse_forward());
  }
  /// Makes a successful forward() the last step's cache: swaps of Eigen's buffers, no
  /// allocation, no throw.
  void commit_forward() noexcept {
    detail::commit_next(layers_);
    steps_valid_ = true;
  }
  /// A non-finite parameter (written through the model) shows in c_t: the step is refused before
  /// anything of the learner changes. The full O(P) parameter scan runs only to name the culprit.
  [[noreturn]] void fail_non_finite_state(const char* where) const { detail::fail_non_finite_state(where, *model_); }

  /// The work of layer k's step that does not depend on how a learner propagates: its units,
  /// the units that fired at t - 1, and what dense RTRL would multiply: (n^2 + n) x the dense
  /// columns of layers 0..k, the cross-layer block n_k x n_{k-1} x those of layers 0..k-1
  /// included (and counted apart in dense_cross_layer_fma).
  WorkCounters step_work(std::size_t k) const {
    const Layer& l = layers_[k];
    WorkCounters w;
    w.steps = 1;
    w.units = std::uint64_t(l.n);
    for (Index j = 0; j < l.n; ++j) w.event_units += l.cache.o_prev(j) != Scalar(0);
    std::uint64_t dense_width = 0;
    for (std::size_t m = 0; m <= k; ++m) dense_width += std::uint64_t(layers_[m].layout.dense_columns());
    const std::uint64_t n = std::uint64_t(l.n);
    w.dense_propagation_fma = (n * n + n) * dense_width;
    if (k > 0) {
      w.dense_cross_layer_fma = n * std::uint64_t(layers_[k - 1].n) * (dense_width - std::uint64_t(l.layout.dense_columns()));
      w.dense_propagation_fma += w.dense_cross_layer_fma;
    }
    return w;
  }

  /// After the derived learner's propagation filled last_layer_: c_{t-1} <- c_t in every layer,
  /// the step counted, the work of the step summed over layers and into the totals.
  void finish_step() {
    WorkCounters sum;
    sum.steps = 1;
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      layers_[k].state = layers_[k].cache.c;
      total_layer_[k] += last_layer_[k];
      WorkCounters w = last_layer_[k];
      w.steps = 0;
      sum += w;
    }
    ++steps_;
    last_ = sum;
    total_ += sum;
  }

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
      const std::size_t total = l.influence_values();
      if (k >= staged.written_.size() || staged.written_[k] < total)
        detail::fail(where, "layer " + std::to_string(k) + ": the state was staged with its influence unset and only " +
                                std::to_string(k < staged.written_.size() ? staged.written_[k] : 0) + " of its " +
                                std::to_string(total) + " values were written (write_influence)");
    }
    if (staged.grad_.size() != staged.layers_.back().width)
      detail::fail(where, "the gradient has " + std::to_string(staged.grad_.size()) + " columns, expected " +
                              std::to_string(staged.layers_.back().width));
    if (staged.layer_last_work.size() != layers_.size() || staged.layer_total_work.size() != layers_.size())
      detail::fail(where, "layer_last_work and layer_total_work must have one entry per layer");
    derived().check_staged_layers(staged.layers_, where);
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
    // Not followed: a version the model's counter never reaches, so the next step follows.
    mask_version_ = staged.mask_followed ? model_->mask_version() : ~std::uint64_t(0);
  }

  /// The layers' own stream state is cleared (M = 0); the caller set c_0.
  void restart() {
    derived().clear_influence();
    steps_ = 0;
    steps_valid_ = true;
  }

  Model* model_;
  std::uint64_t mask_version_ = 0;
  std::vector<Layer> layers_;
  Vector grad_;
  Index steps_ = 0;
  bool steps_valid_ = true;
  WorkCounters last_, total_;
  std::vector<WorkCounters> last_layer_, total_layer_;
  bool time_phases_ = false;  ///< set by a derived learner's options
  PhaseTimes phase_times_;
};

/// @brief The step of a learner in phases, for a driver that runs many learners over one model
/// (RtrlStreams: one forward pass per stream on a shared pool, all committed or none; the MPI
/// learners). A named, documented interface instead of friendship: each phase is what step()
/// and accumulate_gradient() do, in that order, without their checks where the driver made them.
/// Obtained from learner.phases(); holds a reference.
template <typename Learner>
class StepPhases {
 public:
  explicit StepPhases(Learner& learner) : l_(&learner) {}
  /// Shapes still the learner's, mask change followed (may allocate; calling thread).
  void prepare(const char* where) { l_->prepare_step_of_derived(where); }
  /// The forward pass into the next caches (x checked by the driver); false: c_t not finite, and
  /// the learner unchanged.
  template <typename X>
  bool forward(const Eigen::MatrixBase<X>& x) {
    return l_->forward(x);
  }
  [[noreturn]] void fail_non_finite_state(const char* where) const { l_->fail_non_finite_state(where); }
  /// Makes the forward pass the last step (no throw).
  void commit_forward() noexcept { l_->commit_forward(); }
  /// M_{t-1} -> M_t after a committed forward pass, on the learner's own threads.
  void propagate() { l_->propagate_step_of_derived(); }
  /// The same on the driver's pool and scratch (Rtrl: Rtrl::propagate(pool, scratch, stride)).
  template <typename... Args>
  void propagate_on(Args&&... args) {
    l_->propagate_of_derived(std::forward<Args>(args)...);
  }
  /// A loss on the output layer, dL/dy (and dL/do) checked by the driver: no finiteness check of
  /// the result either (the driver checks once for all streams).
  template <typename... G>
  void accumulate_output_unchecked(const G&... g) {
    l_->accumulate_top_unchecked(g...);
  }
  void require_stepped(const char* where) const { l_->require_stepped(where); }
  /// The model still has the learner's layer count, shapes and modes (std::invalid_argument).
  void require_parameter_shapes(const char* where) const { l_->require_parameter_shapes(where); }
  /// The whole accumulated gradient finite, else the learner's std::overflow_error naming the
  /// first non-finite influence entry (after accumulate_output_unchecked()).
  void require_finite_gradient(const char* where) const {
    l_->require_finite_gradient_all(where);
  }
  template <typename Staged>
  void check_restorable(const Staged& staged, const char* where) const {
    l_->check_restorable(staged, where);
  }
  template <typename Staged>
  void commit_state(Staged& staged) noexcept {
    l_->commit_state(staged);
  }

 private:
  Learner* l_;
};

}  // namespace sparse_rtrl
