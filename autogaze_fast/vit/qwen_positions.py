"""LLM-side M-RoPE position ids for gazed Qwen-VL video tokens (no LLM here: the ids an LLM takes).

Qwen2-VL / Qwen2.5-VL / Qwen3-VL language models give every token three rotary positions
``(t, h, w)``. A text token's three are equal and count up; a video's merged tokens sit on their
grid: the token of unit ``(t, i, j)`` gets ``start + (time(t), i, j)``, where ``start`` is one past
the largest position before the video. After a video, text resumes one past the largest position
of the video's *whole* grid.

With gazing only the kept units' tokens are in the sequence, each keeping its dense position, and
the text after the video resumes exactly where it would after the dense clip. So every id is the
id that token has in the dense sequence (:func:`mrope_position_ids` with every unit kept equals
transformers' ``get_rope_index``, tested on fixtures), the dropped tokens are simply absent.

``time(t)`` per family, as transformers 4.57.6 computes it:

* Qwen2.5-VL: ``t · int(second_per_grid_t) · tokens_per_second`` (transformers casts
  ``second_per_grid_t``, the seconds one temporal patch spans, to an integer before scaling, so
  ``0.5`` gives ``time(t) = 0``; we keep its numbers, which are what the model was run with);
* Qwen2-VL: ``t`` (``time_scale=1``, no seconds);
* Qwen3-VL: each temporal patch is its own video piece behind its timestamp text
  (``<t1> <vision_start> frame <vision_end> <t2> ...``), so ``time = 0``: split a clip with
  :func:`split_temporal_patches`.

A ``<|vision_start|>`` / ``<|vision_end|>`` token is text here: count it in the text lengths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["VideoTokens", "mrope_position_ids", "split_temporal_patches"]


@dataclass
class VideoTokens:
    """One clip's merged tokens in the order the LLM sequence holds them.

    Attributes:
        positions: ``(U_kept, 3)`` int ``(t, i, j)`` of every kept token on the clip's unit grid (the
            tower output's ``positions`` for one clip).
        unit_grid: ``(grid_t, H_u, W_u)``: the clip's whole unit grid (``grid_thw`` with h, w divided by 2).
        second_per_grid_t: seconds one temporal patch spans (Qwen2.5-VL: ``temporal_patch_size / fps``).
        time_scale: ``time(t) = t · int(second_per_grid_t) · time_scale``; Qwen2.5-VL: its
            ``tokens_per_second`` (``None``: use :func:`mrope_position_ids`'s); Qwen2-VL: 1 with
            ``second_per_grid_t=1``.
    """

    positions: torch.Tensor
    unit_grid: tuple[int, int, int]
    second_per_grid_t: float = 1.0
    time_scale: float | None = None

    @classmethod
    def from_output(cls, output: Any, clip: int = 0, *, second_per_grid_t: float = 1.0, merge_size: int = 2,
                    time_scale: float | None = None) -> VideoTokens:
        """Clip ``clip``'s tokens of a tower's :class:`~autogaze_fast.vit.qwen_common.QwenVisionOutput`."""
        t, h, w = (int(v) for v in output.grid_thw[clip])
        return cls(output.positions[output.clip_index == clip].cpu(), (t, h // merge_size, w // merge_size),
                   second_per_grid_t, time_scale)

    def __post_init__(self) -> None:
        self.positions = torch.as_tensor(self.positions).long().reshape(-1, 3)
        self.unit_grid = tuple(int(v) for v in self.unit_grid)  # type: ignore[assignment]
        if len(self.unit_grid) != 3 or min(self.unit_grid) < 1:
            raise ValueError(f"unit_grid must be (grid_t, H_u, W_u) of positive ints, got {self.unit_grid}")
        if len(self.positions) and ((self.positions < 0).any()
                                    or (self.positions >= torch.tensor(self.unit_grid)).any()):
            raise ValueError(f"positions must lie on the unit grid {self.unit_grid}")


def _time_index(t: torch.Tensor, video: VideoTokens, tokens_per_second: float) -> torch.Tensor:
    scale = tokens_per_second if video.time_scale is None else video.time_scale
    return torch.trunc(t.double() * math.trunc(video.second_per_grid_t) * scale).long()


def mrope_position_ids(pieces: Sequence[int | VideoTokens], *, tokens_per_second: float = 2.0
                       ) -> tuple[torch.Tensor, int]:
    """Position ids of one sequence made of text runs and gazed videos, in order.

    Args:
        pieces: text run lengths (``int``, special tokens included) and :class:`VideoTokens`.
        tokens_per_second: the vision config's ``tokens_per_second`` (Qwen2.5-VL checkpoints: 2).
    Returns:
        ``(3, L)`` int64 ids (L = text lengths + kept tokens) and the rope delta
        ``max id + 1 - L`` that generation adds to later positions (transformers' ``rope_deltas``).
    """
    chunks: list[torch.Tensor] = []
    start = 0
    for piece in pieces:
        if isinstance(piece, VideoTokens):
            t, i, j = piece.positions.unbind(-1)
            chunks.append(torch.stack([_time_index(t, piece, tokens_per_second), i, j]) + start)
            gt, hu, wu = piece.unit_grid
            last = int(_time_index(torch.tensor(gt - 1), piece, tokens_per_second))
            start += max(last, hu - 1, wu - 1) + 1
        else:
            n = int(piece)
            if n < 0:
                raise ValueError(f"a text run's length must be >= 0, got {n}")
            chunks.append(torch.arange(start, start + n).expand(3, -1))
            start += n
    ids = torch.cat(chunks, dim=1) if chunks else torch.zeros(3, 0, dtype=torch.long)
    return ids, start - ids.shape[1]


def split_temporal_patches(video: VideoTokens) -> list[VideoTokens]:
    """Qwen3-VL's layout: one piece per temporal patch, each a ``(1, H_u, W_u)`` grid at time 0."""
    gt, hu, wu = video.unit_grid
    t = video.positions[:, 0]
    pieces = []
    for k in range(gt):
        rows = video.positions[t == k].clone()
        rows[:, 0] = 0
        pieces.append(VideoTokens(rows, (1, hu, wu), video.second_per_grid_t, 0.0))
    return pieces
