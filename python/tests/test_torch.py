"""GRU-mode models against torch.nn.GRU's autograd gradient (float64), and the torch helpers.
Skipped, with the reason, where PyTorch is not importable (Debian: python3-torch)."""
import numpy as np
import pytest

import sparse_rtrl as s
from helpers import rel_err

try:
    import torch
except ImportError:  # optional: every test below is collected and reported skipped, with the reason
    torch = None
pytestmark = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (Debian: python3-torch)")

TOL = 1e-10


def torch_gradient(gru, X, G):
    """Autograd gradient of L = sum_t <G_t, h_t> (top layer), and the outputs."""
    gru.zero_grad()
    out, _ = gru(torch.from_numpy(X)[:, None, :])  # (T, batch 1, n)
    (out[:, 0, :] * torch.from_numpy(G)).sum().backward()
    grads = [{name: getattr(gru, f"{name}_l{k}").grad.numpy().copy()
              for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")} for k in range(gru.num_layers)]
    return out[:, 0, :].detach().numpy(), grads


def compare(ours, theirs, where):
    for name, ref in (("W", "weight_ih"), ("R", "weight_hh"), ("bW", "bias_ih"), ("bR", "bias_hh")):
        err = rel_err(getattr(ours, name), theirs[ref])
        assert err <= TOL, f"{where}: d{name} relative error {err:.3g}"
    assert np.all(ours.theta == 0), "GRU mode: thresholds get no gradient"


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_gru_mode_matches_torch_autograd(layers):
    torch.manual_seed(3 + layers)
    n, d, T = 9, 4, 40
    gru = torch.nn.GRU(d, n, num_layers=layers, dtype=torch.float64)
    rng = np.random.default_rng(layers)
    X, G = rng.normal(size=(T, d)), rng.normal(size=(T, n))
    Y_ref, ref = torch_gradient(gru, X, G)

    model = s.from_torch_gru(gru)  # GRU mode (events=False)
    assert model.layers == layers and not model.events(0)
    rtrl = s.Rtrl(model)
    for t in range(T):
        rtrl.step(X[t])
        assert rel_err(rtrl.output(), Y_ref[t]) <= TOL
        rtrl.accumulate_gradient(G[t])
    for k, g in enumerate(rtrl.gradients()):
        compare(g, ref[k], f"RTRL layer {k}")

    bptt = s.Bptt(model)
    assert rel_err(bptt.forward(X), Y_ref) <= TOL
    grads = bptt.backward([None] * (layers - 1) + [G])
    for k, g in enumerate(grads):
        compare(g, ref[k], f"BPTT layer {k}")


def test_to_torch_gru_round_trip():
    model = s.Model.torch_like([6, 6], 3, seed=5, events=False)
    gru = s.to_torch_gru(model)
    assert isinstance(gru, torch.nn.GRU) and gru.num_layers == 2 and gru.hidden_size == 6
    X = np.random.default_rng(0).normal(size=(12, 3))
    out, _ = gru(torch.from_numpy(X)[:, None, :])
    assert rel_err(out[:, 0, :].detach().numpy(), s.Bptt(model).forward(X)) <= TOL
    back = s.from_torch_gru(gru)
    for k in range(2):
        for name in ("W", "R", "bW", "bR"):
            assert np.array_equal(getattr(back.parameters(k), name), getattr(model.parameters(k), name))


def test_from_torch_gru_events_mode_and_thresholds():
    gru = torch.nn.GRU(3, 5, num_layers=2, dtype=torch.float32)
    model = s.from_torch_gru(gru, events=True, threshold=[0.1, np.linspace(0, 0.4, 5)],
                             surrogate=s.TriangularSurrogate(1.0, 0.2))
    assert model.events(0) and model.events(1)
    assert np.all(model.parameters(0).theta == 0.1)
    assert np.allclose(model.parameters(1).theta, np.linspace(0, 0.4, 5))
    assert np.array_equal(model.parameters(1).R, gru.weight_hh_l1.detach().double().numpy())
    assert model.surrogate(1).eps == 0.2


def test_torch_helpers_refuse_what_does_not_fit():
    with pytest.raises(ValueError, match="bidirectional"):
        s.from_torch_gru(torch.nn.GRU(3, 4, bidirectional=True))
    with pytest.raises(ValueError, match="one hidden size"):
        s.to_torch_gru(s.Model.torch_like([4, 5], 3))
    with pytest.raises(ValueError, match="hidden_size=4"):
        s.to_torch_gru(s.Model.torch_like(5, 3), torch.nn.GRU(3, 4))
    with pytest.raises(TypeError, match="torch.nn.GRU"):
        s.from_torch_gru(torch.nn.LSTM(3, 4))
