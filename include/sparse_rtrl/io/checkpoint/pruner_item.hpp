/// @file io/checkpoint/pruner_item.hpp
/// @brief MagnitudePruner's entries: its schedule, initial densities and events done.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/entries.hpp>
#include <sparse_rtrl/io/checkpoint/item.hpp>
#include <sparse_rtrl/training/pruning.hpp>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>

namespace sparse_rtrl {
namespace detail {

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
    return io::make_staged([pruner, st]() { *pruner = *st; });
  }

 private:
  MagnitudePruner* pruner_;
};

}  // namespace detail

namespace io {

template <>
struct CheckpointTraits<MagnitudePruner> {
  using Item = detail::PrunerItem;
};

}  // namespace io
}  // namespace sparse_rtrl
