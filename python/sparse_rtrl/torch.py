"""sparse_rtrl.torch: an online EGRU as a torch.nn.Module, trained with exact sparse RTRL.

    import torch, sparse_rtrl.torch as srt
    layer = srt.OnlineEGRU(input_size=4, hidden_size=32)            # float32 by default
    readout = torch.nn.Linear(32, 2)
    opt = torch.optim.Adam([*layer.parameters(), *readout.parameters()], lr=1e-3)
    for x, target in stream:
        y = layer.step(x)                       # advances state and influence matrix (no graph)
        loss = torch.nn.functional.mse_loss(readout(y), target)
        loss.backward()                         # readout's .grad, and y.grad = dL/dy
        layer.backward(y.grad)                  # adds the exact RTRL gradient into each .grad
        opt.step(); opt.zero_grad()

The parameters are torch.nn.Parameter tensors sharing memory with the library's Model
(``layer.model``): what an optimizer writes into them is what the next step computes with, and no
copy is made either way. Their names are torch.nn.GRU's (``weight_ih_l{k}``, ``weight_hh_l{k}``,
``bias_ih_l{k}``, ``bias_hh_l{k}``, gate order r, z, n) plus the per-unit thresholds
``threshold_l{k}``, so ``state_dict()`` / ``load_state_dict()`` work as for torch modules (and the
GRU entries load into a torch.nn.GRU). Pruned weights (masks) stay zero: the library re-zeroes them
at every step, so an optimizer step (weight decay, momentum) cannot revive them.

The gradient is RTRL's, computed forward in time: ``backward(dL_dy)`` must be called for the
output of the last ``step()`` (before the next one). It is exact: in float64 it equals torch
autograd's back-propagation through time through the same EGRU to rounding. Many streams:
``OnlineEGRU(..., streams=B)`` steps B independent sequences at once (x and y have a batch
dimension, RtrlStreams), and the gradient is summed over them.

PyTorch is optional for the package: this module needs it (Debian: python3-torch), and only CPU
tensors of the layer's dtype are accepted (``.to(device)`` or ``.double()`` on the module raise:
build it with ``dtype=torch.float64``).
"""
import numpy as np
import torch

from . import _dtypes

_STEMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "threshold")
_FIELDS = {"weight_ih": "W", "weight_hh": "R", "bias_ih": "bW", "bias_hh": "bR", "threshold": "theta"}
_TORCH_DTYPES = {np.dtype("float32"): torch.float32, np.dtype("float64"): torch.float64}


class OnlineEGRU(torch.nn.Module):
    """An EGRU (or, with events=False, exactly torch.nn.GRU's cell) of num_layers layers, learning
    online by exact sparse RTRL; see the module's docstring.

    input_size, hidden_size, num_layers: as torch.nn.GRU (hidden_size may be a list of per-layer
    sizes). events: False is GRU mode; threshold: the thresholds' initial value; seed: the weights'
    initialisation (torch.nn.GRU's uniform(+-1/sqrt(n)), from the library's portable generator);
    masks, surrogate: as sparse_rtrl.Model; streams: None (x of shape (input_size,)) or B (x of
    shape (B, input_size)); skip_silent_rows, threads: as sparse_rtrl.Rtrl; dtype: torch.float32
    (default) or torch.float64.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, *, events=True, threshold=0.3, seed=0,
                 masks=None, surrogate=None, streams=None, skip_silent_rows=True, threads=1,
                 dtype=torch.float32, model=None):
        super().__init__()
        if model is None:
            sizes = list(hidden_size) if isinstance(hidden_size, (list, tuple)) else [hidden_size] * num_layers
            model = _dtypes.Model.torch_like(sizes, input_size, seed=seed, threshold=threshold, masks=masks,
                                             events=events, surrogate=surrogate, dtype=_numpy_dtype(dtype))
        self.model = model
        self.streams = streams
        options = dict(skip_silent_rows=skip_silent_rows, threads=threads)
        self.learner = (_dtypes.Rtrl(model, **options) if streams is None
                        else _dtypes.RtrlStreams(model, streams, **options))
        self._addresses = {}
        for k in range(model.layers):
            params = model.parameters(k)
            for stem in _STEMS:
                view = getattr(params, _FIELDS[stem])  # a writable NumPy view into the model
                p = torch.nn.Parameter(torch.from_numpy(view))  # shares that memory
                self.register_parameter(f"{stem}_l{k}", p)
                self._addresses[f"{stem}_l{k}"] = p.data_ptr()
        self._stepped = False

    @classmethod
    def from_model(cls, model, *, streams=None, skip_silent_rows=True, threads=1):
        """An OnlineEGRU over an existing sparse_rtrl.Model (its dtype, sizes, masks, modes)."""
        if not isinstance(model, _dtypes.Model):
            raise TypeError(f"sparse_rtrl.torch.OnlineEGRU.from_model(): expected a sparse_rtrl.Model, received "
                            f"{type(model).__name__}")
        return cls(model.inputs, [model.units(k) for k in range(model.layers)], model.layers, streams=streams,
                   skip_silent_rows=skip_silent_rows, threads=threads, model=model)

    @property
    def dtype(self):
        return _TORCH_DTYPES[self.model.dtype]

    @property
    def num_layers(self):
        return self.model.layers

    @property
    def input_size(self):
        return self.model.inputs

    def hidden_size(self, layer=None):
        return self.model.units(layer)

    def _array(self, t, what):
        if isinstance(t, torch.Tensor):
            if t.device.type != "cpu":
                raise TypeError(f"sparse_rtrl.torch.OnlineEGRU.{what}: expected a CPU tensor, received one on "
                                f"{t.device}")
            if t.dtype != self.dtype:
                raise TypeError(f"sparse_rtrl.torch.OnlineEGRU.{what}: expected a {self.dtype} tensor (the layer's "
                                f"dtype), received {t.dtype}")
            return t.detach().numpy()
        return t  # NumPy arrays and lists: the library's dtype rule

    def step(self, x):
        """Advances every layer's state and influence matrix for input x ((input_size,), or
        (streams, input_size)); returns the top layer's output y as a new leaf tensor that requires
        grad (when grad mode is on), so that loss.backward() leaves dL/dy in y.grad."""
        xa = self._array(x, "step()")
        self.learner.step(xa)
        self._stepped = True
        y = torch.from_numpy(self.learner.output() if self.streams is None else self.learner.outputs())
        if torch.is_grad_enabled():
            y.requires_grad_(True)
        return y

    def output(self, layer=None):
        """y of the last step (a copy): the top layer's, or layer k's (one stream only)."""
        if self.streams is not None:
            if layer is not None:
                raise ValueError("sparse_rtrl.torch.OnlineEGRU.output(): with streams, the top layer's only")
            return torch.from_numpy(self.learner.outputs())
        return torch.from_numpy(self.learner.output(layer))

    def backward(self, dL_dy, dL_do=None, layer=None):
        """Adds the exact gradient of a loss on the last step's output (dL/dy, and optionally dL/do
        on the events; layer k, default the top) into every parameter's .grad (allocated when
        None), as loss.backward() does for autograd; returns nothing."""
        if not self._stepped:
            raise RuntimeError("sparse_rtrl.torch.OnlineEGRU.backward(): call step() first (the gradient is of "
                               "the last step's output)")
        g = self._array(dL_dy, "backward()")
        d_o = None if dL_do is None else self._array(dL_do, "backward()")
        if self.streams is None:
            self.learner.accumulate_gradient(g, d_o, layer)
        else:
            if layer is not None:
                raise ValueError("sparse_rtrl.torch.OnlineEGRU.backward(): with streams, losses on the top layer only")
            self.learner.accumulate_gradient(g, d_o)
        for k in range(self.model.layers):
            grad = self.learner.gradient(k)
            for stem in _STEMS:
                p = getattr(self, f"{stem}_l{k}")
                add = torch.from_numpy(getattr(grad, _FIELDS[stem]))
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad.add_(add)
        self.learner.zero_gradient()  # the learner's accumulator is scratch: .grad holds the sum

    def reset(self, stream=None):
        """Starts new sequences from c_0 = 0: every stream (or stream b); gradients are kept."""
        if stream is None:
            self.learner.reset()
        elif self.streams is None:
            raise ValueError("sparse_rtrl.torch.OnlineEGRU.reset(): a stream index needs streams=B")
        else:
            self.learner.reset(stream)
        self._stepped = False

    def enforce_mask(self):
        """Re-zeroes pruned weights now (every step does it too)."""
        self.model.enforce_mask()

    def load_state_dict(self, state_dict, strict=True):
        """torch's load_state_dict (copies into the shared memory), then the masks re-enforced."""
        result = super().load_state_dict(state_dict, strict=strict)
        self.model.enforce_mask()
        return result

    def _apply(self, fn, *args, **kwargs):
        # .to(), .cuda(), .double(), .half() would replace the parameters by new tensors that no
        # longer share the model's memory: allowed only when fn keeps every tensor as it is.
        for name, p in self.named_parameters(recurse=False):
            out = fn(p.data)
            if out.data_ptr() != p.data_ptr() or out.dtype != p.dtype or out.device != p.device:
                raise RuntimeError(f"sparse_rtrl.torch.OnlineEGRU: {name} shares memory with the library's model "
                                   f"({p.dtype}, CPU); build the layer with the dtype you need "
                                   f"(OnlineEGRU(..., dtype=torch.float64)) instead of converting it")
        return self

    def forward(self, x):
        """As step() (so the module can be called: y = layer(x))."""
        return self.step(x)

    def extra_repr(self):
        sizes = [self.model.units(k) for k in range(self.model.layers)]
        return (f"input_size={self.model.inputs}, hidden_size={sizes}, events="
                f"{[self.model.events(k) for k in range(self.model.layers)]}, streams={self.streams}, "
                f"dtype={self.dtype}")


def _numpy_dtype(dtype):
    if dtype in (torch.float32, torch.float64):
        return "float32" if dtype == torch.float32 else "float64"
    return dtype  # numpy or str spellings: the package's rule
