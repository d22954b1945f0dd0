/// @file rtrl.hpp
/// @brief Exact RTRL for EGRUs and stacks of them, with activity- and parameter-sparse
///        influence updates.
///
/// One layer: M_t = J_t M_{t-1} + Mbar_t,  J_t = diag(z (1 - theta psi_{t-1})) + A_t diag(s_{t-1})
/// (model.md "RTRL"; Subramoney 2023, Eq. 9). Nothing is approximated: the rows of M_{t-1} with
/// s_{t-1} = 0 are multiplied by zero, so skipping them changes no bit of the product's
/// mathematical value; pruned weights have no column.
///
/// A stack of L layers (model.md, "Stacked layers"): the influence matrix is block
/// lower-triangular. Layer k keeps M^k = [M^{k,0} ... M^{k,k}] (n_k rows; the columns of the
/// parameters of layers 0..k, in the learner's global column order) and updates it by
///   M^k_t = J^k_t M^k_{t-1} + [B^k_t D^{k-1}_t, Mbar^k_t],  D^{k-1}_t = diag(s^{k-1}_t) M^{k-1}_t
///   (+ the direct threshold term -c psi on theta^{k-1}'s own columns),
/// with B^k_t = dc^k_t/dy^{k-1}_t on W^k's pattern and on the active units of layer k-1 only
/// (s^{k-1}_t = 0 rows of D are zero). Exact through depth: the same gradient as BPTT.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/parallel/denormals.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/immediate_jacobian.hpp>
#include <sparse_rtrl/detail/influence_storage.hpp>
#include <sparse_rtrl/detail/learner_state.hpp>
#include <sparse_rtrl/detail/propagate.hpp>
#include <sparse_rtrl/parallel/thread_pool.hpp>
#include <sparse_rtrl/model/egru_cell.hpp>
#include <sparse_rtrl/model/influence_layout.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>
#include <sparse_rtrl/learners/column_partition.hpp>
#include <sparse_rtrl/learners/learner_base.hpp>
#include <sparse_rtrl/learners/work_counters.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {

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
  /// Record the seconds of each phase of the step and read-out (phase_times(): forward, coupling
  /// build, propagation, read-out, other): two clock reads per phase and layer, for benchmarks
  /// and profiling. Changes no result.
  bool time_phases = false;
};

namespace mpi {
template <typename Scalar, typename Surrogate>
class ShardedRtrl;
template <typename Scalar, typename Surrogate>
class GridCheckpoint;
}

/// @brief Which share of the influence columns a learner tracks: shard @c rank of @c ranks,
/// the column range ColumnPartition gives it for the model's current masks (re-cut when they
/// change). The default, 0 of 1, is every column. A shard with ranks > 1 is the local part of
/// the column-sharded learner of the MPI part (mpi::ShardedRtrl), which gathers its gradient.
struct ColumnShard {
  int rank = 0;
  int ranks = 1;
};

namespace detail {

/// One layer's stream state of an Rtrl learner: the shared part (LearnerLayer) and its influence
/// blocks with the step's couplings.
template <typename Scalar>
struct RtrlLayer : LearnerLayer<Scalar> {
  using Vector = typename LearnerLayer<Scalar>::Vector;
  Vector c_psi;                       ///< c_{t-1} psi_{t-1}: theta's path through y_{t-1}
  InfluenceStorage<Scalar> M;         ///< [M^{k,0} ... M^{k,k}], n x width, in column panels (of a
                                      ///< column shard: its window's columns of them)
  Coupling<Scalar> coupling;          ///< A_t diag(s_{t-1}) on the active rows
  std::vector<Scalar> a_values;       ///< A_t on R's pattern (row-compressed), where this step needs it
  std::vector<Index> next_entry;      ///< n fill cursors of the coupling's rows (build_coupling())
  std::vector<Index> readout_rows;    ///< n slots: rows with dL/dc != 0 of the current read-out
  std::vector<Scalar> readout_coef;   ///< their dL/dc
  // Cross-layer term (k > 0): B^k_t diag(s^{k-1}_t) on W^k's connection pattern (the union of
  // its three gate blocks) and the active units of layer k - 1, CSR by target row; sources
  // are rows of M^{k-1}.
  std::vector<Index> input_row_ptr, input_cols;
  Coupling<Scalar> cross;
  std::vector<Scalar> b_values;  ///< B_ij per pattern entry

  // The influence as a checkpoint stores it (StreamState): n x width, row-major.
  static const char* influence_entry() { return "influence"; }
  std::vector<Index> influence_shape() const { return {this->n, this->width}; }
  std::size_t influence_values() const { return M.value_bytes() / sizeof(Scalar); }
  void write_influence(std::size_t first, const Scalar* values, std::size_t count) {
    M.write_row_major(first, values, count);
  }
  template <typename F>
  void for_each_influence_segment(F&& f) const {
    for (Index i = 0; i < this->n; ++i) M.for_each_row_segment(i, f);
  }
};

}  // namespace detail

/// @brief Real-time recurrent learning: advances state and influence matrix together.
///
/// The interface every learner shares (step, accumulate_gradient, gradient, accessors, counters,
/// stage_state/restore_state) is LearnerBase's (learner_base.hpp); what is Rtrl's own is below:
/// the exact propagation M_t = J_t M_{t-1} + Mbar_t with silent rows skipped, its read-out,
/// threads, and following mask changes column by column.
/// The learner references a Model (model.hpp) and holds only one stream's state: c per layer,
/// the influence blocks, the accumulated gradient, counters. Parameters may be changed between
/// steps through the model (online learning); the influence matrix then mixes Jacobians of
/// successive parameter values, as RTRL always does online. Mask changes made on the model
/// (Model::set_mask, pruning) are followed before the next step. For B streams over one model
/// see RtrlStreams (rtrl_streams.hpp).
///
/// Column space: the parameters of layer k own the columns [column_offset(k), column_offset(k) +
/// layout(k).columns()) of gradient_columns(); influence(k) has column_offset(k) +
/// layout(k).columns() columns. One layer: offset 0, as layout() describes.
/// @tparam Scalar float or double.
/// @tparam Surrogate pseudo-derivative policy (surrogate.hpp).
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class Rtrl : public LearnerBase<Rtrl<Scalar, Surrogate>, Scalar, Surrogate, detail::RtrlLayer<Scalar>> {
  using Base = LearnerBase<Rtrl<Scalar, Surrogate>, Scalar, Surrogate, detail::RtrlLayer<Scalar>>;
  using Layer = detail::RtrlLayer<Scalar>;

 public:
  using typename Base::Model;
  using typename Base::Vector;
  using InfluenceMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  /// Tracks the kept parameters of @p model's masks. The model is referenced, not copied: it
  /// must outlive this learner and stay at one address (model.hpp).
  explicit Rtrl(Model& model, RtrlOptions options = {}) : Rtrl(model, options, ColumnShard{}) {}
  /// @brief Tracks only the columns [column_begin(), column_end()) of shard @p shard (see
  /// ColumnShard): M holds those columns alone and the gradient only those (zero elsewhere), each
  /// computed bitwise as the whole learner computes it. Throws std::invalid_argument for a shard
  /// outside [0, ranks) or more ranks than panels of columns.
  Rtrl(Model& model, RtrlOptions options, ColumnShard shard)
      : Base(model), options_(checked(options)), shard_(checked(shard)), pool_(options_.threads) {
    model.enforce_mask();
    this->shape_layers();
    const Index L = model.layers();
    Index max_units = 0;
    for (Layer& l : this->layers_) {
      l.c_psi.setZero(l.n);
      max_units = std::max(max_units, l.n);
    }
    std::vector<InfluenceLayout> layouts;
    for (Index k = 0; k < L; ++k) layouts.emplace_back(model.mask(k), this->layers_[std::size_t(k)].events);
    // Refused before M is allocated and zeroed when it cannot fit (as RtrlStreams and Snap); a
    // shard counts its window's columns only (and its split is checked, and refused, here).
    const std::pair<Index, Index> window = shard_window(layouts);
    double bytes = 0;
    Index width = 0;
    for (Index k = 0; k < L; ++k) {
      width += layouts[std::size_t(k)].columns();
      bytes += detail::InfluenceStorage<Scalar>::bytes_for(
          this->layers_[std::size_t(k)].n, std::max<Index>(0, std::min(width, window.second) - window.first));
    }
    detail::require_memory("sparse_rtrl::Rtrl::Rtrl()", "the influence matrices", bytes,
                           std::to_string(L) + " layer(s), top n = " + std::to_string(this->units()) + ", P_kept = " +
                               std::to_string(width),
                           "use fewer units or a sparser mask");
    install(std::move(layouts), nullptr);
    scratch_stride_ = detail::propagation_scratch_size<Scalar>(max_units);
    scratch_.resize(std::size_t(pool_.threads()) * std::size_t(scratch_stride_));
    this->time_phases_ = options_.time_phases;
  }
  /// A temporary model would be destroyed while referenced: refused at compile time.
  Rtrl(Model&& model, RtrlOptions options = {}) = delete;

  /// Columns of layer k's influence blocks as stored now (influence(k), for_each_influence_segment):
  /// laid out for layout_mask(k), which differs from the model's mask until the learner follows it.
  /// (Of a shard: the columns of [column_begin(), column_end()) among them.)
  Index influence_columns(Index layer) const { return local_width(this->at(layer).width); }
  /// The shard this learner tracks (0 of 1: every column).
  const ColumnShard& shard() const { return shard_; }
  /// The global columns this learner tracks, [column_begin(), column_end()) of [0, columns()):
  /// all of them unless it is a shard. influence(k) holds these (of layer k's blocks), and only
  /// these entries of gradient_columns() are accumulated (the rest stay zero).
  Index column_begin() const { return col_begin_; }
  Index column_end() const {
    if (this->layers_.empty()) detail::fail_moved_from("sparse_rtrl::Rtrl::column_end()");
    return shard_.ranks == 1 ? this->layers_.back().width : col_end_;
  }
  const RtrlOptions& options() const { return options_; }

  /// @brief Changes which weights of layer k exist, at any step (e.g. pruning during training):
  /// sets the model's mask (Model::set_mask) and follows it at once.
  ///
  /// Weights the new mask prunes are set to zero and their columns (influence and accumulated
  /// gradient) dropped; columns kept by both masks are carried over unchanged, so pruning
  /// disturbs nothing else. A revived weight (pruned before, kept now) starts from value zero
  /// with a zero influence column: its gradient is exact for a weight that exists from this
  /// step on, not for one that existed all along. Other learners of the model follow the same
  /// way before their next step (a learner that missed several changes carries over the columns
  /// kept by both its last mask and the current one). Allocates (not for the per-step hot path).
  void set_mask(const ParameterMask& mask, Index layer = 0) {
    const char* where = "sparse_rtrl::Rtrl::set_mask()";
    this->require_parameter_shapes(where);
    mask.require_matches(this->model_->parameters(layer), where);
    this->model_->set_mask(mask, layer);
    follow_mask();
  }

  /// Re-lays the influence columns for the model's current masks if they changed since this
  /// learner last looked (step() does this itself). Allocates only when they changed; on a
  /// throw (a reshaped model: std::invalid_argument; no memory) the learner is unchanged.
  void follow_mask() {
    if (this->layers_.empty()) detail::fail_moved_from("sparse_rtrl::Rtrl::follow_mask()");
    if (this->mask_version_ == this->model_->mask_version()) return;
    this->require_parameter_shapes("sparse_rtrl::Rtrl::follow_mask()");
    std::vector<InfluenceLayout> next;
    for (Index k = 0; k < this->layers(); ++k) next.emplace_back(this->model_->mask(k), this->layers_[std::size_t(k)].events);
    install(std::move(next), &this->layers_);
    this->mask_version_ = this->model_->mask_version();
  }

  /// M_t of a one-layer model, n x P_kept, columns as layout() describes: a copy (M is stored
  /// in column panels for the kernel, detail/influence_storage.hpp), O(n P).
  InfluenceMatrix influence() const {
    this->require_single_layer("sparse_rtrl::Rtrl::influence()");
    return this->layers_[0].M.to_matrix();
  }
  /// Layer k's blocks [M^{k,0} ... M^{k,k}]: n_k x (column_offset(k) + layout(k).columns()), a
  /// copy.
  InfluenceMatrix influence(Index layer) const { return this->at(layer).M.to_matrix(); }
  using Base::for_each_influence_segment;
  /// Calls f(values, count) over row i of influence(layer), in column order, a contiguous
  /// segment at a time (no copy: for streaming M out, e.g. to a file).
  template <typename F>
  void for_each_influence_segment(Index layer, Index i, F&& f) const {
    const auto& M = this->at(layer).M;
    if (i < 0 || i >= M.rows())
      throw std::out_of_range("sparse_rtrl::Rtrl::for_each_influence_segment(): row must be in [0, " +
                              std::to_string(M.rows()) + "), received " + std::to_string(i));
    M.for_each_row_segment(i, std::forward<F>(f));
  }
  /// Bytes of the influence matrix (sum over layers k of n_k x columns of layers 0..k).
  std::size_t influence_bytes() const {
    std::size_t bytes = 0;
    for (const auto& l : this->layers_) bytes += l.M.value_bytes();
    return bytes;
  }
  /// Bytes of the kernel's scratch: one panel's active rows (n x kChunk at most) per thread.
  std::size_t scratch_bytes() const { return sizeof(Scalar) * scratch_.size(); }
  /// Threads the step uses (RtrlOptions::threads).
  int threads() const { return pool_.threads(); }

 private:
  // ---- LearnerBase's hooks (learner_base.hpp). ----
  friend Base;
  static constexpr LearnerText text{"sparse_rtrl::Rtrl", "influence(k)", "call follow_mask() (step() does) before reading its layout"};
  bool event_sparse_forward() const { return options_.skip_silent_rows; }
  bool flush_subnormals() const { return options_.flush_subnormals; }
  /// Checks that the model still has this learner's shapes and modes and follows a mask change.
  /// Runs on the calling thread (it may allocate, on a mask change). The caller then runs
  /// Model::enforce_mask() once (it writes to the model when a pruned weight was written).
  void prepare_step(const char* where) {
    this->require_parameter_shapes(where);
    follow_mask();
  }
  /// propagate() on this learner's own threads and scratch.
  void propagate_step() { propagate(pool_, scratch_.data(), scratch_stride_); }
  void clear_influence() {
    for (auto& l : this->layers_) l.M.set_zero();
  }
  /// Fresh layers laid out for @p masks (sizes checked by the caller), zero but for the
  /// influence when @p zero_influence is false.
  std::vector<Layer> stage_layers(const std::vector<ParameterMask>& masks, bool zero_influence) const {
    require_whole("sparse_rtrl::Rtrl::stage_state()");
    std::vector<Layer> staged(this->layers_.size());
    std::vector<InfluenceLayout> layouts;
    std::vector<const ParameterMask::BoolMatrix*> keep_W;
    for (std::size_t k = 0; k < this->layers_.size(); ++k) {
      Layer& l = staged[k];
      l.shape(this->layers_[k].n, this->layers_[k].d, this->layers_[k].events);
      l.c_psi.setZero(l.n);
      layouts.emplace_back(masks[k], l.events);
      keep_W.push_back(&masks[k].W());
    }
    Vector grad;
    install_into(staged, grad, std::move(layouts), keep_W, nullptr, zero_influence);
    return staged;
  }
  /// Every layout a staged state can have is one this learner can take (it follows masks).
  /// (A shard takes none: checkpoints of shards are not supported yet.)
  void check_staged_layers(const std::vector<Layer>&, const char* where) const { require_whole(where); }

  /// M_{t-1} -> M_t of every layer, bottom up, after a successful forward(), then c_{t-1} <- c_t
  /// and the counters (finish_step()),
  /// the products' columns split over @p pool's threads (scratch: pool.threads() *
  /// scratch_stride scalars).
  void propagate(parallel::ThreadPool& pool, Scalar* scratch, Index scratch_stride) {
    const bool timed = this->time_phases_;
    PhaseTimes& times = this->phase_times_;
    for (std::size_t k = 0; k < this->layers_.size(); ++k) {
      Layer& l = this->layers_[k];
      const Index n = l.n;
      const Layer* below = k > 0 ? &this->layers_[k - 1] : nullptr;
      {
        detail::ScopedPhase phase(timed, times.coupling);
        build_coupling(l, this->model_->parameters(Index(k)).R);
        if (below) build_cross(l, *below, this->model_->parameters(Index(k)).W);
      }
      {
        detail::ScopedPhase phase(timed, times.propagation);
        // J^k_t M^k_{t-1}: the dominant product (model.md "RTRL"), over all of layer k's blocks.
        detail::propagate_in_place(l.M, l.cache.decay.data(), l.coupling, scratch, scratch_stride, pool,
                                   options_.flush_subnormals);
        // + B^k_t D^{k-1}_t over the blocks of layers 0..k-1 ("Stacked layers").
        if (below)
          detail::cross_add_in_place(l.M, local_width(l.offset), below->M, l.cross, pool, options_.flush_subnormals);
      }
      detail::ScopedPhase phase(timed, times.other);
      WorkCounters w = this->step_work(k);
      w.active_rows = std::uint64_t(l.coupling.active_count);
      w.coupling_nonzeros = std::uint64_t(l.coupling.nnz());
      if (!options_.skip_silent_rows) {
        w.active_rows = 0;
        for (Index j = 0; j < n; ++j) w.active_rows += l.cache.s_prev(j) != Scalar(0);
      }
      w.propagation_fma = std::uint64_t(l.coupling.nnz() + n) * std::uint64_t(local_width(l.width));
      if (below) {
        add_cross_threshold_term(l, *below);
        w.cross_layer_fma = std::uint64_t(l.cross.nnz()) * std::uint64_t(local_width(l.offset));
        w.propagation_fma += w.cross_layer_fma;
      }
      add_immediate_jacobian(l);
      add_threshold_terms(l, this->model_->parameters(Index(k)).theta);
      this->last_layer_[k] = w;
    }
    detail::ScopedPhase phase(timed, times.other);
    this->finish_step();
  }

  static RtrlOptions checked(RtrlOptions options) {
    if (options.threads < 1)
      detail::fail("sparse_rtrl::Rtrl::Rtrl()",
                   "options.threads must be >= 1, received " + std::to_string(options.threads));
    return options;
  }

  /// Installs new layouts for every layer, with M and the gradient carried over column by column
  /// from @p old (nullptr at construction: zeros). Everything that can throw (allocations)
  /// happens before the first member changes, so a throw leaves the learner as it was.
  void install(std::vector<InfluenceLayout> next, const std::vector<Layer>* old) {
    std::vector<const ParameterMask::BoolMatrix*> keep_W;
    for (Index k = 0; k < this->layers(); ++k) keep_W.push_back(&this->model_->mask(k).W());
    const std::pair<Index, Index> window = shard_window(next);  // may throw: nothing changed yet
    install_into(this->layers_, this->grad_, std::move(next), keep_W, old, true, window);
    col_begin_ = window.first;
    col_end_ = window.second;
  }

  /// install() into @p dst and @p dst_grad (this learner's, or a StagedState's layers, whose
  /// n, d, events, cache and state vectors are set), @p keep_W: W's mask of each layer (the
  /// cross-layer pattern). @p old (may be &dst) carries columns over from this learner's this->grad_
  /// (from this learner's window [col_begin_, col_end_) into @p window's). @p window: the global
  /// columns the new storage holds (the default: all).
  void install_into(std::vector<Layer>& dst, Vector& dst_grad, std::vector<InfluenceLayout> next,
                    const std::vector<const ParameterMask::BoolMatrix*>& keep_W, const std::vector<Layer>* old,
                    bool zero_influence = true,
                    std::pair<Index, Index> window = {0, std::numeric_limits<Index>::max()}) const {
    const std::size_t L = dst.size();
    std::vector<Index> offsets(L + 1, 0);
    for (std::size_t k = 0; k < L; ++k) offsets[k + 1] = offsets[k] + next[k].columns();
    const Index wb = window.first, we = window.second;
    const auto in_window = [&](Index width) { return std::max<Index>(0, std::min(width, we) - wb); };
    // Where each old global column goes (-1: dropped). (column_map: a pruned weight of layer
    // m > 0 maps to -1, not to nf - 1, the last column of layer m - 1, which an inline
    // `nf + column_of_W()` gave, overwriting that column with the pruned weight's.)
    std::vector<Index> new_of_old;
    if (old) {
      std::vector<InfluenceLayout> from;
      for (const Layer& l : *old) from.push_back(l.layout);
      new_of_old = column_map(from, next);
    }
    std::vector<detail::InfluenceStorage<Scalar>> storage;
    storage.reserve(L);
    std::vector<detail::Coupling<Scalar>> coupling(L), cross(L);
    std::vector<std::vector<Scalar>> a_values(L), b_values(L);
    std::vector<std::vector<Index>> input_ptr(L), input_cols(L);
    Vector grad = Vector::Zero(offsets[L]);
    for (std::size_t k = 0; k < L; ++k) {
      const Index n = dst[k].n;
      storage.emplace_back(n, in_window(offsets[k + 1]), zero_influence || old);
      coupling[k].reserve(n, next[k].coupling_nonzeros());
      a_values[k].resize(std::size_t(next[k].coupling_nonzeros()));
      if (k > 0) {
        detail::connection_pattern(*keep_W[k], n, input_ptr[k], input_cols[k]);
        cross[k].reserve(n, Index(input_cols[k].size()));
        b_values[k].resize(input_cols[k].size());
      }
      if (old) {
        const Layer& o = (*old)[k];
        auto& M = storage[k];
        const Index end = std::min(we, offsets[k + 1]);
        for (Index i = 0; i < n; ++i) {
          auto row = M.row(i);
          for (Index c = 0; c < o.M.cols(); ++c) {
            const Index to = new_of_old[std::size_t(c + col_begin_)];
            if (to >= wb && to < end) row[to - wb] = o.M(i, c);
          }
        }
      }
    }
    if (old)
      for (Index c = 0; c < Index(new_of_old.size()); ++c) {
        const Index to = new_of_old[std::size_t(c)];
        if (to >= wb && to < we) grad(to) = this->grad_(c);
      }
    std::vector<std::vector<Index>> next_entry(L);
    for (std::size_t k = 0; k < L; ++k) next_entry[k].assign(std::size_t(dst[k].n), 0);
    std::vector<std::vector<Index>> readout_rows(L);
    std::vector<std::vector<Scalar>> readout_coef(L);
    for (std::size_t k = 0; k < L; ++k) {
      readout_rows[k].assign(std::size_t(dst[k].n), 0);
      readout_coef[k].assign(std::size_t(dst[k].n), Scalar(0));
    }
    // No-throw from here on: moves of vectors, Eigen matrices and storages.
    for (std::size_t k = 0; k < L; ++k) {
      Layer& l = dst[k];
      l.layout = std::move(next[k]);
      l.offset = offsets[k];
      l.width = offsets[k + 1];
      l.M = std::move(storage[k]);
      l.coupling = std::move(coupling[k]);
      l.a_values = std::move(a_values[k]);
      l.next_entry = std::move(next_entry[k]);
      l.readout_rows = std::move(readout_rows[k]);
      l.readout_coef = std::move(readout_coef[k]);
      l.input_row_ptr = std::move(input_ptr[k]);
      l.input_cols = std::move(input_cols[k]);
      l.cross = std::move(cross[k]);
      l.b_values = std::move(b_values[k]);
    }
    dst_grad = std::move(grad);
  }

  /// Names the first non-finite influence entry (layer, row, the parameter owning the column)
  /// and the likely cause; std::overflow_error. The gradient accumulated so far is not finite:
  /// zero_gradient() and reset() before going on.
  [[noreturn]] void fail_non_finite_gradient(const char* where) const {
    std::ostringstream s;
    s << where << ": ";
    bool found = false;
    for (std::size_t k = 0; k < this->layers_.size() && !found; ++k) {
      const Layer& l = this->layers_[k];
      for (Index i = 0; i < l.n && !found; ++i) {
        Index c = 0;
        l.M.for_each_row_segment(i, [&](const Scalar* v, Index count) {
          for (Index e = 0; e < count && !found; ++e, ++c)
            if (!std::isfinite(static_cast<double>(v[e]))) {
              found = true;
              // Column g belongs to the layer m whose column range holds it.
              const Index g = c + col_begin_;  // global column (a shard stores its window)
              std::size_t m = 0;
              while (m + 1 <= k && this->layers_[m + 1].offset <= g) ++m;
              s << "the influence matrix of layer " << k << " is not finite: M(" << i << ", " << g << ") = " << v[e]
                << ", the influence of layer " << m << "'s parameter "
                << this->layers_[m].layout.parameter_name(g - this->layers_[m].offset) << " on unit " << i;
            }
        });
      }
    }
    if (!found) s << "the accumulated gradient is not finite (the influence matrix is finite: the loss gradients were too large)";
    // The likely cause: a negative threshold lets |c| grow without bound when the update gate
    // saturates, and M with it.
    double lowest = 0;
    Index at_layer = -1, at_unit = -1;
    for (Index k = 0; k < this->layers(); ++k) {
      const auto& theta = this->model_->parameters(k).theta;
      for (Index j = 0; j < theta.size(); ++j)
        if (double(theta(j)) < lowest) {
          lowest = double(theta(j));
          at_layer = k;
          at_unit = j;
        }
    }
    if (at_layer >= 0)
      s << "; likely cause: negative thresholds (theta[" << at_unit << "] of layer " << at_layer << " = " << lowest
        << "), under which |c| grows without bound; keep theta >= 0 with clamp_thresholds() after each optimizer step";
    else
      s << "; likely cause: states or parameters too large (thresholds are all >= 0)";
    s << ". The gradient is not finite: call zero_gradient() and reset()";
    throw std::overflow_error(s.str());
  }

  /// gradient[0 : width_k) += (dL/dc^k_t)^T M^k_t over rows with dL/dc != 0, plus theta^k's
  /// direct term.
  /// Returns its multiply-adds (LearnerBase counts them).
  std::uint64_t read_out(std::size_t k) {
    Layer& l = this->layers_[k];
    const Index width = local_width(l.width);
    Scalar* grad = this->grad_.data() + col_begin_;  // the window's part of the gradient
    Index rows = 0;
    for (Index i = 0; i < l.n; ++i) {
      const Scalar gi = l.dL_dc(i);
      if (gi == Scalar(0)) continue;
      l.readout_rows[std::size_t(rows)] = i;
      l.readout_coef[std::size_t(rows)] = gi;
      ++rows;
    }
    const std::uint64_t fma = std::uint64_t(rows) * std::uint64_t(width);
    // Panel by panel (M's storage order), each panel's gradient segment accumulated in registers
    // over the rows in increasing i (the propagation kernel with decay 1 and the rows as
    // sources), panels split over the learner's threads: bitwise the same for any thread count.
    constexpr Index W = detail::kChunk<Scalar>;
    if (rows > 0 && width > 0)
      detail::split_columns<Scalar>(
          width, double(fma), pool_, options_.flush_subnormals, [&](int, Index begin, Index end) {
            for (Index p = begin / W; p * W < end; ++p)
              detail::propagate_chunk_upto<Scalar>(grad + p * W, Scalar(1), l.M.panel(p), W,
                                                   l.readout_rows.data(), l.readout_coef.data(), rows,
                                                   std::min<Index>(W, width - p * W));
          });
    if (l.layout.tracks_theta())
      for (Index j = 0; j < l.n; ++j) {
        const Index c = l.offset + l.layout.theta_column(j);
        if (c >= col_begin_ && c < col_end_) this->grad_(c) += l.theta_direct(j);
      }
    return fma;
  }

  /// A_t on R's pattern (detail::coupling_entry), and the compressed coupling A_t diag(s_{t-1})
  /// over active source rows, built column by column over the sources that need it: the active
  /// ones (s_{t-1, j} != 0) and those whose threshold acts through y_{t-1} (c psi != 0, the
  /// threshold terms, add_threshold_terms()). With events that is about the activity's
  /// fraction of A's pattern, read down columns of R (stored by column); the row-by-row build
  /// over the whole pattern it replaces took 8% of a step at n = 1024, 5% at n = 256. The entries
  /// of each row come out in increasing source order, as before: the same coupling, bit for bit.
  template <typename RMatrix>
  void build_coupling(Layer& l, const RMatrix& R) {
    const Index n = l.n;
    const auto& col_ptr = l.layout.coupling_col_ptr();
    const auto& col_rows = l.layout.coupling_col_rows();
    const auto& col_entries = l.layout.coupling_col_entries();
    auto& C = l.coupling;
    Index k = 0;
    for (Index j = 0; j < n; ++j) {
      const bool active = !options_.skip_silent_rows || l.cache.s_prev(j) != Scalar(0);
      if (active) C.active[std::size_t(k++)] = j;
      l.c_psi(j) = l.cache.c_prev(j) * l.cache.psi_prev(j);
    }
    C.active_count = k;
    // Row lengths over the active columns, then their starts (C.row_ptr), then each row's fill
    // cursor (l.next_entry).
    std::fill(C.row_ptr.begin(), C.row_ptr.end(), Index(0));
    for (Index a = 0; a < k; ++a) {
      const Index j = C.active[std::size_t(a)];
      for (Index q = col_ptr[std::size_t(j)]; q < col_ptr[std::size_t(j + 1)]; ++q)
        ++C.row_ptr[std::size_t(col_rows[std::size_t(q)] + 1)];
    }
    for (Index i = 0; i < n; ++i) {
      C.row_ptr[std::size_t(i + 1)] += C.row_ptr[std::size_t(i)];
      l.next_entry[std::size_t(i)] = C.row_ptr[std::size_t(i)];
    }
    // Sources in increasing j (the active ones are in increasing j and numbered a = 0, 1, ...):
    // every row's entries land in increasing source order. Only silent rows are skipped, not
    // coefficients that happen to vanish (saturated gates): the work then depends on activity
    // and pattern alone, as documented.
    Index a = 0;
    for (Index j = 0; j < n; ++j) {
      const bool active = a < k && C.active[std::size_t(a)] == j;
      if (!active && l.c_psi(j) == Scalar(0)) continue;
      const Scalar s = l.cache.s_prev(j);
      for (Index q = col_ptr[std::size_t(j)]; q < col_ptr[std::size_t(j + 1)]; ++q) {
        const Index i = col_rows[std::size_t(q)];
        const Scalar value = detail::coupling_entry(R, l.cache, n, i, j);
        l.a_values[std::size_t(col_entries[std::size_t(q)])] = value;
        if (active) {
          const Index e = l.next_entry[std::size_t(i)]++;
          C.source[std::size_t(e)] = a;
          C.coef[std::size_t(e)] = value * s;
        }
      }
      if (active) ++a;
    }
  }

  /// B^k_t[i, j] = dc_i/dy^{k-1}_j = sum over gates of dc/da_gate W^k_gate[i, j] (the input
  /// enters every gate's pre-activation outside the reset gate), on W^k's pattern; the
  /// compressed coupling B^k_t diag(s^{k-1}_t) over active units j of layer k - 1, whose rows of
  /// M^{k-1}_t are the sources.
  template <typename WMatrix>
  void build_cross(Layer& l, const Layer& below, const WMatrix& W) {
    const Index n = l.n;
    Index e = 0;
    for (Index i = 0; i < n; ++i) {
      l.cross.row_ptr[std::size_t(i)] = e;
      const Scalar ar = l.cache.dc_da(i), az = l.cache.dc_da(n + i), ag = l.cache.dc_da(2 * n + i);
      for (Index p = l.input_row_ptr[std::size_t(i)]; p < l.input_row_ptr[std::size_t(i + 1)]; ++p) {
        const Index j = l.input_cols[std::size_t(p)];
        const Scalar b = ar * W(i, j) + az * W(n + i, j) + ag * W(2 * n + i, j);
        l.b_values[std::size_t(p)] = b;
        const Scalar s = below.cache.s(j);
        if (!options_.skip_silent_rows || s != Scalar(0)) {
          l.cross.source[std::size_t(e)] = j;
          l.cross.coef[std::size_t(e)] = b * s;
          ++e;
        }
      }
    }
    l.cross.row_ptr[std::size_t(n)] = e;
  }

  /// The direct part of D^{k-1,k-1}_t: y^{k-1}_j depends on theta^{k-1}_j also directly
  /// (dy/dtheta = -c psi), reaching layer k through B^k.
  void add_cross_threshold_term(Layer& l, const Layer& below) {
    if (!below.layout.tracks_theta()) return;
    // The threshold columns of layer k - 1 (global below.offset + theta_column(j)): a shard
    // writes those in its window only.
    const Index first = below.offset + below.layout.theta_column(0), last = first + below.n;
    if (last <= col_begin_ || first >= col_end_) return;
    for (Index i = 0; i < l.n; ++i) {
      auto row = l.M.row(i);
      for (Index p = l.input_row_ptr[std::size_t(i)]; p < l.input_row_ptr[std::size_t(i + 1)]; ++p) {
        const Index j = l.input_cols[std::size_t(p)];
        const Index c = below.offset + below.layout.theta_column(j);
        if (c < col_begin_ || c >= col_end_) continue;
        const Scalar cp = below.cache.c(j) * below.cache.psi(j);
        if (cp != Scalar(0)) row[c - col_begin_] -= l.b_values[std::size_t(p)] * cp;
      }
    }
  }

  /// M_t += Mbar_t: the immediate Jacobian at fixed c_{t-1}, but for the threshold columns. Each
  /// weight feeding unit i has one nonzero, in row i, inside unit i's contiguous column range (of
  /// a shard: the part of it inside the window). Input weights and biases are added unit by unit;
  /// recurrent weights by presynaptic unit, for the active ones only (y_{t-1, j} = 0 contributes
  /// nothing): testing every recurrent weight's y_{t-1, j} made this half of the "other" phase.
  /// Every entry receives one addition, so the order of the two passes does not matter.
  /// (Added panel by panel inside the propagation pass instead, while each panel is in cache,
  /// the immediate Jacobian measured no faster: the kernel's stream was slowed by as much.)
  void add_immediate_jacobian(Layer& l) {
    for (Index i = 0; i < l.n; ++i) {
      const Index first = l.offset + l.layout.unit_begin(i), last = l.offset + l.layout.unit_end(i);
      if (last <= col_begin_ || first >= col_end_) continue;
      detail::add_unit_immediate_jacobian(l.layout, l.cache, i, WindowRow{l.M.row(i), col_begin_}, first,
                                          col_begin_, col_end_, false);
    }
    detail::add_recurrent_immediate_jacobian(l.layout, l.cache, [&](Index unit, Index column, Scalar cq, Scalar y) {
      const Index c = l.offset + column;
      if (c >= col_begin_ && c < col_end_) detail::add_product(l.M.row(unit)[c - col_begin_], cq, y);
    });
  }

  /// The threshold columns' part of M_t += Mbar_t (events mode), after the product.
  template <typename Theta>
  void add_threshold_terms(Layer& l, const Theta& theta) {
    const Index n = l.n;
    if (!l.layout.tracks_theta()) return;
    const Index theta_first = l.offset + l.layout.theta_column(0);
    if (theta_first + n <= col_begin_ || theta_first >= col_end_) return;
    // Thresholds act through h_{t-1} (the diagonal) and y_{t-1} (dy/dtheta = -c psi, spread by
    // A_t's column j, visited only where c_j psi_j != 0). Every entry (i, theta_j) receives one
    // term of the second kind at most, after its diagonal term when j = i.
    const auto inside = [&](Index c) { return c >= col_begin_ && c < col_end_; };
    for (Index i = 0; i < n; ++i) {
      const Index ci = l.offset + l.layout.theta_column(i);
      if (inside(ci)) l.M.row(i)[ci - col_begin_] += detail::threshold_reset_entry(l.cache, theta, i);
    }
    const auto& col_ptr = l.layout.coupling_col_ptr();
    const auto& col_rows = l.layout.coupling_col_rows();
    const auto& col_entries = l.layout.coupling_col_entries();
    for (Index j = 0; j < n; ++j) {
      const Scalar cp = l.c_psi(j);
      const Index cj = l.offset + l.layout.theta_column(j);
      if (cp == Scalar(0) || !inside(cj)) continue;
      for (Index q = col_ptr[std::size_t(j)]; q < col_ptr[std::size_t(j + 1)]; ++q) {
        Scalar& m = l.M.row(col_rows[std::size_t(q)])[cj - col_begin_];
        m = detail::multiply_add(-l.a_values[std::size_t(col_entries[std::size_t(q)])], cp, m);
      }
    }
  }

  /// A row of M seen through global column indices (a shard's M holds the window's columns).
  struct WindowRow {
    typename detail::InfluenceStorage<Scalar>::RowRef row;
    Index begin;
    Scalar& operator[](Index c) const { return row[c - begin]; }
  };

  // ---- Column shards (ColumnShard). A whole learner's window is [0, max): no clipping. ----
  /// Columns of [0, width) inside this learner's window [col_begin_, col_end_).
  Index local_width(Index width) const { return std::max<Index>(0, std::min(width, col_end_) - col_begin_); }
  /// What only a learner of every column can do: checkpoints of shards are not supported yet.
  void require_whole(const char* where) const {
    if (shard_.ranks > 1)
      throw std::logic_error(std::string(where) + ": this learner tracks column shard " + std::to_string(shard_.rank) +
                             " of " + std::to_string(shard_.ranks) + " only (checkpoints of shards are not supported yet)");
  }
  static ColumnShard checked(ColumnShard shard) {
    if (shard.ranks < 1 || shard.rank < 0 || shard.rank >= shard.ranks)
      detail::fail("sparse_rtrl::Rtrl::Rtrl()", "the shard must be in [0, ranks) with ranks >= 1, received shard " +
                                                    std::to_string(shard.rank) + " of " + std::to_string(shard.ranks));
    return shard;
  }
  /// The global column window of this learner's shard for @p layouts (ColumnPartition, aligned
  /// to the storage's panels: every column then runs through the kernels as in the whole
  /// learner); [0, max) for a whole learner. Throws std::invalid_argument for more ranks than
  /// panels.
  std::pair<Index, Index> shard_window(const std::vector<InfluenceLayout>& layouts) const {
    if (shard_.ranks == 1) return {0, std::numeric_limits<Index>::max()};
    ColumnWork work;
    for (std::size_t m = 0; m < layouts.size(); ++m) {
      work.columns.push_back(layouts[m].columns());
      std::uint64_t rows = 0;
      for (std::size_t k = m; k < this->layers_.size(); ++k) rows += std::uint64_t(this->layers_[k].n);
      work.cost.push_back(rows);
    }
    const ColumnPartition part(work, shard_.ranks, detail::kChunk<Scalar>);
    return {part.begin(shard_.rank), part.end(shard_.rank)};
  }

  template <typename, typename>
  friend class mpi::ShardedRtrl;
  template <typename, typename>
  friend class mpi::GridCheckpoint;  // a shard's stream state, restored by column range

  RtrlOptions options_;
  ColumnShard shard_;
  /// The global columns M holds and the read-out accumulates (all, unless a shard).
  Index col_begin_ = 0, col_end_ = std::numeric_limits<Index>::max();
  parallel::ThreadPool pool_;
  detail::PropagationScratch<Scalar> scratch_;
  Index scratch_stride_ = 0;
};

}  // namespace sparse_rtrl
