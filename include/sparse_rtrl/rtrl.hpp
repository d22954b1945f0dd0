/// @file rtrl.hpp
/// @brief Exact RTRL for the EGRU with activity- and parameter-sparse influence updates.
///
/// M_t = J_t M_{t-1} + Mbar_t,  J_t = diag(z (1 - theta psi_{t-1})) + A_t diag(s_{t-1})
/// (model.md "RTRL"; Subramoney 2023, Eq. 9). Nothing is approximated: the rows of M_{t-1} with
/// s_{t-1} = 0 are multiplied by zero, so skipping them changes no bit of the product's
/// mathematical value; pruned weights have no column.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/denormals.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/immediate_jacobian.hpp>
#include <sparse_rtrl/detail/influence_storage.hpp>
#include <sparse_rtrl/detail/propagate.hpp>
#include <sparse_rtrl/parallel/thread_pool.hpp>
#include <sparse_rtrl/egru_cell.hpp>
#include <sparse_rtrl/influence_layout.hpp>
#include <sparse_rtrl/model.hpp>
#include <sparse_rtrl/parameter_mask.hpp>
#include <sparse_rtrl/work_counters.hpp>

#include <Eigen/Core>

#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {

template <typename Scalar, typename Surrogate>
class RtrlStreams;

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
/// Usage per step: step(x_t); then, if the step has a loss, accumulate_gradient(dL/dy_t).
/// gradient() returns the sum of all accumulated loss gradients in parameter layout.
/// The learner references a Model (model.hpp) and holds only one stream's state: c, the
/// influence matrix M, the accumulated gradient, counters. Parameters may be changed between
/// steps through the model (online learning); the influence matrix then mixes Jacobians of
/// successive parameter values, as RTRL always does online. Mask changes made on the model
/// (Model::set_mask, pruning) are followed before the next step. For B streams over one model
/// see RtrlStreams (rtrl_streams.hpp).
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

  /// Tracks the kept parameters of @p model's mask. The model is referenced, not copied: it must
  /// outlive this learner and stay at one address (model.hpp).
  explicit Rtrl(Model& model, RtrlOptions options = {})
      : model_(&model), options_(checked(options)), pool_(options_.threads) {
    const Index n = model.units();
    shape_n_ = n;
    shape_d_ = model.inputs();
    events_ = model.events();
    model.enforce_mask();
    cache_.resize(n, shape_d_);
    state_.setZero(n);
    initial_state_.setZero(n);
    dL_dc_.setZero(n);
    theta_direct_.setZero(n);
    c_psi_.setZero(n);
    build(InfluenceLayout(model.mask(), model.events()));
    mask_version_ = model.mask_version();
  }
  /// A temporary model would be destroyed while referenced: refused at compile time.
  Rtrl(Model&& model, RtrlOptions options = {}) = delete;

  Index units() const { return shape_n_; }
  Index inputs() const { return shape_d_; }
  /// The model this learner reads (and an optimizer updates).
  Model& model() { return *model_; }
  const Model& model() const { return *model_; }
  /// The model's cell. Mutable, e.g. for an optimizer: keep the shapes and keep values finite;
  /// step() checks both (a changed shape, or a non-finite value that reaches the state, throws
  /// std::invalid_argument before anything of the learner changes) and re-zeroes masked weights.
  const Cell& cell() const { return model_->cell(); }
  Cell& cell() { return model_->cell(); }
  /// The model's mask.
  const ParameterMask& mask() const { return model_->mask(); }
  const InfluenceLayout& layout() const { return layout_; }
  const RtrlOptions& options() const { return options_; }

  /// @brief Changes which weights exist, at any step (e.g. pruning during training): sets the
  /// model's mask (Model::set_mask) and follows it at once.
  ///
  /// Weights the new mask prunes are set to zero and their columns (influence and accumulated
  /// gradient) dropped; columns kept by both masks are carried over unchanged, so pruning
  /// disturbs nothing else. A revived weight (pruned before, kept now) starts from value zero
  /// with a zero influence column: its gradient is exact for a weight that exists from this
  /// step on, not for one that existed all along. Other learners of the model follow the same
  /// way before their next step (a learner that missed several changes carries over the columns
  /// kept by both its last mask and the current one). Allocates (not for the per-step hot path).
  void set_mask(const ParameterMask& mask) {
    const char* where = "sparse_rtrl::Rtrl::set_mask()";
    require_parameter_shapes(where);
    mask.require_matches(model_->parameters(), where);
    model_->set_mask(mask);
    follow_mask();
  }

  /// Re-lays the influence columns for the model's current mask if it changed since this
  /// learner last looked (step() and accumulate_gradient() do this themselves). Allocates only
  /// when it changed; on a throw (a reshaped model: std::invalid_argument; no memory) the
  /// learner is unchanged.
  void follow_mask() {
    if (mask_version_ == model_->mask_version()) return;
    require_parameter_shapes("sparse_rtrl::Rtrl::follow_mask()");
    InfluenceLayout next(model_->mask(), events_);
    const Index n = units();
    std::vector<Index> new_of_old(std::size_t(layout_.columns()), -1);
    for (Index rr = 0; rr < 3 * n; ++rr) {
      const Index* wk = layout_.w_inputs(rr);
      for (Index e = 0; e < layout_.w_count(rr); ++e)
        new_of_old[std::size_t(layout_.column_of_W(rr, wk[e]))] = next.column_of_W(rr, wk[e]);
      const Index* rj = layout_.r_inputs(rr);
      for (Index e = 0; e < layout_.r_count(rr); ++e)
        new_of_old[std::size_t(layout_.column_of_R(rr, rj[e]))] = next.column_of_R(rr, rj[e]);
      new_of_old[std::size_t(layout_.column_of_bW(rr))] = next.column_of_bW(rr);
      new_of_old[std::size_t(layout_.column_of_bR(rr))] = next.column_of_bR(rr);
    }
    if (layout_.tracks_theta())
      for (Index j = 0; j < n; ++j) new_of_old[std::size_t(layout_.theta_column(j))] = next.theta_column(j);
    detail::InfluenceStorage<Scalar> storage(n, next.columns());
    Vector grad = Vector::Zero(next.columns());
    {
      auto M = storage.map();
      const auto old = M_.map();
      for (Index c = 0; c < layout_.columns(); ++c) {
        const Index to = new_of_old[std::size_t(c)];
        if (to < 0) continue;
        M.col(to) = old.col(c);
        grad(to) = grad_(c);
      }
    }
    build(std::move(next), std::move(storage), std::move(grad));
    mask_version_ = model_->mask_version();
  }

  /// Starts a new sequence from c_0 = 0: clears M and the step's cache. Keeps the gradient.
  void reset() {
    initial_state_.setZero();
    restart();
  }
  /// Starts a new sequence from the given c_0 (size n, finite).
  template <typename C0>
  void reset(const Eigen::MatrixBase<C0>& c0) {
    const char* where = "sparse_rtrl::Rtrl::reset()";
    detail::require_vector(where, "c0", c0, units());
    detail::require_finite(where, "c0", c0);
    for (Index i = 0; i < units(); ++i) initial_state_(i) = c0(i);
    restart();
  }

  /// @brief Advances c_{t-1} -> c_t and M_{t-1} -> M_t for input x_t (size d, finite).
  /// Allocates nothing, except on the first step after a change of the model's mask (the
  /// columns are re-laid, follow_mask()).
  template <typename X>
  void step(const Eigen::MatrixBase<X>& x) {
    const char* where = "sparse_rtrl::Rtrl::step()";
    detail::require_vector(where, "x", x, inputs());
    detail::require_finite(where, "x", x);
    prepare_step(where);
    model_->enforce_mask();
    detail::SubnormalGuard flush(options_.flush_subnormals);
    if (!forward(x)) fail_non_finite_state(where);
    propagate_single();
  }

  /// @brief Adds the gradient of a loss on this step's output, given dL/dy_t (size n, finite):
  /// (dL/dc_t)^T M_t with dL/dc_t = dL/dy_t * s_t, plus theta's direct term -dL/dy_t c_t psi_t.
  /// Reads only rows with dL/dc_t != 0.
  template <typename G>
  void accumulate_gradient(const Eigen::MatrixBase<G>& dL_dy) {
    const char* where = "sparse_rtrl::Rtrl::accumulate_gradient()";
    require_stepped(where);
    require_output_gradient(where, "dL_dy", dL_dy);
    set_output_gradient(dL_dy);
    detail::SubnormalGuard flush(options_.flush_subnormals);
    read_out();
  }

  /// @brief The same for a loss on this step's output and on its events o_t (e.g. an activity
  /// regulariser): dL/dc_t = dL/dy_t s_t + dL/do_t psi_t, and theta's direct term
  /// -(dL/dy_t c_t + dL/do_t) psi_t, since do/dc = psi and do/dtheta = -psi under the surrogate.
  /// In GRU mode the events are constant and dL/do_t contributes nothing.
  template <typename G, typename GO>
  void accumulate_gradient(const Eigen::MatrixBase<G>& dL_dy, const Eigen::MatrixBase<GO>& dL_do) {
    const char* where = "sparse_rtrl::Rtrl::accumulate_gradient()";
    require_stepped(where);
    require_output_gradient(where, "dL_dy", dL_dy);
    require_output_gradient(where, "dL_do", dL_do);
    set_output_gradient(dL_dy, dL_do);
    detail::SubnormalGuard flush(options_.flush_subnormals);
    read_out();
  }

  /// The accumulated gradient, in parameter layout (pruned entries are zero).
  Parameters gradient() const {
    Parameters out(units(), inputs());
    gradient(out);
    return out;
  }
  /// Allocation-free form: writes into @p out (resized if its shapes differ).
  /// After a change of the model's mask that this learner has not followed yet, the entries the
  /// new mask prunes are reported as zero, as after following it.
  void gradient(Parameters& out) const {
    layout_.scatter(grad_, out);
    if (mask_version_ != model_->mask_version() && model_->mask().units() == units() &&
        model_->mask().inputs() == inputs())
      model_->mask().apply(out);
  }
  /// The accumulated gradient per influence column (size P_kept).
  const Vector& gradient_columns() const { return grad_; }
  void zero_gradient() { grad_.setZero(); }

  /// c_t, the carried (pre-reset) state.
  const Vector& state() const { return state_; }
  /// y_t = o_t c_t of the last step (GRU mode: c_t).
  const Vector& output() const { return cache_.y; }
  /// o_t of the last step.
  const Vector& events() const { return cache_.o; }
  /// s_t = dy_t/dc_t of the last step.
  const Vector& output_derivative() const { return cache_.s; }
  /// Everything the last step computed (gates, local derivatives).
  const EgruStepCache<Scalar>& last_step_cache() const { return cache_; }
  Index steps() const { return steps_; }

  /// M_t, n x P_kept, columns as layout() describes (a view: rows are padded in memory).
  typename detail::InfluenceStorage<Scalar>::ConstMap influence() const { return M_.map(); }
  /// Bytes of the influence matrix M (n x P_kept scalars).
  std::size_t influence_bytes() const { return M_.value_bytes(); }
  /// Bytes of the kernel's cache-sized scratch (one per thread).
  std::size_t scratch_bytes() const { return sizeof(Scalar) * scratch_.size(); }
  /// Threads the step uses (RtrlOptions::threads).
  int threads() const { return pool_.threads(); }

  const WorkCounters& last_step_work() const { return last_; }
  const WorkCounters& total_work() const { return total_; }
  void reset_work() { total_ = WorkCounters{}; }

 private:
  // ---- The step in phases (RtrlStreams runs them for B streams on a shared pool). ----

  /// Checks that the model still has this learner's shapes and mode and follows a mask change.
  /// Runs on the calling thread (it may allocate, on a mask change). The caller then runs
  /// Model::enforce_mask() once (it writes to the model when a pruned weight was written).
  void prepare_step(const char* where) {
    require_parameter_shapes(where);
    follow_mask();
  }

  /// c_t and the step's local derivatives into cache_ (x already checked). Reads the model only.
  /// False, with nothing but cache_ changed, when c_t is not finite.
  template <typename X>
  bool forward(const Eigen::MatrixBase<X>& x) {
    model_->cell().forward(state_, x, cache_, /*event_sparse=*/options_.skip_silent_rows);
    steps_valid_ = cache_.c.allFinite();
    return steps_valid_;
  }

  /// A non-finite parameter (written through the model) shows in c_t: the step is refused before
  /// M or the state change. O(n) per step; the full O(P) parameter scan runs only to name the
  /// culprit.
  [[noreturn]] void fail_non_finite_state(const char* where) const {
    model_->parameters().validate(where);
    detail::fail(where, "the state c_t became non-finite (inputs and parameters are finite: the "
                        "parameters are too large?)");
  }

  /// M_{t-1} -> M_t and c_{t-1} -> c_t after a successful forward(), the product's columns split
  /// over @p pool's threads (scratch: pool.threads() * scratch_stride scalars).
  void propagate(parallel::ThreadPool& pool, Scalar* scratch, Index scratch_stride) {
    const Index n = units();
    const Index P = layout_.columns();
    WorkCounters w;
    w.steps = 1;
    w.units = std::uint64_t(n);
    for (Index j = 0; j < n; ++j) w.event_units += cache_.o_prev(j) != Scalar(0);

    build_coupling();
    w.active_rows = std::uint64_t(coupling_.active_count);
    w.coupling_nonzeros = std::uint64_t(coupling_.nnz());
    if (!options_.skip_silent_rows) {
      w.active_rows = 0;
      for (Index j = 0; j < n; ++j) w.active_rows += cache_.s_prev(j) != Scalar(0);
    }

    // J_t M_{t-1}: the dominant product (model.md "RTRL").
    detail::propagate_in_place(M_.data(), n, P, M_.stride(), cache_.decay.data(), coupling_, scratch,
                               scratch_stride, pool, options_.flush_subnormals);
    add_immediate_jacobian();

    const std::uint64_t Pd = std::uint64_t(layout_.dense_columns());
    w.propagation_fma = std::uint64_t(coupling_.nnz() + n) * std::uint64_t(P);
    w.dense_propagation_fma = std::uint64_t(n) * std::uint64_t(n) * Pd + std::uint64_t(n) * Pd;
    state_ = cache_.c;
    ++steps_;
    last_ = w;
    total_ += w;
  }

  static RtrlOptions checked(RtrlOptions options) {
    if (options.threads < 1)
      detail::fail("sparse_rtrl::Rtrl::Rtrl()",
                   "options.threads must be >= 1, received " + std::to_string(options.threads));
    return options;
  }

  void build(InfluenceLayout layout) {
    const Index n = units();
    const Index columns = layout.columns();
    build(std::move(layout), detail::InfluenceStorage<Scalar>(n, columns), Vector::Zero(columns));
  }
  /// Installs a new layout with its M and gradient: everything that can throw (allocations)
  /// happens before the first member changes, so a throw leaves the learner as it was.
  void build(InfluenceLayout layout, detail::InfluenceStorage<Scalar> storage, Vector grad) {
    const Index n = units();
    detail::Coupling<Scalar> coupling;
    coupling.reserve(n, layout.coupling_nonzeros());
    std::vector<Scalar> a_values(std::size_t(layout.coupling_nonzeros()));
    std::vector<Index> position(std::size_t(n), -1);
    const Index scratch_stride = detail::propagation_scratch_size<Scalar>(n);
    std::vector<Scalar> scratch(std::size_t(pool_.threads()) * std::size_t(scratch_stride));
    // No-throw from here on: moves of vectors, Eigen matrices and the storage.
    layout_ = std::move(layout);
    M_ = std::move(storage);
    grad_ = std::move(grad);
    coupling_ = std::move(coupling);
    a_values_ = std::move(a_values);
    position_ = std::move(position);
    scratch_stride_ = scratch_stride;
    scratch_ = std::move(scratch);
  }

  /// The cell's parameters may be replaced through cell(): a changed shape would make every
  /// buffer here the wrong size. O(1) per step.
  void require_parameter_shapes(const char* where) const {
    if (model_->events() != events_)
      detail::fail(where, std::string("the model's cell changed mode since construction: it was built in ") +
                              (events_ ? "events" : "GRU") + " mode, the model's cell is now in " +
                              (events_ ? "GRU" : "events") + " mode (construct a new learner)");
    const auto& p = model_->parameters();
    const Index n = shape_n_, d = shape_d_;
    if (p.W.rows() != 3 * n || p.W.cols() != d || p.R.rows() != 3 * n || p.R.cols() != n ||
        p.bW.size() != 3 * n || p.bR.size() != 3 * n || p.theta.size() != n) {
      std::ostringstream s;
      s << "the cell's parameters changed shape since construction (through cell()): expected W "
        << detail::shape_string(3 * n, d) << ", R " << detail::shape_string(3 * n, n) << ", bW, bR "
        << 3 * n << ", theta " << n << "; received W " << detail::shape_string(p.W.rows(), p.W.cols())
        << ", R " << detail::shape_string(p.R.rows(), p.R.cols()) << ", bW " << p.bW.size() << ", bR "
        << p.bR.size() << ", theta " << p.theta.size();
      detail::fail(where, s.str());
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
  void set_output_gradient(const Eigen::MatrixBase<G>& dL_dy) {
    for (Index i = 0; i < units(); ++i) {
      dL_dc_(i) = dL_dy(i) * cache_.s(i);
      theta_direct_(i) = -dL_dy(i) * cache_.c(i) * cache_.psi(i);
    }
  }
  /// With a loss on the events too: do/dc = psi and do/dtheta = -psi under the surrogate.
  template <typename G, typename GO>
  void set_output_gradient(const Eigen::MatrixBase<G>& dL_dy, const Eigen::MatrixBase<GO>& dL_do) {
    for (Index i = 0; i < units(); ++i) {
      dL_dc_(i) = dL_dy(i) * cache_.s(i) + dL_do(i) * cache_.psi(i);
      theta_direct_(i) = -(dL_dy(i) * cache_.c(i) + dL_do(i)) * cache_.psi(i);
    }
  }

  /// propagate() on this learner's own threads and scratch.
  void propagate_single() { propagate(pool_, scratch_.data(), scratch_stride_); }

  template <typename G>
  void require_output_gradient(const char* where, const char* name, const Eigen::MatrixBase<G>& g) const {
    detail::require_vector(where, name, g, units());
    detail::require_finite(where, name, g);
  }

  /// gradient += (dL/dc_t)^T M_t over rows with dL/dc_t != 0, plus theta's direct term.
  void read_out() {
    const Index n = units();
    std::uint64_t fma = 0;
    const auto M = M_.map();
    for (Index i = 0; i < n; ++i) {
      const Scalar gi = dL_dc_(i);
      if (gi == Scalar(0)) continue;
      grad_.noalias() += gi * M.row(i).transpose();
      fma += std::uint64_t(layout_.columns());
    }
    if (layout_.tracks_theta())
      for (Index j = 0; j < n; ++j) grad_(layout_.theta_column(j)) += theta_direct_(j);
    last_.readout_fma += fma;
    total_.readout_fma += fma;
    const std::uint64_t dense = std::uint64_t(n) * std::uint64_t(layout_.dense_columns());
    last_.dense_readout_fma += dense;
    total_.dense_readout_fma += dense;
  }

  void restart() {
    state_ = initial_state_;
    M_.set_zero();
    steps_ = 0;
    steps_valid_ = true;
  }

  /// A_t on R's pattern (detail::coupling_entry), and the compressed coupling A_t diag(s_{t-1}) over active source rows.
  void build_coupling() {
    const Index n = units();
    const auto& R = model_->parameters().R;
    const auto& ptr = layout_.coupling_row_ptr();
    const auto& cols = layout_.coupling_cols();
    Index k = 0;
    for (Index j = 0; j < n; ++j) {
      const bool active = !options_.skip_silent_rows || cache_.s_prev(j) != Scalar(0);
      position_[std::size_t(j)] = active ? k : -1;
      if (active) coupling_.active[std::size_t(k++)] = j;
      c_psi_(j) = cache_.c_prev(j) * cache_.psi_prev(j);
    }
    coupling_.active_count = k;
    Index e = 0;
    for (Index i = 0; i < n; ++i) {
      coupling_.row_ptr[std::size_t(i)] = e;
      for (Index p = ptr[std::size_t(i)]; p < ptr[std::size_t(i + 1)]; ++p) {
        const Index j = cols[std::size_t(p)];
        const Scalar a = detail::coupling_entry(R, cache_, n, i, j);
        a_values_[std::size_t(p)] = a;
        const Index pos = position_[std::size_t(j)];
        if (pos >= 0) {
          // Only silent rows are skipped, not coefficients that happen to vanish (saturated
          // gates): the work then depends on activity and pattern alone, as documented.
          coupling_.source[std::size_t(e)] = pos;
          coupling_.coef[std::size_t(e)] = a * cache_.s_prev(j);
          ++e;
        }
      }
    }
    coupling_.row_ptr[std::size_t(n)] = e;
  }

  /// M_t += Mbar_t: the immediate Jacobian at fixed c_{t-1}. Each weight feeding unit i has one
  /// nonzero, in row i, inside unit i's contiguous column range; recurrent weights from silent
  /// presynaptic units (y_{t-1, j} = 0) contribute nothing and are skipped.
  void add_immediate_jacobian() {
    const Index n = units();
    for (Index i = 0; i < n; ++i)
      detail::add_unit_immediate_jacobian(layout_, cache_, i, M_.data() + i * M_.stride() + layout_.unit_begin(i));
    if (!layout_.tracks_theta()) return;
    // Thresholds act through h_{t-1} (the diagonal) and y_{t-1} (dy/dtheta = -c psi, spread by
    // A_t's column).
    const auto& ptr = layout_.coupling_row_ptr();
    const auto& cols = layout_.coupling_cols();
    const auto& theta = model_->parameters().theta;
    for (Index i = 0; i < n; ++i) {
      Scalar* row = M_.data() + i * M_.stride();
      row[layout_.theta_column(i)] += detail::threshold_reset_entry(cache_, theta, i);
      for (Index p = ptr[std::size_t(i)]; p < ptr[std::size_t(i + 1)]; ++p) {
        const Index j = cols[std::size_t(p)];
        if (c_psi_(j) != Scalar(0)) row[layout_.theta_column(j)] -= a_values_[std::size_t(p)] * c_psi_(j);
      }
    }
  }

  template <typename, typename>
  friend class RtrlStreams;

  Model* model_;
  RtrlOptions options_;
  parallel::ThreadPool pool_;
  std::uint64_t mask_version_ = 0;
  InfluenceLayout layout_;
  EgruStepCache<Scalar> cache_;
  Vector state_, initial_state_, dL_dc_, theta_direct_, c_psi_;
  detail::InfluenceStorage<Scalar> M_;
  Vector grad_;
  detail::Coupling<Scalar> coupling_;
  std::vector<Scalar> a_values_;
  std::vector<Index> position_;
  std::vector<Scalar> scratch_;
  Index scratch_stride_ = 0;
  Index shape_n_ = 0, shape_d_ = 0;
  bool events_ = true;
  Index steps_ = 0;
  bool steps_valid_ = true;
  WorkCounters last_, total_;
};

}  // namespace sparse_rtrl
