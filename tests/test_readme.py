"""The README's Python examples run as written (the README stays true to the code)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(python_blocks()) >= 2


@pytest.mark.brian2
def test_readme_examples_run_in_order():
    namespace: dict = {}
    for block in python_blocks():  # later blocks use names from earlier ones, as a reader would
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["B"].shape == (100, 784)
    assert float(namespace["gap"]) < 1e-9
    dale = namespace["model"]
    for layer in (dale[0], dale[2]):
        assert layer.sign.violations(layer.weight.detach()) == 0
