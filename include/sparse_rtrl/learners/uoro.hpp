/// @file uoro.hpp
/// @brief UORO (Tallec and Ollivier 2017, "Unbiased Online Recurrent Optimization",
///        arXiv:1702.05043) for EGRUs and stacks of them: an unbiased rank-one estimate of the
///        influence matrix, O(n + P) memory and O(kept R and W entries of active units + P) work per step.
///
/// The influence M_t = J_t M_{t-1} + Mbar_t (model.md "RTRL") is carried as s~ theta~^T with
/// s~ of size n (the state) and theta~ of size P_kept (the kept parameters' columns), updated
/// each step with nu a fresh vector of random signs:
///   s~ <- rho0 J_t s~ + rho1 nu,   theta~ <- theta~ / rho0 + (nu^T Mbar_t) / rho1,
/// so that E[s~ theta~^T] = J_t E[s~ theta~^T] + Mbar_t (E[nu nu^T] = I; the cross terms are
/// odd in nu, and rho1 is even in it). The normalisers minimise the variance of the estimate
/// (Tallec and Ollivier, Prop. 1), each with a guard eps (UoroOptions::epsilon) that keeps them
/// finite and positive when a norm vanishes (the first step, where s~ = theta~ = 0; silent
/// units):
///   rho0 = sqrt((|theta~| + eps) / (|J_t s~| + eps)),   rho1 = sqrt((|nu^T Mbar_t| + eps) / (|nu| + eps)).
/// The gradient of a loss on c_t: (dL/dc_t . s~) theta~, plus theta's direct term (exact), as
/// every learner reads it out.
///
/// The pieces are Rtrl's (detail/immediate_jacobian.hpp): J_t s~ = decay s~ + A_t (s_{t-1} s~)
/// with A_t = coupling_entry() on R's pattern; nu^T Mbar_t by add_unit_immediate_jacobian()
/// scaled by nu_i (ScaledRow, exact for +-1) and the threshold terms threshold_reset_entry() and
/// -A_t c_{t-1} psi_{t-1}. Nothing n x P is ever formed.
///
/// Stacks: the state is the concatenation of every layer's c_t and the step's Jacobians are the
/// whole stack's, including the same-step path through the layers (layer k reads y^{k-1}_t):
///   (J s~)^k = J^k s~^k + B^k (s^{k-1}_t (J s~)^{k-1})                      (bottom up)
///   lambda^{L-1} = nu^{L-1},  lambda^{k-1} = nu^{k-1} + s^{k-1}_t (B^{k T} lambda^k)   (top down)
///   (nu^T Mbar)^m = lambda^m^T Mbar^m  - c^m_t psi^m_t (B^{m+1 T} lambda^{m+1}) on theta^m
/// with B^k = dc^k_t/dy^{k-1}_t on W^k's pattern (Rtrl's build_cross). Norms are over the whole
/// concatenated vectors (one rho0, one rho1 per step). A loss on layer k reads theta~ over the
/// columns of layers 0..k only (the exact influence on the layers above is zero: reading their
/// columns would add noise of mean zero).
///
/// The signs come from detail::SignRandom seeded by UoroOptions::seed; its state is part of the
/// stream state (stage_state()/restore_state() and checkpoints restore it: a resumed run draws
/// the same signs). reset() clears s~ and theta~ and keeps drawing from the same generator.
/// Mask changes after construction are refused (std::logic_error): construct a new Uoro.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/immediate_jacobian.hpp>
#include <sparse_rtrl/detail/learner_state.hpp>
#include <sparse_rtrl/detail/random.hpp>
#include <sparse_rtrl/learners/learner_base.hpp>
#include <sparse_rtrl/learners/work_counters.hpp>
#include <sparse_rtrl/model/egru_cell.hpp>
#include <sparse_rtrl/model/influence_layout.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {

/// @brief Options of UORO.
struct UoroOptions {
  std::uint64_t seed = 0;  ///< the sign generator's initial state
  /// Guard of the normalisers rho0, rho1 (> 0, finite): added to each norm of their ratios.
  double epsilon = 1e-7;
};

namespace detail {

/// One layer of a Uoro learner: the shared part (LearnerLayer), its parts s~^k (n_k) and
/// theta~^k (its own kept columns) of the rank-one pair, the step's vectors, W's connection
/// pattern (k > 0) and, in layer 0, the sign generator's state.
template <typename Scalar>
struct UoroLayer : LearnerLayer<Scalar> {
  using Vector = typename LearnerLayer<Scalar>::Vector;
  Vector s_tilde, theta_tilde;
  Vector nu, js, lambda, from_above, sum_a, nu_mbar;
  std::vector<Scalar> a_values;  ///< A_t on R's pattern, this step
  std::vector<Index> input_row_ptr, input_cols;
  std::uint64_t sign_state = 0;

  // The pair as a checkpoint stores it (StreamState): s~ then theta~, one vector.
  static const char* influence_entry() { return "uoro"; }
  std::vector<Index> influence_shape() const { return {s_tilde.size() + theta_tilde.size()}; }
  std::size_t influence_values() const { return std::size_t(s_tilde.size() + theta_tilde.size()); }
  template <typename F>
  void for_each_influence_segment(F&& f) const {
    f(s_tilde.data(), s_tilde.size());
    f(theta_tilde.data(), theta_tilde.size());
  }
  void write_influence(std::size_t first, const Scalar* values, std::size_t count) {
    std::size_t at = 0;
    for (Vector* v : {&s_tilde, &theta_tilde}) {
      const std::size_t begin = at, end = at + std::size_t(v->size());
      at = end;
      const std::size_t lo = std::max(begin, first), hi = std::min(end, first + count);
      if (lo < hi) std::copy(values + (lo - first), values + (hi - first), v->data() + (lo - begin));
    }
  }
};

}  // namespace detail

/// @brief UORO (see uoro.hpp): the common learner interface (step, accumulate_gradient,
/// gradient, reset, zero_gradient, stacks, masks, events and GRU mode, checkpoints) with the
/// rank-one estimate s~ theta~^T in place of the influence matrix.
/// @tparam Scalar float or double.
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class Uoro : public LearnerBase<Uoro<Scalar, Surrogate>, Scalar, Surrogate, detail::UoroLayer<Scalar>> {
  using Base = LearnerBase<Uoro<Scalar, Surrogate>, Scalar, Surrogate, detail::UoroLayer<Scalar>>;
  using Layer = detail::UoroLayer<Scalar>;

 public:
  using typename Base::Model;
  using typename Base::Vector;

  /// UORO of @p model (referenced: it must outlive the learner and stay at one address). An
  /// epsilon that is not finite and > 0 throws std::invalid_argument.
  explicit Uoro(Model& model, UoroOptions options = {}) : Base(model), options_(checked(options)) {
    model.enforce_mask();
    this->shape_layers();
    std::vector<ParameterMask> masks;
    for (Index k = 0; k < model.layers(); ++k) masks.push_back(model.mask(k));
    this->layers_ = stage_layers(masks, true);
    this->layers_[0].sign_state = options_.seed;
    this->grad_.setZero(this->layers_.back().width);
  }
  /// A temporary model would be destroyed while referenced: refused at compile time.
  Uoro(Model&& model, UoroOptions options = {}) = delete;

  const UoroOptions& options() const { return options_; }
  /// s~ of layer k (its n_k entries of the state factor).
  const Vector& state_factor(Index layer) const { return this->at(layer).s_tilde; }
  /// theta~ over layer k's own columns (column_offset(k) + [0, layout(k).columns())).
  const Vector& parameter_factor(Index layer) const { return this->at(layer).theta_tilde; }
  /// The sign generator's state (what the next step draws from).
  std::uint64_t sign_state() const {
    if (this->layers_.empty()) detail::fail_moved_from("sparse_rtrl::Uoro::sign_state()");
    return this->layers_[0].sign_state;
  }
  /// Sets the sign generator's state (a checkpoint load does; or to reseed).
  void set_sign_state(std::uint64_t state) {
    if (this->layers_.empty()) detail::fail_moved_from("sparse_rtrl::Uoro::set_sign_state()");
    this->layers_[0].sign_state = state;
  }
  /// Bytes of the rank-one pair over all layers ((n + P_kept) scalars): the state this learner
  /// keeps beyond c_t and the gradient.
  std::size_t state_bytes() const {
    std::size_t bytes = 0;
    for (const Layer& l : this->layers_) bytes += l.influence_values() * sizeof(Scalar);
    return bytes;
  }

 private:
  friend Base;
  static constexpr LearnerText text{"sparse_rtrl::Uoro", "gradient(k)",
                                    "UORO does not follow mask changes: construct a new Uoro"};

  static UoroOptions checked(UoroOptions o) {
    if (!(std::isfinite(o.epsilon) && o.epsilon > 0))
      detail::fail("sparse_rtrl::Uoro::Uoro()",
                   "options.epsilon must be finite and > 0, received " + std::to_string(o.epsilon));
    return o;
  }

  // ---- LearnerBase's hooks (learner_base.hpp). ----
  static bool event_sparse_forward() { return true; }  // exact: R y_{t-1} over units with events
  static bool flush_subnormals() { return false; }
  void prepare_step(const char* where) { this->require_masks_unchanged(where); }

  /// The rank-one update of the committed step (uoro.hpp), then c_{t-1} <- c_t and the counters.
  void propagate_step() {
    const std::size_t L = this->layers_.size();
    detail::SignRandom signs(this->layers_[0].sign_state);
    for (Layer& l : this->layers_) signs.fill_signs(l.nu.data(), l.n);
    this->layers_[0].sign_state = signs.state();
    // J s~, bottom up (the same-step path through the layers below included).
    for (std::size_t k = 0; k < L; ++k) {
      Layer& l = this->layers_[k];
      const auto& c = l.cache;
      const auto& R = this->model_->parameters(Index(k)).R;
      const Index n = l.n;
      const auto& ptr = l.layout.coupling_row_ptr();
      const auto& cols = l.layout.coupling_cols();
      WorkCounters w = this->step_work(k);
      for (Index i = 0; i < n; ++i) {
        Scalar sum = c.decay(i) * l.s_tilde(i);
        for (Index e = ptr[std::size_t(i)]; e < ptr[std::size_t(i + 1)]; ++e) {
          const Index j = cols[std::size_t(e)];
          // A_ij is used times s_{t-1, j} (here) and c_{t-1, j} psi_{t-1, j} (nu^T Mbar's theta
          // term), both zero for s_{t-1, j} = 0 (s = o + c psi): skipped, exactly, as Rtrl does.
          if (c.s_prev(j) == Scalar(0)) continue;
          const Scalar a = detail::coupling_entry(R, c, n, i, j);
          l.a_values[std::size_t(e)] = a;
          sum += a * (c.s_prev(j) * l.s_tilde(j));
        }
        l.js(i) = sum;
      }
      w.coupling_nonzeros = std::uint64_t(l.layout.coupling_nonzeros());
      w.propagation_fma = std::uint64_t(l.layout.coupling_nonzeros() + n);
      for (Index j = 0; j < n; ++j) w.active_rows += c.s_prev(j) != Scalar(0);
      if (k > 0) {
        const Layer& below = this->layers_[k - 1];
        const auto& W = this->model_->parameters(Index(k)).W;
        for (Index i = 0; i < n; ++i) {
          Scalar sum = 0;
          for (Index e = l.input_row_ptr[std::size_t(i)]; e < l.input_row_ptr[std::size_t(i + 1)]; ++e) {
            const Index j = l.input_cols[std::size_t(e)];
            if (below.cache.s(j) == Scalar(0)) continue;
            sum += cross_entry(c, W, n, i, j) * (below.cache.s(j) * below.js(j));
          }
          l.js(i) += sum;
        }
        w.cross_layer_fma = 2 * std::uint64_t(l.input_cols.size());
        w.propagation_fma += w.cross_layer_fma;
      }
      this->last_layer_[k] = w;
    }
    // nu^T Mbar, top down: lambda^k = nu^k + s^k (what the layer above sends down).
    for (std::size_t kk = L; kk-- > 0;) {
      Layer& l = this->layers_[kk];
      const auto& c = l.cache;
      const auto& theta = this->model_->parameters(Index(kk)).theta;
      const Index n = l.n;
      const InfluenceLayout& layout = l.layout;
      const bool tracks = layout.tracks_theta();
      const bool above = kk + 1 < L;
      l.nu_mbar.setZero();
      l.lambda = l.nu;
      if (above) {
        l.lambda += c.s.cwiseProduct(l.from_above);
        if (tracks)
          for (Index j = 0; j < n; ++j) l.nu_mbar(layout.theta_column(j)) -= c.c(j) * c.psi(j) * l.from_above(j);
      }
      l.sum_a.setZero();
      const auto& ptr = layout.coupling_row_ptr();
      const auto& cols = layout.coupling_cols();
      for (Index i = 0; i < n; ++i) {
        const Scalar li = l.lambda(i);
        if (li == Scalar(0)) continue;
        detail::add_unit_immediate_jacobian(layout, c, i, detail::ScaledRow<Scalar>{l.nu_mbar.data(), li},
                                            layout.unit_begin(i));
        if (tracks) l.nu_mbar(layout.theta_column(i)) += li * detail::threshold_reset_entry(c, theta, i);
        for (Index e = ptr[std::size_t(i)]; e < ptr[std::size_t(i + 1)]; ++e) {
          const Index j = cols[std::size_t(e)];
          if (c.s_prev(j) != Scalar(0)) l.sum_a(j) += l.a_values[std::size_t(e)] * li;  // else c psi = 0
        }
      }
      if (tracks)
        for (Index j = 0; j < n; ++j) l.nu_mbar(layout.theta_column(j)) -= c.c_prev(j) * c.psi_prev(j) * l.sum_a(j);
      this->last_layer_[kk].propagation_fma += std::uint64_t(layout.columns() + layout.coupling_nonzeros());
      if (kk > 0) {
        Layer& below = this->layers_[kk - 1];
        const auto& W = this->model_->parameters(Index(kk)).W;
        below.from_above.setZero();
        for (Index i = 0; i < n; ++i)
          for (Index e = l.input_row_ptr[std::size_t(i)]; e < l.input_row_ptr[std::size_t(i + 1)]; ++e) {
            const Index j = l.input_cols[std::size_t(e)];
            // used times s^{k-1}_t and c psi below: both zero where s^{k-1}_t = 0
            if (below.cache.s(j) != Scalar(0)) below.from_above(j) += cross_entry(c, W, n, i, j) * l.lambda(i);
          }
        this->last_layer_[kk].cross_layer_fma += 2 * std::uint64_t(l.input_cols.size());
        this->last_layer_[kk].propagation_fma += 2 * std::uint64_t(l.input_cols.size());
      }
    }
    // The variance-minimising normalisers over the whole stack's vectors, then the update.
    Scalar js2 = 0, theta2 = 0, mbar2 = 0, nu2 = 0;
    for (const Layer& l : this->layers_) {
      js2 += l.js.squaredNorm();
      theta2 += l.theta_tilde.squaredNorm();
      mbar2 += l.nu_mbar.squaredNorm();
      nu2 += Scalar(l.n);
    }
    const Scalar eps = Scalar(options_.epsilon);
    const Scalar rho0 = std::sqrt((std::sqrt(theta2) + eps) / (std::sqrt(js2) + eps));
    const Scalar rho1 = std::sqrt((std::sqrt(mbar2) + eps) / (std::sqrt(nu2) + eps));
    for (Layer& l : this->layers_) {
      l.s_tilde = rho0 * l.js + rho1 * l.nu;
      l.theta_tilde = l.theta_tilde / rho0 + l.nu_mbar / rho1;
    }
    this->finish_step();
  }

  /// B^k_t[i, j] = dc^k_i/dy^{k-1}_j: the input enters every gate's pre-activation a = W x + bW.
  template <typename WMatrix>
  static Scalar cross_entry(const EgruStepCache<Scalar>& c, const WMatrix& W, Index n, Index i, Index j) {
    return c.dc_da(i) * W(i, j) + c.dc_da(n + i) * W(n + i, j) + c.dc_da(2 * n + i) * W(2 * n + i, j);
  }

  /// gradient[0 : width_k) += (dL/dc^k . s~^k) theta~ over the columns of layers 0..k, plus
  /// theta^k's direct term. Returns its multiply-adds.
  std::uint64_t read_out(std::size_t k) {
    Layer& l = this->layers_[k];
    const Scalar coef = l.dL_dc.dot(l.s_tilde);
    for (std::size_t m = 0; m <= k; ++m) {
      const Layer& o = this->layers_[m];
      this->grad_.segment(o.offset, o.theta_tilde.size()) += coef * o.theta_tilde;
    }
    if (l.layout.tracks_theta())
      for (Index j = 0; j < l.n; ++j) this->grad_(l.offset + l.layout.theta_column(j)) += l.theta_direct(j);
    return std::uint64_t(l.n + l.width);
  }
  [[noreturn]] void fail_non_finite_gradient(const char* where) const {
    throw std::overflow_error(std::string(where) +
                              ": the accumulated gradient is not finite (the loss gradients or the states were too "
                              "large; keep theta >= 0 with clamp_thresholds()): call zero_gradient() and reset()");
  }
  void clear_influence() {
    for (Layer& l : this->layers_) {
      l.s_tilde.setZero();
      l.theta_tilde.setZero();
    }
  }
  std::vector<Layer> stage_layers(const std::vector<ParameterMask>& masks, bool) const {
    std::vector<Layer> staged(this->layers_.size());
    Index offset = 0;
    for (std::size_t k = 0; k < staged.size(); ++k) {
      Layer& l = staged[k];
      const Index n = this->layers_[k].n;
      l.shape(n, this->layers_[k].d, this->layers_[k].events);
      l.layout = InfluenceLayout(masks[k], l.events);
      l.offset = offset;
      offset += l.layout.columns();
      l.width = offset;
      const Index P = l.layout.columns();
      l.s_tilde.setZero(n);
      l.theta_tilde.setZero(P);
      for (auto* v : {&l.nu, &l.js, &l.lambda, &l.from_above, &l.sum_a}) v->setZero(n);
      l.nu_mbar.setZero(P);
      l.a_values.assign(std::size_t(l.layout.coupling_nonzeros()), Scalar(0));
      if (k > 0) detail::connection_pattern(masks[k].W(), n, l.input_row_ptr, l.input_cols);
    }
    if (!staged.empty()) staged[0].sign_state = this->layers_.empty() ? 0 : this->layers_[0].sign_state;
    return staged;
  }
  void check_staged_layers(const std::vector<Layer>&, const char*) const {}

  UoroOptions options_;
};

}  // namespace sparse_rtrl
