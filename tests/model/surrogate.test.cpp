#include "test_support.hpp"

using namespace sparse_rtrl;

TEMPLATE_TEST_CASE("Triangular surrogate values and support", "[surrogate]", float, double) {
  using S = TestType;
  TriangularSurrogate<S> def;
  CHECK(def.gamma() == S(0.7));
  CHECK(def.eps() == S(1.0));
  CHECK(def.pseudo_derivative(S(0)) == S(0.7));
  CHECK(def.pseudo_derivative(S(0.5)) == Approx(0.35));
  CHECK(def.pseudo_derivative(S(-0.5)) == Approx(0.35));
  CHECK(def.pseudo_derivative(S(1.0)) == S(0));
  CHECK(def.pseudo_derivative(S(-3.0)) == S(0));
  TriangularSurrogate<S> narrow(S(1), S(0.25));
  CHECK(narrow.pseudo_derivative(S(0.125)) == Approx(0.5));
  CHECK(narrow.pseudo_derivative(S(0.3)) == S(0));
  CHECK(narrow.half_width() == S(0.25));
}

TEST_CASE("Triangular surrogate rejects invalid options", "[surrogate][errors]") {
  using Catch::Matchers::Contains;
  REQUIRE_THROWS_WITH(TriangularSurrogate<double>(0.7, 0.0), Contains("TriangularSurrogate") && Contains("eps must be finite and > 0, received 0"));
  REQUIRE_THROWS_AS(TriangularSurrogate<double>(0.7, -1.0), std::invalid_argument);
  REQUIRE_THROWS_WITH(TriangularSurrogate<double>(-0.1, 1.0), Contains("gamma must be finite and >= 0, received -0.1"));
  REQUIRE_THROWS_AS(TriangularSurrogate<float>(std::numeric_limits<float>::quiet_NaN(), 1.0f), std::invalid_argument);
  REQUIRE_THROWS_AS(TriangularSurrogate<double>(0.7, std::numeric_limits<double>::infinity()), std::invalid_argument);
}

namespace {
// A user-provided policy: a rectangular window. Satisfies the documented contract.
struct BoxSurrogate {
  using scalar_type = double;
  double pseudo_derivative(double v) const { return std::abs(v) < 0.5 ? 1.0 : 0.0; }
  double half_width() const { return 0.5; }
};
}  // namespace

TEST_CASE("A user-provided surrogate policy drives BPTT and RTRL alike", "[surrogate][rtrl]") {
  static_assert(detail::is_surrogate<BoxSurrogate>::value, "contract");
  static_assert(!detail::is_surrogate<int>::value, "contract");
  const Index n = 5, d = 2, T = 40;
  EgruCell<double, BoxSurrogate> cell(test::firing_parameters<double>(n, d, 81));
  const auto X = test::random_matrix<double>(T, d, 82);
  const auto G = test::random_matrix<double>(T, n, 83);
  Model<double, BoxSurrogate> model(cell);
  Bptt<double, BoxSurrogate> bptt(model);
  bptt.forward(X);
  const auto g_ref = bptt.backward(G);
  Rtrl<double, BoxSurrogate> rtrl(model);
  CHECK(test::relative_error(test::rtrl_gradient(rtrl, X, G), g_ref) <= 1e-10);
}
