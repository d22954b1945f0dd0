// The scalar-typed half of the bindings, compiled twice: f32.cpp and f64.cpp define
// SPARSE_RTRL_PY_SCALAR (float, double) and SPARSE_RTRL_PY_NS (f32, f64), include this header and
// then model.inl, learners.inl, training.inl and io_typed.inl. Two translation units, not one
// template instantiated twice in one unit: the two compile in parallel (the module's build time
// on 2 cores stays about what one dtype took), and the sources read as plain code of one Scalar.
#pragma once

#include "common.hpp"

#if !defined(SPARSE_RTRL_PY_SCALAR) || !defined(SPARSE_RTRL_PY_NS)
#error "typed.hpp needs SPARSE_RTRL_PY_SCALAR and SPARSE_RTRL_PY_NS (f32.cpp, f64.cpp)"
#endif

namespace sparse_rtrl::python::SPARSE_RTRL_PY_NS {

using Scalar = SPARSE_RTRL_PY_SCALAR;
using Surrogate = TriangularSurrogate<Scalar>;
using PyModel = Model<Scalar, Surrogate>;
using PyCell = EgruCell<Scalar, Surrogate>;
using Params = EgruParameters<Scalar>;
using PyRtrl = Rtrl<Scalar, Surrogate>;
using PySnap = Snap<Scalar, Surrogate>;
using PyBptt = Bptt<Scalar, Surrogate>;
using PyStreams = RtrlStreams<Scalar, Surrogate>;
using PyTbptt = TruncatedBptt<Scalar, Surrogate>;
using PyUoro = Uoro<Scalar, Surrogate>;
using PyInference = Inference<Scalar, Surrogate>;
using Readout = LinearReadout<Scalar>;
using ReadoutParams = ReadoutParameters<Scalar>;

using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
using RowMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr const char* kDtype = dtype_name<Scalar>();

/// Array arguments: checked_array's rule (common.hpp) with this unit's dtype.
using VecIn = python::VecIn<Scalar>;
using MatIn = python::MatIn<Scalar>;
inline VecIn vec(const py::handle& a, const std::string& where, const char* name) {
  return python::vec<Scalar>(a, where, name);
}
inline MatIn mat(const py::handle& a, const std::string& where, const char* name, bool vector_is_row = false) {
  return python::mat<Scalar>(a, where, name, vector_is_row);
}
/// An optional vector argument (None: absent), as an owning Vector.
inline std::optional<Vector> opt_vec(const py::object& a, const std::string& where, const char* name) {
  if (a.is_none()) return std::nullopt;
  return Vector(vec(a, where, name));
}

/// A TypeError for a call whose arguments are objects of the other dtype (or of no library type):
/// added as the last overload of methods taking library objects, instead of pybind11's
/// "incompatible function arguments".
template <typename Class>
void mismatch_overload(py::class_<Class>& c, const char* method, const char* kind, const char* expects) {
  const std::string where = std::string(kind) + "." + method + "()";
  const std::string what = std::string("this ") + kind + " is " + kDtype + ", so " + expects + " must be " +
                           kDtype + " objects too (or the arguments are not library objects): every object of a "
                           "run has the model's dtype, build the " + kind + " with dtype=model.dtype";
  c.def(method, [where, what](Class&, const py::args&, const py::kwargs&) { fail_type(where, what); });
}

void bind_model(py::module_& core, py::module_& m);
void bind_learners(py::module_& core, py::module_& m);
void bind_training(py::module_& core, py::module_& m);
void bind_io_typed(py::module_& core, py::module_& m);

}  // namespace sparse_rtrl::python::SPARSE_RTRL_PY_NS
