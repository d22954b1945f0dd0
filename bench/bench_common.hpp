// Shared set-up of the benchmarks: networks with a chosen backward activity, and counters.
#pragma once

#include <sparse_rtrl/sparse_rtrl.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace bench {

using sparse_rtrl::Index;

template <typename S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;

/// Deterministic inputs uniform in [-1, 1).
template <typename S>
Mat<S> inputs(Index T, Index d, std::uint64_t seed) {
  sparse_rtrl::detail::UniformRandom rng(seed);
  Mat<S> X(T, d);
  for (Index t = 0; t < T; ++t)
    for (Index k = 0; k < d; ++k) X(t, k) = S(rng.uniform(-1, 1));
  return X;
}

/// Parameters whose fraction of units with s != 0 is close to `activity` under the given
/// surrogate: a common threshold is bisected on a warm-up run, since the rate is a property of
/// the dynamics, not of any one parameter. Returns the parameters; the caller measures the rate.
/// @p given: the inputs to calibrate on (e.g. the events of a layer below; rows are steps), else
/// uniform random inputs.
template <typename S>
sparse_rtrl::EgruParameters<S> parameters_for_activity(Index n, Index d, double activity,
                                                       const sparse_rtrl::ParameterMask& mask,
                                                       S gamma, S eps, std::uint64_t seed,
                                                       const Mat<S>* given = nullptr) {
  auto p = sparse_rtrl::init_torch_like<S>(n, d, {seed, S(0.3)});
  // Pruning removes input: rescale so each unit's fan-in keeps its variance.
  p.W *= S(2.0 / std::sqrt(std::max(mask.density_W(), 1e-3)) * std::sqrt(double(n) / double(d)));
  p.R *= S(1.0 / std::sqrt(std::max(mask.density_R(), 1e-3)));
  mask.apply(p);
  const Mat<S> X = given ? *given : inputs<S>(60, d, seed + 1);
  auto measure = [&](S theta) {
    p.theta.setConstant(theta);
    sparse_rtrl::Model<S> model(sparse_rtrl::EgruCell<S>(p, {true}, sparse_rtrl::TriangularSurrogate<S>(gamma, eps)));
    sparse_rtrl::Bptt<S> b(model);
    b.forward(X);
    double active = 0;
    for (Index t = 10; t < X.rows(); ++t) active += double((b.step_cache(t).s.array() != S(0)).count());
    return active / double((X.rows() - 10) * n);
  };
  S lo = S(-2), hi = S(3);  // activity decreases with the threshold
  for (int it = 0; it < 30; ++it) {
    const S mid = (lo + hi) / 2;
    (measure(mid) > activity ? lo : hi) = mid;
  }
  p.theta.setConstant((lo + hi) / 2);
  return p;
}

inline void set_work_counters(benchmark::State& state, const sparse_rtrl::WorkCounters& w,
                              std::size_t state_bytes) {
  const double steps = double(std::max<std::uint64_t>(w.steps, 1));
  const double fma = double(w.propagation_fma + w.readout_fma) / steps;
  state.counters["fma"] = fma;
  state.counters["dense_fma"] = double(w.dense_propagation_fma + w.dense_readout_fma) / steps;
  state.counters["ideal_ratio"] = w.ideal_speedup();
  state.counters["activity"] = 1.0 - w.backward_sparsity();
  state.counters["event_rate"] = 1.0 - w.event_sparsity();
  state.counters["state_bytes"] = double(state_bytes);
  // One benchmark iteration is one step: flops of the step's counted work per second.
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * fma * double(state.iterations()),
                                                benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

/// Seconds per step in each phase (RtrlOptions::time_phases; learner.phase_times() since
/// reset_work()), as counters forward_seconds, coupling_seconds, propagation_seconds,
/// readout_seconds, other_seconds, and the rest of the iteration (outside the learner) as
/// outside_seconds is left to the reader: step_seconds minus their sum. Nothing when not recorded.
inline void set_phase_counters(benchmark::State& state, const sparse_rtrl::PhaseTimes& p, std::uint64_t steps) {
  if (p.total() <= 0 || steps == 0) return;
  const double s = double(steps);
  state.counters["forward_seconds"] = p.forward / s;
  state.counters["coupling_seconds"] = p.coupling / s;
  state.counters["propagation_seconds"] = p.propagation / s;
  state.counters["readout_seconds"] = p.readout / s;
  state.counters["other_seconds"] = p.other / s;
}

/// The value of Google Benchmark's flag --NAME=value as it will read it: the last one on the
/// command line, else the environment variable NAME in capitals, else @p fallback.
inline std::string flag_value(int argc, char** argv, const std::string& name, const std::string& fallback) {
  const std::string prefix = "--" + name + "=";
  std::string value = fallback;
  std::string env = name;
  for (char& c : env) c = char(std::toupper(static_cast<unsigned char>(c)));
  if (const char* e = std::getenv(env.c_str())) value = e;
  for (int k = 1; k < argc; ++k)
    if (std::strncmp(argv[k], prefix.c_str(), prefix.size()) == 0) value = argv[k] + prefix.size();
  return value;
}

/// Google Benchmark's reading of a boolean flag ("false", "no", "off", "0", "f", "n" are false).
inline bool truthy(const std::string& value) {
  if (value.empty()) return false;
  if (value.size() == 1) return std::strchr("0fFnN", value[0]) == nullptr;
  std::string lower = value;
  for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  return lower != "false" && lower != "no" && lower != "off";
}

/// @p args (argv) with --benchmark_min_time=@p seconds put first unless the command line or
/// BENCHMARK_MIN_TIME sets it: the binary's default minimum time per row. A per-row MinTime()
/// would add "/min_time:..." to every row's name (so a filter on the documented name matched
/// nothing) and override the user's --benchmark_min_time.
inline std::vector<char*> with_default_min_time(std::vector<char*> args, const char* seconds) {
  static std::string flag;  // argv strings must outlive benchmark::Initialize's use of them
  if (!flag_value(int(args.size()), args.data(), "benchmark_min_time", "").empty()) return args;
  flag = std::string("--benchmark_min_time=") + seconds;
  args.insert(args.begin() + (args.empty() ? 0 : 1), &flag[0]);  // after the program name
  return args;
}

}  // namespace bench
