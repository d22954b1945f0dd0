// The compiled part of the Python package sparse_rtrl: sparse_rtrl._core (pybind11). Module
// initialisation and the classes that do not depend on the scalar type; the library's typed
// classes are bound twice, into the submodules _core.float32 and _core.float64 (typed.hpp), and
// the package's top level (sparse_rtrl/__init__.py) picks them by dtype.
//
// Exceptions: the library's std::invalid_argument (bad input) becomes ValueError with the same
// message and std::out_of_range (a layer or stream index) IndexError, both pybind11's defaults;
// std::length_error, which the library throws when learning state would exceed the machine's
// memory, becomes MemoryError; std::logic_error (calls in the wrong order, e.g.
// accumulate_gradient() before any step()) becomes RuntimeError. An array of the wrong dtype is a
// TypeError (common.hpp, checked_array).
#include "common.hpp"

#include <sstream>
#include <stdexcept>

namespace sparse_rtrl::python {
namespace {

/// A row index rr in [0, 3n) and column index in [0, cols) for the layout's lookups.
void require_entry(const InfluenceLayout& l, const char* what, Index rr, Index j, Index cols) {
  if (rr < 0 || rr >= 3 * l.units() || j < 0 || j >= cols)
    throw std::out_of_range(std::string("sparse_rtrl.InfluenceLayout.") + what + ": entry must be in [0, " +
                            std::to_string(3 * l.units()) + ") x [0, " + std::to_string(cols) + "), received (" +
                            std::to_string(rr) + ", " + std::to_string(j) + ")");
}

}  // namespace

void bind_common(py::module_& m) {
  py::enum_<MaskSharing>(m, "MaskSharing", "How a mask's pattern relates across the gate blocks (r, z, g).")
      .value("independent", MaskSharing::independent)
      .value("gate_shared", MaskSharing::gate_shared);

  m.def(
      "uniform_random",
      [](std::uint64_t seed, std::vector<py::ssize_t> shape, double low, double high, const py::object& dtype) {
        py::array_t<double> out(shape);
        detail::UniformRandom rng(seed);
        double* data = out.mutable_data();
        for (py::ssize_t i = 0; i < out.size(); ++i) data[i] = rng.uniform(low, high);
        if (dtype.is_none() || py::dtype::from_args(dtype).is(py::dtype::of<double>())) return py::array(out);
        if (py::dtype::from_args(dtype).is(py::dtype::of<float>())) return py::array(out.attr("astype")("float32"));
        fail_type("uniform_random()", "dtype must be float32 or float64, received " + std::string(py::str(dtype)));
      },
      py::arg("seed"), py::arg("shape"), py::arg("low") = 0.0, py::arg("high") = 1.0, py::arg("dtype") = py::none(),
      "Uniform numbers in [low, high) from the library's portable generator (mt19937_64, 53 bits), filled in C "
      "order: the same numbers as the C++ code (e.g. the benchmarks' inputs) on every platform. dtype=float32 rounds "
      "them (as a C++ float program casting the generator's double does).");

  py::class_<ParameterMask>(m, "ParameterMask",
                            "Boolean keep-masks of W (3n x d) and R (3n x n), torch layout; biases and thresholds are "
                            "never masked.")
      .def(py::init<ParameterMask::BoolMatrix, ParameterMask::BoolMatrix>(), py::arg("keep_W"), py::arg("keep_R"))
      .def_static("dense", &ParameterMask::dense, py::arg("units"), py::arg("inputs"))
      .def_static("random", &ParameterMask::random, py::arg("units"), py::arg("inputs"), py::arg("density_W"),
                  py::arg("density_R"), py::arg("seed") = 0, py::arg("sharing") = MaskSharing::independent)
      .def_property_readonly("W", [](const ParameterMask& k) { return ParameterMask::BoolMatrix(k.W()); },
                             "Copy of W's keep-mask (3n x d, bool).")
      .def_property_readonly("R", [](const ParameterMask& k) { return ParameterMask::BoolMatrix(k.R()); },
                             "Copy of R's keep-mask (3n x n, bool).")
      .def_property_readonly("units", &ParameterMask::units)
      .def_property_readonly("inputs", &ParameterMask::inputs)
      .def_property_readonly("kept_W", &ParameterMask::kept_W)
      .def_property_readonly("kept_R", &ParameterMask::kept_R)
      .def_property_readonly("density_W", &ParameterMask::density_W)
      .def_property_readonly("density_R", &ParameterMask::density_R)
      .def_property_readonly("all_kept", &ParameterMask::all_kept)
      .def_property_readonly("gate_shared", &ParameterMask::gate_shared,
                             "True when the three gate blocks of W, and those of R, share one pattern.")
      .def("__eq__", [](const ParameterMask& a, const ParameterMask& b) { return a == b; })
      .def("__repr__", [](const ParameterMask& k) {
        std::ostringstream o;
        o << "ParameterMask(n=" << k.units() << ", d=" << k.inputs() << ", density_W=" << k.density_W()
          << ", density_R=" << k.density_R() << (k.gate_shared() ? ", gate_shared" : "") << ")";
        return o.str();
      });

  py::class_<WorkCounters>(m, "WorkCounters",
                           "Work of one step or of many: multiply-adds done vs dense RTRL, event and backward sparsity.")
      .def(py::init<>())
      .def_readonly("steps", &WorkCounters::steps)
      .def_readonly("propagation_fma", &WorkCounters::propagation_fma)
      .def_readonly("dense_propagation_fma", &WorkCounters::dense_propagation_fma)
      .def_readonly("readout_fma", &WorkCounters::readout_fma)
      .def_readonly("dense_readout_fma", &WorkCounters::dense_readout_fma)
      .def_readonly("units", &WorkCounters::units)
      .def_readonly("event_units", &WorkCounters::event_units)
      .def_readonly("active_rows", &WorkCounters::active_rows)
      .def_readonly("coupling_nonzeros", &WorkCounters::coupling_nonzeros)
      .def_readonly("cross_layer_fma", &WorkCounters::cross_layer_fma)
      .def_readonly("dense_cross_layer_fma", &WorkCounters::dense_cross_layer_fma)
      .def("event_sparsity", &WorkCounters::event_sparsity, "Fraction of (unit, step) pairs with no event (o = 0).")
      .def("backward_sparsity", &WorkCounters::backward_sparsity, "Fraction of influence rows skipped (s = 0).")
      .def("ideal_speedup", &WorkCounters::ideal_speedup, "Dense RTRL's multiply-adds over those done.")
      .def("__iadd__", [](WorkCounters& a, const WorkCounters& b) -> WorkCounters& { return a += b; },
           py::return_value_policy::reference)
      .def("__add__", [](WorkCounters a, const WorkCounters& b) { return a += b; })
      .def("__repr__", [](const WorkCounters& w) {
        std::ostringstream o;
        o << "WorkCounters(steps=" << w.steps << ", event_sparsity=" << w.event_sparsity()
          << ", backward_sparsity=" << w.backward_sparsity() << ", ideal_speedup=" << w.ideal_speedup() << ")";
        return o.str();
      });

  py::class_<InfluenceLayout>(m, "InfluenceLayout",
                              "Which parameter owns which column of the influence matrix (unit-major; pruned weights "
                              "have none).")
      .def_property_readonly("units", &InfluenceLayout::units)
      .def_property_readonly("inputs", &InfluenceLayout::inputs)
      .def_property_readonly("tracks_theta", &InfluenceLayout::tracks_theta)
      .def_property_readonly("columns", &InfluenceLayout::columns, "P_kept")
      .def_property_readonly("dense_columns", &InfluenceLayout::dense_columns)
      .def_property_readonly("coupling_nonzeros", &InfluenceLayout::coupling_nonzeros)
      .def(
          "column_of_W",
          [](const InfluenceLayout& l, Index rr, Index k) {
            require_entry(l, "column_of_W()", rr, k, l.inputs());
            return l.column_of_W(rr, k);
          },
          py::arg("row"), py::arg("input"), "Column of W[row, input], or -1 when pruned.")
      .def(
          "column_of_R",
          [](const InfluenceLayout& l, Index rr, Index j) {
            require_entry(l, "column_of_R()", rr, j, l.units());
            return l.column_of_R(rr, j);
          },
          py::arg("row"), py::arg("unit"), "Column of R[row, unit], or -1 when pruned.")
      .def(
          "column_of_bW",
          [](const InfluenceLayout& l, Index rr) {
            require_entry(l, "column_of_bW()", rr, 0, 1);
            return l.column_of_bW(rr);
          },
          py::arg("row"))
      .def(
          "column_of_bR",
          [](const InfluenceLayout& l, Index rr) {
            require_entry(l, "column_of_bR()", rr, 0, 1);
            return l.column_of_bR(rr);
          },
          py::arg("row"));


  py::enum_<SnapCrossLayer>(m, "SnapCrossLayer", "Which influence on the layers above its own a Snap keeps.")
      .value("graph", SnapCrossLayer::graph)
      .value("none", SnapCrossLayer::none)
      .value("same_step", SnapCrossLayer::same_step);

  py::enum_<TruncationForm>(m, "TruncationForm", "When a TruncatedBptt back-propagates its losses.")
      .value("every_step", TruncationForm::every_step, "each loss at once, through the last k steps: TBPTT(k, 1)")
      .value("every_k_steps", TruncationForm::every_k_steps,
             "a block's losses together at the block's end, through the block: TBPTT(k, k)");

  py::class_<BpttWork>(m, "BpttWork", "Multiply-adds of BPTT's products in the last forward() and backward().")
      .def_readonly("steps", &BpttWork::steps)
      .def_readonly("forward_fma", &BpttWork::forward_fma)
      .def_readonly("dense_forward_fma", &BpttWork::dense_forward_fma)
      .def_readonly("backward_fma", &BpttWork::backward_fma)
      .def_readonly("dense_backward_fma", &BpttWork::dense_backward_fma);

  py::enum_<PruningCurve>(m, "PruningCurve")
      .value("cubic", PruningCurve::cubic)
      .value("linear", PruningCurve::linear);

  py::class_<PruningSchedule>(m, "PruningSchedule", "Where gradual magnitude pruning ends and how it gets there.")
      .def(py::init([](double w, double r, Index events, PruningCurve curve) {
             return PruningSchedule{w, r, events, curve};
           }),
           py::arg("target_density_W") = 0.1, py::arg("target_density_R") = 0.1, py::arg("events") = 10,
           py::arg("curve") = PruningCurve::cubic)
      .def_readwrite("target_density_W", &PruningSchedule::target_density_W)
      .def_readwrite("target_density_R", &PruningSchedule::target_density_R)
      .def_readwrite("events", &PruningSchedule::events)
      .def_readwrite("curve", &PruningSchedule::curve);

  py::class_<MagnitudePruner>(m, "MagnitudePruner",
                              "Gradual magnitude pruning (Zhu & Gupta 2017): each prune() is one event; pruned weights "
                              "are never revived.")
      .def(py::init<const PruningSchedule&, double, double>(), py::arg("schedule"), py::arg("initial_density_W") = 1.0,
           py::arg("initial_density_R") = 1.0)
      .def(py::init<const PruningSchedule&, const ParameterMask&>(), py::arg("schedule"), py::arg("initial"))
      .def("schedule", &MagnitudePruner::schedule)
      .def_property_readonly("events", &MagnitudePruner::events)
      .def_property_readonly("events_done", &MagnitudePruner::events_done)
      .def("finished", &MagnitudePruner::finished, "True once every event is done (a method, as in C++).")
      .def("density_W", &MagnitudePruner::density_W, py::arg("event"))
      .def("density_R", &MagnitudePruner::density_R, py::arg("event"));


}

}  // namespace sparse_rtrl::python

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  using namespace sparse_rtrl::python;
  m.doc() = "Exact sparse RTRL for event-based GRUs (float32 and float64 bindings of the C++ library sparse_rtrl)";
  m.attr("__version__") = sparse_rtrl::version_string;
  m.attr("dtypes") = py::make_tuple("float32", "float64");

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::length_error& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });

  bind_common(m);  // first: the typed classes' signatures name these, and add overloads to some
  py::module_ s32 = m.def_submodule("float32", "float32 classes");
  py::module_ s64 = m.def_submodule("float64", "float64 classes");
  f32::bind_all(m, s32);
  f64::bind_all(m, s64);
  bind_io(m);
}
