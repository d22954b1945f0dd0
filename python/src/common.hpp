// Shared declarations of the Python module sparse_rtrl._core (pybind11). The library is bound
// twice, as float32 and as float64 (submodules _core.float32 and _core.float64, compiled as two
// translation units from the same sources: typed.hpp), with the triangular surrogate; the classes
// that do not depend on the scalar type (masks, work counters, pruner, checkpoint) are bound once
// in _core itself (module.cpp, io.cpp).
#pragma once

#include <sparse_rtrl/sparse_rtrl.hpp>
#include <sparse_rtrl/io/checkpoint.hpp>

#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

namespace sparse_rtrl::python {

namespace py = pybind11;

/// Releases the GIL for the duration of a call whose arguments hold no Python object.
using release_gil = py::call_guard<py::gil_scoped_release>;

/// Raises ValueError (pybind11 maps std::invalid_argument to it) with "sparse_rtrl.<where>: what",
/// control characters escaped (what may hold a user's names: sparse_rtrl::detail::printable).
[[noreturn]] inline void fail(const std::string& where, const std::string& what) {
  throw std::invalid_argument(sparse_rtrl::detail::printable("sparse_rtrl." + where + ": " + what));
}

/// Raises TypeError with "sparse_rtrl.<where>: what".
[[noreturn]] inline void fail_type(const std::string& where, const std::string& what) {
  throw py::type_error(sparse_rtrl::detail::printable("sparse_rtrl." + where + ": " + what));
}

template <typename S>
constexpr const char* dtype_name() {
  return std::is_same_v<S, float> ? "float32" : "float64";
}

/// @brief One object, one thread (README, "Python"): a call that releases the GIL holds its object
/// for its duration, and the same kind of call on that object from another thread meanwhile raises
/// RuntimeError instead of racing with it (two threads stepping one learner used to corrupt its
/// influence matrix silently). A learner's step also holds its model for reading: any number of
/// learners of one model may step at once, but a call that writes the model (an optimizer's step on
/// it, load_state_dict, set_mask) raises while one does. Constructed and destroyed with the GIL
/// held (before a gil_scoped_release, which ends first), so the GIL is the tables' lock. The tables
/// are shared by both scalar types' translation units (inline functions: one instance).
class ObjectGuard {
 public:
  /// @p where: "Rtrl.step()"; @p kind: "Rtrl"; @p model: the model a step reads, or nullptr.
  ObjectGuard(const void* object, const char* where, const char* kind, const void* model = nullptr)
      : object_(object), model_(model) {
    if (model_ && busy().count(model_))
      throw std::runtime_error(std::string("sparse_rtrl.") + where + ": its model is being written by another "
                               "thread (a checkpoint load); a model must not be updated while its learners step");
    if (!busy().insert(object).second)
      throw std::runtime_error(std::string("sparse_rtrl.") + where + ": this " + kind +
                               " is being used by another thread; one object, one thread");
    if (model_) ++readers()[model_];
  }
  ~ObjectGuard() {
    busy().erase(object_);
    if (model_ && --readers()[model_] == 0) readers().erase(model_);
  }
  ObjectGuard(const ObjectGuard&) = delete;
  ObjectGuard& operator=(const ObjectGuard&) = delete;

  /// Raises RuntimeError when a learner of @p model is stepping on another thread, or a
  /// checkpoint is loading into it (call with the GIL held, before writing the model).
  static void require_model_idle(const void* model, const char* where) {
    if (busy().count(model))
      throw std::runtime_error(std::string("sparse_rtrl.") + where +
                               ": the model is being written by another thread (a checkpoint load)");
    const auto it = readers().find(model);
    if (it != readers().end() && it->second > 0)
      throw std::runtime_error(std::string("sparse_rtrl.") + where + ": the model is being read by " +
                               std::to_string(it->second) +
                               " learner step(s) on other threads; a model must not be updated while its "
                               "learners step");
  }

 private:
  static std::unordered_set<const void*>& busy() {
    static std::unordered_set<const void*> set;
    return set;
  }
  static std::unordered_map<const void*, int>& readers() {
    static std::unordered_map<const void*, int> map;
    return map;
  }
  const void* object_;
  const void* model_;
};

/// The shape of an array as Python prints it: "(3,)", "(2, 4)".
inline std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

/// @brief The one conversion rule of the module for array arguments (README, "Python", dtypes):
/// an array (a NumPy array, or anything with __array__ / the buffer protocol, e.g. a torch tensor)
/// must have exactly the object's dtype and is used without a copy when C-contiguous (a strided one
/// is copied, same dtype); a wrong dtype (float32 for float64 too: convert it yourself, knowing
/// what it costs), complex, object or string data is a TypeError naming both. A Python list, tuple
/// or number is converted to the dtype when its numbers are real (bool, int, float: as
/// torch.tensor(list) and numpy.asarray(list, dtype) do), refused otherwise.
template <typename S>
py::array_t<S, py::array::c_style> checked_array(const py::handle& obj, const std::string& where, const char* name) {
  const bool python_data = py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj) ||
                           py::isinstance<py::float_>(obj) || py::isinstance<py::int_>(obj) ||
                           py::isinstance<py::bool_>(obj);
  py::array a;
  try {
    a = py::array::ensure(obj);  // numpy.asarray: no copy for an array
  } catch (const py::error_already_set&) {
  }
  if (!a) {
    fail_type(where, std::string(name) + " must be a " + dtype_name<S>() + " array, received an object of type " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  const char kind = a.dtype().kind();
  if (python_data) {
    if (kind != 'b' && kind != 'i' && kind != 'u' && kind != 'f')
      fail_type(where, std::string(name) + " must hold real numbers (converted to " + dtype_name<S>() +
                           "), received a sequence of dtype " + std::string(py::str(a.dtype())));
    return py::array_t<S, py::array::c_style | py::array::forcecast>::ensure(a);
  }
  if (!a.dtype().is(py::dtype::of<S>())) {
    const std::string got = std::string(py::str(a.dtype()));
    fail_type(where, std::string(name) + " must be a " + dtype_name<S>() + " array (the dtype of this object), "
                         "received " + got + (kind == 'c' ? " (complex)" : kind == 'O' ? " (objects)" : "") +
                         (kind == 'f' || kind == 'i' || kind == 'u' || kind == 'b'
                              ? std::string("; convert it explicitly (x.astype(numpy.") + dtype_name<S>() +
                                    ")), or build the model and the objects of the run with dtype=\"" + got + "\""
                              : std::string()));
  }
  return py::array_t<S, py::array::c_style>::ensure(a);  // a copy only when not C-contiguous
}

/// A vector argument, checked (checked_array) and mapped; holds the array it maps.
template <typename S>
struct VecIn : Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, 1>> {
  using Base = Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, 1>>;
  explicit VecIn(py::array_t<S, py::array::c_style> a) : Base(a.data(), Index(a.size())), keep(std::move(a)) {}
  py::array_t<S, py::array::c_style> keep;
};

/// @p a as a vector (1-D, or 2-D with one row or one column, as the library accepts) of dtype S;
/// any other shape is a ValueError naming @p name (the sizes are the library's to check).
template <typename S>
VecIn<S> vec(const py::handle& obj, const std::string& where, const char* name) {
  auto a = checked_array<S>(obj, where, name);
  if (!(a.ndim() == 1 || (a.ndim() == 2 && (a.shape(0) == 1 || a.shape(1) == 1))))
    fail(where, std::string(name) + " must be a vector (1-D, or 2-D with one row or one column), received shape " +
                    shape_of(a));
  return VecIn<S>(std::move(a));
}

/// A row-major matrix argument, checked and mapped; holds the array it maps.
template <typename S>
struct MatIn : Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> {
  using Base = Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
  MatIn(py::array_t<S, py::array::c_style> a, Index rows, Index cols)
      : Base(a.data(), rows, cols), keep(std::move(a)) {}
  py::array_t<S, py::array::c_style> keep;
};

/// @p obj as a matrix of dtype S (2-D; a 1-D array is one row when @p vector_is_row, else refused).
template <typename S>
MatIn<S> mat(const py::handle& obj, const std::string& where, const char* name, bool vector_is_row = false) {
  auto a = checked_array<S>(obj, where, name);
  if (a.ndim() == 2) {
    const Index r = Index(a.shape(0)), c = Index(a.shape(1));
    return MatIn<S>(std::move(a), r, c);
  }
  if (a.ndim() == 1 && vector_is_row) {
    const Index c = Index(a.shape(0));
    return MatIn<S>(std::move(a), 1, c);
  }
  fail(where, std::string(name) + " must be a matrix (2-D), received shape " + shape_of(a));
}

/// @brief A Checkpoint and the values it owns (Python numbers are immutable, so a value added by
/// name lives here and is read back with checkpoint[name]). Bound once (io.cpp); the objects of
/// either dtype are added by the typed translation units (checkpoint_add below).
class PyCheckpoint {
 public:
  using Value = std::variant<bool, std::int64_t, double, Eigen::VectorXd, Eigen::MatrixXd, Eigen::VectorXf,
                             Eigen::MatrixXf>;

  void add(const py::object& obj, const std::optional<std::string>& name);
  py::object value(const std::string& name) const;
  void set_value(const std::string& name, const py::object& obj);
  void save(const std::string& path, bool sync) const;
  void load(const std::string& path);
  std::size_t size() const { return checkpoint_.size(); }
  bool contains(const std::string& name) const { return values_.count(name) != 0; }
  const std::vector<std::string>& names() const { return names_; }

  /// For the typed translation units' checkpoint_add().
  io::Checkpoint& raw() { return checkpoint_; }
  void note_model(const void* model) { model_ = model; }
  void note_learner(const void* learner, const char* kind) { learners_.push_back({learner, kind}); }

  std::vector<std::unique_ptr<ObjectGuard>> hold(const char* where, bool writes_model) const;

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
  void add_value(const std::string& name, Value v);

  io::Checkpoint checkpoint_;
  std::map<std::string, std::unique_ptr<Value>> values_;
  std::vector<std::string> names_;
  const void* model_ = nullptr;                                // for ObjectGuard (hold())
  std::vector<std::pair<const void*, const char*>> learners_;  // object, kind
};

// The typed translation units (typed.hpp: f32.cpp, f64.cpp).
namespace f32 {
void bind_all(py::module_& core, py::module_& sub);
/// Adds @p obj (a float32 library object) to @p c; false when it is none of them.
bool checkpoint_add(PyCheckpoint& c, const py::object& obj, const std::optional<std::string>& name);
}  // namespace f32
namespace f64 {
void bind_all(py::module_& core, py::module_& sub);
bool checkpoint_add(PyCheckpoint& c, const py::object& obj, const std::optional<std::string>& name);
}  // namespace f64

void bind_common(py::module_& m);  // module.cpp: the classes without a scalar type
void bind_io(py::module_& m);      // io.cpp: Checkpoint

}  // namespace sparse_rtrl::python
