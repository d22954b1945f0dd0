#include "test_support.hpp"

using namespace sparse_rtrl;

TEMPLATE_TEST_CASE("torch-like initialisation: ranges, thresholds, seeding", "[parameters]", float, double) {
  using S = TestType;
  const auto p = init_torch_like<S>(16, 3, {42, S(0.3)});
  const S k = S(1.0 / 4.0);
  CHECK(p.W.rows() == 48);
  CHECK(p.W.cols() == 3);
  CHECK(p.R.rows() == 48);
  CHECK(p.R.cols() == 16);
  CHECK(p.W.cwiseAbs().maxCoeff() <= k);
  CHECK(p.R.cwiseAbs().maxCoeff() <= k);
  CHECK(p.bW.cwiseAbs().maxCoeff() <= k);
  CHECK(p.bR.cwiseAbs().maxCoeff() <= k);
  CHECK(p.R.cwiseAbs().maxCoeff() > S(0.9) * k);  // actually spread over the range
  CHECK((p.theta.array() == S(0.3)).all());
  const auto same = init_torch_like<S>(16, 3, {42, S(0.3)});
  const auto other = init_torch_like<S>(16, 3, {43, S(0.3)});
  CHECK(same.R == p.R);
  CHECK(other.R != p.R);
  CHECK(init_torch_like<S>(4, 2, {0, S(0.5)}).theta.isConstant(S(0.5)));
}

TEST_CASE("Parameters validate shapes and values", "[parameters][errors]") {
  using Catch::Matchers::Contains;
  REQUIRE_THROWS_WITH(EgruParameters<double>(-1, 3), Contains("n_units must be > 0, received -1"));
  REQUIRE_THROWS_WITH(EgruParameters<double>(2, 0), Contains("n_inputs must be > 0, received 0"));
  REQUIRE_THROWS_AS(init_torch_like<double>(0, 1), std::invalid_argument);
  auto p = init_torch_like<double>(3, 2);
  p.R.resize(9, 4);
  REQUIRE_THROWS_WITH(EgruCell<double>(p), Contains("EgruCell") && Contains("R must be 9 x 3, received 9 x 4"));
  p = init_torch_like<double>(3, 2);
  p.theta(1) = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(EgruCell<double>(p), Contains("theta must be finite"));
  p = init_torch_like<double>(3, 2);
  p.bW.resize(8);
  REQUIRE_THROWS_WITH(EgruCell<double>(p), Contains("bW must be 9 x 1, received 8 x 1"));
}

TEMPLATE_TEST_CASE("EgruParameters::operator+= rejects other shapes and changes nothing", "[parameters][errors]", float, double) {
  using S = TestType;
  using Catch::Matchers::Contains;
  auto p = init_torch_like<S>(3, 2, {1, S(0.3)});
  const auto before = p;
  REQUIRE_THROWS_WITH(p += EgruParameters<S>(4, 2), Contains("sparse_rtrl::EgruParameters::operator+=()") &&
                                                      Contains("n = 3, d = 2") && Contains("n = 4, d = 2"));
  REQUIRE_THROWS_WITH(p += EgruParameters<S>(3, 5), Contains("n = 3, d = 5"));
  auto partly = EgruParameters<S>(3, 2);
  partly.theta.resize(1);
  REQUIRE_THROWS_WITH(p += partly, Contains("theta 1"));
  partly = EgruParameters<S>(3, 2);
  partly.bR.resize(0);
  REQUIRE_THROWS_AS(p += partly, std::invalid_argument);
  CHECK(p.W == before.W);
  CHECK(p.theta == before.theta);
  p += init_torch_like<S>(3, 2, {1, S(0.3)});
  CHECK(p.W == S(2) * before.W);
}

TEMPLATE_TEST_CASE("Sizes whose stacked products overflow are refused before anything is allocated", "[parameters][errors]", float, double) {
  // 3 * n (and 3n * n, 3n * d) used to overflow Index: undefined behaviour (UBSan flags it), in
  // practice a wrapped size and a bad_alloc or a corrupt object.
  using S = TestType;
  using Catch::Matchers::Contains;
  const Index huge = Index(1) << 62, big = Index(1) << 31, wide = Index(1) << 40;
  REQUIRE_THROWS_WITH(EgruParameters<S>(huge, 1), Contains("sparse_rtrl::EgruParameters::EgruParameters()") &&
                                                      Contains("3 * n_units = 3 * 4611686018427387904") &&
                                                      Contains("does not fit"));
  REQUIRE_THROWS_WITH(EgruParameters<S>(big, wide), Contains("3 * n_units * n_units = 6442450944 * 2147483648"));
  REQUIRE_THROWS_WITH(EgruParameters<S>(1, Index(1) << 62), Contains("3 * n_units * n_inputs = 3 * 4611686018427387904"));
  REQUIRE_THROWS_WITH(init_torch_like<S>(huge, 1), Contains("sparse_rtrl::init_torch_like()") && Contains("3 * n_units"));
  REQUIRE_THROWS_AS(init_torch_like<S>(big, wide), std::invalid_argument);
  CHECK(detail::checked_product("f", "a * b", Index(3), Index(5)) == 15);
  CHECK(detail::checked_product("f", "a * b", Index(0), huge) == 0);
}
