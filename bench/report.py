#!/usr/bin/python3
"""Turns the benchmark results (bench/results/*.json, and bench_rtrl's console table) into
docs/benchmarks.md and the plots in docs/img/. Runs nothing: bench/run_suite.py runs the binaries
and writes the JSON, then calls this; run alone, it rebuilds the report from the files there.

Usage (from the repository root):
    /usr/bin/python3 bench/report.py [--quick | --full] [--results DIR] [--docs DIR]

--quick (default) / --full pick which run's files to read (suite_quick.json, ...). --results and
--docs redirect where the JSON is read and where benchmarks.md and img/ go (default bench/results
and docs), e.g. to build a trial report without touching committed files:
    /usr/bin/python3 bench/report.py --docs /tmp/report
Every number in the report comes from those files; matplotlib draws the plots.
"""
import argparse
import json
import math
import os
import platform
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
DOCS = os.path.join(ROOT, "docs")


def load(path):
    with open(path) as f:
        return json.load(f)


def parse_name(name):
    """'size/sparse_rtrl/n:64/act:0.1/dens:0.1/...' -> ('size', 'sparse_rtrl', {'n': 64, ...})."""
    parts = name.split("/")
    fields = {}
    for p in parts[2:]:
        if ":" in p:
            k, v = p.split(":", 1)
            try:
                fields[k] = float(v)
            except ValueError:
                fields[k] = v
    return parts[0], parts[1], fields


def rows(suite):
    out = []
    for b in suite["benchmarks"]:
        if b.get("run_type") != "iteration":
            continue
        sweep, algo, f = parse_name(b["name"])
        r = dict(sweep=sweep, algo=algo, **f)
        r["error"] = b.get("error_message") if b.get("error_occurred") else None
        if "cpu_time" in b and "iterations" in b:  # CPU seconds per iteration (Google Benchmark's own)
            r["cpu_seconds"] = b["cpu_time"] * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}.get(b.get("time_unit", "ns"), 1e-9)
        for k in ("step_seconds", "state_bytes", "activity", "event_rate", "fma", "dense_fma", "ideal_ratio", "GFLOPS",
                  "stream_seconds", "stream_GBps", "over_floor", "stream_step_seconds", "streams", "threads",
                  "save_seconds", "load_seconds", "bytes", "read_seconds", "first_load_seconds", "first_read_seconds",
                  "layer_seconds_sum", "activity_l0", "activity_l1", "cross_time_share", "cross_fma_share",
                  "rtrl_step_seconds", "bptt_history_step_seconds", "rtrl_state_bytes", "bptt_state_bytes",
                  "rtrl_step_cpu_seconds", "bptt_history_step_cpu_seconds"):
            if k in b:
                r[k] = b[k]
        out.append(r)
    return out


def ms(s):
    return "–" if s is None else f"{s * 1e3:.3g} ms"


def mb(b):
    return "–" if b is None else f"{b / 1e6:.3g} MB"


def ratio(a, b):
    return "–" if (a is None or b is None or b == 0) else f"{a / b:.3g}"


def find(rs, sweep, algo, **match):
    for r in rs:
        if r["sweep"] == sweep and r["algo"] == algo and all(abs(r.get(k, -1) - v) < 1e-9 for k, v in match.items()):
            return r
    return None


def slope(xs, ys):
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else None


def torch_point(peer, n, T=100, density=0.1, activity=0.1, batch=1, threads=None):
    """The peer's record of one point; batch 1 unless asked (records from before --batch are batch 1),
    any thread count unless asked."""
    for p in peer or []:
        if (p["n"] == n and p["T"] == T and abs(p["density"] - density) < 1e-9
                and abs(p.get("activity", p.get("activity_target", activity)) - activity) < 1e-9
                and p.get("batch", 1) == batch and (threads is None or p.get("threads", 1) == threads)):
            return p
    return None


def plots(rs, peer, img):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(img, exist_ok=True)
    made = []
    algos = ["sparse_rtrl", "dense_rtrl", "snap1", "snap2", "dense_bptt", "sparse_bptt"]
    for key, label, fname in (("step_seconds", "time per step [s]", "size_time.png"),
                              ("state_bytes", "learning-state bytes", "size_memory.png")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for a in algos:
            pts = sorted((r["n"], r[key]) for r in rs if r["sweep"] == "size" and r["algo"] == a and not r["error"] and key in r)
            if pts:
                ax.loglog(*zip(*pts), marker="o", label=a)
        tp = sorted((p["n"], p["step_seconds"] if key == "step_seconds" else p["peak_rss_bytes"])
                    for p in (peer or []) if p["T"] == 100 and abs(p["density"] - 0.1) < 1e-9 and abs(p.get("activity", 0.1) - 0.1) < 1e-9
                    and p.get("batch", 1) == 1)
        if tp:
            ax.loglog(*zip(*tp), marker="s", linestyle="--", label="pytorch_bptt" + (" (peak RSS)" if key == "state_bytes" else ""))
        ax.set_xlabel("hidden units n (d = 32, weight density 0.1, activity ~0.1)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(img, fname), dpi=110)
        plt.close(fig)
        made.append(fname)
    for sweep, xkey, xlabel, fname in (("activity", "activity", "measured backward activity (fraction of rows with s != 0)", "activity_time.png"),
                                       ("density", "dens", "weight density", "density_time.png")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for a in ("sparse_rtrl", "sparse_bptt"):
            pts = sorted((r[xkey], r["step_seconds"]) for r in rs if r["sweep"] == sweep and r["algo"] == a and not r["error"])
            if pts:
                ax.loglog(*zip(*pts), marker="o", label=a + " (n = 256)")
        dense = find(rs, "size", "dense_rtrl", n=256)
        if dense and not dense["error"]:
            ax.axhline(dense["step_seconds"], color="k", linestyle=":", label="dense RTRL (n = 256)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("time per step [s]")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(img, fname), dpi=110)
        plt.close(fig)
        made.append(fname)
    fig, ax = plt.subplots(figsize=(6, 4))
    for a in ("dense_bptt", "sparse_bptt"):
        pts = sorted((r["T"], r["state_bytes"]) for r in rs if r["sweep"] == "length" and r["algo"] == a)
        if pts:
            ax.loglog(*zip(*pts), marker="o", label=a + " history")
    rt = find(rs, "size", "sparse_rtrl", n=256)
    cross = None
    if rt:
        ax.axhline(rt["state_bytes"], color="C2", label="sparse RTRL influence matrix (any T)")
        b = sorted((r["T"], r["state_bytes"]) for r in rs if r["sweep"] == "length" and r["algo"] == "sparse_bptt")
        if b:
            per_step = b[-1][1] / b[-1][0]
            cross = rt["state_bytes"] / per_step
            ax.axvline(cross, color="C3", linestyle="--", label=f"crossover T = {cross:.0f}")
    ax.set_xlabel("sequence length T (n = 256)")
    ax.set_ylabel("learning-state bytes")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(img, "length_memory.png"), dpi=110)
    plt.close(fig)
    made.append("length_memory.png")
    return made, cross


def machine(suite):
    c = suite.get("context", {})
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    caches = ", ".join(f"L{x['level']} {x['type']} {x['size'] // 1024} KiB x{x['num_sharing'] or 1}" for x in c.get("caches", []))
    if not caches:  # virtual machines often hide the cache topology from Google Benchmark
        sizes = []
        for key, label in (("LEVEL1_DCACHE_SIZE", "L1d"), ("LEVEL2_CACHE_SIZE", "L2"), ("LEVEL3_CACHE_SIZE", "L3")):
            try:
                v = int(subprocess.run(["getconf", key], capture_output=True, text=True).stdout.strip() or 0)
            except (OSError, ValueError):
                v = 0
            if v:
                sizes.append(f"{label} {v // 1024} KiB")
        caches = ", ".join(sizes) + " (getconf; the VM does not report sharing)" if sizes else "caches not reported"
    try:
        flags = open("/proc/cpuinfo").read()
        isa = "AVX-512" if " avx512f" in flags else ("AVX2" if " avx2" in flags else "SSE")
    except OSError:
        isa = "?"
    caches += f"; widest vector ISA {isa}"
    return (f"{model}, {c.get('num_cpus', '?')} cores at {c.get('mhz_per_cpu', '?')} MHz; {caches}. "
            f"Benchmarks single-threaded (except the many-streams rows, 1 and 2 threads), Release, -march=native (SPARSE_RTRL_NATIVE); run {c.get('date', '?')}, "
            f"load average at start {', '.join(f'{x:.1f}' for x in c.get('load_avg', []))} (2 cores: above ~1 another process shared the machine).")


def report(mode, suite, kernel_table, peer, rtrl_suite=None, python=None, docs=DOCS, mpi=None):
    rs = rows(suite)
    made, cross = plots(rs, peer, os.path.join(docs, "img"))
    L = []
    L.append("# Benchmarks\n")
    L.append(f"Generated by `/usr/bin/python3 bench/run_suite.py --{mode}` (called by `bash cmake/dev.sh bench`); "
             "every number below comes from `bench/results/*.json` of that one run. Machine: " + machine(suite) + "\n")
    L.append("Conventions: d = 32 inputs; surrogate gamma = 1, eps = 0.1 (narrow, so silent units' rows are "
             "skippable; see docs/model.md); *activity* is the measured fraction of units with s = o + c psi != 0 "
             "(rows RTRL must propagate), *event rate* the fraction with o = 1; *density* the fraction of kept "
             "weights in W and R. RTRL time is per step including the gradient readout; BPTT time is forward + "
             "backward of a T-step sequence divided by T. Learning-state bytes: the influence matrix for RTRL and "
             "SnAp, the stored history for BPTT, peak RSS growth for PyTorch.\n")
    L.append("Online learning (an exact gradient at every step by RTRL or by BPTT over the history, the crossover "
             "t*, truncated BPTT and UORO): [online.md](online.md), from the online/ rows.\n")
    if kernel_table:
        L.append("## Sparse vs dense exact RTRL at n = 256 (bench_rtrl)\n")
        L.append(kernel_table + "\n")
    # Goal points.
    L.append("## Where we stand: sparse RTRL vs PyTorch BPTT\n")
    L.append("| point (backward sparsity / weight sparsity) | sparse RTRL step | dense RTRL step | sparse / dense time | speedup dense/sparse: measured vs ideal (work counters) | PyTorch BPTT step | sparse RTRL / PyTorch |")
    L.append("|---|---|---|---|---|---|---|")
    dense256 = find(rs, "size", "dense_rtrl", n=256)
    for act, dens, label in ((0.1, 0.1, "90 / 90"), (0.05, 0.05, "95 / 95")):
        s = find(rs, "goal", "sparse_rtrl", act=act, dens=dens)
        t = torch_point(peer, 256, 100, dens, act)
        if not s:
            continue
        L.append(f"| {label} (measured activity {s['activity']:.3f}) | {ms(s['step_seconds'])} | {ms(dense256 and dense256['step_seconds'])} | "
                 f"{ratio(s['step_seconds'], dense256 and dense256['step_seconds'])} | "
                 f"{ratio(dense256 and dense256['step_seconds'], s['step_seconds'])}x vs {s['ideal_ratio']:.0f}x"
                 f"{'' if not dense256 else ' (%.0f%%)' % (100 * dense256['step_seconds'] / s['step_seconds'] / s['ideal_ratio'])} | "
                 f"{ms(t and t['step_seconds'])} | {ratio(s['step_seconds'], t and t['step_seconds'])} |")
    L.extend(standing(rs, peer, rtrl_suite, dense256))
    if not peer:
        L.append("\nPyTorch was not available for this run (Debian's python3-torch); its columns are empty.")
    else:
        p0 = next((p for p in peer if p.get("batch", 1) == 1), peer[0])
        L.append(f"\nPeer: PyTorch {p0.get('torch_version', '?')} (Debian python3-torch), float32, batch 1, "
                 f"{p0.get('threads', '?')} thread(s), autograd BPTT over T = 100 steps of the same EGRU with the same mask "
                 f"and surrogate; BLAS loaded: {p0.get('blas') or 'unknown'}. Debian's torch links the BLAS that "
                 "`update-alternatives` selects (the reference netlib BLAS unless OpenBLAS is installed), so its "
                 "dense products may be slower than with a tuned BLAS: read the PyTorch column as 'what a Debian "
                 "user gets', not as PyTorch's best.")
    L.append("")
    # Size sweep.
    scale = sorted((r for r in rs if r["sweep"] == "scale" and not r["error"]), key=lambda r: r["n"])
    if scale:
        L.append("## Kernel efficiency as n grows (one thread, activity and weight density 0.05)\n")
        L.append("The floor is the time to read and write an n x P_kept matrix once (`M *= c`), measured right after "
                 "the step in the same benchmark: every exact step must stream all of M at least once.\n")
        L.append("| n | M | step | GFLOP/s of counted work | M-streaming floor | step / floor |")
        L.append("|---|---|---|---|---|---|")
        for r in scale:
            L.append(f"| {int(r['n'])} | {mb(r.get('state_bytes'))} | {ms(r['step_seconds'])} | {r['GFLOPS'] / 1e9:.1f} | "
                     f"{ms(r.get('stream_seconds'))} ({r.get('stream_GBps', 0):.0f} GB/s) | {r.get('over_floor', 0):.2f} |")
        L.append("")
    L.extend(streams_section(rs, peer))
    L.extend(stack_section(rs))
    L.extend(checkpoint_section(rs))
    L.extend(python_section(python))
    L.append("## Hidden size (weight density 0.1, activity ~0.1, T = 100 for BPTT)\n")
    algos = ["sparse_rtrl", "dense_rtrl", "snap1", "snap2", "dense_bptt", "sparse_bptt"]
    L.append("| n | " + " | ".join(algos) + " | pytorch_bptt | sparse/dense RTRL | sparse RTRL / sparse BPTT | sparse RTRL / PyTorch |")
    L.append("|---" * (len(algos) + 5) + "|")
    sizes = sorted({int(r["n"]) for r in rs if r["sweep"] == "size"})
    for n in sizes:
        cells, t = [], {}
        for a in algos:
            r = find(rs, "size", a, n=n)
            if r is None:
                cells.append("not run (quick mode)" if a == "dense_rtrl" else "–")
            elif r["error"]:
                cells.append("skipped: " + r["error"])
            else:
                t[a] = r["step_seconds"]
                cells.append(f"{ms(r['step_seconds'])}, {mb(r.get('state_bytes'))}")
        tp = torch_point(peer, n)
        cells.append(f"{ms(tp['step_seconds'])}, {mb(tp['peak_rss_bytes'])}" if tp else "–")
        L.append(f"| {n} | " + " | ".join(cells) + f" | {ratio(t.get('sparse_rtrl'), t.get('dense_rtrl'))} | "
                 f"{ratio(t.get('sparse_rtrl'), t.get('sparse_bptt'))} | {ratio(t.get('sparse_rtrl'), tp and tp['step_seconds'])} |")
    L.append("\nCells: time per step, learning-state bytes. Complexity fits (slope of log time vs log n): " + ", ".join(
        f"{a} n^{slope(*zip(*sorted((r['n'], r['step_seconds']) for r in rs if r['sweep'] == 'size' and r['algo'] == a and not r['error']))):.2f}"
        for a in algos if sum(1 for r in rs if r['sweep'] == 'size' and r['algo'] == a and not r['error']) >= 2) + ".\n")
    L.append("![time vs n](img/size_time.png) ![memory vs n](img/size_memory.png)\n")
    # Activity sweep.
    L.append("## Backward activity (n = 256, weight density 0.1)\n")
    L.append("| target | measured activity | event rate | sparse RTRL step | multiply-adds | ideal vs dense | measured vs dense RTRL |")
    L.append("|---|---|---|---|---|---|---|")
    for r in sorted((r for r in rs if r["sweep"] == "activity" and r["algo"] == "sparse_rtrl"), key=lambda r: r["act"]):
        L.append(f"| {r['act']} | {r['activity']:.3f} | {r['event_rate']:.3f} | {ms(r['step_seconds'])} | {r['fma']:.3g} | "
                 f"{r['ideal_ratio']:.0f}x | {ratio(dense256 and dense256['step_seconds'], r['step_seconds'])}x |")
    L.append("\n![time vs activity](img/activity_time.png)\n")
    L.append("## Weight density (n = 256, activity ~0.1)\n")
    L.append("| density | sparse RTRL step | influence bytes | ideal vs dense | measured vs dense RTRL | sparse BPTT step |")
    L.append("|---|---|---|---|---|---|")
    for r in sorted((r for r in rs if r["sweep"] == "density" and r["algo"] == "sparse_rtrl"), key=lambda r: -r["dens"]):
        b = find(rs, "density", "sparse_bptt", dens=r["dens"])
        L.append(f"| {r['dens']} | {ms(r['step_seconds'])} | {mb(r['state_bytes'])} | {r['ideal_ratio']:.0f}x | "
                 f"{ratio(dense256 and dense256['step_seconds'], r['step_seconds'])}x | {ms(b and b['step_seconds'])} |")
    L.append("\n![time vs density](img/density_time.png)\n")
    L.append("## Sequence length: BPTT memory grows with T, RTRL's does not (n = 256)\n")
    L.append("| T | dense BPTT step | dense BPTT history | sparse BPTT step | sparse BPTT history |")
    L.append("|---|---|---|---|---|")
    for T in sorted({int(r["T"]) for r in rs if r["sweep"] == "length"}):
        d = find(rs, "length", "dense_bptt", T=T)
        s = find(rs, "length", "sparse_bptt", T=T)
        L.append(f"| {T} | {ms(d and d['step_seconds'])} | {mb(d and d['state_bytes'])} | {ms(s and s['step_seconds'])} | {mb(s and s['state_bytes'])} |")
    rt = find(rs, "size", "sparse_rtrl", n=256)
    if rt and cross:
        L.append(f"\nSparse RTRL keeps {mb(rt['state_bytes'])} at any T; BPTT's history passes that at T = {cross:.0f} steps "
                 "(and BPTT cannot learn online without truncation).\n")
    L.append("![memory vs T](img/length_memory.png)\n")
    L.extend(mpi_section(mpi))
    with open(os.path.join(docs, "benchmarks.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print("wrote docs/benchmarks.md and", ", ".join("docs/img/" + m for m in made))


PYTHON_TARGET = 0.05  # Python-bindings issue: the Python step adds less than 5% at n = 256


def python_section(python):
    """The Python bindings' step beside its C++ twin (bench/python_overhead.py: paired rounds, fastest of each)."""
    rows = [b for b in (python or {}).get("benchmarks", []) if b.get("run_type") == "iteration"]
    if not rows:
        return []
    c = python.get("context", {})
    L = ["## Python bindings: what the Python layer adds to a step\n",
         "`rtrl.step(x)` and `rtrl.accumulate_gradient(g)` called from a Python loop (`bench/python_overhead.py`, "
         f"Python {c.get('python', '?')}, NumPy {c.get('numpy', '?')}) against the same step in C++: bench_suite's "
         "`python_twin` rows, and the same loop run in C++ inside the Python module (its own compilation of the "
         "step, without the Python layer). float64 rows against bench_suite (whose twin is double); float32 rows "
         "(the same network rounded to float32) against the module's float32 loop only. One thread, the same mask, "
         "thresholds calibrated the same way (theta below, from each side), the same inputs. The three alternate "
         "round by round and each keeps its fastest round, in process CPU time, since other processes share this machine "
         f"(load average at the start {', '.join(f'{x:.1f}' for x in c.get('load_avg', []))}; measured once).\n",
         "| n | dtype | C++ step (bench_suite) | C++ loop in the module | Python step | Python vs bench_suite | "
         "Python vs the module's loop | Python layer (probe) over the module's step | activity (C++ / Python) | "
         "theta (C++ / Python) | influence bytes |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["n"], r.get("dtype", "float64") != "float64")):
        twin = r.get("cpp_step_seconds") is not None  # float32 rows have no bench_suite twin
        cpp = ms(r["cpp_step_seconds"]) if twin else "-"
        vs_cpp = f"{100 * r['overhead']:+.1f}%" if twin else "-"
        L.append(f"| {int(r['n'])} | {r.get('dtype', 'float64')} | {cpp} | "
                 f"{ms(r['module_step_seconds'])} | {ms(r['step_seconds'])} | {vs_cpp} | "
                 f"{r['python_layer_seconds'] * 1e6:+.1f} us ({100 * r['python_layer_share']:+.1f}%) | "
                 f"{r['python_layer_probe_seconds'] * 1e6:.1f} us ({100 * r['estimated_overhead']:+.2f}%) | "
                 + (f"{r.get('cpp_activity', 0):.3f} / {r['activity']:.3f} | {r.get('cpp_theta', 0):.6g} / {r['theta']:.6g} |"
                    if twin else f"- / {r['activity']:.3f} | - / {r['theta']:.6g} |")
                 + f" {int(r['state_bytes']):,} |")
    L.append("\nTimes are process CPU time per step (step + gradient readout). The probe times the same two loops on a "
             "4-unit model, whose C++ step is about a microsecond: the difference is what the Python layer (the loop, "
             "argument conversion, dispatch, releasing and taking the GIL) costs per step, the same at every n.")
    big = next((r for r in rows if int(r["n"]) == 256 and r.get("dtype", "float64") == "float64"), None)
    if big:
        spread = "; ".join(f"{label} {ms(min(big['round_seconds'][key]))} to {ms(max(big['round_seconds'][key]))}"
                           for key, label in (("cpp", "bench_suite"), ("module", "module's loop"), ("python", "Python")))
        L.append(f"\nAt n = 256: measured {100 * big['overhead']:+.1f}% against bench_suite and "
                 f"{100 * big['python_layer_share']:+.1f}% against the module's own loop, while the rounds of each side "
                 f"spread over {spread}; the layer's cost from the probe is {100 * big['estimated_overhead']:.2f}% of the step "
                 f"(goal: < {100 * PYTHON_TARGET:.0f}%): " + ("**met**." if big["estimated_overhead"] < PYTHON_TARGET else "**not met**.")
                 + " bench_suite and the module's loop run the same C++ step without Python, so their difference is "
                 "not Python's: it comes from the process (the module is compiled -fPIC in another translation unit; where "
                 "the influence matrix lands in memory) and from the machine's load, and on this shared machine it "
                 "changes from run to run.\n")
    return L


STREAMS_TARGET = 1.8  # many-streams issue: 2 threads >= 1.8x the throughput of 1 thread


def streams_section(rs, peer):
    """Many streams over one model: sparse RTRL per stream-step on 1 and 2 threads (bench_suite's
    streams rows) next to PyTorch BPTT at batch 8 per sequence-step (torch_peer.py --batch 8)."""
    sr = {t: find(rs, "streams", "sparse_rtrl", n=256, act=0.1, dens=0.1, streams=8, threads=t) for t in (1, 2)}
    if not any(sr.values()):
        return []
    tp = {t: torch_point(peer, 256, 100, 0.1, 0.1, batch=8, threads=t) for t in (1, 2)}
    ok = {t: r for t, r in sr.items() if r and not r["error"] and r.get("stream_step_seconds")}
    sec = lambda t: ok[t]["stream_step_seconds"] if t in ok else None
    tsec = lambda t: tp[t]["stream_step_seconds"] if tp[t] and tp[t].get("stream_step_seconds") else None
    L = ["## Many streams over one model (n = 256, 8 streams, activity and weight density 0.1)\n",
         "8 independent streams (sequences) share one model's parameters; each keeps its own state and "
         "influence matrix. Time per stream-step = time of one step of all 8 streams (with the gradient "
         "readout) / 8, a throughput. The PyTorch peer runs the same 8 sequences as one batch of 8 through "
         "autograd BPTT over T = 100 steps (forward + backward / (T x 8)).\n",
         "| threads | sparse RTRL per stream-step | throughput vs 1 thread | influence memory (8 streams) | "
         "PyTorch BPTT batch 8 per sequence-step | sparse RTRL / PyTorch |",
         "|---|---|---|---|---|---|"]
    for t in (1, 2):
        r = sr[t]
        if r is None:
            L.append(f"| {t} | not run | – | – | {ms(tsec(t))} | – |")
            continue
        if r["error"]:
            L.append(f"| {t} | skipped: {r['error']} | – | – | {ms(tsec(t))} | – |")
            continue
        speed = "1x" if t == 1 else (f"{ratio(sec(1), sec(t))}x (target >= {STREAMS_TARGET:g}x)")
        pt = tp[t]
        torch_cell = f"{ms(tsec(t))}, {mb(pt['peak_rss_bytes'])} peak RSS" if pt and tsec(t) else "–"
        L.append(f"| {t} | {ms(sec(t))} | {speed} | {mb(r.get('state_bytes'))} | {torch_cell} | {ratio(sec(t), tsec(t))} |")
    notes = []
    if sec(1) and sec(2):
        s = sec(1) / sec(2)
        notes.append(f"* Two threads give {s:.2f}x the throughput of one (target: at least {STREAMS_TARGET:g}x): "
                     + ("**met**." if s >= STREAMS_TARGET else f"**not met**, {STREAMS_TARGET / s:.2f}x away.")
                     + " On a 2-core machine the second thread needs the second core free: read this together "
                     "with the load average above.")
    if tsec(1) and tsec(2):
        notes.append(f"* PyTorch's 2-thread run gives {tsec(1) / tsec(2):.2f}x the throughput of its 1-thread run "
                     "(torch.set_num_threads; its per-step products are small, B x n by n x 3n).")
    if peer and not any(tp.values()):
        notes.append("* The PyTorch results predate its batch-8 points (torch_peer.py --batch): its columns are empty.")
    elif not peer:
        notes.append("* PyTorch was not available for this run: its columns are empty.")
    if notes:
        L.append("")
        L.extend(notes)
    L.append("")
    return L


def stack_section(rs):
    """Two stacked layers (bench_suite's stack row): exact sparse RTRL through depth."""
    r = find(rs, "stack", "sparse_rtrl", layers=2, n=256, act=0.1, dens=0.1)
    if r is None:
        return []
    L = ["## Two stacked layers, exact through depth (2 x 256 units, activity and weight density 0.1)\n",
         "`Rtrl` over a 2-layer `Model`: layer 1 reads layer 0's events at the same step, and its influence "
         "matrix has columns for both layers' parameters (block lower-triangular M). The cross-layer block "
         "is fed through B^1 = dc^1/dy^0 on W^1's mask and layer 0's active units only. Thresholds are "
         "calibrated per layer, layer 1 on layer 0's events. 'Layers alone' is the sum of the two layers' "
         "steps as separate one-layer learners (no cross-layer columns): what exactness through depth costs "
         "on top.\n"]
    if r["error"]:
        return L + [f"Skipped: {r['error']}\n"]
    frac = lambda v: "–" if v is None else f"{v:.3f}"
    L += ["| step | layers alone | stack / layers alone | activity l0 / l1 | cross-layer share of time / of multiply-adds | state |",
          "|---|---|---|---|---|---|",
          f"| {ms(r.get('step_seconds'))} | {ms(r.get('layer_seconds_sum'))} | "
          f"{ratio(r.get('step_seconds'), r.get('layer_seconds_sum'))} | {frac(r.get('activity_l0'))} / "
          f"{frac(r.get('activity_l1'))} | {frac(r.get('cross_time_share'))} / {frac(r.get('cross_fma_share'))} | "
          f"{mb(r.get('state_bytes'))} |", ""]
    if r.get("activity_l1") is not None and r["activity_l1"] < 0.01:
        L += ["* Layer 1 was (almost) silent in this run: the row predates the per-layer calibration and "
              "under-states the cost of the upper layer.", ""]
    return L


def checkpoint_section(rs):
    """Checkpoints (io/checkpoint.hpp): saving and loading a 1024-unit learner (bench_suite's io row)."""
    r = find(rs, "io", "checkpoint", n=1024, act=0.05, dens=0.05)
    if r is None:
        return []
    L = ["## Checkpoints: save and load (n = 1024, activity and weight density 0.05)\n",
         "One `io::Checkpoint` of a model and its `Rtrl` learner; the n x P_kept influence matrix is most of the "
         "file. Save: a temporary file, fsync, rename. Load: the zip structure checked, every byte read and "
         "CRC-32-checked into staging copies, then swapped in. The floor is reading the file's bytes once (fread, "
         "from the page cache: the file was just written).\n"]
    if r["error"]:
        return L + [f"Skipped: {r['error']}\n"]
    sec = lambda v: "–" if v is None else (f"{v:.2f} s" if v >= 1 else ms(v))
    L += ["| file | influence matrix | save | load | reading the file once | load / read | first load of the process | "
          "first read of the file into untouched memory | first load / first read |",
          "|---|---|---|---|---|---|---|---|---|",
          f"| {mb(r.get('bytes'))} | {mb(r.get('state_bytes'))} | {sec(r.get('save_seconds'))} | {sec(r.get('load_seconds'))} | "
          f"{sec(r.get('read_seconds'))} | {ratio(r.get('load_seconds'), r.get('read_seconds'))} | "
          f"{sec(r.get('first_load_seconds'))} | {sec(r.get('first_read_seconds'))} | "
          f"{ratio(r.get('first_load_seconds'), r.get('first_read_seconds'))} |", "",
          "A load stages a second copy of the state before swapping it in (so a bad file changes nothing): the "
          "first load of a process puts that copy on memory it never touched and pays the page faults; later "
          "loads reuse the memory the previous state freed. Reading the file into memory the process never "
          "touched pays the same faults: that is the floor of a first load (the two are taken back to back, "
          "the read buffer kept alive through the load). Save includes the fsync.", ""]
    return L


def mpi_section(mpi):
    """The column-sharded learner over MPI ranks (bench_mpi, one mpiexec run per rank count)."""
    if not mpi:
        return []
    rs = [b for b in mpi["benchmarks"] if b.get("run_type") == "iteration" and b["name"].startswith("mpi/columns/")]
    if not rs:
        return []
    rs.sort(key=lambda b: b["ranks"])
    one = next((b for b in rs if b["ranks"] == 1), None)
    L = ["## Over MPI ranks: the influence matrix split by columns (n = 1024, activity and weight density 0.05)\n",
         "`mpi::ShardedRtrl` (docs/distributed.md), one thread per rank, `mpiexec -n R` on this machine: every rank "
         "runs the forward step and propagates and reads out its own columns, with no message per step. Step: the "
         "slowest rank's wall time per step; CPU: the busiest rank's CPU time per step (the work each rank does, "
         "which the wall time shows only when the machine is otherwise idle). Gather: one `MPI_Allgatherv` of the "
         "gradient (once per optimizer update). Bitwise the one-process result for any R (tests/mpi).\n",
         "| ranks | step (wall) | speed vs 1 rank | CPU per rank | M per rank (largest) | columns | gather per update |",
         "|---|---|---|---|---|---|---|"]
    for b in rs:
        L.append(f"| {int(b['ranks'])} | {ms(b['step_seconds'])} | "
                 f"{ratio(one and one['step_seconds'], b['step_seconds'])}x | {ms(b.get('cpu_seconds'))} | "
                 f"{mb(b['influence_bytes_per_rank'])} | "
                 f"{int(b['columns'])} | {ms(b['gather_seconds'])} |")
    # Issue 23's row: B = 8 streams over the ranks as stream groups (mpi::StreamGrid, grid R x 1).
    ss = sorted((b for b in mpi["benchmarks"] if b.get("run_type") == "iteration" and b["name"].startswith("mpi/streams/")),
                key=lambda b: b["ranks"])
    if ss:
        s1 = next((b for b in ss if b["ranks"] == 1), None)
        L += ["\n### Streams over ranks (n = 256, activity and density 0.1, 8 streams; target: 2 ranks >= 1.8x one)\n",
              "`mpi::StreamGrid` with R stream groups (docs/distributed.md): each rank steps its block of the 8 streams; "
              "one int exchanged per step and per read-out. Step: the slowest rank's wall time for all 8 streams; "
              "CPU: the busiest rank's CPU time; sum: one ordered gradient sum (chained, then broadcast).\n",
              "| ranks | stream step (wall) | speed vs 1 rank | CPU per rank | M per rank | ordered sum |",
              "|---|---|---|---|---|---|"]
        for b in ss:
            L.append(f"| {int(b['ranks'])} | {ms(b['stream_step_seconds'])} | "
                     f"{ratio(s1 and s1['stream_step_seconds'], b['stream_step_seconds'])}x | {ms(b.get('cpu_seconds'))} | "
                     f"{mb(b['influence_bytes_per_rank'])} | {ms(b['gradient_sum_seconds'])} |")
    load_avg = mpi.get("context", {}).get("load_avg")
    if load_avg:
        L.append(f"\nLoad average when the runs started: {', '.join(f'{v:.2f}' for v in load_avg)} (other work on the "
                 "machine's cores slows the ranks).\n")
    return L + [""]


def rtrl_row(by, name):
    """bench_rtrl's row @p name: named so since the rows' minimum time is a flag, and
    '<name>/min_time:2.000' in results written before (Google Benchmark appends a per-row MinTime)."""
    return by.get(name) or next((b for n, b in by.items() if n.startswith(name + "/min_time:")), None)


def standing(rs, peer, rtrl_suite, dense256):
    """Prose under the goal table: where we stand against the goals and what the kernel's gap is."""
    out = []
    goals = ((0.1, 0.1, "90/90", 3.0), (0.05, 0.05, "95/95", 1.0))
    for act, dens, label, goal in goals:
        sr = find(rs, "goal", "sparse_rtrl", act=act, dens=dens)
        t = torch_point(peer, 256, 100, dens, act)
        if sr and t:
            r = sr["step_seconds"] / t["step_seconds"]
            out.append(f"* {label}: sparse RTRL takes {r:.2f}x PyTorch BPTT's time per step (goal: at most {goal:g}x): "
                       + ("**met**." if r <= goal else f"**not met**, {r / goal:.2f}x away."))
    if rtrl_suite:
        by = {b["name"]: b for b in rtrl_suite.get("benchmarks", []) if b.get("run_type") == "iteration"}
        k = by.get("BM_PropagationKernel/26/27/24000")
        g = by.get("BM_EigenSgemm/512")
        f = by.get("BM_InfluenceStream/24000")
        st = rtrl_row(by, "BM_SparseRtrlStep")
        strict = rtrl_row(by, "BM_SparseRtrlStepStrictIeee")
        if k and g and f and st:
            unit = {"ms": 1e-3, "us": 1e-6, "ns": 1e-9, "s": 1.0}
            sec = lambda b: b["cpu_time"] * unit[b.get("time_unit", "ms")]
            out.append(f"* The kernel's remaining gap (bench_rtrl, CPU time): the propagation kernel on the 90/90 shape "
                       f"(26 active rows, P = 24000) runs at {k['GFLOPS'] / 1e9:.1f} GFLOP/s, "
                       f"{100 * k['GFLOPS'] / g['GFLOPS']:.0f}% of the {g['GFLOPS'] / 1e9:.0f} GFLOP/s Eigen sgemm of the same binary. "
                       f"Its inner loop loads one vector per multiply-add (each target row has its own ~7 sources), so it "
                       f"cannot reuse registers as GEMM does. Every exact step must also read and write all of M (each row "
                       f"is decayed and almost every row receives coupling): streaming M once takes {sec(f) * 1e3:.2f} ms "
                       f"here, the floor for any step at this size; the kernel takes {sec(k) / sec(f):.1f}x that floor and "
                       f"the whole step {sec(st) / sec(f):.1f}x.")
            phases = ("forward", "coupling", "propagation", "readout", "other")
            if all(p + "_seconds" in st for p in phases):
                whole = st["real_time"] * unit[st.get("time_unit", "ms")]
                parts = ", ".join(f"{name.replace('readout', 'read-out')} {st[name + '_seconds'] * 1e3:.3f} ms "
                                  f"({100 * st[name + '_seconds'] / whole:.0f}%)" for name in phases)
                out.append(f"* Where the 90/90 step's time goes (`BM_SparseRtrlStep`, wall-clock per phase, "
                           f"`RtrlOptions::time_phases`): {parts}, of {whole * 1e3:.3f} ms per iteration.")
            k256 = by.get("BM_PropagationKernel/26/27/256")
            if k256 and "fma" in st:
                # The step's roofline: streaming M once, or its counted multiply-adds at the kernel's in-cache rate.
                compute = 2.0 * st["fma"] / k256["GFLOPS"]
                roof = max(sec(f), compute)
                out.append(f"* The step against its roofline (CPU time): max(streaming M once {sec(f) * 1e3:.3f} ms, "
                           f"{st['fma'] / 1e6:.1f} M counted multiply-adds at the in-cache kernel rate "
                           f"{k256['GFLOPS'] / 1e9:.1f} GFLOP/s = {compute * 1e3:.3f} ms) = {roof * 1e3:.3f} ms; the step "
                           f"takes {sec(st) * 1e3:.3f} ms, **{sec(st) / roof:.2f}x** its roofline (target: at most 1.3x).")
            if strict:
                out.append(f"* Subnormal floats: rows of long-silent units decay into the subnormal range, where arithmetic "
                           f"is slow. The learners flush subnormals by default (include/sparse_rtrl/parallel/denormals.hpp); with strict "
                           f"IEEE (`RtrlOptions::flush_subnormals = false`) the same step, 2000 steps after a reset, takes "
                           f"{sec(strict) * 1e3:.2f} ms instead of {sec(st) * 1e3:.2f} ms (bench_rtrl). Every table here runs "
                           "with the default.")
            if peer:
                t = torch_point(peer, 256, 100, 0.1, 0.1)
                if t:
                    out.append(f"* Even at that floor, the 90/90 step would take {sec(f) / t['step_seconds']:.2f}x PyTorch's step: "
                               "beating BPTT per step at this size needs fewer bytes of M per step, not faster arithmetic "
                               "(M is what RTRL buys its online, history-free gradient with).")
    return [""] + out if out else []


def kernel_table_from(stdout):
    lines = [mark_target(l) for l in stdout.splitlines() if l.startswith("|")]
    return "\n".join(lines)


TARGET = re.compile(r"\(target (<=|>=) ([0-9]+(?:\.[0-9]+)?)x?\)")
NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def mark_target(line):
    """A table row of bench_rtrl with '(target <= x)' or '(target >= x)' gets ': **met**' or
    ': **not met**', as the prose does for its goals. The measured value is the first number of
    its cell after the last ':' ('1.771 ms / 2.053 ms: late/early 1.16 (target <= 1.15)',
    '1.49x faster on 2 (target >= 1.6)'), i.e. the number the reader sees, as printed."""
    m = TARGET.search(line)
    if not m or "met" in line[m.end():].split("|")[0]:
        return line
    cell = line[:m.start()].rsplit("|", 1)[-1]
    value = NUMBER.search(cell.rsplit(":", 1)[-1])
    if not value:
        return line
    measured, goal = float(value.group()), float(m.group(2))
    met = measured <= goal if m.group(1) == "<=" else measured >= goal
    return line[:m.end()] + (": **met**" if met else ": **not met**") + line[m.end():]


def online_crossover(rs, clock="wall"):
    """From the online/exact rows, with wall-clock ("wall") or CPU ("cpu") times: RTRL's step time
    (mean over the rows: it does not depend on t), the power-law fit c t^p of BPTT-over-history's
    time per step, the t where the two meet, and the t where BPTT's stored history outgrows RTRL's
    influence matrix."""
    ex = sorted((r for r in rs if r["sweep"] == "online" and r["algo"] == "exact" and not r["error"]), key=lambda r: r["t"])
    rk, bk = ("rtrl_step_seconds", "bptt_history_step_seconds") if clock == "wall" else \
        ("rtrl_step_cpu_seconds", "bptt_history_step_cpu_seconds")
    if not ex or any(rk not in r or bk not in r for r in ex):
        return None
    rtrl = sum(r[rk] for r in ex) / len(ex)
    p = slope([r["t"] for r in ex], [r[bk] for r in ex])
    out = dict(rows=ex, rtrl=rtrl, rtrl_min=min(r[rk] for r in ex), rtrl_max=max(r[rk] for r in ex), p=p,
               t_time=None, bptt=[r[bk] for r in ex], rtrl_each=[r[rk] for r in ex])
    if p:
        lx = [math.log(r["t"]) for r in ex]
        ly = [math.log(r[bk]) for r in ex]
        c = sum(ly) / len(ly) - p * sum(lx) / len(lx)  # log of the fit's coefficient
        out["c"] = c
        out["t_time"] = math.exp((math.log(rtrl) - c) / p)
    per_step = ex[-1]["bptt_state_bytes"] / ex[-1]["t"]
    out["bptt_bytes_per_step"] = per_step
    out["rtrl_bytes"] = ex[-1]["rtrl_state_bytes"]
    out["t_memory"] = out["rtrl_bytes"] / per_step
    return out


def online_cheap(rs):
    """The truncated BPTT rows by k, then UORO's row (or None)."""
    tb = sorted((r for r in rs if r["sweep"] == "online" and r["algo"] == "tbptt" and not r["error"]), key=lambda r: r["k"])
    u = next((r for r in rs if r["sweep"] == "online" and r["algo"] == "uoro" and not r["error"]), None)
    return tb, u


def online_section(rs, suite):
    """docs/online.md's text from the online/ rows (the plot is drawn by online_plot)."""
    x, xc = online_crossover(rs, "wall"), online_crossover(rs, "cpu")
    if not x:
        return None
    ctx = suite.get("context", {})
    load = ", ".join(f"{v:.1f}" for v in ctx.get("load_avg", []))
    L = ["# Online learning: the cost of a gradient at every step",
         "",
         "<!-- Generated by bench/report.py from the online/ rows of bench_suite (bench/run_suite.py --online). -->",
         "",
         "Online, the weights change after every step, and what a user chooses between is: exact RTRL (constant "
         "cost and memory per step), BPTT over the whole history at every step (exact, but its cost and memory grow "
         "with t), truncated BPTT (`TruncatedBptt`: cheap, biased, blind beyond its window of k steps) and UORO "
         "(`Uoro`: cheap, unbiased, noisy). One EGRU layer of n = 256 units, d = 32 inputs, weight density 0.1 "
         "(R and W), backward activity ~0.1, float, one thread.",
         "",
         "Machine: " + machine(suite),
         "",
         f"Each time is given as wall-clock time and as CPU time of the process. With the load average at {load} on "
         "2 cores, the benchmark got a fraction of a core: the wall-clock times are inflated by the other processes "
         "and noisy, the CPU times are what the work itself cost (they too are raised by the cache and memory "
         "traffic of the other processes). Ratios and crossovers are given for both.",
         "",
         "## Exact gradients at every step: RTRL against BPTT over the history",
         "",
         "At step t, BPTT over the history runs one backward pass through all t steps (event-sparse `Bptt`, exact; "
         "the loss of step t, the pass still traverses every step) plus the step's share of the forward pass. "
         "Each row times 50 RTRL steps (after 10) and a few backward passes at that t (20 at t = 100, 5 at "
         "1000, 2 at 10000), not t of them. RTRL's time per step does not depend on t: its three measurements show "
         "the machine's noise.",
         "",
         "| t | RTRL time/step, wall (CPU) | BPTT-over-history time/step, wall (CPU) | BPTT / RTRL, wall (CPU) | RTRL state | BPTT state |",
         "|---|---|---|---|---|---|"]
    for i, r in enumerate(x["rows"]):
        cpu = lambda k: f" ({ms(r[k])})" if xc else ""
        L.append(f"| {r['t']:.0f} | {ms(r['rtrl_step_seconds'])}{cpu('rtrl_step_cpu_seconds')} | "
                 f"{ms(r['bptt_history_step_seconds'])}{cpu('bptt_history_step_cpu_seconds')} | "
                 f"{ratio(r['bptt_history_step_seconds'], r['rtrl_step_seconds'])}"
                 + (f" ({ratio(r['bptt_history_step_cpu_seconds'], r['rtrl_step_cpu_seconds'])})" if xc else "")
                 + f" | {mb(r['rtrl_state_bytes'])} | {mb(r['bptt_state_bytes'])} |")
    L.append("")
    for name, y in (("wall-clock", x), ("CPU", xc)):
        if y and y["t_time"]:
            L.append(f"**Crossover in {name} time: t\\* = {y['t_time']:.0f} steps.** BPTT over the history costs "
                     f"{math.exp(y['c']) * 1e6:.3g} us x t^{y['p']:.2f} per step (least-squares fit in log-log over the "
                     f"three rows); exact sparse RTRL costs {ms(y['rtrl'])} per step (mean of the rows; they spread over "
                     f"{ms(y['rtrl_min'])} to {ms(y['rtrl_max'])}).")
            L.append("")
    L.append("From t\\* on, an exact gradient at every step is cheaper by RTRL than by BPTT over the history, and "
             "BPTT's disadvantage grows about linearly with t (the fitted exponent).")
    L.append("")
    L.append(f"**Crossover in memory: t = {x['t_memory']:.0f} steps.** BPTT stores "
             f"{x['bptt_bytes_per_step'] / 1e3:.3g} kB per step (the step caches), RTRL's influence matrix is "
             f"{mb(x['rtrl_bytes'])} at any t.")
    L.append("")
    L.append("![time and memory per step against t](img/online_cost.png)")
    L.append("")
    L.append("## The cheap online learners (time and memory per step, any t)")
    L.append("")
    L.append("One iteration = step + the gradient of that step's loss (truncated BPTT: form `every_step`, the loss "
             "back-propagated through the last k steps; 400 steps timed, 100 for k = 100, after a warm-up that fills "
             "the window). Exact RTRL's row is the mean of the rows above.")
    L.append("")
    L.append("| learner | time/step, wall (CPU) | / exact RTRL, wall (CPU) | state | gradient |")
    L.append("|---|---|---|---|---|")
    tb, u = online_cheap(rs)
    def row(label, r, what):
        c = r.get("cpu_seconds")
        return (f"| {label} | {ms(r['step_seconds'])}" + (f" ({ms(c)})" if c is not None else "") +
                f" | {ratio(r['step_seconds'], x['rtrl'])}" + (f" ({ratio(c, xc['rtrl'])})" if c is not None and xc else "") +
                f" | {mb(r['state_bytes'])} | {what} |")
    for r in tb:
        L.append(row(f"truncated BPTT, k = {r['k']:.0f}", r, "biased: blind beyond k steps"))
    if u:
        L.append(row("UORO", u, "unbiased, noisy (rank one)"))
    L.append(f"| exact sparse RTRL | {ms(x['rtrl'])}" + (f" ({ms(xc['rtrl'])})" if xc else "") +
             f" | 1 | {mb(x['rtrl_bytes'])} | exact |")
    L.append("")
    return "\n".join(L) + "\n"


def online_plot(rs, img):
    x, xc = online_crossover(rs, "wall"), online_crossover(rs, "cpu")
    if not x:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(img, exist_ok=True)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    ts = [r["t"] for r in x["rows"]]
    tb, u = online_cheap(rs)
    for y, style, name, key in ((x, "-", "wall", "step_seconds"), (xc, "--", "CPU", "cpu_seconds")):
        if not y:
            continue
        a.loglog(ts, y["bptt"], marker="o", linestyle=style, color="C0", label=f"BPTT over the history ({name})")
        a.axhline(y["rtrl"], color="C2", linestyle=style, label=f"exact sparse RTRL ({name})")
        if y["t_time"]:
            a.axvline(y["t_time"], color="C3", linestyle=style, label=f"t* = {y['t_time']:.0f} ({name})")
        for i, r in enumerate(tb):
            if key in r:
                a.axhline(r[key], color=f"C{4 + i}", linestyle=style, linewidth=0.8,
                          label=f"truncated BPTT k = {r['k']:.0f} ({name})")
        if u and key in u:
            a.axhline(u[key], color="C8", linestyle=style, linewidth=0.8, label=f"UORO ({name})")
    a.set_xlabel("step t (n = 256, activity and weight density 0.1)")
    a.set_ylabel("time per step [s]")
    a.grid(True, which="both", alpha=0.3)
    a.legend(fontsize=5.5, ncol=2)
    b.loglog(ts, [r["bptt_state_bytes"] for r in x["rows"]], marker="o", label="BPTT history")
    b.axhline(x["rtrl_bytes"], color="C2", label="RTRL influence matrix")
    b.axvline(x["t_memory"], color="C3", linestyle="--", label=f"t = {x['t_memory']:.0f}")
    if u:
        b.axhline(u["state_bytes"], color="C8", linestyle="-.", label="UORO pair")
    for i, r in enumerate(tb):
        b.axhline(r["state_bytes"], color=f"C{4 + i}", linestyle="-.", label=f"truncated BPTT k = {r['k']:.0f} window")
    b.set_xlabel("step t")
    b.set_ylabel("learning-state bytes")
    b.grid(True, which="both", alpha=0.3)
    b.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(img, "online_cost.png"), dpi=110)
    plt.close(fig)


def write_online(mode, results=RESULTS, docs=DOCS):
    """docs/online.md and docs/img/online_cost.png from results/online_<mode>.json (run_suite.py
    --online), else from the online/ rows of the suite's own file; nothing when neither has them."""
    files = result_files(results, mode)
    path = files["online"] if os.path.exists(files["online"]) else files["suite"]
    if not os.path.exists(path):
        return False
    suite = load(path)
    rs = rows(suite)
    text = online_section(rs, suite)
    if not text:
        return False
    online_plot(rs, os.path.join(docs, "img"))
    with open(os.path.join(docs, "online.md"), "w") as f:
        f.write(text)
    return True


def result_files(results, mode):
    """The files one run writes into @p results: the runner writes them, the report reads them."""
    return dict(suite=os.path.join(results, f"suite_{mode}.json"),
                rtrl=os.path.join(results, f"rtrl_{mode}.json"),
                rtrl_txt=os.path.join(results, f"rtrl_{mode}.txt"),
                torch=os.path.join(results, f"torch_{mode}.json"),
                python=os.path.join(results, f"python_{mode}.json"),
                online=os.path.join(results, f"online_{mode}.json"),
                mpi=os.path.join(results, f"mpi_{mode}.json"))


def write_report(mode, results=RESULTS, docs=DOCS):
    """Reads a run's files from @p results and writes @p docs/benchmarks.md and @p docs/img/*.png."""
    files = result_files(results, mode)
    suite = load(files["suite"])
    peer = load(files["torch"]) if os.path.exists(files["torch"]) else None
    kernel = kernel_table_from(open(files["rtrl_txt"]).read()) if os.path.exists(files["rtrl_txt"]) else ""
    rtrl_suite = load(files["rtrl"]) if os.path.exists(files["rtrl"]) else None
    python = load(files["python"]) if os.path.exists(files["python"]) else None
    mpi = load(files["mpi"]) if os.path.exists(files["mpi"]) else None
    report(mode, suite, kernel, peer, rtrl_suite, python, docs, mpi)
    write_online(mode, results, docs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true")
    g.add_argument("--full", action="store_true")
    ap.add_argument("--results", default=RESULTS, help="directory of the JSON results (default bench/results)")
    ap.add_argument("--docs", default=DOCS, help="directory for benchmarks.md and img/ (default docs)")
    a = ap.parse_args()
    write_report("full" if a.full else "quick", os.path.abspath(a.results), os.path.abspath(a.docs))


if __name__ == "__main__":
    main()
