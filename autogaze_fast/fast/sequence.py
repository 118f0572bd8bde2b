"""Fast whole-sequence decoder pass for teacher-forced scoring (training): the cached-attention
kernel in prefill mode (all queries at once, ``q_start = 0``), wrapped in an autograd Function.

The backward recomputes the masked attention in torch and differentiates it (a documented trade:
the sequence is a few thousand tokens, so recomputation is cheap next to the rest of training,
and a Triton backward for this one-off shape is not worth its maintenance).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels.decode_attention import decode_attention
from ..reference.llama import GazeDecoder, apply_rope, rope_cos_sin
from .decoder import gather_weights, rms_norm


def masked_causal_attention(q, k, v, key_valid):
    """Differentiable torch attention: query i attends key j iff j ≤ i and key_valid[b, j].

    q (B, H, L, D), k/v (B, Hkv, L, D), key_valid (B, L) bool → (B, H, L, D).
    """
    n = q.shape[2]
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    pos = torch.arange(n, device=q.device)
    allowed = (pos[None, :] <= pos[:, None])[None, None] & key_valid[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


class PrefillAttention(torch.autograd.Function):
    """Forward: :func:`decode_attention` over the whole sequence; backward: torch recomputation."""

    @staticmethod
    def forward(ctx, q, k, v, key_valid):
        ctx.save_for_backward(q, k, v, key_valid)
        n = q.shape[2]
        return decode_attention(q.contiguous(), k.contiguous(), v.contiguous(), key_valid, n, 0)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, key_valid = ctx.saved_tensors
        with torch.enable_grad():
            q_, k_, v_ = (x.detach().requires_grad_() for x in (q, k, v))
            out = masked_causal_attention(q_, k_, v_, key_valid)
            grads = torch.autograd.grad(out, (q_, k_, v_), grad_out)
        return (*grads, None)


def sequence_hidden_states(decoder: GazeDecoder, embeds: torch.Tensor, position_ids: torch.Tensor,
                           mask: torch.Tensor) -> torch.Tensor:
    """Hidden states (B, L, C) of a whole interleaved sequence, differentiable.

    Args:
        embeds: (B, L, C); position_ids: (B, L); mask: (B, L) 1 for attendable keys.
    """
    cfg = decoder.config
    b, n, _ = embeds.shape
    h, hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    cos, sin = rope_cos_sin(decoder.inv_freq, position_ids, embeds.dtype)
    key_valid = mask.bool()
    x = embeds
    for w in gather_weights(decoder):
        qkv = (rms_norm(x, w.input_norm, cfg.rms_norm_eps) @ w.qkv).view(b, n, h + 2 * hkv, d).transpose(1, 2)
        qk = apply_rope(qkv[:, : h + hkv], cos, sin)
        attn = PrefillAttention.apply(qk[:, :h], qk[:, h:], qkv[:, h + hkv:], key_valid)
        x = x + attn.transpose(1, 2).reshape(b, n, h * d) @ w.o
        gate, up = (rms_norm(x, w.post_norm, cfg.rms_norm_eps) @ w.gate_up).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ w.down
    return rms_norm(x, decoder.model.norm.weight, cfg.rms_norm_eps)
