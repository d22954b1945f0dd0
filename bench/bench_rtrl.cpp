// Sparse vs dense exact RTRL at n = 256, d = 32 with 90% weight sparsity (independent gate
// masks, ParameterMask::random's default) and ~10% of influence rows active (s != 0), next to the
// machine's Eigen sgemm and memory bandwidth measured by the same binary.
//
// Run: bash cmake/dev.sh bench && build/bench/bench/bench_rtrl
// The closing table gives, from this run: time per step of both, their ratio, the ideal ratio
// from the work counters, the propagation kernel's GFLOP/s and sgemm's GFLOP/s. It is printed
// with the console format only; --benchmark_format=json|csv and --benchmark_out=FILE
// --benchmark_out_format=json give Google Benchmark's own output.
//
// Rows are named as listed (BM_SparseRtrlStep, BM_SparseRtrlStepThreads/threads:1/real_time,
// BM_EigenSgemm/512, ...), so --benchmark_filter='BM_SparseRtrlStep$' selects one. Every row
// without a fixed iteration count runs for --benchmark_min_time, 2 s unless given (Google
// Benchmark's default is 0.5 s): the step rows need that long to be stable, and a per-row
// MinTime(2.0) would add "/min_time:2.000" to their names. (The sgemm, streaming and kernel rows
// ran 0.5 s when the step rows had their own MinTime.)
#include "bench_common.hpp"

#include <sparse_rtrl/detail/propagate.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

using namespace sparse_rtrl;
using S = float;

namespace {

constexpr Index kUnits = 256;
constexpr Index kInputs = 32;
constexpr double kDensity = 0.1;
constexpr double kActivity = 0.1;
// Narrow surrogate: with the default eps = 1 almost no row is skippable (model.md).
const TriangularSurrogate<S> kSurrogate(S(1.0), S(0.1));


const ParameterMask& sparse_mask() {
  static const ParameterMask m = ParameterMask::random(kUnits, kInputs, kDensity, kDensity, 1);
  return m;
}
const EgruParameters<S>& sparse_params() {
  static const EgruParameters<S> p = bench::parameters_for_activity<S>(kUnits, kInputs, kActivity, sparse_mask(), kSurrogate.gamma(), kSurrogate.eps(), 2);
  return p;
}

void run_steps(benchmark::State& state, Rtrl<S>& rtrl) {
  const bench::Mat<S> X = bench::inputs<S>(512, kInputs, 3);
  const Eigen::VectorXf g = Eigen::VectorXf::Constant(kUnits, 0.01f);
  for (Index t = 0; t < 20; ++t) rtrl.step(X.row(t));  // leave the start-up transient
  rtrl.reset_work();
  Index t = 20;
  for (auto _ : state) {
    rtrl.step(X.row(t % X.rows()));
    rtrl.accumulate_gradient(g);
    benchmark::ClobberMemory();
    ++t;
  }
  bench::set_work_counters(state, rtrl.total_work(), rtrl.influence_bytes());
  bench::set_phase_counters(state, rtrl.phase_times(), rtrl.total_work().steps);
}

// The step with its per-phase breakdown (RtrlOptions::time_phases: a clock read per phase,
// changing no result): forward_seconds, coupling_seconds, propagation_seconds, readout_seconds,
// other_seconds per step.
void BM_SparseRtrlStep(benchmark::State& state) {
  Model<S> model(EgruCell<S>(sparse_params(), {true}, kSurrogate), sparse_mask());
  RtrlOptions options;
  options.time_phases = true;
  Rtrl<S> rtrl(model, options);
  run_steps(state, rtrl);
}

// The same with strict IEEE arithmetic (RtrlOptions::flush_subnormals = false): entries of
// long-silent rows of M decay into the subnormal range, where arithmetic is slow on many CPUs.
// What the default (subnormals flushed) saves.
void BM_SparseRtrlStepStrictIeee(benchmark::State& state) {
  RtrlOptions options;
  options.flush_subnormals = false;
  Model<S> model(EgruCell<S>(sparse_params(), {true}, kSurrogate), sparse_mask());
  Rtrl<S> rtrl(model, options);
  // Long enough for rows of M to reach the subnormal range (they decay by z each silent step).
  const bench::Mat<S> X = bench::inputs<S>(512, kInputs, 3);
  for (Index t = 0; t < 2000; ++t) rtrl.step(X.row(t % X.rows()));
  run_steps(state, rtrl);
}

// Default options: mean step time early after a reset (steps 10-210, M mostly young) and after
// 20 000 steps (long-silent rows of M have decayed as far as they will). Without flushed
// subnormals the late step is many times slower on CPUs with slow subnormal arithmetic.
void BM_StepEarlyLate(benchmark::State& state) {
  const bench::Mat<S> X = bench::inputs<S>(512, kInputs, 3);
  const Eigen::VectorXf g = Eigen::VectorXf::Constant(kUnits, 0.01f);
  double early = 0, late = 0;
  for (auto _ : state) {
    Model<S> model(EgruCell<S>(sparse_params(), {true}, kSurrogate), sparse_mask());
    Rtrl<S> rtrl(model);
    rtrl.reset();
    Index t = 0;
    auto advance = [&](Index steps) {
      const auto start = std::chrono::steady_clock::now();
      for (Index k = 0; k < steps; ++k, ++t) {
        rtrl.step(X.row(t % X.rows()));
        rtrl.accumulate_gradient(g);
      }
      benchmark::ClobberMemory();
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / double(steps);
    };
    advance(10);
    early = advance(200);
    advance(20000 - t);
    late = advance(200);
  }
  state.counters["early_seconds"] = early;
  state.counters["late_seconds"] = late;
  state.counters["late_over_early"] = late / early;
}

// The sparse step on 1 and 2 threads (RtrlOptions::threads): columns of M split over the
// learner's own threads, bitwise the same result.
void BM_SparseRtrlStepThreads(benchmark::State& state) {
  RtrlOptions options;
  options.threads = int(state.range(0));
  Model<S> model(EgruCell<S>(sparse_params(), {true}, kSurrogate), sparse_mask());
  Rtrl<S> rtrl(model, options);
  run_steps(state, rtrl);
  state.counters["step_seconds"] = benchmark::Counter(double(state.iterations()),
                                                      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_DenseRtrlStep(benchmark::State& state) {
  // The same network (pruned weights are zero), with every parameter tracked and every row
  // multiplied: what RTRL costs without exploiting either sparsity.
  Model<S> model(EgruCell<S>(sparse_params(), {true}, kSurrogate));
  Rtrl<S> rtrl(model, RtrlOptions{false});
  run_steps(state, rtrl);
}

// The propagation kernel alone on a coupling with the sparse benchmark's statistics.
void BM_PropagationKernel(benchmark::State& state) {
  const Index n = kUnits;
  const Index k = Index(state.range(0));        // active source rows
  const double fill = double(state.range(1)) / 100.0;  // fraction of (target, source) pairs
  const Index P = Index(state.range(2));
  detail::InfluenceStorage<S> M(n, P);
  {
    detail::UniformRandom fill_rng(8);
    for (Index i = 0; i < n; ++i) {
      auto row = M.row(i);
      for (Index c = 0; c < P; ++c) row[c] = S(2 * fill_rng.next() - 1);
    }
  }
  detail::Coupling<S> C;
  C.reserve(n, n * n);
  detail::UniformRandom rng(9);
  for (Index a = 0; a < k; ++a) C.active[std::size_t(a)] = a * (n / k);
  Index e = 0;
  for (Index i = 0; i < n; ++i) {
    C.row_ptr[std::size_t(i)] = e;
    for (Index a = 0; a < k; ++a)
      if (rng.next() < fill) {
        C.source[std::size_t(e)] = a;
        C.coef[std::size_t(e)] = S(0.001);
        ++e;
      }
  }
  C.row_ptr[std::size_t(n)] = e;
  C.active_count = k;
  Eigen::VectorXf decay = Eigen::VectorXf::Constant(n, 0.999f);
  detail::PropagationScratch<S> scratch(std::size_t(detail::propagation_scratch_size<S>(n)));
  parallel::ThreadPool one_thread(1);
  ScopedFlushDenormals flush;  // as the learners run it
  for (auto _ : state) {
    detail::propagate_in_place(M, decay.data(), C, scratch.data(), detail::propagation_scratch_size<S>(n), one_thread,
                               true);
    benchmark::ClobberMemory();
  }
  const double fma = double(C.nnz() + n) * double(P);
  state.counters["fma"] = fma;
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * fma * double(state.iterations()), benchmark::Counter::kIsRate,
                                                benchmark::Counter::kIs1000);
}

// Reads and writes an n x P influence matrix once, as every exact RTRL step must (each row is
// decayed and most receive coupling): the memory-bandwidth floor of a step of that size.
void BM_InfluenceStream(benchmark::State& state) {
  const Index n = kUnits, P = Index(state.range(0));
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> M =
      Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>::Random(n, P);
  for (auto _ : state) {
    M *= S(0.999);
    benchmark::DoNotOptimize(M.data());
    benchmark::ClobberMemory();
  }
  state.counters["GBps"] = benchmark::Counter(2.0 * double(M.size()) * sizeof(S) * double(state.iterations()),
                                              benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

void BM_EigenSgemm(benchmark::State& state) {
  const Index N = Index(state.range(0));
  Eigen::MatrixXf A = Eigen::MatrixXf::Random(N, N), B = Eigen::MatrixXf::Random(N, N), C(N, N);
  for (auto _ : state) {
    C.noalias() = A * B;
    benchmark::DoNotOptimize(C.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * double(N) * double(N) * double(N) * double(state.iterations()),
                                                benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

BENCHMARK(BM_SparseRtrlStep)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SparseRtrlStepStrictIeee)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_StepEarlyLate)->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK(BM_SparseRtrlStepThreads)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DenseRtrlStep)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_EigenSgemm)->Arg(512)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_InfluenceStream)->Arg(24000)->Unit(benchmark::kMillisecond);
// k = 26 active rows of 256, 27% of pairs coupled (1 - 0.9^3 for three 10%-dense gate masks),
// P = P_kept of the sparse benchmark (about 24k); and the dense case.
BENCHMARK(BM_PropagationKernel)->Args({26, 27, 24000})->Args({26, 27, 2000})->Args({26, 27, 256})->Args({256, 100, 24000})->Unit(benchmark::kMillisecond);

/// Prints the ratios of the runs above when they are done.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  explicit RatioReporter(OutputOptions options) : ConsoleReporter(options) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      if (r.run_type != Run::RT_Iteration) continue;
      Entry e;
      e.seconds = r.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(r.time_unit);
      for (const auto& c : r.counters) e.counters[c.first] = c.second.value;
      entries_[r.benchmark_name()] = e;
    }
    ConsoleReporter::ReportRuns(runs);
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    // Exact names: the map is sorted as strings, so a prefix would pick ".../2000" before ".../24000".
    auto exact = [&](const std::string& name) -> const Entry* {
      const auto it = entries_.find(name);
      return it == entries_.end() ? nullptr : &it->second;
    };
    auto find = [&](const std::string& prefix) -> const Entry* {
      for (const auto& kv : entries_)
        if (kv.first.rfind(prefix, 0) == 0) return &kv.second;
      return nullptr;
    };
    const Entry* sparse = exact("BM_SparseRtrlStep");
    const Entry* strict = exact("BM_SparseRtrlStepStrictIeee");
    const Entry* early_late = find("BM_StepEarlyLate");
    const Entry* one_thread = exact("BM_SparseRtrlStepThreads/threads:1/real_time");
    const Entry* two_threads = exact("BM_SparseRtrlStepThreads/threads:2/real_time");
    const Entry* dense = find("BM_DenseRtrlStep");
    const Entry* gemm = find("BM_EigenSgemm");
    const Entry* kernel = exact("BM_PropagationKernel/26/27/24000");      // the sparse step's shape
    const Entry* kernel_cached = exact("BM_PropagationKernel/26/27/2000");  // M slice in L2
    if (!sparse || !dense) return;
    std::printf("\n| quantity (n = 256, d = 32, weight density 0.1) | value |\n|---|---|\n");
    std::printf("| event rate (o = 1), sparse run | %.3f |\n", sparse->counters.at("event_rate"));
    std::printf("| backward activity (s != 0), sparse run | %.3f |\n", sparse->counters.at("activity"));
    std::printf("| dense RTRL time per step | %.2f ms |\n", dense->seconds * 1e3);
    std::printf("| sparse RTRL time per step | %.3f ms |\n", sparse->seconds * 1e3);
    std::printf("| measured speedup dense / sparse | %.1fx |\n", dense->seconds / sparse->seconds);
    std::printf("| ideal speedup from work counters | %.1fx |\n", sparse->counters.at("ideal_ratio"));
    if (strict)
      std::printf("| sparse RTRL time per step with strict IEEE (subnormals not flushed), after 2000 steps | %.3f ms (%.2fx the default) |\n",
                  strict->seconds * 1e3, strict->seconds / sparse->seconds);
    std::printf("| measured / ideal | %.0f%% |\n",
                100.0 * (dense->seconds / sparse->seconds) / sparse->counters.at("ideal_ratio"));
    std::printf("| sparse step GFLOP/s (counted work) | %.1f |\n", sparse->counters.at("GFLOPS") / 1e9);
    std::printf("| dense step GFLOP/s | %.1f |\n", dense->counters.at("GFLOPS") / 1e9);
    if (kernel)
      std::printf("| propagation kernel GFLOP/s (k = 26 active rows, 27%% fill, P = 24000 as in the step) | %.1f |\n",
                  kernel->counters.at("GFLOPS") / 1e9);
    if (kernel_cached)
      std::printf("| same kernel with P = 2000 (M fits in L2) GFLOP/s | %.1f |\n", kernel_cached->counters.at("GFLOPS") / 1e9);
    if (gemm) std::printf("| Eigen sgemm 512 GFLOP/s | %.1f |\n", gemm->counters.at("GFLOPS") / 1e9);
    if (gemm && kernel)
      std::printf("| kernel / sgemm | %.0f%% |\n", 100.0 * kernel->counters.at("GFLOPS") / gemm->counters.at("GFLOPS"));
    if (gemm)
      std::printf("| sparse step / sgemm | %.0f%% |\n", 100.0 * sparse->counters.at("GFLOPS") / gemm->counters.at("GFLOPS"));
    const Entry* stream = exact("BM_InfluenceStream/24000");
    if (early_late)
      std::printf("| default step early (steps 10-210) / late (after 20 000 steps) | %.3f ms / %.3f ms: late/early %.2f (target <= 1.15) |\n",
                  early_late->counters.at("early_seconds") * 1e3, early_late->counters.at("late_seconds") * 1e3,
                  early_late->counters.at("late_over_early"));
    if (one_thread && two_threads)
      std::printf("| step on 1 / 2 threads | %.3f ms / %.3f ms: %.2fx faster on 2 (target >= 1.6) |\n",
                  one_thread->seconds * 1e3, two_threads->seconds * 1e3, one_thread->seconds / two_threads->seconds);
    if (one_thread && stream)
      std::printf("| 1-thread step / M-streaming floor | %.2f (target <= 1.6) |\n", one_thread->seconds / stream->seconds);
    if (stream && kernel) {
      std::printf("| read + write of a 256 x 24000 M once (bandwidth floor of a step) | %.3f ms (%.1f GB/s) |\n",
                  stream->seconds * 1e3, stream->counters.at("GBps") / 1e9);
      std::printf("| kernel time / bandwidth floor | %.2f |\n", kernel->seconds / stream->seconds);
      std::printf("| sparse step time / bandwidth floor | %.2f |\n", sparse->seconds / stream->seconds);
    }
  }

 private:
  struct Entry {
    double seconds = 0;
    std::map<std::string, double> counters;
  };
  std::map<std::string, Entry> entries_;
};

/// The console options Google Benchmark's own display would use (--benchmark_color,
/// --benchmark_counters_tabular): a custom display reporter does not get them by itself.
benchmark::ConsoleReporter::OutputOptions console_options(int argc, char** argv) {
  const std::string color = bench::flag_value(argc, argv, "benchmark_color", "auto");
  const char* term = std::getenv("TERM");
  const bool colored = color == "auto" ? isatty(fileno(stdout)) && term && std::strcmp(term, "dumb") != 0 : bench::truthy(color);
  int options = benchmark::ConsoleReporter::OO_None;
  if (colored) options |= benchmark::ConsoleReporter::OO_Color;
  if (bench::truthy(bench::flag_value(argc, argv, "benchmark_counters_tabular", "false")))
    options |= benchmark::ConsoleReporter::OO_Tabular;
  return benchmark::ConsoleReporter::OutputOptions(options);
}

}  // namespace

int main(int argc, char** argv) {
  // The timed rows' minimum time: 2 s unless the command line or BENCHMARK_MIN_TIME sets one.
  std::vector<char*> args = bench::with_default_min_time(std::vector<char*>(argv, argv + argc), "2");
  int count = int(args.size());
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  // The ratio table extends the console display; any other format gets Google Benchmark's own
  // reporter (and --benchmark_out its file reporter either way).
  if (bench::flag_value(argc, argv, "benchmark_format", "console") == "console") {
    RatioReporter reporter(console_options(argc, argv));
    benchmark::RunSpecifiedBenchmarks(&reporter);
  } else {
    benchmark::RunSpecifiedBenchmarks();
  }
  benchmark::Shutdown();
  return 0;
}
