#!/usr/bin/python3
"""The PyTorch peer of the benchmark report: BPTT of the same EGRU with torch autograd, CPU, batch 1
(and batch 8 for the many-streams table).

This is what a user trains an EGRU with today, so the report can show where exact sparse RTRL
stands against it. The cell follows docs/model.md exactly (gate order r, z, g as torch.nn.GRU;
H(0) = 0; triangular surrogate; state c carried; y = H(c - theta) c; soft reset h = c - o theta).

Usage (Debian's interpreter, which has python3-torch):
  /usr/bin/python3 bench/torch_peer.py --check tests/data/golden/egru-n7-d5-T50
      forward outputs and autograd gradients vs one golden folder, float64; exit 1 on mismatch
  /usr/bin/python3 bench/torch_peer.py --point --n 256 --d 32 --T 100 --density 0.1 --activity 0.1 [--batch B]
      time forward + backward over one sequence (B independent sequences, batched); print one JSON line
  /usr/bin/python3 bench/torch_peer.py --sweep --out bench/results/torch_quick.json [--quick]
      the report's points, each in a fresh process (so peak memory is per point); a JSON list

Timings in the JSON (elapsed = one forward + backward, averaged over the repetitions):
  step_seconds         elapsed / T: the time per step of the whole batch (for B = 1, per step of the
                       one sequence, as the batch-1 tables use it; for B > 1, per batched step, i.e.
                       one step of all B sequences)
  stream_step_seconds  elapsed / (T * B): the time per sequence-step, the unit of bench_suite's
                       streams rows (their stream_step_seconds): a throughput, not a latency
With --batch B the B sequences (inputs seeded 5, 6, ..., 5 + B - 1) run through the same network
at once: X is B x T x d, the states B x n, and each step is one batched B x n by n x 3n product.
--batch 1 is exactly the unbatched computation (X is T x d), as before the option existed.

Without torch: one line on stderr, exit status 0 for --sweep (no file written: the report treats
the peer as absent) and 2 for the other modes.
"""
import argparse
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
import time

torch = None  # imported in main(), so that a missing torch gives one clean line, not a traceback

# The surrogate of our C++ benchmark (bench/bench_suite.cpp): narrow, so silent units' rows vanish.
BENCH_GAMMA = 1.0
BENCH_EPS = 0.1
CHECK_TOLERANCE = 1e-10


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

def make_event_function():
    """H(v) = 1 if v > 0 else 0 (so H(0) = 0), differentiated with the triangular surrogate
    psi(v) = gamma * max(0, 1 - |v| / eps). Built after torch is imported (see main())."""

    class EventFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v, gamma, eps):
            ctx.save_for_backward(v)
            ctx.gamma, ctx.eps = gamma, eps
            return (v > 0).to(v.dtype)

        @staticmethod
        def backward(ctx, grad):
            (v,) = ctx.saved_tensors
            return grad * surrogate(v, ctx.gamma, ctx.eps), None, None

    return EventFunction.apply


def surrogate(v, gamma, eps):
    return gamma * torch.clamp(1.0 - v.abs() / eps, min=0.0)


class Egru:
    """One EGRU layer held as leaf tensors W (3n x d), R (3n x n), bW, bR (3n), theta (n).

    Optional weight masks (0/1, same shapes as W and R) are applied as zeros in the forward pass
    (weight * mask), which also makes the gradient of a pruned weight exactly zero. Torch does not
    exploit them: the products stay dense over all 3n x (d + n) entries, zeros included, which is
    how masked (pruned) RNNs are trained in PyTorch.
    """

    def __init__(self, W, R, bW, bR, theta, mask_W=None, mask_R=None, events=True,
                 gamma=BENCH_GAMMA, eps=BENCH_EPS):
        self.W, self.R, self.bW, self.bR, self.theta = (
            t.detach().clone().requires_grad_(True) for t in (W, R, bW, bR, theta))
        self.mask_W, self.mask_R = mask_W, mask_R
        self.events, self.gamma, self.eps = events, float(gamma), float(eps)
        self.n = R.shape[1]
        self.H = make_event_function()

    def parameters(self):
        return {"W": self.W, "R": self.R, "bW": self.bW, "bR": self.bR, "theta": self.theta}

    def zero_grad(self):
        for p in self.parameters().values():
            p.grad = None

    def forward(self, X):
        """Outputs y_1..y_T and internal states c_1..c_T (both T x n) for inputs X (T x d), c_0 = 0.

        X of shape B x T x d: B independent sequences at once (outputs and states B x T x n)."""
        if X.dim() == 3:
            return self._forward_batch(X)
        n = self.n
        W = self.W if self.mask_W is None else self.W * self.mask_W
        R = self.R if self.mask_R is None else self.R * self.mask_R
        # The input projection does not depend on the state: one matrix product for the whole
        # sequence, as torch.nn.GRU (and any reasonable hand-written RNN) does.
        A = torch.addmm(self.bW, X, W.t())
        c = X.new_zeros(n)
        y, h = self._emit(c)  # o_0 = H(0 - theta) as in model.md: with theta < 0, h_0 = -theta
        ys, cs = [], []
        # unbind, not A[t]: each A[t] would have its own backward writing into a fresh T x 3n zero
        # tensor, an O(T^2 n) artefact of indexing that would make torch look worse than it is.
        for a in A.unbind(0):
            q = torch.addmv(self.bR, R, y)
            rz = torch.sigmoid(a[:2 * n] + q[:2 * n])
            r, z = rz[:n], rz[n:]
            g = torch.tanh(a[2 * n:] + r * q[2 * n:])
            c = g + z * (h - g)  # = z h + (1 - z) g with one multiply fewer
            # o_t gives both the visible output y_t and the next step's reset: compute it once.
            y, h = self._emit(c)
            ys.append(y)
            cs.append(c)
        return torch.stack(ys), torch.stack(cs)

    def _forward_batch(self, X):
        """forward() for X of shape B x T x d: the same cell on B rows at once (states B x n)."""
        B, T, d = X.shape
        n = self.n
        W = self.W if self.mask_W is None else self.W * self.mask_W
        R = self.R if self.mask_R is None else self.R * self.mask_R
        # Time-major, so that each step's slice A_t (B x 3n) is contiguous; still one product for
        # the whole input projection.
        A = torch.addmm(self.bW, X.transpose(0, 1).reshape(T * B, d), W.t()).reshape(T, B, 3 * n)
        Rt = R.t()
        c = X.new_zeros(B, n)
        y, h = self._emit(c)
        ys, cs = [], []
        for a in A.unbind(0):
            q = torch.addmm(self.bR, y, Rt)  # one batched (B x n) x (n x 3n) product per step
            rz = torch.sigmoid(a[:, :2 * n] + q[:, :2 * n])
            r, z = rz[:, :n], rz[:, n:]
            g = torch.tanh(a[:, 2 * n:] + r * q[:, 2 * n:])
            c = g + z * (h - g)
            y, h = self._emit(c)
            ys.append(y)
            cs.append(c)
        return torch.stack(ys, 1), torch.stack(cs, 1)

    def _emit(self, c):
        """(y, h): event output and state after the soft reset. GRU mode: o = 1, so y = h = c."""
        if not self.events:
            return c, c
        o = self.H(c - self.theta, self.gamma, self.eps)
        return o * c, c - o * self.theta

    def rates(self, C):
        """(activity, event rate) over states C (T x n, or B x T x n): the fractions of units with
        s = o + c psi != 0 (the rows sparse RTRL must propagate) and with o = 1."""
        v = C - self.theta.detach()
        o = (v > 0).to(C.dtype)
        s = o + C * surrogate(v, self.gamma, self.eps)
        return float((s != 0).double().mean()), float(o.double().mean())


# ----------------------------------------------------------------------------------------------
# --check: the peer computes the same model as the golden files (and hence as the library)
# ----------------------------------------------------------------------------------------------

def load_matrix(path):
    with open(path) as f:
        rows = [[float(x) for x in line.split()] for line in f if line.strip()]
    return torch.tensor(rows, dtype=torch.float64)


def check(folder):
    def load(name):
        return load_matrix(os.path.join(folder, name))

    with open(os.path.join(folder, "meta.txt")) as f:
        n, d, T, events, gamma, eps, density = f.read().split()
    n, d, T = int(n), int(d), int(T)
    masks = {k: load(f"mask{k}.txt") if os.path.exists(os.path.join(folder, f"mask{k}.txt")) else None
             for k in ("W", "R")}
    cell = Egru(load("W.txt"), load("R.txt"), load("bW.txt").reshape(-1), load("bR.txt").reshape(-1),
                load("theta.txt").reshape(-1), mask_W=masks["W"], mask_R=masks["R"],
                events=int(events) != 0, gamma=float(gamma), eps=float(eps))
    X, G = load("x.txt"), load("G.txt")
    assert X.shape == (T, d) and G.shape == (T, n), f"{folder}: x.txt or G.txt does not match meta.txt"

    Y, _ = cell.forward(X)
    (G * Y).sum().backward()  # L = sum_t <G_t, y_t>

    def rel_err(got, ref):
        # Norm-wise (max-abs) relative error; an all-zero reference (theta in GRU mode) needs exact zeros.
        got = got.reshape(ref.shape)
        scale = ref.abs().max().item()
        diff = (got - ref).abs().max().item()
        return diff / scale if scale > 0 else diff

    results = [("y", rel_err(Y.detach(), load("y_ref.txt")))]
    for name, p in cell.parameters().items():
        grad = p.grad if p.grad is not None else torch.zeros_like(p)  # theta is unused in GRU mode
        results.append(("g" + name, rel_err(grad, load(f"g{name}.txt"))))
    ok = all(e <= CHECK_TOLERANCE for _, e in results)
    print(f"{os.path.basename(os.path.normpath(folder))}: " + " ".join(f"{k} {e:.2e}" for k, e in results)
          + f" -> {'PASS' if ok else 'FAIL'} (tolerance {CHECK_TOLERANCE:g})")
    return 0 if ok else 1


# ----------------------------------------------------------------------------------------------
# --point: one timed configuration
# ----------------------------------------------------------------------------------------------

def random_mask(rows, cols, density, gen, dtype):
    """Keeps round(density * size) entries chosen uniformly at random, like ParameterMask::random."""
    size = rows * cols
    keep = torch.randperm(size, generator=gen)[:int(round(density * size))]
    m = torch.zeros(size, dtype=dtype)
    m[keep] = 1
    return m.reshape(rows, cols)


def build_network(n, d, density, activity, dtype, seed):
    """A network whose fraction of units with s != 0 is close to `activity`, built with the recipe of
    bench/bench_common.hpp (parameters_for_activity): torch.nn.GRU-style uniform weights, fan-in
    rescaled for the pruning, then one common threshold bisected on a warm-up run, since the rate
    is a property of the dynamics, not of any one parameter. Same recipe, not the same random
    numbers: the C++ generator is not reproduced here."""
    gen = torch.Generator().manual_seed(seed)
    k = 1.0 / n ** 0.5

    def uniform(*shape):
        return (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * k

    W, R, bW, bR = uniform(3 * n, d), uniform(3 * n, n), uniform(3 * n), uniform(3 * n)
    mask_gen = torch.Generator().manual_seed(1000 + seed)
    mask_W = random_mask(3 * n, d, density, mask_gen, torch.float64)
    mask_R = random_mask(3 * n, n, density, mask_gen, torch.float64)
    # Pruning removes input: rescale so each unit's fan-in keeps its variance (as the C++ bench).
    W = W * (2.0 / max(density, 1e-3) ** 0.5 * (n / d) ** 0.5) * mask_W
    R = R * (1.0 / max(density, 1e-3) ** 0.5) * mask_R
    cell = Egru(W.to(dtype), R.to(dtype), bW.to(dtype), bR.to(dtype), torch.zeros(n, dtype=dtype),
                mask_W=mask_W.to(dtype), mask_R=mask_R.to(dtype), events=True, gamma=BENCH_GAMMA, eps=BENCH_EPS)

    warm = inputs(60, d, seed + 1, dtype)

    def measured_activity(theta):
        with torch.no_grad():
            cell.theta.fill_(theta)
            _, C = cell.forward(warm)
        return cell.rates(C[10:])[0]  # past the start-up transient from c_0 = 0

    lo, hi = -2.0, 3.0  # activity decreases as the threshold rises
    for _ in range(30):
        mid = (lo + hi) / 2
        if measured_activity(mid) > activity:
            lo = mid
        else:
            hi = mid
    with torch.no_grad():
        cell.theta.fill_((lo + hi) / 2)
    return cell


def inputs(T, d, seed, dtype):
    """Deterministic inputs uniform in [-1, 1)."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(T, d, generator=gen, dtype=torch.float64) * 2 - 1).to(dtype)


def loaded_blas():
    """The BLAS/LAPACK libraries this process mapped: the peer's speed depends on them (Debian's
    torch uses whichever libblas.so.3 alternative is installed, the slow reference BLAS by default)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if any(k in line.lower() for k in ("blas", "lapack", "mkl"))}
    except OSError:
        return "unknown"
    return " ".join(sorted(os.path.realpath(p) for p in libs if p.startswith("/")))


def reset_peak_rss():
    """Makes ru_maxrss equal the current resident size, so that its growth measures what comes next.

    ru_maxrss is a high-water mark, and building and calibrating the network (float64 temporaries,
    3n x n products) has already pushed it above what forward + backward needs: at n = 1024 the
    growth over the timed runs would read almost zero. malloc_trim returns freed heap to the OS
    (else the timed runs would reuse it unseen) and writing 5 to /proc/self/clear_refs (Linux >= 4.0)
    resets the high-water mark. Returns False when the reset is not available: the growth is then
    a lower bound."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def point(a):
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    cell = build_network(a.n, a.d, a.density, a.activity, dtype, seed=7 + a.n)
    B = a.batch
    if B == 1:  # exactly the unbatched computation
        X = inputs(a.T, a.d, 5, dtype)
        G = torch.full((a.T, a.n), 0.01, dtype=dtype)  # dL/dy_t, as the C++ BPTT benchmark
        head = lambda Z: Z[:2]
    else:  # B different sequences through the same network
        X = torch.stack([inputs(a.T, a.d, 5 + b, dtype) for b in range(B)])
        G = torch.full((B, a.T, a.n), 0.01, dtype=dtype)
        head = lambda Z: Z[:, :2]

    def forward_backward():
        cell.zero_grad()
        Y, _ = cell.forward(X)
        (G * Y).sum().backward()

    # A 2-step forward + backward first pages in the code and lazily initialised state of autograd
    # (about 10 MB of RSS here, not a cost of the sequence) so that the growth below is the data:
    # the autograd graph of the sequence, the dense gradients and the allocator's slack around them.
    cell.zero_grad()
    (head(G) * cell.forward(head(X))[0]).sum().backward()
    cell.zero_grad()
    # The memory baseline comes before the warm-up, not after: the warm-up's peak is the timed runs'
    # peak (same graph, same tensors), and taken after it the growth would read zero.
    peak_reset = reset_peak_rss()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    forward_backward()  # warm-up: lazy initialisation, allocator caches
    reps, elapsed = 0, 0.0
    while reps < 3 or elapsed < 1.0:
        t0 = time.perf_counter()
        forward_backward()
        elapsed += time.perf_counter() - t0
        reps += 1
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    with torch.no_grad():
        _, C = cell.forward(X)
    activity, event_rate = cell.rates(C)
    record = {
        "n": a.n, "d": a.d, "T": a.T, "density": a.density,
        "activity_target": a.activity,  # run_suite.py matches points on the target
        "activity_measured": activity, "event_rate": event_rate,
        "batch": B, "threads": a.threads, "dtype": a.dtype, "gamma": BENCH_GAMMA, "eps": BENCH_EPS,
        "repetitions": reps,
        "step_seconds": elapsed / reps / a.T,  # per step of the whole batch (see the docstring)
        "stream_step_seconds": elapsed / reps / (a.T * B),  # per sequence-step, as bench_suite's streams rows
        "peak_rss_bytes": (rss_after - rss_before) * 1024,  # ru_maxrss is in KiB on Linux
        "peak_rss_reset": peak_reset,
        "torch_version": torch.__version__,
        "blas": loaded_blas(),
    }
    print(json.dumps(record), flush=True)
    return 0


# ----------------------------------------------------------------------------------------------
# --sweep: the report's points, each in its own process
# ----------------------------------------------------------------------------------------------

def sweep_points():
    pts = [dict(n=n, T=100, density=0.1, activity=0.1) for n in (64, 128, 256, 512, 1024)]
    pts += [dict(n=256, T=100, density=0.1, activity=0.1),     # goal: 90 % backward / 90 % weight sparsity
            dict(n=256, T=100, density=0.05, activity=0.05)]   # goal: 95 / 95
    pts += [dict(n=256, T=T, density=0.1, activity=0.1) for T in (10, 100, 1000)]
    # Many streams (bench_suite's streams rows): 8 sequences batched, on 1 and 2 threads like the
    # C++ rows; these two carry their own thread counts, the others take --threads.
    pts += [dict(n=256, T=100, density=0.1, activity=0.1, batch=8, threads=t) for t in (1, 2)]
    unique = []
    for p in pts:  # n = 256, T = 100 serves three sweeps: measure it once
        if p not in unique:
            unique.append(p)
    return unique


def sweep(a):
    records = []
    for p in sweep_points():
        batch, threads = p.get("batch", 1), p.get("threads", a.threads)
        cmd = [sys.executable, os.path.abspath(__file__), "--point", "--n", str(p["n"]), "--d", "32",
               "--T", str(p["T"]), "--density", str(p["density"]), "--activity", str(p["activity"]),
               "--batch", str(batch), "--threads", str(threads), "--dtype", "float32"]
        # The quick sweep must stay within a few minutes on 2 shared cores: the largest point is the
        # only one that can be slow, so it gets a time limit instead of an estimate.
        limit = 60 if (a.quick and p["n"] >= 1024) else 900
        print(f"torch_peer: n={p['n']} T={p['T']} density={p['density']} activity={p['activity']} "
              f"batch={batch} threads={threads}", file=sys.stderr, flush=True)
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            print(f"torch_peer: skipped (over {limit} s)", file=sys.stderr, flush=True)
            continue
        if out.returncode != 0:
            print(f"torch_peer: point failed (status {out.returncode}): {out.stderr.strip()[-500:]}",
                  file=sys.stderr, flush=True)
            continue
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"torch_peer:   {rec['step_seconds'] * 1e3:.3f} ms/step"
              + (f" ({rec['stream_step_seconds'] * 1e3:.3f} ms per sequence-step)" if batch > 1 else "")
              + f", peak RSS growth "
              f"{rec['peak_rss_bytes'] / 2**20:.1f} MiB, activity {rec['activity_measured']:.3f}",
              file=sys.stderr, flush=True)
        records.append(rec)
    if not records:
        # Torch imported (else we would not be here) yet nothing ran: a bug, not an absent peer.
        print("torch_peer: every point failed; no file written", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(records, f, indent=1)
    print(f"torch_peer: wrote {len(records)} points to {a.out}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", metavar="DIR", help="golden case folder to verify against")
    mode.add_argument("--point", action="store_true", help="time one configuration, print one JSON line")
    mode.add_argument("--sweep", action="store_true", help="run the report's points, write --out")
    ap.add_argument("--out", help="output JSON file of --sweep")
    ap.add_argument("--quick", action="store_true", help="--sweep: skip n = 1024 if it takes over 60 s")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--density", type=float, default=0.1, help="fraction of kept weights in W and R")
    ap.add_argument("--activity", type=float, default=0.1, help="target fraction of units with s != 0")
    ap.add_argument("--batch", type=int, default=1,
                    help="--point: B independent sequences, batched (default 1: unbatched, T x d)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads (default 1; --sweep: all but the batch points, which set their own)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    a = ap.parse_args()
    if a.sweep and not a.out:
        ap.error("--sweep needs --out FILE.json")
    if a.batch < 1:
        ap.error("--batch must be at least 1")

    global torch
    try:
        import torch as _torch
    except ImportError as e:
        print(f"torch_peer: PyTorch is not importable by {sys.executable} ({e}); "
              "install Debian's python3-torch and run with /usr/bin/python3"
              + ("; no peer results written" if a.sweep else ""), file=sys.stderr)
        return 0 if a.sweep else 2
    torch = _torch

    if a.check:
        torch.set_num_threads(1)
        return check(a.check)
    if a.point:
        return point(a)
    return sweep(a)


if __name__ == "__main__":
    sys.exit(main())
