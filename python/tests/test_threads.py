"""The GIL is released while the library computes: Python threads keep running during a long step,
and two threads driving two independent learners get exactly the sequential results."""
import threading
import time

import numpy as np
import pytest

import sparse_rtrl as s


def stamps_inside(call, warmup=0.01):
    """Runs call() while a second Python thread records timestamps every ~0.5 ms; returns the call's
    duration and the number of timestamps in the middle half of it. A call that holds the GIL
    leaves no timestamp there (the other thread cannot run Python code; at most one switch
    interval, 5 ms, can pass before the call enters C++)."""
    stamps, stop = [], threading.Event()

    def ticker():
        while not stop.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0.0005)

    thread = threading.Thread(target=ticker)
    thread.start()
    time.sleep(warmup)
    t0 = time.perf_counter()
    call()
    t1 = time.perf_counter()
    stop.set()
    thread.join()
    quarter = (t1 - t0) / 4
    return t1 - t0, sum(1 for t in stamps if t0 + quarter < t < t1 - quarter)


def dense_rtrl():
    # Dense RTRL (every row, every parameter) at n = 128: one step is ~10^9 multiply-adds.
    model = s.Model.torch_like(128, 8, seed=1, events=False)
    rtrl = s.Rtrl(model, skip_silent_rows=False)
    rtrl.step(np.ones(8))
    return rtrl


def long_bptt():
    model = s.Model.torch_like(128, 8, seed=2, events=False)
    X = s.uniform_random(3, (4000, 8), -1.0, 1.0)
    bptt = s.Bptt(model)
    return bptt, X


def test_gil_released_during_rtrl_step():
    rtrl = dense_rtrl()
    duration, inside = stamps_inside(lambda: rtrl.step(np.ones(8)))
    assert duration > 0.04, f"the step took {duration:.3f} s: too short to tell"
    assert inside >= 1, f"no Python thread ran during a {duration:.3f} s step: the GIL was held"


def test_gil_released_during_streams_step():
    model = s.Model.torch_like(128, 8, seed=1, events=False)
    streams = s.RtrlStreams(model, 1, skip_silent_rows=False)
    X = np.ones((1, 8))
    streams.step(X)
    duration, inside = stamps_inside(lambda: streams.step(X))
    assert duration > 0.04, f"the step took {duration:.3f} s: too short to tell"
    assert inside >= 1, f"no Python thread ran during a {duration:.3f} s step: the GIL was held"


def test_gil_released_during_bptt_forward_and_backward():
    bptt, X = long_bptt()
    duration, inside = stamps_inside(lambda: bptt.forward(X))
    assert duration > 0.04 and inside >= 1, (duration, inside)
    G = np.ones((X.shape[0], 128))
    duration, inside = stamps_inside(lambda: bptt.backward(G))
    assert duration > 0.04 and inside >= 1, (duration, inside)


def run_learner(rtrl, X, G):
    for t in range(X.shape[0]):
        rtrl.step(X[t])
        rtrl.accumulate_gradient(G[t])


@pytest.mark.parametrize("threads_per_learner", [1, 2])
def test_two_threads_two_learners_match_sequential(threads_per_learner):
    def make(seed):
        mask = s.ParameterMask.random(48, 6, 0.5, 0.2, seed, s.MaskSharing.gate_shared)
        model = s.Model.torch_like(48, 6, seed=seed, threshold=0.1, masks=mask,
                                   surrogate=s.TriangularSurrogate(1.0, 0.3))
        return model, s.Rtrl(model, threads=threads_per_learner)

    data = [(s.uniform_random(10 + k, (300, 6), -2.0, 2.0), s.uniform_random(20 + k, (300, 48), -1.0, 1.0))
            for k in range(2)]
    sequential = [make(k) for k in range(2)]
    for (model, rtrl), (X, G) in zip(sequential, data):
        run_learner(rtrl, X, G)
    parallel = [make(k) for k in range(2)]
    workers = [threading.Thread(target=run_learner, args=(rtrl, X, G)) for (model, rtrl), (X, G) in zip(parallel, data)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for (_, a), (_, b) in zip(sequential, parallel):
        assert b.steps == 300
        assert np.array_equal(a.gradient_columns(), b.gradient_columns())
        assert np.array_equal(a.state(), b.state())
    # The two learners saw different data, so equal results would mean the test compares nothing.
    assert not np.array_equal(sequential[0][1].gradient_columns(), sequential[1][1].gradient_columns())


ONE_THREAD = "is being used by another thread; one object, one thread"


def test_one_learner_hammered_by_two_threads_raises_or_stays_serial():
    """Two threads stepping one learner: each step either runs alone or raises the documented
    RuntimeError; the learner then equals a serial run of the steps that ran (it used to be
    corrupted silently: influence off by 0.55)."""
    model = s.Model.torch_like(64, 8, seed=3, events=False)
    rtrl = s.Rtrl(model, skip_silent_rows=False)
    x = np.linspace(-1.0, 1.0, 8)
    g = np.linspace(-0.5, 0.5, 64)
    errors = []

    def hammer():
        for _ in range(60):
            try:
                rtrl.step(x)
                rtrl.accumulate_gradient(g)
            except RuntimeError as e:
                errors.append(str(e))

    workers = [threading.Thread(target=hammer) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert all(ONE_THREAD in e and e.startswith("sparse_rtrl.Rtrl.") for e in errors), errors[:3]
    # Replay serially the steps that ran (gradients do not change the state or the influence).
    steps = rtrl.steps
    assert steps + len(errors) >= 120
    serial_model = s.Model.torch_like(64, 8, seed=3, events=False)
    serial = s.Rtrl(serial_model, skip_silent_rows=False)
    for _ in range(steps):
        serial.step(x)
    assert np.array_equal(rtrl.influence(), serial.influence())
    assert np.array_equal(rtrl.state(), serial.state())


def test_model_update_while_its_learner_steps_raises():
    """A model must not be updated while its learners step: an optimizer step on it meanwhile
    raises RuntimeError (the model is unchanged by the refused call)."""
    rtrl = dense_rtrl()
    model = rtrl.model()
    grad = rtrl.gradient()
    adam = s.Adam(learning_rate=1e-3)
    done = threading.Event()

    def stepper():
        for _ in range(6):
            rtrl.step(np.ones(8))
        done.set()

    thread = threading.Thread(target=stepper)
    thread.start()
    refused = 0
    while not done.is_set():
        try:
            adam.step(model, grad)
        except RuntimeError as e:
            assert "a model must not be updated while its learners step" in str(e)
            refused += 1
        time.sleep(0.001)
    thread.join()
    assert refused >= 1
    adam.step(model, grad)  # idle again: accepted


def test_two_learners_of_one_model_step_in_parallel():
    """Learners only read their model while stepping: several of them may step at once."""
    model = s.Model.torch_like(32, 6, seed=4, threshold=0.1)
    X = [s.uniform_random(30 + k, (200, 6), -2.0, 2.0) for k in range(2)]
    G = [s.uniform_random(40 + k, (200, 32), -1.0, 1.0) for k in range(2)]
    sequential = [s.Rtrl(model) for _ in range(2)]
    for r, x, g in zip(sequential, X, G):
        run_learner(r, x, g)
    parallel = [s.Rtrl(model) for _ in range(2)]
    workers = [threading.Thread(target=run_learner, args=a) for a in zip(parallel, X, G)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for a, b in zip(sequential, parallel):
        assert b.steps == 200
        assert np.array_equal(a.gradient_columns(), b.gradient_columns())


def test_checkpoint_load_into_a_model_whose_learner_steps_raises(tmp_path):
    """A checkpoint load writes the model: refused while a learner of it steps on another thread."""
    rtrl = dense_rtrl()
    model = rtrl.model()
    path = str(tmp_path / "m.npz")
    ck = s.Checkpoint().add(model)
    ck.save(path)
    done = threading.Event()
    step_errors = []

    def stepper():
        try:
            for _ in range(6):
                try:
                    rtrl.step(np.ones(8))
                except RuntimeError as e:  # a step that began while a load wrote the model
                    step_errors.append(str(e))
        finally:
            done.set()

    thread = threading.Thread(target=stepper)
    thread.start()
    refused = 0
    while not done.is_set():
        try:
            ck.load(path)
        except RuntimeError as e:
            assert "a model must not be updated while its learners step" in str(e)
            refused += 1
        time.sleep(0.001)
    thread.join()
    assert refused >= 1
    assert all("its model is being written by another thread" in e for e in step_errors), step_errors
    ck.load(path)  # idle again: accepted
