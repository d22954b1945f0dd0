"""Moving parameters between sparse_rtrl models and torch.nn.GRU modules.

PyTorch is optional: it is imported inside these functions only, so ``import sparse_rtrl`` works
without it. In GRU mode (``events=False``) a sparse_rtrl model computes exactly what
``torch.nn.GRU`` computes (gate order r, z, n = our g; the same initial state 0), so gradients can
be compared one to one.
"""
import numpy as np

from . import _dtypes

_GRU_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise ImportError("sparse_rtrl.torch_interop needs PyTorch (Debian: python3-torch)") from e
    return torch


def _check_gru(gru, where):
    torch = _torch()
    if not isinstance(gru, torch.nn.GRU):
        raise TypeError(f"sparse_rtrl.{where}: expected a torch.nn.GRU, received {type(gru).__name__}")
    if gru.bidirectional:
        raise ValueError(f"sparse_rtrl.{where}: bidirectional GRUs are not supported (RTRL runs forward in time)")
    if not gru.bias:
        raise ValueError(f"sparse_rtrl.{where}: a GRU without biases (bias=False) is not supported")
    if getattr(gru, "proj_size", 0):
        raise ValueError(f"sparse_rtrl.{where}: proj_size is not supported")


def from_torch_gru(gru, *, events=False, threshold=0.3, masks=None, surrogate=None, dtype=None):
    """A Model with the weights of ``gru`` (a torch.nn.GRU, any dtype; copied into a model of dtype
    float64, or the dtype= given: float32 or float64).

    events: False (default) is GRU mode, exactly torch.nn.GRU; True makes an EGRU with these
    weights. threshold: the per-unit thresholds theta, a number or one array (or number) per
    layer (used in events mode only, but kept either way). masks, surrogate: as for Model.
    """
    _check_gru(gru, "from_torch_gru()")
    L = gru.num_layers
    thresholds = threshold if isinstance(threshold, (list, tuple)) else [threshold] * L
    if len(thresholds) != L:
        raise ValueError(f"sparse_rtrl.from_torch_gru(): threshold must be one value or one per layer ({L}), "
                         f"received {len(thresholds)}")
    mod = _dtypes._module_of_dtype(dtype, "from_torch_gru()")
    np_dtype = mod.dtype
    layers = []
    for k in range(L):
        # The user asked for this dtype: the conversion (float32 weights widened, or float64 rounded) is theirs.
        w = {name: getattr(gru, f"{name}_l{k}").detach().cpu().double().numpy().astype(np_dtype)
             for name in _GRU_KEYS}
        n = w["weight_hh"].shape[1]
        theta = np.broadcast_to(np.asarray(thresholds[k], dtype=np.float64), (n,)).astype(np_dtype)
        layers.append(mod.EgruParameters(w["weight_ih"], w["weight_hh"], w["bias_ih"], w["bias_hh"], theta))
    return _dtypes.Model(layers, masks=masks, events=events, surrogate=surrogate)


def to_torch_gru(model, gru=None, *, dtype=None):
    """Writes the model's weights into ``gru`` (a torch.nn.GRU of the same sizes) or into a new
    ``torch.nn.GRU(model.inputs, n, num_layers=L, dtype=dtype or the model's dtype)``; returns the GRU.

    torch.nn.GRU has one hidden size for all layers: a stack of layers of different sizes is
    refused. The thresholds have no place in a GRU and are not written (``model.state_dict()``
    has them as threshold_lK); pruned weights are written as zeros.
    """
    torch = _torch()
    L = model.layers
    sizes = [model.units(k) for k in range(L)]
    if len(set(sizes)) != 1:
        raise ValueError(f"sparse_rtrl.to_torch_gru(): torch.nn.GRU has one hidden size for every layer, "
                         f"the model's layers have {sizes}")
    if gru is None:
        own = torch.float32 if model.dtype == np.float32 else torch.float64
        gru = torch.nn.GRU(model.inputs, sizes[0], num_layers=L, dtype=dtype or own)
    _check_gru(gru, "to_torch_gru()")
    if gru.num_layers != L or gru.hidden_size != sizes[0] or gru.input_size != model.inputs:
        raise ValueError(f"sparse_rtrl.to_torch_gru(): the GRU has input_size={gru.input_size}, "
                         f"hidden_size={gru.hidden_size}, num_layers={gru.num_layers}; the model needs "
                         f"{model.inputs}, {sizes[0]}, {L}")
    state = model.state_dict()
    with torch.no_grad():
        for k in range(L):
            for name in _GRU_KEYS:
                target = getattr(gru, f"{name}_l{k}")
                target.copy_(torch.from_numpy(np.array(state[f"{name}_l{k}"])).to(target.dtype))
    return gru
