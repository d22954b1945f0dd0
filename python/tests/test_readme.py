"""The README's Python example runs as written (the first ```python block of its "## Python" section)."""
import os
import re

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def test_readme_python_example_runs(capsys):
    text = open(README).read()
    section = text[text.index("\n## Python\n"):]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block, "README's Python section has no ```python block"
    exec(compile(block.group(1), "README.md (Python example)", "exec"), {})
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if l.startswith("step ")]
    assert len(lines) == 10, out
    mse = [float(l.split()[3]) for l in lines]
    # It learns: from about 0.8 (predicting 0 scores 1.0) to below 0.05 in the last 2000 steps.
    assert mse[0] > 0.3 and mse[-1] < 0.05, out
    assert "WorkCounters(steps=20000" in lines[-1], out
