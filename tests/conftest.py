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

# Define every @triton.jit kernel now, while TRITON_INTERPRET is what this session wants: a test
# that switches to the torch twins (TRITON_INTERPRET=0 at call time) must not be the first importer.
import importlib

import pytest

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


#: Where tests that exercise the Triton kernels put their tensors: CUDA when it is there (the
#: kernels run natively), else the CPU (the interpreter runs them; see the top of this file).
KERNEL_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def triton_kernels(monkeypatch) -> torch.device:
    """Run the fast path's Triton kernels and return the device the test must put its model and
    inputs on: CUDA when it is there (natively; TF32 off, as exact fp32 parity needs), else the CPU
    through the interpreter. Tests using it carry the ``triton`` marker (added at collection)."""
    if KERNEL_DEVICE.type == "cuda":
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    return KERNEL_DEVICE


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "triton_kernels" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.triton)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
