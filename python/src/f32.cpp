// The float32 bindings (submodule sparse_rtrl._core.float32): typed.hpp with Scalar = float.
#define SPARSE_RTRL_PY_SCALAR float
#define SPARSE_RTRL_PY_NS f32
#include "typed_all.inl"
