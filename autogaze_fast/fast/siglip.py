"""Fast gazed SigLIP: the reference's parameters, with the fused gathered patch embedding
(kernel family 1) and the sparse gathered-patch attention (kernel family 3).

Only the gazed patches are read and embedded (never every patch of every scale), and attention
runs over the packed gazed tokens with per-token frame ids and pad flags, never an N×N mask.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from autogaze_fast.kernels.gathered_patch_embed import gathered_patch_embed
from autogaze_fast.kernels.sparse_attention import sparse_attention
from autogaze_fast.reference.siglip import (
    SiglipEncoderLayer,
    SiglipVisionOutput,
    SiglipVisionTransformer,
    activation,
    interpolate_position_table,
)
from autogaze_fast.siglip_config import normalize_attn_type

# Inference runs the MLP over this many tokens at a time: its (rows, intermediate) activation then
# stays under glibc's 32 MiB mmap threshold (SigLIP-B: 1024 × 3072 fp32 = 12 MiB) and is recycled
# from the heap instead of being page-faulted in afresh for every layer (measured ~10% faster on
# CPU), and peak memory drops by the full-width activation.
MLP_CHUNK_ROWS = 1024


class FastSiglipVisionTransformer(SiglipVisionTransformer):
    """Drop-in for :class:`~autogaze_fast.reference.siglip.SiglipVisionTransformer` (same state dict)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self._position_cache: tuple[tuple, torch.Tensor] | None = None

    def position_table(self) -> torch.Tensor:
        """(n, C) position embeddings of one frame's slots, every scale interpolated to its grid.

        Cached between calls while the weight is unchanged and needs no gradient (inference).
        """
        weight = self.embeddings.position_embedding.weight
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self._position_cache is not None and self._position_cache[0] == key and not torch.is_grad_enabled():
            return self._position_cache[1]
        p = self.config.patch_size
        table = torch.cat([interpolate_position_table(weight, s // p) for s in self.config.scales])
        if not (torch.is_grad_enabled() and weight.requires_grad):
            self._position_cache = (key, table.detach())
        return table

    def embed(self, pixel_values: torch.Tensor, gather_index: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, T, c, H, W), gather_index (B, N) → (B, N, C) embeddings of the gazed slots."""
        b, t = pixel_values.shape[:2]
        frames = pixel_values.flatten(0, 1)
        per_scale = [
            F.interpolate(frames, size=(s, s), mode="bicubic", align_corners=False).unflatten(0, (b, t))
            for s in self.config.scales
        ]
        conv = self.embeddings.patch_embedding
        return gathered_patch_embed(per_scale, gather_index, conv.weight, conv.bias, self.position_table(),
                                    check_index=False)

    def attention(self, layer: SiglipEncoderLayer, x: torch.Tensor, frame_ids: torch.Tensor, pad: torch.Tensor,
                  attn_type: str) -> torch.Tensor:
        attn = layer.self_attn
        b, n, c = x.shape
        q, k, v = (proj(x).view(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)
                   for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
        out = sparse_attention(q, k, v, frame_ids, pad, attn_type=attn_type, scale=attn.head_dim ** -0.5)
        return attn.out_proj(out.transpose(1, 2).reshape(b, n, c))

    def mlp(self, layer: SiglipEncoderLayer, h: torch.Tensor) -> torch.Tensor:
        """fc2(act(fc1(h))) for h (B, N, C); chunked over tokens when no gradient is recorded."""
        mlp = layer.mlp
        if torch.is_grad_enabled() or h.shape[0] * h.shape[1] <= MLP_CHUNK_ROWS:
            return mlp.fc2(activation(mlp.act, mlp.fc1(h)))
        rows = h.reshape(-1, h.shape[-1])
        out = torch.empty(rows.shape[0], mlp.fc2.out_features, dtype=h.dtype, device=h.device)
        weight_t = mlp.fc2.weight.t()
        for i in range(0, rows.shape[0], MLP_CHUNK_ROWS):
            hidden = activation(mlp.act, mlp.fc1(rows[i:i + MLP_CHUNK_ROWS]))
            if mlp.fc2.bias is None:
                torch.mm(hidden, weight_t, out=out[i:i + MLP_CHUNK_ROWS])
            else:  # F.linear's own op, written straight into the output rows
                torch.addmm(mlp.fc2.bias, hidden, weight_t, out=out[i:i + MLP_CHUNK_ROWS])
        return out.view(h.shape[:-1] + (mlp.fc2.out_features,))

    def forward(
        self,
        pixel_values: torch.Tensor,
        gazing_info: Any | None = None,
        *,
        output_hidden_states: bool = False,
        attn_type: str | None = None,
    ) -> SiglipVisionOutput:
        """Same contract as the reference's ``forward``."""
        pixel_values, layout = self.prepare_inputs(pixel_values, gazing_info)
        attn_type = normalize_attn_type(attn_type or self.config.attn_type)
        b = pixel_values.shape[0]
        frame_ids = layout.frame_ids.to(torch.int32).expand(b, -1)
        x = self.embed(pixel_values, layout.gather_index)
        states = [x] if output_hidden_states else None
        for layer in self.encoder.layers:
            x = x + self.attention(layer, layer.layer_norm1(x), frame_ids, layout.is_pad, attn_type)
            x = x + self.mlp(layer, layer.layer_norm2(x))
            if states is not None:
                states.append(x)
        return self.finish(x, states)
