"""sparse_rtrl: exact sparse real-time recurrent learning (RTRL) for event-based GRUs.

Python bindings of the C++ header-only library, in float32 and float64. The dtype is chosen where a
run starts, ``Model(..., dtype="float32")`` (or the dtype of the EgruParameters it is built from),
and every object built from the model follows it; objects built without a model (LinearReadout,
Sgd, Adam, AdamW, ...) take ``dtype=`` (default float64; ``dtype=model.dtype``). Arrays go in and
out in that dtype: an input array of that dtype is used without a copy when C-contiguous; an array
of another dtype (float32 for a float64 object too), complex or object data raises TypeError naming
both (convert it yourself); a Python list of numbers is converted. A model's parameters are
writable views into the model (``model.parameters(k).W``, ``model.state_dict()``), kept alive by
the model. Learner state (outputs, states, gradients, influence matrices) is returned as copies.
The compiled halves are ``sparse_rtrl.float32`` and ``sparse_rtrl.float64`` (``_core``'s
submodules); the names here build the right one.

Parameter names follow ``torch.nn.GRU`` (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
``bias_hh_l0``, ...); the per-unit event thresholds are ``threshold_l0``, .... The helpers in
``sparse_rtrl.torch_interop`` (``from_torch_gru``, ``to_torch_gru``) need PyTorch; the package
itself does not.

Errors: bad input raises ValueError with the library's message, a wrong dtype or type TypeError, an
index out of range IndexError, a call in the wrong order RuntimeError, learning state too large for
the machine MemoryError. ``step()``, ``accumulate_gradient()``, ``forward()`` and ``backward()``
release the GIL, so Python threads can drive independent learners in parallel.
"""
from . import _core
from ._core import (  # noqa: F401  the classes without a scalar type
    BpttWork, Checkpoint, InfluenceLayout, MagnitudePruner, MaskSharing, ParameterMask, PruningCurve,
    PruningSchedule, SnapCrossLayer, TruncationForm, WorkCounters, __version__, checkpoint_format_version, dtypes,
    uniform_random)
from ._dtypes import (  # noqa: F401  the typed classes and functions, built in the dtype asked for
    ActivityRegularizer, Adam, AdamW, Bptt, EgruParameters, Inference, LinearReadout, Model, ReadoutParameters, Rtrl,
    RtrlStreams, Sgd, Snap, TriangularSurrogate, TruncatedBptt, Uoro, clip_gradient_norm, float32, float64,
    init_torch_like, load_model, load_torch_gru, mean_squared_error, read_torch_gru, save_torch_gru,
    softmax_cross_entropy)
from .torch_interop import from_torch_gru, to_torch_gru  # noqa: F401

__all__ = [
    "ActivityRegularizer", "Adam", "AdamW", "Bptt", "BpttWork", "Checkpoint", "EgruParameters", "Inference",
    "InfluenceLayout", "LinearReadout", "MagnitudePruner", "MaskSharing", "Model", "ParameterMask", "PruningCurve",
    "PruningSchedule", "ReadoutParameters", "Rtrl", "RtrlStreams", "Sgd", "Snap", "SnapCrossLayer",
    "TriangularSurrogate", "TruncatedBptt", "TruncationForm", "Uoro", "WorkCounters", "checkpoint_format_version",
    "clip_gradient_norm", "dtypes", "float32", "float64", "from_torch_gru", "init_torch_like", "load_model", "load_torch_gru", "mean_squared_error",
    "read_torch_gru", "save_torch_gru", "softmax_cross_entropy", "to_torch_gru", "torch_interop", "uniform_random",
]
