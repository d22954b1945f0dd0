// The MPI rows of the benchmark suite (docs/distributed.md): the column-sharded learner
// (mpi::ShardedRtrl) at n = 1024, activity and weight density 0.05, one thread per rank, run
// under mpiexec by bench/run_suite.py once per rank count (1 and 2); each run adds one row,
// mpi/columns/n:1024/act:0.05/dens:0.05/ranks:R. One iteration is one step (step + gradient
// read-out on every rank, no message). Counters:
//   step_seconds              wall time per step of the slowest rank (the job's step time)
//   influence_bytes_per_rank  the largest rank's share of M (bytes)
//   cpu_seconds               CPU time per step of the busiest rank (its process CPU clock): the
//                             work per rank, which wall time shows only on an otherwise idle machine
//   gather_seconds            one gradient gather (MPI_Allgatherv of the P_kept columns): the
//                             per-update communication, once per optimizer update
//   ranks, columns            the rank count and P_kept
// Every rank runs the same fixed number of iterations (Google Benchmark's time target would
// let ranks disagree on how often to construct the learner, a collective); only rank 0 reports
// (the others' output and --benchmark_out are dropped).
//   mpiexec -n 2 build/bench/bench/bench_mpi [--quick|--full|--smoke] [google-benchmark flags]
#include "bench_common.hpp"

#include <sparse_rtrl/mpi.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

using namespace sparse_rtrl;
using S = float;

namespace {

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

constexpr Index kInputs = 32;
const TriangularSurrogate<S> kSurrogate(S(1.0), S(0.1));  // as bench_suite: silent rows skippable

void bm_columns(benchmark::State& state, Index n, double activity, double density) {
  const mpi::Communicator comm;
  // The network of bench_suite's rows of the same (n, activity, density): same seeds, same mask.
  auto mask = ParameterMask::random(n, kInputs, density, density, 1000 + std::uint64_t(n));
  auto params = bench::parameters_for_activity<S>(n, kInputs, activity, mask, kSurrogate.gamma(), kSurrogate.eps(),
                                                  7 + std::uint64_t(n));
  Model<S> model(EgruCell<S>(params, {true}, kSurrogate), mask);
  RtrlOptions options;
  options.time_phases = true;  // the cost model's inputs (docs/distributed.md): two clock reads per phase
  mpi::ShardedRtrl<S> learner(model, MPI_COMM_WORLD, options);
  const bench::Mat<S> X = bench::inputs<S>(256, kInputs, 5);
  const Eigen::VectorXf g = Eigen::VectorXf::Constant(n, 0.01f);
  for (Index t = 0; t < 10; ++t) learner.step(X.row(t));  // past the start-up transient
  Index t = 10;
  const PhaseTimes warm = learner.local().phase_times();  // the warm-up's, subtracted below
  comm.barrier();
  const auto start = std::chrono::steady_clock::now();
  const double cpu_start = process_cpu_seconds();
  for (auto _ : state) {
    learner.step(X.row(t % X.rows()));
    learner.accumulate_gradient(g);
    benchmark::ClobberMemory();
    ++t;
  }
  const double mine = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double cpu = process_cpu_seconds() - cpu_start;
  comm.barrier();
  const auto gather_start = std::chrono::steady_clock::now();
  benchmark::DoNotOptimize(learner.gradient_columns().data());
  const double gather = std::chrono::duration<double>(std::chrono::steady_clock::now() - gather_start).count();
  const std::vector<double> all =
      comm.allgather(std::vector<double>{mine, double(learner.influence_bytes()), gather, cpu});
  double slowest = 0, bytes = 0, gather_max = 0, cpu_max = 0;
  for (int r = 0; r < comm.size(); ++r) {
    slowest = std::max(slowest, all[std::size_t(4 * r)]);
    bytes = std::max(bytes, all[std::size_t(4 * r + 1)]);
    gather_max = std::max(gather_max, all[std::size_t(4 * r + 2)]);
    cpu_max = std::max(cpu_max, all[std::size_t(4 * r + 3)]);
  }
  bench::set_work_counters(state, learner.local().total_work(), learner.influence_bytes());
  state.counters["n"] = double(n);
  state.counters["density"] = density;
  state.counters["step_seconds"] = slowest / double(state.iterations());
  state.counters["influence_bytes_per_rank"] = bytes;
  state.counters["gather_seconds"] = gather_max;
  state.counters["cpu_seconds"] = cpu_max / double(state.iterations());
  state.counters["ranks"] = double(comm.size());
  state.counters["columns"] = double(learner.columns());
  state.counters["columns_per_rank"] = double(learner.column_end() - learner.column_begin());
  PhaseTimes timed = learner.local().phase_times();
  timed.forward -= warm.forward;
  timed.coupling -= warm.coupling;
  timed.propagation -= warm.propagation;
  timed.readout -= warm.readout;
  timed.other -= warm.other;
  bench::set_phase_counters(state, timed, std::uint64_t(state.iterations()));
}

/// Issue 23's row: B = 8 streams over the ranks as stream groups (grid R x 1), n = 256, activity
/// and density 0.1. One iteration: step(X) and accumulate_gradient(G) of all 8 streams (one int
/// exchanged per call, no other message). stream_step_seconds: the slowest rank's wall time per
/// iteration; gradient_sum_seconds: one ordered gradient sum (chained over the groups, then
/// broadcast: once per optimizer update).
void bm_streams(benchmark::State& state, Index n, double activity, double density, Index B) {
  const mpi::Communicator comm;
  auto mask = ParameterMask::random(n, kInputs, density, density, 1000 + std::uint64_t(n));
  auto params = bench::parameters_for_activity<S>(n, kInputs, activity, mask, kSurrogate.gamma(), kSurrogate.eps(),
                                                  7 + std::uint64_t(n));
  Model<S> model(EgruCell<S>(params, {true}, kSurrogate), mask);
  mpi::StreamGrid<S> learner(model, B, mpi::Grid{comm.size(), 1});
  std::vector<bench::Mat<S>> X;
  for (Index b = 0; b < 4; ++b) X.push_back(bench::inputs<S>(B, kInputs, 50 + std::uint64_t(b)));
  const bench::Mat<S> G = bench::Mat<S>::Constant(B, n, S(0.01));
  for (Index t = 0; t < 10; ++t) learner.step(X[std::size_t(t % 4)]);
  Index t = 10;
  comm.barrier();
  const auto start = std::chrono::steady_clock::now();
  const double cpu_start = process_cpu_seconds();
  for (auto _ : state) {
    learner.step(X[std::size_t(t % 4)]);
    learner.accumulate_gradient(G);
    benchmark::ClobberMemory();
    ++t;
  }
  const double mine = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double cpu = process_cpu_seconds() - cpu_start;
  comm.barrier();
  const auto sum_start = std::chrono::steady_clock::now();
  benchmark::DoNotOptimize(learner.gradient_columns().data());
  const double sum = std::chrono::duration<double>(std::chrono::steady_clock::now() - sum_start).count();
  const std::vector<double> all =
      comm.allgather(std::vector<double>{mine, double(learner.influence_bytes()), sum, cpu});
  double slowest = 0, bytes = 0, sum_max = 0, cpu_max = 0;
  for (int r = 0; r < comm.size(); ++r) {
    slowest = std::max(slowest, all[std::size_t(4 * r)]);
    bytes = std::max(bytes, all[std::size_t(4 * r + 1)]);
    sum_max = std::max(sum_max, all[std::size_t(4 * r + 2)]);
    cpu_max = std::max(cpu_max, all[std::size_t(4 * r + 3)]);
  }
  // CPU time per iteration of the busiest rank (includes MPI's polling while it waits in the
  // per-call int exchange): on a loaded machine the honest measure of a rank's own work.
  state.counters["cpu_seconds"] = cpu_max / double(state.iterations());
  state.counters["n"] = double(n);
  state.counters["streams"] = double(B);
  state.counters["stream_step_seconds"] = slowest / double(state.iterations());
  state.counters["influence_bytes_per_rank"] = bytes;
  state.counters["gradient_sum_seconds"] = sum_max;
  state.counters["ranks"] = double(comm.size());
  state.counters["columns"] = double(learner.columns());
}

/// The cost model's network probes (docs/distributed.md, "Planning past this machine"): the
/// median seconds of one MPI_Allgatherv of `values` floats in all (the gradient gather), and of
/// one ordered_sum of `values` floats per rank (the stream groups' sum), over 21 calls.
void bm_collective(benchmark::State& state, Index values, bool ordered) {
  const mpi::Communicator comm;
  const int R = comm.size();
  Eigen::VectorXf whole = Eigen::VectorXf::Constant(values, 1.0f), out;
  std::vector<int> counts(static_cast<std::size_t>(R), 0), displs(static_cast<std::size_t>(R), 0);
  for (int r = 0; r < R; ++r) {
    displs[std::size_t(r)] = int(values * r / R);
    counts[std::size_t(r)] = int(values * (r + 1) / R) - displs[std::size_t(r)];
  }
  const std::vector<const float*> parts{whole.data()};
  std::vector<double> times;
  for (auto _ : state) {
    comm.barrier();
    const auto start = std::chrono::steady_clock::now();
    if (ordered)
      mpi::ordered_sum<float>(comm, parts, values, out);
    else
      comm.allgatherv<float>(nullptr, counts[std::size_t(comm.rank())], whole.data(), counts.data(), displs.data());
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const std::vector<double> all = comm.allgather(std::vector<double>{median});
  state.counters["call_seconds"] = *std::max_element(all.begin(), all.end());
  state.counters["bytes"] = double(values) * sizeof(float);
  state.counters["ranks"] = double(R);
}

/// Discards everything: the reporter of ranks other than 0.
class NullReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  enum class Mode { smoke, quick, full } mode = Mode::quick;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) mode = Mode::quick;
    else if (std::strcmp(argv[i], "--full") == 0) mode = Mode::full;
    else if (std::strcmp(argv[i], "--smoke") == 0) mode = Mode::smoke;
    // Only rank 0 writes the output file.
    else if (rank != 0 && std::strncmp(argv[i], "--benchmark_out", 15) == 0) continue;
    else args.push_back(argv[i]);
  }
  const Index n = mode == Mode::smoke ? 64 : 1024;
  const std::string name = "mpi/columns/n:" + std::to_string(n) + "/act:0.05/dens:0.05/ranks:" + std::to_string(ranks);
  benchmark::RegisterBenchmark(name.c_str(), bm_columns, n, 0.05, 0.05)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->Iterations(mode == Mode::smoke ? 2 : mode == Mode::quick ? 40 : 200);
  const Index streams_n = mode == Mode::smoke ? 32 : 256;
  const std::string streams_name = "mpi/streams/n:" + std::to_string(streams_n) + "/act:0.1/dens:0.1/streams:8/ranks:" +
                                   std::to_string(ranks);
  benchmark::RegisterBenchmark(streams_name.c_str(), bm_streams, streams_n, 0.1, 0.1, Index(8))
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->Iterations(mode == Mode::smoke ? 2 : mode == Mode::quick ? 100 : 500);
  if (mode != Mode::smoke)
    for (const Index values : {Index(1), Index(1) << 10, Index(1) << 20})
      for (const bool ordered : {false, true}) {
        const std::string probe = std::string(ordered ? "mpi/ordered_sum" : "mpi/allgatherv") +
                                  "/values:" + std::to_string(values) + "/ranks:" + std::to_string(ranks);
        benchmark::RegisterBenchmark(probe.c_str(), bm_collective, values, ordered)
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime()
            ->Iterations(21);
      }
  int count = int(args.size());
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) {
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  if (rank == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    NullReporter quiet;
    benchmark::RunSpecifiedBenchmarks(&quiet);
  }
  benchmark::Shutdown();
  MPI_Finalize();
  return 0;
}
