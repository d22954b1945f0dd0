/// @file io/checkpoint/uoro_item.hpp
/// @brief Uoro in checkpoints: the stream entries every learner has (learner_item.hpp), its
///        "influence" the rank-one pair of each layer ("uoro": s~ then theta~), plus its epsilon
///        (a load must find the live learner's) and the sign generator's state ("sign_state",
///        uint64), restored with the stream so that a resumed run draws the same signs.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/entries.hpp>
#include <sparse_rtrl/io/checkpoint/item.hpp>
#include <sparse_rtrl/io/checkpoint/learner_item.hpp>
#include <sparse_rtrl/learners/uoro.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace detail {

template <typename S, typename Sur>
struct LearnerCheckpointExtras<Uoro<S, Sur>> {
  static void save(io::NpzWriter& w, const std::string& p, const Uoro<S, Sur>& l) {
    w.add_scalar(p + "/epsilon", l.options().epsilon);
    w.add_scalar(p + "/sign_state", l.sign_state());
  }
  static void check_load(io::NpzReader& r, const std::string& p, const Uoro<S, Sur>& l,
                         const std::vector<ParameterMask>&) {
    const double eps = r.read_scalar<double>(p + "/epsilon");
    if (eps != l.options().epsilon)
      r.fail("entry '" + p + "/epsilon': the file's UORO used epsilon = " + std::to_string(eps) + ", '" + p +
             "' uses " + std::to_string(l.options().epsilon) + " (construct it with the saved epsilon)");
  }
};

/// The LearnerItem of a Uoro, whose commit also installs the saved sign generator state (the
/// stream state staged for a load holds the live learner's).
template <typename S, typename Sur>
class UoroItem : public LearnerItem<Uoro<S, Sur>> {
 public:
  UoroItem(std::string name, Uoro<S, Sur>& learner) : LearnerItem<Uoro<S, Sur>>(std::move(name), learner), uoro_(&learner) {}
  std::unique_ptr<io::CheckpointItem::Staged> stage(io::NpzReader& r, const io::CheckpointItem::Context& c) const override {
    const std::vector<ParameterMask>& masks = learner_masks(r, c, this->model(), this->name());
    LearnerCheckpointExtras<Uoro<S, Sur>>::check_load(r, this->name(), *uoro_, masks);
    const std::uint64_t sign_state = r.read_scalar<std::uint64_t>(this->name() + "/sign_state");
    auto st = std::make_shared<typename Uoro<S, Sur>::StagedState>(stage_stream(r, this->name(), *uoro_, masks));
    Uoro<S, Sur>* learner = uoro_;
    return io::make_staged([learner, st, sign_state]() {
      learner->restore_state(std::move(*st));
      learner->set_sign_state(sign_state);
    });
  }

 private:
  Uoro<S, Sur>* uoro_;
};

}  // namespace detail

namespace io {

template <typename S, typename Sur>
struct CheckpointTraits<Uoro<S, Sur>> {
  using Item = detail::UoroItem<S, Sur>;
};

}  // namespace io
}  // namespace sparse_rtrl
