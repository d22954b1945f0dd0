/// @file io/checkpoint/snap_item.hpp
/// @brief Snap (SnAp-n) in checkpoints: the stream entries every learner has (learner_item.hpp),
///        its influence the kept entries ("kept"), plus its order and cross-layer scheme; the
///        pattern follows from the masks and those two.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/entries.hpp>
#include <sparse_rtrl/io/checkpoint/item.hpp>
#include <sparse_rtrl/io/checkpoint/learner_item.hpp>
#include <sparse_rtrl/learners/snap.hpp>

#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace detail {

template <typename S, typename Sur>
struct LearnerCheckpointExtras<Snap<S, Sur>> {
  static std::int64_t scheme_code(SnapCrossLayer c) {
    return c == SnapCrossLayer::graph ? 0 : (c == SnapCrossLayer::none ? 1 : 2);
  }
  static const char* scheme_name(std::int64_t c) {
    return c == 0 ? "graph" : (c == 1 ? "none" : (c == 2 ? "same_step" : "unknown"));
  }
  static void require_followed(const Snap<S, Sur>& s, const std::string& p, const char* where) {
    if (!s.mask_followed())
      throw std::logic_error(detail::printable(std::string(where) + ": '" + p +
                                               "': the model's masks changed since this Snap was built (its pattern is stale)"));
  }

  static void save(io::NpzWriter& w, const std::string& p, const Snap<S, Sur>& s) {
    require_followed(s, p, "sparse_rtrl::io::Checkpoint::save()");
    w.add_scalar(p + "/order", std::int64_t(s.order()));
    w.add_scalar(p + "/cross_layer", scheme_code(s.options().cross_layer));
  }

  static void check_load(io::NpzReader& r, const std::string& p, const Snap<S, Sur>& s,
                         const std::vector<ParameterMask>& masks) {
    require_followed(s, p, "sparse_rtrl::io::Checkpoint::load()");
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
  }
};

}  // namespace detail

namespace io {

template <typename S, typename Sur>
struct CheckpointTraits<Snap<S, Sur>> {
  using Item = detail::LearnerItem<Snap<S, Sur>>;
};

}  // namespace io
}  // namespace sparse_rtrl
