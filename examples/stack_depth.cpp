/// @file stack_depth.cpp
/// @brief One EGRU layer or two, at equal state size: row-wise Fashion-MNIST learnt by exact
///        sparse RTRL through depth, a one-layer EGRU of 64 units beside a stack of 32 + 32
///        (and one layer of 32, the stack's width), with every layer's event and backward
///        sparsity. Measured (below): at equal state size one layer of 64 beat the stack on
///        every seed; at equal width the second layer helped on 2 of 3 seeds (+1.1 points on
///        average, less than the spread between seeds).
///
/// Task (as fashion_mnist.cpp): each 28 x 28 image is read one row per step (T = 28 steps of
/// d = 28 pixels in [0, 1]); a linear readout of the top layer's events y_T at the last step
/// gives ten logits, trained with softmax cross-entropy. Data: Debian's dataset-fashion-mnist
/// (`sudo apt-get install dataset-fashion-mnist`, or --data DIR); without it the program says
/// how to install it and exits with code 77.
///
/// The models, and why the comparison is fair: "64" and "32+32" have the same state size (64
/// units, 64 possible events per step); "32" and "32+32" the same width per layer and the same
/// readout (10 x 32). The stack's layer 1 reads the events of layer 0 at the same step (model.md,
/// "Stacked layers"). Every layer of every model follows one recipe, and every model gets the
/// same training: the same images in the same order, minibatches of 8, Adam (learning rate 1e-2
/// decayed by a cosine to 5e-4), a zero-initialised readout on the top layer, 60000 images x 1
/// epoch. The recipe, per layer (fashion_mnist.cpp's, with gate-shared masks in W too):
///   * masks: a random 25% of W and of R kept, MaskSharing::gate_shared in both (connection
///     j -> i kept in all three gates or in none, so the coupling A_t and the cross-layer block
///     B_t are as sparse as one gate block); kept weights scaled up (W by 1/0.25, R by
///     1/sqrt(0.25)) to keep the drive.
///   * events: thresholds start at 0 (trained); an ActivityRegularizer (target rate 0.15,
///     strength 1) on every layer's events at every step, ramped in over the first 30% of
///     training; surrogate TriangularSurrogate(gamma = 1, eps = 0.2).
/// Learning is exact RTRL through depth: the loss on the top layer reaches layer 0's parameters
/// through the cross-layer blocks B^1_t D^0_t, on W^1's mask and on the active units of layer
/// 0 only; each layer's regulariser loss is added where it sits (Rtrl::accumulate_gradient_at).
/// At start-up every model checks on one image that its RTRL gradient (every layer) equals BPTT's.
/// --gru runs the same comparison with events off in every layer (o = 1: torch.nn.GRU, still
/// trained by RTRL, no regulariser): a control for what the events change.
///
/// Minibatches as parallel streams: the 8 sequences of a minibatch are 8 Rtrl learners over one
/// Model, each running its whole sequence on one thread of a parallel::ThreadPool (--threads).
/// (RtrlStreams, the library's streams class, takes stacks but adds losses on the top layer
/// only, and the regulariser needs every layer.) The readout's gradient and the learners'
/// gradients are summed serially in stream order, so every number printed is the same for any
/// thread count. One Adam per layer (Adam::step(model, grad) takes one-layer models only).
///
/// Each progress line gives the training loss and accuracy since the previous line, each layer's
/// activity (o = 1) and influence rows skipped (s = 0), and how many fewer multiply-adds RTRL did
/// than dense RTRL (WorkCounters, cross-layer blocks included); each model ends with test
/// accuracy and each layer's event and backward sparsity on the test set (Inference over the
/// whole stack: no influence matrix).
///
/// Usage: stack_depth [--short] [--train N] [--epochs E] [--test N] [--seed S] [--threads T]
///                    [--model SIZES]... [--gru] [--data DIR]
///   --short        10000 training images instead of 60000
///   --train N      the first N of the 60000 training images
///   --epochs E     passes over them (default 1)
///   --test N       evaluate on the first N of the 10000 test images (default all)
///   --seed S       seeds weights, masks and shuffling (default 1)
///   --threads T    threads, T >= 1 (default 1; on a busy machine more threads can be slower);
///                  the results do not depend on T
///   --model SIZES  units per layer, bottom first (64, or 32,32); repeat for several models,
///                  trained one after another (default: --model 64 --model 32 --model 32,32)
///   --gru          events off in every layer (GRU), no activity regulariser
///   --data DIR     directory of the IDX files (default /usr/share/datasets/fashion-mnist)
/// Arguments it does not know, or cannot parse, end it with exit code 2; a missing data set
/// with 77 (ctest's skip code); an unreadable, corrupt or truncated file with 1.
///
/// Measured (Release, -O3 -march=native, GCC 12.2; `lscpu`: AMD EPYC, 2 cores, shared with
/// other jobs, load average 3-4.5; --threads 1; wall clock). Default run, 60000 images x 1
/// epoch, test set of 10000; sparsities on the test set (over training in brackets):
///   seed   model   test acc.   event sparsity            backward sparsity         MACs fewer   train time
///   1      64      79.53%      83.0% (80.2%)             79.1% (75.8%)             49.2x        187 s
///          32      76.11%      78.8% (75.3%)             75.1% (71.7%)             38.5x         33 s
///          32+32   73.91%      L0 83.1%, L1 83.2%        L0 79.5%, L1 81.7%        49.4x         96 s
///   2      64      80.25%      83.5% (81.1%)             80.4% (77.3%)             53.7x        152 s
///          32      72.92%      77.1% (73.7%)             74.6% (71.1%)             35.9x         22 s
///          32+32   77.04%      L0 83.6%, L1 82.1%        L0 80.9%, L1 79.7%        45.6x         67 s
///   3      64      80.76%      83.2% (80.6%)             79.7% (76.8%)             50.4x        167 s
///          32      75.99%      82.1% (79.1%)             79.1% (76.0%)             39.5x         22 s
///          32+32   77.40%      L0 84.2%, L1 82.2%        L0 79.6%, L1 79.4%        45.6x         68 s
/// Whole runs 319 s, 244 s, 260 s. Mean test accuracy: 64 units 80.18%, 32 units 75.01%,
/// 32+32 76.12%. The stack's influence matrix is half the 64-unit layer's (162816 vs 311296
/// floats per stream) and its step took 0.4-0.5x as long; the cross-layer blocks were 15-18% of
/// its propagation multiply-adds. --short (10000 images): 73.49% / 69.62% / 64.47% (the stack
/// learns more slowly at first), 43 s with --threads 1 and 44 s with --threads 2 on the busy
/// machine (the second core was taken). --short --gru (events off, the control): 79.97% /
/// 77.79% / 79.62%: with dense communication between the layers the second layer gave +1.8
/// points at equal width from the start, where the event-based stack was 5.2 points behind.
/// The RTRL gradient equalled BPTT's on one image to at most 7.5e-8 (entries up to 0.3).
#include <sparse_rtrl/sparse_rtrl.hpp>

#include "common/args.hpp"
#include "common/fashion_mnist_data.hpp"
#include "common/random.hpp"
#include "common/timing.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace data = fashion_mnist_data;
using sparse_rtrl::Index;
using Surrogate = sparse_rtrl::TriangularSurrogate<float>;
using Model = sparse_rtrl::Model<float, Surrogate>;
using Cell = Model::Cell;
using Parameters = Model::Parameters;
using Learner = sparse_rtrl::Rtrl<float, Surrogate>;
using Reference = sparse_rtrl::Bptt<float, Surrogate>;
using Readout = sparse_rtrl::LinearReadout<float>;
using Mask = sparse_rtrl::ParameterMask;
using Vector = Eigen::VectorXf;
using Matrix = Eigen::MatrixXf;
using Image = data::Image;
using examples::Clock;
using examples::seconds_since;

constexpr Index kSide = data::kSide;  // T = 28 steps (image rows) of d = 28 inputs (pixels)
constexpr Index kClasses = data::kClasses;

// Training choices, the same for every model (see the header comment).
constexpr std::size_t kBatch = 8;  // sequences per minibatch = parallel streams
constexpr float kLearningRate = 1e-2f, kFinalLearningRate = 5e-4f;
constexpr double kDensity = 0.25;  // of W and of R, every layer
constexpr float kGamma = 1.0f, kEps = 0.2f;
constexpr float kTargetRate = 0.15f, kRegStrength = 1.0f;
constexpr double kWarmup = 0.3;  // fraction of training over which the regulariser ramps in

using Sizes = std::vector<Index>;  // units per layer, bottom first

std::string sizes_string(const Sizes& sizes) {
  std::string s;
  for (std::size_t k = 0; k < sizes.size(); ++k) s += (k ? "+" : "") + std::to_string(sizes[k]);
  return s;
}

using examples::Random;

struct Options {
  bool short_run = false;
  long train = -1, epochs = -1, test = -1;
  std::uint64_t seed = 1;
  std::string data = data::kDefaultDir;
  long threads = 1;
  bool gru = false;           // events off in every layer (torch.nn.GRU), no regulariser
  std::vector<Sizes> models;  // empty: the default models
};

constexpr const char* kUsage =
    "usage: stack_depth [--short] [--train N] [--epochs E] [--test N] [--seed S] [--threads T]\n"
    "                   [--model SIZES]... [--gru] [--data DIR]\n"
    "  N, E, T positive integers (N <= 60000, --test N <= 10000), S a non-negative integer;\n"
    "  SIZES units per layer, bottom first, e.g. 64 or 32,32 (each in [1, 256], at most 4 layers);\n"
    "  --model may be repeated (default: --model 64 --model 32 --model 32,32)\n"
    "  exit codes: 2 bad arguments, 77 data set not installed, 1 data set unreadable\n";

/// "64" or "32,32": units per layer, bottom first.
Sizes parse_sizes(const examples::ArgParser& args, const std::string& arg, const std::string& text) {
  Sizes sizes;
  std::size_t begin = 0;
  while (true) {
    const std::size_t comma = text.find(',', begin);
    const std::string part = text.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin);
    sizes.push_back(args.integer_value<Index>(arg + " (units of a layer)", part, 1, 256));
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  if (sizes.size() > 4) args.fail(arg + " takes at most 4 layers, received '" + text + "'");
  return sizes;
}

Options parse(int argc, char** argv) {
  Options o;
  examples::ArgParser args("stack_depth", kUsage);
  args.flag("--short", o.short_run)
      .flag("--gru", o.gru)
      .integer("--train", o.train, 1L, 60000L)
      .integer("--epochs", o.epochs, 1L, 1000L)
      .integer("--test", o.test, 1L, 10000L)
      .integer("--seed", o.seed, std::uint64_t(0), std::uint64_t(2147483647))
      .integer("--threads", o.threads, 1L, 256L)
      .option("--model", [&](const std::string& text) { o.models.push_back(parse_sizes(args, "--model", text)); })
      .path("--data", o.data)
      .parse(argc, argv);
  if (o.models.empty()) o.models = {Sizes{64}, Sizes{32}, Sizes{32, 32}};
  return o;
}

/// A stack of EGRU layers of the given sizes: layer k reads the events y^{k-1}_t of the layer
/// below (layer 0 reads the pixels). Every layer: a random 25% of W and of R kept, gate-shared
/// (MaskSharing::gate_shared: connection j -> i exists in all three gates or in none, so the
/// coupling A_t and the cross-layer block B_t are as sparse as one gate block); kept weights
/// scaled up (W by 1/0.25, R by 1/sqrt(0.25)) to keep the drive; thresholds start at 0.
Model make_model(const Sizes& sizes, std::uint64_t seed, bool gru) {
  std::vector<Cell> cells;
  std::vector<Mask> masks;
  Index inputs = kSide;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    sparse_rtrl::InitOptions<float> init;
    init.seed = seed + 100 * k;
    init.threshold = 0.0f;
    Cell cell(sizes[k], inputs, init, sparse_rtrl::CellOptions{/*events=*/!gru}, Surrogate(kGamma, kEps));
    Mask mask = Mask::random(sizes[k], inputs, kDensity, kDensity, seed + 100 * k + 1,
                             sparse_rtrl::MaskSharing::gate_shared);
    cell.parameters().W /= float(mask.density_W());
    cell.parameters().R /= float(std::sqrt(mask.density_R()));
    cells.push_back(std::move(cell));
    masks.push_back(std::move(mask));
    inputs = sizes[k];
  }
  return Model(std::move(cells), std::move(masks));
}

void scale(Parameters& p, float f) {
  p.W *= f;
  p.R *= f;
  p.bW *= f;
  p.bR *= f;
  p.theta *= f;
}

void scale(sparse_rtrl::ReadoutParameters<float>& p, float f) {
  p.V *= f;
  p.b *= f;
}

/// Largest |RTRL - BPTT| over every layer's gradient of one image's last-step loss on the top
/// layer (so the bottom layer's gradient reaches it only through depth), and the largest
/// |gradient| entry for scale. A random readout makes dL/dy_T nonzero; both learners reference
/// a copy of @p trained.
std::pair<double, double> exactness_check(const Model& trained, const Image& x, Index label, std::uint64_t seed) {
  Model model = trained;
  const Index L = model.layers(), n = model.units();
  Readout probe(kClasses, n, sparse_rtrl::ReadoutInitOptions{seed});
  Learner rtrl(model);
  for (Index t = 0; t < kSide; ++t) rtrl.step(x.row(t));
  const Vector y = rtrl.output();
  const auto loss = sparse_rtrl::softmax_cross_entropy(probe.forward(y), label);
  const Vector dL_dy = probe.backward(y, loss.gradient);
  rtrl.accumulate_gradient(dL_dy);
  Reference bptt(model);
  bptt.forward(x);
  std::vector<Matrix> G(static_cast<std::size_t>(L));  // empty: no loss on that layer
  G.back() = Matrix::Zero(kSide, n);
  G.back().row(kSide - 1) = dL_dy.transpose();
  const std::vector<Parameters> b = bptt.backward(G);
  double diff = 0.0, size = 0.0;
  const auto compare = [&](const auto& u, const auto& v) {
    diff = std::max(diff, double((u - v).cwiseAbs().maxCoeff()));
    size = std::max(size, double(u.cwiseAbs().maxCoeff()));
  };
  for (Index k = 0; k < L; ++k) {
    const Parameters a = rtrl.gradient(k);
    const Parameters& r = b[std::size_t(k)];
    compare(a.W, r.W);
    compare(a.R, r.R);
    compare(a.bW, r.bW);
    compare(a.bR, r.bR);
    compare(a.theta, r.theta);
  }
  return {diff, size};
}

struct LayerEvaluation {
  double event_sparsity = 0, backward_sparsity = 0;
};

struct Evaluation {
  double accuracy = 0;
  std::vector<LayerEvaluation> layers;
};

/// Accuracy of the prediction from the top layer's y_T over the first @p count test images,
/// with each layer's fractions of (unit, step) pairs with o = 0 and with s = 0. Inference runs
/// the whole stack (layer k on layer k - 1's output), with no influence matrix. The images
/// are split over the pool's threads in contiguous blocks; the counts are integers, so the
/// result does not depend on the thread count.
Evaluation evaluate(const Model& model, const Readout& readout, const data::Dataset& test, std::size_t count,
                    sparse_rtrl::parallel::ThreadPool& pool) {
  const Index L = model.layers();
  const int tasks = int(std::min<std::size_t>(std::size_t(pool.threads()), count));
  struct Counts {
    std::size_t correct = 0;
    std::vector<std::size_t> silent, skippable;
  };
  std::vector<Counts> counts(static_cast<std::size_t>(tasks));
  pool.run(tasks, [&](int task) {
    Counts& c = counts[std::size_t(task)];
    c.silent.assign(std::size_t(L), 0);
    c.skippable.assign(std::size_t(L), 0);
    sparse_rtrl::Inference<float, Surrogate> eval(model);  // references the model: no copy
    Vector logits(kClasses);
    const std::size_t first = count * std::size_t(task) / std::size_t(tasks);
    const std::size_t last = count * std::size_t(task + 1) / std::size_t(tasks);
    for (std::size_t i = first; i < last; ++i) {
      const Image x = test.image(i);
      eval.reset();
      for (Index t = 0; t < kSide; ++t) {
        eval.step(x.row(t));
        for (Index k = 0; k < L; ++k) {
          c.silent[std::size_t(k)] += std::size_t((eval.events(k).array() == 0.0f).count());
          c.skippable[std::size_t(k)] += std::size_t((eval.output_derivative(k).array() == 0.0f).count());
        }
      }
      readout.forward(eval.output(), logits);
      Index predicted = 0;
      logits.maxCoeff(&predicted);
      c.correct += predicted == Index(test.labels[i]);
    }
  });
  Evaluation e;
  std::size_t correct = 0;
  for (const Counts& c : counts) correct += c.correct;
  e.accuracy = double(correct) / double(count);
  for (Index k = 0; k < L; ++k) {
    std::size_t silent = 0, skippable = 0;
    for (const Counts& c : counts) {
      silent += c.silent[std::size_t(k)];
      skippable += c.skippable[std::size_t(k)];
    }
    const double pairs = double(count) * double(kSide) * double(model.units(k));
    e.layers.push_back({double(silent) / pairs, double(skippable) / pairs});
  }
  return e;
}

/// What one model's run gave.
struct Result {
  Sizes sizes;
  Index kept_parameters = 0, influence_floats = 0;
  Evaluation test;
  std::vector<sparse_rtrl::WorkCounters> work;  // per layer, over training
  sparse_rtrl::WorkCounters total;             // the whole stack, over training
  double train_seconds = 0, eval_seconds = 0;
  std::size_t sequences = 0;
};

/// Per-stream buffers of the training loop (each stream's sequence runs on one thread).
struct StreamScratch {
  std::vector<Vector> dL_do, zero;  // per layer
  Vector logits, dlogits, dL_dy, y;
  double loss = 0;
  bool correct = false;
};

/// Trains a model of the given layer sizes on the first @p n_train training images for
/// @p epochs, by exact sparse RTRL through the whole stack, and evaluates it on the first
/// @p n_test test images.
Result train_model(const Sizes& sizes, const Options& opt, const data::Dataset& train, std::size_t n_train,
                   long epochs, const data::Dataset& test, std::size_t n_test) {
  const auto start = Clock::now();
  Model model = make_model(sizes, opt.seed, opt.gru);
  const Index L = model.layers(), n_top = model.units();
  const std::string name = sizes_string(sizes);
  const std::size_t total = n_train * std::size_t(epochs);
  const std::size_t log_every = std::max(kBatch, std::min<std::size_t>(10000, total / 10) / kBatch * kBatch);

  // The minibatch's kBatch sequences are kBatch RTRL learners over the one model, each running
  // its whole sequence on one thread of the pool (contiguous blocks of streams per thread).
  std::vector<Learner> learners;
  learners.reserve(kBatch);
  for (std::size_t b = 0; b < kBatch; ++b) learners.emplace_back(model);
  sparse_rtrl::parallel::ThreadPool pool(int(opt.threads));
  // A zero readout sends no gradient into the stack until it has found output features that
  // correlate with the label (as in spiral.cpp and fashion_mnist.cpp).
  Readout readout(kClasses, n_top);
  readout.parameters().set_zero();
  const sparse_rtrl::ActivityRegularizer<float> regularizer(kTargetRate, kRegStrength);

  sparse_rtrl::AdamOptions<float> adam_options;
  adam_options.learning_rate = kLearningRate;
  std::vector<sparse_rtrl::Adam<float>> adam(static_cast<std::size_t>(L), sparse_rtrl::Adam<float>(adam_options));
  sparse_rtrl::Adam<float> adam_readout(adam_options);

  Result result;
  result.sizes = sizes;
  result.work.resize(std::size_t(L));
  for (Index k = 0; k < L; ++k) {
    result.kept_parameters += learners.front().layout(k).columns();
    result.influence_floats += model.units(k) * (learners.front().column_offset(k) + learners.front().layout(k).columns());
  }
  std::printf("\n== %s: %d layer(s) of %s units, %d kept parameters (%d W and %d R weights kept, "
              "gate-shared masks), influence matrix %d floats (%.0f KiB) per stream\n",
              name.c_str(), int(L), name.c_str(), int(result.kept_parameters),
              [&] { int w = 0; for (Index k = 0; k < L; ++k) w += int(model.mask(k).kept_W()); return w; }(),
              [&] { int r = 0; for (Index k = 0; k < L; ++k) r += int(model.mask(k).kept_R()); return r; }(),
              int(result.influence_floats), double(result.influence_floats) * 4.0 / 1024.0);
  const auto check = exactness_check(model, train.image(0), Index(train.labels[0]), opt.seed + 9);
  std::printf("exactness: RTRL and BPTT gradients (every layer) of one image differ by at most %.1e "
              "(largest entry %.1e)\n",
              check.first, check.second);
  std::fflush(stdout);

  std::vector<StreamScratch> scratch(kBatch);
  for (auto& s : scratch) {
    for (Index k = 0; k < L; ++k) {
      s.dL_do.push_back(Vector::Zero(model.units(k)));
      s.zero.push_back(Vector::Zero(model.units(k)));
    }
    s.logits.setZero(kClasses);
    s.dlogits.setZero(kClasses);
    s.dL_dy.setZero(n_top);
    s.y.setZero(n_top);
  }
  std::vector<Parameters> grad, part;
  for (Index k = 0; k < L; ++k) {
    grad.emplace_back(model.units(k), model.cell(k).inputs());
    part.emplace_back(model.units(k), model.cell(k).inputs());
  }
  Vector dL_dy(n_top);
  std::vector<Image> images(kBatch);
  std::vector<Index> labels(kBatch);
  std::vector<std::size_t> order(n_train);
  std::iota(order.begin(), order.end(), std::size_t(0));
  Random rng(opt.seed + 3);  // the same data order for every model

  std::vector<sparse_rtrl::WorkCounters> interval(static_cast<std::size_t>(L));
  sparse_rtrl::WorkCounters interval_total;
  double loss_sum = 0, train_seconds = 0;
  std::size_t correct = 0, window = 0, seen = 0;
  for (long epoch = 1; epoch <= epochs; ++epoch) {
    for (std::size_t i = n_train - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);
    for (std::size_t first = 0; first < n_train; first += kBatch) {
      const auto t0 = Clock::now();
      const Index count = Index(std::min(n_train, first + kBatch) - first);  // real sequences
      // The regulariser ramps in linearly; the learning rate follows a cosine.
      const double progress = double(seen) / double(total);
      const float reg_factor = float(std::min(1.0, progress / kWarmup));
      const float cosine = 1.0f + float(std::cos(3.141592653589793 * progress));  // 2 -> 0
      const float lr = kFinalLearningRate + (kLearningRate - kFinalLearningRate) * 0.5f * cosine;
      for (auto& a : adam) a.set_learning_rate(lr);
      adam_readout.set_learning_rate(lr);
      for (Index b = 0; b < count; ++b) {
        images[std::size_t(b)] = train.image(order[first + std::size_t(b)]);
        labels[std::size_t(b)] = Index(train.labels[order[first + std::size_t(b)]]);
      }

      // Each stream's whole sequence on one thread: the regulariser's dL/do^k_t on every layer
      // at every step, the cross-entropy of the readout of the top layer's y_T at the last.
      // The readout is only read here (logits and dL/dy = V^T dL/dlogits); its gradient is
      // accumulated below, serially in stream order.
      const int tasks = int(std::min<Index>(Index(pool.threads()), count));
      pool.run(tasks, [&](int task) {
        for (Index b = count * task / tasks; b < count * (task + 1) / tasks; ++b) {
          Learner& rtrl = learners[std::size_t(b)];
          StreamScratch& s = scratch[std::size_t(b)];
          const Image& x = images[std::size_t(b)];
          rtrl.reset();
          for (Index t = 0; t < kSide; ++t) {
            rtrl.step(x.row(t));
            const bool last = t + 1 == kSide;
            if (last) {
              s.y = rtrl.output();
              readout.forward(s.y, s.logits);
              s.loss = sparse_rtrl::softmax_cross_entropy(s.logits, labels[std::size_t(b)], s.dlogits);
              Index predicted = 0;
              s.logits.maxCoeff(&predicted);
              s.correct = predicted == labels[std::size_t(b)];
              s.dL_dy.noalias() = readout.parameters().V.transpose() * s.dlogits;
            }
            if (opt.gru) {  // no events, no regulariser: only the last step's loss
              if (last) rtrl.accumulate_gradient(s.dL_dy);
              continue;
            }
            for (Index k = 0; k < L; ++k) {
              regularizer.gradient(rtrl.events(k), s.dL_do[std::size_t(k)]);
              s.dL_do[std::size_t(k)] *= reg_factor;
              rtrl.accumulate_gradient_at(k, last && k + 1 == L ? s.dL_dy : s.zero[std::size_t(k)],
                                          s.dL_do[std::size_t(k)]);
            }
          }
        }
      });

      // Serially, in stream order (the same bits for any thread count): the readout's gradient,
      // the statistics, and the stack's gradient summed over the streams, layer by layer.
      for (Index b = 0; b < count; ++b) {
        StreamScratch& s = scratch[std::size_t(b)];
        readout.backward(s.y, s.dlogits, dL_dy);
        loss_sum += s.loss;
        correct += s.correct;
        Learner& rtrl = learners[std::size_t(b)];
        for (Index k = 0; k < L; ++k) interval[std::size_t(k)] += rtrl.total_work(k);
        interval_total += rtrl.total_work();
        rtrl.reset_work();
      }
      const float mean = 1.0f / float(count);
      for (Index k = 0; k < L; ++k) {
        Parameters& g = grad[std::size_t(k)];
        g.set_zero();
        for (Index b = 0; b < count; ++b) {
          learners[std::size_t(b)].gradient(k, part[std::size_t(k)]);
          g += part[std::size_t(k)];
        }
        scale(g, mean);
        // One optimizer per layer (Adam::step(model, grad) takes one-layer models only).
        adam[std::size_t(k)].step(model.parameters(k), g, model.mask(k));
      }
      scale(readout.gradient(), mean);
      adam_readout.step(readout);
      readout.zero_gradient();
      for (auto& rtrl : learners) rtrl.zero_gradient();
      train_seconds += seconds_since(t0);
      window += std::size_t(count);
      seen += std::size_t(count);

      if (seen % log_every < kBatch || first + kBatch >= n_train) {
        std::printf("%s epoch %ld %6zu/%zu | loss %.3f acc %5.1f%% |", name.c_str(), epoch, seen, total,
                    loss_sum / double(window), 100.0 * double(correct) / double(window));
        for (Index k = 0; k < L; ++k) {
          const auto& w = interval[std::size_t(k)];
          std::printf(" L%d active %4.1f%% rows skipped %4.1f%% |", int(k), 100.0 * (1.0 - w.event_sparsity()),
                      100.0 * w.backward_sparsity());
          result.work[std::size_t(k)] += w;
          interval[std::size_t(k)] = sparse_rtrl::WorkCounters{};
        }
        std::printf(" MACs %4.1fx fewer than dense RTRL | %4.0f s\n", interval_total.ideal_speedup(),
                    seconds_since(start));
        std::fflush(stdout);
        result.total += interval_total;
        interval_total = sparse_rtrl::WorkCounters{};
        loss_sum = 0.0;
        correct = window = 0;
      }
    }
    const auto t0 = Clock::now();
    result.test = evaluate(model, readout, test, n_test, pool);
    result.eval_seconds += seconds_since(t0);
    std::printf("%s epoch %ld test accuracy %.2f%% |", name.c_str(), epoch, 100.0 * result.test.accuracy);
    for (Index k = 0; k < L; ++k)
      std::printf(" L%d event sparsity %.1f%% backward sparsity %.1f%% |", int(k),
                  100.0 * result.test.layers[std::size_t(k)].event_sparsity,
                  100.0 * result.test.layers[std::size_t(k)].backward_sparsity);
    std::printf(" %.0f s\n", seconds_since(start));
    std::fflush(stdout);
  }
  result.train_seconds = train_seconds;
  result.sequences = seen;
  return result;
}

int run(const Options& opt) {
  const auto start = Clock::now();
  const data::Dataset train = data::load(opt.data, "train");
  const data::Dataset test = data::load(opt.data, "t10k");
  const long wanted = opt.train > 0 ? opt.train : (opt.short_run ? 10000 : 60000);
  const std::size_t n_train = std::min(train.size(), std::size_t(wanted));
  const std::size_t n_test = std::min(test.size(), std::size_t(opt.test > 0 ? opt.test : 10000));
  const long epochs = opt.epochs > 0 ? opt.epochs : 1;
  std::printf("stack_depth: row-wise Fashion-MNIST, %zu train / %zu test images (loaded in %.1f s), %ld "
              "epoch(s), minibatches of %zu as parallel streams on %d thread(s), seed %llu\n"
              "every layer of every model: %s, exact sparse RTRL through all layers, 25%% of W and R kept "
              "(gate-shared masks), surrogate gamma %.1f eps %.2f%s; Adam lr %.0e -> %.0e\n",
              n_train, n_test, seconds_since(start), epochs, kBatch, int(opt.threads),
              static_cast<unsigned long long>(opt.seed), opt.gru ? "GRU (events off, no regulariser)" : "EGRU",
              double(kGamma), double(kEps), opt.gru ? "" : (", activity target " + std::to_string(kTargetRate).substr(0, 4) + " per layer").c_str(), double(kLearningRate),
              double(kFinalLearningRate));
  std::fflush(stdout);

  std::vector<Result> results;
  for (const Sizes& sizes : opt.models)
    results.push_back(train_model(sizes, opt, train, n_train, epochs, test, n_test));

  std::printf("\nresult (%zu sequences each, test set of %zu images; sparsities on the test set, "
              "over training in brackets):\n",
              results.front().sequences, n_test);
  for (const Result& r : results) {
    std::printf("  %-8s test acc. %.2f%% |", sizes_string(r.sizes).c_str(), 100.0 * r.test.accuracy);
    for (std::size_t k = 0; k < r.sizes.size(); ++k)
      std::printf(" L%zu event %.1f%% (%.1f%%) backward %.1f%% (%.1f%%) |", k,
                  100.0 * r.test.layers[k].event_sparsity, 100.0 * r.work[k].event_sparsity(),
                  100.0 * r.test.layers[k].backward_sparsity, 100.0 * r.work[k].backward_sparsity());
    const double cross = r.total.propagation_fma ? double(r.total.cross_layer_fma) / double(r.total.propagation_fma) : 0.0;
    std::printf(" MACs %.1fx fewer than dense RTRL (cross-layer %.0f%% of propagation) | %d params, M %d floats | "
                "train %.0f s (%.2f ms/seq), test %.1f s\n",
                r.total.ideal_speedup(), 100.0 * cross, int(r.kept_parameters), int(r.influence_floats),
                r.train_seconds, 1e3 * r.train_seconds / double(r.sequences), r.eval_seconds);
  }
  std::printf("total %.0f s\n", seconds_since(start));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  data::program_name() = "stack_depth";
  const Options opt = parse(argc, argv);
  try {
    return run(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stack_depth: %s\n", e.what());
    return 1;
  }
}
