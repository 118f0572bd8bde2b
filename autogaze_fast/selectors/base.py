"""The interface every pixel-based selector implements, and the registry of their names.

A selector reads a clip at the layout's largest side (``(B, T, 3, S, S)`` float RGB in 0..255,
frames squashed to a square as AutoGaze squashes them) and a per-frame token budget, and says which
cells of every scale it keeps: a ``(B, T, N)`` bool mask, the layout's tokens in order. The gaze dict
is then built from the mask (:func:`autogaze_fast.selectors.layout.gaze_from_masks`), so every
selector's output has AutoGaze's format. Rows of a batch (videos, or the tiles of a frame) are
selected independently.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from autogaze_fast.selectors.layout import GazeLayout


class Selector:
    """Base class: subclasses set ``name`` and implement :meth:`masks`.

    Attributes:
        name: the registry name (``--selector NAME``).
        needs_budget: True when a call must give a budget (a gazing ratio); False when the selector
            has a threshold of its own (``run-length``).
    """

    name: ClassVar[str] = ""
    needs_budget: ClassVar[bool] = True

    def masks(self, video: torch.Tensor, layout: GazeLayout, budget: int | None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Choose cells.

        Args:
            video: ``(B, T, 3, S, S)`` float32 RGB in 0..255, ``S = layout.side``.
            layout: the token layout.
            budget: most tokens per frame, or None (only where ``needs_budget`` is False).
        Returns:
            ``(B, T, N)`` bool kept tokens, and extra entries for the gaze dict.
        """
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The settings that change the gaze (for result tables and config hashes)."""
        return {"selector": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "selector")
        return f"{type(self).__name__}({args})"


def check_video(video: torch.Tensor, layout: GazeLayout) -> None:
    """Refuse anything but ``(B, T, 3, S, S)`` float frames at the layout's side."""
    if not isinstance(video, torch.Tensor) or video.dim() != 5 or video.shape[2] != 3 \
            or tuple(video.shape[-2:]) != (layout.side, layout.side) or not video.is_floating_point():
        raise ValueError(f"a selector reads (B, T, 3, {layout.side}, {layout.side}) float frames in 0..255, got "
                         f"{getattr(video, 'shape', type(video).__name__)}")
    if video.shape[0] == 0 or video.shape[1] == 0:
        raise ValueError(f"the clip is empty: shape {tuple(video.shape)}")


def need_budget(selector: Selector, budget: int | None, layout: GazeLayout) -> int:
    """The budget, or N with no budget where the selector has a threshold of its own."""
    if budget is None:
        if selector.needs_budget:
            raise ValueError(f"the {selector.name!r} selector needs a budget: pass gazing_ratio (e.g. 0.1)")
        return layout.num_tokens
    return int(budget)


def change_map(frames: torch.Tensor) -> torch.Tensor:
    """``(T, 3, S, S)`` → ``(T - 1, S, S)``: mean over channels of ``|frame_t - frame_{t-1}|``."""
    return (frames[1:] - frames[:-1]).abs().mean(dim=1)
