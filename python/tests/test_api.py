"""The Python API against independent references: NumPy transcriptions of the model's step, the
optimizers' and losses' formulas, finite differences and counts made in Python; and the binding's
own promises (parameter views kept alive by the model, torch-named state_dict, copies of learner
state)."""
import gc

import numpy as np
import pytest

import sparse_rtrl as s
from helpers import egru_step, rel_err


def layer_dict(p):
    return {name: np.array(getattr(p, name)) for name in ("W", "R", "bW", "bR", "theta")}


def stack_model(events=True):
    masks = [s.ParameterMask.random(10, 4, 0.6, 0.4, 1), s.ParameterMask.random(7, 10, 0.5, 0.5, 2, s.MaskSharing.gate_shared)]
    return s.Model.torch_like([10, 7], 4, seed=3, threshold=0.05, masks=masks, events=events,
                              surrogate=[s.TriangularSurrogate(1.0, 0.3), s.TriangularSurrogate(0.7, 0.5)])


def test_package_surface():
    assert s.dtypes == ("float32", "float64") and s.__version__.count(".") == 2
    for name in ("Model", "ParameterMask", "EgruParameters", "TriangularSurrogate", "Rtrl", "Snap", "Bptt", "RtrlStreams",
                 "Inference", "LinearReadout", "softmax_cross_entropy", "mean_squared_error", "Sgd", "Adam", "AdamW",
                 "clip_gradient_norm", "MagnitudePruner", "PruningSchedule", "ActivityRegularizer", "WorkCounters",
                 "from_torch_gru", "to_torch_gru"):
        assert name in s.__all__ and hasattr(s, name), name


@pytest.mark.parametrize("events", [True, False])
def test_rtrl_outputs_match_numpy_transcription(events):
    model = stack_model(events)
    ref = [layer_dict(model.parameters(k)) for k in range(2)]
    rtrl = s.Rtrl(model)
    X = s.uniform_random(1, (60, 4), -2.0, 2.0)
    c = [np.zeros(10), np.zeros(7)]
    fired = 0
    for t in range(60):
        rtrl.step(X[t])
        inp = X[t]
        for k in range(2):
            c[k], y = egru_step(ref[k], c[k], inp, events)
            assert rel_err(rtrl.output(k), y) <= 1e-12 and rel_err(rtrl.state(k), c[k]) <= 1e-12
            inp = y
        fired += rtrl.events(0).sum()
    if events:
        assert 0 < fired < 60 * 10, "the test needs units that fire and units that do not"


def test_inference_matches_rtrl_forward():
    model = s.Model.torch_like(12, 3, seed=4, threshold=0.1, masks=s.ParameterMask.random(12, 3, 1.0, 0.3, 5))
    inf, rtrl = s.Inference(model), s.Rtrl(model)
    for x in s.uniform_random(6, (40, 3), -2, 2):
        inf.step(x)
        rtrl.step(x)
        assert np.array_equal(inf.output(), rtrl.output()) and np.array_equal(inf.events(), rtrl.events())
    assert inf.steps == 40


def test_inference_runs_every_layer_of_a_stack():
    model = stack_model()
    inf, rtrl = s.Inference(model), s.Rtrl(model)
    assert inf.layers == 2 and inf.units() == 7 and inf.inputs == 4
    for x in s.uniform_random(7, (40, 4), -2, 2):
        inf.step(x)
        rtrl.step(x)
        for k in range(2):
            assert np.array_equal(inf.output(layer=k), rtrl.output(k))
            assert np.array_equal(inf.events(layer=k), rtrl.events(k))
        assert np.array_equal(inf.output(), rtrl.output(1))
    with pytest.raises(IndexError):
        inf.output(layer=2)
    with pytest.raises(RuntimeError):  # a stack has no single c_0
        inf.reset(np.zeros(7))


def test_parameters_are_views_kept_alive_by_the_model():
    model = s.Model.torch_like(6, 2, seed=1)
    p = model.parameters()
    W = p.W
    assert W.flags.writeable and np.shares_memory(W, model.parameters().W)
    assert np.shares_memory(model.state_dict()["weight_ih_l0"], W)
    W[0, 0] = 0.125  # writes into the model
    assert model.parameters().W[0, 0] == 0.125 and model.state_dict()["weight_ih_l0"][0, 0] == 0.125
    p.theta = np.full(6, 0.2)  # assignment copies into the same memory
    assert np.all(model.state_dict()["threshold_l0"] == 0.2)
    snapshot = W.copy()
    rtrl = s.Rtrl(model)
    del model, p
    gc.collect()
    assert np.array_equal(W, snapshot)  # the view kept the model alive
    rtrl.step([0.1, 0.2])  # and so does the learner
    assert rtrl.model().parameters().W[0, 0] == 0.125


def test_learner_state_is_copied():
    model = s.Model.torch_like(5, 2, seed=2, events=False)
    rtrl = s.Rtrl(model)
    rtrl.step([1.0, 0.0])
    y1 = rtrl.output()
    rtrl.step([0.0, 1.0])
    assert not np.array_equal(y1, rtrl.output())


def test_state_dict_round_trip_and_masks():
    a = stack_model()
    b = s.Model.torch_like([10, 7], 4, seed=99, masks=[s.ParameterMask.dense(10, 4), s.ParameterMask.random(7, 10, 0.5, 0.5, 8)])
    assert sorted(a.state_dict()) == sorted(f"{n}_l{k}" for k in range(2)
                                            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "threshold"))
    assert b.load_state_dict(a.state_dict()) == ([], [])
    got, want = b.state_dict(), a.state_dict()
    for k in range(2):
        for key in ("bias_ih", "bias_hh", "threshold"):
            assert np.array_equal(got[f"{key}_l{k}"], want[f"{key}_l{k}"])
        # b's own masks stay in force: loaded values at its pruned positions are zeroed.
        for key, keep in (("weight_ih", b.mask(k).W), ("weight_hh", b.mask(k).R)):
            assert np.all(got[f"{key}_l{k}"][~keep] == 0)
            assert np.array_equal(got[f"{key}_l{k}"][keep], want[f"{key}_l{k}"][keep])
    assert not b.mask(1).all_kept and np.any(want["weight_hh_l1"][~b.mask(1).R] != 0)
    c = a.copy()
    c.parameters(0).W[:] = 0
    assert np.any(a.parameters(0).W != 0)


def test_masks():
    m = s.ParameterMask.random(20, 5, 0.3, 0.1, 7, s.MaskSharing.gate_shared)
    assert m.gate_shared and m.W.dtype == bool and m.R.shape == (60, 20)
    assert np.array_equal(m.R[:20], m.R[20:40]) and np.array_equal(m.R[:20], m.R[40:])
    assert m.kept_R == 3 * round(0.1 * 400) and m.kept_R == m.R.sum()
    assert not s.ParameterMask.random(20, 5, 0.3, 0.1, 7).gate_shared
    assert s.ParameterMask(m.W, m.R.astype(int)) == m
    model = s.Model.torch_like(20, 5, masks=m)
    assert np.all(model.parameters().R[~m.R] == 0)


def test_influence_columns_are_finite_difference_derivatives():
    """GRU mode: column of bW[i] in the influence matrix is dc_T/dbW[i]."""
    model = s.Model.torch_like(6, 3, seed=5, events=False, masks=s.ParameterMask.random(6, 3, 1.0, 0.5, 2))
    X = s.uniform_random(9, (15, 3), -1, 1)
    rtrl = s.Rtrl(model)
    for x in X:
        rtrl.step(x)
    M = rtrl.influence()
    layout = rtrl.layout()
    assert M.shape == (6, layout.columns) and layout.columns < layout.dense_columns
    ref = layer_dict(model.parameters())

    def final_state(p):
        c = np.zeros(6)
        for x in X:
            c, _ = egru_step(p, c, x, events=False)
        return c

    h = 1e-6
    for rr in (0, 7, 15):
        plus, minus = {k: v.copy() for k, v in ref.items()}, {k: v.copy() for k, v in ref.items()}
        plus["bW"][rr] += h
        minus["bW"][rr] -= h
        fd = (final_state(plus) - final_state(minus)) / (2 * h)
        assert rel_err(M[:, layout.column_of_bW(rr)], fd) <= 1e-7
    kept = np.argwhere(model.mask().R)[0]
    assert layout.column_of_R(*kept) >= 0
    pruned = np.argwhere(~model.mask().R)[0]
    assert layout.column_of_R(*pruned) == -1
    assert rel_err(layout.scatter(rtrl.gradient_columns()).R, rtrl.gradient().R) == 0


def test_work_counters_match_counts_made_in_python():
    model = s.Model.torch_like(16, 3, seed=6, threshold=0.05, surrogate=s.TriangularSurrogate(1.0, 0.1))
    rtrl = s.Rtrl(model)
    events = active = 0
    X = s.uniform_random(3, (50, 3), -2, 2)
    for t, x in enumerate(X):
        rtrl.step(x)
        if t < len(X) - 1:  # the counters of step t count the events of step t - 1
            events += rtrl.events().sum()
            active += np.count_nonzero(rtrl.output_derivative())
    w = rtrl.total_work()
    assert w.steps == 50 and w.units == 50 * 16
    assert w.event_units == events and w.active_rows == active
    assert 0 < events < active < 49 * 16, (events, active)
    assert w.event_sparsity() == pytest.approx(1 - events / 800) and w.backward_sparsity() == pytest.approx(1 - active / 800)
    total = s.WorkCounters()
    total += w
    assert (total + w).steps == 100


def test_streams_equal_independent_learners():
    model = stack_model()
    B = 3
    streams = s.RtrlStreams(model, B, threads=2)
    single = [s.Rtrl(model) for _ in range(B)]
    X = s.uniform_random(4, (40, B, 4), -2, 2)
    G = s.uniform_random(5, (40, B, 7), -1, 1)
    for t in range(40):
        streams.step(X[t])
        streams.accumulate_gradient(G[t])
        for b in range(B):
            single[b].step(X[t, b])
            single[b].accumulate_gradient(G[t, b])
        assert np.array_equal(streams.outputs()[1], single[1].output())
    expected = single[0].gradient_columns() + single[1].gradient_columns() + single[2].gradient_columns()
    assert np.array_equal(streams.gradient_columns(), expected)
    assert np.array_equal(streams.stream_gradient(2, 1).R, single[2].gradient(1).R)
    streams.reset(1)
    assert not np.any(streams.stream_state(1))


def test_bptt_matches_rtrl_with_event_losses():
    model = stack_model()
    X = s.uniform_random(7, (30, 4), -2, 2)
    G = [s.uniform_random(8, (30, 10), -1, 1), s.uniform_random(9, (30, 7), -1, 1)]
    Go = [None, s.uniform_random(10, (30, 7), -1, 1)]
    rtrl = s.Rtrl(model)
    for t in range(30):
        rtrl.step(X[t])
        rtrl.accumulate_gradient(G[0][t], layer=0)
        rtrl.accumulate_gradient(G[1][t], Go[1][t])
    bptt = s.Bptt(model, exploit_events=True)
    bptt.forward(X)
    for k, g in enumerate(bptt.backward(G, Go)):
        for name in ("W", "R", "bW", "bR", "theta"):
            assert rel_err(getattr(rtrl.gradient(k), name), getattr(g, name)) <= 1e-10


def test_readout_and_losses():
    ro = s.LinearReadout(3, 5, seed=1)
    V, b = ro.parameters().V, ro.parameters().b
    assert np.all(np.abs(V) <= 1 / np.sqrt(5)) and np.all(b == 0)
    y = np.array([0.5, -1.0, 0.0, 2.0, 1.0])
    logits = ro.forward(y)
    assert rel_err(logits, V @ y + b) <= 1e-15
    loss, g = s.softmax_cross_entropy(logits, 2)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    assert loss == pytest.approx(-np.log(p[2]), rel=1e-14)
    assert rel_err(g, p - np.eye(3)[2]) <= 1e-14
    dy = ro.backward(y, g)
    assert rel_err(dy, V.T @ g) <= 1e-15
    assert rel_err(ro.gradient().V, np.outer(g, y)) <= 1e-15 and rel_err(ro.gradient().b, g) <= 1e-15
    u = np.array([1.0, 0.0, -1.0])
    loss, g = s.mean_squared_error(logits, u)
    assert loss == pytest.approx(np.mean((logits - u) ** 2), rel=1e-14)
    assert rel_err(g, 2 / 3 * (logits - u)) <= 1e-15


def test_activity_regularizer():
    reg = s.ActivityRegularizer(0.1, 2.0)
    o = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    assert reg.loss(o) == pytest.approx(2.0 * (0.4 - 0.1) ** 2)
    assert rel_err(reg.gradient(o), np.full(5, 2 * 2.0 * 0.3 / 5)) <= 1e-15


def numpy_adam(p, g, m, v, t, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps), m, v


def test_adam_and_sgd_follow_torch_rules_and_keep_pruned_weights_zero():
    mask = s.ParameterMask.random(6, 2, 1.0, 0.5, 3)
    model = s.Model.torch_like(6, 2, seed=2, masks=mask)
    opt = s.Adam(learning_rate=1e-2)
    p0 = layer_dict(model.parameters())
    m = {k: np.zeros_like(v) for k, v in p0.items()}
    v = {k: np.zeros_like(x) for k, x in p0.items()}
    ref = p0
    for t in range(1, 4):
        grad = s.EgruParameters(*(s.uniform_random(t * 10 + i, x.shape, -1, 1) for i, x in enumerate(p0.values())))
        opt.step(model, grad)
        for k in ref:
            ref[k], m[k], v[k] = numpy_adam(ref[k], getattr(grad, k), m[k], v[k], t)
        ref["R"][~mask.R] = 0
    assert opt.steps == 3
    for k in ref:
        assert rel_err(getattr(model.parameters(), k), ref[k]) <= 1e-13, k
    assert np.all(model.parameters().R[~mask.R] == 0) and np.all(opt.first_moment(1)[~mask.R] == 0)

    ro = s.LinearReadout(2, 3)
    sgd = s.Sgd(learning_rate=0.5, momentum=0.9)
    V0 = ro.parameters().V.copy()
    ro.backward(np.ones(3), np.array([1.0, -1.0]))
    sgd.step(ro)
    sgd.step(ro)  # buf = g, then 0.9 g + g
    assert rel_err(ro.parameters().V, V0 - 0.5 * (1 + 1.9) * ro.gradient().V) <= 1e-15
    sgd.learning_rate = 0.25
    assert sgd.learning_rate == 0.25


def test_clip_gradient_norm_over_sets():
    g = s.EgruParameters(3, 2)
    g.R = np.full((9, 3), 1.0)
    r = s.ReadoutParameters(2, 3)
    r.V = np.full((2, 3), 2.0)
    norm = s.clip_gradient_norm(1.0, g, r)
    assert norm == pytest.approx(np.sqrt(27 + 24))
    total = np.sqrt(np.sum(g.R ** 2) + np.sum(r.V ** 2))
    assert total == pytest.approx(1.0)


def test_magnitude_pruning_through_model_and_learner():
    model = s.Model.torch_like(16, 4, seed=7)
    rtrl = s.Rtrl(model)
    rtrl.step(np.ones(4))
    pruner = s.MagnitudePruner(s.PruningSchedule(0.5, 0.25, 2, s.PruningCurve.linear))
    assert pruner.density_R(1) == pytest.approx(0.625)
    before = np.abs(model.parameters().R.copy())
    mask = pruner.prune(rtrl)
    assert mask.kept_R == round(0.625 * 48 * 16) and model.mask_version == 1
    assert before[mask.R].min() >= before[~mask.R].max()  # the largest magnitudes survive
    assert rtrl.layout().columns == s.Rtrl(model).layout().columns
    mask = pruner.prune(model)
    assert pruner.finished() and mask.kept_R == round(0.25 * 48 * 16) and mask.kept_W == round(0.5 * 48 * 4)
    rtrl.step(np.ones(4))  # follows the model's new mask before stepping
    assert rtrl.layout().columns == mask.kept_W + mask.kept_R + 7 * 16


def test_portable_generator_and_initialisation():
    a = s.uniform_random(11, (4, 3), -2.0, 2.0)
    assert a.shape == (4, 3) and np.all((a >= -2) & (a < 2)) and np.array_equal(a, s.uniform_random(11, [4, 3], -2.0, 2.0))
    p = s.init_torch_like(5, 2, seed=3, threshold=0.4)
    assert np.all(np.abs(p.W) <= 1 / np.sqrt(5)) and np.all(p.theta == 0.4)
    model = s.Model.torch_like([5, 4], 2, seed=3, threshold=0.4)
    assert np.array_equal(model.parameters(0).R, p.R)
    assert np.array_equal(model.parameters(1).R, s.init_torch_like(4, 5, seed=4).R)


def test_layout_accessors_refuse_after_a_mask_change_until_followed():
    """Issue 19, item 6: after pruning, rtrl.columns reported the old count until the next step."""
    mask = s.ParameterMask.random(8, 3, 0.9, 0.9, seed=1)
    model = s.Model.torch_like(8, 3, seed=2, masks=mask)
    rtrl = s.Rtrl(model)
    rtrl.step(np.ones(3))
    before = rtrl.columns
    pruned = s.ParameterMask.random(8, 3, 0.4, 0.4, seed=3)
    model.set_mask(pruned)
    with pytest.raises(RuntimeError, match="follow_mask"):
        rtrl.columns
    rtrl.follow_mask()
    assert rtrl.columns == rtrl.layout().columns != before


def test_optimizer_update_consumes_the_gradient():
    """update(model, learner) == step(model, learner.gradient()) + zero_gradient(); update(readout) too."""
    mask = s.ParameterMask.random(6, 2, 0.8, 0.6, seed=4)
    runs = []
    for consume in (False, True):
        model = s.Model.torch_like(6, 2, seed=5, masks=mask)
        rtrl, readout, adam, sgd = s.Rtrl(model), s.LinearReadout(1, 6), s.Adam(learning_rate=1e-2), s.Sgd()
        rng = np.random.default_rng(6)
        for _ in range(5):
            rtrl.step(rng.normal(size=2))
            _, dL_dp = s.mean_squared_error(readout.forward(rtrl.output()), np.ones(1))
            rtrl.accumulate_gradient(readout.backward(rtrl.output(), dL_dp))
            if consume:
                adam.update(model, rtrl)
                sgd.update(readout)
                assert not rtrl.gradient_columns().any() and not readout.gradient().V.any()
            else:
                adam.step(model, rtrl.gradient())
                sgd.step(readout)
                rtrl.zero_gradient()
                readout.zero_gradient()
        runs.append((model.parameters().R.copy(), readout.parameters().V.copy()))
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    other = s.Model.torch_like(6, 2, seed=5, masks=mask)
    with pytest.raises(ValueError, match="bound to another model"):
        s.Adam().update(other, s.Rtrl(model))
