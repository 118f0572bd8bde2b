"""Every ```python block of README.md runs, in order, in one namespace (so the README never goes
stale). The blocks use the random-weight presets, so no checkpoint is needed; the fast path runs its
CPU torch twins, in a temporary working directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_python_blocks():
    assert len(python_blocks(README.read_text())) >= 3


def test_readme_python_blocks_run(tmp_path, monkeypatch, torch_twins):
    pytest.importorskip("av")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(python_blocks(README.read_text())):
        code = compile(block, f"README.md python block {i + 1}", "exec")
        exec(code, namespace)  # noqa: S102 - the README's own examples
