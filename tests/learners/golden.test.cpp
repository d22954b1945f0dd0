// Golden cases computed by PyTorch autograd (tests/data/golden, see its README): every case
// folder found there is run, so a new case needs no code change.
#include "test_support.hpp"
#include "golden_cases.hpp"

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

using namespace sparse_rtrl;
using test::Mat;

using test::case_dirs;
using test::GoldenCase;
using test::load_case;
using test::load_stack_case;
using test::StackCase;

TEST_CASE("Golden cases: forward outputs and BPTT, RTRL, SnAp gradients match PyTorch autograd", "[golden]") {
  const auto dirs = case_dirs();
  REQUIRE(dirs.size() >= 4);
  for (const auto& dir : dirs) {
    const GoldenCase c = load_case(dir);
    INFO("golden case " << c.name);
    REQUIRE(c.X.rows() == c.T);
    const EgruCell<double> cell(c.params, CellOptions{c.events}, TriangularSurrogate<double>(c.gamma, c.eps));

    Model<double> model(cell, c.mask);
    Bptt<double> bptt(model);
    const Mat<double> Y = bptt.forward(c.X);
    CHECK(test::relative_error(Y, c.Y) <= 1e-10);
    const auto g_bptt = bptt.backward(c.G);
    CHECK(test::relative_error(g_bptt.W, c.grad.W) <= 1e-10);
    CHECK(test::relative_error(g_bptt.R, c.grad.R) <= 1e-10);
    CHECK(test::relative_error(g_bptt.bW, c.grad.bW) <= 1e-10);
    CHECK(test::relative_error(g_bptt.bR, c.grad.bR) <= 1e-10);
    CHECK(test::relative_error(g_bptt.theta, c.grad.theta) <= 1e-10);

    // Dense and sparse RTRL, with subnormals flushed (the default) and strict IEEE, on 1 and 2
    // threads: flushing and threads change nothing at this tolerance.
    for (bool skip : {true, false})
      for (bool flush : {true, false})
        for (int threads : {1, 2}) {
          INFO("skip_silent_rows = " << skip << ", flush_subnormals = " << flush << ", threads = " << threads);
          RtrlOptions options;
          options.skip_silent_rows = skip;
          options.flush_subnormals = flush;
          options.threads = threads;
          Rtrl<double> rtrl(model, options);
          if (c.has_mask) REQUIRE(rtrl.layout().columns() < rtrl.layout().dense_columns());
          const auto g = test::rtrl_gradient(rtrl, c.X, c.G);
          CHECK(test::relative_error(g.W, c.grad.W) <= 1e-10);
          CHECK(test::relative_error(g.R, c.grad.R) <= 1e-10);
          CHECK(test::relative_error(g.bW, c.grad.bW) <= 1e-10);
          CHECK(test::relative_error(g.bR, c.grad.bR) <= 1e-10);
          CHECK(test::relative_error(g.theta, c.grad.theta) <= 1e-10);
        }

    // SnAp-n at the smallest order that covers the recurrent graph: nothing is projected away,
    // so it is exact.
    {
      const int order = Snap<double>(model, 1).covering_order();
      INFO("SnAp-" << order);
      Snap<double> snap(model, order);
      for (Index t = 0; t < c.T; ++t) {
        snap.step(c.X.row(t));
        CHECK(test::relative_error(snap.output().transpose(), c.Y.row(t)) <= 1e-10);
        snap.accumulate_gradient(c.G.row(t));
      }
      const auto g = snap.gradient();
      CHECK(test::relative_error(g.W, c.grad.W) <= 1e-10);
      CHECK(test::relative_error(g.R, c.grad.R) <= 1e-10);
      CHECK(test::relative_error(g.bW, c.grad.bW) <= 1e-10);
      CHECK(test::relative_error(g.bR, c.grad.bR) <= 1e-10);
      CHECK(test::relative_error(g.theta, c.grad.theta) <= 1e-10);
    }

    // Through the multi-stream path: the case is stream 1 of three over one model; streams 0
    // and 2 get other inputs and losses (the rows reversed, and halved) at the same time.
    for (int threads : {1, 2}) {
      INFO("RtrlStreams, threads = " << threads);
      RtrlOptions options;
      options.threads = threads;
      RtrlStreams<double> streams(model, 3, options);
      const Mat<double> X_other = c.X.colwise().reverse(), G_other = 0.5 * c.G;
      Mat<double> X(3, c.d), G(3, c.n);
      for (Index t = 0; t < c.T; ++t) {
        X << X_other.row(t), c.X.row(t), 0.5 * c.X.row(t);
        G << G_other.row(t), c.G.row(t), c.G.row(c.T - 1 - t);
        streams.step(X);
        CHECK(test::relative_error(streams.outputs().row(1), c.Y.row(t)) <= 1e-10);
        streams.accumulate_gradient(G);
      }
      const auto g = streams.stream(1).gradient();
      CHECK(test::relative_error(g.W, c.grad.W) <= 1e-10);
      CHECK(test::relative_error(g.R, c.grad.R) <= 1e-10);
      CHECK(test::relative_error(g.bW, c.grad.bW) <= 1e-10);
      CHECK(test::relative_error(g.bR, c.grad.bR) <= 1e-10);
      CHECK(test::relative_error(g.theta, c.grad.theta) <= 1e-10);
    }
  }
}

TEST_CASE("Golden stacked cases: every layer's outputs and BPTT, RTRL, SnAp gradients match PyTorch autograd", "[golden][stack]") {
  const auto dirs = case_dirs(true);
  REQUIRE(dirs.size() >= 4);
  for (const auto& dir : dirs) {
    const StackCase c = load_stack_case(dir);
    INFO("golden stacked case " << c.name);
    REQUIRE(c.X.rows() == c.T);
    Model<double> model = c.model();
    REQUIRE(model.layers() == c.L);
    for (bool exploit : {false, true}) {
      INFO("exploit_events = " << exploit);
      Bptt<double> bptt(model, BpttOptions{exploit});
      const Mat<double> top = bptt.forward(c.X);
      CHECK(test::relative_error(top, c.Y.back()) <= 1e-10);
      for (Index k = 0; k < c.L; ++k) {
        INFO("layer " << k);
        CHECK(test::relative_error(bptt.outputs(k), c.Y[std::size_t(k)]) <= 1e-10);
      }
      const auto g = bptt.backward(c.G);
      REQUIRE(Index(g.size()) == c.L);
      for (Index k = 0; k < c.L; ++k) {
        INFO("layer " << k);
        const auto& gk = g[std::size_t(k)];
        const auto& ref = c.grad[std::size_t(k)];
        CHECK(test::relative_error(gk.W, ref.W) <= 1e-10);
        CHECK(test::relative_error(gk.R, ref.R) <= 1e-10);
        CHECK(test::relative_error(gk.bW, ref.bW) <= 1e-10);
        CHECK(test::relative_error(gk.bR, ref.bR) <= 1e-10);
        CHECK(test::relative_error(gk.theta, ref.theta) <= 1e-10);
        CHECK(c.masks[std::size_t(k)].respected_by(gk));
      }
      if (c.L == 1) {  // the single-layer API on the same case: the same numbers, bit for bit
        const auto g1 = bptt.backward(c.G[0]);
        CHECK(g1.W == g[0].W);
        CHECK(g1.R == g[0].R);
        CHECK(g1.bW == g[0].bW);
        CHECK(g1.bR == g[0].bR);
        CHECK(g1.theta == g[0].theta);
      }
    }

    // Exact RTRL through depth: sparse and dense, 1 and 2 threads, a loss on every layer.
    for (bool skip : {true, false})
      for (int threads : {1, 2}) {
        INFO("RTRL, skip_silent_rows = " << skip << ", threads = " << threads);
        RtrlOptions options;
        options.skip_silent_rows = skip;
        options.threads = threads;
        Rtrl<double> rtrl(model, options);
        REQUIRE(rtrl.layers() == c.L);
        for (Index t = 0; t < c.T; ++t) {
          rtrl.step(c.X.row(t));
          for (Index k = 0; k < c.L; ++k) {
            CHECK(test::relative_error(rtrl.output(k).transpose(), c.Y[std::size_t(k)].row(t)) <= 1e-10);
            rtrl.accumulate_gradient_at(k, c.G[std::size_t(k)].row(t));
          }
        }
        for (Index k = 0; k < c.L; ++k) {
          INFO("layer " << k);
          const auto gk = rtrl.gradient(k);
          const auto& ref = c.grad[std::size_t(k)];
          CHECK(test::relative_error(gk.W, ref.W) <= 1e-10);
          CHECK(test::relative_error(gk.R, ref.R) <= 1e-10);
          CHECK(test::relative_error(gk.bW, ref.bW) <= 1e-10);
          CHECK(test::relative_error(gk.bR, ref.bR) <= 1e-10);
          CHECK(test::relative_error(gk.theta, ref.theta) <= 1e-10);
          CHECK(c.masks[std::size_t(k)].respected_by(gk));
        }
        if (skip && c.L > 1) CHECK(rtrl.total_work().cross_layer_fma > 0);
      }

    // SnAp-n over the stack's graph (recurrent and cross-layer edges) at the smallest order that
    // covers it: nothing is projected away, so it is exact through depth too.
    {
      const int order = Snap<double>(model, 1).covering_order();
      INFO("SnAp-" << order);
      Snap<double> snap(model, order);
      REQUIRE(snap.layers() == c.L);
      for (Index t = 0; t < c.T; ++t) {
        snap.step(c.X.row(t));
        for (Index k = 0; k < c.L; ++k) {
          CHECK(test::relative_error(snap.output(k).transpose(), c.Y[std::size_t(k)].row(t)) <= 1e-10);
          snap.accumulate_gradient_at(k, c.G[std::size_t(k)].row(t));
        }
      }
      for (Index k = 0; k < c.L; ++k) {
        INFO("layer " << k);
        const auto gk = snap.gradient(k);
        const auto& ref = c.grad[std::size_t(k)];
        CHECK(test::relative_error(gk.W, ref.W) <= 1e-10);
        CHECK(test::relative_error(gk.R, ref.R) <= 1e-10);
        CHECK(test::relative_error(gk.bW, ref.bW) <= 1e-10);
        CHECK(test::relative_error(gk.bR, ref.bR) <= 1e-10);
        CHECK(test::relative_error(gk.theta, ref.theta) <= 1e-10);
        CHECK(c.masks[std::size_t(k)].respected_by(gk));
      }
      if (c.L > 1) CHECK(snap.total_work().cross_layer_fma > 0);
    }
  }
}
