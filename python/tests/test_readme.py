"""The README's Python blocks run as written: the first ```python block of its "## Python" section
(a complete float32 online loop: readout, optimizers, zero_gradient()) learns, and the checkpoint
block that follows runs on the objects it left."""
import os
import re

import numpy as np

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def python_blocks():
    text = open(README).read()
    section = text[text.index("\n## Python\n"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_python_example_runs(capsys, tmp_path, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) >= 2, "README's Python section needs the online loop and the checkpoint block"
    loop = blocks[0]
    for needed in ("LinearReadout", "Adam", "zero_gradient()", "accumulate_gradient", 'dtype="float32"'):
        assert needed in loop, f"the README's online loop no longer shows {needed}"
    namespace = {}
    exec(compile(loop, "README.md (Python example)", "exec"), namespace)
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if l.startswith("step ")]
    assert len(lines) == 10, out
    mse = [float(l.split()[3]) for l in lines]
    # It learns: from about 0.8 (predicting 0 scores 1.0) to below 0.05 in the last 2000 steps.
    assert mse[0] > 0.3 and mse[-1] < 0.05, out
    assert "WorkCounters(steps=20000" in lines[-1], out
    assert namespace["model"].dtype == np.float32 and namespace["rtrl"].gradient().W.dtype == np.float32

    # The checkpoint block, on the loop's objects (adam: the model's optimizer), in a scratch folder.
    monkeypatch.chdir(tmp_path)
    namespace["adam"] = namespace["adam_model"]
    saved_t = namespace["t"]
    R = namespace["model"].parameters().R.copy()
    exec(compile(blocks[1], "README.md (Python checkpoint block)", "exec"), namespace)
    assert namespace["t"] == saved_t and (tmp_path / "run.npz").exists() and (tmp_path / "gru.npz").exists()
    assert namespace["model"].dtype == np.float32 and np.array_equal(namespace["model"].parameters().R, R)
