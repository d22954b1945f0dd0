// The hot path allocates nothing: global operator new is counted in this test binary.
#include <sparse_rtrl/sparse_rtrl.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<long> g_allocations{0};
}

void* operator new(std::size_t size) {
  ++g_allocations;
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

using namespace sparse_rtrl;

TEMPLATE_TEST_CASE("Rtrl::step and accumulate_gradient allocate nothing", "[rtrl][alloc]", float, double) {
  using S = TestType;
  for (double density : {1.0, 0.3}) {
    auto params = init_torch_like<S>(24, 5, {1, S(0.05)});
    params.R *= S(3);
    Rtrl<S> rtrl(EgruCell<S>(params, CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.3))),
                 ParameterMask::random(24, 5, density, density, 2));
    Eigen::Matrix<S, Eigen::Dynamic, 1> x = Eigen::Matrix<S, Eigen::Dynamic, 1>::Ones(5);
    Eigen::Matrix<S, Eigen::Dynamic, 1> g = Eigen::Matrix<S, Eigen::Dynamic, 1>::Ones(24);
    EgruParameters<S> out(24, 5);
    rtrl.step(x);  // warm up
    const long before = g_allocations.load();
    for (int t = 0; t < 20; ++t) {
      x(t % 5) = S(-x(t % 5));
      rtrl.step(x);
      rtrl.accumulate_gradient(g);
    }
    rtrl.gradient(out);
    CHECK(g_allocations.load() == before);
    CHECK(rtrl.total_work().active_rows > 0);
  }
}
