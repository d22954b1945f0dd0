// Golden cases computed by PyTorch autograd (tests/data/golden, see its README): every case
// folder found there is run, so a new case needs no code change.
#include "test_support.hpp"

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

using namespace sparse_rtrl;
using test::Mat;

namespace {

struct GoldenCase {
  std::string name;
  Index n = 0, d = 0, T = 0;
  bool events = true;
  double gamma = 0.7, eps = 1.0, density = 1.0;
  EgruParameters<double> params, grad;
  bool has_mask = false;
  ParameterMask mask;
  Mat<double> X, G, Y;
};

Eigen::VectorXd row_vector(const Mat<double>& m) { return m.row(0).transpose(); }

GoldenCase load_case(const std::filesystem::path& dir) {
  auto f = [&](const char* name) { return test::load_text_matrix((dir / name).string()); };
  GoldenCase c;
  c.name = dir.filename().string();
  const Mat<double> meta = f("meta.txt");
  c.n = Index(meta(0, 0));
  c.d = Index(meta(0, 1));
  c.T = Index(meta(0, 2));
  c.events = meta(0, 3) != 0;
  c.gamma = meta(0, 4);
  c.eps = meta(0, 5);
  c.density = meta(0, 6);
  c.params = EgruParameters<double>(c.n, c.d);
  c.params.W = f("W.txt");
  c.params.R = f("R.txt");
  c.params.bW = row_vector(f("bW.txt"));
  c.params.bR = row_vector(f("bR.txt"));
  c.params.theta = row_vector(f("theta.txt"));
  c.grad = EgruParameters<double>(c.n, c.d);
  c.grad.W = f("gW.txt");
  c.grad.R = f("gR.txt");
  c.grad.bW = row_vector(f("gbW.txt"));
  c.grad.bR = row_vector(f("gbR.txt"));
  c.grad.theta = row_vector(f("gtheta.txt"));
  c.X = f("x.txt");
  c.G = f("G.txt");
  c.Y = f("y_ref.txt");
  if (std::filesystem::exists(dir / "maskR.txt")) {
    c.has_mask = true;
    c.mask = ParameterMask(ParameterMask::BoolMatrix::Constant(3 * c.n, c.d, true), f("maskR.txt").array() != 0.0);
  } else {
    c.mask = ParameterMask::dense(c.n, c.d);
  }
  return c;
}

/// Case folders: the flat (one-layer) ones, or with @p stacked the `stack-*` ones, recognised by
/// their layers.txt.
std::vector<std::filesystem::path> case_dirs(bool stacked = false) {
  std::vector<std::filesystem::path> dirs;
  for (const auto& e : std::filesystem::directory_iterator(test::data_dir() + "/golden"))
    if (e.is_directory() && std::filesystem::exists(e.path() / "meta.txt") &&
        std::filesystem::exists(e.path() / "layers.txt") == stacked)
      dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

/// A stacked golden case (README: "Stacked cases"), every per-layer quantity indexed by layer k.
struct StackCase {
  std::string name;
  Index L = 0, d = 0, T = 0;
  bool events = true;
  double gamma = 0.7, eps = 1.0;       ///< one surrogate for all layers
  std::vector<Index> sizes;            ///< n_0 ... n_{L-1}
  std::vector<EgruCell<double>> cells;  ///< parameters, mode and surrogate of each layer
  std::vector<ParameterMask> masks;    ///< each layer's mask (dense where the case has no mask file)
  std::vector<bool> has_maskW, has_maskR;
  Mat<double> X;                          ///< T x d
  std::vector<Mat<double>> G;             ///< T x n_k: dL/dy^k_t
  std::vector<Mat<double>> Y;             ///< T x n_k: expected outputs y^k_t
  std::vector<EgruParameters<double>> grad;  ///< expected gradient of each layer's parameters

  /// A new model of the case's layers and masks (bind learners to a named copy of it).
  Model<double> model() const { return Model<double>(cells, masks); }
  bool masked() const {
    for (Index k = 0; k < L; ++k)
      if (has_maskW[std::size_t(k)] || has_maskR[std::size_t(k)]) return true;
    return false;
  }
};

StackCase load_stack_case(const std::filesystem::path& dir) {
  auto f = [&](const std::string& name) { return test::load_text_matrix((dir / name).string()); };
  auto fl = [&](const char* name, Index k) { return f(std::string(name) + "_l" + std::to_string(k) + ".txt"); };
  auto has = [&](const char* name, Index k) {
    return std::filesystem::exists(dir / (std::string(name) + "_l" + std::to_string(k) + ".txt"));
  };
  StackCase c;
  c.name = dir.filename().string();
  const Mat<double> meta = f("meta.txt");
  c.L = Index(meta(0, 0));
  c.d = Index(meta(0, 1));
  c.T = Index(meta(0, 2));
  c.events = meta(0, 3) != 0;
  c.gamma = meta(0, 4);
  c.eps = meta(0, 5);
  const Mat<double> sizes = f("layers.txt");
  if (sizes.size() != c.L)
    throw std::runtime_error(c.name + ": layers.txt must hold L = " + std::to_string(c.L) + " sizes");
  c.X = f("x.txt");
  const TriangularSurrogate<double> surrogate(c.gamma, c.eps);
  Index inputs = c.d;
  for (Index k = 0; k < c.L; ++k) {
    const Index n = Index(sizes(0, k));
    c.sizes.push_back(n);
    EgruParameters<double> p(n, inputs);
    p.W = fl("W", k);
    p.R = fl("R", k);
    p.bW = row_vector(fl("bW", k));
    p.bR = row_vector(fl("bR", k));
    p.theta = row_vector(fl("theta", k));
    c.cells.emplace_back(p, CellOptions{c.events}, surrogate);
    c.has_maskW.push_back(has("maskW", k));
    c.has_maskR.push_back(has("maskR", k));
    c.masks.emplace_back(c.has_maskW.back() ? ParameterMask::BoolMatrix(fl("maskW", k).array() != 0.0)
                                            : ParameterMask::BoolMatrix::Constant(3 * n, inputs, true),
                         c.has_maskR.back() ? ParameterMask::BoolMatrix(fl("maskR", k).array() != 0.0)
                                            : ParameterMask::BoolMatrix::Constant(3 * n, n, true));
    EgruParameters<double> g(n, inputs);
    g.W = fl("gW", k);
    g.R = fl("gR", k);
    g.bW = row_vector(fl("gbW", k));
    g.bR = row_vector(fl("gbR", k));
    g.theta = row_vector(fl("gtheta", k));
    c.grad.push_back(std::move(g));
    c.G.push_back(fl("G", k));
    c.Y.push_back(fl("y_ref", k));
    inputs = n;
  }
  return c;
}

}  // namespace

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
