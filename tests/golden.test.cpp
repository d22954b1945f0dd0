// Golden cases computed by PyTorch autograd (tests/data/golden, see its README): every case
// folder found there is run, so a new case needs no code change.
#include "test_support.hpp"

#include <filesystem>

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

std::vector<std::filesystem::path> case_dirs() {
  std::vector<std::filesystem::path> dirs;
  for (const auto& e : std::filesystem::directory_iterator(test::data_dir() + "/golden"))
    if (e.is_directory() && std::filesystem::exists(e.path() / "meta.txt")) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

}  // namespace

TEST_CASE("Golden cases: forward outputs and BPTT, RTRL gradients match PyTorch autograd", "[golden]") {
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
