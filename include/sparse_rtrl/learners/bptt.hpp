/// @file bptt.hpp
/// @brief Back-propagation through time over a stored sequence: the reference every RTRL
///        gradient must equal (same cells, same surrogates), for one layer or a stack of L.
///
/// Backward recursion of one layer (model.md conventions), with carry_y = dL/dy_t and
/// carry_h = dL/dh_t arriving from step t+1:
///   dL/dc_t = (G_t + carry_y) s_t + carry_h (1 - theta psi_t)
///   dL/dtheta += -(G_t + carry_y) c_t psi_t + carry_h (theta psi_t - o_t)
///   e_a = dL/dc_t * dc_t/da, e_q = dL/dc_t * dc_t/dq;  gW += e_a x_t^T, gR += e_q y_{t-1}^T
///   carry_y <- R^T e_q,  carry_h <- dL/dc_t z_t
/// In GRU mode y = h = c, so dL/dc_t = G_t + carry_y + carry_h.
///
/// Stacks (model.md, "Stacked layers"): layer k's input x^k_t is y^{k-1}_t, the event output of
/// layer k - 1 at the same step (layer 0 reads x_t). The backward pass runs layer by layer from
/// the top down, each over the whole sequence: layer k's dL/dy_t is its own loss G^k_t plus the
/// input gradient of layer k + 1, dL/dx^{k+1}_t = W^{k+1 T} e_a (a = W x + bW holds the input of
/// every gate, also of g, whose a_g enters outside the reset gate: a_g + r (R_g y + bR_g)).
/// One layer is the same code with no layer above and none below.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/model/egru_cell.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sparse_rtrl {

/// @brief Options of BPTT.
struct BpttOptions {
  /// Exploit events (exact): the forward product R y_{t-1} reads only columns of units with
  /// events, the weight gradient's outer product only those columns, and dL/dy_{t-1} = R^T e_q
  /// is computed only for units with s_{t-1} != 0 (or c psi != 0), the others being multiplied
  /// by zero. In a stack the same holds between layers: a layer reading an events-mode layer
  /// adds to gW only the columns of inputs with events and computes the input gradient
  /// W^T e_a only for the lower layer's units with s_t != 0 (or c_t psi_t != 0).
  /// false: dense BPTT.
  bool exploit_events = false;
};

/// @brief Multiply-adds of BPTT's matrix products, per run (forward + backward), summed over
/// the layers of a stack.
struct BpttWork {
  std::uint64_t steps = 0;  ///< sequence steps T (not multiplied by the number of layers)
  std::uint64_t forward_fma = 0, dense_forward_fma = 0;    ///< R y_{t-1} and W x_t (W x_t always dense)
  /// gW, gR outer products, R^T e_q and, for layers above the first, the input gradient W^T e_a
  std::uint64_t backward_fma = 0, dense_backward_fma = 0;
};

/// @brief BPTT for the EGRU, one layer or a stack. forward() stores the sequence's caches of
/// every layer; backward() returns dL/dparams for a loss given as dL/dy_t at every step (rows of
/// zeros where a step has no loss): one gradient for one layer, one per layer for a stack.
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class Bptt {
 public:
  using Cell = EgruCell<Scalar, Surrogate>;
  using Parameters = EgruParameters<Scalar>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  using Model = sparse_rtrl::Model<Scalar, Surrogate>;

  /// BPTT of @p model, referenced (not copied: it must outlive this learner and stay at one
  /// address, model.hpp). Pruned weights of the model's masks are zero in every forward() and
  /// their gradient entries are reported as zero (a pruned weight has no gradient).
  explicit Bptt(Model& model, BpttOptions options = {})
      : model_(&model, "sparse_rtrl::Bptt"), options_(options), layers_(std::size_t(model.layers())) {}
  /// A temporary model would be destroyed while referenced: refused at compile time.
  Bptt(Model&& model, BpttOptions options = {}) = delete;

  Model& model() { return *model_; }
  const Model& model() const { return *model_; }
  /// Number of layers L of the model.
  Index layers() const { return model_->layers(); }
  /// Cell of layer k (default: layer 0, the only one of a single-layer model).
  const Cell& cell(Index layer = 0) const { return model_->cell(layer); }
  Cell& cell(Index layer = 0) { return model_->cell(layer); }
  const ParameterMask& mask(Index layer = 0) const { return model_->mask(layer); }
  /// Units of the top layer (the outputs of forward()).
  Index units() const { return model_->units(); }
  /// Units of layer k.
  Index units(Index layer) const { return model_->units(layer); }
  /// Inputs of the model (of layer 0).
  Index inputs() const { return model_->inputs(); }

  /// Runs the sequence X (T x d, one step per row, finite) from zero states in every layer and
  /// returns the top layer's outputs Y (T x n_top); outputs(k) holds layer k's.
  template <typename X>
  const Matrix& forward(const Eigen::MatrixBase<X>& X_seq) {
    require_input("sparse_rtrl::Bptt::forward()", X_seq);
    return forward_impl(X_seq, static_cast<const std::vector<Vector>*>(nullptr));
  }

  /// The same from a given c_0 (size n, finite): single-layer models only. A stack needs one
  /// initial state per layer (the overload taking a std::vector); here it throws
  /// std::invalid_argument.
  template <typename X, typename C0>
  const Matrix& forward(const Eigen::MatrixBase<X>& X_seq, const Eigen::MatrixBase<C0>& c0) {
    const char* where = "sparse_rtrl::Bptt::forward()";
    require_input(where, X_seq);
    if (layers() != 1)
      detail::fail(where, "one initial state c0 is for a single-layer model, this one has L = " +
                              std::to_string(layers()) + " layers: pass a std::vector of " +
                              std::to_string(layers()) + " initial states, one per layer");
    detail::require_vector(where, "c0", c0, units());
    detail::require_finite(where, "c0", c0);
    const std::vector<Vector> c0_layers{Vector(c0)};
    return forward_impl(X_seq, &c0_layers);
  }

  /// The same from given initial states: @p c0 holds one vector per layer, c0[k] of size n_k
  /// (finite). Any L, including 1.
  template <typename X>
  const Matrix& forward(const Eigen::MatrixBase<X>& X_seq, const std::vector<Vector>& c0) {
    const char* where = "sparse_rtrl::Bptt::forward()";
    require_input(where, X_seq);
    if (Index(c0.size()) != layers())
      detail::fail(where, "c0 must hold one initial state per layer (L = " + std::to_string(layers()) +
                              "), received " + std::to_string(c0.size()));
    for (Index k = 0; k < layers(); ++k) {
      const std::string name = "c0[" + std::to_string(k) + "]";
      detail::require_vector(where, name.c_str(), c0[std::size_t(k)], units(k));
      detail::require_finite(where, name.c_str(), c0[std::size_t(k)]);
    }
    return forward_impl(X_seq, &c0);
  }

  /// Outputs y_t of the top layer in the last forward(), T x n_top.
  const Matrix& outputs() const { return detail::live_back(layers_, "sparse_rtrl::Bptt").Y; }
  /// Outputs y^k_t of layer k in the last forward(), T x n_k (std::out_of_range for a layer
  /// outside [0, L)).
  const Matrix& outputs(Index layer) const { return layers_[checked_layer("outputs()", layer)].Y; }
  Index length() const { return length_; }
  /// Cache of step t (0-based) of layer 0 in the last forward() (the only layer of a
  /// single-layer model); step_cache(layer, t) for the others.
  const EgruStepCache<Scalar>& step_cache(Index t) const { return step_cache(0, t); }
  /// Cache of step t of layer k in the last forward(): t in [0, length()) and k in [0, L), else
  /// std::out_of_range naming the valid range (caches of an earlier, longer sequence are kept
  /// for reuse but are not part of the last one).
  const EgruStepCache<Scalar>& step_cache(Index layer, Index t) const {
    const std::size_t k = checked_layer("step_cache()", layer);
    if (t < 0 || t >= length_)
      throw std::out_of_range("sparse_rtrl::Bptt::step_cache(): t must be in [0, " + std::to_string(length_) +
                              ") (the steps of the last forward()), received " + std::to_string(t));
    return layers_[k].caches[std::size_t(t)];
  }

  /// backward() differentiates the sequence of the last forward() with the model's current
  /// parameters: update the model between forward() and backward() only if that is meant.
  /// Gradient of L with dL/dy_t = G.row(t) (G is T x n, finite), after forward(), for a
  /// single-layer model. A stack's gradient is one Parameters per layer: for L > 1 this throws
  /// std::logic_error, use backward(std::vector<Matrix>) (a loss on the top layer only is
  /// {empty, ..., empty, G}).
  template <typename G>
  Parameters backward(const Eigen::MatrixBase<G>& G_seq) {
    const char* where = "sparse_rtrl::Bptt::backward()";
    require_single_layer(where);
    require_backward_ready(where);
    detail::require_shape(where, "G", G_seq, length_, units());
    detail::require_finite(where, "G", G_seq);
    const Matrix g = G_seq;
    return std::move(backward_core({&g}, {nullptr})[0]);
  }

  /// Gradient of L with dL/dy_t = G.row(t) and dL/do_t = G_events.row(t) (a loss on the events,
  /// e.g. an activity regulariser; both T x n, finite). do/dc = psi, do/dtheta = -psi.
  /// Single-layer models only, as backward(G).
  template <typename G, typename GO>
  Parameters backward(const Eigen::MatrixBase<G>& G_seq, const Eigen::MatrixBase<GO>& G_events) {
    const char* where = "sparse_rtrl::Bptt::backward()";
    require_single_layer(where);
    require_backward_ready(where);
    detail::require_shape(where, "G", G_seq, length_, units());
    detail::require_finite(where, "G", G_seq);
    detail::require_shape(where, "G_events", G_events, length_, units());
    detail::require_finite(where, "G_events", G_events);
    const Matrix g = G_seq, events = G_events;
    return std::move(backward_core({&g}, {&events})[0]);
  }

  /// @brief Gradient of L = sum_k sum_t l^k(y^k_t), any L (1 included): @p G_layers holds one
  /// matrix per layer, G_layers[k] = dL/dy^k_t by rows (T x n_k, finite), or an empty 0 x 0
  /// matrix for no loss on layer k. Returns one gradient per layer, [k] for layer k's
  /// parameters (pruned entries zero). Wrong counts or shapes throw std::invalid_argument.
  std::vector<Parameters> backward(const std::vector<Matrix>& G_layers) {
    const char* where = "sparse_rtrl::Bptt::backward()";
    require_backward_ready(where);
    return backward_core(layer_losses(where, "G_layers", G_layers),
                         std::vector<const Matrix*>(std::size_t(layers()), nullptr));
  }

  /// The same with losses on the events as well: G_events_layers[k] = dL/do^k_t (T x n_k, or
  /// 0 x 0 for none).
  std::vector<Parameters> backward(const std::vector<Matrix>& G_layers, const std::vector<Matrix>& G_events_layers) {
    const char* where = "sparse_rtrl::Bptt::backward()";
    require_backward_ready(where);
    return backward_core(layer_losses(where, "G_layers", G_layers),
                         layer_losses(where, "G_events_layers", G_events_layers));
  }

  /// Work of the last forward() and backward(), summed over layers.
  const BpttWork& work() const { return work_; }
  const BpttOptions& options() const { return options_; }
  /// Bytes of the stored history of the last forward() (what BPTT keeps that RTRL does not),
  /// summed over layers.
  std::size_t history_bytes() const {
    std::size_t per_step = 0;
    if (length_ > 0) {
      for (const LayerState& layer : layers_) {
        const auto& k = layer.caches[0];
        for (const Vector* v : {&k.x, &k.c_prev, &k.o_prev, &k.y_prev, &k.h_prev, &k.psi_prev, &k.s_prev, &k.a, &k.q,
                                &k.r, &k.z, &k.g, &k.c, &k.o, &k.y, &k.psi, &k.s, &k.dc_da, &k.dc_dq, &k.decay})
          per_step += sizeof(Scalar) * std::size_t(v->size());
      }
    }
    return per_step * std::size_t(length_);
  }

  /// dL/dc_0 of layer 0 in the last backward() (the only layer of a single-layer model).
  const Vector& initial_state_gradient() const { return initial_state_gradient(0); }
  /// dL/dc^k_0 of layer k in the last backward().
  const Vector& initial_state_gradient(Index layer) const {
    return layers_[checked_layer("initial_state_gradient()", layer)].initial_state_grad;
  }

 private:
  struct LayerState {
    std::vector<EgruStepCache<Scalar>> caches;
    Matrix Y;                   ///< T x n, outputs of the last forward()
    Index n = 0, d = 0;         ///< sizes of the last forward()
    bool events = true;         ///< mode of the last forward()
    Vector initial_state_grad;  ///< dL/dc_0 of the last backward()
  };

  template <typename X>
  void require_input(const char* where, const Eigen::MatrixBase<X>& X_seq) const {
    if (X_seq.cols() != inputs() || X_seq.rows() < 1)
      detail::fail(where, "X must be T x " + std::to_string(inputs()) + " with T >= 1, received " +
                              detail::shape_string(X_seq.rows(), X_seq.cols()));
    detail::require_finite(where, "X", X_seq);
  }

  std::size_t checked_layer(const char* what, Index layer) const {
    if (layers_.empty()) detail::fail_moved_from("sparse_rtrl::Bptt");
    if (layer < 0 || layer >= Index(layers_.size()))
      throw std::out_of_range(std::string("sparse_rtrl::Bptt::") + what + ": layer must be in [0, " +
                              std::to_string(layers_.size()) + "), received " + std::to_string(layer));
    return std::size_t(layer);
  }

  /// X and c0 (one initial state per layer, or nullptr for zeros) validated by the caller.
  template <typename X>
  const Matrix& forward_impl(const Eigen::MatrixBase<X>& X_seq, const std::vector<Vector>* c0) {
    model_->enforce_mask();
    const Index T = X_seq.rows();
    const std::size_t L = std::size_t(layers());
    length_ = 0;  // set to T on success: a throw below leaves no half-run sequence behind
    layers_.resize(L);
    work_ = BpttWork{};
    work_.steps = std::uint64_t(T);
    Vector c;
    for (std::size_t k = 0; k < L; ++k) {
      const Cell& cell = model_->cell(Index(k));
      LayerState& layer = layers_[k];
      const Index n = cell.units(), d = cell.inputs();
      if (Index(layer.caches.size()) < T) layer.caches.resize(std::size_t(T));
      layer.Y.resize(T, n);
      if (c0)
        c = (*c0)[k];
      else
        c.setZero(n);
      const bool sparse = options_.exploit_events && cell.events();
      const std::uint64_t n3 = 3 * std::uint64_t(n);
      for (Index t = 0; t < T; ++t) {
        auto& cache = layer.caches[std::size_t(t)];
        cache.resize(n, d);
        if (k == 0)
          cell.forward(c, X_seq.row(t), cache, sparse);
        else
          cell.forward(c, layers_[k - 1].Y.row(t), cache, sparse);
        const std::uint64_t events =
            sparse ? std::uint64_t((cache.y_prev.array() != Scalar(0)).count()) : std::uint64_t(n);
        work_.forward_fma += n3 * (std::uint64_t(d) + events);
        work_.dense_forward_fma += n3 * std::uint64_t(d + n);
        if (!cache.c.allFinite()) {
          // A non-finite parameter (written through the model) is named; length() stays 0.
          for (Index m = 0; m < layers(); ++m) model_->parameters(m).validate("sparse_rtrl::Bptt::forward()");
          detail::fail("sparse_rtrl::Bptt::forward()",
                       "the state c_t became non-finite at step " + std::to_string(t) +
                           " (inputs and parameters are finite: the parameters are too large?)");
        }
        c = cache.c;
        layer.Y.row(t) = cache.y.transpose();
      }
      layer.n = n;
      layer.d = d;
      layer.events = cell.events();
    }
    length_ = T;
    return layers_.back().Y;
  }

  void require_single_layer(const char* where) const {
    if (layers() != 1)
      throw std::logic_error(std::string(where) + ": the model has L = " + std::to_string(layers()) +
                             " layers and one Parameters holds one layer's gradient: call "
                             "backward(std::vector<Matrix> G_layers) (one T x n_k loss per layer, 0 x 0 for "
                             "none), which returns one gradient per layer");
  }

  void require_backward_ready(const char* where) const {
    if (length_ == 0) throw std::logic_error(std::string(where) + ": call forward() first");
    if (Index(layers_.size()) != layers())
      throw std::logic_error(std::string(where) + ": the model has " + std::to_string(layers()) +
                             " layers, the last forward() ran " + std::to_string(layers_.size()) +
                             "; run forward() again");
    // The caches hold the last forward()'s sizes: a model reshaped (or switched between events
    // and GRU mode) since then cannot be differentiated with them.
    for (Index k = 0; k < layers(); ++k) {
      const LayerState& layer = layers_[std::size_t(k)];
      if (!model_->parameters(k).has_shape(layer.n, layer.d) || model_->events(k) != layer.events)
        throw std::logic_error(std::string(where) + ": the model changed shape or mode since forward() (" +
                               (layers() > 1 ? "layer " + std::to_string(k) + ": " : std::string()) +
                               "n = " + std::to_string(layer.n) + ", d = " + std::to_string(layer.d) +
                               "); run forward() again");
    }
  }

  /// Validates one loss matrix per layer (T x n_k or 0 x 0) and returns pointers to them
  /// (nullptr for "no loss on this layer").
  std::vector<const Matrix*> layer_losses(const char* where, const char* name, const std::vector<Matrix>& G) const {
    if (Index(G.size()) != layers())
      detail::fail(where, std::string(name) + " must hold one matrix per layer (L = " + std::to_string(layers()) +
                              "), received " + std::to_string(G.size()));
    std::vector<const Matrix*> out(G.size(), nullptr);
    for (Index k = 0; k < layers(); ++k) {
      const Matrix& g = G[std::size_t(k)];
      const std::string entry = std::string(name) + "[" + std::to_string(k) + "]";
      if (g.rows() == 0 && g.cols() == 0) continue;
      if (g.rows() != length_ || g.cols() != units(k))
        detail::fail(where, entry + " must be " + detail::shape_string(length_, units(k)) + " (T x n of layer " +
                                std::to_string(k) + "; 0 x 0 for no loss on it), received " +
                                detail::shape_string(g.rows(), g.cols()));
      detail::require_finite(where, entry.c_str(), g);
      out[std::size_t(k)] = &g;
    }
    return out;
  }

  /// The backward pass of the whole stack, top layer first; G[k], G_events[k]: validated losses
  /// of layer k or nullptr.
  std::vector<Parameters> backward_core(const std::vector<const Matrix*>& G,
                                        const std::vector<const Matrix*>& G_events) {
    const Index L = layers();
    std::vector<Parameters> grads;
    grads.reserve(std::size_t(L));
    for (Index k = 0; k < L; ++k) grads.emplace_back(units(k), model_->cell(k).inputs());
    work_.backward_fma = work_.dense_backward_fma = 0;
    for (Index k = L - 1; k >= 0; --k) {
      backward_layer(k, G[std::size_t(k)], G_events[std::size_t(k)], k + 1 < L ? &from_above_ : nullptr,
                     grads[std::size_t(k)]);
      std::swap(from_above_, to_below_);  // layer k's input gradient is layer k - 1's dL/dy
    }
    return grads;
  }

  /// Backward through layer k over the whole sequence. dL/dy^k_t = G.row(t) (if any) +
  /// above.row(t) (the input gradient of layer k + 1, if any) + what step t + 1 sends back.
  /// Writes the input gradient dL/dy^{k-1}_t into to_below_ when k > 0.
  void backward_layer(Index k, const Matrix* G, const Matrix* G_events, const Matrix* above, Parameters& grad) {
    LayerState& layer = layers_[std::size_t(k)];
    const Cell& cell = model_->cell(k);
    const Index n = layer.n, d = layer.d;
    const auto& p = cell.parameters();
    const bool events = cell.events();
    const bool sparse = options_.exploit_events && events;
    const bool has_below = k > 0;
    // Inputs that are the event outputs of an events-mode layer are zero for silent units.
    const bool sparse_input = has_below && options_.exploit_events && model_->events(k - 1);
    const std::uint64_t n3 = 3 * std::uint64_t(n);
    if (has_below) to_below_.resize(length_, d);
    Vector carry_y = Vector::Zero(n), carry_h = Vector::Zero(n);
    Vector gy(n), gc(n), e_a(3 * n), e_q(3 * n);
    for (Index t = length_ - 1; t >= 0; --t) {
      const auto& c = layer.caches[std::size_t(t)];
      gy = carry_y;
      if (G) gy += G->row(t).transpose();
      if (above) gy += above->row(t).transpose();
      if (events) {
        gc = gy.cwiseProduct(c.s) + carry_h.cwiseProduct((Vector::Ones(n) - p.theta.cwiseProduct(c.psi)));
        grad.theta += -gy.cwiseProduct(c.c).cwiseProduct(c.psi) +
                      carry_h.cwiseProduct(p.theta.cwiseProduct(c.psi) - c.o);
        if (G_events) {
          const Vector go = G_events->row(t).transpose();
          gc += go.cwiseProduct(c.psi);
          grad.theta -= go.cwiseProduct(c.psi);
        }
      } else {
        gc = gy + carry_h;
      }
      for (int gate = 0; gate < 3; ++gate) {
        e_a.segment(gate * n, n) = gc.cwiseProduct(c.dc_da.segment(gate * n, n));
        e_q.segment(gate * n, n) = gc.cwiseProduct(c.dc_dq.segment(gate * n, n));
      }
      std::uint64_t used = 0;  // columns touched by gW, gR, R^T e_q and W^T e_a at this step
      if (sparse_input) {
        for (Index j = 0; j < d; ++j)
          if (c.x(j) != Scalar(0)) {  // silent unit of the layer below: zero column of x^T
            grad.W.col(j) += e_a * c.x(j);
            ++used;
          }
      } else {
        grad.W.noalias() += e_a * c.x.transpose();
        used += std::uint64_t(d);
      }
      grad.bW += e_a;
      grad.bR += e_q;
      work_.dense_backward_fma += n3 * std::uint64_t((has_below ? 2 * d : d) + 2 * n);
      if (sparse) {
        for (Index j = 0; j < n; ++j) {
          if (c.y_prev(j) != Scalar(0)) {  // silent presynaptic unit: zero column of y^T
            grad.R.col(j) += e_q * c.y_prev(j);
            ++used;
          }
          // dL/dy_{t-1, j} is only ever multiplied by s_{t-1, j} and c_{t-1, j} psi_{t-1, j}.
          const bool needed = c.s_prev(j) != Scalar(0) || c.c_prev(j) * c.psi_prev(j) != Scalar(0);
          carry_y(j) = needed ? p.R.col(j).dot(e_q) : Scalar(0);
          used += needed;
        }
      } else {
        grad.R.noalias() += e_q * c.y_prev.transpose();
        carry_y.noalias() = p.R.transpose() * e_q;
        used += 2 * std::uint64_t(n);
      }
      if (has_below) {
        // dL/dx_t = W^T e_a, the loss gradient of the layer below's output y^{k-1}_t.
        if (sparse_input) {
          const auto& below = layers_[std::size_t(k - 1)].caches[std::size_t(t)];
          for (Index j = 0; j < d; ++j) {
            // Multiplied only by s^{k-1}_{t, j} and c^{k-1}_{t, j} psi^{k-1}_{t, j} below.
            const bool needed = below.s(j) != Scalar(0) || below.c(j) * below.psi(j) != Scalar(0);
            to_below_(t, j) = needed ? p.W.col(j).dot(e_a) : Scalar(0);
            used += needed;
          }
        } else {
          to_below_.row(t).noalias() = e_a.transpose() * p.W;
          used += std::uint64_t(d);
        }
      }
      work_.backward_fma += n3 * used;
      carry_h = gc.cwiseProduct(c.z);
    }
    model_->mask(k).apply(grad);
    // The thresholds also act on the initial state's events o_0 = H(c_0 - theta).
    const auto& first = layer.caches[0];
    if (events) {
      grad.theta += -carry_y.cwiseProduct(first.c_prev).cwiseProduct(first.psi_prev) +
                    carry_h.cwiseProduct(p.theta.cwiseProduct(first.psi_prev) - first.o_prev);
      layer.initial_state_grad = carry_y.cwiseProduct(first.s_prev) +
                                 carry_h.cwiseProduct(Vector::Ones(n) - p.theta.cwiseProduct(first.psi_prev));
    } else {
      layer.initial_state_grad = carry_y + carry_h;
    }
  }

  detail::ModelPointer<Model> model_;  ///< null in a moved-from Bptt: every use throws
  BpttOptions options_;
  BpttWork work_;
  std::vector<LayerState> layers_;
  Index length_ = 0;
  Matrix from_above_, to_below_;  ///< T x n: dL/dy from the layer above, for the layer below
};

}  // namespace sparse_rtrl
