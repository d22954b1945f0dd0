#!/usr/bin/env python3
"""Makes the torch.nn.GRU files of the interchange tests (tests/io/torch_gru.test.cpp).

For each case, <case>.npz is a GRU's state_dict saved with the README's snippet

    numpy.savez(path, **{k: v.numpy() for k, v in gru.state_dict().items()})

and <case>.forward.npz holds an input sequence x (T, d), torch's output sequence (T, n) of the
top layer and its final states h_n (L, n), computed by torch.nn.GRU itself. The C++ test loads
the weights into a GRU-mode model and must reproduce torch's numbers.

Run with Debian's python3-torch and python3-numpy: /usr/bin/python3 make_torch_gru.py
(in this folder). Generated with torch 1.13.1 and numpy 1.24.2 (Debian 12).
"""
import numpy
import torch

CASES = [  # name, layers, hidden n, input d, steps T, dtype
    ("gru-L1-n5-d3-float32", 1, 5, 3, 12, torch.float32),
    ("gru-L2-n6-d4-float32", 2, 6, 4, 15, torch.float32),
    ("gru-L2-n6-d4-float64", 2, 6, 4, 15, torch.float64),
]


def main():
    torch.manual_seed(13)
    for name, layers, n, d, steps, dtype in CASES:
        gru = torch.nn.GRU(input_size=d, hidden_size=n, num_layers=layers).to(dtype)
        path = name + ".npz"
        numpy.savez(path, **{k: v.numpy() for k, v in gru.state_dict().items()})
        x = 1.5 * torch.randn(steps, 1, d, dtype=dtype)  # (T, batch 1, d), batch_first=False
        with torch.no_grad():
            output, h_n = gru(x)
        numpy.savez(name + ".forward.npz", x=x[:, 0].numpy(), output=output[:, 0].numpy(), h_n=h_n[:, 0].numpy())
        print(path, {k: tuple(v.shape) for k, v in gru.state_dict().items()})


if __name__ == "__main__":
    main()
