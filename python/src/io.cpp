// Checkpoints and torch.nn.GRU files (sparse_rtrl/io): Checkpoint, load_model, save_torch_gru,
// load_torch_gru, read_torch_gru. Files are the C++ library's, so a checkpoint written by a C++
// program (float64) loads here and the other way round.
//
// Errors: a bad file (truncated, corrupted, wrong shape or dtype) raises ValueError with the
// library's message and changes nothing; an operating-system error (missing file, no space)
// raises OSError. Saving and loading release the GIL.
#include "common.hpp"

#include <sparse_rtrl/io/checkpoint.hpp>
#include <sparse_rtrl/io/torch_gru.hpp>

#include <algorithm>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace sparse_rtrl::python {

namespace {

using Readout = LinearReadout<Scalar>;

/// A Checkpoint and the values it owns (Python numbers are immutable, so a value added by name
/// lives here and is read back with checkpoint[name]).
class PyCheckpoint {
 public:
  using Value = std::variant<bool, std::int64_t, double, Vector, Matrix>;

  void add(const py::object& obj, const std::optional<std::string>& name) {
    if (py::isinstance<PyModel>(obj)) {
      if (name) fail("Checkpoint.add()", "the model takes no name (its entries are torch.nn.GRU's)");
      checkpoint_.add(obj.cast<PyModel&>());
      model_ = &obj.cast<PyModel&>();
      return;
    }
    if (!name) fail("Checkpoint.add()", "every object but the model needs a name");
    const std::string& n = *name;
    if (py::isinstance<PyRtrl>(obj)) {
      checkpoint_.add(n, obj.cast<PyRtrl&>());
      learners_.push_back({&obj.cast<PyRtrl&>(), "Rtrl"});
    } else if (py::isinstance<PyStreams>(obj)) {
      checkpoint_.add(n, obj.cast<PyStreams&>());
      learners_.push_back({&obj.cast<PyStreams&>(), "RtrlStreams"});
    }
    else if (py::isinstance<Sgd<Scalar>>(obj)) checkpoint_.add(n, obj.cast<Sgd<Scalar>&>());
    else if (py::isinstance<Adam<Scalar>>(obj)) checkpoint_.add(n, obj.cast<Adam<Scalar>&>());
    else if (py::isinstance<AdamW<Scalar>>(obj)) checkpoint_.add(n, obj.cast<AdamW<Scalar>&>());
    else if (py::isinstance<MagnitudePruner>(obj)) checkpoint_.add(n, obj.cast<MagnitudePruner&>());
    else if (py::isinstance<Readout>(obj)) checkpoint_.add(n, obj.cast<Readout&>());
    else if (py::isinstance<WorkCounters>(obj)) checkpoint_.add(n, obj.cast<WorkCounters&>());
    else if (py::isinstance<PySnap>(obj)) {
      checkpoint_.add(n, obj.cast<PySnap&>());
      learners_.push_back({&obj.cast<PySnap&>(), "Snap"});
    }
    else if (py::isinstance<py::bool_>(obj)) add_value(n, Value(obj.cast<bool>()));
    else if (py::isinstance<py::int_>(obj)) add_value(n, Value(obj.cast<std::int64_t>()));
    else if (py::isinstance<py::float_>(obj)) add_value(n, Value(obj.cast<double>()));
    else if (py::isinstance<py::array>(obj)) {
      const auto a = py::array_t<Scalar, py::array::forcecast | py::array::c_style>::ensure(obj);
      if (!a || (a.ndim() != 1 && a.ndim() != 2))
        fail("Checkpoint.add()", "'" + n + "': arrays must be 1-D or 2-D and convertible to float64");
      if (a.ndim() == 1) {
        add_value(n, Value(Vector(VecMap(a.data(), Index(a.size())))));
      } else {
        const Eigen::Map<const RowMatrix> m(a.data(), Index(a.shape(0)), Index(a.shape(1)));
        add_value(n, Value(Matrix(m)));
      }
    } else {
      fail("Checkpoint.add()", "'" + n + "': cannot checkpoint an object of type " +
                                   std::string(py::str(py::type::of(obj).attr("__name__"))) +
                                   " (Model, Rtrl, RtrlStreams, Snap, Sgd, Adam, AdamW, MagnitudePruner, LinearReadout, "
                                   "WorkCounters, bool, int, float, or a 1-D/2-D float64 array)");
    }
    names_.push_back(n);
  }

  py::object value(const std::string& name) const {
    const auto it = values_.find(name);
    if (it == values_.end()) throw py::key_error(sparse_rtrl::detail::printable("sparse_rtrl.Checkpoint: no value named '" + name + "'"));
    return std::visit(
        [](const auto& v) -> py::object {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, std::int64_t> || std::is_same_v<T, double>)
            return py::cast(v);
          else
            return py::cast(T(v));  // a copy, as NumPy array
        },
        *it->second);
  }

  /// Sets a value added by name (same kind: bool, int, float, array; an array may change shape).
  void set_value(const std::string& name, const py::object& obj) {
    const auto it = values_.find(name);
    if (it == values_.end()) throw py::key_error(sparse_rtrl::detail::printable("sparse_rtrl.Checkpoint: no value named '" + name + "'"));
    std::visit(
        [&](auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, std::int64_t> || std::is_same_v<T, double>) {
            v = obj.cast<T>();
          } else {
            const auto a = py::array_t<Scalar, py::array::forcecast | py::array::c_style>::ensure(obj);
            if (!a || a.ndim() != (std::is_same_v<T, Vector> ? 1 : 2))
              fail("Checkpoint.__setitem__()", "'" + name + "': expected a " +
                                                   (std::is_same_v<T, Vector> ? "1-D" : "2-D") + " float64 array");
            if constexpr (std::is_same_v<T, Vector>)
              v = VecMap(a.data(), Index(a.size()));
            else
              v = Eigen::Map<const RowMatrix>(a.data(), Index(a.shape(0)), Index(a.shape(1)));
          }
        },
        *it->second);
  }

  void save(const std::string& path, bool sync) const {
    const auto guards = hold("Checkpoint.save()", false);
    os_errors([&] { checkpoint_.save(path, io::NpzWriterOptions{false, sync}); });
  }
  void load(const std::string& path) {
    const auto guards = hold("Checkpoint.load()", true);
    os_errors([&] { checkpoint_.load(path); });
  }
  std::size_t size() const { return checkpoint_.size(); }
  bool contains(const std::string& name) const { return values_.count(name) != 0; }
  const std::vector<std::string>& names() const { return names_; }

  /// One object, one thread (common.hpp, ObjectGuard) while the GIL is released: the checkpoint and
  /// its learners are held; a save reads the model (no optimizer step on it meanwhile), a load
  /// writes it (refused while a learner of it steps, and its learners' steps refused meanwhile).
  std::vector<std::unique_ptr<ObjectGuard>> hold(const char* where, bool writes_model) const {
    std::vector<std::unique_ptr<ObjectGuard>> guards;
    if (model_ && writes_model) {
      ObjectGuard::require_model_idle(model_, where);
      guards.push_back(std::make_unique<ObjectGuard>(model_, where, "Model"));
    }
    guards.push_back(std::make_unique<ObjectGuard>(this, where, "Checkpoint", writes_model ? nullptr : model_));
    std::vector<const void*> seen;
    for (const auto& l : learners_) {
      if (std::find(seen.begin(), seen.end(), l.first) != seen.end()) continue;  // added twice
      seen.push_back(l.first);
      guards.push_back(std::make_unique<ObjectGuard>(l.first, where, l.second));
    }
    return guards;
  }

  /// Runs @p f without the GIL; an operating-system error (std::runtime_error) becomes OSError.
  template <typename F>
  static void os_errors(F&& f) {
    try {
      py::gil_scoped_release nogil;
      f();
    } catch (const std::runtime_error& e) {
      PyErr_SetString(PyExc_OSError, e.what());
      throw py::error_already_set();
    }
  }

 private:
  void add_value(const std::string& name, Value v) {
    if (values_.count(name)) fail("Checkpoint.add()", "the name '" + name + "' is taken");
    auto owned = std::make_unique<Value>(std::move(v));
    std::visit([&](auto& x) { checkpoint_.add(name, x); }, *owned);
    values_.emplace(name, std::move(owned));
  }

  io::Checkpoint checkpoint_;
  std::map<std::string, std::unique_ptr<Value>> values_;
  std::vector<std::string> names_;
  const void* model_ = nullptr;                             // for ObjectGuard (hold())
  std::vector<std::pair<const void*, const char*>> learners_;  // object, kind
};

}  // namespace

void bind_io(py::module_& m) {
  py::class_<PyCheckpoint>(
      m, "Checkpoint",
      "Named references to the objects of a run, saved to and loaded from one NumPy .npz (the C++ "
      "io::Checkpoint's format: a file written by C++ loads here and the other way round). add(model) (no "
      "name: its entries are torch.nn.GRU's), add(obj, name) for Rtrl, RtrlStreams, Sgd, Adam, AdamW, "
      "MagnitudePruner, LinearReadout, WorkCounters, and for values (bool, int, float, 1-D/2-D float64 array) "
      "that the checkpoint owns: read them back with checkpoint[name]. save(path) is atomic; load(path) "
      "restores every object bit for bit, or raises ValueError and changes nothing. Objects must be "
      "constructed with the saved shapes (load_model() builds a model from a file). Added objects are kept "
      "alive by the checkpoint.")
      .def(py::init<>())
      .def(
          "add",
          [](PyCheckpoint& c, const py::object& obj, const std::optional<std::string>& name) -> PyCheckpoint& {
            c.add(obj, name);
            return c;
          },
          py::arg("obj"), py::arg("name") = py::none(), py::keep_alive<1, 2>(), py::return_value_policy::reference,
          "Adds an object (the model without a name, anything else with one); returns the checkpoint, so calls "
          "chain.")
      .def("save", &PyCheckpoint::save, py::arg("path"), py::kw_only(), py::arg("sync") = true,
           "Writes every object to path atomically (a complete new file or the old one); sync=False skips the "
           "fsyncs (scratch files). Releases the GIL.")
      .def("load", &PyCheckpoint::load, py::arg("path"),
           "Restores every object from path, all or nothing: a bad file raises ValueError and leaves every "
           "object as it was. Releases the GIL.")
      .def("__getitem__", &PyCheckpoint::value, py::arg("name"), "A value added by name (a copy).")
      .def("__setitem__", &PyCheckpoint::set_value, py::arg("name"), py::arg("value"),
           "Sets a value added by name (before save(): the checkpoint saves its own copy).")
      .def("__contains__", &PyCheckpoint::contains, py::arg("name"))
      .def("__len__", &PyCheckpoint::size, "Objects in the checkpoint, the model included.")
      .def_property_readonly("names", &PyCheckpoint::names, "The names given to add(), in order.");

  m.attr("checkpoint_format_version") = io::checkpoint_format_version;

  m.def(
      "load_model",
      [](const std::string& path) {
        std::unique_ptr<PyModel> model;
        PyCheckpoint::os_errors([&] { model = std::make_unique<PyModel>(io::load_model<Scalar, Surrogate>(path)); });
        return model;
      },
      py::arg("path"),
      "A new Model (layers, masks, modes, surrogates) built from a checkpoint's model entries (float64 files). "
      "Releases the GIL.");
  m.def(
      "save_torch_gru",
      [](const std::string& path, const PyModel& model, bool sync) {
        PyCheckpoint::os_errors([&] { io::save_torch_gru(path, model, io::NpzWriterOptions{false, sync}); });
      },
      py::arg("path"), py::arg("model"), py::kw_only(), py::arg("sync") = true,
      "Writes the model's torch.nn.GRU tensors only (weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}, "
      "float64): {k: torch.from_numpy(v) for k, v in numpy.load(path).items()} loads strictly into a "
      "torch.nn.GRU(...).double() of the same sizes. Atomic; releases the GIL.");
  m.def(
      "load_torch_gru",
      [](const std::string& path, PyModel& model) {
        PyCheckpoint::os_errors([&] { io::load_torch_gru(path, model); });
      },
      py::arg("path"), py::arg("model"),
      "Loads a torch.nn.GRU state_dict saved with numpy.savez (float32 or float64) into the model's parameters "
      "(sizes must match; thresholds, masks and modes are kept; weights the masks prune become zero). Raises "
      "ValueError and changes nothing on a bad file. Releases the GIL.");
  m.def(
      "read_torch_gru",
      [](const std::string& path) {
        std::vector<Params> layers;
        PyCheckpoint::os_errors([&] { layers = io::read_torch_gru<Scalar>(path); });
        return layers;
      },
      py::arg("path"), "The EgruParameters of every layer of a torch.nn.GRU .npz file (thresholds zero).");
}

}  // namespace sparse_rtrl::python
