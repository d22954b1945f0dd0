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
#include <sparse_rtrl/model/egru_cell.hpp>
#include <sparse_rtrl/model/influence_layout.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>
#include <sparse_rtrl/learners/work_counters.hpp>

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

/// @brief SnAp-n learner with the interface of Rtrl: step(x); accumulate_gradient(dL/dy_t) (the
/// top layer) or accumulate_gradient_at(k, dL/dy^k_t); gradient() (one layer) or gradient(k).
/// The model is referenced, not copied: it must outlive this learner and stay at one address
/// (model.hpp).
/// @tparam Scalar float or double.
/// @tparam Surrogate pseudo-derivative policy (surrogate.hpp).
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class Snap {
 public:
  using Model = sparse_rtrl::Model<Scalar, Surrogate>;
  using Cell = EgruCell<Scalar, Surrogate>;
  using Parameters = EgruParameters<Scalar>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Block = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  /// SnAp-@p order over the stack's graph (SnapCrossLayer::graph).
  Snap(Model& model, int order) : Snap(model, SnapOptions{order, SnapCrossLayer::graph}) {}

  /// @param options order >= 1 (else std::invalid_argument naming the value received) and the
  ///        cross-layer pattern. Tracks the kept parameters of @p model's masks.
  Snap(Model& model, SnapOptions options) : model_(&model), options_(options) {
    const char* where = "sparse_rtrl::Snap::Snap()";
    if (options.order < 1) detail::fail(where, "order must be >= 1, received " + std::to_string(options.order));
    if (options.cross_layer != SnapCrossLayer::graph && options.cross_layer != SnapCrossLayer::none &&
        options.cross_layer != SnapCrossLayer::same_step)
      detail::fail(where, "cross_layer must be graph, none or same_step, received " +
                              std::to_string(int(options.cross_layer)));
    model.enforce_mask();
    mask_version_ = model.mask_version();
    const Index L = model.layers();
    layers_.resize(std::size_t(L));
    Index columns = 0, rows = 0;
    for (Index k = 0; k < L; ++k) {
      Layer& l = layers_[std::size_t(k)];
      l.n = model.units(k);
      l.d = model.cell(k).inputs();
      l.events = model.events(k);
      l.layout = InfluenceLayout(model.mask(k), l.events);
      l.column_offset = columns;
      l.row_offset = rows;
      columns += l.layout.columns();
      rows += l.n;
      l.cache.resize(l.n, l.d);
      l.cache.set_zero();  // defined values before the first step (a checkpoint saves them)
      l.next.resize(l.n, l.d);
      l.state.setZero(l.n);
      l.dL_dc.setZero(l.n);
      l.theta_direct.setZero(l.n);
      l.A.setZero(l.n, l.n);
      l.J.setZero(l.n, l.n);
      if (k > 0) {
        connection_pattern(model.mask(k).W(), l.n, l.input_ptr, l.input_cols);
        l.B.setZero(l.n, l.d);
      }
    }
    columns_ = columns;
    rows_ = rows;
    grad_.setZero(columns);
    build_patterns();
    last_layer_.resize(std::size_t(L));
    total_layer_.resize(std::size_t(L));
  }
  /// A temporary model would be destroyed while referenced: refused at compile time.
  Snap(Model&& model, int order) = delete;
  Snap(Model&& model, SnapOptions options) = delete;

  /// Layers of the model (1 for a single cell).
  Index layers() const { return Index(layers_.size()); }
  /// Units of the output layer (the top of a stack).
  Index units() const { return detail::live_back(layers_, "sparse_rtrl::Snap").n; }
  /// Units of layer k.
  Index units(Index layer) const { return at(layer).n; }
  Index inputs() const { return detail::live_front(layers_, "sparse_rtrl::Snap").d; }
  int order() const { return options_.order; }
  const SnapOptions& options() const { return options_; }
  Model& model() { return *model_; }
  const Model& model() const { return *model_; }
  const Cell& cell(Index layer = 0) const { return model_->cell(layer); }
  Cell& cell(Index layer = 0) { return model_->cell(layer); }
  const ParameterMask& mask(Index layer = 0) const { return model_->mask(layer); }
  /// Which parameter of layer k owns which of its columns (offset by column_offset(k)).
  /// After a change of the model's masks (pruning, Model::set_mask), layout(), column_offset()
  /// and columns() throw std::logic_error rather than report the old layout: SnAp's pattern
  /// follows the masks, so construct a new Snap.
  const InfluenceLayout& layout(Index layer = 0) const {
    require_mask_unchanged("sparse_rtrl::Snap::layout()");
    return at(layer).layout;
  }
  /// First column of layer k's parameters in gradient_columns().
  Index column_offset(Index layer) const {
    require_mask_unchanged("sparse_rtrl::Snap::column_offset()");
    return at(layer).column_offset;
  }
  /// Columns over all layers (the size of gradient_columns()).
  Index columns() const {
    require_mask_unchanged("sparse_rtrl::Snap::columns()");
    return columns_;
  }
  /// Row of unit 0 of layer k in the stack's rows (kept_rows()); unit i is row_offset(k) + i.
  Index row_offset(Index layer) const { return at(layer).row_offset; }
  /// Units over all layers.
  Index rows() const { return rows_; }

  /// Rows (of the stack, ascending) kept for the parameters feeding unit @p unit of layer
  /// @p layer and for its threshold: the pattern S(unit) of snap.hpp.
  const std::vector<Index>& kept_rows(Index layer, Index unit) const { return block(layer, unit).rows; }
  /// The same for a one-layer model (std::logic_error for a stack: pass the layer).
  const std::vector<Index>& kept_rows(Index unit) const {
    require_single_layer("sparse_rtrl::Snap::kept_rows()");
    return kept_rows(0, unit);
  }
  /// Influence entries kept, over all parameters (sum of |S(u)| x the columns owned by u).
  Index kept_entries() const {
    Index total = 0;
    for (const auto& b : blocks_) total += b.M.size();
    return total;
  }
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

  /// Starts a new sequence from c_0 = 0 in every layer: clears the kept influence entries. Keeps
  /// the gradient.
  void reset() {
    if (layers_.empty()) detail::fail_moved_from("sparse_rtrl::Snap::reset()");
    for (auto& l : layers_) l.state.setZero();
    for (auto& b : blocks_) b.M.setZero();
    steps_ = 0;
    steps_valid_ = true;
  }

  /// @brief Advances every layer's state and kept influence entries for input x_t (size d,
  /// finite). A changed shape or mode of the model, or a non-finite state, throws
  /// std::invalid_argument before anything of the learner changes; a mask changed since
  /// construction throws std::logic_error.
  template <typename X>
  void step(const Eigen::MatrixBase<X>& x) {
    const char* where = "sparse_rtrl::Snap::step()";
    detail::require_vector(where, "x", x, inputs());
    detail::require_finite(where, "x", x);
    if (mask_version_ != model_->mask_version())
      throw std::logic_error(std::string(where) + ": the model's mask changed since this Snap was built; "
                             "SnAp's pattern follows the mask: construct a new Snap");
    require_parameter_shapes(where);
    model_->enforce_mask();
    // Into the next caches first: a refused step leaves the learner exactly as it was.
    if (!detail::forward_into_next(layers_, *model_, x, /*event_sparse=*/false))
      detail::fail_non_finite_state(where, *model_);
    detail::commit_next(layers_);
    steps_valid_ = true;
    for (std::size_t k = 0; k < layers_.size(); ++k) build_jacobians(k);
    std::vector<WorkCounters>& w = last_layer_;
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const Layer& l = layers_[k];
      WorkCounters& lw = w[k];
      lw = WorkCounters{};
      lw.steps = 1;
      lw.units = std::uint64_t(l.n);
      for (Index j = 0; j < l.n; ++j) {
        lw.event_units += l.cache.o_prev(j) != Scalar(0);
        lw.active_rows += l.cache.s_prev(j) != Scalar(0);
      }
      std::uint64_t dense_width = 0;
      for (std::size_t m = 0; m <= k; ++m) dense_width += std::uint64_t(layers_[m].layout.dense_columns());
      const std::uint64_t n = std::uint64_t(l.n);
      lw.dense_propagation_fma = (n * n + n) * dense_width;
      if (k > 0) {
        lw.dense_cross_layer_fma =
            n * std::uint64_t(layers_[k - 1].n) * (dense_width - std::uint64_t(l.layout.dense_columns()));
        lw.dense_propagation_fma += lw.dense_cross_layer_fma;
      }
    }
    for (auto& b : blocks_) propagate(b, w);
    for (std::size_t k = 0; k < layers_.size(); ++k) layers_[k].state = layers_[k].cache.c;
    ++steps_;
    last_ = WorkCounters{};
    last_.steps = 1;
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      total_layer_[k] += w[k];
      WorkCounters lw = w[k];
      lw.steps = 0;
      last_ += lw;
    }
    total_ += last_;
  }

  /// @brief Adds the gradient of a loss on this step's output of the top layer, given dL/dy_t
  /// (finite, of the top layer's size): (dL/dc_t)^T M_t over the kept entries, plus theta's
  /// direct term (as Rtrl).
  template <typename G>
  void accumulate_gradient(const Eigen::MatrixBase<G>& dL_dy) {
    accumulate_gradient_at(layers() - 1, dL_dy);
  }
  /// The same for a loss on the top layer's output and events (dL/do_t, e.g. an activity
  /// regulariser), as Rtrl.
  template <typename G, typename GO>
  void accumulate_gradient(const Eigen::MatrixBase<G>& dL_dy, const Eigen::MatrixBase<GO>& dL_do) {
    accumulate_gradient_at(layers() - 1, dL_dy, dL_do);
  }
  /// A loss on layer k's output y^k_t (size n_k): it reaches the parameters of the layers m <= k
  /// whose pattern holds rows of layer k.
  template <typename G>
  void accumulate_gradient_at(Index layer, const Eigen::MatrixBase<G>& dL_dy) {
    const char* where = "sparse_rtrl::Snap::accumulate_gradient()";
    Layer& l = at(layer);
    require_stepped(where);
    detail::require_vector(where, "dL_dy", dL_dy, l.n);
    detail::require_finite(where, "dL_dy", dL_dy);
    for (Index i = 0; i < l.n; ++i) {
      l.dL_dc(i) = dL_dy(i) * l.cache.s(i);
      l.theta_direct(i) = -dL_dy(i) * l.cache.c(i) * l.cache.psi(i);
    }
    read_out(std::size_t(layer));
  }
  /// A loss on layer k's output and events: dL/dc = dL/dy s + dL/do psi, theta's direct term
  /// -(dL/dy c + dL/do) psi.
  template <typename G, typename GO>
  void accumulate_gradient_at(Index layer, const Eigen::MatrixBase<G>& dL_dy, const Eigen::MatrixBase<GO>& dL_do) {
    const char* where = "sparse_rtrl::Snap::accumulate_gradient()";
    Layer& l = at(layer);
    require_stepped(where);
    detail::require_vector(where, "dL_dy", dL_dy, l.n);
    detail::require_finite(where, "dL_dy", dL_dy);
    detail::require_vector(where, "dL_do", dL_do, l.n);
    detail::require_finite(where, "dL_do", dL_do);
    for (Index i = 0; i < l.n; ++i) {
      l.dL_dc(i) = dL_dy(i) * l.cache.s(i) + dL_do(i) * l.cache.psi(i);
      l.theta_direct(i) = -(dL_dy(i) * l.cache.c(i) + dL_do(i)) * l.cache.psi(i);
    }
    read_out(std::size_t(layer));
  }

  /// The accumulated gradient of a one-layer model, in parameter layout (pruned entries zero).
  /// A stack has one per layer: gradient(k) (here std::logic_error).
  Parameters gradient() const {
    require_single_layer("sparse_rtrl::Snap::gradient()");
    return gradient(Index(0));
  }
  /// Allocation-free form (one-layer model): writes into @p out (resized if its shapes differ).
  void gradient(Parameters& out) const {
    require_single_layer("sparse_rtrl::Snap::gradient()");
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
    l.layout.scatter(grad_.segment(l.column_offset, l.layout.columns()), out);
  }
  /// The accumulated gradient per column (size columns(), all layers).
  const Vector& gradient_columns() const { return grad_; }
  void zero_gradient() { grad_.setZero(); }

  /// c_t of the output layer (of layer k).
  const Vector& state() const { return detail::live_back(layers_, "sparse_rtrl::Snap").state; }
  const Vector& state(Index layer) const { return at(layer).state; }
  /// y_t of the last step, of the output layer (of layer k).
  const Vector& output() const { return detail::live_back(layers_, "sparse_rtrl::Snap").cache.y; }
  const Vector& output(Index layer) const { return at(layer).cache.y; }
  /// o_t of the last step.
  const Vector& events() const { return detail::live_back(layers_, "sparse_rtrl::Snap").cache.o; }
  const Vector& events(Index layer) const { return at(layer).cache.o; }
  Index steps() const { return steps_; }

  /// Bytes of the kept influence entries.
  std::size_t influence_bytes() const { return sizeof(Scalar) * std::size_t(kept_entries()); }

  /// Work of the last step / since reset_work(), over all layers (the cross-layer products are
  /// in propagation_fma and also in cross_layer_fma), and per layer k (its rows).
  const WorkCounters& last_step_work() const { return last_; }
  const WorkCounters& total_work() const { return total_; }
  const WorkCounters& last_step_work(Index layer) const { return last_layer_[std::size_t(check_layer(layer))]; }
  const WorkCounters& total_work(Index layer) const { return total_layer_[std::size_t(check_layer(layer))]; }
  void reset_work() {
    total_ = WorkCounters{};
    for (auto& w : total_layer_) w = WorkCounters{};
  }

  /// @brief The state a checkpoint restores (io/checkpoint.hpp): every layer's c and last step
  /// cache, the kept influence entries of the owners of each layer (flat: owner by owner in unit
  /// order, each block |S(u)| x its columns row by row), the gradient, step and work counters.
  /// Sized by stage_state() for this learner's pattern; restore_state() checks the sizes.
  struct StagedState {
    std::vector<Vector> state;
    std::vector<EgruStepCache<Scalar>> cache;
    std::vector<Vector> kept;  ///< per layer: kept_entries of its owners, see above
    Vector gradient;
    Index steps = 0;
    bool steps_valid = true;
    WorkCounters last_work, total_work;
    std::vector<WorkCounters> layer_last_work, layer_total_work;
  };
  /// Kept influence entries of the owners of layer k (the size of StagedState::kept[k]).
  Index kept_entries(Index layer) const {
    const Layer& l = at(layer);
    Index total = 0;
    for (Index u = 0; u < l.n; ++u) total += blocks_[std::size_t(l.row_offset + u)].M.size();
    return total;
  }
  /// A copy of the current state, shaped for this learner (to be overwritten by a loader).
  StagedState stage_state() const {
    StagedState st;
    for (Index k = 0; k < layers(); ++k) {
      const Layer& l = layers_[std::size_t(k)];
      st.state.push_back(l.state);
      st.cache.push_back(l.cache);
      Vector kept(kept_entries(k));
      Index at_entry = 0;
      for (Index u = 0; u < l.n; ++u) {
        const Block& M = blocks_[std::size_t(l.row_offset + u)].M;
        std::copy(M.data(), M.data() + M.size(), kept.data() + at_entry);
        at_entry += M.size();
      }
      st.kept.push_back(std::move(kept));
    }
    st.gradient = grad_;
    st.steps = steps_;
    st.steps_valid = steps_valid_;
    st.last_work = last_;
    st.total_work = total_;
    st.layer_last_work = last_layer_;
    st.layer_total_work = total_layer_;
    return st;
  }
  /// @brief The checks of restore_state() (std::invalid_argument naming the entry as a
  /// checkpoint names it after @p prefix): sizes for this learner's pattern, every value finite,
  /// steps in [0, 2^53]. A loader calls it while staging, before anything is committed.
  void validate_state(const StagedState& st, const char* where, const std::string& prefix = "") const {
    const auto n_layers = std::size_t(layers());
    if (st.state.size() != n_layers || st.cache.size() != n_layers || st.kept.size() != n_layers ||
        st.layer_last_work.size() != n_layers || st.layer_total_work.size() != n_layers)
      detail::fail(where, "the state is for " + std::to_string(st.state.size()) + " layers, this learner has " +
                              std::to_string(layers()));
    if (st.gradient.size() != columns_)
      detail::fail(where, "the gradient has " + std::to_string(st.gradient.size()) + " columns, expected " +
                              std::to_string(columns_));
    detail::require_step_count(where, prefix + "steps", std::int64_t(st.steps));
    if (!st.gradient.allFinite()) detail::require_finite(where, (prefix + "gradient").c_str(), st.gradient);
    for (Index k = 0; k < layers(); ++k) {
      const Layer& l = layers_[std::size_t(k)];
      const std::size_t q = std::size_t(k);
      const std::string layer = "layer " + std::to_string(k) + ": ";
      if (st.state[q].size() != l.n)
        detail::fail(where, layer + "c has " + std::to_string(st.state[q].size()) + " units, expected " +
                                std::to_string(l.n));
      if (st.kept[q].size() != kept_entries(k))
        detail::fail(where, layer + std::to_string(st.kept[q].size()) + " kept influence entries, this pattern keeps " +
                                std::to_string(kept_entries(k)));
      if (!cache_has_shape(st.cache[q], l.n, l.d))
        detail::fail(where, layer + "the step cache has another shape than n = " + std::to_string(l.n) +
                                ", d = " + std::to_string(l.d));
      // Values no learner can hold, named as a checkpoint names the entry (after prefix).
      const std::string p = prefix + "l" + std::to_string(k) + "/";
      if (!st.state[q].allFinite()) detail::require_finite(where, (p + "state").c_str(), st.state[q]);
      if (!st.kept[q].allFinite()) detail::require_finite(where, (p + "kept").c_str(), st.kept[q]);
      detail::require_finite_cache(where, p, st.cache[q]);
    }
  }

  /// @brief Installs @p st, all or nothing: every size is checked against this learner's
  /// pattern first (std::invalid_argument, nothing changed), then swapped / copied in place
  /// (no allocation). The pattern stays this learner's: the model's masks must be the ones it
  /// was built for.
  void restore_state(StagedState&& st) {
    validate_state(st, "sparse_rtrl::Snap::restore_state()");
    for (Index k = 0; k < layers(); ++k) {
      Layer& l = layers_[std::size_t(k)];
      const std::size_t q = std::size_t(k);
      l.state.swap(st.state[q]);
      std::swap(l.cache, st.cache[q]);
      Index at_entry = 0;
      for (Index u = 0; u < l.n; ++u) {
        Block& M = blocks_[std::size_t(l.row_offset + u)].M;
        std::copy(st.kept[q].data() + at_entry, st.kept[q].data() + at_entry + M.size(), M.data());
        at_entry += M.size();
      }
    }
    grad_.swap(st.gradient);
    steps_ = st.steps;
    steps_valid_ = st.steps_valid;
    last_ = st.last_work;
    total_ = st.total_work;
    last_layer_.swap(st.layer_last_work);
    total_layer_.swap(st.layer_total_work);
  }
  /// Whether the model's masks are still those this learner's pattern was built for.
  bool mask_followed() const { return mask_version_ == model_->mask_version(); }

 private:
  struct Layer {
    Index n = 0, d = 0;
    bool events = true;
    InfluenceLayout layout;
    Index column_offset = 0, row_offset = 0;
    EgruStepCache<Scalar> cache;
    EgruStepCache<Scalar> next;  ///< the step being computed (detail::forward_into_next)
    Vector state, dL_dc, theta_direct;
    /// A_t = dc_t/dy_{t-1} and J_t = diag(decay) + A_t diag(s_{t-1}), n x n, written on R's
    /// coupling pattern only (zero elsewhere from construction on). Row-major: written row by row.
    Block A, J;
    /// B^k_t = dc^k_t/dy^{k-1}_t (k > 0), n x n_{k-1}, written on W's connection pattern only.
    Block B;
    std::vector<Index> input_ptr, input_cols;  ///< W's connection pattern, CSR by target unit
  };

  /// The kept influence entries of the parameters feeding one unit (the owner).
  struct OwnerBlock {
    Index layer = 0, unit = 0;
    std::vector<Index> rows;   ///< S(unit): rows of the stack, ascending (so grouped by layer)
    std::vector<Index> begin;  ///< rows of layer layer + q are [begin[q], begin[q + 1])
    Index self = 0;            ///< position of the owner's own row in rows
    Index parameters = 0;      ///< columns of its weights and biases; + 1 for theta when tracked
    bool theta = false;
    Block M;                   ///< rows.size() x (parameters + theta)
  };

  static bool cache_has_shape(const EgruStepCache<Scalar>& c, Index n, Index d) {
    if (c.x.size() != d) return false;
    for (const Vector* v : {&c.c_prev, &c.o_prev, &c.y_prev, &c.h_prev, &c.psi_prev, &c.s_prev, &c.r, &c.z, &c.g,
                            &c.c, &c.o, &c.y, &c.psi, &c.s, &c.decay})
      if (v->size() != n) return false;
    for (const Vector* v : {&c.a, &c.q, &c.dc_da, &c.dc_dq})
      if (v->size() != 3 * n) return false;
    return true;
  }
  Layer& at(Index layer) { return layers_[std::size_t(check_layer(layer))]; }
  const Layer& at(Index layer) const { return layers_[std::size_t(check_layer(layer))]; }
  void require_mask_unchanged(const char* where) const {
    if (!mask_followed())
      throw std::logic_error(std::string(where) +
                             ": the model's mask changed since this Snap was built (pruning or Model::set_mask); "
                             "SnAp's pattern follows the mask: construct a new Snap");
  }
  Index check_layer(Index layer) const {
    if (layers_.empty()) detail::fail_moved_from("sparse_rtrl::Snap");
    if (layer < 0 || layer >= layers())
      throw std::out_of_range("sparse_rtrl::Snap: layer must be in [0, " + std::to_string(layers()) +
                              "), received " + std::to_string(layer));
    return layer;
  }
  const OwnerBlock& block(Index layer, Index unit) const {
    const Layer& l = at(layer);
    if (unit < 0 || unit >= l.n)
      throw std::out_of_range("sparse_rtrl::Snap: unit must be in [0, " + std::to_string(l.n) + "), received " +
                              std::to_string(unit));
    return blocks_[std::size_t(l.row_offset + unit)];
  }
  void require_single_layer(const char* where) const {
    if (layers_.empty()) detail::fail_moved_from(where);
    if (layers() != 1)
      throw std::logic_error(std::string(where) + ": the model is a stack of " + std::to_string(layers()) +
                             " layers: pass the layer (e.g. gradient(k), kept_rows(k, unit))");
  }
  void require_stepped(const char* where) const {
    if (steps_ == 0)
      throw std::logic_error(std::string(where) + ": call step() first: the loss is on y_t of a step");
    if (!steps_valid_) throw std::logic_error(std::string(where) + ": the last step() failed; step again first");
  }

  /// The model's parameters may be replaced through cell(): refuse other layer counts, modes or
  /// shapes than this learner's buffers have.
  void require_parameter_shapes(const char* where) const {
    if (layers_.empty()) detail::fail_moved_from(where);
    if (model_->layers() != layers())
      detail::fail(where, "the model has " + std::to_string(model_->layers()) + " layers, this learner was built for " +
                              std::to_string(layers()) + " (construct a new learner)");
    for (Index k = 0; k < layers(); ++k) {
      const Layer& l = layers_[std::size_t(k)];
      const std::string layer = layers() > 1 ? "layer " + std::to_string(k) + ": " : std::string();
      if (model_->events(k) != l.events)
        detail::fail(where, layer + "the model's cell changed mode since construction: it was built in " +
                                (l.events ? "events" : "GRU") + " mode, the model's cell is now in " +
                                (l.events ? "GRU" : "events") + " mode (construct a new learner)");
      if (!model_->parameters(k).has_shape(l.n, l.d))
        detail::fail(where, layer + "the model's parameters changed shape since construction: expected n = " +
                                std::to_string(l.n) + ", d = " + std::to_string(l.d) + ", received " +
                                model_->parameters(k).shape_string());
    }
  }

  /// CSR of the connections input j -> unit i kept in any of W's three gate blocks.
  static void connection_pattern(const ParameterMask::BoolMatrix& keep, Index n, std::vector<Index>& ptr,
                                 std::vector<Index>& cols) {
    ptr.assign(std::size_t(n + 1), 0);
    cols.clear();
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < keep.cols(); ++j)
        if (keep(i, j) || keep(n + i, j) || keep(2 * n + i, j)) cols.push_back(j);
      ptr[std::size_t(i + 1)] = Index(cols.size());
    }
  }

  /// A^k_t, J^k_t and B^k_t of this step, on their patterns.
  void build_jacobians(std::size_t k) {
    Layer& l = layers_[k];
    const Index n = l.n;
    const auto& R = model_->parameters(Index(k)).R;
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
    const auto& W = model_->parameters(Index(k)).W;
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
  void propagate(OwnerBlock& b, std::vector<WorkCounters>& w) {
    const Index m = b.layer, u = b.unit;
    const Index width = b.M.cols();
    const bool carry_up = options_.cross_layer != SnapCrossLayer::same_step;
    for (Index k = m; k < layers(); ++k) {
      const Index q = k - m;
      if (q + 1 >= Index(b.begin.size())) break;
      const Index a0 = b.begin[std::size_t(q)], r = b.begin[std::size_t(q + 1)] - a0;
      if (r == 0) continue;
      const Layer& l = layers_[std::size_t(k)];
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
        const Layer& below = layers_[std::size_t(k - 1)];
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
              detail::threshold_reset_entry(l.cache, model_->parameters(Index(k)).theta, u);
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
  void read_out(std::size_t k) {
    const Layer& l = layers_[k];
    std::uint64_t fma = 0;
    for (const auto& b : blocks_) {
      if (std::size_t(b.layer) > k) break;  // blocks are in row order, so in layer order
      const std::size_t q = k - std::size_t(b.layer);
      if (q + 1 >= b.begin.size()) continue;
      const Layer& owner = layers_[std::size_t(b.layer)];
      const Index first = owner.column_offset + owner.layout.unit_begin(b.unit);
      for (Index a = b.begin[q]; a < b.begin[q + 1]; ++a) {
        const Scalar g = l.dL_dc(b.rows[std::size_t(a)] - l.row_offset);
        if (g == Scalar(0)) continue;
        grad_.segment(first, b.parameters) += g * b.M.row(a).head(b.parameters).transpose();
        if (b.theta) grad_(owner.column_offset + owner.layout.theta_column(b.unit)) += g * b.M(a, b.parameters);
        fma += std::uint64_t(b.M.cols());
      }
    }
    if (l.layout.tracks_theta())
      for (Index j = 0; j < l.n; ++j) grad_(l.column_offset + l.layout.theta_column(j)) += l.theta_direct(j);
    std::uint64_t dense_width = 0;
    for (std::size_t m = 0; m <= k; ++m) dense_width += std::uint64_t(layers_[m].layout.dense_columns());
    const std::uint64_t dense = std::uint64_t(l.n) * dense_width;
    for (WorkCounters* c : {&last_, &total_, &last_layer_[k], &total_layer_[k]}) {
      c->readout_fma += fma;
      c->dense_readout_fma += dense;
    }
  }

  /// Edges of the stack's graph from row g: recurrent successors (same layer, one step later)
  /// and cross-layer successors (the layer above, same step).
  void build_graph() {
    recurrent_.assign(std::size_t(rows_), {});
    upward_.assign(std::size_t(rows_), {});
    for (const Layer& l : layers_) {
      const auto& ptr = l.layout.coupling_row_ptr();
      const auto& cols = l.layout.coupling_cols();
      for (Index i = 0; i < l.n; ++i)
        for (Index p = ptr[std::size_t(i)]; p < ptr[std::size_t(i + 1)]; ++p)
          recurrent_[std::size_t(l.row_offset + cols[std::size_t(p)])].push_back(l.row_offset + i);
    }
    for (std::size_t k = 1; k < layers_.size(); ++k) {
      const Layer& l = layers_[k];
      const Index below = layers_[k - 1].row_offset;
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
    blocks_.resize(std::size_t(rows_));
    std::vector<Index> depth(std::size_t(rows_), -1), queue;
    Index widest = 1, largest = 1;
    // The n x n Jacobians A, J (and B) per layer, allocated by the constructor, count too.
    double bytes = 0;
    for (const Layer& l : layers_) bytes += double(sizeof(Scalar)) * double(l.n) * double(2 * l.n + l.d);
    const double limit = detail::memory_limit_bytes();
    const auto sizes = [&] {
      return std::to_string(rows_) + " units in " + std::to_string(layers()) + " layer(s), " +
             std::to_string(columns_) + " parameter columns, order " + std::to_string(options_.order);
    };
    for (Index m = 0; m < layers(); ++m) {
      const Layer& l = layers_[std::size_t(m)];
      for (Index u = 0; u < l.n; ++u) {
        OwnerBlock& b = blocks_[std::size_t(l.row_offset + u)];
        b.layer = m;
        b.unit = u;
        search(l.row_offset + u, options_.order, depth, queue, b.rows, nullptr);
        b.self = Index(std::lower_bound(b.rows.begin(), b.rows.end(), l.row_offset + u) - b.rows.begin());
        b.begin.clear();
        for (Index k = m; k <= layers(); ++k) {
          const Index first = k < layers() ? layers_[std::size_t(k)].row_offset : rows_;
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
      for (OwnerBlock& b : blocks_) {
        b.M.setZero(Index(b.rows.size()), b.parameters + (b.theta ? 1 : 0));
        widest = std::max(widest, b.M.cols());
        for (std::size_t q = 0; q + 1 < b.begin.size(); ++q) largest = std::max(largest, b.begin[q + 1] - b.begin[q]);
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

  Model* model_;
  SnapOptions options_;
  std::uint64_t mask_version_ = 0;
  std::vector<Layer> layers_;
  Index columns_ = 0, rows_ = 0;
  std::vector<std::vector<Index>> recurrent_, upward_;
  std::vector<OwnerBlock> blocks_;  ///< one per row of the stack, in row order
  Vector grad_;
  Matrix Jsub_, Bsub_;
  Block tmp_;
  Index steps_ = 0;
  bool steps_valid_ = true;
  WorkCounters last_, total_;
  std::vector<WorkCounters> last_layer_, total_layer_;
};

}  // namespace sparse_rtrl
