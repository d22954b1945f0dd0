"""Checkpoints from Python: bitwise resume, files exchanged with C++ programs in both directions,
bad files refused with nothing changed, and torch.nn.GRU files (when PyTorch is importable)."""
import os
import subprocess

import numpy as np
import pytest

import sparse_rtrl as s

UNITS, INPUTS = [8, 6], 3


def make_run(seed=1):
    """A 2-layer model, Rtrl over it, one Adam per layer, in a checkpoint (the C++ program's entries)."""
    model = s.Model.torch_like(UNITS, INPUTS, seed=seed)
    rtrl = s.Rtrl(model)
    adams = [s.Adam(learning_rate=1e-2) for _ in UNITS]
    ckpt = s.Checkpoint().add(model).add(rtrl, "rtrl")
    for k, adam in enumerate(adams):
        ckpt.add(adam, f"adam_l{k}")
    return model, rtrl, adams, ckpt


def advance(model, rtrl, adams, start, steps):
    """The protocol of checkpoint_interop.cpp: exact inputs, a loss on the top layer, Adam every 4 steps."""
    for t in range(start, start + steps):
        x = np.array([((7 * t + 3 * i) % 11) / 10.0 - 0.5 for i in range(INPUTS)])
        rtrl.step(x)
        rtrl.accumulate_gradient(rtrl.output() - 0.25)
        if t % 4 == 3:
            for k, adam in enumerate(adams):
                adam.step(model, rtrl.gradient(k), k)
            rtrl.zero_gradient()
    return start + steps


def snapshot(model, rtrl, adams):
    out = {k: np.array(v) for k, v in model.state_dict().items()}
    for k in range(model.layers):
        out[f"state_l{k}"] = rtrl.state(k)
        out[f"influence_l{k}"] = rtrl.influence(k)
        out[f"grad_l{k}"] = rtrl.gradient(k).W.copy()
        for t in range(5):
            out[f"adam_l{k}_m{t}"] = adams[k].first_moment(t)
            out[f"adam_l{k}_v{t}"] = adams[k].second_moment(t)
    out["steps"] = np.array(rtrl.steps)
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_bitwise_resume_two_layers_rtrl_adam(tmp_path):
    path = str(tmp_path / "run.npz")
    model, rtrl, adams, ckpt = make_run()
    ckpt.add(0, "step")
    t = advance(model, rtrl, adams, 0, 13)
    ckpt2 = s.Checkpoint().add(model).add(rtrl, "rtrl").add(adams[0], "adam_l0").add(adams[1], "adam_l1")
    ckpt2.add(t, "step").add(np.arange(4.0), "values")
    ckpt2.save(path)
    advance(model, rtrl, adams, t, 17)
    expected = snapshot(model, rtrl, adams)

    # Fresh objects of the same shapes (another seed: every value must come from the file).
    model2, rtrl2, adams2, fresh = make_run(seed=9)
    fresh.add(-1, "step").add(np.zeros(4), "values")
    fresh.load(path)
    assert fresh["step"] == t and np.array_equal(fresh["values"], np.arange(4.0))
    assert len(fresh) == 6 and fresh.names == ["rtrl", "adam_l0", "adam_l1", "step", "values"]
    advance(model2, rtrl2, adams2, fresh["step"], 17)
    assert_same(snapshot(model2, rtrl2, adams2), expected)

    # load_model builds the same model from the file.
    loaded = s.load_model(path)
    assert loaded.layers == 2
    for key, value in loaded.state_dict().items():
        assert np.array_equal(value, np.load(path)[key]), key


@pytest.mark.parametrize("order", [1, 2])
def test_bitwise_resume_two_layer_snap(tmp_path, order):
    path = str(tmp_path / "snap.npz")
    masks = [s.ParameterMask.random(8, INPUTS, 0.7, 0.6, 3), s.ParameterMask.random(6, 8, 0.7, 0.6, 4)]

    def make(seed):
        model = s.Model.torch_like(UNITS, INPUTS, seed=seed, threshold=0.05, masks=masks)
        snap = s.Snap(model, order)
        adam = s.Adam(learning_rate=1e-2)
        return model, snap, adam, s.Checkpoint().add(model).add(snap, "snap").add(adam, "adam_l1")

    def run(model, snap, adam, start, steps):
        for t in range(start, start + steps):
            x = np.array([((5 * t + 2 * i) % 13) / 6.0 - 1.0 for i in range(INPUTS)])
            snap.step(x)
            snap.accumulate_gradient(snap.output(1) - 0.25)
            if t % 3 == 2:
                adam.step(model, snap.gradient(1), 1)
                snap.zero_gradient()
        return {**{k: np.array(v) for k, v in model.state_dict().items()},
                **{f"c{k}": snap.state(k) for k in range(2)}, "g0": snap.gradient(0).R.copy(),
                "g1": snap.gradient(1).W.copy(), "m": adam.first_moment(1)}

    model, snap, adam, ckpt = make(1)
    run(model, snap, adam, 0, 11)
    ckpt.save(path)
    expected = run(model, snap, adam, 11, 13)
    model2, snap2, adam2, fresh = make(9)
    fresh.load(path)
    got = run(model2, snap2, adam2, 11, 13)
    assert_same(got, expected)
    # Another order is refused, naming both, and changes nothing.
    other = s.Snap(model2, order + 1)
    before = other.state(0)
    with pytest.raises(ValueError, match="snap/order"):
        s.Checkpoint().add(model2).add(other, "snap").add(adam2, "adam_l1").load(path)
    assert np.array_equal(other.state(0), before)


def test_checkpoint_keeps_objects_alive(tmp_path):
    model, rtrl, adams, ckpt = make_run()
    del model, rtrl, adams
    ckpt.save(str(tmp_path / "alive.npz"), sync=False)
    assert s.load_model(str(tmp_path / "alive.npz")).layers == 2


def test_add_errors():
    model, rtrl, adams, ckpt = make_run()
    with pytest.raises(ValueError, match="needs a name"):
        ckpt.add(rtrl)
    with pytest.raises(ValueError, match="one model"):
        ckpt.add(model)
    with pytest.raises(TypeError, match="obj 'x' is a str, which a checkpoint cannot hold"):
        ckpt.add("text", "x")
    with pytest.raises(TypeError, match=r"cannot checkpoint an object of type dict"):
        ckpt.add("d", {})
    with pytest.raises(TypeError, match=r"expected add\(name, obj\) \(as C\+\+\) or add\(obj, name\).*add\(float, int\)"):
        ckpt.add(1.5, 2)
    with pytest.raises(TypeError, match="needs the object after the name 'lonely'"):
        ckpt.add("lonely")
    ckpt.add(1.5, "x")
    with pytest.raises(ValueError, match="the name 'x' is taken"):
        ckpt.add(2, "x")
    with pytest.raises(ValueError, match="the name 'x' is taken"):
        ckpt.add("x", 2)  # C++'s order: add(name, obj)
    with pytest.raises(KeyError):
        ckpt["nothing"]


INTEROP = os.environ.get("SPARSE_RTRL_CHECKPOINT_INTEROP")


@pytest.mark.skipif(not INTEROP, reason="SPARSE_RTRL_CHECKPOINT_INTEROP is not set (run through ctest)")
def test_python_checkpoint_resumed_in_cpp_and_back(tmp_path):
    """Python saves at step 10; the C++ program loads that file, continues 15 steps and saves; Python
    reads the C++ file (numpy.load, load_model, Checkpoint.load) and finds the uninterrupted run."""
    py_file, cpp_file = str(tmp_path / "from_python.npz"), str(tmp_path / "from_cpp.npz")
    model, rtrl, adams, ckpt = make_run()
    t = advance(model, rtrl, adams, 0, 10)
    ckpt.add(t, "step")
    ckpt.save(py_file)
    subprocess.run([INTEROP, py_file, cpp_file, "15"], check=True, timeout=120)
    advance(model, rtrl, adams, t, 15)
    expected = snapshot(model, rtrl, adams)

    # The C++ file's entries, read by NumPy, are this process's values after the same steps.
    ckpt["step"] = 25
    ckpt.save(str(tmp_path / "python_25.npz"))
    with np.load(cpp_file) as theirs, np.load(str(tmp_path / "python_25.npz")) as ours:
        assert sorted(theirs.files) == sorted(ours.files)
        assert int(theirs["step"]) == 25 and int(theirs["format_version"]) == s.checkpoint_format_version
        for key in ours.files:
            assert theirs[key].dtype == ours[key].dtype, key
            assert np.array_equal(theirs[key], ours[key]), key

    # Loaded into fresh Python objects: the same state, and the same continuation.
    model2, rtrl2, adams2, fresh = make_run(seed=5)
    fresh.add(0, "step")
    fresh.load(cpp_file)
    assert fresh["step"] == 25
    assert_same(snapshot(model2, rtrl2, adams2), expected)
    advance(model, rtrl, adams, 25, 5)
    advance(model2, rtrl2, adams2, 25, 5)
    assert_same(snapshot(model2, rtrl2, adams2), snapshot(model, rtrl, adams))

    # load_model: a model that runs as the saved one.
    built = s.load_model(cpp_file)
    for key, value in built.state_dict().items():
        assert np.array_equal(value, np.load(cpp_file)[key]), key
    infer = s.Rtrl(built)
    infer.step(np.ones(INPUTS))
    assert np.all(np.isfinite(infer.output()))


COPY_ONLINE = os.environ.get("SPARSE_RTRL_COPY_ONLINE")


@pytest.mark.skipif(not COPY_ONLINE, reason="the examples are not built (SPARSE_RTRL_COPY_ONLINE is not set)")
def test_copy_online_checkpoint_read_from_python(tmp_path):
    """examples/copy_online writes a float32 run: NumPy reads its entries, load_torch_gru its weights
    (float32 widened into a float64 model), load_model builds a float32 model of it (the file's dtype),
    and load_model(dtype="float64") refuses it with a ValueError naming the dtype."""
    path = str(tmp_path / "copy_online.npz")
    subprocess.run([COPY_ONLINE, "--steps", "50", "--delay", "2", "--save", path], check=True, timeout=300,
                   stdout=subprocess.DEVNULL)
    with np.load(path) as f:
        for key in ("format_version", "num_layers", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                    "threshold_l0", "mask_weight_hh_l0", "rtrl/streams", "adam_cell/steps", "readout/weight",
                    "step"):
            assert key in f.files, key
        assert int(f["step"]) > 0 and f["weight_hh_l0"].dtype == np.float32
        layers = int(f["num_layers"])
        units = [f[f"weight_hh_l{k}"].shape[1] for k in range(layers)]
        W32 = f["weight_ih_l0"]
        R_top = f[f"weight_hh_l{layers - 1}"]
    W = W32.astype(np.float64)
    model = s.Model.torch_like(units, W.shape[1], seed=3)
    s.load_torch_gru(path, model)
    assert np.array_equal(model.parameters(0).W, W)
    loaded = s.load_model(path)
    assert loaded.dtype == np.float32 and loaded.layers == layers
    assert np.array_equal(loaded.parameters(0).W, W32) and np.array_equal(loaded.parameters(layers - 1).R, R_top)
    with pytest.raises(ValueError, match="float"):
        s.load_model(path, dtype="float64")


def test_bad_files_raise_value_error_and_change_nothing(tmp_path):
    path = str(tmp_path / "good.npz")
    model, rtrl, adams, ckpt = make_run()
    advance(model, rtrl, adams, 0, 9)
    ckpt.save(path)
    data = open(path, "rb").read()
    model2, rtrl2, adams2, fresh = make_run(seed=4)
    advance(model2, rtrl2, adams2, 0, 5)
    before = snapshot(model2, rtrl2, adams2)
    bad = str(tmp_path / "bad.npz")
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        open(bad, "wb").write(data[:cut])
        with pytest.raises(ValueError, match="bad.npz"):
            fresh.load(bad)
        assert_same(snapshot(model2, rtrl2, adams2), before)
    for at in (len(data) // 3, 2 * len(data) // 3):
        flipped = bytearray(data)
        flipped[at] ^= 0x10
        open(bad, "wb").write(bytes(flipped))
        with pytest.raises(ValueError):
            fresh.load(bad)
        assert_same(snapshot(model2, rtrl2, adams2), before)
    with pytest.raises(ValueError):
        s.load_model(bad)
    # Another architecture: refused, nothing changed.
    other = s.Model.torch_like([8, 5], INPUTS)
    with pytest.raises(ValueError):
        s.Checkpoint().add(other).add(s.Rtrl(other), "rtrl").load(path)
    # Operating-system errors: OSError.
    with pytest.raises(OSError):
        fresh.load(str(tmp_path / "missing.npz"))
    with pytest.raises(OSError):
        ckpt.save(str(tmp_path / "no_such_dir" / "x.npz"))
    # The good file still loads.
    fresh.load(path)
    assert_same(snapshot(model2, rtrl2, adams2), snapshot(model, rtrl, adams))


def test_torch_gru_files(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (Debian: python3-torch)")
    torch.manual_seed(0)
    d, n, layers, T = 3, 7, 2, 12
    gru = torch.nn.GRU(d, n, num_layers=layers, dtype=torch.float64)
    path = str(tmp_path / "gru.npz")
    np.savez(path, **{k: v.detach().numpy() for k, v in gru.state_dict().items()})
    model = s.Model.torch_like([n] * layers, d, seed=1, events=False)
    s.load_torch_gru(path, model)
    X = np.random.default_rng(0).normal(size=(T, d))
    rtrl = s.Rtrl(model)
    ours = []
    for x in X:
        rtrl.step(x)
        ours.append(rtrl.output())
    with torch.no_grad():
        ref = gru(torch.from_numpy(X)[:, None, :])[0][:, 0, :].numpy()
    assert np.max(np.abs(np.array(ours) - ref)) < 1e-12
    # And back: save_torch_gru loads strictly into torch.
    out = str(tmp_path / "ours.npz")
    s.save_torch_gru(out, model)
    gru2 = torch.nn.GRU(d, n, num_layers=layers, dtype=torch.float64)
    gru2.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(out).items()})
    for k, v in gru.state_dict().items():
        assert torch.equal(gru2.state_dict()[k], v), k
    assert len(s.read_torch_gru(out)) == layers


def test_torch_gru_file_without_torch(tmp_path):
    """save_torch_gru / read_torch_gru / load_torch_gru round trip, and a bad file (no torch needed)."""
    model = s.Model.torch_like([5, 4], 2, seed=2)
    path = str(tmp_path / "w.npz")
    s.save_torch_gru(path, model)
    with np.load(path) as f:
        assert sorted(f.files) == sorted(k for k in model.state_dict() if not k.startswith("threshold"))
    other = s.Model.torch_like([5, 4], 2, seed=7)
    s.load_torch_gru(path, other)
    for key in ("weight_ih_l1", "bias_hh_l0"):
        assert np.array_equal(other.state_dict()[key], model.state_dict()[key])
    with pytest.raises(ValueError):
        s.load_torch_gru(path, s.Model.torch_like([5, 3], 2))


@pytest.mark.parametrize("units", [8, 256])
def test_state_dict_views_survive_a_load(tmp_path, units):
    """Views from state_dict() held across Checkpoint.load see the loaded values, and writes through
    them still reach the model (a load used to free the buffers they point at: a crash at n = 256,
    writes silently lost for small models)."""
    path = str(tmp_path / "a.npz")
    saved = s.Model.torch_like(units, 4, seed=1)
    s.Checkpoint().add(saved).save(path)
    model = s.Model.torch_like(units, 4, seed=2)
    ck = s.Checkpoint().add(model)
    views = model.state_dict()
    ck.load(path)
    expected = saved.state_dict()
    for key, view in views.items():
        assert np.array_equal(view, expected[key]), key
        assert np.array_equal(view, model.state_dict()[key]), key
    views["weight_hh_l0"][0, 0] = 0.125
    views["threshold_l0"][1] = 0.25
    fresh = model.state_dict()
    assert fresh["weight_hh_l0"][0, 0] == 0.125
    assert fresh["threshold_l0"][1] == 0.25
    # parameters() reads the same storage.
    assert model.parameters(0).R[0, 0] == 0.125
