/// @file copy_curriculum.cpp
/// @brief The SnAp paper's copy task with a curriculum, learned online with an update at every
///        step (Menick et al. 2020, arXiv:2006.07232, section 5, after Mujika et al. 2018): one
///        run of one method; examples/copy_curriculum.py runs the grid and plots it (docs/copy_task.md).
///
/// Task: a sequence is L random bits, read one per step (input one-hot on channels 0 and 1),
/// then L recall steps (input channel 2 set, no bit) at which a linear readout of the network's
/// output y_t must name the bits in order: recall step j (0-based) scores bit j, softmax
/// cross-entropy over 2 classes, in bits (nats / ln 2). The state is reset at the start of every
/// sequence; a sequence takes 2L data steps. Curriculum: L starts at 1; after every sequence, when
/// at least --window recall bits have been scored at this L and the mean loss of the last --window
/// of them is below 0.15 bits, L grows by one (and the window starts again). Every run consumes
/// the same bit stream (from --seed) for --steps data steps, whatever L it reaches ("equal data").
///
/// Updates: at every recall step (the steps with a loss) the learner's gradient of that step's
/// loss updates the network and the readout by Adam, before the next input arrives (fully online;
/// read steps have no loss and no update; truncated BPTT with --blocks updates once per block).
/// The methods differ only in the gradient:
///   rtrl    exact sparse RTRL (sparse_rtrl::Rtrl): the exact gradient of the step's loss
///           through the whole sequence so far (online RTRL: the influence carries Jacobians of
///           earlier weights);
///   snap1   SnAp-1 (sparse_rtrl::Snap, order 1): each parameter's influence on its own unit only;
///   snap2   SnAp-2: on its unit and the units one recurrent hop away;
///   uoro    UORO (sparse_rtrl::Uoro, Tallec & Ollivier 2017): an unbiased rank-one estimate of
///           the influence, fresh random signs at every step (seeded from --seed);
///   tbptt   truncated BPTT (sparse_rtrl::TruncatedBptt, form every_step): each step's loss
///           back-propagated at once through the last --k steps (default 8). A bit read j steps
///           before its recall (j = L in this task) is out of reach once L >= k. With --blocks,
///           form every_k_steps: the losses of each block of k steps (counted from the sequence's
///           start) back-propagated together through the block, one update per block (and one
///           for the sequence's shorter last block); k >= 2L is BPTT of the whole sequence with
///           one update per sequence.
///
/// Model: one EGRU layer of n units (--units, default 32) on d = 3 inputs, or the same cell in
/// GRU mode (--mode gru: o = 1, y = c; the control without events). Recurrent weights R pruned to
/// --density (gate-shared random mask: a unit's three gates see the same predecessors, so the
/// recurrent graph SnAp's pattern follows has the weights' density); the input weights W stay
/// dense (with d = 3, pruning them leaves units deaf to a bit). R divided by sqrt(density), W
/// scaled by 3 (one-hot inputs, as in copy_online.cpp); thresholds start at 0.3 (trained);
/// triangular surrogate, gamma = 1, eps = 0.5; zero readout at start; Adam, --lr (default 3e-3).
///
/// Output: a header, a line per curriculum step ("L   5 at step     12345,     3.20 s"), and the
/// summary line "final: <method> <mode> density <P> seed <S>: L <L> after <N> steps, <T> s wall, ..."
/// that examples/copy_curriculum.py and the ctest smoke test read; with --json PATH the same as a
/// JSON object (the run's options and the curve of (step, wall seconds, L, CPU seconds)). Wall
/// time is what was asked of the run; on a machine shared with other work the process's CPU time
/// (std::clock) is the steadier measure of what each method costs, and both are reported.
///
/// Usage: copy_curriculum [--short] [--method rtrl|snap1|snap2|uoro|tbptt] [--mode egru|gru]
///                        [--density P] [--units N] [--steps N] [--window B] [--lr R]
///                        [--k K [--blocks]] [--seed S] [--json PATH]
/// Arguments it does not know, or cannot parse, end it with exit code 2 and the usage.
///
/// Measured results (the grid of 72 runs, and longer runs of four methods): docs/copy_task.md.
#include <sparse_rtrl/sparse_rtrl.hpp>

#include "common/args.hpp"
#include "common/timing.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using sparse_rtrl::Index;
using Surrogate = sparse_rtrl::TriangularSurrogate<float>;
using Model = sparse_rtrl::Model<float, Surrogate>;
using Cell = Model::Cell;
using Vector = Eigen::VectorXf;

constexpr Index kInputs = 3;        // bit 0, bit 1, recall
constexpr float kThreshold = 0.3f;  // initial theta (trained)
constexpr float kInputGain = 3.0f;  // scales the torch-like initial W
constexpr double kTargetBits = 0.15;
const double kLn2 = std::log(2.0);

struct Options {
  bool short_run = false;
  std::string method = "rtrl";
  std::string mode = "egru";
  double density = 0.25;
  long units = 32;
  long steps = -1;  // -1: the mode's default
  long window = 256;
  double lr = 3e-3;
  std::uint64_t seed = 1;
  long k = 8;  // truncated BPTT's window
  bool blocks = false;  // truncated BPTT's form every_k_steps
  std::string json;
};

const std::vector<std::string> kMethods = {"rtrl", "snap1", "snap2", "uoro", "tbptt"};

constexpr const char* kUsage =
    "usage: copy_curriculum [--short] [--method rtrl|snap1|snap2|uoro|tbptt] [--mode egru|gru] [--density P]\n"
    "                       [--units N] [--steps N] [--window B] [--lr R] [--k K [--blocks]] [--seed S] [--json PATH]\n"
    "  --short      400 data steps (a smoke run) unless --steps is given; default 100000\n"
    "  --density P  fraction of the recurrent weights kept, 0 < P <= 1 (default 0.25: 75% sparse)\n"
    "  --window B   recall bits averaged for the curriculum's 0.15-bit test (default 256)\n"
    "  --lr R       Adam's learning rate, 0 < R <= 1 (default 0.003)\n"
    "  --k K        truncated BPTT's window, K >= 1 steps (default 8; only with --method tbptt)\n"
    "  --blocks     truncated BPTT in blocks of K steps, one update per block (form every_k_steps)\n"
    "  N, B positive integers, S a non-negative integer\n";

Options parse(int argc, char** argv) {
  Options o;
  examples::ArgParser args("copy_curriculum", kUsage);
  args.flag("--short", o.short_run)
      .option("--method",
              [&](const std::string& text) {
                bool known = false;
                for (const auto& m : kMethods) known = known || m == text;
                if (!known) args.fail("--method needs one of rtrl, snap1, snap2, uoro, tbptt, received '" + text + "'");
                o.method = text;
              })
      .option("--mode",
              [&](const std::string& text) {
                if (text != "egru" && text != "gru") args.fail("--mode needs egru or gru, received '" + text + "'");
                o.mode = text;
              })
      .number("--density", o.density, 0.0, 1.0)
      .integer("--units", o.units, 1L, 256L)
      .integer("--steps", o.steps, 1L, 1000000000L)
      .integer("--window", o.window, 1L, 1000000L)
      .number("--lr", o.lr, 0.0, 1.0)
      .integer("--k", o.k, 1L, 100000L)
      .flag("--blocks", o.blocks)
      .integer("--seed", o.seed, std::uint64_t(0), std::numeric_limits<std::uint64_t>::max())
      .path("--json", o.json)
      .parse(argc, argv);
  if (o.blocks && o.method != "tbptt") args.fail("--blocks needs --method tbptt");
  return o;
}

struct Level {
  long L, step;
  double seconds, cpu_seconds;
};

/// CPU seconds of this process (single-threaded: the run's own work).
double cpu_seconds() { return double(std::clock()) / double(CLOCKS_PER_SEC); }

struct Result {
  long L = 1;
  std::vector<Level> curve;  // one entry per L reached, L = 1 at step 0 first
  double seconds = 0.0, cpu_seconds = 0.0, last_loss = 0.0;
  long sequences = 0;
  sparse_rtrl::WorkCounters work;
};

/// The curriculum's statistics: the losses of the last `window` recall bits scored at this L.
class Window {
 public:
  explicit Window(long size) : losses_(std::size_t(size), 0.0) {}
  void add(double bits) {
    double& slot = losses_[std::size_t(count_ % long(losses_.size()))];
    sum_ += bits - slot;
    slot = bits;
    ++count_;
  }
  bool full() const { return count_ >= long(losses_.size()); }
  double mean() const { return count_ == 0 ? 0.0 : sum_ / double(std::min<long>(count_, long(losses_.size()))); }
  void clear() {
    std::fill(losses_.begin(), losses_.end(), 0.0);
    sum_ = 0.0;
    count_ = 0;
  }

 private:
  std::vector<double> losses_;
  double sum_ = 0.0;
  long count_ = 0;
};

/// One run of @p learner (any learner of @p model): --steps data steps of the copy task. Blocks:
/// truncated BPTT's form every_k_steps, which updates once a block's losses are back-propagated
/// (block_complete(), or flush() at the end of a sequence) instead of at every recall step.
template <bool Blocks = false, typename Learner>
Result train(Learner& learner, Model& model, const Options& opt, long steps, examples::Clock::time_point start) {
  const Index n = model.cell().units();
  sparse_rtrl::LinearReadout<float> readout(2, n);
  // A zero readout sends no gradient into the network until it has found features that predict
  // the bit (as in copy_online.cpp).
  readout.parameters().V.setZero();
  sparse_rtrl::Adam<float> adam_cell(sparse_rtrl::AdamOptions<float>{float(opt.lr)});
  sparse_rtrl::Adam<float> adam_readout(sparse_rtrl::AdamOptions<float>{float(opt.lr)});

  std::mt19937_64 bits(opt.seed + 2);  // the data: the standard fixes mt19937_64's raw output
  Vector x = Vector::Zero(kInputs), logits(2), dL_dlogits(2), dL_dy(n);
  std::vector<int> sequence;
  Window window(opt.window);
  Result r;
  const double cpu_start = cpu_seconds();
  r.curve.push_back({1, 0, 0.0, 0.0});
  long L = 1, t = 0;
  bool pending = false;  // losses taken since the last update
  learner.reset_work();
  while (t < steps) {
    // One sequence (cut short when the data budget ends inside it).
    sequence.resize(std::size_t(L));
    for (auto& b : sequence) b = int(bits() >> 63);
    learner.reset();
    double sequence_loss = 0.0;
    long j = 0;
    for (; j < 2 * L && t < steps; ++j, ++t) {
      x.setZero();
      if (j < L) x(sequence[std::size_t(j)]) = 1.0f;
      else x(2) = 1.0f;
      learner.step(x);
      if (j < L) continue;
      const int target = sequence[std::size_t(j - L)];
      readout.forward(learner.output(), logits);
      const double bits_lost = double(sparse_rtrl::softmax_cross_entropy(logits, target, dL_dlogits)) / kLn2;
      sequence_loss += bits_lost;
      window.add(bits_lost);
      readout.backward(learner.output(), dL_dlogits, dL_dy);
      learner.accumulate_gradient(dL_dy);
      pending = true;
      bool update = true;
      if constexpr (Blocks) update = learner.block_complete();
      if (update) {
        adam_cell.update(model, learner);  // step, then zero the learner's gradient
        adam_readout.update(readout);
        pending = false;
      }
    }
    if constexpr (Blocks) {
      // The sequence's last, shorter block (or the budget ended inside one): its losses now.
      learner.flush();
      if (pending) {
        adam_cell.update(model, learner);
        adam_readout.update(readout);
        pending = false;
      }
    }
    if (j < 2 * L) break;  // an unfinished sequence (the budget ended in it) does not count
    ++r.sequences;
    r.last_loss = sequence_loss / double(L);
    if (window.full() && window.mean() < kTargetBits) {
      ++L;
      window.clear();
      const double s = examples::seconds_since(start);
      r.curve.push_back({L, t, s, cpu_seconds() - cpu_start});
      std::printf("L %3ld at step %9ld, %8.2f s\n", L, t, s);
      std::fflush(stdout);
    }
  }
  r.L = L;
  r.seconds = examples::seconds_since(start);
  r.cpu_seconds = cpu_seconds() - cpu_start;
  r.work = learner.total_work();
  return r;
}

void write_json(const std::string& path, const Options& opt, long steps, const Result& r) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) throw std::runtime_error("cannot write " + path);
  std::fprintf(f,
               "{\"method\": \"%s\", \"mode\": \"%s\", \"density\": %.6g, \"units\": %ld, \"seed\": %llu, "
               "\"steps\": %ld, \"window\": %ld, \"lr\": %.6g, \"k\": %ld, \"blocks\": %s, \"L\": %ld, \"seconds\": %.4f, \"cpu_seconds\": %.4f, \"sequences\": %ld, "
               "\"event_sparsity\": %.6f, \"backward_sparsity\": %.6f,\n \"curve\": [",
               opt.method.c_str(), opt.mode.c_str(), opt.density, opt.units, static_cast<unsigned long long>(opt.seed),
               steps, opt.window, opt.lr, opt.method == "tbptt" ? opt.k : 0L,
               opt.method == "tbptt" && opt.blocks ? "true" : "false", r.L, r.seconds, r.cpu_seconds, r.sequences, r.work.event_sparsity(),
               r.work.backward_sparsity());
  for (std::size_t k = 0; k < r.curve.size(); ++k)
    std::fprintf(f, "%s[%ld, %.4f, %ld, %.4f]", k ? ", " : "", r.curve[k].step, r.curve[k].seconds, r.curve[k].L,
                 r.curve[k].cpu_seconds);
  std::fprintf(f, "]}\n");
  if (std::fclose(f) != 0) throw std::runtime_error("cannot write " + path);
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  const long steps = opt.steps > 0 ? opt.steps : (opt.short_run ? 400 : 100000);
  const Index n = Index(opt.units);
  const bool events = opt.mode == "egru";

  sparse_rtrl::InitOptions<float> init;
  init.seed = opt.seed;
  init.threshold = kThreshold;
  Cell cell(n, kInputs, init, sparse_rtrl::CellOptions{events}, Surrogate(/*gamma=*/1.0f, /*eps=*/0.5f));
  cell.parameters().W *= kInputGain;
  cell.parameters().R /= float(std::sqrt(opt.density));
  const auto mask = sparse_rtrl::ParameterMask::random(n, kInputs, /*density_W=*/1.0, opt.density, opt.seed + 1,
                                                       sparse_rtrl::MaskSharing::gate_shared);
  Model model(cell, mask);

  std::printf("copy_curriculum: copy task, curriculum on L (+1 when the mean of the last %ld recall bits' loss < "
              "%.2f bits), %ld data steps, Adam (lr %g) at every recall step\n"
              "%s n = %d, d = %d, recurrent density %.2f (%d of %d R kept, gate-shared), method %s%s, seed %llu\n",
              opt.window, kTargetBits, steps, opt.lr, events ? "EGRU" : "GRU (mode)", int(n), int(kInputs),
              opt.density, int(mask.kept_R()), int(3 * n * n), opt.method.c_str(),
              opt.method == "tbptt" ? (" (k = " + std::to_string(opt.k) + (opt.blocks ? ", blocks" : ", every step") + ")").c_str() : "",
              static_cast<unsigned long long>(opt.seed));
  std::fflush(stdout);

  const auto start = examples::Clock::now();
  Result r;
  try {
    if (opt.method == "rtrl") {
      sparse_rtrl::Rtrl<float, Surrogate> learner(model);
      r = train(learner, model, opt, steps, start);
    } else if (opt.method == "snap1" || opt.method == "snap2") {
      sparse_rtrl::Snap<float, Surrogate> learner(model, opt.method == "snap1" ? 1 : 2);
      r = train(learner, model, opt, steps, start);
    } else if (opt.method == "uoro") {
      sparse_rtrl::UoroOptions options;
      options.seed = opt.seed + 3;
      sparse_rtrl::Uoro<float, Surrogate> learner(model, options);
      r = train(learner, model, opt, steps, start);
    } else {
      sparse_rtrl::TruncatedBpttOptions options;
      options.k = Index(opt.k);
      options.form = opt.blocks ? sparse_rtrl::TruncationForm::every_k_steps : sparse_rtrl::TruncationForm::every_step;
      sparse_rtrl::TruncatedBptt<float, Surrogate> learner(model, options);
      r = opt.blocks ? train<true>(learner, model, opt, steps, start) : train<false>(learner, model, opt, steps, start);
    }
    if (!opt.json.empty()) write_json(opt.json, opt, steps, r);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "copy_curriculum: %s\n", e.what());
    return 1;
  }
  // Backward sparsity (influence rows skipped for s = 0) is RTRL's and SnAp's counter; the other
  // learners have no influence rows.
  const bool rows = opt.method == "rtrl" || opt.method == "snap1" || opt.method == "snap2";
  char backward[64] = "";
  if (rows) std::snprintf(backward, sizeof backward, ", backward sparsity %.1f%%", 100.0 * r.work.backward_sparsity());
  std::printf("final: %s %s density %.2f seed %llu: L %ld after %ld steps, %.2f s wall, %.2f s CPU (%.2f us/step), "
              "%ld sequences, last sequence %.3f bits/bit, event sparsity %.1f%%%s\n",
              opt.method.c_str(), opt.mode.c_str(), opt.density, static_cast<unsigned long long>(opt.seed), r.L, steps,
              r.seconds, r.cpu_seconds, 1e6 * r.cpu_seconds / double(steps), r.sequences, r.last_loss,
              100.0 * r.work.event_sparsity(), backward);
  return 0;
}
