// Shared declarations of the Python module sparse_rtrl._core (pybind11). The module binds the
// library in float64 only: every class below is the Scalar = double instantiation with the
// triangular surrogate.
#pragma once

#include <sparse_rtrl/sparse_rtrl.hpp>

#include <pybind11/eigen.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

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
/// A contiguous 1-D float64 array is mapped without a copy; anything else is converted.
using VectorIn = Eigen::Ref<const Vector>;
/// A C-ordered (row-major) 2-D float64 array is mapped without a copy; anything else is converted.
using RowMatrixIn = Eigen::Ref<const RowMatrix>;

/// Releases the GIL for the duration of a call (the compute-heavy methods).
using release_gil = py::call_guard<py::gil_scoped_release>;

/// Raises ValueError (pybind11 maps std::invalid_argument to it) with "sparse_rtrl.<where>: what".
[[noreturn]] inline void fail(const std::string& where, const std::string& what) {
  throw std::invalid_argument("sparse_rtrl." + where + ": " + what);
}

void bind_model(py::module_& m);
void bind_learners(py::module_& m);
void bind_training(py::module_& m);

}  // namespace sparse_rtrl::python
