// The hot path allocates nothing: global operator new is counted in this test binary.
#include <sparse_rtrl/sparse_rtrl.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>

// Every replaceable form of operator new and delete is replaced, all on malloc / free, so
// that each allocation is counted and every deallocation matches its allocation whichever form
// the standard library or Catch2 uses (AddressSanitizer checks new/delete pairs: replacing only
// the plain form made it report alloc-dealloc-mismatch).
// GCC's -Wmismatched-new-delete cannot see that these replacements pair malloc with free on
// both sides (a false positive once inlining exposes the calls); the pairing is ASan-checked.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
std::atomic<long> g_allocations{0};

void* counted_malloc(std::size_t size) noexcept {
  ++g_allocations;
  return std::malloc(size ? size : 1);
}
void* counted_aligned(std::size_t size, std::align_val_t alignment) noexcept {
  ++g_allocations;
  std::size_t a = static_cast<std::size_t>(alignment);
  if (a < sizeof(void*)) a = sizeof(void*);
  void* p = nullptr;
  return posix_memalign(&p, a, size ? size : 1) == 0 ? p : nullptr;
}
void* or_throw(void* p) {
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t size) { return or_throw(counted_malloc(size)); }
void* operator new[](std::size_t size) { return or_throw(counted_malloc(size)); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted_malloc(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted_malloc(size); }
void* operator new(std::size_t size, std::align_val_t a) { return or_throw(counted_aligned(size, a)); }
void* operator new[](std::size_t size, std::align_val_t a) { return or_throw(counted_aligned(size, a)); }
void* operator new(std::size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_aligned(size, a);
}
void* operator new[](std::size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_aligned(size, a);
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

using namespace sparse_rtrl;

TEST_CASE("The allocation counter counts every form of operator new", "[alloc]") {
  struct alignas(64) Wide {
    double v[8];
  };
  // Through volatile pointers, so the compiler cannot elide the new / delete pairs.
  int* volatile a = nullptr;
  Wide* volatile w = nullptr;
  const long before = g_allocations.load();
  a = new int(1);
  delete a;
  a = new int[3];
  delete[] a;
  a = new (std::nothrow) int(2);
  delete a;
  a = new (std::nothrow) int[2];
  delete[] a;
  w = new Wide;
  delete w;
  w = new Wide[2];
  delete[] w;
  CHECK(g_allocations.load() - before == 6);
}

TEMPLATE_TEST_CASE("Rtrl::step and accumulate_gradient allocate nothing", "[rtrl][alloc]", float, double) {
  using S = TestType;
  for (double density : {1.0, 0.3}) {
    auto params = init_torch_like<S>(24, 5, {1, S(0.05)});
    params.R *= S(3);
    Model<S> model(EgruCell<S>(params, CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.3))),
                   ParameterMask::random(24, 5, density, density, 2));
    Rtrl<S> rtrl(model);
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

TEMPLATE_TEST_CASE("RtrlStreams::step, accumulate_gradient and gradient allocate nothing", "[streams][alloc]", float,
                   double) {
  using S = TestType;
  using M = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  auto params = init_torch_like<S>(40, 5, {4, S(0.05)});
  params.R *= S(3);
  Model<S> model(EgruCell<S>(params, CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.3))),
                 ParameterMask::random(40, 5, 0.5, 0.5, 5));
  for (int threads : {1, 2, 4}) {
    RtrlOptions options;
    options.threads = threads;
    RtrlStreams<S> streams(model, 3, options);
    M X = M::Ones(3, 5), G = M::Ones(3, 40);
    G.row(1).setZero();
    EgruParameters<S> out(40, 5);
    streams.step(X);  // warm up
    streams.gradient(out);
    const long before = g_allocations.load();
    for (int t = 0; t < 20; ++t) {
      X(t % 3, t % 5) = -X(t % 3, t % 5);
      streams.step(X);
      streams.accumulate_gradient(G);
      if (t == 7) streams.reset(2);
    }
    streams.gradient(out);
    CHECK(g_allocations.load() == before);
    CHECK(streams.total_work().active_rows > 0);
  }
}

TEMPLATE_TEST_CASE("Inference::step and reset allocate nothing", "[inference][alloc]", float, double) {
  using S = TestType;
  for (bool events : {true, false}) {
    auto params = init_torch_like<S>(24, 5, {3, S(0.05)});
    params.R *= S(3);
    const EgruCell<S> cell(params, CellOptions{events});
    Inference<S> eval(cell);
    Eigen::Matrix<S, Eigen::Dynamic, 1> x = Eigen::Matrix<S, Eigen::Dynamic, 1>::Ones(5);
    const Eigen::Matrix<S, Eigen::Dynamic, 1> c0 = Eigen::Matrix<S, Eigen::Dynamic, 1>::Constant(24, S(0.5));
    Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> X = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>::Ones(3, 5);
    const long before = g_allocations.load();
    S sum = 0;
    for (int t = 0; t < 20; ++t) {
      x(t % 5) = S(-x(t % 5));
      eval.step(x);
      eval.step(X.row(t % 3));  // a row of a matrix, as the examples pass it
      sum += eval.output().sum();
      if (t == 10) eval.reset(c0);
    }
    eval.reset();
    CHECK(g_allocations.load() == before);
    CHECK(std::isfinite(double(sum)));
    CHECK(eval.steps() == 0);
  }
}

TEMPLATE_TEST_CASE("TruncatedBptt and Uoro step, accumulate_gradient and gradient allocate nothing", "[truncated_bptt][uoro][alloc]",
                   float, double) {
  using S = TestType;
  using V = Eigen::Matrix<S, Eigen::Dynamic, 1>;
  std::vector<EgruCell<S>> cells;
  std::vector<ParameterMask> masks;
  for (Index k = 0; k < 2; ++k) {
    auto params = init_torch_like<S>(16, k == 0 ? 5 : 16, {7 + std::uint64_t(k), S(0.05)});
    params.R *= S(3);
    params.W *= S(3);
    cells.emplace_back(params, CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.3)));
    masks.push_back(ParameterMask::random(16, k == 0 ? 5 : 16, 0.5, 0.5, 8 + std::uint64_t(k)));
  }
  Model<S> model(cells, masks);
  TruncatedBptt<S> every(model, {4, TruncationForm::every_step}), block(model, {4, TruncationForm::every_k_steps});
  Uoro<S> uoro(model, {3, 1e-7});
  V x = V::Ones(5), g = V::Ones(16);
  EgruParameters<S> out(16, 16);
  for (int t = 0; t < 6; ++t) {  // warm up: the windows fill
    every.step(x);
    block.step(x);
    uoro.step(x);
  }
  const long before = g_allocations.load();
  for (int t = 0; t < 20; ++t) {
    x(t % 5) = S(-x(t % 5));
    every.step(x);
    every.accumulate_gradient(g);
    every.accumulate_gradient_at(0, g);
    block.step(x);
    block.accumulate_gradient(g);
    uoro.step(x);
    uoro.accumulate_gradient(g);
    uoro.accumulate_gradient_at(0, g);
  }
  block.flush();
  every.gradient(1, out);
  uoro.gradient(1, out);
  CHECK(g_allocations.load() == before);
  CHECK(every.total_work().readout_fma > 0);
}
