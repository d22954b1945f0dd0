#!/usr/bin/env python3
"""NumPy's and PyTorch's view of the .npz files our C++ writes (run by tests/io/*.test.cpp).

  npz_check.py dump PATH
      numpy.load(PATH) and print every array, one per line:
      name <TAB> dtype.str <TAB> shape (comma-separated) <TAB> elements in C order
      (floats as float.hex(), integers in decimal, bools as 0/1), then "end <count>".
      Reading an entry makes Python's zipfile check its CRC-32.
  npz_check.py torch CHECKPOINT TORCH_ONLY FORWARD [CHECKPOINT TORCH_ONLY FORWARD ...]
      Load the weights of CHECKPOINT (a sparse_rtrl checkpoint: filtered to torch's keys) and of
      TORCH_ONLY (io::save_torch_gru: loaded as it is) into torch.nn.GRU with the README's
      snippets (load_state_dict, strict), run both on FORWARD's x and require their outputs and
      final states to equal FORWARD's output and h_n exactly (the weights came from torch).

Exit codes: 0 success, 1 mismatch or error, 77 the module needed (numpy, torch) is missing.
"""
import sys


def dump(path):
    import numpy
    f = numpy.load(path)
    count = 0
    for name in f.files:
        a = f[name]
        if a.dtype.kind == "f":
            values = " ".join(float(v).hex() for v in a.ravel(order="C"))
        elif a.dtype.kind == "b":
            values = " ".join("1" if v else "0" for v in a.ravel(order="C"))
        else:
            values = " ".join(str(int(v)) for v in a.ravel(order="C"))
        print("%s\t%s\t%s\t%s" % (name, a.dtype.str, ",".join(str(s) for s in a.shape), values))
        count += 1
    print("end %d" % count)


def torch_check(checkpoint, torch_only, forward):
    import numpy
    import torch
    ref = numpy.load(forward)
    x = torch.from_numpy(ref["x"])[:, None, :]
    for path, filtered in ((checkpoint, True), (torch_only, False)):
        arrays = numpy.load(path)
        layers = sum(1 for k in arrays.files if k.startswith("weight_ih_l"))
        n, d = arrays["weight_hh_l0"].shape[1], arrays["weight_ih_l0"].shape[1]
        gru = torch.nn.GRU(input_size=d, hidden_size=n, num_layers=layers)
        if arrays["weight_hh_l0"].dtype == numpy.float64:
            gru = gru.double()
        if filtered:  # README: a checkpoint has more entries than torch's state_dict
            gru.load_state_dict({k: torch.from_numpy(v) for k, v in numpy.load(path).items() if k in gru.state_dict()})
        else:         # README: the plain reverse snippet, for io::save_torch_gru files
            gru.load_state_dict({k: torch.from_numpy(v) for k, v in numpy.load(path).items()})
        with torch.no_grad():
            out, h_n = gru(x.to(gru.weight_hh_l0.dtype))
        if not (numpy.array_equal(out[:, 0].numpy(), ref["output"]) and numpy.array_equal(h_n[:, 0].numpy(), ref["h_n"])):
            print("torch: %s: the forward pass differs from the reference" % path)
            return 1
        print("torch: %s: %d layer(s), output equal" % (path, layers))
    return 0


def main(argv):
    try:
        import numpy  # noqa: F401
    except ImportError:
        print("skipped: numpy is not installed for %s" % sys.executable)
        return 77
    if len(argv) == 3 and argv[1] == "dump":
        dump(argv[2])
        return 0
    if len(argv) >= 5 and (len(argv) - 2) % 3 == 0 and argv[1] == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            print("skipped: torch is not installed for %s" % sys.executable)
            return 77
        for k in range(2, len(argv), 3):  # one interpreter for all cases: importing torch is slow
            if torch_check(argv[k], argv[k + 1], argv[k + 2]) != 0:
                return 1
        return 0
    print(__doc__)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
