"""Selector names, their options, and one call for a clip: :func:`select`.

    >>> from autogaze_fast.selectors import select
    >>> gaze = select("frame-difference", frames, gazing_ratio=0.1)     # frames (T, H, W, 3) uint8
    >>> gaze["gazing_pos"], gaze["if_padded_gazing"], gaze["num_gazing_each_frame"], gaze["gazing_mask"]
    >>> gaze = select("autogaze", frames, gazing_ratio=0.1, model=model)  # the model itself
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from autogaze_fast.processing.autogaze import NVIDIA_PREPROCESSING, AutoGazeImageProcessor
from autogaze_fast.selectors.base import Selector
from autogaze_fast.selectors.frame_difference import FrameDifference
from autogaze_fast.selectors.layout import NVIDIA_LAYOUT, GazeLayout, gaze_from_masks
from autogaze_fast.selectors.motion_vectors import MotionVectors
from autogaze_fast.selectors.run_length import RunLength
from autogaze_fast.selectors.simple import RandomCells, Uniform

HEURISTICS: dict[str, type[Selector]] = {cls.name: cls for cls in (Uniform, RandomCells, FrameDifference, RunLength,
                                                                    MotionVectors)}
SELECTORS = ("autogaze",) + tuple(HEURISTICS)
"""Every name ``select`` and ``--selector`` take."""


def make_selector(name: str | Selector, **options: Any) -> Selector:
    """The heuristic selector ``name`` built with ``options`` (``seed`` for ``random``; ``threshold``,
    ``coverage`` and ``codec`` where the selector has them; None values are left out)."""
    if isinstance(name, Selector):
        if options:
            raise ValueError("options go to a selector built by name; this one is built already")
        return name
    if name == "autogaze":
        raise ValueError("'autogaze' is the model itself: pass the AutoGaze model (select(..., model=model))")
    if name not in HEURISTICS:
        raise ValueError(f"unknown selector {name!r}; choose one of {', '.join(SELECTORS)}")
    cls = HEURISTICS[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    options = {k: v for k, v in options.items() if v is not None}
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(f"the {name!r} selector takes {sorted(accepted) or 'no options'}, not {sorted(unknown)}")
    return cls(**options)


def frames_at_side(frames: Any, side: int) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 frames (numpy or torch) → ``(1, T, 3, side, side)`` float32 in 0..255,
    squashed to the square with an antialiased bilinear resize (unchanged at that size)."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"frames must be a (T, H, W, 3) uint8 clip, got {getattr(frames, 'shape', type(frames).__name__)} "
                         f"{getattr(frames, 'dtype', '')}")
    if frames.shape[0] == 0:
        raise ValueError("the clip has no frames")
    video = frames.permute(0, 3, 1, 2).float()
    if tuple(video.shape[-2:]) != (side, side):
        video = F.interpolate(video, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        video = video.round().clamp(0, 255)
    return video[None]


def gaze_dict(selector: Selector, video: torch.Tensor, layout: GazeLayout, budget: int | None) -> dict:
    """Run a heuristic on ``(B, T, 3, S, S)`` frames in 0..255 and build AutoGaze's gaze dict.

    Extra ``*_per_token`` maps ``(B, T, N)`` are returned aligned with ``gazing_pos`` under the
    name without the suffix (0 at pads), e.g. ``run_lengths``.
    """
    masks, extra = selector.masks(video, layout, budget)
    out = gaze_from_masks(masks, layout)
    n = layout.num_tokens
    frame = torch.arange(masks.shape[1]).repeat_interleave(out["num_gazing_each_frame"].cpu())
    index = (out["gazing_pos"].cpu() - n * frame[None]).clamp(0, n - 1)
    pads = out["if_padded_gazing"].cpu()
    for key, value in extra.items():
        if key.endswith("_per_token"):
            rows = torch.arange(value.shape[0])[:, None]
            aligned = value[rows, frame[None], index]
            out[key.removesuffix("_per_token")] = torch.where(pads, torch.zeros_like(aligned), aligned)
        else:
            out[key] = value
    return out


def select(name: str | Selector, frames: Any, *, gazing_ratio: float | None = None, threshold: float | None = None,
           layout: GazeLayout | None = None, model: Any = None, processor: AutoGazeImageProcessor | None = None,
           **options: Any) -> dict:
    """Gaze one clip with a selector; returns the gaze dict AutoGaze returns.

    Args:
        name: a name of :data:`SELECTORS` or a built :class:`Selector`.
        frames: ``(T, H, W, 3)`` uint8 (numpy or torch). ``motion-vectors`` also takes a video file
            path, whose own motion vectors it reads.
        gazing_ratio: the budget, a fraction of N tokens per frame (``max(int(ratio · N), 1)`` tokens).
        threshold: ``run-length``'s change threshold (grey levels), ``frame-difference``'s and
            ``motion-vectors``' optional one; for ``autogaze`` the task-loss requirement.
        layout: the token layout (default: the model's, else NVIDIA's 32+64+112+224 / 16).
        model, processor: for ``autogaze``: the :class:`~autogaze_fast.AutoGaze` and its processor
            (default: NVIDIA's preprocessing).
        options: the selector's own (``seed``, ``coverage``, ``codec``).
    Returns:
        dict with ``gazing_pos``, ``if_padded_gazing``, ``num_gazing_each_frame``, ``gazing_mask``, ...
        (see :func:`autogaze_fast.selectors.layout.gaze_from_masks`), plus ``run_lengths`` for ``run-length``.
    """
    if name == "autogaze":
        if model is None:
            raise ValueError("the 'autogaze' selector needs model=AutoGaze (e.g. AutoGaze.from_pretrained(DIR))")
        if options:
            raise ValueError(f"the 'autogaze' selector takes no options {sorted(options)}")
        processor = processor or AutoGazeImageProcessor.from_dict(NVIDIA_PREPROCESSING)
        video = processor(frames).pixel_values[None].to(next(model.parameters()).device)
        with torch.inference_mode():
            return model({"video": video}, gazing_ratio=gazing_ratio, task_loss_requirement=threshold, generate_only=True)
    if model is not None:
        layout = layout or GazeLayout.from_config(model.config)
    layout = layout or NVIDIA_LAYOUT
    selector = make_selector(name, threshold=threshold, **options) if not isinstance(name, Selector) else name
    budget = None if gazing_ratio is None else layout.budget(gazing_ratio)
    if isinstance(frames, (str, os.PathLike)):
        if not isinstance(selector, MotionVectors):
            raise ValueError(f"only the motion-vectors selector reads a file; decode it first for {selector.name!r} "
                             "(autogaze_fast.media.video.read_video)")
        masks = selector.masks_from_file(frames, layout, budget)
        return gaze_from_masks(masks, layout)
    return gaze_dict(selector, frames_at_side(frames, layout.side), layout, budget)
