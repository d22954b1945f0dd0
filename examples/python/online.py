"""An EGRU learning a stream online with exact sparse RTRL: recall the input bit of 3 steps ago.
Usage: python3 examples/python/online.py [--steps N] [--dtype float32|float64]
(after `pip install .`, or with PYTHONPATH=<build>/python)"""
import argparse

import numpy as np

import sparse_rtrl as s

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=20000)
parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
args = parser.parse_args()
T, n, delay = args.steps, 32, 3
mask = s.ParameterMask.random(n, 1, 1.0, 0.25, seed=1, sharing=s.MaskSharing.gate_shared)
model = s.Model.torch_like(n, 1, seed=2, threshold=0.1, masks=mask, surrogate=s.TriangularSurrogate(1.0, 0.5),
                           dtype=args.dtype)  # every object of the run follows the model's dtype
model.parameters().W[:] *= 4  # strong enough input to cross the thresholds
rtrl, readout = s.Rtrl(model), s.LinearReadout(1, n, dtype=model.dtype)
readout.parameters().V[:] = 0  # zero-initialised readout (README, practical advice)
opt_model, opt_readout = s.Adam(learning_rate=3e-3, dtype=model.dtype), s.Adam(learning_rate=3e-3, dtype=model.dtype)
bits = np.random.default_rng(0).choice([-1.0, 1.0], size=T).astype(model.dtype)
window = []
for t in range(T):
    rtrl.step(bits[t:t + 1])
    prediction = readout.forward(rtrl.output())
    loss, dL_dp = s.mean_squared_error(prediction, bits[max(t - delay, 0):max(t - delay, 0) + 1])
    rtrl.accumulate_gradient(readout.backward(rtrl.output(), dL_dp))
    opt_model.step(model, rtrl.gradient())  # an update at every step: fully online
    opt_readout.step(readout)
    rtrl.zero_gradient()
    readout.zero_gradient()
    window.append(loss)
    if (t + 1) % (T // 10) == 0:
        w = rtrl.total_work()
        print(f"step {t + 1:6d}  mse {np.mean(window):.3f}  events off {100 * w.event_sparsity():.0f}%  "
              f"rows skipped {100 * w.backward_sparsity():.0f}%  {w.ideal_speedup():.1f}x fewer multiply-adds")
        window = []
