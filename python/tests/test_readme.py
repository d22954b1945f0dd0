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
    assert "(192, 64)" in out and "WorkCounters(steps=500" in out, out
