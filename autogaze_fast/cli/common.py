"""What the ``autogaze-fast`` commands share: the default checkpoint, loud warnings, loading a
checkpoint or (when allowed) a seeded random stand-in, the gaze options' parsing, the settings line
each command prints first, and the gaze summary it prints last."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from autogaze_fast.defaults import AUTO, TASK_LOSS_REQUIREMENT
from autogaze_fast.loading import CheckpointError

DEFAULT_MODEL = "nvidia/AutoGaze"

T = TypeVar("T")


def warn(message: str) -> None:
    """Write ``message`` to stderr between two bars of ``!``."""
    bar = "!" * 78
    sys.stderr.write(f"{bar}\n{message}\n{bar}\n")


def checkpoint_or_random(load: Callable[[], T], make_random: Callable[[], T], *, allow_random: bool, what: str,
                         refusal: str, fallback: str) -> tuple[T, bool]:
    """``(load(), False)``, or ``(make_random(), True)`` when the checkpoint cannot be had.

    Args:
        load: loads the real thing; raises :class:`~autogaze_fast.loading.CheckpointError` when the
            checkpoint is missing or unreadable (any other error goes on as it is).
        make_random: builds the seeded random stand-in.
        allow_random: without it a ``CheckpointError`` is raised again, ``refusal`` appended to its
            message (how to get the checkpoint, or how to allow the stand-in).
        what: what could not be loaded, as the warning names it (e.g. ``"'nvidia/AutoGaze'"``).
        fallback: the warning's last paragraph (what the stand-in is, and that it is meaningless).
    """
    try:
        return load(), False
    except CheckpointError as e:
        if not allow_random:
            raise CheckpointError(f"{e}{refusal}") from None
        warn(f"Could not load {what}:\n{e}\n\n{fallback}")
        return make_random(), True


REQUIREMENT_HELP = (f"stop gazing a frame once the predicted task loss <= this; 'none' (or 'off'): no stop; 'auto' "
                    f"(default): {TASK_LOSS_REQUIREMENT:g} (upstream's recommended stop) with a checkpoint, no stop with "
                    "random weights (their task-loss predictions are meaningless)")


def requirement_arg(text: str) -> float | str | None:
    """``--task-loss-requirement``: a number, ``none``/``off`` (no stop) or ``auto``."""
    word = text.strip().lower()
    if word == AUTO:
        return AUTO
    if word in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number (e.g. 0.7), 'none' or 'auto', got {text!r}") from None


def print_settings(command: str, settings: dict[str, Any]) -> None:
    """The settings in effect, one line, printed before the command's work starts."""
    print(f"{command} settings: " + "  ".join(f"{k}={v}" for k, v in settings.items()), flush=True)


def summarise(outputs: list[dict]) -> tuple[list[int], list[int], int]:
    """Per-frame real gaze counts, per-frame counts with pads, and N (tokens per frame) of gaze outputs."""
    real, padded = [], []
    n = outputs[0]["num_vision_tokens_each_frame"]
    for out in outputs:
        counts = out["num_gazing_each_frame"].tolist()
        for pads in out["if_padded_gazing"].split(counts, dim=1):
            real.append(int((~pads[0]).sum()))
            padded.append(pads.shape[1])
    return real, padded, n


def report(real: list[int], padded: list[int] | None, n: int, seconds: float, frames: int, impl: str,
           n_means: str | None = None) -> None:
    """Print the gaze summary: per-frame counts (pads excluded), the kept-token ratio and the timing;
    ``n_means`` says what N is made of."""
    print(f"impl={impl}  frames={frames}  tokens/frame N={n}" + (f" ({n_means})" if n_means else ""))
    print("gazed tokens per frame (pads excluded): " + " ".join(str(c) for c in real))
    kept = sum(real) / (n * len(real))
    print(f"kept-token ratio: {kept:.3f} ({sum(real)} of {n * len(real)} multi-scale tokens)")
    print(f"gaze time: {seconds:.2f} s ({frames / seconds:.1f} frames/s)")
