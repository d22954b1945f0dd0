// C++ side of python/tests/test_checkpoint.py: resumes a run from a checkpoint written by Python,
// continues it with the protocol the test repeats in Python, and saves a checkpoint of its own
// that the test reads back in Python (numpy.load, sparse_rtrl.load_model, Checkpoint.load).
//
//     checkpoint_interop IN OUT STEPS
//
// The run: a float64 Model (any layers and sizes: built by io::load_model from IN), Rtrl over it
// (default options), one Adam per layer; entries "rtrl", "adam_l{k}", "step" (int64). Per step t:
// x_i = ((7 t + 3 i) mod 11) / 10 - 0.5 (exact in binary64 arithmetic on both sides), step(x),
// accumulate_gradient(y - 0.25) on the top layer; after every 4th step (t % 4 == 3) each layer's
// Adam steps with its gradient and the gradient is zeroed.
#include <sparse_rtrl/io/checkpoint.hpp>
#include <sparse_rtrl/sparse_rtrl.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  using namespace sparse_rtrl;
  using S = double;
  using Sur = TriangularSurrogate<S>;
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s IN OUT STEPS\n", argv[0]);
    return 2;
  }
  try {
    Model<S, Sur> model = io::load_model<S, Sur>(argv[1]);
    Rtrl<S, Sur> rtrl(model);
    std::vector<Adam<S>> adams(std::size_t(model.layers()), Adam<S>(AdamOptions<S>{1e-2}));
    std::int64_t step = 0;
    io::Checkpoint checkpoint;
    checkpoint.add(model).add("rtrl", rtrl).add("step", step);
    for (std::size_t k = 0; k < adams.size(); ++k) checkpoint.add("adam_l" + std::to_string(k), adams[k]);
    checkpoint.load(argv[1]);

    const std::int64_t steps = std::stoll(argv[3]);
    Eigen::VectorXd x(rtrl.inputs());
    for (std::int64_t end = step + steps; step < end; ++step) {
      for (Index i = 0; i < x.size(); ++i) x[i] = double((7 * step + 3 * std::int64_t(i)) % 11) / 10.0 - 0.5;
      rtrl.step(x);
      rtrl.accumulate_gradient((rtrl.output().array() - 0.25).matrix());
      if (step % 4 == 3) {
        for (Index k = 0; k < model.layers(); ++k)
          adams[std::size_t(k)].step(model.parameters(k), rtrl.gradient(k), model.mask(k));
        rtrl.zero_gradient();
      }
    }
    checkpoint.save(argv[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "checkpoint_interop: %s\n", e.what());
    return 1;
  }
  return 0;
}
