// Losses on logits (softmax cross-entropy, mean-squared error), and losses taken at every step or
// only at chosen steps through a readout: RTRL's gradient equals BPTT's either way.
#include "test_support.hpp"

using namespace sparse_rtrl;
using test::Mat;
using test::Vec;

TEMPLATE_TEST_CASE("Cross-entropy matches values worked by hand", "[loss]", float, double) {
  using S = TestType;
  const double tol = std::is_same<S, float>::value ? 1e-6 : 1e-14;
  Vec<S> logits(3);
  logits << 1, 2, 3;
  // Independent values (python3, math module): log(e + e^2 + e^3) - 1 and softmax(1, 2, 3).
  const double loss = 2.40760596444438;
  const double p[3] = {0.09003057317038046, 0.24472847105479767, 0.6652409557748219};
  Vec<S> g(3);
  CHECK(std::abs(double(softmax_cross_entropy(logits, 0, g)) - loss) <= tol * loss);
  CHECK(std::abs(double(g(0)) - (p[0] - 1)) <= tol);
  CHECK(std::abs(double(g(1)) - p[1]) <= tol);
  CHECK(std::abs(double(g(2)) - p[2]) <= tol);
  CHECK(std::abs(double(g.sum())) <= tol);  // softmax sums to one
  // The allocating form and a row vector give the same.
  const auto lg = softmax_cross_entropy(logits.transpose(), 0);
  CHECK(std::abs(double(lg.loss) - loss) <= tol * loss);
  CHECK(lg.gradient == g);
}

TEMPLATE_TEST_CASE("Cross-entropy is stable for logits whose exp overflows", "[loss]", float, double) {
  using S = TestType;
  Vec<S> logits(3);
  logits << 1000, 0, -1000;  // exp(1000) is inf in both types: a naive softmax gives nan
  const auto a = softmax_cross_entropy(logits, 0);
  CHECK(a.loss == S(0));  // log(1 + e^-1000 + e^-2000) rounds to 0
  CHECK(a.gradient.isZero(0));
  const auto b = softmax_cross_entropy(logits, 1);
  CHECK(b.loss == S(1000));
  CHECK(b.gradient(0) == S(1));
  CHECK(b.gradient(1) == S(-1));
  CHECK(b.gradient(2) == S(0));
  CHECK(softmax_cross_entropy(logits, 2).loss == S(2000));
  // One class: the loss is zero whatever the logit.
  Vec<S> one(1);
  one << -5;
  const auto c = softmax_cross_entropy(one, 0);
  CHECK(c.loss == S(0));
  CHECK(c.gradient(0) == S(0));
}

TEMPLATE_TEST_CASE("Mean-squared error matches values worked by hand", "[loss]", float, double) {
  using S = TestType;
  Vec<S> pred(2), target(2);
  pred << 1, 2;
  target << 0, 4;
  // (1^2 + 2^2) / 2 = 2.5; gradient (2/2) (1, -2).
  const auto r = mean_squared_error(pred, target);
  CHECK(r.loss == S(2.5));
  CHECK(r.gradient(0) == S(1));
  CHECK(r.gradient(1) == S(-2));
  Vec<S> g(2);
  CHECK(mean_squared_error(pred.transpose(), target, g) == S(2.5));
  CHECK(g == r.gradient);
}

TEST_CASE("Loss gradients equal central finite differences", "[loss][fd]") {
  const Index k = 5;
  const Vec<double> logits = test::random_matrix<double>(k, 1, 11, -3.0, 3.0);
  const Vec<double> target = test::random_matrix<double>(k, 1, 12);
  const double h = 1e-6;
  for (Index c = 0; c < k; ++c) {
    const auto lg = softmax_cross_entropy(logits, c);
    Vec<double> fd(k);
    for (Index i = 0; i < k; ++i) {
      Vec<double> plus = logits, minus = logits;
      plus(i) += h;
      minus(i) -= h;
      fd(i) = (softmax_cross_entropy(plus, c).loss - softmax_cross_entropy(minus, c).loss) / (2 * h);
    }
    CAPTURE(c);
    CHECK(test::relative_error(lg.gradient, fd) <= 1e-6);
  }
  const auto mse = mean_squared_error(logits, target);
  Vec<double> fd(k);
  for (Index i = 0; i < k; ++i) {
    Vec<double> plus = logits, minus = logits;
    plus(i) += h;
    minus(i) -= h;
    fd(i) = (mean_squared_error(plus, target).loss - mean_squared_error(minus, target).loss) / (2 * h);
  }
  CHECK(test::relative_error(mse.gradient, fd) <= 1e-6);
}

namespace {

enum class Loss { cross_entropy, squared_error };

/// Gradient of sum over the steps in `at` of a readout loss, by RTRL (online, the caller's loop
/// of loss.hpp's comment) and by BPTT (G row t = dL/dy_t at those steps, zero elsewhere). The
/// readout's own gradient is returned by both paths too.
template <typename S>
void check_readout_loss_rtrl_equals_bptt(Loss kind, const std::vector<bool>& at, std::uint64_t seed) {
  const Index n = 7, d = 3, k = 3, T = Index(at.size());
  EgruCell<S> cell(test::firing_parameters<S>(n, d, seed), CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.5)));
  const Mat<S> X = test::random_matrix<S>(T, d, seed + 1);
  const Mat<S> targets = test::random_matrix<S>(T, k, seed + 2);  // MSE targets
  std::vector<Index> labels(static_cast<std::size_t>(T));
  for (Index t = 0; t < T; ++t) labels[std::size_t(t)] = Index(seed + 3 * std::uint64_t(t)) % k;
  const LinearReadout<S> initial(k, n, ReadoutInitOptions{seed + 4});

  auto loss = [&](const Vec<S>& logits, Index t, Vec<S>& dL_dlogits) {
    return kind == Loss::cross_entropy ? softmax_cross_entropy(logits, labels[std::size_t(t)], dL_dlogits)
                                       : mean_squared_error(logits, targets.row(t), dL_dlogits);
  };

  // RTRL: the loss is taken online, at the chosen steps only.
  Model<S> model(cell);
  Rtrl<S> rtrl(model);
  LinearReadout<S> readout = initial;
  Vec<S> logits(k), dL_dlogits(k), dL_dy(n);
  double total_rtrl = 0;
  for (Index t = 0; t < T; ++t) {
    rtrl.step(X.row(t));
    if (!at[std::size_t(t)]) continue;
    readout.forward(rtrl.output(), logits);
    total_rtrl += double(loss(logits, t, dL_dlogits));
    readout.backward(rtrl.output(), dL_dlogits, dL_dy);
    rtrl.accumulate_gradient(dL_dy);
  }

  // BPTT: forward first, then the same losses on the stored outputs give the rows of G.
  Bptt<S> bptt(model);
  const Mat<S> Y = bptt.forward(X);
  LinearReadout<S> readout_ref = initial;
  Mat<S> G = Mat<S>::Zero(T, n);
  double total_bptt = 0;
  Index fired = 0;
  for (Index t = 0; t < T; ++t) {
    fired += (bptt.step_cache(t).o.array() > S(0)).count();
    if (!at[std::size_t(t)]) continue;
    const Vec<S> y = Y.row(t).transpose();
    readout_ref.forward(y, logits);
    total_bptt += double(loss(logits, t, dL_dlogits));
    readout_ref.backward(y, dL_dlogits, dL_dy);
    G.row(t) = dL_dy.transpose();
  }
  const auto g_ref = bptt.backward(G);
  REQUIRE(fired > 0);                        // events happen,
  REQUIRE(fired < T * n);                    // but not everywhere,
  REQUIRE(g_ref.theta.norm() > 0);           // and thresholds get a gradient
  CHECK(total_rtrl == total_bptt);           // identical forward passes
  CHECK(test::relative_error(rtrl.gradient(), g_ref) <= test::Tolerance<S>::gradient);
  CHECK(test::relative_error(readout.gradient().V, readout_ref.gradient().V) <= test::Tolerance<S>::gradient);
  CHECK(test::relative_error(readout.gradient().b, readout_ref.gradient().b) <= test::Tolerance<S>::gradient);
}

}  // namespace

TEMPLATE_TEST_CASE("RTRL + readout + cross-entropy at every step equals BPTT", "[loss][rtrl]", float, double) {
  check_readout_loss_rtrl_equals_bptt<TestType>(Loss::cross_entropy, std::vector<bool>(80, true), 40);
}

TEMPLATE_TEST_CASE("RTRL + readout + losses at chosen steps only equal BPTT", "[loss][rtrl]", float, double) {
  // Every 7th step, and the last one (sequence classification takes only the last).
  std::vector<bool> at(80, false);
  for (std::size_t t = 6; t < at.size(); t += 7) at[t] = true;
  at.back() = true;
  SECTION("cross-entropy") { check_readout_loss_rtrl_equals_bptt<TestType>(Loss::cross_entropy, at, 50); }
  SECTION("mean-squared error") { check_readout_loss_rtrl_equals_bptt<TestType>(Loss::squared_error, at, 60); }
  SECTION("last step only") {
    std::vector<bool> last(80, false);
    last.back() = true;
    check_readout_loss_rtrl_equals_bptt<TestType>(Loss::cross_entropy, last, 70);
  }
}

TEST_CASE("Losses reject bad input with std::invalid_argument naming the function", "[loss][errors]") {
  using Catch::Matchers::Contains;
  Eigen::VectorXd logits(3), g(3);
  logits << 0.1, 0.2, 0.3;
  REQUIRE_THROWS_WITH(softmax_cross_entropy(logits, 3, g),
                      Contains("sparse_rtrl::softmax_cross_entropy()") && Contains("target must be in [0, 3), received 3"));
  REQUIRE_THROWS_WITH(softmax_cross_entropy(logits, -1), Contains("target must be in [0, 3), received -1"));
  REQUIRE_THROWS_WITH(softmax_cross_entropy(Eigen::VectorXd(0), 0), Contains("logits must be a nonempty vector, received 0 x 1"));
  REQUIRE_THROWS_WITH(softmax_cross_entropy(Eigen::MatrixXd::Zero(2, 2), 0), Contains("logits must be a nonempty vector, received 2 x 2"));
  Eigen::VectorXd short_g(2);
  REQUIRE_THROWS_WITH(softmax_cross_entropy(logits, 0, short_g), Contains("dL_dlogits must be a vector of size 3, received 2 x 1"));
  logits(1) = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_WITH(softmax_cross_entropy(logits, 0), Contains("logits must be finite, received nan"));

  Eigen::VectorXd pred = Eigen::VectorXd::Ones(3);
  REQUIRE_THROWS_WITH(mean_squared_error(pred, Eigen::VectorXd::Ones(2)),
                      Contains("sparse_rtrl::mean_squared_error()") && Contains("target must be a vector of size 3, received 2 x 1"));
  Eigen::VectorXd target = Eigen::VectorXd::Ones(3);
  target(0) = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(mean_squared_error(pred, target), Contains("target must be finite, received inf"));
  pred(2) = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_WITH(mean_squared_error(pred, Eigen::VectorXd::Ones(3)), Contains("prediction must be finite"));
  REQUIRE_THROWS_WITH(mean_squared_error(Eigen::VectorXd::Ones(3), Eigen::VectorXd::Ones(3), short_g),
                      Contains("dL_dprediction must be a vector of size 3"));
}
