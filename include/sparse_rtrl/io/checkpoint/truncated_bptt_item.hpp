/// @file io/checkpoint/truncated_bptt_item.hpp
/// @brief TruncatedBptt in checkpoints: the stream entries every learner has (learner_item.hpp),
///        its "influence" the window of each layer ("window": k slots of step cache and pending
///        loss), plus its k and form, which a load must find equal to the live learner's.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/entries.hpp>
#include <sparse_rtrl/io/checkpoint/item.hpp>
#include <sparse_rtrl/io/checkpoint/learner_item.hpp>
#include <sparse_rtrl/learners/truncated_bptt.hpp>

#include <string>
#include <vector>

namespace sparse_rtrl {
namespace detail {

template <typename S, typename Sur>
struct LearnerCheckpointExtras<TruncatedBptt<S, Sur>> {
  static std::int64_t form_code(TruncationForm f) { return f == TruncationForm::every_step ? 0 : 1; }
  static void save(io::NpzWriter& w, const std::string& p, const TruncatedBptt<S, Sur>& l) {
    w.add_scalar(p + "/k", std::int64_t(l.window()));
    w.add_scalar(p + "/form", form_code(l.options().form));
  }
  static void check_load(io::NpzReader& r, const std::string& p, const TruncatedBptt<S, Sur>& l,
                         const std::vector<ParameterMask>&) {
    read_expected(r, p + "/k", std::int64_t(l.window()), "the window k of '" + p + "': construct it with the saved k");
    read_expected(r, p + "/form", form_code(l.options().form),
                  "the form of '" + p + "', 0 every_step, 1 every_k_steps: construct it with the saved form");
  }
};

}  // namespace detail

namespace io {

template <typename S, typename Sur>
struct CheckpointTraits<TruncatedBptt<S, Sur>> {
  using Item = detail::LearnerItem<TruncatedBptt<S, Sur>>;
};

}  // namespace io
}  // namespace sparse_rtrl
