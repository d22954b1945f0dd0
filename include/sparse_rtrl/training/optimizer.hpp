/// @file optimizer.hpp
/// @brief First-order optimizers for EgruParameters and ReadoutParameters: SGD with momentum
///        (optionally Nesterov), Adam, AdamW, and global gradient-norm clipping.
///
/// Update rules (elementwise; the same as torch.optim with default flags, so hyper-parameters
/// carry over):
///   Sgd:   g' = g + wd p;  buf = mu buf + g';  p -= lr (nesterov ? g' + mu buf : buf)   (mu = 0: p -= lr g')
///   Adam:  g' = g + wd p;  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;
///          p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
///   AdamW: p *= 1 - lr wd (decoupled decay, Loshchilov & Hutter 2019), then Adam with wd = 0.
/// Weight decay applies to the weight matrices W, R and the readout's V only, never to biases or
/// to the thresholds theta: decaying theta towards zero would change which units fire.
///
/// One optimizer object holds the state (moments, step count t) of ONE parameter set: use one
/// for the EGRU and another for the readout. The state is created at the first step() from the
/// set's shapes; a later step() on a set of other shapes throws (reset() forgets the state).
/// Every later step() allocates nothing, and neither does clip_gradient_norm().
///
/// Masks: step(params, grad, mask) keeps every pruned entry of W and R at exactly zero after the
/// update, and zeroes its moments too, so a weight revived later starts from a clean state.
/// step(model, grad) does this with the model's current mask (model.hpp, pruning.hpp).
///
/// When to update: every k steps (k = 1 is fully online learning), or at the end of a sequence.
///
///     Adam<float> adam_cell(AdamOptions<float>{1e-3f}), adam_out(AdamOptions<float>{1e-3f});
///     EgruParameters<float> g;
///     for (Index t = 0; t < T; ++t) {
///       rtrl.step(x.row(t));
///       ... loss on this step (loss.hpp): readout.backward(...); rtrl.accumulate_gradient(dL_dy);
///       if ((t + 1) % k == 0) {                       // or: if (t == T - 1)
///         rtrl.gradient(g);                           // sum of the losses since the last update
///         clip_gradient_norm(1.0f, g, readout.gradient());  // optional; global over both sets
///         adam_cell.step(model, g);                   // the Model the learner references
///         adam_out.step(readout);
///         rtrl.zero_gradient();
///         readout.zero_gradient();
///       }
///     }
///
/// Without clipping, `adam_cell.update(model, rtrl); adam_out.update(readout);` does the last four
/// lines: update() applies the learner's (or readout's) accumulated gradient and zeroes it, so
/// an online loop cannot forget the zeroing (which makes every later update re-apply all earlier
/// gradients: training then fails silently).
///
/// Updating at the end of each sequence gives the exact gradient of that sequence's loss (equal
/// to BPTT's). With k shorter than the sequence, M keeps carrying Jacobians of earlier parameter
/// values: that is the usual online-RTRL approximation (Williams & Zipser 1989), good for small
/// learning rates, and it is what makes learning without a sequence end possible at all.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/optimizer_state.hpp>
#include <sparse_rtrl/model/egru_parameters.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>
#include <sparse_rtrl/training/readout.hpp>

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

/// @brief Options of Sgd (torch.optim.SGD's meaning; dampening is always 0).
template <typename Scalar>
struct SgdOptions {
  Scalar learning_rate = Scalar(0.01);  ///< lr > 0
  Scalar momentum = Scalar(0);          ///< mu in [0, 1); 0 is plain SGD
  bool nesterov = false;                ///< Nesterov momentum (needs momentum > 0)
  Scalar weight_decay = Scalar(0);      ///< L2 coefficient wd >= 0, added to the gradient of W, R, V
};

/// @brief Stochastic gradient descent with optional (Nesterov) momentum.
/// @tparam Scalar float or double (the parameter sets' scalar).
template <typename Scalar>
class Sgd : public detail::OptimizerState<Scalar> {
  using Base = detail::OptimizerState<Scalar>;

 public:
  using Options = SgdOptions<Scalar>;

  /// @brief Validates the options (std::invalid_argument naming the option and its value).
  explicit Sgd(const Options& options = {}) : Base(false), options_(options) {
    const char* where = "sparse_rtrl::Sgd::Sgd()";
    detail::require_option(where, "learning_rate", double(options.learning_rate),
                           detail::positive_finite(double(options.learning_rate)), "> 0 and finite");
    detail::require_option(where, "momentum", double(options.momentum),
                           detail::unit_interval_open_right(double(options.momentum)), "in [0, 1)");
    detail::require_option(where, "weight_decay", double(options.weight_decay),
                           detail::nonnegative_finite(double(options.weight_decay)), ">= 0 and finite");
    if (options.nesterov && !(options.momentum > Scalar(0)))
      detail::require_option(where, "momentum", double(options.momentum), false,
                             "> 0 when options.nesterov is true");
  }

  const Options& options() const { return options_; }
  Scalar learning_rate() const { return options_.learning_rate; }
  /// For learning-rate schedules; must be > 0 and finite.
  void set_learning_rate(Scalar learning_rate) {
    detail::require_option("sparse_rtrl::Sgd::set_learning_rate()", "learning_rate", double(learning_rate),
                           detail::positive_finite(double(learning_rate)), "> 0 and finite");
    options_.learning_rate = learning_rate;
  }

  /// @brief One update of @p params (EgruParameters or ReadoutParameters) from @p grad (same
  /// shapes, finite). Bad input throws and leaves params and state unchanged.
  template <typename Set>
  void step(Set& params, const Set& grad) {
    detail::check_parameter_set<Set, Scalar>();
    this->run("sparse_rtrl::Sgd::step()", params, grad, Base::template no_mask<Set>(), rule());
  }
  /// @brief The same with pruned weights: masked entries of W and R (and their momentum) are
  /// exactly zero afterwards, whatever grad holds there.
  void step(EgruParameters<Scalar>& params, const EgruParameters<Scalar>& grad, const ParameterMask& mask) {
    const char* where = "sparse_rtrl::Sgd::step()";
    this->run(where, params, grad, Base::egru_mask(mask, params, where), rule());
  }
  /// @brief One update of a one-layer Model (model.hpp) from @p grad, keeping its mask's pruned
  /// weights at zero: step(model.parameters(), grad, model.mask()). A stack throws
  /// std::logic_error (updating layer 0 alone would be silent): use step(model, grad, layer).
  template <typename Surrogate>
  void step(Model<Scalar, Surrogate>& model, const EgruParameters<Scalar>& grad) {
    detail::require_one_layer_model(model.layers(), "sparse_rtrl::Sgd::step()");
    step(model.parameters(), grad, model.mask());
  }
  /// @brief One update of layer @p layer of a Model from that layer's gradient (e.g.
  /// Rtrl::gradient(layer)). An optimizer's moments belong to one parameter set: use one
  /// optimizer per layer.
  template <typename Surrogate>
  void step(Model<Scalar, Surrogate>& model, const EgruParameters<Scalar>& grad, Index layer) {
    detail::require_layer_index(model.layers(), layer, "sparse_rtrl::Sgd::step()");
    try {
      step(model.parameters(layer), grad, model.mask(layer));
    } catch (const std::invalid_argument& e) {
      // The set-level message cannot know which layer it was (a cold path: it allocates).
      throw std::invalid_argument(std::string(e.what()) + " (layer " + std::to_string(layer) + ")");
    }
  }
  /// @brief Updates a readout from its accumulated gradient (does not zero the gradient).
  void step(LinearReadout<Scalar>& readout) { step(readout.parameters(), readout.gradient()); }

  /// @brief One online update that consumes the gradient it applies: step(model, g) with the
  /// gradient the learner (Rtrl, Snap, RtrlStreams of this one-layer model) accumulated since its
  /// last zero_gradient(), then learner.zero_gradient(). An online loop written with update()
  /// cannot forget to zero (forgetting makes every later update apply all earlier gradients
  /// again). Allocation-free after the first call; on a throw nothing changes.
  template <typename Surrogate, typename Learner>
  void update(Model<Scalar, Surrogate>& model, Learner& learner) {
    detail::consume_learner_gradient(*this, model, learner, this->learner_gradient_, "sparse_rtrl::Sgd::update()");
  }
  /// @brief step(readout), then readout.zero_gradient().
  void update(LinearReadout<Scalar>& readout) {
    step(readout);
    readout.zero_gradient();
  }

  /// @brief The momentum buffer of tensor @p tensor, shaped like it; tensors in the set's order
  /// (W, R, bW, bR, theta or V, b). Throws std::out_of_range before the first step().
  Eigen::Map<const typename Base::Matrix> velocity(Index tensor) const {
    return this->state_tensor(this->first_, tensor, "sparse_rtrl::Sgd::velocity()");
  }

 private:
  auto rule() const {
    const Scalar lr = options_.learning_rate, mu = options_.momentum, wd = options_.weight_decay;
    const bool nesterov = options_.nesterov;
    return [lr, mu, wd, nesterov](Scalar& p, Scalar g, Scalar& buf, Scalar&, bool decays) {
      if (decays) g += wd * p;
      Scalar d = g;
      if (mu != Scalar(0)) {
        buf = mu * buf + g;
        d = nesterov ? g + mu * buf : buf;
      }
      p -= lr * d;
    };
  }

  Options options_;
};

/// @brief Options of Adam (torch.optim.Adam's meaning: weight decay is an L2 term added to the
///        gradient, i.e. coupled with the moments).
template <typename Scalar>
struct AdamOptions {
  Scalar learning_rate = Scalar(1e-3);  ///< lr > 0
  Scalar beta1 = Scalar(0.9);           ///< first-moment decay, in [0, 1)
  Scalar beta2 = Scalar(0.999);         ///< second-moment decay, in [0, 1)
  Scalar eps = Scalar(1e-8);            ///< > 0, added to sqrt(v_hat)
  Scalar weight_decay = Scalar(0);      ///< L2 coefficient >= 0 on W, R, V
};

/// @brief Options of AdamW (torch.optim.AdamW's meaning and default weight decay 0.01).
template <typename Scalar>
struct AdamWOptions {
  Scalar learning_rate = Scalar(1e-3);  ///< lr > 0
  Scalar beta1 = Scalar(0.9);           ///< first-moment decay, in [0, 1)
  Scalar beta2 = Scalar(0.999);         ///< second-moment decay, in [0, 1)
  Scalar eps = Scalar(1e-8);            ///< > 0, added to sqrt(v_hat)
  Scalar weight_decay = Scalar(0.01);   ///< decoupled decay >= 0 on W, R, V: p *= 1 - lr wd
};

/// @brief Adam (Kingma & Ba 2015) and, with Decoupled = true, AdamW. Use the aliases Adam and
/// AdamW.
/// @tparam Scalar float or double (the parameter sets' scalar).
/// @tparam Decoupled false: L2 weight decay in the gradient; true: decoupled weight decay.
template <typename Scalar, bool Decoupled>
class AdamType : public detail::OptimizerState<Scalar> {
  using Base = detail::OptimizerState<Scalar>;

 public:
  using Options = std::conditional_t<Decoupled, AdamWOptions<Scalar>, AdamOptions<Scalar>>;

  /// @brief Validates the options (std::invalid_argument naming the option and its value).
  explicit AdamType(const Options& options = {}) : Base(true), options_(options) {
    const char* where = Decoupled ? "sparse_rtrl::AdamW::AdamW()" : "sparse_rtrl::Adam::Adam()";
    detail::require_option(where, "learning_rate", double(options.learning_rate),
                           detail::positive_finite(double(options.learning_rate)), "> 0 and finite");
    detail::require_option(where, "beta1", double(options.beta1),
                           detail::unit_interval_open_right(double(options.beta1)), "in [0, 1)");
    detail::require_option(where, "beta2", double(options.beta2),
                           detail::unit_interval_open_right(double(options.beta2)), "in [0, 1)");
    detail::require_option(where, "eps", double(options.eps), detail::positive_finite(double(options.eps)),
                           "> 0 and finite");
    detail::require_option(where, "weight_decay", double(options.weight_decay),
                           detail::nonnegative_finite(double(options.weight_decay)), ">= 0 and finite");
  }

  const Options& options() const { return options_; }
  Scalar learning_rate() const { return options_.learning_rate; }
  /// For learning-rate schedules; must be > 0 and finite.
  void set_learning_rate(Scalar learning_rate) {
    detail::require_option(Decoupled ? "sparse_rtrl::AdamW::set_learning_rate()"
                                     : "sparse_rtrl::Adam::set_learning_rate()",
                           "learning_rate", double(learning_rate), detail::positive_finite(double(learning_rate)),
                           "> 0 and finite");
    options_.learning_rate = learning_rate;
  }

  /// @brief One update of @p params (EgruParameters or ReadoutParameters) from @p grad (same
  /// shapes, finite). Bad input throws and leaves params and state unchanged.
  template <typename Set>
  void step(Set& params, const Set& grad) {
    detail::check_parameter_set<Set, Scalar>();
    run_step(params, grad, Base::template no_mask<Set>());
  }
  /// @brief The same with pruned weights: masked entries of W and R (and both moments) are
  /// exactly zero afterwards, whatever grad holds there.
  void step(EgruParameters<Scalar>& params, const EgruParameters<Scalar>& grad, const ParameterMask& mask) {
    run_step(params, grad, Base::egru_mask(mask, params, where()));
  }
  /// @brief One update of a one-layer Model (model.hpp) from @p grad, keeping its mask's pruned
  /// weights at zero: step(model.parameters(), grad, model.mask()). A stack throws
  /// std::logic_error (updating layer 0 alone would be silent): use step(model, grad, layer).
  template <typename Surrogate>
  void step(Model<Scalar, Surrogate>& model, const EgruParameters<Scalar>& grad) {
    detail::require_one_layer_model(model.layers(), where());
    step(model.parameters(), grad, model.mask());
  }
  /// @brief One update of layer @p layer of a Model from that layer's gradient (e.g.
  /// Rtrl::gradient(layer)). An optimizer's moments belong to one parameter set: use one
  /// optimizer per layer.
  template <typename Surrogate>
  void step(Model<Scalar, Surrogate>& model, const EgruParameters<Scalar>& grad, Index layer) {
    detail::require_layer_index(model.layers(), layer, where());
    try {
      step(model.parameters(layer), grad, model.mask(layer));
    } catch (const std::invalid_argument& e) {
      // The set-level message cannot know which layer it was (a cold path: it allocates).
      throw std::invalid_argument(std::string(e.what()) + " (layer " + std::to_string(layer) + ")");
    }
  }
  /// @brief Updates a readout from its accumulated gradient (does not zero the gradient).
  void step(LinearReadout<Scalar>& readout) { step(readout.parameters(), readout.gradient()); }

  /// @brief One online update that consumes the gradient it applies: step(model, g) with the
  /// gradient the learner (Rtrl, Snap, RtrlStreams of this one-layer model) accumulated since its
  /// last zero_gradient(), then learner.zero_gradient(). An online loop written with update()
  /// cannot forget to zero (forgetting makes every later update apply all earlier gradients
  /// again). Allocation-free after the first call; on a throw nothing changes.
  template <typename Surrogate, typename Learner>
  void update(Model<Scalar, Surrogate>& model, Learner& learner) {
    detail::consume_learner_gradient(*this, model, learner, this->learner_gradient_, "sparse_rtrl::Adam::update()");
  }
  /// @brief step(readout), then readout.zero_gradient().
  void update(LinearReadout<Scalar>& readout) {
    step(readout);
    readout.zero_gradient();
  }

  /// @brief m of tensor @p tensor, shaped like it; tensors in the set's order (W, R, bW, bR,
  /// theta or V, b). Throws std::out_of_range before the first step().
  Eigen::Map<const typename Base::Matrix> first_moment(Index tensor) const {
    return this->state_tensor(this->first_, tensor, where_moment());
  }
  /// @brief v of tensor @p tensor (see first_moment()).
  Eigen::Map<const typename Base::Matrix> second_moment(Index tensor) const {
    return this->state_tensor(this->second_, tensor, where_moment());
  }

 private:
  static const char* where() { return Decoupled ? "sparse_rtrl::AdamW::step()" : "sparse_rtrl::Adam::step()"; }
  static const char* where_moment() {
    return Decoupled ? "sparse_rtrl::AdamW::moment()" : "sparse_rtrl::Adam::moment()";
  }

  template <typename Set, typename Keep>
  void run_step(Set& params, const Set& grad, const Keep& keep) {
    const Scalar lr = options_.learning_rate, b1 = options_.beta1, b2 = options_.beta2,
                 eps = options_.eps, wd = options_.weight_decay;
    // t is the step about to be taken (run() increments the count only after validation).
    const double t = double(this->steps() + 1);
    const Scalar correction1 = Scalar(1.0 - std::pow(double(b1), t));
    const Scalar sqrt_correction2 = Scalar(std::sqrt(1.0 - std::pow(double(b2), t)));
    const Scalar shrink = Scalar(1) - lr * wd;
    this->run(where(), params, grad, keep, [=](Scalar& p, Scalar g, Scalar& m, Scalar& v, bool decays) {
      if (decays) {
        if (Decoupled) p *= shrink;
        else g += wd * p;
      }
      m = b1 * m + (Scalar(1) - b1) * g;
      v = b2 * v + (Scalar(1) - b2) * g * g;
      p -= (lr / correction1) * m / (std::sqrt(v) / sqrt_correction2 + eps);
    });
  }

  Options options_;
};

/// @brief Adam; weight decay (if any) is an L2 term in the gradient, as torch.optim.Adam.
template <typename Scalar>
using Adam = AdamType<Scalar, false>;
/// @brief AdamW: decoupled weight decay, as torch.optim.AdamW.
template <typename Scalar>
using AdamW = AdamType<Scalar, true>;

/// @brief Global gradient-norm clipping over one or more gradient sets (EgruParameters,
///        ReadoutParameters): if the Euclidean norm over all their entries exceeds @p max_norm,
///        every entry is scaled by max_norm / norm (as torch.nn.utils.clip_grad_norm_).
/// @param max_norm > 0 and finite.
/// @return the norm before clipping.
template <typename First, typename... Rest>
typename detail::ParameterSetTraits<First>::Scalar clip_gradient_norm(
    typename detail::ParameterSetTraits<First>::Scalar max_norm, First& grad, Rest&... more) {
  using Scalar = typename detail::ParameterSetTraits<First>::Scalar;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  detail::check_parameter_set<First, Scalar>();
  static_assert((std::is_same<typename detail::ParameterSetTraits<Rest>::Scalar, Scalar>::value && ...),
                "clip_gradient_norm: every gradient set must have the same scalar type");
  const char* where = "sparse_rtrl::clip_gradient_norm()";
  if (!detail::positive_finite(double(max_norm))) {
    std::ostringstream s;
    s << "max_norm must be > 0 and finite, received " << max_norm;
    detail::fail(where, s.str());
  }
  // Squares summed in double: a float gradient of norm above 1.8e19 would overflow in float.
  double sum = 0.0;
  auto accumulate = [&](auto& set) {
    for (const auto& view : detail::ParameterSetTraits<std::remove_const_t<std::remove_reference_t<decltype(set)>>>::views(set)) {
      const Eigen::Map<const Matrix> m(view.data, view.rows, view.cols);
      if (!m.allFinite()) detail::require_finite(where, (std::string("grad.") + view.name).c_str(), m);
      sum += m.template cast<double>().squaredNorm();
    }
  };
  accumulate(grad);
  (accumulate(more), ...);
  double norm = std::sqrt(sum);
  if (!std::isfinite(norm)) {
    // A double entry above ~1e154 overflows its square: the norm came out inf and the scale 0,
    // zeroing the whole gradient. Again with every entry divided by the largest magnitude first
    // (as LAPACK's nrm2 and Eigen's stableNorm): the squares are then <= 1. Only on overflow, so
    // every finite-norm result keeps its bits.
    double largest = 0.0;
    auto find_largest = [&](auto& set) {
      for (const auto& view : detail::ParameterSetTraits<std::remove_const_t<std::remove_reference_t<decltype(set)>>>::views(set))
        largest = std::max(largest, Eigen::Map<const Matrix>(view.data, view.rows, view.cols).template cast<double>().cwiseAbs().maxCoeff());
    };
    find_largest(grad);
    (find_largest(more), ...);
    double scaled = 0.0;
    auto accumulate_scaled = [&](auto& set) {
      for (const auto& view : detail::ParameterSetTraits<std::remove_const_t<std::remove_reference_t<decltype(set)>>>::views(set))
        scaled += (Eigen::Map<const Matrix>(view.data, view.rows, view.cols).template cast<double>() / largest).squaredNorm();
    };
    accumulate_scaled(grad);
    (accumulate_scaled(more), ...);
    norm = largest * std::sqrt(scaled);  // inf only if the true norm exceeds DBL_MAX
  }
  if (norm > double(max_norm)) {
    const Scalar scale = Scalar(double(max_norm) / norm);
    auto rescale = [&](auto& set) {
      for (auto& view : detail::ParameterSetTraits<std::remove_const_t<std::remove_reference_t<decltype(set)>>>::views(set))
        Eigen::Map<Matrix>(view.data, view.rows, view.cols) *= scale;
    };
    rescale(grad);
    (rescale(more), ...);
  }
  return Scalar(norm);
}

}  // namespace sparse_rtrl
