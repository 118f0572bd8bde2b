"""The gaze decoder: a LLaMA (RMSNorm, llama3-scaled RoPE, SiLU-gated MLP, GQA-ready attention)
with a K-token multi-token-prediction head and a K-slot task-loss head.

Parameter names match upstream's checkpoint (``model.layers.{i}.self_attn.q_proj.weight``, ...),
so a state dict loads unchanged. The KV cache is the plain growing kind upstream uses: each call
appends its keys and values to per-layer tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from autogaze_fast.config import DecoderConfig


def rope_inverse_frequencies(config: DecoderConfig) -> torch.Tensor:
    """Inverse RoPE frequencies (head_dim/2,), float32, with llama3 long-context scaling if configured.

    llama3 scaling divides low frequencies (wavelength > original_ctx / low_freq_factor) by
    ``factor``, keeps high ones (wavelength < original_ctx / high_freq_factor), and blends in between.
    """
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = config.rope_scaling or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type in (None, "default"):
        return inv_freq
    if rope_type != "llama3":
        raise NotImplementedError(f"rope_scaling type {rope_type!r} is not supported (only 'llama3' and default)")
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    original_ctx = scaling["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = original_ctx / low, original_ctx / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_ctx / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(medium, blended, scaled)


def rope_cos_sin(inv_freq: torch.Tensor, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (B, L, head_dim) for integer ``position_ids`` (B, L), computed in float32."""
    freqs = position_ids[:, :, None].float() * inv_freq.to(position_ids.device)[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, L, D) by cos/sin (B, L, D), rotate-half convention."""
    cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class RMSNorm(nn.Module):
    """``weight · x / sqrt(mean(x²) + eps)``, normalised in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class KVCache:
    """Growing per-layer key/value cache: ``update`` appends (B, Hkv, L, D) and returns the whole history."""

    def __init__(self, num_layers: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    def __len__(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class Attention(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        c = config.hidden_size
        self.q_proj = nn.Linear(c, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(c, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(c, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, c, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        allowed: torch.Tensor,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        """x (B, L, C); allowed (B, 1, L, S) bool, True where query i may attend key j → (B, L, C)."""
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.head_dim**-0.5)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class MLP(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, allowed, cache, layer):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, allowed, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBody(nn.Module):
    """Token embedding, decoder layers and final norm (upstream's ``gaze_decoder.model``)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class GazeDecoder(nn.Module):
    """LLaMA decoder with heads ``lm_head`` ((vocab·K)×C) and ``task_loss_prediction_head`` (K×C)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaBody(config)
        k = config.num_multi_token_pred
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size * k, bias=False)
        self.task_loss_prediction_head = nn.Linear(config.hidden_size, k, bias=False)
        self.register_buffer("inv_freq", rope_inverse_frequencies(config), persistent=False)

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(token_ids)

    def hidden_states(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        key_mask: torch.Tensor,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Run the decoder over new positions.

        Args:
            inputs_embeds: (B, L, C) embeddings of the new positions.
            position_ids: (B, L) RoPE positions of the new positions.
            key_mask: (B, S) 1/True for keys that may be attended, S = cached length + L.
            cache: appended to in place when given (keys of earlier calls come from it).
        Returns:
            (B, L, C) final-norm hidden states.
        """
        b, n, _ = inputs_embeds.shape
        past = 0 if cache is None else len(cache)
        total = past + n
        if key_mask.shape != (b, total):
            raise ValueError(f"key_mask must be (B, cached + new) = {(b, total)}, got {tuple(key_mask.shape)}")
        query_pos = torch.arange(past, total, device=inputs_embeds.device)
        key_pos = torch.arange(total, device=inputs_embeds.device)
        causal = key_pos[None, :] <= query_pos[:, None]  # (L, S)
        allowed = causal[None, None] & key_mask.bool()[:, None, None, :]
        cos, sin = rope_cos_sin(self.inv_freq, position_ids, inputs_embeds.dtype)
        x = inputs_embeds
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, allowed, cache, i)
        return self.model.norm(x)

    def heads(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden (B, L, C) → logits (B, L, K, vocab) and task-loss predictions (B, L, K)."""
        k = self.config.num_multi_token_pred
        logits = self.lm_head(hidden)
        return logits.view(*logits.shape[:-1], k, self.config.vocab_size), self.task_loss_prediction_head(hidden)
