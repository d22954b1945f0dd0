/// @file detail/optimizer_state.hpp
/// @brief What Sgd, Adam and AdamW share (training/optimizer.hpp): the per-tensor state created
///        at the first step and checked before anything is written, the view of a parameter set
///        as a list of tensors (ParameterSetTraits), and update()'s consumption of a learner's
///        gradient. Internal: users include training/optimizer.hpp.
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/model/egru_parameters.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace sparse_rtrl {

// Declared only, so that this floor does not include training/ (readout.hpp defines it):
// ParameterSetTraits needs its name here and its members only where views() is instantiated.
template <typename Scalar>
struct ReadoutParameters;

namespace detail {

/// step(model, grad) without a layer is for one-layer models only: on a stack it would update
/// layer 0 and silently leave the others.
inline void require_one_layer_model(Index layers, const char* where) {
  if (layers != 1)
    throw std::logic_error(std::string(where) + ": the model is a stack of " + std::to_string(layers) +
                           " layers; call step(model, grad, layer) with one optimizer per layer");
}
inline void require_layer_index(Index layers, Index layer, const char* where) {
  if (layer < 0 || layer >= layers)
    throw std::out_of_range(std::string(where) + ": layer must be in [0, " + std::to_string(layers) + "), got " +
                            std::to_string(layer));
}

/// A tensor of a parameter set seen as contiguous column-major storage.
template <typename T>
struct TensorView {
  T* data;
  Index rows;
  Index cols;
  const char* name;
  bool is_weight;  ///< weight decay applies (weight matrices only)
  Index size() const { return rows * cols; }
};

/// Which types optimizers can update, and how to see them as a list of tensors.
template <typename Set>
struct ParameterSetTraits {
  static constexpr bool known = false;
  using Scalar = void;
};

template <typename S>
struct ParameterSetTraits<EgruParameters<S>> {
  static constexpr bool known = true;
  using Scalar = S;
  static constexpr std::size_t count = 5;
  static constexpr const char* name = "EgruParameters";
  template <typename P>
  static auto views(P& p) {
    using T = std::remove_reference_t<decltype(*p.W.data())>;
    return std::array<TensorView<T>, count>{{{p.W.data(), p.W.rows(), p.W.cols(), "W", true},
                                             {p.R.data(), p.R.rows(), p.R.cols(), "R", true},
                                             {p.bW.data(), p.bW.rows(), 1, "bW", false},
                                             {p.bR.data(), p.bR.rows(), 1, "bR", false},
                                             {p.theta.data(), p.theta.rows(), 1, "theta", false}}};
  }
};

template <typename S>
struct ParameterSetTraits<ReadoutParameters<S>> {
  static constexpr bool known = true;
  using Scalar = S;
  static constexpr std::size_t count = 2;
  static constexpr const char* name = "ReadoutParameters";
  template <typename P>
  static auto views(P& p) {
    using T = std::remove_reference_t<decltype(*p.V.data())>;
    return std::array<TensorView<T>, count>{{{p.V.data(), p.V.rows(), p.V.cols(), "V", true},
                                             {p.b.data(), p.b.rows(), 1, "b", false}}};
  }
};

template <typename Set, typename Scalar>
constexpr void check_parameter_set() {
  static_assert(ParameterSetTraits<Set>::known,
                "sparse_rtrl optimizers update EgruParameters<Scalar> or ReadoutParameters<Scalar> "
                "(pass readout.parameters(), or the LinearReadout itself)");
  static_assert(std::is_same<typename ParameterSetTraits<Set>::Scalar, Scalar>::value,
                "sparse_rtrl optimizers: the parameter set's scalar type must be the optimizer's");
}

inline void require_option(const char* where, const char* name, double value, bool ok,
                           const char* expected) {
  if (!ok) {
    std::ostringstream s;
    s << "options." << name << " must be " << expected << ", received " << value;
    fail(where, s.str());
  }
}

inline bool positive_finite(double v) { return std::isfinite(v) && v > 0.0; }
inline bool nonnegative_finite(double v) { return std::isfinite(v) && v >= 0.0; }
inline bool unit_interval_open_right(double v) { return v >= 0.0 && v < 1.0; }

/// Shared machinery: per-tensor state created at the first step, validation of every input
/// before anything is written (bad input leaves parameters and state unchanged), masks.
template <typename Scalar>
class OptimizerState {
 public:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  /// Number of step() calls since construction or reset(): Adam's t.
  Index steps() const { return steps_; }
  /// The parameter set the state is for: "EgruParameters" or "ReadoutParameters", "" before the
  /// first step() (no state).
  std::string parameter_set() const { return set_name_ ? set_name_ : ""; }
  /// Tensors in the state (5 for EgruParameters, 2 for ReadoutParameters, 0 before the first step()).
  Index state_tensors() const { return Index(shapes_.size()); }
  /// True for Adam and AdamW (first and second moments), false for Sgd (one momentum buffer).
  bool has_second_moment() const { return two_moments_; }

  /// @brief Replaces the whole state, for checkpoints (io/checkpoint.hpp): @p parameter_set as
  /// parameter_set() names it, one moment per tensor of that set in its order (W, R, bW, bR,
  /// theta or V, b), shaped like the tensor: @p first (Sgd's momentum buffer, Adam's m) and
  /// @p second (Adam's v; empty for Sgd); @p steps, the step count. An empty @p parameter_set
  /// with no moments and steps 0 is the state before the first step(). Everything is checked
  /// first (known set, tensor count, shapes consistent with one parameter set, finite values,
  /// steps >= 0 and > 0 exactly when there is state): std::invalid_argument, nothing changed.
  void restore_state(const std::string& parameter_set, const std::vector<Matrix>& first,
                     const std::vector<Matrix>& second, Index steps) {
    const char* where = "sparse_rtrl optimizer restore_state()";
    const char* name = nullptr;
    std::size_t count = 0;
    if (parameter_set == ParameterSetTraits<EgruParameters<Scalar>>::name) {
      name = ParameterSetTraits<EgruParameters<Scalar>>::name;
      count = ParameterSetTraits<EgruParameters<Scalar>>::count;
    } else if (parameter_set == ParameterSetTraits<ReadoutParameters<Scalar>>::name) {
      name = ParameterSetTraits<ReadoutParameters<Scalar>>::name;
      count = ParameterSetTraits<ReadoutParameters<Scalar>>::count;
    } else if (!parameter_set.empty()) {
      fail(where, "parameter_set must be EgruParameters, ReadoutParameters or empty, received '" + parameter_set + "'");
    }
    require_step_count(where, "steps", std::int64_t(steps));
    if (steps < 0 || (name == nullptr) != (steps == 0))
      fail(where, "steps must be > 0 with a state and 0 without, received " + std::to_string(steps) + " for '" +
                      parameter_set + "'");
    const std::size_t seconds = two_moments_ ? count : 0;
    if (first.size() != count || second.size() != seconds)
      fail(where, "expected " + std::to_string(count) + " first and " + std::to_string(seconds) +
                      " second moments for '" + parameter_set + "', received " + std::to_string(first.size()) +
                      " and " + std::to_string(second.size()));
    std::vector<std::pair<Index, Index>> shapes;
    for (const Matrix& m : first) shapes.emplace_back(m.rows(), m.cols());
    if (count > 0) {
      // Shapes of one parameter set: EgruParameters W 3n x d, R 3n x n, bW, bR 3n x 1, theta
      // n x 1; ReadoutParameters V k x n, b k x 1.
      const Index n = shapes[count == 5 ? 1 : 0].second;
      const Index rows = shapes[0].first;
      const bool ok = count == 5 ? (n > 0 && rows == 3 * n && shapes[0].second > 0 && shapes[1].first == 3 * n &&
                                    shapes[2] == std::make_pair(3 * n, Index(1)) &&
                                    shapes[3] == std::make_pair(3 * n, Index(1)) &&
                                    shapes[4] == std::make_pair(n, Index(1)))
                                 : (rows > 0 && n > 0 && shapes[1] == std::make_pair(rows, Index(1)));
      if (!ok) fail(where, std::string("the moments' shapes are not those of one ") + name);
    }
    for (std::size_t k = 0; k < seconds; ++k)
      if (second[k].rows() != first[k].rows() || second[k].cols() != first[k].cols())
        fail(where, "second moment " + std::to_string(k) + " is " + shape_string(second[k].rows(), second[k].cols()) +
                        ", its first moment " + shape_string(first[k].rows(), first[k].cols()));
    for (const auto* moments : {&first, &second})
      for (const Matrix& m : *moments)
        if (!m.allFinite()) require_finite(where, "moment", m);
    std::vector<Vector> f, v;
    for (const Matrix& m : first) f.push_back(Eigen::Map<const Vector>(m.data(), m.size()));
    for (const Matrix& m : second) v.push_back(Eigen::Map<const Vector>(m.data(), m.size()));
    // Nothing throws from here on.
    first_.swap(f);
    second_.swap(v);
    shapes_.swap(shapes);
    set_name_ = name;
    steps_ = steps;
  }
  /// Forgets the state (moments and step count): the next step() may be on any parameter set.
  void reset() {
    first_.clear();
    second_.clear();
    shapes_.clear();
    set_name_ = nullptr;
    steps_ = 0;
  }

 protected:
  explicit OptimizerState(bool two_moments) : two_moments_(two_moments) {}

  /// State tensor @p tensor of @p moments, shaped like the parameter tensor.
  Eigen::Map<const Matrix> state_tensor(const std::vector<Vector>& moments, Index tensor,
                                        const char* where) const {
    if (tensor < 0 || tensor >= Index(moments.size())) {
      std::ostringstream s;
      s << where << ": tensor must be in [0, " << moments.size() << ")"
        << (moments.empty() ? " (no state before the first step())" : "") << ", received " << tensor;
      throw std::out_of_range(s.str());
    }
    const auto& shape = shapes_[std::size_t(tensor)];
    return Eigen::Map<const Matrix>(moments[std::size_t(tensor)].data(), shape.first, shape.second);
  }

  /// Validates, creates or checks the state, then calls rule(p, g, first, second, is_weight) on
  /// every kept entry; pruned entries (keep[k] == false) get p = first = second = 0.
  template <typename Set, typename Rule>
  void run(const char* where, Set& params, const Set& grad,
           const std::array<const bool*, detail::ParameterSetTraits<Set>::count>& keep, Rule&& rule) {
    using Traits = ParameterSetTraits<Set>;
    params.validate(where);
    const auto pv = Traits::views(params);
    const auto gv = Traits::views(grad);
    // Messages are built only on failure: a step allocates nothing once the state exists.
    for (std::size_t k = 0; k < Traits::count; ++k) {
      if (gv[k].rows != pv[k].rows || gv[k].cols != pv[k].cols)
        fail(where, std::string("grad.") + gv[k].name + " must be " + shape_string(pv[k].rows, pv[k].cols) +
                        " like params." + pv[k].name + ", received " + shape_string(gv[k].rows, gv[k].cols));
      const Eigen::Map<const Matrix> gk(gv[k].data, gv[k].rows, gv[k].cols);
      if (!gk.allFinite()) require_finite(where, (std::string("grad.") + gv[k].name).c_str(), gk);
    }
    const bool fresh = first_.empty();
    if (!fresh) {
      if (std::strcmp(set_name_, Traits::name) != 0)
        fail(where, std::string("this optimizer holds the state of ") + set_name_ + ", received " +
                        Traits::name + ": use one optimizer per parameter set, or call reset() first");
      for (std::size_t k = 0; k < Traits::count; ++k)
        if (shapes_[k].first != pv[k].rows || shapes_[k].second != pv[k].cols)
          fail(where, std::string("this optimizer's state is for ") + pv[k].name + " of shape " +
                          shape_string(shapes_[k].first, shapes_[k].second) + ", received " +
                          shape_string(pv[k].rows, pv[k].cols) +
                          ": use one optimizer per parameter set, or call reset() first");
    }
    // Compute, check, then commit: a first pass applies the rule to copies and refuses an update
    // that would leave a parameter or a moment non-finite (too large a learning rate, a gradient
    // whose square overflows), with nothing written; the second pass repeats the same
    // arithmetic in place. O(P) twice, no allocation.
    for (std::size_t k = 0; k < Traits::count; ++k) {
      const bool* kept = keep[k];
      for (Index i = 0; i < pv[k].size(); ++i) {
        if (kept && !kept[i]) continue;
        Scalar p = pv[k].data[i];
        Scalar m = fresh ? Scalar(0) : first_[k][i];
        Scalar v = (fresh || !two_moments_) ? Scalar(0) : second_[k][i];
        rule(p, gv[k].data[i], m, v, pv[k].is_weight);
        if (std::isfinite(p) && std::isfinite(m) && std::isfinite(v)) continue;
        std::ostringstream s;
        s << "the update would make " << (std::isfinite(p) ? (std::isfinite(m) ? "the second moment of " : "the first moment of ") : "")
          << pv[k].name << "(" << i % pv[k].rows << ", " << i / pv[k].rows << ") non-finite ("
          << (std::isfinite(p) ? (std::isfinite(m) ? v : m) : p) << ", from " << pv[k].data[i]
          << " with gradient " << gv[k].data[i]
          << "): the learning rate or the gradient is too large; nothing was changed";
        fail(where, s.str());
      }
    }
    if (fresh) {
      for (std::size_t k = 0; k < Traits::count; ++k) {
        shapes_.emplace_back(pv[k].rows, pv[k].cols);
        first_.push_back(Vector::Zero(pv[k].size()));
        if (two_moments_) second_.push_back(Vector::Zero(pv[k].size()));
      }
      set_name_ = Traits::name;
    }
    ++steps_;
    for (std::size_t k = 0; k < Traits::count; ++k) {
      Scalar* p = pv[k].data;
      const Scalar* g = gv[k].data;
      Scalar* m = first_[k].data();
      Scalar* v = two_moments_ ? second_[k].data() : nullptr;
      const bool* kept = keep[k];
      const bool decays = pv[k].is_weight;
      const Index size = pv[k].size();
      Scalar unused(0);
      for (Index i = 0; i < size; ++i) {
        if (kept && !kept[i]) {
          p[i] = Scalar(0);
          m[i] = Scalar(0);
          if (v) v[i] = Scalar(0);
          continue;
        }
        rule(p[i], g[i], m[i], v ? v[i] : unused, decays);
      }
    }
  }
  template <typename Set>
  static std::array<const bool*, ParameterSetTraits<Set>::count> no_mask() {
    std::array<const bool*, ParameterSetTraits<Set>::count> keep{};
    keep.fill(nullptr);
    return keep;
  }

  /// W and R follow the mask's BoolMatrix storage (column-major, like Eigen's default Matrix).
  template <typename S>
  static std::array<const bool*, 5> egru_mask(const ParameterMask& mask, const EgruParameters<S>& params,
                                              const char* where) {
    static_assert(!ParameterMask::BoolMatrix::IsRowMajor && !EgruParameters<S>::Matrix::IsRowMajor,
                  "masks and weights must share one storage order: entry i of the mask is entry i of W");
    mask.require_matches(params, where);
    return {{mask.W().data(), mask.R().data(), nullptr, nullptr, nullptr}};
  }

  std::vector<Vector> first_, second_;
  /// update(model, learner) reads the learner's gradient into this (sized at its first use).
  EgruParameters<Scalar> learner_gradient_;

 private:
  bool two_moments_;
  std::vector<std::pair<Index, Index>> shapes_;
  const char* set_name_ = nullptr;
  Index steps_ = 0;
};

/// update(model, learner): step(model, learner's gradient), then zero the learner's gradient, so
/// that the next update applies only the losses accumulated after this one. On a throw (bad
/// gradient, an update that would make a parameter non-finite) nothing changes: the model, the
/// optimizer's state and the learner's gradient stay as they were.
template <typename Optimizer, typename Scalar, typename Surrogate, typename Learner>
void consume_learner_gradient(Optimizer& optimizer, Model<Scalar, Surrogate>& model, Learner& learner,
                              EgruParameters<Scalar>& scratch, const char* where) {
  if (&learner.model() != &model)
    throw std::invalid_argument(std::string(where) + ": the learner is bound to another model than the one to update");
  if (model.layers() != 1)
    throw std::logic_error(std::string(where) + ": the model is a stack of " + std::to_string(model.layers()) +
                           " layers; use one optimizer per layer, step(model, learner.gradient(k), k) for each k, "
                           "then learner.zero_gradient()");
  if (!scratch.has_shape(model.units(0), model.cell(0).inputs()))
    scratch = EgruParameters<Scalar>(model.units(0), model.cell(0).inputs());
  learner.gradient(scratch);
  optimizer.step(model, scratch);
  learner.zero_gradient();
}

}  // namespace detail
}  // namespace sparse_rtrl
