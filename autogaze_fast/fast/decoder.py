"""Fast gaze-decoder forward over a static KV cache.

Uses the same parameters as :class:`autogaze_fast.reference.llama.GazeDecoder` (so checkpoints
load unchanged). Attention over the cache (:class:`CachedAttention`): on CUDA, or on CPU under
``TRITON_INTERPRET=1``, the Triton kernels of
:func:`autogaze_fast.kernels.decode_attention.decode_attention`; on plain CPU one fused attention
call per layer with an additive mask
(:func:`~autogaze_fast.kernels.decode_attention_cpu.fused_cpu_attention`), the mask built once per
call by :func:`~autogaze_fast.kernels.decode_attention_cpu.cpu_attention_bias` and shared by every
layer.

Generation needs only the last position's final hidden state, so the last layer runs its queries,
attention output and MLP for the last two positions only (its keys/values are still written for
every position). Two rather than one: a one-row matmul or attention takes a different (gemv)
code path whose rounding differs from the many-row one; two rows reproduce the full computation
bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from autogaze_fast.fast.cache import StaticKVCache
from autogaze_fast.kernels.decode_attention_cpu import cpu_attention_bias, fused_cpu_attention
from autogaze_fast.kernels.dispatch import use_triton
from autogaze_fast.reference.llama import GazeDecoder, rope_cos_sin

LAST_LAYER_ROWS = 2  # positions the last layer computes past its keys/values (see the module docstring)
MIN_BUCKET = 256  # smallest cache-size bucket of the attention's split plan


def kv_bucket(length: int, capacity: int) -> int:
    """The cache-size bucket of a call whose keys end at ``length``: the smallest power of two
    ``>= length`` (at least :data:`MIN_BUCKET`), capped at the cache's ``capacity``.

    The attention's split plan (grid, partial buffers) is sized for the bucket, not the live
    length, so every decode step inside one bucket launches identically (one CUDA graph per bucket)
    and eager and graphed decode split the keys the same way (bit-identical results)."""
    if not 0 < length <= capacity:
        raise ValueError(f"need 0 < length <= capacity, got length={length}, capacity={capacity}")
    return min(capacity, max(MIN_BUCKET, 1 << (length - 1).bit_length()))


@dataclass
class LayerWeights:
    """One decoder layer's weights, transposed to (in, out) so that ``x @ w`` is a plain GEMM
    (on CPU about twice as fast as ``F.linear`` at 10 rows, and bitwise equal to it from 2 rows on)."""

    qkv: torch.Tensor  # (C, Hq·D + 2·Hkv·D): q columns, then k, then v
    o: torch.Tensor  # (Hq·D, C)
    gate_up: torch.Tensor  # (C, 2·I): gate columns then up
    down: torch.Tensor  # (I, C)
    input_norm: torch.Tensor  # (C,)
    post_norm: torch.Tensor  # (C,)


def gather_weights(decoder: GazeDecoder) -> list[LayerWeights]:
    """Per-layer weights with q/k/v stacked into one matmul and gate/up into another (differentiable)."""
    layers = []
    for layer in decoder.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        layers.append(LayerWeights(
            qkv=torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).t().contiguous(),
            o=attn.o_proj.weight.t().contiguous(),
            gate_up=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).t().contiguous(),
            down=mlp.down_proj.weight.t().contiguous(),
            input_norm=layer.input_layernorm.weight,
            post_norm=layer.post_attention_layernorm.weight,
        ))
    return layers


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight · x / sqrt(mean(x²) + eps)`` normalised in float32, as the reference's RMSNorm."""
    dtype = x.dtype
    xf = x.float()
    return weight * (xf * torch.rsqrt((xf * xf).mean(-1, keepdim=True) + eps)).to(dtype)  # x·x == x.pow(2) bitwise


class RopeTables:
    """cos/sin of the new positions, laid out to rotate (B, H, L, D) heads with one roll:
    ``rot(x) = x·cos + roll(x, D/2)·sin_signed`` equals the rotate-half form bit for bit
    (``(-a)·s == a·(-s)`` exactly)."""

    def __init__(self, inv_freq: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype) -> None:
        cos, sin = rope_cos_sin(inv_freq, positions, dtype)  # (B, L, D)
        self.half = cos.shape[-1] // 2
        self.cos = cos[:, None]
        self.sin_signed = torch.cat([-sin[..., :self.half], sin[..., self.half:]], dim=-1)[:, None]

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.cos + torch.roll(x, self.half, dims=-1) * self.sin_signed


class CachedAttention:
    """Attention of one decoder call's new queries over the cache, set up once for all layers.

    ``n`` new positions occupy cache slots ``[start, start + n)``; a layer may ask for the last
    ``rows <= n`` of them only. ``start`` is a host int or a (1,) long device tensor (graph-ready
    decode): the Triton kernel reads its lengths on the device and splits the keys by ``bucket``;
    the torch twin (CPU, never captured) reads ``start`` on the host.
    """

    def __init__(self, cache: StaticKVCache, start: int | torch.Tensor, n: int, bucket: int,
                 dtype: torch.dtype) -> None:
        self.cache, self.n, self.bucket = cache, n, bucket
        self.triton = use_triton(cache.keys)
        if self.triton:
            end = start + n
            if not isinstance(end, torch.Tensor):
                end = torch.full((1,), end, dtype=torch.long, device=cache.keys.device)
            self.lens = {rows: (end - rows, end) for rows in {n, min(LAST_LAYER_ROWS, n)}}
        else:
            self.bias, self.empty = cpu_attention_bias(cache.key_valid, int(start), n, dtype)

    def __call__(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """q: (B, Hq, rows, D) queries of the last ``rows`` new positions → (B, Hq, rows, D)."""
        rows = q.shape[2]
        keys, values = self.cache.keys[layer], self.cache.values[layer]
        if self.triton:
            from autogaze_fast.kernels.decode_attention import decode_attention  # imports Triton: only when it runs

            q_start, end = self.lens[rows]
            return decode_attention(q, keys, values, self.cache.key_valid, cache_len=end, q_start=q_start,
                                    kv_bucket=self.bucket)
        bias = self.bias[:, :, self.n - rows:]
        empty = None if self.empty is None else self.empty[:, :, self.n - rows:]
        return fused_cpu_attention(q, keys, values, bias, empty=empty, scale=q.shape[-1] ** -0.5)


def decode_step(
    decoder: GazeDecoder,
    weights: list[LayerWeights],
    x: torch.Tensor,
    positions: torch.Tensor,
    new_valid: torch.Tensor,
    cache: StaticKVCache,
    *,
    start: torch.Tensor | None = None,
    bucket: int | None = None,
) -> torch.Tensor:
    """Append L new positions to the cache and return the last one's final hidden state.

    Args:
        x: (B, L, C) embeddings of the new positions.
        positions: (B, L) their RoPE positions.
        new_valid: (B, L) bool, whether later queries may attend them.
        start: None (eager): write at ``cache.length`` and advance it. Or a (1,) long device tensor,
            the write position (graph-ready: nothing here reads a length on the host, nothing
            synchronises; the caller advances ``start``, ``cache.length`` and ensures capacity).
        bucket: the split plan's cache-size bucket (:func:`kv_bucket`); required with ``start``.
    Returns:
        (B, C) final-norm hidden state of the last new position.
    """
    cfg = decoder.config
    b, n, _ = x.shape
    h, hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    device = cache.keys.device
    if start is None:
        first = cache.length
        cache.reserve(n)
        slots = torch.arange(first, first + n, device=device)
        bucket = kv_bucket(first + n, cache.capacity)
    else:
        if bucket is None:
            raise ValueError("decode_step with a device start needs the split plan's bucket (kv_bucket)")
        first = start
        slots = start + torch.arange(n, device=device)
    cache.key_valid.index_copy_(1, slots, new_valid)
    rope = RopeTables(decoder.inv_freq, positions, x.dtype)
    attend = CachedAttention(cache, first, n, bucket, x.dtype)
    eps = cfg.rms_norm_eps
    for i, w in enumerate(weights):
        rows = min(LAST_LAYER_ROWS, n) if i == len(weights) - 1 else n
        qkv = (rms_norm(x, w.input_norm, eps) @ w.qkv).view(b, n, h + 2 * hkv, d).transpose(1, 2)
        qk = rope.rotate(qkv[:, : h + hkv])
        cache.keys[i].index_copy_(2, slots, qk[:, h:])
        cache.values[i].index_copy_(2, slots, qkv[:, h + hkv:])
        attn = attend(i, qk[:, :h, n - rows:])
        x = x[:, n - rows:] + attn.transpose(1, 2).reshape(b, rows, h * d) @ w.o
        gate, up = (rms_norm(x, w.post_norm, eps) @ w.gate_up).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ w.down
    if start is None:
        cache.length = first + n
    return rms_norm(x[:, -1], decoder.model.norm.weight, eps)
