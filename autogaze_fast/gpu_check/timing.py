"""Timing and device helpers of ``autogaze-fast gpu-check``: CUDA-event / perf_counter medians with
peak memory, exact-fp32 (no TF32) switches, and freeing a device between cases."""

from __future__ import annotations

import contextlib
import gc
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None


class SectionTimeout(Exception):
    """A gpu-check section ran past its time cap (raised between its cases, or by the hard alarm)."""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    """Drop unreachable tensors and, on CUDA, return cached blocks so the next case's peak is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _peak_rss_mb() -> float | None:
    """The process's peak resident set size so far (Linux/macOS), in MiB; None where unknown."""
    if resource is None:  # pragma: no cover - platform without resource
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def time_call(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
              deadline: float | None = None, min_repeats: int = 3) -> dict[str, Any]:
    """Median time of ``fn()`` over ``repeats`` runs after ``warmup`` runs, with peak memory.

    On CUDA every run is bracketed by CUDA events (device time, synchronised per run) and the peak is
    ``torch.cuda.max_memory_allocated`` over the timed runs (``peak_mb``), beside what was already
    allocated before them (``base_mb``: weights, inputs) and their difference (``work_mb``). On CPU
    the clock is ``perf_counter`` and the memory figure is the process's peak RSS so far
    (``rss_peak_mb``, monotone over the whole run).
    Stops early, after at least ``min_repeats`` runs, once ``time.perf_counter()`` passes ``deadline``.

    Returns:
        ``{"median_ms", "min_ms", "n", "peak_mb", "base_mb", "work_mb"}`` on CUDA,
        ``{"median_ms", "min_ms", "n", "rss_peak_mb"}`` on CPU.
    """
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        synchronize(device)
        result: dict[str, Any] = {}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            result["base_mb"] = round(torch.cuda.memory_allocated(device) / 2**20, 1)
        times: list[float] = []
        for _ in range(max(1, repeats)):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            if deadline is not None and len(times) >= min_repeats and time.perf_counter() > deadline:
                break
    result.update(median_ms=round(statistics.median(times), 4), min_ms=round(min(times), 4), n=len(times))
    if device.type == "cuda":
        result["peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        result["work_mb"] = round(result["peak_mb"] - result["base_mb"], 1)
    else:
        result["rss_peak_mb"] = _peak_rss_mb()
    return result


def tf32_flags() -> dict[str, bool | None]:
    """Current ``torch.backends.cudnn.allow_tf32`` and ``torch.backends.cuda.matmul.allow_tf32``."""
    flags: dict[str, bool | None] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, getter in (("cudnn.allow_tf32", lambda: torch.backends.cudnn.allow_tf32),
                             ("cuda.matmul.allow_tf32", lambda: torch.backends.cuda.matmul.allow_tf32)):
            try:
                flags[name] = bool(getter())
            except Exception:
                flags[name] = None
    return flags


def _set_tf32(cudnn: bool, matmul: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cuda.matmul.allow_tf32 = matmul


@contextlib.contextmanager
def exact_fp32(device: torch.device) -> Iterator[None]:
    """On CUDA, turn TF32 off for cuDNN convolutions and matmuls (exact-fp32 parity), then restore."""
    if device.type != "cuda":
        yield
        return
    before = tf32_flags()
    _set_tf32(False, False)
    try:
        yield
    finally:
        _set_tf32(bool(before["cudnn.allow_tf32"]), bool(before["cuda.matmul.allow_tf32"]))
