/// @file model.hpp
/// @brief What the network is: an EGRU cell (parameters, options, surrogate) and its parameter
///        mask, with no learning state. Learners and optimizers reference one Model.
///
/// Who owns what (../shared/design/architecture.md): the model owns every parameter and the
/// mask, once; a learner (Rtrl, Snap, Bptt, RtrlStreams) holds only per-stream state (c, the
/// influence matrix, the accumulated gradient, work counters) and reads the model it was given.
/// So B streams, an optimizer and an evaluation all see the same numbers with nothing to keep in
/// sync, and a gradient summed over streams is a gradient of this one set of parameters.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/egru_cell.hpp>
#include <sparse_rtrl/parameter_mask.hpp>

#include <cstdint>
#include <utility>

namespace sparse_rtrl {

/// @brief One EGRU layer and its mask: the parameters every learner of it reads.
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

  /// Every parameter kept (dense mask).
  explicit Model(Cell cell)
      : cell_(std::move(cell)), mask_(ParameterMask::dense(cell_.units(), cell_.inputs())) {}

  /// Keeps the weights of @p mask; masked weights of the cell are set to zero. The mask must
  /// have the cell's n and d (else std::invalid_argument).
  Model(Cell cell, ParameterMask mask) : cell_(std::move(cell)), mask_(std::move(mask)) {
    mask_.require_matches(cell_.parameters(), "sparse_rtrl::Model::Model()");
    mask_.apply(cell_.parameters());
  }

  Index units() const { return cell_.units(); }
  Index inputs() const { return cell_.inputs(); }
  bool events() const { return cell_.events(); }
  const Surrogate& surrogate() const { return cell_.surrogate(); }

  const Cell& cell() const { return cell_; }
  /// Mutable cell (its parameters), e.g. for an optimizer: see the class comment.
  Cell& cell() { return cell_; }
  const Parameters& parameters() const { return cell_.parameters(); }
  /// Mutable parameters, e.g. for an optimizer: see the class comment.
  Parameters& parameters() { return cell_.parameters(); }

  const ParameterMask& mask() const { return mask_; }
  /// @brief Changes which weights exist (pruning, reviving): newly pruned weights become zero,
  /// revived ones start at zero. Learners of this model follow before their next step.
  /// Throws std::invalid_argument (and changes nothing) for a mask of other sizes.
  void set_mask(const ParameterMask& mask) {
    mask.require_matches(cell_.parameters(), "sparse_rtrl::Model::set_mask()");
    ParameterMask copy = mask;  // may throw; nothing has changed yet
    std::swap(mask_, copy);
    mask_.apply(cell_.parameters());
    ++mask_version_;
  }
  /// Incremented by every set_mask(): learners compare it with the version they were laid out for.
  std::uint64_t mask_version() const { return mask_version_; }

  /// Re-zeroes pruned weights that an optimizer (or the user) wrote into. Cheap and read-only
  /// when the mask is respected; learners call it before each step so that the forward pass
  /// always matches the influence columns they track.
  void enforce_mask() {
    if (mask_.all_kept()) return;
    if (!mask_.respected_by(cell_.parameters())) mask_.apply(cell_.parameters());
  }

 private:
  Cell cell_;
  ParameterMask mask_;
  std::uint64_t mask_version_ = 0;
};

}  // namespace sparse_rtrl
