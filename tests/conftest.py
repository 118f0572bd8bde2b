"""Test set-up shared by every test file.

Triton decides at ``@triton.jit`` time whether kernels run through its CPU interpreter, so on a
machine without CUDA the interpreter is switched on here, before anything imports the kernels.
Tests that want the CPU torch twins instead use the ``torch_twins`` fixture.
"""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass

import pytest

# Define every @triton.jit kernel now, while TRITON_INTERPRET is what this session wants: a test
# that switches to the torch twins (TRITON_INTERPRET=0 at call time) must not be the first importer.
import importlib

from autogaze_fast.kernels.aot import KERNEL_MODULES

for _module in KERNEL_MODULES:
    importlib.import_module(f"autogaze_fast.kernels.{_module}")

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def torch_twins(monkeypatch):
    """Run the fast path's CPU torch twins (TRITON_INTERPRET=0 at call time)."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")


@pytest.fixture
def triton_interpreter(monkeypatch):
    """Run the fast path's Triton kernels on CPU through the interpreter (CUDA runs them natively)."""
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    if not torch.cuda.is_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)
