#include "test_support.hpp"

#include <limits>

using namespace sparse_rtrl;

namespace {
// Keeps the compiler from folding the product at compile time (which would ignore the mode).
template <typename S>
S multiply(volatile S a, volatile S b) {
  return a * b;
}
}  // namespace

TEMPLATE_TEST_CASE("ScopedFlushDenormals flushes subnormals inside its scope and restores the mode", "[denormals]", float,
                   double) {
  using S = TestType;
  const S tiny = std::numeric_limits<S>::min();  // smallest normal
  const S sub = multiply<S>(tiny, S(0.25));
  REQUIRE(sub > S(0));  // IEEE default: a subnormal result
  if (!ScopedFlushDenormals::active()) SUCCEED("no MXCSR on this target: the guard is a no-op");
  else {
    {
      ScopedFlushDenormals guard;
      CHECK(multiply<S>(tiny, S(0.25)) == S(0));  // FTZ
      CHECK(multiply<S>(sub, S(1)) == S(0));      // DAZ: the subnormal input reads as zero
      CHECK(multiply<S>(tiny, S(2)) == S(2) * tiny);  // normal numbers untouched
    }
    CHECK(multiply<S>(tiny, S(0.25)) == sub);  // restored
  }
}

TEST_CASE("Sparse RTRL under ScopedFlushDenormals still equals BPTT", "[denormals][rtrl]") {
  using S = float;
  const Index n = 16, d = 3, T = 400;
  auto params = init_torch_like<S>(n, d, {21, S(0.3)});
  const auto mask = ParameterMask::random(n, d, 0.5, 0.5, 4);
  mask.apply(params);
  const TriangularSurrogate<S> surrogate(S(1), S(0.2));
  test::Mat<S> X = test::Mat<S>::Random(T, d);
  test::Mat<S> G = test::Mat<S>::Random(T, n) * S(0.01);
  Model<S> bptt_model(EgruCell<S>(params, {true}, surrogate), mask);
  Bptt<S> bptt(bptt_model);
  bptt.forward(X);
  const auto reference = bptt.backward(G);
  ScopedFlushDenormals guard;
  Model<S> rtrl_model(EgruCell<S>(params, {true}, surrogate), mask);
  Rtrl<S> rtrl(rtrl_model);
  for (Index t = 0; t < T; ++t) {
    rtrl.step(X.row(t));
    rtrl.accumulate_gradient(G.row(t));
  }
  const auto g = rtrl.gradient();
  CHECK(test::relative_error(g.W, reference.W) <= 1e-4);
  CHECK(test::relative_error(g.R, reference.R) <= 1e-4);
  CHECK(test::relative_error(g.theta, reference.theta) <= 1e-4);
}
