/// @file io/checkpoint/snap_item.hpp
/// @brief Snap's (SnAp-n) entries: the kept influence entries; the pattern follows from the masks.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/entries.hpp>
#include <sparse_rtrl/io/checkpoint/item.hpp>
#include <sparse_rtrl/learners/snap.hpp>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace detail {

/// A Snap (SnAp-n) learner under name p (docs/checkpoint_format.md).
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
    return io::make_staged([snap, st]() { snap->restore_state(std::move(*st)); });
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

}  // namespace detail

namespace io {

template <typename S, typename Sur>
struct CheckpointTraits<Snap<S, Sur>> {
  using Item = detail::SnapItem<S, Sur>;
};

}  // namespace io
}  // namespace sparse_rtrl
