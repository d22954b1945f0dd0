/// @file io/checkpoint/rtrl_item.hpp
/// @brief Rtrl's entries (docs/checkpoint_format.md): one stream's save, stage and load, shared
///        with RtrlStreams (rtrl_streams_item.hpp), and the item of Checkpoint::add(name, rtrl).
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/entries.hpp>
#include <sparse_rtrl/io/checkpoint/item.hpp>
#include <sparse_rtrl/learners/rtrl.hpp>

#include <cstring>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace detail {

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
    return io::make_staged([rtrl, st]() { rtrl->restore_state(std::move(*st)); });
  }

 private:
  Rtrl<S, Sur>* rtrl_;
};

}  // namespace detail

namespace io {

template <typename S, typename Sur>
struct CheckpointTraits<Rtrl<S, Sur>> {
  using Item = detail::RtrlItem<S, Sur>;
};

}  // namespace io
}  // namespace sparse_rtrl
