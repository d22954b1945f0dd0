// Streams over ranks (ctest: mpiexec -n 1, 2, 3, 4): the grid learner mpi::StreamGrid, for every
// grid of the ranks (stream groups x column shards: on 4 ranks 4 x 1, 2 x 2 and 1 x 4), is at
// every step bitwise the one-process RtrlStreams of the same B = 6 streams, run on every rank as
// the reference: each owned stream's state and output, and the gradient summed over all streams
// in stream order; with per-stream resets, pruning and Adam updates mid-run; events and GRU mode,
// one layer and a stack, float and double. Bad grids are refused on every rank.
#include <sparse_rtrl/mpi.hpp>

#include "mpi_support.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

using namespace sparse_rtrl;
using test::Mat;

namespace {



/// Every grid of R ranks with at most B groups.
std::vector<mpi::Grid> grids_of(int R, Index B) {
  std::vector<mpi::Grid> out;
  for (int shards = 1; shards <= R; ++shards)
    if (R % shards == 0 && Index(R / shards) <= B) out.push_back(mpi::Grid{R / shards, shards});
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("StreamGrid: every grid bitwise the one-process RtrlStreams, resets, pruning, Adam mid-run",
                   "[mpi][grid]", float, double) {
  using S = TestType;
  const mpi::Communicator comm;
  const Index B = 6, d = 5, T = 30;
  for (const mpi::Grid grid : grids_of(comm.size(), B))
    for (const auto& sizes : std::vector<std::vector<Index>>{{20}, {16, 12}})
      for (bool events : {true, false}) {
        const Index L = Index(sizes.size()), n = sizes.back();
        INFO("ranks = " << comm.size() << ", grid " << grid.str() << ", L = " << L << ", events = " << events);
        Model<S> model = test::masked_stack<S>(sizes, d, events, 90 + std::uint64_t(L), 0.6);
        Model<S> reference_model = model;
        RtrlOptions options;
        options.threads = 1 + comm.rank() % 2;  // threads change no bit
        mpi::StreamGrid<S> learner(model, B, grid, MPI_COMM_WORLD, options);
        RtrlStreams<S> reference(reference_model, B);
        CHECK(learner.columns() == reference.stream(0).columns());
        CHECK(learner.local_streams() >= 1);
        std::vector<Adam<S>> adam_g{std::size_t(L)}, adam_r{std::size_t(L)};
        bool same = true, nonzero = false;
        for (Index t = 0; t < T; ++t) {
          if (t == 9) {  // per-stream resets: episodes end at different times
            learner.reset(1);
            reference.reset(1);
            learner.reset(4);
            reference.reset(4);
          }
          if (t == 17) {  // pruning, the same on every rank: columns re-cut and moved
            for (Index k = 0; k < L; ++k) {
              const ParameterMask& m = model.mask(k);
              const ParameterMask keep = ParameterMask::random(m.units(), m.inputs(), 0.7, 0.7, 600 + std::uint64_t(k));
              const ParameterMask next(m.W() && keep.W(), m.R() && keep.R());
              model.set_mask(next, k);
              reference_model.set_mask(next, k);
            }
          }
          const Mat<S> X = test::random_matrix<S>(B, d, 1000 + std::uint64_t(t));
          // Half of the calls with all B rows, half with this rank's rows only.
          if (t % 2)
            learner.step(X);
          else
            learner.step(X.middleRows(learner.first_stream(), learner.local_streams()));
          reference.step(X);
          Mat<S> G = test::random_matrix<S>(B, n, 2000 + std::uint64_t(t));
          G.row(t % B).setZero();  // a stream without a loss this step
          learner.accumulate_gradient(G);
          reference.accumulate_gradient(G);
          for (Index b = learner.first_stream(); b < learner.end_stream(); ++b)
            for (Index k = 0; k < L; ++k) {
              same &= test::same_bits(learner.stream(b).state(k), reference.stream(b).state(k));
              same &= test::same_bits(learner.stream(b).output(k), reference.stream(b).output(k));
            }
          same &= test::same_bits(learner.local_outputs(),
                                  Mat<S>(reference.outputs().middleRows(learner.first_stream(), learner.local_streams())));
          if (t % 3 == 2) {
            same &= test::same_bits(learner.gradient_columns(), reference.gradient_columns());
            nonzero |= reference.gradient_columns().norm() > 0;
          }
          if (t % 10 == 9) {
            for (Index k = 0; k < L; ++k) {
              adam_g[std::size_t(k)].step(model, learner.gradient(k), k);
              adam_r[std::size_t(k)].step(reference_model, reference.gradient(k), k);
            }
            learner.zero_gradient();
            reference.zero_gradient();
            for (Index k = 0; k < L; ++k) same &= test::same_bits(model.parameters(k).R, reference_model.parameters(k).R);
          }
        }
        CHECK(same);
        CHECK(nonzero);
        CHECK(test::all_ranks(comm, same));
      }
}

TEST_CASE("ordered_sum: the left fold in rank order, not a tree (differs from a reordered sum)", "[mpi][grid]") {
  const mpi::Communicator comm;
  // Rank r holds a contiguous block of the parts, as stream groups do. Values chosen so that the
  // order of addition shows in the bits: 1e16, 1, -1e16, ... (1 + 1e16 rounds to 1e16).
  const int R = comm.size();
  const Index per = 2, m = 40000;  // more than two chunks of the pipeline
  std::vector<Eigen::VectorXd> all;
  for (Index b = 0; b < per * R; ++b) {
    Eigen::VectorXd v(m);
    for (Index i = 0; i < m; ++i) v(i) = (b % 3 == 0 ? 1e16 : b % 3 == 1 ? 1.0 : -1e16) * (1.0 + double(i % 7) * 1e-3);
    all.push_back(v);
  }
  Eigen::VectorXd expected = all[0];
  for (std::size_t b = 1; b < all.size(); ++b) expected += all[b];
  std::vector<const double*> mine;
  for (Index b = per * comm.rank(); b < per * (comm.rank() + 1); ++b) mine.push_back(all[std::size_t(b)].data());
  Eigen::VectorXd out;
  mpi::ordered_sum<double>(comm, mine, m, out, 1000);
  CHECK(test::same_bits(out, expected));
  // A first part of -0.0 stays -0.0 (copied, not added to +0).
  Eigen::VectorXd negzero = Eigen::VectorXd::Constant(3, -0.0);
  std::vector<const double*> z{negzero.data()};
  mpi::ordered_sum<double>(comm, z, 3, out);
  CHECK(std::signbit(out(0)));
}

TEST_CASE("StreamGrid: a grid that cannot cover the ranks or streams is refused on every rank", "[mpi][grid]") {
  const mpi::Communicator comm;
  Model<double> model = test::masked_stack<double>({20}, 5, true, 3, 0.6);
  const int R = comm.size();
  // groups x shards != ranks; more groups than streams; zero shards.
  for (const mpi::Grid bad : {mpi::Grid{R + 1, 1}, mpi::Grid{R, 2}, mpi::Grid{0, R}}) {
    INFO("grid " << bad.str());
    CHECK_THROWS_AS(mpi::StreamGrid<double>(model, 6, bad), std::invalid_argument);
  }
  if (R > 1)
    CHECK_THROWS_WITH(mpi::StreamGrid<double>(model, Index(R) - 1, mpi::Grid{R, 1}),
                      Catch::Contains("more stream groups than the"));
  CHECK_THROWS_WITH(mpi::StreamGrid<double>(model, 0, mpi::Grid{R, 1}), Catch::Contains("streams must be >= 1"));
  // More shards than panels: refused on every rank by the split, with every rank returning.
  // (one unit, every weight pruned: the 7 columns of biases and threshold, one panel.)
  Model<double> tiny(EgruCell<double>(test::firing_parameters<double>(1, 1, 4), CellOptions{true},
                                      TriangularSurrogate<double>(1.0, 0.5)),
                     ParameterMask::random(1, 1, 0.0, 0.0, 5));
  if (R > 1) CHECK_THROWS_AS(mpi::StreamGrid<double>(tiny, 1, mpi::Grid{1, R}), std::invalid_argument);
  // A model that differs on the last rank (one parameter by one ulp): refused on every rank.
  if (R > 1) {
    Model<double> differs = test::masked_stack<double>({20}, 5, true, 3, 0.6);
    if (comm.rank() == R - 1) {
      double& w = differs.cell().parameters().bW(0);
      w = std::nextafter(w, 1e9);
    }
    CHECK_THROWS_WITH(mpi::StreamGrid<double>(differs, 6, mpi::Grid{1, R}), Catch::Contains("do not hold the same model"));
  }
  // A rank passing another B: refused on every rank.
  if (R > 1)
    CHECK_THROWS_WITH(mpi::StreamGrid<double>(model, comm.rank() == R - 1 ? 5 : 6, mpi::Grid{R, 1}),
                      Catch::Contains("every rank must pass the same streams and grid"));
  // The same when the grid is valid on some ranks only (here B = R - 1 on the last rank: fewer
  // streams than its R groups): refused on every rank, not on that one while the others wait in
  // the communicator splits.
  if (R > 1)
    CHECK_THROWS_WITH(mpi::StreamGrid<double>(model, comm.rank() == R - 1 ? Index(R - 1) : Index(R), mpi::Grid{R, 1}),
                      Catch::Contains("every rank must pass the same streams and grid"));
  // Bad input seen by one group only (a NaN in the last stream's row, which only the last group
  // reads): refused on every rank, nothing stepped, and the learner goes on.
  if (R > 1) {
    mpi::StreamGrid<double> learner(model, 6, mpi::Grid{R, 1});
    Mat<double> X = test::random_matrix<double>(6, 5, 11);
    Mat<double> G = test::random_matrix<double>(6, 20, 12);
    CHECK_THROWS(learner.accumulate_gradient(G));  // no stream has stepped: refused everywhere
    X(5, 2) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(learner.step(X), std::invalid_argument);
    CHECK(learner.stream(learner.first_stream()).steps() == 0);
    X(5, 2) = 0.5;
    learner.step(X);
    G(5, 3) = std::numeric_limits<double>::infinity();
    CHECK_THROWS_AS(learner.accumulate_gradient(G), std::invalid_argument);
    CHECK(learner.gradient_columns().isZero(0));  // refused before any gradient changed
    CHECK_THROWS_AS(learner.reset(5, Eigen::VectorXd::Constant(20, std::numeric_limits<double>::quiet_NaN())),
                    std::invalid_argument);
  }
  // And a collective after the refusals completes (no rank left behind).
  CHECK(test::all_ranks(comm, true));
  // choose_grid: the fewest shards that fit; nothing fits -> invalid_argument, naming the need.
  const double one = mpi::stream_influence_bytes(model);
  const mpi::Grid roomy = mpi::choose_grid(R, 6, model, 1e12);
  CHECK(roomy.shards == 1);
  CHECK(roomy.groups == R);
  CHECK_THROWS_WITH(mpi::choose_grid(R, 6, model, one / 1e3), Catch::Contains("the best grid needs"));
  if (R == 4) {
    // 6 streams on 4 groups: 2 per rank; on 2 groups x 2 shards: 3 streams of half the columns.
    const mpi::Grid g = mpi::choose_grid(4, 6, model, 1.8 * one);
    CHECK((g == mpi::Grid{2, 2}));
  }
}
