#!/usr/bin/python3
"""What the Python bindings add to a sparse RTRL step: the rows python/sparse_rtrl/n:{64,256}/act:0.1/dens:0.1.

The Python step (rtrl.step(x) then rtrl.accumulate_gradient(g), from a NumPy loop) runs on the
network of bench_suite's python_twin rows: the same mask (ParameterMask.random, same seed), the
same initialisation and threshold calibration (bench_common.hpp's parameters_for_activity, done
here through the bindings in double, as the twin does in C++), the same inputs (the library's
portable generator) and gradient. Both are float64, both single-threaded. A float32 row per size
(--dtypes) runs the same network in float32 (parameters, inputs and gradient rounded from the
float64 ones, the same theta): Python loop against the module's float32 C++ loop (bench_suite has
no float twin), and its influence bytes (half the float64 row's).

Timing: CPU time of the process on every side (Google Benchmark's cpu_time for the twin,
time.process_time() here, std::clock() in the module's loop): the machine is shared, and CPU time
leaves out the time other processes held the core (not their effect on caches and memory
bandwidth). The script also alternates, round by round, the C++ twin (a
bench_suite subprocess running just that row), its own Python loop, and the same loop run in C++
inside the module (sparse_rtrl.float64._time_rtrl_loop: the module's compilation of the step without
the Python layer), and keeps each side's fastest round: the minima were measured minutes apart at
most, under the same conditions.
Each Python round runs like a Google Benchmark row: steps until the mode's minimum time (0.2 s
quick, 1 s full) of CPU time has passed. Output: Google-Benchmark-compatible JSON (context + benchmarks with run_type
"iteration" and counters), one row per size, with the paired C++ time and the ratio in it.

Usage (run_suite.py calls it; PYTHONPATH must reach the built package):
    PYTHONPATH=build/bench/python /usr/bin/python3 bench/python_overhead.py \
        --bench-suite build/bench/bench/bench_suite --out bench/results/python_quick.json [--quick|--full] \
        [--dtypes float64,float32]
"""
import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np

import sparse_rtrl as s

INPUTS = 32                  # bench_suite's kInputs
GAMMA, EPS = 1.0, 0.1        # bench_suite's kSurrogate
ACTIVITY, DENSITY = 0.1, 0.1


def calibrated_network(n, activity=ACTIVITY, density=DENSITY):
    """bench_common.hpp's parameters_for_activity<double>, step for step, with bench_suite's seeds."""
    d = INPUTS
    mask = s.ParameterMask.random(n, d, density, density, 1000 + n)
    seed = 7 + n
    p = s.init_torch_like(n, d, seed=seed, threshold=0.3)
    p.W *= 2.0 / math.sqrt(max(mask.density_W, 1e-3)) * math.sqrt(n / d)
    p.R *= 1.0 / math.sqrt(max(mask.density_R, 1e-3))
    mask.apply(p)
    X = s.uniform_random(seed + 1, (60, d), -1.0, 1.0)
    surrogate = s.TriangularSurrogate(GAMMA, EPS)

    def measure(theta):
        p.theta = np.full(n, theta)
        bptt = s.Bptt(s.Model(p, events=True, surrogate=surrogate))
        bptt.forward(X)
        active = sum(np.count_nonzero(bptt.step_cache(t)["s"]) for t in range(10, X.shape[0]))
        return active / ((X.shape[0] - 10) * n)

    lo, hi = -2.0, 3.0  # activity decreases with the threshold
    for _ in range(30):
        mid = (lo + hi) / 2
        if measure(mid) > activity:
            lo = mid
        else:
            hi = mid
    p.theta = np.full(n, (lo + hi) / 2)
    return s.Model(p, masks=mask, events=True, surrogate=surrogate)


def as_float32(model):
    """The calibrated float64 network in float32 (every parameter rounded; same mask and surrogate)."""
    p = model.parameters()
    p32 = s.EgruParameters(*(np.asarray(getattr(p, k), dtype=np.float32) for k in ("W", "R", "bW", "bR", "theta")))
    return s.Model(p32, masks=model.mask(), events=True, surrogate=s.TriangularSurrogate(GAMMA, EPS, dtype="float32"))


def inputs_and_gradient(n, dtype=np.float64):
    return s.uniform_random(5, (256, INPUTS), -1.0, 1.0).astype(dtype), np.full(n, 0.01, dtype=dtype)


def python_round(model, min_time):
    """One Google-Benchmark-like run of the Python step; returns (CPU seconds per step, counters)."""
    n = model.units()
    rtrl = s.Rtrl(model)
    X, g = inputs_and_gradient(n, model.dtype)
    for t in range(10):
        rtrl.step(X[t])
    rtrl.reset_work()
    t, iterations = 10, 0
    step, accumulate = rtrl.step, rtrl.accumulate_gradient
    start = time.process_time()
    elapsed = 0.0
    while elapsed < min_time:
        for _ in range(16):  # check the clock every 16 steps
            step(X[t % 256])
            accumulate(g)
            t += 1
        iterations += 16
        elapsed = time.process_time() - start
    w = rtrl.total_work()
    steps = max(w.steps, 1)
    fma = (w.propagation_fma + w.readout_fma) / steps
    counters = dict(n=n, density=DENSITY, activity=1.0 - w.backward_sparsity(), event_rate=1.0 - w.event_sparsity(),
                    fma=fma, ideal_ratio=w.ideal_speedup(), state_bytes=rtrl.influence_bytes,
                    theta=float(model.parameters().theta[0]), iterations=iterations)
    return elapsed / iterations, counters


def module_round(model, min_time):
    """The same loop in C++ inside the module (sparse_rtrl.float64._time_rtrl_loop): the step as this
    module's compilation runs it, without the Python layer. Returns CPU seconds per step."""
    rtrl = s.Rtrl(model)
    X, g = inputs_and_gradient(model.units(), model.dtype)
    for t in range(10):
        rtrl.step(X[t])
    elapsed, steps = s._dtypes._time_rtrl_loop(rtrl, X, g, 10, min_time)
    return elapsed / steps


def layer_probe(rounds, min_time, n=4, dtype="float64"):
    """The Python layer alone: the same Python loop and module loop on a tiny model (n = 4, d = 32,
    dense), whose C++ step costs about a microsecond, so the difference (CPU seconds per step,
    fastest rounds) is what the Python layer costs per step, free of the large step's noise."""
    p = s.init_torch_like(n, INPUTS, seed=1, threshold=0.3, dtype=dtype)
    model = s.Model(p, events=True, surrogate=s.TriangularSurrogate(GAMMA, EPS, dtype=dtype))
    py = min(python_round(model, min_time)[0] for _ in range(rounds))
    mod = min(module_round(model, min_time) for _ in range(rounds))
    return py - mod, py, mod


def cpp_round(bench_suite, n, mode):
    """The C++ twin row, run alone by bench_suite (its --quick/--full time per row); returns
    (CPU seconds per step, its JSON row, the run's context)."""
    name = f"python_twin/sparse_rtrl/n:{n}/act:{ACTIVITY:g}/dens:{DENSITY:g}"
    out = subprocess.run([bench_suite, f"--{mode}", f"--benchmark_filter=^{name}(/.*)?$", "--benchmark_format=json"],
                         check=True, capture_output=True, text=True).stdout
    rows = [b for b in json.loads(out)["benchmarks"] if b.get("run_type") == "iteration"]
    if len(rows) != 1:
        sys.exit(f"python_overhead.py: {bench_suite} ran {len(rows)} rows named {name}")
    unit = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[rows[0].get("time_unit", "ns")]
    return rows[0]["cpu_time"] * unit, rows[0], json.loads(out)["context"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench-suite", required=True, help="the bench_suite executable (for the C++ twin rows)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="5 rounds of 0.2 s per side and size (default; bench_suite --quick)")
    g.add_argument("--full", action="store_true", help="9 rounds of 1 s (bench_suite --full)")
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--dtypes", default="float64,float32",
                    help="float64: the rows against bench_suite's twin; float32: against the module's float32 loop")
    a = ap.parse_args()
    mode = "full" if a.full else "quick"
    rounds, min_time = (9, 1.0) if a.full else (5, 0.2)  # min_time: bench_suite's default --benchmark_min_time per mode
    benchmarks, context = [], {}
    dtypes = [d for d in a.dtypes.split(",") if d]
    probes = {}
    for dtype in dtypes:
        probes[dtype] = layer_probe(rounds, min_time, dtype=dtype)
        probe, probe_py, probe_mod = probes[dtype]
        print(f"Python layer probe (n = 4, {dtype}): Python {probe_py * 1e6:.2f} us, module's C++ loop "
              f"{probe_mod * 1e6:.2f} us per step: the layer costs {probe * 1e6:.2f} us per step", flush=True)
    for n in (int(v) for v in a.sizes.split(",")):
        model64 = calibrated_network(n)
        for dtype in dtypes:
            twin = dtype == "float64"  # bench_suite's python_twin rows are double
            model = model64 if twin else as_float32(model64)
            probe = probes[dtype][0]
            times = {"cpp": [], "module": [], "python": []} if twin else {"module": [], "python": []}
            cpp_row = {}
            for r in range(rounds):
                if twin:
                    t_cpp, cpp_row, context = cpp_round(a.bench_suite, n, mode)
                    times["cpp"].append(t_cpp)
                t_py, counters = python_round(model, min_time)
                t_mod = module_round(model, min_time)
                times["python"].append(t_py)
                times["module"].append(t_mod)
                print(f"n = {n} {dtype} round {r + 1}/{rounds}: "
                      + (f"bench_suite {t_cpp * 1e3:.4f} ms, " if twin else "")
                      + f"module's C++ loop {t_mod * 1e3:.4f} ms, Python {t_py * 1e3:.4f} ms per step", flush=True)
            t_py, t_mod = min(times["python"]), min(times["module"])
            t_cpp = min(times["cpp"]) if twin else None
            name = f"python/sparse_rtrl/n:{n}/act:{ACTIVITY:g}/dens:{DENSITY:g}" + ("" if twin else f"/dtype:{dtype}")
            row = {
                "name": name, "run_name": name, "run_type": "iteration", "repetitions": rounds, "threads": 1,
                "dtype": dtype,
                "iterations": counters.pop("iterations"),
                "real_time": t_py * 1e3, "cpu_time": t_py * 1e3, "time_unit": "ms",
                "step_seconds": t_py,  # CPU time per step (every time of this row is)
                "cpp_step_seconds": t_cpp, "cpp_theta": cpp_row.get("theta"), "cpp_activity": cpp_row.get("activity"),
                "module_step_seconds": t_mod,
                "overhead": t_py / t_cpp - 1.0 if twin else None,  # against bench_suite's twin row (the measure)
                "python_layer_seconds": t_py - t_mod,       # against the same loop in C++ in the same module
                "python_layer_share": t_py / t_mod - 1.0,
                "python_layer_probe_seconds": probe,        # the layer on a tiny model (layer_probe())
                "estimated_overhead": probe / t_mod,        # that cost over this size's C++ step
                "round_seconds": times,
            }
            row.update(counters)
            benchmarks.append(row)
            print(f"{name}: Python {t_py * 1e3:.4f} ms, "
                  + (f"bench_suite {t_cpp * 1e3:.4f} ms, " if twin else "")
                  + f"the module's C++ loop {t_mod * 1e3:.4f} ms per step (fastest of {rounds} rounds each)"
                  + (f": {100 * row['overhead']:+.1f}% vs bench_suite" if twin else "")
                  + f"; the Python layer {row['python_layer_seconds'] * 1e6:.2f} us per step "
                  f"({100 * row['python_layer_share']:+.1f}%); from the probe: {100 * row['estimated_overhead']:+.2f}%; "
                  f"influence {row['state_bytes']} bytes", flush=True)
    context = dict(context)
    context.update(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                   executable="bench/python_overhead.py", python=platform.python_version(),
                   numpy=np.__version__, sparse_rtrl=s.__version__, load_avg=list(os.getloadavg()))
    with open(a.out, "w") as f:
        json.dump({"context": context, "benchmarks": benchmarks}, f, indent=1)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
