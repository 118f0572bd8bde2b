"""``frame-difference``: the EVS-like selector. Frame 0 of a clip takes the fixed coarse-to-fine
pattern; every later frame ranks cells by the mean ``|Δ|`` (grey levels, channels averaged) against
the previous frame and picks them with the change rule of :mod:`autogaze_fast.selectors.patterns`:
the finest scale while the change is concentrated, a coarser one where it is spread (the first scale,
finest to coarsest, at which the fewest cells holding ``coverage`` of the change fit the budget), the
rest of the budget on the finest scale's most changed cells."""

from __future__ import annotations

from typing import Any

import torch

from autogaze_fast.selectors.base import Selector, change_map, check_video
from autogaze_fast.selectors.layout import GazeLayout
from autogaze_fast.selectors.patterns import cell_means, choose_by_change, uniform_mask


def check_fraction(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def check_threshold(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"threshold must be a number >= 0 (grey levels, 0..255), got {value!r}")
    return float(value)


def select_by_change(maps: torch.Tensor, layout: GazeLayout, budget: int, coverage: float,
                     threshold: float | None) -> torch.Tensor:
    """Per frame of one row: the fixed pattern for frame 0, the change rule on ``maps`` after.

    Args:
        maps: ``(T - 1, S, S)`` per-pixel change of frames 1.. against their previous frame.
        threshold: with one, cells whose mean change is at most it count as unchanged and the
            budget is not filled beyond the changed cells.
    Returns:
        ``(T, N)`` bool.
    """
    rows = [uniform_mask(layout, budget)]
    scores = cell_means(maps, layout) if maps.shape[0] else []
    for i in range(maps.shape[0]):
        frame = [s[i] for s in scores]
        if threshold is not None:
            frame = [torch.where(f > threshold, f, torch.zeros_like(f)) for f in frame]
        rows.append(choose_by_change(frame, layout, budget, coverage, fill=threshold is None))
    return torch.stack(rows)


class FrameDifference(Selector):
    """See the module docstring.

    Args:
        coverage: fraction of a frame's change mass the chosen scale must hold (0.9).
        threshold: optional, in grey levels: cells whose mean ``|Δ|`` is at most it are not kept (the
            frame may then keep fewer tokens than the budget; without a gazing ratio the budget is N).
    """

    name = "frame-difference"

    def __init__(self, coverage: float = 0.9, threshold: float | None = None) -> None:
        self.coverage = check_fraction(coverage, "coverage")
        self.threshold = check_threshold(threshold)

    @property
    def needs_budget(self) -> bool:  # type: ignore[override]
        return self.threshold is None

    def describe(self) -> dict[str, Any]:
        return {"selector": self.name, "coverage": self.coverage, "threshold": self.threshold}

    def masks(self, video: torch.Tensor, layout: GazeLayout, budget: int | None) -> tuple[torch.Tensor, dict[str, Any]]:
        check_video(video, layout)
        budget = layout.num_tokens if budget is None and self.threshold is not None else budget
        if budget is None:
            raise ValueError("the 'frame-difference' selector needs a budget: pass gazing_ratio (e.g. 0.1) or a threshold")
        out = [select_by_change(change_map(row.float().cpu()), layout, budget, self.coverage, self.threshold)
               for row in video]
        return torch.stack(out).to(video.device), {}
