// SnAp-n (Menick et al. 2021): exact when the pattern reaches every unit, an approximation
// otherwise; SnAp-1 is exact when units do not interact.
#include "test_support.hpp"

#include <chrono>
#include <limits>

using namespace sparse_rtrl;
using test::Mat;

TEMPLATE_TEST_CASE("SnAp-n with n >= number of units equals exact RTRL and BPTT", "[snap]", float, double) {
  using S = TestType;
  const Index n = 7, d = 3, T = 80;
  for (double density : {1.0, 0.3}) {
    const auto mask = ParameterMask::random(n, d, density, density, 31);
    EgruCell<S> cell(test::firing_parameters<S>(n, d, 32), CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.5)));
    const Mat<S> X = test::random_matrix<S>(T, d, 33), G = test::random_matrix<S>(T, n, 34);
    Model<S> model(cell, mask);
    Bptt<S> bptt(model);
    bptt.forward(X);
    const auto g_ref = bptt.backward(G);
    Snap<S> snap(model, int(n));
    CHECK(test::relative_error(test::rtrl_gradient(snap, X, G), g_ref) <= test::Tolerance<S>::gradient);
  }
}

TEMPLATE_TEST_CASE("SnAp-1 is exact when every unit only feeds itself", "[snap]", float, double) {
  using S = TestType;
  const Index n = 6, d = 2, T = 60;
  ParameterMask::BoolMatrix keep_r = ParameterMask::BoolMatrix::Constant(3 * n, n, false);
  for (Index gate = 0; gate < 3; ++gate)
    for (Index i = 0; i < n; ++i) keep_r(gate * n + i, i) = true;
  const ParameterMask mask(ParameterMask::BoolMatrix::Constant(3 * n, d, true), keep_r);
  EgruCell<S> cell(test::firing_parameters<S>(n, d, 41));
  const Mat<S> X = test::random_matrix<S>(T, d, 42), G = test::random_matrix<S>(T, n, 43);
  Model<S> model(cell, mask);
  Bptt<S> bptt(model);
  bptt.forward(X);
  const auto g_ref = bptt.backward(G);
  Snap<S> snap(model, 1);
  for (Index u = 0; u < n; ++u) REQUIRE(snap.kept_rows(u) == std::vector<Index>{u});
  CHECK(test::relative_error(test::rtrl_gradient(snap, X, G), g_ref) <= test::Tolerance<S>::gradient);
}

TEST_CASE("SnAp-1 and SnAp-2 approximate the exact gradient with fewer entries", "[snap]") {
  const Index n = 16, d = 3, T = 100;
  const auto mask = ParameterMask::random(n, d, 1.0, 0.1, 51);
  EgruCell<double> cell(test::firing_parameters<double>(n, d, 52));
  const Mat<double> X = test::random_matrix<double>(T, d, 53), G = test::random_matrix<double>(T, n, 54);
  Model<double> model(cell, mask);
  Bptt<double> bptt(model);
  bptt.forward(X);
  const auto g_ref = bptt.backward(G);
  Rtrl<double> exact(model);
  test::rtrl_gradient(exact, X, G);
  double previous_error = 2.0;
  std::size_t previous_bytes = 0;
  for (int order : {1, 2, 3}) {
    Snap<double> snap(model, order);
    const auto g = test::rtrl_gradient(snap, X, G);
    const double error = test::relative_error(g, g_ref);
    INFO("SnAp-" << order << " relative error " << error);
    CHECK(error > 1e-6);        // an approximation on this connected sparse graph
    CHECK(error < 1.0);         // but a useful one
    CHECK(error <= previous_error * 1.05);
    CHECK(snap.influence_bytes() > previous_bytes);
    CHECK(snap.influence_bytes() <= exact.influence_bytes());
    previous_error = error;
    previous_bytes = snap.influence_bytes();
  }
}

TEST_CASE("SnAp rejects bad options", "[snap][errors]") {
  Model<double> model(EgruCell<double>(3, 2));
  REQUIRE_THROWS_WITH(Snap<double>(model, 0), Catch::Matchers::Contains("order must be >= 1, received 0"));
  Snap<double> snap(model, 1);
  REQUIRE_THROWS_WITH(snap.step(Eigen::VectorXd::Zero(5)), Catch::Matchers::Contains("sparse_rtrl::Snap::step()"));
}

TEMPLATE_TEST_CASE("SnAp of any order is cheap: the reach set stops growing at the graph's diameter", "[snap]", float, double) {
  using S = TestType;
  const Index n = 32, d = 3, T = 40;
  const auto mask = ParameterMask::random(n, d, 1.0, 0.1, 71);
  EgruCell<S> cell(test::firing_parameters<S>(n, d, 72), CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.5)));
  const auto start = std::chrono::steady_clock::now();
  Model<S> model(cell, mask);
  Snap<S> unbounded(model, std::numeric_limits<int>::max());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(seconds < 5.0);  // before: INT_MAX hops of an O(n^2) sweep per unit, hours
  CHECK(unbounded.order() == std::numeric_limits<int>::max());
  Snap<S> full(model, int(n));
  for (Index u = 0; u < n; ++u) REQUIRE(unbounded.kept_rows(u) == full.kept_rows(u));
  const Mat<S> X = test::random_matrix<S>(T, d, 73), G = test::random_matrix<S>(T, n, 74);
  const auto g_full = test::rtrl_gradient(full, X, G);
  const auto g_unbounded = test::rtrl_gradient(unbounded, X, G);
  CHECK(test::relative_error(g_unbounded, g_full) == 0.0);
}

TEMPLATE_TEST_CASE("A refused Snap step leaves the learner bitwise unchanged", "[snap][errors]", float, double) {
  // Issue 20, item 9: the refusal used to leave NaN in output(), events() and the step cache.
  using S = TestType;
  const Index n = 5, d = 3;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(n, d, 41)));
  Snap<S> snap(model, 2);
  const Mat<S> X = test::random_matrix<S>(4, d, 42);
  for (Index t = 0; t < 3; ++t) snap.step(X.row(t));
  const auto before = snap.stage_state();
  const test::Vec<S> y = snap.output(), o = snap.events();
  model.parameters().W(0, 0) = std::numeric_limits<S>::quiet_NaN();
  REQUIRE_THROWS_WITH(snap.step(X.row(3)), Catch::Matchers::Contains("W must be finite"));
  const auto after = snap.stage_state();
  CHECK(test::same_bits(after.step_cache(0), before.step_cache(0)));
  CHECK(test::same_bits(after.state(0), before.state(0)));
  CHECK(test::same_bits(after.influence(0), before.influence(0)));
  CHECK(test::same_bits(snap.output(), y));
  CHECK(test::same_bits(snap.events(), o));
  CHECK(after.steps_valid);
  CHECK(after.steps == 3);
  snap.accumulate_gradient(test::Vec<S>::Ones(n));  // the last successful step still takes a loss
}

TEMPLATE_TEST_CASE("Snap refuses, before allocating, kept entries that exceed the machine's memory",
                   "[snap][errors]", float, double) {
  // Issue 20, item 6: SnAp-1000 of n = 3000 was OOM-killed at 24 GB. The memory is stood in for
  // by a small limit (detail::memory_limit_for_tests): dense SnAp-n at a covering order keeps
  // n x P entries, 24 x 2040 here (196 kB in float), SnAp-1 only P.
  using S = TestType;
  using Catch::Matchers::Contains;
  struct Restore {
    ~Restore() { detail::memory_limit_for_tests() = 0; }
  } restore;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(24, 2, 43)));
  detail::memory_limit_for_tests() = 100000;
  REQUIRE_THROWS_AS(Snap<S>(model, 30), std::length_error);
  CHECK_THROWS_WITH(Snap<S>(model, 30), Contains("sparse_rtrl::Snap::Snap()") && Contains("SnAp-30") &&
                                            Contains("24 units") && Contains("order 30") && Contains("GB"));
  // The same limit, through the same check, for exact RTRL (n x P, as large).
  CHECK_THROWS_AS(Rtrl<S>(model), std::length_error);
  Snap<S> small(model, 1);  // 1 row per parameter: fits
  small.step(test::Vec<S>::Constant(2, S(0.5)));
  detail::memory_limit_for_tests() = 0;
  Snap<S> full(model, 30);  // the real machine holds it
  CHECK(full.kept_entries() == 24 * full.columns());
}

TEMPLATE_TEST_CASE("Snap::restore_state refuses non-finite values and absurd step counts, naming the entry",
                   "[snap][checkpoint][errors]", float, double) {
  // Issue 20, items 4 and 14.
  using S = TestType;
  using Catch::Matchers::Contains;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(4, 2, 44)));
  Snap<S> snap(model, 2);
  snap.step(test::Vec<S>::Constant(2, S(0.5)));
  const auto before = snap.stage_state();
  const S nan = std::numeric_limits<S>::quiet_NaN();
  auto refused = [&](auto edit, const char* entry) {
    auto st = snap.stage_state();
    edit(st);
    CHECK_THROWS_WITH(snap.restore_state(std::move(st)), Contains("Snap::restore_state()") && Contains(entry));
    const auto now = snap.stage_state();
    CHECK(test::same_bits(now.influence(0), before.influence(0)));
    CHECK(test::same_bits(now.gradient(), before.gradient()));
    CHECK(now.steps == before.steps);
  };
  refused([&](auto& st) { st.write_influence(0, 3, &nan, 1); }, "l0/kept must be finite");
  refused([&](auto& st) { st.step_cache(0).decay(1) = nan; }, "l0/cache/decay must be finite");
  refused([&](auto& st) { st.state(0)(0) = nan; }, "l0/state must be finite");
  refused([&](auto& st) { st.gradient()(0) = nan; }, "gradient must be finite");
  refused([&](auto& st) { st.steps = std::numeric_limits<Index>::max(); }, "steps must be in [0, 2^53");
}

TEMPLATE_TEST_CASE("A moved-from Snap throws std::logic_error on use", "[snap][errors]", float, double) {
  using S = TestType;
  using Catch::Matchers::Contains;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(4, 2, 45)));
  Snap<S> a(model, 1);
  Snap<S> b(std::move(a));
  CHECK_THROWS_WITH(a.step(test::Vec<S>::Constant(2, S(0.5))), Contains("used after move"));
  CHECK_THROWS_WITH(a.output(), Contains("used after move"));
  CHECK_THROWS_WITH(a.gradient(), Contains("used after move"));
  CHECK_THROWS_WITH(a.reset(), Contains("used after move"));
  b.step(test::Vec<S>::Constant(2, S(0.5)));
}
