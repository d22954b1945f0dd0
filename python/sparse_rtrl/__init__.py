"""sparse_rtrl: exact sparse real-time recurrent learning (RTRL) for event-based GRUs.

Python bindings of the C++ header-only library (float64 only). The compiled part is
``sparse_rtrl._core``; everything in it is re-exported here. Arrays go in and out as NumPy
float64 arrays: inputs are mapped without a copy when they are float64 and C-contiguous (a
vector, or a row-major matrix), and converted otherwise; a model's parameters are writable views
into the model (``model.parameters(k).W``, ``model.state_dict()``), kept alive by the model.
Learner state (outputs, states, gradients, influence matrices) is returned as copies.

Parameter names follow ``torch.nn.GRU`` (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
``bias_hh_l0``, ...); the per-unit event thresholds are ``threshold_l0``, .... The helpers in
``sparse_rtrl.torch_interop`` (``from_torch_gru``, ``to_torch_gru``) need PyTorch; the package
itself does not.

Errors: bad input raises ValueError with the library's message, an index out of range IndexError,
a call in the wrong order RuntimeError, learning state too large for the machine MemoryError.
``step()``, ``accumulate_gradient()``, ``forward()`` and ``backward()`` release the GIL, so
Python threads can drive independent learners in parallel.
"""
from . import _core
from ._core import *  # noqa: F401,F403
from ._core import __version__, scalar_type  # noqa: F401
from .torch_interop import from_torch_gru, to_torch_gru  # noqa: F401

__all__ = [name for name in dir(_core) if not name.startswith("_")] + [
    "from_torch_gru", "to_torch_gru", "torch_interop"]
