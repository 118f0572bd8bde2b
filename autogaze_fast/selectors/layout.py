"""The multi-scale token layout a selector fills, its budgets, and the gaze dict built from per-scale masks.

A frame of the layout is seen at every scale ``s`` of ``scales`` (ascending): resized to ``s × s``
and cut into ``g_s = s / patch_size`` × ``g_s`` cells, so cell ``(r, c)`` of scale ``s`` covers the
square ``[r, r + 1) · S / g_s × [c, c + 1) · S / g_s`` of the frame at its largest side ``S``. The
tokens of a frame are the cells of every scale, scales ascending, each grid row-major:
``index = offset_s + r · g_s + c`` (NVIDIA's AutoGaze: 32+64+112+224 with 16-px patches gives
4 + 16 + 49 + 196 = 265 tokens). ``gazing_pos`` counts over the clip: ``index + N · t``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from autogaze_fast.reference.resolution import positions_from_mask


@dataclass(frozen=True)
class GazeLayout:
    """Scales and patch size of a gaze (see the module docstring).

    Attributes:
        scales: ascending frame sides, e.g. ``(32, 64, 112, 224)``.
        patch_size: the side of a cell at its own scale (16).
    """

    scales: tuple[int, ...] = (32, 64, 112, 224)
    patch_size: int = 16

    def __post_init__(self) -> None:
        scales = tuple(int(s) for s in self.scales)
        object.__setattr__(self, "scales", scales)
        if not scales or list(scales) != sorted(set(scales)) or self.patch_size < 1:
            raise ValueError(f"scales must be distinct ascending sides and patch_size >= 1, got {scales}, {self.patch_size}")
        bad = [s for s in scales if s % self.patch_size]
        if bad:
            raise ValueError(f"scales {list(scales)}: {bad} not a multiple of the patch size {self.patch_size}")

    @classmethod
    def from_config(cls, config: Any) -> GazeLayout:
        """The layout of an :class:`~autogaze_fast.config.AutoGazeConfig`, a
        :class:`~autogaze_fast.siglip_config.SiglipVisionConfig` or anything with ``scales`` and
        ``tokens_per_scale`` (square grids of one patch size)."""
        scales, tokens = list(config.scales), list(config.tokens_per_scale)
        grids = [math.isqrt(n) for n in tokens]
        patch = scales[-1] // grids[-1]
        if any(g * g != n or g * patch != s for g, n, s in zip(grids, tokens, scales)):
            raise ValueError(f"scales {scales} with {tokens} tokens per scale are not square grids of one patch size")
        return cls(tuple(scales), patch)

    @property
    def side(self) -> int:
        """``S``: the largest scale, the side frames are resized to before any statistic is taken."""
        return self.scales[-1]

    @property
    def grids(self) -> list[int]:
        return [s // self.patch_size for s in self.scales]

    @property
    def tokens_per_scale(self) -> list[int]:
        return [g * g for g in self.grids]

    @property
    def num_tokens(self) -> int:
        """N, the tokens of one frame."""
        return sum(self.tokens_per_scale)

    @property
    def offsets(self) -> list[int]:
        out, total = [], 0
        for n in self.tokens_per_scale:
            out.append(total)
            total += n
        return out

    def budget(self, ratio: float) -> int:
        """Tokens per frame for a gazing ratio, as AutoGaze counts them: ``max(int(ratio · N), 1)``."""
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ValueError(f"gazing_ratio must be a number in (0, 1], got {ratio!r}")
        return max(int(ratio * self.num_tokens), 1)

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """``(..., N)`` → one ``(..., n_s)`` tensor per scale."""
        return list(flat.split(self.tokens_per_scale, dim=-1))


NVIDIA_LAYOUT = GazeLayout()
"""AutoGaze's layout: scales 32+64+112+224, 16-px patches, N = 265."""


def gaze_from_masks(masks: Sequence[torch.Tensor] | torch.Tensor, layout: GazeLayout, **extra: Any) -> dict:
    """The gaze dict AutoGaze returns, from which cells are kept.

    Args:
        masks: per scale ``(B, T, n_s)`` 0/1 (or bool), or one ``(B, T, N)`` tensor of all scales.
        layout: the token layout.
        extra: more keys to put in the dict (e.g. ``run_lengths``).
    Returns:
        dict with ``gazing_pos`` ``(B, Σ n_t)`` long (kept tokens of each frame in ascending index
        order, ``+ N · t``; a frame's row padded on the right up to the batch's largest count with
        ``-1 + N · t``), ``if_padded_gazing`` ``(B, Σ n_t)`` bool, ``num_gazing_each_frame`` ``(T,)`` long
        (the batch's largest count per frame), ``gazing_mask`` (per scale ``(B, T, n_s)`` float 0/1),
        ``scales``, ``num_vision_tokens_each_frame`` N, ``frame_sampling_rate`` 1, and None for the
        model-only keys (``log_action_probs``, ``task_loss_prediction``, ``task_loss_requirement``,
        the streaming caches); ``has_task_loss_requirement`` False.
    """
    full = masks if isinstance(masks, torch.Tensor) else torch.cat([m.float() for m in masks], dim=-1)
    n = layout.num_tokens
    if full.dim() != 3 or full.shape[-1] != n:
        raise ValueError(f"masks must be (B, T, N={n}) over the layout's scales, got {tuple(full.shape)}")
    full = (full != 0)
    b, t = full.shape[:2]
    pos, pads = positions_from_mask(full.flatten(0, 1))
    pos, pads = pos.unflatten(0, (b, t)), pads.unflatten(0, (b, t))
    counts = full.sum(-1).amax(dim=0) if b else torch.zeros(t, dtype=torch.long)
    frames = [pos[:, i, :c] + n * i for i, c in enumerate(counts.tolist())]
    out = {
        "gazing_pos": torch.cat(frames, dim=1) if frames else pos.new_zeros(b, 0),
        "if_padded_gazing": torch.cat([pads[:, i, :c] for i, c in enumerate(counts.tolist())], dim=1)
        if frames else pads.new_zeros(b, 0),
        "num_gazing_each_frame": counts.long(),
        "gazing_mask": layout.split(full.float()),
        "scales": list(layout.scales),
        "num_vision_tokens_each_frame": n,
        "frame_sampling_rate": 1,
        "log_action_probs": None,
        "task_loss_prediction": None,
        "has_task_loss_requirement": False,
        "task_loss_requirement": None,
        "past_key_values": None,
        "past_input_embeds": None,
        "past_attention_mask": None,
        "past_conv_values": None,
    }
    out.update(extra)
    return out


def kept_per_frame(gaze: dict) -> torch.Tensor:
    """``(B, T)`` long: the real (not padded) tokens of each frame of a gaze dict."""
    pads = gaze["if_padded_gazing"].bool().split(gaze["num_gazing_each_frame"].tolist(), dim=1)
    return torch.stack([(~p).sum(1) for p in pads], dim=1)
