// One dtype's bindings (f32.cpp, f64.cpp include this after defining the scalar type).
#include "typed.hpp"

#include "model.inl"
#include "learners.inl"
#include "training.inl"
#include "io_typed.inl"

namespace sparse_rtrl::python::SPARSE_RTRL_PY_NS {

void bind_all(py::module_& core, py::module_& sub) {
  sub.doc() = std::string("The ") + kDtype + " classes and functions of sparse_rtrl (the package's top level "
              "picks them by dtype)";
  sub.attr("dtype") = py::dtype::of<Scalar>();
  bind_model(core, sub);
  bind_learners(core, sub);
  bind_training(core, sub);
  bind_io_typed(core, sub);
  // Every class of the submodule knows its dtype (obj.dtype, as NumPy arrays and torch tensors).
  for (const auto& item : sub.attr("__dict__").cast<py::dict>()) {
    if (PyType_Check(item.second.ptr()) && !py::hasattr(item.second, "__members__"))  // not the enums
      item.second.attr("dtype") = py::dtype::of<Scalar>();
  }
}

}  // namespace sparse_rtrl::python::SPARSE_RTRL_PY_NS
