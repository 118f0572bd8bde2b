"""Building blocks of the gazed MAE: the ViT layer, position tables, patchify/unpatchify, attention.

Parameter names mirror the ``ViTMAEForPreTraining`` state dict (``attention.attention.query``,
``attention.output.dense``, ``intermediate.dense``, ``output.dense``, ``layernorm_before/after``),
so upstream's and Hugging Face's checkpoints load without renaming.

Attention: the sequence is ``[cls, tokens…]``; token i may attend key j when j's frame ≤ i's frame
and j is not a pad, the cls token counts as frame −1 (everyone attends it, it attends only itself),
and every token attends itself. That is upstream's ``get_causal_mask`` with one difference that
changes no output it uses: upstream forces the diagonal for all but the *last* position, so a pad
in the last slot does not attend itself — its output is never read (pads are dropped in the encoder
and never reconstructed in the decoder).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autogaze_fast.kernels.sparse_attention import sparse_attention
from autogaze_fast.reference.siglip import activation, attention_allowed

# the encoder's position tables resize as SigLIP's do (bicubic, align_corners=False, identity at the same size)
from autogaze_fast.reference.siglip import interpolate_position_table as interpolate_position_grid

__all__ = [
    "MAELayer",
    "attend",
    "interpolate_position_grid",
    "interpolate_position_sequence",
    "multiscale_patches",
    "unpatchify",
]


def interpolate_position_sequence(table: torch.Tensor, length: int) -> torch.Tensor:
    """Resize a P × C table to length × C along the *flattened* sequence (1-D bicubic, ``align_corners=False``).

    Upstream quirk kept: the decoder does not resize its table as a 2-D grid but as a 1 × P strip,
    so a coarse scale's positions are samples of the row-major sequence, not of the image plane.
    """
    positions, dim = table.shape
    if length == positions:
        return table
    strip = table.t().reshape(1, dim, 1, positions)
    resized = F.interpolate(strip, size=(1, length), mode="bicubic", align_corners=False)
    return resized.reshape(dim, length).t()


def multiscale_patches(frames: torch.Tensor, scales: list[int], patch_size: int) -> list[torch.Tensor]:
    """Every frame resized to each scale (bicubic, ``align_corners=False``; the identity at its own size).

    Args:
        frames: (B, T, c, H, W).
    Returns:
        one (B, T, c, s, s) tensor per scale, ascending.
    """
    b, t = frames.shape[:2]
    flat = frames.flatten(0, 1)
    return [F.interpolate(flat, size=(s, s), mode="bicubic", align_corners=False).unflatten(0, (b, t)) for s in scales]


def unfold_patches(per_scale: list[torch.Tensor], patch_size: int) -> torch.Tensor:
    """All patches of every scale, (B, T · n, c · p · p) in (channel, row, col) order — the reference gather source."""
    b, t = per_scale[0].shape[:2]
    chunks = [F.unfold(x.flatten(0, 1), kernel_size=patch_size, stride=patch_size).transpose(1, 2) for x in per_scale]
    per_frame = torch.cat(chunks, dim=1)
    return per_frame.reshape(b, t * per_frame.shape[1], per_frame.shape[2])


def unpatchify(pred: torch.Tensor, patch_size: int, channels: int, height: int, width: int) -> torch.Tensor:
    """(…, h · w, p · p · c) patch predictions, each (row, col, channel)-ordered → (…, c, h·p, w·p) images."""
    h, w = height // patch_size, width // patch_size
    lead = pred.shape[:-2]
    x = pred.reshape(*lead, h, w, patch_size, patch_size, channels)
    n = len(lead)
    x = x.permute(*range(n), n + 4, n, n + 2, n + 1, n + 3)  # (…, c, h, p, w, p)
    return x.reshape(*lead, channels, h * patch_size, w * patch_size)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frame_ids: torch.Tensor, is_pad: torch.Tensor,
           impl: str) -> torch.Tensor:
    """Block-causal attention with pad keys masked (module docstring), frame ids starting at the cls token.

    Args:
        q, k, v: (B, H, L, D).
        frame_ids: (L,) int; the cls token's id is below every frame's.
        is_pad: (B, L) bool.
        impl: ``"reference"`` (dense boolean map + torch's fused attention) or ``"fast"``
            (:func:`~autogaze_fast.kernels.sparse_attention.sparse_attention`: no L × L mask).
    Returns:
        (B, H, L, D).
    """
    scale = q.shape[-1] ** -0.5
    if impl == "fast":
        ids = frame_ids.to(torch.int32)
        ids = (ids - ids.min()).expand(q.shape[0], -1)
        return sparse_attention(q, k, v, ids, is_pad, "block_causal", scale)
    allowed = attention_allowed(frame_ids, is_pad, "block_causal")
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], scale=scale)


class _Dense(nn.Module):
    """Holder whose only child is ``dense`` (the checkpoint's ``….dense.{weight,bias}``)."""

    def __init__(self, fan_in: int, fan_out: int):
        super().__init__()
        self.dense = nn.Linear(fan_in, fan_out)


class _SelfAttention(nn.Module):
    def __init__(self, width: int, bias: bool):
        super().__init__()
        self.query = nn.Linear(width, width, bias=bias)
        self.key = nn.Linear(width, width, bias=bias)
        self.value = nn.Linear(width, width, bias=bias)


class _Attention(nn.Module):
    def __init__(self, width: int, bias: bool):
        super().__init__()
        self.attention = _SelfAttention(width, bias)
        self.output = _Dense(width, width)


class MAELayer(nn.Module):
    """Pre-norm ViT block: ``x + attn(LN_before x)``, then ``h + fc2(act(fc1(LN_after h)))``."""

    def __init__(self, width: int, heads: int, intermediate: int, act: str, eps: float, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.act = act
        self.attention = _Attention(width, qkv_bias)
        self.intermediate = _Dense(width, intermediate)
        self.output = _Dense(intermediate, width)
        self.layernorm_before = nn.LayerNorm(width, eps=eps)
        self.layernorm_after = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, frame_ids: torch.Tensor, is_pad: torch.Tensor, impl: str) -> torch.Tensor:
        """x: (B, L, C); frame_ids: (L,); is_pad: (B, L). Returns (B, L, C)."""
        b, n, c = x.shape
        h = self.layernorm_before(x)
        sa = self.attention.attention
        q, k, v = (proj(h).view(b, n, self.heads, c // self.heads).transpose(1, 2) for proj in (sa.query, sa.key, sa.value))
        out = attend(q, k, v, frame_ids, is_pad, impl).transpose(1, 2).reshape(b, n, c)
        x = x + self.attention.output.dense(out)
        h = activation(self.act, self.intermediate.dense(self.layernorm_after(x)))
        return x + self.output.dense(h)
