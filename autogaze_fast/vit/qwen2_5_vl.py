"""The Qwen2.5-VL vision tower, dense and on gazed (kept) merge units.

Parameter names are transformers' ``Qwen2_5_VisionTransformerPretrainedModel`` names (``patch_embed.proj``,
``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.{gate,up,down}_proj}``, ``merger.{ln_q,mlp.0,mlp.2}``), so
its state dict loads 1:1. As transformers: the patch rows (``C · temporal_patch_size · patch_size²``
pixels each, :func:`~autogaze_fast.processing.qwen_patches.patchify_frames`) go through a bias-free
Conv3d (here the equal linear map); every block is ``x + proj(attn(RMSNorm x))`` then
``x + down(silu(gate h) · up h)`` with ``h = RMSNorm x`` (eps 1e-6); q and k get the 2-D vision RoPE of
each patch's (h, w); blocks in ``fullatt_block_indexes`` attend within one temporal patch of one clip,
the others within one window of ``window_size // (patch_size · spatial_merge_size)`` units (4×4 for
112 / 14 / 2) tiled from the top-left of the unit grid; the PatchMerger fuses each unit's 4 rows:
``Linear(GELU(Linear(RMSNorm(rows).view(4C))))`` to ``out_hidden_size``.

Gazed input: ``keep`` ``(U_total,)`` bool over the units of every clip (clip, t, uh, uw order). Only the
kept units' rows are embedded and run (each with its own RoPE position); a window block attends among
the kept units of the window, a full block among those of the temporal patch (see
:mod:`autogaze_fast.vit.qwen_common`). ``kernels=False``: the plain reference — every row embedded, every
block over all rows with an explicit mask that hides the dropped units as keys, merger on every unit,
then the kept units picked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autogaze_fast.config import ConfigError
from autogaze_fast.reference.siglip import activation
from autogaze_fast.siglip_config import HIDDEN_ACTS
from autogaze_fast.vit.qwen_common import (
    QwenVisionOutput,
    RMSNorm,
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

__all__ = ["Qwen25VisionConfig", "Qwen25VisionTransformer"]

MODEL_TYPE = "qwen2_5_vl"
#: Largest head dim the sparse attention kernel takes.
MAX_HEAD_DIM = 128


@dataclass
class Qwen25VisionConfig:
    """The vision keys of a Qwen2.5-VL ``config.json`` (defaults: transformers' ``Qwen2_5_VLVisionConfig``).

    ``window_units`` (derived) is a window's side in merge units.
    """

    depth: int = 32
    hidden_size: int = 3584
    hidden_act: str = "silu"
    intermediate_size: int = 3420
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    tokens_per_second: float = 4
    window_size: int = 112
    out_hidden_size: int = 3584
    fullatt_block_indexes: list[int] = field(default_factory=lambda: [7, 15, 23, 31])
    model_type: str = MODEL_TYPE
    family: str = MODEL_TYPE

    def __post_init__(self) -> None:
        for name in ("depth", "hidden_size", "intermediate_size", "num_heads", "in_channels", "patch_size",
                     "spatial_merge_size", "temporal_patch_size", "window_size", "out_hidden_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"config.json (qwen2_5_vl vision_config): {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"config.json (qwen2_5_vl vision_config): hidden_size ({self.hidden_size}) must be divisible "
                              f"by num_heads ({self.num_heads})")
        if self.head_dim % 4 or self.head_dim > MAX_HEAD_DIM:
            raise ConfigError(f"config.json (qwen2_5_vl vision_config): head dim hidden_size / num_heads = {self.head_dim} "
                              f"must be a multiple of 4 (2-D RoPE) and at most {MAX_HEAD_DIM} (sparse attention kernel)")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ConfigError(f"config.json (qwen2_5_vl vision_config): hidden_act must be one of {HIDDEN_ACTS}, "
                              f"got {self.hidden_act!r}")
        if self.window_units < 1:
            raise ConfigError(f"config.json (qwen2_5_vl vision_config): window_size {self.window_size} is smaller than one "
                              f"merge unit (patch_size * spatial_merge_size = {self.patch_size * self.spatial_merge_size})")
        bad = [i for i in self.fullatt_block_indexes if isinstance(i, bool) or not isinstance(i, int)
               or not 0 <= i < self.depth]
        if bad:
            raise ConfigError(f"config.json (qwen2_5_vl vision_config): fullatt_block_indexes {bad} are not block "
                              f"indexes 0..{self.depth - 1}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def window_units(self) -> int:
        return self.window_size // (self.spatial_merge_size * self.patch_size)

    @property
    def row_width(self) -> int:
        """Pixels per patch row: ``C · temporal_patch_size · patch_size²``."""
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Qwen25VisionConfig:
        """From a parsed ``config.json``: a full checkpoint's (``model_type`` ``"qwen2_5_vl"``, vision keys
        under ``vision_config``) or a vision-only one (the vision keys at the top level).

        Raises:
            ConfigError: another model_type, a non-object ``vision_config``, or a bad value.
        """
        if d.get("model_type") != MODEL_TYPE:
            raise ConfigError(f"config.json: model_type {d.get('model_type')!r} is not {MODEL_TYPE!r}")
        vision = d.get("vision_config", d)
        if not isinstance(vision, dict):
            raise ConfigError("config.json: 'vision_config' of a qwen2_5_vl checkpoint must be an object")
        kwargs: dict[str, Any] = {}
        for name in ("depth", "hidden_size", "hidden_act", "intermediate_size", "num_heads", "in_channels", "patch_size",
                     "spatial_merge_size", "temporal_patch_size", "tokens_per_second", "window_size", "out_hidden_size",
                     "fullatt_block_indexes"):
            if name in vision:
                kwargs[name] = vision[name]
            elif name == "in_channels" and "in_chans" in vision:  # the original Qwen checkpoints' spelling
                kwargs[name] = vision["in_chans"]
        if "fullatt_block_indexes" in kwargs and not isinstance(kwargs["fullatt_block_indexes"], list):
            raise ConfigError(f"config.json (qwen2_5_vl vision_config): fullatt_block_indexes must be a list, got "
                              f"{kwargs['fullatt_block_indexes']!r}")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """A vision-only ``config.json`` body (keys at the top level) that :meth:`from_dict` reads back."""
        d = asdict(self)
        del d["family"]
        return d


class PatchEmbed(nn.Module):
    """``proj``: transformers' bias-free Conv3d over one temporal patch (kernel = stride = (tp, p, p))."""

    def __init__(self, config: Qwen25VisionConfig):
        super().__init__()
        tp, p = config.temporal_patch_size, config.patch_size
        self.proj = nn.Conv3d(config.in_channels, config.hidden_size, kernel_size=(tp, p, p), stride=(tp, p, p), bias=False)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """``(N, C·tp·p²)`` rows → ``(N, hidden)`` (the conv as the equal matrix product)."""
        weight = self.proj.weight
        return F.linear(rows.to(weight.dtype), weight.reshape(weight.shape[0], -1))


class VisionAttention(nn.Module):
    def __init__(self, config: Qwen25VisionConfig):
        super().__init__()
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=True)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)


class VisionMlp(nn.Module):
    def __init__(self, config: Qwen25VisionConfig):
        super().__init__()
        c, i = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(c, i)
        self.up_proj = nn.Linear(c, i)
        self.down_proj = nn.Linear(i, c)
        self.act = config.hidden_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(activation(self.act, self.gate_proj(x)) * self.up_proj(x))


class VisionBlock(nn.Module):
    def __init__(self, config: Qwen25VisionConfig):
        super().__init__()
        self.norm1 = RMSNorm(config.hidden_size, eps=1e-6)
        self.norm2 = RMSNorm(config.hidden_size, eps=1e-6)
        self.attn = VisionAttention(config)
        self.mlp = VisionMlp(config)


class PatchMerger(nn.Module):
    """``ln_q`` RMSNorm per row, the unit's ``m²`` rows concatenated, ``mlp`` Linear → GELU → Linear."""

    def __init__(self, config: Qwen25VisionConfig):
        super().__init__()
        c = config.hidden_size
        self.unit_width = c * config.spatial_merge_size ** 2
        self.ln_q = RMSNorm(c, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(self.unit_width, self.unit_width), nn.GELU(),
                                 nn.Linear(self.unit_width, config.out_hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(K·m², C)`` rows, each unit's ``m²`` consecutive → ``(K, out_hidden_size)``."""
        return self.mlp(self.ln_q(x).reshape(-1, self.unit_width))


class Qwen25VisionTransformer(nn.Module):
    """transformers' ``Qwen2_5_VisionTransformerPretrainedModel`` with a keep mask over merge units.

    ``tower(pixel_values (N, C·tp·p²), grid_thw (n, 3), keep (U_total,) bool | None) -> QwenVisionOutput``;
    ``kernels=False`` builds the explicit-mask reference (module docstring).
    """

    family = MODEL_TYPE

    def __init__(self, config: Qwen25VisionConfig, *, kernels: bool = True):
        super().__init__()
        self.config, self.kernels = config, kernels
        self.patch_embed = PatchEmbed(config)
        self.blocks = nn.ModuleList(VisionBlock(config) for _ in range(config.depth))
        self.merger = PatchMerger(config)

    def run_blocks(self, x: torch.Tensor, patch_hw: torch.Tensor, frame_ids: torch.Tensor, window_ids: torch.Tensor,
                   key_keep: torch.Tensor | None) -> torch.Tensor:
        """The blocks on ``x`` ``(L, C)`` (rows in segment order); ids ``(1, L)``; ``key_keep`` ``(L,)`` reference only."""
        cfg = self.config
        cos, sin = vision_rope(patch_hw, cfg.head_dim)
        full = set(cfg.fullatt_block_indexes)
        for i, block in enumerate(self.blocks):
            segment = frame_ids if i in full else window_ids
            h = block.norm1(x)
            x = x + qkv_rope_attention(h, block.attn.qkv, block.attn.proj, cfg.num_heads, cos, sin, segment,
                                       kernels=self.kernels, key_keep=key_keep)
            x = x + block.mlp(block.norm2(x))
        return x

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor, keep: torch.Tensor | None = None
                ) -> QwenVisionOutput:
        """Encode flattened patch rows.

        Args:
            pixel_values: ``(sum t·h·w, C·tp·p²)`` float rows, transformers' order (clips concatenated).
            grid_thw: ``(n, 3)`` int patches per clip.
            keep: ``(U_total,)`` bool per merge unit (clip, t, uh, uw order); ``None``: every unit (dense,
                as transformers).
        Returns:
            :class:`~autogaze_fast.vit.qwen_common.QwenVisionOutput` of the kept units.
        """
        cfg = self.config
        m = cfg.spatial_merge_size
        grid = check_grid_thw(grid_thw, m)
        check_pixel_rows(pixel_values, grid, cfg.row_width)
        device = self.patch_embed.proj.weight.device
        layout = unit_layout(grid, m, cfg.window_units, device=device)
        keep = check_keep(keep, layout.num_units, device)
        pixel_values = pixel_values.to(device)
        if self.kernels:
            sel = select_units(layout, keep)
            x = self.run_blocks(self.patch_embed(pixel_values[sel.rows]), sel.patch_hw, sel.frame_ids, sel.window_ids,
                                None)
            merged = self.merger(x)[sel.restore]
        else:
            sel = select_units(layout, torch.ones_like(keep))
            key_keep = keep[sel.units].repeat_interleave(m * m)
            x = self.run_blocks(self.patch_embed(pixel_values[sel.rows]), sel.patch_hw, sel.frame_ids, sel.window_ids,
                                key_keep)
            merged = self.merger(x)[sel.restore][keep]
        return kept_output(layout, keep, merged)

    def encode_frames(self, frames: torch.Tensor, keep: torch.Tensor | None = None) -> QwenVisionOutput:
        """Encode ``(B, T, C, H, W)`` normalised frames (H, W multiples of ``patch_size · merge``; T padded
        to a multiple of ``temporal_patch_size`` by repeating the last frame).

        Args:
            keep: ``(B, gt, H / (p·m), W / (p·m))`` bool per merge unit, or ``None`` (every unit).
        """
        cfg = self.config
        rows, grid, flat = frames_to_rows(frames, keep, channels=cfg.in_channels, patch_size=cfg.patch_size,
                                          temporal_patch_size=cfg.temporal_patch_size, merge_size=cfg.spatial_merge_size)
        return self(rows, grid, flat)
