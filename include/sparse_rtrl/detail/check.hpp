/// @file detail/check.hpp
/// @brief Input validation (std::invalid_argument naming function, expectation and received
///        value) and the internal-invariant assert that tests can turn into a throw.
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <Eigen/Core>

#include <cassert>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

// Internal invariants (not user errors). Define SPARSE_RTRL_ASSERT_THROWS to make a failed
// invariant throw std::logic_error, which the tests use to prove invariants are checked.
#if defined(SPARSE_RTRL_ASSERT_THROWS)
#define SPARSE_RTRL_ASSERT(cond)                                                          \
  do {                                                                                     \
    if (!(cond)) throw std::logic_error("sparse_rtrl internal invariant failed: " #cond); \
  } while (0)
#else
#define SPARSE_RTRL_ASSERT(cond) assert(cond)
#endif

namespace sparse_rtrl {
namespace detail {

using Index = Eigen::Index;

[[noreturn]] inline void fail(const char* where, const std::string& what) {
  throw std::invalid_argument(std::string(where) + ": " + what);
}

inline std::string shape_string(Index rows, Index cols) {
  std::ostringstream s;
  s << rows << " x " << cols;
  return s.str();
}

template <typename Derived>
void require_shape(const char* where, const char* name, const Eigen::DenseBase<Derived>& m,
                   Index rows, Index cols) {
  if (m.rows() != rows || m.cols() != cols)
    fail(where, std::string(name) + " must be " + shape_string(rows, cols) + ", received " +
                    shape_string(m.rows(), m.cols()));
}

/// Accepts a row or a column vector of the given length.
template <typename Derived>
void require_vector(const char* where, const char* name, const Eigen::DenseBase<Derived>& v,
                    Index size) {
  const bool is_vector = v.rows() == 1 || v.cols() == 1;
  if (!is_vector || v.size() != size)
    fail(where, std::string(name) + " must be a vector of size " + std::to_string(size) +
                    ", received " + shape_string(v.rows(), v.cols()));
}

template <typename Derived>
void require_finite(const char* where, const char* name, const Eigen::DenseBase<Derived>& m) {
  for (Index j = 0; j < m.cols(); ++j)
    for (Index i = 0; i < m.rows(); ++i)
      if (!std::isfinite(static_cast<double>(m(i, j)))) {
        std::ostringstream s;
        s << name << " must be finite, received " << m(i, j) << " at (" << i << ", " << j
          << ")";
        fail(where, s.str());
      }
}

/// Any use of a moved-from learner or runner (Rtrl, RtrlStreams, Snap, Bptt, Inference): its
/// layers went with the move, so it fails loudly instead of reading an empty vector.
[[noreturn]] inline void fail_moved_from(const char* where) {
  throw std::logic_error(std::string(where) + ": used after move (this object was moved from; assign it a new one)");
}
/// The top (bottom) layer of @p layers, a learner's per-layer state, empty only when moved from.
template <typename Layers>
auto& live_back(Layers& layers, const char* where) {
  if (layers.empty()) fail_moved_from(where);
  return layers.back();
}
template <typename Layers>
auto& live_front(Layers& layers, const char* where) {
  if (layers.empty()) fail_moved_from(where);
  return layers.front();
}

/// The model pointer of a learner: copied by a copy, taken by a move (the source is left null),
/// and every dereference of a null one is fail_moved_from(@p Where) instead of a crash.
template <typename T>
class ModelPointer {
 public:
  ModelPointer(T* p, const char* owner) : p_(p), owner_(owner) {}
  ModelPointer(const ModelPointer&) = default;
  ModelPointer& operator=(const ModelPointer&) = default;
  ModelPointer(ModelPointer&& o) noexcept : p_(o.p_), owner_(o.owner_) { o.p_ = nullptr; }
  ModelPointer& operator=(ModelPointer&& o) noexcept {
    if (this != &o) {
      p_ = o.p_;
      owner_ = o.owner_;
      o.p_ = nullptr;
    }
    return *this;
  }
  T* operator->() const { return &get(); }
  T& operator*() const { return get(); }
  T& get() const {
    if (!p_) fail_moved_from(owner_);
    return *p_;
  }

 private:
  T* p_;
  const char* owner_;
};

/// The largest step count a restored state may carry: 2^53 (every count up to it is exact in a
/// double, as Adam's bias correction computes with t). At a billion steps a second that is 104
/// days of stepping, and far from INT64_MAX, so the next ++steps cannot overflow.
constexpr std::int64_t kMaxStepCount = std::int64_t(1) << 53;

inline void require_step_count(const char* where, const std::string& name, std::int64_t steps) {
  if (steps < 0 || steps > kMaxStepCount)
    fail(where, name + " must be in [0, 2^53 = " + std::to_string(kMaxStepCount) + "], received " +
                    std::to_string(steps));
}

inline void require_positive_size(const char* where, const char* name, Index value) {
  if (value <= 0)
    fail(where, std::string(name) + " must be > 0, received " + std::to_string(value));
}

}  // namespace detail
}  // namespace sparse_rtrl
