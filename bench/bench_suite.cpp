// The cost-curve suite: time and memory per step of exact sparse RTRL, dense RTRL, SnAp-1/2 and
// BPTT (dense and event-sparse) over hidden size, backward activity, weight density and (for
// BPTT) sequence length; and online learning (online/...): an exact gradient at every step by RTRL
// or by BPTT over the whole history, truncated BPTT and UORO. One iteration of an RTRL benchmark is one step (step + gradient
// readout); one iteration of a BPTT benchmark is a whole sequence, reported per step.
//
// Run through bench/run_suite.py (writes JSON, the report and the plots), or directly:
//   build/bench/bench/bench_suite [--quick|--full|--smoke] [google-benchmark flags]
// --smoke runs one tiny point of each family with one iteration: what the tests run. Rows
// without a fixed iteration count run for --benchmark_min_time, by default 0.2 s (--quick) or
// 1 s (--full).
#include "bench_common.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>

using namespace sparse_rtrl;
using S = float;

namespace {

constexpr Index kInputs = 32;
constexpr double kMaxInfluenceBytes = 4e9;  // skip points whose M would exceed ~4 GB
const TriangularSurrogate<S> kSurrogate(S(1.0), S(0.1));  // narrow: silent rows skippable

enum class Mode { smoke, quick, full };

struct Network {
  ParameterMask mask;
  EgruParameters<S> params;
};

/// Networks are calibrated once per (n, activity, density) and shared by all algorithms.
const Network& network(Index n, double activity, double density) {
  static std::map<std::tuple<Index, double, double>, std::unique_ptr<Network>> cache;
  auto& slot = cache[{n, activity, density}];
  if (!slot) {
    auto mask = ParameterMask::random(n, kInputs, density, density, 1000 + std::uint64_t(n));
    auto params = bench::parameters_for_activity<S>(n, kInputs, activity, mask, kSurrogate.gamma(),
                                                    kSurrogate.eps(), 7 + std::uint64_t(n));
    slot = std::make_unique<Network>(Network{std::move(mask), std::move(params)});
  }
  return *slot;
}

double influence_bytes_for(Index n, Index columns) { return double(n) * double(columns) * double(sizeof(S)); }

void common_counters(benchmark::State& state, Index n, double density) {
  state.counters["n"] = double(n);
  state.counters["density"] = density;
  // Seconds per step: iterations are steps.
  state.counters["step_seconds"] = benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate |
                                                                                      benchmark::Counter::kInvert);
}

template <typename Learner>
void run_learner(benchmark::State& state, Learner& learner, Index n) {
  const bench::Mat<S> X = bench::inputs<S>(256, kInputs, 5);
  const Eigen::VectorXf g = Eigen::VectorXf::Constant(n, 0.01f);
  for (Index t = 0; t < 10; ++t) learner.step(X.row(t));  // past the start-up transient
  learner.reset_work();
  Index t = 10;
  for (auto _ : state) {
    learner.step(X.row(t % X.rows()));
    learner.accumulate_gradient(g);
    benchmark::ClobberMemory();
    ++t;
  }
  bench::set_work_counters(state, learner.total_work(), learner.influence_bytes());
  bench::set_phase_counters(state, learner.phase_times(), learner.total_work().steps);
}

/// algo: "sparse_rtrl", "dense_rtrl", "snap1", "snap2".
void bm_rtrl(benchmark::State& state, std::string algo, Index n, double activity, double density) {
  const Network& net = network(n, activity, density);
  EgruCell<S> cell(net.params, {true}, kSurrogate);
  if (algo == "sparse_rtrl") {
    Model<S> model(cell, net.mask);
    RtrlOptions options;
    options.time_phases = true;  // the per-phase breakdown counters (bench_common.hpp)
    Rtrl<S> rtrl(model, options);
    run_learner(state, rtrl, n);
  } else if (algo == "dense_rtrl") {
    const Index P = InfluenceLayout(ParameterMask::dense(n, kInputs), true).columns();
    if (influence_bytes_for(n, P) > kMaxInfluenceBytes) {
      state.SkipWithError(("influence matrix would need " + std::to_string(influence_bytes_for(n, P) / 1e9) +
                           " GB > 4 GB").c_str());
      return;
    }
    Model<S> model(cell);
    Rtrl<S> rtrl(model, RtrlOptions{false});  // every parameter, every row
    run_learner(state, rtrl, n);
  } else {
    Model<S> model(cell, net.mask);
    Snap<S> snap(model, algo == "snap1" ? 1 : 2);
    run_learner(state, snap, n);
  }
  common_counters(state, n, density);
}

/// The sparse step at growing n (one thread), beside the cost of streaming its M once: reading
/// and writing an n x P_kept matrix, which every exact step must do at least (each row is decayed,
/// most receive coupling). Counters: step_seconds, GFLOPS of counted work, stream_seconds and
/// over_floor = step / stream, all from this run.
void bm_scale(benchmark::State& state, Index n, double activity, double density) {
  const Network& net = network(n, activity, density);
  Model<S> model(EgruCell<S>(net.params, {true}, kSurrogate), net.mask);
  RtrlOptions options;
  options.time_phases = true;
  Rtrl<S> rtrl(model, options);
  run_learner(state, rtrl, n);
  common_counters(state, n, density);
  // The floor, measured now on a matrix of the same shape (a few passes, the fastest kept).
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> M =
      Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>::Constant(n, rtrl.layout().columns(), 1.0f);
  double best = 1e300;
  for (int pass = 0; pass < 5; ++pass) {
    const auto start = std::chrono::steady_clock::now();
    M *= S(0.999);
    benchmark::DoNotOptimize(M.data());
    benchmark::ClobberMemory();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  state.counters["stream_seconds"] = best;
  state.counters["stream_GBps"] = 2.0 * double(M.size()) * sizeof(S) / best / 1e9;
  // Per-iteration time is what step_seconds reports; recompute it here for the ratio.
  state.counters["over_floor"] = benchmark::Counter(double(state.iterations()) * best,
                                                    benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

/// B streams over one shared model (RtrlStreams), one iteration = one step of every stream and
/// its gradient readout. Counters: stream_step_seconds (time per stream-step: throughput),
/// streams, threads, state_bytes (all B influence matrices).
void bm_streams(benchmark::State& state, Index n, double activity, double density, Index B, int threads) {
  const Network& net = network(n, activity, density);
  Model<S> model(EgruCell<S>(net.params, {true}, kSurrogate), net.mask);
  RtrlOptions options;
  options.threads = threads;
  RtrlStreams<S> streams(model, B, options);
  const bench::Mat<S> X = bench::inputs<S>(256, kInputs, 5);
  const bench::Mat<S> G = bench::Mat<S>::Constant(B, n, 0.01f);
  bench::Mat<S> Xb(B, kInputs);
  auto inputs_at = [&](Index t) {  // stream b reads the input sequence at an offset of its own
    for (Index b = 0; b < B; ++b) Xb.row(b) = X.row((t + 29 * b) % X.rows());
  };
  for (Index t = 0; t < 10; ++t) {
    inputs_at(t);
    streams.step(Xb);
  }
  streams.reset_work();
  Index t = 10;
  for (auto _ : state) {
    inputs_at(t);
    streams.step(Xb);
    streams.accumulate_gradient(G);
    benchmark::ClobberMemory();
    ++t;
  }
  bench::set_work_counters(state, streams.total_work(), streams.influence_bytes());
  common_counters(state, n, density);
  // set_work_counters counts per stream-step; an iteration here is B of them.
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * double(state.counters["fma"]) * double(B) * double(state.iterations()),
                                                benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.counters["streams"] = double(B);
  state.counters["threads"] = double(threads);
  state.counters["stream_step_seconds"] = benchmark::Counter(double(state.iterations()) * double(B),
                                                             benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

/// Two stacked layers of n units (stacked-EGRU issue): exact sparse RTRL through depth, one
/// iteration = one step + a loss on the top layer. Layer 1 reads layer 0's events and is
/// calibrated on them (its measured activity is reported). Counters:
/// step_seconds, state_bytes (M^{0,0}, M^{1,0}, M^{1,1}), activity_l0/l1, cross_fma_share (of
/// the counted multiply-adds, B^1 D^0 and J^1 M^{1,0}: everything in the cross-layer block) and
/// cross_time_share = 1 - (t(layer 0 alone) + t(layer 1 alone on layer 0's outputs)) / t(stack),
/// the three timed in this run.
void bm_stack(benchmark::State& state, Index n, double activity, double density) {
  const Network& net0 = network(n, activity, density);
  // Layer 1's input is layer 0's output (n wide): its own calibrated network, d = n.
  static std::map<Index, std::unique_ptr<Network>> upper;
  auto& slot = upper[n];
  if (!slot) {
    // Calibrated on what it will read: layer 0's event outputs (random inputs would leave it
    // silent on sparse events).
    Model<S> lower(EgruCell<S>(net0.params, {true}, kSurrogate), net0.mask);
    Bptt<S> run(lower);
    const bench::Mat<S> Y0 = run.forward(bench::inputs<S>(60, kInputs, 5));
    auto mask = ParameterMask::random(n, n, density, density, 2000 + std::uint64_t(n));
    auto params = bench::parameters_for_activity<S>(n, n, activity, mask, kSurrogate.gamma(), kSurrogate.eps(),
                                                    17 + std::uint64_t(n), &Y0);
    slot = std::make_unique<Network>(Network{std::move(mask), std::move(params)});
  }
  const Network& net1 = *slot;
  std::vector<EgruCell<S>> cells = {EgruCell<S>(net0.params, {true}, kSurrogate), EgruCell<S>(net1.params, {true}, kSurrogate)};
  Model<S> stack(cells, {net0.mask, net1.mask});
  Rtrl<S> rtrl(stack);
  const bench::Mat<S> X = bench::inputs<S>(256, kInputs, 5);
  const Eigen::VectorXf g = Eigen::VectorXf::Constant(n, 0.01f);
  for (Index t = 0; t < 10; ++t) rtrl.step(X.row(t));
  rtrl.reset_work();
  // Layer 0's outputs over the timed steps, for the lone layer 1.
  const Index warm = 10;
  std::vector<Eigen::VectorXf> y0;
  Index t = warm;
  for (auto _ : state) {
    rtrl.step(X.row(t % X.rows()));
    rtrl.accumulate_gradient(g);
    benchmark::ClobberMemory();
    if (y0.size() < 512) y0.push_back(rtrl.output(0));
    ++t;
  }
  const double iterations = double(state.iterations());
  bench::set_work_counters(state, rtrl.total_work(), rtrl.influence_bytes());
  common_counters(state, n, density);
  const WorkCounters& w1 = rtrl.total_work(1);
  const WorkCounters& w0 = rtrl.total_work(0);
  state.counters["activity_l0"] = 1.0 - w0.backward_sparsity();
  state.counters["activity_l1"] = 1.0 - w1.backward_sparsity();
  // Layer 1's multiply-adds on layer 0's columns: J^1 over them and B^1 D^0.
  const double cross = double(w1.cross_layer_fma) + double(w1.coupling_nonzeros + w1.units) *
                                                        double(rtrl.column_offset(1));
  state.counters["cross_fma_share"] = cross / double(std::max<std::uint64_t>(rtrl.total_work().propagation_fma + rtrl.total_work().readout_fma, 1));
  // The lone layers, timed over the same number of steps (outside Google Benchmark's timer).
  Model<S> only0(cells[0], net0.mask), only1(cells[1], net1.mask);
  Rtrl<S> r0(only0), r1(only1);
  const Index steps = Index(std::min<double>(iterations, 512));
  auto time_steps = [&](auto&& body) {
    const auto start = std::chrono::steady_clock::now();
    for (Index k = 0; k < steps; ++k) body(k);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / double(steps);
  };
  for (Index k = 0; k < warm; ++k) r0.step(X.row(k));
  const double t0 = time_steps([&](Index k) {
    r0.step(X.row((warm + k) % X.rows()));
    r0.accumulate_gradient(Eigen::VectorXf::Zero(n));
  });
  for (Index k = 0; k < warm; ++k) r1.step(y0[std::size_t(k) % y0.size()]);
  const double t1 = time_steps([&](Index k) {
    r1.step(y0[std::size_t(k) % y0.size()]);
    r1.accumulate_gradient(g);
  });
  const double t_stack = time_steps([&](Index k) {
    rtrl.step(X.row((t + k) % X.rows()));
    rtrl.accumulate_gradient(g);
  });
  state.counters["layer_seconds_sum"] = t0 + t1;
  state.counters["stack_seconds_check"] = t_stack;
  state.counters["cross_time_share"] = t_stack > 0 ? std::max(0.0, 1.0 - (t0 + t1) / t_stack) : 0.0;
  state.counters["layers"] = 2;
}

/// One iteration: forward and backward over T steps; counters per step.
void bm_bptt(benchmark::State& state, bool sparse, Index n, Index T, double activity, double density) {
  const Network& net = network(n, activity, density);
  Model<S> model(EgruCell<S>(net.params, {true}, kSurrogate), net.mask);
  Bptt<S> bptt(model, BpttOptions{sparse});
  const bench::Mat<S> X = bench::inputs<S>(T, kInputs, 5);
  const bench::Mat<S> G = bench::Mat<S>::Constant(T, n, 0.01f);
  double active = 0, events = 0;
  for (auto _ : state) {
    bptt.forward(X);
    auto g = bptt.backward(G);
    benchmark::DoNotOptimize(g.R.data());
    benchmark::ClobberMemory();
  }
  for (Index t = 0; t < T; ++t) {
    active += double((bptt.step_cache(t).s_prev.array() != S(0)).count());
    events += double((bptt.step_cache(t).o_prev.array() != S(0)).count());
  }
  const auto& w = bptt.work();
  state.counters["n"] = double(n);
  state.counters["T"] = double(T);
  state.counters["density"] = density;
  state.counters["activity"] = active / double(T * n);
  state.counters["event_rate"] = events / double(T * n);
  state.counters["fma"] = double(w.forward_fma + w.backward_fma) / double(T);
  state.counters["state_bytes"] = double(bptt.history_bytes());
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * double(w.forward_fma + w.backward_fma) * double(state.iterations()),
                                                benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.counters["step_seconds"] = benchmark::Counter(double(T) * double(state.iterations()),
                                                      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

/// The C++ twin of bench/python_overhead.py's python/sparse_rtrl rows (Python-bindings issue): the
/// same step in double, the bindings' scalar, on the network that script builds (the same mask and
/// seeds, thresholds calibrated in double), one iteration = step + gradient readout. Counters as
/// the size rows, plus theta (the calibrated threshold, to check that both sides built one network).
void bm_python_twin(benchmark::State& state, Index n, double activity, double density) {
  using D = double;
  const TriangularSurrogate<D> surrogate(D(kSurrogate.gamma()), D(kSurrogate.eps()));
  // Calibrated once per size (Google Benchmark calls this function several times).
  static std::map<Index, std::pair<ParameterMask, EgruParameters<D>>> cache;
  auto found = cache.find(n);
  if (found == cache.end()) {
    auto mask = ParameterMask::random(n, kInputs, density, density, 1000 + std::uint64_t(n));
    auto params = bench::parameters_for_activity<D>(n, kInputs, activity, mask, surrogate.gamma(), surrogate.eps(),
                                                    7 + std::uint64_t(n));
    found = cache.emplace(n, std::make_pair(std::move(mask), std::move(params))).first;
  }
  const ParameterMask& mask = found->second.first;
  const EgruParameters<D>& params = found->second.second;
  Model<D> model(EgruCell<D>(params, {true}, surrogate), mask);
  Rtrl<D> rtrl(model);
  const bench::Mat<D> X = bench::inputs<D>(256, kInputs, 5);
  const Eigen::VectorXd g = Eigen::VectorXd::Constant(n, 0.01);
  for (Index t = 0; t < 10; ++t) rtrl.step(X.row(t));
  rtrl.reset_work();
  Index t = 10;
  for (auto _ : state) {
    rtrl.step(X.row(t % X.rows()));
    rtrl.accumulate_gradient(g);
    benchmark::ClobberMemory();
    ++t;
  }
  bench::set_work_counters(state, rtrl.total_work(), rtrl.influence_bytes());
  common_counters(state, n, density);
  state.counters["theta"] = params.theta(0);
}

/// Saving and loading a checkpoint (io/checkpoint.hpp) of a model and its Rtrl learner, whose
/// n x P_kept influence matrix is most of the file. One iteration = one save (temporary file,
/// fsync, rename) and one load (zip structure checked, every byte read and CRC-checked into
/// staging copies, then swapped in). Counters: save_seconds, load_seconds (per iteration, after
/// one untimed save and load), bytes (the file), read_seconds (reading the file's bytes once with
/// fread into a buffer already touched, from the page cache since it was just written: the floor
/// a load cannot beat), first_load_seconds (the untimed first load: its staging copy lands on
/// memory the process never touched, so it pays the page faults; every later load reuses memory
/// the last one freed), first_read_seconds (the like-for-like floor of a first load: the file
/// read once with fread into a buffer the process never touched, taken just before the first
/// load and kept alive through it, so neither reuses the other's pages) and state_bytes (the
/// influence matrix).
void bm_checkpoint(benchmark::State& state, Index n, double activity, double density) {
  const Network& net = network(n, activity, density);
  Model<S> model(EgruCell<S>(net.params, {true}, kSurrogate), net.mask);
  Rtrl<S> rtrl(model);
  const bench::Mat<S> X = bench::inputs<S>(16, kInputs, 5);
  const Eigen::VectorXf g = Eigen::VectorXf::Constant(n, 0.01f);
  for (Index t = 0; t < X.rows(); ++t) {  // a state and gradient that are not zero
    rtrl.step(X.row(t));
    rtrl.accumulate_gradient(g);
  }
  io::Checkpoint checkpoint;
  checkpoint.add(model).add("rtrl", rtrl);
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("sparse_rtrl_bench_checkpoint_" + std::to_string(std::uintptr_t(&state)) + ".npz"))
                               .string();
  using Clock = std::chrono::steady_clock;
  const auto seconds = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  checkpoint.save(path);
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    state.SkipWithError("cannot open the checkpoint");
    return;
  }
  std::fseek(f, 0, SEEK_END);
  const std::size_t bytes = std::size_t(std::ftell(f));
  std::unique_ptr<char[]> buffer(new char[bytes]);  // not touched: new char[] leaves it uninitialised
  std::rewind(f);
  const auto read0 = Clock::now();
  if (std::fread(buffer.get(), 1, bytes, f) != bytes) state.SkipWithError("short read of the checkpoint");
  const double first_read = seconds(read0, Clock::now());
  const auto first = Clock::now();
  checkpoint.load(path);
  const double first_load = seconds(first, Clock::now());
  double save = 0, load = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    checkpoint.save(path);
    const auto t1 = Clock::now();
    checkpoint.load(path);
    const auto t2 = Clock::now();
    save += seconds(t0, t1);
    load += seconds(t1, t2);
  }
  // The floor: the file's bytes read once into the buffer touched above (best of two passes).
  double read = 1e300;
  for (int pass = 0; pass < 2; ++pass) {
    std::rewind(f);
    const auto t0 = Clock::now();
    const std::size_t got = std::fread(buffer.get(), 1, bytes, f);
    read = std::min(read, seconds(t0, Clock::now()));
    if (got != bytes) state.SkipWithError("short read of the checkpoint");
  }
  std::fclose(f);
  std::remove(path.c_str());
  const double iterations = double(state.iterations());
  state.counters["save_seconds"] = save / iterations;
  state.counters["load_seconds"] = load / iterations;
  state.counters["bytes"] = double(bytes);
  state.counters["read_seconds"] = read;
  state.counters["first_load_seconds"] = first_load;
  state.counters["first_read_seconds"] = first_read;
  state.counters["state_bytes"] = double(rtrl.influence_bytes());
  state.counters["n"] = double(n);
  state.counters["density"] = density;
}

// ---- Online learning (issue 24): the cost of a gradient at every step. ----

/// Exact gradients at every step, at step t of a sequence: exact sparse RTRL (its step costs the
/// same at any t) against BPTT over the whole history so far (event-sparse, exact: at step t one
/// backward pass through all t steps, plus the step's share of the forward pass). One iteration
/// times a few of each, not t of them. Counters: rtrl_step_seconds (mean of 50 steps after 10),
/// bptt_history_step_seconds (forward of t steps / t + the mean of a few backward passes through
/// the t steps), the same as CPU time (*_cpu_seconds), rtrl_state_bytes (M), bptt_state_bytes
/// (the t stored step caches), t.
void bm_online_exact(benchmark::State& state, Index n, double activity, double density, Index T, int backward_reps) {
  const Network& net = network(n, activity, density);
  Model<S> model(EgruCell<S>(net.params, {true}, kSurrogate), net.mask);
  const bench::Mat<S> X = bench::inputs<S>(std::max<Index>(T, 60), kInputs, 5);
  const Eigen::VectorXf g = Eigen::VectorXf::Constant(n, 0.01f);
  bench::Mat<S> G = bench::Mat<S>::Zero(T, n);
  G.row(T - 1) = g.transpose();  // the loss of step t; the pass still runs through all t steps
  // Wall-clock and CPU time of the process (one thread): on a shared, loaded machine the CPU
  // time is what the work costs, the wall-clock time what a user waits.
  struct Stamp {
    std::chrono::steady_clock::time_point wall = std::chrono::steady_clock::now();
    std::clock_t cpu = std::clock();
  };
  const auto wall = [](const Stamp& a, const Stamp& b) { return std::chrono::duration<double>(b.wall - a.wall).count(); };
  const auto cpu = [](const Stamp& a, const Stamp& b) { return double(b.cpu - a.cpu) / CLOCKS_PER_SEC; };
  double rtrl_seconds = 0, bptt_seconds = 0, rtrl_cpu = 0, bptt_cpu = 0, rtrl_bytes = 0, bptt_bytes = 0;
  for (auto _ : state) {
    Rtrl<S> rtrl(model);
    for (Index t = 0; t < 10; ++t) rtrl.step(X.row(t));
    const Index steps = 50;
    const Stamp r0;
    for (Index t = 10; t < 10 + steps; ++t) {
      rtrl.step(X.row(t));
      rtrl.accumulate_gradient(g);
    }
    const Stamp r1;
    rtrl_seconds = wall(r0, r1) / double(steps);
    rtrl_cpu = cpu(r0, r1) / double(steps);
    rtrl_bytes = double(rtrl.influence_bytes());
    Bptt<S> bptt(model, BpttOptions{true});
    const Stamp f0;
    bptt.forward(X.topRows(T));
    const Stamp f1;
    for (int rep = 0; rep < backward_reps; ++rep) {
      auto grad = bptt.backward(G);
      benchmark::DoNotOptimize(grad.R.data());
    }
    const Stamp b1;
    bptt_seconds = wall(f0, f1) / double(T) + wall(f1, b1) / double(backward_reps);
    bptt_cpu = cpu(f0, f1) / double(T) + cpu(f1, b1) / double(backward_reps);
    bptt_bytes = double(bptt.history_bytes());
    benchmark::ClobberMemory();
  }
  state.counters["rtrl_step_cpu_seconds"] = rtrl_cpu;
  state.counters["bptt_history_step_cpu_seconds"] = bptt_cpu;
  state.counters["n"] = double(n);
  state.counters["t"] = double(T);
  state.counters["density"] = density;
  state.counters["rtrl_step_seconds"] = rtrl_seconds;
  state.counters["bptt_history_step_seconds"] = bptt_seconds;
  state.counters["rtrl_state_bytes"] = rtrl_bytes;
  state.counters["bptt_state_bytes"] = bptt_bytes;
}

/// One iteration = one online step (step + the loss's gradient) of truncated BPTT (form
/// every_step: the loss back-propagated through the last k steps) or UORO, after a warm-up that
/// fills the window. Counters: step_seconds, state_bytes (the window; UORO's pair s~, theta~).
template <typename Learner>
void run_online(benchmark::State& state, Learner& learner, Index n, Index warm, std::size_t bytes) {
  const bench::Mat<S> X = bench::inputs<S>(256, kInputs, 5);
  const Eigen::VectorXf g = Eigen::VectorXf::Constant(n, 0.01f);
  for (Index t = 0; t < warm; ++t) {
    learner.step(X.row(t % X.rows()));
    learner.accumulate_gradient(g);
  }
  Index t = warm;
  for (auto _ : state) {
    learner.step(X.row(t % X.rows()));
    learner.accumulate_gradient(g);
    benchmark::ClobberMemory();
    ++t;
  }
  common_counters(state, n, 0);
  state.counters["state_bytes"] = double(bytes);
}

void bm_online_tbptt(benchmark::State& state, Index n, double activity, double density, Index k) {
  const Network& net = network(n, activity, density);
  Model<S> model(EgruCell<S>(net.params, {true}, kSurrogate), net.mask);
  TruncatedBptt<S> tbptt(model, {k, TruncationForm::every_step});
  run_online(state, tbptt, n, k + 10, tbptt.window_bytes());
  state.counters["density"] = density;
  state.counters["k"] = double(k);
}

void bm_online_uoro(benchmark::State& state, Index n, double activity, double density) {
  const Network& net = network(n, activity, density);
  Model<S> model(EgruCell<S>(net.params, {true}, kSurrogate), net.mask);
  Uoro<S> uoro(model, {1, 1e-7});
  run_online(state, uoro, n, 10, uoro.state_bytes());
  state.counters["density"] = density;
}

/// The online rows: n = 256 (smoke: 16), activity and weight density 0.1; fixed iteration
/// counts, so that the group takes well under a minute.
void register_online(Mode mode) {
  const bool smoke = mode == Mode::smoke;
  const Index n = smoke ? 16 : 256;
  const std::string point = "/n:" + std::to_string(n) + "/act:0.1/dens:0.1";
  for (Index T : smoke ? std::vector<Index>{10, 20} : std::vector<Index>{100, 1000, 10000}) {
    const int reps = T <= 100 ? 20 : (T <= 1000 ? 5 : 2);
    benchmark::RegisterBenchmark(("online/exact" + point + "/t:" + std::to_string(T)).c_str(), bm_online_exact, n, 0.1,
                                 0.1, T, reps)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->Iterations(1);
  }
  for (Index k : smoke ? std::vector<Index>{1, 3} : std::vector<Index>{1, 10, 100})
    benchmark::RegisterBenchmark(("online/tbptt" + point + "/k:" + std::to_string(k)).c_str(), bm_online_tbptt, n, 0.1,
                                 0.1, k)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->Iterations(smoke ? 1 : (k >= 100 ? 100 : 400));
  benchmark::RegisterBenchmark(("online/uoro" + point).c_str(), bm_online_uoro, n, 0.1, 0.1)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->Iterations(smoke ? 1 : 400);
}

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

benchmark::internal::Benchmark* limit(benchmark::internal::Benchmark* b, Mode mode, double step_fma) {
  b->Unit(benchmark::kMillisecond)->UseRealTime();
  if (mode == Mode::smoke) return b->Iterations(1);
  // Expensive points: a fixed small number of steps instead of Google Benchmark's time target.
  if (step_fma > 5e9) return b->Iterations(mode == Mode::quick ? 1 : 3);
  if (step_fma > 5e8) return b->Iterations(mode == Mode::quick ? 3 : 10);
  return b;  // Google Benchmark's time target: --benchmark_min_time, by default the mode's (main)
}

/// Rough multiply-adds per step, only to size iteration counts.
double rough_fma(const std::string& algo, Index n, double activity, double density) {
  const double P_dense = 3.0 * n * kInputs + 3.0 * n * n + 7.0 * n;
  const double fill = 1 - std::pow(1 - density, 3);
  if (algo == "dense_rtrl") return double(n) * n * P_dense;
  if (algo == "sparse_rtrl") return (n * activity * n * fill + n) * (density * (P_dense - 7.0 * n) + 7.0 * n);
  return 0;
}

void register_all(Mode mode) {
  std::vector<Index> sizes = {64, 128, 256, 512, 1024};
  if (mode == Mode::smoke) sizes = {16};
  const double act = 0.1, dens = 0.1;
  auto rtrl = [&](const std::string& sweep, const std::string& algo, Index n, double a, double d) {
    if (algo == "dense_rtrl" && mode == Mode::quick && n >= 512) return;  // seconds per step
    const std::string name = sweep + "/" + algo + "/n:" + std::to_string(n) + "/act:" + fmt(a) + "/dens:" + fmt(d);
    limit(benchmark::RegisterBenchmark(name.c_str(), bm_rtrl, algo, n, a, d), mode, rough_fma(algo, n, a, d));
  };
  auto bptt = [&](const std::string& sweep, bool sparse, Index n, Index T, double a, double d) {
    const std::string name = sweep + "/" + (sparse ? "sparse_bptt" : "dense_bptt") + "/n:" + std::to_string(n) +
                             "/T:" + std::to_string(T) + "/act:" + fmt(a) + "/dens:" + fmt(d);
    limit(benchmark::RegisterBenchmark(name.c_str(), bm_bptt, sparse, n, T, a, d), mode, 0);
  };
  // Hidden size, with the n sweep's complexity fits done by the report script (O(n^k) slopes).
  for (Index n : sizes) {
    for (const char* algo : {"sparse_rtrl", "dense_rtrl", "snap1", "snap2"}) rtrl("size", algo, n, act, dens);
    for (bool sparse : {false, true}) bptt("size", sparse, n, mode == Mode::smoke ? 4 : 100, act, dens);
  }
  // The C++ twins of the Python rows (bench/python_overhead.py runs them beside its own).
  for (Index m : mode == Mode::smoke ? std::vector<Index>{16} : std::vector<Index>{64, 256}) {
    const std::string name = "python_twin/sparse_rtrl/n:" + std::to_string(m) + "/act:" + fmt(act) + "/dens:" + fmt(dens);
    limit(benchmark::RegisterBenchmark(name.c_str(), bm_python_twin, m, act, dens), mode, 0);
  }
  register_online(mode);
  if (mode == Mode::smoke) {  // one tiny point of the stack and streams families too
    limit(benchmark::RegisterBenchmark("stack/sparse_rtrl/layers:2/n:16/act:0.1/dens:0.5", bm_stack, Index(16), 0.1, 0.5),
          mode, 0);
    limit(benchmark::RegisterBenchmark("streams/sparse_rtrl/n:16/act:0.1/dens:0.5/streams:3/threads:2", bm_streams,
                                       Index(16), 0.1, 0.5, Index(3), 2),
          mode, 0);
    limit(benchmark::RegisterBenchmark("io/checkpoint/n:16/act:0.1/dens:0.5", bm_checkpoint, Index(16), 0.1, 0.5), mode, 0);
    return;
  }
  const Index n = 256;
  for (double a : {0.02, 0.05, 0.1, 0.25, 0.5, 1.0}) rtrl("activity", "sparse_rtrl", n, a, dens);
  for (double a : {0.05, 0.1, 0.5, 1.0}) bptt("activity", true, n, 100, a, dens);
  for (double d : {1.0, 0.5, 0.1, 0.05}) {
    rtrl("density", "sparse_rtrl", n, act, d);
    bptt("density", true, n, 100, act, d);
  }
  rtrl("density", "dense_rtrl", n, act, 1.0);
  // The goal points of the benchmark issue: 90/90 and 95/95 (backward sparsity / weight sparsity).
  rtrl("goal", "sparse_rtrl", n, 0.1, 0.1);
  rtrl("goal", "sparse_rtrl", n, 0.05, 0.05);
  // Kernel efficiency as n grows (robustness issue): step vs the M-streaming floor, one thread.
  for (Index m : {256, 512, 1024}) {
    const std::string name = "scale/sparse_rtrl/n:" + std::to_string(m) + "/act:0.05/dens:0.05";
    limit(benchmark::RegisterBenchmark(name.c_str(), bm_scale, m, 0.05, 0.05), mode,
          rough_fma("sparse_rtrl", m, 0.05, 0.05));
  }
  // Two stacked 256-unit layers (stacked-EGRU issue).
  limit(benchmark::RegisterBenchmark("stack/sparse_rtrl/layers:2/n:256/act:0.1/dens:0.1", bm_stack, Index(256), 0.1, 0.1),
        mode, 3 * rough_fma("sparse_rtrl", 256, 0.1, 0.1));
  // Many streams over one model (many-streams issue): throughput on 1 and 2 threads.
  for (int threads : {1, 2}) {
    const std::string name = "streams/sparse_rtrl/n:256/act:0.1/dens:0.1/streams:8/threads:" + std::to_string(threads);
    limit(benchmark::RegisterBenchmark(name.c_str(), bm_streams, Index(256), 0.1, 0.1, Index(8), threads), mode,
          8 * rough_fma("sparse_rtrl", 256, 0.1, 0.1));
  }
  // Checkpoints (checkpoint issue): save and load of a 1024-unit learner, its M about 0.7 GB.
  limit(benchmark::RegisterBenchmark("io/checkpoint/n:1024/act:0.05/dens:0.05", bm_checkpoint, Index(1024), 0.05, 0.05),
        mode, 1e10);  // seconds per iteration: 1 (quick) or 3 (full) iterations
  for (Index T : {10, 100, 1000, 10000}) {
    bptt("length", false, n, T, act, dens);
    bptt("length", true, n, T, act, dens);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Mode mode = Mode::quick;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) mode = Mode::quick;
    else if (std::strcmp(argv[i], "--full") == 0) mode = Mode::full;
    else if (std::strcmp(argv[i], "--smoke") == 0) mode = Mode::smoke;
    else args.push_back(argv[i]);
  }
  // The mode's minimum time per row (0.2 s quick, 1 s full) unless the command line or
  // BENCHMARK_MIN_TIME sets one; as a flag, not a per-row MinTime, so row names carry no
  // "/min_time:..." and a given --benchmark_min_time applies.
  if (mode != Mode::smoke) args = bench::with_default_min_time(args, mode == Mode::quick ? "0.2" : "1");
  int count = int(args.size());
  register_all(mode);
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
