"""Fast gaze-decoder forward over a static KV cache.

Uses the same parameters as :class:`autogaze_fast.reference.llama.GazeDecoder` (so checkpoints
load unchanged); attention goes through the causal cached attention kernel
(:func:`autogaze_fast.kernels.decode_attention.decode_attention`: Triton on CUDA, its torch twin on
CPU). Only the last position's hidden state is normalised and returned: generation needs no more.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kernels.decode_attention import decode_attention
from ..reference.llama import GazeDecoder, apply_rope, rope_cos_sin
from .cache import StaticKVCache


@dataclass
class LayerWeights:
    qkv: torch.Tensor  # (Hq·D + 2·Hkv·D, C): q rows, then k rows, then v rows
    o: torch.Tensor
    gate_up: torch.Tensor  # (2·I, C): gate rows then up rows
    down: torch.Tensor
    input_norm: torch.Tensor
    post_norm: torch.Tensor


def gather_weights(decoder: GazeDecoder) -> list[LayerWeights]:
    """Per-layer weights with q/k/v stacked into one matmul and gate/up into another."""
    layers = []
    for layer in decoder.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        layers.append(LayerWeights(
            torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]), attn.o_proj.weight,
            torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), mlp.down_proj.weight,
            layer.input_layernorm.weight, layer.post_attention_layernorm.weight,
        ))
    return layers


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(dtype)


def decode_step(
    decoder: GazeDecoder,
    weights: list[LayerWeights],
    x: torch.Tensor,
    positions: torch.Tensor,
    new_valid: torch.Tensor,
    cache: StaticKVCache,
) -> torch.Tensor:
    """Append L new positions to the cache and return the last one's final hidden state.

    Args:
        x: (B, L, C) embeddings of the new positions.
        positions: (B, L) their RoPE positions.
        new_valid: (B, L) bool, whether later queries may attend them.
    Returns:
        (B, C) final-norm hidden state of the last new position.
    """
    cfg = decoder.config
    b, n, _ = x.shape
    h, hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    start = cache.length
    cache.reserve(n)
    cache.key_valid[:, start:start + n] = new_valid
    cos, sin = rope_cos_sin(decoder.inv_freq, positions, x.dtype)
    eps = cfg.rms_norm_eps
    for i, w in enumerate(weights):
        qkv = F.linear(rms_norm(x, w.input_norm, eps), w.qkv).view(b, n, h + 2 * hkv, d).transpose(1, 2)
        qk = apply_rope(qkv[:, : h + hkv], cos, sin)
        cache.keys[i, :, :, start:start + n] = qk[:, h:]
        cache.values[i, :, :, start:start + n] = qkv[:, h + hkv:]
        attn = decode_attention(qk[:, :h], cache.keys[i], cache.values[i], cache.key_valid, start + n, start)
        x = x + F.linear(attn.transpose(1, 2).reshape(b, n, h * d), w.o)
        gate, up = F.linear(rms_norm(x, w.post_norm, eps), w.gate_up).chunk(2, dim=-1)
        x = x + F.linear(F.silu(gate) * up, w.down)
    cache.length = start + n
    return rms_norm(x[:, -1], decoder.model.norm.weight, eps)
