/// @file io/checkpoint/model_item.hpp
/// @brief The model's entries (torch.nn.GRU's names at the top level, docs/checkpoint_format.md):
///        io::SurrogateEntries and the item behind Checkpoint::add(model) and io::load_model().
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/entries.hpp>
#include <sparse_rtrl/io/checkpoint/item.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/model/surrogate.hpp>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace sparse_rtrl {

namespace io {

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

/// The model: torch names at the top level (docs/checkpoint_format.md).
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

}  // namespace detail
}  // namespace sparse_rtrl
