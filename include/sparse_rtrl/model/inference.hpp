/// @file inference.hpp
/// @brief Checked, allocation-free evaluation of a cell: predictions without learning (a test
///        set, a validation pass, a deployed model), with no influence matrix and no history.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/model/egru_cell.hpp>
#include <sparse_rtrl/model/model.hpp>

#include <Eigen/Core>

#include <string>

namespace sparse_rtrl {

/// @brief Options of Inference.
struct InferenceOptions {
  /// Compute R y_{t-1} from the columns of units with events only (EgruCell::forward's
  /// event_sparse): the same values bit for bit, less work when most units are silent.
  bool event_sparse = true;
};

/// @brief Runs a cell forward, one checked step at a time, keeping only the current state.
///
/// Inference REFERENCES the cell it is given, it does not copy it:
///  - the cell must outlive the Inference and stay at the same address (the cell of a Model,
///    `Inference<float> eval(model);`, lives as long as that Model: do not move the Model while
///    the Inference is in use). Binding to a temporary cell or model does not compile.
///  - every step() reads the cell's current parameters, so updates made to the referenced cell
///    (an optimizer step on the model) are followed at the next step().
///  - the cell's sizes are fixed at construction: if its parameters are later reshaped (n, d,
///    or any one of the five tensors), step() and reset() throw std::invalid_argument instead
///    of reading out of bounds. Construct a new Inference for the new sizes.
///  - step() only reads the cell: several Inference objects may run on one cell from several
///    threads, as long as nothing writes to the cell meanwhile.
///
/// Conventions as the learners: step(x) checks x (size d, finite) and allocates nothing; bad
/// input throws std::invalid_argument naming the function and leaves the object unchanged.
/// @tparam Scalar float or double.
/// @tparam Surrogate the cell's surrogate policy (the surrogate does not change the forward
///         pass; it is part of the cell's type).
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class Inference {
 public:
  using Cell = EgruCell<Scalar, Surrogate>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  /// Starts from c_0 = 0. Throws std::invalid_argument if the cell's five parameter shapes do
  /// not agree (a cell whose parameters were reshaped through parameters()).
  explicit Inference(const Cell& cell, InferenceOptions options = {})
      : cell_(&cell), options_(options), n_(cell.units()), d_(cell.inputs()) {
    require_cell("sparse_rtrl::Inference::Inference()");
    cache_.resize(n_, d_);
    cache_.set_zero();
    state_.setZero(n_);
    initial_state_.setZero(n_);
    restart();
  }
  /// A temporary cell would be destroyed while referenced: refused at compile time.
  Inference(const Cell&& cell, InferenceOptions options = {}) = delete;
  /// Runs @p model's cell (referenced, as above): `Inference<float> eval(model);`.
  explicit Inference(const Model<Scalar, Surrogate>& model, InferenceOptions options = {})
      : Inference(model.cell(), options) {}
  Inference(const Model<Scalar, Surrogate>&& model, InferenceOptions options = {}) = delete;

  /// The referenced cell.
  const Cell& cell() const { return *cell_; }
  const InferenceOptions& options() const { return options_; }
  /// Sizes fixed at construction.
  Index units() const { return n_; }
  Index inputs() const { return d_; }

  /// Starts a new sequence from c_0 = 0.
  void reset() {
    require_cell("sparse_rtrl::Inference::reset()");
    initial_state_.setZero();
    restart();
  }
  /// Starts a new sequence from the given c_0 (a vector of size n, finite).
  template <typename C0>
  void reset(const Eigen::MatrixBase<C0>& c0) {
    const char* where = "sparse_rtrl::Inference::reset()";
    require_cell(where);
    detail::require_vector(where, "c0", c0, n_);
    detail::require_finite(where, "c0", c0);
    for (Index i = 0; i < n_; ++i) initial_state_(i) = c0(i);
    restart();
  }

  /// @brief Advances c_{t-1} -> c_t for input x_t (a row or column vector of size d, finite)
  /// with the referenced cell's current parameters. Allocates nothing.
  template <typename X>
  void step(const Eigen::MatrixBase<X>& x) {
    const char* where = "sparse_rtrl::Inference::step()";
    require_cell(where);
    detail::require_vector(where, "x", x, d_);
    detail::require_finite(where, "x", x);
    cell_->forward(state_, x, cache_, options_.event_sparse);
    state_ = cache_.c;
    ++steps_;
  }

  /// y_t = o_t c_t of the current state (GRU mode: c_t); after reset(), y_0 of c_0.
  const Vector& output() const { return cache_.y; }
  /// o_t = H(c_t - theta) of the current state (GRU mode: ones).
  const Vector& events() const { return cache_.o; }
  /// s_t = dy_t/dc_t of the current state (zero where a unit is silent and outside the
  /// surrogate's window: the rows sparse RTRL skips).
  const Vector& output_derivative() const { return cache_.s; }
  /// c_t, the carried (pre-reset) state.
  const Vector& state() const { return state_; }
  /// Steps since the last reset().
  Index steps() const { return steps_; }
  /// Everything the last step computed (gates, local derivatives); zero before the first
  /// step, except the event quantities of c_0 (c, o, y, psi, s).
  const EgruStepCache<Scalar>& last_step_cache() const { return cache_; }

 private:
  void require_cell(const char* where) const {
    const auto& p = cell_->parameters();
    if (!p.has_shape(n_, d_))
      detail::fail(where, "the referenced cell's parameters must keep the shapes they had at construction, "
                          "n = " + std::to_string(n_) + ", d = " + std::to_string(d_) +
                          ", received " + p.shape_string() + " (construct a new Inference for new sizes)");
  }

  /// state = c_0; the event quantities of c_0, so output() and events() describe the state.
  void restart() {
    state_ = initial_state_;
    cache_.c = state_;
    cell_->event_quantities(cache_.c, cache_.o, cache_.y, cache_.psi, cache_.s);
    steps_ = 0;
  }

  const Cell* cell_;
  InferenceOptions options_;
  Index n_, d_;
  EgruStepCache<Scalar> cache_;
  Vector state_, initial_state_;
  Index steps_ = 0;
};

}  // namespace sparse_rtrl
