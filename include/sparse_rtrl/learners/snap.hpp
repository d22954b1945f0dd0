/// @file snap.hpp
/// @brief SnAp-n, the sparse approximation of RTRL of Menick et al. (2021, arXiv:2006.07232),
///        for one EGRU layer or a stack of them: the baseline exact sparse RTRL is judged against.
///
/// SnAp's definition: do the exact RTRL update, then zero every influence entry outside a fixed
/// sparsity pattern. Here the exact update is Rtrl's (model.md, "Stacked layers"), run layer by
/// layer from the bottom up, each layer's rows projected before the layer above reads them:
///   M^k_t = P^k[ J^k_t M^k_{t-1} + B^k_t D^{k-1}_t + Mbar^k_t ],  D^{k-1}_t = diag(s^{k-1}_t) M^{k-1}_t
///   (+ the direct threshold term), M^{k-1}_t already projected.
/// One layer (L = 1) is the same code with no cross-layer term.
///
/// The pattern lives on the stack's graph: its nodes are all units of all layers; its edges are
/// j -> i within layer k when R^k keeps some gate entry (i, j) (c^k_{t-1, j} reaches c^k_{t, i}
/// one step later), and j of layer k - 1 -> i of layer k when W^k keeps some gate entry (i, j)
/// (y^{k-1}_{t, j} reaches c^k_{t, i} at the same step). Every parameter feeding unit u of layer m
/// (its kept W and R entries, its biases, and theta_u) keeps the rows of one set S(u), chosen by
/// SnapOptions::cross_layer:
///  - graph (default): the units within order - 1 hops of u, every edge (R or W) one hop. SnAp-1
///    keeps only u (one entry per parameter: a layer learns only from losses on itself); SnAp-2
///    adds u's recurrent successors and the units of layer m + 1 that read u. Every order >=
///    covering_order() (1 + the longest shortest path from any unit) keeps every reachable row:
///    then nothing is projected away and SnAp equals exact RTRL (and BPTT) to rounding.
///  - none: the units of layer m within order - 1 recurrent hops; M^{k,m} = 0 for k > m. With
///    order >= covering_order() this is "exact within a layer only": a loss on layer k trains
///    layer k alone.
///  - same_step: as none inside layer m, plus the units of the layers above reached from there
///    through W edges, whose entries hold only this step's cross-layer term and are not carried:
///    M^{k,m}_t = B^k_t D^{k-1,m}_t for k > m (J^k M^{k,m}_{t-1} dropped). The gradient is then
///    per-layer RTRL with each step's loss back-propagated down the stack at that step only
///    (spatial back-propagation, as in OSTL, Bohnstingl et al. arXiv:2007.12723, which is exact
///    for one layer): the paths through the recurrence of upper layers are what it drops.
/// Any order is cheap to construct: each pattern is a breadth-first search that stops when it
/// reaches nothing new.
///
/// Columns and rows: layer m's parameters own the columns [column_offset(m), column_offset(m) +
/// layout(m).columns()) of gradient_columns(), as in Rtrl; unit i of layer k is row
/// row_offset(k) + i of the stack (kept_rows()).
///
/// Masks: the pattern is built from the masks at construction; after Model::set_mask, step()
/// throws std::logic_error (construct a new Snap). (Following a new mask would need a new pattern
/// and a rule for entries entering it; Rtrl follows mask changes exactly.)
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
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {

/// @brief Which influence of a parameter on the layers above its own a Snap keeps (snap.hpp).
enum class SnapCrossLayer {
  graph,     ///< SnAp-n over the stack's graph: a W edge is one hop, like an R edge
  none,      ///< none: M^{k,m} = 0 for k > m ("exact within a layer only" at a covering order)
  same_step  ///< only this step's B^k D^{k-1}, not carried: spatial back-propagation between layers
};

/// @brief Options of the SnAp learner.
struct SnapOptions {
  /// n of SnAp-n, >= 1: the pattern holds the units within n - 1 hops (snap.hpp). Any value up to
  /// INT_MAX; every order >= Snap::covering_order() gives the same pattern.
  int order = 1;
  SnapCrossLayer cross_layer = SnapCrossLayer::graph;
};

namespace detail {

/// The kept influence entries of the parameters feeding one unit (the owner) of a Snap.
template <typename Scalar>
struct SnapOwner {
  using Block = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Index layer = 0, unit = 0;
  std::vector<Index> rows;   ///< S(unit): rows of the stack, ascending (so grouped by layer)
  std::vector<Index> begin;  ///< rows of layer layer + q are [begin[q], begin[q + 1])
  Index self = 0;            ///< position of the owner's own row in rows
  Index parameters = 0;      ///< columns of its weights and biases; + 1 for theta when tracked
  bool theta = false;
  Block M;                   ///< rows.size() x (parameters + theta)
};

/// One layer's stream state of a Snap: the shared part (LearnerLayer), this step's Jacobians on
/// their patterns and the kept influence entries of the layer's owners.
template <typename Scalar>
struct SnapLayer : LearnerLayer<Scalar> {
  using Block = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Index row_offset = 0;  ///< row of unit 0 in the stack's rows
  /// A_t = dc_t/dy_{t-1} and J_t = diag(decay) + A_t diag(s_{t-1}), n x n, written on R's
  /// coupling pattern only (zero elsewhere from construction on). Row-major: written row by row.
  Block A, J;
  /// B^k_t = dc^k_t/dy^{k-1}_t (k > 0), n x n_{k-1}, written on W's connection pattern only.
  Block B;
  std::vector<Index> input_ptr, input_cols;  ///< W's connection pattern, CSR by target unit
  std::vector<SnapOwner<Scalar>> owners;     ///< one per unit
  std::vector<std::size_t> owner_start;      ///< owner u's entries start at owner_start[u] (n + 1)

  // The influence as a checkpoint stores it (StreamState): the owners' blocks one after the
  // other, each row-major.
  static const char* influence_entry() { return "kept"; }
  std::vector<Index> influence_shape() const { return {Index(influence_values())}; }
  std::size_t influence_values() const { return owner_start.empty() ? 0 : owner_start.back(); }
  void write_influence(std::size_t first, const Scalar* values, std::size_t count) {
    std::size_t u = std::size_t(std::upper_bound(owner_start.begin(), owner_start.end(), first) - owner_start.begin()) - 1;
    while (count > 0) {
      auto& M = owners[u].M;
      const std::size_t at = first - owner_start[u];
      const std::size_t take = std::min(count, std::size_t(M.size()) - at);
      std::copy(values, values + take, M.data() + at);
      values += take;
      first += take;
      count -= take;
      ++u;
    }
  }
  template <typename F>
  void for_each_influence_segment(F&& f) const {
    for (const auto& b : owners)
      if (b.M.size() > 0) f(b.M.data(), Index(b.M.size()));
  }
};

}  // namespace detail

/// @brief SnAp-n learner with the interface of Rtrl (LearnerBase, learner_base.hpp): step(x);
/// accumulate_gradient(dL/dy_t) (the top layer) or accumulate_gradient_at(k, dL/dy^k_t);
/// gradient() (one layer) or gradient(k). What is Snap's own: the kept pattern and its
/// propagation, below. The model is referenced, not copied: it must outlive this learner and
/// stay at one address (model.hpp).
/// @tparam Scalar float or double.
/// @tparam Surrogate pseudo-derivative policy (surrogate.hpp).
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class Snap : public LearnerBase<Snap<Scalar, Surrogate>, Scalar, Surrogate, detail::SnapLayer<Scalar>> {
  using Base = LearnerBase<Snap<Scalar, Surrogate>, Scalar, Surrogate, detail::SnapLayer<Scalar>>;
  using Layer = detail::SnapLayer<Scalar>;
  using Owner = detail::SnapOwner<Scalar>;

 public:
  using typename Base::Model;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Block = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  /// SnAp-@p order over the stack's graph (SnapCrossLayer::graph).
  Snap(Model& model, int order) : Snap(model, SnapOptions{order, SnapCrossLayer::graph}) {}

  /// @param options order >= 1 (else std::invalid_argument naming the value received) and the
  ///        cross-layer pattern. Tracks the kept parameters of @p model's masks.
  Snap(Model& model, SnapOptions options) : Base(model), options_(options) {
    const char* where = "sparse_rtrl::Snap::Snap()";
    if (options.order < 1) detail::fail(where, "order must be >= 1, received " + std::to_string(options.order));
    if (options.cross_layer != SnapCrossLayer::graph && options.cross_layer != SnapCrossLayer::none &&
        options.cross_layer != SnapCrossLayer::same_step)
      detail::fail(where, "cross_layer must be graph, none or same_step, received " +
                              std::to_string(int(options.cross_layer)));
    model.enforce_mask();
    this->shape_layers();
    Index columns = 0, rows = 0;
    for (Index k = 0; k < this->layers(); ++k) {
      Layer& l = this->layers_[std::size_t(k)];
      l.layout = InfluenceLayout(model.mask(k), l.events);
      l.offset = columns;
      l.row_offset = rows;
      columns += l.layout.columns();
      l.width = columns;
      rows += l.n;
      l.A.setZero(l.n, l.n);
      l.J.setZero(l.n, l.n);
      if (k > 0) {
        detail::connection_pattern(model.mask(k).W(), l.n, l.input_ptr, l.input_cols);
        l.B.setZero(l.n, l.d);
      }
    }
    rows_ = rows;
    this->grad_.setZero(columns);
    build_patterns();
  }
  /// A temporary model would be destroyed while referenced: refused at compile time.
  Snap(Model&& model, int order) = delete;
  Snap(Model&& model, SnapOptions options) = delete;

  int order() const { return options_.order; }
  const SnapOptions& options() const { return options_; }
  /// Row of unit 0 of layer k in the stack's rows (kept_rows()); unit i is row_offset(k) + i.
  Index row_offset(Index layer) const { return this->at(layer).row_offset; }
  /// Units over all layers.
  Index rows() const { return rows_; }

  /// Rows (of the stack, ascending) kept for the parameters feeding unit @p unit of layer
  /// @p layer and for its threshold: the pattern S(unit) of snap.hpp.
  const std::vector<Index>& kept_rows(Index layer, Index unit) const { return block(layer, unit).rows; }
  /// The same for a one-layer model (std::logic_error for a stack: pass the layer).
  const std::vector<Index>& kept_rows(Index unit) const {
    this->require_single_layer("sparse_rtrl::Snap::kept_rows()");
    return kept_rows(0, unit);
  }
  /// Influence entries kept, over all parameters (sum of |S(u)| x the columns owned by u).
  Index kept_entries() const {
    Index total = 0;
    for (const auto& l : this->layers_) total += Index(l.influence_values());
    return total;
  }
  /// Kept influence entries of the owners of layer k (the influence_values(k) of a StagedState).
  Index kept_entries(Index layer) const { return Index(this->at(layer).influence_values()); }
  /// The smallest order whose pattern (with this learner's cross_layer) is closed: every order
  /// from it on keeps the same rows. With SnapCrossLayer::graph, SnAp at this order is exact
  /// RTRL. Costs a breadth-first search from every unit.
  int covering_order() const {
    std::vector<Index> depth(std::size_t(rows_), -1), queue;
    Index deepest = 0;
    for (Index g = 0; g < rows_; ++g) {
      std::vector<Index> reached;
      search(g, std::numeric_limits<int>::max(), depth, queue, reached, &deepest);
    }
    return int(deepest) + 1;
  }

  /// Bytes of the kept influence entries.
  std::size_t influence_bytes() const { return sizeof(Scalar) * std::size_t(kept_entries()); }

 private:
  // ---- LearnerBase's hooks (learner_base.hpp). ----
  friend Base;
  static constexpr LearnerText text{"sparse_rtrl::Snap", "kept_rows(k, unit)", "SnAp's pattern follows the mask: construct a new Snap"};
  static bool event_sparse_forward() { return false; }
  static bool flush_subnormals() { return false; }
  /// A mask changed since construction is refused (std::logic_error): following it would need a
  /// new pattern and a rule for entries entering it (Rtrl follows mask changes exactly).
  void prepare_step(const char* where) { this->require_masks_unchanged(where); }
  /// The Jacobians of the step, then every owner's kept entries (in row order) and the counters.
  void propagate_step() {
    for (std::size_t k = 0; k < this->layers_.size(); ++k) build_jacobians(k);
    std::vector<WorkCounters>& w = this->last_layer_;
    for (std::size_t k = 0; k < this->layers_.size(); ++k) {
      const Layer& l = this->layers_[k];
      w[k] = this->step_work(k);
      for (Index j = 0; j < l.n; ++j) w[k].active_rows += l.cache.s_prev(j) != Scalar(0);
    }
    for (auto& l : this->layers_)
      for (auto& b : l.owners) propagate(b, w);
    this->finish_step();
  }
  void clear_influence() {
    for (auto& l : this->layers_)
      for (auto& b : l.owners) b.M.setZero();
  }
  /// The pattern is this learner's: a state can be staged only for the masks it was built for.
  std::vector<Layer> stage_layers(const std::vector<ParameterMask>& masks, bool zero_influence) const {
    for (std::size_t k = 0; k < this->layers_.size(); ++k)
      if (!(masks[k] == this->layout_mask(Index(k))))
        detail::fail("sparse_rtrl::Snap::stage_state()",
                     "layer " + std::to_string(k) +
                         ": the masks differ from those this Snap's pattern was built for (construct a new Snap)");
    std::vector<Layer> staged = this->layers_;
    for (auto& l : staged) {
      l.cache.set_zero();
      l.state.setZero();
      if (zero_influence)
        for (auto& b : l.owners) b.M.setZero();
    }
    return staged;
  }
  /// A staged state must have this learner's pattern: the same rows kept for every owner.
  void check_staged_layers(const std::vector<Layer>& staged, const char* where) const {
    for (std::size_t k = 0; k < this->layers_.size(); ++k) {
      const Layer& a = staged[k];
      const Layer& b = this->layers_[k];
      bool same = a.owners.size() == b.owners.size() && a.owner_start == b.owner_start;
      for (std::size_t u = 0; same && u < b.owners.size(); ++u)
        same = a.owners[u].rows == b.owners[u].rows && a.owners[u].M.rows() == b.owners[u].M.rows() &&
               a.owners[u].M.cols() == b.owners[u].M.cols();
      if (!same)
        detail::fail(where, "layer " + std::to_string(k) +
                                ": the state's kept pattern is not this Snap's (stage it with this learner's stage_state())");
    }
  }
  /// gradient_columns() not finite after a read-out: std::overflow_error naming where.
  [[noreturn]] void fail_non_finite_gradient(const char* where) const {
    throw std::overflow_error(std::string(where) +
                              ": the accumulated gradient is not finite (kept influence entries or loss gradients "
                              "too large); call zero_gradient() and reset()");
  }

  const Owner& block(Index layer, Index unit) const {
    const Layer& l = this->at(layer);
    if (unit < 0 || unit >= l.n)
      throw std::out_of_range("sparse_rtrl::Snap: unit must be in [0, " + std::to_string(l.n) + "), received " +
                              std::to_string(unit));
    return l.owners[std::size_t(unit)];
  }

  /// A^k_t, J^k_t and B^k_t of this step, on their patterns.
  void build_jacobians(std::size_t k) {
    Layer& l = this->layers_[k];
    const Index n = l.n;
    const auto& R = this->model_->parameters(Index(k)).R;
    const auto& ptr = l.layout.coupling_row_ptr();
    const auto& cols = l.layout.coupling_cols();
    for (Index i = 0; i < n; ++i) {
      l.J(i, i) = l.cache.decay(i);
      for (Index p = ptr[std::size_t(i)]; p < ptr[std::size_t(i + 1)]; ++p) {
        const Index j = cols[std::size_t(p)];
        const Scalar a = detail::coupling_entry(R, l.cache, n, i, j);
        l.A(i, j) = a;
        if (j == i)
          l.J(i, i) += a * l.cache.s_prev(j);
        else
          l.J(i, j) = a * l.cache.s_prev(j);
      }
    }
    if (k == 0) return;
    const auto& W = this->model_->parameters(Index(k)).W;
    for (Index i = 0; i < n; ++i) {
      const Scalar ar = l.cache.dc_da(i), az = l.cache.dc_da(n + i), ag = l.cache.dc_da(2 * n + i);
      for (Index p = l.input_ptr[std::size_t(i)]; p < l.input_ptr[std::size_t(i + 1)]; ++p) {
        const Index j = l.input_cols[std::size_t(p)];
        l.B(i, j) = ar * W(i, j) + az * W(n + i, j) + ag * W(2 * n + i, j);
      }
    }
  }

  /// One owner's kept entries, layer by layer from its own up (snap.hpp): the exact update of
  /// the kept rows of layer k from the kept rows of M^k_{t-1} (carried rows only) and of the
  /// already updated M^{k-1}_t, which is the exact update followed by the projection.
  void propagate(Owner& b, std::vector<WorkCounters>& w) {
    const Index m = b.layer, u = b.unit;
    const Index width = b.M.cols();
    const bool carry_up = options_.cross_layer != SnapCrossLayer::same_step;
    for (Index k = m; k < this->layers(); ++k) {
      const Index q = k - m;
      if (q + 1 >= Index(b.begin.size())) break;
      const Index a0 = b.begin[std::size_t(q)], r = b.begin[std::size_t(q + 1)] - a0;
      if (r == 0) continue;
      const Layer& l = this->layers_[std::size_t(k)];
      WorkCounters& lw = w[std::size_t(k)];
      auto out = tmp_.topLeftCorner(r, width);
      if (k == m || carry_up) {
        // J^k_t restricted to the kept rows: the rows outside are zero (projected at t - 1).
        for (Index a = 0; a < r; ++a)
          for (Index c = 0; c < r; ++c)
            Jsub_(a, c) = l.J(b.rows[std::size_t(a0 + a)] - l.row_offset, b.rows[std::size_t(a0 + c)] - l.row_offset);
        out.noalias() = Jsub_.topLeftCorner(r, r) * b.M.middleRows(a0, r);
        lw.propagation_fma += std::uint64_t(r) * std::uint64_t(r) * std::uint64_t(width);
      } else {
        out.setZero();
      }
      if (k > m) {
        // + B^k_t D^{k-1, m}_t over the kept rows of layer k - 1 (updated this step).
        const Layer& below = this->layers_[std::size_t(k - 1)];
        const Index c0 = b.begin[std::size_t(q - 1)], rb = a0 - c0;
        if (rb > 0) {
          for (Index a = 0; a < r; ++a)
            for (Index c = 0; c < rb; ++c) {
              const Index j = b.rows[std::size_t(c0 + c)] - below.row_offset;
              Bsub_(a, c) = l.B(b.rows[std::size_t(a0 + a)] - l.row_offset, j) * below.cache.s(j);
            }
          out.noalias() += Bsub_.topLeftCorner(r, rb) * b.M.middleRows(c0, rb);
          const std::uint64_t fma = std::uint64_t(r) * std::uint64_t(rb) * std::uint64_t(width);
          lw.cross_layer_fma += fma;
          lw.propagation_fma += fma;
        }
        if (k - 1 == m && b.theta) {
          // The direct threshold term of D^{m,m}: dy^m_u/dtheta_u = -c psi, through B^{m+1}[:, u].
          const Scalar cp = below.cache.c(u) * below.cache.psi(u);
          if (cp != Scalar(0))
            for (Index a = 0; a < r; ++a) out(a, b.parameters) -= l.B(b.rows[std::size_t(a0 + a)] - l.row_offset, u) * cp;
        }
      }
      b.M.middleRows(a0, r) = out;
      if (k == m) {
        // + Mbar^m_t: the owner's weights and biases act on its own row only; theta_u also on
        // the rows that read y_u (A_t's column u), kept ones only.
        detail::add_unit_immediate_jacobian(l.layout, l.cache, u, b.M.row(b.self).data(), 0);
        if (b.theta) {
          b.M(b.self, b.parameters) +=
              detail::threshold_reset_entry(l.cache, this->model_->parameters(Index(k)).theta, u);
          const Scalar cpsi = l.cache.c_prev(u) * l.cache.psi_prev(u);
          if (cpsi != Scalar(0))
            for (Index a = 0; a < r; ++a) {
              const Scalar coupling = l.A(b.rows[std::size_t(a0 + a)] - l.row_offset, u);
              if (coupling != Scalar(0)) b.M(a0 + a, b.parameters) -= coupling * cpsi;
            }
        }
      }
    }
  }

  /// gradient += (dL/dc^k_t)^T over the kept rows of layer k of every owner in layers <= k, plus
  /// theta^k's direct term.
  /// Returns its multiply-adds (LearnerBase counts them).
  std::uint64_t read_out(std::size_t k) {
    const Layer& l = this->layers_[k];
    std::uint64_t fma = 0;
    for (std::size_t m = 0; m <= k; ++m)  // owners in row order, as they are stored
    for (const auto& b : this->layers_[m].owners) {
      const std::size_t q = k - std::size_t(b.layer);
      if (q + 1 >= b.begin.size()) continue;
      const Layer& owner = this->layers_[std::size_t(b.layer)];
      const Index first = owner.offset + owner.layout.unit_begin(b.unit);
      for (Index a = b.begin[q]; a < b.begin[q + 1]; ++a) {
        const Scalar g = l.dL_dc(b.rows[std::size_t(a)] - l.row_offset);
        if (g == Scalar(0)) continue;
        this->grad_.segment(first, b.parameters) += g * b.M.row(a).head(b.parameters).transpose();
        if (b.theta) this->grad_(owner.offset + owner.layout.theta_column(b.unit)) += g * b.M(a, b.parameters);
        fma += std::uint64_t(b.M.cols());
      }
    }
    if (l.layout.tracks_theta())
      for (Index j = 0; j < l.n; ++j) this->grad_(l.offset + l.layout.theta_column(j)) += l.theta_direct(j);
    return fma;
  }

  /// Edges of the stack's graph from row g: recurrent successors (same layer, one step later)
  /// and cross-layer successors (the layer above, same step).
  void build_graph() {
    recurrent_.assign(std::size_t(rows_), {});
    upward_.assign(std::size_t(rows_), {});
    for (const Layer& l : this->layers_) {
      const auto& ptr = l.layout.coupling_row_ptr();
      const auto& cols = l.layout.coupling_cols();
      for (Index i = 0; i < l.n; ++i)
        for (Index p = ptr[std::size_t(i)]; p < ptr[std::size_t(i + 1)]; ++p)
          recurrent_[std::size_t(l.row_offset + cols[std::size_t(p)])].push_back(l.row_offset + i);
    }
    for (std::size_t k = 1; k < this->layers_.size(); ++k) {
      const Layer& l = this->layers_[k];
      const Index below = this->layers_[k - 1].row_offset;
      for (Index i = 0; i < l.n; ++i)
        for (Index p = l.input_ptr[std::size_t(i)]; p < l.input_ptr[std::size_t(i + 1)]; ++p)
          upward_[std::size_t(below + l.input_cols[std::size_t(p)])].push_back(l.row_offset + i);
    }
  }

  /// The pattern of row g with this learner's cross_layer, at most @p order - 1 hops (of the
  /// edges that count as hops), breadth first; stops when nothing new is reached. @p depth
  /// (size rows_, all -1) is restored before returning; @p deepest, if given, grows to the
  /// largest hop count reached.
  void search(Index g, int order, std::vector<Index>& depth, std::vector<Index>& queue, std::vector<Index>& reached,
              Index* deepest) const {
    const bool cross_hops = options_.cross_layer == SnapCrossLayer::graph;
    const Index limit = Index(order) - 1;
    queue.clear();
    queue.push_back(g);
    depth[std::size_t(g)] = 0;
    for (std::size_t head = 0; head < queue.size(); ++head) {
      const Index v = queue[head];
      const Index dv = depth[std::size_t(v)];
      if (deepest) *deepest = std::max(*deepest, dv);
      if (dv >= limit) continue;
      auto visit = [&](Index target) {
        if (depth[std::size_t(target)] >= 0) return;
        depth[std::size_t(target)] = dv + 1;
        queue.push_back(target);
      };
      for (Index i : recurrent_[std::size_t(v)]) visit(i);
      if (cross_hops)
        for (Index i : upward_[std::size_t(v)]) visit(i);
    }
    reached = queue;
    if (options_.cross_layer == SnapCrossLayer::same_step) {
      // The layers above, reached through W edges from the owner's layer, at any depth: the
      // units this step's cross-layer term reaches.
      for (std::size_t head = 0; head < reached.size(); ++head)
        for (Index i : upward_[std::size_t(reached[head])])
          if (depth[std::size_t(i)] < 0) {
            depth[std::size_t(i)] = 0;
            reached.push_back(i);
          }
    }
    for (Index v : reached) depth[std::size_t(v)] = -1;
    std::sort(reached.begin(), reached.end());
  }

  /// The patterns of every owner, counted before anything large is allocated: SnAp-n of a
  /// dense n = 3000 layer keeps n x P entries, as many as exact RTRL (300 GB), and would be
  /// ended by the OOM killer while zeroing them. The count stops as soon as it passes the
  /// machine's memory (detail::require_memory, as Rtrl and RtrlStreams do), so the refusal
  /// costs a few searches, not all of them.
  void build_patterns() {
    const char* where = "sparse_rtrl::Snap::Snap()";
    build_graph();
    for (Layer& l : this->layers_) l.owners.resize(std::size_t(l.n));
    std::vector<Index> depth(std::size_t(rows_), -1), queue;
    Index widest = 1, largest = 1;
    // The n x n Jacobians A, J (and B) per layer, allocated by the constructor, count too.
    double bytes = 0;
    for (const Layer& l : this->layers_) bytes += double(sizeof(Scalar)) * double(l.n) * double(2 * l.n + l.d);
    const double limit = detail::memory_limit_bytes();
    const auto sizes = [&] {
      return std::to_string(rows_) + " units in " + std::to_string(this->layers()) + " layer(s), " +
             std::to_string(this->layers_.back().width) + " parameter columns, order " + std::to_string(options_.order);
    };
    for (Index m = 0; m < this->layers(); ++m) {
      const Layer& l = this->layers_[std::size_t(m)];
      for (Index u = 0; u < l.n; ++u) {
        Owner& b = this->layers_[std::size_t(m)].owners[std::size_t(u)];
        b.layer = m;
        b.unit = u;
        search(l.row_offset + u, options_.order, depth, queue, b.rows, nullptr);
        b.self = Index(std::lower_bound(b.rows.begin(), b.rows.end(), l.row_offset + u) - b.rows.begin());
        b.begin.clear();
        for (Index k = m; k <= this->layers(); ++k) {
          const Index first = k < this->layers() ? this->layers_[std::size_t(k)].row_offset : rows_;
          b.begin.push_back(Index(std::lower_bound(b.rows.begin(), b.rows.end(), first) - b.rows.begin()));
        }
        b.parameters = l.layout.unit_end(u) - l.layout.unit_begin(u);
        b.theta = l.layout.tracks_theta();
        bytes += double(sizeof(Scalar)) * double(b.rows.size()) * double(b.parameters + (b.theta ? 1 : 0));
        if (bytes > limit)
          detail::require_memory(where, "SnAp-" + std::to_string(options_.order) + "'s kept influence entries", bytes,
                                 sizes(), "use a lower order, fewer units or a sparser mask", /*at_least=*/true);
      }
    }
    try {
      for (Layer& l : this->layers_) {
        l.owner_start.assign(1, 0);
        for (Owner& b : l.owners) {
          b.M.setZero(Index(b.rows.size()), b.parameters + (b.theta ? 1 : 0));
          l.owner_start.push_back(l.owner_start.back() + std::size_t(b.M.size()));
          widest = std::max(widest, b.M.cols());
          for (std::size_t q = 0; q + 1 < b.begin.size(); ++q) largest = std::max(largest, b.begin[q + 1] - b.begin[q]);
        }
      }
      Jsub_.setZero(largest, largest);
      Bsub_.setZero(largest, largest);
      tmp_.setZero(largest, widest);
    } catch (const std::bad_alloc&) {
      // Under the machine's memory but over what the process may take (ulimit -v).
      throw std::length_error(std::string(where) + ": cannot allocate SnAp's kept influence entries of " +
                              std::to_string(bytes / 1e9) + " GB (" + sizes() +
                              "); use a lower order, fewer units or a sparser mask");
    }
  }

  SnapOptions options_;
  Index rows_ = 0;
  std::vector<std::vector<Index>> recurrent_, upward_;
  Matrix Jsub_, Bsub_;
  Block tmp_;
};

}  // namespace sparse_rtrl
