#include "test_support.hpp"

#include <cmath>
#include <limits>

using namespace sparse_rtrl;

TEST_CASE("Random masks keep the requested fraction, reproducibly", "[mask]") {
  const auto m = ParameterMask::random(20, 6, 0.5, 0.1, 7);
  CHECK(m.kept_W() == 180);  // round(0.5 * 60 * 6)
  CHECK(m.kept_R() == 120);  // round(0.1 * 60 * 20)
  CHECK(m == ParameterMask::random(20, 6, 0.5, 0.1, 7));
  CHECK_FALSE(m == ParameterMask::random(20, 6, 0.5, 0.1, 8));
  CHECK(ParameterMask::random(3, 2, 1.0, 0.0, 1).kept_R() == 0);
  CHECK(ParameterMask::dense(3, 2).all_kept());
}

TEST_CASE("Magnitude masks keep the largest weights", "[mask]") {
  auto p = init_torch_like<double>(5, 2, {3, 0.3});
  const auto m = ParameterMask::from_magnitude(p, 0.5, 0.2);
  CHECK(m.kept_R() == 15);
  double smallest_kept = 1e9, largest_pruned = 0;
  for (Index i = 0; i < p.R.rows(); ++i)
    for (Index j = 0; j < p.R.cols(); ++j)
      (m.R()(i, j) ? smallest_kept : largest_pruned) =
          m.R()(i, j) ? std::min(smallest_kept, std::abs(p.R(i, j))) : std::max(largest_pruned, std::abs(p.R(i, j)));
  CHECK(smallest_kept >= largest_pruned);
  m.apply(p);
  CHECK(m.respected_by(p));
  CHECK((p.R.array() != 0).count() == 15);
}

TEST_CASE("Masks reject bad input", "[mask][errors]") {
  using Catch::Matchers::Contains;
  REQUIRE_THROWS_WITH(ParameterMask::random(3, 2, 1.5, 0.5), Contains("density_W must be in [0, 1], received 1.5"));
  REQUIRE_THROWS_WITH(ParameterMask::random(3, 2, 0.5, -0.1), Contains("density_R"));
  REQUIRE_THROWS_AS(ParameterMask::random(3, 2, std::nan(""), 0.5), std::invalid_argument);
  REQUIRE_THROWS_WITH(ParameterMask::dense(0, 2), Contains("n_units must be > 0"));
  using B = ParameterMask::BoolMatrix;
  REQUIRE_THROWS_WITH(ParameterMask(B::Constant(9, 2, true), B::Constant(8, 3, true)), Contains("keep_R must be 9 x 3, received 8 x 3"));
  REQUIRE_THROWS_WITH(ParameterMask(B::Constant(6, 2, true), B::Constant(9, 3, true)), Contains("keep_W must be 9 x 2, received 6 x 2"));
  auto p = init_torch_like<double>(4, 2);
  REQUIRE_THROWS_WITH(ParameterMask::dense(3, 2).apply(p), Contains("mask is for n = 3, d = 2 but the parameters have n = 4, d = 2"));
}

TEMPLATE_TEST_CASE("apply zeroes exactly the pruned entries and leaves kept ones bitwise", "[mask]", float, double) {
  using S = TestType;
  auto p = init_torch_like<S>(6, 3, {5, S(0.3)});
  // Non-finite values in pruned slots (an optimizer bug, say) must be cleared too.
  const auto m = ParameterMask::random(6, 3, 0.4, 0.3, 11);
  const auto before = p;
  p.R(0, 0) = std::numeric_limits<S>::quiet_NaN();
  p.W(1, 0) = std::numeric_limits<S>::infinity();
  const bool R00_kept = m.R()(0, 0), W10_kept = m.W()(1, 0);
  m.apply(p);
  for (Index e = 0; e < p.R.size(); ++e) {
    if (!m.R().data()[e]) {
      CHECK(p.R.data()[e] == S(0));
      CHECK_FALSE(std::signbit(p.R.data()[e]));
    } else if (!(e == 0 && R00_kept)) {
      CHECK(p.R.data()[e] == before.R.data()[e]);
    }
  }
  for (Index i = 0; i < p.W.rows(); ++i)
    for (Index j = 0; j < p.W.cols(); ++j) {
      if (!m.W()(i, j)) CHECK(p.W(i, j) == S(0));
      else if (!(i == 1 && j == 0 && W10_kept)) CHECK(p.W(i, j) == before.W(i, j));
    }
  CHECK(p.bW == before.bW);
  CHECK(p.theta == before.theta);
}
