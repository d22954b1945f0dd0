// Bindings of learners/ and streams/: Rtrl, Snap, TruncatedBptt, Uoro, Bptt, RtrlStreams, WorkCounters,
// InfluenceLayout.
// step(), accumulate_gradient(), forward() and backward() release the GIL: Python threads can
// drive independent learners in parallel.
#include <ctime>
#include <optional>
#include <sstream>
#include <vector>

namespace sparse_rtrl::python::SPARSE_RTRL_PY_NS {
namespace {

RtrlOptions rtrl_options(bool skip_silent_rows, int threads, bool flush_subnormals) {
  RtrlOptions o;
  o.skip_silent_rows = skip_silent_rows;
  o.threads = threads;
  o.flush_subnormals = flush_subnormals;
  return o;
}

py::dict options_dict(const RtrlOptions& o) {
  py::dict d;
  d["skip_silent_rows"] = o.skip_silent_rows;
  d["threads"] = o.threads;
  d["flush_subnormals"] = o.flush_subnormals;
  return d;
}

py::dict cache_dict(const EgruStepCache<Scalar>& c) {
  py::dict d;
  const std::pair<const char*, const Vector*> fields[] = {
      {"x", &c.x},     {"c_prev", &c.c_prev}, {"o_prev", &c.o_prev}, {"y_prev", &c.y_prev}, {"h_prev", &c.h_prev},
      {"psi_prev", &c.psi_prev}, {"s_prev", &c.s_prev}, {"a", &c.a}, {"q", &c.q},  {"r", &c.r},
      {"z", &c.z},     {"g", &c.g},           {"c", &c.c},           {"o", &c.o},           {"y", &c.y},
      {"psi", &c.psi}, {"s", &c.s},           {"dc_da", &c.dc_da},   {"dc_dq", &c.dc_dq},   {"decay", &c.decay}};
  for (const auto& f : fields) d[f.first] = Vector(*f.second);
  return d;
}

/// Optional loss matrices of a stack, one per layer (None: no loss on that layer).
std::vector<Matrix> layer_matrices(const py::object& list, const char* where, const char* name) {
  std::vector<Matrix> out;
  for (const auto& item : list) out.push_back(item.is_none() ? Matrix() : Matrix(mat(item, where, name)));
  return out;
}

bool is_sequence(const py::object& o) { return py::isinstance<py::list>(o) || py::isinstance<py::tuple>(o); }

template <typename Learner>
void common_rtrl_like(py::class_<Learner>& c) {
  c.def("zero_gradient", &Learner::zero_gradient)
      .def("reset_work", &Learner::reset_work)
      .def_property_readonly("influence_bytes", &Learner::influence_bytes);
}

py::dict options_dict(const TruncatedBpttOptions& o) {
  py::dict d;
  d["k"] = o.k;
  d["form"] = o.form;
  return d;
}

py::dict options_dict(const UoroOptions& o) {
  py::dict d;
  d["seed"] = o.seed;
  d["epsilon"] = o.epsilon;
  return d;
}

/// @brief The interface every learner built on LearnerBase shares (learner_base.hpp), bound as
/// Rtrl's is, with the same names, arguments, GIL release and one-object-one-thread guard: what
/// TruncatedBptt and Uoro have in common with Rtrl (not its influence, threads or mask following:
/// they refuse mask changes). @p kind is the Python class name ("Uoro"), used in the errors this
/// layer raises itself ("sparse_rtrl.Uoro.step(): x must be a vector ..."); the library's own
/// errors name the C++ class ("sparse_rtrl::Uoro::step(): ...").
template <typename Learner>
void bind_learner_base(py::class_<Learner>& c, const char* kind) {
  const std::string name = kind;
  const std::string step_where = name + ".step()", acc_where = name + ".accumulate_gradient()",
                    reset_where = name + ".reset()";
  c.def("model", [](Learner& l) -> PyModel& { return l.model(); }, py::return_value_policy::reference_internal,
        "The model this learner reads (C++: model()).")
      .def_property_readonly("layers", [](const Learner& l) { return l.layers(); })
      .def("units", [](const Learner& l, std::optional<Index> layer) { return layer ? l.units(*layer) : l.units(); },
           py::arg("layer") = py::none())
      .def_property_readonly("inputs", [](const Learner& l) { return l.inputs(); })
      .def_property_readonly("columns", [](const Learner& l) { return l.columns(); }, "Gradient columns over all layers.")
      .def("column_offset", [](const Learner& l, Index layer) { return l.column_offset(layer); }, py::arg("layer"))
      .def("layout", [](const Learner& l, Index layer) { return InfluenceLayout(l.layout(layer)); },
           py::arg("layer") = 0, "A copy of layer k's InfluenceLayout (which parameter owns which column).")
      .def("options", [](const Learner& l) { return options_dict(l.options()); }, "The options, as a dict.")
      .def(
          "step",
          [step_where, kind](Learner& l, const py::object& arg) {
            const VecIn x = vec(arg, step_where, "x");
            const ObjectGuard guard(&l, step_where.c_str(), kind, &l.model());
            py::gil_scoped_release nogil;
            l.step(x);
          },
          py::arg("x"),
          "Advances every layer's state for input x (size d, finite), and the learner's own state. Releases the GIL.")
      .def(
          "accumulate_gradient",
          [acc_where, kind](Learner& l, const py::object& dy, const py::object& d_o, std::optional<Index> layer) {
            const Index k = layer ? *layer : l.layers() - 1;
            const VecIn dL_dy = vec(dy, acc_where, "dL_dy");
            const ObjectGuard guard(&l, acc_where.c_str(), kind, &l.model());
            if (!d_o.is_none()) {
              const VecIn dL_do = vec(d_o, acc_where, "dL_do");
              py::gil_scoped_release nogil;
              l.accumulate_gradient_at(k, dL_dy, dL_do);
            } else {
              py::gil_scoped_release nogil;
              l.accumulate_gradient_at(k, dL_dy);
            }
          },
          py::arg("dL_dy"), py::arg("dL_do") = py::none(), py::arg("layer") = py::none(),
          "As Rtrl's: a loss on this step's output of layer k (default: the top layer), given dL/dy_t and optionally "
          "dL/do_t. Releases the GIL.")
      .def("gradient", [](const Learner& l, std::optional<Index> k) { return k ? l.gradient(*k) : l.gradient(); },
           py::arg("layer") = py::none(),
           "The accumulated gradient (an EgruParameters copy) of a one-layer model, or of layer k.")
      .def(
          "gradients",
          [](const Learner& l) {
            std::vector<Params> out;
            for (Index k = 0; k < l.layers(); ++k) out.push_back(l.gradient(k));
            return out;
          },
          "One gradient per layer.")
      .def("gradient_columns", [](const Learner& l) { return Vector(l.gradient_columns()); },
           "The accumulated gradient per column (a copy).")
      .def("zero_gradient", [](Learner& l) { l.zero_gradient(); })
      .def(
          "reset",
          [reset_where](Learner& l, const py::object& arg) {
            const auto c0 = opt_vec(arg, reset_where, "c0");
            c0 ? l.reset(*c0) : l.reset();
          },
          py::arg("c0") = py::none(),
          "Starts a new sequence from c_0 = 0 (or the given c0, one-layer models); keeps the gradient.")
      .def("state", [](const Learner& l, std::optional<Index> k) { return Vector(k ? l.state(*k) : l.state()); },
           py::arg("layer") = py::none(), "c_t of the top layer (or of layer k), a copy.")
      .def("output", [](const Learner& l, std::optional<Index> k) { return Vector(k ? l.output(*k) : l.output()); },
           py::arg("layer") = py::none(), "y_t = o_t c_t of the last step (a copy).")
      .def("events", [](const Learner& l, std::optional<Index> k) { return Vector(k ? l.events(*k) : l.events()); },
           py::arg("layer") = py::none(), "o_t of the last step (a copy).")
      .def(
          "output_derivative",
          [](const Learner& l, std::optional<Index> k) { return Vector(k ? l.output_derivative(*k) : l.output_derivative()); },
          py::arg("layer") = py::none(), "s_t = dy_t/dc_t of the last step (a copy).")
      .def(
          "last_step_cache",
          [](const Learner& l, std::optional<Index> k) { return cache_dict(k ? l.last_step_cache(*k) : l.last_step_cache()); },
          py::arg("layer") = py::none(), "Everything the last step computed (gates, local derivatives), as copies.")
      .def_property_readonly("steps", [](const Learner& l) { return l.steps(); })
      .def(
          "last_step_work",
          [](const Learner& l, std::optional<Index> k) { return WorkCounters(k ? l.last_step_work(*k) : l.last_step_work()); },
          py::arg("layer") = py::none())
      .def(
          "total_work",
          [](const Learner& l, std::optional<Index> k) { return WorkCounters(k ? l.total_work(*k) : l.total_work()); },
          py::arg("layer") = py::none(), "Work since the last reset_work(), over all layers or of layer k.")
      .def("reset_work", [](Learner& l) { l.reset_work(); });
}

}  // namespace

void bind_learners(py::module_& core, py::module_& m) {

  py::class_<PyRtrl> rtrl(m, "Rtrl",
                          "Exact RTRL over a Model (kept alive): advances state and influence matrix together. "
                          "Per step: step(x); for a loss, accumulate_gradient(dL_dy). Stacks: losses on any layer "
                          "(layer=k), gradient(k) per layer.");
  rtrl.def(py::init([](PyModel& model, bool skip_silent_rows, int threads, bool flush_subnormals) {
             return std::make_unique<PyRtrl>(model, rtrl_options(skip_silent_rows, threads, flush_subnormals));
           }),
           py::arg("model"), py::kw_only(), py::arg("skip_silent_rows") = true, py::arg("threads") = 1,
           py::arg("flush_subnormals") = true, py::keep_alive<1, 2>(),
           "skip_silent_rows=False is the dense-RTRL baseline; threads splits each step's columns (bitwise the same "
           "result for any count); flush_subnormals=False is strict IEEE.")
      .def("model", py::overload_cast<>(&PyRtrl::model), py::return_value_policy::reference_internal,
           "The model this learner reads (C++: model()).")
      .def_property_readonly("layers", &PyRtrl::layers)
      .def("units", [](const PyRtrl& r, py::object layer) { return layer.is_none() ? r.units() : r.units(layer.cast<Index>()); },
           py::arg("layer") = py::none())
      .def_property_readonly("inputs", &PyRtrl::inputs)
      .def_property_readonly("columns", &PyRtrl::columns, "Influence columns over all layers.")
      .def("column_offset", &PyRtrl::column_offset, py::arg("layer"))
      .def("layout", [](const PyRtrl& r, Index layer) { return r.layout(layer); }, py::arg("layer") = 0,
           "A copy of layer k's InfluenceLayout.")
      .def("options", [](const PyRtrl& r) { return options_dict(r.options()); }, "The options, as a dict.")
      .def_property_readonly("threads", &PyRtrl::threads)
      .def(
          "step",
          [](PyRtrl& r, const py::object& arg) {
            const VecIn x = vec(arg, "Rtrl.step()", "x");
            const ObjectGuard guard(&r, "Rtrl.step()", "Rtrl", &r.model());
            py::gil_scoped_release nogil;
            r.step(x);
          },
          py::arg("x"),
           "Advances every layer's state and influence matrix for input x (size d, finite). Releases the GIL.")
      .def(
          "accumulate_gradient",
          [](PyRtrl& r, const py::object& dy, const py::object& d_o, std::optional<Index> layer) {
            const Index k = layer ? *layer : r.layers() - 1;
            const VecIn dL_dy = vec(dy, "Rtrl.accumulate_gradient()", "dL_dy");
            const ObjectGuard guard(&r, "Rtrl.accumulate_gradient()", "Rtrl", &r.model());
            if (!d_o.is_none()) {
              const VecIn dL_do = vec(d_o, "Rtrl.accumulate_gradient()", "dL_do");
              py::gil_scoped_release nogil;
              r.accumulate_gradient_at(k, dL_dy, dL_do);
            } else {
              py::gil_scoped_release nogil;
              r.accumulate_gradient_at(k, dL_dy);
            }
          },
          py::arg("dL_dy"), py::arg("dL_do") = py::none(), py::arg("layer") = py::none(),
          "Adds the gradient of a loss on this step's output of layer k (default: the top layer), given dL/dy_t "
          "and optionally dL/do_t (a loss on the events). Releases the GIL.")
      .def(
          "gradient",
          [](const PyRtrl& r, std::optional<Index> layer) { return layer ? r.gradient(*layer) : r.gradient(); },
          py::arg("layer") = py::none(),
          "The accumulated gradient (an EgruParameters copy) of a one-layer model, or of layer k.")
      .def(
          "gradients",
          [](const PyRtrl& r) {
            std::vector<Params> out;
            for (Index k = 0; k < r.layers(); ++k) out.push_back(r.gradient(k));
            return out;
          },
          "One gradient per layer.")
      .def("gradient_columns", [](const PyRtrl& r) { return Vector(r.gradient_columns()); },
           "The accumulated gradient per influence column (a copy).")
      .def(
          "reset",
          [](PyRtrl& r, const py::object& arg) {
            const auto c0 = opt_vec(arg, "Rtrl.reset()", "c0");
            c0 ? r.reset(*c0) : r.reset();
          },
          py::arg("c0") = py::none(),
          "Starts a new sequence from c_0 = 0 (or the given c0, one-layer models); keeps the gradient.")
      .def("set_mask",
           [](PyRtrl& o, const ParameterMask& mask, Index layer) {
             ObjectGuard::require_model_idle(&o.model(), "Rtrl.set_mask()");
             o.set_mask(mask, layer);
           }, py::arg("mask"), py::arg("layer") = 0,
           "Sets the model's mask of layer k and re-lays this learner's columns now.")
      .def("follow_mask", &PyRtrl::follow_mask)
      .def("state", [](const PyRtrl& r, std::optional<Index> k) { return Vector(k ? r.state(*k) : r.state()); },
           py::arg("layer") = py::none(), "c_t of the top layer (or of layer k), a copy.")
      .def("output", [](const PyRtrl& r, std::optional<Index> k) { return Vector(k ? r.output(*k) : r.output()); },
           py::arg("layer") = py::none(), "y_t = o_t c_t of the last step (a copy).")
      .def("events", [](const PyRtrl& r, std::optional<Index> k) { return Vector(k ? r.events(*k) : r.events()); },
           py::arg("layer") = py::none(), "o_t of the last step (a copy).")
      .def(
          "output_derivative",
          [](const PyRtrl& r, std::optional<Index> k) { return Vector(k ? r.output_derivative(*k) : r.output_derivative()); },
          py::arg("layer") = py::none(), "s_t = dy_t/dc_t of the last step (a copy).")
      .def(
          "last_step_cache",
          [](const PyRtrl& r, std::optional<Index> k) { return cache_dict(k ? r.last_step_cache(*k) : r.last_step_cache()); },
          py::arg("layer") = py::none(), "Everything the last step computed (gates, local derivatives), as copies.")
      .def(
          "influence",
          [](const PyRtrl& r, std::optional<Index> k) { return RowMatrix(k ? r.influence(*k) : r.influence()); },
          py::arg("layer") = py::none(),
          "M_t (n x P_kept; layer k: its blocks over the columns of layers 0..k), a copy: the storage is re-laid "
          "when the mask changes.")
      .def_property_readonly("steps", &PyRtrl::steps)
      .def_property_readonly("scratch_bytes", &PyRtrl::scratch_bytes)
      .def(
          "last_step_work",
          [](const PyRtrl& r, std::optional<Index> k) { return k ? r.last_step_work(*k) : r.last_step_work(); },
          py::arg("layer") = py::none())
      .def(
          "total_work", [](const PyRtrl& r, std::optional<Index> k) { return k ? r.total_work(*k) : r.total_work(); },
          py::arg("layer") = py::none(), "Work since the last reset_work(), over all layers or of layer k.");
  common_rtrl_like(rtrl);

  // For bench/python_overhead.py: the Python benchmark's loop (step + accumulate_gradient with a
  // fixed g, inputs X[t % T] from t = start) run in C++ inside this module, so the Python layer's
  // cost can be told from differences of compilation between this module and bench_suite.
  // Runs until min_seconds of process CPU time (std::clock) have passed, reading the clock every
  // 16 steps; returns (CPU seconds, steps).
  m.def(
      "_time_rtrl_loop",
      [](PyRtrl& r, const py::object& X_arg, const py::object& g_arg, Index start, double min_seconds) {
        const MatIn X = mat(X_arg, "_time_rtrl_loop()", "X");
        const VecIn g = vec(g_arg, "_time_rtrl_loop()", "g");
        const ObjectGuard guard(&r, "_time_rtrl_loop()", "Rtrl", &r.model());
        py::gil_scoped_release nogil;
        const std::clock_t begin = std::clock();
        double elapsed = 0;
        Index t = start, steps = 0;
        while (elapsed < min_seconds) {
          for (int k = 0; k < 16; ++k, ++t) {
            r.step(X.row(t % X.rows()));
            r.accumulate_gradient(g);
          }
          steps += 16;
          elapsed = double(std::clock() - begin) / CLOCKS_PER_SEC;
        }
        return std::make_pair(elapsed, steps);
      },
      py::arg("rtrl"), py::arg("X"), py::arg("g"), py::arg("start"), py::arg("min_seconds"));

  m.def(
      "_input_address",
      [](const py::object& x) { return reinterpret_cast<std::uintptr_t>(vec(x, "_input_address()", "x").data()); },
      py::arg("x"), "For tests: where step() reads a vector argument x from (no copy: the array's own data).");

  py::class_<PySnap>(m, "Snap",
                     "SnAp-n (Menick et al. 2021), the approximate baseline, for one layer or a stack (Rtrl's "
                     "interface); exact at covering_order with the graph pattern.")
      .def(py::init([](PyModel& model, int order, SnapCrossLayer cross_layer) {
             return std::make_unique<PySnap>(model, SnapOptions{order, cross_layer});
           }),
           py::arg("model"), py::arg("order"), py::kw_only(), py::arg("cross_layer") = SnapCrossLayer::graph,
           py::keep_alive<1, 2>())
      .def_property_readonly("order", [](const PySnap& s) { return s.order(); })
      .def_property_readonly("cross_layer", [](const PySnap& s) { return s.options().cross_layer; })
      .def_property_readonly("covering_order", [](const PySnap& s) { return s.covering_order(); },
                             "The order from which on the pattern no longer grows (exact RTRL with the graph pattern).")
      .def_property_readonly("layers", [](const PySnap& s) { return s.layers(); })
      .def("units", [](const PySnap& s, std::optional<Index> k) { return k ? s.units(*k) : s.units(); },
           py::arg("layer") = py::none())
      .def_property_readonly("inputs", [](const PySnap& s) { return s.inputs(); })
      .def_property_readonly("columns", [](const PySnap& s) { return s.columns(); })
      .def_property_readonly("kept_entries", [](const PySnap& s) { return s.kept_entries(); })
      .def("layout", [](const PySnap& s, Index k) { return InfluenceLayout(s.layout(k)); }, py::arg("layer") = 0)
      .def(
          "kept_rows",
          [](const PySnap& s, Index u, Index k) {
            if (u < 0 || u >= s.units(k))
              throw std::out_of_range("sparse_rtrl.Snap.kept_rows(): unit must be in [0, " + std::to_string(s.units(k)) +
                                      "), received " + std::to_string(u));
            return std::vector<Index>(s.kept_rows(k, u));
          },
          py::arg("unit"), py::arg("layer") = 0, "Rows kept for the parameters of unit u of layer k.")
      .def(
          "step",
          [](PySnap& s, const py::object& arg) {
            const VecIn x = vec(arg, "Snap.step()", "x");
            const ObjectGuard guard(&s, "Snap.step()", "Snap", &s.model());
            py::gil_scoped_release nogil;
            s.step(x);
          },
          py::arg("x"), "Releases the GIL.")
      .def(
          "accumulate_gradient",
          [](PySnap& s, const py::object& dy, const py::object& d_o, std::optional<Index> layer) {
            const Index k = layer ? *layer : s.layers() - 1;
            const VecIn dL_dy = vec(dy, "Snap.accumulate_gradient()", "dL_dy");
            const ObjectGuard guard(&s, "Snap.accumulate_gradient()", "Snap", &s.model());
            if (!d_o.is_none()) {
              const VecIn dL_do = vec(d_o, "Snap.accumulate_gradient()", "dL_do");
              py::gil_scoped_release nogil;
              s.accumulate_gradient_at(k, dL_dy, dL_do);
            } else {
              py::gil_scoped_release nogil;
              s.accumulate_gradient_at(k, dL_dy);
            }
          },
          py::arg("dL_dy"), py::arg("dL_do") = py::none(), py::arg("layer") = py::none(), "As Rtrl's. Releases the GIL.")
      .def("gradient", [](const PySnap& s, std::optional<Index> k) { return k ? s.gradient(*k) : s.gradient(); },
           py::arg("layer") = py::none())
      .def(
          "gradients",
          [](const PySnap& s) {
            std::vector<Params> out;
            for (Index k = 0; k < s.layers(); ++k) out.push_back(s.gradient(k));
            return out;
          })
      .def("gradient_columns", [](const PySnap& s) { return Vector(s.gradient_columns()); })
      .def("zero_gradient", [](PySnap& s) { s.zero_gradient(); })
      .def("reset", [](PySnap& s) { s.reset(); })
      .def("state", [](const PySnap& s, std::optional<Index> k) { return Vector(k ? s.state(*k) : s.state()); },
           py::arg("layer") = py::none())
      .def("output", [](const PySnap& s, std::optional<Index> k) { return Vector(k ? s.output(*k) : s.output()); },
           py::arg("layer") = py::none())
      .def("events", [](const PySnap& s, std::optional<Index> k) { return Vector(k ? s.events(*k) : s.events()); },
           py::arg("layer") = py::none())
      .def_property_readonly("steps", [](const PySnap& s) { return s.steps(); })
      .def(
          "last_step_work",
          [](const PySnap& s, std::optional<Index> k) { return WorkCounters(k ? s.last_step_work(*k) : s.last_step_work()); },
          py::arg("layer") = py::none())
      .def(
          "total_work",
          [](const PySnap& s, std::optional<Index> k) { return WorkCounters(k ? s.total_work(*k) : s.total_work()); },
          py::arg("layer") = py::none())
      .def("reset_work", [](PySnap& s) { s.reset_work(); })
      .def_property_readonly("influence_bytes", [](const PySnap& s) { return s.influence_bytes(); });

  py::class_<PyTbptt> tbptt(
      m, "TruncatedBptt",
      "Truncated BPTT as an online learner over a Model (kept alive), with Rtrl's interface: per step step(x); for a "
      "loss, accumulate_gradient(dL_dy). Each loss is back-propagated through at most k steps: form every_step "
      "(TBPTT(k, 1)) at once through the last k steps, form every_k_steps (TBPTT(k, k)) a block's losses together "
      "at the block's end (block_complete; flush() ends a shorter last block). k >= T is BPTT. Mask changes are "
      "refused: construct a new TruncatedBptt.");
  tbptt.def(py::init([](PyModel& model, Index k, TruncationForm form) {
              return std::make_unique<PyTbptt>(model, TruncatedBpttOptions{k, form});
            }),
            py::arg("model"), py::arg("k") = TruncatedBpttOptions{}.k, py::kw_only(), py::arg("form") = TruncatedBpttOptions{}.form,
            py::keep_alive<1, 2>(),
            "k: the steps back-propagated through (>= 1; C++: TruncatedBpttOptions::k); form: "
            "TruncationForm.every_step or every_k_steps.");
  bind_learner_base(tbptt, "TruncatedBptt");
  tbptt.def_property_readonly("window", [](const PyTbptt& b) { return b.window(); },
                              "The window (every_step) or block (every_k_steps) length k.")
      .def_property_readonly("block_complete", [](const PyTbptt& b) { return b.block_complete(); },
                             "Form every_k_steps: true after the last step of a block, whose losses its last "
                             "accumulate_gradient() back-propagated (the moment to update).")
      .def(
          "flush",
          [](PyTbptt& b) {
            const ObjectGuard guard(&b, "TruncatedBptt.flush()", "TruncatedBptt", &b.model());
            py::gil_scoped_release nogil;
            b.flush();
          },
          "Form every_k_steps: back-propagates the losses kept since the block began, now (e.g. a sequence's "
          "shorter last block). Nothing to do in form every_step. Releases the GIL.")
      .def_property_readonly("window_bytes", [](const PyTbptt& b) { return b.window_bytes(); },
                             "Bytes of the window over all layers (k step caches and pending losses per layer).");

  py::class_<PyUoro> uoro(
      m, "Uoro",
      "UORO (Tallec & Ollivier 2017) as an online learner over a Model (kept alive), with Rtrl's interface: a "
      "rank-one estimate s~ theta~^T of the influence matrix, unbiased (its gradient's mean over sign draws is "
      "RTRL's) and noisy. The signs come from a generator seeded by seed; checkpoints restore its state. Mask "
      "changes are refused: construct a new Uoro.");
  uoro.def(py::init([](PyModel& model, std::uint64_t seed, double epsilon) {
             return std::make_unique<PyUoro>(model, UoroOptions{seed, epsilon});
           }),
           py::arg("model"), py::kw_only(), py::arg("seed") = UoroOptions{}.seed, py::arg("epsilon") = UoroOptions{}.epsilon,
           py::keep_alive<1, 2>(),
           "seed: the sign generator's initial state; epsilon: the guard of the normalisers (finite, > 0) "
           "(C++: UoroOptions).");
  bind_learner_base(uoro, "Uoro");
  uoro.def("state_factor", [](const PyUoro& u, Index k) { return Vector(u.state_factor(k)); }, py::arg("layer") = 0,
           "s~ of layer k (its n_k entries of the state factor), a copy.")
      .def("parameter_factor", [](const PyUoro& u, Index k) { return Vector(u.parameter_factor(k)); },
           py::arg("layer") = 0, "theta~ over layer k's own columns (column_offset(k) + [0, layout(k).columns())), a copy.")
      .def_property_readonly("sign_state", [](const PyUoro& u) { return u.sign_state(); },
                             "The sign generator's state (what the next step draws from).")
      .def("set_sign_state", [](PyUoro& u, std::uint64_t state) { u.set_sign_state(state); }, py::arg("state"),
           "Sets the sign generator's state (to reseed).")
      .def_property_readonly("state_bytes", [](const PyUoro& u) { return u.state_bytes(); },
                             "Bytes of the rank-one pair over all layers ((n + P_kept) scalars).");

  py::class_<PyBptt>(m, "Bptt",
                     "Back-propagation through time over a stored sequence (the reference gradient), one layer or a "
                     "stack. forward(X) then backward(G).")
      .def(py::init([](PyModel& model, bool exploit_events) {
             return std::make_unique<PyBptt>(model, BpttOptions{exploit_events});
           }),
           py::arg("model"), py::kw_only(), py::arg("exploit_events") = false, py::keep_alive<1, 2>())
      .def_property_readonly("layers", &PyBptt::layers)
      .def_property_readonly("inputs", &PyBptt::inputs)
      .def_property_readonly("length", &PyBptt::length)
      .def(
          "forward",
          [](PyBptt& b, const py::object& X_arg, const py::object& c0) {
            const MatIn X = mat(X_arg, "Bptt.forward()", "X");
            const ObjectGuard guard(&b, "Bptt.forward()", "Bptt", &b.model());
            if (c0.is_none()) {
              py::gil_scoped_release nogil;
              return Matrix(b.forward(X));
            }
            if (is_sequence(c0)) {
              std::vector<Vector> states;
              for (const auto& item : c0) states.push_back(Vector(vec(item, "Bptt.forward()", "c0")));
              py::gil_scoped_release nogil;
              return Matrix(b.forward(X, states));
            }
            const Vector state = vec(c0, "Bptt.forward()", "c0");
            py::gil_scoped_release nogil;
            return Matrix(b.forward(X, state));
          },
          py::arg("X"), py::arg("c0") = py::none(),
          "Runs X (T x d, one step per row) from zero states (or c0: one vector, or one per layer) and returns the top "
          "layer's outputs (T x n). Releases the GIL.")
      .def("outputs", [](const PyBptt& b, std::optional<Index> k) { return Matrix(k ? b.outputs(*k) : b.outputs()); },
           py::arg("layer") = py::none(), "Outputs of the last forward(), T x n (top layer, or layer k).")
      .def(
          "backward",
          [](PyBptt& b, const py::object& G, const py::object& G_events) -> py::object {
            const ObjectGuard guard(&b, "Bptt.backward()", "Bptt", &b.model());
            if (is_sequence(G)) {
              const std::vector<Matrix> Gs = layer_matrices(G, "Bptt.backward()", "G");
              if (G_events.is_none()) {
                std::vector<Params> out;
                {
                  py::gil_scoped_release nogil;
                  out = b.backward(Gs);
                }
                return py::cast(std::move(out));
              }
              if (!is_sequence(G_events))
                fail("Bptt.backward()", "G is a list (one loss per layer): G_events must be a list too");
              const std::vector<Matrix> Ge = layer_matrices(G_events, "Bptt.backward()", "G_events");
              std::vector<Params> out;
              {
                py::gil_scoped_release nogil;
                out = b.backward(Gs, Ge);
              }
              return py::cast(std::move(out));
            }
            const Matrix g = mat(G, "Bptt.backward()", "G");
            if (G_events.is_none()) {
              Params out;
              {
                py::gil_scoped_release nogil;
                out = b.backward(g);
              }
              return py::cast(std::move(out));
            }
            const Matrix ge = mat(G_events, "Bptt.backward()", "G_events");
            Params out;
            {
              py::gil_scoped_release nogil;
              out = b.backward(g, ge);
            }
            return py::cast(std::move(out));
          },
          py::arg("G"), py::arg("G_events") = py::none(),
          "Gradient for dL/dy_t = G[t] (T x n) after forward(): an EgruParameters (one-layer model). Stacks: G is a "
          "list with one T x n_k array (or None) per layer, and the result one EgruParameters per layer. G_events: "
          "dL/do_t in the same form. Releases the GIL.")
      .def("initial_state_gradient", [](const PyBptt& b, Index k) { return Vector(b.initial_state_gradient(k)); },
           py::arg("layer") = 0)
      .def("step_cache", [](const PyBptt& b, Index t, Index k) { return cache_dict(b.step_cache(k, t)); },
           py::arg("t"), py::arg("layer") = 0, "Everything step t of layer k computed in the last forward(), as copies.")
      .def("work", [](const PyBptt& b) { return b.work(); }, "BpttWork of the last forward() and backward().")
      .def_property_readonly("history_bytes", &PyBptt::history_bytes);

  py::class_<PyStreams>(m, "RtrlStreams",
                        "B streams learning one Model (kept alive) by exact RTRL, advanced together; the gradient is "
                        "summed in stream order (bitwise the same for any number of threads).")
      .def(py::init([](PyModel& model, Index streams, bool skip_silent_rows, int threads, bool flush_subnormals) {
             return std::make_unique<PyStreams>(model, streams, rtrl_options(skip_silent_rows, threads, flush_subnormals));
           }),
           py::arg("model"), py::arg("streams"), py::kw_only(), py::arg("skip_silent_rows") = true,
           py::arg("threads") = 1, py::arg("flush_subnormals") = true, py::keep_alive<1, 2>())
      .def_property_readonly("streams", &PyStreams::streams)
      .def("units", [](const PyStreams& s) { return s.units(); })
      .def_property_readonly("inputs", &PyStreams::inputs)
      .def_property_readonly("layers", &PyStreams::layers)
      .def_property_readonly("threads", &PyStreams::threads)
      .def("options", [](const PyStreams& s) { return options_dict(s.options()); })
      .def(
          "step",
          [](PyStreams& s, const py::object& X_arg) {
            const MatIn X = mat(X_arg, "RtrlStreams.step()", "X");
            const ObjectGuard guard(&s, "RtrlStreams.step()", "RtrlStreams", &s.model());
            py::gil_scoped_release nogil;
            s.step(X);
          },
          py::arg("X"),
           "Row b of X (B x d) is stream b's input. Releases the GIL.")
      .def(
          "accumulate_gradient",
          [](PyStreams& s, const py::object& G_arg, const py::object& Ge_arg) {
            const MatIn G = mat(G_arg, "RtrlStreams.accumulate_gradient()", "G");
            std::optional<MatIn> G_events;
            if (!Ge_arg.is_none()) G_events.emplace(mat(Ge_arg, "RtrlStreams.accumulate_gradient()", "G_events"));
            const ObjectGuard guard(&s, "RtrlStreams.accumulate_gradient()", "RtrlStreams", &s.model());
            py::gil_scoped_release nogil;
            if (G_events) s.accumulate_gradient(G, *G_events);
            else s.accumulate_gradient(G);
          },
          py::arg("G"), py::arg("G_events") = py::none(),
          "Row b of G (B x n) is dL/dy_t of stream b (zeros: no loss). Releases the GIL.")
      .def("gradient", [](PyStreams& s, std::optional<Index> k) { return k ? s.gradient(*k) : s.gradient(); },
           py::arg("layer") = py::none(), "Sum over streams of the accumulated gradients (one-layer model, or layer k).")
      .def(
          "gradients",
          [](PyStreams& s) {
            std::vector<Params> out;
            for (Index k = 0; k < s.layers(); ++k) out.push_back(s.gradient(k));
            return out;
          })
      .def("gradient_columns", [](PyStreams& s) { return Vector(s.gradient_columns()); })
      .def("zero_gradient", &PyStreams::zero_gradient)
      .def(
          "reset",
          [](PyStreams& s, std::optional<Index> b, const py::object& arg) {
            const auto c0 = opt_vec(arg, "RtrlStreams.reset()", "c0");
            if (!b) {
              if (c0) fail("RtrlStreams.reset()", "c0 needs a stream index b");
              s.reset();
            } else if (c0) {
              s.reset(*b, *c0);
            } else {
              s.reset(*b);
            }
          },
          py::arg("b") = py::none(), py::arg("c0") = py::none(),
          "Every stream (or stream b, optionally from c0) starts a new sequence; gradients are kept.")
      .def("set_mask",
           [](PyStreams& o, const ParameterMask& mask, Index layer) {
             ObjectGuard::require_model_idle(&o.model(), "RtrlStreams.set_mask()");
             o.set_mask(mask, layer);
           },
           py::arg("mask"), py::arg("layer") = 0)
      .def("follow_mask", &PyStreams::follow_mask)
      .def("outputs", [](const PyStreams& s) { return Matrix(s.outputs()); }, "y_t of every stream, B x n (a copy).")
      .def("events", [](const PyStreams& s) { return Matrix(s.events()); }, "o_t of every stream, B x n (a copy).")
      .def("stream_state", [](const PyStreams& s, Index b, std::optional<Index> k) {
             const PyRtrl& r = s.stream(b);
             return Vector(k ? r.state(*k) : r.state());
           }, py::arg("b"), py::arg("layer") = py::none())
      .def("stream_gradient", [](const PyStreams& s, Index b, Index k) { return s.stream(b).gradient(k); },
           py::arg("b"), py::arg("layer") = 0, "Stream b's own accumulated gradient of layer k.")
      .def_property_readonly("influence_bytes", &PyStreams::influence_bytes)
      .def_property_readonly("state_bytes", &PyStreams::state_bytes)
      .def("total_work", &PyStreams::total_work)
      .def("last_step_work", &PyStreams::last_step_work)
      .def("reset_work", &PyStreams::reset_work);

  // The typed method of the common InfluenceLayout (module.cpp): one overload per dtype.
  auto layout = py::reinterpret_borrow<py::class_<InfluenceLayout>>(core.attr("InfluenceLayout"));
  layout.def(
      "scatter",
      [](const InfluenceLayout& l, py::array_t<Scalar, py::array::c_style> arg) {
        const VecIn columns = vec(arg, "InfluenceLayout.scatter()", "columns");
        if (columns.size() != l.columns())
          fail("InfluenceLayout.scatter()", "columns must have size " + std::to_string(l.columns()) + ", received " +
                                                std::to_string(columns.size()));
        Params out(l.units(), l.inputs());
        l.scatter(columns, out);
        return out;
      },
      py::arg("columns").noconvert(),
      "Per-column values (size P_kept) in parameter layout (pruned entries zero), an EgruParameters of the columns' "
      "dtype (float32 or float64).");
}

}  // namespace sparse_rtrl::python::SPARSE_RTRL_PY_NS
