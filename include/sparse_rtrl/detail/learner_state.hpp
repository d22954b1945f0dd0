/// @file detail/learner_state.hpp
/// @brief Checks shared by the learners (Rtrl, RtrlStreams through Rtrl, Snap) on a state that
///        arrives from outside (restore_state(), checkpoint loads) and on their memory needs.
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/model/egru_cell.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace sparse_rtrl {
namespace detail {

/// EgruStepCache's fields by name (the entries p/l{k}/cache/<name> of a checkpoint).
template <typename Scalar>
std::array<std::pair<const char*, const typename EgruStepCache<Scalar>::Vector*>, 20> cache_field_list(
    const EgruStepCache<Scalar>& c) {
  return {{{"x", &c.x},         {"c_prev", &c.c_prev}, {"o_prev", &c.o_prev}, {"y_prev", &c.y_prev},
           {"h_prev", &c.h_prev}, {"psi_prev", &c.psi_prev}, {"s_prev", &c.s_prev}, {"a", &c.a},
           {"q", &c.q},         {"r", &c.r},           {"z", &c.z},           {"g", &c.g},
           {"c", &c.c},         {"o", &c.o},           {"y", &c.y},           {"psi", &c.psi},
           {"s", &c.s},         {"dc_da", &c.dc_da},   {"dc_dq", &c.dc_dq},   {"decay", &c.decay}}};
}

/// Every field of a restored step cache is finite (what output(), events() and
/// accumulate_gradient() read until the next step); @p prefix names the layer ("l0/").
template <typename Scalar>
void require_finite_cache(const char* where, const std::string& prefix, const EgruStepCache<Scalar>& c) {
  for (const auto& f : cache_field_list(c))
    if (!f.second->allFinite()) require_finite(where, (prefix + "cache/" + f.first).c_str(), *f.second);
}

/// The forward half of a learner's step (Rtrl, Snap), transactional: every layer's c_t and local
/// derivatives into its `next` cache, layer k reading y^{k-1}_t there, from its carried `state`.
/// Reads the model only and writes nothing else, so a step refused here leaves the learner as it
/// was (output(), events(), the step cache, last_step_valid()). False when a c_t is not finite.
template <typename Layers, typename ModelT, typename X>
bool forward_into_next(Layers& layers, const ModelT& model, const Eigen::MatrixBase<X>& x, bool event_sparse) {
  for (std::size_t k = 0; k < layers.size(); ++k) {
    auto& l = layers[k];
    if (k == 0)
      model.cell(Index(k)).forward(l.state, x, l.next, event_sparse);
    else
      model.cell(Index(k)).forward(l.state, layers[k - 1].next.y, l.next, event_sparse);
    if (!l.next.c.allFinite()) return false;
  }
  return true;
}

/// Makes a successful forward_into_next() the last step's cache: swaps of Eigen's buffers (no
/// allocation, no throw); `next` then holds the old cache, to be overwritten.
template <typename Layers>
void commit_next(Layers& layers) noexcept {
  for (auto& l : layers) std::swap(l.cache, l.next);
}

/// Why forward_into_next() failed: a non-finite parameter (written through the model) is named
/// (the O(P) scan runs only here); otherwise the parameters are finite but too large.
template <typename ModelT>
[[noreturn]] void fail_non_finite_state(const char* where, const ModelT& model) {
  for (Index k = 0; k < model.layers(); ++k) model.parameters(k).validate(where);
  fail(where, "the state c_t became non-finite (inputs and parameters are finite: the parameters are too large?)");
}

/// Physical memory of this machine in bytes, or 0 where unknown.
inline std::size_t physical_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) return std::size_t(pages) * std::size_t(page);
#endif
  return 0;
}

/// Tests set this to a byte count to stand in for the machine's memory (0: the real one), so
/// that the refusal below can be exercised without a machine-sized model. Not for users.
inline std::size_t& memory_limit_for_tests() {
  static std::size_t limit = 0;
  return limit;
}

/// The most a learner's state may take: half the address space, and the machine's physical
/// memory (touching more would end in the OOM killer, not in a bad_alloc).
inline double memory_limit_bytes() {
  double limit = double(std::numeric_limits<std::size_t>::max() / 2);
  const std::size_t physical = memory_limit_for_tests() ? memory_limit_for_tests() : physical_memory_bytes();
  if (physical > 0) limit = std::min(limit, double(physical));
  return limit;
}

/// Refuses, before allocating, a learner state of @p bytes above memory_limit_bytes():
/// std::length_error whose message says what, @p sizes (the dimensions that make it so large)
/// and the remedy. @p at_least: @p bytes is a lower bound (the count stopped early).
inline void require_memory(const char* where, const std::string& what, double bytes, const std::string& sizes,
                           const char* remedy, bool at_least = false) {
  const double limit = memory_limit_bytes();
  if (!(bytes > limit)) return;
  std::ostringstream s;
  s << where << ": " << what << " need " << (at_least ? "at least " : "") << bytes / 1e9 << " GB (" << sizes
    << "), more than the " << limit / 1e9 << " GB this machine can hold; " << remedy;
  throw std::length_error(s.str());
}

}  // namespace detail
}  // namespace sparse_rtrl
