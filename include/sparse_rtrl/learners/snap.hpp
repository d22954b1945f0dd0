/// @file snap.hpp
/// @brief SnAp-n, the sparse approximation of RTRL of Menick et al. (2021, arXiv:2006.07232):
///        the baseline exact sparse RTRL is judged against.
///
/// For the parameters feeding unit u (and for theta_u), SnAp-n keeps only the influence rows of
/// units reachable from u within n - 1 steps of the recurrent graph (j -> i when R keeps some
/// gate entry (i, j)); every other entry of M is treated as zero forever. Each unit's kept block
/// then follows M_t[S_u] = J_t[S_u, S_u] M_{t-1}[S_u] + Mbar_t[S_u], the exact recursion with
/// J_t restricted to the pattern. SnAp-1 keeps only row u: one entry per parameter. When S_u
/// holds every unit reachable from u (at any distance) the J-product is not truncated and
/// SnAp-n equals exact RTRL: this holds for every order >= (diameter of the graph) + 1, e.g.
/// order >= n, which is SnAp-infinity = RTRL. Any order is cheap to construct: the reach set
/// stops growing after at most diameter + 1 hops, and the expansion stops there.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/immediate_jacobian.hpp>
#include <sparse_rtrl/model/egru_cell.hpp>
#include <sparse_rtrl/learners/influence_layout.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>
#include <sparse_rtrl/learners/work_counters.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <stdexcept>
#include <vector>

namespace sparse_rtrl {

/// @brief SnAp-n learner with the same step / accumulate_gradient / gradient interface as Rtrl.
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class Snap {
 public:
  using Model = sparse_rtrl::Model<Scalar, Surrogate>;
  using Cell = EgruCell<Scalar, Surrogate>;
  using Parameters = EgruParameters<Scalar>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Block = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  /// @param order n of SnAp-n, >= 1 (else std::invalid_argument). Every order >= (diameter of
  ///        the recurrent graph) + 1 keeps the same rows and is exact RTRL (SnAp-infinity); such
  ///        orders, up to INT_MAX, cost no more to construct than the diameter's.
  /// Tracks the kept parameters of @p model's mask (referenced, not copied: it must outlive
  /// this learner and stay at one address, model.hpp). SnAp's pattern is fixed by the mask at
  /// construction: after Model::set_mask, step() throws std::logic_error (construct a new Snap).
  Snap(Model& model, int order) : model_(&model), order_(order) {
    const char* where = "sparse_rtrl::Snap::Snap()";
    if (order < 1) detail::fail(where, "order must be >= 1, received " + std::to_string(order));
    // SnAp's pattern for a stack must follow the cross-layer edges too; not implemented yet.
    if (model.layers() != 1)
      detail::fail(where, "SnAp-n is implemented for one layer; the model is a stack of " +
                              std::to_string(model.layers()) + " layers (use Rtrl, exact through depth)");
    model.enforce_mask();
    mask_version_ = model.mask_version();
    layout_ = InfluenceLayout(model.mask(), model.events());
    const Index n = units();
    cache_.resize(n, inputs());
    state_.setZero(n);
    dL_dc_.setZero(n);
    J_.setZero(n, n);
    build_patterns();
    grad_.setZero(layout_.columns());
  }
  /// A temporary model would be destroyed while referenced: refused at compile time.
  Snap(Model&& model, int order) = delete;

  Index units() const { return layout_.units(); }
  Index inputs() const { return layout_.inputs(); }
  int order() const { return order_; }
  Model& model() { return *model_; }
  const Model& model() const { return *model_; }
  const Cell& cell() const { return model_->cell(); }
  Cell& cell() { return model_->cell(); }
  const ParameterMask& mask() const { return model_->mask(); }
  const InfluenceLayout& layout() const { return layout_; }
  /// Rows kept for the parameters of unit u.
  const std::vector<Index>& kept_rows(Index unit) const { return rows_[std::size_t(unit)]; }

  void reset() {
    state_.setZero();
    for (auto& b : blocks_) b.setZero();
    steps_ = 0;
  }

  template <typename X>
  void step(const Eigen::MatrixBase<X>& x) {
    const char* where = "sparse_rtrl::Snap::step()";
    detail::require_vector(where, "x", x, inputs());
    detail::require_finite(where, "x", x);
    if (mask_version_ != model_->mask_version())
      throw std::logic_error(std::string(where) + ": the model's mask changed since this Snap was built; "
                             "SnAp's pattern follows the mask: construct a new Snap");
    if (!model_->parameters().has_shape(layout_.units(), layout_.inputs()))
      detail::fail(where, "the model's parameters changed shape since construction, received " +
                              model_->parameters().shape_string());
    model_->enforce_mask();
    model_->cell().forward(state_, x, cache_);
    const Index n = units();
    const auto& R = model_->cell().parameters().R;
    // J_t = diag(decay) + A_t diag(s_{t-1}), on the pattern only.
    J_.setZero();
    const auto& ptr = layout_.coupling_row_ptr();
    const auto& cols = layout_.coupling_cols();
    for (Index i = 0; i < n; ++i) {
      for (Index p = ptr[std::size_t(i)]; p < ptr[std::size_t(i + 1)]; ++p) {
        const Index j = cols[std::size_t(p)];
        J_(i, j) = detail::coupling_entry(R, cache_, n, i, j) * cache_.s_prev(j);
      }
      J_(i, i) += cache_.decay(i);
    }
    WorkCounters w;
    w.steps = 1;
    w.units = std::uint64_t(n);
    const auto& theta = model_->cell().parameters().theta;
    for (Index u = 0; u < n; ++u) {
      const auto& S = rows_[std::size_t(u)];
      const Index k = Index(S.size());
      Block& B = blocks_[std::size_t(u)];
      for (Index a = 0; a < k; ++a)
        for (Index b = 0; b < k; ++b) Jsub_(a, b) = J_(S[std::size_t(a)], S[std::size_t(b)]);
      tmp_.topLeftCorner(k, B.cols()).noalias() = Jsub_.topLeftCorner(k, k) * B;
      B = tmp_.topLeftCorner(k, B.cols());
      w.propagation_fma += std::uint64_t(k * k * B.cols());
      const Index self = self_[std::size_t(u)];
      detail::add_unit_immediate_jacobian(layout_, cache_, u, B.row(self).data());
      if (layout_.tracks_theta()) {
        // theta_u: soft-reset diagonal, and -A_t[:, u] c_u psi_u on the kept rows.
        const Index tc = B.cols() - 1;
        B(self, tc) += detail::threshold_reset_entry(cache_, theta, u);
        const Scalar cpsi = cache_.c_prev(u) * cache_.psi_prev(u);
        if (cpsi != Scalar(0))
          for (Index a = 0; a < k; ++a) {
            const Index i = S[std::size_t(a)];
            if (i == u || has_edge(i, u)) B(a, tc) -= detail::coupling_entry(R, cache_, n, i, u) * cpsi;
          }
      }
    }
    const std::uint64_t Pd = std::uint64_t(layout_.dense_columns());
    w.dense_propagation_fma = std::uint64_t(n) * std::uint64_t(n) * Pd + std::uint64_t(n) * Pd;
    for (Index j = 0; j < n; ++j) {
      w.event_units += cache_.o_prev(j) != Scalar(0);
      w.active_rows += cache_.s_prev(j) != Scalar(0);
    }
    state_ = cache_.c;
    ++steps_;
    last_ = w;
    total_ += w;
  }

  /// Adds (dL/dc_t)^T M_t over the kept entries, plus theta's direct term (as Rtrl).
  template <typename G>
  void accumulate_gradient(const Eigen::MatrixBase<G>& dL_dy) {
    const char* where = "sparse_rtrl::Snap::accumulate_gradient()";
    if (steps_ == 0) throw std::logic_error(std::string(where) + ": call step() first");
    detail::require_vector(where, "dL_dy", dL_dy, units());
    detail::require_finite(where, "dL_dy", dL_dy);
    const Index n = units();
    for (Index i = 0; i < n; ++i) dL_dc_(i) = dL_dy(i) * cache_.s(i);
    std::uint64_t fma = 0;
    for (Index u = 0; u < n; ++u) {
      const auto& S = rows_[std::size_t(u)];
      const Block& B = blocks_[std::size_t(u)];
      const Index P_u = layout_.unit_end(u) - layout_.unit_begin(u);
      for (Index a = 0; a < Index(S.size()); ++a) {
        const Scalar g = dL_dc_(S[std::size_t(a)]);
        if (g == Scalar(0)) continue;
        grad_.segment(layout_.unit_begin(u), P_u) += g * B.row(a).head(P_u).transpose();
        fma += std::uint64_t(B.cols());
        if (layout_.tracks_theta()) grad_(layout_.theta_column(u)) += g * B(a, P_u);
      }
    }
    if (layout_.tracks_theta())
      for (Index j = 0; j < n; ++j) grad_(layout_.theta_column(j)) -= dL_dy(j) * cache_.c(j) * cache_.psi(j);
    const std::uint64_t dense = std::uint64_t(n) * std::uint64_t(layout_.dense_columns());
    last_.readout_fma += fma;
    total_.readout_fma += fma;
    last_.dense_readout_fma += dense;
    total_.dense_readout_fma += dense;
  }

  Parameters gradient() const {
    Parameters out(units(), inputs());
    layout_.scatter(grad_, out);
    return out;
  }
  void zero_gradient() { grad_.setZero(); }
  const Vector& state() const { return state_; }
  const Vector& output() const { return cache_.y; }
  /// Bytes of the kept influence entries.
  std::size_t influence_bytes() const {
    std::size_t total = 0;
    for (const auto& b : blocks_) total += sizeof(Scalar) * std::size_t(b.size());
    return total;
  }
  const WorkCounters& last_step_work() const { return last_; }
  const WorkCounters& total_work() const { return total_; }
  void reset_work() { total_ = WorkCounters{}; }

 private:
  bool has_edge(Index i, Index j) const { return edge_(i, j) != 0; }

  void build_patterns() {
    const Index n = units();
    edge_.setZero(n, n);
    const auto& ptr = layout_.coupling_row_ptr();
    const auto& cols = layout_.coupling_cols();
    for (Index i = 0; i < n; ++i)
      for (Index p = ptr[std::size_t(i)]; p < ptr[std::size_t(i + 1)]; ++p) edge_(i, cols[std::size_t(p)]) = 1;
    rows_.assign(std::size_t(n), {});
    self_.assign(std::size_t(n), 0);
    blocks_.resize(std::size_t(n));
    Index widest = 0, largest = 1;
    for (Index u = 0; u < n; ++u) {
      std::vector<char> reach(std::size_t(n), 0);
      reach[std::size_t(u)] = 1;
      // order - 1 hops of the graph j -> i, stopping at the first hop that adds no unit: the
      // set is then closed under the graph, and further hops change nothing. So at most
      // (eccentricity of u) + 1 sweeps run, whatever the order (INT_MAX included).
      std::vector<char> next;
      for (int hop = 1; hop < order_; ++hop) {
        next = reach;
        bool grew = false;
        for (Index i = 0; i < n; ++i)
          for (Index j = 0; j < n && !next[std::size_t(i)]; ++j)
            if (reach[std::size_t(j)] && edge_(i, j)) {
              next[std::size_t(i)] = 1;
              grew = true;
            }
        if (!grew) break;
        reach.swap(next);
      }
      for (Index i = 0; i < n; ++i)
        if (reach[std::size_t(i)]) rows_[std::size_t(u)].push_back(i);
      const auto& S = rows_[std::size_t(u)];
      self_[std::size_t(u)] = Index(std::lower_bound(S.begin(), S.end(), u) - S.begin());
      const Index width = layout_.unit_end(u) - layout_.unit_begin(u) + (layout_.tracks_theta() ? 1 : 0);
      blocks_[std::size_t(u)].setZero(Index(S.size()), width);
      widest = std::max(widest, width);
      largest = std::max(largest, Index(S.size()));
    }
    Jsub_.setZero(largest, largest);
    tmp_.setZero(largest, widest);
  }

  Model* model_;
  std::uint64_t mask_version_ = 0;
  int order_;
  InfluenceLayout layout_;
  EgruStepCache<Scalar> cache_;
  Vector state_, dL_dc_, grad_;
  Matrix J_, Jsub_;
  Block tmp_;
  Eigen::Matrix<char, Eigen::Dynamic, Eigen::Dynamic> edge_;
  std::vector<std::vector<Index>> rows_;
  std::vector<Index> self_;
  std::vector<Block> blocks_;
  Index steps_ = 0;
  WorkCounters last_, total_;
};

}  // namespace sparse_rtrl
