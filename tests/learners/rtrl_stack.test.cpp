// Exact RTRL through depth: stacks of EGRU layers (model.md, "Stacked layers") against BPTT of
// the same stack, with masks on W and R, events firing and silent units in every layer.
#include "test_support.hpp"

#include <vector>

using namespace sparse_rtrl;
using test::Mat;
using test::Vec;

namespace {

/// A stack of layers with the given sizes; W and R masked at the given densities; every layer's
/// input weights scaled so that it fires (upper layers read sparse events).
template <typename S>
Model<S> random_stack(const std::vector<Index>& sizes, Index d, double density, bool events, std::uint64_t seed) {
  std::vector<EgruCell<S>> cells;
  std::vector<ParameterMask> masks;
  Index inputs = d;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    auto p = test::firing_parameters<S>(sizes[k], inputs, seed + 10 * k);
    if (k > 0) p.W *= S(2);
    cells.emplace_back(p, CellOptions{events}, TriangularSurrogate<S>(S(1), S(0.5)));
    masks.push_back(ParameterMask::random(sizes[k], inputs, density, density, seed + 10 * k + 1));
    inputs = sizes[k];
  }
  return Model<S>(cells, masks);
}

}  // namespace

TEMPLATE_TEST_CASE("RTRL equals BPTT on random stacks, with a loss on every layer", "[rtrl][stack]", float, double) {
  using S = TestType;
  const Index d = 4, T = 60;
  const std::vector<std::vector<Index>> stacks = {{9}, {10, 7}, {8, 11, 6}};
  for (const auto& sizes : stacks)
    for (bool events : {true, false}) {
      const Index L = Index(sizes.size());
      INFO("L = " << L << ", events = " << events);
      Model<S> model = random_stack<S>(sizes, d, 0.6, events, 100 + std::uint64_t(L));
      const Mat<S> X = test::random_matrix<S>(T, d, 7);
      std::vector<Mat<S>> G;
      for (Index k = 0; k < L; ++k) G.push_back(test::random_matrix<S>(T, sizes[std::size_t(k)], 20 + std::uint64_t(k)));

      Bptt<S> bptt(model);
      bptt.forward(X);
      const auto expected = bptt.backward(G);

      for (bool skip : {true, false}) {
        INFO("skip_silent_rows = " << skip);
        RtrlOptions options;
        options.skip_silent_rows = skip;
        Rtrl<S> rtrl(model, options);
        std::vector<Index> fired(std::size_t(L), 0), silent(std::size_t(L), 0);
        for (Index t = 0; t < T; ++t) {
          rtrl.step(X.row(t));
          for (Index k = 0; k < L; ++k) {
            CHECK(test::relative_error(rtrl.output(k).transpose(), bptt.outputs(k).row(t)) <= test::Tolerance<S>::gradient);
            rtrl.accumulate_gradient_at(k, G[std::size_t(k)].row(t));
            fired[std::size_t(k)] += Index((rtrl.events(k).array() != S(0)).count());
            silent[std::size_t(k)] += Index((rtrl.events(k).array() == S(0)).count());
          }
        }
        for (Index k = 0; k < L; ++k) {
          INFO("layer " << k);
          if (events) {  // events fire and units stay silent in every layer
            CHECK(fired[std::size_t(k)] > 0);
            CHECK(silent[std::size_t(k)] > 0);
          }
          const auto g = rtrl.gradient(k);
          CHECK(test::relative_error(g, expected[std::size_t(k)]) <= test::Tolerance<S>::gradient);
          CHECK(model.mask(k).respected_by(g));
        }
        if (L > 1) CHECK(rtrl.total_work().cross_layer_fma > 0);
      }
    }
}

TEMPLATE_TEST_CASE("Stacked RTRL: a loss on the top layer only reaches every layer, threads change no bit", "[rtrl][stack][threads]",
                   float, double) {
  using S = TestType;
  const std::vector<Index> sizes = {40, 36};
  Model<S> model = random_stack<S>(sizes, 6, 0.5, true, 300);
  const Index T = 30;
  const Mat<S> X = test::random_matrix<S>(T, 6, 8);
  const Mat<S> G = test::random_matrix<S>(T, sizes.back(), 9);
  Bptt<S> bptt(model);
  bptt.forward(X);
  const auto expected = bptt.backward(std::vector<Mat<S>>{Mat<S>(), G});
  Vec<S> reference_columns;
  for (int threads : {1, 2, 3}) {
    INFO("threads = " << threads);
    RtrlOptions options;
    options.threads = threads;
    Rtrl<S> rtrl(model, options);
    for (Index t = 0; t < T; ++t) {
      rtrl.step(X.row(t));
      rtrl.accumulate_gradient(G.row(t));  // the output layer
    }
    for (Index k = 0; k < 2; ++k) CHECK(test::relative_error(rtrl.gradient(k), expected[std::size_t(k)]) <= test::Tolerance<S>::gradient);
    CHECK_FALSE(rtrl.gradient(0).W.isZero(0));  // the lower layer learns from the top's loss
    if (threads == 1) reference_columns = rtrl.gradient_columns();
    CHECK(rtrl.gradient_columns() == reference_columns);
  }
}

TEST_CASE("Stacked RTRL: pruning a layer mid-sequence, per-layer accessors and errors", "[rtrl][stack][mask]") {
  using Catch::Matchers::Contains;
  const std::vector<Index> sizes = {8, 6};
  Model<double> model = random_stack<double>(sizes, 3, 0.8, true, 400);
  Rtrl<double> rtrl(model);
  const Mat<double> X = test::random_matrix<double>(40, 3, 10);
  const Mat<double> G = test::random_matrix<double>(40, 6, 11);
  const auto pruned = ParameterMask::random(6, 8, 0.4, 0.5, 12);
  for (Index t = 0; t < 40; ++t) {
    if (t == 20) {
      model.set_mask(pruned, 1);  // the learner follows before its next step
    }
    rtrl.step(X.row(t));
    rtrl.accumulate_gradient(G.row(t));
  }
  CHECK(rtrl.layout(1).columns() == InfluenceLayout(pruned, true).columns());
  CHECK(rtrl.column_offset(1) == rtrl.layout(0).columns());
  CHECK(rtrl.columns() == rtrl.layout(0).columns() + rtrl.layout(1).columns());
  CHECK(rtrl.influence(1).cols() == rtrl.columns());
  CHECK(rtrl.influence(0).cols() == rtrl.layout(0).columns());
  CHECK(pruned.respected_by(rtrl.gradient(1)));
  // Exactness across a mask change is tested for one layer (rtrl_sparsity.test.cpp); the column
  // mapping is the same code for every layer of a stack.
  REQUIRE_THROWS_WITH(rtrl.gradient(), Contains("stack of 2 layers"));
  REQUIRE_THROWS_WITH(rtrl.influence(), Contains("stack of 2 layers"));
  REQUIRE_THROWS_AS(rtrl.gradient(2), std::out_of_range);
  REQUIRE_THROWS_AS(rtrl.accumulate_gradient_at(1, Vec<double>::Zero(5)), std::invalid_argument);
  REQUIRE_THROWS_WITH(Model<double>(std::vector<EgruCell<double>>{EgruCell<double>(4, 3), EgruCell<double>(5, 3)}),
                      Contains("layer 1 reads layer 0's output: it needs d = 4"));
}

TEST_CASE("RtrlStreams over a stack equals independent stacked learners bitwise", "[streams][stack]") {
  using Catch::Matchers::Contains;
  const std::vector<Index> sizes = {12, 9};
  Model<float> model = random_stack<float>(sizes, 5, 0.6, true, 500);
  const Index B = 3, T = 25;
  for (int threads : {1, 2}) {
    INFO("threads = " << threads);
    RtrlOptions options;
    options.threads = threads;
    RtrlStreams<float> streams(model, B, options);
    REQUIRE(streams.layers() == 2);
    std::vector<Rtrl<float>> reference;
    for (Index b = 0; b < B; ++b) reference.emplace_back(model);
    Mat<float> X(B, 5), G(B, sizes.back());
    for (Index t = 0; t < T; ++t) {
      X = test::random_matrix<float>(B, 5, 600 + std::uint64_t(t));
      G = test::random_matrix<float>(B, sizes.back(), 700 + std::uint64_t(t));
      streams.step(X);
      streams.accumulate_gradient(G);
      for (Index b = 0; b < B; ++b) {
        reference[std::size_t(b)].step(X.row(b));
        reference[std::size_t(b)].accumulate_gradient(G.row(b));
      }
    }
    Vec<float> summed = Vec<float>::Zero(reference[0].columns());
    for (Index b = 0; b < B; ++b) {
      CHECK(streams.stream(b).state(0) == reference[std::size_t(b)].state(0));
      CHECK(streams.stream(b).gradient_columns() == reference[std::size_t(b)].gradient_columns());
      summed += reference[std::size_t(b)].gradient_columns();
    }
    CHECK(streams.gradient_columns() == summed);
    CHECK(streams.gradient(0).W.size() == 3 * 12 * 5);
    REQUIRE_THROWS_WITH(streams.gradient(), Contains("stack of 2 layers"));
  }
}
