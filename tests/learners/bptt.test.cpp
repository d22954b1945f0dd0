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

// ---------------------------------------------------------------------------------------------
// Stacks (model.md, "Stacked layers"): layer k reads y^{k-1}_t; one gradient per layer.

namespace {

/// A random stack d -> sizes[0] -> ... with masks on W and R of every layer; in events mode,
/// units that fire and stay silent (firing_parameters; the tests assert both, layer by layer).
template <typename S>
struct RandomStack {
  std::vector<EgruCell<S>> cells;
  std::vector<ParameterMask> masks;
};

template <typename S>
RandomStack<S> random_stack(Index d, const std::vector<Index>& sizes, bool events, std::uint64_t seed,
                            TriangularSurrogate<S> sg = TriangularSurrogate<S>()) {
  RandomStack<S> s;
  Index inputs = d;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    const Index n = sizes[k];
    auto p = events ? test::firing_parameters<S>(n, inputs, seed + 10 * k) : init_torch_like<S>(n, inputs, {seed + 10 * k, S(0.3)});
    if (!events) p.W *= S(2);  // enough input drive that every layer's gates are far from linear
    if (events && k > 0) p.W *= S(2);  // event outputs are sparse inputs: drive upper layers to fire too
    s.cells.emplace_back(p, CellOptions{events}, sg);
    s.masks.push_back(ParameterMask::random(n, inputs, 0.7, 0.5, seed + 10 * k + 5));
    inputs = n;
  }
  return s;
}

/// L = sum_k <G_k, y^k> by a forward pass only (empty G_k: no loss on layer k).
double stack_loss(const RandomStack<double>& s, const Mat<double>& X, const std::vector<Mat<double>>& G,
                  const std::vector<Eigen::VectorXd>* c0 = nullptr) {
  Model<double> model(s.cells, s.masks);
  Bptt<double> b(model);
  if (c0)
    b.forward(X, *c0);
  else
    b.forward(X);
  double l = 0;
  for (std::size_t k = 0; k < G.size(); ++k)
    if (G[k].size() > 0) l += (b.outputs(Index(k)).array() * G[k].array()).sum();
  return l;
}

/// Central finite differences of stack_loss in every parameter of every layer (a masked weight
/// is re-zeroed by the model, so its difference is exactly 0).
std::vector<EgruParameters<double>> stack_finite_differences(const RandomStack<double>& s, const Mat<double>& X,
                                                             const std::vector<Mat<double>>& G, double h) {
  std::vector<EgruParameters<double>> fd;
  for (std::size_t m = 0; m < s.cells.size(); ++m) {
    const auto& p = s.cells[m].parameters();
    EgruParameters<double> g(p.units(), p.inputs());
    auto diff = [&](auto select) {
      RandomStack<double> plus = s, minus = s;
      select(plus.cells[m].parameters()) += h;
      select(minus.cells[m].parameters()) -= h;
      return (stack_loss(plus, X, G) - stack_loss(minus, X, G)) / (2 * h);
    };
    using P = EgruParameters<double>;
    for (Index i = 0; i < 3 * p.units(); ++i) {
      for (Index j = 0; j < p.inputs(); ++j) g.W(i, j) = diff([&](P& q) -> double& { return q.W(i, j); });
      for (Index j = 0; j < p.units(); ++j) g.R(i, j) = diff([&](P& q) -> double& { return q.R(i, j); });
      g.bW(i) = diff([&](P& q) -> double& { return q.bW(i); });
      g.bR(i) = diff([&](P& q) -> double& { return q.bR(i); });
    }
    for (Index i = 0; i < p.units(); ++i) g.theta(i) = diff([&](P& q) -> double& { return q.theta(i); });
    fd.push_back(std::move(g));
  }
  return fd;
}

std::vector<Mat<double>> stack_losses(const std::vector<Index>& sizes, Index T, std::uint64_t seed) {
  std::vector<Mat<double>> G;
  for (std::size_t k = 0; k < sizes.size(); ++k) G.push_back(test::random_matrix<double>(T, sizes[k], seed + k));
  return G;
}

/// Events (o = 1) and silences (o = 0) of layer k over the last forward(): both must occur.
template <typename S>
std::pair<Index, Index> fired_and_silent(const Bptt<S>& b, Index k) {
  Index fired = 0, silent = 0;
  for (Index t = 0; t < b.length(); ++t) {
    const auto& o = b.step_cache(k, t).o;
    fired += (o.array() != S(0)).count();
    silent += (o.array() == S(0)).count();
  }
  return {fired, silent};
}

}  // namespace

TEST_CASE("Stacked BPTT gradient equals central finite differences in GRU mode (2 and 3 layers, masks)",
          "[bptt][stack][gru]") {
  const std::vector<std::vector<Index>> stacks = {{5, 4}, {6, 3, 5}};
  for (std::size_t which = 0; which < stacks.size(); ++which) {
    const auto& sizes = stacks[which];
    const Index L = Index(sizes.size()), d = 3 + Index(which), T = 12;
    INFO("L = " << L);
    const auto s = random_stack<double>(d, sizes, false, 700 + 50 * which);
    const Mat<double> X = test::random_matrix<double>(T, d, 710 + which);
    std::vector<Mat<double>> G = stack_losses(sizes, T, 720 + 10 * which);
    if (L == 3) G[1] = Mat<double>();  // no loss on the middle layer: its gradient comes from above only
    Model<double> model(s.cells, s.masks);
    REQUIRE(model.layers() == L);
    for (Index k = 0; k < L; ++k) REQUIRE(!model.mask(k).all_kept());
    Bptt<double> bptt(model);
    const Mat<double> top = bptt.forward(X);
    CHECK(top == bptt.outputs(L - 1));
    const auto g = bptt.backward(G);
    REQUIRE(Index(g.size()) == L);
    const auto fd = stack_finite_differences(s, X, G, 1e-6);
    for (Index k = 0; k < L; ++k) {
      INFO("layer " << k);
      const auto& gk = g[std::size_t(k)];
      const auto& fk = fd[std::size_t(k)];
      CHECK(gk.W.norm() > 0);
      CHECK(test::relative_error(gk.W, fk.W) <= 1e-6);
      CHECK(test::relative_error(gk.R, fk.R) <= 1e-6);
      CHECK(test::relative_error(gk.bW, fk.bW) <= 1e-6);
      CHECK(test::relative_error(gk.bR, fk.bR) <= 1e-6);
      CHECK(gk.theta.isZero(0));
      CHECK(fk.theta.isZero(0));
      CHECK(model.mask(k).respected_by(gk));  // pruned W and R entries: exactly zero
    }

    // Initial states, one per layer: dL/dc^k_0 against finite differences.
    std::vector<Eigen::VectorXd> c0;
    for (Index k = 0; k < L; ++k) c0.push_back(test::random_matrix<double>(sizes[std::size_t(k)], 1, 730 + k));
    bptt.forward(X, c0);
    const auto g0 = bptt.backward(G);
    CHECK(test::relative_error(g0[0].W, g[0].W) > 0);  // another sequence: another gradient
    for (Index k = 0; k < L; ++k) {
      INFO("initial state of layer " << k);
      Eigen::VectorXd fd0(sizes[std::size_t(k)]);
      for (Index i = 0; i < fd0.size(); ++i) {
        auto plus = c0, minus = c0;
        plus[std::size_t(k)](i) += 1e-6;
        minus[std::size_t(k)](i) -= 1e-6;
        fd0(i) = (stack_loss(s, X, G, &plus) - stack_loss(s, X, G, &minus)) / 2e-6;
      }
      CHECK(test::relative_error(bptt.initial_state_gradient(k), fd0) <= 1e-6);
    }
    CHECK(bptt.initial_state_gradient() == bptt.initial_state_gradient(0));
  }
}

TEST_CASE("Stacked BPTT in events mode equals finite differences where no event flips (flat surrogate)",
          "[bptt][stack]") {
  // gamma = 0: psi = 0 at every state, so the exact gradient is the one of the piecewise-smooth
  // loss, which central differences see as long as no event flips for tiny h. It checks the
  // gating between layers: a silent unit of layer k - 1 passes neither value nor gradient.
  const std::vector<std::vector<Index>> stacks = {{6, 5}, {7, 4, 6}};
  const TriangularSurrogate<double> flat(0.0, 1.0);
  for (std::size_t which = 0; which < stacks.size(); ++which) {
    const auto& sizes = stacks[which];
    const Index L = Index(sizes.size()), d = 3, T = 25;
    INFO("L = " << L);
    const auto s = random_stack<double>(d, sizes, true, 800 + 50 * which, flat);
    const Mat<double> X = test::random_matrix<double>(T, d, 810 + which);
    const std::vector<Mat<double>> G = stack_losses(sizes, T, 820 + 10 * which);
    Model<double> model(s.cells, s.masks);
    for (bool exploit : {false, true}) {
      INFO("exploit_events = " << exploit);
      Bptt<double> bptt(model, BpttOptions{exploit});
      bptt.forward(X);
      for (Index k = 0; k < L; ++k) {
        INFO("layer " << k);
        const auto fs = fired_and_silent(bptt, k);
        CHECK(fs.first > 0);   // events ...
        CHECK(fs.second > 0);  // ... and silences in every layer
      }
      const auto g = bptt.backward(G);
      const auto fd = stack_finite_differences(s, X, G, 1e-7);
      for (Index k = 0; k < L; ++k) {
        INFO("layer " << k);
        const auto& gk = g[std::size_t(k)];
        const auto& fk = fd[std::size_t(k)];
        CHECK(gk.W.norm() > 0);
        CHECK(gk.theta.norm() > 0);
        CHECK(test::relative_error(gk.W, fk.W) <= 1e-6);
        CHECK(test::relative_error(gk.R, fk.R) <= 1e-6);
        CHECK(test::relative_error(gk.bW, fk.bW) <= 1e-6);
        CHECK(test::relative_error(gk.bR, fk.bR) <= 1e-6);
        CHECK(test::relative_error(gk.theta, fk.theta) <= 1e-6);
        CHECK(model.mask(k).respected_by(gk));
      }
    }
  }
}

TEMPLATE_TEST_CASE("Stacked BPTT: the top layer is the one-layer BPTT of the layer below's outputs, event-sparse "
                   "equals dense with the work counted",
                   "[bptt][stack][sparse]", float, double) {
  using S = TestType;
  const std::vector<Index> sizes = {10, 7, 8};
  const Index L = 3, d = 4, T = 60;
  const auto s = random_stack<S>(d, sizes, true, 900, TriangularSurrogate<S>(S(1), S(0.3)));
  const Mat<S> X = test::random_matrix<S>(T, d, 901);
  std::vector<Mat<S>> G;
  for (Index k = 0; k < L; ++k) G.push_back(test::random_matrix<S>(T, sizes[std::size_t(k)], 902 + k));
  Model<S> model(s.cells, s.masks);
  Bptt<S> dense(model), sparse(model, BpttOptions{true});
  const Mat<S> Yd = dense.forward(X);
  CHECK(sparse.forward(X) == Yd);  // skipping exact zeros changes no bit
  for (Index k = 0; k < L; ++k) {
    INFO("layer " << k);
    CHECK(sparse.outputs(k) == dense.outputs(k));
    const auto fs = fired_and_silent(dense, k);
    CHECK(fs.first > 0);
    CHECK(fs.second > 0);
  }
  const auto gd = dense.backward(G);
  const auto gs = sparse.backward(G);
  for (Index k = 0; k < L; ++k) {
    INFO("layer " << k);
    CHECK(test::relative_error(gs[std::size_t(k)], gd[std::size_t(k)]) <= test::Tolerance<S>::gradient);
  }

  // The top layer with a loss on it only is one layer run on the outputs of the layer below.
  Model<S> top(s.cells[2], s.masks[2]);
  Bptt<S> single(top);
  CHECK(single.forward(dense.outputs(1)) == Yd);
  const auto g_top = dense.backward(std::vector<Mat<S>>{Mat<S>(), Mat<S>(), G[2]});
  const auto g_single = single.backward(G[2]);
  CHECK(g_top[2].W == g_single.W);
  CHECK(g_top[2].R == g_single.R);
  CHECK(g_top[2].theta == g_single.theta);
  // No loss anywhere: zero gradients.
  const auto g_none = dense.backward(std::vector<Mat<S>>(3));
  for (const auto& g : g_none) CHECK(test::relative_error(g, EgruParameters<S>(g.units(), g.inputs())) == 0.0);

  // Work: count independently what the event-sparse pass must touch.
  std::uint64_t forward_fma = 0, backward_fma = 0, dense_forward = 0, dense_backward = 0, bytes = 0;
  for (Index k = 0; k < L; ++k) {
    const std::uint64_t n3 = 3 * std::uint64_t(sizes[std::size_t(k)]);
    const Index dk = k == 0 ? d : sizes[std::size_t(k - 1)], n = sizes[std::size_t(k)];
    for (Index t = 0; t < T; ++t) {
      const auto& c = sparse.step_cache(k, t);
      std::uint64_t events = 0, needed = 0, inputs = std::uint64_t(dk), inputs_needed = 0;
      for (Index j = 0; j < n; ++j) {
        events += c.y_prev(j) != S(0);
        needed += c.s_prev(j) != S(0) || c.c_prev(j) * c.psi_prev(j) != S(0);
      }
      if (k > 0) {
        const auto& below = sparse.step_cache(k - 1, t);
        inputs = 0;
        for (Index j = 0; j < dk; ++j) {
          inputs += c.x(j) != S(0);
          inputs_needed += below.s(j) != S(0) || below.c(j) * below.psi(j) != S(0);
        }
      }
      forward_fma += n3 * (std::uint64_t(dk) + events);
      backward_fma += n3 * (inputs + events + needed + inputs_needed);
      dense_forward += n3 * std::uint64_t(dk + n);
      dense_backward += n3 * std::uint64_t((k > 0 ? 2 * dk : dk) + 2 * n);
    }
    bytes += std::uint64_t(T) * sizeof(S) * std::uint64_t(dk + 15 * n + 4 * 3 * n);
  }
  const auto& w = sparse.work();
  CHECK(w.steps == std::uint64_t(T));
  CHECK(w.forward_fma == forward_fma);
  CHECK(w.backward_fma == backward_fma);
  CHECK(w.dense_forward_fma == dense_forward);
  CHECK(w.dense_backward_fma == dense_backward);
  CHECK(w.backward_fma < w.dense_backward_fma);
  CHECK(dense.work().backward_fma == dense.work().dense_backward_fma);
  CHECK(sparse.history_bytes() == bytes);
}

TEMPLATE_TEST_CASE("One layer: the per-layer API equals the single-layer API bit for bit (events mode)",
                   "[bptt][stack]", float, double) {
  using S = TestType;
  const Index n = 9, d = 4, T = 50;
  const auto s = random_stack<S>(d, {n}, true, 950);
  const Mat<S> X = test::random_matrix<S>(T, d, 951), G = test::random_matrix<S>(T, n, 952),
               GE = test::random_matrix<S>(T, n, 953);
  Model<S> model(s.cells[0], s.masks[0]);
  REQUIRE(!model.mask().all_kept());
  for (bool exploit : {false, true}) {
    INFO("exploit_events = " << exploit);
    Bptt<S> b(model, BpttOptions{exploit});
    const Mat<S> Y = b.forward(X);
    CHECK(b.outputs(0) == Y);
    const auto fs = fired_and_silent(b, 0);
    CHECK(fs.first > 0);
    CHECK(fs.second > 0);
    for (Index t : {Index(0), T - 1}) CHECK(&b.step_cache(t) == &b.step_cache(0, t));
    auto same = [](const EgruParameters<S>& a, const EgruParameters<S>& c) {
      return a.W == c.W && a.R == c.R && a.bW == c.bW && a.bR == c.bR && a.theta == c.theta;
    };
    const auto g_old = b.backward(G);
    const test::Vec<S> c0_grad = b.initial_state_gradient();
    const auto g_new = b.backward(std::vector<Mat<S>>{G});
    REQUIRE(g_new.size() == 1);
    CHECK(same(g_new[0], g_old));
    CHECK(b.initial_state_gradient(0) == c0_grad);
    CHECK(g_old.theta.norm() > 0);
    const auto ge_old = b.backward(G, GE);
    const auto ge_new = b.backward(std::vector<Mat<S>>{G}, std::vector<Mat<S>>{GE});
    CHECK(same(ge_new[0], ge_old));
    CHECK(!same(ge_old, g_old));
    // forward(X, c0) and forward(X, {c0}) are one run.
    const test::Vec<S> c0 = test::random_matrix<S>(n, 1, 954);
    const Mat<S> Y1 = b.forward(X, c0);
    const auto g1 = b.backward(G);
    CHECK(b.forward(X, std::vector<test::Vec<S>>{c0}) == Y1);
    CHECK(same(b.backward(std::vector<Mat<S>>{G})[0], g1));
  }
}

TEST_CASE("Stacked BPTT rejects bad input", "[bptt][stack][errors]") {
  using Catch::Matchers::Contains;
  const auto s = random_stack<double>(2, {3, 4}, true, 990);
  Model<double> model(s.cells, s.masks);
  Bptt<double> b(model);
  const Index T = 5;
  const Mat<double> G0 = Mat<double>::Zero(T, 3), G1 = Mat<double>::Zero(T, 4);
  REQUIRE_THROWS_WITH(b.backward(std::vector<Mat<double>>{G0, G1}), Contains("call forward() first"));
  REQUIRE_THROWS_AS(b.step_cache(0, 0), std::out_of_range);
  const Mat<double> X = test::random_matrix<double>(T, 2, 991);
  CHECK(b.forward(X).cols() == 4);
  CHECK(b.outputs().cols() == 4);
  CHECK(b.outputs(0).cols() == 3);
  CHECK(b.layers() == 2);
  CHECK(b.units() == 4);
  CHECK(b.units(0) == 3);
  CHECK(b.inputs() == 2);

  // One gradient cannot hold a stack's.
  REQUIRE_THROWS_AS(b.backward(G1), std::logic_error);
  REQUIRE_THROWS_WITH(b.backward(G1), Contains("sparse_rtrl::Bptt::backward()") && Contains("L = 2") &&
                                           Contains("backward(std::vector<Matrix> G_layers)"));
  REQUIRE_THROWS_AS(b.backward(G1, G1), std::logic_error);

  // Counts and shapes.
  REQUIRE_THROWS_AS(b.backward(std::vector<Mat<double>>{G1}), std::invalid_argument);
  REQUIRE_THROWS_WITH(b.backward(std::vector<Mat<double>>{G1}),
                      Contains("G_layers must hold one matrix per layer (L = 2), received 1"));
  REQUIRE_THROWS_WITH(b.backward(std::vector<Mat<double>>{G0, G1, G1}), Contains("received 3"));
  REQUIRE_THROWS_AS(b.backward(std::vector<Mat<double>>{G1, G1}), std::invalid_argument);
  REQUIRE_THROWS_WITH(b.backward(std::vector<Mat<double>>{G1, G1}),
                      Contains("G_layers[0] must be 5 x 3") && Contains("received 5 x 4"));
  REQUIRE_THROWS_WITH(b.backward(std::vector<Mat<double>>{G0, Mat<double>::Zero(T + 1, 4)}),
                      Contains("G_layers[1] must be 5 x 4") && Contains("received 6 x 4"));
  Mat<double> bad = G1;
  bad(1, 2) = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(b.backward(std::vector<Mat<double>>{G0, bad}), Contains("G_layers[1] must be finite"));
  REQUIRE_THROWS_WITH(b.backward(std::vector<Mat<double>>{G0, G1}, std::vector<Mat<double>>{G0}),
                      Contains("G_events_layers must hold one matrix per layer (L = 2), received 1"));
  REQUIRE_THROWS_WITH(b.backward(std::vector<Mat<double>>{G0, G1}, std::vector<Mat<double>>{G0, G0}),
                      Contains("G_events_layers[1] must be 5 x 4"));
  CHECK(b.backward(std::vector<Mat<double>>{G0, G1}, std::vector<Mat<double>>{Mat<double>(), G1}).size() == 2);

  // Initial states: one per layer.
  REQUIRE_THROWS_AS(b.forward(X, Eigen::VectorXd::Zero(3)), std::invalid_argument);
  REQUIRE_THROWS_WITH(b.forward(X, Eigen::VectorXd::Zero(3)), Contains("one per layer"));
  REQUIRE_THROWS_WITH(b.forward(X, std::vector<Eigen::VectorXd>{Eigen::VectorXd::Zero(3)}),
                      Contains("c0 must hold one initial state per layer (L = 2), received 1"));
  REQUIRE_THROWS_WITH(b.forward(X, std::vector<Eigen::VectorXd>{Eigen::VectorXd::Zero(3), Eigen::VectorXd::Zero(3)}),
                      Contains("c0[1] must be a vector of size 4"));
  REQUIRE_THROWS_WITH(b.forward(Mat<double>::Zero(T, 3)), Contains("T x 2"));

  // Layers and steps out of range.
  b.forward(X);
  REQUIRE_THROWS_WITH(b.outputs(2),
                      Contains("sparse_rtrl::Bptt::outputs()") && Contains("[0, 2)") && Contains("received 2"));
  REQUIRE_THROWS_AS(b.step_cache(2, 0), std::out_of_range);
  REQUIRE_THROWS_AS(b.step_cache(-1, 0), std::out_of_range);
  REQUIRE_THROWS_WITH(b.step_cache(1, T), Contains("[0, 5)"));
  REQUIRE_THROWS_AS(b.initial_state_gradient(2), std::out_of_range);
  CHECK(b.step_cache(1, T - 1).x.size() == 3);

  // A model given another number of layers since forward(): refused, not read out of bounds.
  const auto s3 = random_stack<double>(2, {3, 4, 2}, true, 995);
  model = Model<double>(s3.cells, s3.masks);
  REQUIRE_THROWS_AS(b.backward(std::vector<Mat<double>>{G0, G1, Mat<double>::Zero(T, 2)}), std::logic_error);
  REQUIRE_THROWS_WITH(b.backward(std::vector<Mat<double>>{G0, G1, Mat<double>::Zero(T, 2)}),
                      Contains("run forward() again"));
  CHECK(b.forward(X).cols() == 2);
  CHECK(b.backward(std::vector<Mat<double>>{G0, G1, Mat<double>::Zero(T, 2)}).size() == 3);
}

TEMPLATE_TEST_CASE("Bptt refuses a non-finite parameter, naming it", "[bptt][errors]", float, double) {
  // Issue 20, item 11: forward() used to return NaN outputs silently.
  using S = TestType;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(4, 3, 31)));
  Bptt<S> bptt(model);
  const Mat<S> X = test::random_matrix<S>(6, 3, 32);
  model.parameters().bR(5) = std::numeric_limits<S>::quiet_NaN();
  REQUIRE_THROWS_WITH(bptt.forward(X), Catch::Matchers::Contains("sparse_rtrl::Bptt::forward()") &&
                                           Catch::Matchers::Contains("bR must be finite"));
  CHECK(bptt.length() == 0);
  REQUIRE_THROWS_AS(bptt.backward(Mat<S>::Zero(6, 4)), std::logic_error);  // no half-run sequence
  model.parameters().bR(5) = S(0);
  CHECK(bptt.forward(X).allFinite());
}

TEMPLATE_TEST_CASE("A moved-from Bptt throws std::logic_error on use", "[bptt][errors]", float, double) {
  // Issue 20, item 16.
  using S = TestType;
  using Catch::Matchers::Contains;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(4, 2, 33)));
  Bptt<S> a(model);
  Bptt<S> b(std::move(a));
  const Mat<S> X = test::random_matrix<S>(3, 2, 34);
  CHECK_THROWS_WITH(a.forward(X), Contains("used after move"));
  CHECK_THROWS_WITH(a.outputs(), Contains("used after move"));
  CHECK_THROWS_WITH(a.units(), Contains("used after move"));
  CHECK_THROWS_WITH(a.model(), Contains("used after move"));
  CHECK_THROWS_WITH(a.backward(Mat<S>::Zero(3, 4)), Contains("used after move"));
  CHECK_THROWS_WITH(a.step_cache(0), Contains("used after move"));
  CHECK(b.forward(X).rows() == 3);
}
