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
  // The loss as a function of the rate has exactly this derivative: compare to differences.
  const S h = S(1e-3);
  test::Vec<S> op = o, om = o;
  op(1) += h;
  om(1) -= h;
  CHECK((reg.loss(op) - reg.loss(om)) / (2 * h) == Approx(g(1)).epsilon(1e-3));
}

TEMPLATE_TEST_CASE("Regularised RTRL gradient equals BPTT's and lowers the event rate", "[regularizer][rtrl]", float, double) {
  using S = TestType;
  const Index n = 12, d = 3, T = 80;
  ActivityRegularizer<S> reg(S(0.05), S(1));
  EgruCell<S> cell(test::firing_parameters<S>(n, d, 61), CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.5)));
  const Mat<S> X = test::random_matrix<S>(T, d, 62);
  Bptt<S> bptt(cell);
  bptt.forward(X);
  Mat<S> G_events(T, n);
  test::Vec<S> g(n);
  for (Index t = 0; t < T; ++t) {
    reg.gradient(bptt.step_cache(t).o, g);
    G_events.row(t) = g.transpose();
  }
  const auto g_ref = bptt.backward(Mat<S>::Zero(T, n), G_events);
  Rtrl<S> rtrl(cell);
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
  Bptt<S> after(EgruCell<S>(p, CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.5))));
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
