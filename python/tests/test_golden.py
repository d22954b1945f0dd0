"""The PyTorch-autograd golden cases (tests/data/golden, every folder, flat and stacked) through the
Python bindings: RTRL, BPTT, RtrlStreams (one layer) and SnAp at its covering order, at relative error
<= 1e-10 in the outputs and in every parameter gradient."""
import numpy as np
import pytest

import sparse_rtrl as s
import os
import shutil

from helpers import GOLDEN, golden_cases, golden_model, is_stacked, load_golden, rel_err

TOL = 1e-10
CASES = golden_cases()


def test_cases_present():
    assert any(is_stacked(c) for c in CASES) and any(not is_stacked(c) for c in CASES), CASES


def test_stacked_case_recognised_by_content_not_name(tmp_path):
    """A stacked case copied in under a name without the stack- prefix still loads as a stack
    (it has layers.txt), and a flat case under a stack- name still loads flat."""
    stacked = next(c for c in CASES if is_stacked(c) and "L2" in c)
    flat = next(c for c in CASES if not is_stacked(c))
    shutil.copytree(os.path.join(GOLDEN, stacked), tmp_path / "renamed-two-layer-case")
    shutil.copytree(os.path.join(GOLDEN, flat), tmp_path / "stack-but-flat")
    assert golden_cases(str(tmp_path)) == ["renamed-two-layer-case", "stack-but-flat"]
    two = load_golden("renamed-two-layer-case", root=str(tmp_path))
    assert two["L"] == 2 and len(two["layers"]) == 2
    one = load_golden("stack-but-flat", root=str(tmp_path))
    assert one["L"] == 1
    # And the renamed stack runs through SnAp at its covering order (exact) to the stored gradients.
    check_snap_at_covering_order(two, f"renamed {stacked}")


def check_gradient(got, layer, where):
    for name, ref in (("W", "gW"), ("R", "gR"), ("bW", "gbW"), ("bR", "gbR"), ("theta", "gtheta")):
        err = rel_err(getattr(got, name), layer[ref])
        assert err <= TOL, f"{where}: d{name} relative error {err:.3g}"


@pytest.mark.parametrize("name", CASES)
def test_rtrl(name):
    case = load_golden(name)
    model = golden_model(case)
    rtrl = s.Rtrl(model)
    for t in range(case["T"]):
        rtrl.step(case["X"][t])
        for k, layer in enumerate(case["layers"]):
            assert rel_err(rtrl.output(k), layer["y_ref"][t]) <= TOL, f"y_{t} of layer {k}"
            rtrl.accumulate_gradient(layer["G"][t], layer=k)
    for k, layer in enumerate(case["layers"]):
        check_gradient(rtrl.gradient(k), layer, f"{name} RTRL layer {k}")
    if case["L"] == 1:
        check_gradient(rtrl.gradient(), case["layers"][0], f"{name} RTRL")


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("exploit_events", [False, True])
def test_bptt(name, exploit_events):
    case = load_golden(name)
    model = golden_model(case)
    bptt = s.Bptt(model, exploit_events=exploit_events)
    Y = bptt.forward(case["X"])
    assert rel_err(Y, case["layers"][-1]["y_ref"]) <= TOL
    for k, layer in enumerate(case["layers"]):
        assert rel_err(bptt.outputs(k), layer["y_ref"]) <= TOL
    grads = bptt.backward([layer["G"] for layer in case["layers"]])
    assert len(grads) == case["L"]
    for k, layer in enumerate(case["layers"]):
        check_gradient(grads[k], layer, f"{name} BPTT layer {k}")
    if case["L"] == 1:
        check_gradient(bptt.backward(case["layers"][0]["G"]), case["layers"][0], f"{name} BPTT")


@pytest.mark.parametrize("name", CASES)
def test_snap_at_covering_order(name):
    """SnAp-n over the stack's graph is exact RTRL from its covering order on."""
    check_snap_at_covering_order(load_golden(name), name)


def check_snap_at_covering_order(case, name):
    model = golden_model(case)
    order = s.Snap(model, 1).covering_order
    snap = s.Snap(model, order)
    assert snap.layers == case["L"] and snap.cross_layer == s.SnapCrossLayer.graph
    for t in range(case["T"]):
        snap.step(case["X"][t])
        for k, layer in enumerate(case["layers"]):
            snap.accumulate_gradient(layer["G"][t], layer=k)
    for k, layer in enumerate(case["layers"]):
        check_gradient(snap.gradient(k), layer, f"{name} SnAp-{order} layer {k}")


@pytest.mark.parametrize("name", [c for c in CASES if not is_stacked(c)])
def test_streams_one_layer(name):
    """One layer: three streams fed the same sequence, the loss on one of them."""
    case = load_golden(name)
    layer = case["layers"][0]
    model = golden_model(case)
    streams = s.RtrlStreams(model, 3, threads=2)
    for t in range(case["T"]):
        streams.step(np.repeat(case["X"][t][None, :], 3, axis=0))
        G = np.zeros((3, case["sizes"][0]))
        G[1] = layer["G"][t]
        streams.accumulate_gradient(G)
        assert rel_err(streams.outputs()[2], layer["y_ref"][t]) <= TOL
    check_gradient(streams.gradient(), layer, f"{name} RtrlStreams")
