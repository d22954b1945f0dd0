// Checkpoints (sparse_rtrl/io): the Checkpoint class, bound once for objects of both dtypes (the
// typed units add theirs: io_typed.inl, which also has load_model and the torch.nn.GRU files).
// Files are the C++ library's, so a checkpoint written by a C++ program loads here and the other
// way round (float32 objects write float32 arrays, as C++ float ones do).
//
// Errors: a bad file (truncated, corrupted, wrong shape or dtype) raises ValueError with the
// library's message and changes nothing; an operating-system error (missing file, no space)
// raises OSError. Saving and loading release the GIL.
#include "common.hpp"

#include <sparse_rtrl/io/checkpoint.hpp>

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

/// A 1-D or 2-D array value of a checkpoint: float32 or float64 exactly (a list: float64).
PyCheckpoint::Value array_value(const py::handle& obj, const std::string& where, const std::string& name) {
  py::array a;
  try {
    a = py::array::ensure(obj);
  } catch (const py::error_already_set&) {
  }
  const bool f32 = a && !(py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) &&
                   a.dtype().is(py::dtype::of<float>());
  if (f32) {
    const auto v = checked_array<float>(obj, where, ("'" + name + "'").c_str());
    if (v.ndim() == 1) return Eigen::VectorXf(Eigen::Map<const Eigen::VectorXf>(v.data(), Index(v.size())));
    if (v.ndim() == 2)
      return Eigen::MatrixXf(Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(
          v.data(), Index(v.shape(0)), Index(v.shape(1))));
    fail(where, "'" + name + "': arrays must be 1-D or 2-D, received shape " + shape_of(v));
  }
  const auto v = checked_array<double>(obj, where, ("'" + name + "' (float32 or float64)").c_str());
  if (v.ndim() == 1) return Eigen::VectorXd(Eigen::Map<const Eigen::VectorXd>(v.data(), Index(v.size())));
  if (v.ndim() == 2)
    return Eigen::MatrixXd(
        Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(v.data(), Index(v.shape(0)), Index(v.shape(1))));
  fail(where, "'" + name + "': arrays must be 1-D or 2-D, received shape " + shape_of(v));
}

std::string type_name(const py::handle& obj) { return py::str(py::type::of(obj).attr("__name__")); }

}  // namespace

void PyCheckpoint::add(const py::object& obj, const std::optional<std::string>& name) {
  if (f32::checkpoint_add(*this, obj, name) || f64::checkpoint_add(*this, obj, name)) {
    if (name) names_.push_back(*name);
    return;
  }
  if (!name) fail("Checkpoint.add()", "every object but the model needs a name: add(name, obj) (C++ order) or add(obj, name)");
  const std::string& n = *name;
  if (py::isinstance<MagnitudePruner>(obj)) checkpoint_.add(n, obj.cast<MagnitudePruner&>());
  else if (py::isinstance<WorkCounters>(obj)) checkpoint_.add(n, obj.cast<WorkCounters&>());
  else if (py::isinstance<py::bool_>(obj)) add_value(n, Value(obj.cast<bool>()));
  else if (py::isinstance<py::int_>(obj)) add_value(n, Value(obj.cast<std::int64_t>()));
  else if (py::isinstance<py::float_>(obj)) add_value(n, Value(obj.cast<double>()));
  else if (py::isinstance<py::array>(obj) || py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj))
    add_value(n, array_value(obj, "Checkpoint.add()", n));
  else
    fail_type("Checkpoint.add()", "'" + n + "': cannot checkpoint an object of type " + type_name(obj) +
                                      " (Model, Rtrl, RtrlStreams, Snap, TruncatedBptt, Uoro, Sgd, Adam, AdamW, "
                                      "MagnitudePruner, "
                                      "LinearReadout, WorkCounters, bool, int, float, or a 1-D/2-D float32 or float64 "
                                      "array)");
  names_.push_back(n);
}

py::object PyCheckpoint::value(const std::string& name) const {
  const auto it = values_.find(name);
  if (it == values_.end())
    throw py::key_error(sparse_rtrl::detail::printable("sparse_rtrl.Checkpoint: no value named '" + name + "'"));
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

void PyCheckpoint::set_value(const std::string& name, const py::object& obj) {
  const auto it = values_.find(name);
  if (it == values_.end())
    throw py::key_error(sparse_rtrl::detail::printable("sparse_rtrl.Checkpoint: no value named '" + name + "'"));
  std::visit(
      [&](auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, std::int64_t> || std::is_same_v<T, double>) {
          v = obj.cast<T>();
        } else {
          using S = typename T::Scalar;
          constexpr bool is_vector = T::ColsAtCompileTime == 1;
          const auto a = checked_array<S>(obj, "Checkpoint.__setitem__()", ("'" + name + "'").c_str());
          if (a.ndim() != (is_vector ? 1 : 2))
            fail("Checkpoint.__setitem__()", "'" + name + "': expected a " + (is_vector ? "1-D" : "2-D") + " " +
                                                 dtype_name<S>() + " array, received shape " + shape_of(a));
          if constexpr (is_vector)
            v = Eigen::Map<const T>(a.data(), Index(a.size()));
          else
            v = Eigen::Map<const Eigen::Matrix<S, -1, -1, Eigen::RowMajor>>(a.data(), Index(a.shape(0)),
                                                                            Index(a.shape(1)));
        }
      },
      *it->second);
}

void PyCheckpoint::save(const std::string& path, bool sync) const {
  const auto guards = hold("Checkpoint.save()", false);
  os_errors([&] { checkpoint_.save(path, io::NpzWriterOptions{false, sync}); });
}

void PyCheckpoint::load(const std::string& path) {
  const auto guards = hold("Checkpoint.load()", true);
  os_errors([&] { checkpoint_.load(path); });
}

/// One object, one thread (common.hpp, ObjectGuard) while the GIL is released: the checkpoint and
/// its learners are held; a save reads the model (no optimizer step on it meanwhile), a load
/// writes it (refused while a learner of it steps, and its learners' steps refused meanwhile).
std::vector<std::unique_ptr<ObjectGuard>> PyCheckpoint::hold(const char* where, bool writes_model) const {
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

void PyCheckpoint::add_value(const std::string& name, Value v) {
  if (values_.count(name)) fail("Checkpoint.add()", "the name '" + name + "' is taken");
  auto owned = std::make_unique<Value>(std::move(v));
  std::visit([&](auto& x) { checkpoint_.add(name, x); }, *owned);
  values_.emplace(name, std::move(owned));
}

void bind_io(py::module_& m) {
  py::class_<PyCheckpoint>(
      m, "Checkpoint",
      "Named references to the objects of a run, saved to and loaded from one NumPy .npz (the C++ "
      "io::Checkpoint's format: a file written by C++ loads here and the other way round). add(model) (no "
      "name: its entries are torch.nn.GRU's), add(obj, name) for Rtrl, RtrlStreams, Snap, TruncatedBptt, Uoro, "
      "Sgd, Adam, AdamW, "
      "MagnitudePruner, LinearReadout, WorkCounters (of either dtype), and for values (bool, int, float, 1-D/2-D "
      "float32 or float64 array) "
      "that the checkpoint owns: read them back with checkpoint[name]. save(path) is atomic; load(path) "
      "restores every object bit for bit, or raises ValueError and changes nothing. Objects must be "
      "constructed with the saved shapes (load_model() builds a model from a file). Added objects are kept "
      "alive by the checkpoint.")
      .def(py::init<>())
      .def(
          "add",
          [](PyCheckpoint& c, const py::object& first, const py::object& second) -> PyCheckpoint& {
            // C++'s order is add(name, obj); Python's add(obj, name) stays accepted (a str first
            // is the name, as nothing else the checkpoint takes is a str).
            if (py::isinstance<py::str>(first) && !second.is_none()) {
              if (py::isinstance<py::str>(second))
                fail_type("Checkpoint.add()", "add(name, obj): obj '" + std::string(py::str(second)) +
                                                  "' is a str, which a checkpoint cannot hold");
              c.add(second, first.cast<std::string>());
            } else if (py::isinstance<py::str>(first)) {
              fail_type("Checkpoint.add()", "add(name, obj) needs the object after the name '" +
                                                first.cast<std::string>() + "'");
            } else if (second.is_none()) {
              c.add(first, std::nullopt);
            } else if (py::isinstance<py::str>(second)) {
              c.add(first, second.cast<std::string>());
            } else {
              fail_type("Checkpoint.add()", "expected add(name, obj) (as C++) or add(obj, name), with name a str; "
                                            "received add(" + type_name(first) + ", " + type_name(second) + ")");
            }
            return c;
          },
          py::arg("name_or_obj"), py::arg("obj_or_name") = py::none(), py::keep_alive<1, 2>(),
          py::keep_alive<1, 3>(), py::return_value_policy::reference,
          "add(model) (no name: its entries are torch.nn.GRU's); add(name, obj) for everything else, as C++'s "
          "Checkpoint::add (add(obj, name) is accepted too). Returns the checkpoint, so calls chain.")
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
}

}  // namespace sparse_rtrl::python
