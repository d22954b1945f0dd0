"""float32 and float64: the dtype chosen with the model, followed by everything built from it; float32
equal to the C++ float learners bit for bit; float32 against float64 on the golden cases; half the
memory; wrong dtypes refused with TypeError naming both."""
import os
import subprocess

import numpy as np
import pytest

import sparse_rtrl as s

from helpers import golden_cases, load_golden, rel_err

F32, F64 = np.float32, np.float64


def _reference_binary():
    """The C++ helper (python/tests/float_reference.cpp): ctest sets its path; by hand it sits next
    to the build tree's package (PYTHONPATH=<build>/python)."""
    path = os.environ.get("SPARSE_RTRL_FLOAT_REFERENCE")
    if path:
        return path
    guess = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(s.__file__))), "sparse_rtrl_float_reference")
    return guess if os.path.exists(guess) else None


REFERENCE = _reference_binary()


def uniform32(seed, shape):
    """As float_reference.cpp's uniform(): the library's doubles rounded to float."""
    return s.uniform_random(seed, shape, -1.0, 1.0).astype(F32)


@pytest.fixture(scope="module")
def cpp_float():
    if REFERENCE is None:
        pytest.skip("the C++ helper sparse_rtrl_float_reference is not built (SPARSE_RTRL_FLOAT_REFERENCE unset and "
                    "not next to the package: run through ctest or from the build tree)")
    out = subprocess.run([REFERENCE], check=True, capture_output=True, text=True, timeout=120).stdout
    values = {}
    for line in out.splitlines():
        name, *nums = line.split()
        values[name] = np.array([float.fromhex(v) for v in nums], dtype=F64).astype(F32)  # exact: floats
    return values


def same_bits(got, ref, what):
    got = np.ascontiguousarray(got)
    assert got.dtype == F32, f"{what}: dtype {got.dtype}"
    assert np.array_equal(got.reshape(-1).view(np.uint32), ref.view(np.uint32)), \
        f"{what}: max |diff| {np.max(np.abs(got.reshape(-1).astype(F64) - ref.astype(F64)))}"


def check_params(p, ref, name):
    for field in ("W", "R", "bW", "bR", "theta"):
        same_bits(getattr(p, field), ref[f"{name}.{field}"], f"{name}.{field}")


def stack_model():
    return s.Model.torch_like([8, 6], 3, seed=5, threshold=0.1, dtype="float32")


def test_float32_stack_equals_cpp_float_bit_for_bit(cpp_float):
    model = stack_model()
    rtrl = s.Rtrl(model)
    X, G = uniform32(11, (12, 3)), uniform32(12, (12, 6))
    for t in range(12):
        rtrl.step(X[t])
        rtrl.accumulate_gradient(G[t])
        same_bits(rtrl.output(), cpp_float[f"stack.y{t}"], f"y_{t}")
    events = sum(rtrl.total_work(k).event_units for k in range(2))
    assert events > 0, "the case must have events (threshold crossings) to test them"
    for k in range(2):
        check_params(rtrl.gradient(k), cpp_float, f"stack.grad{k}")


def test_float32_online_loop_equals_cpp_float_bit_for_bit(cpp_float):
    """Masked model, readout, loss, two Adams: every number of the online loop in float32."""
    params = s.init_torch_like(10, 2, seed=7, threshold=0.05, dtype="float32")
    model = s.Model(params, masks=s.ParameterMask.random(10, 2, 0.5, 0.5, seed=3))
    rtrl = s.Rtrl(model)
    readout = s.LinearReadout(2, 10, seed=4, dtype=model.dtype)
    adam_model, adam_readout = s.Adam(learning_rate=1e-2, dtype=model.dtype), s.Adam(learning_rate=1e-2, dtype="float32")
    X, U = uniform32(21, (15, 2)), uniform32(22, (15, 2))
    losses = []
    for t in range(15):
        rtrl.step(X[t])
        y = rtrl.output()
        p = readout.forward(y)
        loss, g = s.mean_squared_error(p, U[t])
        losses.append(loss)
        rtrl.accumulate_gradient(readout.backward(y, g))
        adam_model.update(model, rtrl)
        adam_readout.update(readout)
    same_bits(np.array(losses, dtype=F32), cpp_float["online.loss"], "losses")
    assert all(np.float32(l) == l for l in losses)  # the loss is a float32 value (exact as a Python float)
    check_params(model.parameters(), cpp_float, "online.params")
    same_bits(readout.parameters().V, cpp_float["online.V"], "readout V")
    same_bits(readout.parameters().b, cpp_float["online.b"], "readout b")


def test_float32_streams_equal_cpp_float_bit_for_bit(cpp_float):
    streams = s.RtrlStreams(stack_model(), 3)
    Xs, Gs = uniform32(31, (6, 3, 3)), uniform32(32, (6, 3, 6))
    for t in range(6):
        streams.step(Xs[t])
        streams.accumulate_gradient(Gs[t])
    for k in range(2):
        check_params(streams.gradient(k), cpp_float, f"streams.grad{k}")


def test_float32_snap_and_bptt_equal_cpp_float_bit_for_bit(cpp_float):
    snap = s.Snap(stack_model(), 1)
    X, G = uniform32(11, (12, 3)), uniform32(12, (12, 6))
    for t in range(12):
        snap.step(X[t])
        snap.accumulate_gradient(G[t])
    for k in range(2):
        check_params(snap.gradient(k), cpp_float, f"snap.grad{k}")
    bptt = s.Bptt(stack_model())
    same_bits(bptt.forward(X), cpp_float["bptt.Y"], "Bptt outputs")
    for k, grad in enumerate(bptt.backward([None, G])):
        check_params(grad, cpp_float, f"bptt.grad{k}")


# float32 against float64 on the golden cases. The float64 results match the stored PyTorch
# gradients to 1e-10 (test_golden.py); float32 rounds every operation at 2^-24 ~ 6e-8 relative and
# the influence recursion accumulates it over the T steps: the largest relative error against the stored
# gradients, over all cases and tensors, was 1.1e-6 (stack-egru-L2-n12,10-..., dR of layer 0; no event
# flipped). 1e-5 leaves a margin of ten.
TOL_F32 = 1e-5


def golden_model_as(case, dtype):
    params = [s.EgruParameters(*(np.asarray(l[k], dtype=dtype) for k in ("W", "R", "bW", "bR", "theta")))
              for l in case["layers"]]
    masks = [l["mask"] if l["mask"] is not None else s.ParameterMask.dense(p.units, p.inputs)
             for l, p in zip(case["layers"], params)]
    return s.Model(params, masks=masks, events=case["events"],
                   surrogate=s.TriangularSurrogate(case["gamma"], case["eps"], dtype=dtype))


def run_golden(case, dtype):
    model = golden_model_as(case, dtype)
    assert model.dtype == dtype
    rtrl = s.Rtrl(model)
    ys = []
    for t in range(case["T"]):
        rtrl.step(case["X"][t].astype(dtype))
        ys.append([rtrl.output(k) for k in range(case["L"])])
        for k, layer in enumerate(case["layers"]):
            rtrl.accumulate_gradient(layer["G"][t].astype(dtype), layer=k)
    return ys, [rtrl.gradient(k) for k in range(case["L"])]


@pytest.mark.parametrize("name", golden_cases())
def test_float32_against_float64_golden(name):
    case = load_golden(name)
    ys32, g32 = run_golden(case, F32)
    ys64, g64 = run_golden(case, F64)
    for t, (a, b) in enumerate(zip(ys32, ys64)):
        for k in range(case["L"]):
            assert a[k].dtype == F32 and b[k].dtype == F64
            assert rel_err(a[k], b[k]) <= TOL_F32, f"y_{t} of layer {k}"
    for k in range(case["L"]):
        for f, ref in (("W", "gW"), ("R", "gR"), ("bW", "gbW"), ("bR", "gbR"), ("theta", "gtheta")):
            got = getattr(g32[k], f)
            assert got.dtype == F32
            assert rel_err(got, getattr(g64[k], f)) <= TOL_F32, f"{name} layer {k} d{f} float32 vs float64"
            assert rel_err(got, case["layers"][k][ref]) <= TOL_F32, f"{name} layer {k} d{f} float32 vs stored"


def test_float32_state_is_half_of_float64():
    sizes = {}
    for dtype in ("float32", "float64"):
        model = s.Model.torch_like([32, 16], 4, seed=1, dtype=dtype)
        rtrl, snap, streams = s.Rtrl(model), s.Snap(model, 1), s.RtrlStreams(model, 3)
        x = np.ones(4, dtype=dtype)
        rtrl.step(x), snap.step(x), streams.step(np.ones((3, 4), dtype=dtype))
        sizes[dtype] = (rtrl.influence_bytes, snap.influence_bytes, streams.influence_bytes, streams.state_bytes,
                        rtrl.scratch_bytes, s.Bptt(model).history_bytes)
    f32, f64 = sizes["float32"], sizes["float64"]
    assert f64[0] > 100_000
    assert 2 * f32[0] == f64[0] and 2 * f32[1] == f64[1] and 2 * f32[2] == f64[2]
    # RtrlStreams.state_bytes adds the kernels' scratch (a fixed panel of rows, wider for float):
    assert 2 * f32[3] <= f64[3] + 2 * 3 * f32[4], (f32, f64)


def test_dtype_follows_the_model_everywhere():
    model = s.Model.torch_like(6, 3, seed=2, dtype=np.float32)
    assert isinstance(model, s.Model) and isinstance(model, s.float32.Model) and model.dtype == F32
    assert repr(model).endswith("dtype=float32)")
    assert all(v.dtype == F32 for v in model.state_dict().values())
    x, G = np.ones(3, F32), np.ones((4, 6), F32)
    rtrl, snap, bptt = s.Rtrl(model), s.Snap(model, 2), s.Bptt(model)
    streams, inference = s.RtrlStreams(model, 2), s.Inference(model)
    for learner in (rtrl, snap, streams, bptt, inference):
        assert learner.dtype == F32 and isinstance(learner, s.float32.__dict__[type(learner).__name__])
    rtrl.step(x), snap.step(x), inference.step(x), streams.step(np.ones((2, 3), F32))
    rtrl.accumulate_gradient(np.ones(6, F32))
    assert rtrl.output().dtype == F32 and rtrl.influence().dtype == F32 and rtrl.gradient().W.dtype == F32
    assert snap.output().dtype == F32 and inference.output().dtype == F32 and streams.outputs().dtype == F32
    assert bptt.forward(np.ones((4, 3), F32)).dtype == F32 and bptt.backward(G).R.dtype == F32
    assert rtrl.layout().scatter(rtrl.gradient_columns()).W.dtype == F32
    readout = s.LinearReadout(2, 6, dtype=model.dtype)
    assert readout.forward(rtrl.output()).dtype == F32 and readout.parameters().V.dtype == F32
    for cls in (s.Sgd, s.Adam, s.AdamW):  # one optimizer per parameter set
        cls(dtype=model.dtype).update(model, rtrl)
        cls(dtype=model.dtype).update(readout)
    assert s.clip_gradient_norm(1.0, rtrl.gradient(), readout.gradient()) >= 0
    assert s.ActivityRegularizer(0.1, 1.0, dtype="float32").gradient(rtrl.events()).dtype == F32
    loss, g = s.softmax_cross_entropy(np.zeros(3, F32), 1)
    assert g.dtype == F32
    # default: float64, as before
    assert s.Model.torch_like(6, 3).dtype == F64 and s.LinearReadout(2, 6).dtype == F64 and s.Adam().dtype == F64
    # dtype spellings
    for spelling in ("float32", np.float32, np.dtype("float32"), model.dtype):
        assert s.init_torch_like(2, 2, dtype=spelling).W.dtype == F32
    with pytest.raises(TypeError, match="dtype must be float32 or float64, received 'float16'"):
        s.Model.torch_like(2, 2, dtype="float16")


def test_float32_checkpoint_round_trip(tmp_path):
    model = s.Model.torch_like(5, 2, seed=3, dtype="float32")
    rtrl, adam = s.Rtrl(model), s.Adam(dtype="float32")
    X = uniform32(5, (20, 2))
    for t in range(10):
        rtrl.step(X[t]), rtrl.accumulate_gradient(rtrl.output())
        adam.update(model, rtrl)
    path = str(tmp_path / "f32.npz")
    s.Checkpoint().add(model).add("rtrl", rtrl).add("adam", adam).add("values", np.arange(3, dtype=F32)).save(path)
    with np.load(path) as z:
        assert z["weight_ih_l0"].dtype == F32
    loaded = s.load_model(path)
    assert loaded.dtype == F32 and np.array_equal(loaded.parameters().W, model.parameters().W)
    rtrl2, adam2 = s.Rtrl(loaded), s.Adam(dtype="float32")
    ck = s.Checkpoint().add(loaded).add("rtrl", rtrl2).add("adam", adam2).add("values", np.zeros(3, F32))
    ck.load(path)
    assert ck["values"].dtype == F32 and np.array_equal(ck["values"], np.arange(3))
    for a, b in ((rtrl, rtrl2), ):
        for t in range(10, 20):
            a.step(X[t]), a.accumulate_gradient(a.output()), adam.update(model, a)
            b.step(X[t]), b.accumulate_gradient(b.output()), adam2.update(loaded, b)
    assert np.array_equal(model.parameters().R, loaded.parameters().R)  # resumed bit for bit
    with pytest.raises(ValueError, match="float32|<f4"):
        s.load_model(path, dtype="float64")


def test_wrong_dtype_is_a_type_error_naming_both():
    m32, m64 = s.Model.torch_like(4, 3, dtype="float32"), s.Model.torch_like(4, 3)
    r32, r64 = s.Rtrl(m32), s.Rtrl(m64)
    with pytest.raises(TypeError, match=r"Rtrl.step\(\): x must be a float32 array .*received float64"):
        r32.step(np.ones(3))
    with pytest.raises(TypeError, match=r"x must be a float64 array .*received float32"):
        r64.step(np.ones(3, F32))  # no silent widening either: the caller converts, knowing it
    with pytest.raises(TypeError, match=r"received complex128 \(complex\)"):
        r64.step(np.ones(3, complex))
    with pytest.raises(TypeError, match=r"received complex64 \(complex\)"):
        r32.step(np.ones(3, np.complex64))
    with pytest.raises(TypeError, match=r"received object \(objects\)"):
        r64.step(np.array([1.0, None, 2.0], dtype=object))
    with pytest.raises(TypeError, match=r"must hold real numbers .*received a sequence of dtype complex128"):
        r64.step([1j, 2, 3])
    with pytest.raises(TypeError, match=r"received int64"):
        r64.step(np.arange(3))
    with pytest.raises(TypeError, match=r"dL_dy must be a float32 array"):
        r32.step(np.ones(3, F32)), r32.accumulate_gradient(np.ones(4))
    with pytest.raises(TypeError, match=r"Bptt.forward\(\): X must be a float32 array"):
        s.Bptt(m32).forward(np.ones((2, 3)))
    with pytest.raises(TypeError, match=r"load_state_dict\(\): 'weight_ih_l0' must be a float32 array"):
        m32.load_state_dict({k: np.array(v, dtype=F64) for k, v in m32.state_dict().items()})
    with pytest.raises(TypeError, match=r"EgruParameters.W: W must be a float32 array"):
        m32.parameters().W = np.zeros((12, 3))
    with pytest.raises(TypeError, match=r"LinearReadout.forward\(\): y must be a float64 array.*received float32"):
        s.LinearReadout(2, 4).forward(np.ones(4, F32))
    with pytest.raises(TypeError, match=r"this Adam is float64, so the model, learner or readout it updates must "
                                        r"be float64 objects too.*dtype=model.dtype"):
        s.Adam().update(m32, r32)
    with pytest.raises(TypeError, match="mix float32 and float64"):
        s.Model([s.init_torch_like(3, 2, dtype="float32"), s.init_torch_like(3, 3)])
    with pytest.raises(TypeError, match="dtype='float64' but the layers are float32"):
        s.Model(s.init_torch_like(3, 2, dtype="float32"), dtype="float64")
    with pytest.raises(TypeError, match=r"EgruParameters\(\): R must be a float32 array"):
        p = s.init_torch_like(3, 2)
        s.EgruParameters(p.W.astype(F32), p.R, p.bW, p.bR, p.theta)
    with pytest.raises(TypeError, match="model must be a sparse_rtrl.Model, received EgruParameters"):
        s.Rtrl(s.init_torch_like(3, 2))
    # Lists of real numbers are converted (as torch.tensor(list) does), and strided arrays copied.
    r32.step([0.5, 1, True])
    r32.step(np.ones((3, 2), F32)[:, 0])
    r64.step(np.ones(6)[::2])
    assert r32.steps == 3 and r64.steps == 1


def test_inputs_are_used_without_a_copy_when_c_contiguous():
    """The address the library reads an input vector from (the step's own conversion, exposed for
    this test): the caller's buffer for a C-contiguous array of the object's dtype, a copy for a
    strided one."""
    for dtype, mod in ((F32, s.float32), (F64, s.float64)):
        x = np.linspace(-1, 1, 6).astype(dtype)
        assert mod._input_address(x) == x.ctypes.data
        assert mod._input_address(x.reshape(1, 6)) == x.ctypes.data  # a one-row matrix
        strided = x[::2]
        assert mod._input_address(strided) != strided.ctypes.data


def test_top_level_classes_cover_both_dtypes():
    m32, m64 = s.Model.torch_like(3, 2, dtype="float32"), s.Model.torch_like(3, 2)
    assert isinstance(m32, s.Model) and isinstance(m64, s.Model) and not isinstance(m32, s.Rtrl)
    assert issubclass(s.float32.Rtrl, s.Rtrl) and issubclass(s.float64.Rtrl, s.Rtrl)
    assert not isinstance(m32, s.float64.Model)
    assert type(s.Rtrl(m32)) is s.float32.Rtrl and type(s.Rtrl(m64)) is s.float64.Rtrl
    # Methods and their documentation reach through the factory class (help(), editors).
    assert "Advances every layer" in s.Rtrl.step.__doc__ and s.Model.torch_like.__doc__
    assert s.float32.dtype == F32 and s.float64.dtype == F64
    assert s.LinearReadout(s.ReadoutParameters(np.zeros((2, 3), F32), np.zeros(2, F32))).dtype == F32
    with pytest.raises(TypeError, match="params are float32, dtype='float64'"):
        s.LinearReadout(s.ReadoutParameters(2, 3, dtype="float32"), dtype="float64")
