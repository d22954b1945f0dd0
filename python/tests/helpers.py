"""Shared helpers of the Python tests: golden-case loading, relative errors, a NumPy EGRU step."""
import os

import numpy as np

GOLDEN = os.environ.get("SPARSE_RTRL_GOLDEN_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "tests", "data", "golden")


def rel_err(got, ref):
    """|got - ref| / |ref| (Frobenius); the absolute error when ref is zero."""
    got, ref = np.asarray(got, dtype=float), np.asarray(ref, dtype=float)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    diff = np.linalg.norm(got - ref)
    scale = np.linalg.norm(ref)
    return diff / scale if scale > 0 else diff


def golden_cases(root=None):
    root = root or GOLDEN
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def is_stacked(case, root=None):
    """A stacked case is recognised by its layers.txt, never by its folder's name
    (shared/golden/README.md, "Stacked cases")."""
    return os.path.exists(os.path.join(root or GOLDEN, case, "layers.txt"))


def _load(folder, name, ndmin=2):
    return np.loadtxt(os.path.join(folder, name), ndmin=ndmin)


def load_golden(case, root=None):
    """A golden case (format: shared/golden/README.md) as a dict of per-layer lists."""
    import sparse_rtrl as s
    folder = os.path.join(root or GOLDEN, case)
    meta = open(os.path.join(folder, "meta.txt")).read().split()
    out = {"name": case}
    if is_stacked(case, root):
        L, d, T, events = int(meta[0]), int(meta[1]), int(meta[2]), bool(int(meta[3]))
        gamma, eps = float(meta[4]), float(meta[5])
        sizes = [int(v) for v in open(os.path.join(folder, "layers.txt")).read().split()]
        suffix = [f"_l{k}" for k in range(L)]
    else:
        n, d, T, events = int(meta[0]), int(meta[1]), int(meta[2]), bool(int(meta[3]))
        gamma, eps, density = float(meta[4]), float(meta[5]), float(meta[6])
        L, sizes, suffix = 1, [n], [""]
    out.update(L=L, d=d, T=T, events=events, gamma=gamma, eps=eps, sizes=sizes)
    out["X"] = _load(folder, "x.txt").reshape(T, d)
    layers = []
    inputs = d
    for k, sfx in enumerate(suffix):
        n = sizes[k]
        lay = {
            "W": _load(folder, f"W{sfx}.txt").reshape(3 * n, inputs),
            "R": _load(folder, f"R{sfx}.txt").reshape(3 * n, n),
            "bW": _load(folder, f"bW{sfx}.txt", 1).reshape(3 * n),
            "bR": _load(folder, f"bR{sfx}.txt", 1).reshape(3 * n),
            "theta": _load(folder, f"theta{sfx}.txt", 1).reshape(n),
            "G": _load(folder, f"G{sfx}.txt").reshape(T, n),
            "y_ref": _load(folder, f"y_ref{sfx}.txt").reshape(T, n),
        }
        for g in ("gW", "gR", "gbW", "gbR", "gtheta"):
            lay[g] = _load(folder, f"{g}{sfx}.txt").reshape(lay[g[1:]].shape)
        keep_W = np.ones((3 * n, inputs), bool)
        keep_R = np.ones((3 * n, n), bool)
        masked = False
        for name, key in ((f"maskW{sfx}.txt", "W"), (f"maskR{sfx}.txt", "R")):
            if os.path.exists(os.path.join(folder, name)):
                m = _load(folder, name).reshape(3 * n, inputs if key == "W" else n) != 0
                if key == "W":
                    keep_W = m
                else:
                    keep_R = m
                masked = True
        lay["mask"] = s.ParameterMask(keep_W, keep_R) if masked else None
        layers.append(lay)
        inputs = n
    out["layers"] = layers
    return out


def golden_model(case):
    import sparse_rtrl as s
    params = [s.EgruParameters(l["W"], l["R"], l["bW"], l["bR"], l["theta"]) for l in case["layers"]]
    masks = [l["mask"] if l["mask"] is not None else s.ParameterMask.dense(p.units, p.inputs)
             for l, p in zip(case["layers"], params)]
    return s.Model(params, masks=masks, events=case["events"],
                   surrogate=s.TriangularSurrogate(case["gamma"], case["eps"]))


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def egru_step(p, c, x, events=True):
    """One EGRU step transcribed from docs/model.md in NumPy (an implementation independent of the
    library's): returns (c_t, y_t). p: dict of W, R, bW, bR, theta."""
    n = c.shape[0]
    if events:
        o = (c - p["theta"] > 0).astype(float)
        y, h = o * c, c - o * p["theta"]
    else:
        y, h = c, c
    a = p["W"] @ x + p["bW"]
    q = p["R"] @ y + p["bR"]
    r = sigmoid(a[:n] + q[:n])
    z = sigmoid(a[n:2 * n] + q[n:2 * n])
    g = np.tanh(a[2 * n:] + r * q[2 * n:])
    c_new = z * h + (1 - z) * g
    y_new = (c_new - p["theta"] > 0) * c_new if events else c_new
    return c_new, y_new
