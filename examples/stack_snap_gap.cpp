/// @file stack_snap_gap.cpp
/// @brief How far SnAp's gradient is from the exact one on a trained two-layer EGRU stack.
///
/// Training: a stack of two EGRU layers (32 units each; layer 1 reads layer 0's events) learns
/// delayed recall by exact sparse RTRL (sparse_rtrl::Rtrl, exact through depth), updated by Adam
/// at every step (fully online). Task: sequences of T = 40 random symbols, one of K = 4, one-hot;
/// from step D = 4 on, a linear readout of the top layer's events must name the symbol read D
/// steps earlier (softmax cross-entropy; chance 25%). The state is reset between sequences.
///
/// Measurement: the trained parameters are copied into a double-precision model and frozen. On
/// fresh sequences (another seed) the gradient of the same loss is computed by exact RTRL and by
/// the approximations of sparse_rtrl::Snap (snap.hpp, docs/model.md "SnAp for stacks"):
///   SnAp-1, SnAp-2, SnAp-3   patterns on the stack's graph (R and W edges, one hop each);
///   within-layer             SnapCrossLayer::none at a covering order: exact within each layer,
///                            M^{1,0} = 0 ("exact within a layer only");
///   same-step                SnapCrossLayer::same_step at a covering order: exact within each
///                            layer, the loss back-propagated down the stack at the same step only.
/// For each, per layer and over both: the relative L2 error |g - g_exact| / |g_exact| and the
/// cosine similarity, of the gradient summed over all fresh sequences ("batch"), and the mean
/// over sequences of the per-sequence cosine. Exact RTRL is itself checked against BPTT.
///
/// Usage: stack_snap_gap [--short] [--steps N] [--eval S] [--seed S]
///   --short    800 training steps and 4 fresh sequences (a smoke run, about a second)
///   --steps N  training steps (default 200000 = 5000 sequences)
///   --eval S   fresh sequences for the comparison (default 64)
///   --seed S   seeds weights, masks and data (default 1)
/// Arguments it does not know, or cannot parse, end it with exit code 2.
///
/// Masks: W^0 dense (d = 4); W^1 at density 0.5 and R^0, R^1 at density 0.15, gate-shared
/// (ParameterMask::random(..., MaskSharing::gate_shared)), so that the stack's graph is sparse
/// enough for SnAp-1/2/3 to differ. Surrogate: triangular, gamma = 1, eps = 0.3. Input weights
/// scaled by 3 in layer 0 (one-hot symbols) and 6 in layer 1 (it reads sparse events: at 3 it
/// hardly fired), both divided by sqrt(density); R divided by sqrt(density); thresholds start at
/// 0.3 (trained); Adam, learning rate 3e-3, zero readout at start.
/// Measured results: docs/model.md, "SnAp for stacks".
#include <sparse_rtrl/sparse_rtrl.hpp>

#include "common/args.hpp"
#include "common/timing.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using sparse_rtrl::Index;
using sparse_rtrl::SnapCrossLayer;
using sparse_rtrl::SnapOptions;
using ModelF = sparse_rtrl::Model<float>;
using ModelD = sparse_rtrl::Model<double>;
using ParametersD = sparse_rtrl::EgruParameters<double>;

constexpr Index kSymbols = 4;   // K, also d
constexpr Index kUnits = 32;    // per layer
constexpr Index kLength = 40;   // T
constexpr Index kDelay = 4;     // D
constexpr float kGamma = 1.0f, kEps = 0.3f;
constexpr float kLearningRate = 3e-3f;

struct Options {
  bool short_run = false;
  long steps = -1;
  long eval = -1;
  std::uint64_t seed = 1;
};

constexpr const char* kUsage =
    "usage: stack_snap_gap [--short] [--steps N] [--eval S] [--seed S]\n"
    "  N and S positive integers, --seed a non-negative integer\n";

Options parse(int argc, char** argv) {
  Options o;
  examples::ArgParser args("stack_snap_gap", kUsage);
  args.flag("--short", o.short_run)
      .integer("--steps", o.steps, 1L, 100000000L)
      .integer("--eval", o.eval, 1L, 1000000L)
      .integer("--seed", o.seed, std::uint64_t(0), std::numeric_limits<std::uint64_t>::max())
      .parse(argc, argv);
  return o;
}

using examples::seconds_since;

/// A sequence of kLength symbols in {0, ..., K - 1}.
std::vector<int> draw_sequence(std::mt19937_64& rng) {
  std::vector<int> s(static_cast<std::size_t>(kLength));
  for (auto& v : s) v = int(rng() >> 62);
  return s;
}

ModelF make_model(std::uint64_t seed) {
  std::vector<ModelF::Cell> cells;
  std::vector<sparse_rtrl::ParameterMask> masks;
  Index inputs = kSymbols;
  for (Index k = 0; k < 2; ++k) {
    sparse_rtrl::InitOptions<float> init;
    init.seed = seed + 10 * std::uint64_t(k);
    init.threshold = 0.3f;
    ModelF::Cell cell(kUnits, inputs, init, sparse_rtrl::CellOptions{true}, sparse_rtrl::TriangularSurrogate<float>(kGamma, kEps));
    const double density_W = k == 0 ? 1.0 : 0.5, density_R = 0.15;
    // Keep each unit's input variance under pruning; one-hot symbols and sparse events need a
    // gain to lift units over theta at all.
    const float gain = k == 0 ? 3.0f : 6.0f;
    cell.parameters().W *= gain / float(std::sqrt(density_W));
    cell.parameters().R /= float(std::sqrt(density_R));
    cells.push_back(cell);
    masks.push_back(sparse_rtrl::ParameterMask::random(kUnits, inputs, density_W, density_R, seed + 10 * std::uint64_t(k) + 1,
                                                       sparse_rtrl::MaskSharing::gate_shared));
    inputs = kUnits;
  }
  return ModelF(cells, masks);
}

/// The same stack in double precision (the comparison should not be about float rounding).
ModelD to_double(const ModelF& model) {
  std::vector<ModelD::Cell> cells;
  std::vector<sparse_rtrl::ParameterMask> masks;
  for (Index k = 0; k < model.layers(); ++k) {
    const auto& p = model.parameters(k);
    ParametersD q(p.units(), p.inputs());
    q.W = p.W.cast<double>();
    q.R = p.R.cast<double>();
    q.bW = p.bW.cast<double>();
    q.bR = p.bR.cast<double>();
    q.theta = p.theta.cast<double>();
    cells.emplace_back(q, sparse_rtrl::CellOptions{model.events(k)}, sparse_rtrl::TriangularSurrogate<double>(kGamma, kEps));
    masks.push_back(model.mask(k));
  }
  return ModelD(cells, masks);
}

Eigen::VectorXd flatten(const ParametersD& p) {
  Eigen::VectorXd v(p.W.size() + p.R.size() + p.bW.size() + p.bR.size() + p.theta.size());
  v << Eigen::Map<const Eigen::VectorXd>(p.W.data(), p.W.size()), Eigen::Map<const Eigen::VectorXd>(p.R.data(), p.R.size()),
      p.bW, p.bR, p.theta;
  return v;
}

struct Gap {
  double error = 0, cosine = 0;
};
Gap compare(const Eigen::VectorXd& g, const Eigen::VectorXd& exact) {
  Gap r;
  r.error = (g - exact).norm() / exact.norm();
  const double norms = g.norm() * exact.norm();
  r.cosine = norms > 0 ? g.dot(exact) / norms : 0.0;  // a zero gradient: no direction, reported as 0
  return r;
}

/// Per-sequence gradients of both layers (flattened; index 2 is both together) and the
/// per-sequence multiply-adds of the influence updates.
struct Run {
  std::vector<std::vector<Eigen::VectorXd>> per_sequence;  // [sequence][0, 1, all]
  double fma_per_step = 0;
  std::size_t influence_bytes = 0;
  std::vector<Eigen::MatrixXd> top_gradients;  // dL/dy^1_t per sequence (T x n), for BPTT
  double accuracy = 0;
};

template <typename Learner>
Run run(Learner& learner, const sparse_rtrl::LinearReadout<double>& readout, const std::vector<std::vector<int>>& sequences) {
  Run out;
  learner.reset_work();
  Eigen::VectorXd x(kSymbols), logits(kSymbols), dL_dlogits(kSymbols), dL_dy(kUnits);
  long hits = 0, scored = 0;
  for (const auto& s : sequences) {
    learner.reset();
    learner.zero_gradient();
    Eigen::MatrixXd G = Eigen::MatrixXd::Zero(kLength, kUnits);
    for (Index t = 0; t < kLength; ++t) {
      x.setZero();
      x(s[std::size_t(t)]) = 1.0;
      learner.step(x);
      if (t < kDelay) continue;
      readout.forward(learner.output(), logits);
      Index predicted = 0;
      logits.maxCoeff(&predicted);
      hits += predicted == s[std::size_t(t - kDelay)];
      ++scored;
      sparse_rtrl::softmax_cross_entropy(logits, s[std::size_t(t - kDelay)], dL_dlogits);
      dL_dy.noalias() = readout.parameters().V.transpose() * dL_dlogits;
      G.row(t) = dL_dy.transpose();
      learner.accumulate_gradient(dL_dy);
    }
    const Eigen::VectorXd g0 = flatten(learner.gradient(0)), g1 = flatten(learner.gradient(1));
    Eigen::VectorXd all(g0.size() + g1.size());
    all << g0, g1;
    out.per_sequence.push_back({g0, g1, all});
    out.top_gradients.push_back(G);
  }
  out.fma_per_step = double(learner.total_work().propagation_fma) / double(learner.total_work().steps);
  out.influence_bytes = learner.influence_bytes();
  out.accuracy = double(hits) / double(scored);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  const auto start = examples::Clock::now();
  const long steps = opt.steps > 0 ? opt.steps : (opt.short_run ? 800 : 200000);
  const long eval = opt.eval > 0 ? opt.eval : (opt.short_run ? 4 : 64);

  ModelF model = make_model(opt.seed);
  sparse_rtrl::Rtrl<float> rtrl(model);
  sparse_rtrl::LinearReadout<float> readout(kSymbols, kUnits);
  readout.parameters().V.setZero();  // as the other examples: no gradient until it has features
  std::vector<sparse_rtrl::Adam<float>> adam(2, sparse_rtrl::Adam<float>(sparse_rtrl::AdamOptions<float>{kLearningRate}));
  sparse_rtrl::Adam<float> adam_readout(sparse_rtrl::AdamOptions<float>{kLearningRate});
  std::printf("stack_snap_gap: 2-layer EGRU (%d + %d units, d = %d), delayed recall D = %d, T = %d, K = %d; "
              "training by exact sparse RTRL, Adam every step, %ld steps\n",
              int(kUnits), int(kUnits), int(kSymbols), int(kDelay), int(kLength), int(kSymbols), steps);
  std::fflush(stdout);

  std::mt19937_64 data(opt.seed + 1000);
  std::vector<int> sequence;
  std::vector<sparse_rtrl::EgruParameters<float>> grad = {sparse_rtrl::EgruParameters<float>(kUnits, kSymbols),
                                                          sparse_rtrl::EgruParameters<float>(kUnits, kUnits)};
  Eigen::VectorXf x(kSymbols), logits(kSymbols), dL_dlogits(kSymbols), dL_dy(kUnits);
  long hits = 0, scored = 0;
  double loss = 0;
  const long report = std::max(1L, steps / 10);
  for (long step = 0; step < steps; ++step) {
    const Index t = Index(step % kLength);
    if (t == 0) {
      sequence = draw_sequence(data);
      rtrl.reset();
    }
    x.setZero();
    x(sequence[std::size_t(t)]) = 1.0f;
    rtrl.step(x);
    if (t >= kDelay) {
      const int target = sequence[std::size_t(t - kDelay)];
      readout.forward(rtrl.output(), logits);
      Index predicted = 0;
      logits.maxCoeff(&predicted);
      hits += predicted == target;
      ++scored;
      loss += sparse_rtrl::softmax_cross_entropy(logits, target, dL_dlogits);
      readout.backward(rtrl.output(), dL_dlogits, dL_dy);
      rtrl.accumulate_gradient(dL_dy);
      for (Index k = 0; k < 2; ++k) {
        rtrl.gradient(k, grad[std::size_t(k)]);
        adam[std::size_t(k)].step(model.parameters(k), grad[std::size_t(k)], model.mask(k));
      }
      adam_readout.step(readout);
      rtrl.zero_gradient();
      readout.zero_gradient();
    }
    if ((step + 1) % report == 0) {
      std::printf("step %7ld  loss %.4f  accuracy %5.1f%%  event sparsity layer 0 %4.1f%%, layer 1 %4.1f%%  %5.1f s\n",
                  step + 1, scored ? loss / double(scored) : 0.0, scored ? 100.0 * double(hits) / double(scored) : 0.0,
                  100.0 * rtrl.total_work(0).event_sparsity(), 100.0 * rtrl.total_work(1).event_sparsity(),
                  seconds_since(start));
      std::fflush(stdout);
      hits = scored = 0;
      loss = 0;
      rtrl.reset_work();
    }
  }
  const double train_seconds = seconds_since(start);

  // The comparison, in double, on fresh sequences with the trained (frozen) parameters.
  ModelD md = to_double(model);
  sparse_rtrl::ReadoutParameters<double> rp(kSymbols, kUnits);
  rp.V = readout.parameters().V.cast<double>();
  rp.b = readout.parameters().b.cast<double>();
  const sparse_rtrl::LinearReadout<double> readout_d(rp);
  std::mt19937_64 fresh(opt.seed + 2000);
  std::vector<std::vector<int>> sequences;
  for (long s = 0; s < eval; ++s) sequences.push_back(draw_sequence(fresh));

  sparse_rtrl::Rtrl<double> exact_learner(md);
  const Run exact = run(exact_learner, readout_d, sequences);
  // Exact RTRL against BPTT on every fresh sequence.
  double bptt_error = 0;
  {
    sparse_rtrl::Bptt<double> bptt(md);
    for (std::size_t s = 0; s < sequences.size(); ++s) {
      Eigen::MatrixXd X = Eigen::MatrixXd::Zero(kLength, kSymbols);
      for (Index t = 0; t < kLength; ++t) X(t, sequences[s][std::size_t(t)]) = 1.0;
      bptt.forward(X);
      const auto g = bptt.backward(std::vector<Eigen::MatrixXd>{Eigen::MatrixXd(), exact.top_gradients[s]});
      Eigen::VectorXd all(exact.per_sequence[s][2].size());
      all << flatten(g[0]), flatten(g[1]);
      bptt_error = std::max(bptt_error, (all - exact.per_sequence[s][2]).norm() / all.norm());
    }
  }

  struct Scheme {
    const char* name;
    SnapOptions options;
  };
  const int max_order = std::numeric_limits<int>::max();
  const std::vector<Scheme> schemes = {{"SnAp-1", {1, SnapCrossLayer::graph}},
                                       {"SnAp-2", {2, SnapCrossLayer::graph}},
                                       {"SnAp-3", {3, SnapCrossLayer::graph}},
                                       {"within-layer", {max_order, SnapCrossLayer::none}},
                                       {"same-step", {max_order, SnapCrossLayer::same_step}}};
  std::printf("\ntrained for %ld steps in %.1f s; comparison on %ld fresh sequences (%ld loss steps), accuracy %.1f%% "
              "(chance 25%%); exact RTRL vs BPTT: max relative error %.1e\n",
              steps, train_seconds, eval, eval * long(kLength - kDelay), 100.0 * exact.accuracy, bptt_error);
  {
    sparse_rtrl::Snap<double> probe(md, 1);
    std::printf("stack graph: covering order %d (graph), %d (within a layer)\n", probe.covering_order(),
                sparse_rtrl::Snap<double>(md, SnapOptions{1, SnapCrossLayer::none}).covering_order());
  }
  std::printf("%-13s %9s %9s | %-17s | %-17s | %-17s | %s\n", "scheme", "M KiB", "fma/step", "layer 0 err  cos",
              "layer 1 err  cos", "both err  cos", "per-seq cos (both)");
  auto batch = [](const Run& r, std::size_t which) {
    Eigen::VectorXd sum = Eigen::VectorXd::Zero(r.per_sequence[0][which].size());
    for (const auto& s : r.per_sequence) sum += s[which];
    return sum;
  };
  auto line = [&](const char* name, const Run& r) {
    std::printf("%-13s %9.1f %9.0f", name, double(r.influence_bytes) / 1024.0, r.fma_per_step);
    for (std::size_t which = 0; which < 3; ++which) {
      const Gap gap = compare(batch(r, which), batch(exact, which));
      std::printf(" | %8.3f %7.3f", gap.error, gap.cosine);
    }
    double mean = 0;
    for (std::size_t s = 0; s < r.per_sequence.size(); ++s)
      mean += compare(r.per_sequence[s][2], exact.per_sequence[s][2]).cosine;
    std::printf(" | %7.3f\n", mean / double(r.per_sequence.size()));
  };
  line("exact RTRL", exact);
  for (const auto& scheme : schemes) {
    sparse_rtrl::Snap<double> snap(md, scheme.options);
    line(scheme.name, run(snap, readout_d, sequences));
  }
  std::printf("err: |g - g_exact| / |g_exact| of the gradient summed over the fresh sequences; cos: cosine "
              "similarity (0 for a zero gradient); %.1f s in all\n",
              seconds_since(start));
  return 0;
}
