"""Where tensors live and in what precision: dtype names, the default device, a device from its name."""

from __future__ import annotations

import os

import torch


def torch_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A float ``torch.dtype`` from itself or its name (``"bfloat16"``, ``"torch.float16"``); ``None`` stays ``None``.

    Raises:
        ValueError: not a float dtype or the name of one.
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    found = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(found, torch.dtype) or not found.is_floating_point:
        raise ValueError(f"dtype must be a float torch dtype or its name ('float32', 'bfloat16', 'float16'), got {dtype!r}")
    return found


def default_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is there (torchrun sets LOCAL_RANK), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def resolve_device(name: str | torch.device | None, *, error: type[Exception] = ValueError,
                   message: str | None = None) -> torch.device:
    """The device ``name`` asks for; ``None`` or ``"auto"``: CUDA when there (``"cuda"``, no index), else the CPU.

    Raises:
        ``error`` with ``message`` (default: a ValueError saying so) when CUDA is asked for and torch sees none.
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise error(message or f"device {str(name)!r} asked for but torch sees no CUDA device")
    return device
