"""The README's Python example runs as written (with fewer iterations)."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_algorithm_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(block for block in blocks if "Algorithm 1" in block or "range(500)" in block)
    assert "range(500)" in code and "steps=100" in code
    code = code.replace("range(500)", "range(5)").replace("steps=100", "steps=3")
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    samples = namespace["samples"]
    assert samples.shape == (2000, 2) and torch.isfinite(samples).all()
