#!/usr/bin/python3
"""Runs the benchmark suite and writes its results to bench/results/*.json (and bench_rtrl's console
output to rtrl_<mode>.txt), then has bench/report.py turn them into docs/benchmarks.md and
docs/img/*.png.

Usage (from the repository root, after `bash cmake/dev.sh bench`, which calls this):
    /usr/bin/python3 bench/run_suite.py [--quick | --full] [--build build/bench] [--no-run] [--online]
                                        [--results DIR] [--docs DIR]

--online runs only bench_suite's online/ rows (online learning: exact RTRL against BPTT over the
history, truncated BPTT, UORO; under a minute) into online_<mode>.json and writes docs/online.md
with docs/img/online_cost.png.

--quick (default) takes a few minutes on 2 cores, --full longer; --no-run runs nothing and only
rebuilds the report from the JSON already in bench/results (the same as bench/report.py alone).
Every number in the report comes from those JSON files.
--results and --docs redirect where the JSON is read/written and where benchmarks.md and img/ go
(default bench/results and docs), e.g. to rebuild a trial report without touching committed files:
    /usr/bin/python3 bench/run_suite.py --no-run --docs /tmp/report
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import report

ROOT = report.ROOT


def run(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true")
    g.add_argument("--full", action="store_true")
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "bench"))
    ap.add_argument("--no-run", action="store_true", help="only rebuild the report from bench/results")
    ap.add_argument("--online", action="store_true",
                    help="run only bench_suite's online/ rows (under a minute) into online_<mode>.json and write "
                         "docs/online.md")
    ap.add_argument("--results", default=report.RESULTS, help="directory of the JSON results (default bench/results)")
    ap.add_argument("--docs", default=report.DOCS, help="directory for benchmarks.md and img/ (default docs)")
    a = ap.parse_args()
    results, docs = os.path.abspath(a.results), os.path.abspath(a.docs)
    mode = "full" if a.full else "quick"
    os.makedirs(results, exist_ok=True)
    files = report.result_files(results, mode)
    suite_json, rtrl_json, rtrl_txt = files["suite"], files["rtrl"], files["rtrl_txt"]
    torch_json, python_json = files["torch"], files["python"]
    exe = lambda name: os.path.join(a.build, "bench", name)
    if a.online:
        if not a.no_run:
            if not os.path.exists(exe("bench_suite")):
                sys.exit(f"run_suite.py: {exe('bench_suite')} not found: build first with `bash cmake/dev.sh bench`")
            run([exe("bench_suite"), f"--{mode}", "--benchmark_filter=^online/", f"--benchmark_out={files['online']}",
                 "--benchmark_out_format=json"])
        if not report.write_online(mode, results, docs):
            sys.exit(f"run_suite.py: no online/ rows in {files['online']}")
        return
    if not a.no_run:
        for name in ("bench_rtrl", "bench_suite"):
            if not os.path.exists(exe(name)):
                sys.exit(f"run_suite.py: {exe(name)} not found: build first with `bash cmake/dev.sh bench`")
        out = run([exe("bench_rtrl"), f"--benchmark_out={rtrl_json}", "--benchmark_out_format=json", "--benchmark_color=false",
                   "--benchmark_counters_tabular=true"],
                  capture_output=True, text=True).stdout
        with open(rtrl_txt, "w") as f:
            f.write(out)
        run([exe("bench_suite"), f"--{mode}", f"--benchmark_out={suite_json}", "--benchmark_out_format=json"])
        if os.path.exists(torch_json):
            os.remove(torch_json)
        peer_cmd = ["/usr/bin/python3", os.path.join(ROOT, "bench", "torch_peer.py"), "--sweep", "--out", torch_json]
        if mode == "quick":
            peer_cmd.append("--quick")
        run(peer_cmd)
        # The MPI rows (docs/distributed.md), when the bench build has bench_mpi (SPARSE_RTRL_BUILD_MPI):
        # one mpiexec run per rank count, merged into one file. Open MPI reads the environment: more
        # ranks than cores, and root (containers), allowed; other implementations ignore it.
        mpi_json = files["mpi"]
        if os.path.exists(mpi_json):
            os.remove(mpi_json)
        mpiexec = shutil.which("mpiexec")
        if os.path.exists(exe("bench_mpi")) and mpiexec:
            env = dict(os.environ, OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_ALLOW_RUN_AS_ROOT="1",
                       OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
            merged = None
            for ranks in (1, 2):
                part = os.path.join(results, f"mpi_ranks{ranks}_{mode}.json")
                run([mpiexec, "-n", str(ranks), exe("bench_mpi"), f"--{mode}", f"--benchmark_out={part}",
                     "--benchmark_out_format=json"], env=env)
                with open(part) as f:
                    data = json.load(f)
                os.remove(part)
                if merged is None:
                    merged = data
                else:
                    merged["benchmarks"].extend(data["benchmarks"])
            with open(mpi_json, "w") as f:
                json.dump(merged, f, indent=1)
        else:
            print(f"run_suite.py: {exe('bench_mpi')} or mpiexec not found; the MPI rows are left out", flush=True)
        # The Python bindings' rows, when the bench build has the module (SPARSE_RTRL_BUILD_PYTHON).
        package = os.path.join(a.build, "python")
        if os.path.isdir(os.path.join(package, "sparse_rtrl")):
            run(["/usr/bin/python3", os.path.join(ROOT, "bench", "python_overhead.py"), "--bench-suite", exe("bench_suite"),
                 "--out", python_json, f"--{mode}"], env=dict(os.environ, PYTHONPATH=package))
        else:
            print(f"run_suite.py: {package}/sparse_rtrl not built; the Python rows are left out", flush=True)
    report.write_report(mode, results, docs)


if __name__ == "__main__":
    main()
