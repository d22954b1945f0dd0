/// @file soak.cpp
/// @brief Long-run soak of fully online exact RTRL (issue 20): n = 32 units, float, Adam on the
///        EGRU and the readout after every step, no gradient clipping, 1e6 steps by default.
///
/// Task: copy_online's delayed recall (examples/copy_online.cpp: a random one-hot symbol of K = 4
/// per step, recall the one D = 5 steps back; softmax cross-entropy of a linear readout of y_t;
/// W scaled by 3, thresholds start at 0.3, Adam lr 1e-3, surrogate half-width 0.2), one stream
/// (Rtrl), the state never reset. Not a test: a program that runs for minutes.
///
/// It stays finite or stops at the first non-finite value with a message naming it: after every
/// step it checks the state, the output, every influence entry (O(n P), as much as the step
/// itself), the gradient and the parameters, and the library's own checks (Rtrl's step() and
/// accumulate_gradient(), the optimizers) throw first when they see it. Every --report steps a
/// line: loss and accuracy over the interval, max |c|, max |M|, the lowest threshold, seconds.
///
/// Usage: soak [--steps N] [--report N] [--seed S] [--clamp-thresholds]
///   --clamp-thresholds  clamp_thresholds(model) (theta >= 0) after every optimizer step
/// Exit code: 0 finite to the end, 1 stopped at a non-finite value, 2 bad arguments.
#include <sparse_rtrl/sparse_rtrl.hpp>

#include <Eigen/Core>

#include <chrono>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <random>
#include <string>
#include <vector>

namespace {

using sparse_rtrl::Index;
using Surrogate = sparse_rtrl::TriangularSurrogate<float>;
using Learner = sparse_rtrl::Rtrl<float, Surrogate>;
using Model = Learner::Model;
using Cell = Learner::Cell;
using Parameters = Learner::Parameters;

constexpr Index kSymbols = 4, kUnits = 32;
constexpr long kDelay = 5;

long parse_long(const char* name, const char* text) {
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < 1) {
    std::fprintf(stderr, "soak: %s needs a positive integer, received '%s'\n", name, text);
    std::exit(2);
  }
  return v;
}

/// The first non-finite entry of @p m, as "name(i, j) = value", or "" when all are finite.
template <typename M>
std::string first_non_finite(const char* name, const M& m) {
  for (Index j = 0; j < m.cols(); ++j)
    for (Index i = 0; i < m.rows(); ++i)
      if (!std::isfinite(m(i, j)))
        return std::string(name) + "(" + std::to_string(i) + ", " + std::to_string(j) + ") = " + std::to_string(m(i, j));
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  long steps = 1000000, report = 50000, seed = 1;
  bool clamp = false;
  for (int k = 1; k < argc; ++k) {
    const std::string arg = argv[k];
    if (arg == "--clamp-thresholds") {
      clamp = true;
    } else if ((arg == "--steps" || arg == "--report" || arg == "--seed") && k + 1 < argc) {
      const long v = parse_long(arg.c_str(), argv[++k]);
      (arg == "--steps" ? steps : arg == "--report" ? report : seed) = v;
    } else {
      std::fprintf(stderr, "soak: unknown argument '%s'\nusage: soak [--steps N] [--report N] [--seed S] "
                           "[--clamp-thresholds]\n", arg.c_str());
      return 2;
    }
  }

  sparse_rtrl::InitOptions<float> init;
  init.seed = std::uint64_t(seed);
  init.threshold = 0.3f;
  Cell cell(kUnits, kSymbols, init, sparse_rtrl::CellOptions{}, Surrogate(1.0f, 0.2f));
  cell.parameters().W *= 3.0f;
  Model model(cell);
  Learner rtrl(model);
  sparse_rtrl::LinearReadout<float> readout(kSymbols, kUnits);
  readout.parameters().V.setZero();
  sparse_rtrl::Adam<float> adam_cell(sparse_rtrl::AdamOptions<float>{1e-3f});
  sparse_rtrl::Adam<float> adam_readout(sparse_rtrl::AdamOptions<float>{1e-3f});

  std::printf("soak: n = %d, d = %d, float, Adam (lr 1e-3) every step, no clipping, thresholds %s, %ld steps\n",
              int(kUnits), int(kSymbols), clamp ? "clamped to >= 0 after each step" : "free", steps);
  std::fflush(stdout);

  Parameters grad(kUnits, kSymbols);
  Eigen::VectorXf x(kSymbols), logits(kSymbols), dL_dlogits(kSymbols), dL_dy(kUnits);
  std::mt19937_64 symbols(std::uint64_t(seed) + 2);
  std::vector<int> recent(kDelay + 1, 0);
  double loss_sum = 0, max_c = 0, max_M = 0;
  long hits = 0, scored = 0;
  const auto start = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  auto stop = [&](long t, const std::string& what) {
    std::printf("soak: STOPPED at step %ld (%.1f s): %s\n", t, seconds(), what.c_str());
    std::printf("soak: lowest threshold %g, max |c| so far %g, max |M| so far %g\n",
                double(model.parameters().theta.minCoeff()), max_c, max_M);
    return 1;
  };

  for (long t = 0; t < steps; ++t) {
    try {
      x.setZero();
      const int symbol = int(symbols() >> 62);
      recent[std::size_t(t % (kDelay + 1))] = symbol;
      x(symbol) = 1.0f;
      rtrl.step(x);
      if (t >= kDelay) {
        const int target = recent[std::size_t((t - kDelay) % (kDelay + 1))];
        readout.forward(rtrl.output(), logits);
        Index predicted = 0;
        logits.maxCoeff(&predicted);
        loss_sum += sparse_rtrl::softmax_cross_entropy(logits, target, dL_dlogits);
        hits += predicted == target;
        ++scored;
        readout.backward(rtrl.output(), dL_dlogits, dL_dy);
        rtrl.accumulate_gradient(dL_dy);
        rtrl.gradient(grad);
        adam_cell.step(model, grad);
        adam_readout.step(readout);
        if (clamp) sparse_rtrl::clamp_thresholds(model);
        rtrl.zero_gradient();
        readout.zero_gradient();
      }
    } catch (const std::exception& e) {
      return stop(t, std::string("the library refused: ") + e.what());
    }
    // The program's own check, every step: the first non-finite value, named.
    std::string bad = first_non_finite("c", rtrl.state());
    if (bad.empty()) bad = first_non_finite("y", rtrl.output());
    if (bad.empty()) {
      for (Index i = 0; i < kUnits && bad.empty(); ++i) {
        Index c = 0;
        rtrl.for_each_influence_segment(0, i, [&](const float* v, Index count) {
          for (Index e = 0; e < count; ++e, ++c) {
            if (!std::isfinite(v[e]) && bad.empty())
              bad = "influence M(" + std::to_string(i) + ", " + std::to_string(c) + ") = " + std::to_string(v[e]) +
                    " (parameter " + rtrl.layout().parameter_name(c) + ")";
            max_M = std::max(max_M, double(std::abs(v[e])));
          }
        });
      }
    }
    const auto& p = model.parameters();
    if (bad.empty()) bad = first_non_finite("W", p.W);
    if (bad.empty()) bad = first_non_finite("R", p.R);
    if (bad.empty()) bad = first_non_finite("bW", p.bW);
    if (bad.empty()) bad = first_non_finite("bR", p.bR);
    if (bad.empty()) bad = first_non_finite("theta", p.theta);
    if (!bad.empty()) return stop(t, "first non-finite value: " + bad);
    max_c = std::max(max_c, double(rtrl.state().cwiseAbs().maxCoeff()));
    if ((t + 1) % report == 0) {
      std::printf("step %8ld  loss %.4f  acc %5.1f%%  max|c| %.3g  max|M| %.3g  min theta %+.4f  %.1f s\n", t + 1,
                  scored ? loss_sum / double(scored) : 0.0, scored ? 100.0 * double(hits) / double(scored) : 0.0,
                  max_c, max_M, double(p.theta.minCoeff()), seconds());
      std::fflush(stdout);
      loss_sum = 0;
      hits = scored = 0;
      max_c = max_M = 0;
    }
  }
  std::printf("soak: finite after %ld steps (%.1f s)\n", steps, seconds());
  return 0;
}
