// An EGRU learns online, by exact sparse RTRL, to recall the input bit of 3 steps ago.
#include <sparse_rtrl/sparse_rtrl.hpp>

#include <iostream>
#include <random>

using namespace sparse_rtrl;

int main() {
  const Index n = 32, d = 1, T = 20000, delay = 3;
  EgruCell<float> cell(n, d, InitOptions<float>{/*seed=*/2, /*threshold=*/0.1f}, CellOptions{/*events=*/true},
                       TriangularSurrogate<float>(/*gamma=*/1.0f, /*eps=*/0.5f));
  cell.parameters().W *= 4.0f;  // inputs strong enough to cross the thresholds
  // Inputs dense, 25% of R kept, one pattern for the three gates; pruned weights have no column in M.
  Model<float> model(cell, ParameterMask::random(n, d, 1.0, 0.25, /*seed=*/1, MaskSharing::gate_shared));
  Rtrl<float> rtrl(model);                 // references the model; holds M = dc/dθ, n x P_kept
  LinearReadout<float> readout(1, n);      // prediction p_t = V y_t + b
  readout.parameters().V.setZero();
  Adam<float> adam_model(AdamOptions<float>{3e-3f}), adam_readout(AdamOptions<float>{3e-3f});

  std::mt19937 rng(0);
  std::vector<float> bits(T);
  for (float& b : bits) b = (rng() & 1) ? 1.0f : -1.0f;
  Eigen::VectorXf x(d), p(1), target(1), dL_dp(1), dL_dy(n);
  double window = 0;
  for (Index t = 0; t < T; ++t) {
    x(0) = bits[t];
    rtrl.step(x);                                         // c_t and M_t advance together
    readout.forward(rtrl.output(), p);
    target(0) = bits[t >= delay ? t - delay : 0];
    window += mean_squared_error(p, target, dL_dp);
    readout.backward(rtrl.output(), dL_dp, dL_dy);        // dV, db += ...; dL_dy = V^T dL_dp
    rtrl.accumulate_gradient(dL_dy);                      // gradient += (dL/dc_t)^T M_t
    adam_model.update(model, rtrl);    // one update per step, fully online: applies the gradient
    adam_readout.update(readout);      // accumulated since the last update, then zeroes it
    if ((t + 1) % (T / 10) == 0) {
      const WorkCounters& w = rtrl.total_work();
      std::cout << "step " << t + 1 << "  mse " << window / double(T / 10) << "  events off "
                << 100 * w.event_sparsity() << "%  rows skipped " << 100 * w.backward_sparsity() << "%  "
                << w.ideal_speedup() << "x fewer multiply-adds than dense RTRL\n";
      window = 0;
    }
  }
}
