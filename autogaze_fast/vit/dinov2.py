"""DINOv2 and DINOv2-with-registers on the gazed-ViT core: CLS (+ registers), LayerScale, final layernorm.

Parameter names are transformers' ``Dinov2Model`` / ``Dinov2WithRegistersModel`` names. As
transformers: the class token is ``cls_token + position_embeddings[0]``; register tokens follow it and
get no position; the patch position table is bicubic-interpolated (``align_corners=False``) to the
patch grid unless it matches and the image is square, computed in float32 and cast back — **with**
antialias for ``dinov2_with_registers`` and **without** for ``dinov2`` (the two transformers models
differ there; each quirk kept); every block is ``x + λ1 · attn(norm1 x)``, then ``+ λ2 · mlp(norm2 x)``;
``last_hidden_state = layernorm(x)`` and ``pooler_output`` is its CLS row. ``mask_token`` is loaded
(it is in the checkpoints) but unused at inference.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autogaze_fast.vit.config import VitConfig
from autogaze_fast.vit.core import BlockParts, GazedViT, PackedSequence, VisionOutput, resize_position_grid


class Dinov2Embeddings(nn.Module):
    def __init__(self, config: VitConfig):
        super().__init__()
        c, p = config.hidden_size, config.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.mask_token = nn.Parameter(torch.zeros(1, c))
        if config.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, c))
        self.patch_embeddings = nn.Module()
        self.patch_embeddings.projection = nn.Conv2d(config.num_channels, c, kernel_size=p, stride=p)
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_positions + 1, c))


class Dinov2SelfAttention(nn.Module):
    def __init__(self, config: VitConfig):
        super().__init__()
        c = config.hidden_size
        self.attention = nn.Module()
        for name in ("query", "key", "value"):
            setattr(self.attention, name, nn.Linear(c, c, bias=config.qkv_bias))
        self.output = nn.Module()
        self.output.dense = nn.Linear(c, c)


class LayerScale(nn.Module):
    def __init__(self, config: VitConfig):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((config.hidden_size,), config.layerscale_value))


class Dinov2Mlp(nn.Module):
    def __init__(self, config: VitConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)


class Dinov2Layer(nn.Module):
    def __init__(self, config: VitConfig):
        super().__init__()
        c, eps = config.hidden_size, config.layer_norm_eps
        self.norm1 = nn.LayerNorm(c, eps=eps)
        self.attention = Dinov2SelfAttention(config)
        self.layer_scale1 = LayerScale(config)
        self.norm2 = nn.LayerNorm(c, eps=eps)
        self.mlp = Dinov2Mlp(config)
        self.layer_scale2 = LayerScale(config)


class Dinov2VisionTransformer(nn.Module, GazedViT):
    """transformers' ``Dinov2Model`` (``embeddings``, ``encoder.layer``, ``layernorm``)."""

    family = "dinov2"

    def __init__(self, config: VitConfig, *, kernels: bool = True):
        super().__init__()
        self.config, self.kernels = config, kernels
        self.embeddings = Dinov2Embeddings(config)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(Dinov2Layer(config) for _ in range(config.num_hidden_layers))
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def vit_patch_conv(self):
        conv = self.embeddings.patch_embeddings.projection
        return conv.weight, conv.bias

    def vit_position_weight(self) -> torch.Tensor:
        return self.embeddings.position_embeddings

    def vit_patch_positions(self, gh: int, gw: int) -> torch.Tensor:
        antialias = self.config.model_type == "dinov2_with_registers"
        return resize_position_grid(self.embeddings.position_embeddings[0, 1:], gh, gw, antialias=antialias,
                                    in_float32=True)

    def vit_prefix(self) -> torch.Tensor:
        emb = self.embeddings
        cls = emb.cls_token[0] + emb.position_embeddings[0, :1]
        if self.config.num_register_tokens:
            return torch.cat([cls, emb.register_tokens[0]])
        return cls

    def vit_blocks(self):
        act = self.config.hidden_act
        for layer in self.encoder.layer:
            attn = layer.attention
            yield BlockParts(layer.norm1, attn.attention.query, attn.attention.key, attn.attention.value,
                             attn.output.dense, layer.norm2, layer.mlp.fc1, layer.mlp.fc2, act,
                             layer.layer_scale1.lambda1, layer.layer_scale2.lambda1)

    def vit_finish(self, x: torch.Tensor, seq: PackedSequence | None):
        x = self.layernorm(x)
        return x, (x[:, 0] if seq is None else seq.prefix(x)[:, :, 0])

    def forward(self, pixel_values: torch.Tensor, gazing_info: Any | None = None, *, output_hidden_states: bool = False,
                attn_type: str | None = None, drop_pads: bool = False) -> VisionOutput:
        if pixel_values.dim() == 4 and gazing_info is None:
            return self.dense_forward(pixel_values, output_hidden_states=output_hidden_states)
        return self.gazed_forward(pixel_values, gazing_info, output_hidden_states=output_hidden_states,
                                  attn_type=attn_type, kernels=self.kernels, drop_pads=drop_pads)
