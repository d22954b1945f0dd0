// The pure pieces of the MPI part, tested without MPI (in the main, MPI-free test binary): the
// column split (learners/column_partition.hpp) and the model fingerprint (mpi/fingerprint.hpp,
// which includes no MPI). The collectives are tested under mpirun (tests/mpi/*.mpi.cpp).
#include "test_support.hpp"

#include <sparse_rtrl/learners/column_partition.hpp>
#include <sparse_rtrl/mpi/fingerprint.hpp>

#include <algorithm>
#include <limits>

using namespace sparse_rtrl;
using test::Mat;

namespace {

/// The invariants of any split: contiguous, covering [0, P), whole aligned blocks (all but the
/// last range end on a multiple of align), none empty, the work adding up.
void check_partition_invariants(const ColumnWork& work, const ColumnPartition& part, int ranks, Index align) {
  REQUIRE(part.ranks() == ranks);
  REQUIRE(part.bounds().size() == std::size_t(ranks + 1));
  CHECK(part.begin(0) == 0);
  CHECK(part.end(ranks - 1) == work.total_columns());
  std::uint64_t total = 0, sum = 0;
  for (std::size_t m = 0; m < work.columns.size(); ++m) total += std::uint64_t(work.columns[m]) * work.cost[m];
  for (int r = 0; r < ranks; ++r) {
    CHECK(part.begin(r) < part.end(r));
    CHECK(part.begin(r) % align == 0);
    if (r + 1 < ranks) CHECK(part.end(r) % align == 0);
    if (r > 0) CHECK(part.begin(r) == part.end(r - 1));
    sum += part.work(r);
  }
  CHECK(sum == total);
}

}  // namespace

TEST_CASE("Column partition: a hand-computed split by work, aligned to panels", "[mpi][partition]") {
  // Layer 0: 10 columns of cost 3 (rows in both layers), layer 1: 6 of cost 1. Blocks of 4
  // columns cost 12, 12, 8 (2 x 3 + 2 x 1), 4: total 36.
  const ColumnWork work{{10, 6}, {3, 1}};
  SECTION("three ranks get 12 each") {
    const ColumnPartition part(work, 3, 4);
    check_partition_invariants(work, part, 3, 4);
    CHECK(part.bounds() == std::vector<Index>{0, 4, 8, 16});
    CHECK(part.work(0) == 12);
    CHECK(part.work(1) == 12);
    CHECK(part.work(2) == 12);
    CHECK(part.owner(3) == 0);
    CHECK(part.owner(4) == 1);
    CHECK(part.owner(15) == 2);
    CHECK_THROWS_AS(part.owner(16), std::out_of_range);
  }
  SECTION("two ranks: the target 18 lies halfway between boundaries 12 and 24, the lower wins") {
    const ColumnPartition part(work, 2, 4);
    check_partition_invariants(work, part, 2, 4);
    CHECK(part.bounds() == std::vector<Index>{0, 4, 16});
  }
  SECTION("by work, not by column count: 16 columns split 4 / 12, not 8 / 8, when cost is skewed") {
    const ColumnWork skewed{{4, 12}, {9, 1}};  // blocks cost 36, 4, 4, 4: total 48
    const ColumnPartition part(skewed, 2, 4);
    check_partition_invariants(skewed, part, 2, 4);
    CHECK(part.bounds() == std::vector<Index>{0, 4, 16});
  }
  SECTION("one rank owns everything") {
    const ColumnPartition part(work, 1, 4);
    CHECK(part.bounds() == std::vector<Index>{0, 16});
    CHECK(part.work(0) == 36);
  }
  SECTION("as many ranks as blocks: one block each; one more is refused, naming the limit") {
    const ColumnPartition part(work, 4, 4);
    CHECK(part.bounds() == std::vector<Index>{0, 4, 8, 12, 16});
    try {
      ColumnPartition(work, 5, 4);
      FAIL("5 ranks over 4 blocks accepted");
    } catch (const std::invalid_argument& e) {
      CHECK_THAT(e.what(), Catch::Contains("5 ranks") && Catch::Contains("use at most 4 ranks"));
    }
  }
  SECTION("bad arguments") {
    CHECK_THROWS_AS(ColumnPartition(work, 0, 4), std::invalid_argument);
    CHECK_THROWS_AS(ColumnPartition(work, 2, 0), std::invalid_argument);
    CHECK_THROWS_AS(ColumnPartition(ColumnWork{{10}, {3, 1}}, 2, 4), std::invalid_argument);
    CHECK_THROWS_AS(ColumnPartition(ColumnWork{{10, -1}, {3, 1}}, 1, 4), std::invalid_argument);
    CHECK_THROWS_AS(ColumnPartition(ColumnWork{}, 1, 4), std::invalid_argument);
  }
}

TEST_CASE("Column partition: balanced to within one block over random stacks", "[mpi][partition]") {
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    const std::size_t L = 1 + seed % 3;
    ColumnWork work;
    for (std::size_t m = 0; m < L; ++m) {
      work.columns.push_back(Index(50 + (seed * 7919 + m * 104729) % 3000));
      work.cost.push_back(1 + (seed * 31 + m * 17) % 200);
    }
    const Index align = Index(1) << (seed % 8);
    const int ranks = 1 + int(seed % 7);
    const ColumnPartition part(work, ranks, align);
    check_partition_invariants(work, part, ranks, align);
    std::uint64_t total = 0, max_block = 0;
    for (std::size_t m = 0; m < L; ++m) {
      total += std::uint64_t(work.columns[m]) * work.cost[m];
      max_block = std::max(max_block, std::uint64_t(align) * work.cost[m]);
    }
    // Each boundary within half a block of its target, so each range within one block (as
    // ranks * work against total, exact in integers).
    for (int r = 0; r < ranks; ++r) {
      const std::uint64_t scaled = part.work(r) * std::uint64_t(ranks);
      const std::uint64_t slack = max_block * std::uint64_t(ranks);
      CHECK(scaled <= total + slack);
      CHECK(scaled + slack >= total);
    }
    // The same input gives the same split (what every rank relies on).
    CHECK(ColumnPartition(work, ranks, align) == part);
  }
}

TEMPLATE_TEST_CASE("Column work of a model: Rtrl's columns, and the entries of M it stores", "[mpi][partition]", float,
                   double) {
  using S = TestType;
  std::vector<EgruCell<S>> cells;
  cells.emplace_back(12, 5, InitOptions<S>{1});
  cells.emplace_back(9, 12, InitOptions<S>{2}, CellOptions{false});
  std::vector<ParameterMask> masks{ParameterMask::random(12, 5, 0.5, 0.3, 3), ParameterMask::random(9, 12, 0.4, 0.6, 4)};
  Model<S> model(std::move(cells), std::move(masks));
  Rtrl<S> rtrl(model);
  const ColumnWork work = column_work(model);
  REQUIRE(work.columns.size() == 2);
  CHECK(work.columns[0] == rtrl.layout(0).columns());
  CHECK(work.columns[1] == rtrl.layout(1).columns());
  CHECK(work.total_columns() == rtrl.columns());
  CHECK(work.cost == std::vector<std::uint64_t>{21, 9});
  std::uint64_t entries = 0;
  for (std::size_t m = 0; m < 2; ++m) entries += std::uint64_t(work.columns[m]) * work.cost[m];
  CHECK(entries * sizeof(S) == rtrl.influence_bytes());
  // The learner's split: aligned to the panel width of this build.
  const ColumnPartition part = partition_columns(model, 2);
  check_partition_invariants(work, part, 2, detail::kChunk<S>);
}

TEMPLATE_TEST_CASE("Model fingerprint: every item that changes results changes its hash, threads do not", "[mpi]",
                   float, double) {
  using S = TestType;
  auto make = [](bool events, S gamma) {
    std::vector<EgruCell<S>> cells;
    cells.emplace_back(6, 3, InitOptions<S>{7}, CellOptions{events}, TriangularSurrogate<S>(gamma));
    cells.emplace_back(4, 6, InitOptions<S>{8});
    return Model<S>(std::move(cells), {ParameterMask::random(6, 3, 0.7, 0.5, 1), ParameterMask::random(4, 6, 0.7, 0.5, 2)});
  };
  const Model<S> base = make(true, S(0.7));
  const RtrlOptions options;
  const mpi::ModelFingerprint f = mpi::fingerprint(base, options);
  REQUIRE(f.layer.size() == 2);
  CHECK(f.layers == 2);
  // Deterministic, and a copy of the model hashes alike.
  Model<S> copy = base;
  CHECK(mpi::fingerprint(copy, options).header() == f.header());
  CHECK(mpi::fingerprint(copy, options).per_layer() == f.per_layer());
  RtrlOptions threads = options;
  threads.threads = 3;
  CHECK(mpi::fingerprint(copy, threads).header() == f.header());

  SECTION("one parameter, one bit (0.0 and -0.0 count as different models)") {
    Model<S> m = base;
    const S v = m.parameters(1).R(2, 3);
    m.parameters(1).R(2, 3) = std::nextafter(v, S(10));
    const auto g = mpi::fingerprint(m, options);
    CHECK(g.header() == f.header());
    CHECK(g.layer[0].parameters == f.layer[0].parameters);
    CHECK(g.layer[1].parameters != f.layer[1].parameters);
    CHECK(g.layer[1].mask == f.layer[1].mask);
    Model<S> z = base;
    z.parameters(0).theta(0) = S(0);
    Model<S> nz = base;
    nz.parameters(0).theta(0) = -S(0);
    CHECK(mpi::fingerprint(z, options).layer[0].parameters != mpi::fingerprint(nz, options).layer[0].parameters);
  }
  SECTION("the mask") {
    Model<S> m = base;
    ParameterMask mask = m.mask(0);
    auto W = mask.W();
    W(0, 0) = !W(0, 0);
    m.set_mask(ParameterMask(W, mask.R()), 0);
    const auto g = mpi::fingerprint(m, options);
    CHECK(g.layer[0].mask != f.layer[0].mask);
    CHECK(g.layer[1].mask == f.layer[1].mask);
  }
  SECTION("the mode and the surrogate of a layer") {
    const auto gru = mpi::fingerprint(make(false, S(0.7)), options);
    CHECK(gru.layer[0].mode != f.layer[0].mode);
    CHECK(gru.layer[0].surrogate == f.layer[0].surrogate);
    const auto wider = mpi::fingerprint(make(true, S(0.5)), options);
    CHECK(wider.layer[0].surrogate != f.layer[0].surrogate);
    CHECK(wider.layer[0].mode == f.layer[0].mode);
  }
  SECTION("the options that change bits, and the shapes") {
    RtrlOptions o = options;
    o.flush_subnormals = !o.flush_subnormals;
    CHECK(mpi::fingerprint(base, o).options != f.options);
    o = options;
    o.skip_silent_rows = false;
    CHECK(mpi::fingerprint(base, o).options != f.options);
    const Model<S> one(EgruCell<S>(6, 3, InitOptions<S>{7}));
    const auto g = mpi::fingerprint(one, options);
    CHECK(g.shapes != f.shapes);
    CHECK(g.layers == 1);
  }
}

TEMPLATE_TEST_CASE("Column map of a mask change; Rtrl carries every kept column of a stack over unchanged",
                   "[mpi][partition][mask]", float, double) {
  using S = TestType;
  for (bool events : {true, false}) {
    INFO("events = " << events);
    std::vector<EgruCell<S>> cells;
    cells.emplace_back(test::firing_parameters<S>(6, 3, 5), CellOptions{events});
    cells.emplace_back(test::firing_parameters<S>(5, 6, 6), CellOptions{events});
    Model<S> model(std::move(cells));
    Rtrl<S> rtrl(model);
    const Mat<S> X = test::random_matrix<S>(12, 3, 1);
    for (Index t = 0; t < X.rows(); ++t) {
      rtrl.step(X.row(t));
      rtrl.accumulate_gradient_at(0, Eigen::Matrix<S, Eigen::Dynamic, 1>::Ones(6));
      rtrl.accumulate_gradient(Eigen::Matrix<S, Eigen::Dynamic, 1>::Ones(5));
    }
    const std::vector<InfluenceLayout> from{rtrl.layout(0), rtrl.layout(1)};
    const auto M0 = rtrl.influence(0);
    const auto M1 = rtrl.influence(1);
    const auto g = rtrl.gradient_columns();
    // Prune one weight of W and one of R in layer 1 (the layer above the first).
    auto W = model.mask(1).W();
    auto R = model.mask(1).R();
    W(2, 1) = false;
    R(7, 3) = false;
    rtrl.set_mask(ParameterMask(W, R), 1);
    const std::vector<InfluenceLayout> to{rtrl.layout(0), rtrl.layout(1)};
    const std::vector<Index> map = column_map(from, to);
    REQUIRE(Index(map.size()) == from[0].columns() + from[1].columns());
    const Index of1 = from[0].columns();
    CHECK(map[std::size_t(of1 + from[1].column_of_W(2, 1))] == -1);
    CHECK(map[std::size_t(of1 + from[1].column_of_R(7, 3))] == -1);
    Index kept = 0, last = -1;
    for (Index c = 0; c < Index(map.size()); ++c) {
      const Index to_c = map[std::size_t(c)];
      if (to_c < 0) continue;
      ++kept;
      CHECK(to_c > last);  // increasing on the kept columns
      last = to_c;
      // Every kept column carried over bit for bit: the layer-1 block, layer 0's, the gradient.
      CHECK(test::same_bits(rtrl.influence(1).col(to_c), M1.col(c)));
      if (c < of1) CHECK(test::same_bits(rtrl.influence(0).col(to_c), M0.col(c)));
      CHECK(test::same_bits(rtrl.gradient_columns().segment(to_c, 1), g.segment(c, 1)));
    }
    CHECK(kept == rtrl.columns());
  }
}
