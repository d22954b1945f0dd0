// The column-sharded learner under real processes (ctest: mpiexec -n 1, 2, 3): on every rank,
// at every step, its states, outputs and gathered gradient are bitwise those of a one-process
// Rtrl of an identical model run on the same rank as the reference; stacks, events and GRU mode,
// float and double, pruning mid-run (the split re-cut, columns moved between ranks) and Adam
// updates mid-run. And every golden case through the sharded learner on the ranks given.
#include <sparse_rtrl/mpi.hpp>

#include "golden_cases.hpp"
#include "mpi_support.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace sparse_rtrl;
using test::Mat;

namespace {



}  // namespace

TEMPLATE_TEST_CASE("ShardedRtrl: bitwise the one-process Rtrl at every step, with pruning and Adam mid-run",
                   "[mpi][sharded]", float, double) {
  using S = TestType;
  const mpi::Communicator comm;
  const Index d = 5, T = 36;
  for (const auto& sizes : std::vector<std::vector<Index>>{{20}, {16, 12}})
    for (bool events : {true, false}) {
      const Index L = Index(sizes.size());
      INFO("ranks = " << comm.size() << ", L = " << L << ", events = " << events);
      Model<S> model = test::masked_stack<S>(sizes, d, events, 70 + std::uint64_t(L), 0.6);
      Model<S> reference_model = model;
      RtrlOptions options;
      options.threads = 1 + comm.rank() % 2;  // threads change no bit
      mpi::ShardedRtrl<S> sharded(model, MPI_COMM_WORLD, options);
      Rtrl<S> reference(reference_model);
      CHECK(sharded.columns() == reference.columns());
      CHECK(sharded.partition().ranks() == comm.size());
      CHECK(sharded.column_end() - sharded.column_begin() == sharded.local_gradient_columns().size());

      const Mat<S> X = test::random_matrix<S>(T, d, 9);
      std::vector<Mat<S>> G;
      for (Index k = 0; k < L; ++k) G.push_back(test::random_matrix<S>(T, sizes[std::size_t(k)], 40 + std::uint64_t(k)));
      std::vector<Adam<S>> adam_s{std::size_t(L)}, adam_r{std::size_t(L)};
      bool same = true, nonzero = false;
      const Index begin_at_start = sharded.column_begin(), end_at_start = sharded.column_end();
      for (Index t = 0; t < T; ++t) {
        if (t == 16) {  // between two updates: the gradient being accumulated moves too
          // Pruning mid-run, the same on every rank: every layer keeps a random 70% of its
          // kept weights (the split is re-cut at the next step and columns change owner).
          for (Index k = 0; k < L; ++k) {
            const ParameterMask& m = model.mask(k);
            const ParameterMask keep = ParameterMask::random(m.units(), m.inputs(), 0.7, 0.7, 500 + std::uint64_t(k));
            const ParameterMask next(m.W() && keep.W(), m.R() && keep.R());
            model.set_mask(next, k);
            reference_model.set_mask(next, k);
          }
          // The gradient read before the next step: the sharded learner follows (collectively),
          // the reference reports the new mask's entries; the same numbers.
          for (Index k = 0; k < L; ++k) {
            const auto gs = sharded.gradient(k), gr = reference.gradient(k);
            same &= test::same_bits(gs.W, gr.W) && test::same_bits(gs.R, gr.R) && test::same_bits(gs.theta, gr.theta);
          }
        }
        sharded.step(X.row(t));
        reference.step(X.row(t));
        for (Index k = 0; k < L; ++k) {
          sharded.accumulate_gradient_at(k, G[std::size_t(k)].row(t));
          reference.accumulate_gradient_at(k, G[std::size_t(k)].row(t));
          same &= test::same_bits(sharded.state(k), reference.state(k));
          same &= test::same_bits(sharded.output(k), reference.output(k));
        }
        same &= test::same_bits(sharded.gradient_columns(), reference.gradient_columns());
        nonzero |= reference.gradient_columns().norm() > 0;
        same &= test::same_bits(sharded.local_gradient_columns(),
                                reference.gradient_columns().segment(sharded.column_begin(),
                                                                     sharded.column_end() - sharded.column_begin()));
        if (t % 12 == 11) {
          // An optimizer update from the gathered gradient: the models stay bitwise equal.
          for (Index k = 0; k < L; ++k) {
            adam_s[std::size_t(k)].step(model, sharded.gradient(k), k);
            adam_r[std::size_t(k)].step(reference_model, reference.gradient(k), k);
          }
          sharded.zero_gradient();
          reference.zero_gradient();
          for (Index k = 0; k < L; ++k) same &= test::same_bits(model.parameters(k).W, reference_model.parameters(k).W);
        }
      }
      CHECK(same);
      CHECK(nonzero);
      // The re-cut moved this rank's range (the columns shrank).
      CHECK((sharded.column_begin() != begin_at_start || sharded.column_end() != end_at_start));
      CHECK(test::all_ranks(comm, same));
    }
}

TEST_CASE("ShardedRtrl: a one-layer model through Adam::update, and the cheap local slice", "[mpi][sharded]") {
  const mpi::Communicator comm;
  Model<double> model = test::masked_stack<double>({24}, 4, true, 5, 0.6);
  Model<double> reference_model = model;
  mpi::ShardedRtrl<double> sharded(model);
  Rtrl<double> reference(reference_model);
  Adam<double> adam_s, adam_r;
  const Mat<double> X = test::random_matrix<double>(20, 4, 1);
  bool same = true;
  for (Index t = 0; t < X.rows(); ++t) {
    sharded.step(X.row(t));
    reference.step(X.row(t));
    sharded.accumulate_gradient(Eigen::VectorXd::Ones(24), Eigen::VectorXd::Constant(24, 0.5));
    reference.accumulate_gradient(Eigen::VectorXd::Ones(24), Eigen::VectorXd::Constant(24, 0.5));
    adam_s.update(model, sharded);
    adam_r.update(reference_model, reference);
    same &= test::same_bits(model.parameters().R, reference_model.parameters().R);
    same &= test::same_bits(model.parameters().theta, reference_model.parameters().theta);
  }
  CHECK(same);
  // This rank's part of M: its columns of the reference's.
  const auto M = reference.influence();
  CHECK(test::same_bits(sharded.local().influence(0),
                        M.middleCols(sharded.column_begin(), sharded.column_end() - sharded.column_begin())));
  if (comm.size() > 1) CHECK(sharded.influence_bytes() < reference.influence_bytes());
  CHECK(test::all_ranks(comm, same));
}

TEST_CASE("ShardedRtrl: every golden case (one-layer and stacked) through the ranks", "[mpi][sharded][golden]") {
  const mpi::Communicator comm;
  std::size_t cases = 0;
  for (const auto& dir : test::case_dirs()) {
    const test::GoldenCase c = test::load_case(dir);
    INFO("golden case " << c.name << " on " << comm.size() << " ranks");
    const EgruCell<double> cell(c.params, CellOptions{c.events}, TriangularSurrogate<double>(c.gamma, c.eps));
    Model<double> model(cell, c.mask), reference_model(cell, c.mask);
    mpi::ShardedRtrl<double> sharded(model);
    Rtrl<double> reference(reference_model);
    for (Index t = 0; t < c.T; ++t) {
      sharded.step(c.X.row(t));
      reference.step(c.X.row(t));
      sharded.accumulate_gradient(c.G.row(t));
      reference.accumulate_gradient(c.G.row(t));
    }
    const auto g = sharded.gradient();
    CHECK(test::same_bits(sharded.gradient_columns(), reference.gradient_columns()));
    CHECK(test::relative_error(g.W, c.grad.W) <= 1e-10);
    CHECK(test::relative_error(g.R, c.grad.R) <= 1e-10);
    CHECK(test::relative_error(g.bW, c.grad.bW) <= 1e-10);
    CHECK(test::relative_error(g.bR, c.grad.bR) <= 1e-10);
    CHECK(test::relative_error(g.theta, c.grad.theta) <= 1e-10);
    ++cases;
  }
  for (const auto& dir : test::case_dirs(true)) {
    const test::StackCase c = test::load_stack_case(dir);
    INFO("golden stacked case " << c.name << " on " << comm.size() << " ranks");
    Model<double> model = c.model(), reference_model = c.model();
    mpi::ShardedRtrl<double> sharded(model);
    Rtrl<double> reference(reference_model);
    for (Index t = 0; t < c.T; ++t) {
      sharded.step(c.X.row(t));
      reference.step(c.X.row(t));
      for (Index k = 0; k < c.L; ++k) {
        sharded.accumulate_gradient_at(k, c.G[std::size_t(k)].row(t));
        reference.accumulate_gradient_at(k, c.G[std::size_t(k)].row(t));
      }
    }
    CHECK(test::same_bits(sharded.gradient_columns(), reference.gradient_columns()));
    for (Index k = 0; k < c.L; ++k) {
      const auto g = sharded.gradient(k);
      CHECK(test::relative_error(g.W, c.grad[std::size_t(k)].W) <= 1e-10);
      CHECK(test::relative_error(g.R, c.grad[std::size_t(k)].R) <= 1e-10);
      CHECK(test::relative_error(g.bW, c.grad[std::size_t(k)].bW) <= 1e-10);
      CHECK(test::relative_error(g.bR, c.grad[std::size_t(k)].bR) <= 1e-10);
      CHECK(test::relative_error(g.theta, c.grad[std::size_t(k)].theta) <= 1e-10);
    }
    ++cases;
  }
  CHECK(cases >= 8);
}
