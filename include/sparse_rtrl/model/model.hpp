/// @file model.hpp
/// @brief What the network is: an EGRU cell (parameters, options, surrogate) and its parameter
///        mask, with no learning state. Learners and optimizers reference one Model.
///
/// Who owns what (docs/architecture.md): the model owns every parameter and the
/// mask, once; a learner (Rtrl, Snap, Bptt, RtrlStreams) holds only per-stream state (c, the
/// influence matrix, the accumulated gradient, work counters) and reads the model it was given.
/// So B streams, an optimizer and an evaluation all see the same numbers with nothing to keep in
/// sync, and a gradient summed over streams is a gradient of this one set of parameters.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/model/egru_cell.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sparse_rtrl {

/// @brief L >= 1 EGRU layers and their masks: the parameters every learner of it reads.
///
/// Lifetime: learners keep a pointer to the model. It must outlive them and stay at one address
/// (do not move it, or keep it in a container that reallocates, while learners use it); binding
/// a learner to a temporary model does not compile. Copying a model makes a new, independent
/// model (its learners are not copied with it).
///
/// Writing: parameters() and cell() are mutable for optimizers. Keep the shapes and keep values
/// finite (the learners check both at every step). Change the mask only through set_mask():
/// it zeroes the newly pruned weights and bumps mask_version(), by which every learner of the
/// model notices the change and re-lays its influence columns before its next step.
/// Do not write to a model while a learner of it is stepping on another thread. Learners only
/// read the model during a step, with one exception: a step re-zeroes pruned weights that were
/// written since (enforce_mask()), so stepping learners of one model on several threads at once
/// is safe only while nothing writes into pruned weights (optimizers given the mask never do).
/// @tparam Scalar float or double.
/// @tparam Surrogate pseudo-derivative policy (surrogate.hpp).
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class Model {
 public:
  using Cell = EgruCell<Scalar, Surrogate>;
  using Parameters = EgruParameters<Scalar>;
  using scalar_type = Scalar;
  using surrogate_type = Surrogate;

  /// One layer, every parameter kept (dense mask).
  explicit Model(Cell cell) { add_layer("sparse_rtrl::Model::Model()", std::move(cell), nullptr); }

  /// One layer keeping the weights of @p mask; masked weights of the cell are set to zero. The
  /// mask must have the cell's n and d (else std::invalid_argument).
  Model(Cell cell, ParameterMask mask) { add_layer("sparse_rtrl::Model::Model()", std::move(cell), &mask); }

  /// @brief A stack of L = cells.size() >= 1 layers (model.md, "Stacked layers"): layer k reads
  /// the event output y^{k-1}_t of layer k - 1 at the same step (layer 0 reads x_t), so layer k's
  /// cell has inputs() == units() of layer k - 1. @p masks: none (every layer dense) or one per
  /// layer, each for its layer's n and d. Throws std::invalid_argument naming the layer.
  explicit Model(std::vector<Cell> cells, std::vector<ParameterMask> masks = {}) {
    const char* where = "sparse_rtrl::Model::Model()";
    if (cells.empty()) detail::fail(where, "a model needs at least one layer, received 0 cells");
    if (!masks.empty() && masks.size() != cells.size())
      detail::fail(where, "masks must be empty or one per layer: " + std::to_string(cells.size()) +
                              " layers, received " + std::to_string(masks.size()) + " masks");
    for (std::size_t k = 0; k < cells.size(); ++k) {
      if (k > 0 && cells[k].inputs() != cells_.back().units())  // cells[k - 1] was moved from
        detail::fail(where, "layer " + std::to_string(k) + " reads layer " + std::to_string(k - 1) +
                                "'s output: it needs d = " + std::to_string(cells_.back().units()) +
                                " inputs, received d = " + std::to_string(cells[k].inputs()));
      add_layer(where, std::move(cells[k]), masks.empty() ? nullptr : &masks[k], k);
    }
  }

  /// Number of layers L (1 for a single cell).
  Index layers() const { return Index(cells_.size()); }
  /// Units of the output layer (the top of a stack; n for one layer).
  Index units() const { return cells_.back().units(); }
  /// Units of layer k.
  Index units(Index layer) const { return cells_[checked(layer)].units(); }
  /// Inputs of the model (of layer 0).
  Index inputs() const { return cells_.front().inputs(); }
  /// Events mode of layer k (default 0; a stack may mix modes).
  bool events(Index layer = 0) const { return cells_[checked(layer)].events(); }
  const Surrogate& surrogate(Index layer = 0) const { return cells_[checked(layer)].surrogate(); }

  const Cell& cell(Index layer = 0) const& { return cells_[checked(layer)]; }
  /// Mutable cell of layer k (its parameters), e.g. for an optimizer: see the class comment.
  Cell& cell(Index layer = 0) & { return cells_[checked(layer)]; }
  /// A temporary model's cell dies with it at the end of the statement: `Inference
  /// i(make_model().cell());` would keep a dangling reference, so it does not compile. Copy the
  /// cell (`Cell c = make_model().cell(0);` does not compile either: name the model first).
  const Cell& cell(Index layer = 0) const&& = delete;
  const Parameters& parameters(Index layer = 0) const& { return cell(layer).parameters(); }
  /// Mutable parameters of layer k, e.g. for an optimizer: see the class comment.
  Parameters& parameters(Index layer = 0) & { return cell(layer).parameters(); }
  /// The same for a temporary model's parameters: refused at compile time.
  const Parameters& parameters(Index layer = 0) const&& = delete;

  const ParameterMask& mask(Index layer = 0) const { return masks_[checked(layer)]; }
  /// @brief Changes which weights of layer k exist (pruning, reviving): newly pruned weights
  /// become zero, revived ones start at zero. Learners of this model follow before their next
  /// step. Throws std::invalid_argument (and changes nothing) for a mask of other sizes.
  void set_mask(const ParameterMask& mask, Index layer = 0) {
    const std::size_t k = checked(layer);
    mask.require_matches(cells_[k].parameters(), "sparse_rtrl::Model::set_mask()");
    ParameterMask copy = mask;  // may throw; nothing has changed yet
    std::swap(masks_[k], copy);
    masks_[k].apply(cells_[k].parameters());
    ++mask_version_;
  }
  /// The same, taking the mask over: allocates nothing, so it cannot fail once the sizes match
  /// (loading a checkpoint commits masks this way, io/checkpoint.hpp).
  void set_mask(ParameterMask&& mask, Index layer = 0) {
    const std::size_t k = checked(layer);
    mask.require_matches(cells_[k].parameters(), "sparse_rtrl::Model::set_mask()");
    std::swap(masks_[k], mask);
    masks_[k].apply(cells_[k].parameters());
    ++mask_version_;
  }
  /// Incremented by every set_mask(): learners compare it with the version they were laid out for.
  std::uint64_t mask_version() const { return mask_version_; }

  /// Re-zeroes pruned weights that an optimizer (or the user) wrote into, in every layer. Cheap
  /// and read-only when the masks are respected; learners call it before each step so that the
  /// forward pass always matches the influence columns they track.
  void enforce_mask() {
    for (std::size_t k = 0; k < cells_.size(); ++k) {
      if (masks_[k].all_kept()) continue;
      if (!masks_[k].respected_by(cells_[k].parameters())) masks_[k].apply(cells_[k].parameters());
    }
  }

 private:
  void add_layer(const char* where, Cell cell, const ParameterMask* mask, std::size_t k = 0) {
    ParameterMask m = mask ? *mask : ParameterMask::dense(cell.units(), cell.inputs());
    if (mask && (m.units() != cell.units() || m.inputs() != cell.inputs()))
      detail::fail(where, (k > 0 || !cells_.empty() ? "layer " + std::to_string(k) + ": " : std::string()) +
                              "mask is for n = " + std::to_string(m.units()) + ", d = " + std::to_string(m.inputs()) +
                              " but the parameters have n = " + std::to_string(cell.units()) +
                              ", d = " + std::to_string(cell.inputs()));
    m.apply(cell.parameters());
    cells_.push_back(std::move(cell));
    masks_.push_back(std::move(m));
  }

  std::size_t checked(Index layer) const {
    if (layer < 0 || layer >= Index(cells_.size()))
      throw std::out_of_range("sparse_rtrl::Model: layer must be in [0, " + std::to_string(cells_.size()) +
                              "), received " + std::to_string(layer));
    return std::size_t(layer);
  }

  std::vector<Cell> cells_;
  std::vector<ParameterMask> masks_;
  std::uint64_t mask_version_ = 0;
};

}  // namespace sparse_rtrl
