/// @file truncated_bptt.hpp
/// @brief Truncated back-propagation through time as an online learner of EGRUs and stacks of
///        them: the last k steps' caches in a ring buffer, each loss back-propagated through at
///        most k steps, in either of the two usual forms.
///
/// Forms (TruncatedBpttOptions::form):
///  * every_step (TBPTT(k, 1)): accumulate_gradient(dL/dy_t) back-propagates that loss at once
///    through the steps t - k + 1 .. t (fewer after a reset) and adds it to the gradient: a
///    gradient at every step, each through the last k steps.
///  * every_k_steps (TBPTT(k, k)): the steps since reset() form blocks of k; the losses of a block
///    are kept (as dL/dc_t) and back-propagated together, through the block only, at the block's
///    last accumulate_gradient() (block_complete() is then true: update the parameters). Losses
///    of a block whose last step had none are back-propagated at the start of the next step();
///    flush() back-propagates an unfinished block's losses now (a sequence's shorter last block),
///    and reset() does so before it clears the window.
/// With k >= T both equal BPTT of the sequence (form every_k_steps after flush()).
///
/// The window's first state c_{t-k} is a constant (the truncation): its thresholds still act
/// through o_{t-k} = H(c_{t-k} - theta), as Bptt from a given c_0 has it.
///
/// Why it is built on LearnerBase (learner_base.hpp) and not a class of its own around Bptt:
/// what an online learner shares is all here: the model, the per-layer state and step cache, the
/// forward step with its checks (transactional, events mode, masks, stacks), the read-out front
/// ends (dL/dy, dL/do -> dL/dc_t and theta's direct term), gradient() in the learners' column
/// layout, counters, stage_state()/restore_state() and checkpoints through the one LearnerItem.
/// Its "influence" is its window: per layer, the k step caches and the losses not yet
/// back-propagated (checkpoint entry "window", k x (d + 29 n), slot by slot); its read_out() is
/// the backward pass through the window. That pass is not Bptt's code: it is the adjoint of the
/// RTRL step (model.md "RTRL"), in the same quantities as Rtrl's pieces (detail/immediate_jacobian.hpp):
///   delta_t = dL/dc_t (this step's loss) + J_{t+1}^T delta_{t+1} (+ the layer above, same step),
///   gradient += delta_t^T Mbar_t,   J_t = diag(decay_t) + A_t diag(s_{t-1}),
/// where delta^T Mbar_t is e_a x_t^T, e_q y_{t-1}^T, e_a, e_q on W, R, bW, bR (e_a = delta dc/da,
/// e_q = delta dc/dq: the entries add_unit_immediate_jacobian() writes, times delta) plus the
/// threshold terms threshold_reset_entry() and -A_t c_{t-1} psi_{t-1}, and A_t^T delta = R^T e_q
/// (coupling_entry() summed over i); between layers dL/dy^{k-1}_t = B^{k T} delta^k_t = W^{k T} e_a.
/// Columns of silent units (x = 0, y_{t-1} = 0, s_{t-1} = 0) are skipped, exactly. A pass sums its
/// gradient in a dense scratch per layer and adds it to the learners' kept columns once at its
/// end; its cost per step back is that of one event-sparse BPTT step, plus per pass a fixed
/// O(3n (n + d) + P_kept) to add the scratch to the columns and zero it (what dominates k = 1),
/// and the tests can hold it against Bptt as an independent implementation (it never calls Bptt).
///
/// The backward pass uses the model's parameters at the time it runs (the window's caches hold
/// the activations of the steps as they ran), as Bptt::backward() does; with parameters updated
/// inside the window that is the usual online approximation. Mask changes after construction
/// are refused (std::logic_error): construct a new learner.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/immediate_jacobian.hpp>
#include <sparse_rtrl/detail/learner_state.hpp>
#include <sparse_rtrl/learners/learner_base.hpp>
#include <sparse_rtrl/learners/work_counters.hpp>
#include <sparse_rtrl/model/egru_cell.hpp>
#include <sparse_rtrl/model/influence_layout.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {

/// @brief When truncated BPTT back-propagates (see truncated_bptt.hpp).
enum class TruncationForm {
  every_step,     ///< each loss at once through the last k steps
  every_k_steps,  ///< a block's losses together at the block's end, through the block
};

/// @brief Options of truncated BPTT.
struct TruncatedBpttOptions {
  Index k = 1;  ///< steps back-propagated through (>= 1): the window, or the block length
  TruncationForm form = TruncationForm::every_step;
};

namespace detail {

/// One layer of a TruncatedBptt: the shared part (LearnerLayer), the window of the last k step
/// caches (step t in slot (t - 1) mod k), the losses not yet back-propagated, the backward
/// pass's vectors and W's connection pattern (for dL/dy of the layer below).
template <typename Scalar>
struct TbpttLayer : LearnerLayer<Scalar> {
  using Vector = typename LearnerLayer<Scalar>::Vector;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  std::vector<EgruStepCache<Scalar>> ring;
  Matrix pending_dc, pending_theta;  ///< n x k: dL/dc_t and theta's direct term, per slot
  Vector delta, carry, from_above, e_a, e_q, columns;
  EgruParameters<Scalar> g;  ///< the backward pass's gradient, dense, added to the columns at its end

  void shape_window(Index k) {
    ring.resize(std::size_t(k));
    for (auto& c : ring) {
      c.resize(this->n, this->d);
      c.set_zero();
    }
    pending_dc.setZero(this->n, k);
    pending_theta.setZero(this->n, k);
    delta.setZero(this->n);
    carry.setZero(this->n);
    from_above.setZero(this->n);
    e_a.setZero(3 * this->n);
    e_q.setZero(3 * this->n);
    columns.setZero(this->layout.columns());
    g = EgruParameters<Scalar>(this->n, this->d);
  }
  bool has_pending() const {
    return (pending_dc.array() != Scalar(0)).any() || (pending_theta.array() != Scalar(0)).any();
  }

  // The window as a checkpoint stores it (StreamState): k slots of d + 29 n values each, the 20
  // cache fields in cache_field_list() order, then the slot's pending dL/dc and theta term.
  static const char* influence_entry() { return "window"; }
  Index slot_values() const { return this->d + 29 * this->n; }
  std::vector<Index> influence_shape() const { return {Index(ring.size()), slot_values()}; }
  std::size_t influence_values() const { return ring.size() * std::size_t(slot_values()); }
  template <typename F>
  void for_each_influence_segment(F&& f) const {
    for (std::size_t s = 0; s < ring.size(); ++s) {
      for (const auto& field : cache_field_list(ring[s])) f(field.second->data(), field.second->size());
      f(pending_dc.col(Index(s)).data(), this->n);
      f(pending_theta.col(Index(s)).data(), this->n);
    }
  }
  void write_influence(std::size_t first, const Scalar* values, std::size_t count) {
    std::size_t at = 0;
    const TbpttLayer& self = *this;
    self.for_each_influence_segment([&](const Scalar* v, Index size) {
      const std::size_t begin = at, end = at + std::size_t(size);
      at = end;
      const std::size_t lo = std::max(begin, first), hi = std::min(end, first + count);
      // The segments are this layer's own buffers, seen through the const traversal.
      if (lo < hi) std::copy(values + (lo - first), values + (hi - first), const_cast<Scalar*>(v) + (lo - begin));
    });
  }
};

}  // namespace detail

/// @brief Truncated BPTT (see truncated_bptt.hpp): the common learner interface (step,
/// accumulate_gradient, gradient, reset, zero_gradient, stacks, masks, events and GRU mode,
/// checkpoints), with the backward pass through the last k steps in place of an influence.
/// @tparam Scalar float or double.
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class TruncatedBptt
    : public LearnerBase<TruncatedBptt<Scalar, Surrogate>, Scalar, Surrogate, detail::TbpttLayer<Scalar>> {
  using Base = LearnerBase<TruncatedBptt<Scalar, Surrogate>, Scalar, Surrogate, detail::TbpttLayer<Scalar>>;
  using Layer = detail::TbpttLayer<Scalar>;

 public:
  using typename Base::Model;
  using typename Base::Vector;

  /// Truncated BPTT of @p model (referenced: it must outlive the learner and stay at one address)
  /// through options.k steps. k < 1 throws std::invalid_argument.
  explicit TruncatedBptt(Model& model, TruncatedBpttOptions options = {}) : Base(model), options_(checked(options)) {
    model.enforce_mask();
    this->shape_layers();
    double bytes = 0;
    for (const Layer& l : this->layers_) bytes += double(options_.k) * double(l.d + 29 * l.n) * sizeof(Scalar);
    detail::require_memory("sparse_rtrl::TruncatedBptt::TruncatedBptt()", "the window of step caches", bytes,
                           "k = " + std::to_string(options_.k), "use a shorter window k");
    std::vector<ParameterMask> masks;
    for (Index k = 0; k < model.layers(); ++k) masks.push_back(model.mask(k));
    this->layers_ = stage_layers(masks, true);
    this->grad_.setZero(this->layers_.back().width);
  }
  /// A temporary model would be destroyed while referenced: refused at compile time.
  TruncatedBptt(Model&& model, TruncatedBpttOptions options = {}) = delete;

  const TruncatedBpttOptions& options() const { return options_; }
  /// The window (form every_step) or block (form every_k_steps) length k.
  Index window() const { return options_.k; }
  /// Form every_k_steps: true after the last step of a block (steps() a multiple of k), whose
  /// losses the block's last accumulate_gradient() back-propagated: the moment to update.
  bool block_complete() const { return this->steps_ > 0 && this->steps_ % options_.k == 0; }
  /// Form every_k_steps: back-propagates the losses kept since the block began, now, through the
  /// steps of the block so far (e.g. at the end of a sequence). Nothing to do in form every_step.
  void flush() {
    static const detail::QualifiedName where(text.name, "flush()");
    if (this->layers_.empty()) detail::fail_moved_from(where.c_str());
    if (!has_pending()) return;
    backward(block_length(), this->layers() - 1);
    if (!this->grad_.allFinite()) fail_non_finite_gradient(where.c_str());
  }
  /// Bytes of the window over all layers (k step caches and k pending losses per layer): the
  /// state this learner keeps beyond c_t and the gradient.
  std::size_t window_bytes() const {
    std::size_t bytes = 0;
    for (const Layer& l : this->layers_) bytes += l.influence_values() * sizeof(Scalar);
    return bytes;
  }

 private:
  friend Base;
  static constexpr LearnerText text{"sparse_rtrl::TruncatedBptt", "gradient(k)",
                                    "truncated BPTT does not follow mask changes: construct a new TruncatedBptt"};

  static TruncatedBpttOptions checked(TruncatedBpttOptions o) {
    if (o.k < 1)
      detail::fail("sparse_rtrl::TruncatedBptt::TruncatedBptt()",
                   "options.k (the steps back-propagated through) must be >= 1, received " + std::to_string(o.k));
    if (o.form != TruncationForm::every_step && o.form != TruncationForm::every_k_steps)
      detail::fail("sparse_rtrl::TruncatedBptt::TruncatedBptt()",
                   "options.form must be TruncationForm::every_step or every_k_steps, received " +
                       std::to_string(int(o.form)));
    return o;
  }

  // ---- LearnerBase's hooks (learner_base.hpp). ----
  static bool event_sparse_forward() { return true; }  // exact: R y_{t-1} over units with events
  static bool flush_subnormals() { return false; }
  void prepare_step(const char* where) { this->require_masks_unchanged(where); }
  /// The committed step's caches into the window (a block's losses still kept from a finished
  /// block back-propagated first, before their slots are reused).
  void propagate_step() {
    if (options_.form == TruncationForm::every_k_steps && block_complete() && has_pending())
      backward(options_.k, this->layers() - 1);
    const std::size_t slot = std::size_t(this->steps_ % options_.k);
    for (std::size_t k = 0; k < this->layers_.size(); ++k) {
      Layer& l = this->layers_[k];
      l.ring[slot] = l.cache;  // same sizes: no allocation
      this->last_layer_[k] = this->step_work(k);
    }
    this->finish_step();
  }
  /// This step's loss on layer k (dL_dc, theta_direct) into the window; back-propagated at once
  /// (every_step) or at the block's end (every_k_steps). Returns the backward multiply-adds.
  std::uint64_t read_out(std::size_t k) {
    Layer& l = this->layers_[k];
    const Index slot = (this->steps_ - 1) % options_.k;
    l.pending_dc.col(slot) += l.dL_dc;
    l.pending_theta.col(slot) += l.theta_direct;
    if (options_.form == TruncationForm::every_step)
      return backward(std::min<Index>(options_.k, this->steps_), Index(k));
    return block_complete() ? backward(options_.k, this->layers() - 1) : 0;
  }
  [[noreturn]] void fail_non_finite_gradient(const char* where) const {
    throw std::overflow_error(std::string(where) +
                              ": the accumulated gradient is not finite (the loss gradients or the states were too "
                              "large; keep theta >= 0 with clamp_thresholds()): call zero_gradient() and reset()");
  }
  /// reset(): an unfinished block's losses are back-propagated first (the sequence ended), then
  /// the window is forgotten (the slots are rewritten from the next step on).
  void clear_influence() {
    if (has_pending()) backward(block_length(), this->layers() - 1);
  }
  std::vector<Layer> stage_layers(const std::vector<ParameterMask>& masks, bool) const {
    std::vector<Layer> staged(this->layers_.size());
    Index offset = 0;
    for (std::size_t k = 0; k < staged.size(); ++k) {
      Layer& l = staged[k];
      l.shape(this->layers_[k].n, this->layers_[k].d, this->layers_[k].events);
      l.layout = InfluenceLayout(masks[k], l.events);
      l.offset = offset;
      offset += l.layout.columns();
      l.width = offset;
      l.shape_window(options_.k);
    }
    return staged;
  }
  void check_staged_layers(const std::vector<Layer>&, const char*) const {}

  bool has_pending() const {
    for (const Layer& l : this->layers_)
      if (l.has_pending()) return true;
    return false;
  }
  /// Steps of the current block so far (every_k_steps), k when it just ended.
  Index block_length() const {
    const Index r = this->steps_ % options_.k;
    return r == 0 ? std::min(options_.k, this->steps_) : r;
  }

  /// @brief Back-propagates every pending loss of layers 0..top through the last @p len steps
  /// (newest first; within a step from layer top down) into the gradient, and clears them.
  /// Each layer's part is summed in its dense scratch and added to its kept columns once, at the
  /// end. Returns its multiply-adds.
  std::uint64_t backward(Index len, Index top) {
    std::uint64_t fma = 0;
    for (Index m = 0; m <= top; ++m) this->layers_[std::size_t(m)].carry.setZero();
    for (Index t = this->steps_; t > this->steps_ - len; --t) {
      const Index slot = (t - 1) % options_.k;
      for (Index m = top; m >= 0; --m) fma += backward_step(std::size_t(m), slot, m < top);
    }
    for (Index m = 0; m <= top; ++m) {
      Layer& l = this->layers_[std::size_t(m)];
      l.layout.gather(l.g, l.columns);
      this->grad_.segment(l.offset, l.columns.size()) += l.columns;
      l.g.set_zero();
      fma += std::uint64_t(l.columns.size());
    }
    return fma;
  }

  /// One layer at one step of the backward pass: delta = dL/dc_t; its gradient delta^T Mbar_t,
  /// i.e. e_a x^T, e_q y_{t-1}^T, e_a, e_q on W, R, bW, bR (e_a = delta dc/da, e_q = delta dc/dq)
  /// and the threshold terms; the carry J_t^T delta to step t - 1 ((A_t^T delta)_j = R_{:, j} .
  /// e_q); and (layer k > 0) dL/dy^{k-1}_t = B^T delta = W^T e_a for the layer below.
  std::uint64_t backward_step(std::size_t m, Index slot, bool has_above) {
    Layer& l = this->layers_[m];
    const EgruStepCache<Scalar>& c = l.ring[std::size_t(slot)];
    const auto& p = this->model_->parameters(Index(m));
    const Index n = l.n, d = l.d;
    const bool theta = l.layout.tracks_theta();
    std::uint64_t fma = 0;
    l.delta = l.pending_dc.col(slot) + l.carry;
    if (has_above) l.delta += l.from_above.cwiseProduct(c.s);
    if (theta) {
      // y_t's direct dependence on theta (dy/dtheta = -c psi): this step's loss, the layer above.
      l.g.theta += l.pending_theta.col(slot);
      if (has_above) l.g.theta -= c.c.cwiseProduct(c.psi).cwiseProduct(l.from_above);
    }
    l.pending_dc.col(slot).setZero();
    l.pending_theta.col(slot).setZero();
    Layer* below = m > 0 ? &this->layers_[m - 1] : nullptr;
    if (l.delta.isZero(0)) {  // nothing reaches this step (exact: every term is a multiple of delta)
      l.carry.setZero();
      if (below) below->from_above.setZero();
      return 0;
    }
    for (int gate = 0; gate < 3; ++gate) {
      l.e_a.segment(gate * n, n) = l.delta.cwiseProduct(c.dc_da.segment(gate * n, n));
      l.e_q.segment(gate * n, n) = l.delta.cwiseProduct(c.dc_dq.segment(gate * n, n));
    }
    l.g.bW += l.e_a;
    l.g.bR += l.e_q;
    const std::uint64_t n3 = 3 * std::uint64_t(n);
    for (Index j = 0; j < d; ++j)
      if (c.x(j) != Scalar(0)) {  // an input of zero (a silent unit below) adds nothing
        l.g.W.col(j) += l.e_a * c.x(j);
        fma += n3;
      }
    for (Index j = 0; j < n; ++j) {
      const Scalar y = c.y_prev(j);
      if (y != Scalar(0)) {  // silent presynaptic unit: a zero column of y^T
        l.g.R.col(j) += l.e_q * y;
        fma += n3;
      }
      // (A^T delta)_j is used multiplied by s_{t-1, j} and by c_{t-1, j} psi_{t-1, j}, both zero
      // for a unit with s_{t-1, j} = 0 (s = o + c psi): not computed there (as Bptt's `needed`).
      Scalar at_delta = 0;
      if (c.s_prev(j) != Scalar(0)) {
        at_delta = p.R.col(j).dot(l.e_q);
        fma += n3;
      }
      l.carry(j) = c.decay(j) * l.delta(j) + c.s_prev(j) * at_delta;
      // theta_j through h_{t-1} (threshold_reset_entry) and through y_{t-1} (-A_t c psi).
      if (theta)
        l.g.theta(j) += l.delta(j) * detail::threshold_reset_entry(c, p.theta, j) - c.c_prev(j) * c.psi_prev(j) * at_delta;
    }
    if (below) {
      const auto& below_s = below->ring[std::size_t(slot)].s;
      for (Index j = 0; j < d; ++j) {
        // used times s^{k-1}_t and c psi below: both zero where s^{k-1}_t = 0
        below->from_above(j) = below_s(j) != Scalar(0) ? p.W.col(j).dot(l.e_a) : Scalar(0);
        fma += below_s(j) != Scalar(0) ? n3 : 0;
      }
    }
    return fma;
  }

  TruncatedBpttOptions options_;
};

}  // namespace sparse_rtrl
