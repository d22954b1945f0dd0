// LinearReadout: logits = V y + b; backward accumulates dV, db and returns dL/dy.
#include "test_support.hpp"

using namespace sparse_rtrl;
using test::Mat;
using test::Vec;

TEMPLATE_TEST_CASE("Readout initialisation is seeded and in torch.nn.Linear's range", "[readout]", float, double) {
  using S = TestType;
  const LinearReadout<S> a(3, 16, ReadoutInitOptions{7}), b(3, 16, ReadoutInitOptions{7}), c(3, 16, ReadoutInitOptions{8});
  CHECK(a.outputs() == 3);
  CHECK(a.units() == 16);
  CHECK(a.parameters().V == b.parameters().V);
  CHECK_FALSE(a.parameters().V == c.parameters().V);
  CHECK(a.parameters().V.cwiseAbs().maxCoeff() <= S(0.25));  // 1/sqrt(16)
  CHECK(a.parameters().V.cwiseAbs().minCoeff() > S(0));
  CHECK(a.parameters().b.isZero(0));
  CHECK(a.gradient().V.isZero(0));
  CHECK(a.gradient().b.isZero(0));
}

TEMPLATE_TEST_CASE("Readout forward is V y + b, skipping silent units exactly", "[readout]", float, double) {
  using S = TestType;
  ReadoutParameters<S> p(2, 3);
  p.V << 1, 2, 3,
         -1, 0.5, 4;
  p.b << 0.25, -1;
  const LinearReadout<S> readout(p);
  Vec<S> y(3);
  y << 2, 0, -1;  // unit 1 silent
  // Worked by hand: (2 - 3 + 0.25, -2 - 4 - 1).
  const Vec<S> logits = readout.forward(y);
  CHECK(logits(0) == S(-0.75));
  CHECK(logits(1) == S(-7));
  // Row vectors are accepted as input, and the allocation-free form writes in place.
  Vec<S> out(2);
  readout.forward(y.transpose(), out);
  CHECK(out == logits);
}

TEMPLATE_TEST_CASE("Readout backward accumulates dV, db and returns V^T dL/dlogits", "[readout]", float, double) {
  using S = TestType;
  ReadoutParameters<S> p(2, 3);
  p.V << 1, 2, 3,
         -1, 0.5, 4;
  LinearReadout<S> readout(p);
  Vec<S> y(3), g(2);
  y << 2, 0, -1;
  g << 0.5, -2;
  // Worked by hand: dL/dy = V^T g = (0.5 + 2, 1 - 1, 1.5 - 8); dV = g y^T; db = g.
  const Vec<S> dy = readout.backward(y, g);
  CHECK(dy(0) == S(2.5));
  CHECK(dy(1) == S(0));
  CHECK(dy(2) == S(-6.5));
  Mat<S> dV(2, 3);
  dV << 1, 0, -0.5,
        -4, 0, 2;
  CHECK(readout.gradient().V == dV);
  CHECK(readout.gradient().b == g);
  // A second loss adds to the gradient; zero_gradient() clears it.
  Vec<S> dy2(3);
  readout.backward(y, g, dy2);
  CHECK(dy2 == dy);
  CHECK(readout.gradient().V == S(2) * dV);
  CHECK(readout.gradient().b == S(2) * g);
  readout.zero_gradient();
  CHECK(readout.gradient().V.isZero(0));
  CHECK(readout.gradient().b.isZero(0));
  CHECK(readout.parameters().V == p.V);  // backward never changes the weights
}

TEST_CASE("Readout gradients equal central finite differences of a cross-entropy loss", "[readout][fd]") {
  // L(V, b, y) = softmax_cross_entropy(V y + b, class 2): every derivative backward() reports is
  // checked against (L(+h) - L(-h)) / 2h, one coordinate at a time.
  const Index k = 4, n = 6, target = 2;
  LinearReadout<double> readout(k, n, ReadoutInitOptions{3});
  readout.parameters().b = test::random_matrix<double>(k, 1, 4);
  const Vec<double> y = test::random_matrix<double>(n, 1, 5, -2.0, 2.0);
  auto loss = [&](const ReadoutParameters<double>& p, const Vec<double>& yy) {
    return softmax_cross_entropy(Vec<double>(p.V * yy + p.b), target).loss;
  };
  const Vec<double> logits = readout.forward(y);
  const auto lg = softmax_cross_entropy(logits, target);
  const Vec<double> dy = readout.backward(y, lg.gradient);

  const double h = 1e-6;
  const ReadoutParameters<double> p0 = readout.parameters();
  Mat<double> dV_fd(k, n);
  Vec<double> db_fd(k), dy_fd(n);
  for (Index i = 0; i < k; ++i) {
    for (Index j = 0; j < n; ++j) {
      ReadoutParameters<double> plus = p0, minus = p0;
      plus.V(i, j) += h;
      minus.V(i, j) -= h;
      dV_fd(i, j) = (loss(plus, y) - loss(minus, y)) / (2 * h);
    }
    ReadoutParameters<double> plus = p0, minus = p0;
    plus.b(i) += h;
    minus.b(i) -= h;
    db_fd(i) = (loss(plus, y) - loss(minus, y)) / (2 * h);
  }
  for (Index j = 0; j < n; ++j) {
    Vec<double> plus = y, minus = y;
    plus(j) += h;
    minus(j) -= h;
    dy_fd(j) = (loss(p0, plus) - loss(p0, minus)) / (2 * h);
  }
  CHECK(test::relative_error(readout.gradient().V, dV_fd) <= 1e-6);
  CHECK(test::relative_error(readout.gradient().b, db_fd) <= 1e-6);
  CHECK(test::relative_error(dy, dy_fd) <= 1e-6);
}

TEST_CASE("Readout rejects bad input with std::invalid_argument naming the function", "[readout][errors]") {
  using Catch::Matchers::Contains;
  REQUIRE_THROWS_WITH(LinearReadout<double>(0, 3), Contains("n_outputs must be > 0, received 0"));
  REQUIRE_THROWS_WITH(LinearReadout<double>(2, -1), Contains("n_units must be > 0, received -1"));
  ReadoutParameters<double> p(2, 3);
  p.b.resize(3);
  REQUIRE_THROWS_WITH(LinearReadout<double>(p),
                      Contains("sparse_rtrl::LinearReadout::LinearReadout()") && Contains("b must be 2 x 1, received 3 x 1"));
  p.b.setZero(2);
  p.V(1, 1) = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(LinearReadout<double>(p), Contains("V must be finite"));

  LinearReadout<double> readout(2, 3);
  Eigen::VectorXd logits(2), dy(3);
  REQUIRE_THROWS_WITH(readout.forward(Eigen::VectorXd::Zero(4)),
                      Contains("sparse_rtrl::LinearReadout::forward()") && Contains("y must be a vector of size 3, received 4 x 1"));
  REQUIRE_THROWS_WITH(readout.forward(Eigen::MatrixXd::Zero(3, 2)), Contains("y must be a vector of size 3"));
  Eigen::VectorXd wrong(3);
  REQUIRE_THROWS_WITH(readout.forward(Eigen::VectorXd::Zero(3), wrong), Contains("logits must be a vector of size 2"));
  Eigen::VectorXd y = Eigen::VectorXd::Ones(3);
  y(2) = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_WITH(readout.forward(y, logits), Contains("y must be finite") && Contains("nan"));
  y(2) = 1;
  REQUIRE_THROWS_WITH(readout.backward(y, Eigen::VectorXd::Zero(3)),
                      Contains("sparse_rtrl::LinearReadout::backward()") && Contains("dL_dlogits must be a vector of size 2"));
  Eigen::VectorXd g = Eigen::VectorXd::Ones(2);
  g(0) = -std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(readout.backward(y, g, dy), Contains("dL_dlogits must be finite"));
  REQUIRE_THROWS_WITH(readout.backward(y, Eigen::VectorXd::Ones(2), logits), Contains("dL_dy must be a vector of size 3"));
  // Rejected input leaves the gradient untouched.
  CHECK(readout.gradient().V.isZero(0));
  CHECK(readout.gradient().b.isZero(0));
}

TEMPLATE_TEST_CASE("ReadoutParameters += refuses different shapes, naming both, and changes nothing", "[readout][errors]", float, double) {
  using S = TestType;
  ReadoutParameters<S> a(3, 5), b(2, 2), c(3, 4);
  a.V.setConstant(S(1));
  b.V.setConstant(S(2));
  const ReadoutParameters<S> before = a;
  // Was a heap-buffer-overflow (Eigen's size check is compiled out under NDEBUG).
  REQUIRE_THROWS_AS(a += b, std::invalid_argument);
  REQUIRE_THROWS_WITH(a += b, Catch::Matchers::Contains("ReadoutParameters::operator+=()") &&
                                  Catch::Matchers::Contains("this: V 3 x 5, b 3") &&
                                  Catch::Matchers::Contains("other: V 2 x 2, b 2"));
  REQUIRE_THROWS_AS(a += c, std::invalid_argument);  // same rows and b, different columns
  CHECK(a.V == before.V);
  CHECK(a.b == before.b);
  ReadoutParameters<S> d(3, 5);
  d.V.setConstant(S(0.5));
  a += d;
  CHECK(a.V.isConstant(S(1.5), 0));
}

TEMPLATE_TEST_CASE("LinearReadout::forward refuses non-finite parameters, naming them", "[readout][errors]", float, double) {
  // Issue 20, item 11: the logits used to come out NaN silently.
  using S = TestType;
  using Catch::Matchers::Contains;
  LinearReadout<S> readout(2, 3);
  const Vec<S> y = Vec<S>::Constant(3, S(0.5));
  readout.parameters().V(1, 2) = std::numeric_limits<S>::quiet_NaN();
  REQUIRE_THROWS_WITH(readout.forward(y), Contains("sparse_rtrl::LinearReadout::forward()") && Contains("V must be finite"));
  readout.parameters().V(1, 2) = S(0);
  readout.parameters().b(0) = std::numeric_limits<S>::infinity();
  REQUIRE_THROWS_WITH(readout.forward(y), Contains("b must be finite"));
  readout.parameters().b(0) = S(0);
  CHECK(readout.forward(y).allFinite());
}
