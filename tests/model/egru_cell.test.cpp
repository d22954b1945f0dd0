#include "test_support.hpp"

using namespace sparse_rtrl;

TEMPLATE_TEST_CASE("Cell event quantities follow model.md (H(0) = 0, soft reset)", "[cell]", float, double) {
  using S = TestType;
  EgruParameters<S> p(3, 1);
  p.theta << S(0.5), S(0.5), S(0.5);
  EgruCell<S> cell(p, CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.5)));
  EgruStepCache<S> cache;
  cache.resize(3, 1);
  test::Vec<S> c_prev(3);
  c_prev << S(0.5), S(0.75), S(-0.25);  // exactly at threshold, above, far below
  test::Vec<S> x(1);
  x << S(0);
  cell.forward(c_prev, x, cache);
  CHECK(cache.o_prev(0) == S(0));  // H(0) = 0
  CHECK(cache.o_prev(1) == S(1));
  CHECK(cache.o_prev(2) == S(0));
  CHECK(cache.y_prev(1) == S(0.75));
  CHECK(cache.h_prev(1) == S(0.25));     // c - theta
  CHECK(cache.psi_prev(0) == S(1));      // peak
  CHECK(cache.psi_prev(1) == S(0.5));    // half way
  CHECK(cache.psi_prev(2) == S(0));      // outside the window
  CHECK(cache.s_prev(2) == S(0));        // silent and outside: skippable row
  CHECK(cache.s_prev(0) == S(0.5));      // o + c psi = 0 + 0.5 * 1
  // All weights zero: r = z = 1/2, g = 0, so c = h / 2.
  CHECK(cache.c(1) == Approx(0.125));
  CHECK(cache.decay(1) == Approx(0.5 * (1 - 0.5 * 0.5)));
}

TEMPLATE_TEST_CASE("GRU mode ignores thresholds", "[cell][gru]", float, double) {
  using S = TestType;
  auto p = init_torch_like<S>(4, 2, {9, S(0.3)});
  EgruCell<S> a(p, CellOptions{false});
  p.theta.setConstant(S(-5));
  EgruCell<S> b(p, CellOptions{false});
  EgruStepCache<S> ca, cb;
  ca.resize(4, 2);
  cb.resize(4, 2);
  const test::Vec<S> c = test::random_matrix<S>(4, 1, 1);
  const test::Vec<S> x = test::random_matrix<S>(2, 1, 2);
  a.forward(c, x, ca);
  b.forward(c, x, cb);
  CHECK(ca.c == cb.c);
  CHECK(ca.y == ca.c);
  CHECK(ca.s.isOnes(0));
}

TEMPLATE_TEST_CASE("EgruCell::forward checks the sizes of c_prev, x and the cache", "[cell][errors]", float, double) {
  using S = TestType;
  using Catch::Matchers::Contains;
  const char* where = "sparse_rtrl::EgruCell::forward()";
  EgruCell<S> cell(init_torch_like<S>(4, 2, {3, S(0.3)}));
  EgruStepCache<S> cache;
  cache.resize(4, 2);
  const test::Vec<S> c = test::random_matrix<S>(4, 1, 1);
  const test::Vec<S> x = test::random_matrix<S>(2, 1, 2);
  REQUIRE_THROWS_WITH(cell.forward(c, test::Vec<S>::Zero(3), cache),
                      Contains(where) && Contains("x must be a vector of size 2, received 3 x 1"));
  REQUIRE_THROWS_WITH(cell.forward(test::Vec<S>::Zero(5), x, cache),
                      Contains(where) && Contains("c_prev must be a vector of size 4, received 5 x 1"));
  REQUIRE_THROWS_AS(cell.forward(c, test::Mat<S>::Zero(2, 2), cache), std::invalid_argument);
  EgruStepCache<S> empty;
  REQUIRE_THROWS_WITH(cell.forward(c, x, empty), Contains(where) && Contains("cache") && Contains("resize(4, 2)"));
  EgruStepCache<S> small;
  small.resize(3, 2);
  REQUIRE_THROWS_AS(cell.forward(c, x, small), std::invalid_argument);
  EgruStepCache<S> partly;  // every field but one sized right
  partly.resize(4, 2);
  partly.dc_dq.resize(5);
  REQUIRE_THROWS_WITH(cell.forward(c, x, partly), Contains("cache.dc_dq has size 5, expected 12"));
  partly.resize(4, 2);
  partly.x.resize(1);
  REQUIRE_THROWS_WITH(cell.forward(c, x, partly), Contains("cache.x has size 1, expected 2"));
  // A cell whose parameters were reshaped through parameters() is refused, not read out of bounds.
  EgruCell<S> reshaped = cell;
  reshaped.parameters().bR.resize(3);
  REQUIRE_THROWS_WITH(reshaped.forward(c, x, cache), Contains(where) && Contains("bR"));
  // Right sizes, row or column vectors: runs.
  cell.forward(c.transpose(), x.transpose(), cache);
  CHECK(cache.c.allFinite());
}
