/// @file io/checkpoint.hpp
/// @brief Checkpoints: save a run (model, learners, optimizers, pruning schedule, your own
///        counters and random engines) into one NumPy .npz file and resume it, bit for bit.
///
/// A Checkpoint is a list of named references to live objects; the same list saves and loads:
///
///     io::Checkpoint ckpt;
///     ckpt.add(model)                    // torch.nn.GRU names: weight_ih_l0, ...
///         .add("rtrl", streams)          // Rtrl, RtrlStreams or Snap over that model
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
/// The file format (every entry, its shape and dtype): docs/checkpoint_format.md.
/// Each saved type has its item in io/checkpoint/ and names it in a CheckpointTraits<T>
/// specialisation (io/checkpoint/item.hpp); a new type needs only that, never this facade.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/npz.hpp>
#include <sparse_rtrl/io/checkpoint/entries.hpp>
#include <sparse_rtrl/io/checkpoint/item.hpp>
#include <sparse_rtrl/io/checkpoint/model_item.hpp>
// The library's saved types: each header specialises CheckpointTraits for its type.
#include <sparse_rtrl/io/checkpoint/engine_item.hpp>
#include <sparse_rtrl/io/checkpoint/optimizer_items.hpp>
#include <sparse_rtrl/io/checkpoint/pruner_item.hpp>
#include <sparse_rtrl/io/checkpoint/readout_item.hpp>
#include <sparse_rtrl/io/checkpoint/rtrl_item.hpp>
#include <sparse_rtrl/io/checkpoint/rtrl_streams_item.hpp>
#include <sparse_rtrl/io/checkpoint/snap_item.hpp>
#include <sparse_rtrl/io/checkpoint/truncated_bptt_item.hpp>
#include <sparse_rtrl/io/checkpoint/uoro_item.hpp>
#include <sparse_rtrl/io/checkpoint/value_items.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/model/surrogate.hpp>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace sparse_rtrl {
namespace io {

/// @brief Named references to the objects of a run, saved to and loaded from one .npz (see the
/// file comment for the API and the guarantees, docs/checkpoint_format.md for the entries).
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
  /// @brief Any other object: a learner of the checkpoint's model (Rtrl, RtrlStreams, Snap),
  /// an optimizer (Sgd, Adam, AdamW), a MagnitudePruner, a LinearReadout, WorkCounters, a
  /// number (0-D), a std::vector of numbers but bool (1-D), an Eigen matrix or array (loading
  /// needs the saved shape), a standard random engine; or a type of your own, through a
  /// CheckpointTraits<T> specialisation (io/checkpoint/item.hpp). Its entries: under @p name.
  template <typename T>
  Checkpoint& add(const std::string& name, T& object) {
    static_assert(!std::is_const<T>::value,
                  "sparse_rtrl::io::Checkpoint::add(name, object): the object must be non-const (load() writes it)");
    static_assert(is_checkpointable<T>::value,
                  "sparse_rtrl::io::Checkpoint::add(name, object): no checkpoint support for this type: specialise "
                  "sparse_rtrl::io::CheckpointTraits<T> with `using Item = YourItem;`, YourItem derived from "
                  "sparse_rtrl::io::CheckpointItem and constructible from (std::string name, T& object) "
                  "(io/checkpoint/item.hpp; the library's items are in io/checkpoint/*_item.hpp)");
    if constexpr (is_checkpointable<T>::value) {
      using Item = typename CheckpointTraits<T>::Item;
      static_assert(std::is_base_of<CheckpointItem, Item>::value &&
                        std::is_constructible<Item, std::string, T&>::value,
                    "sparse_rtrl::io::CheckpointTraits<T>::Item must derive from sparse_rtrl::io::CheckpointItem "
                    "and be constructible from (std::string name, T& object)");
      return push(std::make_unique<Item>(name, object));
    } else {
      return *this;
    }
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
    CheckpointItem::Context context;
    std::vector<std::unique_ptr<CheckpointItem::Staged>> staged;
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
  Checkpoint& push(std::unique_ptr<CheckpointItem> item) {
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

  const std::vector<ParameterMask>& model_masks(const CheckpointItem::Staged& s) const { return masks_of_(s); }

  std::unique_ptr<CheckpointItem> model_;
  const void* model_address_ = nullptr;
  std::vector<std::unique_ptr<CheckpointItem>> items_;
  const std::vector<ParameterMask>& (*masks_of_)(const CheckpointItem::Staged&) = nullptr;
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
