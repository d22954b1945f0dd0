// Exact RTRL with the influence matrix split over MPI ranks (docs/distributed.md): an EGRU learns
// online to recall the input bit of 3 steps ago, as examples/hello_rtrl.cpp, but each rank holds
// only its share of M's columns. Every rank runs the same program on the same data; each prints
// its share of M (bytes) and its step time, and at the end rank 0 reruns the same training with
// the one-process Rtrl and checks that the parameters came out bit for bit the same.
//
//   mpirun -np 2 build/examples/distributed            (as root add --allow-run-as-root;
//   mpirun -np 3 --oversubscribe ...                    more ranks than cores: --oversubscribe)
#include <sparse_rtrl/mpi.hpp>

#include "common/args.hpp"
#include "common/timing.hpp"

#include <cstdio>
#include <iostream>
#include <random>
#include <vector>

using namespace sparse_rtrl;

namespace {

const char* const kUsage =
    "usage: mpirun -np R distributed [--short] [--units N] [--steps T] [--density D] [--threads K]\n"
    "  --short      64 units, 600 steps (the ctest smoke run)\n"
    "  --units N    units of the EGRU (default 512)\n"
    "  --steps T    online training steps (default 2000)\n"
    "  --density D  fraction of R kept (default 0.1)\n"
    "  --threads K  threads per rank (default 1)\n";

struct Setup {
  Index n = 512, steps = 2000;
  double density = 0.1;
  int threads = 1;
};

Model<float> make_model(const Setup& s) {
  EgruCell<float> cell(s.n, 1, InitOptions<float>{/*seed=*/2, /*threshold=*/0.1f}, CellOptions{true},
                       TriangularSurrogate<float>(1.0f, 0.5f));
  cell.parameters().W *= 4.0f;
  return Model<float>(cell, ParameterMask::random(s.n, 1, 1.0, s.density, /*seed=*/1, MaskSharing::gate_shared));
}

/// The online training loop of hello_rtrl.cpp, for any learner (sharded or not): returns the mean
/// step time (step + read-out + updates) in seconds and the last window's mean squared error.
template <typename Learner>
std::pair<double, double> train(Model<float>& model, Learner& learner, const Setup& s, bool report) {
  LinearReadout<float> readout(1, s.n);
  readout.parameters().V.setZero();
  Adam<float> adam_model(AdamOptions<float>{3e-3f}), adam_readout(AdamOptions<float>{3e-3f});
  std::mt19937 rng(0);
  Eigen::VectorXf x(1), p(1), target(1), dL_dp(1), dL_dy(s.n);
  std::vector<float> bits(std::size_t(s.steps));
  for (float& b : bits) b = (rng() & 1) ? 1.0f : -1.0f;
  double window = 0, last = 0;
  const Index every = std::max<Index>(1, s.steps / 5);
  const auto start = examples::Clock::now();
  for (Index t = 0; t < s.steps; ++t) {
    x(0) = bits[std::size_t(t)];
    learner.step(x);
    readout.forward(learner.output(), p);
    target(0) = bits[std::size_t(t >= 3 ? t - 3 : 0)];
    window += mean_squared_error(p, target, dL_dp);
    readout.backward(learner.output(), dL_dp, dL_dy);
    learner.accumulate_gradient(dL_dy);
    adam_model.update(model, learner);  // the sharded learner gathers its gradient here
    adam_readout.update(readout);
    if ((t + 1) % every == 0) {
      last = window / double(every);
      if (report) std::cout << "step " << t + 1 << "  mse " << last << "\n";
      window = 0;
    }
  }
  return {examples::seconds_since(start) / double(s.steps), last};
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int status = 0;
  try {
    Setup s;
    bool short_run = false;
    long long units = -1, steps = -1;
    examples::ArgParser args("distributed", kUsage);
    args.flag("--short", short_run)
        .integer("--units", units, 1LL, 8192LL)
        .integer("--steps", steps, 1LL, 100000000LL)
        .number("--density", s.density, 0.0, 1.0)
        .integer("--threads", s.threads, 1, 256);
    args.parse(argc, argv);
    if (short_run) {
      s.n = 64;
      s.steps = 600;
    }
    if (units > 0) s.n = Index(units);
    if (steps > 0) s.steps = Index(steps);

    Model<float> model = make_model(s);  // the same on every rank (seeded)
    RtrlOptions options;
    options.threads = s.threads;
    mpi::ShardedRtrl<float> learner(model, MPI_COMM_WORLD, options);  // checks the ranks agree
    const mpi::Communicator& comm = learner.communicator();
    if (comm.rank() == 0)
      std::cout << "n = " << s.n << ", " << learner.columns() << " influence columns over " << comm.size()
                << " rank(s), " << s.steps << " steps\n";
    const auto [seconds, mse] = train(model, learner, s, comm.rank() == 0);

    // Each rank's share, gathered for one table.
    const std::vector<double> mine{double(learner.column_begin()), double(learner.column_end()),
                                   double(learner.influence_bytes()), seconds};
    const std::vector<double> all = comm.allgather(mine);
    if (comm.rank() == 0) {
      std::cout << "rank  columns          M (MB)   ms/step\n";
      for (int r = 0; r < comm.size(); ++r) {
        const double* v = all.data() + 4 * r;
        std::printf("%4d  [%6.0f, %6.0f)  %7.2f  %8.3f\n", r, v[0], v[1], v[2] / 1e6, v[3] * 1e3);
      }
    }
    // The one-process run on rank 0: the same training with Rtrl, which must give the same bits.
    int same = 1;
    if (comm.rank() == 0) {
      Model<float> reference_model = make_model(s);
      Rtrl<float> reference(reference_model, options);
      const auto [ref_seconds, ref_mse] = train(reference_model, reference, s, false);
      for (Index k = 0; k < model.layers(); ++k) {
        const auto& a = model.parameters(k);
        const auto& b = reference_model.parameters(k);
        same &= int(a.W == b.W && a.R == b.R && a.bW == b.bW && a.bR == b.bR && a.theta == b.theta);
      }
      std::cout << "one process: " << ref_seconds * 1e3 << " ms/step, M " << double(reference.influence_bytes()) / 1e6
                << " MB, last mse " << ref_mse << "\n"
                << "parameters after " << s.steps << " online updates: "
                << (same ? "bitwise equal to the one-process run" : "DIFFERENT from the one-process run") << "\n";
    }
    const std::vector<int> verdict = comm.allgather(std::vector<int>{same});
    status = verdict[0] ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "distributed: " << e.what() << "\n";
    // An error on one rank only would leave the others waiting: end the job.
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return status;
}
