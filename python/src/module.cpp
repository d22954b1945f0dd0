// The compiled part of the Python package sparse_rtrl: sparse_rtrl._core (pybind11), float64 only.
//
// Exceptions: the library's std::invalid_argument (bad input) becomes ValueError with the same
// message and std::out_of_range (a layer or stream index) IndexError, both pybind11's defaults;
// std::length_error, which the library throws when learning state would exceed the machine's
// memory, becomes MemoryError; std::logic_error (calls in the wrong order, e.g.
// accumulate_gradient() before any step()) becomes RuntimeError.
#include "common.hpp"

#include <stdexcept>

namespace sparse_rtrl::python {
void bind_io(py::module_& m);  // io.cpp (declared here, not in common.hpp, so that io.cpp rebuilds alone)
}  // namespace sparse_rtrl::python

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  using namespace sparse_rtrl::python;
  m.doc() = "Exact sparse RTRL for event-based GRUs (float64 bindings of the C++ library sparse_rtrl)";
  m.attr("__version__") = sparse_rtrl::version_string;
  m.attr("scalar_type") = "float64";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::length_error& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });

  bind_model(m);
  bind_learners(m);
  bind_training(m);
  bind_io(m);
}
