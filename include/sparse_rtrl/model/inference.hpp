/// @file inference.hpp
/// @brief Checked, allocation-free evaluation of a cell or a stack: predictions without learning (a test
///        set, a validation pass, a deployed model), with no influence matrix and no history.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/model/egru_cell.hpp>
#include <sparse_rtrl/model/model.hpp>

#include <Eigen/Core>

#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {

/// @brief Options of Inference.
struct InferenceOptions {
  /// Compute R y_{t-1} from the columns of units with events only (EgruCell::forward's
  /// event_sparse): the same values bit for bit, less work when most units are silent.
  bool event_sparse = true;
};

/// @brief Runs a cell, or every layer of a Model bottom up, forward one checked step at a time,
/// keeping only the current state.
///
/// Inference REFERENCES the cells it is given, it does not copy them:
///  - the cell (or Model) must outlive the Inference and stay at the same address
///    (`Inference<float> eval(model);` lives as long as that Model: do not move the Model while
///    the Inference is in use). Binding to a temporary cell or model does not compile.
///  - every step() reads the cells' current parameters, so updates made to them (an optimizer
///    step on the model) are followed at the next step().
///  - the sizes are fixed at construction: if parameters are later reshaped (n, d, or any one
///    of the five tensors), step() and reset() throw std::invalid_argument instead of reading
///    out of bounds. Construct a new Inference for the new sizes.
///  - step() only reads the cells: several Inference objects may run on one model from several
///    threads, as long as nothing writes to the model meanwhile.
///
/// A stack (model.hpp, "Stacked layers"): layer k reads the output y^{k-1}_t of the layer below
/// at the same step, as in the learners; output() is the top layer's, output(k) layer k's.
///
/// Conventions as the learners: step(x) checks x (size d, finite) and allocates nothing; bad
/// input throws std::invalid_argument naming the function and leaves the object unchanged, and
/// so does a non-finite parameter of a referenced cell (named in the message).
/// @tparam Scalar float or double.
/// @tparam Surrogate the cells' surrogate policy (the surrogate does not change the forward
///         pass; it is part of the cell's type).
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class Inference {
 public:
  using Cell = EgruCell<Scalar, Surrogate>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  /// One layer; starts from c_0 = 0. Throws std::invalid_argument if the cell's five parameter
  /// shapes do not agree (a cell whose parameters were reshaped through parameters()).
  explicit Inference(const Cell& cell, InferenceOptions options = {}) : options_(options) {
    add_layer(cell);
    finish_construction();
  }
  /// A temporary cell would be destroyed while referenced: refused at compile time.
  Inference(const Cell&& cell, InferenceOptions options = {}) = delete;
  /// Runs every layer of @p model (referenced, as above): `Inference<float> eval(model);`.
  explicit Inference(const Model<Scalar, Surrogate>& model, InferenceOptions options = {}) : options_(options) {
    for (Index k = 0; k < model.layers(); ++k) add_layer(model.cell(k));
    finish_construction();
  }
  Inference(const Model<Scalar, Surrogate>&& model, InferenceOptions options = {}) = delete;

  /// Layers run (1 for a cell).
  Index layers() const { return Index(layers_.size()); }
  /// The referenced cell of layer @p layer (the only one for a cell).
  const Cell& cell(Index layer = 0) const { return *at(layer).cell; }
  const InferenceOptions& options() const { return options_; }
  /// Sizes fixed at construction: units() of the top layer, inputs() of layer 0.
  Index units() const { return detail::live_back(layers_, "sparse_rtrl::Inference").n; }
  Index units(Index layer) const { return at(layer).n; }
  Index inputs() const { return detail::live_front(layers_, "sparse_rtrl::Inference").d; }

  /// Starts a new sequence from c_0 = 0 in every layer.
  void reset() {
    require_cells("sparse_rtrl::Inference::reset()");
    for (auto& l : layers_) l.initial_state.setZero();
    restart();
  }
  /// Starts a new sequence of a one-layer Inference from the given c_0 (size n, finite). A stack
  /// throws std::logic_error (one c_0 per layer would be needed).
  template <typename C0>
  void reset(const Eigen::MatrixBase<C0>& c0) {
    const char* where = "sparse_rtrl::Inference::reset()";
    if (layers() != 1)
      throw std::logic_error(std::string(where) + ": an initial state is for one-layer models; this Inference runs " +
                             std::to_string(layers()) + " layers (use reset())");
    require_cells(where);
    Layer& l = layers_.front();
    detail::require_vector(where, "c0", c0, l.n);
    detail::require_finite(where, "c0", c0);
    for (Index i = 0; i < l.n; ++i) l.initial_state(i) = c0(i);
    restart();
  }

  /// @brief Advances every layer's c_{t-1} -> c_t for input x_t (a row or column vector of
  /// size d, finite) with the referenced cells' current parameters. Allocates nothing.
  template <typename X>
  void step(const Eigen::MatrixBase<X>& x) {
    const char* where = "sparse_rtrl::Inference::step()";
    require_cells(where);
    detail::require_vector(where, "x", x, inputs());
    detail::require_finite(where, "x", x);
    // Into the next caches, committed only when every c_t is finite: a non-finite parameter
    // (written through the model) throws, naming it, with the Inference unchanged.
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      Layer& l = layers_[k];
      if (k == 0)
        l.cell->forward(l.state, x, l.next, options_.event_sparse);
      else
        l.cell->forward(l.state, layers_[k - 1].next.y, l.next, options_.event_sparse);
      if (!l.next.c.allFinite()) {
        for (const Layer& m : layers_) m.cell->parameters().validate(where);
        detail::fail(where, "the state c_t became non-finite (inputs and parameters are finite: the "
                            "parameters are too large?)");
      }
    }
    for (Layer& l : layers_) {
      std::swap(l.cache, l.next);
      l.state = l.cache.c;
    }
    ++steps_;
  }

  /// y_t = o_t c_t of the top layer's current state (GRU mode: c_t); after reset(), y_0 of c_0.
  const Vector& output() const { return detail::live_back(layers_, "sparse_rtrl::Inference").cache.y; }
  const Vector& output(Index layer) const { return at(layer).cache.y; }
  /// o_t = H(c_t - theta) of the current state (GRU mode: ones).
  const Vector& events() const { return detail::live_back(layers_, "sparse_rtrl::Inference").cache.o; }
  const Vector& events(Index layer) const { return at(layer).cache.o; }
  /// s_t = dy_t/dc_t of the current state (zero where a unit is silent and outside the
  /// surrogate's window: the rows sparse RTRL skips).
  const Vector& output_derivative() const { return detail::live_back(layers_, "sparse_rtrl::Inference").cache.s; }
  const Vector& output_derivative(Index layer) const { return at(layer).cache.s; }
  /// c_t, the carried (pre-reset) state.
  const Vector& state() const { return detail::live_back(layers_, "sparse_rtrl::Inference").state; }
  const Vector& state(Index layer) const { return at(layer).state; }
  /// Steps since the last reset().
  Index steps() const { return steps_; }
  /// Everything the last step of layer @p layer (default: the top) computed (gates, local
  /// derivatives); zero before the first step, except the event quantities of c_0 (c, o, y,
  /// psi, s).
  const EgruStepCache<Scalar>& last_step_cache() const { return detail::live_back(layers_, "sparse_rtrl::Inference").cache; }
  const EgruStepCache<Scalar>& last_step_cache(Index layer) const { return at(layer).cache; }

 private:
  struct Layer {
    const Cell* cell;
    Index n, d;
    EgruStepCache<Scalar> cache;
    EgruStepCache<Scalar> next;  ///< the step being computed, swapped in on success
    Vector state, initial_state;
  };

  void add_layer(const Cell& cell) {
    Layer l;
    l.cell = &cell;
    l.n = cell.units();
    l.d = cell.inputs();
    if (!layers_.empty() && l.d != layers_.back().n)
      detail::fail("sparse_rtrl::Inference::Inference()",
                   "layer " + std::to_string(layers_.size()) + " must read the " + std::to_string(layers_.back().n) +
                       " outputs of the layer below, but it has " + std::to_string(l.d) + " inputs");
    layers_.push_back(std::move(l));
  }

  void finish_construction() {
    require_cells("sparse_rtrl::Inference::Inference()");
    for (auto& l : layers_) {
      l.cache.resize(l.n, l.d);
      l.cache.set_zero();
      l.next.resize(l.n, l.d);
      l.state.setZero(l.n);
      l.initial_state.setZero(l.n);
    }
    restart();
  }

  const Layer& at(Index layer) const {
    if (layers_.empty()) detail::fail_moved_from("sparse_rtrl::Inference");
    if (layer < 0 || layer >= layers())
      throw std::out_of_range("sparse_rtrl::Inference: layer must be in [0, " + std::to_string(layers()) + "), got " +
                              std::to_string(layer));
    return layers_[std::size_t(layer)];
  }

  void require_cells(const char* where) const {
    if (layers_.empty()) detail::fail_moved_from(where);
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const Layer& l = layers_[k];
      const auto& p = l.cell->parameters();
      if (!p.has_shape(l.n, l.d))
        detail::fail(where, "the referenced cell's parameters" +
                                (layers_.size() > 1 ? " (layer " + std::to_string(k) + ")" : std::string()) +
                                " must keep the shapes they had at construction, n = " + std::to_string(l.n) +
                                ", d = " + std::to_string(l.d) + ", received " + p.shape_string() +
                                " (construct a new Inference for new sizes)");
    }
  }

  /// state = c_0; the event quantities of c_0, so output() and events() describe the state.
  void restart() {
    for (auto& l : layers_) {
      l.state = l.initial_state;
      l.cache.c = l.state;
      l.cell->event_quantities(l.cache.c, l.cache.o, l.cache.y, l.cache.psi, l.cache.s);
    }
    steps_ = 0;
  }

  std::vector<Layer> layers_;
  InferenceOptions options_;
  Index steps_ = 0;
};

}  // namespace sparse_rtrl
