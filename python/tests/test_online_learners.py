"""TruncatedBptt and Uoro from Python, in float32 and float64, against independent references: with a
window k >= T truncated BPTT is exact (its gradient equals Rtrl's, and Bptt's), with k < T each
loss's gradient is Bptt's through the last k steps from the carried states (Bptt never calls
TruncatedBptt); UORO is unbiased (the mean of its gradient over many seeds converges to Rtrl's,
with a tolerance from the measured per-draw variance, as tests/learners/uoro.test.cpp). Then the
bindings' own promises: every option reaches the C++ constructor and is checked there, bad input
raises ValueError (TypeError, RuntimeError, IndexError) with the library's message naming what was
expected and received and changes nothing, checkpoints resume bit for bit, optimizers consume the
gradient."""
import numpy as np
import pytest

import sparse_rtrl as s
from helpers import rel_err

DTYPES = ["float32", "float64"]
# Relative gradient tolerance of an exact learner against another exact one (tests/test_support.hpp).
TOL = {"float32": 1e-4, "float64": 1e-10}


def online_model(sizes, inputs, dtype, events=True, density=0.7, seed=11):
    """A masked stack whose units fire (low thresholds, inputs in [-2, 2])."""
    masks, d = [], inputs
    for k, n in enumerate(sizes):
        masks.append(s.ParameterMask.random(n, d, density, density, seed + 10 * k + 1))
        d = n
    return s.Model.torch_like(sizes, inputs, seed=seed, threshold=0.05, masks=masks, events=events, dtype=dtype,
                              surrogate=s.TriangularSurrogate(1.0, 0.5))


def inputs_and_losses(sizes, inputs, T, dtype, seed=21):
    X = s.uniform_random(seed, (T, inputs), -2, 2, dtype=dtype)
    G = [s.uniform_random(seed + 1 + k, (T, n), -1, 1, dtype=dtype) for k, n in enumerate(sizes)]
    return X, G


def run_online(learner, X, G, every_layer=True, G_events=None):
    """step(x_t), then a loss on every layer (or the top one) at every step."""
    for t in range(X.shape[0]):
        learner.step(X[t])
        layers = range(learner.layers) if every_layer else [learner.layers - 1]
        for k in layers:
            if G_events is not None and k == learner.layers - 1:
                learner.accumulate_gradient(G[k][t], G_events[t], layer=k)
            else:
                learner.accumulate_gradient(G[k][t], layer=k)
    return learner


def params_vector(p):
    return np.concatenate([np.ravel(getattr(p, f)).astype(float) for f in ("W", "R", "bW", "bR", "theta")])


# ---- TruncatedBptt: exact with a window covering the sequence --------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["every_step", "every_k_steps"])
@pytest.mark.parametrize("sizes,events", [([9], True), ([9], False), ([8, 6], True)])
def test_truncated_bptt_covering_the_sequence_equals_rtrl(dtype, form, sizes, events):
    T, d = 17, 3
    model = online_model(sizes, d, dtype, events)
    X, G = inputs_and_losses(sizes, d, T, dtype)
    rtrl = run_online(s.Rtrl(model), X, G)
    for k in (T, T + 4):
        tbptt = s.TruncatedBptt(model, k, form=getattr(s.TruncationForm, form))
        assert tbptt.window == k and tbptt.options() == {"k": k, "form": getattr(s.TruncationForm, form)}
        run_online(tbptt, X, G)
        assert tbptt.steps == T and np.array_equal(tbptt.output(), rtrl.output())
        if form == "every_k_steps":
            # k = T: the block ended with the last step; k > T: nothing back-propagated before flush().
            assert tbptt.block_complete == (k == T)
            assert (not np.any(tbptt.gradient_columns())) == (k > T)
            tbptt.flush()
        assert tbptt.columns == rtrl.columns
        assert rel_err(tbptt.gradient_columns(), rtrl.gradient_columns()) <= TOL[dtype]
        for layer in range(len(sizes)):
            got, ref = tbptt.gradient(layer), rtrl.gradient(layer)
            assert got.W.dtype == np.dtype(dtype)
            assert rel_err(params_vector(got), params_vector(ref)) <= TOL[dtype], layer
            assert model.mask(layer).respected_by(got)
        assert [g.units for g in tbptt.gradients()] == sizes


@pytest.mark.parametrize("dtype", DTYPES)
def test_truncated_bptt_with_event_losses_equals_bptt(dtype):
    T, sizes = 13, [8]
    model = online_model(sizes, 3, dtype)
    X, G = inputs_and_losses(sizes, 3, T, dtype)
    Go = s.uniform_random(31, (T, 8), -1, 1, dtype=dtype)
    tbptt = run_online(s.TruncatedBptt(model, T), X, G, G_events=Go)
    bptt = s.Bptt(model)
    bptt.forward(X)
    expected = bptt.backward(G[0], Go)
    assert rel_err(params_vector(tbptt.gradient()), params_vector(expected)) <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 4])
def test_truncated_bptt_every_step_is_bptt_through_the_last_k_steps(dtype, k):
    """Each loss's increment of the gradient is Bptt over x_{t-w+1..t} (w = min(k, t)) from the carried
    state c_{t-w}, the loss at the window's last step (the C++ test's independent reference)."""
    T, sizes, d = 11, [9], 3
    model = online_model(sizes, d, dtype)
    X, G = inputs_and_losses(sizes, d, T, dtype)
    tbptt = s.TruncatedBptt(model, k)
    states = [np.zeros(9, dtype)]
    worst = 0.0
    for t in range(1, T + 1):
        tbptt.step(X[t - 1])
        states.append(tbptt.state())
        before = tbptt.gradient()
        tbptt.accumulate_gradient(G[0][t - 1])
        after = tbptt.gradient()
        w = min(k, t)
        Gw = np.zeros((w, 9), dtype)
        Gw[-1] = G[0][t - 1]
        bptt = s.Bptt(model)
        bptt.forward(X[t - w:t], states[t - w])
        reference = bptt.backward(Gw)
        model.mask().apply(reference)
        worst = max(worst, rel_err(params_vector(after) - params_vector(before), params_vector(reference)))
    assert worst <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_truncated_bptt_every_k_steps_keeps_a_blocks_losses_until_its_end(dtype):
    T, k, sizes, d = 12, 5, [9], 3
    model = online_model(sizes, d, dtype)
    X, G = inputs_and_losses(sizes, d, T, dtype)
    tbptt = s.TruncatedBptt(model, k, form=s.TruncationForm.every_k_steps)
    start, last, blocks = np.zeros(9, dtype), tbptt.gradient_columns(), 0
    for t in range(1, T + 1):
        tbptt.step(X[t - 1])
        tbptt.accumulate_gradient(G[0][t - 1])
        assert tbptt.block_complete == (t % k == 0)
        if t == T:
            tbptt.flush()  # the shorter last block
        elif t % k:
            assert np.array_equal(tbptt.gradient_columns(), last)  # kept until the block ends
            continue
        w = (t - 1) % k + 1
        bptt = s.Bptt(model)
        bptt.forward(X[t - w:t], start)
        reference = bptt.backward(G[0][t - w:t])
        model.mask().apply(reference)
        increment = tbptt.layout().scatter(tbptt.gradient_columns() - last)
        assert rel_err(params_vector(increment), params_vector(reference)) <= TOL[dtype]
        last, start, blocks = tbptt.gradient_columns(), tbptt.state(), blocks + 1
    assert blocks == 3


# ---- Uoro: unbiased ------------------------------------------------------------------------------


def uoro_bias(model, X, G, draws):
    """Mean of UORO's gradient over seeds 1..draws against Rtrl's: max |z| over the coordinates, the
    squared error over its expectation when unbiased, and the per-draw spread over |exact|."""
    exact = run_online(s.Rtrl(model), X, G).gradient_columns().astype(float)
    samples = np.empty((draws, exact.size))
    for i in range(draws):
        uoro = s.Uoro(model, seed=(i + 1) * 7919)
        samples[i] = run_online(uoro, X, G).gradient_columns()
    mean, var = samples.mean(axis=0), samples.var(axis=0, ddof=1)
    se = np.sqrt(var / draws)
    diff = np.abs(mean - exact)
    noisy = se > 0
    max_z = np.max(diff[noisy] / se[noisy])
    if np.any(diff[~noisy] > 1e-12 * (1 + np.abs(exact[~noisy]))):
        max_z = np.inf  # no noise at all, yet off
    norm_ratio = np.sum((mean - exact) ** 2) / (var.sum() / draws)
    spread = np.sqrt(var.sum()) / np.linalg.norm(exact)
    return max_z, norm_ratio, spread


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [[5], [5, 4]])
def test_uoro_is_unbiased(dtype, sizes):
    """Why these bounds (as uoro.test.cpp): the mean of N = 4000 independent draws is about normal per
    coordinate, so |z| > 5 has probability ~6e-7 per coordinate; |mean - exact|^2 has expectation
    sum var / N when unbiased, and a bias of a tenth of the per-draw spread moves the ratio by
    ~0.01 N = 40. The seeds are fixed: the test is deterministic."""
    model = online_model(sizes, 3, dtype, density=0.8, seed=500)
    X, G = inputs_and_losses(sizes, 3, 6, dtype, seed=501)
    max_z, norm_ratio, spread = uoro_bias(model, X, G, 4000)
    assert max_z < 5, (max_z, norm_ratio, spread)
    assert norm_ratio < 3, (max_z, norm_ratio, spread)
    assert spread > 0.1, (max_z, norm_ratio, spread)  # a real estimator (noisy), not the exact gradient


@pytest.mark.parametrize("dtype", DTYPES)
def test_uoro_seed_sign_state_and_factors(dtype):
    sizes = [6, 4]
    model = online_model(sizes, 3, dtype)
    X, G = inputs_and_losses(sizes, 3, 8, dtype)
    a, b, c = (run_online(s.Uoro(model, seed=seed), X, G) for seed in (42, 42, 43))
    assert np.array_equal(a.gradient_columns(), b.gradient_columns())
    assert not np.array_equal(a.gradient_columns(), c.gradient_columns())
    assert a.sign_state == b.sign_state != c.sign_state
    assert a.options() == {"seed": 42, "epsilon": 1e-7} and s.Uoro(model, epsilon=1e-5).options()["epsilon"] == 1e-5
    item = np.dtype(dtype).itemsize
    assert a.state_bytes == item * (6 + 4 + a.columns)
    assert a.state_factor(1).shape == (4,) and a.state_factor(1).dtype == np.dtype(dtype)
    assert a.parameter_factor(1).shape == (a.layout(1).columns,)
    # set_sign_state: the same draws from the same generator state.
    c.set_sign_state(a.sign_state)
    a.reset(), c.reset()
    a.zero_gradient(), c.zero_gradient()
    run_online(a, X, G), run_online(c, X, G)
    assert np.array_equal(a.gradient_columns(), c.gradient_columns())


# ---- Both: dtype, training, work counters ----------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [lambda m: s.TruncatedBptt(m, 3), lambda m: s.Uoro(m, seed=1)])
def test_dtype_interface_and_optimizer_update(dtype, make):
    model = online_model([6], 3, dtype)
    learner = make(model)
    name = type(learner).__name__
    assert type(learner) is getattr(getattr(s, dtype), name) and isinstance(learner, getattr(s, name))
    assert learner.dtype == np.dtype(dtype) and learner.model() is model
    assert learner.layers == 1 and learner.units() == 6 and learner.inputs == 3 and learner.column_offset(0) == 0
    X, G = inputs_and_losses([6], 3, 5, dtype)
    run_online(learner, X, G)
    assert learner.output().dtype == np.dtype(dtype) and learner.gradient().R.dtype == np.dtype(dtype)
    assert set(learner.last_step_cache()) >= {"x", "c", "o", "y", "s"}
    assert np.array_equal(learner.events(), learner.last_step_cache()["o"])
    assert np.array_equal(learner.output_derivative(), learner.last_step_cache()["s"])
    assert learner.total_work().steps == 5 and learner.last_step_work().steps == 1
    learner.reset_work()
    assert learner.total_work().steps == 0
    # One online update: the gradient is applied and consumed.
    g, R = learner.gradient(), model.parameters().R.copy()
    assert np.any(g.R)
    s.Sgd(learning_rate=0.1, dtype=dtype).update(model, learner)
    assert np.allclose(model.parameters().R, R - np.asarray(0.1, dtype) * g.R, rtol=1e-5, atol=1e-6)
    assert not np.any(learner.gradient_columns())
    learner.reset(np.full(6, 0.5, dtype))
    assert np.array_equal(learner.state(), np.full(6, 0.5, dtype)) and learner.steps == 0


def test_truncated_bptt_flush_releases_the_gil():
    """A long backward pass (every_k_steps, one block of 4000 steps, n = 128) runs in flush(): another
    Python thread must get to run meanwhile (the timing helper of test_threads.py)."""
    from test_threads import stamps_inside
    model = s.Model.torch_like(128, 8, seed=2, events=False)
    tbptt = s.TruncatedBptt(model, 4000, form=s.TruncationForm.every_k_steps)
    X = s.uniform_random(3, (4000, 8), -1.0, 1.0)
    g = np.linspace(-0.5, 0.5, 128)
    for t in range(3999):
        tbptt.step(X[t])
        tbptt.accumulate_gradient(g)
    assert not np.any(tbptt.gradient_columns())  # kept until the block ends
    duration, inside = stamps_inside(tbptt.flush)
    assert np.any(tbptt.gradient_columns())
    assert duration > 0.01, f"flush() took {duration:.3f} s: too short to tell"
    assert inside >= 1, f"no Python thread ran during a {duration:.3f} s flush(): the GIL was held"


# ---- Errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_options_are_checked_by_the_constructors(dtype):
    model = online_model([6], 3, dtype)
    with pytest.raises(ValueError, match=r"TruncatedBptt::TruncatedBptt\(\): options.k \(the steps back-propagated "
                                         r"through\) must be >= 1, received 0"):
        s.TruncatedBptt(model, 0)
    with pytest.raises(ValueError, match=r"options.k .* must be >= 1, received -3"):
        s.TruncatedBptt(model, k=-3, form=s.TruncationForm.every_k_steps)
    with pytest.raises(ValueError, match=r"options.form must be TruncationForm::every_step or every_k_steps, "
                                         r"received 7"):
        s.TruncatedBptt(model, 2, form=s.TruncationForm(7))
    for eps in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"Uoro::Uoro\(\): options.epsilon must be finite and > 0, received"):
            s.Uoro(model, epsilon=eps)
    with pytest.raises(TypeError, match="model must be a sparse_rtrl.Model, received int"):
        s.Uoro(3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["TruncatedBptt", "Uoro"])
def test_bad_input_raises_and_changes_nothing(dtype, kind):
    model = online_model([6], 3, dtype)
    learner = getattr(s, kind)(model)
    with pytest.raises(RuntimeError, match=rf"{kind}::accumulate_gradient\(\): call step\(\) first"):
        learner.accumulate_gradient(np.zeros(6, dtype))
    with pytest.raises(ValueError, match=rf"{kind}::step\(\): x must be a vector of size 3, received 4 x 1"):
        learner.step(np.zeros(4, dtype))
    with pytest.raises(ValueError, match=rf"{kind}.step\(\): x must be a vector \(1-D, or 2-D with one row or one "
                                         r"column\), received shape \(2, 3\)"):
        learner.step(np.zeros((2, 3), dtype))
    with pytest.raises(ValueError, match=r"x must be finite, received nan at \(1, 0\)"):
        learner.step(np.array([0.0, np.nan, 0.0], dtype))
    other = "float64" if dtype == "float32" else "float32"
    with pytest.raises(TypeError, match=rf"x must be a {dtype} array \(the dtype of this object\), received {other}"):
        learner.step(np.zeros(3, other))
    assert learner.steps == 0
    learner.step(np.ones(3, dtype))
    state = learner.state()
    with pytest.raises(ValueError, match=rf"{kind}::accumulate_gradient\(\): dL_dy must be a vector of size 6, "
                                         r"received 5 x 1"):
        learner.accumulate_gradient(np.zeros(5, dtype))
    with pytest.raises(ValueError, match=r"dL_do must be a vector of size 6, received 7 x 1"):
        learner.accumulate_gradient(np.zeros(6, dtype), np.zeros(7, dtype))
    bad = np.zeros(6, dtype)
    bad[2] = np.inf
    with pytest.raises(ValueError, match=r"dL_dy must be finite, received inf at \(2, 0\)"):
        learner.accumulate_gradient(bad)
    with pytest.raises(IndexError, match=r"layer must be in \[0, 1\), received 1"):
        learner.accumulate_gradient(np.zeros(6, dtype), layer=1)
    with pytest.raises(ValueError, match=rf"{kind}::reset\(\): c0 must be a vector of size 6, received 2 x 1"):
        learner.reset(np.zeros(2, dtype))
    assert not np.any(learner.gradient_columns()) and learner.steps == 1
    assert np.array_equal(learner.state(), state)
    model.set_mask(s.ParameterMask.random(6, 3, 0.5, 0.5, 9))
    with pytest.raises(RuntimeError, match=rf"construct a new {kind}"):
        learner.step(np.ones(3, dtype))
    assert learner.steps == 1


def test_stacks_need_a_layer_for_gradient():
    for learner in (s.TruncatedBptt(s.Model.torch_like([4, 3], 2), 2), s.Uoro(s.Model.torch_like([4, 3], 2))):
        learner.step(np.ones(2))
        with pytest.raises(RuntimeError, match=r"the model is a stack of 2 layers: pass the layer"):
            learner.gradient()
        assert [g.units for g in learner.gradients()] == [4, 3]


# ---- Checkpoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["every_step", "every_k_steps"])
def test_truncated_bptt_resumes_bit_for_bit_mid_block(tmp_path, dtype, form):
    path = str(tmp_path / "tbptt.npz")
    sizes = [7, 5]
    X, G = inputs_and_losses(sizes, 3, 14, dtype)
    f = getattr(s.TruncationForm, form)

    def make(seed):
        model = online_model(sizes, 3, dtype, seed=seed)
        return model, s.TruncatedBptt(model, 4, form=f)

    model, live = make(11)
    run_online(live, X[:6], [g[:6] for g in G], every_layer=False)
    s.Checkpoint().add(model).add("tbptt", live).save(path)
    other, resumed = make(99)  # other weights: everything must come from the file
    s.Checkpoint().add(other).add("tbptt", resumed).load(path)
    assert resumed.steps == 6 and np.array_equal(resumed.state(0), live.state(0))
    wrong_k = s.TruncatedBptt(other, 5, form=f)
    with pytest.raises(ValueError, match="tbptt/k"):
        s.Checkpoint().add(other).add("tbptt", wrong_k).load(path)
    for learner in (live, resumed):
        run_online(learner, X[6:], [g[6:] for g in G], every_layer=False)
        learner.flush()
    assert np.any(live.gradient_columns())
    assert np.array_equal(live.gradient_columns(), resumed.gradient_columns())
    assert np.array_equal(live.state(1), resumed.state(1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_uoro_resumes_its_signs_from_a_checkpoint(tmp_path, dtype):
    path = str(tmp_path / "uoro.npz")
    sizes = [6, 4]
    X, G = inputs_and_losses(sizes, 3, 12, dtype)
    model = online_model(sizes, 3, dtype)
    live = s.Uoro(model, seed=5)
    run_online(live, X[:5], [g[:5] for g in G], every_layer=False)
    s.Checkpoint().add(model).add(live, "uoro").save(path)  # add(obj, name) as well as add(name, obj)
    other = online_model(sizes, 3, dtype)
    resumed = s.Uoro(other, seed=999)  # another seed: the file's generator state must win
    s.Checkpoint().add(other).add("uoro", resumed).load(path)
    assert resumed.sign_state == live.sign_state
    with pytest.raises(ValueError, match="uoro/epsilon"):
        s.Checkpoint().add(other).add("uoro", s.Uoro(other, seed=5, epsilon=1e-6)).load(path)
    for learner in (live, resumed):
        run_online(learner, X[5:], [g[5:] for g in G], every_layer=False)
    assert np.array_equal(live.gradient_columns(), resumed.gradient_columns())
    for k in range(2):
        assert np.array_equal(live.state_factor(k), resumed.state_factor(k))
        assert np.array_equal(live.parameter_factor(k), resumed.parameter_factor(k))


# ---- The README's example ------------------------------------------------------------------------


def readme_online_block():
    import os
    import re
    text = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    section = text[text.index("\n## Python\n"):]
    section = section[:section.index("\n## ", 1)]
    blocks = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "s.TruncatedBptt(" in b]
    assert len(blocks) == 1, "README's Python section needs one example of TruncatedBptt and Uoro"
    return blocks[0]


@pytest.mark.parametrize("variant", ["TruncatedBptt", "Uoro"])
def test_readme_example_of_the_online_learners_runs(tmp_path, monkeypatch, variant):
    """The block as written (TruncatedBptt), and with its commented Uoro line in place of it."""
    block = readme_online_block()
    if variant == "Uoro":
        lines = block.splitlines()
        i = next(i for i, l in enumerate(lines) if l.startswith("learner = s.TruncatedBptt("))
        j = next(i for i, l in enumerate(lines) if l.startswith("# learner = s.Uoro("))
        lines[i], lines[j] = "# " + lines[i], lines[j][2:]
        block = "\n".join(lines) + "\n"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, f"README.md ({variant} example)", "exec"), namespace)
    learner, model = namespace["learner"], namespace["model"]
    assert type(learner).__name__ == variant and learner.dtype == np.float32 and learner.steps == 32
    assert not np.any(learner.gradient_columns())  # the last update consumed it
    fresh = s.Model.torch_like(16, 1, seed=2, threshold=0.1, dtype="float32")
    assert not np.array_equal(model.parameters().R, fresh.parameters().R)  # the updates reached the model
    assert (tmp_path / "online.npz").exists()
