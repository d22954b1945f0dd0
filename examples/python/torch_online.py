"""A PyTorch online training loop with exact sparse RTRL: an EGRU (sparse_rtrl.torch.OnlineEGRU, its
parameters torch tensors) and a torch.nn.Linear readout learn to recall the input bit of 3 steps ago,
updated by torch.optim.Adam at every step. Usage: python3 examples/python/torch_online.py [--steps N]"""
import argparse
import sys

try:
    import torch
except ImportError:
    sys.exit(print("torch_online.py: PyTorch is not installed (Debian: python3-torch); skipped") or 0)
import sparse_rtrl as s
from sparse_rtrl.torch import OnlineEGRU

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=20000)
T = parser.parse_args().steps
torch.manual_seed(0)
mask = s.ParameterMask.random(32, 1, 1.0, 0.25, seed=1, sharing=s.MaskSharing.gate_shared)
egru = OnlineEGRU(1, 32, masks=mask, seed=2, threshold=0.1, surrogate=s.TriangularSurrogate(1.0, 0.5))
with torch.no_grad():
    egru.weight_ih_l0.mul_(4)                     # strong enough input to cross the thresholds
readout = torch.nn.Linear(32, 1)
torch.nn.init.zeros_(readout.weight)
opt = torch.optim.Adam([*egru.parameters(), *readout.parameters()], lr=3e-3)
bits = torch.randint(0, 2, (T, 1), dtype=torch.float32) * 2 - 1
window = 0.0
for t in range(T):
    y = egru.step(bits[t])                        # state and influence advance; y requires grad
    loss = torch.nn.functional.mse_loss(readout(y), bits[max(t - 3, 0)])
    loss.backward()                               # readout's .grad, and dL/dy in y.grad
    egru.backward(y.grad)                         # the exact RTRL gradient into egru's .grad
    torch.nn.utils.clip_grad_norm_(egru.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    window += loss.item()
    if (t + 1) % (T // 10) == 0:
        print(f"step {t + 1:6d}  mse {window / (T // 10):.4f}  {egru.learner.total_work()}")
        window = 0.0
