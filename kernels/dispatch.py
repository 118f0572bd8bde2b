"""Choosing between a Triton kernel and its torch path (the family's CPU path or twin), per call."""

from __future__ import annotations

import os
from typing import Literal

import torch

Backend = Literal["auto", "triton", "torch"]


def interpreter_enabled() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels run on CPU tensors through the interpreter.

    Triton reads this variable when a ``@triton.jit`` function is *defined*, so it must be set
    before :mod:`autogaze_fast.kernels` is first imported.
    """
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(*tensors: torch.Tensor, backend: Backend = "auto") -> bool:
    """Decide whether a launcher runs its Triton kernel (True) or its torch path (False).

    ``backend="auto"``: Triton for CUDA tensors, and for CPU tensors only under the interpreter.
    ``backend="triton"`` forces the kernel (on CPU it then needs ``TRITON_INTERPRET=1``);
    ``backend="torch"`` forces the torch path. Which torch code that is (a fused CPU path or the
    twin the kernels are tested against) is each kernel file's choice, stated in its docstring.
    """
    if backend == "torch":
        return False
    on_cuda = any(t.is_cuda for t in tensors)
    if backend == "triton":
        if not on_cuda and not interpreter_enabled():
            raise ValueError(
                "backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before autogaze_fast is imported"
            )
        return True
    if backend != "auto":
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
    return on_cuda or interpreter_enabled()
