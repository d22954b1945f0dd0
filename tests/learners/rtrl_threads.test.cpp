// Rtrl on several threads: bitwise the same results for any thread count, stepping from any
// std::thread, copies that own their threads; subnormals flushed on every thread that touches M
// and the caller's floating-point mode restored.
#include "test_support.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <thread>
#include <type_traits>
#include <utility>

using namespace sparse_rtrl;
using test::Mat;
using test::Vec;

namespace {

template <typename S>
struct ThreadsRun {
  Vec<S> state;
  Mat<S> M;
  Vec<S> gradient;
};

/// A learner with its own model: the learner references the model, so the helpers below return
/// both (the model on the heap, at one address for the learner's lifetime).
template <typename S>
struct OwnedLearner {
  std::unique_ptr<Model<S>> model;
  Rtrl<S> rtrl;
  OwnedLearner(EgruCell<S> cell, const ParameterMask& mask, const RtrlOptions& options)
      : model(std::make_unique<Model<S>>(std::move(cell), mask)), rtrl(*model, options) {}
};

/// A network big enough that the step's column split runs ((nnz + n) * P above the threshold)
/// and P is not a multiple of the register chunk (the partial chunk is exercised).
template <typename S>
OwnedLearner<S> make_learner(const RtrlOptions& options, double density = 0.5) {
  const Index n = 48, d = 7;
  auto p = test::firing_parameters<S>(n, d, 31);
  const auto mask = ParameterMask::random(n, d, density, density, 32);
  return OwnedLearner<S>(EgruCell<S>(p, CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.3))), mask, options);
}

template <typename S>
ThreadsRun<S> run(Rtrl<S>& rtrl, Index T, Index from = 0) {
  const Mat<S> X = test::random_matrix<S>(T, rtrl.inputs(), 33);
  const Mat<S> G = test::random_matrix<S>(T, rtrl.units(), 34);
  for (Index t = from; t < T; ++t) {
    rtrl.step(X.row(t));
    rtrl.accumulate_gradient(G.row(t));
  }
  return ThreadsRun<S>{rtrl.state(), rtrl.influence(), rtrl.gradient_columns()};
}

template <typename S>
bool bitwise_equal(const ThreadsRun<S>& a, const ThreadsRun<S>& b) {
  return a.state == b.state && a.M == b.M && a.gradient == b.gradient;
}

}  // namespace

TEMPLATE_TEST_CASE("Rtrl gives bitwise the same state, M and gradient on 1, 2, 3 and 4 threads", "[rtrl][threads]", float,
                   double) {
  using S = TestType;
  for (bool skip : {true, false}) {
    INFO("skip_silent_rows = " << skip);
    RtrlOptions options;
    options.skip_silent_rows = skip;
    auto reference_learner = make_learner<S>(options);
    REQUIRE(reference_learner.rtrl.layout().columns() % detail::kChunk<S> != 0);
    const ThreadsRun<S> reference = run(reference_learner.rtrl, 120);
    REQUIRE(double(reference_learner.rtrl.last_step_work().propagation_fma) > detail::kParallelMinFma);
    REQUIRE(reference.M.cwiseAbs().maxCoeff() > S(0));
    for (int threads : {2, 3, 4}) {
      INFO("threads = " << threads);
      options.threads = threads;
      auto learner = make_learner<S>(options);
      REQUIRE(learner.rtrl.threads() == threads);
      CHECK(bitwise_equal(run(learner.rtrl, 120), reference));
    }
  }
}

TEMPLATE_TEST_CASE("The gradient read-out split over threads gives the same bits (GRU mode: every row is read)",
                   "[rtrl][threads]", float, double) {
  using S = TestType;
  const Index n = 64, d = 7;
  const auto p = test::firing_parameters<S>(n, d, 41);
  const auto mask = ParameterMask::random(n, d, 0.5, 0.5, 42);
  ThreadsRun<S> reference;
  for (int threads : {1, 2, 3}) {
    INFO("threads = " << threads);
    Model<S> model(EgruCell<S>(p, CellOptions{false}, TriangularSurrogate<S>(S(1), S(0.3))), mask);
    RtrlOptions options;
    options.threads = threads;
    Rtrl<S> rtrl(model, options);
    const ThreadsRun<S> result = run(rtrl, 30);
    // Every unit has dL/dc != 0 in GRU mode: the read-out is large enough to be split.
    REQUIRE(double(rtrl.last_step_work().readout_fma) >= detail::kParallelMinFma);
    REQUIRE(result.gradient.cwiseAbs().maxCoeff() > S(0));
    if (threads == 1)
      reference = result;
    else
      CHECK(bitwise_equal(result, reference));
  }
}

TEMPLATE_TEST_CASE("Rtrl built on one thread steps on another with the same bits", "[rtrl][threads]", float, double) {
  using S = TestType;
  RtrlOptions options;
  options.threads = 2;
  auto here = make_learner<S>(options);
  const ThreadsRun<S> reference = run(here.rtrl, 80);
  auto there = make_learner<S>(options);
  ThreadsRun<S> result;
  std::thread other([&] { result = run(there.rtrl, 80); });
  other.join();
  CHECK(bitwise_equal(result, reference));
}

TEMPLATE_TEST_CASE("A copied Rtrl continues exactly like the original, on its own threads", "[rtrl][threads]", float, double) {
  using S = TestType;
  RtrlOptions options;
  options.threads = 2;
  auto owned = make_learner<S>(options);
  Rtrl<S>& original = owned.rtrl;
  run(original, 40);
  Rtrl<S> copy(original);  // references the same model as the original
  CHECK(copy.threads() == 2);
  const Mat<S> X = test::random_matrix<S>(30, original.inputs(), 35);
  for (Index t = 0; t < X.rows(); ++t) {
    original.step(X.row(t));
    copy.step(X.row(t));
  }
  CHECK(copy.state() == original.state());
  CHECK(Mat<S>(copy.influence()) == Mat<S>(original.influence()));
}

TEST_CASE("Rtrl rejects a thread count below one", "[rtrl][threads][errors]") {
  RtrlOptions options;
  options.threads = 0;
  Model<float> model(EgruCell<float>(4, 2));
  REQUIRE_THROWS_WITH(Rtrl<float>(model, options),
                      Catch::Matchers::Contains("sparse_rtrl::Rtrl::Rtrl()") &&
                          Catch::Matchers::Contains("options.threads must be >= 1, received 0"));
}

namespace {

/// A network whose units all fire for a while (thresholds -1.5), spreading influence through M,
/// and then fall silent for good (thresholds 10): rows of M then decay by z each step, into the
/// subnormal range. The case flush-to-zero exists for. n = 64 keeps the silent step above the
/// threshold of the column split, so the worker thread's columns are covered.
template <typename S>
OwnedLearner<S> decaying_learner(bool flush, int threads) {
  const Index n = 64, d = 4;
  auto p = init_torch_like<S>(n, d, {41, S(-1.5)});
  p.bR.segment(n, n).setConstant(S(-1.5));  // update gate z about 0.2: fast decay
  RtrlOptions options;
  options.flush_subnormals = flush;
  options.threads = threads;
  return OwnedLearner<S>(EgruCell<S>(p, CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.2))),
                         ParameterMask::random(n, d, 0.5, 0.5, 42), options);
}

/// Subnormal entries (0 < |x| < the smallest normal) of M in the first and the second half of its
/// columns, read in place (this runs on all of M at every step of three long runs: a copy per
/// step, influence(), would be most of the test's time). The caller's floating-point mode is
/// the default here (a step restores it), so subnormals are not treated as zero.
template <typename S>
std::pair<Index, Index> count_subnormals(const Rtrl<S>& rtrl) {
  const Index P = rtrl.layout().columns();
  std::pair<Index, Index> count{0, 0};
  for (Index i = 0; i < rtrl.units(); ++i) {
    Index c = 0;
    rtrl.for_each_influence_segment(0, i, [&](const S* v, Index n) {
      for (Index e = 0; e < n; ++e, ++c) {
        const S a = std::abs(v[e]);
        if (a > S(0) && a < std::numeric_limits<S>::min()) ++(c < P / 2 ? count.first : count.second);
      }
    });
  }
  return count;
}

}  // namespace

TEMPLATE_TEST_CASE("Steps flush subnormals on every thread by default, strict IEEE keeps them, gradients agree",
                   "[rtrl][denormals][threads]", float, double) {
  using S = TestType;
  if (!flush_subnormals_supported()) {
    SUCCEED("no flush-to-zero control on this target");
    return;
  }
  const Index firing = 50, T = std::is_same<S, float>::value ? 300 : 1500;
  const Mat<S> X = test::random_matrix<S>(T, 4, 43, -0.2, 0.2);
  // Runs the learner; returns the largest number of subnormal entries of M seen in the first and
  // the second half of its columns at any one step.
  auto drive = [&](Rtrl<S>& rtrl) {
    const Vec<S> g = Vec<S>::Constant(rtrl.units(), S(0.01));
    std::pair<Index, Index> most{0, 0};
    for (Index t = 0; t < T; ++t) {
      if (t == firing) rtrl.cell().parameters().theta.setConstant(S(10));
      rtrl.step(X.row(t));
      rtrl.accumulate_gradient(g);
      const auto seen = count_subnormals(rtrl);
      most.first = std::max(most.first, seen.first);
      most.second = std::max(most.second, seen.second);
    }
    return most;
  };
  auto strict = decaying_learner<S>(false, 1);
  const auto seen_strict = drive(strict.rtrl);
  // Positive control: without flushing, subnormals do appear (else this test proves nothing).
  REQUIRE(seen_strict.first > 0);
  REQUIRE(seen_strict.second > 0);
  for (int threads : {1, 2}) {
    INFO("threads = " << threads);
    auto flushed = decaying_learner<S>(true, threads);
    const auto seen = drive(flushed.rtrl);
    // With 2 threads the second half of the columns is the worker's: it must flush too.
    CHECK(seen.first == 0);
    CHECK(seen.second == 0);
    // Only values below the smallest normal differ: the gradients agree far below rounding of
    // normal-sized numbers.
    const auto& g = flushed.rtrl.gradient_columns();
    const auto& g_strict = strict.rtrl.gradient_columns();
    const double diff = (g - g_strict).template cast<double>().cwiseAbs().maxCoeff();
    CHECK(diff <= 1e-6 * g_strict.template cast<double>().cwiseAbs().maxCoeff());
  }
}

TEST_CASE("A step restores the caller's floating-point mode, flushing or not", "[rtrl][denormals]") {
  if (!flush_subnormals_supported()) {
    SUCCEED("no flush-to-zero control on this target");
    return;
  }
  const auto before = detail::read_float_mode();
  for (bool flush : {true, false})
    for (int threads : {1, 2}) {
      auto learner = decaying_learner<float>(flush, threads);
      learner.rtrl.step(Vec<float>::Constant(4, 0.1f));
      learner.rtrl.accumulate_gradient(Vec<float>::Constant(64, 0.1f));
      CHECK(detail::read_float_mode() == before);
    }
  {
    // A caller that flushes already keeps flushing, also after a strict-IEEE learner's step.
    ScopedFlushDenormals caller;
    const auto flushing = detail::read_float_mode();
    auto learner = decaying_learner<float>(false, 1);
    learner.rtrl.step(Vec<float>::Constant(4, 0.1f));
    CHECK(detail::read_float_mode() == flushing);
  }
  CHECK(detail::read_float_mode() == before);
}
