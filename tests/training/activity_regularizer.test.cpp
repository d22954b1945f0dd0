// The activity regulariser: a loss on events whose gradient RTRL and BPTT carry exactly.
#include "test_support.hpp"

using namespace sparse_rtrl;
using test::Mat;

TEMPLATE_TEST_CASE("Activity regulariser loss and gradient", "[regularizer]", float, double) {
  using S = TestType;
  ActivityRegularizer<S> reg(S(0.1), S(2));
  test::Vec<S> o(4);
  o << 1, 0, 1, 0;  // rate 0.5: loss 2 * 0.4^2 = 0.32, dL/do_i = 2 * 2 * 0.4 / 4 = 0.4
  CHECK(reg.loss(o) == Approx(0.32));
  test::Vec<S> g(4);
  reg.gradient(o, g);
  CHECK(g.isConstant(S(0.4), S(1e-6)));
  // The loss is quadratic in the rate, so one more event (rate + 1/n) changes it by exactly
  // dL/do_i + strength / n^2: the derivative checked against a difference of events.
  test::Vec<S> op = o;
  op(1) = S(1);
  CHECK(reg.loss(op) - reg.loss(o) == Approx(g(1) + S(2) / S(16)).epsilon(1e-5));
}

TEMPLATE_TEST_CASE("Regularised RTRL gradient equals BPTT's and lowers the event rate", "[regularizer][rtrl]", float, double) {
  using S = TestType;
  const Index n = 12, d = 3, T = 80;
  ActivityRegularizer<S> reg(S(0.05), S(1));
  EgruCell<S> cell(test::firing_parameters<S>(n, d, 61), CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.5)));
  const Mat<S> X = test::random_matrix<S>(T, d, 62);
  Model<S> model(cell);
  Bptt<S> bptt(model);
  bptt.forward(X);
  Mat<S> G_events(T, n);
  test::Vec<S> g(n);
  for (Index t = 0; t < T; ++t) {
    reg.gradient(bptt.step_cache(t).o, g);
    G_events.row(t) = g.transpose();
  }
  const auto g_ref = bptt.backward(Mat<S>::Zero(T, n), G_events);
  Rtrl<S> rtrl(model);
  S rate_before = 0;
  for (Index t = 0; t < T; ++t) {
    rtrl.step(X.row(t));
    reg.gradient(rtrl.events(), g);
    rate_before += rtrl.events().sum();
    rtrl.accumulate_gradient(test::Vec<S>::Zero(n), g);
  }
  const auto grad = rtrl.gradient();
  CHECK(test::relative_error(grad, g_ref) <= test::Tolerance<S>::gradient);
  // A gradient step on the penalty alone fires fewer events on the same inputs.
  EgruParameters<S> p = cell.parameters();
  p.W -= S(0.5) * grad.W;
  p.R -= S(0.5) * grad.R;
  p.bW -= S(0.5) * grad.bW;
  p.bR -= S(0.5) * grad.bR;
  p.theta -= S(0.5) * grad.theta;
  Model<S> stepped(EgruCell<S>(p, CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.5))));
  Bptt<S> after(stepped);
  after.forward(X);
  S rate_after = 0;
  for (Index t = 0; t < T; ++t) rate_after += after.step_cache(t).o.sum();
  CHECK(rate_after < rate_before);
}

TEST_CASE("Activity regulariser rejects bad options", "[regularizer][errors]") {
  using Catch::Matchers::Contains;
  REQUIRE_THROWS_WITH(ActivityRegularizer<double>(1.5, 1.0), Contains("target_rate must be in [0, 1], received 1.5"));
  REQUIRE_THROWS_WITH(ActivityRegularizer<double>(0.1, -1.0), Contains("strength must be finite and >= 0"));
  ActivityRegularizer<double> reg(0.1, 1.0);
  Eigen::VectorXd g(3);
  REQUIRE_THROWS_WITH(reg.gradient(Eigen::VectorXd::Zero(4), g), Contains("dL_do must be a vector of size 4"));
}

TEMPLATE_TEST_CASE("Activity regulariser accepts only events that are 0 or 1", "[regularizer][errors]", float, double) {
  using S = TestType;
  using Catch::Matchers::Contains;
  ActivityRegularizer<S> reg(S(0.1), S(1));
  test::Vec<S> g(3);
  g.setConstant(S(7));
  for (S bad : {std::numeric_limits<S>::quiet_NaN(), std::numeric_limits<S>::infinity(), S(0.5), S(-1), S(2)}) {
    test::Vec<S> o(3);
    o << S(1), bad, S(0);
    INFO("bad event " << bad);
    REQUIRE_THROWS_WITH(reg.loss(o), Contains("sparse_rtrl::ActivityRegularizer::loss()") &&
                                         Contains("events must be 0 or 1") && Contains("at 1"));
    REQUIRE_THROWS_WITH(reg.gradient(o, g), Contains("sparse_rtrl::ActivityRegularizer::gradient()") &&
                                                Contains("events must be 0 or 1"));
    CHECK(g.isConstant(S(7)));  // output untouched
  }
  const test::Mat<S> square = test::Mat<S>::Zero(2, 2);
  REQUIRE_THROWS_WITH(reg.loss(square), Contains("sparse_rtrl::ActivityRegularizer::loss()") && Contains("received 2 x 2"));
  test::Vec<S> g4(4);
  REQUIRE_THROWS_WITH(reg.gradient(square, g4), Contains("o must be a vector") && Contains("received 2 x 2"));
  REQUIRE_THROWS_WITH(reg.loss(test::Vec<S>(0)), Contains("must not be empty"));
  // Row vectors of events are fine.
  CHECK(reg.loss(test::Vec<S>::Ones(3).transpose()) == Approx(0.81));
}
