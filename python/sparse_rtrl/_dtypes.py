"""The package's top level over the two compiled halves ``_core.float32`` and ``_core.float64``.

The dtype is chosen where a run starts: ``Model(..., dtype=)`` (or the dtype of the
EgruParameters it is built from), and everything built from the model follows it (Rtrl, Snap,
TruncatedBptt, Uoro, Bptt, RtrlStreams, Inference). Objects built without a model (LinearReadout, ReadoutParameters,
Sgd, Adam, AdamW, ActivityRegularizer, EgruParameters from sizes, TriangularSurrogate) take
``dtype=`` (default float64; ``dtype=model.dtype`` follows a model); built from arrays, they take
the arrays' dtype. Objects of two dtypes never mix: a method given an object or array of the
other dtype raises TypeError naming both.

Each public class here is a small factory class: calling it builds the object of the right
dtype's compiled class, and ``isinstance(x, sparse_rtrl.Model)`` is true for both dtypes' models.
"""
import numpy as np

from . import _core

float32 = _core.float32
float64 = _core.float64
_MODULES = {"float32": float32, "float64": float64}


def _module_of_dtype(dtype, where):
    """The compiled half for ``dtype``: None (float64), "float32", numpy.float32, numpy.dtype,
    torch.float32, a model's ``.dtype``..."""
    if dtype is None:
        return float64
    name = None
    text = str(dtype)
    if text.startswith("torch."):  # torch.float32, torch.float64 (torch need not be imported here)
        name = {"torch.float32": "float32", "torch.float": "float32", "torch.float64": "float64",
                "torch.double": "float64"}.get(text)
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
    if name not in _MODULES:
        raise TypeError(f"sparse_rtrl.{where}: dtype must be float32 or float64, received {dtype!r}")
    return _MODULES[name]


def _module_of(obj):
    """The compiled half an object of the library belongs to, or None."""
    for mod in (float32, float64):
        if getattr(mod, type(obj).__name__, None) is type(obj):
            return mod
    return None


def _module_of_array(a):
    """float32 for a float32 array (or tensor), float64 for anything else (the C++ side checks)."""
    dt = getattr(a, "dtype", None)
    if dt is not None and str(dt) in ("float32", "torch.float32"):
        return float32
    return float64


def _type_name(obj):
    return type(obj).__name__


class _Dispatch(type):
    """Metaclass of the top-level classes: ``Name(...)`` returns an object of
    ``_core.float32.Name`` or ``_core.float64.Name``; isinstance and issubclass accept both."""

    def __call__(cls, *args, **kwargs):
        return cls._build(*args, **kwargs)

    def _pair(cls):
        return tuple(getattr(mod, cls.__name__) for mod in (float32, float64))

    def __instancecheck__(cls, obj):
        return isinstance(obj, cls._pair())

    def __subclasscheck__(cls, sub):
        return sub is cls or issubclass(sub, cls._pair())

    def __getattr__(cls, name):
        # Methods and their documentation (help(sparse_rtrl.Rtrl.step)): the float64 class's.
        return getattr(getattr(float64, cls.__name__), name)


def _by_model(name):
    """A class built from a Model, of the model's dtype (Rtrl, Snap, TruncatedBptt, Uoro, Bptt, RtrlStreams,
    Inference)."""

    def build(*args, **kwargs):
        model = args[0] if args else kwargs.get("model")
        mod = _module_of(model)
        if mod is None or _type_name(model) != "Model":
            raise TypeError(f"sparse_rtrl.{name}(): model must be a sparse_rtrl.Model, received "
                            f"{_type_name(model)}")
        return getattr(mod, name)(*args, **kwargs)

    doc = getattr(float64, name).__doc__
    return _Dispatch(name, (), {"_build": staticmethod(build), "__doc__": doc, "__module__": "sparse_rtrl"})


def _by_dtype(name, extra_doc=""):
    """A class built without a model: dtype=... (default float64)."""

    def build(*args, dtype=None, **kwargs):
        return getattr(_module_of_dtype(dtype, name + "()"), name)(*args, **kwargs)

    doc = (getattr(float64, name).__doc__ or "") + "\n\ndtype: float32 or float64 (default; " \
        "dtype=model.dtype follows a model)." + extra_doc
    return _Dispatch(name, (), {"_build": staticmethod(build), "__doc__": doc, "__module__": "sparse_rtrl"})


Rtrl = _by_model("Rtrl")
Snap = _by_model("Snap")
TruncatedBptt = _by_model("TruncatedBptt")
Uoro = _by_model("Uoro")
Bptt = _by_model("Bptt")
RtrlStreams = _by_model("RtrlStreams")
Inference = _by_model("Inference")
TriangularSurrogate = _by_dtype("TriangularSurrogate")
Sgd = _by_dtype("Sgd")
Adam = _by_dtype("Adam")
AdamW = _by_dtype("AdamW")
ActivityRegularizer = _by_dtype("ActivityRegularizer")


def _params_build(*args, dtype=None, **kwargs):
    first = args[0] if args else kwargs.get("units", kwargs.get("W"))
    if isinstance(first, (int, np.integer)):
        mod = _module_of_dtype(dtype, "EgruParameters()")
    else:  # from arrays: their dtype, unless dtype= says otherwise (then they must have it)
        mod = _module_of_dtype(dtype, "EgruParameters()") if dtype is not None else _module_of_array(first)
    return mod.EgruParameters(*args, **kwargs)


EgruParameters = _Dispatch("EgruParameters", (), {
    "_build": staticmethod(_params_build), "__module__": "sparse_rtrl",
    "__doc__": float64.EgruParameters.__doc__ + "\n\nEgruParameters(units, inputs, *, dtype=None): zeros "
    "(float64 unless dtype says otherwise); EgruParameters(W, R, bW, bR, theta, *, dtype=None): the arrays' "
    "dtype (all five must have it)."})


def _readout_params_build(*args, dtype=None, **kwargs):
    first = args[0] if args else kwargs.get("outputs", kwargs.get("V"))
    if isinstance(first, (int, np.integer)) or dtype is not None:
        mod = _module_of_dtype(dtype, "ReadoutParameters()")
    else:
        mod = _module_of_array(first)
    return mod.ReadoutParameters(*args, **kwargs)


ReadoutParameters = _Dispatch("ReadoutParameters", (), {
    "_build": staticmethod(_readout_params_build), "__module__": "sparse_rtrl",
    "__doc__": float64.ReadoutParameters.__doc__ + "\n\nReadoutParameters(outputs, units, *, dtype=None) or "
    "ReadoutParameters(V, b) (the arrays' dtype)."})


def _readout_build(*args, dtype=None, **kwargs):
    first = args[0] if args else kwargs.get("params")
    mod = _module_of(first)
    if mod is not None:  # LinearReadout(params): the parameters' dtype
        if dtype is not None and _module_of_dtype(dtype, "LinearReadout()") is not mod:
            raise TypeError(f"sparse_rtrl.LinearReadout(): params are {mod.dtype}, dtype={dtype!r}")
        return mod.LinearReadout(*args, **kwargs)
    return _module_of_dtype(dtype, "LinearReadout()").LinearReadout(*args, **kwargs)


LinearReadout = _Dispatch("LinearReadout", (), {
    "_build": staticmethod(_readout_build), "__module__": "sparse_rtrl",
    "__doc__": float64.LinearReadout.__doc__ + "\n\nLinearReadout(outputs, units, seed=0, *, dtype=None) "
    "(float64 unless dtype says otherwise; dtype=model.dtype follows a model) or LinearReadout(params)."})


def _layers_module(layers, dtype, where):
    items = [layers] if _type_name(layers) == "EgruParameters" else list(layers)
    mods = {_module_of(p) for p in items}
    if None in mods:
        bad = next(p for p in items if _module_of(p) is None)
        raise TypeError(f"sparse_rtrl.{where}: layers must be EgruParameters (or a list of them), received "
                        f"{_type_name(bad)}")
    if len(mods) > 1:
        raise TypeError(f"sparse_rtrl.{where}: the layers' EgruParameters mix float32 and float64; build them "
                        f"with one dtype")
    mod = mods.pop() if mods else _module_of_dtype(dtype, where)
    if dtype is not None and _module_of_dtype(dtype, where) is not mod:
        raise TypeError(f"sparse_rtrl.{where}: dtype={dtype!r} but the layers are {mod.dtype}: build the "
                        f"EgruParameters with dtype={dtype!r} (a model never converts its parameters)")
    return items, mod


def _surrogate_for(mod, surrogate):
    """Surrogates are two numbers: one of the other dtype is rebuilt in the model's."""
    def one(s):
        if s is None or _module_of(s) is mod:
            return s
        return mod.TriangularSurrogate(s.gamma, s.eps)
    if isinstance(surrogate, (list, tuple)):
        return [one(s) for s in surrogate]
    return one(surrogate)


def _model_build(layers, masks=None, events=True, surrogate=None, *, dtype=None):
    items, mod = _layers_module(layers, dtype, "Model()")
    return mod.Model(layers if _type_name(layers) == "EgruParameters" else items, masks=masks, events=events,
                     surrogate=_surrogate_for(mod, surrogate))


def _torch_like(units, inputs, seed=0, threshold=0.3, masks=None, events=True, surrogate=None, *, dtype=None):
    """A model initialised as torch.nn.GRU (init_torch_like); units: n or a list of layer sizes; layer k is
    seeded with seed + k. dtype: float32 or float64 (default)."""
    mod = _module_of_dtype(dtype, "Model.torch_like()")
    return mod.Model.torch_like(units, inputs, seed=seed, threshold=threshold, masks=masks, events=events,
                                surrogate=_surrogate_for(mod, surrogate))


Model = _Dispatch("Model", (), {
    "_build": staticmethod(_model_build), "torch_like": staticmethod(_torch_like), "__module__": "sparse_rtrl",
    "__doc__": float64.Model.__doc__ + "\n\nModel(layers, masks=None, events=True, surrogate=None, *, "
    "dtype=None): the dtype of the layers' EgruParameters (dtype= checks it). Every learner, and the arrays "
    "in and out of them, have the model's dtype (model.dtype)."})


def init_torch_like(units, inputs, seed=0, threshold=0.3, *, dtype=None):
    """torch.nn.GRU's initialisation (uniform in +-1/sqrt(n), from the library's portable seeded generator:
    the same numbers as C++'s init_torch_like<Scalar>), thresholds constant; dtype float32 or float64."""
    return _module_of_dtype(dtype, "init_torch_like()").init_torch_like(units, inputs, seed=seed,
                                                                        threshold=threshold)


def softmax_cross_entropy(logits, target):
    """(L, dL/dlogits) of softmax cross-entropy against class target, in the logits' dtype."""
    return _module_of_array(logits).softmax_cross_entropy(logits, target)


def mean_squared_error(prediction, target):
    """(L, dL/dprediction) of (1/k) sum (p - u)^2, in the prediction's dtype (target: the same dtype)."""
    return _module_of_array(prediction).mean_squared_error(prediction, target)


def clip_gradient_norm(max_norm, *sets):
    """clip_gradient_norm(max_norm, grad, ...): scales every set (EgruParameters, ReadoutParameters of one
    dtype; up to 4) in place by max_norm / norm when their global norm exceeds max_norm; returns the norm
    before clipping."""
    mod = _module_of(sets[0]) if sets else float64
    if mod is None:
        raise TypeError(f"sparse_rtrl.clip_gradient_norm(): gradient set 0 must be EgruParameters or "
                        f"ReadoutParameters, received {_type_name(sets[0])}")
    return mod.clip_gradient_norm(max_norm, *sets)


def _file_dtype(path):
    """The dtype of a checkpoint's or torch.nn.GRU file's first weight, or None (the C++ reader then
    reports what is wrong with the file)."""
    try:
        with np.load(path) as z:
            for key in z.files:
                if key.startswith("weight_ih_l0"):
                    return z[key].dtype
    except Exception:  # noqa: BLE001 - any unreadable file: the library's loader says why
        return None
    return None


def load_model(path, *, dtype=None):
    """A new Model (layers, masks, modes, surrogates) built from a checkpoint's model entries, of the file's
    dtype (dtype= asks for one: a file of the other is refused with ValueError). Releases the GIL."""
    if dtype is None:
        found = _file_dtype(path)
        dtype = found if found is not None and found.name in _MODULES else None
    return _module_of_dtype(dtype, "load_model()").load_model(path)


def read_torch_gru(path, *, dtype=None):
    """The EgruParameters of every layer of a torch.nn.GRU .npz file (thresholds zero), in dtype (default
    float64; float32 files are widened exactly, float64 ones rounded for dtype=float32)."""
    return _module_of_dtype(dtype, "read_torch_gru()").read_torch_gru(path)


def _model_module(model, where):
    mod = _module_of(model)
    if mod is None or _type_name(model) != "Model":
        raise TypeError(f"sparse_rtrl.{where}: model must be a sparse_rtrl.Model, received {_type_name(model)}")
    return mod


def save_torch_gru(path, model, *, sync=True):
    """Writes the model's torch.nn.GRU tensors only (weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k},
    bias_hh_l{k}, the model's dtype). Atomic; releases the GIL."""
    return _model_module(model, "save_torch_gru()").save_torch_gru(path, model, sync=sync)


def load_torch_gru(path, model):
    """Loads a torch.nn.GRU state_dict saved with numpy.savez (float32 or float64) into the model's parameters
    (sizes must match; thresholds, masks and modes are kept). Raises ValueError and changes nothing on a bad
    file. Releases the GIL."""
    return _model_module(model, "load_torch_gru()").load_torch_gru(path, model)


def _time_rtrl_loop(rtrl, X, g, start, min_seconds):
    mod = _module_of(rtrl)
    return mod._time_rtrl_loop(rtrl, X, g, start, min_seconds)


TYPED_CLASSES = ("Model", "EgruParameters", "TriangularSurrogate", "Inference", "Rtrl", "Snap", "TruncatedBptt",
                 "Uoro", "Bptt", "RtrlStreams", "ReadoutParameters", "LinearReadout", "Sgd", "Adam", "AdamW", "ActivityRegularizer")
TYPED_FUNCTIONS = ("init_torch_like", "softmax_cross_entropy", "mean_squared_error", "clip_gradient_norm",
                   "load_model", "read_torch_gru", "save_torch_gru", "load_torch_gru")
