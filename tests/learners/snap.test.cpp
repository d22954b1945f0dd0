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
