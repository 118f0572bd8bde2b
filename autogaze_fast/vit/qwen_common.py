"""What the Qwen-VL vision towers (Qwen2.5-VL, Qwen3-VL) share: the output, the 2-D vision RoPE, the
merge-unit bookkeeping of a keep mask, and the segment-restricted attention call.

Terms (see the Qwen patch layout in :mod:`autogaze_fast.processing.qwen_patches`):

* a *merge unit* is the ``m × m`` (2×2) patches of one temporal patch that the PatchMerger fuses into
  one LLM token; a clip of ``(gt, gh, gw)`` patches has ``U = gt · (gh/m) · (gw/m)`` units, ordered
  ``(t, uh, uw)`` row-major, and its patch rows ``4u .. 4u+3`` are unit ``u``'s (``m² = 4``
  consecutive rows); a batch of clips concatenates the units clip after clip;
* a *segment* is what one attention call may mix: for full-attention blocks one temporal patch of
  one clip (``(clip, t)``, transformers' ``cu_seqlens``), for window-attention blocks (Qwen2.5-VL) one
  window of ``w × w`` units inside one ``(clip, t)``, windows tiled from the top-left (partial at the
  right and bottom edges).

The towers run their blocks on the rows of the *kept* units only, sorted so that every segment is
contiguous with ascending ids (:class:`KeptUnits`); attention is
:func:`~autogaze_fast.kernels.sparse_attention.sparse_attention` with ``attn_type="frame_independent"``
and the segment id as the frame id (:func:`segment_attention`). The plain reference (``kernels=False``)
runs every row with an explicit ``(L, L)`` mask instead (:func:`reference_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from autogaze_fast.processing.qwen_patches import patchify_frames
from autogaze_fast.reference.llama import RMSNorm  # transformers' Qwen2RMSNorm is this same norm (fp32, cast back)

__all__ = [
    "frames_to_rows",
    "KeptUnits", "QwenVisionOutput", "RMSNorm", "UnitLayout", "apply_vision_rope", "check_grid_thw", "check_keep",
    "check_pixel_rows", "kept_output", "patch_positions", "qkv_rope_attention", "reference_mask", "segment_attention",
    "select_units", "unit_layout", "unit_rows", "vision_rope",
]

#: transformers' vision rotary base.
ROPE_THETA = 10000.0


@dataclass
class QwenVisionOutput:
    """A Qwen tower's merged tokens of the kept units.

    Attributes:
        last_hidden_state: ``(U_kept, D_llm)`` merged tokens, transformers' order ``(clip, t, uh, uw)``.
        positions: ``(U_kept, 3)`` int64 ``(t, uh, uw)`` of each token on its clip's unit grid.
        clip_index: ``(U_kept,)`` int64 clip each token belongs to.
        grid_thw: ``(n, 3)`` int64 patches per clip (as transformers' ``video_grid_thw``).
        keep: ``(U_total,)`` bool, every unit of every clip; True = went through the tower.
        deepstack: Qwen3-VL's deepstack features, one ``(U_kept, D_llm)`` per deepstack layer; else ``None``.
    """

    last_hidden_state: torch.Tensor
    positions: torch.Tensor
    clip_index: torch.Tensor
    grid_thw: torch.Tensor
    keep: torch.Tensor
    deepstack: tuple[torch.Tensor, ...] | None = None


# ---------------------------------------------------------------------------------------------- checks
def check_grid_thw(grid_thw: torch.Tensor, merge_size: int) -> torch.Tensor:
    """``grid_thw`` as an ``(n, 3)`` int64 CPU tensor, checked: positive, h and w multiples of ``merge_size``.

    Raises:
        ValueError: wrong shape or dtype, a non-positive entry, or a side not divisible by the merge.
    """
    grid = torch.as_tensor(grid_thw)
    if grid.dim() == 1 and grid.numel() == 3:
        grid = grid[None]
    if grid.dim() != 2 or grid.shape[1] != 3 or grid.shape[0] == 0:
        raise ValueError(f"grid_thw must be (n, 3) (t, h, w patches per clip), got shape {tuple(grid.shape)}")
    if grid.dtype.is_floating_point or grid.dtype == torch.bool:
        raise ValueError(f"grid_thw must be an integer tensor, got {grid.dtype}")
    grid = grid.to(device="cpu", dtype=torch.long)
    if bool((grid <= 0).any()):
        raise ValueError(f"grid_thw entries must be positive, got {grid.tolist()}")
    if bool((grid[:, 1:] % merge_size).any()):
        raise ValueError(f"grid_thw h and w must be multiples of spatial_merge_size {merge_size}, got {grid.tolist()}")
    return grid


def check_pixel_rows(pixel_values: torch.Tensor, grid: torch.Tensor, row_width: int) -> None:
    """``pixel_values`` must be ``(sum t·h·w, row_width)`` float rows (transformers' flattened patches)."""
    rows = int(grid.prod(1).sum())
    if pixel_values.dim() != 2 or tuple(pixel_values.shape) != (rows, row_width):
        raise ValueError(f"pixel_values must be (N, C*temporal_patch_size*patch_size**2) = {(rows, row_width)} for "
                         f"grid_thw {grid.tolist()}, got shape {tuple(pixel_values.shape)}; make the rows with "
                         "autogaze_fast.processing.qwen_patches.patchify_frames")
    if not pixel_values.dtype.is_floating_point:
        raise ValueError(f"pixel_values must be a float tensor (normalised pixels), got {pixel_values.dtype}")


def check_keep(keep: torch.Tensor | None, total_units: int, device: torch.device) -> torch.Tensor:
    """The ``(U_total,)`` bool keep mask on ``device`` (``None``: every unit)."""
    if keep is None:
        return torch.ones(total_units, dtype=torch.bool, device=device)
    keep = torch.as_tensor(keep)
    if keep.dtype != torch.bool:
        raise ValueError(f"keep must be a bool tensor (True = the unit goes through the tower), got {keep.dtype}")
    if keep.dim() != 1 or keep.shape[0] != total_units:
        raise ValueError(f"keep must be (U_total,) = ({total_units},), one flag per merge unit of every clip "
                         f"(clip, t, uh, uw order), got shape {tuple(keep.shape)}")
    return keep.to(device)


# ---------------------------------------------------------------------------------------------- units
@dataclass
class UnitLayout:
    """Every merge unit of a batch of clips, in the tower's order (clip, t, uh, uw).

    Attributes:
        grid_thw: ``(n, 3)`` int64 patches per clip (CPU).
        merge_size: m (2).
        clip: ``(U,)`` int64 clip of every unit.
        position: ``(U, 3)`` int64 ``(t, uh, uw)`` on its clip's unit grid.
        frame_segment: ``(U,)`` int64 id of the unit's ``(clip, t)``, ascending from 0.
        window_segment: ``(U,)`` int64 id of its ``(clip, t, window)``, ascending over (clip, t, window
            row, window col) from 0; ``None`` without windows.
    """

    grid_thw: torch.Tensor
    merge_size: int
    clip: torch.Tensor
    position: torch.Tensor
    frame_segment: torch.Tensor
    window_segment: torch.Tensor | None

    @property
    def num_units(self) -> int:
        return int(self.clip.shape[0])


def unit_layout(grid_thw: torch.Tensor, merge_size: int = 2, window_units: int | None = None,
                device: torch.device | str = "cpu") -> UnitLayout:
    """The :class:`UnitLayout` of clips with ``grid_thw`` ``(n, 3)`` patches; ``window_units``: the side of
    a window in units (Qwen2.5-VL's ``window_size // (patch_size · merge_size)``), ``None`` for none."""
    grid = check_grid_thw(grid_thw, merge_size)
    if window_units is not None and window_units < 1:
        raise ValueError(f"window_units must be >= 1, got {window_units}")
    clips, positions, frames, windows = [], [], [], []
    frame_offset = window_offset = 0
    for c, (gt, gh, gw) in enumerate(grid.tolist()):
        uh_n, uw_n = gh // merge_size, gw // merge_size
        t, uh, uw = (g.flatten() for g in torch.meshgrid(torch.arange(gt), torch.arange(uh_n), torch.arange(uw_n),
                                                         indexing="ij"))
        clips.append(torch.full_like(t, c))
        positions.append(torch.stack([t, uh, uw], 1))
        frames.append(frame_offset + t)
        frame_offset += gt
        if window_units is not None:
            nwh, nww = -(-uh_n // window_units), -(-uw_n // window_units)
            windows.append(window_offset + (t * nwh + uh // window_units) * nww + uw // window_units)
            window_offset += gt * nwh * nww
    return UnitLayout(grid, merge_size, torch.cat(clips).to(device), torch.cat(positions).to(device),
                      torch.cat(frames).to(device), torch.cat(windows).to(device) if windows else None)


def dense_ids(ids: torch.Tensor) -> torch.Tensor:
    """Non-decreasing ids renumbered 0, 1, 2, ... (same id → same number): ``(L,) → (L,)`` int64."""
    if ids.numel() == 0:
        return ids.long()
    step = torch.ones_like(ids, dtype=torch.long)
    step[0] = 0
    step[1:] = (ids[1:] != ids[:-1]).long()
    return torch.cumsum(step, 0)


@dataclass
class KeptUnits:
    """The kept units in the order the blocks see them (segments contiguous, ids ascending).

    With windows the kept units are sorted (stably) by window; the ``(clip, t)`` ids stay
    non-decreasing in that order because windows nest inside a temporal patch, so one order serves
    both kinds of block (as transformers' ``window_index`` does).

    Attributes:
        units: ``(K,)`` int64 unit index (into :class:`UnitLayout`) of every kept unit, block order.
        restore: ``(K,)`` int64: ``merged[restore]`` puts block-order merged tokens back into the
            tower's order (clip, t, uh, uw).
        rows: ``(K·m²,)`` int64 patch row of every token, block order (unit ``u``'s rows ``u·m² + i``).
        frame_ids: ``(1, K·m²)`` int32 dense ``(clip, t)`` segment id of every token (full blocks).
        window_ids: ``(1, K·m²)`` int32 dense window segment id of every token, or ``None``.
        patch_hw: ``(K·m², 2)`` int64 ``(h, w)`` patch position of every token in its clip's grid.
    """

    units: torch.Tensor
    restore: torch.Tensor
    rows: torch.Tensor
    frame_ids: torch.Tensor
    window_ids: torch.Tensor | None
    patch_hw: torch.Tensor


def patch_positions(layout: UnitLayout, units: torch.Tensor) -> torch.Tensor:
    """``(K·m², 2)`` int64 ``(h, w)`` patch positions of the ``m²`` rows of each of ``units`` ``(K,)``,
    in row order (``(i, j)`` inside the unit row-major)."""
    m = layout.merge_size
    inner = torch.arange(m * m, device=units.device)
    pos = layout.position[units]
    h = pos[:, 1:2] * m + inner[None] // m
    w = pos[:, 2:3] * m + inner[None] % m
    return torch.stack([h.flatten(), w.flatten()], 1)


def select_units(layout: UnitLayout, keep: torch.Tensor) -> KeptUnits:
    """The :class:`KeptUnits` of ``keep`` ``(U,)`` bool on ``layout``."""
    m2 = layout.merge_size ** 2
    kept = torch.nonzero(keep.to(layout.clip.device), as_tuple=True)[0]
    if layout.window_segment is not None:
        order = torch.argsort(layout.window_segment[kept], stable=True)
        units = kept[order]
        restore = torch.argsort(order)
    else:
        units, restore = kept, torch.arange(kept.numel(), device=kept.device)
    rows = unit_rows(units, layout.merge_size)

    def per_row(ids: torch.Tensor) -> torch.Tensor:
        return dense_ids(ids[units]).repeat_interleave(m2).to(torch.int32)[None]

    windows = per_row(layout.window_segment) if layout.window_segment is not None else None
    return KeptUnits(units, restore, rows, per_row(layout.frame_segment), windows, patch_positions(layout, units))


# ---------------------------------------------------------------------------------------------- rope
def vision_rope(patch_hw: torch.Tensor, head_dim: int, theta: float = ROPE_THETA) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2-D vision rotary table of transformers' Qwen2.5-VL / Qwen3-VL towers, in float32.

    ``head_dim / 4`` frequencies ``theta^(-2i / (head_dim/2))``; the angles are ``h · f`` then ``w · f``
    (``head_dim / 2`` of them), repeated twice (``rotate_half`` layout).

    Args:
        patch_hw: ``(L, 2)`` int ``(h, w)`` patch position of every token.
    Returns:
        ``(cos, sin)``, each ``(L, head_dim)`` float32.
    """
    if head_dim % 4:
        raise ValueError(f"the vision RoPE needs head_dim divisible by 4, got {head_dim}")
    dim = head_dim // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float, device=patch_hw.device) / dim))
    hw = patch_hw.to(torch.float)
    angles = torch.cat([hw[:, :1] * inv_freq[None], hw[:, 1:2] * inv_freq[None]], 1)
    emb = torch.cat([angles, angles], 1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``(..., D)``: ``[-x2, x1]`` of the halves ``x1, x2``."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_vision_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate ``q``, ``k`` ``(B, H, L, D)`` by ``cos``, ``sin`` ``(L, D)``, in float32, cast back to their dtype."""
    out = []
    for x in (q, k):
        xf = x.float()
        out.append((xf * cos + rotate_half(xf) * sin).to(x.dtype))
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------- attention
def reference_mask(segment: torch.Tensor, key_keep: torch.Tensor | None) -> torch.Tensor:
    """Explicit ``(L, L)`` bool mask: ``allowed[i, j] = (seg(i) == seg(j) and key_keep[j]) or i == j``.

    Args:
        segment: ``(L,)`` int segment id of every token; key_keep: ``(L,)`` bool or ``None`` (all).
    """
    allowed = segment[:, None] == segment[None, :]
    if key_keep is not None:
        allowed = allowed & key_keep[None, :]
    return allowed | torch.eye(segment.shape[0], dtype=torch.bool, device=segment.device)


def segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segment: torch.Tensor, *, kernels: bool,
                      key_keep: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """Attention of each token over the tokens of its own segment.

    Args:
        q, k, v: ``(1, H, L, D)``.
        segment: ``(1, L)`` int segment id of every token; with ``kernels`` the ids must be
            non-decreasing (segments contiguous), as :class:`KeptUnits` gives them.
        kernels: True: :func:`~autogaze_fast.kernels.sparse_attention.sparse_attention`
            (frame-independent, the segment as the frame; CPU SDPA per segment on plain CPU, Triton on
            CUDA and under ``TRITON_INTERPRET=1``). False: one SDPA with :func:`reference_mask`.
        key_keep: reference only, ``(L,)`` bool: keys allowed (a token always sees itself).
    Returns:
        ``(1, H, L, D)`` in q's dtype.
    """
    if kernels:
        if key_keep is not None:
            raise ValueError("segment_attention: key_keep is the reference path's; the fast path drops the rows")
        # deferred: the sparse attention module imports Triton
        from autogaze_fast.kernels.sparse_attention import sparse_attention

        pad = torch.zeros(segment.shape, dtype=torch.bool, device=segment.device)
        return sparse_attention(q, k, v, segment, pad, attn_type="frame_independent", scale=scale)
    mask = reference_mask(segment[0], key_keep)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def unit_rows(units: torch.Tensor, merge_size: int) -> torch.Tensor:
    """``(K,)`` unit indices → ``(K·m²,)`` their patch rows (unit ``u``: ``u·m² .. u·m² + m² - 1``)."""
    m2 = merge_size * merge_size
    return (units[:, None] * m2 + torch.arange(m2, device=units.device)[None]).flatten()


def kept_output(layout: UnitLayout, keep: torch.Tensor, merged: torch.Tensor,
                deepstack: tuple[torch.Tensor, ...] | None = None) -> QwenVisionOutput:
    """:class:`QwenVisionOutput` from the kept units' merged tokens ``merged`` ``(K, D_llm)`` in the
    tower's order (``keep`` ``(U,)`` bool on ``layout``)."""
    kept = torch.nonzero(keep.to(layout.clip.device), as_tuple=True)[0]
    return QwenVisionOutput(merged, layout.position[kept], layout.clip[kept], layout.grid_thw.clone(),
                            keep.to(layout.clip.device), deepstack)


def qkv_rope_attention(x: torch.Tensor, qkv: nn.Linear, proj: nn.Linear, heads: int, cos: torch.Tensor,
                       sin: torch.Tensor, segment: torch.Tensor, *, kernels: bool,
                       key_keep: torch.Tensor | None = None) -> torch.Tensor:
    """A Qwen vision attention layer on ``x`` ``(L, C)``: fused ``qkv`` (rows ``[q; k; v]``, heads
    contiguous), the 2-D RoPE on q and k (``cos``, ``sin`` ``(L, D)`` from :func:`vision_rope`),
    :func:`segment_attention` over ``segment`` ``(1, L)``, then ``proj``. Returns ``(L, C)``."""
    length, c = x.shape
    q, k, v = qkv(x).reshape(length, 3, heads, c // heads).permute(1, 2, 0, 3).unsqueeze(1).unbind(0)
    q, k = apply_vision_rope(q, k, cos, sin)
    out = segment_attention(q, k, v, segment, kernels=kernels, key_keep=key_keep, scale=(c // heads) ** -0.5)
    return proj(out[0].transpose(0, 1).reshape(length, c))


def frames_to_rows(frames: torch.Tensor, keep: torch.Tensor | None, *, channels: int, patch_size: int,
                   temporal_patch_size: int, merge_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A tower's frames input as its rows input.

    Args:
        frames: ``(B, T, C, H, W)`` normalised, sides multiples of ``patch_size · merge_size``.
        keep: ``(B, gt, H / (p·m), W / (p·m))`` bool per merge unit, or ``None``.
    Returns:
        the clips' patch rows concatenated ``(B · gt·gh·gw, C·tp·p²)``, ``grid_thw (B, 3)`` and ``keep``
        flattened to ``(U_total,)`` (or ``None``).
    """
    if frames.dim() != 5:
        raise ValueError(f"frames must be B x T x C x H x W, got shape {tuple(frames.shape)}")
    if frames.shape[2] != channels:
        raise ValueError(f"frames have {frames.shape[2]} channels, the tower expects {channels} (B x T x C x H x W)")
    clips = [patchify_frames(f, patch_size=patch_size, temporal_patch_size=temporal_patch_size, merge_size=merge_size)
             for f in frames]
    rows = torch.cat([r for r, _ in clips])
    grid = torch.tensor([g for _, g in clips], dtype=torch.long, device=frames.device)
    if keep is None:
        return rows, grid, None
    gt, gh, gw = clips[0][1]
    unit = patch_size * merge_size
    want = (frames.shape[0], gt, gh // merge_size, gw // merge_size)
    if tuple(keep.shape) != want:
        raise ValueError(f"keep must be (B, gt, H/{unit}, W/{unit}) = {want} bool for frames {tuple(frames.shape)}, "
                         f"got shape {tuple(keep.shape)}")
    return rows, grid, keep.reshape(-1)
