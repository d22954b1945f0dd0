/// @file copy_online.cpp
/// @brief Delayed recall learned fully online: an EGRU trained with exact sparse RTRL, updated
///        at every step, on endless streams of symbols with no episode boundaries: one stream,
///        or B independent streams (--streams B) learning one shared model in parallel.
///
/// Task: at every step t the network reads a random symbol x_t, one of K = 4, one-hot (d = 4),
/// and must output the symbol it read D steps earlier, x_{t-D} (default D = 5; chance is 1/K =
/// 25%). There are no sequences: the state is never reset, and a loss (softmax cross-entropy of
/// a linear readout of the event output y_t) is taken at every step from t = D on. Adam updates
/// the EGRU and the readout after every step (k = 1, fully online).
///
/// What it shows: RTRL carries the exact gradient forward in the influence matrix M (n x P_kept
/// floats, allocated once), so memory stays constant however long the stream runs. BPTT would
/// have to store the whole history to differentiate the loss at step t through all earlier
/// steps; on an unbounded stream it can only learn with truncation, and a truncation window
/// shorter than D cannot learn this task at all. RTRL needs no window, and sparse_rtrl skips,
/// exactly, the influence rows of units with s = dy/dc = 0 and the columns of pruned recurrent
/// weights (--density). Each progress line shows the loss, the accuracy over the last 1000
/// steps, the event sparsity (units with no event), the backward sparsity (rows with s = 0,
/// skipped), how many fewer multiply-adds the influence updates and readouts took than dense
/// RTRL (WorkCounters), and how many of the n units emitted any event since the last line.
///
/// Model: n = 32 units, thresholds 0.3 (trained), input weights scaled by 3 so that one symbol
/// drives units across threshold, zero readout at start (as in spiral.cpp), Adam with learning
/// rate 1e-3, no activity regulariser (in our trials it mostly silenced units for good and
/// slowed learning). Surrogate: triangular, gamma = 1, half-width eps = 0.2, chosen
/// deliberately: a silent unit's row is skipped only when c < theta - eps. In our runs (delay 5,
/// 100000 steps) eps = 1 learnt fastest but skipped only about 10% of the rows (1.1x fewer
/// multiply-adds), while eps = 0.1 let more units fall silent for good (a silent unit outside
/// the window gets no gradient) and had reached only 68% accuracy; eps = 0.2 was in between.
///
/// Many streams (--streams B): B independent symbol streams (B sensors, B environments) drive
/// B copies of the network's state, each with its own influence matrix, over ONE shared model
/// (sparse_rtrl::RtrlStreams). Each step, every stream takes its loss, the gradients are summed
/// over the streams (in a fixed order: the same bits on any number of threads) and Adam updates
/// the shared EGRU and readout once. The streams run in parallel on --threads threads.
///
/// Checkpoints (--save, --resume; sparse_rtrl/io/checkpoint.hpp): everything the run holds (the
/// model with its mask, every stream's state and influence matrix, both Adam states, the readout,
/// the symbol generators, the accuracy window and the counters of the progress lines) goes into
/// one NumPy .npz, written atomically. A run resumed from it prints the same lines, digit for
/// digit, as the run that was never stopped (only the seconds column differs): docs/examples.md.
///
/// Usage: copy_online [--short] [--steps N] [--delay D] [--density P] [--seed S]
///                    [--streams B] [--threads T] [--save PATH [--save-every N]] [--resume PATH]
///   --short      50000 steps instead of 200000 (a quick demonstration)
///   --steps N    length of the stream, N >= 1
///   --delay D    recall the symbol from D steps back, D >= 1 (default 5)
///   --density P  fraction of the recurrent weights R kept, 0 < P <= 1 (random mask, default 1).
///                The input weights W stay dense: with d = 4 they are 384 of the 3680 parameters,
///                and pruning them leaves units deaf to some symbols.
///   --seed S     seeds weights, mask and the symbol streams (default 1)
///   --streams B  B >= 1 independent streams over one model (default 1); accuracy and losses
///                are over all streams
///   --threads T  threads of the streams' team, T >= 1 (default 1)
///   --save PATH  write a checkpoint to PATH at the end of the run (the last step done), and
///                with --save-every N also after every N-th step (each replaces the last)
///   --resume PATH  continue the run saved in PATH up to --steps (which counts from step 0, so
///                --steps must exceed the saved step); --delay and --streams must be the saved
///                run's, --seed and --density are then irrelevant (the file has the weights,
///                masks and generators)
/// Arguments it does not know, or cannot parse, end it with exit code 2; a checkpoint that cannot
/// be read or does not fit ends it with exit code 1 and the reason.
///
/// Typical result (measured; figures "over the stream" are WorkCounters totals of the run):
///   full run, delay 5, seeds 1-3: 100%, 98.9%, 99.4% accuracy over the last 1000 steps (seeds 1
///   and 2 above 95% from step 60000 on, seed 3 from step 110000); 54-63% event sparsity, 48-59%
///   backward sparsity, dense RTRL / done multiply-adds 1.9-2.4 over the stream. Much of the
///   silence is units that stopped firing early and never came back: 16-23 of the 32 units fire
///   at all in a progress interval, and the rows of the others are skipped exactly.
///   --short (seed 1): 84% at the end, still rising; 1.9x fewer multiply-adds.
///   --density 0.25, seeds 1-2: 83% (still rising) and 100%; 9.4-10.3x fewer multiply-adds,
///   mostly from the pruned columns.
///   --delay 3: 100% (98% by step 40000). --delay 8: 58% after 200000 steps, with only 9 units
///   firing: longer delays need more steps, and more units kept alive, than this example gives.
///
/// Run time (Release build, 2 cores shared with a benchmark run, load about 3; the example is
/// single-threaded): --short 14 s; the full run 42-62 s at density 1 and 12-14 s at 0.25.
#include <sparse_rtrl/sparse_rtrl.hpp>

#include "common/args.hpp"
#include "common/timing.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using sparse_rtrl::Index;
using Surrogate = sparse_rtrl::TriangularSurrogate<float>;
using Learner = sparse_rtrl::RtrlStreams<float, Surrogate>;
using Model = Learner::Model;
using Cell = Learner::Cell;
using Parameters = Learner::Parameters;
using Vector = Eigen::VectorXf;

constexpr Index kSymbols = 4;      // K, also d: one-hot input
constexpr Index kUnits = 32;       // n
constexpr long kWindow = 1000;     // steps of the running accuracy
constexpr float kThreshold = 0.3f; // initial theta (trained)
constexpr float kInputGain = 3.0f; // scales the torch-like initial W
constexpr float kLearningRate = 1e-3f;

struct Options {
  bool short_run = false;
  long steps = -1;  // -1: the mode's default
  long delay = 5;
  double density = 1.0;
  std::uint64_t seed = 1;
  long streams = 1;
  long threads = 1;
  std::string save;    // checkpoint written at the end (and every save_every steps)
  long save_every = 0;
  std::string resume;  // checkpoint to continue from
};

constexpr const char* kUsage =
    "usage: copy_online [--short] [--steps N] [--delay D] [--density P] [--seed S] [--streams B] [--threads T]\n"
    "                   [--save PATH [--save-every N]] [--resume PATH]\n"
    "  N, D, B and T positive integers, P in (0, 1], S a non-negative integer\n";

Options parse(int argc, char** argv) {
  Options o;
  examples::ArgParser args("copy_online", kUsage);
  args.flag("--short", o.short_run)
      .integer("--steps", o.steps, 1L, 1000000000L)
      .integer("--delay", o.delay, 1L, 100000L)
      .number("--density", o.density, 0.0, 1.0)
      .integer("--seed", o.seed, std::uint64_t(0), std::numeric_limits<std::uint64_t>::max())
      .integer("--streams", o.streams, 1L, 4096L)
      .integer("--threads", o.threads, 1L, 256L)
      .path("--save", o.save)
      .integer("--save-every", o.save_every, 1L, 1000000000L)
      .path("--resume", o.resume)
      .parse(argc, argv);
  if (o.save_every > 0 && o.save.empty()) args.fail("--save-every needs --save PATH");
  return o;
}

using examples::seconds_since;

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  const auto start = examples::Clock::now();
  const long steps = opt.steps > 0 ? opt.steps : (opt.short_run ? 50000 : 200000);
  const long report = opt.short_run ? 5000 : 10000;
  const long D = opt.delay;

  sparse_rtrl::InitOptions<float> init;
  init.seed = opt.seed;
  init.threshold = kThreshold;
  Cell cell(kUnits, kSymbols, init, sparse_rtrl::CellOptions{}, Surrogate(/*gamma=*/1.0f, /*eps=*/0.2f));
  // A one-hot input reaches each gate through one weight; torch's +-1/sqrt(n) range alone
  // rarely lifts a unit over theta = 0.3, and units that never come near it get no gradient.
  cell.parameters().W *= kInputGain;
  // Pruning R removes recurrent drive: keep each unit's recurrent input variance.
  cell.parameters().R /= float(std::sqrt(opt.density));
  // Mask kind: independent (R's 3 gate blocks drawn on their own; W is dense; see MaskSharing
  // in parameter_mask.hpp and model.md, "Gate-shared masks").
  const auto mask = sparse_rtrl::ParameterMask::random(kUnits, kSymbols, /*density_W=*/1.0, opt.density,
                                                       opt.seed + 1, sparse_rtrl::MaskSharing::independent);
  Model model(cell, mask);
  const Index B = opt.streams;
  sparse_rtrl::RtrlOptions rtrl_options;
  rtrl_options.threads = int(opt.threads);
  Learner rtrl(model, B, rtrl_options);

  // A zero readout sends no gradient into the EGRU until it has found features of the output
  // that predict the target, rather than pushing units around with random weights first.
  sparse_rtrl::LinearReadout<float> readout(kSymbols, kUnits);
  readout.parameters().V.setZero();

  sparse_rtrl::Adam<float> adam_cell(sparse_rtrl::AdamOptions<float>{kLearningRate});
  sparse_rtrl::Adam<float> adam_readout(sparse_rtrl::AdamOptions<float>{kLearningRate});

  std::printf("copy_online: recall the symbol from %ld steps back (K = %d symbols, chance %.0f%%), "
              "%ld stream(s) of %ld steps over one model (%d thread(s)), Adam update every step\n"
              "EGRU n = %d, d = %d, exact sparse RTRL; recurrent weight density %.2f (%d of %d R "
              "kept); influence matrix %d x %d floats = %.0f KiB per stream, fixed for the whole stream\n",
              D, int(kSymbols), 100.0 / double(kSymbols), long(B), steps, rtrl.threads(), int(kUnits),
              int(kSymbols), opt.density, int(mask.kept_R()), int(3 * kUnits * kUnits), int(kUnits),
              int(rtrl.layout().columns()), double(rtrl.stream(0).influence_bytes()) / 1024.0);
  std::fflush(stdout);

  // Buffers reused at every step.
  Parameters grad(kUnits, kSymbols);
  Eigen::MatrixXf X = Eigen::MatrixXf::Zero(B, kSymbols), G(B, kUnits);
  Vector y(kUnits), logits(kSymbols), dL_dlogits(kSymbols), dL_dy(kUnits);
  // Stream b's symbols; the standard fixes mt19937_64's raw output.
  std::vector<std::mt19937_64> symbols;
  for (Index b = 0; b < B; ++b) symbols.emplace_back(opt.seed + 2 + 1000003 * std::uint64_t(b));
  // The last D + 1 symbols of each stream, a ring per stream.
  std::vector<int> recent(std::size_t(B * (D + 1)), 0);
  std::vector<char> hits(std::size_t(kWindow), 0);  // correctness of the last kWindow predictions
  long hit_count = 0, scored = 0, loss_steps = 0;
  double loss_sum = 0.0;
  sparse_rtrl::WorkCounters interval;  // work since the last progress line
  Eigen::VectorXi fired = Eigen::VectorXi::Zero(kUnits);
  double accuracy = 0.0;

  // Everything the loop below carries from one step to the next, for --save and --resume.
  std::int64_t next_step = 0;  // the first step still to do
  std::int64_t delay = D, stream_count = B;
  sparse_rtrl::io::Checkpoint checkpoint;
  checkpoint.add(model).add("rtrl", rtrl).add("adam_cell", adam_cell).add("adam_readout", adam_readout);
  checkpoint.add("readout", readout).add("step", next_step).add("recent", recent).add("hits", hits);
  checkpoint.add("hit_count", hit_count).add("scored", scored).add("loss_steps", loss_steps);
  checkpoint.add("loss_sum", loss_sum).add("interval", interval).add("fired", fired).add("accuracy", accuracy);
  for (Index b = 0; b < B; ++b) checkpoint.add("symbols/s" + std::to_string(b), symbols[std::size_t(b)]);
  if (!opt.resume.empty()) {
    try {
      // The run's shape first, for a clear message (a mismatch would also fail the full load).
      std::int64_t saved_delay = 0, saved_streams = 0;
      sparse_rtrl::io::Checkpoint shape;
      shape.add("delay", saved_delay).add("streams", saved_streams);
      shape.load(opt.resume);
      if (saved_delay != D || saved_streams != B)
        throw std::invalid_argument(opt.resume + " holds a run with --delay " + std::to_string(saved_delay) +
                                    " --streams " + std::to_string(saved_streams) + ", not --delay " +
                                    std::to_string(D) + " --streams " + std::to_string(B));
      checkpoint.load(opt.resume);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "copy_online: cannot resume: %s\n", e.what());
      return 1;
    }
    if (next_step >= steps) {
      std::fprintf(stderr, "copy_online: %s is at step %ld already; ask for more with --steps\n", opt.resume.c_str(),
                   long(next_step));
      return 1;
    }
    std::fprintf(stderr, "copy_online: resumed from %s at step %ld\n", opt.resume.c_str(), long(next_step));
  }
  checkpoint.add("delay", delay).add("streams", stream_count);
  auto save = [&](long done) {
    next_step = done;
    checkpoint.save(opt.save);
    std::fprintf(stderr, "copy_online: saved step %ld to %s\n", done, opt.save.c_str());
  };

  for (long t = long(next_step); t < steps; ++t) {
    X.setZero();
    for (Index b = 0; b < B; ++b) {
      const int symbol = int(symbols[std::size_t(b)]() >> 62);  // uniform in {0, 1, 2, 3}
      recent[std::size_t(b * (D + 1) + t % (D + 1))] = symbol;
      X(b, symbol) = 1.0f;
    }
    rtrl.step(X);  // every stream, in parallel

    if (t >= D) {
      for (Index b = 0; b < B; ++b) {
        const int target = recent[std::size_t(b * (D + 1) + (t - D) % (D + 1))];
        y = rtrl.outputs().row(b).transpose();
        readout.forward(y, logits);
        Index predicted = 0;
        logits.maxCoeff(&predicted);
        loss_sum += sparse_rtrl::softmax_cross_entropy(logits, target, dL_dlogits);
        ++loss_steps;
        readout.backward(y, dL_dlogits, dL_dy);  // the readout's gradient sums over streams
        G.row(b) = dL_dy.transpose();
        const char hit = predicted == target;
        char& slot = hits[std::size_t(scored % kWindow)];
        hit_count += hit - slot;
        slot = hit;
        ++scored;
      }
      rtrl.accumulate_gradient(G);

      // Fully online: this step's gradient (summed over the streams) updates the shared weights
      // before the next symbols arrive. M keeps carrying Jacobians of earlier weights (online
      // RTRL, Williams & Zipser 1989).
      rtrl.gradient(grad);
      adam_cell.step(model, grad);
      adam_readout.step(readout);
      rtrl.zero_gradient();
      readout.zero_gradient();
    }
    interval += rtrl.last_step_work();  // after the readout, so it counts that work too
    const Eigen::MatrixXf& events = rtrl.events();
    for (Index i = 0; i < kUnits; ++i) fired(i) += (events.col(i).array() != 0.0f).count() > 0;

    // A line every `report` steps, and one at the end of the run. Only the regular lines start a
    // new interval: a run stopped (and saved) between them carries on as if never stopped.
    const bool regular = (t + 1) % report == 0;
    if (regular || t + 1 == steps) {
      accuracy = scored > 0 ? double(hit_count) / double(std::min(scored, kWindow)) : 0.0;
      const double speedup = interval.ideal_speedup();
      std::printf("step %8ld  loss %.4f  acc %5.1f%%  event sparsity %5.1f%%  backward sparsity "
                  "%5.1f%%  RTRL multiply-adds %5.2fx fewer than dense (%4.1f%% saved)  units "
                  "firing %2d/%d  %5.1f s\n",
                  t + 1, loss_steps > 0 ? loss_sum / double(loss_steps) : 0.0, 100.0 * accuracy,
                  100.0 * interval.event_sparsity(), 100.0 * interval.backward_sparsity(), speedup,
                  speedup > 0 ? 100.0 * (1.0 - 1.0 / speedup) : 0.0,
                  int((fired.array() > 0).count()), int(kUnits), seconds_since(start));
      std::fflush(stdout);
      if (regular) {
        loss_sum = 0.0;
        loss_steps = 0;
        interval = sparse_rtrl::WorkCounters{};
        fired.setZero();
      }
    }
    if (opt.save_every > 0 && (t + 1) % opt.save_every == 0 && t + 1 < steps) save(t + 1);
  }
  if (!opt.save.empty()) save(steps);

  const sparse_rtrl::WorkCounters& total = rtrl.total_work();
  std::printf("final: accuracy %.1f%% over the last %ld steps (chance %.0f%%); over the whole "
              "stream %.1f%% event sparsity, %.1f%% backward sparsity, dense RTRL / done "
              "multiply-adds = %.2f; %.1f s\n",
              100.0 * accuracy, std::min(scored, kWindow), 100.0 / double(kSymbols),
              100.0 * total.event_sparsity(), 100.0 * total.backward_sparsity(),
              total.ideal_speedup(), seconds_since(start));
  return 0;
}
