// Model: one owner of the parameters and the mask; learners and optimizers reference it.
#include "test_support.hpp"

using namespace sparse_rtrl;
using test::Mat;
using test::Vec;

namespace {
template <typename S>
EgruCell<S> firing_cell(Index n, Index d, std::uint64_t seed) {
  return EgruCell<S>(test::firing_parameters<S>(n, d, seed), CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.4)));
}
}  // namespace

TEMPLATE_TEST_CASE("Learners hold no copy of the parameters: they read the model", "[model]", float, double) {
  using S = TestType;
  Model<S> model(firing_cell<S>(9, 3, 1), ParameterMask::random(9, 3, 0.6, 0.5, 2));
  Rtrl<S> rtrl(model);
  Bptt<S> bptt(model);
  Snap<S> snap(model, 2);
  RtrlStreams<S> streams(model, 2);
  CHECK(&rtrl.cell() == &model.cell());
  CHECK(&bptt.cell() == &model.cell());
  CHECK(&snap.cell() == &model.cell());
  CHECK(&streams.model() == &model);
  CHECK(&rtrl.mask() == &model.mask());

  // A change to the model (an optimizer step) is what the next step of every learner uses.
  const Mat<S> X = test::random_matrix<S>(6, 3, 3);
  model.parameters().bW.array() += S(0.25);
  Model<S> changed_copy = model;  // an independent model with the same values
  Rtrl<S> fresh(changed_copy);
  for (Index t = 0; t < X.rows(); ++t) {
    rtrl.step(X.row(t));
    fresh.step(X.row(t));
  }
  CHECK(rtrl.state() == fresh.state());
  CHECK(Mat<S>(rtrl.influence()) == Mat<S>(fresh.influence()));
}

TEST_CASE("Model applies its mask and set_mask bumps the version learners follow", "[model]") {
  const Index n = 6, d = 2;
  const auto mask = ParameterMask::random(n, d, 0.5, 0.5, 4);
  Model<double> model(firing_cell<double>(n, d, 5), mask);
  CHECK(mask.respected_by(model.parameters()));
  CHECK(model.mask() == mask);
  CHECK(model.mask_version() == 0);
  const auto other = ParameterMask::random(n, d, 0.4, 0.3, 6);
  model.set_mask(other);
  CHECK(model.mask_version() == 1);
  CHECK(other.respected_by(model.parameters()));
  using Catch::Matchers::Contains;
  REQUIRE_THROWS_WITH(model.set_mask(ParameterMask::dense(n + 1, d)), Contains("sparse_rtrl::Model::set_mask()"));
  CHECK(model.mask_version() == 1);
  REQUIRE_THROWS_WITH(Model<double>(firing_cell<double>(n, d, 5), ParameterMask::dense(4, d)),
                      Contains("sparse_rtrl::Model::Model()") && Contains("mask is for n = 4"));

  // A pruned weight written by hand is zeroed again before the next step (the forward pass
  // matches the columns the learners track).
  Index r = 0, c = 0;
  for (Index i = 0; i < other.R().size(); ++i)
    if (!other.R()(i)) {
      r = i % (3 * n);
      c = i / (3 * n);
      break;
    }
  REQUIRE_FALSE(other.R()(r, c));
  model.parameters().R(r, c) = 0.5;
  model.enforce_mask();
  CHECK(model.parameters().R(r, c) == 0.0);
}

TEMPLATE_TEST_CASE("A learner follows a mask set on its model exactly as if it had set it itself", "[model][mask]", float,
                   double) {
  using S = TestType;
  const Index n = 10, d = 3, T = 30;
  const auto before = ParameterMask::random(n, d, 0.7, 0.6, 7);
  const auto after = ParameterMask::random(n, d, 0.5, 0.4, 8);
  Model<S> a(firing_cell<S>(n, d, 9), before), b(firing_cell<S>(n, d, 9), before);
  Rtrl<S> self(a), follower(b), other_follower(b);
  const Mat<S> X = test::random_matrix<S>(T, d, 10);
  const Mat<S> G = test::random_matrix<S>(T, n, 11);
  for (Index t = 0; t < T; ++t) {
    if (t == 12) {
      self.set_mask(after);  // sets a's mask and re-lays self's columns now
      b.set_mask(after);     // the followers re-lay theirs at their next step
    }
    self.step(X.row(t));
    follower.step(X.row(t));
    other_follower.step(X.row(t));
    self.accumulate_gradient(G.row(t));
    follower.accumulate_gradient(G.row(t));
    other_follower.accumulate_gradient(G.row(t));
  }
  CHECK(self.layout().columns() == follower.layout().columns());
  CHECK(self.state() == follower.state());
  CHECK(Mat<S>(self.influence()) == Mat<S>(follower.influence()));
  CHECK(self.gradient_columns() == follower.gradient_columns());
  CHECK(follower.gradient_columns() == other_follower.gradient_columns());
}

TEST_CASE("Snap refuses to step after its model's mask changed", "[model][snap]") {
  Model<double> model(firing_cell<double>(5, 2, 12));
  Snap<double> snap(model, 1);
  snap.step(Vec<double>::Constant(2, 0.1));
  model.set_mask(ParameterMask::random(5, 2, 0.5, 0.5, 13));
  REQUIRE_THROWS_AS(snap.step(Vec<double>::Constant(2, 0.1)), std::logic_error);
}

TEST_CASE("Optimizers and the pruner act on a model", "[model][optimizer][pruning]") {
  const Index n = 8, d = 3;
  Model<double> model(firing_cell<double>(n, d, 14), ParameterMask::random(n, d, 0.8, 0.8, 15));
  EgruParameters<double> grad(n, d);
  grad.W.setOnes();
  grad.R.setOnes();
  grad.bW.setOnes();
  grad.bR.setOnes();
  grad.theta.setOnes();
  Sgd<double> sgd(SgdOptions<double>{0.1});
  const double bias = model.parameters().bW(0);
  sgd.step(model, grad);
  CHECK(model.parameters().bW(0) == Approx(bias - 0.1));
  CHECK(model.mask().respected_by(model.parameters()));

  MagnitudePruner pruner(PruningSchedule{0.5, 0.5, 1}, model.mask());
  Rtrl<double> rtrl(model);
  const auto columns = rtrl.layout().columns();
  pruner.prune(model);
  CHECK(model.mask_version() == 1);
  CHECK(model.mask().density_R() < 0.8);
  rtrl.step(Vec<double>::Constant(d, 0.2));  // follows the pruned mask
  CHECK(rtrl.layout().columns() < columns);
}

TEMPLATE_TEST_CASE("Optimizers update one layer of a stack, and refuse to guess which", "[model][optimizer]", float,
                   double) {
  using S = TestType;
  const Index d = 3;
  std::vector<EgruCell<S>> cells{firing_cell<S>(6, d, 16), firing_cell<S>(4, 6, 17)};
  std::vector<ParameterMask> masks{ParameterMask::random(6, d, 0.7, 0.7, 18), ParameterMask::random(4, 6, 0.5, 0.5, 19)};
  Model<S> model(cells, masks);
  EgruParameters<S> grad(4, 6);
  grad.W.setOnes();
  grad.R.setOnes();
  grad.bW.setOnes();
  grad.bR.setOnes();
  grad.theta.setOnes();
  const EgruParameters<S> before0 = model.parameters(0), before1 = model.parameters(1);
  Sgd<S> sgd(SgdOptions<S>{S(0.5)});
  Adam<S> adam(AdamOptions<S>{S(0.01)});
  // Without a layer index a stack is refused, and nothing moves.
  REQUIRE_THROWS_AS(sgd.step(model, grad), std::logic_error);
  REQUIRE_THROWS_AS(adam.step(model, grad), std::logic_error);
  REQUIRE_THROWS_AS(sgd.step(model, grad, 2), std::out_of_range);
  REQUIRE_THROWS_AS(adam.step(model, grad, -1), std::out_of_range);
  // A gradient shaped for layer 1 is refused for layer 0 (6 units, d inputs).
  REQUIRE_THROWS_AS(sgd.step(model, grad, 0), std::invalid_argument);
  CHECK(model.parameters(0).W == before0.W);
  CHECK(model.parameters(1).W == before1.W);

  sgd.step(model, grad, 1);
  CHECK(model.parameters(0).W == before0.W);  // layer 0 untouched
  CHECK(model.parameters(1).bW(0) == Approx(before1.bW(0) - S(0.5)));
  CHECK(model.mask(1).respected_by(model.parameters(1)));
  for (Index i = 0; i < 12; ++i)
    for (Index j = 0; j < 6; ++j)
      if (model.mask(1).W()(i, j)) CHECK(model.parameters(1).W(i, j) == Approx(before1.W(i, j) - S(0.5)));
}

TEST_CASE("A model reshaped or switched to GRU mode under a learner is refused, not read out of bounds",
          "[model][errors]") {
  using Catch::Matchers::Contains;
  const Index n = 8, d = 3;
  Model<double> model(firing_cell<double>(n, d, 20), ParameterMask::random(n, d, 0.6, 0.6, 21));
  Rtrl<double> rtrl(model);
  Bptt<double> bptt(model);
  const Mat<double> X = test::random_matrix<double>(4, d, 22);
  rtrl.step(X.row(0));
  bptt.forward(X);
  const auto columns = rtrl.layout().columns();

  // Half the units, with a mask for them: follow_mask / set_mask / step refuse.
  Model<double> original = model;
  model.cell() = firing_cell<double>(n / 2, d, 23);
  model.set_mask(ParameterMask::random(n / 2, d, 0.5, 0.5, 24));
  REQUIRE_THROWS_WITH(rtrl.follow_mask(), Contains("sparse_rtrl::Rtrl::follow_mask()") && Contains("changed shape"));
  REQUIRE_THROWS_AS(rtrl.set_mask(ParameterMask::dense(n / 2, d)), std::invalid_argument);
  REQUIRE_THROWS_AS(rtrl.step(X.row(1)), std::invalid_argument);
  REQUIRE_THROWS_WITH(bptt.backward(Mat<double>::Zero(4, n / 2)), Contains("changed shape or mode since forward()"));
  // The learner is unchanged: still laid out for its old mask, which its layout accessors refuse
  // to report as the model's (issue 19, item 6).
  CHECK(rtrl.influence_columns(0) == columns);
  CHECK_THROWS_AS(rtrl.layout(), std::logic_error);
  CHECK(rtrl.steps() == 1);

  // Same shapes, GRU mode: the learner's layout tracks thresholds, the cell no longer has them.
  model = original;
  model.cell() = EgruCell<double>(original.parameters(), CellOptions{false});
  REQUIRE_THROWS_WITH(rtrl.step(X.row(1)), Contains("changed mode"));
  model.set_mask(ParameterMask::random(n, d, 0.5, 0.5, 25));
  REQUIRE_THROWS_WITH(rtrl.follow_mask(), Contains("changed mode"));
  CHECK(rtrl.influence_columns(0) == columns);
}

TEMPLATE_TEST_CASE("After Model::set_mask, gradients read before the next step have the pruned entries zero",
                   "[model][mask]", float, double) {
  using S = TestType;
  const Index n = 9, d = 3;
  Model<S> model(firing_cell<S>(n, d, 30));
  Rtrl<S> rtrl(model);
  RtrlStreams<S> streams(model, 2);
  const Mat<S> X = test::random_matrix<S>(2, d, 31);
  const Mat<S> G = test::random_matrix<S>(2, n, 32);
  for (int t = 0; t < 5; ++t) {
    rtrl.step(X.row(0));
    rtrl.accumulate_gradient(G.row(0));
    streams.step(X);
    streams.accumulate_gradient(G);
  }
  const auto pruned = ParameterMask::random(n, d, 0.4, 0.4, 33);
  model.set_mask(pruned);
  const EgruParameters<S> g = rtrl.gradient();
  CHECK(pruned.respected_by(g));
  Model<S> followed_model = model;  // the same values; a learner that followed gives the same
  const EgruParameters<S> gs = streams.gradient();
  CHECK(pruned.respected_by(gs));
  CHECK(streams.layout().columns() == InfluenceLayout(pruned, true).columns());
  rtrl.follow_mask();
  CHECK(rtrl.gradient().R == g.R);
}

TEST_CASE("RtrlStreams accumulates for the streams with a loss only, and names a stream that has not stepped",
          "[streams][errors]") {
  using Catch::Matchers::Contains;
  const Index n = 6, d = 2;
  Model<double> model(firing_cell<double>(n, d, 40));
  RtrlStreams<double> streams(model, 3);
  streams.step(test::random_matrix<double>(3, d, 41));
  streams.reset(1);
  Mat<double> G = test::random_matrix<double>(3, n, 42);
  G.row(1).setZero();
  streams.accumulate_gradient(G);  // stream 1 was reset, but has no loss: fine
  CHECK(streams.stream(1).gradient_columns().isZero(0));
  CHECK_FALSE(streams.stream(0).gradient_columns().isZero(0));
  G.row(1).setOnes();
  REQUIRE_THROWS_WITH(streams.accumulate_gradient(G), Contains("call step() first") && Contains("(stream 1)"));

  RtrlStreams<double> moved(std::move(streams));
  REQUIRE_THROWS_WITH(streams.step(Mat<double>::Zero(3, d)), Contains("used after move"));
  CHECK(moved.streams() == 3);
}
