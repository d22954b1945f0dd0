// Checkpoints of Snap (SnAp-n) learners: a run saved at step t and loaded into freshly
// constructed objects (other weights, same masks) continues bit for bit as the uninterrupted
// run: float and double, 1 and 2 layers, SnAp-1 and SnAp-2 (and the other cross-layer schemes),
// with Adam in the loop. A file of another order or scheme, and a truncated file, are refused
// with nothing changed.
#include "io/io_support.hpp"

#include <memory>
#include <random>

using namespace sparse_rtrl;
using iotest::same;
using iotest::same_bits;
using test::Vec;

namespace {

constexpr Index kIn = 3;
const Index kN[] = {6, 5};

template <typename S>
Model<S> snap_model(Index L, std::uint64_t seed) {
  std::vector<EgruCell<S>> cells;
  std::vector<ParameterMask> masks;
  Index in = kIn;
  for (Index k = 0; k < L; ++k) {
    cells.emplace_back(test::firing_parameters<S>(kN[k], in, seed + 10 * std::uint64_t(k)), CellOptions{true},
                       TriangularSurrogate<S>(S(1), S(0.3)));
    masks.push_back(ParameterMask::random(kN[k], in, 0.8, 0.6, 77 + std::uint64_t(k)));  // same in every run
    in = kN[k];
  }
  return Model<S>(cells, masks);
}

template <typename S>
struct SnapRun {
  Index L;
  Model<S> model;
  Snap<S> snap;
  std::vector<std::unique_ptr<Adam<S>>> adam;
  std::mt19937_64 rng;
  std::int64_t t = 0;

  SnapRun(Index layers, SnapOptions options, std::uint64_t seed, bool fresh)
      : L(layers), model(snap_model<S>(layers, seed)), snap(model, options), rng(fresh ? seed + 5 : 4242) {
    for (Index k = 0; k < L; ++k) adam.push_back(std::make_unique<Adam<S>>(AdamOptions<S>{fresh ? S(0.3) : S(0.02)}));
  }

  io::Checkpoint checkpoint() {
    io::Checkpoint c;
    c.add(model).add("snap", snap).add("rng", rng).add("t", t);
    for (Index k = 0; k < L; ++k) c.add("adam" + std::to_string(k), *adam[std::size_t(k)]);
    return c;
  }

  void step() {
    Vec<S> x(kIn), g(kN[L - 1]);
    for (Index j = 0; j < kIn; ++j) x(j) = S(double(rng() >> 11) * (3.0 / 9007199254740992.0) - 1.5);
    snap.step(x);
    for (Index i = 0; i < g.size(); ++i) g(i) = snap.output()(i) - S(double(rng() % 3) * 0.5);
    snap.accumulate_gradient(g);
    if (L > 1) snap.accumulate_gradient_at(0, Vec<S>::Constant(kN[0], S(0.01)));
    if ((t + 1) % 3 == 0) {
      EgruParameters<S> grad;
      for (Index k = 0; k < L; ++k) {
        snap.gradient(k, grad);
        adam[std::size_t(k)]->step(model.parameters(k), grad, model.mask(k));
      }
      snap.zero_gradient();
    }
    ++t;
  }
};

template <typename S>
void require_same_snap(const Snap<S>& a, const Snap<S>& b) {
  REQUIRE(a.steps() == b.steps());
  REQUIRE(same_bits(a.gradient_columns(), b.gradient_columns()));
  REQUIRE(same(a.total_work(), b.total_work()));
  REQUIRE(same(a.last_step_work(), b.last_step_work()));
  const auto sa = a.stage_state(), sb = b.stage_state();
  for (Index k = 0; k < a.layers(); ++k) {
    INFO("layer " << k);
    REQUIRE(same_bits(a.state(k), b.state(k)));
    REQUIRE(same_bits(a.output(k), b.output(k)));
    REQUIRE(same_bits(sa.influence(k), sb.influence(k)));
    REQUIRE(same(a.total_work(k), b.total_work(k)));
    REQUIRE(same(a.last_step_work(k), b.last_step_work(k)));
  }
}

template <typename S>
void require_same_run(SnapRun<S>& a, SnapRun<S>& b) {
  REQUIRE(a.t == b.t);
  REQUIRE(a.rng == b.rng);
  for (Index k = 0; k < a.L; ++k) {
    INFO("model layer " << k);
    REQUIRE(same_bits(a.model.parameters(k).W, b.model.parameters(k).W));
    REQUIRE(same_bits(a.model.parameters(k).R, b.model.parameters(k).R));
    REQUIRE(same_bits(a.model.parameters(k).bW, b.model.parameters(k).bW));
    REQUIRE(same_bits(a.model.parameters(k).bR, b.model.parameters(k).bR));
    REQUIRE(same_bits(a.model.parameters(k).theta, b.model.parameters(k).theta));
  }
  require_same_snap(a.snap, b.snap);
}

}  // namespace

TEMPLATE_TEST_CASE("A Snap run saved at step t and loaded into fresh objects continues bit for bit",
                   "[io][checkpoint][snap]", float, double) {
  using S = TestType;
  const struct {
    Index L;
    SnapOptions options;
  } cases[] = {{1, {1, SnapCrossLayer::graph}}, {1, {2, SnapCrossLayer::graph}}, {2, {1, SnapCrossLayer::graph}},
               {2, {2, SnapCrossLayer::graph}}, {2, {2, SnapCrossLayer::none}},  {2, {3, SnapCrossLayer::same_step}}};
  iotest::TempDir dir;
  for (const auto& c : cases) {
    INFO("layers " << c.L << ", SnAp-" << c.options.order << ", cross_layer " << int(c.options.cross_layer));
    const std::string path = dir.file("snap.npz");
    const Index total = 24, save_at = 11;
    SnapRun<S> straight(c.L, c.options, 1, false);
    for (Index s = 0; s < total; ++s) straight.step();

    SnapRun<S> first(c.L, c.options, 1, false);
    for (Index s = 0; s < save_at; ++s) first.step();
    first.checkpoint().save(path);

    SnapRun<S> resumed(c.L, c.options, 900, true);  // other weights, moments, engine state
    REQUIRE_FALSE(same_bits(resumed.model.parameters(0).W, first.model.parameters(0).W));
    resumed.checkpoint().load(path);
    require_same_run(resumed, first);
    for (Index s = save_at; s < total; ++s) resumed.step();
    require_same_run(resumed, straight);
    REQUIRE(resumed.snap.kept_entries() > 0);
  }
}

TEST_CASE("Snap checkpoints of another order or scheme, or truncated, are refused with nothing changed",
          "[io][checkpoint][snap]") {
  using S = double;
  iotest::TempDir dir;
  const std::string path = dir.file("snap.npz");
  SnapRun<S> saved(2, SnapOptions{2, SnapCrossLayer::graph}, 1, false);
  for (int s = 0; s < 7; ++s) saved.step();
  saved.checkpoint().save(path);

  const auto refused = [&](SnapRun<S>& live, const std::string& file, const std::string& message) {
    for (int s = 0; s < 4; ++s) live.step();
    const auto before = live.snap.stage_state();
    const auto W0 = live.model.parameters(0).W;
    const std::int64_t t = live.t;
    REQUIRE_THROWS_WITH(live.checkpoint().load(file), Catch::Contains(message));
    REQUIRE(live.t == t);
    REQUIRE(same_bits(live.model.parameters(0).W, W0));
    const auto after = live.snap.stage_state();
    REQUIRE(after.steps == before.steps);
    REQUIRE(same_bits(after.gradient(), before.gradient()));
    for (std::size_t k = 0; k < 2; ++k) {
      REQUIRE(same_bits(after.influence(k), before.influence(k)));
      REQUIRE(same_bits(after.state(k), before.state(k)));
    }
  };

  SECTION("another order") {
    SnapRun<S> live(2, SnapOptions{1, SnapCrossLayer::graph}, 900, true);
    refused(live, path, "entry 'snap/order': the file holds a SnAp-2 learner, 'snap' is SnAp-1");
  }
  SECTION("another cross-layer scheme") {
    SnapRun<S> live(2, SnapOptions{2, SnapCrossLayer::none}, 900, true);
    refused(live, path, "the file holds SnapCrossLayer::graph (0), 'snap' uses SnapCrossLayer::none (1)");
  }
  SECTION("a truncated file") {
    const std::string bytes = iotest::read_bytes(path);
    const std::string cut = dir.file("cut.npz");
    iotest::write_bytes(cut, bytes.substr(0, bytes.size() * 2 / 3));
    SnapRun<S> live(2, SnapOptions{2, SnapCrossLayer::graph}, 900, true);
    refused(live, cut, cut);
  }
  SECTION("a kept-entries array of another size") {
    SnapRun<S> other(2, SnapOptions{2, SnapCrossLayer::graph}, 1, false);
    io::NpzReader r(path);
    REQUIRE(r.info("snap/l0/kept").shape == std::vector<std::uint64_t>{std::uint64_t(other.snap.kept_entries(0))});
    REQUIRE(r.info("snap/l1/kept").shape == std::vector<std::uint64_t>{std::uint64_t(other.snap.kept_entries(1))});
  }
}
