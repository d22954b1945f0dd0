// clamp_thresholds: the opt-in projection of theta onto [min, max] after optimizer steps
// (issue 20, the soak: thresholds learned negative let |c| grow without bound).
#include "test_support.hpp"

#include <limits>

using namespace sparse_rtrl;
using test::Vec;

TEMPLATE_TEST_CASE("clamp_thresholds projects theta onto the range and counts what it moved", "[threshold]", float, double) {
  using S = TestType;
  EgruParameters<S> p(4, 2);
  p.theta << S(-0.18), S(0), S(0.3), S(2.5);
  p.W.setConstant(S(-1));
  CHECK(clamp_thresholds(p) == 1);  // default [0, +inf): only the negative one
  CHECK(p.theta(0) == S(0));
  CHECK(p.theta(3) == S(2.5));
  CHECK(p.W.isConstant(S(-1)));  // nothing but theta
  CHECK(clamp_thresholds(p, S(0.1), S(1)) == 3);
  CHECK(p.theta(0) == S(0.1));
  CHECK(p.theta(1) == S(0.1));
  CHECK(p.theta(2) == S(0.3));
  CHECK(p.theta(3) == S(1));
  CHECK(clamp_thresholds(p, S(0.1), S(1)) == 0);
}

TEMPLATE_TEST_CASE("clamp_thresholds on a model clamps every layer; bad ranges are refused", "[threshold][errors]", float,
                   double) {
  using S = TestType;
  using Catch::Matchers::Contains;
  Model<S> stack({EgruCell<S>(init_torch_like<S>(3, 2)), EgruCell<S>(init_torch_like<S>(2, 3))});
  stack.parameters(0).theta(1) = S(-1);
  stack.parameters(1).theta(0) = S(-2);
  CHECK(clamp_thresholds(stack) == 2);
  CHECK(stack.parameters(0).theta.minCoeff() >= S(0));
  CHECK(stack.parameters(1).theta.minCoeff() >= S(0));
  REQUIRE_THROWS_WITH(clamp_thresholds(stack, S(1), S(0)),
                      Contains("sparse_rtrl::clamp_thresholds()") && Contains("received [1, 0]"));
  REQUIRE_THROWS_AS(clamp_thresholds(stack, std::numeric_limits<S>::quiet_NaN()), std::invalid_argument);
  REQUIRE_THROWS_AS(clamp_thresholds(stack.parameters(0), std::numeric_limits<S>::infinity()), std::invalid_argument);
  CHECK(stack.parameters(0).theta.minCoeff() >= S(0));
}
