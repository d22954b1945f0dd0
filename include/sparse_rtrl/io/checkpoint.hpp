/// @file io/checkpoint.hpp
/// @brief Checkpoints: save a run (model, learners, optimizers, pruning schedule, your own
///        counters and random engines) into one NumPy .npz file and resume it, bit for bit.
///
/// A Checkpoint is a list of named references to live objects; the same list saves and loads:
///
///     io::Checkpoint ckpt;
///     ckpt.add(model)                    // torch.nn.GRU names: weight_ih_l0, ... (see below)
///         .add("rtrl", streams)          // Rtrl or RtrlStreams over that model
///         .add("adam", adam)             // Sgd, Adam, AdamW
///         .add("pruner", pruner)         // MagnitudePruner
///         .add("readout", readout)       // LinearReadout
///         .add("step", t)                // arithmetic values, std::vector, Eigen objects,
///         .add("symbols", rng);          // std random engines, WorkCounters
///     ckpt.save(path);                   // atomic: the old file or the new one, never half
///     ...                                // later, in a new process, same objects constructed:
///     ckpt.load(path);                   // every object as it was saved; or an exception and
///                                        // no object changed
///
/// Bitwise: a run saved at step t and loaded into freshly constructed objects continues exactly
/// as the uninterrupted run (every value is stored in its own type, nothing is recomputed).
/// The objects must have been constructed with the saved shapes (units, inputs, layers, events
/// mode, streams, readout size): a checkpoint restores state, not architecture (but see
/// load_model(), which builds the model from a file). Learner options (threads, skipping) stay
/// those of the live object; they do not change results.
///
/// Loading is all-or-nothing: the file's structure is checked, then every object's entries are
/// read into staging copies and validated (dtype, shape, value ranges, CRC-32 of every entry of
/// the file), and only then are the objects changed, by swaps that cannot fail. So a truncated,
/// corrupted, wrong-version, wrong-dtype or wrong-shape file throws std::invalid_argument naming
/// the file, the entry and what was expected and found, and leaves every object as it was.
/// Operating-system errors (missing file, disk full) throw std::runtime_error. Staging needs
/// memory for a second copy of what is loaded (the influence matrices, mostly).
///
/// File format (format_version 1). Model, per layer k (suffix _l{k}), S = float32 or float64:
///   weight_ih_l{k}  (3n, d) S    torch.nn.GRU's, gate order r, z, g (= EgruParameters::W)
///   weight_hh_l{k}  (3n, n) S    (R)
///   bias_ih_l{k}    (3n,)   S    (bW)
///   bias_hh_l{k}    (3n,)   S    (bR)
///   threshold_l{k}  (n,)    S    (theta; no torch counterpart)
///   mask_weight_ih_l{k} (3n, d) bool, mask_weight_hh_l{k} (3n, n) bool   (true = kept)
///   events_l{k}     ()      bool (false: GRU mode)
///   surrogate_gamma_l{k}, surrogate_eps_l{k}  () S   (TriangularSurrogate; see SurrogateEntries)
///   num_layers () int64, format_version () int64 = 1
/// So `torch.nn.GRU(d, n, num_layers=L).load_state_dict({k: torch.from_numpy(v) for k, v in
/// numpy.load(path).items() if k in gru.state_dict()})` loads a checkpoint's weights into torch
/// (strict, after the filter); save_torch_gru() writes the four torch tensors per layer only.
/// Rtrl under name p (RtrlStreams: p/streams () int64 = B, and stream b under p/s{b}/):
///   p/steps () int64, p/last_step_valid () bool, p/mask_followed () bool (false: a change of
///   the model's masks not followed yet, and then p/l{k}/layout_mask_weight_ih, _hh, the masks the
///   columns are laid out for), p/gradient (P,) S (per influence column),
///   p/work_last, p/work_total (11,) uint64 (WorkCounters, fields in declaration order),
///   p/l{k}/state (n,) S, p/l{k}/influence (n, P_k) S (columns of layers 0..k, as
///   Rtrl::influence(k)), p/l{k}/work_last, p/l{k}/work_total (11,) uint64,
///   p/l{k}/cache/<field> (EgruStepCache's fields: the last step, read until the next one).
/// Sgd/Adam/AdamW under p: p/type () int64 (1 Sgd, 2 Adam, 3 AdamW), p/learning_rate,
///   p/weight_decay () S, Sgd: p/momentum () S, p/nesterov () bool; Adam: p/beta1, p/beta2,
///   p/eps () S; p/steps () int64, p/parameter_set () int64 (0 none yet, 1 EgruParameters,
///   2 ReadoutParameters), moments p/velocity/<tensor> (Sgd) or p/first_moment/<tensor>,
///   p/second_moment/<tensor> (Adam), tensors W, R (2-D), bW, bR, theta (1-D) or V (2-D), b (1-D).
/// MagnitudePruner under p: p/target_density_W, p/target_density_R, p/initial_density_W,
///   p/initial_density_R () float64, p/events, p/events_done () int64, p/curve () int64 (0 cubic,
///   1 linear).
/// LinearReadout under p: p/weight (k, n), p/bias (k,), p/weight_grad, p/bias_grad (torch.nn.Linear's
///   names). Values and arrays: under their name, as numpy.save would store them (engines: the
///   words of the engine's standard text form, uint64).
/// Random generators: the library owns none that outlives a call (initialisations and random
/// masks draw from a local generator seeded by the caller), so there is nothing of ours to save;
/// add your own engines (std::mt19937_64 etc.) to the checkpoint.
/// Snap (SnAp-n) under name p: p/order () int64, p/cross_layer () int64 (0 graph, 1 none,
///   2 same_step; both must equal the live Snap's), p/steps () int64, p/last_step_valid () bool,
///   p/gradient (P,) S, p/work_last, p/work_total (11,) uint64, p/l{k}/state (n,) S,
///   p/l{k}/kept (E_k,) S (the kept influence entries of the owners of layer k: unit by unit,
///   each block |S(u)| x (its columns) row by row, rows ascending as Snap::kept_rows(k, u),
///   columns as its layout), p/l{k}/work_last, p/l{k}/work_total, p/l{k}/cache/<field> (as Rtrl).
///   The pattern is not saved: it follows from the masks, order and cross_layer, so the live
///   Snap must have been built for the file's masks (else an error naming the layer).
/// Not covered: Bptt keeps no state across sequences, Inference only its current state (read it
/// with state(k)).
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/npz.hpp>
#include <sparse_rtrl/learners/rtrl.hpp>
#include <sparse_rtrl/learners/snap.hpp>
#include <sparse_rtrl/learners/work_counters.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/model/surrogate.hpp>
#include <sparse_rtrl/streams/rtrl_streams.hpp>
#include <sparse_rtrl/training/optimizer.hpp>
#include <sparse_rtrl/training/pruning.hpp>
#include <sparse_rtrl/training/readout.hpp>

#include <Eigen/Core>

#include <array>
#include <cstdint>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <cstring>
#include <vector>

namespace sparse_rtrl {

namespace io {

/// The checkpoint format this library writes and reads (entry format_version).
inline constexpr std::int64_t checkpoint_format_version = 1;

/// @brief How a model's surrogate is saved: specialise for your own surrogate policy. The
/// primary template saves nothing and, on loading, keeps the live model's surrogate.
template <typename Surrogate>
struct SurrogateEntries {
  /// Writes the entries of layer @p suffix ("_l0", ...).
  static void save(NpzWriter&, const std::string& /*suffix*/, const Surrogate&) {}
  /// The surrogate to install, read from the file (or @p live, the model's current one).
  static Surrogate load(NpzReader&, const std::string& /*suffix*/, const Surrogate& live) { return live; }
};

/// TriangularSurrogate: surrogate_gamma_l{k}, surrogate_eps_l{k}, 0-D, in the model's scalar type.
template <typename S>
struct SurrogateEntries<TriangularSurrogate<S>> {
  static void save(NpzWriter& w, const std::string& suffix, const TriangularSurrogate<S>& s) {
    w.add_scalar("surrogate_gamma" + suffix, s.gamma());
    w.add_scalar("surrogate_eps" + suffix, s.eps());
  }
  static TriangularSurrogate<S> load(NpzReader& r, const std::string& suffix, const TriangularSurrogate<S>&) {
    const S gamma = r.read_scalar<S>("surrogate_gamma" + suffix);
    const S eps = r.read_scalar<S>("surrogate_eps" + suffix);
    try {
      return TriangularSurrogate<S>(gamma, eps);
    } catch (const std::invalid_argument& e) {
      r.fail("entries 'surrogate_gamma" + suffix + "', 'surrogate_eps" + suffix + "': " + e.what());
    }
  }
};

}  // namespace io

namespace detail {

inline std::string layer_suffix(Index k) { return "_l" + std::to_string(k); }

/// Refuses a file without format_version or of another format than this library's.
inline void require_checkpoint_version(io::NpzReader& r) {
  if (!r.contains("format_version"))
    r.fail("entry 'format_version' is missing: not a sparse_rtrl checkpoint (torch.nn.GRU weights load with "
           "io::load_torch_gru())");
  const std::int64_t version = r.read_scalar<std::int64_t>("format_version");
  if (version != io::checkpoint_format_version)
    r.fail("entry 'format_version': this library reads checkpoint format " +
           std::to_string(io::checkpoint_format_version) + ", the file has format " + std::to_string(version) +
           (version > io::checkpoint_format_version ? " (written by a newer sparse_rtrl)" : ""));
}

inline std::vector<std::uint64_t> dims(std::initializer_list<Index> d) {
  std::vector<std::uint64_t> out;
  for (Index v : d) out.push_back(std::uint64_t(v));
  return out;
}

template <typename Derived>
void require_finite_entry(io::NpzReader& r, const std::string& name, const Eigen::DenseBase<Derived>& m) {
  for (Index j = 0; j < m.cols(); ++j)
    for (Index i = 0; i < m.rows(); ++i)
      if (!std::isfinite(double(m(i, j))))
        r.fail("entry '" + name + "': element (" + std::to_string(i) + ", " + std::to_string(j) +
               ") is not finite");
}

/// A 0-D int64 entry that must lie in [lo, hi].
inline std::int64_t read_count(io::NpzReader& r, const std::string& name, std::int64_t lo, std::int64_t hi) {
  const std::int64_t v = r.read_scalar<std::int64_t>(name);
  if (v < lo || v > hi)
    r.fail("entry '" + name + "': expected a value in [" + std::to_string(lo) + ", " + std::to_string(hi) +
           "], found " + std::to_string(v));
  return v;
}

/// A 0-D int64 entry that must equal @p expected (@p what says why).
inline void read_expected(io::NpzReader& r, const std::string& name, std::int64_t expected, const std::string& what) {
  const std::int64_t v = r.read_scalar<std::int64_t>(name);
  if (v != expected)
    r.fail("entry '" + name + "': expected " + std::to_string(expected) + " (" + what + "), found " + std::to_string(v));
}

constexpr std::size_t kWorkFields = 11;
inline std::array<std::uint64_t, kWorkFields> work_array(const WorkCounters& w) {
  return {{w.steps, w.propagation_fma, w.dense_propagation_fma, w.readout_fma, w.dense_readout_fma, w.units,
           w.event_units, w.active_rows, w.coupling_nonzeros, w.cross_layer_fma, w.dense_cross_layer_fma}};
}
inline void save_work(io::NpzWriter& w, const std::string& name, const WorkCounters& c) {
  const auto a = work_array(c);
  w.add_values(name, a.data(), a.size());
}
inline WorkCounters read_work(io::NpzReader& r, const std::string& name) {
  Eigen::Matrix<std::uint64_t, Eigen::Dynamic, 1> v(static_cast<Index>(kWorkFields));
  r.read_into(name, v);
  WorkCounters w;
  std::uint64_t* f[kWorkFields] = {&w.steps, &w.propagation_fma, &w.dense_propagation_fma, &w.readout_fma,
                                   &w.dense_readout_fma, &w.units, &w.event_units, &w.active_rows,
                                   &w.coupling_nonzeros, &w.cross_layer_fma, &w.dense_cross_layer_fma};
  for (std::size_t k = 0; k < kWorkFields; ++k) *f[k] = v(Index(k));
  return w;
}

/// EgruStepCache's fields by name (the entries p/l{k}/cache/<name>).
template <typename S, typename Cache>
auto cache_fields(Cache& c) {
  using V = std::conditional_t<std::is_const<Cache>::value, const typename EgruStepCache<S>::Vector,
                               typename EgruStepCache<S>::Vector>;
  return std::array<std::pair<const char*, V*>, 20>{{{"x", &c.x},
                                                     {"c_prev", &c.c_prev},
                                                     {"o_prev", &c.o_prev},
                                                     {"y_prev", &c.y_prev},
                                                     {"h_prev", &c.h_prev},
                                                     {"psi_prev", &c.psi_prev},
                                                     {"s_prev", &c.s_prev},
                                                     {"a", &c.a},
                                                     {"q", &c.q},
                                                     {"r", &c.r},
                                                     {"z", &c.z},
                                                     {"g", &c.g},
                                                     {"c", &c.c},
                                                     {"o", &c.o},
                                                     {"y", &c.y},
                                                     {"psi", &c.psi},
                                                     {"s", &c.s},
                                                     {"dc_da", &c.dc_da},
                                                     {"dc_dq", &c.dc_dq},
                                                     {"decay", &c.decay}}};
}

/// One stream of an Rtrl learner under prefix p.
template <typename S, typename Sur>
void save_stream(io::NpzWriter& w, const std::string& p, const Rtrl<S, Sur>& r) {
  w.add_scalar(p + "/steps", std::int64_t(r.steps()));
  w.add_scalar(p + "/last_step_valid", r.last_step_valid());
  w.add_scalar(p + "/mask_followed", r.mask_followed());
  w.add(p + "/gradient", r.gradient_columns());
  save_work(w, p + "/work_last", r.last_step_work());
  save_work(w, p + "/work_total", r.total_work());
  for (Index k = 0; k < r.layers(); ++k) {
    const std::string l = p + "/l" + std::to_string(k);
    w.add(l + "/state", r.state(k));
    const Index rows = r.units(k), cols = r.influence_columns(k);
    w.add_array(l + "/influence", io::dtype_of<S>::value, dims({rows, cols}), [&](io::ByteSink& sink) {
      // M is stored in column panels: gather each row, then write it in one piece.
      std::vector<S> row(static_cast<std::size_t>(cols));
      for (Index i = 0; i < rows; ++i) {
        std::size_t at = 0;
        r.for_each_influence_segment(k, i, [&](const S* v, Index count) {
          std::memcpy(row.data() + at, v, sizeof(S) * std::size_t(count));
          at += std::size_t(count);
        });
        sink.write_values(row.data(), row.size());
      }
    });
    save_work(w, l + "/work_last", r.last_step_work(k));
    save_work(w, l + "/work_total", r.total_work(k));
    for (const auto& f : cache_fields<S>(r.last_step_cache(k))) w.add(l + "/cache/" + f.first, *f.second);
    if (!r.mask_followed()) {  // laid out for the masks before a change it has not followed yet
      const ParameterMask m = r.layout_mask(k);
      w.add(l + "/layout_mask_weight_ih", m.W());
      w.add(l + "/layout_mask_weight_hh", m.R());
    }
  }
}

/// Reads one stream saved by save_stream() into a state staged for the file's masks.
template <typename S, typename Sur>
void load_stream(io::NpzReader& r, const std::string& p, typename Rtrl<S, Sur>::StagedState& st) {
  st.steps = Index(read_count(r, p + "/steps", 0, sparse_rtrl::detail::kMaxStepCount));
  st.steps_valid = r.read_scalar<bool>(p + "/last_step_valid");
  r.read_into(p + "/gradient", st.gradient());
  st.last_work = read_work(r, p + "/work_last");
  st.total_work = read_work(r, p + "/work_total");
  for (Index k = 0; k < st.layers(); ++k) {
    const std::string l = p + "/l" + std::to_string(k);
    r.read_into(l + "/state", st.state(k));
    require_finite_entry(r, l + "/state", st.state(k));
    const Index n = st.state(k).size(), cols = st.influence_columns(k);
    if (r.require(l + "/influence", io::dtype_of<S>::value, dims({n, cols})).fortran_order && n > 1 && cols > 1)
      r.fail("entry '" + l + "/influence': expected C order (row-major), found Fortran order");
    std::size_t element = 0;  // row-major position in the file
    r.read_data(l + "/influence", [&](const unsigned char* bytes, std::size_t count) {
      // Chunks hold whole elements; the buffer is allocated by operator new (aligned for S).
      st.write_influence(k, element, reinterpret_cast<const S*>(bytes), count / sizeof(S));
      element += count / sizeof(S);
    });
    st.layer_last_work[std::size_t(k)] = read_work(r, l + "/work_last");
    st.layer_total_work[std::size_t(k)] = read_work(r, l + "/work_total");
    for (const auto& f : cache_fields<S>(st.step_cache(k))) r.read_into(l + "/cache/" + f.first, *f.second);
  }
  // Non-finite values pass the CRC when they were saved (or crafted) so: refused here, while
  // staging, so that nothing is committed (restore_state() runs the same check again).
  try {
    st.validate_values("learner state", p + "/");
  } catch (const std::invalid_argument& e) {
    r.fail(e.what());
  }
}

/// Stages one stream saved by save_stream() for @p learner (the model's staged @p masks, or the
/// stream's own layout masks when it had not followed a mask change) and reads its values.
template <typename S, typename Sur>
typename Rtrl<S, Sur>::StagedState stage_stream(io::NpzReader& r, const std::string& p, const Rtrl<S, Sur>& learner,
                                                const std::vector<ParameterMask>& masks) {
  const bool followed = r.read_scalar<bool>(p + "/mask_followed");
  std::vector<ParameterMask> layout;
  if (followed) {
    layout = masks;
  } else {
    for (Index k = 0; k < learner.layers(); ++k) {
      const std::string l = p + "/l" + std::to_string(k);
      const Index n = learner.units(k), d = learner.model().cell(k).inputs();
      ParameterMask::BoolMatrix keep_W(3 * n, d), keep_R(3 * n, n);
      r.read_into(l + "/layout_mask_weight_ih", keep_W);
      r.read_into(l + "/layout_mask_weight_hh", keep_R);
      layout.emplace_back(std::move(keep_W), std::move(keep_R));
    }
  }
  // Every influence value is read from the file (or the load fails and st is dropped): no zeroing.
  typename Rtrl<S, Sur>::StagedState st = learner.stage_state(std::move(layout), false);
  st.mask_followed = followed;
  load_stream<S, Sur>(r, p, st);
  return st;
}

/// The entry names of an optimizer's tensors for a parameter set code (1 Egru, 2 Readout).
inline std::vector<std::pair<std::string, bool>> optimizer_tensors(std::int64_t set) {
  if (set == 1) return {{"W", true}, {"R", true}, {"bW", false}, {"bR", false}, {"theta", false}};
  if (set == 2) return {{"V", true}, {"b", false}};
  return {};
}

/// Base of the items a Checkpoint holds (type erasure over the objects it references).
class CheckpointItem {
 public:
  /// A loaded item waiting for its commit, which cannot fail.
  class Staged {
   public:
    virtual ~Staged() = default;
    virtual void commit() noexcept = 0;
  };
  /// What items need while staging: the live model of the checkpoint and its staged masks.
  struct Context {
    const void* model = nullptr;                      ///< the Checkpoint's model, nullptr if none
    const std::vector<ParameterMask>* masks = nullptr;  ///< its masks as they will be loaded
  };

  explicit CheckpointItem(std::string name) : name_(std::move(name)) {}
  virtual ~CheckpointItem() = default;
  const std::string& name() const { return name_; }
  /// The model a learner reads (it must be the Checkpoint's model), nullptr for other items.
  virtual const void* model() const { return nullptr; }
  virtual void save(io::NpzWriter& w) const = 0;
  virtual std::unique_ptr<Staged> stage(io::NpzReader& r, const Context& context) const = 0;

 private:
  std::string name_;
};

template <typename F>
class LambdaStaged : public CheckpointItem::Staged {
 public:
  explicit LambdaStaged(F f) : f_(std::move(f)) {}
  void commit() noexcept override { f_(); }

 private:
  F f_;
};
template <typename F>
std::unique_ptr<CheckpointItem::Staged> staged(F f) {
  return std::make_unique<LambdaStaged<F>>(std::move(f));
}

/// The model: torch names at the top level (see io/checkpoint.hpp's file comment).
template <typename S, typename Sur>
class ModelItem : public CheckpointItem {
 public:
  using ModelType = Model<S, Sur>;
  using Cell = typename ModelType::Cell;

  explicit ModelItem(ModelType& model) : CheckpointItem(""), model_(&model) {}

  static void save_model(io::NpzWriter& w, const ModelType& m) {
    w.add_scalar("num_layers", std::int64_t(m.layers()));
    for (Index k = 0; k < m.layers(); ++k) {
      const std::string s = layer_suffix(k);
      const auto& p = m.parameters(k);
      w.add("weight_ih" + s, p.W);
      w.add("weight_hh" + s, p.R);
      w.add("bias_ih" + s, p.bW);
      w.add("bias_hh" + s, p.bR);
      w.add("threshold" + s, p.theta);
      w.add("mask_weight_ih" + s, m.mask(k).W());
      w.add("mask_weight_hh" + s, m.mask(k).R());
      w.add_scalar("events" + s, m.events(k));
      io::SurrogateEntries<Sur>::save(w, s, m.surrogate(k));
    }
  }

  /// Layer k of a model file, with n and d given (the live model's, or read from the file).
  /// @p live: the live model's layer (its surrogate is the fallback and its mode must match).
  static std::pair<Cell, ParameterMask> read_layer(io::NpzReader& r, Index k, Index n, Index d, const ModelType* live) {
    const std::string s = layer_suffix(k);
    const io::Dtype t = io::dtype_of<S>::value;
    EgruParameters<S> p(n, d);
    const std::pair<const char*, typename EgruParameters<S>::Matrix*> mats[] = {{"weight_ih", &p.W},
                                                                               {"weight_hh", &p.R}};
    for (const auto& m : mats) {
      r.require(m.first + s, t, dims({m.second->rows(), m.second->cols()}));
      r.read_into(m.first + s, *m.second);
      require_finite_entry(r, m.first + s, *m.second);
    }
    const std::pair<const char*, typename EgruParameters<S>::Vector*> vecs[] = {
        {"bias_ih", &p.bW}, {"bias_hh", &p.bR}, {"threshold", &p.theta}};
    for (const auto& v : vecs) {
      r.read_into(v.first + s, *v.second);
      require_finite_entry(r, v.first + s, *v.second);
    }
    ParameterMask::BoolMatrix keep_W(3 * n, d), keep_R(3 * n, n);
    r.read_into("mask_weight_ih" + s, keep_W);
    r.read_into("mask_weight_hh" + s, keep_R);
    const bool events = r.read_scalar<bool>("events" + s);
    if (live && events != live->events(k))
      r.fail("entry 'events" + s + "': expected " + (live->events(k) ? "True" : "False") + " (layer " +
             std::to_string(k) + " of the model is in " + (live->events(k) ? "events" : "GRU") +
             " mode; its learners depend on the mode), found " + (events ? "True" : "False"));
    Sur surrogate = io::SurrogateEntries<Sur>::load(r, s, live ? live->surrogate(k) : Sur());
    return {Cell(std::move(p), CellOptions{events}, std::move(surrogate)),
            ParameterMask(std::move(keep_W), std::move(keep_R))};
  }

  void save(io::NpzWriter& w) const override { save_model(w, *model_); }

  struct StagedModel : Staged {
    ModelType* model = nullptr;
    std::vector<Cell> cells;
    std::vector<ParameterMask> masks;
    void commit() noexcept override {
      for (std::size_t k = 0; k < cells.size(); ++k) {
        // Into the existing buffers (the cells were staged for the live n and d, so this
        // cannot fail): pointers and NumPy views of the parameters stay valid across a load.
        model->cell(Index(k)).assign_in_place(cells[k]);
        if (!(masks[k] == model->mask(Index(k)))) model->set_mask(std::move(masks[k]), Index(k));
      }
      model->enforce_mask();
    }
  };

  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    const ModelType& m = *model_;
    read_expected(r, "num_layers", std::int64_t(m.layers()), "the model's number of layers");
    auto st = std::make_unique<StagedModel>();
    st->model = model_;
    for (Index k = 0; k < m.layers(); ++k) {
      auto layer = read_layer(r, k, m.units(k), m.cell(k).inputs(), &m);
      st->cells.push_back(std::move(layer.first));
      st->masks.push_back(std::move(layer.second));
    }
    return st;
  }

  /// The masks a staged model will install (for the learners staged after it).
  static const std::vector<ParameterMask>& masks_of(const Staged& s) { return static_cast<const StagedModel&>(s).masks; }

 private:
  ModelType* model_;
};

/// Checks that a learner reads the Checkpoint's model, and returns the masks to lay it out for.
inline const std::vector<ParameterMask>& learner_masks(io::NpzReader& r, const CheckpointItem::Context& c,
                                                       const void* learner_model, const std::string& name) {
  if (c.model == nullptr || c.model != learner_model || c.masks == nullptr)
    r.fail("'" + name + "' learns a model that is not in this checkpoint: add(model) to the Checkpoint too");
  return *c.masks;
}

template <typename S, typename Sur>
class RtrlItem : public CheckpointItem {
 public:
  RtrlItem(std::string name, Rtrl<S, Sur>& rtrl) : CheckpointItem(std::move(name)), rtrl_(&rtrl) {}
  const void* model() const override { return &rtrl_->model(); }
  void save(io::NpzWriter& w) const override { save_stream(w, name(), *rtrl_); }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context& c) const override {
    auto st = std::make_shared<typename Rtrl<S, Sur>::StagedState>(
        stage_stream(r, name(), *rtrl_, learner_masks(r, c, model(), name())));
    Rtrl<S, Sur>* rtrl = rtrl_;
    return staged([rtrl, st]() { rtrl->restore_state(std::move(*st)); });
  }

 private:
  Rtrl<S, Sur>* rtrl_;
};

template <typename S, typename Sur>
class StreamsItem : public CheckpointItem {
 public:
  StreamsItem(std::string name, RtrlStreams<S, Sur>& streams) : CheckpointItem(std::move(name)), streams_(&streams) {}
  const void* model() const override { return &streams_->model(); }
  void save(io::NpzWriter& w) const override {
    require_streams();
    w.add_scalar(name() + "/streams", std::int64_t(streams_->streams()));
    for (Index b = 0; b < streams_->streams(); ++b) save_stream(w, name() + "/s" + std::to_string(b), streams_->stream(b));
  }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context& c) const override {
    require_streams();
    read_expected(r, name() + "/streams", std::int64_t(streams_->streams()), "the streams of this RtrlStreams");
    const std::vector<ParameterMask>& masks = learner_masks(r, c, model(), name());
    auto st = std::make_shared<typename RtrlStreams<S, Sur>::StagedState>();
    for (Index b = 0; b < streams_->streams(); ++b)
      st->push_back(stage_stream(r, name() + "/s" + std::to_string(b), streams_->stream(b), masks));
    RtrlStreams<S, Sur>* streams = streams_;
    return staged([streams, st]() { streams->restore_state(std::move(*st)); });
  }

 private:
  void require_streams() const {
    if (streams_->streams() == 0)
      throw std::logic_error(
          detail::printable("sparse_rtrl::io::Checkpoint: '" + name() + "' is a moved-from RtrlStreams"));
  }
  RtrlStreams<S, Sur>* streams_;
};

/// A Snap (SnAp-n) learner under name p (see the file comment).
template <typename S, typename Sur>
class SnapItem : public CheckpointItem {
 public:
  SnapItem(std::string name, Snap<S, Sur>& snap) : CheckpointItem(std::move(name)), snap_(&snap) {}
  const void* model() const override { return &snap_->model(); }

  static std::int64_t scheme_code(SnapCrossLayer c) {
    return c == SnapCrossLayer::graph ? 0 : (c == SnapCrossLayer::none ? 1 : 2);
  }
  static const char* scheme_name(std::int64_t c) {
    return c == 0 ? "graph" : (c == 1 ? "none" : (c == 2 ? "same_step" : "unknown"));
  }

  void save(io::NpzWriter& w) const override {
    const Snap<S, Sur>& s = *snap_;
    const std::string& p = name();
    require_followed(s, "sparse_rtrl::io::Checkpoint::save()");
    w.add_scalar(p + "/order", std::int64_t(s.order()));
    w.add_scalar(p + "/cross_layer", scheme_code(s.options().cross_layer));
    const auto st = s.stage_state();
    w.add_scalar(p + "/steps", std::int64_t(st.steps));
    w.add_scalar(p + "/last_step_valid", st.steps_valid);
    w.add(p + "/gradient", st.gradient);
    save_work(w, p + "/work_last", st.last_work);
    save_work(w, p + "/work_total", st.total_work);
    for (Index k = 0; k < s.layers(); ++k) {
      const std::string l = p + "/l" + std::to_string(k);
      const std::size_t q = std::size_t(k);
      w.add(l + "/state", st.state[q]);
      w.add(l + "/kept", st.kept[q]);
      save_work(w, l + "/work_last", st.layer_last_work[q]);
      save_work(w, l + "/work_total", st.layer_total_work[q]);
      for (const auto& f : cache_fields<S>(st.cache[q])) w.add(l + "/cache/" + f.first, *f.second);
    }
  }

  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context& c) const override {
    const Snap<S, Sur>& s = *snap_;
    const std::string& p = name();
    const std::vector<ParameterMask>& masks = learner_masks(r, c, model(), p);
    require_followed(s, "sparse_rtrl::io::Checkpoint::load()");
    const std::int64_t order = r.read_scalar<std::int64_t>(p + "/order");
    if (order != std::int64_t(s.order()))
      r.fail("entry '" + p + "/order': the file holds a SnAp-" + std::to_string(order) + " learner, '" + p +
             "' is SnAp-" + std::to_string(s.order()) + " (construct it with the saved order)");
    const std::int64_t scheme = r.read_scalar<std::int64_t>(p + "/cross_layer");
    const std::int64_t live = scheme_code(s.options().cross_layer);
    if (scheme != live)
      r.fail("entry '" + p + "/cross_layer': the file holds SnapCrossLayer::" + scheme_name(scheme) + " (" +
             std::to_string(scheme) + "), '" + p + "' uses SnapCrossLayer::" + scheme_name(live) + " (" +
             std::to_string(live) + ")");
    for (Index k = 0; k < s.layers(); ++k)
      if (!(masks[std::size_t(k)] == s.mask(k)))
        r.fail("'" + p + "': the file's masks of layer " + std::to_string(k) + " (entries 'mask_weight_ih" +
               layer_suffix(k) + "', 'mask_weight_hh" + layer_suffix(k) +
               "') differ from those this Snap's pattern was built for: construct the model with the saved "
               "masks (or load it with load_model()), then the Snap, then load");
    auto st = std::make_shared<typename Snap<S, Sur>::StagedState>(s.stage_state());
    st->steps = Index(read_count(r, p + "/steps", 0, sparse_rtrl::detail::kMaxStepCount));
    st->steps_valid = r.read_scalar<bool>(p + "/last_step_valid");
    r.read_into(p + "/gradient", st->gradient);
    require_finite_entry(r, p + "/gradient", st->gradient);
    st->last_work = read_work(r, p + "/work_last");
    st->total_work = read_work(r, p + "/work_total");
    for (Index k = 0; k < s.layers(); ++k) {
      const std::string l = p + "/l" + std::to_string(k);
      const std::size_t q = std::size_t(k);
      r.read_into(l + "/state", st->state[q]);
      require_finite_entry(r, l + "/state", st->state[q]);
      r.read_into(l + "/kept", st->kept[q]);
      require_finite_entry(r, l + "/kept", st->kept[q]);
      st->layer_last_work[q] = read_work(r, l + "/work_last");
      st->layer_total_work[q] = read_work(r, l + "/work_total");
      for (const auto& f : cache_fields<S>(st->cache[q])) r.read_into(l + "/cache/" + f.first, *f.second);
    }
    // The same checks restore_state() runs, here while staging: nothing is committed on a throw.
    try {
      s.validate_state(*st, "learner state", p + "/");
    } catch (const std::invalid_argument& e) {
      r.fail(e.what());
    }
    Snap<S, Sur>* snap = snap_;
    return staged([snap, st]() { snap->restore_state(std::move(*st)); });
  }

 private:
  void require_followed(const Snap<S, Sur>& s, const char* where) const {
    if (!s.mask_followed())
      throw std::logic_error(detail::printable(
          std::string(where) + ": '" + name() +
          "': the model's masks changed since this Snap was built (its pattern is stale)"));
  }
  Snap<S, Sur>* snap_;
};

template <typename S, typename Optimizer>
void save_optimizer_state(io::NpzWriter& w, const std::string& p, const Optimizer& opt, const char* first_name,
                          const char* second_name) {
  const std::string set = opt.parameter_set();
  const std::int64_t code = set.empty() ? 0 : (set == "EgruParameters" ? 1 : 2);
  w.add_scalar(p + "/steps", std::int64_t(opt.steps()));
  w.add_scalar(p + "/parameter_set", code);
  const auto tensors = optimizer_tensors(code);
  for (std::size_t k = 0; k < tensors.size(); ++k) {
    const auto save_moment = [&](const std::string& which, const auto& m) {
      const std::string name = p + "/" + which + "/" + tensors[k].first;
      if (tensors[k].second)
        w.add(name, m);
      else
        w.add(name, Eigen::Matrix<S, Eigen::Dynamic, 1>(Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, 1>>(
                        m.data(), m.size())));
    };
    if constexpr (std::is_same<Optimizer, Sgd<S>>::value) {
      save_moment(first_name, opt.velocity(Index(k)));
      (void)second_name;
    } else {
      save_moment(first_name, opt.first_moment(Index(k)));
      save_moment(second_name, opt.second_moment(Index(k)));
    }
  }
}

/// Reads moments saved by save_optimizer_state() into @p staged (a new optimizer object).
template <typename S, typename Optimizer>
void load_optimizer_state(io::NpzReader& r, const std::string& p, Optimizer& staged, const char* first_name,
                          const char* second_name) {
  using Matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  const std::int64_t steps = read_count(r, p + "/steps", 0, sparse_rtrl::detail::kMaxStepCount);
  const std::int64_t code = read_count(r, p + "/parameter_set", 0, 2);
  std::vector<Matrix> first, second;
  for (const auto& t : optimizer_tensors(code)) {
    for (const char* which : {first_name, second_name}) {
      if (!which) continue;
      const std::string name = p + "/" + which + "/" + t.first;
      const io::ArrayInfo& info = r.info(name);
      const std::size_t ndim = t.second ? 2 : 1;
      if (info.dtype != io::dtype_of<S>::value || info.shape.size() != ndim)
        r.fail("entry '" + name + "': expected a " + std::to_string(ndim) + "-D array of " +
               io::dtype_descr(io::dtype_of<S>::value) + ", found " + info.describe());
      const Index rows = Index(info.shape[0]), cols = ndim == 2 ? Index(info.shape[1]) : 1;
      Matrix m(rows, cols);
      if (ndim == 2) {
        r.read_into(name, m);
      } else {
        Eigen::Matrix<S, Eigen::Dynamic, 1> v(rows);
        r.read_into(name, v);
        m = v;
      }
      require_finite_entry(r, name, m);
      (which == first_name ? first : second).push_back(std::move(m));
    }
  }
  const std::string set = code == 0 ? "" : (code == 1 ? "EgruParameters" : "ReadoutParameters");
  try {
    staged.restore_state(set, first, second, Index(steps));
  } catch (const std::invalid_argument& e) {
    r.fail("optimizer '" + p + "': " + e.what());
  }
}

template <typename S>
class SgdItem : public CheckpointItem {
 public:
  SgdItem(std::string name, Sgd<S>& opt) : CheckpointItem(std::move(name)), opt_(&opt) {}
  void save(io::NpzWriter& w) const override {
    const std::string& p = name();
    const auto& o = opt_->options();
    w.add_scalar(p + "/type", std::int64_t(1));
    w.add_scalar(p + "/learning_rate", o.learning_rate);
    w.add_scalar(p + "/momentum", o.momentum);
    w.add_scalar(p + "/nesterov", o.nesterov);
    w.add_scalar(p + "/weight_decay", o.weight_decay);
    save_optimizer_state<S>(w, p, *opt_, "velocity", nullptr);
  }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    const std::string& p = name();
    read_expected(r, p + "/type", 1, "Sgd; 2 is Adam, 3 AdamW");
    SgdOptions<S> o;
    o.learning_rate = r.read_scalar<S>(p + "/learning_rate");
    o.momentum = r.read_scalar<S>(p + "/momentum");
    o.nesterov = r.read_scalar<bool>(p + "/nesterov");
    o.weight_decay = r.read_scalar<S>(p + "/weight_decay");
    auto st = std::make_shared<Sgd<S>>(construct(r, o));
    load_optimizer_state<S>(r, p, *st, "velocity", nullptr);
    Sgd<S>* opt = opt_;
    return staged([opt, st]() { *opt = std::move(*st); });
  }

 private:
  Sgd<S> construct(io::NpzReader& r, const SgdOptions<S>& o) const {
    try {
      return Sgd<S>(o);
    } catch (const std::invalid_argument& e) {
      r.fail("optimizer '" + name() + "': " + e.what());
    }
  }
  Sgd<S>* opt_;
};

template <typename S, bool Decoupled>
class AdamItem : public CheckpointItem {
 public:
  using Opt = AdamType<S, Decoupled>;
  AdamItem(std::string name, Opt& opt) : CheckpointItem(std::move(name)), opt_(&opt) {}
  void save(io::NpzWriter& w) const override {
    const std::string& p = name();
    const auto& o = opt_->options();
    w.add_scalar(p + "/type", std::int64_t(Decoupled ? 3 : 2));
    w.add_scalar(p + "/learning_rate", o.learning_rate);
    w.add_scalar(p + "/beta1", o.beta1);
    w.add_scalar(p + "/beta2", o.beta2);
    w.add_scalar(p + "/eps", o.eps);
    w.add_scalar(p + "/weight_decay", o.weight_decay);
    save_optimizer_state<S>(w, p, *opt_, "first_moment", "second_moment");
  }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    const std::string& p = name();
    read_expected(r, p + "/type", Decoupled ? 3 : 2, Decoupled ? "AdamW; 1 is Sgd, 2 Adam" : "Adam; 1 is Sgd, 3 AdamW");
    typename Opt::Options o;
    o.learning_rate = r.read_scalar<S>(p + "/learning_rate");
    o.beta1 = r.read_scalar<S>(p + "/beta1");
    o.beta2 = r.read_scalar<S>(p + "/beta2");
    o.eps = r.read_scalar<S>(p + "/eps");
    o.weight_decay = r.read_scalar<S>(p + "/weight_decay");
    auto st = std::make_shared<Opt>(construct(r, o));
    load_optimizer_state<S>(r, p, *st, "first_moment", "second_moment");
    Opt* opt = opt_;
    return staged([opt, st]() { *opt = std::move(*st); });
  }

 private:
  Opt construct(io::NpzReader& r, const typename Opt::Options& o) const {
    try {
      return Opt(o);
    } catch (const std::invalid_argument& e) {
      r.fail("optimizer '" + name() + "': " + e.what());
    }
  }
  Opt* opt_;
};

class PrunerItem : public CheckpointItem {
 public:
  PrunerItem(std::string name, MagnitudePruner& pruner) : CheckpointItem(std::move(name)), pruner_(&pruner) {}
  void save(io::NpzWriter& w) const override {
    const std::string& p = name();
    const PruningSchedule& s = pruner_->schedule();
    w.add_scalar(p + "/target_density_W", s.target_density_W);
    w.add_scalar(p + "/target_density_R", s.target_density_R);
    w.add_scalar(p + "/initial_density_W", pruner_->initial_density_W());
    w.add_scalar(p + "/initial_density_R", pruner_->initial_density_R());
    w.add_scalar(p + "/events", std::int64_t(s.events));
    w.add_scalar(p + "/events_done", std::int64_t(pruner_->events_done()));
    w.add_scalar(p + "/curve", std::int64_t(s.curve == PruningCurve::cubic ? 0 : 1));
  }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    const std::string& p = name();
    PruningSchedule s;
    s.target_density_W = r.read_scalar<double>(p + "/target_density_W");
    s.target_density_R = r.read_scalar<double>(p + "/target_density_R");
    const double iW = r.read_scalar<double>(p + "/initial_density_W");
    const double iR = r.read_scalar<double>(p + "/initial_density_R");
    s.events = Index(read_count(r, p + "/events", 1, std::numeric_limits<std::int64_t>::max()));
    const std::int64_t done = read_count(r, p + "/events_done", 0, std::int64_t(s.events));
    s.curve = read_count(r, p + "/curve", 0, 1) == 0 ? PruningCurve::cubic : PruningCurve::linear;
    std::shared_ptr<MagnitudePruner> st;
    try {
      st = std::make_shared<MagnitudePruner>(s, iW, iR);
    } catch (const std::invalid_argument& e) {
      r.fail("pruner '" + p + "': " + e.what());
    }
    st->set_events_done(Index(done));
    MagnitudePruner* pruner = pruner_;
    return staged([pruner, st]() { *pruner = *st; });
  }

 private:
  MagnitudePruner* pruner_;
};

template <typename S>
class ReadoutItem : public CheckpointItem {
 public:
  ReadoutItem(std::string name, LinearReadout<S>& readout) : CheckpointItem(std::move(name)), readout_(&readout) {}
  void save(io::NpzWriter& w) const override {
    const std::string& p = name();
    w.add(p + "/weight", readout_->parameters().V);
    w.add(p + "/bias", readout_->parameters().b);
    w.add(p + "/weight_grad", readout_->gradient().V);
    w.add(p + "/bias_grad", readout_->gradient().b);
  }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    const std::string& p = name();
    auto params = std::make_shared<ReadoutParameters<S>>(readout_->outputs(), readout_->units());
    auto grad = std::make_shared<ReadoutParameters<S>>(readout_->outputs(), readout_->units());
    r.read_into(p + "/weight", params->V);
    r.read_into(p + "/bias", params->b);
    r.read_into(p + "/weight_grad", grad->V);
    r.read_into(p + "/bias_grad", grad->b);
    require_finite_entry(r, p + "/weight", params->V);
    require_finite_entry(r, p + "/bias", params->b);
    LinearReadout<S>* readout = readout_;
    return staged([readout, params, grad]() {
      readout->parameters() = std::move(*params);
      readout->gradient() = std::move(*grad);
    });
  }

 private:
  LinearReadout<S>* readout_;
};

template <typename T>
class ValueItem : public CheckpointItem {
 public:
  ValueItem(std::string name, T& value) : CheckpointItem(std::move(name)), value_(&value) {}
  void save(io::NpzWriter& w) const override { w.add_scalar(name(), *value_); }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    const T v = r.read_scalar<T>(name());
    T* target = value_;
    return staged([target, v]() { *target = v; });
  }

 private:
  T* value_;
};

template <typename T>
class VectorItem : public CheckpointItem {
 public:
  VectorItem(std::string name, std::vector<T>& v) : CheckpointItem(std::move(name)), v_(&v) {}
  void save(io::NpzWriter& w) const override { w.add_values(name(), v_->data(), v_->size()); }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    auto st = std::make_shared<std::vector<T>>(v_->size());
    Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>> m(st->data(), Index(st->size()));
    r.read_into(name(), m);
    std::vector<T>* target = v_;
    return staged([target, st]() { target->swap(*st); });
  }

 private:
  std::vector<T>* v_;
};

template <typename Derived>
class EigenItem : public CheckpointItem {
 public:
  EigenItem(std::string name, Derived& m) : CheckpointItem(std::move(name)), m_(&m) {}
  void save(io::NpzWriter& w) const override { w.add(name(), *m_); }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    auto st = std::make_shared<Derived>(*m_);  // the live shape
    r.read_into(name(), *st);
    Derived* target = m_;
    return staged([target, st]() { target->swap(*st); });
  }

 private:
  Derived* m_;
};

class WorkItem : public CheckpointItem {
 public:
  WorkItem(std::string name, WorkCounters& w) : CheckpointItem(std::move(name)), w_(&w) {}
  void save(io::NpzWriter& w) const override { save_work(w, name(), *w_); }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    const WorkCounters v = read_work(r, name());
    WorkCounters* target = w_;
    return staged([target, v]() { *target = v; });
  }

 private:
  WorkCounters* w_;
};

/// A standard random engine through its text form (the standard fixes it: the state words).
template <typename Engine>
class EngineItem : public CheckpointItem {
 public:
  EngineItem(std::string name, Engine& e) : CheckpointItem(std::move(name)), e_(&e) {}
  void save(io::NpzWriter& w) const override {
    std::ostringstream s;
    s << *e_;
    std::istringstream in(s.str());
    std::vector<std::uint64_t> words;
    unsigned long long v;
    while (in >> v) words.push_back(std::uint64_t(v));
    w.add_values(name(), words.data(), words.size());
  }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    std::ostringstream now;
    now << *e_;
    std::istringstream count(now.str());
    std::size_t n = 0;
    for (unsigned long long v; count >> v;) ++n;
    Eigen::Matrix<std::uint64_t, Eigen::Dynamic, 1> words(static_cast<Index>(n));
    r.read_into(name(), words);
    std::ostringstream text;
    for (Index k = 0; k < words.size(); ++k) text << (k ? " " : "") << static_cast<unsigned long long>(words(k));
    auto st = std::make_shared<Engine>(*e_);
    std::istringstream in(text.str());
    in >> *st;
    if (!in) r.fail("entry '" + name() + "': not a valid state of this random engine");
    Engine* target = e_;
    return staged([target, st]() { *target = *st; });
  }

 private:
  Engine* e_;
};

}  // namespace detail

namespace io {

/// @brief Named references to the objects of a run, saved to and loaded from one .npz (see the
/// file comment for the API, the guarantees and the entry names).
///
/// Names: the model has none (its entries are torch's); every other object gets a name that
/// prefixes its entries ("rtrl" -> "rtrl/steps", ...) or, for values and arrays, is the entry.
/// Names follow NpzWriter's rules and must be unique. The Checkpoint keeps references: the
/// objects must outlive it.
class Checkpoint {
 public:
  Checkpoint() = default;

  /// The model (at most one per checkpoint); learners added to the checkpoint must read it.
  template <typename S, typename Sur>
  Checkpoint& add(Model<S, Sur>& model) {
    if (model_)
      throw std::invalid_argument("sparse_rtrl::io::Checkpoint::add(): a checkpoint holds one model, and has one");
    model_ = std::make_unique<detail::ModelItem<S, Sur>>(model);
    model_address_ = &model;
    masks_of_ = &detail::ModelItem<S, Sur>::masks_of;
    return *this;
  }
  /// A learner of the checkpoint's model.
  template <typename S, typename Sur>
  Checkpoint& add(const std::string& name, Rtrl<S, Sur>& rtrl) {
    return push(std::make_unique<detail::RtrlItem<S, Sur>>(name, rtrl));
  }
  /// B streams of the checkpoint's model.
  template <typename S, typename Sur>
  Checkpoint& add(const std::string& name, RtrlStreams<S, Sur>& streams) {
    return push(std::make_unique<detail::StreamsItem<S, Sur>>(name, streams));
  }
  template <typename S>
  Checkpoint& add(const std::string& name, Sgd<S>& optimizer) {
    return push(std::make_unique<detail::SgdItem<S>>(name, optimizer));
  }
  /// Adam or AdamW.
  template <typename S, bool Decoupled>
  Checkpoint& add(const std::string& name, AdamType<S, Decoupled>& optimizer) {
    return push(std::make_unique<detail::AdamItem<S, Decoupled>>(name, optimizer));
  }
  /// A SnAp-n learner of the checkpoint's model (its order and cross_layer must match the file's).
  template <typename S, typename Sur>
  Checkpoint& add(const std::string& name, Snap<S, Sur>& snap) {
    return push(std::make_unique<detail::SnapItem<S, Sur>>(name, snap));
  }
  Checkpoint& add(const std::string& name, MagnitudePruner& pruner) {
    return push(std::make_unique<detail::PrunerItem>(name, pruner));
  }
  template <typename S>
  Checkpoint& add(const std::string& name, LinearReadout<S>& readout) {
    return push(std::make_unique<detail::ReadoutItem<S>>(name, readout));
  }
  Checkpoint& add(const std::string& name, WorkCounters& counters) {
    return push(std::make_unique<detail::WorkItem>(name, counters));
  }
  /// A number (bool, integers, float, double): a 0-D array.
  template <typename T, std::enable_if_t<std::is_arithmetic<T>::value, int> = 0>
  Checkpoint& add(const std::string& name, T& value) {
    return push(std::make_unique<detail::ValueItem<T>>(name, value));
  }
  /// A std::vector of numbers (not bool): a 1-D array; loading needs the saved length.
  template <typename T, std::enable_if_t<std::is_arithmetic<T>::value && !std::is_same<T, bool>::value, int> = 0>
  Checkpoint& add(const std::string& name, std::vector<T>& values) {
    return push(std::make_unique<detail::VectorItem<T>>(name, values));
  }
  /// An Eigen matrix or array (vectors 1-D, others 2-D); loading needs the saved shape.
  template <typename Derived>
  Checkpoint& add(const std::string& name, Eigen::PlainObjectBase<Derived>& m) {
    return push(std::make_unique<detail::EigenItem<Derived>>(name, m.derived()));
  }
  /// Standard random engines (std::mt19937, std::mt19937_64, std::minstd_rand, std::ranlux48, ...).
  template <typename U, std::size_t w, std::size_t n, std::size_t m, std::size_t r, U a, std::size_t u, U d,
            std::size_t s, U b, std::size_t t, U c, std::size_t l, U f>
  Checkpoint& add(const std::string& name, std::mersenne_twister_engine<U, w, n, m, r, a, u, d, s, b, t, c, l, f>& e) {
    return push(std::make_unique<detail::EngineItem<std::remove_reference_t<decltype(e)>>>(name, e));
  }
  template <typename U, U a, U c, U m>
  Checkpoint& add(const std::string& name, std::linear_congruential_engine<U, a, c, m>& e) {
    return push(std::make_unique<detail::EngineItem<std::remove_reference_t<decltype(e)>>>(name, e));
  }
  template <typename U, std::size_t w, std::size_t s, std::size_t r>
  Checkpoint& add(const std::string& name, std::subtract_with_carry_engine<U, w, s, r>& e) {
    return push(std::make_unique<detail::EngineItem<std::remove_reference_t<decltype(e)>>>(name, e));
  }

  /// @brief Writes every object to @p path atomically (a temporary file in the same directory,
  /// fsync, rename): an existing file at @p path is replaced only by a complete new one, with its
  /// permission bits kept; a symbolic link is written through (io::NpzWriter).
  void save(const std::string& path, NpzWriterOptions options = {}) const {
    const char* where = "sparse_rtrl::io::Checkpoint::save()";
    check_learners(where);
    NpzWriter w(path, options, where);
    w.add_scalar("format_version", checkpoint_format_version);
    if (model_) model_->save(w);
    for (const auto& item : items_) item->save(w);
    w.commit();
  }

  /// @brief Restores every object from @p path, all or nothing (see the file comment). Entries
  /// of the file that no object asks for are ignored (their CRC-32 is still checked). The
  /// model's parameters are written into their existing storage: pointers to them stay valid.
  void load(const std::string& path) {
    const char* where = "sparse_rtrl::io::Checkpoint::load()";
    check_learners(where);
    NpzReader r(path, where);
    detail::require_checkpoint_version(r);
    detail::CheckpointItem::Context context;
    std::vector<std::unique_ptr<detail::CheckpointItem::Staged>> staged;
    if (model_) {
      staged.push_back(model_->stage(r, context));
      context.model = model_address_;
      context.masks = &model_masks(*staged.back());
    }
    for (const auto& item : items_) staged.push_back(item->stage(r, context));
    r.verify_all();
    // Everything is read and checked: from here on nothing can fail. The model goes first, so
    // that the learners' states find it with the masks they were staged for.
    for (auto& s : staged) s->commit();
  }

  /// Objects in the checkpoint, the model included.
  std::size_t size() const { return items_.size() + (model_ ? 1 : 0); }

 private:
  Checkpoint& push(std::unique_ptr<detail::CheckpointItem> item) {
    for (const auto& other : items_)
      if (other->name() == item->name())
        throw std::invalid_argument(
            detail::printable("sparse_rtrl::io::Checkpoint::add(): the name '" + item->name() + "' is taken"));
    if (item->name().empty())
      throw std::invalid_argument("sparse_rtrl::io::Checkpoint::add(): objects other than the model need a name");
    items_.push_back(std::move(item));
    return *this;
  }

  void check_learners(const char* where) const {
    for (const auto& item : items_)
      if (item->model() && item->model() != model_address_)
        throw std::invalid_argument(detail::printable(
            std::string(where) + ": '" + item->name() + "' learns a model that is not in this checkpoint: add(model) too"));
  }

  const std::vector<ParameterMask>& model_masks(const detail::CheckpointItem::Staged& s) const { return masks_of_(s); }

  std::unique_ptr<detail::CheckpointItem> model_;
  const void* model_address_ = nullptr;
  std::vector<std::unique_ptr<detail::CheckpointItem>> items_;
  const std::vector<ParameterMask>& (*masks_of_)(const detail::CheckpointItem::Staged&) = nullptr;
};

/// @brief A new Model built from the model entries of a checkpoint (any layers, sizes, modes,
/// masks; the surrogate from SurrogateEntries, else Surrogate's default). Throws as load() does.
template <typename S, typename Sur = TriangularSurrogate<S>>
Model<S, Sur> load_model(const std::string& path) {
  const char* where = "sparse_rtrl::io::load_model()";
  NpzReader r(path, where);
  detail::require_checkpoint_version(r);
  const Index L = Index(detail::read_count(r, "num_layers", 1, 1 << 20));
  std::vector<typename Model<S, Sur>::Cell> cells;
  std::vector<ParameterMask> masks;
  for (Index k = 0; k < L; ++k) {
    const std::string s = detail::layer_suffix(k);
    const ArrayInfo& hh = r.info("weight_hh" + s);
    const ArrayInfo& ih = r.info("weight_ih" + s);
    if (hh.shape.size() != 2 || hh.shape[1] == 0 || hh.shape[0] != 3 * hh.shape[1] || ih.shape.size() != 2 ||
        ih.shape[0] != hh.shape[0] || ih.shape[1] == 0 || hh.shape[1] > (std::uint64_t(1) << 31) ||
        ih.shape[1] > (std::uint64_t(1) << 31))
      r.fail("entries 'weight_ih" + s + "' " + ArrayInfo::shape_string(ih.shape) + " and 'weight_hh" + s + "' " +
             ArrayInfo::shape_string(hh.shape) + ": expected shapes (3n, d) and (3n, n)");
    const Index n = Index(hh.shape[1]), d = Index(ih.shape[1]);
    if (k > 0 && d != cells.back().units())
      r.fail("entry 'weight_ih" + s + "': layer " + std::to_string(k) + " must read layer " + std::to_string(k - 1) +
             "'s " + std::to_string(cells.back().units()) + " units, found d = " + std::to_string(d));
    auto layer = detail::ModelItem<S, Sur>::read_layer(r, k, n, d, nullptr);
    cells.push_back(std::move(layer.first));
    masks.push_back(std::move(layer.second));
  }
  r.verify_all();
  return Model<S, Sur>(std::move(cells), std::move(masks));
}

}  // namespace io
}  // namespace sparse_rtrl
