// Gradual magnitude pruning: the schedule's densities, masks that keep the largest weights and
// never revive pruned ones, and pruning an RTRL learner during online training.
#include "test_support.hpp"

using namespace sparse_rtrl;
using test::Mat;
using test::Vec;

namespace {

Index scheduled_count(double density, Index size) { return Index(std::llround(density * double(size))); }

/// True when every entry kept by `inner` is kept by `outer`.
bool subset(const ParameterMask::BoolMatrix& inner, const ParameterMask::BoolMatrix& outer) {
  return (inner && !outer).count() == 0;
}

}  // namespace

TEST_CASE("Pruning schedules follow Zhu & Gupta's cubic curve, or a line", "[pruning]") {
  // Worked by hand for d_0 = 1, d_N = 0.1, N = 4: d_k = 0.1 + 0.9 (1 - k/4)^3 with
  // (3/4)^3 = 0.421875, (1/2)^3 = 0.125, (1/4)^3 = 0.015625; the line steps by 0.225.
  const MagnitudePruner cubic(PruningSchedule{0.1, 0.1, 4, PruningCurve::cubic});
  const double expected_cubic[5] = {1.0, 0.4796875, 0.2125, 0.1140625, 0.1};
  const MagnitudePruner linear(PruningSchedule{0.1, 0.1, 4, PruningCurve::linear});
  const double expected_linear[5] = {1.0, 0.775, 0.55, 0.325, 0.1};
  for (Index k = 0; k <= 4; ++k) {
    CAPTURE(k);
    CHECK(std::abs(cubic.density_W(k) - expected_cubic[k]) <= 1e-15);
    CHECK(std::abs(cubic.density_R(k) - expected_cubic[k]) <= 1e-15);
    CHECK(std::abs(linear.density_W(k) - expected_linear[k]) <= 1e-15);
  }
  CHECK(cubic.density_W(4) == 0.1);  // exactly the target at the end
  CHECK(linear.density_R(4) == 0.1);
  CHECK(cubic.events() == 4);
  CHECK(cubic.events_done() == 0);
  CHECK_FALSE(cubic.finished());

  // From a sparse start, each matrix has its own initial and target density.
  const auto start = ParameterMask::random(10, 4, 0.5, 0.8, 3);
  const MagnitudePruner from_mask(PruningSchedule{0.25, 0.2, 2}, start);
  CHECK(from_mask.density_W(0) == start.density_W());
  CHECK(from_mask.density_R(0) == start.density_R());
  // (1 - 1/2)^3 = 0.125: W 0.25 + 0.25 * 0.125, R 0.2 + 0.6 * 0.125.
  CHECK(std::abs(from_mask.density_W(1) - 0.28125) <= 1e-15);
  CHECK(std::abs(from_mask.density_R(1) - 0.275) <= 1e-15);
}

TEMPLATE_TEST_CASE("Each pruning event keeps the largest kept weights and never revives one", "[pruning]", float, double) {
  using S = TestType;
  const Index n = 8, d = 4;
  auto params = init_torch_like<S>(n, d, {11, S(0.3)});
  MagnitudePruner pruner(PruningSchedule{0.2, 0.1, 3});
  ParameterMask current = ParameterMask::dense(n, d);
  for (Index k = 1; k <= 3; ++k) {
    CAPTURE(k);
    // Training moves the weights between events; pruned weights would be zero in a learner,
    // but here they are given the LARGEST magnitudes: they must still not come back.
    params.W += S(0.1) * test::random_matrix<S>(3 * n, d, 100 + std::uint64_t(k));
    params.R += S(0.1) * test::random_matrix<S>(3 * n, n, 200 + std::uint64_t(k));
    auto shown = params;
    shown.W = current.W().select(params.W, S(10));
    shown.R = current.R().select(params.R, S(-10));
    const ParameterMask next = pruner.next_mask(current, shown);
    CHECK(pruner.events_done() == k);
    CHECK(subset(next.W(), current.W()));
    CHECK(subset(next.R(), current.R()));
    CHECK(next.kept_W() == std::min(current.kept_W(), scheduled_count(pruner.density_W(k), 3 * n * d)));
    CHECK(next.kept_R() == std::min(current.kept_R(), scheduled_count(pruner.density_R(k), 3 * n * n)));
    // The kept ones are the largest of the previously kept: equal to from_magnitude() on the
    // weights with pruned entries zeroed, intersected with the current mask (no kept weight is 0).
    auto masked = params;
    current.apply(masked);
    const auto by_magnitude = ParameterMask::from_magnitude(masked, pruner.density_W(k), pruner.density_R(k));
    CHECK((next.W() == (by_magnitude.W() && current.W())).all());
    CHECK((next.R() == (by_magnitude.R() && current.R())).all());
    double smallest_kept = 1e9, largest_dropped = 0;
    for (Index i = 0; i < params.R.size(); ++i) {
      if (!current.R()(i)) continue;
      const double a = std::abs(double(params.R(i)));
      if (next.R()(i)) smallest_kept = std::min(smallest_kept, a);
      else largest_dropped = std::max(largest_dropped, a);
    }
    CHECK(smallest_kept >= largest_dropped);
    current = next;
  }
  CHECK(pruner.finished());
  CHECK(current.kept_W() == scheduled_count(0.2, 3 * n * d));
  CHECK(current.kept_R() == scheduled_count(0.1, 3 * n * n));
}

TEST_CASE("Kept weights that are exactly zero still count towards the scheduled density", "[pruning]") {
  // from_magnitude() alone would rank a kept zero level with the pruned zeros and could pick a
  // pruned one (lower index wins ties), leaving fewer weights than scheduled after intersection.
  const Index n = 2, d = 1;
  EgruParameters<double> p(n, d);  // every weight zero
  ParameterMask::BoolMatrix keep_W = ParameterMask::BoolMatrix::Constant(3 * n, d, false);
  ParameterMask::BoolMatrix keep_R = ParameterMask::BoolMatrix::Constant(3 * n, n, false);
  keep_W.bottomRows(3).setConstant(true);  // the last 3 of 6 kept
  keep_R.bottomRows(3).setConstant(true);  // the last 6 of 12 kept
  const ParameterMask current(keep_W, keep_R);
  MagnitudePruner pruner(PruningSchedule{2.0 / 6.0, 4.0 / 12.0, 1}, current);
  const auto next = pruner.next_mask(current, p);
  CHECK(next.kept_W() == 2);
  CHECK(next.kept_R() == 4);
  CHECK(subset(next.W(), current.W()));
  CHECK(subset(next.R(), current.R()));
}

TEMPLATE_TEST_CASE("Pruning an RTRL learner during online training", "[pruning][rtrl]", float, double) {
  // Online learning (Adam after every step) with a pruning event every 40 steps from step 80:
  // W and R go from dense to 30% and 20% in 4 cubic events. After each event the learner tracks
  // only the kept weights, and the masked optimizer step keeps the pruned ones at zero.
  using S = TestType;
  const Index n = 8, d = 3, T = 400, t0 = 80, dt = 40;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(n, d, 31), CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.5))));
  Rtrl<S> rtrl(model);
  LinearReadout<S> readout(2, n, ReadoutInitOptions{32});
  Adam<S> adam_cell(AdamOptions<S>{S(0.003)}), adam_out(AdamOptions<S>{S(0.003)});
  MagnitudePruner pruner(PruningSchedule{0.3, 0.2, 4});
  const Mat<S> X = test::random_matrix<S>(T, d, 33);
  Vec<S> logits(2), dL_dlogits(2), dL_dy(n);
  EgruParameters<S> g;
  Index events = 0;
  for (Index t = 0; t < T; ++t) {
    rtrl.step(X.row(t));
    readout.forward(rtrl.output(), logits);
    softmax_cross_entropy(logits, X(t, 0) > 0 ? 1 : 0, dL_dlogits);
    readout.backward(rtrl.output(), dL_dlogits, dL_dy);
    rtrl.accumulate_gradient(dL_dy);
    rtrl.gradient(g);
    adam_cell.step(rtrl.cell().parameters(), g, rtrl.mask());
    adam_out.step(readout);
    rtrl.zero_gradient();
    readout.zero_gradient();
    REQUIRE(rtrl.mask().respected_by(rtrl.cell().parameters()));
    if (t >= t0 && (t - t0) % dt == 0 && !pruner.finished()) {
      const ParameterMask before = rtrl.mask();
      const ParameterMask& after = pruner.prune(rtrl);
      ++events;
      const Index k = pruner.events_done();
      CAPTURE(t, k);
      CHECK(&after == &rtrl.mask());
      CHECK(subset(after.W(), before.W()));
      CHECK(subset(after.R(), before.R()));
      CHECK(after.kept_W() == scheduled_count(pruner.density_W(k), 3 * n * d));
      CHECK(after.kept_R() == scheduled_count(pruner.density_R(k), 3 * n * n));
      CHECK(rtrl.layout().columns() == after.kept_W() + after.kept_R() + 7 * n);  // P_kept
      CHECK(after.respected_by(rtrl.cell().parameters()));
    }
  }
  CHECK(events == 4);
  CHECK(pruner.finished());
  CHECK(std::abs(rtrl.mask().density_W() - 0.3) <= 0.5 / double(3 * n * d));
  CHECK(std::abs(rtrl.mask().density_R() - 0.2) <= 0.5 / double(3 * n * n));
  // Adam's moments of pruned weights were cleared by the masked steps.
  for (Index i = 0; i < 3 * n * n; ++i)
    if (!rtrl.mask().R()(i)) {
      REQUIRE(adam_cell.first_moment(1)(i) == S(0));
      REQUIRE(adam_cell.second_moment(1)(i) == S(0));
    }

  // The pruned network's RTRL gradient on a fresh sequence is still exactly BPTT's.
  const Mat<S> X2 = test::random_matrix<S>(50, d, 34), G = test::random_matrix<S>(50, n, 35);
  Model<S> pruned(rtrl.cell(), rtrl.mask());  // a copy of the pruned network
  Bptt<S> bptt(pruned);
  bptt.forward(X2);
  const auto g_ref = bptt.backward(G);
  rtrl.reset();
  rtrl.zero_gradient();
  const auto g_rtrl = test::rtrl_gradient(rtrl, X2, G);
  CHECK(test::relative_error(g_rtrl, g_ref) <= test::Tolerance<S>::gradient);
}

TEST_CASE("Pruning rejects bad input", "[pruning][errors]") {
  using Catch::Matchers::Contains;
  REQUIRE_THROWS_WITH(MagnitudePruner(PruningSchedule{0.1, 0.1, 0}),
                      Contains("sparse_rtrl::MagnitudePruner::MagnitudePruner()") && Contains("schedule.events must be >= 1, received 0"));
  REQUIRE_THROWS_WITH(MagnitudePruner(PruningSchedule{0.1, 0.1, 3}, 1.5, 1.0), Contains("initial_density_W must be in [0, 1], received 1.5"));
  REQUIRE_THROWS_WITH(MagnitudePruner(PruningSchedule{0.1, 0.1, 3}, 1.0, -0.5), Contains("initial_density_R must be in [0, 1], received -0.5"));
  REQUIRE_THROWS_WITH(MagnitudePruner(PruningSchedule{-0.1, 0.1, 3}), Contains("schedule.target_density_W must be in [0, 1]"));
  REQUIRE_THROWS_WITH(MagnitudePruner(PruningSchedule{0.1, 0.7, 3}, 1.0, 0.5),
                      Contains("schedule.target_density_R must be in [0, 0.5] (at most the initial density), received 0.7"));
  REQUIRE_THROWS_AS(MagnitudePruner(PruningSchedule{std::nan(""), 0.1, 3}), std::invalid_argument);
  REQUIRE_THROWS_WITH(MagnitudePruner(PruningSchedule{0.1, 0.1, 3, static_cast<PruningCurve>(7)}),
                      Contains("schedule.curve must be cubic or linear, received 7"));

  MagnitudePruner pruner(PruningSchedule{0.5, 0.5, 1});
  REQUIRE_THROWS_AS(pruner.density_W(2), std::out_of_range);
  REQUIRE_THROWS_WITH(pruner.density_R(-1), Contains("event must be in [0, 1], received -1"));
  auto p = init_torch_like<double>(3, 2);
  REQUIRE_THROWS_WITH(pruner.next_mask(ParameterMask::dense(4, 2), p),
                      Contains("sparse_rtrl::MagnitudePruner::next_mask()") && Contains("mask is for n = 4, d = 2"));
  p.theta(0) = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_WITH(pruner.next_mask(ParameterMask::dense(3, 2), p), Contains("theta must be finite"));
  CHECK(pruner.events_done() == 0);  // rejected input performs no event
  p.theta(0) = 0.3;
  pruner.next_mask(ParameterMask::dense(3, 2), p);
  REQUIRE_THROWS_AS(pruner.next_mask(ParameterMask::dense(3, 2), p), std::logic_error);
  REQUIRE_THROWS_WITH(pruner.next_mask(ParameterMask::dense(3, 2), p), Contains("all 1 pruning events are done"));
}

namespace {
/// A learner whose set_mask() refuses (as RtrlStreams does, out of memory, with std::length_error).
template <typename S>
struct RefusingLearner {
  Model<S>* model;
  const ParameterMask& mask() const { return model->mask(); }
  EgruCell<S>& cell() { return model->cell(); }
  void set_mask(const ParameterMask&) { throw std::length_error("no memory for the new layout"); }
};
}  // namespace

TEMPLATE_TEST_CASE("An event the learner rejects is not counted", "[pruning][errors]", float, double) {
  // Issue 20, item 10: prune() counted the event before set_mask() refused it.
  using S = TestType;
  Model<S> model(EgruCell<S>(init_torch_like<S>(4, 2)));
  MagnitudePruner pruner(PruningSchedule{0.5, 0.5, 2});
  RefusingLearner<S> refusing{&model};
  REQUIRE_THROWS_AS(pruner.prune(refusing), std::length_error);
  CHECK(pruner.events_done() == 0);
  CHECK(model.mask() == ParameterMask::dense(4, 2));
  pruner.prune(model);  // the same event, accepted
  CHECK(pruner.events_done() == 1);
  CHECK(model.mask().kept_R() < 3 * 4 * 4);
}
