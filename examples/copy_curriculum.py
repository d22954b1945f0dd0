#!/usr/bin/python3
"""Runs the copy-task grid of examples/copy_curriculum.cpp (methods x EGRU/GRU mode x recurrent
density x seeds, the same data budget for every run), writes every run's curve to one JSON file and
draws docs/img/copy_task_steps.png (L reached vs data steps), docs/img/copy_task_time.png (L vs
wall-clock seconds) and docs/img/copy_task_cpu.png (L vs the run's CPU seconds), and prints the
tables of docs/copy_task.md.

Usage (from the repository root, after building the example, e.g. in Release:
    cmake -S . -B build/rel -DCMAKE_BUILD_TYPE=Release -DSPARSE_RTRL_BUILD_EXAMPLES=ON -DSPARSE_RTRL_NATIVE=ON
    cmake --build build/rel --target copy_curriculum -j2):
    /usr/bin/python3 examples/copy_curriculum.py [--build build/rel] [--steps N] [--seeds 1,2,3]
        [--methods rtrl,snap1,snap2,uoro,tbptt:8,tbptt:16:blocks] [--modes egru,gru]
        [--densities 0.25,0.1] [--jobs 2] [--json bench/results/copy_curriculum.json] [--img docs/img]
        [--prefix copy_task] [--append] [--no-run]

A method is rtrl, snap1, snap2, uoro, tbptt:K (truncated BPTT through the last K steps, an update
at every recall step) or tbptt:K:blocks (truncated BPTT in blocks of K steps, one update per block).
--append adds the runs to the JSON already there (a run of the same method, mode, density and seed
replaced), e.g. to add methods to a grid run before; every batch's machine record is kept.

Every run is started with `nice -n 19` (the machine is shared); --jobs runs that many at once
(each run is single-threaded). --no-run only redraws the plots and the table from the JSON.
matplotlib is Debian's python3-matplotlib (cmake/install_deps.sh --plots); without it the JSON and
the table are still written and the plots are skipped with a message.
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ["rtrl", "snap1", "snap2", "uoro", "tbptt"]
BASE_LABEL = {"rtrl": "exact sparse RTRL", "snap1": "SnAp-1", "snap2": "SnAp-2", "uoro": "UORO"}
BASE_COLOR = {"rtrl": "black", "snap1": "tab:orange", "snap2": "tab:blue", "uoro": "tab:red"}
TBPTT_COLORS = ["tab:green", "tab:olive", "tab:purple", "tab:brown", "tab:cyan"]


def parse_spec(spec):
    """'tbptt:16:blocks' -> ('tbptt', ['--k', '16', '--blocks']); checks the spelling."""
    parts = spec.split(":")
    if parts[0] in BASE_LABEL and len(parts) == 1:
        return parts[0], []
    if parts[0] == "tbptt" and len(parts) in (2, 3) and parts[1].isdigit() and int(parts[1]) >= 1 and \
            (len(parts) == 2 or parts[2] == "blocks"):
        return "tbptt", ["--k", parts[1]] + (["--blocks"] if len(parts) == 3 else [])
    raise ValueError("unknown method '%s' (rtrl, snap1, snap2, uoro, tbptt:K or tbptt:K:blocks)" % spec)


def label(spec):
    if spec in BASE_LABEL:
        return BASE_LABEL[spec]
    parts = spec.split(":")
    if len(parts) == 3:
        return "truncated BPTT, blocks of %s (update per block)" % parts[1]
    return "truncated BPTT, k = %s (update every step)" % parts[1]


def order(specs):
    def key(spec):
        parts = spec.split(":")
        return (METHODS.index(parts[0]), len(parts), int(parts[1]) if len(parts) > 1 else 0)
    return sorted(set(specs), key=key)


def color(spec, specs):
    if spec in BASE_COLOR:
        return BASE_COLOR[spec]
    tb = [s for s in order(specs) if s.startswith("tbptt")]
    return TBPTT_COLORS[tb.index(spec) % len(TBPTT_COLORS)]


def csv(kind):
    return lambda text: [kind(v) for v in text.split(",") if v]


def machine():
    info = {"load_before": os.getloadavg()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU family", "CPU(s)", "Model"):
                info[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        info["lscpu"] = "unavailable: %s" % e
    return info


def run_one(binary, cfg, extra):
    fd, path = tempfile.mkstemp(suffix=".json", prefix="copy_curriculum_")
    os.close(fd)
    method, method_args = parse_spec(cfg["spec"])
    cmd = ["nice", "-n", "19", binary, "--method", method] + method_args + ["--mode", cfg["mode"], "--density",
           str(cfg["density"]), "--seed", str(cfg["seed"]), "--steps", str(cfg["steps"]), "--json", path] + extra
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        os.unlink(path)
        raise RuntimeError("%s failed (%d):\n%s%s" % (" ".join(cmd), proc.returncode, proc.stdout, proc.stderr))
    with open(path) as f:
        record = json.load(f)
    os.unlink(path)
    record["process_seconds"] = wall
    record["spec"] = cfg["spec"]
    record["summary"] = [l for l in proc.stdout.splitlines() if l.startswith("final:")][0]
    print(record["summary"], flush=True)
    return record


def level_at(curve, x, key):
    """L reached at x (a step count or seconds) on one run's curve [(step, seconds, L), ...]."""
    i = {"step": 0, "seconds": 1, "cpu": 3}[key]
    L = 1
    for point in curve:
        if point[i] <= x:
            L = point[2]
    return L


def groups(runs):
    out = {}
    for r in runs:
        out.setdefault((r["mode"], r["density"], r["spec"]), []).append(r)
    return out


def table(doc):
    """Two markdown tables: L reached per seed, and the mean wall / CPU seconds of a run."""
    runs = doc["runs"]
    g = groups(runs)
    modes = [m for m in ("egru", "gru") if any(r["mode"] == m for r in runs)]
    densities = sorted({r["density"] for r in runs}, reverse=True)
    methods = order(r["spec"] for r in runs)
    head = ["| method | " + " | ".join("%s, %d%% of R pruned" % ("EGRU" if m == "egru" else "GRU mode", round(100 * (1 - d)))
                                      for m in modes for d in densities) + " |",
            "|---|" + "---|" * (len(modes) * len(densities))]
    reached, cost = list(head), list(head)
    for method in methods:
        cells_L, cells_t = [], []
        for mode in modes:
            for d in densities:
                rs = sorted(g.get((mode, d, method), []), key=lambda r: r["seed"])
                if not rs:
                    cells_L.append("-")
                    cells_t.append("-")
                    continue
                Ls = [r["L"] for r in rs]
                cells_L.append("%.1f (%s)" % (sum(Ls) / len(Ls), ", ".join(str(L) for L in Ls)))
                wall = sum(r["seconds"] for r in rs) / len(rs)
                cpu = [r.get("cpu_seconds") for r in rs]
                cells_t.append("%.1f s / %s" % (wall, "%.1f s" % (sum(cpu) / len(cpu)) if None not in cpu else "-"))
        reached.append("| %s | %s |" % (label(method), " | ".join(cells_L)))
        cost.append("| %s | %s |" % (label(method), " | ".join(cells_t)))
    # Per datum: the data steps at which L first reached 6 and 8 (mean over the seeds that did).
    steps_to = list(head)
    steps_to[0] = steps_to[0].replace("| method |", "| method (steps to L = 6; to L = 8) |")
    for method in methods:
        cells = []
        for mode in modes:
            for d in densities:
                rs = g.get((mode, d, method), [])
                parts = []
                for target in (6, 8):
                    hit = [next(p[0] for p in r["curve"] if p[2] >= target) for r in rs if r["L"] >= target]
                    parts.append("-" if not hit else "%.0fk%s" % (sum(hit) / len(hit) / 1000.0,
                                                                   "" if len(hit) == len(rs) else " (%d of %d)" % (len(hit), len(rs))))
                cells.append("; ".join(parts))
        steps_to.append("| %s | %s |" % (label(method), " | ".join(cells)))
    return ("L reached after %d data steps, mean (seeds %s):\n\n%s\n\nWall / CPU seconds per run (mean over seeds):\n\n%s"
            % (runs[0]["steps"], ", ".join(str(s) for s in sorted({r["seed"] for r in runs})),
               "\n".join(reached), "\n".join(cost))
            + "\n\nData steps until L first reached 6 and 8 (mean over the seeds that reached it):\n\n" + "\n".join(steps_to))


def plots(doc, img, prefix):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("copy_curriculum.py: matplotlib is not installed (cmake/install_deps.sh --plots): no plots", file=sys.stderr)
        return []
    runs = doc["runs"]
    g = groups(runs)
    modes = [m for m in ("egru", "gru") if any(r["mode"] == m for r in runs)]
    densities = sorted({r["density"] for r in runs}, reverse=True)
    methods = order(r["spec"] for r in runs)
    os.makedirs(img, exist_ok=True)
    made = []
    for key, xlabel, fname in (("step", "data steps", prefix + "_steps.png"),
                               ("seconds", "wall-clock seconds (one core each, machine shared)", prefix + "_time.png"),
                               ("cpu", "CPU seconds of the run's process", prefix + "_cpu.png")):
        fig, axes = plt.subplots(len(modes), len(densities), figsize=(max(7.5, 5 * len(densities)), 3.6 * len(modes) + 0.4),
                                 squeeze=False, sharey=True)
        for a, mode in enumerate(modes):
            for b, d in enumerate(densities):
                ax = axes[a][b]
                for method in methods:
                    rs = g.get((mode, d, method), [])
                    if not rs:
                        continue
                    total = {"step": "steps", "seconds": "seconds", "cpu": "cpu_seconds"}[key]
                    end = max(r[total] for r in rs)
                    xs = [end * k / 400.0 for k in range(401)]
                    for r in rs:  # each seed; its own curve ends where the run ended
                        stop = r[total]
                        xr = [x for x in xs if x <= stop] + [stop]
                        ax.step(xr, [level_at(r["curve"], x, key) for x in xr], where="post",
                                color=color(method, methods), alpha=0.3 if key == "step" else 0.75,
                                lw=0.8 if key == "step" else 1.2)
                    if key == "step":  # the mean over seeds (same data budget: same x range)
                        mean = [sum(level_at(r["curve"], x, key) for r in rs) / len(rs) for x in xs]
                        ax.plot(xs, mean, color=color(method, methods), lw=2, label=label(method))
                    else:
                        ax.plot([], [], color=color(method, methods), lw=2, label=label(method))
                ax.set_title("%s, %d%% of R pruned" % ("EGRU" if mode == "egru" else "GRU mode", round(100 * (1 - d))))
                ax.set_xlabel(xlabel)
                if b == 0:
                    ax.set_ylabel("L reached")
                ax.grid(alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
        fig.suptitle("Copy task with curriculum, n = %d, %d seeds (thin: each seed%s)" %
                     (runs[0]["units"], len({r["seed"] for r in runs}), "; thick: mean" if key == "step" else ""),
                     fontsize=10)
        fig.tight_layout(rect=(0, 0.07 if len(modes) > 1 else 0.17, 1, 1))
        path = os.path.join(img, fname)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "rel"))
    ap.add_argument("--steps", type=int, default=300000)
    ap.add_argument("--seeds", type=csv(int), default=[1, 2, 3])
    ap.add_argument("--methods", type=csv(str), default=["rtrl", "snap1", "snap2", "uoro", "tbptt:8", "tbptt:16:blocks"])
    ap.add_argument("--modes", type=csv(str), default=["egru", "gru"])
    ap.add_argument("--densities", type=csv(float), default=[0.25, 0.1])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--extra", default="", help="more arguments for every run, e.g. '--units 16'")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "copy_curriculum.json"))
    ap.add_argument("--img", default=os.path.join(ROOT, "docs", "img"))
    ap.add_argument("--prefix", default="copy_task", help="plot file names: PREFIX_steps.png, _time.png, _cpu.png")
    ap.add_argument("--append", action="store_true", help="add the runs to those in --json")
    ap.add_argument("--no-run", action="store_true", help="only redraw the plots and the table from --json")
    a = ap.parse_args()

    if not a.no_run:
        binary = os.path.join(a.build, "examples", "copy_curriculum")
        if not os.access(binary, os.X_OK):
            sys.exit("copy_curriculum.py: no program %s (build the copy_curriculum target)" % binary)
        for m in a.methods:
            try:
                parse_spec(m)
            except ValueError as e:
                sys.exit("copy_curriculum.py: %s" % e)
        for mode in a.modes:
            if mode not in ("egru", "gru"):
                sys.exit("copy_curriculum.py: unknown mode '%s' (egru, gru)" % mode)
        info = machine()
        grid = [{"spec": m, "mode": mode, "density": d, "seed": s, "steps": a.steps}
                for mode in a.modes for d in a.densities for s in a.seeds for m in a.methods]
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
            runs = list(pool.map(lambda cfg: run_one(binary, cfg, a.extra.split()), grid))
        info["grid_wall_seconds"] = time.monotonic() - t0
        info["load_after"] = os.getloadavg()
        info["jobs"] = a.jobs
        info["runs"] = len(runs)
        info["methods"] = a.methods
        doc = {"machine": [info], "runs": runs}
        if a.append and os.path.exists(a.json):
            with open(a.json) as f:
                old = json.load(f)
            key = lambda r: (r["spec"], r["mode"], r["density"], r["seed"])
            new_keys = {key(r) for r in runs}
            doc = {"machine": old["machine"] + [info], "runs": [r for r in old["runs"] if key(r) not in new_keys] + runs}
        os.makedirs(os.path.dirname(a.json), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
        print("wrote %s (%d runs, %.0f s wall)" % (a.json, len(runs), info["grid_wall_seconds"]))
    with open(a.json) as f:
        doc = json.load(f)
    for path in plots(doc, a.img, a.prefix):
        print("wrote", path)
    for info in doc["machine"]:
        print(json.dumps(info))
    print(table(doc))


if __name__ == "__main__":
    main()
