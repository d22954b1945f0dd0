// The float64 bindings (submodule sparse_rtrl._core.float64): typed.hpp with Scalar = double.
#define SPARSE_RTRL_PY_SCALAR double
#define SPARSE_RTRL_PY_NS f64
#include "typed_all.inl"
