"""sparse_rtrl.torch.OnlineEGRU: parameters that are torch tensors sharing the model's memory, the exact
RTRL gradient in .grad (golden cases at 1e-10 in float64; equal to torch autograd BPTT through the same
EGRU), torch.optim / clip_grad_norm_ / schedulers / zero_grad, masks kept, stacks, streams,
state_dict. Skipped, with the reason, where PyTorch is not importable (Debian: python3-torch)."""
import numpy as np
import pytest

import sparse_rtrl as s
from helpers import golden_cases, golden_model, load_golden, rel_err

try:
    import torch
    import sparse_rtrl.torch as srt
except ImportError:  # optional: every test below is collected and reported skipped, with the reason
    torch = srt = None
pytestmark = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (Debian: python3-torch)")

TOL = 1e-10
GRAD_OF = {"weight_ih": "gW", "weight_hh": "gR", "bias_ih": "gbW", "bias_hh": "gbR", "threshold": "gtheta"}
STEMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "threshold")


@pytest.mark.parametrize("name", golden_cases())
def test_golden_cases_through_online_egru_float64(name):
    case = load_golden(name)
    layer = srt.OnlineEGRU.from_model(golden_model(case))
    assert layer.dtype == torch.float64
    for t in range(case["T"]):
        y = layer.step(torch.from_numpy(case["X"][t]))
        assert rel_err(y.detach().numpy(), case["layers"][-1]["y_ref"][t]) <= TOL, f"y_{t}"
        for k, lay in enumerate(case["layers"]):
            layer.backward(torch.from_numpy(lay["G"][t]), layer=k)
    for k, lay in enumerate(case["layers"]):
        for stem in STEMS:
            got = getattr(layer, f"{stem}_l{k}").grad.numpy()
            err = rel_err(got, lay[GRAD_OF[stem]])
            assert err <= TOL, f"{name}: layer {k} {stem} relative error {err:.3g}"


# ---- an EGRU in plain torch autograd (BPTT), independent of the library -------------------------

class _Event(torch.autograd.Function if torch else object):
    """H(v) = 1 if v > 0 else 0, differentiated with psi(v) = gamma max(0, 1 - |v| / eps)."""

    @staticmethod
    def forward(ctx, v, gamma, eps):
        ctx.save_for_backward(v)
        ctx.gamma, ctx.eps = gamma, eps
        return (v > 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        return grad * ctx.gamma * torch.clamp(1.0 - v.abs() / ctx.eps, min=0.0), None, None


def autograd_egru(params, masks, X, events, gamma, eps):
    """Outputs of every layer (list of T x B x n) of a stack fed X (T x B x d), c_0 = 0."""
    T, B = X.shape[0], X.shape[1]
    layers = len(params)
    cs = [X.new_zeros(B, p["weight_hh"].shape[1]) for p in params]

    def emit(c, theta):
        if not events:
            return c, c
        o = _Event.apply(c - theta, gamma, eps)
        return o * c, c - o * theta

    state = [emit(c, p["threshold"]) for c, p in zip(cs, params)]  # (y, h) of every layer
    outs = [[] for _ in range(layers)]
    for t in range(T):
        inp = X[t]
        for k, p in enumerate(params):
            n = p["weight_hh"].shape[1]
            W, R = p["weight_ih"] * masks[k][0], p["weight_hh"] * masks[k][1]
            a = inp @ W.t() + p["bias_ih"]
            q = state[k][0] @ R.t() + p["bias_hh"]
            r = torch.sigmoid(a[:, :n] + q[:, :n])
            z = torch.sigmoid(a[:, n:2 * n] + q[:, n:2 * n])
            g = torch.tanh(a[:, 2 * n:] + r * q[:, 2 * n:])
            c = z * state[k][1] + (1 - z) * g
            state[k] = emit(c, p["threshold"])
            outs[k].append(state[k][0])
            inp = state[k][0]
    return [torch.stack(o) for o in outs]


@pytest.mark.parametrize("events", [True, False])
@pytest.mark.parametrize("streams", [None, 3])
def test_gradient_equals_torch_autograd_bptt(events, streams):
    """A masked two-layer stack, losses on both layers, T steps: .grad after the online run equals
    autograd's gradient through the whole sequence (float64)."""
    masks = [s.ParameterMask.random(7, 4, 0.6, 0.5, seed=1), s.ParameterMask.random(5, 7, 0.7, 0.6, seed=2)]
    layer = srt.OnlineEGRU(4, [7, 5], 2, events=events, threshold=0.05, seed=3, masks=masks, streams=streams,
                           surrogate=s.TriangularSurrogate(1.0, 0.5), dtype=torch.float64)
    with torch.no_grad():  # strong inputs: events cross thresholds
        layer.weight_ih_l0.mul_(3)
    params = [{stem: getattr(layer, f"{stem}_l{k}").detach().clone().requires_grad_(True) for stem in STEMS}
              for k in range(2)]
    torch_masks = [(torch.from_numpy(m.W.astype(np.float64)), torch.from_numpy(m.R.astype(np.float64)))
                   for m in masks]
    B = streams or 1
    T = 25
    gen = torch.Generator().manual_seed(4)
    X = torch.rand(T, B, 4, generator=gen, dtype=torch.float64) * 2 - 1
    G = [torch.randn(T, B, 7, generator=gen, dtype=torch.float64),
         torch.randn(T, B, 5, generator=gen, dtype=torch.float64)]
    outs = autograd_egru(params, torch_masks, X, events, 1.0, 0.5)
    (sum((o * g).sum() for o, g in zip(outs, G))).backward()

    for t in range(T):
        y = layer.step(X[t] if streams else X[t, 0])
        assert rel_err(y.detach().numpy(), outs[1][t].detach().numpy().reshape(y.shape)) <= TOL
        if streams:
            layer.backward(G[1][t])  # streams: a loss on the top layer only
        else:
            layer.backward(G[0][t, 0], layer=0)
            layer.backward(G[1][t, 0], layer=1)
    if streams:  # the reference with the top layer's loss only
        for p in params:
            for v in p.values():
                v.grad = None
        outs = autograd_egru(params, torch_masks, X, events, 1.0, 0.5)
        (outs[1] * G[1]).sum().backward()
    if events:  # the case has events (threshold crossings) and silent units
        work = layer.learner.total_work() if streams else layer.learner.total_work(0)
        assert 0 < work.event_sparsity() < 1
    for k in range(2):
        for stem in STEMS:
            ours = getattr(layer, f"{stem}_l{k}").grad.numpy()
            g = params[k][stem].grad  # None: the loss does not depend on it (GRU mode's thresholds)
            ref = np.zeros(ours.shape) if g is None else g.numpy()
            assert rel_err(ours, ref) <= TOL, f"layer {k} {stem}: {rel_err(ours, ref):.3g}"


def test_parameters_share_the_models_memory_and_torch_optim_works():
    mask = s.ParameterMask.random(16, 3, 0.5, 0.4, seed=5)
    layer = srt.OnlineEGRU(3, 16, masks=mask, threshold=0.05, seed=6)
    assert layer.dtype == torch.float32 and all(p.dtype == torch.float32 for p in layer.parameters())
    names = [n for n, _ in layer.named_parameters()]
    assert names == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "threshold_l0"]
    assert layer.weight_hh_l0.data_ptr() == layer.model.parameters().R.ctypes.data
    readout = torch.nn.Linear(16, 1)
    opt = torch.optim.AdamW([*layer.parameters(), *readout.parameters()], lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
    gen = torch.Generator().manual_seed(0)
    before = layer.weight_hh_l0.detach().clone()
    for t in range(30):
        x = torch.rand(3, generator=gen) * 2 - 1
        y = layer.step(x * 4)
        loss = (readout(y) - x[:1]).pow(2).sum()
        loss.backward()
        layer.backward(y.grad)
        norm = torch.nn.utils.clip_grad_norm_([*layer.parameters(), *readout.parameters()], 0.5)
        assert norm >= 0
        opt.step()
        sched.step()
        opt.zero_grad()
        assert all(p.grad is None or not p.grad.any() for p in layer.parameters())
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.125)
    after = layer.weight_hh_l0.detach()
    assert not torch.equal(before, after), "the optimizer changed the weights"
    # The model computes with what the optimizer wrote: the same memory.
    assert np.array_equal(layer.model.parameters().R, after.numpy())
    # Pruned weights stay zero, even when something writes them: the next step re-zeroes them.
    pruned = torch.from_numpy(~mask.R)
    assert not after[pruned].any()
    with torch.no_grad():
        layer.weight_hh_l0[pruned] = 1.0
    layer.step(torch.zeros(3))
    assert not layer.weight_hh_l0.detach()[pruned].any()


def test_state_dict_round_trip_and_torch_gru():
    a = srt.OnlineEGRU(3, 6, 2, seed=1, dtype=torch.float64, events=False)
    b = srt.OnlineEGRU(3, 6, 2, seed=9, dtype=torch.float64, events=False)
    sd = a.state_dict()
    assert list(sd) == [f"{stem}_l{k}" for k in range(2) for stem in STEMS]
    b.load_state_dict(sd)
    assert np.array_equal(b.model.parameters(1).R, a.model.parameters(1).R)  # copied into b's model
    x = torch.rand(3, dtype=torch.float64)
    assert torch.equal(a.step(x), b.step(x))
    # GRU mode computes torch.nn.GRU's function: its entries load into one (the thresholds aside).
    gru = torch.nn.GRU(3, 6, num_layers=2, dtype=torch.float64)
    gru.load_state_dict({k: v for k, v in sd.items() if not k.startswith("threshold")})
    c = srt.OnlineEGRU(3, 6, 2, seed=1, dtype=torch.float64, events=False)
    X = torch.rand(5, 3, dtype=torch.float64)
    ref, _ = gru(X[:, None, :])
    for t in range(5):
        assert rel_err(c.step(X[t]).detach().numpy(), ref[t, 0].detach().numpy()) <= TOL


def test_streams_sum_the_gradient_of_independent_streams():
    B, T = 3, 8
    many = srt.OnlineEGRU(2, 5, streams=B, seed=2, threshold=0.05, dtype=torch.float64)
    ones = [srt.OnlineEGRU(2, 5, seed=2, threshold=0.05, dtype=torch.float64) for _ in range(B)]
    gen = torch.Generator().manual_seed(1)
    X = torch.rand(T, B, 2, generator=gen, dtype=torch.float64) * 4 - 2
    G = torch.randn(T, B, 5, generator=gen, dtype=torch.float64)
    for t in range(T):
        Y = many.step(X[t])
        assert Y.shape == (B, 5)
        many.backward(G[t])
        for b, one in enumerate(ones):
            assert rel_err(one.step(X[t, b]).detach().numpy(), Y[b].detach().numpy()) <= TOL
            one.backward(G[t, b])
    for stem in STEMS:
        total = sum(getattr(one, f"{stem}_l0").grad for one in ones)
        assert rel_err(getattr(many, f"{stem}_l0").grad.numpy(), total.numpy()) <= TOL, stem


def test_errors():
    layer = srt.OnlineEGRU(3, 4)
    with pytest.raises(RuntimeError, match="call step\\(\\) first"):
        layer.backward(torch.zeros(4))
    with pytest.raises(TypeError, match="expected a torch.float32 tensor .* received torch.float64"):
        layer.step(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="shares memory with the library's model"):
        layer.double()
    with pytest.raises(TypeError, match="expected a sparse_rtrl.Model"):
        srt.OnlineEGRU.from_model(torch.nn.GRU(3, 4))
    y = layer.step(torch.zeros(3))
    with pytest.raises(TypeError, match="expected a torch.float32 tensor"):
        layer.backward(torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError):
        layer.backward(torch.zeros(5))  # the library's size check
    assert y.requires_grad and y.is_leaf
