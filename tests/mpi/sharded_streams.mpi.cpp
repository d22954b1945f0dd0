// Several streams per rank (mpi::ShardedRtrlStreams) under real processes: on every rank, at every
// step, its outputs and gathered gradient are bitwise those of a one-process RtrlStreams of an
// identical model; stacks, events and GRU mode, float and double, pruning and Adam mid-run.
#include <sparse_rtrl/mpi.hpp>

#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <vector>

using namespace sparse_rtrl;
using test::Mat;

TEMPLATE_TEST_CASE("ShardedRtrlStreams: bitwise the one-process RtrlStreams at every step, with pruning and Adam",
                   "[mpi][sharded][streams]", float, double) {
  using S = TestType;
  const mpi::Communicator comm;
  const Index d = 4, T = 30, B = 3;
  for (const auto& sizes : std::vector<std::vector<Index>>{{18}, {14, 10}})
    for (bool events : {true, false}) {
      const Index L = Index(sizes.size());
      INFO("ranks = " << comm.size() << ", L = " << L << ", events = " << events);
      Model<S> model = test::masked_stack<S>(sizes, d, events, 90 + std::uint64_t(L), 0.6);
      Model<S> reference_model = model;
      RtrlOptions options;
      options.threads = 2;
      mpi::ShardedRtrlStreams<S> sharded(model, B, MPI_COMM_WORLD, options);
      RtrlStreams<S> reference(reference_model, B, options);
      std::vector<Adam<S>> adam_s{std::size_t(L)}, adam_r{std::size_t(L)};
      const Mat<S> X = test::random_matrix<S>(T * B, d, 3);
      bool same = true, nonzero = false;
      for (Index t = 0; t < T; ++t) {
        if (t == 16) {
          for (Index k = 0; k < L; ++k) {
            const ParameterMask& m = model.mask(k);
            const ParameterMask keep = ParameterMask::random(m.units(), m.inputs(), 0.7, 0.7, 700 + std::uint64_t(k));
            const ParameterMask next(m.W() && keep.W(), m.R() && keep.R());
            model.set_mask(next, k);
            reference_model.set_mask(next, k);
          }
        }
        const Mat<S> Xt = X.middleRows(t * B, B);
        sharded.step(Xt);
        reference.step(Xt);
        same &= test::same_bits(sharded.outputs(), reference.outputs());
        const Mat<S> G = reference.outputs() * S(0.5);
        sharded.accumulate_gradient(G);
        reference.accumulate_gradient(G);
        same &= test::same_bits(sharded.gradient_columns(), reference.gradient_columns());
        nonzero |= reference.gradient_columns().norm() > 0;
        if (t % 10 == 9) {
          for (Index k = 0; k < L; ++k) {
            adam_s[std::size_t(k)].step(model, sharded.gradient(k), k);
            adam_r[std::size_t(k)].step(reference_model, reference.gradient(k), k);
          }
          sharded.zero_gradient();
          reference.zero_gradient();
        }
      }
      CHECK(same);
      CHECK(nonzero);
      const std::vector<int> all = comm.allgather(std::vector<int>{same ? 1 : 0});
      for (int v : all) CHECK(v == 1);
      // The four gradient() forms (one CRTP front end for every combining learner): a stack
      // needs the layer, on every rank before any collective; the forms agree bit for bit.
      if (L > 1) {
        using Catch::Matchers::Contains;
        CHECK_THROWS_WITH(sharded.gradient(), Contains("sparse_rtrl::mpi::ShardedRtrlStreams::gradient()") &&
                                                  Contains("stack of 2 layers") && Contains("gradient(k)"));
        CHECK_THROWS_WITH(reference.gradient(),
                          Contains("sparse_rtrl::RtrlStreams::gradient()") && Contains("stack of 2 layers"));
      } else {
        EgruParameters<S> out;
        sharded.gradient(out);
        const EgruParameters<S> whole = sharded.gradient();
        CHECK(test::same_bits(out.R, whole.R));
        CHECK(test::same_bits(whole.R, reference.gradient().R));
        CHECK(test::same_bits(sharded.gradient(Index(0)).W, reference.gradient(Index(0)).W));
      }
    }
}

TEST_CASE("ShardedRtrlStreams: a stream count differing on one rank is refused on every rank", "[mpi][streams]") {
  const mpi::Communicator comm;
  if (comm.size() < 2) return;
  Model<double> model = test::masked_stack<double>({16}, 4, true, 3, 0.6);
  std::string message;
  try {
    mpi::ShardedRtrlStreams<double> sharded(model, comm.rank() == 1 ? 3 : 2);
  } catch (const std::invalid_argument& e) {
    message = e.what();
  }
  CHECK_THAT(message, Catch::Contains("the learner options") && Catch::Contains("rank 1 differs from rank 0"));
  comm.barrier();
}
