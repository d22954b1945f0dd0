// Checkpoints: a run saved at step t and loaded into freshly constructed objects (other weights,
// masks, surrogate, optimizer options, pruning schedule, random engine) continues bit for bit as
// the uninterrupted run: float and double, Rtrl and RtrlStreams (3 streams, other thread
// counts), 1 and 2 layers, with optimizers, a readout and a pruner in the loop, and a save taken
// right after a pruning event the learners had not followed yet. Then: NumPy reads a checkpoint
// (every entry compared with the live objects), bad files are refused naming the entry with
// nothing changed, saves are atomic, and load_model() builds the saved model.
#include "io/io_support.hpp"

#include <functional>
#include <memory>
#include <random>

using namespace sparse_rtrl;
using iotest::same;
using iotest::same_bits;
using test::Mat;
using test::Vec;

namespace {

constexpr Index kInputs = 3, kSymbols = 4;
const Index kUnits[] = {7, 5};

/// An events-mode stack; @p fresh: other weights, no masks and another surrogate width (all of
/// which a checkpoint must overwrite).
template <typename S>
Model<S> make_model(Index L, std::uint64_t seed, bool fresh) {
  std::vector<EgruCell<S>> cells;
  std::vector<ParameterMask> masks;
  Index in = kInputs;
  for (Index k = 0; k < L; ++k) {
    const auto p = test::firing_parameters<S>(kUnits[k], in, seed + 10 * std::uint64_t(k));
    cells.emplace_back(p, CellOptions{true}, TriangularSurrogate<S>(S(1), fresh ? S(0.6) : S(0.3)));
    masks.push_back(fresh ? ParameterMask::dense(kUnits[k], in)
                          : ParameterMask::random(kUnits[k], in, 0.8, 0.7, seed + 20 + std::uint64_t(k)));
    in = kUnits[k];
  }
  return Model<S>(cells, masks);
}

/// One training run: a model of L layers learnt by Rtrl (B = 0) or RtrlStreams (B streams),
/// a readout with softmax cross-entropy on random symbols, Adam on layer 0, Sgd (Nesterov) on
/// layer 1, AdamW on the readout every third step, magnitude pruning of layer 0 at steps 4,
/// prune_late and 20, inputs and targets from a std::mt19937_64.
template <typename S>
struct Run {
  using Learner1 = Rtrl<S>;
  using LearnerB = RtrlStreams<S>;

  Index L, B;
  Model<S> model;
  std::unique_ptr<Learner1> rtrl;
  std::unique_ptr<LearnerB> streams;
  Adam<S> adam0;
  Sgd<S> sgd1;
  AdamW<S> adamw_out;
  LinearReadout<S> readout;
  MagnitudePruner pruner;
  std::mt19937_64 rng;
  std::int64_t t = 0;
  double loss = 0;
  Index prune_late;

  Run(Index layers, Index streams_count, int threads, std::uint64_t seed, bool fresh, Index prune_late_step)
      : L(layers),
        B(streams_count),
        model(make_model<S>(layers, seed, fresh)),
        adam0(AdamOptions<S>{fresh ? S(0.1) : S(0.02)}),
        sgd1(SgdOptions<S>{fresh ? S(0.5) : S(0.05), S(0.8), true}),
        adamw_out(AdamWOptions<S>{S(0.01)}),
        readout(kSymbols, kUnits[layers - 1], ReadoutInitOptions{seed}),
        pruner(fresh ? PruningSchedule{0.9, 0.9, 7} : PruningSchedule{0.4, 0.35, 3, PruningCurve::linear},
               model.mask(0)),
        rng(fresh ? seed + 99 : 12345),
        prune_late(prune_late_step) {
    RtrlOptions options;
    options.threads = threads;
    if (B == 0)
      rtrl = std::make_unique<Learner1>(model, options);
    else
      streams = std::make_unique<LearnerB>(model, B, options);
  }

  io::Checkpoint checkpoint() {
    io::Checkpoint c;
    c.add(model);
    if (rtrl)
      c.add("rtrl", *rtrl);
    else
      c.add("streams", *streams);
    c.add("adam0", adam0).add("sgd1", sgd1).add("adamw_out", adamw_out).add("readout", readout);
    c.add("pruner", pruner).add("rng", rng).add("t", t).add("loss", loss);
    return c;
  }

  Index rows() const { return B == 0 ? 1 : B; }
  Mat<S> outputs() const {
    if (rtrl) return rtrl->output().transpose();
    return streams->outputs();
  }

  /// One step; returns the outputs y_t (rows: streams).
  Mat<S> step() {
    Mat<S> X(rows(), kInputs), G(rows(), kUnits[L - 1]);
    for (Index b = 0; b < rows(); ++b)
      for (Index j = 0; j < kInputs; ++j) X(b, j) = S(double(rng() >> 11) * (3.0 / 9007199254740992.0) - 1.5);
    if (rtrl)
      rtrl->step(X.row(0));
    else
      streams->step(X);
    const Mat<S> Y = outputs();
    Vec<S> logits(kSymbols), dlogits(kSymbols), dy(kUnits[L - 1]);
    for (Index b = 0; b < rows(); ++b) {
      const Vec<S> y = Y.row(b).transpose();
      readout.forward(y, logits);
      loss += double(softmax_cross_entropy(logits, Index(rng() % kSymbols), dlogits));
      readout.backward(y, dlogits, dy);
      G.row(b) = dy.transpose();
    }
    if (rtrl)
      rtrl->accumulate_gradient(G.row(0));
    else
      streams->accumulate_gradient(G);
    if ((t + 1) % 3 == 0) {
      EgruParameters<S> g;
      for (Index k = 0; k < L; ++k) {
        if (rtrl)
          rtrl->gradient(k, g);
        else
          streams->gradient(k, g);
        if (k == 0)
          adam0.step(model.parameters(0), g, model.mask(0));
        else
          sgd1.step(model.parameters(1), g, model.mask(1));
      }
      adamw_out.step(readout);
      if (rtrl)
        rtrl->zero_gradient();
      else
        streams->zero_gradient();
      readout.zero_gradient();
    }
    if ((t == 4 || t == prune_late || t == 20) && !pruner.finished()) pruner.prune(model);
    ++t;
    return Y;
  }
};

template <typename S>
void require_same_learner(const Rtrl<S>& a, const Rtrl<S>& b) {
  REQUIRE(a.steps() == b.steps());
  REQUIRE(a.last_step_valid() == b.last_step_valid());
  REQUIRE(a.mask_followed() == b.mask_followed());
  REQUIRE(same_bits(a.gradient_columns(), b.gradient_columns()));
  REQUIRE(same(a.total_work(), b.total_work()));
  REQUIRE(same(a.last_step_work(), b.last_step_work()));
  for (Index k = 0; k < a.layers(); ++k) {
    INFO("layer " << k);
    REQUIRE(a.layout_mask(k) == b.layout_mask(k));
    REQUIRE(same_bits(a.state(k), b.state(k)));
    REQUIRE(same_bits(a.influence(k), b.influence(k)));
    REQUIRE(same(a.total_work(k), b.total_work(k)));
    REQUIRE(same(a.last_step_work(k), b.last_step_work(k)));
    const auto fields = [](const EgruStepCache<S>& c) {
      return std::vector<const Vec<S>*>{&c.x, &c.c_prev, &c.o_prev, &c.y_prev, &c.h_prev, &c.psi_prev, &c.s_prev,
                                        &c.a, &c.q, &c.r, &c.z, &c.g, &c.c, &c.o, &c.y, &c.psi, &c.s, &c.dc_da,
                                        &c.dc_dq, &c.decay};
    };
    const auto fa = fields(a.last_step_cache(k)), fb = fields(b.last_step_cache(k));
    for (std::size_t f = 0; f < fa.size(); ++f) REQUIRE(same_bits(*fa[f], *fb[f]));
  }
}

template <typename S>
void require_same_run(Run<S>& a, Run<S>& b) {
  REQUIRE(a.t == b.t);
  REQUIRE(same_bits(Vec<double>::Constant(1, a.loss), Vec<double>::Constant(1, b.loss)));
  REQUIRE(a.rng == b.rng);
  for (Index k = 0; k < a.L; ++k) {
    INFO("model layer " << k);
    const auto& p = a.model.parameters(k);
    const auto& q = b.model.parameters(k);
    REQUIRE(same_bits(p.W, q.W));
    REQUIRE(same_bits(p.R, q.R));
    REQUIRE(same_bits(p.bW, q.bW));
    REQUIRE(same_bits(p.bR, q.bR));
    REQUIRE(same_bits(p.theta, q.theta));
    REQUIRE(a.model.mask(k) == b.model.mask(k));
    REQUIRE(a.model.surrogate(k).eps() == b.model.surrogate(k).eps());
  }
  if (a.rtrl) {
    require_same_learner(*a.rtrl, *b.rtrl);
  } else {
    REQUIRE(same_bits(a.streams->outputs(), b.streams->outputs()));
    REQUIRE(same_bits(a.streams->events(), b.streams->events()));
    for (Index s = 0; s < a.B; ++s) {
      INFO("stream " << s);
      require_same_learner(a.streams->stream(s), b.streams->stream(s));
    }
  }
  REQUIRE(a.adam0.steps() == b.adam0.steps());
  REQUIRE(a.adam0.learning_rate() == b.adam0.learning_rate());
  REQUIRE(a.sgd1.steps() == b.sgd1.steps());
  REQUIRE(a.sgd1.learning_rate() == b.sgd1.learning_rate());
  for (Index k = 0; k < a.adam0.state_tensors(); ++k) {
    REQUIRE(same_bits(a.adam0.first_moment(k), b.adam0.first_moment(k)));
    REQUIRE(same_bits(a.adam0.second_moment(k), b.adam0.second_moment(k)));
  }
  for (Index k = 0; k < a.sgd1.state_tensors(); ++k) REQUIRE(same_bits(a.sgd1.velocity(k), b.sgd1.velocity(k)));
  for (Index k = 0; k < a.adamw_out.state_tensors(); ++k)
    REQUIRE(same_bits(a.adamw_out.second_moment(k), b.adamw_out.second_moment(k)));
  REQUIRE(same_bits(a.readout.parameters().V, b.readout.parameters().V));
  REQUIRE(same_bits(a.readout.parameters().b, b.readout.parameters().b));
  REQUIRE(a.pruner.events_done() == b.pruner.events_done());
  REQUIRE(a.pruner.schedule().events == b.pruner.schedule().events);
}

/// Every array of @p src into @p dst; @p edit may change an entry (return false to drop it).
void rewrite(const std::string& src, const std::string& dst,
             const std::function<bool(const std::string&, io::ArrayInfo&, std::string&)>& edit) {
  io::NpzReader r(src);
  io::NpzWriter w(dst);
  for (const std::string& name : r.names()) {
    io::ArrayInfo info = r.info(name);
    std::string data;
    r.read_data(name, [&](const unsigned char* p, std::size_t n) { data.append(reinterpret_cast<const char*>(p), n); });
    if (!edit(name, info, data)) continue;
    w.add_array(name, info.dtype, info.shape, [&](io::ByteSink& sink) { sink.write(data.data(), data.size()); });
  }
  w.commit();
}

template <typename T>
std::string bytes_of(T v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof v);
}

}  // namespace

TEMPLATE_TEST_CASE("A run saved at step t and loaded into fresh objects continues bit for bit", "[io][checkpoint]",
                   float, double) {
  using S = TestType;
  const Index T = 26, t_save = 13;  // between two optimizer steps: a gradient is accumulated
  struct Case {
    Index layers, streams;
    int threads_before, threads_after;
  };
  for (const Case c : {Case{1, 0, 1, 2}, Case{2, 0, 2, 1}, Case{1, 3, 2, 1}, Case{2, 3, 1, 2}}) {
    INFO("layers " << c.layers << ", streams " << c.streams << " (0: Rtrl), threads " << c.threads_before << " then "
                   << c.threads_after);
    iotest::TempDir dir;
    const std::string path = dir.file("run.npz");
    // The pruning event just before the save leaves the learners on the old masks (they follow
    // at their next step): the checkpoint must keep that too.
    auto whole = std::make_unique<Run<S>>(c.layers, c.streams, c.threads_before, 7, false, t_save - 1);
    std::vector<Mat<S>> outputs;
    for (Index t = 0; t < T; ++t) {
      outputs.push_back(whole->step());
      if (t == t_save - 1) {
        REQUIRE_FALSE((c.streams == 0 ? whole->rtrl->mask_followed() : whole->streams->stream(0).mask_followed()));
        REQUIRE(whole->pruner.events_done() == 2);
      }
    }

    {
      Run<S> first(c.layers, c.streams, c.threads_before, 7, false, t_save - 1);
      for (Index t = 0; t < t_save; ++t) first.step();
      first.checkpoint().save(path);
    }  // the first process ends
    Run<S> resumed(c.layers, c.streams, c.threads_after, 1234, true, t_save - 1);
    REQUIRE_FALSE(resumed.model.mask(0) == whole->model.mask(0));  // fresh: dense, other weights
    resumed.checkpoint().load(path);
    REQUIRE(resumed.t == t_save);
    REQUIRE(same_bits(resumed.outputs(), outputs[std::size_t(t_save - 1)]));  // the last step's cache too
    for (Index t = t_save; t < T; ++t) {
      INFO("step " << t);
      REQUIRE(same_bits(resumed.step(), outputs[std::size_t(t)]));
    }
    REQUIRE(resumed.pruner.events_done() == 3);
    require_same_run(*whole, resumed);
  }
}

TEST_CASE("NumPy reads a checkpoint: every array as the live objects hold it", "[io][checkpoint][numpy]") {
  const std::string python = iotest::python_with_numpy();
  if (python.empty()) {
    iotest::report_skip("no python3 with numpy (Debian: python3-numpy; cmake/dev.sh test installs it)");
    return;
  }
  iotest::TempDir dir;
  const std::string path = dir.file("ckpt.npz");
  Run<float> run(2, 2, 1, 3, false, 5);
  for (int t = 0; t < 6; ++t) run.step();  // pruned after steps 4 and 5: the last not followed yet
  std::vector<int> ring{3, 1, 4, 1, 5};
  Eigen::MatrixXd extra = test::random_matrix<double>(2, 3, 9);
  io::Checkpoint c = run.checkpoint();
  c.add("ring", ring).add("extra", extra);
  c.save(path, io::NpzWriterOptions{true});  // Zip64 records throughout, as numpy.savez writes
  std::string out;
  REQUIRE(iotest::run(python + " " + iotest::npz_check_script() + " dump " + path, out) == 0);
  const auto dump = iotest::parse_dump(out);
  io::NpzReader ours(path);
  REQUIRE(dump.size() == ours.names().size());

  REQUIRE(dump.at("format_version").values == std::vector<std::string>{"1"});
  REQUIRE(dump.at("num_layers").values == std::vector<std::string>{"2"});
  for (Index k = 0; k < 2; ++k) {
    const std::string s = "_l" + std::to_string(k);
    const auto& p = run.model.parameters(k);
    CHECK(iotest::dumped_equals(dump.at("weight_ih" + s), p.W));
    CHECK(iotest::dumped_equals(dump.at("weight_hh" + s), p.R));
    CHECK(iotest::dumped_equals(dump.at("bias_ih" + s), p.bW, true));
    CHECK(iotest::dumped_equals(dump.at("bias_hh" + s), p.bR, true));
    CHECK(iotest::dumped_equals(dump.at("threshold" + s), p.theta, true));
    CHECK(iotest::dumped_equals(dump.at("mask_weight_ih" + s), run.model.mask(k).W()));
    CHECK(iotest::dumped_equals(dump.at("mask_weight_hh" + s), run.model.mask(k).R()));
    CHECK(dump.at("events" + s).values == std::vector<std::string>{"1"});
    CHECK(float(dump.at("surrogate_eps" + s).number(0)) == 0.3f);
  }
  for (Index b = 0; b < 2; ++b) {
    const Rtrl<float>& st = run.streams->stream(b);
    const std::string p = "streams/s" + std::to_string(b);
    CHECK(dump.at(p + "/steps").values == std::vector<std::string>{"6"});
    CHECK(dump.at(p + "/mask_followed").values == std::vector<std::string>{"0"});
    CHECK(iotest::dumped_equals(dump.at(p + "/gradient"), st.gradient_columns(), true));
    for (Index k = 0; k < 2; ++k) {
      const std::string l = p + "/l" + std::to_string(k);
      CHECK(iotest::dumped_equals(dump.at(l + "/influence"), st.influence(k)));
      CHECK(iotest::dumped_equals(dump.at(l + "/state"), st.state(k), true));
      CHECK(iotest::dumped_equals(dump.at(l + "/cache/dc_dq"), st.last_step_cache(k).dc_dq, true));
      CHECK(iotest::dumped_equals(dump.at(l + "/layout_mask_weight_hh"), st.layout_mask(k).R()));
      const auto& w = dump.at(l + "/work_total");
      REQUIRE(w.dtype == "<u8");
      CHECK(std::stoull(w.values.at(1)) == st.total_work(k).propagation_fma);
      CHECK(std::stoull(w.values.at(7)) == st.total_work(k).active_rows);
    }
  }
  CHECK(iotest::dumped_equals(dump.at("adam0/first_moment/W"), run.adam0.first_moment(0)));
  CHECK(iotest::dumped_equals(dump.at("adam0/second_moment/theta"), Vec<float>(run.adam0.second_moment(4)), true));
  CHECK(iotest::dumped_equals(dump.at("sgd1/velocity/R"), run.sgd1.velocity(1)));
  CHECK(dump.at("adam0/steps").values == std::vector<std::string>{"2"});
  CHECK(iotest::dumped_equals(dump.at("readout/weight"), run.readout.parameters().V));
  CHECK(dump.at("pruner/events_done").values == std::vector<std::string>{"2"});
  CHECK(dump.at("ring").dtype == "<i4");
  CHECK(dump.at("ring").values == std::vector<std::string>{"3", "1", "4", "1", "5"});
  CHECK(iotest::dumped_equals(dump.at("extra"), extra));
  std::ostringstream words;
  words << run.rng;
  std::vector<std::string> expected;
  for (std::istringstream in(words.str()); in;) {
    std::string w;
    if (in >> w) expected.push_back(w);
  }
  CHECK(dump.at("rng").values == expected);
}

TEST_CASE("Bad checkpoints are refused naming the entry, and nothing is loaded", "[io][checkpoint]") {
  iotest::TempDir dir;
  const std::string good = dir.file("good.npz"), bad = dir.file("bad.npz");
  const std::string before = dir.file("before.npz"), after = dir.file("after.npz");
  Run<float> saved(2, 2, 1, 5, false, 8);
  for (int t = 0; t < 6; ++t) saved.step();
  saved.checkpoint().save(good);
  Run<float> live(2, 2, 1, 5, false, 8);
  for (int t = 0; t < 3; ++t) live.step();
  live.checkpoint().save(before);
  const std::string before_bytes = iotest::read_bytes(before);

  struct Edit {
    const char* what;
    std::function<bool(const std::string&, io::ArrayInfo&, std::string&)> edit;
    const char* message;
  };
  const Edit edits[] = {
      {"newer format",
       [](const std::string& n, io::ArrayInfo&, std::string& d) {
         if (n == "format_version") d = bytes_of(std::int64_t(2));
         return true;
       },
       "entry 'format_version': this library reads checkpoint format 1, the file has format 2"},
      {"no format version", [](const std::string& n, io::ArrayInfo&, std::string&) { return n != "format_version"; },
       "entry 'format_version' is missing"},
      {"float64 weights into a float model",
       [](const std::string& n, io::ArrayInfo& i, std::string& d) {
         if (n == "weight_hh_l1") {
           std::string wide;
           for (std::size_t k = 0; k < d.size(); k += 4) {
             float f;
             std::memcpy(&f, d.data() + k, 4);
             wide += bytes_of(double(f));
           }
           d = wide;
           i.dtype = io::Dtype::float64;
         }
         return true;
       },
       "entry 'weight_hh_l1': expected <f4 (float32) of shape (15, 5), found <f8 (float64) of shape (15, 5)"},
      {"a missing optimizer entry", [](const std::string& n, io::ArrayInfo&, std::string&) { return n != "adam0/steps"; },
       "entry 'adam0/steps' is missing"},
      {"influence of another shape",
       [](const std::string& n, io::ArrayInfo& i, std::string& d) {
         if (n == "streams/s1/l1/influence") {
           i.shape[1] -= 1;
           d.resize(d.size() - 4 * i.shape[0]);
         }
         return true;
       },
       "entry 'streams/s1/l1/influence': expected <f4 (float32) of shape (5, "},
      {"another layer count",
       [](const std::string& n, io::ArrayInfo&, std::string& d) {
         if (n == "num_layers") d = bytes_of(std::int64_t(3));
         return true;
       },
       "entry 'num_layers': expected 2 (the model's number of layers), found 3"},
      {"another mode",
       [](const std::string& n, io::ArrayInfo&, std::string& d) {
         if (n == "events_l1") d = std::string(1, '\0');
         return true;
       },
       "entry 'events_l1': expected True"},
      {"another stream count",
       [](const std::string& n, io::ArrayInfo&, std::string& d) {
         if (n == "streams/streams") d = bytes_of(std::int64_t(3));
         return true;
       },
       "entry 'streams/streams': expected 2"},
      {"a NaN weight",
       [](const std::string& n, io::ArrayInfo&, std::string& d) {
         if (n == "bias_hh_l0") d.replace(4, 4, bytes_of(std::numeric_limits<float>::quiet_NaN()));
         return true;
       },
       "entry 'bias_hh_l0': element (1, 0) is not finite"},
      // Issue 20, items 4 and 14: values no learner can hold, with a valid CRC.
      {"a NaN influence entry",
       [](const std::string& n, io::ArrayInfo&, std::string& d) {
         if (n == "streams/s1/l1/influence") d.replace(12, 4, bytes_of(std::numeric_limits<float>::quiet_NaN()));
         return true;
       },
       "streams/s1/l1/influence must be finite, received nan at (0, 3)"},
      {"an infinite accumulated gradient",
       [](const std::string& n, io::ArrayInfo&, std::string& d) {
         if (n == "streams/s0/gradient") d.replace(0, 4, bytes_of(std::numeric_limits<float>::infinity()));
         return true;
       },
       "streams/s0/gradient must be finite, received inf"},
      {"a NaN in a step cache",
       [](const std::string& n, io::ArrayInfo&, std::string& d) {
         if (n == "streams/s0/l1/cache/y") d.replace(4, 4, bytes_of(std::numeric_limits<float>::quiet_NaN()));
         return true;
       },
       "streams/s0/l1/cache/y must be finite, received nan"},
      {"a learner's step count near INT64_MAX",
       [](const std::string& n, io::ArrayInfo&, std::string& d) {
         if (n == "streams/s0/steps") d = bytes_of(std::numeric_limits<std::int64_t>::max());
         return true;
       },
       "entry 'streams/s0/steps': expected a value in [0, 9007199254740992], found 9223372036854775807"},
      {"an optimizer's step count near INT64_MAX",
       [](const std::string& n, io::ArrayInfo&, std::string& d) {
         if (n == "adam0/steps") d = bytes_of(std::numeric_limits<std::int64_t>::max() - 1);
         return true;
       },
       "entry 'adam0/steps': expected a value in [0, 9007199254740992]"},
      {"a bool that is not 0 or 1",
       [](const std::string& n, io::ArrayInfo&, std::string& d) {
         if (n == "mask_weight_hh_l0") d[3] = 2;
         return true;
       },
       "entry 'mask_weight_hh_l0': bool element 3 is 2, expected 0 or 1"},
      {"an Adam checkpoint into an Sgd",
       [](const std::string& n, io::ArrayInfo&, std::string& d) {
         if (n == "sgd1/type") d = bytes_of(std::int64_t(2));
         return true;
       },
       "entry 'sgd1/type': expected 1 (Sgd; 2 is Adam, 3 AdamW), found 2"},
      {"an invalid optimizer option",
       [](const std::string& n, io::ArrayInfo&, std::string& d) {
         if (n == "adam0/beta1") d = bytes_of(1.5f);
         return true;
       },
       "optimizer 'adam0': sparse_rtrl::Adam::Adam(): options.beta1 must be in [0, 1), received 1.5"},
      {"a pruner past its events",
       [](const std::string& n, io::ArrayInfo&, std::string& d) {
         if (n == "pruner/events_done") d = bytes_of(std::int64_t(9));
         return true;
       },
       "entry 'pruner/events_done': expected a value in [0, 3], found 9"},
      {"a random engine of another length",
       [](const std::string& n, io::ArrayInfo& i, std::string& d) {
         if (n == "rng") {
           i.shape[0] -= 1;
           d.resize(d.size() - 8);
         }
         return true;
       },
       "entry 'rng': expected <u8 (uint64) of shape (313,), found <u8 (uint64) of shape (312,)"},
  };
  for (const Edit& e : edits) {
    INFO(e.what);
    rewrite(good, bad, e.edit);
    try {
      live.checkpoint().load(bad);
      FAIL("no exception");
    } catch (const std::invalid_argument& x) {
      INFO(x.what());
      CHECK(std::string(x.what()).find(e.message) != std::string::npos);
      CHECK(std::string(x.what()).find(bad) != std::string::npos);
    }
    live.checkpoint().save(after);
    REQUIRE(iotest::read_bytes(after) == before_bytes);  // not one value changed
  }
  // And the unedited file loads.
  rewrite(good, bad, [](const std::string&, io::ArrayInfo&, std::string&) { return true; });
  live.checkpoint().load(bad);
  live.checkpoint().save(after);
  REQUIRE(iotest::read_bytes(after) != before_bytes);
  REQUIRE(live.t == 6);
}

TEST_CASE("Checkpoint::save is atomic and checks its objects", "[io][checkpoint]") {
  iotest::TempDir dir;
  const std::string path = dir.file("run.npz");
  Run<double> run(1, 0, 1, 2, false, 8);
  run.step();
  run.checkpoint().save(path);
  const std::string first = iotest::read_bytes(path);
  run.step();
  run.checkpoint().save(path);  // replaces the file
  REQUIRE(iotest::read_bytes(path) != first);
  REQUIRE(dir.listing() == std::vector<std::string>{"run.npz"});

  // A save that fails half-way (an invalid name, met after the model was written) leaves the old
  // file and no temporary file.
  const std::string second = iotest::read_bytes(path);
  double value = 1;
  io::Checkpoint broken = run.checkpoint();
  broken.add("bad name", value);
  REQUIRE_THROWS_WITH(broken.save(path), Catch::Contains("entry name 'bad name' must be printable ASCII"));
  REQUIRE(iotest::read_bytes(path) == second);
  REQUIRE(dir.listing() == std::vector<std::string>{"run.npz"});

  // A learner whose model is not in the checkpoint: refused before anything is written.
  Model<double> other = make_model<double>(1, 3, false);
  Rtrl<double> stray(other);
  io::Checkpoint c;
  c.add(run.model).add("stray", stray);
  REQUIRE_THROWS_WITH(c.save(dir.file("stray.npz")), Catch::Contains("'stray' learns a model that is not in this checkpoint"));
  REQUIRE_THROWS_WITH(c.load(path), Catch::Contains("'stray' learns a model that is not in this checkpoint"));
  REQUIRE(dir.listing() == std::vector<std::string>{"run.npz"});

  // Two objects of one name, two models, no name.
  io::Checkpoint d;
  d.add("x", value);
  REQUIRE_THROWS_WITH(d.add("x", value), Catch::Contains("the name 'x' is taken"));
  REQUIRE_THROWS_WITH(d.add("", value), Catch::Contains("need a name"));
  d.add(run.model);
  REQUIRE_THROWS_WITH(d.add(other), Catch::Contains("holds one model"));

  // Operating-system errors are std::runtime_error.
  REQUIRE_THROWS_AS(run.checkpoint().save(dir.file("no/such/dir/run.npz")), std::runtime_error);
  REQUIRE_THROWS_AS(run.checkpoint().load(dir.file("missing.npz")), std::runtime_error);
}

TEST_CASE("load_model builds the saved model", "[io][checkpoint]") {
  iotest::TempDir dir;
  Run<float> run(2, 0, 1, 4, false, 2);
  for (int t = 0; t < 4; ++t) run.step();
  io::Checkpoint().add(run.model).save(dir.file("m.npz"));
  Model<float> copy = io::load_model<float>(dir.file("m.npz"));
  REQUIRE(copy.layers() == 2);
  for (Index k = 0; k < 2; ++k) {
    REQUIRE(same_bits(copy.parameters(k).W, run.model.parameters(k).W));
    REQUIRE(same_bits(copy.parameters(k).R, run.model.parameters(k).R));
    REQUIRE(same_bits(copy.parameters(k).theta, run.model.parameters(k).theta));
    REQUIRE(copy.mask(k) == run.model.mask(k));
    REQUIRE(copy.events(k));
    REQUIRE(copy.surrogate(k).eps() == 0.3f);
  }
  REQUIRE_THROWS_WITH(io::load_model<double>(dir.file("m.npz")),
                      Catch::Contains("entry 'weight_ih_l0': expected <f8 (float64) of shape (21, 3), found <f4"));
}

TEMPLATE_TEST_CASE("A load writes into the model's existing parameter storage", "[io][checkpoint]", float, double) {
  // Pointers into the parameters (and the Python bindings' NumPy views) must stay valid across a
  // load: it used to move-assign each layer's cell, freeing the buffers they pointed at.
  using S = TestType;
  iotest::TempDir dir;
  const std::string path = dir.file("m.npz");
  Model<S> saved = make_model<S>(2, 5, false);
  io::Checkpoint().add(saved).save(path);
  Model<S> live = make_model<S>(2, 9, true);
  std::vector<const S*> before;
  for (Index k = 0; k < 2; ++k) {
    const auto& p = live.parameters(k);
    for (const S* ptr : {p.W.data(), p.R.data(), p.bW.data(), p.bR.data(), p.theta.data()}) before.push_back(ptr);
  }
  io::Checkpoint().add(live).load(path);
  std::size_t i = 0;
  for (Index k = 0; k < 2; ++k) {
    const auto& p = live.parameters(k);
    for (const S* ptr : {p.W.data(), p.R.data(), p.bW.data(), p.bR.data(), p.theta.data()}) CHECK(ptr == before[i++]);
    CHECK(same_bits(p.W, saved.parameters(k).W));
    CHECK(same_bits(p.R, saved.parameters(k).R));
    CHECK(same_bits(p.bW, saved.parameters(k).bW));
    CHECK(same_bits(p.bR, saved.parameters(k).bR));
    CHECK(same_bits(p.theta, saved.parameters(k).theta));
    CHECK(live.mask(k) == saved.mask(k));
    CHECK(live.surrogate(k).eps() == saved.surrogate(k).eps());  // the surrogate is loaded too
  }
}

// ---- A type of the user's (here a toy learner) joins checkpoints in one place: its item and a
// CheckpointTraits specialisation. Nothing in io/checkpoint.hpp names it.
namespace {

/// A learner-like object: reads a model, keeps a per-unit trace and a step count.
template <typename S>
struct CkptToyLearner {
  explicit CkptToyLearner(Model<S>& m) : model(&m), trace(Vec<S>::Zero(m.units(0))) {}
  Model<S>* model;
  Vec<S> trace;
  std::int64_t steps = 0;
};

template <typename S>
class CkptToyItem : public io::CheckpointItem {
 public:
  CkptToyItem(std::string name, CkptToyLearner<S>& toy) : io::CheckpointItem(std::move(name)), toy_(&toy) {}
  const void* model() const override { return toy_->model; }
  void save(io::NpzWriter& w) const override {
    w.add(name() + "/trace", toy_->trace);
    w.add_scalar(name() + "/steps", toy_->steps);
  }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context& context) const override {
    if (context.model != toy_->model) r.fail("'" + name() + "' learns a model that is not in this checkpoint");
    auto trace = std::make_shared<Vec<S>>(toy_->trace.size());
    r.read_into(name() + "/trace", *trace);
    const std::int64_t steps = r.read_scalar<std::int64_t>(name() + "/steps");
    CkptToyLearner<S>* toy = toy_;
    return io::make_staged([toy, trace, steps]() {
      toy->trace.swap(*trace);
      toy->steps = steps;
    });
  }

 private:
  CkptToyLearner<S>* toy_;
};

struct CkptToyUnsupported {};

}  // namespace

namespace sparse_rtrl::io {
template <typename S>
struct CheckpointTraits<CkptToyLearner<S>> {
  using Item = CkptToyItem<S>;
};
}  // namespace sparse_rtrl::io

TEMPLATE_TEST_CASE("A type added through CheckpointTraits alone round-trips", "[io][checkpoint][traits]", float,
                   double) {
  using S = TestType;
  STATIC_REQUIRE(io::is_checkpointable<CkptToyLearner<S>>::value);
  STATIC_REQUIRE(io::is_checkpointable<Rtrl<S>>::value);
  STATIC_REQUIRE(io::is_checkpointable<Eigen::Array<S, 2, 3>>::value);
  STATIC_REQUIRE(!io::is_checkpointable<CkptToyUnsupported>::value);
  STATIC_REQUIRE(!io::is_checkpointable<std::vector<bool>>::value);

  iotest::TempDir dir;
  const std::string path = dir.file("toy.npz");
  Model<S> model = make_model<S>(1, 3, false);
  CkptToyLearner<S> toy(model);
  toy.trace = Vec<S>::LinSpaced(toy.trace.size(), S(-1.25), S(3.5));
  toy.steps = 17;
  io::Checkpoint().add(model).add("toy", toy).save(path);

  Model<S> fresh_model = make_model<S>(1, 8, true);
  CkptToyLearner<S> fresh(fresh_model);
  io::Checkpoint().add(fresh_model).add("toy", fresh).load(path);
  REQUIRE(same_bits(fresh.trace, toy.trace));
  REQUIRE(fresh.steps == 17);
  REQUIRE(same_bits(fresh_model.parameters(0).W, model.parameters(0).W));

  // The facade's checks apply to it as to the library's learners: its model must be added too,
  // and a file of another shape changes nothing.
  CkptToyLearner<S> stray(fresh_model);
  io::Checkpoint c;
  c.add(model).add("toy", stray);
  REQUIRE_THROWS_WITH(c.save(dir.file("stray.npz")), Catch::Contains("'toy' learns a model that is not in this checkpoint"));
  Model<S> other_model = make_model<S>(1, 9, true);
  CkptToyLearner<S> odd(other_model);
  odd.trace = Vec<S>::Constant(9, S(2));
  const Mat<S> W_before = other_model.parameters(0).W;
  REQUIRE_THROWS_WITH(io::Checkpoint().add(other_model).add("toy", odd).load(path), Catch::Contains("toy/trace"));
  REQUIRE(same_bits(odd.trace, Vec<S>::Constant(9, S(2))));
  REQUIRE(same_bits(other_model.parameters(0).W, W_before));
}
