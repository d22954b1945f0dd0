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
