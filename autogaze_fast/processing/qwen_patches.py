"""The Qwen-VL vision towers' patch layout: normalised frames ↔ flattened patch rows.

Qwen2-VL, Qwen2.5-VL and Qwen3-VL cut a clip into *temporal patches* of ``temporal_patch_size``
frames (2) and ``patch_size`` pixels (14; Qwen3-VL 16) and feed the tower one row per patch, the
rows ordered so that the ``merge_size × merge_size`` (2×2) patches that the PatchMerger fuses into
one LLM token are consecutive (a *merge unit*). For a clip of ``grid_t × grid_h × grid_w`` patches
the row of patch ``(t, h, w)`` is::

    t · grid_h · grid_w  +  ((h // m) · (grid_w // m) + w // m) · m²  +  (h % m) · m + w % m

and each row holds the pixels as ``(channel, frame in the pair, y, x)``, i.e.
``C · temporal_patch_size · patch_size²`` values. A clip whose frame count is not a multiple of
``temporal_patch_size`` is padded by repeating its last frame.
"""

from __future__ import annotations

import torch

__all__ = ["patchify_frames", "unit_grid", "unpatchify_rows"]


def unit_grid(grid_thw: tuple[int, int, int], merge_size: int = 2) -> tuple[int, int, int]:
    """``(grid_t, grid_h // m, grid_w // m)``: the merge units of a clip of ``grid_thw`` patches."""
    t, h, w = (int(v) for v in grid_thw)
    return t, h // merge_size, w // merge_size


def patchify_frames(frames: torch.Tensor, *, patch_size: int = 14, temporal_patch_size: int = 2,
                    merge_size: int = 2) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Flatten normalised frames into the towers' patch rows.

    Args:
        frames: ``(T, C, H, W)`` float, already resized and normalised; H and W multiples of
            ``patch_size · merge_size``.
    Returns:
        ``(grid_t · grid_h · grid_w, C · temporal_patch_size · patch_size²)`` rows and the clip's
        ``(grid_t, grid_h, grid_w)``.
    Raises:
        ValueError: not 4-D, or a side that is not a multiple of ``patch_size · merge_size``.
    """
    if frames.dim() != 4:
        raise ValueError(f"frames must be T x C x H x W, got shape {tuple(frames.shape)}")
    t, c, h, w = frames.shape
    p, tp, m = patch_size, temporal_patch_size, merge_size
    if t == 0:
        raise ValueError("frames holds no frame (T = 0)")
    if h % (p * m) or w % (p * m):
        raise ValueError(f"frames are {h}x{w} (H x W): both sides must be multiples of patch_size * merge_size = "
                         f"{p * m}; resize them first (the Qwen video processor's smart resize does)")
    if t % tp:
        frames = torch.cat([frames, frames[-1:].expand(tp - t % tp, -1, -1, -1)])
    gt, gh, gw = frames.shape[0] // tp, h // p, w // p
    x = frames.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
    # (gt, unit row, unit col, row in unit, col in unit, channel, frame in pair, y, x)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * tp * p * p), (gt, gh, gw)


def unpatchify_rows(rows: torch.Tensor, grid_thw: tuple[int, int, int], *, channels: int = 3, patch_size: int = 14,
                    temporal_patch_size: int = 2, merge_size: int = 2) -> torch.Tensor:
    """Inverse of :func:`patchify_frames`: ``(grid_t·grid_h·grid_w, C·tp·p²)`` rows → ``(grid_t·tp, C, H, W)``."""
    gt, gh, gw = (int(v) for v in grid_thw)
    p, tp, m, c = patch_size, temporal_patch_size, merge_size, channels
    if rows.shape != (gt * gh * gw, c * tp * p * p):
        raise ValueError(f"rows have shape {tuple(rows.shape)}, expected {(gt * gh * gw, c * tp * p * p)} for grid "
                         f"{(gt, gh, gw)}")
    x = rows.reshape(gt, gh // m, gw // m, m, m, c, tp, p, p)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)
    return x.reshape(gt * tp, c, gh * p, gw * p)
