// Shared declarations of the Python module sparse_rtrl._core (pybind11). The module binds the
// library in float64 only: every class below is the Scalar = double instantiation with the
// triangular surrogate.
#pragma once

#include <sparse_rtrl/sparse_rtrl.hpp>

#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>

namespace sparse_rtrl::python {

namespace py = pybind11;

using Scalar = double;
using Surrogate = TriangularSurrogate<Scalar>;
using PyModel = Model<Scalar, Surrogate>;
using PyCell = EgruCell<Scalar, Surrogate>;
using Params = EgruParameters<Scalar>;
using PyRtrl = Rtrl<Scalar, Surrogate>;
using PySnap = Snap<Scalar, Surrogate>;
using PyBptt = Bptt<Scalar, Surrogate>;
using PyStreams = RtrlStreams<Scalar, Surrogate>;
using PyInference = Inference<Scalar, Surrogate>;

using Vector = Eigen::VectorXd;
using Matrix = Eigen::MatrixXd;
using RowMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// A C-ordered (row-major) 2-D float64 array is mapped without a copy; anything else is converted.
using RowMatrixIn = Eigen::Ref<const RowMatrix>;

/// Releases the GIL for the duration of a call whose arguments hold no Python object.
using release_gil = py::call_guard<py::gil_scoped_release>;

/// Raises ValueError (pybind11 maps std::invalid_argument to it) with "sparse_rtrl.<where>: what",
/// control characters escaped (what may hold a user's names: sparse_rtrl::detail::printable).
[[noreturn]] inline void fail(const std::string& where, const std::string& what) {
  throw std::invalid_argument(sparse_rtrl::detail::printable("sparse_rtrl." + where + ": " + what));
}

/// @brief One object, one thread (README, "Python"): a call that releases the GIL holds its object
/// for its duration, and the same kind of call on that object from another thread meanwhile raises
/// RuntimeError instead of racing with it (two threads stepping one learner used to corrupt its
/// influence matrix silently). A learner's step also holds its model for reading: any number of
/// learners of one model may step at once, but a call that writes the model (an optimizer's step on
/// it, load_state_dict, set_mask) raises while one does. Constructed and destroyed with the GIL
/// held (before a gil_scoped_release, which ends first), so the GIL is the tables' lock.
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

/// A vector argument: a C-contiguous float64 array is used in place, anything else (a list, another
/// dtype, a strided slice) is converted by NumPy first.
using VecArg = py::array_t<Scalar, py::array::forcecast | py::array::c_style>;
using VecMap = Eigen::Map<const Vector>;

/// @p a as a vector (1-D, or 2-D with one row or one column, as the library accepts); any other
/// shape is a ValueError naming @p name (the sizes are the library's to check).
inline VecMap vec(const VecArg& a, const char* where, const char* name) {
  if (!(a.ndim() == 1 || (a.ndim() == 2 && (a.shape(0) == 1 || a.shape(1) == 1)))) {
    std::string shape = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) shape += (i ? ", " : "") + std::to_string(a.shape(i));
    fail(where, std::string(name) + " must be a vector (1-D, or 2-D with one row or one column), received shape " +
                    shape + (a.ndim() == 1 ? ",)" : ")"));
  }
  return VecMap(a.data(), Index(a.size()));
}

void bind_model(py::module_& m);
void bind_learners(py::module_& m);
void bind_training(py::module_& m);

}  // namespace sparse_rtrl::python
