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
#include <limits>
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

/// @p text (a message, or the file or entry name going into one) made safe to print: ASCII
/// control characters, DEL, C1 controls (U+0080-U+009F) and bytes that are not valid UTF-8
/// become escapes (\n, \r, \t, \xNN), so a name read from a file or given by a user cannot
/// forge lines or terminal control sequences in a log. Valid UTF-8 text is kept, and a backslash
/// is not escaped, which makes the function idempotent: a message may pass through it twice
/// (a name, then the whole message at a choke point such as detail::file_error()).
inline std::string printable(const std::string& text) {
  static const char* const hex = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  auto escape = [&](unsigned char c) {
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  };
  const std::size_t size = text.size();
  for (std::size_t i = 0; i < size;) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7F) {
      out += char(c);
      ++i;
      continue;
    }
    // Length of a well-formed UTF-8 sequence starting here (Unicode 15, table 3-7), else 0.
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;  // no UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    bool ok = len > 0 && i + len <= size;
    for (std::size_t k = 1; ok && k < len; ++k) {
      const auto b = static_cast<unsigned char>(text[i + k]);
      ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    }
    if (ok && c == 0xC2 && static_cast<unsigned char>(text[i + 1]) <= 0x9F) ok = false;  // C1
    if (ok) {
      out.append(text, i, len);
      i += len;
    } else {
      escape(c);  // a control character, or one byte of an invalid or C1 sequence
      ++i;
    }
  }
  return out;
}

/// Throws std::invalid_argument "<where>: <what>", made printable() (@p what may hold names).
[[noreturn]] inline void fail(const char* where, const std::string& what) {
  throw std::invalid_argument(printable(std::string(where) + ": " + what));
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

/// a * b for sizes a, b >= 0, or std::invalid_argument naming @p where and the product (@p what,
/// e.g. "3 * n_units") when it does not fit in Index. Sizes are signed, so an overflowing product
/// is undefined behaviour, and in practice it wraps to a small or negative size: an object whose
/// shape and storage disagree (ParameterMask::dense(2^62, 1) was one, its printing crashed).
inline Index checked_product(const char* where, const char* what, Index a, Index b) {
  if (a < 0 || b < 0 || (b != 0 && a > std::numeric_limits<Index>::max() / b))
    fail(where, std::string("sizes too large: ") + what + " = " + std::to_string(a) + " * " +
                    std::to_string(b) + " does not fit in Eigen::Index (max " +
                    std::to_string(std::numeric_limits<Index>::max()) + ")");
  return a * b;
}

/// Checks that one layer's stacked sizes (3n rows, 3n x n and 3n x d entries) fit in Index.
inline void require_layer_sizes(const char* where, Index n_units, Index n_inputs) {
  const Index rows = checked_product(where, "3 * n_units", 3, n_units);
  checked_product(where, "3 * n_units * n_units", rows, n_units);
  checked_product(where, "3 * n_units * n_inputs", rows, n_inputs);
}

}  // namespace detail
}  // namespace sparse_rtrl
