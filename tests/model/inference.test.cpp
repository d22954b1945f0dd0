// Inference: the checked, allocation-free forward pass for evaluation. It references a cell,
// follows its parameter updates, and gives the learners' outputs bit for bit.
#include "test_support.hpp"

#include <limits>
#include <type_traits>

using namespace sparse_rtrl;
using test::Mat;
using test::Vec;

TEMPLATE_TEST_CASE("Inference binds to a cell, never to a temporary", "[inference]", float, double) {
  using S = TestType;
  STATIC_REQUIRE(std::is_constructible<Inference<S>, const EgruCell<S>&>::value);
  STATIC_REQUIRE(std::is_constructible<Inference<S>, EgruCell<S>&>::value);
  STATIC_REQUIRE(!std::is_constructible<Inference<S>, EgruCell<S>&&>::value);
  STATIC_REQUIRE(!std::is_constructible<Inference<S>, const EgruCell<S>&&>::value);
}

TEMPLATE_TEST_CASE("Inference outputs equal Bptt's and Rtrl's bit for bit", "[inference][bptt][rtrl]", float, double) {
  using S = TestType;
  const Index n = 12, d = 3, T = 120;
  for (double density : {1.0, 0.4}) {
    INFO("density " << density);
    const auto mask = ParameterMask::random(n, d, density, density, 5);
    const EgruCell<S> cell(test::firing_parameters<S>(n, d, 6), CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.3)));
    const Mat<S> X = test::random_matrix<S>(T, d, 7);
    Model<S> model(cell, mask);
    Rtrl<S> rtrl(model);
    Bptt<S> bptt(model);
    const Mat<S> Y = bptt.forward(X);
    // The masked cell the learners run: the model's (its masked weights are zero).
    Inference<S> sparse(rtrl.cell());
    Inference<S> dense(rtrl.cell(), InferenceOptions{false});
    CHECK(sparse.units() == n);
    CHECK(sparse.inputs() == d);
    CHECK(sparse.steps() == 0);
    CHECK(sparse.output().isZero(0));
    std::size_t events = 0, silent = 0;
    for (Index t = 0; t < T; ++t) {
      rtrl.step(X.row(t));
      sparse.step(X.row(t));
      dense.step(X.row(t).transpose());
      REQUIRE(sparse.output() == Y.row(t).transpose());
      REQUIRE(sparse.output() == rtrl.output());
      REQUIRE(dense.output() == sparse.output());
      REQUIRE(sparse.state() == bptt.step_cache(t).c);
      REQUIRE(sparse.state() == rtrl.state());
      REQUIRE(sparse.events() == rtrl.events());
      REQUIRE(sparse.output_derivative() == rtrl.output_derivative());
      REQUIRE(sparse.last_step_cache().q == bptt.step_cache(t).q);
      events += std::size_t((sparse.events().array() != S(0)).count());
      silent += std::size_t((sparse.events().array() == S(0)).count());
    }
    CHECK(sparse.steps() == T);
    CHECK(events > 0);  // the comparison covered both firing and silent units
    CHECK(silent > 0);

    // From a given c_0, after a reset.
    const Vec<S> c0 = test::random_matrix<S>(n, 1, 8);
    const Mat<S> Y0 = bptt.forward(X.topRows(20), c0);
    sparse.reset(c0.transpose());
    CHECK(sparse.steps() == 0);
    CHECK(sparse.state() == c0);
    CHECK(sparse.output() == bptt.step_cache(0).y_prev);  // y_0 of c_0
    CHECK(sparse.events() == bptt.step_cache(0).o_prev);
    for (Index t = 0; t < 20; ++t) {
      sparse.step(X.row(t));
      REQUIRE(sparse.output() == Y0.row(t).transpose());
    }
    sparse.reset();
    CHECK(sparse.state().isZero(0));
    sparse.step(X.row(0));
    CHECK(sparse.output() == Y.row(0).transpose());
  }
}

TEMPLATE_TEST_CASE("Inference follows parameter updates made to the referenced cell", "[inference]", float, double) {
  using S = TestType;
  const Index n = 8, d = 2, T = 30;
  EgruCell<S> cell(test::firing_parameters<S>(n, d, 11));
  const Mat<S> X = test::random_matrix<S>(T, d, 12);
  Inference<S> eval(cell);
  eval.step(X.row(0));
  const Vec<S> before = eval.output();
  cell.parameters().W *= S(0.5);
  cell.parameters().theta.array() += S(0.1);
  eval.reset();
  Model<S> updated(cell);  // a copy of the updated cell
  Bptt<S> bptt(updated);
  const Mat<S>& Y = bptt.forward(X);
  for (Index t = 0; t < T; ++t) {
    eval.step(X.row(t));
    REQUIRE(eval.output() == Y.row(t).transpose());
  }
  CHECK(Y.row(0).transpose() != before);
}

TEMPLATE_TEST_CASE("Inference in GRU mode is the GRU's forward pass", "[inference][gru]", float, double) {
  using S = TestType;
  const Index n = 6, d = 4, T = 40;
  const EgruCell<S> cell(init_torch_like<S>(n, d, {21, S(0.3)}), CellOptions{false});
  const Mat<S> X = test::random_matrix<S>(T, d, 22);
  Model<S> model(cell);
  Bptt<S> bptt(model);
  const Mat<S>& Y = bptt.forward(X);
  Inference<S> eval(cell);
  CHECK(eval.events().isOnes(0));
  for (Index t = 0; t < T; ++t) {
    eval.step(X.row(t));
    REQUIRE(eval.output() == Y.row(t).transpose());
    REQUIRE(eval.output() == eval.state());
    REQUIRE(eval.events().isOnes(0));
  }
}

TEMPLATE_TEST_CASE("Inference rejects bad input and a resized cell, and stays unchanged", "[inference][errors]", float, double) {
  using S = TestType;
  using Catch::Matchers::Contains;
  const Index n = 4, d = 2;
  EgruCell<S> cell(test::firing_parameters<S>(n, d, 31));
  Inference<S> eval(cell);
  eval.step(Vec<S>::Ones(d));
  const Vec<S> state = eval.state(), output = eval.output();
  auto unchanged = [&] {
    CHECK(eval.steps() == 1);
    CHECK(eval.state() == state);
    CHECK(eval.output() == output);
  };
  REQUIRE_THROWS_WITH(eval.step(Vec<S>::Ones(3)),
                      Contains("sparse_rtrl::Inference::step()") && Contains("x must be a vector of size 2, received 3 x 1"));
  REQUIRE_THROWS_WITH(eval.step(Mat<S>::Ones(2, 2)), Contains("received 2 x 2"));
  Vec<S> x = Vec<S>::Ones(d);
  x(1) = std::numeric_limits<S>::quiet_NaN();
  REQUIRE_THROWS_WITH(eval.step(x), Contains("sparse_rtrl::Inference::step()") && Contains("x must be finite"));
  x(1) = std::numeric_limits<S>::infinity();
  REQUIRE_THROWS_WITH(eval.step(x), Contains("x must be finite"));
  REQUIRE_THROWS_WITH(eval.reset(Vec<S>::Zero(5)),
                      Contains("sparse_rtrl::Inference::reset()") && Contains("c0 must be a vector of size 4, received 5 x 1"));
  Vec<S> c0 = Vec<S>::Zero(n);
  c0(2) = std::numeric_limits<S>::quiet_NaN();
  REQUIRE_THROWS_WITH(eval.reset(c0), Contains("c0 must be finite"));
  unchanged();

  // The referenced cell resized: refused, not read out of bounds.
  const EgruParameters<S> original = cell.parameters();
  cell.parameters() = init_torch_like<S>(n + 1, d);
  REQUIRE_THROWS_WITH(eval.step(Vec<S>::Ones(d)), Contains("sparse_rtrl::Inference::step()") && Contains("n = 4, d = 2") &&
                                                      Contains("received n = 5, d = 2"));
  REQUIRE_THROWS_WITH(eval.step(Vec<S>::Ones(d)), Contains("construct a new Inference"));
  REQUIRE_THROWS_WITH(eval.reset(), Contains("sparse_rtrl::Inference::reset()"));
  cell.parameters() = original;
  cell.parameters().bW.resize(3 * n - 1);  // one tensor only
  REQUIRE_THROWS_WITH(eval.step(Vec<S>::Ones(d)), Contains("bW 11"));
  cell.parameters().bW = original.bW;
  cell.parameters().W.resize(3 * n, d + 1);  // d changed
  REQUIRE_THROWS_WITH(eval.step(Vec<S>::Ones(d + 1)), Contains("received n = 4, d = 3"));
  unchanged();
  cell.parameters() = original;
  cell.parameters().theta.resize(1);
  REQUIRE_THROWS_WITH(Inference<S>(cell), Contains("sparse_rtrl::Inference::Inference()") && Contains("theta 1"));

  // Shapes restored: it runs again.
  cell.parameters() = original;
  eval.step(Vec<S>::Ones(d));
  CHECK(eval.steps() == 2);
}

TEMPLATE_TEST_CASE("Inference of a stack runs every layer: outputs equal Rtrl's, layer by layer, bit for bit",
                   "[inference][stack]", float, double) {
  using S = TestType;
  const Index d = 3, T = 80;
  const std::vector<Index> sizes{9, 6, 5};
  std::vector<EgruCell<S>> cells;
  std::vector<ParameterMask> masks;
  Index inputs = d;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    cells.emplace_back(test::firing_parameters<S>(sizes[k], inputs, 20 + k), CellOptions{true},
                       TriangularSurrogate<S>(S(1), S(0.3)));
    masks.push_back(ParameterMask::random(sizes[k], inputs, 0.6, 0.6, 30 + k));
    inputs = sizes[k];
  }
  Model<S> model(cells, masks);
  Rtrl<S> rtrl(model);
  Inference<S> eval(model);
  REQUIRE(eval.layers() == 3);
  CHECK(eval.inputs() == d);
  CHECK(eval.units() == 5);
  CHECK(eval.units(1) == 6);
  const Mat<S> X = test::random_matrix<S>(T, d, 40);
  std::vector<std::size_t> firing(sizes.size(), 0), silent(sizes.size(), 0);
  for (Index t = 0; t < T; ++t) {
    rtrl.step(X.row(t));
    eval.step(X.row(t));
    for (Index k = 0; k < 3; ++k) {
      REQUIRE(eval.output(k) == rtrl.output(k));
      REQUIRE(eval.events(k) == rtrl.events(k));
      firing[std::size_t(k)] += std::size_t((eval.events(k).array() != S(0)).count());
      silent[std::size_t(k)] += std::size_t((eval.events(k).array() == S(0)).count());
    }
    REQUIRE(eval.output() == rtrl.output(2));
  }
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    INFO("layer " << k);
    CHECK(firing[k] > 0);  // every layer had firing and silent units
    CHECK(silent[k] > 0);
  }
  // A stack has no single c_0; bad layer indices are refused; reset() restarts every layer.
  REQUIRE_THROWS_AS(eval.reset(Vec<S>::Zero(5)), std::logic_error);
  REQUIRE_THROWS_AS(eval.output(3), std::out_of_range);
  REQUIRE_THROWS_AS(eval.state(-1), std::out_of_range);
  eval.reset();
  rtrl.reset();
  for (Index t = 0; t < 5; ++t) {
    rtrl.step(X.row(t));
    eval.step(X.row(t));
  }
  CHECK(eval.output() == rtrl.output(2));
  CHECK(eval.steps() == 5);
}

namespace {
// Whether m.cell() / m.parameters() is callable on an M (a reference type: an lvalue; a plain
// type: a temporary).
template <typename M, typename = void>
struct cell_callable : std::false_type {};
template <typename M>
struct cell_callable<M, std::void_t<decltype(std::declval<M>().cell())>> : std::true_type {};
template <typename M, typename = void>
struct parameters_callable : std::false_type {};
template <typename M>
struct parameters_callable<M, std::void_t<decltype(std::declval<M>().parameters())>> : std::true_type {};
}  // namespace

TEMPLATE_TEST_CASE("A temporary model's cell cannot be bound: Inference i(make_model().cell()) does not compile",
                   "[inference][model]", float, double) {
  // Issue 20, item 18: make_model().cell() returned a Cell& into a dying model, which the
  // Inference (or anything else) then kept.
  using S = TestType;
  STATIC_REQUIRE(cell_callable<Model<S>&>::value);
  STATIC_REQUIRE(cell_callable<const Model<S>&>::value);
  STATIC_REQUIRE(!cell_callable<Model<S>>::value);
  STATIC_REQUIRE(!cell_callable<Model<S>&&>::value);
  STATIC_REQUIRE(!cell_callable<const Model<S>&&>::value);
  STATIC_REQUIRE(parameters_callable<Model<S>&>::value);
  STATIC_REQUIRE(!parameters_callable<Model<S>>::value);
  // And every runner of a model refuses a temporary one.
  STATIC_REQUIRE(!std::is_constructible<Inference<S>, Model<S>&&>::value);
  STATIC_REQUIRE(!std::is_constructible<Rtrl<S>, Model<S>&&>::value);
  STATIC_REQUIRE(!std::is_constructible<Bptt<S>, Model<S>&&>::value);
  STATIC_REQUIRE(!std::is_constructible<Snap<S>, Model<S>&&, int>::value);
  STATIC_REQUIRE(!std::is_constructible<RtrlStreams<S>, Model<S>&&, Index>::value);
}

TEMPLATE_TEST_CASE("Inference refuses a non-finite parameter, naming it, and stays unchanged", "[inference][errors]",
                   float, double) {
  // Issue 20, item 11: it used to return NaN silently.
  using S = TestType;
  const Index n = 5, d = 3;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(n, d, 21)));
  Inference<S> inference(model);
  const Mat<S> X = test::random_matrix<S>(4, d, 22);
  for (Index t = 0; t < 3; ++t) inference.step(X.row(t));
  const EgruStepCache<S> cache = inference.last_step_cache();
  const Vec<S> state = inference.state();
  model.parameters().R(2, 1) = std::numeric_limits<S>::infinity();
  model.parameters().W(0, 0) = std::numeric_limits<S>::quiet_NaN();
  REQUIRE_THROWS_WITH(inference.step(X.row(3)), Catch::Matchers::Contains("sparse_rtrl::Inference::step()") &&
                                                    Catch::Matchers::Contains("W must be finite"));
  CHECK(test::same_bits(inference.last_step_cache(), cache));
  CHECK(test::same_bits(inference.state(), state));
  CHECK(inference.steps() == 3);
}

TEMPLATE_TEST_CASE("A moved-from Inference throws std::logic_error on use", "[inference][errors]", float, double) {
  // Issue 20, item 16.
  using S = TestType;
  using Catch::Matchers::Contains;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(4, 2, 23)));
  Inference<S> a(model);
  Inference<S> b(std::move(a));
  CHECK_THROWS_WITH(a.step(Vec<S>::Zero(2)), Contains("used after move"));
  CHECK_THROWS_WITH(a.output(), Contains("used after move"));
  CHECK_THROWS_WITH(a.state(), Contains("used after move"));
  CHECK_THROWS_WITH(a.units(), Contains("used after move"));
  CHECK_THROWS_WITH(a.cell(), Contains("used after move"));
  CHECK_THROWS_WITH(a.reset(), Contains("used after move"));
  b.step(Vec<S>::Zero(2));
  CHECK(b.steps() == 1);
}
