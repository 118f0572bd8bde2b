"""Bookkeeping of the Qwen3-VL tower's patch rows: where each row sits, its merge unit and attention segment,
the 2-D rotary positions and the reference path's explicit mask.

Rows come in transformers' flattened order (:mod:`autogaze_fast.processing.qwen_patches`): clip after
clip; inside a clip ``(t, unit row, unit column, row in unit, column in unit)``, so the ``m²`` patches
of a merge unit are consecutive and the units of a batch are numbered ``row // m²``. A *segment* is
one temporal patch of one clip (what a full-attention block may mix), numbered clip after clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QwenVisionOutput:  # PROVISIONAL: replaced by autogaze_fast.vit.qwen_common's once q25 commits it
    last_hidden_state: torch.Tensor
    positions: torch.Tensor
    clip_index: torch.Tensor
    grid_thw: torch.Tensor
    keep: torch.Tensor
    deepstack: tuple[torch.Tensor, ...] | None = None

__all__ = ["PatchLayout", "apply_vision_rope", "patch_layout", "segment_attention_mask", "vision_rope"]


@dataclass
class PatchLayout:
    """Per-row and per-unit indices of one tower call (all int64 / bool, on the rows' device).

    Attributes:
        grid_thw: ``(n, 3)`` patches per clip. clip, row, col, segment: ``(N,)`` per patch row: its clip,
            row ``h`` and column ``w`` in the clip's patch grid, and its (clip, t) segment.
        unit_positions: ``(U, 3)`` ``(t, uh, uw)`` of every unit; unit_clip ``(U,)``.
        keep: ``(U,)`` bool units that go through the tower; row_keep ``(N,)`` the same per patch row.
    """

    grid_thw: torch.Tensor
    clip: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    segment: torch.Tensor
    unit_positions: torch.Tensor
    unit_clip: torch.Tensor
    keep: torch.Tensor
    row_keep: torch.Tensor

    @property
    def num_rows(self) -> int:
        return int(self.row.numel())

    @property
    def kept_rows(self) -> torch.Tensor:
        """``(4·U_kept,)`` int64 indices of the kept units' rows, ascending (whole units, in order)."""
        return self.row_keep.nonzero(as_tuple=True)[0]

    def output(self, merged: torch.Tensor, deepstack: tuple[torch.Tensor, ...] | None) -> QwenVisionOutput:
        """Wrap the kept units' ``(U_kept, D)`` merged tokens (and deepstack features) with their positions."""
        return QwenVisionOutput(last_hidden_state=merged, positions=self.unit_positions[self.keep],
                                clip_index=self.unit_clip[self.keep], grid_thw=self.grid_thw, keep=self.keep,
                                deepstack=deepstack)


def patch_layout(pixel_values: torch.Tensor, grid_thw: torch.Tensor, keep: torch.Tensor | None, *,
                 patch_dim: int, merge_size: int) -> PatchLayout:
    """Check a tower call's inputs and index its rows.

    Args:
        pixel_values: ``(N, patch_dim)`` float rows. grid_thw: ``(n, 3)`` integer patches per clip.
        keep: ``(U_total,)`` bool per merge unit or ``None`` (every unit).
    Raises:
        ValueError: a wrong shape or dtype, a grid side not a multiple of ``merge_size``, rows that do
            not add up to the grids, or a keep mask of the wrong length (each says what was expected).
    """
    if pixel_values.dim() != 2 or pixel_values.shape[1] != patch_dim:
        raise ValueError(f"pixel_values must be (N, {patch_dim}) patch rows (C * temporal_patch_size * patch_size^2), "
                         f"got shape {tuple(pixel_values.shape)}; frames go through encode_frames")
    if not pixel_values.is_floating_point():
        raise ValueError(f"pixel_values must be a float tensor, got {pixel_values.dtype}")
    grid_thw = torch.as_tensor(grid_thw)
    if grid_thw.dim() != 2 or grid_thw.shape[1] != 3 or grid_thw.is_floating_point() or grid_thw.dtype == torch.bool:
        raise ValueError(f"grid_thw must be an (n, 3) integer tensor of (t, h, w) patches per clip, got "
                         f"{tuple(grid_thw.shape)} {grid_thw.dtype}")
    grids = grid_thw.tolist()
    m, m2 = merge_size, merge_size * merge_size
    for i, (t, h, w) in enumerate(grids):
        if t <= 0 or h <= 0 or w <= 0 or h % m or w % m:
            raise ValueError(f"grid_thw[{i}] = {(t, h, w)}: t, h, w must be positive and h, w multiples of the "
                             f"spatial merge size {m}")
    n_rows = sum(t * h * w for t, h, w in grids)
    if n_rows != pixel_values.shape[0]:
        raise ValueError(f"grid_thw {grids} needs {n_rows} patch rows, pixel_values has {pixel_values.shape[0]}")
    device = pixel_values.device
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("clip", "row", "col", "segment", "unit_pos", "unit_clip")}
    seg0 = 0
    for c, (t, h, w) in enumerate(grids):
        idx = torch.arange(t * h * w, device=device)
        rem, inner = idx % (h * w), idx % m2
        unit_in = rem // m2
        uh, uw = unit_in // (w // m), unit_in % (w // m)
        parts["clip"].append(torch.full_like(idx, c))
        parts["row"].append(uh * m + inner // m)
        parts["col"].append(uw * m + inner % m)
        parts["segment"].append(seg0 + idx // (h * w))
        u = torch.arange(t * (h // m) * (w // m), device=device)
        per_t = (h // m) * (w // m)
        parts["unit_pos"].append(torch.stack([u // per_t, (u % per_t) // (w // m), u % (w // m)], dim=1))
        parts["unit_clip"].append(torch.full_like(u, c))
        seg0 += t
    cat = {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.long, device=device) for k, v in parts.items()}
    n_units = n_rows // m2
    if keep is None:
        keep = torch.ones(n_units, dtype=torch.bool, device=device)
    else:
        if keep.dtype != torch.bool or keep.shape != (n_units,):
            raise ValueError(f"keep must be a ({n_units},) bool tensor (one per merge unit of every clip, clip after "
                             f"clip, (t, uh, uw) order), got {tuple(keep.shape)} {keep.dtype}")
        keep = keep.to(device)
    unit_pos = cat["unit_pos"].reshape(-1, 3)
    return PatchLayout(grid_thw=grid_thw.to(device=device, dtype=torch.long), clip=cat["clip"], row=cat["row"],
                       col=cat["col"], segment=cat["segment"], unit_positions=unit_pos, unit_clip=cat["unit_clip"],
                       keep=keep, row_keep=keep.repeat_interleave(m2))


def vision_rope(rows: torch.Tensor, cols: torch.Tensor, head_dim: int, *,
                theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D rotary ``(cos, sin)``, each ``(L, head_dim)`` float32, of patches at ``(rows, cols)``.

    Frequencies ``theta^(-2i / (head_dim/2))`` for ``i < head_dim/4``; the angles are
    ``[row · f, col · f]`` (``head_dim/2``), repeated twice (the rotate-half layout).
    """
    dim = head_dim // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=rows.device) / dim))
    angles = torch.cat([rows.float()[:, None] * inv_freq, cols.float()[:, None] * inv_freq], dim=-1)
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos(), emb.sin()


def apply_vision_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                      sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate ``q, k`` (``(..., L, D)``) by ``cos, sin (L, D)`` in float32 (rotate-half), back in their dtype."""
    def rotate(x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        a, b = xf.chunk(2, dim=-1)
        return (xf * cos + torch.cat([-b, a], dim=-1) * sin).to(x.dtype)

    return rotate(q), rotate(k)


def segment_attention_mask(segment: torch.Tensor, key_keep: torch.Tensor) -> torch.Tensor:
    """The reference path's ``(L, L)`` bool mask: ``allowed[i, j] = segment[i] == segment[j] and key_keep[j]``,
    or ``i == j``."""
    allowed = (segment[:, None] == segment[None, :]) & key_keep[None, :]
    return allowed | torch.eye(segment.numel(), dtype=torch.bool, device=segment.device)
