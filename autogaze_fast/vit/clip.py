"""CLIP vision on the gazed-ViT core: CLS + position table, pre-layernorm, quick-GELU blocks,
post-layernorm on the pooled CLS.

Parameter names are transformers' ``CLIPVisionModel`` names below ``vision_model.``. As transformers:
the patch conv has no bias; the class token is ``class_embedding + position_embedding[0]``; the
position table is bicubic-interpolated (``align_corners=False``, no antialias, in the weights' dtype)
to the patch grid unless it matches; ``pre_layrnorm`` (sic) runs over every token, CLS included;
``last_hidden_state`` is the last block's output with **no** final norm; ``pooler_output`` is
``post_layernorm(CLS)``. In the gazed mode every frame carries its own CLS (``pooler_output``
``(B, T, C)``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autogaze_fast.reference.siglip import SiglipEncoder
from autogaze_fast.vit.config import VitConfig
from autogaze_fast.vit.core import BlockParts, GazedViT, PackedSequence, VisionOutput, resize_position_grid


class ClipVisionEmbeddings(nn.Module):
    def __init__(self, config: VitConfig):
        super().__init__()
        c, p = config.hidden_size, config.patch_size
        self.class_embedding = nn.Parameter(torch.zeros(c))
        self.patch_embedding = nn.Conv2d(config.num_channels, c, kernel_size=p, stride=p, bias=False)
        self.position_embedding = nn.Embedding(config.num_positions + 1, c)


class ClipVisionTransformer(nn.Module, GazedViT):
    """transformers' ``CLIPVisionTransformer`` (``embeddings``, ``pre_layrnorm``, ``encoder.layers``,
    ``post_layernorm``); ``forward`` as :class:`~autogaze_fast.vit.siglip.FastSiglipVisionTransformer`'s."""

    family = "clip"

    def __init__(self, config: VitConfig, *, kernels: bool = True):
        super().__init__()
        self.config, self.kernels = config, kernels
        self.embeddings = ClipVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = SiglipEncoder(config)  # same block layout and names as SigLIP's
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def vit_patch_conv(self):
        return self.embeddings.patch_embedding.weight, None

    def vit_position_weight(self) -> torch.Tensor:
        return self.embeddings.position_embedding.weight

    def vit_patch_positions(self, gh: int, gw: int) -> torch.Tensor:
        return resize_position_grid(self.embeddings.position_embedding.weight[1:], gh, gw)

    def vit_prefix(self) -> torch.Tensor:
        emb = self.embeddings
        return (emb.class_embedding + emb.position_embedding.weight[0])[None]

    def vit_embed_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.pre_layrnorm(x)

    def vit_blocks(self):
        for layer in self.encoder.layers:
            attn, mlp = layer.self_attn, layer.mlp
            yield BlockParts(layer.layer_norm1, attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj,
                             layer.layer_norm2, mlp.fc1, mlp.fc2, mlp.act)

    def vit_finish(self, x: torch.Tensor, seq: PackedSequence | None):
        cls = x[:, 0] if seq is None else seq.prefix(x)[:, :, 0]
        return x, self.post_layernorm(cls)

    def forward(self, pixel_values: torch.Tensor, gazing_info: Any | None = None, *, output_hidden_states: bool = False,
                attn_type: str | None = None, drop_pads: bool = False) -> VisionOutput:
        if pixel_values.dim() == 4 and gazing_info is None:
            return self.dense_forward(pixel_values, output_hidden_states=output_hidden_states)
        return self.gazed_forward(pixel_values, gazing_info, output_hidden_states=output_hidden_states,
                                  attn_type=attn_type, kernels=self.kernels, drop_pads=drop_pads)
