/// @file io/checkpoint/learner_item.hpp
/// @brief One stream of any learner built on LearnerBase (Rtrl, Snap, each stream of RtrlStreams):
///        its entries (docs/checkpoint_format.md), saved and loaded through one path, and the item
///        of Checkpoint::add(name, learner). A learner with entries of its own (Snap's order)
///        specialises LearnerCheckpointExtras.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/entries.hpp>
#include <sparse_rtrl/io/checkpoint/item.hpp>
#include <sparse_rtrl/learners/learner_base.hpp>

#include <memory>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace detail {

/// What a learner saves and checks beyond the stream entries every learner has: nothing by
/// default. check_load() runs before anything is staged and refuses with r.fail().
template <typename Learner>
struct LearnerCheckpointExtras {
  static void save(io::NpzWriter&, const std::string&, const Learner&) {}
  static void check_load(io::NpzReader&, const std::string&, const Learner&, const std::vector<ParameterMask>&) {}
};

/// One stream of a learner under prefix p: counters, gradient, and per layer the state, the
/// influence (Learner::influence_entry()), the work and the step cache; the layout masks when
/// the learner had not followed a mask change yet.
template <typename Learner>
void save_stream(io::NpzWriter& w, const std::string& p, const Learner& r) {
  using S = typename Learner::value_type;
  w.add_scalar(p + "/steps", std::int64_t(r.steps()));
  w.add_scalar(p + "/last_step_valid", r.last_step_valid());
  w.add_scalar(p + "/mask_followed", r.mask_followed());
  w.add(p + "/gradient", r.gradient_columns());
  save_work(w, p + "/work_last", r.last_step_work());
  save_work(w, p + "/work_total", r.total_work());
  for (Index k = 0; k < r.layers(); ++k) {
    const std::string l = p + "/l" + std::to_string(k);
    w.add(l + "/state", r.state(k));
    std::vector<std::uint64_t> shape;
    for (Index extent : r.influence_shape(k)) shape.push_back(std::uint64_t(extent));
    w.add_array(l + "/" + Learner::influence_entry(), io::dtype_of<S>::value, shape, [&](io::ByteSink& sink) {
      // The influence arrives in short segments (Rtrl's column panels): gathered into pieces of
      // 16 k values, each written at once.
      std::vector<S> piece;
      piece.reserve(std::size_t(1) << 14);
      r.for_each_influence_segment(k, [&](const S* v, Index count) {
        for (Index e = 0; e < count; ++e) {
          piece.push_back(v[e]);
          if (piece.size() == piece.capacity()) {
            sink.write_values(piece.data(), piece.size());
            piece.clear();
          }
        }
      });
      sink.write_values(piece.data(), piece.size());
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
template <typename Learner>
void load_stream(io::NpzReader& r, const std::string& p, typename Learner::StagedState& st) {
  using S = typename Learner::value_type;
  st.steps = Index(read_count(r, p + "/steps", 0, sparse_rtrl::detail::kMaxStepCount));
  st.steps_valid = r.read_scalar<bool>(p + "/last_step_valid");
  r.read_into(p + "/gradient", st.gradient());
  st.last_work = read_work(r, p + "/work_last");
  st.total_work = read_work(r, p + "/work_total");
  for (Index k = 0; k < st.layers(); ++k) {
    const std::string l = p + "/l" + std::to_string(k);
    r.read_into(l + "/state", st.state(k));
    require_finite_entry(r, l + "/state", st.state(k));
    const std::string entry = l + "/" + st.influence_entry();
    std::vector<std::uint64_t> shape;
    for (Index extent : st.influence_shape(k)) shape.push_back(std::uint64_t(extent));
    if (r.require(entry, io::dtype_of<S>::value, shape).fortran_order && shape.size() == 2 && shape[0] > 1 &&
        shape[1] > 1)
      r.fail("entry '" + entry + "': expected C order (row-major), found Fortran order");
    std::size_t element = 0;  // position in the file, checkpoint order
    r.read_data(entry, [&](const unsigned char* bytes, std::size_t count) {
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
template <typename Learner>
typename Learner::StagedState stage_stream(io::NpzReader& r, const std::string& p, const Learner& learner,
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
  typename Learner::StagedState st = learner.stage_state(std::move(layout), false);
  st.mask_followed = followed;
  load_stream<Learner>(r, p, st);
  return st;
}

/// Checkpoint::add(name, learner) for any learner on LearnerBase.
template <typename Learner>
class LearnerItem : public CheckpointItem {
 public:
  LearnerItem(std::string name, Learner& learner) : CheckpointItem(std::move(name)), learner_(&learner) {}
  const void* model() const override { return &learner_->model(); }
  void save(io::NpzWriter& w) const override {
    LearnerCheckpointExtras<Learner>::save(w, name(), *learner_);
    save_stream(w, name(), *learner_);
  }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context& c) const override {
    const std::vector<ParameterMask>& masks = learner_masks(r, c, model(), name());
    LearnerCheckpointExtras<Learner>::check_load(r, name(), *learner_, masks);
    auto st = std::make_shared<typename Learner::StagedState>(stage_stream(r, name(), *learner_, masks));
    Learner* learner = learner_;
    return io::make_staged([learner, st]() { learner->restore_state(std::move(*st)); });
  }

 private:
  Learner* learner_;
};

}  // namespace detail
}  // namespace sparse_rtrl
