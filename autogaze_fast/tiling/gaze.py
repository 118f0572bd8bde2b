"""Gaze a video of any size tile by tile: clips of ``max_num_frames``, tiles in batches of
``tile_batch_size`` (bounded memory), per-tile gaze merged, masks stitched onto the whole frame.

Used by ``AutoGaze.forward(..., tiles=...)``; see :mod:`autogaze_fast.tiling.grid` for the plans.
Each tile is gazed exactly as if it were gazed alone (rows of a generation batch are independent:
a row that stops early only emits pads), so the result does not depend on ``tile_batch_size``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from autogaze_fast.config import AutoGazeConfig
from autogaze_fast.tiling.grid import TileGrid


def tile_layout(config: AutoGazeConfig, target_scales: Sequence[int] | None,
                target_patch_size: int | None) -> tuple[int, int]:
    """``(tile_size, patch_size)`` of one tile: the largest target scale and the target patch, or the
    model's own largest scale and patch (224 and 16 for the NVIDIA model).

    Raises:
        ValueError: a target scale that is not a multiple of the target patch size, or a model
            whose per-scale token counts are not square grids of one patch size.
    """
    if target_scales is not None:
        bad = [s for s in target_scales if s % target_patch_size]
        if bad:
            raise ValueError(f"target_scales {list(target_scales)}: {bad} not a multiple of target_patch_size "
                             f"{target_patch_size}; every scale must hold whole patches")
        return int(target_scales[-1]), int(target_patch_size)
    grids = [math.isqrt(n) for n in config.tokens_per_scale]
    patch = config.scales[-1] // grids[-1]
    if any(g * g != n or g * patch != s for g, n, s in zip(grids, config.tokens_per_scale, config.scales)):
        raise ValueError(
            f"the model's layout (scales {config.scales}, tokens per scale {config.tokens_per_scale}) is not a square "
            "patch grid per scale, so its gaze cannot be tiled"
        )
    return int(config.scales[-1]), int(patch)


def merge_tile_batches(outs: Sequence[dict], pad_value: int = -1) -> dict:
    """Concatenate the per-tile gaze of several generation batches along the batch (tile) axis.

    Each batch counts ``num_gazing_each_frame`` as its own maximum; frame by frame, every row is
    padded on the right up to the maximum over all batches (pads: ``if_padded_gazing`` True,
    ``gazing_pos = pad_value + N·t``). The order of a row's real tokens is kept.

    Returns:
        dict with ``gazing_pos`` (R, Σn_t) long, ``if_padded_gazing`` (R, Σn_t) bool,
        ``num_gazing_each_frame`` (T',) long and ``num_vision_tokens_each_frame`` N.
    """
    n = outs[0]["num_vision_tokens_each_frame"]
    counts = torch.stack([o["num_gazing_each_frame"].cpu() for o in outs]).max(dim=0).values
    pos_frames: list[list[torch.Tensor]] = [[] for _ in counts]
    pad_frames: list[list[torch.Tensor]] = [[] for _ in counts]
    for o in outs:
        pos = o["gazing_pos"].split(o["num_gazing_each_frame"].tolist(), dim=1)
        pads = o["if_padded_gazing"].bool().split(o["num_gazing_each_frame"].tolist(), dim=1)
        for t, (p, q) in enumerate(zip(pos, pads)):
            extra = int(counts[t]) - p.shape[1]
            pos_frames[t].append(torch.cat([p, p.new_full((p.shape[0], extra), pad_value + n * t)], dim=1))
            pad_frames[t].append(torch.cat([q, q.new_ones((q.shape[0], extra))], dim=1))
    return {
        "gazing_pos": torch.cat([torch.cat(f, dim=0) for f in pos_frames], dim=1),
        "if_padded_gazing": torch.cat([torch.cat(f, dim=0) for f in pad_frames], dim=1),
        "num_gazing_each_frame": counts,
        "num_vision_tokens_each_frame": n,
    }


def flag_padding_cells(info: dict, grid: TileGrid, grid_sides: Sequence[int]) -> dict:
    """Mark gazed tokens lying wholly in the ``"pad"`` policy's padding as pads (``if_padded_gazing``).

    ``info`` rows are tiles in ``(b, row, col)`` order; positions and counts are kept.
    """
    padded = grid.padded_tokens(grid_sides, device=info["gazing_pos"].device)  # (n_tiles, N)
    n = info["num_vision_tokens_each_frame"]
    rows = info["gazing_pos"].shape[0]
    frame = torch.arange(len(info["num_gazing_each_frame"]), device=padded.device).repeat_interleave(
        info["num_gazing_each_frame"].to(padded.device))
    local = (info["gazing_pos"] - n * frame[None]).clamp(0, n - 1)
    tile = torch.arange(rows, device=padded.device) % grid.n_tiles
    in_padding = padded[tile[:, None], local]
    info = dict(info)
    info["if_padded_gazing"] = info["if_padded_gazing"] | in_padding
    return info


def gaze_clip_tiles(
    gaze: Callable[[torch.Tensor, object], dict],
    cut: Callable[[int, int], torch.Tensor],
    total: int,
    grid: TileGrid,
    *,
    tile_batch_size: int,
    ratio=None,
) -> tuple[list[torch.Tensor], dict]:
    """Gaze the ``total`` tiles of one clip, ``tile_batch_size`` at a time.

    Args:
        gaze: ``gaze(tiles, ratio) -> outputs`` on a tile batch (n, t, 3, tile, tile).
        cut: ``cut(start, stop)`` builds tiles ``start … stop-1`` of the clip (rows in (b, tile)
            order); only one batch of tiles exists at a time.
    Returns:
        the per-scale tile masks ``(total, t', g²)`` and the merged per-tile gaze (see
        :func:`merge_tile_batches`; ``"pad"`` cells flagged as pads).
    """
    outs = []
    for i in range(0, total, tile_batch_size):
        tiles = cut(i, min(i + tile_batch_size, total))
        with torch.no_grad():
            out = gaze(tiles, ratio)
        del tiles
        outs.append({k: out[k] for k in ("gazing_mask", "gazing_pos", "if_padded_gazing", "num_gazing_each_frame",
                                         "num_vision_tokens_each_frame")})
    masks = [torch.cat([o["gazing_mask"][s] for o in outs]) for s in range(len(outs[0]["gazing_mask"]))]
    info = merge_tile_batches(outs)
    if grid.policy == "pad":
        info = flag_padding_cells(info, grid, [math.isqrt(m.shape[-1]) for m in masks])
    return masks, info


def gaze_tiles(
    gaze: Callable[[torch.Tensor, object], dict],
    video: torch.Tensor,
    grid: TileGrid,
    *,
    clip_frames: int,
    frame_sampling_rate: int,
    tile_batch_size: int,
    gazing_ratio=None,
    on_canvas: bool = True,
) -> dict:
    """Gaze ``video`` tile by tile.

    Args:
        gaze: ``gaze(tiles, gazing_ratio) -> outputs`` gazes a tile batch (n, T_clip, 3, tile, tile)
            (the model's own forward, generation only).
        video: the canvas (B, T, 3, canvas_h, canvas_w), or with ``on_canvas=False`` the normalised
            frames at the source size (B, T, 3, source_h, source_w), whose tiles are then placed
            batch by batch (:meth:`TileGrid.place_tiles`: the whole canvas is never built).
        clip_frames: frames per clip (``max_num_frames``); clips are gazed independently.
        tile_batch_size: tiles per ``gaze`` call.
        gazing_ratio: a number, or one per gazed frame of the whole video (sliced per clip).
    Returns:
        dict with ``gazing_mask`` (list per scale of (B, T', rows·g, cols·g) stitched on the
        canvas), ``tile_gazing_info`` (one dict per clip: the per-tile gaze, rows in (b, tile)
        order, plus ``frames`` = (start, end) of the clip in the video's frames), ``cells``
        (:class:`~autogaze_fast.tiling.grid.GazedCells` in source pixels), ``tile_grid``,
        ``num_tiles`` and ``tile_batch_size``.
    """
    b, t = video.shape[:2]
    total = b * grid.n_tiles
    clip_frames = max(clip_frames - clip_frames % frame_sampling_rate, frame_sampling_rate)
    clip_masks: list[list[torch.Tensor]] = []
    infos = []
    for start in range(0, t, clip_frames):
        end = min(start + clip_frames, t)
        clip = video[:, start:end]
        ratio = gazing_ratio
        if isinstance(gazing_ratio, (list, tuple)):
            ratio = list(gazing_ratio[start // frame_sampling_rate:end // frame_sampling_rate])
        cut = (lambda i, j, clip=clip: grid.cut(clip, i, j)) if on_canvas else \
            (lambda i, j, clip=clip: grid.place_tiles(clip, i, j))
        masks, info = gaze_clip_tiles(gaze, cut, total, grid, tile_batch_size=tile_batch_size, ratio=ratio)
        info["frames"] = (start, end)
        infos.append(info)
        clip_masks.append(masks)
    return tiled_outputs(grid, clip_masks, infos, tile_batch_size)


def tiled_outputs(grid: TileGrid, clip_masks: Sequence[Sequence[torch.Tensor]], infos: list[dict],
                  tile_batch_size: int) -> dict:
    """The tiled call's outputs (see :func:`gaze_tiles`) from each clip's per-scale tile masks and gaze."""
    tile_masks = [torch.cat([m[s] for m in clip_masks], dim=1) for s in range(len(clip_masks[0]))]
    stitched = grid.stitch(tile_masks)
    return {
        "gazing_mask": stitched,
        "tile_gazing_info": infos,
        "cells": grid.cells(stitched),
        "tile_grid": grid,
        "num_tiles": grid.n_tiles,
        "tile_batch_size": tile_batch_size,
    }
