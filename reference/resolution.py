"""Any-resolution gazing (SPEC §7): cut a large video into tiles the gaze model can read, then
stitch the per-tile gazing back into the target model's multi-scale token grid.

Example: target scales [56, 112, 196, 392] with patch 14 give grids 4, 8, 14, 28 per side; the
model's largest grid is 14, so a 392×392 video becomes 2×2 tiles of 196×196, each gazed
independently, and the masks are stitched into 16 + 64 + 196 + 784 tokens per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from autogaze_fast.config import AutoGazeConfig


@dataclass
class Tiling:
    tile_grid: list[int]  # per-scale grid side of one tile (the model's own grids)
    target_grid: list[int]  # per-scale grid side of the target model
    tiles_h: int
    tiles_w: int


def needs_tiling(config: AutoGazeConfig, target_scales: list[int], target_patch_size: int) -> bool:
    """False when the target layout already equals the model's (then tiling is skipped, as upstream)."""
    same = list(target_scales) == config.scales and [
        (s // target_patch_size) ** 2 for s in target_scales
    ] == config.tokens_per_scale
    return not same


def tile_video(video: torch.Tensor, config: AutoGazeConfig, target_scales: list[int],
               target_patch_size: int) -> tuple[torch.Tensor, Tiling]:
    """Pad ``video`` (B, T, C, H, W) with H = W = max(target_scales) and cut it into tiles
    → ((B·nh·nw), T, C, h, w) in (b, row, column) order."""
    b, t, c, h, w = video.shape
    if not (h == w == target_scales[-1]):
        raise ValueError(
            f"for target_scales {list(target_scales)} the video must be {target_scales[-1]}x{target_scales[-1]} "
            f"(the largest target scale), got {h}x{w}; resize it first"
        )
    if len(target_scales) != len(config.scales):
        raise ValueError(f"target_scales has {len(target_scales)} scales but the gaze model has {len(config.scales)} "
                         f"({config.scales})")
    tile_grid = [int(n**0.5) for n in config.tokens_per_scale]
    target_grid = [s // target_patch_size for s in target_scales]
    tiles_h = math.ceil(target_grid[-1] / tile_grid[-1])
    tiles_w = math.ceil(target_grid[-1] / tile_grid[-1])
    pad_h = tiles_h * tile_grid[-1] * target_patch_size - h
    pad_w = tiles_w * tile_grid[-1] * target_patch_size - w
    video = F.pad(video, (0, pad_w, 0, pad_h))
    tiles = rearrange(video, "b t c (nh sh) (nw sw) -> (b nh nw) t c sh sw", nh=tiles_h, nw=tiles_w)
    return tiles, Tiling(tile_grid, target_grid, tiles_h, tiles_w)


def positions_from_mask(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mask (R, N) 0/1 → gazed indices in ascending order (R, M), padded with -1, and pad flags (R, M);
    M is the largest row count."""
    mask = mask.long()
    rows, n = mask.shape
    idx = torch.arange(n, device=mask.device).expand(rows, n)
    order = ((1 - mask) * n + idx).argsort(dim=1, stable=True)
    m = int(mask.sum(1).max().item()) if rows else 0
    top = idx.gather(1, order)[:, :m]
    pads = torch.arange(m, device=mask.device)[None] >= mask.sum(1, keepdim=True)
    return top.masked_fill(pads, -1), pads


def untile_outputs(out: dict, tiling: Tiling) -> dict:
    """Stitch per-tile masks into the target grid, crop the padding, and rebuild ``gazing_pos``,
    ``if_padded_gazing`` and ``num_gazing_each_frame`` from the masks (ascending index order per
    frame; pads = -1 + N·t). ``log_action_probs`` and ``task_loss_prediction`` are dropped, as
    upstream does, since their order no longer matches."""
    masks = []
    for mask, tile, target in zip(out["gazing_mask"], tiling.tile_grid, tiling.target_grid):
        grid = rearrange(mask, "(b nh nw) t (sh sw) -> b t (nh sh) (nw sw)",
                         nh=tiling.tiles_h, nw=tiling.tiles_w, sh=tile, sw=tile)
        masks.append(grid[:, :, :target, :target].flatten(-2))
    n = sum(m.shape[-1] for m in masks)
    full = torch.cat(masks, dim=-1)
    b, t = full.shape[:2]
    pos, pads = positions_from_mask(full.flatten(0, 1))
    pos, pads = pos.unflatten(0, (b, t)), pads.unflatten(0, (b, t))
    counts = (~pads).sum(-1).max(dim=0).values
    out = dict(out)
    out["gazing_pos"] = torch.cat([pos[:, i, :c] + n * i for i, c in enumerate(counts.tolist())], dim=1)
    out["if_padded_gazing"] = torch.cat([pads[:, i, :c] for i, c in enumerate(counts.tolist())], dim=1)
    out["num_gazing_each_frame"] = counts
    out["num_vision_tokens_each_frame"] = n
    out["gazing_mask"] = masks
    out.pop("log_action_probs", None)
    out.pop("task_loss_prediction", None)
    return out
