"""The two content-blind baselines: ``uniform`` (the same cells every frame) and ``random`` (seeded)."""

from __future__ import annotations

from typing import Any

import torch

from autogaze_fast.selectors.base import Selector, check_video, need_budget
from autogaze_fast.selectors.layout import GazeLayout
from autogaze_fast.selectors.patterns import uniform_mask


class Uniform(Selector):
    """The fixed coarse-to-fine pattern (:func:`~autogaze_fast.selectors.patterns.uniform_mask`),
    the same cells in every frame: every coarsest cell first, then the next scale, ..., the last
    scale reached spread over the frame. Scales are chosen by the budget alone."""

    name = "uniform"

    def masks(self, video: torch.Tensor, layout: GazeLayout, budget: int | None) -> tuple[torch.Tensor, dict[str, Any]]:
        check_video(video, layout)
        b, t = video.shape[:2]
        mask = uniform_mask(layout, need_budget(self, budget, layout))
        return mask.to(video.device).expand(b, t, -1).clone(), {}


class RandomCells(Selector):
    """``budget`` cells per frame drawn uniformly without replacement from all N tokens of every
    scale (so scales in proportion to their cell counts), a fresh draw each frame and row,
    reproducible by ``seed`` (the same seed and shapes give the same cells)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def describe(self) -> dict[str, Any]:
        return {"selector": self.name, "seed": self.seed}

    def masks(self, video: torch.Tensor, layout: GazeLayout, budget: int | None) -> tuple[torch.Tensor, dict[str, Any]]:
        check_video(video, layout)
        b, t = video.shape[:2]
        k = min(need_budget(self, budget, layout), layout.num_tokens)
        generator = torch.Generator().manual_seed(self.seed)
        scores = torch.rand(b, t, layout.num_tokens, generator=generator)
        mask = torch.zeros(b, t, layout.num_tokens, dtype=torch.bool)
        mask.scatter_(-1, scores.topk(k, dim=-1).indices, True)
        return mask.to(video.device), {}
