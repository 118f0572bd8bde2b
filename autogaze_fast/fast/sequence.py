"""Fast whole-sequence decoder pass for teacher-forced scoring (training), differentiable.

Attention is the causal cached-attention family in prefill mode (all queries at once,
``q_start = 0``): on CUDA (or under ``TRITON_INTERPRET=1``) the Triton kernel, wrapped in an
autograd Function whose backward recomputes the attention under autograd with
:func:`~autogaze_fast.kernels.decode_attention_cpu.prefill_attention_torch` (a documented trade: a
Triton backward for this one-off shape is not worth its maintenance); on plain CPU
``prefill_attention_torch`` itself (one fused causal attention call that skips the blocks above the
diagonal and builds no (L, L) mask) under autograd, so the backward never redoes the forward.
RoPE and attention form one autograd Function (:class:`RopeAttention`) so that the backward hands
the stacked q/k/v projection its gradient in one buffer.

Scoring needs the final hidden state of only a few positions (about one gaze token in ``K`` of each
frame, and the last vision token), so the last layer runs its attention output projection, MLP and
the final norm on those ``rows`` only (its keys and values are still computed for every position);
on plain CPU its attention too runs for those rows' queries alone (:func:`rows_attention`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autogaze_fast.fast.decoder import RopeTables, gather_weights, rms_norm
from autogaze_fast.kernels.decode_attention_cpu import prefill_attention_torch
from autogaze_fast.kernels.dispatch import use_triton
from autogaze_fast.reference.llama import GazeDecoder


class PrefillAttention(torch.autograd.Function):
    """Forward: :func:`decode_attention` over the whole sequence; backward: torch recomputation."""

    @staticmethod
    def forward(ctx, q, k, v, key_valid):
        from autogaze_fast.kernels.decode_attention import decode_attention  # imports Triton: only when it runs

        ctx.save_for_backward(q, k, v, key_valid)
        n = q.shape[2]
        return decode_attention(q.contiguous(), k.contiguous(), v.contiguous(), key_valid, cache_len=n, q_start=0)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, key_valid = ctx.saved_tensors
        with torch.enable_grad():
            q_, k_, v_ = (x.detach().requires_grad_() for x in (q, k, v))
            out = prefill_attention_torch(q_, k_, v_, key_valid)
            grads = torch.autograd.grad(out, (q_, k_, v_), grad_out)
        return (*grads, None)


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
    """Causal key-padded attention of a whole sequence, differentiable.

    q (B, H, L, D), k/v (B, Hkv, L, D), key_valid (B, L) bool → (B, H, L, D).
    """
    if use_triton(q, k, v):
        return PrefillAttention.apply(q, k, v, key_valid)
    return prefill_attention_torch(q, k, v, key_valid)


class RopeAttention(torch.autograd.Function):
    """RoPE on the query and key heads of a stacked projection, then :func:`prefill_attention`, with a
    backward that writes the projection's gradient in one buffer.

    Same math as rotating with :class:`~.decoder.RopeTables` and attending under autograd; what it
    saves is data movement: autograd would route the gradient through three slices of the
    projection (each a zero-filled full-size buffer), a roll (a concatenation) forward and back,
    and a copy to undo the head transpose. The attention's own autograd graph is kept on ``ctx``
    and freed by the first backward: not twice differentiable, and one backward per forward.
    """

    @staticmethod
    def forward(ctx, qkv, cos, sin_signed, key_valid, heads: int, kv_heads: int):
        """qkv (B, L, H + 2·Hkv, D): q, k, v heads; cos / sin_signed (B, 1, L, D) as RopeTables → (B, L, H, D)."""
        x = qkv.detach().transpose(1, 2)  # (B, H + 2·Hkv, L, D) view
        half, hk = x.shape[-1] // 2, heads + kv_heads
        qk = torch.empty(x.shape[:1] + (hk,) + x.shape[2:], dtype=x.dtype, device=x.device)
        for lo, hi, src in ((0, half, slice(half, None)), (half, None, slice(0, half))):  # rot = x·cos + roll(x)·sin
            torch.mul(x[:, :hk, :, lo:hi], cos[..., lo:hi], out=qk[..., lo:hi])
            qk[..., lo:hi].addcmul_(x[:, :hk, :, src], sin_signed[..., lo:hi])
        with torch.enable_grad():
            q, k = qk[:, :heads].requires_grad_(), qk[:, heads:].requires_grad_()
            v = x[:, hk:].requires_grad_()
            out = prefill_attention(q, k, v, key_valid)
        ctx.graph = (q, k, v, out)
        ctx.save_for_backward(cos, sin_signed)
        ctx.mark_non_differentiable(key_valid)
        return out.detach().transpose(1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        if ctx.graph is None:
            raise RuntimeError("the fast teacher-forced pass was already backpropagated once and freed its attention "
                               "graph; run the forward again (retain_graph=True is not supported through it)")
        q, k, v, out = ctx.graph
        ctx.graph = None  # free the inner graph now, as autograd frees saved tensors after a backward
        cos, sin_signed = ctx.saved_tensors
        dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad_out.transpose(1, 2))
        b, heads, n, d = dq.shape
        half = d // 2
        dqkv = torch.empty(b, n, heads + 2 * k.shape[1], d, dtype=dq.dtype, device=dq.device)
        view = dqkv.transpose(1, 2)
        for grad, dest in ((dq, view[:, :heads]), (dk, view[:, heads:heads + k.shape[1]])):
            t = grad * sin_signed  # d rot / d x = cos, plus roll(·sin) transposed: roll back (its own inverse)
            torch.addcmul(t[..., half:], grad[..., :half], cos[..., :half], out=dest[..., :half])
            torch.addcmul(t[..., :half], grad[..., half:], cos[..., half:], out=dest[..., half:])
        view[:, heads + k.shape[1]:] = dv
        return dqkv, None, None, None, None, None


def rows_attention(qkv: torch.Tensor, rope: RopeTables, key_valid: torch.Tensor, rows: torch.Tensor, heads: int,
                   kv_heads: int) -> torch.Tensor | None:
    """The attention of the queries at ``rows`` only (plain autograd; the CPU path of the last layer).

    Scoring reads about one position in ``K`` of the last layer (:mod:`.teacher_forced`), so its
    queries are rotated and attend for those rows alone: torch's fused attention under a (B, 1, R, L)
    boolean map (``j <= row`` and ``key_valid[b, j]``) instead of a causal pass over all L queries.

    Args:
        qkv: (B, L, H + 2·Hkv, D) the stacked projection; rope: the tables of all L positions;
            key_valid: (B, L) bool; rows: (R,) long positions.
    Returns:
        (B, R, H, D), or None when a row has no key to attend (the caller then takes the full pass,
        which gives such rows zeros).
    """
    n = qkv.shape[1]
    allowed = (torch.arange(n, device=qkv.device)[None, :] <= rows[:, None])[None] & key_valid[:, None, :]
    if not bool(allowed.any(-1).all()):
        return None
    x = qkv.transpose(1, 2)  # (B, H + 2·Hkv, L, D)
    hk = heads + kv_heads
    k = rope.rotate(x[:, heads:hk])
    q = x[:, :heads, rows]
    q = q * rope.cos[:, :, rows] + torch.roll(q, rope.half, dims=-1) * rope.sin_signed[:, :, rows]
    out = F.scaled_dot_product_attention(q, k, x[:, hk:], attn_mask=allowed[:, None], scale=x.shape[-1] ** -0.5,
                                         enable_gqa=heads != kv_heads)
    return out.transpose(1, 2)


def sequence_hidden_states(decoder: GazeDecoder, embeds: torch.Tensor, position_ids: torch.Tensor,
                           mask: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Final-norm hidden states of a whole interleaved sequence, differentiable.

    Args:
        embeds: (B, L, C); position_ids: (B, L); mask: (B, L) 1 for attendable keys.
        rows: (R,) long, the positions whose hidden states are wanted (default: all L).
    Returns:
        (B, R, C) hidden states of ``rows`` (B, L, C when ``rows`` is None).
    """
    cfg = decoder.config
    b, n, _ = embeds.shape
    h, hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    eps = cfg.rms_norm_eps
    rope = RopeTables(decoder.inv_freq, position_ids, embeds.dtype)
    key_valid = mask.bool()
    weights = gather_weights(decoder)
    x = embeds
    for i, w in enumerate(weights):
        qkv = (rms_norm(x, w.input_norm, eps) @ w.qkv).view(b, n, h + 2 * hkv, d)
        last = rows is not None and i == len(weights) - 1  # last layer: only the wanted positions go on
        attn = (rows_attention(qkv, rope, key_valid, rows, heads=h, kv_heads=hkv)
                if last and not use_triton(qkv) else None)
        if attn is None:
            attn = RopeAttention.apply(qkv, rope.cos, rope.sin_signed, key_valid, h, hkv)  # (B, L, H, D)
            attn = attn[:, rows] if last else attn
        if last:
            x = x[:, rows]
        x = x + attn.reshape(b, x.shape[1], h * d) @ w.o
        gate, up = (rms_norm(x, w.post_norm, eps) @ w.gate_up).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ w.down
    return rms_norm(x, decoder.model.norm.weight, eps)
