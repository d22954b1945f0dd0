// C++ side of python/tests/test_dtypes.py: the C++ float learners on fixed data, every number they
// produce printed exactly (hexadecimal floating point), for the test to compare bit for bit with
// the same run through sparse_rtrl in float32. Nothing here goes through the Python module.
//
//     float_reference            (prints "name v0 v1 ..." lines on stdout)
//
// Data: detail::UniformRandom doubles rounded to float (as numpy's astype(float32) of
// sparse_rtrl.uniform_random(seed, shape, low, high) does, C order).
//   stack:   Model<float> of two layers (8, 6 units; d = 3), init_torch_like seeds 5, 6, threshold
//            0.1; Rtrl; per step t: step(X[t]), accumulate_gradient(G[t]) on the top layer;
//            X = uniform(11, (T, 3), -1, 1), G = uniform(12, (T, 6), -1, 1), T = 12.
//            Prints y_t of the top layer every step, then gradient(k) of both layers.
//   online:  one layer (10 units, d = 2, seed 7, threshold 0.05), mask random(10, 2, 0.5, 0.5,
//            seed 3), Rtrl, LinearReadout(2, 10, seed 4), Adam(lr 1e-2) for the model and for the
//            readout; per step: step(X[t]), p = forward(y), (L, g) = mean_squared_error(p, U[t]),
//            accumulate_gradient(readout.backward(y, g)), update(model, rtrl), update(readout);
//            X = uniform(21, (T, 2), -1, 1), U = uniform(22, (T, 2), -1, 1), T = 15. Prints the
//            losses, then the model's parameters and the readout's V, b.
//   streams: RtrlStreams of B = 3 over the stack's initial model; per step: step(Xs[t]) (B x 3),
//            accumulate_gradient(Gs[t]) (B x 6); Xs = uniform(31, (T, 3, 3), -1, 1), Gs =
//            uniform(32, (T, 3, 6), -1, 1), T = 6. Prints gradient(k) of both layers.
//   snap:    Snap(model, 1) over the stack's initial model, the stack's data and protocol; prints
//            gradient(k) of both layers.
//   bptt:    Bptt over the stack's initial model: forward(X), backward({none, G}) with the stack's
//            X and G; prints the top layer's outputs and both layers' gradients.
#include <sparse_rtrl/sparse_rtrl.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

namespace {

using S = float;
using Sur = sparse_rtrl::TriangularSurrogate<S>;
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// rows x cols floats of UniformRandom(seed) in [lo, hi), C order (numpy's astype(float32)).
Mat uniform(std::uint64_t seed, sparse_rtrl::Index rows, sparse_rtrl::Index cols) {
  sparse_rtrl::detail::UniformRandom rng(seed);
  Mat out(rows, cols);
  for (sparse_rtrl::Index i = 0; i < rows; ++i)
    for (sparse_rtrl::Index j = 0; j < cols; ++j) out(i, j) = static_cast<S>(rng.uniform(-1.0, 1.0));
  return out;
}

template <typename Derived>
void print(const std::string& name, const Eigen::DenseBase<Derived>& values) {
  std::printf("%s", name.c_str());
  // Row-major order of the value as numpy holds it (parameters: torch layout, rows first).
  for (sparse_rtrl::Index i = 0; i < values.rows(); ++i)
    for (sparse_rtrl::Index j = 0; j < values.cols(); ++j) std::printf(" %a", double(values(i, j)));
  std::printf("\n");
}

void print_params(const std::string& name, const sparse_rtrl::EgruParameters<S>& p) {
  print(name + ".W", p.W);
  print(name + ".R", p.R);
  print(name + ".bW", p.bW);
  print(name + ".bR", p.bR);
  print(name + ".theta", p.theta);
}

sparse_rtrl::Model<S, Sur> stack_model() {
  using namespace sparse_rtrl;
  std::vector<EgruCell<S, Sur>> cells;
  cells.emplace_back(init_torch_like<S>(8, 3, InitOptions<S>{5, S(0.1)}), CellOptions{true}, Sur());
  cells.emplace_back(init_torch_like<S>(6, 8, InitOptions<S>{6, S(0.1)}), CellOptions{true}, Sur());
  return Model<S, Sur>(std::move(cells));
}

}  // namespace

int main() {
  using namespace sparse_rtrl;
  try {
    {  // stack
      Model<S, Sur> model = stack_model();
      Rtrl<S, Sur> rtrl(model);
      const Mat X = uniform(11, 12, 3), G = uniform(12, 12, 6);
      for (Index t = 0; t < X.rows(); ++t) {
        rtrl.step(X.row(t).transpose());
        rtrl.accumulate_gradient(G.row(t).transpose());
        print("stack.y" + std::to_string(t), rtrl.output().transpose());
      }
      for (Index k = 0; k < 2; ++k) print_params("stack.grad" + std::to_string(k), rtrl.gradient(k));
    }
    {  // online
      std::vector<EgruCell<S, Sur>> cells;
      cells.emplace_back(init_torch_like<S>(10, 2, InitOptions<S>{7, S(0.05)}), CellOptions{true}, Sur());
      std::vector<ParameterMask> masks{ParameterMask::random(10, 2, 0.5, 0.5, 3)};
      Model<S, Sur> model(std::move(cells), masks);
      Rtrl<S, Sur> rtrl(model);
      LinearReadout<S> readout(2, 10, ReadoutInitOptions{4});
      Adam<S> adam_model(AdamOptions<S>{S(1e-2)}), adam_readout(AdamOptions<S>{S(1e-2)});
      const Mat X = uniform(21, 15, 2), U = uniform(22, 15, 2);
      Eigen::Matrix<S, Eigen::Dynamic, 1> losses(X.rows());
      for (Index t = 0; t < X.rows(); ++t) {
        rtrl.step(X.row(t).transpose());
        const Eigen::Matrix<S, Eigen::Dynamic, 1> y = rtrl.output();
        const Eigen::Matrix<S, Eigen::Dynamic, 1> p = readout.forward(y);
        const auto r = mean_squared_error(p, Eigen::Matrix<S, Eigen::Dynamic, 1>(U.row(t).transpose()));
        losses[t] = r.loss;
        rtrl.accumulate_gradient(readout.backward(y, r.gradient));
        adam_model.update(model, rtrl);
        adam_readout.update(readout);
      }
      print("online.loss", losses);
      print_params("online.params", model.parameters(0));
      print("online.V", readout.parameters().V);
      print("online.b", readout.parameters().b);
    }
    {  // streams
      Model<S, Sur> model = stack_model();
      RtrlStreams<S, Sur> streams(model, 3);
      const Mat Xs = uniform(31, 6 * 3, 3), Gs = uniform(32, 6 * 3, 6);
      for (Index t = 0; t < 6; ++t) {
        streams.step(Mat(Xs.middleRows(3 * t, 3)));
        streams.accumulate_gradient(Mat(Gs.middleRows(3 * t, 3)));
      }
      for (Index k = 0; k < 2; ++k) print_params("streams.grad" + std::to_string(k), streams.gradient(k));
    }
    {  // snap
      Model<S, Sur> model = stack_model();
      Snap<S, Sur> snap(model, 1);
      const Mat X = uniform(11, 12, 3), G = uniform(12, 12, 6);
      for (Index t = 0; t < X.rows(); ++t) {
        snap.step(X.row(t).transpose());
        snap.accumulate_gradient(G.row(t).transpose());
      }
      for (Index k = 0; k < 2; ++k) print_params("snap.grad" + std::to_string(k), snap.gradient(k));
    }
    {  // bptt
      Model<S, Sur> model = stack_model();
      Bptt<S, Sur> bptt(model);
      const Mat X = uniform(11, 12, 3), G = uniform(12, 12, 6);
      print("bptt.Y", bptt.forward(X));
      using ColMat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
      const auto grads = bptt.backward(std::vector<ColMat>{ColMat(), ColMat(G)});
      for (Index k = 0; k < 2; ++k) print_params("bptt.grad" + std::to_string(k), grads[std::size_t(k)]);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "float_reference: %s\n", e.what());
    return 1;
  }
  return 0;
}
