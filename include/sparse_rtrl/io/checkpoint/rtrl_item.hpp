/// @file io/checkpoint/rtrl_item.hpp
/// @brief Rtrl in checkpoints: its stream entries are every learner's (learner_item.hpp), its
///        influence the n_k x influence_columns(k) blocks of each layer, row-major ("influence").
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/item.hpp>
#include <sparse_rtrl/io/checkpoint/learner_item.hpp>
#include <sparse_rtrl/learners/rtrl.hpp>

namespace sparse_rtrl {
namespace io {

template <typename S, typename Sur>
struct CheckpointTraits<Rtrl<S, Sur>> {
  using Item = detail::LearnerItem<Rtrl<S, Sur>>;
};

}  // namespace io
}  // namespace sparse_rtrl
