// Column shards of Rtrl in one process (ColumnShard: what each rank of the MPI learner runs):
// the shards of one model, each stepping on the same inputs, hold between them exactly the
// columns of the whole learner, bit for bit, at every step: gradient columns, influence blocks,
// states and outputs. Stacks, events and GRU mode, several thread counts, an optimizer update
// mid-run. (Mask changes move columns between shards: the MPI learner exchanges them; tested
// under mpirun.)
#include "test_support.hpp"

#include <vector>

using namespace sparse_rtrl;
using test::Mat;

namespace {


/// The shards' columns side by side: the whole learner's gradient_columns().
template <typename S>
Eigen::Matrix<S, Eigen::Dynamic, 1> joined_gradient(const std::vector<Rtrl<S>>& shards) {
  Eigen::Matrix<S, Eigen::Dynamic, 1> g(shards.back().column_end());
  for (const auto& s : shards) {
    const Index b = s.column_begin(), e = s.column_end();
    g.segment(b, e - b) = s.gradient_columns().segment(b, e - b);
    // Outside its window a shard's gradient stays zero.
    CHECK(s.gradient_columns().head(b).isZero(0));
    CHECK(s.gradient_columns().tail(g.size() - e).isZero(0));
  }
  return g;
}

}  // namespace

TEMPLATE_TEST_CASE("Rtrl column shards: together bitwise the whole learner at every step", "[rtrl][shards]", float,
                   double) {
  using S = TestType;
  const Index d = 5, T = 40;
  for (const auto& sizes : std::vector<std::vector<Index>>{{14}, {12, 9}})
    for (bool events : {true, false})
      for (int R : {2, 3}) {
        const Index L = Index(sizes.size());
        INFO("L = " << L << ", events = " << events << ", shards = " << R);
        Model<S> model = test::masked_stack<S>(sizes, d, events, 40 + std::uint64_t(L), 0.5);
        RtrlOptions options;
        Rtrl<S> whole(model, options);
        std::vector<Rtrl<S>> shards;
        for (int r = 0; r < R; ++r) {
          RtrlOptions o = options;
          o.threads = 1 + r % 2;  // threads change no bit
          shards.emplace_back(model, o, ColumnShard{r, R});
        }
        // The shards tile the columns.
        CHECK(shards.front().column_begin() == 0);
        for (int r = 1; r < R; ++r) CHECK(shards[std::size_t(r)].column_begin() == shards[std::size_t(r - 1)].column_end());
        REQUIRE(shards.back().column_end() == whole.columns());
        std::size_t bytes = 0;
        for (const auto& s : shards) bytes += s.influence_bytes();
        CHECK(bytes == whole.influence_bytes());

        const Mat<S> X = test::random_matrix<S>(T, d, 3);
        std::vector<Mat<S>> G;
        for (Index k = 0; k < L; ++k) G.push_back(test::random_matrix<S>(T, sizes[std::size_t(k)], 30 + std::uint64_t(k)));
        Adam<S> adam;
        bool different = false;
        for (Index t = 0; t < T; ++t) {
          whole.step(X.row(t));
          for (auto& s : shards) s.step(X.row(t));
          for (Index k = 0; k < L; ++k) {
            whole.accumulate_gradient_at(k, G[std::size_t(k)].row(t));
            for (auto& s : shards) s.accumulate_gradient_at(k, G[std::size_t(k)].row(t));
          }
          for (auto& s : shards)
            for (Index k = 0; k < L; ++k) {
              different |= !test::same_bits(s.state(k), whole.state(k));
              different |= !test::same_bits(s.output(k), whole.output(k));
              // The shard's influence blocks are the whole learner's columns in its window.
              const auto M = whole.influence(k);
              const Index b = std::min(s.column_begin(), M.cols()), e = std::min(s.column_end(), M.cols());
              different |= !test::same_bits(s.influence(k), M.middleCols(b, e - b));
            }
          different |= !test::same_bits(joined_gradient(shards), whole.gradient_columns());
          // An optimizer update mid-run, from the whole gradient (the shards' joined).
          if (t == T / 2 && L == 1) {
            adam.update(model, whole);
            for (auto& s : shards) s.zero_gradient();
          }
        }
        CHECK_FALSE(different);
        CHECK(whole.gradient_columns().norm() > 0);
      }
}

TEST_CASE("Rtrl column shards: bad shards and what a shard cannot do", "[rtrl][shards]") {
  Model<double> model = test::masked_stack<double>({14}, 5, true, 7, 0.5);
  CHECK_THROWS_AS(Rtrl<double>(model, RtrlOptions{}, ColumnShard{2, 2}), std::invalid_argument);
  CHECK_THROWS_AS(Rtrl<double>(model, RtrlOptions{}, ColumnShard{-1, 2}), std::invalid_argument);
  CHECK_THROWS_AS(Rtrl<double>(model, RtrlOptions{}, ColumnShard{0, 0}), std::invalid_argument);
  // More shards than panels.
  CHECK_THROWS_AS(Rtrl<double>(model, RtrlOptions{}, ColumnShard{0, 10000}), std::invalid_argument);
  Rtrl<double> shard(model, RtrlOptions{}, ColumnShard{1, 2});
  shard.step(Eigen::VectorXd::Ones(5));
  CHECK(shard.column_begin() > 0);
  CHECK(shard.column_end() == shard.columns());
  CHECK(shard.influence_columns(0) == shard.column_end() - shard.column_begin());
  // Checkpoints of shards are not supported: refused, not silently wrong.
  CHECK_THROWS_AS(shard.stage_state({model.mask(0)}), std::logic_error);
  CHECK_THROWS_AS(shard.restore_state(shard.stage_state()), std::logic_error);
  Rtrl<double> whole(model);
  CHECK(whole.column_begin() == 0);
  CHECK(whole.column_end() == whole.columns());
}
