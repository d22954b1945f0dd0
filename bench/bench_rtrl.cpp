// Sparse vs dense exact RTRL at n = 256, d = 32 with 90% weight sparsity and ~10% of influence
// rows active (s != 0), next to the machine's Eigen sgemm measured by the same binary.
//
// Run: bash cmake/dev.sh bench && build/bench/bench/bench_rtrl
// The closing table gives, from this run: time per step of both, their ratio, the ideal ratio
// from the work counters, the propagation kernel's GFLOP/s and sgemm's GFLOP/s.
#include "bench_common.hpp"

#include <sparse_rtrl/detail/propagate.hpp>

#include <cstdio>
#include <map>
#include <string>

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
}

void BM_SparseRtrlStep(benchmark::State& state) {
  Rtrl<S> rtrl(EgruCell<S>(sparse_params(), {true}, kSurrogate), sparse_mask());
  run_steps(state, rtrl);
}

// The same, with subnormal floats flushed (denormals.hpp): entries of long-silent rows of M
// decay into the subnormal range, where arithmetic is slow on many CPUs.
void BM_SparseRtrlStepFlushDenormals(benchmark::State& state) {
  ScopedFlushDenormals guard;
  Rtrl<S> rtrl(EgruCell<S>(sparse_params(), {true}, kSurrogate), sparse_mask());
  run_steps(state, rtrl);
}

void BM_DenseRtrlStep(benchmark::State& state) {
  // The same network (pruned weights are zero), with every parameter tracked and every row
  // multiplied: what RTRL costs without exploiting either sparsity.
  Rtrl<S> rtrl(EgruCell<S>(sparse_params(), {true}, kSurrogate), RtrlOptions{false});
  run_steps(state, rtrl);
}

// The propagation kernel alone on a coupling with the sparse benchmark's statistics.
void BM_PropagationKernel(benchmark::State& state) {
  const Index n = kUnits;
  const Index k = Index(state.range(0));        // active source rows
  const double fill = double(state.range(1)) / 100.0;  // fraction of (target, source) pairs
  const Index P = Index(state.range(2));
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> M =
      Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>::Random(n, P);
  detail::Coupling<S> C;
  C.reserve(n, n * n);
  detail::UniformRandom rng(9);
  for (Index a = 0; a < k; ++a) C.active.push_back(a * (n / k));
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
  Eigen::VectorXf decay = Eigen::VectorXf::Constant(n, 0.999f);
  std::vector<S> scratch(std::size_t(detail::propagation_scratch_size<S>(n)));
  for (auto _ : state) {
    detail::propagate_in_place(M.data(), n, P, P, decay.data(), C, scratch.data());
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

BENCHMARK(BM_SparseRtrlStep)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_SparseRtrlStepFlushDenormals)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_DenseRtrlStep)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_EigenSgemm)->Arg(512)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_InfluenceStream)->Arg(24000)->Unit(benchmark::kMillisecond);
// k = 26 active rows of 256, 27% of pairs coupled (1 - 0.9^3 for three 10%-dense gate masks),
// P = P_kept of the sparse benchmark (about 24k); and the dense case.
BENCHMARK(BM_PropagationKernel)->Args({26, 27, 24000})->Args({26, 27, 2000})->Args({26, 27, 256})->Args({256, 100, 24000})->Unit(benchmark::kMillisecond);

/// Prints the ratios of the runs above when they are done.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
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
    auto find = [&](const std::string& prefix) -> const Entry* {
      for (const auto& kv : entries_)
        if (kv.first.rfind(prefix, 0) == 0) return &kv.second;
      return nullptr;
    };
    const Entry* sparse = find("BM_SparseRtrlStep/");
    const Entry* sparse_ftz = find("BM_SparseRtrlStepFlushDenormals");
    const Entry* dense = find("BM_DenseRtrlStep");
    const Entry* gemm = find("BM_EigenSgemm");
    // Exact names: the map is sorted as strings, so a prefix would pick ".../2000" before ".../24000".
    auto exact = [&](const std::string& name) -> const Entry* {
      const auto it = entries_.find(name);
      return it == entries_.end() ? nullptr : &it->second;
    };
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
    if (sparse_ftz) {
      std::printf("| sparse RTRL time per step, subnormals flushed (ScopedFlushDenormals) | %.3f ms |\n",
                  sparse_ftz->seconds * 1e3);
      std::printf("| measured speedup dense / sparse with subnormals flushed | %.1fx (%.0f%% of ideal) |\n",
                  dense->seconds / sparse_ftz->seconds,
                  100.0 * (dense->seconds / sparse_ftz->seconds) / sparse_ftz->counters.at("ideal_ratio"));
    }
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

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
