// Exact RTRL: its gradient equals BPTT's (same surrogate) to rounding error.
#include "test_support.hpp"

#include <limits>

using namespace sparse_rtrl;
using test::Mat;

namespace {

enum class LossAt { every_step, last_step };

template <typename S>
struct Case {
  Index n, d, T;
  LossAt loss;
  S gamma, eps;
};

template <typename S>
void check_rtrl_equals_bptt(const Case<S>& c, std::uint64_t seed) {
  CAPTURE(c.n, c.d, c.T, int(c.loss), c.gamma, c.eps, seed);
  // The case must exercise events (some units fire, some stay silent) and the loss must have
  // a nonzero threshold gradient. Small networks may need a few draws to do all that; the draw
  // is deterministic and the requirements are asserted below.
  EgruCell<S> cell(test::firing_parameters<S>(c.n, c.d, seed), CellOptions{true}, TriangularSurrogate<S>(c.gamma, c.eps));
  Mat<S> X, G, Y;
  EgruParameters<S> g_ref;
  Index fired = 0, silent = 0;
  for (std::uint64_t draw = 0; draw < 50; ++draw) {
    cell = EgruCell<S>(test::firing_parameters<S>(c.n, c.d, seed + 1000 * draw), CellOptions{true}, TriangularSurrogate<S>(c.gamma, c.eps));
    X = test::random_matrix<S>(c.T, c.d, seed + 1 + 1000 * draw);
    G = test::random_matrix<S>(c.T, c.n, seed + 2 + 1000 * draw);
    if (c.loss == LossAt::last_step) G.topRows(c.T - 1).setZero();
    Model<S> draw_model(cell);
    Bptt<S> bptt(draw_model);
    Y = bptt.forward(X);
    g_ref = bptt.backward(G);
    fired = silent = 0;
    for (Index t = 0; t < c.T; ++t)
      for (Index i = 0; i < c.n; ++i) (bptt.step_cache(t).o(i) > 0 ? fired : silent)++;
    if (fired > 0 && silent > 0 && g_ref.theta.norm() > 0) break;
  }
  REQUIRE(fired > 0);
  REQUIRE(silent > 0);
  REQUIRE(g_ref.theta.norm() > 0);
  Model<S> model(cell);
  Rtrl<S> rtrl(model);
  const auto g = test::rtrl_gradient(rtrl, X, G);
  // Sparse RTRL skips event-free columns of R y: adding exact zeros, so bitwise the same forward.
  REQUIRE(test::relative_error(rtrl.output(), Y.row(c.T - 1).transpose()) == 0.0);
  CHECK(test::relative_error(g.W, g_ref.W) <= test::Tolerance<S>::gradient);
  CHECK(test::relative_error(g.R, g_ref.R) <= test::Tolerance<S>::gradient);
  CHECK(test::relative_error(g.bW, g_ref.bW) <= test::Tolerance<S>::gradient);
  CHECK(test::relative_error(g.bR, g_ref.bR) <= test::Tolerance<S>::gradient);
  CHECK(test::relative_error(g.theta, g_ref.theta) <= test::Tolerance<S>::gradient);

  // The dense-RTRL baseline (no row skipping) gives the same gradient.
  Rtrl<S> dense(model, RtrlOptions{false});
  const auto g_dense = test::rtrl_gradient(dense, X, G);
  CHECK(test::relative_error(g_dense, g_ref) <= test::Tolerance<S>::gradient);
}

}  // namespace

TEMPLATE_TEST_CASE("RTRL gradient equals BPTT gradient on random firing networks", "[rtrl]", float, double) {
  using S = TestType;
  // Surrogates: the default (0.7, 1.0), a narrow one, a tall wide one.
  const std::vector<std::pair<S, S>> surrogates = {{S(0.7), S(1.0)}, {S(1.0), S(0.25)}, {S(1.5), S(2.0)}};
  std::uint64_t seed = 100;
  for (Index n : {1, 7, 32})
    for (Index d : {1, 5})
      for (Index T : {1, 50, 300})
        for (LossAt loss : {LossAt::every_step, LossAt::last_step}) {
          const auto& sg = surrogates[std::size_t(seed % surrogates.size())];
          // n = 1, T = 1 cannot both fire and stay silent with one unit and one step.
          if (n * T < 4) {
            ++seed;
            continue;
          }
          check_rtrl_equals_bptt<S>({n, d, T, loss, sg.first, sg.second}, seed++);
        }
}

TEMPLATE_TEST_CASE("RTRL equals BPTT for every surrogate setting at n = 7", "[rtrl]", float, double) {
  using S = TestType;
  for (auto sg : std::vector<std::pair<S, S>>{{S(0.7), S(1.0)}, {S(0.3), S(1.0)}, {S(1.0), S(0.25)}, {S(1.0), S(0.05)}, {S(0.7), S(3.0)}})
    for (LossAt loss : {LossAt::every_step, LossAt::last_step})
      check_rtrl_equals_bptt<S>({7, 5, 50, loss, sg.first, sg.second}, 7);
}

TEMPLATE_TEST_CASE("RTRL in GRU mode equals BPTT and tracks no thresholds", "[rtrl][gru]", float, double) {
  using S = TestType;
  const Index n = 9, d = 4, T = 60;
  EgruCell<S> cell(n, d, InitOptions<S>{3, S(0.3)}, CellOptions{false});
  const Mat<S> X = test::random_matrix<S>(T, d, 4), G = test::random_matrix<S>(T, n, 5);
  Model<S> model(cell);
  Bptt<S> bptt(model);
  bptt.forward(X);
  const auto g_ref = bptt.backward(G);
  Rtrl<S> rtrl(model);
  REQUIRE(rtrl.layout().columns() == 3 * n * d + 3 * n * n + 6 * n);
  const auto g = test::rtrl_gradient(rtrl, X, G);
  CHECK(test::relative_error(g, g_ref) <= test::Tolerance<S>::gradient);
  CHECK(g.theta.isZero(0));
}

TEMPLATE_TEST_CASE("RTRL from a nonzero initial state, over two sequences", "[rtrl]", float, double) {
  using S = TestType;
  const Index n = 6, d = 3, T = 40;
  EgruCell<S> cell(test::firing_parameters<S>(n, d, 21));
  const Mat<S> X = test::random_matrix<S>(T, d, 22), G = test::random_matrix<S>(T, n, 23);
  const test::Vec<S> c0 = test::random_matrix<S>(n, 1, 24);
  Model<S> model(cell);
  Bptt<S> bptt(model);
  bptt.forward(X, c0);
  auto g_ref = bptt.backward(G);
  bptt.forward(X);
  g_ref += bptt.backward(G);

  Rtrl<S> rtrl(model);
  rtrl.reset(c0);
  for (Index t = 0; t < T; ++t) {
    rtrl.step(X.row(t));
    rtrl.accumulate_gradient(G.row(t));
  }
  rtrl.reset();  // a new sequence: M restarts at zero, the gradient keeps accumulating
  for (Index t = 0; t < T; ++t) {
    rtrl.step(X.row(t).transpose());  // column vectors are accepted too
    rtrl.accumulate_gradient(G.row(t).transpose());
  }
  CHECK(test::relative_error(rtrl.gradient(), g_ref) <= test::Tolerance<S>::gradient);
}

TEST_CASE("RTRL influence matrix equals finite differences of the state (GRU mode)", "[rtrl][gru]") {
  // Independent of BPTT: column p of M_T is dc_T/dparam_p, checked by central differences.
  const Index n = 4, d = 3, T = 12;
  EgruCell<double> cell(n, d, InitOptions<double>{5, 0.3}, CellOptions{false});
  const Mat<double> X = test::random_matrix<double>(T, d, 6);
  Model<double> model(cell);
  Rtrl<double> rtrl(model);
  for (Index t = 0; t < T; ++t) rtrl.step(X.row(t));
  const Mat<double> M = rtrl.influence();
  const auto& layout = rtrl.layout();
  Eigen::VectorXd theta(layout.columns());
  layout.gather(cell.parameters(), theta);
  auto final_state = [&](const Eigen::VectorXd& flat) {
    EgruParameters<double> p = cell.parameters();
    layout.scatter(flat, p);
    Model<double> perturbed(EgruCell<double>(p, CellOptions{false}));
    Rtrl<double> r(perturbed);
    for (Index t = 0; t < T; ++t) r.step(X.row(t));
    return Eigen::VectorXd(r.state());
  };
  Mat<double> M_fd(n, layout.columns());
  const double h = 1e-6;
  for (Index p = 0; p < layout.columns(); ++p) {
    Eigen::VectorXd plus = theta, minus = theta;
    plus(p) += h;
    minus(p) -= h;
    M_fd.col(p) = (final_state(plus) - final_state(minus)) / (2 * h);
  }
  CHECK(test::relative_error(M, M_fd) <= 1e-6);
}

TEST_CASE("RTRL rejects bad input with std::invalid_argument naming the function", "[rtrl][errors]") {
  EgruCell<double> cell(3, 2);
  Model<double> model(cell);
  Rtrl<double> rtrl(model);
  using Catch::Matchers::Contains;
  REQUIRE_THROWS_WITH(rtrl.accumulate_gradient(Eigen::VectorXd::Zero(3)), Contains("call step() first"));
  REQUIRE_THROWS_AS(rtrl.step(Eigen::VectorXd::Zero(3)), std::invalid_argument);
  REQUIRE_THROWS_WITH(rtrl.step(Eigen::VectorXd::Zero(3)),
                      Contains("sparse_rtrl::Rtrl::step()") && Contains("size 2") && Contains("3 x 1"));
  REQUIRE_THROWS_WITH(rtrl.step(Eigen::MatrixXd::Zero(2, 2)), Contains("vector of size 2"));
  Eigen::VectorXd bad(2);
  bad << 0.5, std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_WITH(rtrl.step(bad), Contains("finite") && Contains("nan"));
  bad(1) = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_AS(rtrl.step(bad), std::invalid_argument);
  // Rejected input leaves the learner untouched.
  REQUIRE(rtrl.steps() == 0);
  REQUIRE(rtrl.influence().isZero(0));
  rtrl.step(Eigen::VectorXd::Ones(2));
  REQUIRE_THROWS_WITH(rtrl.accumulate_gradient(Eigen::VectorXd::Zero(4)), Contains("dL_dy") && Contains("size 3"));
  Eigen::VectorXd g = Eigen::VectorXd::Zero(3);
  g(0) = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_AS(rtrl.accumulate_gradient(g), std::invalid_argument);
  REQUIRE(rtrl.gradient_columns().isZero(0));
  REQUIRE_THROWS_WITH(rtrl.reset(Eigen::VectorXd::Zero(2)), Contains("c0"));
  // The mask is checked where it is given: by the Model the learner references.
  REQUIRE_THROWS_WITH(Model<double>(cell, ParameterMask::dense(4, 2)), Contains("mask is for n = 4"));
}

TEST_CASE("RTRL work counters: dense baseline multiplies every row", "[rtrl][work]") {
  EgruCell<double> cell(test::firing_parameters<double>(8, 3, 31));
  Model<double> model(cell);
  Rtrl<double> dense(model, RtrlOptions{false});
  dense.step(Eigen::VectorXd::Ones(3));
  const auto& w = dense.last_step_work();
  const auto P = std::uint64_t(dense.layout().columns());
  CHECK(w.propagation_fma == (8 * 8 + 8) * P);
  CHECK(w.dense_propagation_fma == (8 * 8 + 8) * P);
  CHECK(dense.influence_bytes() == sizeof(double) * 8 * P);
}

TEMPLATE_TEST_CASE("RTRL gradient of a loss on events (activity regulariser) equals BPTT", "[rtrl][events]", float, double) {
  using S = TestType;
  const Index n = 10, d = 3, T = 120;
  EgruCell<S> cell(test::firing_parameters<S>(n, d, 71), CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.5)));
  const Mat<S> X = test::random_matrix<S>(T, d, 72);
  const Mat<S> G = test::random_matrix<S>(T, n, 73);
  // E.g. L_reg = lambda * sum_t (mean_i o_t,i - target)^2 has dL/do_t,i = 2 lambda (rate_t - target) / n.
  const Mat<S> G_events = test::random_matrix<S>(T, n, 74);
  Model<S> model(cell);
  Bptt<S> bptt(model);
  bptt.forward(X);
  const auto g_ref = bptt.backward(G, G_events);
  const auto g_y_only = bptt.backward(G);
  REQUIRE(test::relative_error(g_ref, g_y_only) > 1e-3);  // the event loss matters

  Rtrl<S> rtrl(model);
  for (Index t = 0; t < T; ++t) {
    rtrl.step(X.row(t));
    rtrl.accumulate_gradient(G.row(t), G_events.row(t));
  }
  CHECK(test::relative_error(rtrl.gradient(), g_ref) <= test::Tolerance<S>::gradient);

  // Events only (dL/dy = 0) through the same path.
  const auto g_events_only = bptt.backward(Mat<S>::Zero(T, n), G_events);
  rtrl.reset();
  rtrl.zero_gradient();
  for (Index t = 0; t < T; ++t) {
    rtrl.step(X.row(t));
    rtrl.accumulate_gradient(test::Vec<S>::Zero(n), G_events.row(t));
  }
  CHECK(test::relative_error(rtrl.gradient(), g_events_only) <= test::Tolerance<S>::gradient);
}

TEMPLATE_TEST_CASE("Parameters made non-finite through cell() are refused before the learner changes", "[rtrl][errors]",
                   float, double) {
  using S = TestType;
  const Index n = 6, d = 3;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(n, d, 51)));
  Rtrl<S> rtrl(model);
  const test::Vec<S> x = test::Vec<S>::Constant(d, S(0.5));
  for (int t = 0; t < 5; ++t) rtrl.step(x);
  const test::Vec<S> state = rtrl.state();
  const test::Mat<S> M = rtrl.influence();
  const Index steps = rtrl.steps();
  rtrl.cell().parameters().W(4, 1) = std::numeric_limits<S>::quiet_NaN();
  REQUIRE_THROWS_WITH(rtrl.step(x), Catch::Matchers::Contains("sparse_rtrl::Rtrl::step()") &&
                                        Catch::Matchers::Contains("W must be finite"));
  CHECK(rtrl.state() == state);
  CHECK(test::Mat<S>(rtrl.influence()) == M);
  CHECK(rtrl.steps() == steps);
  // The refused step is invisible: the last successful step's outputs may still take a loss.
  CHECK(rtrl.last_step_valid());
  rtrl.accumulate_gradient(test::Vec<S>::Ones(n));
  rtrl.cell().parameters().W(4, 1) = S(0.1);
  rtrl.step(x);
  rtrl.accumulate_gradient(test::Vec<S>::Ones(n));
  CHECK(rtrl.state().allFinite());
  CHECK(rtrl.gradient_columns().allFinite());
  rtrl.cell().parameters().theta(2) = std::numeric_limits<S>::infinity();
  REQUIRE_THROWS_WITH(rtrl.step(x), Catch::Matchers::Contains("theta must be finite"));
}

TEST_CASE("Parameters reshaped through cell() are refused, not a heap corruption", "[rtrl][errors]") {
  const Index n = 5, d = 2;
  Model<double> model(EgruCell<double>(n, d));
  Rtrl<double> rtrl(model);
  const Eigen::VectorXd x = Eigen::VectorXd::Ones(d);
  rtrl.step(x);
  auto& p = rtrl.cell().parameters();
  const auto saved = p;
  p.R.resize(3 * (n + 2), n + 2);
  p.R.setZero();
  REQUIRE_THROWS_WITH(rtrl.step(x), Catch::Matchers::Contains("sparse_rtrl::Rtrl::step()") &&
                                        Catch::Matchers::Contains("changed shape") &&
                                        Catch::Matchers::Contains("R 21 x 7"));
  p = saved;
  p.bW.resize(0);
  REQUIRE_THROWS_WITH(rtrl.step(x), Catch::Matchers::Contains("bW 0"));
  p = saved;
  rtrl.step(x);
  CHECK(rtrl.steps() == 2);
}

TEMPLATE_TEST_CASE("A state staged with its influence unset must be written in order and in full before it is restored",
                   "[rtrl][checkpoint][errors]", float, double) {
  using S = TestType;
  const Index n = 9, d = 4;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(n, d, 5), CellOptions{true}), ParameterMask::random(n, d, 0.6, 0.6, 6));
  Rtrl<S> rtrl(model);
  const Mat<S> X = test::random_matrix<S>(3, d, 7);
  for (Index t = 0; t < X.rows(); ++t) rtrl.step(X.row(t));
  const test::Mat<S> before = rtrl.influence();
  auto staged = rtrl.stage_state({model.mask()}, false);
  const Index cols = staged.influence_columns(0);
  const test::Mat<S> values = test::random_matrix<S>(n, cols, 8);
  const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major = values;
  // A gap is refused; nothing written yet, so restoring is refused and changes nothing.
  REQUIRE_THROWS_AS(staged.write_influence(0, 5, row_major.data() + 5, 3), std::out_of_range);
  REQUIRE_THROWS_WITH(rtrl.restore_state(std::move(staged)), Catch::Contains("only 0 of its"));
  CHECK(test::Mat<S>(rtrl.influence()) == before);
  // Written in order but not to the end: still refused.
  auto partial = rtrl.stage_state({model.mask()}, false);
  partial.write_influence(0, 0, row_major.data(), std::size_t(n * cols - 1));
  REQUIRE_THROWS_WITH(rtrl.restore_state(std::move(partial)), Catch::Contains("values were written"));
  CHECK(test::Mat<S>(rtrl.influence()) == before);
  // In full, in pieces that straddle rows: accepted, and the values are the ones written.
  auto full = rtrl.stage_state({model.mask()}, false);
  for (std::size_t first = 0, piece = 1; first < std::size_t(n * cols); first += piece, piece = piece * 5 % 31 + 1)
    full.write_influence(0, first, row_major.data() + first, std::min(piece, std::size_t(n * cols) - first));
  rtrl.restore_state(std::move(full));
  CHECK(test::Mat<S>(rtrl.influence()) == values);
  // A zeroed staging needs no writes.
  rtrl.restore_state(rtrl.stage_state({model.mask()}));
  CHECK(rtrl.influence().isZero(0));
}

TEMPLATE_TEST_CASE("A refused step leaves the learner bitwise unchanged: outputs, events, step cache, validity",
                   "[rtrl][errors]", float, double) {
  // Issue 20, item 9: the refusal used to leave NaN in output(), events() and the step cache and
  // last_step_valid() false.
  using S = TestType;
  const Index n = 6, d = 3;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(n, d, 61)), ParameterMask::random(n, d, 0.7, 0.7, 62));
  Rtrl<S> rtrl(model);
  const Mat<S> X = test::random_matrix<S>(4, d, 63);
  for (Index t = 0; t < 3; ++t) rtrl.step(X.row(t));
  const EgruStepCache<S> cache = rtrl.last_step_cache();
  const test::Vec<S> y = rtrl.output(), o = rtrl.events(), c = rtrl.state();
  const Mat<S> M = rtrl.influence();
  model.parameters().bW(n) = std::numeric_limits<S>::quiet_NaN();  // unit 0's update gate: reaches c_0
  REQUIRE_THROWS_WITH(rtrl.step(X.row(3)), Catch::Matchers::Contains("bW must be finite"));
  CHECK(test::same_bits(rtrl.last_step_cache(), cache));
  CHECK(test::same_bits(rtrl.output(), y));
  CHECK(test::same_bits(rtrl.events(), o));
  CHECK(test::same_bits(rtrl.state(), c));
  CHECK(test::same_bits(rtrl.influence(), M));
  CHECK(rtrl.last_step_valid());
  CHECK(rtrl.steps() == 3);
  model.parameters().bW(n) = S(0.25);
  rtrl.step(X.row(3));
  CHECK(rtrl.output().allFinite());
}

TEMPLATE_TEST_CASE("A moved-from Rtrl throws std::logic_error on every use", "[rtrl][errors]", float, double) {
  // Issue 20, item 16: it used to read an empty vector of layers.
  using S = TestType;
  using Catch::Matchers::Contains;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(4, 2, 71)));
  Rtrl<S> a(model);
  const test::Vec<S> x = test::Vec<S>::Constant(2, S(0.5));
  a.step(x);
  Rtrl<S> b(std::move(a));
  const auto moved = Contains("used after move");
  CHECK_THROWS_WITH(a.step(x), moved);
  CHECK_THROWS_WITH(a.output(), moved);
  CHECK_THROWS_WITH(a.events(), moved);
  CHECK_THROWS_WITH(a.state(), moved);
  CHECK_THROWS_WITH(a.units(), moved);
  CHECK_THROWS_WITH(a.inputs(), moved);
  CHECK_THROWS_WITH(a.columns(), moved);
  CHECK_THROWS_WITH(a.last_step_cache(), moved);
  CHECK_THROWS_WITH(a.accumulate_gradient(test::Vec<S>::Ones(4)), moved);
  CHECK_THROWS_WITH(a.gradient(), moved);
  CHECK_THROWS_WITH(a.influence(), moved);
  CHECK_THROWS_WITH(a.layout(), moved);
  CHECK_THROWS_WITH(a.reset(), moved);
  CHECK_THROWS_WITH(a.zero_gradient(), moved);
  CHECK_THROWS_WITH(a.follow_mask(), moved);
  CHECK_THROWS_AS(a.step(x), std::logic_error);
  b.step(x);  // the moved-to learner carries on
  CHECK(b.steps() == 2);
}

TEMPLATE_TEST_CASE("restore_state refuses non-finite values and absurd step counts, naming the entry",
                   "[rtrl][checkpoint][errors]", float, double) {
  // Issue 20, items 4 and 14: a state with NaN/Inf (or steps near INT64_MAX) used to be accepted.
  using S = TestType;
  using Catch::Matchers::Contains;
  const Index n = 5, d = 2;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(n, d, 81)));
  Rtrl<S> rtrl(model);
  const Mat<S> X = test::random_matrix<S>(3, d, 82);
  for (Index t = 0; t < 3; ++t) rtrl.step(X.row(t));
  rtrl.accumulate_gradient(test::Vec<S>::Ones(n));
  const Mat<S> M = rtrl.influence();
  const test::Vec<S> g = rtrl.gradient_columns();
  const S nan = std::numeric_limits<S>::quiet_NaN(), inf = std::numeric_limits<S>::infinity();
  auto check_unchanged = [&] {
    CHECK(test::same_bits(rtrl.influence(), M));
    CHECK(test::same_bits(rtrl.gradient_columns(), g));
    CHECK(rtrl.steps() == 3);
  };
  {
    auto st = rtrl.stage_state({model.mask()});
    st.gradient()(2) = nan;
    CHECK_THROWS_WITH(rtrl.restore_state(std::move(st)), Contains("Rtrl::restore_state()") && Contains("gradient must be finite"));
    check_unchanged();
  }
  {
    auto st = rtrl.stage_state({model.mask()});
    const S v = inf;
    st.write_influence(0, 7, &v, 1);
    CHECK_THROWS_WITH(rtrl.restore_state(std::move(st)), Contains("l0/influence must be finite") && Contains("inf"));
    check_unchanged();
  }
  {
    auto st = rtrl.stage_state({model.mask()});
    st.step_cache(0).y(1) = nan;
    CHECK_THROWS_WITH(rtrl.restore_state(std::move(st)), Contains("l0/cache/y must be finite"));
    check_unchanged();
  }
  {
    auto st = rtrl.stage_state({model.mask()});
    st.state(0)(0) = -inf;
    CHECK_THROWS_WITH(rtrl.restore_state(std::move(st)), Contains("l0/state must be finite"));
    check_unchanged();
  }
  {
    auto st = rtrl.stage_state({model.mask()});
    st.steps = std::numeric_limits<Index>::max();
    CHECK_THROWS_WITH(rtrl.restore_state(std::move(st)), Contains("steps must be in [0, 2^53"));
    check_unchanged();
  }
  auto st = rtrl.stage_state({model.mask()});
  st.steps = Index(1) << 53;  // the largest accepted
  rtrl.restore_state(std::move(st));
  CHECK(rtrl.steps() == (Index(1) << 53));
}

TEMPLATE_TEST_CASE("A gradient that overflows in accumulate_gradient is reported there with the likely cause",
                   "[rtrl][errors]", float, double) {
  // Issue 20, the soak: M overflowed to inf with no report until an optimizer refused the
  // gradient. The check after each read-out catches it (here: the largest finite M times 10).
  using S = TestType;
  using Catch::Matchers::Contains;
  const Index n = 4, d = 2;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(n, d, 91)));
  Rtrl<S> rtrl(model);
  model.parameters().theta(2) = S(-0.25);
  auto big = rtrl.stage_state({model.mask()});
  const Index cols = big.influence_columns(0);
  std::vector<S> values(std::size_t(n * cols), S(0));
  values[std::size_t(1 * cols + 3)] = std::numeric_limits<S>::max();
  big.write_influence(0, 0, values.data(), values.size());
  big.step_cache(0).s.setOnes();  // every row is read out
  big.steps = 1;
  rtrl.restore_state(std::move(big));
  REQUIRE_THROWS_AS(rtrl.accumulate_gradient(test::Vec<S>::Constant(n, S(10))), std::overflow_error);
  CHECK_THROWS_WITH(rtrl.accumulate_gradient(test::Vec<S>::Constant(n, S(10))),
                    Contains("Rtrl::accumulate_gradient()") && Contains("accumulated gradient is not finite") &&
                        Contains("theta[2] of layer 0 = -0.25") && Contains("clamp_thresholds"));
}

TEMPLATE_TEST_CASE("After a mask change the layout accessors refuse until the learner follows, never report the old one",
                   "[rtrl][mask][errors]", float, double) {
  // Issue 19, item 6: after pruning, columns() reported the old count until the next step.
  using S = TestType;
  using Catch::Matchers::Contains;
  const Index n = 6, d = 3;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(n, d, 71)), ParameterMask::random(n, d, 0.9, 0.9, 72));
  Rtrl<S> rtrl(model);
  Snap<S> snap(model, 1);
  const Mat<S> X = test::random_matrix<S>(2, d, 73);
  rtrl.step(X.row(0));
  const Index before = rtrl.columns();
  CHECK(before == InfluenceLayout(model.mask(), true).columns());
  const ParameterMask pruned = ParameterMask::random(n, d, 0.4, 0.4, 74);
  const Index after = InfluenceLayout(pruned, true).columns();
  REQUIRE(after != before);
  model.set_mask(pruned);
  REQUIRE_FALSE(rtrl.mask_followed());
  CHECK_THROWS_WITH(rtrl.columns(), Contains("sparse_rtrl::Rtrl::columns()") && Contains("follow_mask()"));
  CHECK_THROWS_AS(rtrl.layout(), std::logic_error);
  CHECK_THROWS_AS(rtrl.column_offset(0), std::logic_error);
  CHECK_THROWS_WITH(snap.columns(), Contains("sparse_rtrl::Snap::columns()") && Contains("construct a new Snap"));
  CHECK(rtrl.influence_columns(0) == before);  // what M holds until the learner follows
  rtrl.follow_mask();
  CHECK(rtrl.columns() == after);
  CHECK(rtrl.layout().columns() == after);
  CHECK(rtrl.influence_columns(0) == after);
  model.set_mask(ParameterMask::random(n, d, 0.9, 0.9, 72));
  rtrl.step(X.row(1));  // a step follows by itself
  CHECK(rtrl.columns() == before);
}

TEMPLATE_TEST_CASE("RtrlOptions::time_phases records each phase's seconds and changes no bit", "[rtrl][phases]", float,
                   double) {
  using S = TestType;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(7, 3, 91)), ParameterMask::random(7, 3, 0.6, 0.6, 92));
  Model<S> stack_model(std::vector<EgruCell<S>>{EgruCell<S>(test::firing_parameters<S>(7, 3, 93)),
                                                EgruCell<S>(test::firing_parameters<S>(5, 7, 94))});
  for (Model<S>* m : {&model, &stack_model}) {
    RtrlOptions timed_options;
    timed_options.time_phases = true;
    Rtrl<S> plain(*m), timed(*m, timed_options);
    const Mat<S> X = test::random_matrix<S>(6, 3, 95);
    for (Index t = 0; t < 6; ++t) {
      plain.step(X.row(t));
      timed.step(X.row(t));
      plain.accumulate_gradient(test::Vec<S>::Ones(plain.units()));
      timed.accumulate_gradient(test::Vec<S>::Ones(timed.units()));
    }
    CHECK(test::same_bits(plain.gradient_columns(), timed.gradient_columns()));
    CHECK(test::same_bits(plain.state(), timed.state()));
    const PhaseTimes& p = timed.phase_times();
    CHECK(p.forward > 0);
    CHECK(p.coupling > 0);
    CHECK(p.propagation > 0);
    CHECK(p.readout > 0);
    CHECK(p.other > 0);
    CHECK(plain.phase_times().total() == 0);
    timed.reset_work();
    CHECK(timed.phase_times().total() == 0);
  }
}
