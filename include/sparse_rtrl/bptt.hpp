/// @file bptt.hpp
/// @brief Back-propagation through time over a stored sequence: the reference every RTRL
///        gradient must equal (same cell, same surrogate).
///
/// Backward recursion (model.md conventions), with carry_y = dL/dy_t and carry_h = dL/dh_t
/// arriving from step t+1:
///   dL/dc_t = (G_t + carry_y) s_t + carry_h (1 - theta psi_t)
///   dL/dtheta += -(G_t + carry_y) c_t psi_t + carry_h (theta psi_t - o_t)
///   e_a = dL/dc_t * dc_t/da, e_q = dL/dc_t * dc_t/dq;  gW += e_a x_t^T, gR += e_q y_{t-1}^T
///   carry_y <- R^T e_q,  carry_h <- dL/dc_t z_t
/// In GRU mode y = h = c, so dL/dc_t = G_t + carry_y + carry_h.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/egru_cell.hpp>
#include <sparse_rtrl/model.hpp>
#include <sparse_rtrl/parameter_mask.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {

/// @brief Options of BPTT.
struct BpttOptions {
  /// Exploit events (exact): the forward product R y_{t-1} reads only columns of units with
  /// events, the weight gradient's outer product only those columns, and dL/dy_{t-1} = R^T e_q
  /// is computed only for units with s_{t-1} != 0 (or c psi != 0), the others being multiplied
  /// by zero. false: dense BPTT.
  bool exploit_events = false;
};

/// @brief Multiply-adds of BPTT's matrix products, per run (forward + backward).
struct BpttWork {
  std::uint64_t steps = 0;
  std::uint64_t forward_fma = 0, dense_forward_fma = 0;    ///< R y_{t-1} (and W x_t)
  std::uint64_t backward_fma = 0, dense_backward_fma = 0;  ///< gW, gR outer products and R^T e_q
};

/// @brief BPTT for the EGRU. forward() stores the sequence's caches; backward() returns dL/dparams
/// for a loss given as dL/dy_t at every step (rows of zeros where a step has no loss).
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class Bptt {
 public:
  using Cell = EgruCell<Scalar, Surrogate>;
  using Parameters = EgruParameters<Scalar>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  using Model = sparse_rtrl::Model<Scalar, Surrogate>;

  /// BPTT of @p model, referenced (not copied: it must outlive this learner and stay at one
  /// address, model.hpp). Pruned weights of the model's mask are zero in every forward() and
  /// their gradient entries are reported as zero (a pruned weight has no gradient).
  explicit Bptt(Model& model, BpttOptions options = {}) : model_(&model), options_(options) {}
  /// A temporary model would be destroyed while referenced: refused at compile time.
  Bptt(Model&& model, BpttOptions options = {}) = delete;

  Model& model() { return *model_; }
  const Model& model() const { return *model_; }
  const Cell& cell() const { return model_->cell(); }
  Cell& cell() { return model_->cell(); }
  const ParameterMask& mask() const { return model_->mask(); }
  Index units() const { return model_->units(); }
  Index inputs() const { return model_->inputs(); }

  /// Runs the sequence X (T x d, one step per row, finite) from c_0 = 0 and returns Y (T x n).
  template <typename X>
  const Matrix& forward(const Eigen::MatrixBase<X>& X_seq) {
    return forward(X_seq, Vector::Zero(units()));
  }

  /// The same from a given c_0 (size n, finite).
  template <typename X, typename C0>
  const Matrix& forward(const Eigen::MatrixBase<X>& X_seq, const Eigen::MatrixBase<C0>& c0) {
    const char* where = "sparse_rtrl::Bptt::forward()";
    if (X_seq.cols() != inputs() || X_seq.rows() < 1)
      detail::fail(where, "X must be T x " + std::to_string(inputs()) + " with T >= 1, received " +
                              detail::shape_string(X_seq.rows(), X_seq.cols()));
    detail::require_finite(where, "X", X_seq);
    detail::require_vector(where, "c0", c0, units());
    detail::require_finite(where, "c0", c0);
    model_->enforce_mask();
    const Index T = X_seq.rows();
    if (Index(caches_.size()) < T) caches_.resize(std::size_t(T));
    length_ = 0;  // set to T on success: a throw below leaves no half-run sequence behind
    Y_.resize(T, units());
    Vector c = c0;
    const bool sparse = options_.exploit_events && model_->cell().events();
    work_ = BpttWork{};
    work_.steps = std::uint64_t(T);
    const std::uint64_t n3 = 3 * std::uint64_t(units());
    for (Index t = 0; t < T; ++t) {
      auto& cache = caches_[std::size_t(t)];
      cache.resize(units(), inputs());
      model_->cell().forward(c, X_seq.row(t), cache, sparse);
      const std::uint64_t events = sparse ? std::uint64_t((cache.y_prev.array() != Scalar(0)).count()) : std::uint64_t(units());
      work_.forward_fma += n3 * (std::uint64_t(inputs()) + events);
      work_.dense_forward_fma += n3 * std::uint64_t(inputs() + units());
      c = cache.c;
      Y_.row(t) = cache.y.transpose();
    }
    length_ = T;
    forward_n_ = units();
    forward_d_ = inputs();
    forward_events_ = model_->events();
    return Y_;
  }

  /// Outputs y_t of the last forward(), T x n.
  const Matrix& outputs() const { return Y_; }
  Index length() const { return length_; }
  /// Cache of step t (0-based) of the last forward(): t in [0, length()), else
  /// std::out_of_range naming the valid range (caches of an earlier, longer sequence are kept
  /// for reuse but are not part of the last one).
  const EgruStepCache<Scalar>& step_cache(Index t) const {
    if (t < 0 || t >= length_)
      throw std::out_of_range("sparse_rtrl::Bptt::step_cache(): t must be in [0, " + std::to_string(length_) +
                              ") (the steps of the last forward()), received " + std::to_string(t));
    return caches_[std::size_t(t)];
  }

  /// backward() differentiates the sequence of the last forward() with the model's current
  /// parameters: update the model between forward() and backward() only if that is meant.
  /// Gradient of L with dL/dy_t = G.row(t) (G is T x n, finite), after forward().
  template <typename G>
  Parameters backward(const Eigen::MatrixBase<G>& G_seq) {
    return backward_impl(G_seq, static_cast<const Matrix*>(nullptr));
  }

  /// Gradient of L with dL/dy_t = G.row(t) and dL/do_t = G_events.row(t) (a loss on the events,
  /// e.g. an activity regulariser; both T x n, finite). do/dc = psi, do/dtheta = -psi.
  template <typename G, typename GO>
  Parameters backward(const Eigen::MatrixBase<G>& G_seq, const Eigen::MatrixBase<GO>& G_events) {
    const char* where = "sparse_rtrl::Bptt::backward()";
    detail::require_shape(where, "G_events", G_events, length_, units());
    detail::require_finite(where, "G_events", G_events);
    const Matrix events = G_events;
    return backward_impl(G_seq, &events);
  }

  /// Work of the last forward() and backward().
  const BpttWork& work() const { return work_; }
  const BpttOptions& options() const { return options_; }
  /// Bytes of the stored history of the last forward() (what BPTT keeps that RTRL does not).
  std::size_t history_bytes() const {
    std::size_t per_step = 0;
    if (length_ > 0) {
      const auto& k = caches_[0];
      for (const Vector* v : {&k.x, &k.c_prev, &k.o_prev, &k.y_prev, &k.h_prev, &k.psi_prev, &k.s_prev, &k.a, &k.q, &k.r,
                              &k.z, &k.g, &k.c, &k.o, &k.y, &k.psi, &k.s, &k.dc_da, &k.dc_dq, &k.decay})
        per_step += sizeof(Scalar) * std::size_t(v->size());
    }
    return per_step * std::size_t(length_);
  }

  /// dL/dc_0 of the last backward().
  const Vector& initial_state_gradient() const { return initial_state_grad_; }

 private:
  template <typename G>
  Parameters backward_impl(const Eigen::MatrixBase<G>& G_seq, const Matrix* G_events) {
    const char* where = "sparse_rtrl::Bptt::backward()";
    if (length_ == 0) throw std::logic_error(std::string(where) + ": call forward() first");
    // The caches hold the last forward()'s sizes: a model reshaped (or switched between events
    // and GRU mode) since then cannot be differentiated with them.
    if (!model_->parameters().has_shape(forward_n_, forward_d_) || model_->events() != forward_events_)
      throw std::logic_error(std::string(where) + ": the model changed shape or mode since forward() (n = " +
                             std::to_string(forward_n_) + ", d = " + std::to_string(forward_d_) +
                             "); run forward() again");
    detail::require_shape(where, "G", G_seq, length_, units());
    detail::require_finite(where, "G", G_seq);
    const Index n = units();
    const auto& p = model_->cell().parameters();
    const bool events = model_->cell().events();
    const bool sparse = options_.exploit_events && events;
    work_.backward_fma = work_.dense_backward_fma = 0;
    Parameters grad(n, inputs());
    Vector carry_y = Vector::Zero(n), carry_h = Vector::Zero(n);
    Vector gc(n), e_a(3 * n), e_q(3 * n);
    for (Index t = length_ - 1; t >= 0; --t) {
      const auto& k = caches_[std::size_t(t)];
      const Vector gy = G_seq.row(t).transpose() + carry_y;
      if (events) {
        gc = gy.cwiseProduct(k.s) +
             carry_h.cwiseProduct((Vector::Ones(n) - p.theta.cwiseProduct(k.psi)));
        grad.theta += -gy.cwiseProduct(k.c).cwiseProduct(k.psi) +
                      carry_h.cwiseProduct(p.theta.cwiseProduct(k.psi) - k.o);
        if (G_events) {
          const Vector go = G_events->row(t).transpose();
          gc += go.cwiseProduct(k.psi);
          grad.theta -= go.cwiseProduct(k.psi);
        }
      } else {
        gc = gy + carry_h;
      }
      for (int gate = 0; gate < 3; ++gate) {
        e_a.segment(gate * n, n) = gc.cwiseProduct(k.dc_da.segment(gate * n, n));
        e_q.segment(gate * n, n) = gc.cwiseProduct(k.dc_dq.segment(gate * n, n));
      }
      grad.W.noalias() += e_a * k.x.transpose();
      grad.bW += e_a;
      grad.bR += e_q;
      const std::uint64_t n3 = 3 * std::uint64_t(n);
      work_.dense_backward_fma += n3 * std::uint64_t(inputs() + 2 * n);
      if (sparse) {
        std::uint64_t used = 0;
        for (Index j = 0; j < n; ++j) {
          if (k.y_prev(j) != Scalar(0)) {  // silent presynaptic unit: zero column of y^T
            grad.R.col(j) += e_q * k.y_prev(j);
            ++used;
          }
          // dL/dy_{t-1, j} is only ever multiplied by s_{t-1, j} and c_{t-1, j} psi_{t-1, j}.
          const bool needed = k.s_prev(j) != Scalar(0) || k.c_prev(j) * k.psi_prev(j) != Scalar(0);
          carry_y(j) = needed ? p.R.col(j).dot(e_q) : Scalar(0);
          used += needed;
        }
        work_.backward_fma += n3 * (std::uint64_t(inputs()) + used);
      } else {
        grad.R.noalias() += e_q * k.y_prev.transpose();
        carry_y.noalias() = p.R.transpose() * e_q;
        work_.backward_fma += n3 * std::uint64_t(inputs() + 2 * n);
      }
      carry_h = gc.cwiseProduct(k.z);
    }
    model_->mask().apply(grad);
    // The thresholds also act on the initial state's events o_0 = H(c_0 - theta).
    const auto& first = caches_[0];
    if (events) {
      grad.theta += -carry_y.cwiseProduct(first.c_prev).cwiseProduct(first.psi_prev) +
                    carry_h.cwiseProduct(p.theta.cwiseProduct(first.psi_prev) - first.o_prev);
      initial_state_grad_ = carry_y.cwiseProduct(first.s_prev) +
                            carry_h.cwiseProduct(Vector::Ones(n) - p.theta.cwiseProduct(first.psi_prev));
    } else {
      initial_state_grad_ = carry_y + carry_h;
    }
    return grad;
  }

  Model* model_;
  Index forward_n_ = 0, forward_d_ = 0;
  bool forward_events_ = true;
  BpttOptions options_;
  BpttWork work_;
  std::vector<EgruStepCache<Scalar>> caches_;
  Index length_ = 0;
  Matrix Y_;
  Vector initial_state_grad_;
};

}  // namespace sparse_rtrl
