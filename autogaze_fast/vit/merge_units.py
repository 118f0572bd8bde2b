"""AutoGaze's multi-scale cells → the Qwen-VL towers' merge units (which units go through the tower).

A Qwen-VL tower (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) sees a clip at one resolution and fuses each
*merge unit* — 2×2 patches of ``patch_size`` px over a temporal pair of 2 frames — into one LLM
token. AutoGaze gazes every frame at several scales (NVIDIA's: grids of 2, 4, 7 and 14 cells a side).
Both cut the same frame, so both live in the frame's normalised coordinates ``[0, 1)²``, whatever
resolution (and aspect) either model resizes the frame to:

* cell ``(r, c)`` of a scale with ``g × g`` cells covers ``[r/g, (r+1)/g) × [c/g, (c+1)/g)``;
* unit ``(t, i, j)`` of a clip with ``H_u × W_u`` units per temporal patch covers
  ``[i/H_u, (i+1)/H_u) × [j/W_u, (j+1)/W_u)`` of frames ``2t`` and ``2t + 1``.

**The rule.** Unit ``(t, i, j)`` is kept when the cells gazed in frame ``2t`` or ``2t + 1`` (the
union of both frames' cells, of every scale: a coarse cell spans several units) cover *more than*
``min_coverage`` of its area. The default ``min_coverage = 0`` keeps every unit that a gazed cell
overlaps at all, so the kept units contain every gazed pixel (nothing AutoGaze looked at is
dropped; a cell straddling a unit edge keeps both units). A larger value (e.g. ``0.5``) keeps
fewer units and may drop gazed slivers. A clip with an odd frame count ends with a pair whose
second frame is the last frame repeated (as the Qwen processors pad it): only the last frame's gaze
counts there.

The coverage is exact: each pair's gazed union is rasterised on the common refinement of the cell
grids and the unit grid (``lcm`` of their sides along each axis), so every raster cell lies in one
unit and in one cell of every scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["gazed_cells", "keep_units_from_gaze", "unit_coverage"]


def _field(info: Any, name: str) -> Any:
    value = info.get(name) if isinstance(info, dict) else getattr(info, name, None)
    if value is None:
        raise ValueError(f"gazing_info has no {name!r}: pass AutoGaze's (or a selector's) gaze dict")
    return value


def gazed_cells(gazing_info: Any, num_frames: int, grids: Sequence[int]) -> list[torch.Tensor]:
    """Which cells every frame gazed, per scale.

    Args:
        gazing_info: a gaze dict (``gazing_pos (B, N)``, ``if_padded_gazing (B, N)``,
            ``num_gazing_each_frame (T,)``), token ``index + n · t`` as AutoGaze writes it.
        num_frames: T. grids: cells a side of every scale, ascending (NVIDIA's ``[2, 4, 7, 14]``).
    Returns:
        per scale a ``(B, T, g, g)`` bool tensor.
    """
    pos = torch.as_tensor(_field(gazing_info, "gazing_pos"))
    pad = torch.as_tensor(_field(gazing_info, "if_padded_gazing")).bool()
    num = torch.as_tensor(_field(gazing_info, "num_gazing_each_frame")).long()
    if pos.dim() != 2 or pad.shape != pos.shape:
        raise ValueError(f"gazing_pos and if_padded_gazing must both be B x N, got {tuple(pos.shape)} and "
                         f"{tuple(pad.shape)}")
    if num.numel() != num_frames or int(num.sum()) != pos.shape[1]:
        raise ValueError(f"num_gazing_each_frame {num.tolist()} must hold T = {num_frames} counts summing to "
                         f"gazing_pos's length {pos.shape[1]}")
    sizes = [g * g for g in grids]
    n = sum(sizes)
    b = pos.shape[0]
    frame = torch.arange(num_frames).repeat_interleave(num)[None].expand(b, -1)
    index = pos.long() - n * frame
    real = ~pad
    if real.any() and (int(index[real].min()) < 0 or int(index[real].max()) >= n):
        raise ValueError(f"gazing_pos holds tokens outside their frame's {n} cells (grids {list(grids)}): does the "
                         "gaze's layout (scales, patch size) match the grids passed?")
    flat = torch.zeros(b, num_frames, n, dtype=torch.bool)
    rows = torch.arange(b)[:, None].expand_as(index)
    flat[rows[real], frame[real], index[real]] = True
    return [m.reshape(b, num_frames, g, g) for m, g in zip(flat.split(sizes, dim=-1), grids)]


def unit_coverage(cells: Sequence[torch.Tensor], unit_rows: int, unit_cols: int) -> torch.Tensor:
    """Fraction of every unit's area that the gazed cells cover, frame by frame.

    Args:
        cells: per scale ``(B, T, g, g)`` bool (:func:`gazed_cells`).
        unit_rows, unit_cols: ``H_u``, ``W_u`` units a side.
    Returns:
        ``(B, T, H_u, W_u)`` float in [0, 1].
    """
    grids = [int(c.shape[-1]) for c in cells]
    rows = math.lcm(unit_rows, *grids)
    cols = math.lcm(unit_cols, *grids)
    b, t = cells[0].shape[:2]
    union = torch.zeros(b, t, rows, cols, dtype=torch.bool)
    for mask, g in zip(cells, grids):
        union |= mask.repeat_interleave(rows // g, dim=2).repeat_interleave(cols // g, dim=3)
    blocks = union.reshape(b, t, unit_rows, rows // unit_rows, unit_cols, cols // unit_cols)
    return blocks.float().mean(dim=(3, 5))


def keep_units_from_gaze(gazing_info: Any, *, num_frames: int, grids: Sequence[int], unit_grid: Sequence[int],
                         temporal_patch_size: int = 2, min_coverage: float = 0.0) -> torch.Tensor:
    """The merge units a gaze keeps (the module docstring's rule).

    Args:
        gazing_info: the gaze dict of a ``(B, T, ...)`` clip batch.
        num_frames: T, the frames gazed (the clip before temporal padding).
        grids: cells a side of every gaze scale, ascending.
        unit_grid: ``(grid_t, H_u, W_u)``: temporal patches and units a side of the tower's clip
            (``grid_thw`` with ``h, w`` divided by the merge size); ``grid_t = ceil(T / temporal_patch_size)``.
        min_coverage: keep a unit when the gazed cells cover more than this fraction of it (0: any overlap).
    Returns:
        ``(B, grid_t, H_u, W_u)`` bool.
    """
    gt, hu, wu = (int(v) for v in unit_grid)
    if gt != -(-num_frames // temporal_patch_size):
        raise ValueError(f"the unit grid has {gt} temporal patches, but {num_frames} frames make "
                         f"{-(-num_frames // temporal_patch_size)} of {temporal_patch_size}")
    if not 0.0 <= min_coverage < 1.0:
        raise ValueError(f"min_coverage must lie in [0, 1), got {min_coverage}")
    cells = []
    for mask in gazed_cells(gazing_info, num_frames, grids):  # (B, T, g, g) → OR over each temporal pair
        extra = gt * temporal_patch_size - num_frames
        if extra:  # the padded pair's repeated frame gazes as the last one
            mask = torch.cat([mask, mask[:, -1:].expand(-1, extra, -1, -1)], dim=1)
        cells.append(mask.reshape(mask.shape[0], gt, temporal_patch_size, *mask.shape[2:]).any(dim=2))
    return unit_coverage(cells, hu, wu) > min_coverage
