#!/usr/bin/env python3
"""The cost model of docs/distributed.md ("Planning past this machine"), from bench_mpi's rows.

Reads the JSON files of `mpiexec -n R bench_mpi --quick --benchmark_out=rR.json` for the rank
counts measured here, calibrates the model on the R = 1 rows, checks it against every measured
rank count (R > cores is oversubscribed: R ranks share the cores), and prints the predicted step
time and memory per rank for n = 2048 ... 8192 on R = 1 ... 256 ranks under stated network
assumptions.

    python3 bench/mpi_cost_model.py r1.json r2.json r3.json r4.json [--cores 2]
        [--bandwidth 12.5e9] [--latency 2e-6] [--density 0.05] [--inputs 32]

The model (one stream, column shards; per step):
    T_step(R) = T_rep(n) + P(n) * t_col(n) / R
    T_rep(n)  = (forward + coupling) seconds at n = 1024, scaled by (n / 1024)^2: the forward
                step and the coupling build every rank repeats (O(nnz of W and R))
    t_col(n)  = (propagation + read-out + other) seconds per column at n = 1024, scaled by
                (n / 1024) * (1 + phi * (n / 1024 - 1)): a column has n rows (memory-bound
                streaming of M), and phi = (counted multiply-adds per stored entry at n = 1024)
                grows with n at fixed activity and density (coupling nonzeros per row ~ a d n)
    P(n)      = 3 n (n + inputs) density + 7 n     (kept weights, biases, thresholds)
    memory/rank = 4 n P(n) / R                      (float; + one panel of slack)
    gather    = latency * ceil(log2 R) + 4 P (R - 1) / R / bandwidth    (per optimizer update)
    ordered sum over G stream groups = (G - 1) * (latency + 4 chunk / bandwidth)
                + 4 P / bandwidth + broadcast (latency * ceil(log2 G) + 4 P / bandwidth)
"""
import argparse
import json
import math


def rows(path):
    with open(path) as f:
        data = json.load(f)
    return {b["name"].split("/iterations")[0]: b for b in data["benchmarks"]}


def columns_row(r, ranks):
    return r[f"mpi/columns/n:1024/act:0.05/dens:0.05/ranks:{ranks}"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--bandwidth", type=float, default=12.5e9, help="bytes/s (100 Gb/s)")
    ap.add_argument("--latency", type=float, default=2e-6, help="seconds")
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--inputs", type=int, default=32)
    a = ap.parse_args()

    measured = {}
    for path in a.files:
        r = rows(path)
        for name, b in r.items():
            if name.startswith("mpi/columns/"):
                measured[int(b["ranks"])] = (r, b)
    r1 = measured[1][1]
    n0 = 1024
    P0 = r1["columns"]
    rep = r1["forward_seconds"] + r1["coupling_seconds"]
    cols = r1["propagation_seconds"] + r1["readout_seconds"] + r1["other_seconds"]
    # The phase timers read the wall clock: on a loaded machine a rank gets part of a core, and
    # every phase is stretched alike. The process CPU clock (cpu_seconds) is what the rank
    # computed; calibrate on it (on a quiet machine the two agree).
    scale = r1["cpu_seconds"] / r1["step_seconds"] if "cpu_seconds" in r1 else 1.0
    rep *= scale
    cols *= scale
    t_col0 = cols / P0
    phi = r1["fma"] / r1["iterations"] / (n0 * P0) if "fma" in r1 else 0.0
    print(f"calibration (R = 1, n = 1024, act = dens = 0.05, P = {P0:.0f}):")
    print(f"  CPU per step {r1.get('cpu_seconds', float('nan')) * 1e3:.1f} ms of {r1['step_seconds'] * 1e3:.1f} ms wall "
          f"(the rank had {scale * 100:.0f}% of a core); phases scaled by that:")
    print(f"  step {r1['step_seconds'] * scale * 1e3:.1f} ms = repeated (forward {r1['forward_seconds'] * scale * 1e3:.2f} + coupling "
          f"{r1['coupling_seconds'] * scale * 1e3:.2f}) {rep * 1e3:.2f} ms + per-column parts {cols * 1e3:.1f} ms "
          f"(t_col = {t_col0 * 1e9:.0f} ns per column, {t_col0 / n0 * 1e12:.0f} ps per stored entry); "
          f"multiply-adds per stored entry phi = {phi:.3f}")

    print("\ncheck against the measured rank counts (CPU: a rank's own work, rep + cols / R; wall: also "
          "R > cores oversubscribed and the R = 1 run's share of a core, which a loaded machine does not keep):")
    print("| R | measured step, wall (ms) | predicted (ms) | ratio | CPU per step, busiest rank (ms) | predicted CPU (ms) | ratio | gather (us) | M/rank (MB) | predicted (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for R in sorted(measured):
        b = measured[R][1]
        share = max(1.0, R / a.cores)
        pred = (rep + cols / R) * share / scale  # wall, if the load stayed as at R = 1
        mem = 4 * n0 * P0 / R
        # A rank's own work, whatever the load: the repeated part plus its share of the columns.
        cpu_pred = rep + cols / R
        cpu = b.get("cpu_seconds", float("nan"))
        print(f"| {R} | {b['step_seconds'] * 1e3:.1f} | {pred * 1e3:.1f} | {b['step_seconds'] / pred:.2f} | "
              f"{cpu * 1e3:.1f} | {cpu_pred * 1e3:.1f} | {cpu / cpu_pred:.2f} | "
              f"{b['gather_seconds'] * 1e6:.0f} | {b['influence_bytes_per_rank'] / 1e6:.0f} | {mem / 1e6:.0f} |")

    print("\nloopback collectives (median of 21 calls, slowest rank):")
    for R in sorted(measured):
        r = measured[R][0]
        parts = []
        for values in (1, 1024, 1048576):
            for kind in ("allgatherv", "ordered_sum"):
                key = f"mpi/{kind}/values:{values}/ranks:{R}"
                if key in r:
                    parts.append(f"{kind} {values * 4} B: {r[key]['call_seconds'] * 1e6:.1f} us")
        print(f"  R = {R}: " + "; ".join(parts))
    for R in sorted(measured):
        key = f"mpi/streams/n:256/act:0.1/dens:0.1/streams:8/ranks:{R}"
        r = measured[R][0]
        if key in r:
            print(f"  streams row R = {R}: stream_step_seconds {r[key]['stream_step_seconds'] * 1e3:.1f} ms, "
                  f"cpu_seconds {r[key].get('cpu_seconds', float('nan')) * 1e3:.1f} ms, "
                  f"gradient_sum_seconds {r[key]['gradient_sum_seconds'] * 1e6:.0f} us, "
                  f"M/rank {r[key]['influence_bytes_per_rank'] / 1e6:.0f} MB")

    print(f"\npredicted, one stream, column shards, density {a.density}, activity 0.05, float; network "
          f"{a.bandwidth * 8 / 1e9:.0f} Gb/s, {a.latency * 1e6:.0f} us; one rank per core as measured here:")
    print("| n | P_kept | M (GB) | R | step (s) | of which repeated | M/rank (GB) | gather per update (ms) | speed-up vs R = 1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in (2048, 4096, 8192):
        P = 3 * n * (n + a.inputs) * a.density + 7 * n
        s = n / n0
        t_rep = rep * s * s
        t_col = t_col0 * s * (1 + phi * (s - 1))
        T1 = t_rep + P * t_col
        for R in (1, 4, 16, 64, 256):
            T = t_rep + P * t_col / R
            gather = a.latency * math.ceil(math.log2(R)) + 4 * P * (R - 1) / R / a.bandwidth if R > 1 else 0.0
            print(f"| {n} | {P / 1e6:.2f} M | {4 * n * P / 1e9:.0f} | {R} | {T:.3g} | {t_rep / T * 100:.0f}% | "
                  f"{4 * n * P / R / 1e9:.2f} | {gather * 1e3:.2f} | {T1 / T:.0f}x |")
        print(f"| {n} | | | R* = {P * t_col / t_rep:.0f} | (ranks at which the repeated step equals the split part) | | | | |")


if __name__ == "__main__":
    main()
