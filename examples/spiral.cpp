/// @file spiral.cpp
/// @brief The spiral task (Subramoney 2023, arXiv 2303.05641): an EGRU learns, with exact RTRL,
///        whether a noisy 2-D spiral turns clockwise or anticlockwise.
///
/// Task: each sequence is T = 17 points (x, y) along one Archimedean spiral with random phase,
/// start radius, turning rate and growth, plus Gaussian noise; the label is its sense of
/// rotation. An EGRU with n = 16 units reads one point per step (d = 2); a linear readout of the
/// event output y_T at the last step gives two logits, trained with softmax cross-entropy.
/// Everything but the data comes from the library: Model, RtrlStreams, LinearReadout,
/// softmax_cross_entropy, Adam (with the model's mask, so pruned weights stay zero) and Inference.
///
/// What it shows: exact RTRL trains an event-based GRU online, with memory independent of T, and
/// skips the influence rows of silent units (backward sparsity) and the columns of pruned weights
/// (--density). Each epoch prints the event and backward sparsities and how many fewer
/// multiply-adds the influence updates took than dense RTRL would have.
///
/// Minibatches as parallel streams: the 16 sequences of a minibatch are 16 streams over ONE
/// shared Model (sparse_rtrl::RtrlStreams), each with its own state and influence matrix,
/// advanced together one step at a time on --threads threads. The loss sits on the last step;
/// the streams' gradients are summed in stream order (the same bits for any thread count) and
/// Adam updates the shared model once per minibatch. A last, partial minibatch feeds zeros to
/// the unused streams and gives them no loss, so they add nothing (and their work is not
/// counted).
///
/// Usage: spiral [--short] [--density D] [--epochs E] [--seed S] [--threads T]
///   --short      1000 instead of 2000 training sequences, 10 instead of 30 epochs
///   --density D  fraction of W and R entries kept, 0 < D <= 1 (random mask), default 1
///   --epochs E   number of passes over the training set
///   --seed S     seeds weights, mask and shuffling; the data set is fixed (default 1)
///   --threads T  threads of the streams' team, T >= 1 (default: the machine's hardware
///                threads); the results do not depend on T
/// Arguments it does not know, or cannot parse, end it with exit code 2.
///
/// Measured with the single-stream version (the sequences of a minibatch one after another
/// through one Rtrl, single-threaded), on the previous session's machine (full run, 30 epochs;
/// `spiral --density D --seed S`, library Adam and readout):
///   density 1.0 (0% weight sparsity), seeds 1-3: 100% test accuracy; 45-50% event sparsity,
///     42-47% backward sparsity, 1.7-1.8x fewer multiply-adds than dense RTRL; 19-22 s.
///   density 0.7 / 0.5 / 0.3, seed 1: 100% each; 2.3x / 3.1x / 5.1x fewer; 8-12 s.
///   density 0.1 (90% weight sparsity), seeds 1-3: 100%, 99.8%, 100%; 33-51% event sparsity,
///     25-44% backward sparsity, 19-26x fewer multiply-adds (mostly the pruned columns); 4-5 s.
///   --short: 100% after 10 epochs, 49% backward sparsity, 1.9x fewer, about 3 s.
///   Run time (Release build, 2 cores shared with other work): --short about 3 s; the full run
///   about 20 s at density 1.0 and 5 s at density 0.1.
///
/// Measured with this version (16 parallel streams), seed 1, Release (-O3 -march=native), on
/// this project's 2-core AMD EPYC (family 26, AVX-512) with the second core free; wall time,
/// the single-stream version (with the library it was written for) rebuilt and run on the same
/// machine beside it:
///                      test acc.   single-stream   --threads 1   --threads 2
///   --short            100%        1.1 s           1.2-1.3 s     1.0-1.1 s
///   full run           100%        6.6-6.9 s       7.4-7.5 s     6.0-6.2 s
///   --density 0.1      100%        2.4 s           2.3 s         2.2 s
/// (The single-stream version reached 100%, 100% and 99.7% on these rows.) Last epoch of the full
/// run: 48% event and 46% backward sparsity (single-stream version here: 50% / 48%), 1.8x fewer
/// multiply-adds; --short 51% / 49% / 1.9x (the same). The streams' gradients are summed per
/// stream and then over streams, in another order than the single-stream version's running sum,
/// so the runs part in rounding after a few epochs (same accuracy); they are bitwise the same
/// for any --threads. Two threads gain only 1.05-1.3x over one: a stream's step is a few
/// microseconds of work (n = 16), so the two fork-joins of every step and the serial parts
/// (readout, Adam, test-set evaluation) weigh. At density 1, one thread is 7-15% slower than the
/// single-stream version (user CPU for --short: 1.05-1.08 s for the old program, 1.06-1.10 s for
/// the same single-stream loop on the current library, 1.14-1.22 s for this version at
/// --threads 1): interleaving 16 streams step by step keeps 16 influence matrices and scratches
/// (about 1.5 MB) in flight where one sequence at a time kept one (62 KB) in L1/L2; perf put the
/// extra time in the propagation kernel and its tile copies (the row-major kernel of the time).
/// At density 0.1 it is not slower.
/// With other processes busy on both cores, --threads 2 took 4x as long as --threads 1 (5.3 s
/// against 1.4 s for --short): every step waits for the descheduled thread. On a busy machine
/// use --threads 1.
#include <sparse_rtrl/sparse_rtrl.hpp>

#include "common/args.hpp"
#include "common/random.hpp"
#include "common/timing.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <numeric>
#include <vector>

namespace {

using sparse_rtrl::Index;
using Surrogate = sparse_rtrl::TriangularSurrogate<float>;
using Learner = sparse_rtrl::RtrlStreams<float, Surrogate>;
using Model = Learner::Model;
using Cell = Learner::Cell;
using Parameters = Learner::Parameters;
using Vector = Eigen::VectorXf;

constexpr Index kSteps = 17;   // T, points per spiral
constexpr Index kInputs = 2;   // d, one (x, y) point per step
constexpr Index kUnits = 16;   // n
constexpr Index kClasses = 2;  // 0 = clockwise, 1 = anticlockwise
constexpr Index kBatch = 16;   // sequences per minibatch = parallel streams
constexpr float kPi = 3.14159265358979f;

using examples::Random;

struct Sequence {
  Eigen::Matrix<float, kInputs, kSteps> x;  // column t is the point at step t
  int label = 0;
};

/// Two balanced classes of noisy spirals. Only the sense of rotation separates them: phase,
/// radius, turning rate and growth are drawn from the same ranges for both, so a model must
/// integrate the motion over steps rather than read one point.
std::vector<Sequence> make_spirals(std::size_t count, std::uint64_t seed) {
  Random rng(seed);
  std::vector<Sequence> data(count);
  for (std::size_t k = 0; k < count; ++k) {
    Sequence& s = data[k];
    s.label = int(k % 2);
    const float sense = s.label == 0 ? -1.0f : 1.0f;
    const float phase = rng.uniform(0.0f, 2.0f * kPi);
    const float r0 = rng.uniform(0.1f, 0.5f);
    const float growth = rng.uniform(0.3f, 0.5f);               // radius gained over T steps
    const float turns = rng.uniform(0.5f, 1.0f);                // revolutions over T steps
    const float dphi = 2.0f * kPi * turns / float(kSteps - 1);
    for (Index t = 0; t < kSteps; ++t) {
      const float frac = float(t) / float(kSteps - 1);
      const float r = r0 + growth * frac;
      const float phi = phase + sense * dphi * float(t);
      s.x(0, t) = r * std::cos(phi) + 0.03f * rng.normal();
      s.x(1, t) = r * std::sin(phi) + 0.03f * rng.normal();
    }
  }
  return data;
}

using Readout = sparse_rtrl::LinearReadout<float>;

/// Test accuracy with the model alone (sparse_rtrl::Inference references it): evaluation needs
/// no influence matrix.
double accuracy(const Model& model, const Readout& readout, const std::vector<Sequence>& data) {
  sparse_rtrl::Inference<float, Surrogate> eval(model);
  std::size_t correct = 0;
  for (const Sequence& s : data) {
    eval.reset();
    for (Index t = 0; t < kSteps; ++t) eval.step(s.x.col(t));
    const Vector logits = readout.forward(eval.output());
    Index predicted = 0;
    logits.maxCoeff(&predicted);
    correct += predicted == s.label;
  }
  return double(correct) / double(data.size());
}

struct Options {
  bool short_run = false;
  double density = 1.0;
  long epochs = -1;  // -1: the mode's default
  std::uint64_t seed = 1;
  long threads = 0;  // 0: std::thread::hardware_concurrency(), at least 1
};

constexpr const char* kUsage =
    "usage: spiral [--short] [--density D] [--epochs E] [--seed S] [--threads T]\n"
    "  D in (0, 1], E and T positive integers, S a non-negative integer\n";

Options parse(int argc, char** argv) {
  Options o;
  examples::ArgParser args("spiral", kUsage);
  args.flag("--short", o.short_run)
      .number("--density", o.density, 0.0, 1.0)
      .integer("--epochs", o.epochs, 1L, 1000000L)
      .integer("--seed", o.seed, std::uint64_t(0), std::numeric_limits<std::uint64_t>::max())
      .integer("--threads", o.threads, 1L, 256L)
      .parse(argc, argv);
  if (o.threads == 0) o.threads = examples::hardware_threads();
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  const auto start = examples::Clock::now();

  // The data set is fixed (its own seed), so runs with different --seed see the same task.
  const std::size_t n_train = opt.short_run ? 1000 : 2000;
  const std::size_t n_test = 1000;
  const long epochs = opt.epochs > 0 ? opt.epochs : (opt.short_run ? 10 : 30);
  const std::size_t batch = std::size_t(kBatch);
  const std::vector<Sequence> train = make_spirals(n_train, 20230310);
  const std::vector<Sequence> test = make_spirals(n_test, 20230311);

  // Thresholds start at 0, so y = max(c, 0): continuous, and with a narrow surrogate
  // (half-width 0.05) s = dy/dc is 0 for almost every silent unit, whose influence row is then
  // skipped exactly. In our runs, thresholds started higher (0.1-0.3) made y jump by theta at
  // the threshold, and training often silenced every unit before the readout had learned
  // anything; a unit silent outside the surrogate window gets no gradient, so the network never
  // recovered, most often at low density. Thresholds are trained and free to rise.
  sparse_rtrl::InitOptions<float> init;
  init.seed = opt.seed;
  init.threshold = 0.0f;
  Cell cell(kUnits, kInputs, init, sparse_rtrl::CellOptions{}, Surrogate(1.0f, 0.05f));
  // Pruning removes drive: keep each unit's recurrent input variance (1/sqrt(density)), and
  // its summed input drive (1/density), since with d = 2 a random mask at density 0.1 leaves
  // only ~10 input weights for 48 gate rows, and those must push units across threshold.
  cell.parameters().W /= float(opt.density);
  cell.parameters().R /= float(std::sqrt(opt.density));
  // Mask kind: independent (each of the 3 gate blocks' entries drawn on its own; see
  // MaskSharing in parameter_mask.hpp and model.md, "Gate-shared masks").
  const auto mask = sparse_rtrl::ParameterMask::random(kUnits, kInputs, opt.density, opt.density,
                                                       opt.seed + 1, sparse_rtrl::MaskSharing::independent);
  Model model(cell, mask);  // zeroes the pruned weights; the streams and Adam share it
  sparse_rtrl::RtrlOptions rtrl_options;
  rtrl_options.threads = int(opt.threads);
  Learner rtrl(model, kBatch, rtrl_options);

  // A zero readout sends no gradient into the EGRU until it has picked up output features that
  // correlate with the label. A random one at first pushes units towards silence (uninformative
  // events only add noise to the logits), and in our runs it left fewer units active.
  Readout readout(sparse_rtrl::ReadoutParameters<float>(kClasses, kUnits));  // all zero
  Random rng(opt.seed + 2);

  std::printf("spiral: EGRU n = %d, d = %d, T = %d, exact RTRL; weight density %.2f "
              "(%d of %d W, %d of %d R kept); %zu train / %zu test sequences, batch %zu "
              "(parallel streams, %d thread(s))\n",
              int(kUnits), int(kInputs), int(kSteps), opt.density, int(mask.kept_W()),
              int(3 * kUnits * kInputs), int(mask.kept_R()), int(3 * kUnits * kUnits), n_train,
              n_test, batch, rtrl.threads());

  // The library's Adam, one per parameter set; the EGRU's step takes the model (and so its
  // mask), so pruned weights and their moments stay exactly zero.
  sparse_rtrl::Adam<float> adam_egru(sparse_rtrl::AdamOptions<float>{/*learning_rate=*/0.003f});
  sparse_rtrl::Adam<float> adam_readout(sparse_rtrl::AdamOptions<float>{/*learning_rate=*/0.003f});
  Parameters grad(kUnits, kInputs);
  Vector logits(kClasses), dlogits(kClasses), dL_dy(kUnits), y(kUnits);
  Eigen::MatrixXf X(kBatch, kInputs), G(kBatch, kUnits);  // row b: stream b's x_t, dL/dy_T
  sparse_rtrl::WorkCounters epoch_work;  // of the real sequences only
  std::vector<std::size_t> order(n_train);
  std::iota(order.begin(), order.end(), std::size_t(0));
  double test_accuracy = 0.0;

  for (long epoch = 1; epoch <= epochs; ++epoch) {
    for (std::size_t i = n_train - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);
    epoch_work = sparse_rtrl::WorkCounters{};
    double loss_sum = 0.0;
    for (std::size_t first = 0; first < n_train; first += batch) {
      const Index count = Index(std::min(n_train, first + batch) - first);  // real sequences
      // Stream b runs sequence first + b; streams past count (a last, partial minibatch) read
      // zeros and take no loss.
      rtrl.reset();
      rtrl.reset_work();
      X.setZero();
      for (Index t = 0; t < kSteps; ++t) {
        for (Index b = 0; b < count; ++b)
          X.row(b) = train[order[first + std::size_t(b)]].x.col(t).transpose();
        rtrl.step(X);  // all streams, in parallel
      }
      // The loss sits on the last step only, so RTRL needs just this one readout of each M_T;
      // the chain rule through the linear readout gives dL/dy_T = Wout^T (softmax - onehot).
      // The readout's part is serial, in stream order (it accumulates its own gradient).
      G.setZero();
      for (Index b = 0; b < count; ++b) {
        const int label = train[order[first + std::size_t(b)]].label;
        y = rtrl.outputs().row(b).transpose();
        readout.forward(y, logits);
        loss_sum += sparse_rtrl::softmax_cross_entropy(logits, label, dlogits);
        readout.backward(y, dlogits, dL_dy);  // accumulates dV, db; dL_dy = V^T dlogits
        G.row(b) = dL_dy.transpose();
      }
      rtrl.accumulate_gradient(G);  // all streams, in parallel; zero rows are skipped
      for (Index b = 0; b < count; ++b) epoch_work += rtrl.stream(b).total_work();
      // Mean over the mini-batch: both gradients are sums over its sequences.
      const float scale = 1.0f / float(count);
      rtrl.gradient(grad);  // summed over the streams in stream order
      grad.W *= scale;
      grad.R *= scale;
      grad.bW *= scale;
      grad.bR *= scale;
      grad.theta *= scale;
      readout.gradient().V *= scale;
      readout.gradient().b *= scale;
      adam_egru.step(model, grad);
      adam_readout.step(readout);
      rtrl.zero_gradient();
      readout.zero_gradient();
    }

    test_accuracy = accuracy(model, readout, test);
    const sparse_rtrl::WorkCounters& w = epoch_work;
    const double speedup = w.ideal_speedup();
    std::printf("epoch %3ld  loss %.4f  test acc %5.1f%%  event sparsity %5.1f%%  "
                "backward sparsity %5.1f%%  RTRL multiply-adds %5.1fx fewer than dense "
                "(%.1f%% saved)\n",
                epoch, loss_sum / double(n_train), 100.0 * test_accuracy,
                100.0 * w.event_sparsity(), 100.0 * w.backward_sparsity(), speedup,
                speedup > 0 ? 100.0 * (1.0 - 1.0 / speedup) : 0.0);
    std::fflush(stdout);
  }

  const double seconds = examples::seconds_since(start);
  std::printf("final test accuracy %.1f%% (%zu sequences), %.1f s\n", 100.0 * test_accuracy,
              n_test, seconds);
  return 0;
}
