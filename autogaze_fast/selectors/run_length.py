"""``run-length``: RLT's rule (run-length tokenization). Patches are the finest scale's cells (the
ViT's patches; RLT never uses coarse cells). Frame 0 of a clip keeps every patch; in a later frame a
patch whose mean ``|Δ|`` against the same patch of the previous frame is at most ``threshold`` (grey
levels, channels averaged) repeats it and is dropped, any other patch is kept. With a budget
(a gazing ratio), a frame keeps at most that many: frame 0 its first patches in the spread order,
later frames their most changed patches.

The gaze dict gets ``run_lengths`` (aligned with ``gazing_pos``, 0 for pads): for each kept patch,
the frames it stands for, itself and the dropped frames of that patch after it, up to the clip's end.
"""

from __future__ import annotations

from typing import Any

import torch

from autogaze_fast.selectors.base import Selector, change_map, check_video
from autogaze_fast.selectors.frame_difference import check_threshold
from autogaze_fast.selectors.layout import GazeLayout
from autogaze_fast.selectors.patterns import spread_rank


def run_lengths(kept: torch.Tensor) -> torch.Tensor:
    """``(T, P)`` bool kept patches → ``(T, P)`` long: for a kept patch the number of frames from it to
    the next kept frame of the same patch (or the clip's end); 0 where not kept."""
    t = kept.shape[0]
    out = torch.zeros(kept.shape, dtype=torch.long)
    nxt = torch.full(kept.shape[1:], t, dtype=torch.long)
    for i in reversed(range(t)):
        out[i] = torch.where(kept[i], nxt - i, torch.zeros_like(nxt))
        nxt = torch.where(kept[i], torch.full_like(nxt, i), nxt)
    return out


class RunLength(Selector):
    """See the module docstring. ``threshold``: grey levels (default 1.0); ``budget`` optional."""

    name = "run-length"
    needs_budget = False

    def __init__(self, threshold: float = 1.0) -> None:
        self.threshold = check_threshold(threshold)

    def describe(self) -> dict[str, Any]:
        return {"selector": self.name, "threshold": self.threshold}

    def masks(self, video: torch.Tensor, layout: GazeLayout, budget: int | None) -> tuple[torch.Tensor, dict[str, Any]]:
        check_video(video, layout)
        b, t = video.shape[:2]
        grid = layout.grids[-1]
        fine = layout.tokens_per_scale[-1]
        cap = fine if budget is None else min(int(budget), fine)
        rank = spread_rank(grid)
        kept = torch.zeros(b, t, fine, dtype=torch.bool)
        for r, row in enumerate(video):
            kept[r, 0] = rank < cap
            if t > 1:
                change = torch.nn.functional.adaptive_avg_pool2d(change_map(row.float().cpu())[:, None], grid).flatten(1)
                moved = change > self.threshold
                if cap < fine:  # keep the most changed patches
                    top = torch.where(moved, change, torch.full_like(change, -1.0)).topk(cap, dim=-1).indices
                    moved = moved & torch.zeros_like(moved).scatter_(-1, top, True)
                kept[r, 1:] = moved
        mask = torch.zeros(b, t, layout.num_tokens, dtype=torch.bool)
        mask[..., layout.offsets[-1]:] = kept
        lengths = torch.zeros(b, t, layout.num_tokens, dtype=torch.long)
        lengths[..., layout.offsets[-1]:] = torch.stack([run_lengths(k) for k in kept])
        return mask.to(video.device), {"run_lengths_per_token": lengths}
