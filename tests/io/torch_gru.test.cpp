// Interchange with torch.nn.GRU through numpy.savez files (tests/data/torch_gru, made by
// make_torch_gru.py with the README's snippet): torch's weights in a GRU-mode model reproduce
// torch's own forward pass (its outputs and final states, computed by torch); our files carry
// torch's tensors bit for bit, and torch loads them with the README's reverse snippet (strict)
// and computes the same outputs; files that are not a unidirectional GRU with biases are refused.
#include "io/io_support.hpp"

using namespace sparse_rtrl;
using iotest::same_bits;
using test::Mat;

namespace {

struct TorchCase {
  const char* name;
  Index layers, n, d;
  bool float64;
};
const TorchCase kCases[] = {{"gru-L1-n5-d3-float32", 1, 5, 3, false},
                       {"gru-L2-n6-d4-float32", 2, 6, 4, false},
                       {"gru-L2-n6-d4-float64", 2, 6, 4, true}};

std::string torch_file(const TorchCase& c, const char* suffix = ".npz") {
  return test::data_dir() + "/torch_gru/" + c.name + suffix;
}

/// torch's reference: x (T, d), output (T, n) of the top layer, h_n (L, n), in double.
struct Reference {
  Mat<double> x, output, h_n;
};
Reference reference(const TorchCase& c) {
  io::NpzReader r(torch_file(c, ".forward.npz"));
  Reference ref;
  for (auto [name, m] : {std::pair<const char*, Mat<double>*>{"x", &ref.x}, {"output", &ref.output}, {"h_n", &ref.h_n}}) {
    const io::ArrayInfo& info = r.info(name);
    m->resize(Index(info.shape[0]), Index(info.shape[1]));
    if (info.dtype == io::Dtype::float64) {
      r.read_into(name, *m);
    } else {
      Mat<float> f(m->rows(), m->cols());
      r.read_into(name, f);
      *m = f.cast<double>();
    }
  }
  return ref;
}

/// A GRU-mode model from the file's layers.
template <typename S>
Model<S> gru_model(const std::string& path) {
  std::vector<EgruCell<S>> cells;
  for (auto& p : io::read_torch_gru<S>(path)) cells.emplace_back(p, CellOptions{false});
  return Model<S>(cells);
}

/// Runs the model over x; the largest deviation from torch's outputs and final states.
template <typename S>
double deviation(Model<S>& model, const Reference& ref) {
  Rtrl<S> rtrl(model);
  double worst = 0;
  for (Index t = 0; t < ref.x.rows(); ++t) {
    rtrl.step(ref.x.row(t).cast<S>());
    worst = std::max(worst, (rtrl.output().template cast<double>().transpose() - ref.output.row(t)).cwiseAbs().maxCoeff());
  }
  for (Index k = 0; k < model.layers(); ++k)
    worst = std::max(worst, (rtrl.state(k).template cast<double>().transpose() - ref.h_n.row(k)).cwiseAbs().maxCoeff());
  return worst;
}

}  // namespace

TEST_CASE("torch.nn.GRU weights reproduce torch's forward pass in a GRU-mode model", "[io][torch]") {
  for (const TorchCase& c : kCases) {
    INFO(c.name);
    const Reference ref = reference(c);
    REQUIRE(ref.h_n.rows() == c.layers);
    REQUIRE(ref.output.cols() == c.n);
    REQUIRE(ref.output.cwiseAbs().maxCoeff() > 0.1);  // a forward pass that moved
    // Computed in double from torch's weights: float64 files agree to rounding, float32 files to
    // float32's (torch computed in float32).
    Model<double> d = gru_model<double>(torch_file(c));
    REQUIRE(d.layers() == c.layers);
    REQUIRE(d.units(c.layers - 1) == c.n);
    REQUIRE(d.inputs() == c.d);
    CHECK(deviation(d, ref) < (c.float64 ? 1e-13 : 2e-6));
    Model<float> f = gru_model<float>(torch_file(c));
    CHECK(deviation(f, ref) < 2e-6);
    // Into an existing model with other weights: the same numbers.
    std::vector<EgruCell<double>> cells;
    for (Index k = 0; k < c.layers; ++k)
      cells.emplace_back(c.n, k == 0 ? c.d : c.n, InitOptions<double>{std::uint64_t(40 + k)}, CellOptions{false});
    Model<double> existing(cells);
    CHECK(deviation(existing, ref) > 1e-3);
    io::load_torch_gru(torch_file(c), existing);
    CHECK(deviation(existing, ref) < (c.float64 ? 1e-13 : 2e-6));
  }
}

TEST_CASE("load_torch_gru keeps thresholds and masks of an EGRU model", "[io][torch]") {
  const TorchCase& c = kCases[1];
  const std::vector<EgruParameters<float>> torch = io::read_torch_gru<float>(torch_file(c));
  std::vector<EgruCell<float>> cells;
  std::vector<ParameterMask> masks;
  for (Index k = 0; k < 2; ++k) {
    cells.emplace_back(c.n, k == 0 ? c.d : c.n, InitOptions<float>{9, 0.25f}, CellOptions{true});
    masks.push_back(ParameterMask::random(c.n, k == 0 ? c.d : c.n, 0.5, 0.5, 3 + std::uint64_t(k)));
  }
  Model<float> model(cells, masks);
  io::load_torch_gru(torch_file(c), model);
  for (Index k = 0; k < 2; ++k) {
    const auto& p = model.parameters(k);
    const auto& m = model.mask(k);
    REQUIRE(p.theta.isConstant(0.25f));
    REQUIRE(m.respected_by(p));
    for (Index j = 0; j < p.W.cols(); ++j)
      for (Index i = 0; i < p.W.rows(); ++i) REQUIRE(p.W(i, j) == (m.W()(i, j) ? torch[std::size_t(k)].W(i, j) : 0.0f));
    REQUIRE(same_bits(p.bR, torch[std::size_t(k)].bR));
  }
}

TEST_CASE("Our files carry torch's tensors bit for bit, and torch loads them", "[io][torch]") {
  iotest::TempDir dir;
  std::string files;  // checked by torch in one python process
  for (const TorchCase& c : kCases) {
    INFO(c.name);
    const std::string ckpt = dir.file(std::string(c.name) + ".ckpt.npz");
    const std::string plain = dir.file(std::string(c.name) + ".torch.npz");
    auto check = [&](auto scalar) {
      using S = decltype(scalar);
      Model<S> model = gru_model<S>(torch_file(c));
      io::Checkpoint().add(model).save(ckpt);
      io::save_torch_gru(plain, model);
      io::NpzReader theirs(torch_file(c)), full(ckpt), only(plain);
      REQUIRE(only.names() == theirs.names());  // the state_dict's keys, in its order
      for (const std::string& name : theirs.names()) {
        INFO(name);
        for (io::NpzReader* ours : {&full, &only}) {
          REQUIRE(ours->info(name).shape == theirs.info(name).shape);
          REQUIRE(ours->info(name).dtype == io::dtype_of<S>::value);
          if (theirs.info(name).dtype != ours->info(name).dtype) continue;  // float32 in a double model
          std::string a, b;
          theirs.read_data(name, [&](const unsigned char* p, std::size_t n) { a.append(reinterpret_cast<const char*>(p), n); });
          ours->read_data(name, [&](const unsigned char* p, std::size_t n) { b.append(reinterpret_cast<const char*>(p), n); });
          REQUIRE(a == b);
        }
      }
    };
    if (c.float64)
      check(double());
    else
      check(float());

    files += " " + ckpt + " " + plain + " " + torch_file(c, ".forward.npz");
  }
  const std::string python = iotest::python_with_numpy();
  if (python.empty()) {
    iotest::report_skip("no python3 with numpy (and torch) to load our files into torch.nn.GRU");
    return;
  }
  std::string out;
  const int status = iotest::run(python + " " + iotest::npz_check_script() + " torch" + files + " 2>&1", out);
  INFO(out);
  if (status == 77) {
    iotest::report_skip("python3 has numpy but not torch (Debian: python3-torch): " + out);
    return;
  }
  REQUIRE(status == 0);
  for (const TorchCase& c : kCases) CHECK(out.find(std::string(c.name) + ".ckpt.npz: " + std::to_string(c.layers) +
                                              " layer(s), output equal") != std::string::npos);
  for (const TorchCase& c : kCases) CHECK(out.find(std::string(c.name) + ".torch.npz: " + std::to_string(c.layers) +
                                              " layer(s), output equal") != std::string::npos);
}

TEST_CASE("Files that are not a torch.nn.GRU state_dict are refused, the model unchanged", "[io][torch]") {
  iotest::TempDir dir;
  const TorchCase& c = kCases[1];
  Model<float> model = gru_model<float>(torch_file(kCases[0]));  // 1 layer, n 5, d 3
  const EgruParameters<float> before = model.parameters();
  auto refused = [&](const std::string& path, const std::string& message) {
    try {
      io::load_torch_gru(path, model);
      FAIL("no exception for " << path);
    } catch (const std::invalid_argument& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(message) != std::string::npos);
    }
    REQUIRE(same_bits(model.parameters().W, before.W));
    REQUIRE(same_bits(model.parameters().R, before.R));
    REQUIRE(same_bits(model.parameters().bR, before.bR));
  };
  refused(torch_file(c), "the file has 2 layers, the model 1");
  {
    io::NpzWriter w(dir.file("n6.npz"));
    w.add("weight_ih_l0", Mat<float>::Ones(18, 3));
    w.add("weight_hh_l0", Mat<float>::Ones(18, 6));
    w.add("bias_ih_l0", Eigen::VectorXf::Ones(18));
    w.add("bias_hh_l0", Eigen::VectorXf::Ones(18));
    w.commit();
  }
  refused(dir.file("n6.npz"), "layer 0: the file has hidden size 6 and input size 3, the model n = 5, d = 3");
  {
    io::NpzWriter w(dir.file("lstm.npz"));  // torch.nn.LSTM's layout: 4 gates
    w.add("weight_ih_l0", Mat<float>::Ones(20, 3));
    w.add("weight_hh_l0", Mat<float>::Ones(20, 5));
    w.add("bias_ih_l0", Eigen::VectorXf::Ones(20));
    w.add("bias_hh_l0", Eigen::VectorXf::Ones(20));
    w.commit();
  }
  refused(dir.file("lstm.npz"), "entry 'weight_hh_l0': expected the (3n, n) hidden weights of a GRU, found shape (20, 5)");
  {
    io::NpzWriter w(dir.file("nobias.npz"));
    w.add("weight_ih_l0", Mat<float>::Ones(15, 3));
    w.add("weight_hh_l0", Mat<float>::Ones(15, 5));
    w.commit();
  }
  refused(dir.file("nobias.npz"), "entry 'bias_ih_l0' is missing: GRUs without biases (bias=False) are not supported");
  {
    io::NpzWriter w(dir.file("bidirectional.npz"));
    w.add("weight_ih_l0", Mat<float>::Ones(15, 3));
    w.add("weight_ih_l0_reverse", Mat<float>::Ones(15, 3));
    w.commit();
  }
  refused(dir.file("bidirectional.npz"), "entry 'weight_ih_l0_reverse': a bidirectional GRU");
  {
    io::NpzWriter w(dir.file("int.npz"));
    w.add("weight_ih_l0", Eigen::Matrix<std::int64_t, -1, -1>::Ones(15, 3));
    w.add("weight_hh_l0", Mat<float>::Ones(15, 5));
    w.add("bias_ih_l0", Eigen::VectorXf::Ones(15));
    w.add("bias_hh_l0", Eigen::VectorXf::Ones(15));
    w.commit();
  }
  refused(dir.file("int.npz"), "entry 'weight_ih_l0': expected float32 or float64 of shape (15, 3), found <i8");
  {
    io::NpzWriter w(dir.file("gap.npz"));  // layer 2 without layer 1
    w.add("weight_ih_l0", Mat<float>::Ones(15, 3));
    w.add("weight_hh_l0", Mat<float>::Ones(15, 5));
    w.add("bias_ih_l0", Eigen::VectorXf::Ones(15));
    w.add("bias_hh_l0", Eigen::VectorXf::Ones(15));
    w.add("weight_hh_l2", Mat<float>::Ones(15, 5));
    w.commit();
  }
  refused(dir.file("gap.npz"), "entry 'weight_hh_l2' belongs to layer 2, but weight_ih_l1 is missing");
  refused(test::data_dir() + "/npz/types.npz", "entry 'weight_ih_l0' is missing: not the state_dict of a torch.nn.GRU");
}
