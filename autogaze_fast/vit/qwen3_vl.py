"""The Qwen3-VL vision tower (transformers 4.57.6's ``Qwen3VLVisionModel``), dense and on kept merge units.

Parameter names are transformers' (``patch_embed.proj``, ``pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,
norm2,mlp.linear_fc1,mlp.linear_fc2}``, ``merger``, ``deepstack_merger_list.K``). As transformers:

* the patch embedding is a Conv3d with bias over one temporal patch (``tp × p × p``), i.e. a linear
  map of each ``(C · tp · p²)`` patch row;
* the learned ``√P × √P`` position table is interpolated to each clip's ``gh × gw`` patch grid
  bilinearly with the grid's corners on the table's corners: patch row ``h`` samples the table at
  ``linspace(0, √P - 1, gh)[h]`` (float32), between rows ``⌊·⌋`` and ``min(⌊·⌋ + 1, √P - 1)``,
  with weights ``(1 - dh)(1 - dw), (1 - dh) dw, dh (1 - dw), dh dw`` (float32, cast to the table's
  dtype) summed in that order; every temporal patch of a clip gets the same table;
* 2-D rotary positions (the patch's row and column in its clip's grid; theta 10000, a quarter of
  the head dim per axis, applied in float32);
* pre-norm blocks (LayerNorm eps 1e-6, fused ``qkv``, ``proj``, MLP ``linear_fc1`` → ``hidden_act`` →
  ``linear_fc2``), full attention within each temporal patch of each clip (transformers' ``cu_seqlens``);
* the PatchMerger (LayerNorm per patch, then the 2×2 patches of a unit concatenated, ``linear_fc1``,
  exact GELU, ``linear_fc2`` to ``out_hidden_size``) and, after each block of
  ``deepstack_visual_indexes``, a deepstack merger whose LayerNorm runs *after* the concatenation
  (``use_postshuffle_norm``).

With ``keep`` (one bool per merge unit) only the kept units' patches are embedded and run through
the blocks (each with its full-grid position embedding and rotary position); attention mixes kept
tokens of one (clip, temporal patch) through
:func:`autogaze_fast.kernels.sparse_attention.sparse_attention` (``frame_independent``).
``kernels=False`` is the plain reference: every patch, every block over all tokens with an explicit
``(L, L)`` mask (same segment and key kept, or the diagonal), mergers on every unit, kept rows picked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autogaze_fast.reference.siglip import activation
from autogaze_fast.vit.qwen3_vl_config import Qwen3VLVisionConfig
from autogaze_fast.vit.qwen_common import (
    KeptUnits,
    QwenVisionOutput,
    UnitLayout,
    check_grid_thw,
    check_keep,
    check_pixel_rows,
    frames_to_rows,
    kept_output,
    qkv_rope_attention,
    select_units,
    unit_layout,
    vision_rope,
)

__all__ = ["Qwen3VLVisionTower", "interpolate_pos_embed"]

#: LayerNorm eps of the blocks and the mergers (fixed in transformers' code, not in the config).
NORM_EPS = 1e-6


class Qwen3VLPatchEmbed(nn.Module):
    def __init__(self, config: Qwen3VLVisionConfig):
        super().__init__()
        k = (config.temporal_patch_size, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(config.in_channels, config.hidden_size, kernel_size=k, stride=k, bias=True)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """``(N, C·tp·p²)`` patch rows → ``(N, hidden)`` (the conv as the linear map it is)."""
        w = self.proj.weight
        return F.linear(rows.to(w.dtype), w.reshape(w.shape[0], -1), self.proj.bias)


class Qwen3VLAttention(nn.Module):
    def __init__(self, config: Qwen3VLVisionConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=True)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, bias=True)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, segment: torch.Tensor,
                key_keep: torch.Tensor | None) -> torch.Tensor:
        """``x (L, hidden)``, rotary ``cos/sin (L, head_dim)``, ``segment (1, L)`` ascending; ``key_keep (L,)``
        bool → the explicit-mask reference, ``None`` → the sparse-attention kernel."""
        return qkv_rope_attention(x, self.qkv, self.proj, self.num_heads, cos, sin, segment,
                                  kernels=key_keep is None, key_keep=key_keep)


class Qwen3VLMLP(nn.Module):
    def __init__(self, config: Qwen3VLVisionConfig):
        super().__init__()
        self.act = config.hidden_act
        self.linear_fc1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=True)
        self.linear_fc2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_fc2(activation(self.act, self.linear_fc1(x)))


class Qwen3VLBlock(nn.Module):
    def __init__(self, config: Qwen3VLVisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=NORM_EPS)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=NORM_EPS)
        self.attn = Qwen3VLAttention(config)
        self.mlp = Qwen3VLMLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, segment: torch.Tensor,
                key_keep: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, segment, key_keep)
        return x + self.mlp(self.norm2(x))


class Qwen3VLPatchMerger(nn.Module):
    """``(4·U, hidden)`` patch rows (units of 4 consecutive rows) → ``(U, out_hidden_size)``."""

    def __init__(self, config: Qwen3VLVisionConfig, *, postshuffle_norm: bool):
        super().__init__()
        self.postshuffle_norm = postshuffle_norm
        wide = config.hidden_size * config.merge_unit
        self.norm = nn.LayerNorm(wide if postshuffle_norm else config.hidden_size, eps=NORM_EPS)
        self.linear_fc1 = nn.Linear(wide, wide, bias=True)
        self.linear_fc2 = nn.Linear(wide, config.out_hidden_size, bias=True)
        self.wide = wide

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.reshape(-1, self.wide)) if self.postshuffle_norm else self.norm(x).reshape(-1, self.wide)
        return self.linear_fc2(F.gelu(self.linear_fc1(x)))


def interpolate_pos_embed(table: torch.Tensor, grid_hw: tuple[int, int], rows: torch.Tensor,
                          cols: torch.Tensor) -> torch.Tensor:
    """The learned ``(side², C)`` table bilinearly resampled at patches ``(rows, cols)`` of a ``gh × gw`` grid.

    Args:
        table: ``(side², C)`` position table (row-major grid). grid_hw: the clip's ``(gh, gw)`` patches.
        rows, cols: ``(L,)`` int64 patch coordinates in that grid.
    Returns:
        ``(L, C)`` in the table's dtype: for every patch the same numbers as transformers'
        ``fast_pos_embed_interpolate`` gives it on the full grid (see the module docstring).
    """
    side = round(table.shape[0] ** 0.5)
    weights, index = [], []
    for coord, size in ((rows, grid_hw[0]), (cols, grid_hw[1])):
        at = torch.linspace(0, side - 1, size, device=table.device)[coord]  # float32 sample points
        lo = at.int()
        hi = (lo + 1).clamp(max=side - 1)
        frac = at - lo
        index.append((lo.long(), hi.long()))
        weights.append((1 - frac, frac))
    (h0, h1), (w0, w1) = index
    (a0, a1), (b0, b1) = weights
    out = table[h0 * side + w0] * (a0 * b0).to(table.dtype)[:, None]
    out = out + table[h0 * side + w1] * (a0 * b1).to(table.dtype)[:, None]
    out = out + table[h1 * side + w0] * (a1 * b0).to(table.dtype)[:, None]
    return out + table[h1 * side + w1] * (a1 * b1).to(table.dtype)[:, None]


class Qwen3VLVisionTower(nn.Module):
    """transformers' ``Qwen3VLVisionModel`` on flattened patch rows, optionally on kept merge units only.

    ``tower(pixel_values (N, C·tp·p²), grid_thw (n, 3) int64, keep (U_total,) bool | None)`` →
    :class:`~autogaze_fast.vit.qwen_common.QwenVisionOutput` (merged tokens, their ``(t, uh, uw)``,
    clip index, ``grid_thw``, keep mask and the deepstack features, each ``(U_kept, out_hidden_size)``).
    """

    family = "qwen3_vl"

    def __init__(self, config: Qwen3VLVisionConfig, *, kernels: bool = True):
        super().__init__()
        self.config, self.kernels = config, kernels
        self.patch_embed = Qwen3VLPatchEmbed(config)
        self.pos_embed = nn.Embedding(config.num_position_embeddings, config.hidden_size)
        self.blocks = nn.ModuleList(Qwen3VLBlock(config) for _ in range(config.depth))
        self.merger = Qwen3VLPatchMerger(config, postshuffle_norm=False)
        self.deepstack_merger_list = nn.ModuleList(Qwen3VLPatchMerger(config, postshuffle_norm=True)
                                                   for _ in config.deepstack_visual_indexes)

    def _positions(self, layout: UnitLayout, chosen: KeptUnits) -> torch.Tensor:
        """``(L, hidden)`` interpolated position embeddings of the chosen units' patch rows (block order)."""
        table = self.pos_embed.weight
        clip = layout.clip[chosen.units].repeat_interleave(self.config.merge_unit)
        out = table.new_empty(clip.numel(), table.shape[1])
        for c, (_, gh, gw) in enumerate(layout.grid_thw.tolist()):
            sel = (clip == c).nonzero(as_tuple=True)[0]
            if sel.numel():
                hw = chosen.patch_hw[sel]
                out[sel] = interpolate_pos_embed(table, (gh, gw), hw[:, 0], hw[:, 1])
        return out

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor,
                keep: torch.Tensor | None = None) -> QwenVisionOutput:
        """See the class docstring; ``kernels=False`` runs the explicit-mask reference."""
        cfg = self.config
        grid = check_grid_thw(grid_thw, cfg.spatial_merge_size)
        check_pixel_rows(pixel_values, grid, cfg.patch_dim)
        device = pixel_values.device
        layout = unit_layout(grid, cfg.spatial_merge_size, device=device)
        keep = check_keep(keep, layout.num_units, device)
        # fast: only the kept units' rows; reference: every row, the dropped units masked out as keys
        chosen = select_units(layout, keep if self.kernels else torch.ones_like(keep))
        key_keep = None if self.kernels else keep.repeat_interleave(cfg.merge_unit)
        x = self.patch_embed(pixel_values[chosen.rows]) + self._positions(layout, chosen)
        cos, sin = vision_rope(chosen.patch_hw, cfg.head_dim)
        deepstack = []
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, chosen.frame_ids, key_keep)
            if i in cfg.deepstack_visual_indexes:
                deepstack.append(self.deepstack_merger_list[cfg.deepstack_visual_indexes.index(i)](x))
        merged = self.merger(x)
        if not self.kernels:
            merged, deepstack = merged[keep], [d[keep] for d in deepstack]
        return kept_output(layout, keep, merged, tuple(deepstack))

    def encode_frames(self, frames: torch.Tensor, keep: torch.Tensor | None = None) -> QwenVisionOutput:
        """``frames (B, T, C, H, W)`` normalised (sides multiples of ``patch_size · spatial_merge_size``),
        ``keep (B, gt, gh/2, gw/2)`` bool or ``None`` → the tower on every clip's patch rows (clip after clip)."""
        cfg = self.config
        rows, grid, flat = frames_to_rows(frames, keep, channels=cfg.in_channels, patch_size=cfg.patch_size,
                                          temporal_patch_size=cfg.temporal_patch_size, merge_size=cfg.spatial_merge_size)
        return self(rows, grid, flat)
