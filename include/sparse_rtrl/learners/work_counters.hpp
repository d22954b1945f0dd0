/// @file work_counters.hpp
/// @brief What an RTRL step did, next to what dense RTRL would have done.
#pragma once

#include <sparse_rtrl/config.hpp>

#include <chrono>
#include <cstdint>

namespace sparse_rtrl {

/// @brief Work of one step or of many (summed). All counts are multiply-adds (fma) or units.
///
/// "dense" counts are those of dense RTRL on the unpruned model: the product A_t M_{t-1} over
/// all n rows and all P_dense columns (n * n * P_dense), the diagonal pass (n * P_dense) and a
/// readout of every row (n * P_dense).
struct WorkCounters {
  std::uint64_t steps = 0;
  std::uint64_t propagation_fma = 0;        ///< done in J_t M_{t-1} (coupling + diagonal)
  std::uint64_t dense_propagation_fma = 0;  ///< dense RTRL's count for the same steps
  std::uint64_t readout_fma = 0;            ///< done in (dL/dc)^T M
  std::uint64_t dense_readout_fma = 0;
  std::uint64_t units = 0;            ///< n per step, summed
  std::uint64_t event_units = 0;      ///< units with o_{t-1} = 1 (event sparsity = 1 - this/units)
  std::uint64_t active_rows = 0;      ///< rows with s_{t-1} != 0 (backward sparsity = 1 - this/units)
  std::uint64_t coupling_nonzeros = 0;  ///< entries of A_t diag(s_{t-1}) used
  /// Of propagation_fma (and dense_propagation_fma): the cross-layer blocks of a stack,
  /// B^k_t D^{k-1}_t (rtrl.hpp); 0 for one layer.
  std::uint64_t cross_layer_fma = 0;
  std::uint64_t dense_cross_layer_fma = 0;

  WorkCounters& operator+=(const WorkCounters& o) {
    steps += o.steps;
    propagation_fma += o.propagation_fma;
    dense_propagation_fma += o.dense_propagation_fma;
    readout_fma += o.readout_fma;
    dense_readout_fma += o.dense_readout_fma;
    units += o.units;
    event_units += o.event_units;
    active_rows += o.active_rows;
    coupling_nonzeros += o.coupling_nonzeros;
    cross_layer_fma += o.cross_layer_fma;
    dense_cross_layer_fma += o.dense_cross_layer_fma;
    return *this;
  }
  /// Fraction of units that emitted no event (o = 0).
  double event_sparsity() const { return units ? 1.0 - double(event_units) / double(units) : 0.0; }
  /// Fraction of influence rows skipped (s = 0).
  double backward_sparsity() const { return units ? 1.0 - double(active_rows) / double(units) : 0.0; }
  /// dense / done, over propagation and readout.
  double ideal_speedup() const {
    const double done = double(propagation_fma + readout_fma);
    return done > 0 ? double(dense_propagation_fma + dense_readout_fma) / done : 0.0;
  }
};

/// @brief Wall-clock seconds a learner spent in each phase of its steps and read-outs, summed
/// (recorded only when asked for, e.g. RtrlOptions::time_phases: a clock read per phase).
///
/// forward: every layer's c_t and local derivatives (EgruCell::forward); coupling: building the
/// step's sparse Jacobians (A_t diag(s_{t-1}), the cross-layer B^k_t); propagation: the products
/// J_t M_{t-1} (+ B^k_t D^{k-1}_t), the dominant kernel; readout: (dL/dc)^T M in
/// accumulate_gradient(); other: the step's checks and Model::enforce_mask(), the immediate
/// Jacobian Mbar_t, the threshold terms, counters.
struct PhaseTimes {
  double forward = 0, coupling = 0, propagation = 0, readout = 0, other = 0;
  double total() const { return forward + coupling + propagation + readout + other; }
  PhaseTimes& operator+=(const PhaseTimes& o) {
    forward += o.forward;
    coupling += o.coupling;
    propagation += o.propagation;
    readout += o.readout;
    other += o.other;
    return *this;
  }
};

namespace detail {

/// Adds the seconds of its scope to @p into when @p on (PhaseTimes); a branch when off.
class ScopedPhase {
 public:
  ScopedPhase(bool on, double& into) : into_(on ? &into : nullptr) {
    if (into_) start_ = std::chrono::steady_clock::now();
  }
  ~ScopedPhase() {
    if (into_) *into_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  ScopedPhase(const ScopedPhase&) = delete;
  ScopedPhase& operator=(const ScopedPhase&) = delete;

 private:
  double* into_;
  std::chrono::steady_clock::time_point start_{};
};

}  // namespace detail
}  // namespace sparse_rtrl
