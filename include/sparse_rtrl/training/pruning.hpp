/// @file pruning.hpp
/// @brief Gradual magnitude pruning of W and R during training (Zhu & Gupta 2017, "To prune, or
///        not to prune", Eq. 1), producing the next ParameterMask for Model::set_mask().
///
/// Densities (kept fractions, d = 1 - sparsity) after pruning event k = 1..N, from the initial
/// d_0 to the target d_N:
///   cubic (Zhu & Gupta, the default):  d_k = d_N + (d_0 - d_N) (1 - k/N)^3
///   linear:                            d_k = d_0 + (d_N - d_0) k/N
/// The cubic curve prunes fast while many weights are redundant and slowly near the target, so
/// the network can recover between events. Each matrix (W, R) has its own d_0 and d_N.
///
/// Event k keeps the round(d_k * size) largest-magnitude weights AMONG THOSE THE CURRENT MASK
/// KEEPS: a pruned weight is never revived (its value is zero, so it could only come back by a
/// tie, and a revived weight would have no influence history in RTRL anyway). Ties are broken as
/// in ParameterMask::from_magnitude (lower linear index wins), so the result equals
/// from_magnitude(params with pruned entries zeroed) intersected with the current mask whenever
/// no kept weight is exactly zero.
///
/// When to prune is the caller's loop: event k at training step t0 + k * dt, e.g.
///
///     MagnitudePruner pruner(PruningSchedule{0.1, 0.1, 10});   // to 10% of W and R in 10 events
///     for (Index t = 0; t < T; ++t) {
///       ... rtrl.step(x), loss, optimizer step adam.step(model, g) ...
///       if (t >= t0 && (t - t0) % dt == 0 && !pruner.finished()) pruner.prune(model);
///     }
///
/// prune(model) calls Model::set_mask(), which zeroes the newly pruned weights; every learner of
/// the model (Rtrl, RtrlStreams) drops their influence columns before its next step, and
/// optimizer steps on the model keep them (and their moments) zero. prune(rtrl) does the same
/// through Rtrl::set_mask, re-laying that learner's columns at once.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/model/egru_parameters.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {

/// @brief Shape of the density curve between pruning events.
enum class PruningCurve {
  cubic,  ///< Zhu & Gupta 2017: d_k = d_N + (d_0 - d_N) (1 - k/N)^3
  linear  ///< d_k = d_0 + (d_N - d_0) k/N
};

/// @brief Where pruning ends and how it gets there.
struct PruningSchedule {
  double target_density_W = 0.1;  ///< d_N of W, in [0, initial density]
  double target_density_R = 0.1;  ///< d_N of R, in [0, initial density]
  Index events = 10;              ///< N >= 1 pruning events
  PruningCurve curve = PruningCurve::cubic;
};

/// @brief Gradual magnitude pruning: each call of next_mask()/prune() is one pruning event.
class MagnitudePruner {
 public:
  /// @brief Starts from the given densities (default: dense network).
  /// @param schedule targets (<= the initial densities), number of events, curve.
  /// @param initial_density_W d_0 of W, in [0, 1].
  /// @param initial_density_R d_0 of R, in [0, 1].
  explicit MagnitudePruner(const PruningSchedule& schedule, double initial_density_W = 1.0,
                           double initial_density_R = 1.0)
      : schedule_(schedule), initial_W_(initial_density_W), initial_R_(initial_density_R) {
    const char* where = "sparse_rtrl::MagnitudePruner::MagnitudePruner()";
    require_density(where, "initial_density_W", initial_density_W, 1.0, "[0, 1]");
    require_density(where, "initial_density_R", initial_density_R, 1.0, "[0, 1]");
    validate_schedule(where);
  }

  /// @brief Starts from the densities of the current mask (e.g. a random sparse initialisation).
  MagnitudePruner(const PruningSchedule& schedule, const ParameterMask& initial)
      : MagnitudePruner(schedule, initial.density_W(), initial.density_R()) {}

  const PruningSchedule& schedule() const { return schedule_; }
  /// N, the number of pruning events.
  Index events() const { return schedule_.events; }
  /// Events performed so far (0..N).
  Index events_done() const { return done_; }
  bool finished() const { return done_ >= schedule_.events; }
  /// d_0 of W and of R, as given at construction.
  double initial_density_W() const { return initial_W_; }
  double initial_density_R() const { return initial_R_; }
  /// @brief Sets the number of events done (checkpoints, io/checkpoint.hpp: resuming a
  /// schedule). Must be in [0, events()], else std::invalid_argument.
  void set_events_done(Index done) {
    if (done < 0 || done > schedule_.events)
      detail::fail("sparse_rtrl::MagnitudePruner::set_events_done()",
                   "done must be in [0, " + std::to_string(schedule_.events) + "], received " + std::to_string(done));
    done_ = done;
  }

  /// @brief Scheduled density of W after event @p k in [0, N] (k = 0: the initial density).
  double density_W(Index k) const { return density(initial_W_, schedule_.target_density_W, k, "density_W"); }
  /// @brief Scheduled density of R after event @p k in [0, N].
  double density_R(Index k) const { return density(initial_R_, schedule_.target_density_R, k, "density_R"); }

  /// @brief Performs the next event: the mask keeping, within @p current, the
  /// round(d_k * size) largest-magnitude entries of W and of R (k = events_done() + 1).
  /// Throws std::logic_error when finished(), std::invalid_argument on a mask of other size.
  template <typename Scalar>
  ParameterMask next_mask(const ParameterMask& current, const EgruParameters<Scalar>& params) {
    const char* where = "sparse_rtrl::MagnitudePruner::next_mask()";
    if (finished())
      throw std::logic_error(std::string(where) + ": all " + std::to_string(schedule_.events) +
                             " pruning events are done (check finished())");
    ParameterMask next = compute_next(where, current, params);
    ++done_;
    return next;
  }

  /// @brief One event applied to a Model or a learner (Rtrl, RtrlStreams, or any type with
  /// mask(), cell().parameters() and set_mask()): computes next_mask() from its weights and
  /// mask and sets it. The event counts only once set_mask() accepted the mask: when it throws
  /// (e.g. std::length_error from a learner out of memory), events_done() is unchanged.
  /// @return the learner's new mask.
  template <typename Learner>
  const ParameterMask& prune(Learner& learner) {
    const char* where = "sparse_rtrl::MagnitudePruner::prune()";
    if (finished())
      throw std::logic_error(std::string(where) + ": all " + std::to_string(schedule_.events) +
                             " pruning events are done (check finished())");
    learner.set_mask(compute_next(where, learner.mask(), learner.cell().parameters()));
    ++done_;
    return learner.mask();
  }

 private:
  /// The mask of event done_ + 1, without counting it.
  template <typename Scalar>
  ParameterMask compute_next(const char* where, const ParameterMask& current, const EgruParameters<Scalar>& params) const {
    params.validate(where);
    current.require_matches(params, where);
    const Index k = done_ + 1;
    return ParameterMask(prune_matrix(params.W, current.W(), density_W(k)), prune_matrix(params.R, current.R(), density_R(k)));
  }

  static void require_density(const char* where, const char* name, double value, double upper,
                              const char* expected) {
    if (!(value >= 0.0 && value <= upper)) {
      std::ostringstream s;
      s << name << " must be in " << expected << ", received " << value;
      detail::fail(where, s.str());
    }
  }

  void validate_schedule(const char* where) const {
    // Pruning never revives weights, so a target above the start is unreachable.
    std::ostringstream w, r;
    w << "[0, " << initial_W_ << "] (at most the initial density)";
    r << "[0, " << initial_R_ << "] (at most the initial density)";
    require_density(where, "schedule.target_density_W", schedule_.target_density_W, initial_W_, w.str().c_str());
    require_density(where, "schedule.target_density_R", schedule_.target_density_R, initial_R_, r.str().c_str());
    if (schedule_.events < 1)
      detail::fail(where, "schedule.events must be >= 1, received " + std::to_string(schedule_.events));
    if (schedule_.curve != PruningCurve::cubic && schedule_.curve != PruningCurve::linear)
      detail::fail(where, "schedule.curve must be cubic or linear, received " +
                              std::to_string(static_cast<int>(schedule_.curve)));
  }

  double density(double start, double target, Index k, const char* name) const {
    if (k < 0 || k > schedule_.events) {
      std::ostringstream s;
      s << "sparse_rtrl::MagnitudePruner::" << name << "(): event must be in [0, " << schedule_.events
        << "], received " << k;
      throw std::out_of_range(s.str());
    }
    const double progress = double(k) / double(schedule_.events);
    // Both forms give exactly d_0 at k = 0 and exactly d_N at k = N.
    if (schedule_.curve == PruningCurve::linear) return start * (1.0 - progress) + target * progress;
    const double rest = 1.0 - progress;
    return target + (start - target) * rest * rest * rest;
  }

  /// Keeps the round(density * size) largest |w| among the entries @p keep keeps (never more
  /// than it keeps). The ranking is over kept entries only, rather than over a zeroed copy as
  /// from_magnitude() would see it, so that kept weights that are exactly zero still count.
  template <typename Matrix>
  static ParameterMask::BoolMatrix prune_matrix(const Matrix& w, const ParameterMask::BoolMatrix& keep,
                                                double density) {
    const Index rows = w.rows();
    std::vector<Index> order;
    order.reserve(std::size_t(keep.count()));
    for (Index i = 0; i < w.size(); ++i)
      if (keep(i % rows, i / rows)) order.push_back(i);
    const Index scheduled = static_cast<Index>(std::llround(density * double(w.size())));
    const Index count = std::min<Index>(Index(order.size()), std::max<Index>(0, scheduled));
    // Stable sort on descending |w| keeps ascending linear index among ties, as from_magnitude().
    std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) {
      return std::abs(w(a % rows, a / rows)) > std::abs(w(b % rows, b / rows));
    });
    ParameterMask::BoolMatrix out = ParameterMask::BoolMatrix::Constant(rows, w.cols(), false);
    for (Index e = 0; e < count; ++e) out(order[std::size_t(e)] % rows, order[std::size_t(e)] / rows) = true;
    return out;
  }

  PruningSchedule schedule_;
  double initial_W_;
  double initial_R_;
  Index done_ = 0;
};

}  // namespace sparse_rtrl
