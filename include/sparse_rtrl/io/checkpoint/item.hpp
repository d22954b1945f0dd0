/// @file io/checkpoint/item.hpp
/// @brief What io::Checkpoint holds: CheckpointItem, the base of one saved object's entries,
///        and CheckpointTraits<T>, which names the item of each type add(name, object) accepts.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/npz.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>

#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace sparse_rtrl {
namespace io {

/// @brief Base of the items a Checkpoint holds (type erasure over the objects it references).
///
/// To checkpoint a type of your own (or a new learner of the library), derive an item from this
/// class and name it in a CheckpointTraits specialisation (below): nothing else changes.
/// save() writes the object's entries under name() (prefix "name/"); stage() reads and checks
/// them into a copy, throwing (NpzReader::fail) without touching the object, and returns the
/// commit that installs the copy, which must not fail (make_staged() wraps a lambda).
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

/// @brief Which CheckpointItem saves a T: specialise with `using Item = YourItem;`, YourItem
/// derived from CheckpointItem and constructible from (std::string name, T& object). The
/// primary template has no Item; Checkpoint::add() then stops with a static_assert naming this.
/// The library's types have theirs next to their items (io/checkpoint/*_item.hpp).
template <typename T, typename Enable = void>
struct CheckpointTraits {};

/// True when CheckpointTraits<T> names an Item (Checkpoint::add(name, object) accepts a T).
template <typename T, typename = void>
struct is_checkpointable : std::false_type {};
template <typename T>
struct is_checkpointable<T, std::void_t<typename CheckpointTraits<T>::Item>> : std::true_type {};

/// A staged load's commit from a callable: run once, after every item was staged (must not throw).
template <typename F>
std::unique_ptr<CheckpointItem::Staged> make_staged(F f) {
  struct Commit : CheckpointItem::Staged {
    explicit Commit(F g) : f(std::move(g)) {}
    void commit() noexcept override { f(); }
    F f;
  };
  return std::make_unique<Commit>(std::move(f));
}

}  // namespace io

namespace detail {

// Items are written in detail under the name they always had there.
using io::CheckpointItem;

/// Checks that a learner reads the Checkpoint's model, and returns the masks to lay it out for.
inline const std::vector<ParameterMask>& learner_masks(io::NpzReader& r, const CheckpointItem::Context& c,
                                                       const void* learner_model, const std::string& name) {
  if (c.model == nullptr || c.model != learner_model || c.masks == nullptr)
    r.fail("'" + name + "' learns a model that is not in this checkpoint: add(model) to the Checkpoint too");
  return *c.masks;
}

}  // namespace detail
}  // namespace sparse_rtrl
