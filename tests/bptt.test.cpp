// BPTT: finite differences in GRU mode, a plain forward reference in events mode, masks, errors.
#include "test_support.hpp"

#include <cmath>

using namespace sparse_rtrl;
using test::Mat;

namespace {

// Loss L = sum_t <G_t, y_t> by a forward pass only.
double loss(const EgruParameters<double>& p, bool events, const Mat<double>& X, const Mat<double>& G,
            TriangularSurrogate<double> sg = TriangularSurrogate<double>()) {
  Model<double> model(EgruCell<double>(p, CellOptions{events}, sg));
  Bptt<double> b(model);
  return (b.forward(X).array() * G.array()).sum();
}

}  // namespace

TEST_CASE("BPTT gradient equals central finite differences in GRU mode", "[bptt][gru]") {
  const Index n = 5, d = 3, T = 15;
  const auto p = init_torch_like<double>(n, d, {11, 0.3});
  const Mat<double> X = test::random_matrix<double>(T, d, 12), G = test::random_matrix<double>(T, n, 13);
  Model<double> model(EgruCell<double>(p, CellOptions{false}));
  Bptt<double> bptt(model);
  bptt.forward(X);
  const auto g = bptt.backward(G);

  EgruParameters<double> fd(n, d);
  const double h = 1e-6;
  auto perturb = [&](auto member, Index i, Index j) {
    EgruParameters<double> plus = p, minus = p;
    (plus.*member)(i, j) += h;
    (minus.*member)(i, j) -= h;
    return (loss(plus, false, X, G) - loss(minus, false, X, G)) / (2 * h);
  };
  for (Index i = 0; i < 3 * n; ++i) {
    for (Index k = 0; k < d; ++k) fd.W(i, k) = perturb(&EgruParameters<double>::W, i, k);
    for (Index j = 0; j < n; ++j) fd.R(i, j) = perturb(&EgruParameters<double>::R, i, j);
    fd.bW(i) = perturb(&EgruParameters<double>::bW, i, 0);
    fd.bR(i) = perturb(&EgruParameters<double>::bR, i, 0);
  }
  CHECK(test::relative_error(g.W, fd.W) <= 1e-6);
  CHECK(test::relative_error(g.R, fd.R) <= 1e-6);
  CHECK(test::relative_error(g.bW, fd.bW) <= 1e-6);
  CHECK(test::relative_error(g.bR, fd.bR) <= 1e-6);
  CHECK(g.theta.isZero(0));
}

TEST_CASE("BPTT initial-state gradient equals finite differences (GRU mode)", "[bptt][gru]") {
  const Index n = 4, d = 2, T = 10;
  const auto p = init_torch_like<double>(n, d, {14, 0.3});
  const Mat<double> X = test::random_matrix<double>(T, d, 15), G = test::random_matrix<double>(T, n, 16);
  const Eigen::VectorXd c0 = test::random_matrix<double>(n, 1, 17);
  Model<double> model(EgruCell<double>(p, CellOptions{false}));
  Bptt<double> b(model);
  b.forward(X, c0);
  b.backward(G);
  const Eigen::VectorXd g0 = b.initial_state_gradient();
  Eigen::VectorXd fd(n);
  for (Index i = 0; i < n; ++i) {
    Eigen::VectorXd plus = c0, minus = c0;
    plus(i) += 1e-6;
    minus(i) -= 1e-6;
    Model<double> model_fd(EgruCell<double>(p, CellOptions{false}));
    Bptt<double> bp(model_fd);
    const double lp = (bp.forward(X, plus).array() * G.array()).sum();
    const double lm = (bp.forward(X, minus).array() * G.array()).sum();
    fd(i) = (lp - lm) / 2e-6;
  }
  CHECK(test::relative_error(g0, fd) <= 1e-6);
}

TEST_CASE("GRU mode forward equals a two-step example computed by hand", "[bptt][gru][cell]") {
  // n = 1, d = 1: W = (0.5, -0.3, 0.8), R = (0.2, 0.4, -0.6), bW = (0.1, 0, -0.1),
  // bR = (0, 0.2, 0.05); x = (1, -2); h0 = 0. Worked out step by step (Python floats):
  // Step 1: q = bR; r = s(0.6) = 0.6456563062257954, z = s(-0.1) = 0.47502081252106,
  //   g = tanh(0.7 + r * 0.05) = 0.6244599661245945, h1 = (1 - z) g = 0.32782848562921607.
  // Step 2: a = (-0.9, 0.6, -1.7), q = R h1 + bR = (0.06556569712584322, 0.3311313942516865,
  //   -0.14669709137752962); r = s(a_r + q_r) = 0.30270827734899214,
  //   z = s(a_z + q_z) = 0.7173047644745011, g = tanh(a_g + r q_g) = -0.9407355586320274,
  //   h2 = (1 - z) g + z h1 = -0.030788525642395592.
  EgruParameters<double> p(1, 1);
  p.W << 0.5, -0.3, 0.8;
  p.R << 0.2, 0.4, -0.6;
  p.bW << 0.1, 0.0, -0.1;
  p.bR << 0.0, 0.2, 0.05;
  Model<double> model(EgruCell<double>(p, CellOptions{false}));
  Bptt<double> b(model);
  Mat<double> X(2, 1);
  X << 1.0, -2.0;
  const Mat<double> Y = b.forward(X);
  CHECK(Y(0, 0) == Approx(0.32782848562921607).epsilon(1e-14));
  CHECK(Y(1, 0) == Approx(-0.030788525642395592).epsilon(1e-13));
}

TEST_CASE("Events-mode forward equals a plain transcription of model.md", "[bptt][cell]") {
  const Index n = 6, d = 3, T = 40;
  const auto p = test::firing_parameters<double>(n, d, 41);
  const Mat<double> X = test::random_matrix<double>(T, d, 42);
  Model<double> model(EgruCell<double>(p, CellOptions{true}));
  Bptt<double> b(model);
  const Mat<double> Y = b.forward(X);

  // Reference written from the equations, scalar loops only.
  std::vector<double> c(n, 0.0);
  Index fired = 0;
  for (Index t = 0; t < T; ++t) {
    std::vector<double> y(n), h(n), cn(n);
    for (Index i = 0; i < n; ++i) {
      const double o = c[i] - p.theta(i) > 0 ? 1.0 : 0.0;
      y[i] = o * c[i];
      h[i] = c[i] - o * p.theta(i);
    }
    for (Index i = 0; i < n; ++i) {
      double a[3], q[3];
      for (int gate = 0; gate < 3; ++gate) {
        a[gate] = p.bW(gate * n + i);
        q[gate] = p.bR(gate * n + i);
        for (Index k = 0; k < d; ++k) a[gate] += p.W(gate * n + i, k) * X(t, k);
        for (Index j = 0; j < n; ++j) q[gate] += p.R(gate * n + i, j) * y[j];
      }
      const double r = 1.0 / (1.0 + std::exp(-(a[0] + q[0])));
      const double z = 1.0 / (1.0 + std::exp(-(a[1] + q[1])));
      const double g = std::tanh(a[2] + r * q[2]);
      cn[i] = z * h[i] + (1.0 - z) * g;
    }
    c = cn;
    for (Index i = 0; i < n; ++i) {
      const double o = c[i] - p.theta(i) > 0 ? 1.0 : 0.0;
      fired += Index(o);
      CHECK(Y(t, i) == Approx(o * c[i]).margin(1e-14));
    }
  }
  CHECK(fired > 0);
}

TEST_CASE("BPTT theta gradient equals finite differences where no event flips", "[bptt]") {
  // With H's true derivative zero, finite differences see only the soft-reset and output paths
  // when psi is zero at every visited state; choosing gamma = 0 makes psi zero everywhere, so
  // BPTT's theta gradient must then equal finite differences exactly (no event flips for tiny h).
  const Index n = 5, d = 2, T = 30;
  const auto p = test::firing_parameters<double>(n, d, 51);
  const Mat<double> X = test::random_matrix<double>(T, d, 52), G = test::random_matrix<double>(T, n, 53);
  const TriangularSurrogate<double> flat(0.0, 1.0);
  Model<double> model(EgruCell<double>(p, CellOptions{true}, flat));
  Bptt<double> b(model);
  b.forward(X);
  const auto g = b.backward(G);
  Eigen::VectorXd fd(n);
  for (Index i = 0; i < n; ++i) {
    auto plus = p, minus = p;
    plus.theta(i) += 1e-7;
    minus.theta(i) -= 1e-7;
    fd(i) = (loss(plus, true, X, G, flat) - loss(minus, true, X, G, flat)) / 2e-7;
  }
  REQUIRE(fd.norm() > 0);
  CHECK(test::relative_error(g.theta, fd) <= 1e-6);
}

TEST_CASE("BPTT with a mask reports zero gradient for pruned weights", "[bptt][mask]") {
  const Index n = 6, d = 3, T = 20;
  const auto mask = ParameterMask::random(n, d, 0.5, 0.3, 3);
  const auto p = test::firing_parameters<double>(n, d, 61);
  Model<double> model(EgruCell<double>(p), mask);
  Bptt<double> b(model);
  REQUIRE(mask.respected_by(b.cell().parameters()));
  b.forward(test::random_matrix<double>(T, d, 62));
  const auto g = b.backward(test::random_matrix<double>(T, n, 63));
  CHECK(mask.respected_by(g));
  CHECK(g.R.norm() > 0);
}

TEST_CASE("BPTT rejects bad input", "[bptt][errors]") {
  using Catch::Matchers::Contains;
  Model<double> model(EgruCell<double>(3, 2));
  Bptt<double> b(model);
  REQUIRE_THROWS_WITH(b.backward(Mat<double>::Zero(1, 3)), Contains("call forward() first"));
  REQUIRE_THROWS_WITH(b.forward(Mat<double>::Zero(4, 3)), Contains("sparse_rtrl::Bptt::forward()") && Contains("T x 2") && Contains("4 x 3"));
  REQUIRE_THROWS_WITH(b.forward(Mat<double>::Zero(0, 2)), Contains("T >= 1"));
  Mat<double> X = Mat<double>::Zero(4, 2);
  X(2, 1) = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_WITH(b.forward(X), Contains("X must be finite"));
  b.forward(Mat<double>::Zero(4, 2));
  REQUIRE_THROWS_WITH(b.backward(Mat<double>::Zero(5, 3)), Contains("G must be 4 x 3"));
}

TEMPLATE_TEST_CASE("Event-sparse BPTT equals dense BPTT and does less work", "[bptt][sparse]", float, double) {
  using S = TestType;
  const Index n = 24, d = 4, T = 200;
  const auto mask = ParameterMask::random(n, d, 1.0, 0.5, 91);
  EgruCell<S> cell(test::firing_parameters<S>(n, d, 92), CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.2)));
  const Mat<S> X = test::random_matrix<S>(T, d, 93), G = test::random_matrix<S>(T, n, 94);
  Model<S> model(cell, mask);
  Bptt<S> dense(model), sparse(model, BpttOptions{true});
  const Mat<S> Yd = dense.forward(X);
  const Mat<S> Ys = sparse.forward(X);
  CHECK(test::relative_error(Ys, Yd) == 0.0);  // skipping exact zeros changes no bit
  const auto gd = dense.backward(G);
  const auto gs = sparse.backward(G);
  CHECK(test::relative_error(gs, gd) <= test::Tolerance<S>::gradient);
  // Independent count of the columns the sparse pass must touch.
  std::uint64_t events = 0, needed = 0;
  for (Index t = 0; t < T; ++t) {
    const auto& k = sparse.step_cache(t);
    for (Index j = 0; j < n; ++j) {
      events += k.y_prev(j) != S(0);
      needed += k.s_prev(j) != S(0) || k.c_prev(j) * k.psi_prev(j) != S(0);
    }
  }
  const auto& w = sparse.work();
  CHECK(w.forward_fma == 3 * std::uint64_t(n) * (std::uint64_t(T * d) + events));
  CHECK(w.backward_fma == 3 * std::uint64_t(n) * (std::uint64_t(T * d) + events + needed));
  CHECK(w.forward_fma < w.dense_forward_fma);
  CHECK(w.backward_fma < w.dense_backward_fma);
  CHECK(dense.work().backward_fma == dense.work().dense_backward_fma);
  CHECK(sparse.history_bytes() == std::size_t(T) * sizeof(S) * std::size_t(d + 15 * n + 4 * 3 * n));  // x, 15 n-vectors, 4 3n-vectors
}

TEMPLATE_TEST_CASE("Bptt::step_cache covers only the last forward()", "[bptt][errors]", float, double) {
  using S = TestType;
  using Catch::Matchers::Contains;
  Model<S> model(EgruCell<S>(3, 2));
  Bptt<S> b(model);
  REQUIRE_THROWS_AS(b.step_cache(0), std::out_of_range);  // no forward() yet
  b.forward(test::random_matrix<S>(50, 2, 1));
  CHECK(b.step_cache(49).c.size() == 3);
  const Mat<S> X = test::random_matrix<S>(10, 2, 2);
  b.forward(X);
  // Steps 10..49 are left over from the longer sequence: not part of this one.
  REQUIRE_THROWS_AS(b.step_cache(20), std::out_of_range);
  REQUIRE_THROWS_WITH(b.step_cache(20), Contains("sparse_rtrl::Bptt::step_cache()") && Contains("[0, 10)") && Contains("received 20"));
  REQUIRE_THROWS_WITH(b.step_cache(10), Contains("[0, 10)"));
  REQUIRE_THROWS_WITH(b.step_cache(-1), Contains("received -1"));
  CHECK(b.step_cache(9).x == X.row(9).transpose());
  CHECK(b.step_cache(9).y.transpose() == b.outputs().row(9));
}
