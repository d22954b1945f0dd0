// UORO (learners/uoro.hpp): unbiased, i.e. the mean of its gradient over many sign draws converges
// to the exact RTRL gradient, tested with a tolerance from the measured per-draw variance (one
// layer, and a stack whose same-step cross-layer path must be in the estimate); the state (pair
// and sign generator) resumes bit for bit from a checkpoint and from stage_state(); bad input.
#include "test_support.hpp"

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

using namespace sparse_rtrl;
using test::Mat;
using test::Vec;

namespace {


/// Runs @p learner over X with a loss G[m] on every layer m at every step; its gradient columns.
template <typename S, typename Learner>
Vec<double> uoro_run(Learner& learner, const Mat<S>& X, const std::vector<Mat<S>>& G) {
  for (Index t = 0; t < X.rows(); ++t) {
    learner.step(X.row(t));
    for (Index m = 0; m < learner.layers(); ++m) learner.accumulate_gradient_at(m, G[std::size_t(m)].row(t));
  }
  return learner.gradient_columns().template cast<double>();
}

struct UoroBiasStatistic {
  double max_z = 0;      ///< max over coordinates of |mean - exact| / (std / sqrt(N))
  double norm_ratio = 0; ///< |mean - exact|^2 / (sum of variances / N): about 1 when unbiased
  double spread = 0;     ///< the per-draw standard deviation's norm over |exact| (the test's power)
};

/// N draws (seeds 1..N) of UORO's gradient against the exact one, the statistic of their mean.
template <typename S>
UoroBiasStatistic uoro_bias(Model<S>& model, const Mat<S>& X, const std::vector<Mat<S>>& G, int N) {
  Rtrl<S> rtrl(model);
  const Vec<double> exact = uoro_run<S>(rtrl, X, G);
  Vec<double> mean = Vec<double>::Zero(exact.size()), m2 = Vec<double>::Zero(exact.size());
  for (int draw = 1; draw <= N; ++draw) {
    Uoro<S> uoro(model, {std::uint64_t(draw) * 7919u, 1e-7});
    REQUIRE(uoro.columns() == rtrl.columns());
    const Vec<double> g = uoro_run<S>(uoro, X, G);
    const Vec<double> delta = g - mean;  // Welford
    mean += delta / double(draw);
    m2 += delta.cwiseProduct(g - mean);
  }
  const Vec<double> var = m2 / double(N - 1);
  UoroBiasStatistic s;
  for (Index j = 0; j < exact.size(); ++j) {
    const double se = std::sqrt(var(j) / N);
    const double diff = std::abs(mean(j) - exact(j));
    if (se > 0)
      s.max_z = std::max(s.max_z, diff / se);
    else if (diff > 1e-12 * (1 + std::abs(exact(j))))
      s.max_z = std::numeric_limits<double>::infinity();  // no noise at all, yet off
  }
  s.norm_ratio = (mean - exact).squaredNorm() / (var.sum() / N);
  s.spread = std::sqrt(var.sum()) / exact.norm();
  return s;
}

}  // namespace

// Why these bounds: per coordinate, the mean of N = 4000 independent draws is normal to a good
// approximation, so |z| > 5 has probability ~6e-7 per coordinate (a few hundred coordinates);
// |mean - exact|^2 has expectation sum var / N when unbiased, and a ratio above 3 would need the
// squared errors of hundreds of coordinates to be 3 times their expectation together. A bias of
// a tenth of the per-draw spread (the spread is ~ |exact| or more) moves the ratio by
// ~0.01 N = 40. The seeds are fixed: the test is deterministic.
TEMPLATE_TEST_CASE("UORO is unbiased: the mean over sign draws converges to the exact RTRL gradient (one layer)",
                   "[uoro][statistics]", float, double) {
  using S = TestType;
  for (bool events : {true, false}) {
    INFO("events = " << events);
    Model<S> model = test::masked_stack<S>({5}, 3, events, 500, 0.7);
    const Mat<S> X = test::random_matrix<S>(6, 3, 501);
    const std::vector<Mat<S>> G{test::random_matrix<S>(6, 5, 502)};
    const UoroBiasStatistic s = uoro_bias<S>(model, X, G, 4000);
    INFO("max |z| = " << s.max_z << ", norm ratio = " << s.norm_ratio << ", spread = " << s.spread);
    CHECK(s.max_z < 5);
    CHECK(s.norm_ratio < 3);
    CHECK(s.spread > 0.1);  // a real estimator (noisy), not the exact gradient by accident
  }
}

TEMPLATE_TEST_CASE("UORO is unbiased on a stack: the same-step path through the layers is in its Jacobians",
                   "[uoro][statistics][stack]", float, double) {
  using S = TestType;
  Model<S> model = test::masked_stack<S>({5, 4}, 3, true, 510, 0.8);
  const Mat<S> X = test::random_matrix<S>(5, 3, 511);
  const std::vector<Mat<S>> G{test::random_matrix<S>(5, 5, 512), test::random_matrix<S>(5, 4, 513)};
  const UoroBiasStatistic s = uoro_bias<S>(model, X, G, 4000);
  INFO("max |z| = " << s.max_z << ", norm ratio = " << s.norm_ratio << ", spread = " << s.spread);
  CHECK(s.max_z < 5);
  CHECK(s.norm_ratio < 3);
  CHECK(s.spread > 0.1);
}

TEMPLATE_TEST_CASE("UORO: the same seed gives the same bits, another seed other signs", "[uoro]", float, double) {
  using S = TestType;
  Model<S> model = test::masked_stack<S>({6, 4}, 3, true, 520, 0.7);
  const Mat<S> X = test::random_matrix<S>(8, 3, 521);
  const std::vector<Mat<S>> G{test::random_matrix<S>(8, 6, 522), test::random_matrix<S>(8, 4, 523)};
  Uoro<S> a(model, {42, 1e-7}), b(model, {42, 1e-7}), c(model, {43, 1e-7});
  const Vec<double> ga = uoro_run<S>(a, X, G), gb = uoro_run<S>(b, X, G), gc = uoro_run<S>(c, X, G);
  CHECK(test::same_bits(ga, gb));
  CHECK(!test::same_bits(ga, gc));
  CHECK(a.sign_state() == b.sign_state());
  CHECK(a.state_bytes() == sizeof(S) * std::size_t(6 + 4 + a.columns()));
}

TEMPLATE_TEST_CASE("UORO's state (pair and sign generator) resumes bit for bit from a checkpoint and from stage_state()",
                   "[uoro][checkpoint]", float, double) {
  using S = TestType;
  const std::string path = "uoro_resume_" + std::string(sizeof(S) == 4 ? "f" : "d") + ".npz";
  Model<S> model = test::masked_stack<S>({6, 4}, 3, true, 530, 0.7);
  const Mat<S> X = test::random_matrix<S>(12, 3, 531), G = test::random_matrix<S>(12, 4, 532);
  Uoro<S> live(model, {5, 1e-7});
  for (Index t = 0; t < 5; ++t) {
    live.step(X.row(t));
    live.accumulate_gradient(G.row(t).transpose());
  }
  io::Checkpoint().add(model).add("uoro", live).save(path);
  auto snapshot = live.stage_state();
  Model<S> other = test::masked_stack<S>({6, 4}, 3, true, 530, 0.7);
  Uoro<S> resumed(other, {999, 1e-7});  // another seed: the file's generator state must win
  io::Checkpoint().add(other).add("uoro", resumed).load(path);
  CHECK(resumed.sign_state() == live.sign_state());
  Uoro<S> wrong_eps(other, {5, 1e-6});
  CHECK_THROWS_WITH(io::Checkpoint().add(other).add("uoro", wrong_eps).load(path), Catch::Matchers::Contains("uoro/epsilon"));
  Vec<S> first_run;
  for (int pass = 0; pass < 2; ++pass) {
    for (Index t = 5; t < 12; ++t) {
      live.step(X.row(t));
      live.accumulate_gradient(G.row(t).transpose());
      if (pass == 0) {
        resumed.step(X.row(t));
        resumed.accumulate_gradient(G.row(t).transpose());
      }
    }
    if (pass == 0) {
      CHECK(test::same_bits(live.gradient_columns(), resumed.gradient_columns()));
      for (Index k = 0; k < 2; ++k) {
        CHECK(test::same_bits(live.state_factor(k), resumed.state_factor(k)));
        CHECK(test::same_bits(live.parameter_factor(k), resumed.parameter_factor(k)));
      }
      first_run = live.gradient_columns();
      live.restore_state(std::move(snapshot));  // back to step 5, signs included
    } else {
      CHECK(test::same_bits(live.gradient_columns(), first_run));
    }
  }
  std::remove(path.c_str());
}

TEMPLATE_TEST_CASE("UORO refuses bad input with std::invalid_argument", "[uoro][errors]", float, double) {
  using S = TestType;
  using Catch::Matchers::Contains;
  Model<S> model = test::masked_stack<S>({6}, 3, true, 540, 1.0);
  for (double eps : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()})
    CHECK_THROWS_WITH(Uoro<S>(model, {1, eps}), Contains("sparse_rtrl::Uoro::Uoro(): options.epsilon must be finite and > 0"));
  Uoro<S> uoro(model);
  CHECK_THROWS_WITH(uoro.step(Vec<S>::Zero(2)), Contains("sparse_rtrl::Uoro::step()") && Contains("x must be a vector of size 3"));
  Vec<S> x = Vec<S>::Ones(3);
  x(1) = std::numeric_limits<S>::infinity();
  CHECK_THROWS_AS(uoro.step(x), std::invalid_argument);
  CHECK(uoro.steps() == 0);
  uoro.step(Vec<S>::Ones(3));
  CHECK_THROWS_AS(uoro.accumulate_gradient(Vec<S>::Zero(7)), std::invalid_argument);
  CHECK(uoro.gradient_columns().isZero());
  model.set_mask(ParameterMask::random(6, 3, 0.5, 0.5, 541));
  CHECK_THROWS_WITH(uoro.step(Vec<S>::Ones(3)), Contains("construct a new Uoro"));
}
