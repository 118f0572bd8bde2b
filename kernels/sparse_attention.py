"""Sparse gathered-patch attention for the gazed SigLIP: flash attention over packed gazed tokens.

Kernel family 3. The gazed SigLIP encodes only the gazed patches of a clip, packed frame after
frame into ``N`` tokens per sequence. Every token carries a frame id ``f`` and a pad flag. For
batch ``b``, head ``h`` and tokens ``i`` (query) and ``j`` (key)::

    type(i, j) = True                 attn_type "bidirectional"
                 f[j] <= f[i]         attn_type "block_causal" (SigLIP's default)
                 j <= i               attn_type "causal"
                 f[j] == f[i]         attn_type "frame_independent"
    allowed(i, j) = (type(i, j) and not pad[j]) or i == j      # every token attends itself
    s_ij  = scale * <q_i, k_j>                                                   (fp32)
    out_i = sum_j softmax_j(s_ij over allowed j) * v_j                           (fp32 → q.dtype)
    lse_i = log sum_{allowed j} exp(s_ij)                                        (fp32, saved)

Backward (``delta_i = <dout_i, out_i>``, ``p_ij = exp(s_ij - lse_i)`` on allowed pairs, else 0)::

    dv_j = sum_i p_ij dout_i      ds_ij = p_ij (<dout_i, v_j> - delta_i)
    dq_i = scale sum_j ds_ij k_j  dk_j  = scale sum_i ds_ij q_i

Block skipping, O(N) memory: no N×N mask is ever built. Queries are cut into ``BLOCK_M`` tiles,
keys into ``BLOCK_N`` tiles, each tile summarised by its min/max frame id (O(N / block) ints).
Each query tile walks only a range ``[lo, hi)`` of key tiles (and each key tile, in the dk/dv
kernel, a range of query tiles) holding every tile pair whose frame (or, for "causal", index)
ranges admit an allowed pair, e.g. block-causal needs ``min f(key tile) <= max f(query tile)``.
The ranges come from running minima/maxima of the summaries, so they are a safe superset for any
token order, and exact when tokens are sorted by frame, as gazed tokens are: tiles of future
frames (block-causal, causal) or of other frames (frame-independent) are never loaded. Inside a
range the per-element mask makes the result exact (a tile holding only pads is computed, masked).
The walk has no data-dependent branch inside the loop, so Triton software-pipelines its loads.

Frame ids must lie below 2**31 - 1 (that value marks pads / out-of-range keys inside the kernels).

Kernels: ``_sparse_attn_fwd_kernel`` (one program per query tile × (batch, head); online softmax
in base 2), ``_sparse_attn_bwd_dkdv_kernel`` (one program per key tile, walks query tiles) and
``_sparse_attn_bwd_dq_kernel`` (one program per query tile, walks key tiles): no atomics, so the
backward is deterministic. :func:`sparse_attention` is the autograd-aware launcher.

What runs where (``backend="auto"``):

* **CUDA**, inference and under autograd: the Triton forward, and the two backward kernels.
* **CPU with** ``TRITON_INTERPRET=1``: the same Triton kernels through Triton's interpreter.
* **Plain CPU, inference** (no gradient; the gazed SigLIP's production CPU path):
  :func:`_cpu_inference_forward`, torch's fused ``scaled_dot_product_attention`` (flash on CPU)
  over spans of the sequence, never an N×N mask. Block-causal / frame-independent: one call per
  frame over the keys it may see (block-causal: a prefix; frames sorted first by a stable token
  permutation when they are not; rows with other frames or pads run one at a time). Without pads
  no mask at all (block-causal also meets the first half of the frames in one large call merged
  by log-sum-exp); with pads the pad keys are dropped (real keys gathered once) and each pad
  query's own key is merged in by log-sum-exp: pads cost nothing as keys (a pad query still
  costs its row over the real keys its frame allows). Bidirectional: one call; causal without
  pads: one ``is_causal`` call; causal with pads: 512-token query chunks over their key span
  with the chunk's boolean mask. No lse is kept.
* **Plain CPU, under autograd** (training the gazed MAE): :class:`CpuFlashSpanAttention`, per-span
  flash attention: the same spans through torch's fused CPU flash attention (with lse) and its
  fused flash backward, one call per span, ~10x faster than the twin's hand-written fp32 chunks.

The **torch twin** (``backend="torch"``, :func:`sparse_attention_torch`) is the oracle the kernel
tests use besides a dense float64 attention: under autograd it runs :func:`_twin_forward` (the
kernels' tile walk with 512-token chunks, fp32 scores and softmax by hand, keeping the lse) and
:func:`_twin_backward` (probabilities recomputed chunk by chunk), O(N·chunk) memory. Without a
gradient ``backend="torch"`` runs the CPU inference path above, as ``"auto"`` does on CPU.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .aot import AotSpec
from .dispatch import Backend, interpreter_enabled, use_triton

__all__ = [
    "ATTN_TYPES",
    "AOT_SPECS",
    "MAX_HEAD_DIM",
    "sparse_attention",
    "sparse_attention_torch",
    "sparse_attention_forward",
    "sparse_attention_backward",
]

ATTN_TYPES: dict[str, int] = {"bidirectional": 0, "block_causal": 1, "causal": 2, "frame_independent": 3}
MAX_HEAD_DIM = 128
_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
_LOG2E = 1.4426950408889634
_TWIN_CHUNK = 512  # tokens per query/key chunk in the torch twin (bounds its score buffer)

# Tile configurations, chosen so that each compiles without register spills (cuobjdump STACK and
# LOCAL both 0) on every arch it is launched on. Key: (arch class, dtype name, BLOCK_D).
#   "mma":  fp16/bf16 on sm_80+ (tensor cores).
#   "fma":  fp16/bf16 on sm_75 and older: Triton has no tensor-core path there, the dots run on
#           FMA units and only small tiles fit in registers.
#   "fp32": float32 on every arch: IEEE fp32 dots (FMA units), small tiles.
# Forward value: (BLOCK_M, BLOCK_N, num_warps). Backward value: (BLOCK_M, BLOCK_N, num_warps of
# the dk/dv kernel, num_warps of the dq kernel); both backward kernels share the tiles.
_NUM_STAGES = 2
_FWD_CONFIGS: dict[tuple[str, str, int], tuple[int, int, int]] = {}
_BWD_CONFIGS: dict[tuple[str, str, int], tuple[int, int, int, int]] = {}
for _d in (16, 32, 64, 128):
    for _dt in ("fp16", "bf16"):
        _FWD_CONFIGS["mma", _dt, _d] = (64, 64, 4) if _d == 16 else (128, 64, 8) if _d <= 64 else (128, 32, 8)
        _BWD_CONFIGS["mma", _dt, _d] = (32, 64, 4, 4) if _d <= 64 else (32, 32, 4, 4)
        _FWD_CONFIGS["fma", _dt, _d] = (32, 32, 4) if _d <= 64 else (16, 32, 4)
        _BWD_CONFIGS["fma", _dt, _d] = (16, 32, 4, 4) if _d <= 64 else (16, 16, 8, 8)
    _FWD_CONFIGS["fp32", "fp32", _d] = (16, 16, 4) if _d <= 64 else (16, 16, 8)
    _BWD_CONFIGS["fp32", "fp32", _d] = (16, 32, 4, 4) if _d <= 64 else (16, 16, 4, 8)
_ARCHS_MMA = (80, 86, 89, 90, 100, 120)
_ARCHS_FMA = (75,)


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------
# Layout contract (the launchers guarantee it, the kernels state it through alignment hints so
# that even an AOT compile without argument specialisation vectorises its loads): the last dim
# of q/k/v/dout is contiguous, the head dim D is a multiple of 8, every other stride is a
# multiple of 8 elements and every base pointer is 16-byte aligned. Dot operands are loaded in
# the orientation the dot wants (row tiles or transposed "column" tiles), never transposed in
# registers.


@triton.jit
def _dot(a, b, acc, FP32_DOT: tl.constexpr):
    """``acc + a @ b``; with FP32_DOT the operands are upcast and multiplied in full fp32 (IEEE)."""
    if FP32_DOT:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _load_rows(base, offs_rows, stride_row, rows_in, D, BLOCK_D: tl.constexpr):
    """Tile (R, BLOCK_D) of rows ``offs_rows`` (masked by ``rows_in`` and d < D), zeros elsewhere."""
    offs_d = tl.arange(0, BLOCK_D)
    ptrs = tl.multiple_of(base + offs_rows[:, None] * stride_row + offs_d[None, :], (1, 16))
    d_lim = tl.multiple_of(tl.full((1, BLOCK_D), D, tl.int32), (1, 8))
    return tl.load(ptrs, mask=rows_in[:, None] & (offs_d[None, :] < d_lim), other=0.0)


@triton.jit
def _load_cols(base, offs_rows, stride_row, rows_in, D, BLOCK_D: tl.constexpr):
    """The transposed tile (BLOCK_D, R) of rows ``offs_rows``, zeros outside the rows / d < D."""
    offs_d = tl.arange(0, BLOCK_D)
    ptrs = tl.multiple_of(base + offs_rows[None, :] * stride_row + offs_d[:, None], (16, 1))
    d_lim = tl.multiple_of(tl.full((BLOCK_D, 1), D, tl.int32), (8, 1))
    return tl.load(ptrs, mask=rows_in[None, :] & (offs_d[:, None] < d_lim), other=0.0)


@triton.jit
def _store_rows(base, offs_rows, stride_row, rows_in, D, value, BLOCK_D: tl.constexpr):
    """Store ``value`` (R, BLOCK_D) into rows ``offs_rows`` (masked like :func:`_load_rows`)."""
    offs_d = tl.arange(0, BLOCK_D)
    ptrs = tl.multiple_of(base + offs_rows[:, None] * stride_row + offs_d[None, :], (1, 16))
    d_lim = tl.multiple_of(tl.full((1, BLOCK_D), D, tl.int32), (1, 8))
    tl.store(ptrs, value, mask=rows_in[:, None] & (offs_d[None, :] < d_lim))


@triton.jit
def _query_bounds(attn_type, offs_m, f_q, N):
    """Per query row i, bounds (lo_i, hi_i): key j is allowed iff lo_i <= kv_j <= hi_i (or i == j)."""
    big = 2147483647
    small = -2147483647 - 1
    lo = tl.where(attn_type == 3, f_q, small)
    hi = tl.where(attn_type == 0, big - 1, tl.where(attn_type == 2, offs_m, f_q))
    lo = tl.where(offs_m < N, lo, big)  # rows past N attend nothing but (harmlessly) themselves
    return lo, hi


@triton.jit
def _key_values(attn_type, offs_n, f_k, pad_k, N):
    """Per key column, the value compared with the query bounds: its index for "causal", else its
    frame; pads and columns past N get INT32_MAX, which no bound admits."""
    kv = tl.where(attn_type == 2, offs_n, f_k)
    return tl.where((pad_k != 0) | (offs_n >= N), 2147483647, kv)


@triton.jit
def _allowed(q_lo, q_hi, i, k_val, j):
    """Element mask: lo_i <= kv_j <= hi_i, or i == j (every token attends itself). Arguments come
    pre-broadcast ((M,1)/(1,N) for a score tile, (1,M)/(N,1) for its transpose).

    With (lo, hi, kv) from _query_bounds/_key_values this is exactly allowed(i, j) of the module
    docstring for i, j < N: bidirectional (-inf, +inf), block-causal (-inf, f_i], causal
    (-inf, i] over key indices, frame-independent [f_i, f_i].
    """
    return ((k_val >= q_lo) & (k_val <= q_hi)) | (i == j)


@triton.jit
def _sparse_attn_fwd_kernel(
    Q, K, V, O, LSE, FRAME, PAD, K_LO, K_HI,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_on,
    H, N, D, n_qt, qk_scale, attn_type,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, FP32_DOT: tl.constexpr,
):
    """Forward: out_i = softmax over allowed keys of (scale·q_i·k_j) applied to v; lse_i saved.

    Grid (cdiv(N, BLOCK_M), B·H). ``qk_scale`` = scale·log2(e): the online softmax runs in base 2
    (m = running max of s·log2e, l = running sum of 2^(s·log2e - m)), ``lse = (m + log2 l)·ln 2``.
    Query tile ``qt`` of batch ``b`` walks only key tiles ``[K_LO[b, qt], K_HI[b, qt])``.
    FRAME (B, N) int32 and PAD (B, N) int8 are contiguous; LSE is contiguous (B, H, N) fp32.
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_in = offs_m < N
    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh

    q = _load_rows(q_base, offs_m, stride_qn, m_in, D, BLOCK_D)
    f_q = tl.load(FRAME + b * N + offs_m, mask=m_in, other=0)
    row_lo, row_hi = _query_bounds(attn_type, offs_m, f_q, N)

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    lo = tl.load(K_LO + b * n_qt + pid_m)
    hi = tl.load(K_HI + b * n_qt + pid_m)
    for kt in range(lo, hi):
        offs_n = kt * BLOCK_N + tl.arange(0, BLOCK_N)
        n_in = offs_n < N
        k_t = _load_cols(k_base, offs_n, stride_kn, n_in, D, BLOCK_D)
        v = _load_rows(v_base, offs_n, stride_vn, n_in, D, BLOCK_D)
        f_k = tl.load(FRAME + b * N + offs_n, mask=n_in, other=0)
        pad_k = tl.load(PAD + b * N + offs_n, mask=n_in, other=1)
        k_val = _key_values(attn_type, offs_n, f_k, pad_k, N)
        s = _dot(q, k_t, tl.zeros((BLOCK_M, BLOCK_N), tl.float32), FP32_DOT) * qk_scale
        ok = _allowed(row_lo[:, None], row_hi[:, None], offs_m[:, None], k_val[None, :], offs_n[None, :])
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = _dot(p.to(v.dtype), v, acc * alpha[:, None], FP32_DOT)
        m_i = m_new

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    o_base = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    _store_rows(o_base, offs_m, stride_on, m_in, D, (acc / l_safe[:, None]).to(O.dtype.element_ty), BLOCK_D)
    lse = (m_i + tl.log2(l_safe)) * 0.6931471805599453
    tl.store(LSE + pid_bh.to(tl.int64) * N + offs_m, lse, mask=m_in)


@triton.jit
def _sparse_attn_bwd_dkdv_kernel(
    Q, K, V, DO, DK, DV, LSE, DELTA, FRAME, PAD, Q_LO, Q_HI,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_don,
    H, N, D, n_kt, qk_scale, sm_scale, attn_type,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, FP32_DOT: tl.constexpr,
):
    """Backward for one key tile: dv_j = sum_i p_ij dout_i, dk_j = scale sum_i ds_ij q_i.

    Grid (cdiv(N, BLOCK_N), B·H). Works on transposed score tiles s^T = k q^T (BLOCK_N, BLOCK_M),
    recomputing p^T = 2^(s^T·log2e - lse·log2e), and walks only query tiles
    ``[Q_LO[b, kt], Q_HI[b, kt])``. DK/DV are contiguous (B, H, N, D); LSE/DELTA (B, H, N) fp32.
    """
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_in = offs_n < N
    k = _load_rows(K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh, offs_n, stride_kn, n_in, D, BLOCK_D)
    v = _load_rows(V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh, offs_n, stride_vn, n_in, D, BLOCK_D)
    f_k = tl.load(FRAME + b * N + offs_n, mask=n_in, other=0)
    pad_k = tl.load(PAD + b * N + offs_n, mask=n_in, other=1)
    k_val = _key_values(attn_type, offs_n, f_k, pad_k, N)

    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    do_base = DO + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh
    row_base = pid_bh.to(tl.int64) * N
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    lo = tl.load(Q_LO + b * n_kt + pid_n)
    hi = tl.load(Q_HI + b * n_kt + pid_n)
    for qt in range(lo, hi):
        offs_m = qt * BLOCK_M + tl.arange(0, BLOCK_M)
        m_in = offs_m < N
        q_t = _load_cols(q_base, offs_m, stride_qn, m_in, D, BLOCK_D)
        q = _load_rows(q_base, offs_m, stride_qn, m_in, D, BLOCK_D)
        do = _load_rows(do_base, offs_m, stride_don, m_in, D, BLOCK_D)
        do_t = _load_cols(do_base, offs_m, stride_don, m_in, D, BLOCK_D)
        lse = tl.load(LSE + row_base + offs_m, mask=m_in, other=0.0) * 1.4426950408889634
        delta = tl.load(DELTA + row_base + offs_m, mask=m_in, other=0.0)
        f_q = tl.load(FRAME + b * N + offs_m, mask=m_in, other=0)
        row_lo, row_hi = _query_bounds(attn_type, offs_m, f_q, N)
        s_t = _dot(k, q_t, tl.zeros((BLOCK_N, BLOCK_M), tl.float32), FP32_DOT) * qk_scale
        ok = _allowed(row_lo[None, :], row_hi[None, :], offs_m[None, :], k_val[:, None], offs_n[:, None])
        p_t = tl.where(ok, tl.exp2(s_t - lse[None, :]), 0.0)
        dv = _dot(p_t.to(do.dtype), do, dv, FP32_DOT)
        dp_t = _dot(v, do_t, tl.zeros((BLOCK_N, BLOCK_M), tl.float32), FP32_DOT)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = _dot(ds_t.to(q.dtype), q, dk, FP32_DOT)

    out_base = pid_bh.to(tl.int64) * N * D
    _store_rows(DK + out_base, offs_n, D, n_in, D, (dk * sm_scale).to(DK.dtype.element_ty), BLOCK_D)
    _store_rows(DV + out_base, offs_n, D, n_in, D, dv.to(DV.dtype.element_ty), BLOCK_D)


@triton.jit
def _sparse_attn_bwd_dq_kernel(
    Q, K, V, DO, DQ, LSE, DELTA, FRAME, PAD, K_LO, K_HI,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_don,
    H, N, D, n_qt, qk_scale, sm_scale, attn_type,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, FP32_DOT: tl.constexpr,
):
    """Backward for one query tile: dq_i = scale sum_j p_ij (<dout_i, v_j> - delta_i) k_j.

    Grid (cdiv(N, BLOCK_M), B·H); the same key-tile walk as the forward. DQ is contiguous (B, H, N, D).
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_in = offs_m < N
    q = _load_rows(Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh, offs_m, stride_qn, m_in, D, BLOCK_D)
    do = _load_rows(DO + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh, offs_m, stride_don, m_in, D,
                    BLOCK_D)
    row_base = pid_bh.to(tl.int64) * N
    lse = tl.load(LSE + row_base + offs_m, mask=m_in, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + row_base + offs_m, mask=m_in, other=0.0)
    f_q = tl.load(FRAME + b * N + offs_m, mask=m_in, other=0)
    row_lo, row_hi = _query_bounds(attn_type, offs_m, f_q, N)
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh

    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    lo = tl.load(K_LO + b * n_qt + pid_m)
    hi = tl.load(K_HI + b * n_qt + pid_m)
    for kt in range(lo, hi):
        offs_n = kt * BLOCK_N + tl.arange(0, BLOCK_N)
        n_in = offs_n < N
        k_t = _load_cols(k_base, offs_n, stride_kn, n_in, D, BLOCK_D)
        v_t = _load_cols(v_base, offs_n, stride_vn, n_in, D, BLOCK_D)
        k = _load_rows(k_base, offs_n, stride_kn, n_in, D, BLOCK_D)
        f_k = tl.load(FRAME + b * N + offs_n, mask=n_in, other=0)
        pad_k = tl.load(PAD + b * N + offs_n, mask=n_in, other=1)
        k_val = _key_values(attn_type, offs_n, f_k, pad_k, N)
        s = _dot(q, k_t, tl.zeros((BLOCK_M, BLOCK_N), tl.float32), FP32_DOT) * qk_scale
        ok = _allowed(row_lo[:, None], row_hi[:, None], offs_m[:, None], k_val[None, :], offs_n[None, :])
        p = tl.where(ok, tl.exp2(s - lse[:, None]), 0.0)
        dp = _dot(do, v_t, tl.zeros((BLOCK_M, BLOCK_N), tl.float32), FP32_DOT)
        ds = p * (dp - delta[:, None])
        dq = _dot(ds.to(k.dtype), k, dq, FP32_DOT)

    _store_rows(DQ + pid_bh.to(tl.int64) * N * D, offs_m, D, m_in, D, (dq * sm_scale).to(DQ.dtype.element_ty), BLOCK_D)


# ----------------------------------------------------------------------------------------------
# Tile summaries and walk ranges (torch, O(N / block) memory, no host sync)
# ----------------------------------------------------------------------------------------------


def _tile_summaries(frame_ids: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tile of ``block`` tokens: (min frame, max frame), each (B, n_t) int32."""
    B, N = frame_ids.shape
    n_t = triton.cdiv(N, block)
    extra = n_t * block - N
    f = frame_ids
    if extra:
        f = torch.cat([f, f[:, -1:].expand(B, extra)], dim=1)
    f = f.view(B, n_t, block)
    return f.amin(dim=2).contiguous(), f.amax(dim=2).contiguous()


def _count_below(sorted_vals: torch.Tensor, x: torch.Tensor, inclusive: bool) -> torch.Tensor:
    """Per row: how many entries of the non-decreasing ``sorted_vals`` are < x (<= x if inclusive)."""
    return torch.searchsorted(sorted_vals.contiguous(), x.contiguous(), right=inclusive, out_int32=True)


def _key_tile_ranges(q_sum, k_sum, *, attn_type: int, N: int, block_m: int, block_n: int):
    """For each query tile, a range [lo, hi) of key tiles holding every key tile it may need.

    Block-causal needs ``kmin <= qmax``: all such key tiles lie below the count of the suffix
    minimum of ``kmin`` that is <= qmax. Frame-independent also needs ``kmax >= qmin``: all lie at
    or above the count of the prefix maximum of ``kmax`` that is < qmin. Causal is index based.
    Returns two (B, n_qt) int32 tensors.
    """
    q_fmin, q_fmax = q_sum
    k_fmin, k_fmax = k_sum
    B, n_qt = q_fmin.shape
    n_kt = k_fmin.shape[1]
    dev = q_fmin.device
    lo = torch.zeros(B, n_qt, dtype=torch.int32, device=dev)
    hi = torch.full((B, n_qt), n_kt, dtype=torch.int32, device=dev)
    if attn_type == ATTN_TYPES["causal"]:
        last_q = torch.clamp(torch.arange(1, n_qt + 1, device=dev) * block_m, max=N) - 1
        hi = (last_q // block_n + 1).to(torch.int32).expand(B, n_qt).contiguous()
    elif attn_type in (ATTN_TYPES["block_causal"], ATTN_TYPES["frame_independent"]):
        suffix_min = torch.flip(torch.cummin(torch.flip(k_fmin, [1]), dim=1).values, [1])
        hi = _count_below(suffix_min, q_fmax, inclusive=True)
        if attn_type == ATTN_TYPES["frame_independent"]:
            prefix_max = torch.cummax(k_fmax, dim=1).values
            lo = _count_below(prefix_max, q_fmin, inclusive=False)
    return lo.contiguous(), hi.contiguous()


def _query_tile_ranges(q_sum, k_sum, *, attn_type: int, N: int, block_m: int, block_n: int):
    """For each key tile, a range [lo, hi) of query tiles holding every query tile that may use it.

    Mirror of :func:`_key_tile_ranges`. Returns two (B, n_kt) int32 tensors.
    """
    q_fmin, q_fmax = q_sum
    k_fmin, k_fmax = k_sum
    B, n_kt = k_fmin.shape
    n_qt = q_fmin.shape[1]
    dev = k_fmin.device
    lo = torch.zeros(B, n_kt, dtype=torch.int32, device=dev)
    hi = torch.full((B, n_kt), n_qt, dtype=torch.int32, device=dev)
    if attn_type == ATTN_TYPES["causal"]:
        first_k = torch.arange(n_kt, device=dev) * block_n
        lo = (first_k // block_m).to(torch.int32).expand(B, n_kt).contiguous()
    elif attn_type in (ATTN_TYPES["block_causal"], ATTN_TYPES["frame_independent"]):
        prefix_max = torch.cummax(q_fmax, dim=1).values
        lo = _count_below(prefix_max, k_fmin, inclusive=False)
        if attn_type == ATTN_TYPES["frame_independent"]:
            suffix_min = torch.flip(torch.cummin(torch.flip(q_fmin, [1]), dim=1).values, [1])
            hi = _count_below(suffix_min, k_fmax, inclusive=True)
    return lo.contiguous(), hi.contiguous()


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _check_inputs(q, k, v, frame_ids, pad, *, attn_type, scale) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Validate; return (frame ids as contiguous int32, pad as contiguous bool, attn type id, scale)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"sparse_attention: {name} must be a 4-D tensor (B, H, N, D), got "
                             f"{getattr(t, 'shape', type(t))}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"sparse_attention: q, k, v must have the same shape (B, H, N, D), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in _DTYPES:
        raise ValueError(f"sparse_attention: q, k, v must share one dtype among float32/bfloat16/float16, "
                         f"got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device == frame_ids.device == pad.device):
        raise ValueError("sparse_attention: q, k, v, frame_ids and pad must be on one device, got "
                         f"{q.device}, {k.device}, {v.device}, {frame_ids.device}, {pad.device}")
    B, H, N, D = q.shape
    if D < 1 or D > MAX_HEAD_DIM:
        raise ValueError(f"sparse_attention: head dim must be in 1..{MAX_HEAD_DIM}, got {D}")
    if tuple(frame_ids.shape) != (B, N):
        raise ValueError(f"sparse_attention: frame_ids must be (B, N) = {(B, N)}, got {tuple(frame_ids.shape)}")
    if frame_ids.dtype.is_floating_point or frame_ids.dtype == torch.bool or frame_ids.is_complex():
        raise ValueError(f"sparse_attention: frame_ids must be an integer tensor, got {frame_ids.dtype}")
    if tuple(pad.shape) != (B, N) or pad.dtype != torch.bool:
        raise ValueError(f"sparse_attention: pad must be a bool tensor of shape (B, N) = {(B, N)}, got "
                         f"{pad.dtype} {tuple(pad.shape)}")
    if attn_type not in ATTN_TYPES:
        raise ValueError(f"sparse_attention: attn_type must be one of {sorted(ATTN_TYPES)}, got {attn_type!r}")
    if scale is None:
        scale = D ** -0.5
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"sparse_attention: scale must be a positive finite float, got {scale!r}")
    return frame_ids.to(torch.int32).contiguous(), pad.contiguous(), ATTN_TYPES[attn_type], float(scale)


def _arch_class(t: torch.Tensor) -> str:
    """"fp32", "mma" (fp16/bf16 on sm_80+ or under the interpreter) or "fma" (fp16/bf16 on sm_75-)."""
    if t.dtype == torch.float32:
        return "fp32"
    if t.is_cuda and torch.cuda.get_device_capability(t.device) < (8, 0):
        return "fma"
    return "mma"


def _block_d(D: int) -> int:
    return max(16, triton.next_power_of_2(D))


def _fp32_dot(dtype: torch.dtype) -> bool:
    # The Triton 3.9 interpreter multiplies bf16 operands as raw uint16 bits, so under the
    # interpreter every dot is done in fp32 (operands are rounded to their dtype first, as on GPU).
    return dtype == torch.float32 or interpreter_enabled()


# ----------------------------------------------------------------------------------------------
# Triton launchers (no validation: called after _check_inputs)
# ----------------------------------------------------------------------------------------------


class _TileInfo:
    """Walk ranges for one (frame_ids, attn_type, BLOCK_M, BLOCK_N) problem (device tensors)."""

    def __init__(self, frame_ids, attn_type: int, block_m: int, block_n: int):
        N = frame_ids.shape[1]
        self.q_sum = _tile_summaries(frame_ids, block_m)
        self.k_sum = self.q_sum if block_m == block_n else _tile_summaries(frame_ids, block_n)
        self.n_qt, self.n_kt = self.q_sum[0].shape[1], self.k_sum[0].shape[1]
        self.k_lo, self.k_hi = _key_tile_ranges(self.q_sum, self.k_sum, attn_type=attn_type, N=N, block_m=block_m,
                                                block_n=block_n)
        self._q_ranges = None
        self._args = (attn_type, N, block_m, block_n)

    def query_ranges(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._q_ranges is None:
            attn_type, N, bm, bn = self._args
            self._q_ranges = _query_tile_ranges(self.q_sum, self.k_sum, attn_type=attn_type, N=N, block_m=bm,
                                                block_n=bn)
        return self._q_ranges


def _aligned(x: torch.Tensor, d_eff: int) -> torch.Tensor:
    """``x`` (B, H, N, D) meeting the kernels' layout contract with head dim ``d_eff`` (zero padded)."""
    if x.shape[-1] != d_eff:
        return torch.nn.functional.pad(x, (0, d_eff - x.shape[-1]))
    strides_ok = all(s % 8 == 0 for s, n in zip(x.stride()[:-1], x.shape[:-1]) if n > 1)
    if x.stride(-1) == 1 and strides_ok and x.data_ptr() % 16 == 0:
        return x
    return x.clone() if x.is_contiguous() else x.contiguous()


def _fwd_triton(q, k, v, frame_ids, pad, *, attn_type: int, scale: float):
    """Returns (out (B, H, N, D) in q.dtype, lse (B, H, N) fp32)."""
    B, H, N, D = q.shape
    d_eff = -(-D // 8) * 8
    q, k, v = (_aligned(t, d_eff) for t in (q, k, v))
    block_d = _block_d(d_eff)
    block_m, block_n, warps = _FWD_CONFIGS[_arch_class(q), _DTYPES[q.dtype], block_d]
    info = _TileInfo(frame_ids, attn_type, block_m, block_n)
    out = torch.empty((B, H, N, d_eff), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, N), dtype=torch.float32, device=q.device)
    _sparse_attn_fwd_kernel[(info.n_qt, B * H)](
        q, k, v, out, lse, frame_ids, pad.view(torch.int8), info.k_lo, info.k_hi,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        H, N, d_eff, info.n_qt, scale * _LOG2E, attn_type,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, FP32_DOT=_fp32_dot(q.dtype),
        num_warps=warps, num_stages=_NUM_STAGES,
    )
    return (out if d_eff == D else out[..., :D]), lse


def _bwd_triton(q, k, v, out, lse, dout, *, frame_ids, pad, attn_type: int, scale: float):
    """Returns (dq, dk, dv), each (B, H, N, D) in q.dtype."""
    B, H, N, D = q.shape
    d_eff = -(-D // 8) * 8
    delta = (dout.float() * out.float()).sum(-1).contiguous()
    q, k, v, dout = (_aligned(t, d_eff) for t in (q, k, v, dout))
    block_d = _block_d(d_eff)
    block_m, block_n, warps_kv, warps_q = _BWD_CONFIGS[_arch_class(q), _DTYPES[q.dtype], block_d]
    info = _TileInfo(frame_ids, attn_type, block_m, block_n)
    q_lo, q_hi = info.query_ranges()
    lse = lse.contiguous()
    dq = torch.empty((B, H, N, d_eff), dtype=q.dtype, device=q.device)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    pad8 = pad.view(torch.int8)
    fp32_dot = _fp32_dot(q.dtype)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *dout.stride()[:3])
    _sparse_attn_bwd_dkdv_kernel[(info.n_kt, B * H)](
        q, k, v, dout, dk, dv, lse, delta, frame_ids, pad8, q_lo, q_hi, *strides,
        H, N, d_eff, info.n_kt, scale * _LOG2E, scale, attn_type,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, FP32_DOT=fp32_dot,
        num_warps=warps_kv, num_stages=_NUM_STAGES,
    )
    _sparse_attn_bwd_dq_kernel[(info.n_qt, B * H)](
        q, k, v, dout, dq, lse, delta, frame_ids, pad8, info.k_lo, info.k_hi, *strides,
        H, N, d_eff, info.n_qt, scale * _LOG2E, scale, attn_type,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, FP32_DOT=fp32_dot,
        num_warps=warps_q, num_stages=_NUM_STAGES,
    )
    if d_eff != D:
        dq, dk, dv = dq[..., :D], dk[..., :D], dv[..., :D]
    return dq, dk, dv


# ----------------------------------------------------------------------------------------------
# Torch paths: the masks and spans they share, the CPU inference path, the twin (oracle)
# ----------------------------------------------------------------------------------------------


def _allowed_torch(attn_type: int, i: torch.Tensor, j: torch.Tensor, *, f_q, f_k, pad_k) -> torch.Tensor:
    """allowed(i, j) for query indices i (Mq,), key indices j (Mk,), frames (B, Mq)/(B, Mk) → (B, Mq, Mk)."""
    fq = f_q[:, :, None]
    fk = f_k[:, None, :]
    if attn_type == ATTN_TYPES["bidirectional"]:
        ok = torch.ones_like(fq == fk)
    elif attn_type == ATTN_TYPES["block_causal"]:
        ok = fk <= fq
    elif attn_type == ATTN_TYPES["causal"]:
        ok = (j[None, :] <= i[:, None])[None].expand(fq.shape[0], -1, -1)
    else:
        ok = fk == fq
    return (ok & ~pad_k[:, None, :]) | (i[:, None] == j[None, :])[None]


def _chunk_spans(frame_ids, attn_type: int, chunk: int):
    """Yield (q0, q1, k0, k1) per query chunk of ``chunk`` tokens: the key span that the kernels' tile
    walk (with chunk-sized tiles) covers for it (host ints)."""
    N = frame_ids.shape[1]
    summ = _tile_summaries(frame_ids, chunk)
    lo, hi = _key_tile_ranges(summ, summ, attn_type=attn_type, N=N, block_m=chunk, block_n=chunk)
    lo = lo.min(dim=0).values.tolist()
    hi = hi.max(dim=0).values.tolist()
    for t in range(len(lo)):
        yield t * chunk, min(N, (t + 1) * chunk), lo[t] * chunk, min(N, hi[t] * chunk)


def _frame_spans(frame_ids: torch.Tensor, attn_type: int) -> list[tuple[int, int, int, int]] | None:
    """(q0, q1, k0, k1) per frame for block_causal / frame_independent when every batch row shares
    one non-decreasing frame-id sequence (the gazed-SigLIP layout); None otherwise.

    A frame's queries then attend exactly the keys ``[0, q1)`` (block_causal) or ``[q0, q1)``
    (frame_independent), so without pads in that span no mask is needed (each query's own key is
    inside it, so "self always attended" holds too).
    """
    if attn_type not in (ATTN_TYPES["block_causal"], ATTN_TYPES["frame_independent"]) or frame_ids.shape[1] == 0:
        return None
    first = frame_ids[0]
    if not bool((frame_ids == first).all()) or not bool((first[1:] >= first[:-1]).all()):
        return None
    values, counts = torch.unique_consecutive(first, return_counts=True)
    ends = counts.cumsum(0).tolist()
    starts = [0] + ends[:-1]
    block_causal = attn_type == ATTN_TYPES["block_causal"]
    return [(q0, q1, 0 if block_causal else q0, q1) for q0, q1 in zip(starts, ends)]


# torch's CPU flash attention, with the log-sum-exp that merging two key sets needs (None elsewhere)
_CPU_FLASH_WITH_LSE = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_MIN_FRAMES_TO_SPLIT = 4  # fewer frames: the cross block is too small to pay for the merge


def _fwd_frame_spans(q, k, v, frame_ids, pad, *, attn_type: int, scale: float, spans) -> torch.Tensor:
    """CPU inference forward over frame-aligned spans (:func:`_frame_spans`): one fused-attention call
    per frame, masked only where its key span holds pads.

    Block-causal on CPU without pads also splits the frames in two halves at token ``c``: frames
    of the first half attend their span as above; those of the second half attend only the second
    half's keys ``[c, q1)``, and all their queries meet the first half's keys ``[0, c)`` in a single
    large call, merged with their own part by log-sum-exp (``out = lerp(own, cross,
    sigmoid(lse_cross - lse_own))``). The big unmasked block runs ~7% faster per attention than
    the per-frame calls it replaces (SigLIP-B, 16 frames × 198 tokens).
    """
    # torch's CPU flash attention runs ~15% faster on contiguous heads than on the (B, N, H, D)
    # projection layout; the copies cost a few percent of that
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty_like(q)
    idx = torch.arange(q.shape[2], device=q.device)
    cut = None
    if (attn_type == ATTN_TYPES["block_causal"] and q.device.type == "cpu" and _CPU_FLASH_WITH_LSE is not None
            and len(spans) >= _MIN_FRAMES_TO_SPLIT and not bool(pad.any())):
        cut = spans[len(spans) // 2][0]
        own_lse = torch.empty(q.shape[:2] + (q.shape[2] - cut,), dtype=torch.float32, device=q.device)
    for q0, q1, k0, k1 in spans:
        if cut is not None and q0 >= cut:
            o, lse = _CPU_FLASH_WITH_LSE(q[:, :, q0:q1], k[:, :, cut:k1], v[:, :, cut:k1], scale=scale)
            out[:, :, q0:q1] = o
            own_lse[:, :, q0 - cut:q1 - cut] = lse
            continue
        ok = None
        if bool(pad[:, k0:k1].any()):
            ok = _allowed_torch(attn_type, idx[q0:q1], idx[k0:k1], f_q=frame_ids[:, q0:q1], f_k=frame_ids[:, k0:k1],
                                pad_k=pad[:, k0:k1])[:, None]
        out[:, :, q0:q1] = torch.nn.functional.scaled_dot_product_attention(
            q[:, :, q0:q1], k[:, :, k0:k1], v[:, :, k0:k1], attn_mask=ok, scale=scale)
    if cut is not None:
        cross, cross_lse = _CPU_FLASH_WITH_LSE(q[:, :, cut:], k[:, :, :cut], v[:, :, :cut], scale=scale)
        weight = torch.sigmoid(cross_lse.float() - own_lse)[..., None].to(q.dtype)
        out[:, :, cut:] = torch.lerp(out[:, :, cut:], cross, weight)
    return out


def _fwd_real_keys(q, k, v, pad, *, scale: float, spans) -> torch.Tensor:
    """CPU inference forward with pads over frame-aligned spans: keys compacted to the real tokens.

    ``pad`` (B, N) must be the same in every batch row. The real (non-pad) keys and values are
    gathered once, ``(B, H, R, D)``; each span's queries (pads included) meet the real keys of its
    key span ``[k0, k1)`` in one unmasked fused flash call, which keeps the lse. On a frame-aligned
    span every query attends exactly those keys plus itself: a real query's own key is among them,
    a pad query's is merged afterwards by log-sum-exp,
    ``out_i = lerp(o_i, v_i, sigmoid(s_ii - lse_i))`` with ``s_ii = scale <q_i, k_i>`` (``v_i``
    when its span holds no real key). Pad keys are never loaded: the cost is (queries) × (real keys).
    """
    real = ~pad[0]
    before = torch.cat([real.new_zeros(1, dtype=torch.long), real.long().cumsum(0)]).tolist()
    real_idx = real.nonzero().squeeze(1)
    q = q.contiguous()
    k_real, v_real = k.index_select(2, real_idx), v.index_select(2, real_idx)
    out = torch.zeros_like(q)
    lse = torch.full(q.shape[:3], float("-inf"), dtype=torch.float32, device=q.device)
    for q0, q1, k0, k1 in spans:
        r0, r1 = before[k0], before[k1]
        if r1 > r0:  # else: only pads in the span, each of its queries attends itself alone
            o, l = _CPU_FLASH_WITH_LSE(q[:, :, q0:q1], k_real[:, :, r0:r1], v_real[:, :, r0:r1], scale=scale)
            out[:, :, q0:q1] = o
            lse[:, :, q0:q1] = l
    pad_idx = pad[0].nonzero().squeeze(1)
    q_p, k_p, v_p = (t.index_select(2, pad_idx).float() for t in (q, k, v))
    self_weight = torch.sigmoid((q_p * k_p).sum(-1) * scale - lse.index_select(2, pad_idx))
    merged = torch.lerp(out.index_select(2, pad_idx).float(), v_p, self_weight[..., None])
    return out.index_copy_(2, pad_idx, merged.to(q.dtype))


def _fwd_sorted_row(q, k, v, frame_ids, pad, *, attn_type: int, scale: float) -> torch.Tensor | None:
    """The CPU inference forward for batch rows sharing one frame-id sequence and one pad pattern
    (``frame_ids[0]``, ``pad[0]``), for block_causal / frame_independent / bidirectional; None when
    no fused path applies (then the caller's chunk path runs).

    Unsorted frame ids are first put in order by a stable sort of the tokens (a permutation, so the
    result is exact: attention does not depend on key order, and each query keeps its own key).
    Then bidirectional is one span over every key, the others the per-frame spans of
    :func:`_frame_spans`: without pads through :func:`_fwd_frame_spans`, with pads on CPU through
    :func:`_fwd_real_keys` (pad keys dropped).
    """
    f = frame_ids[:1]
    perm = None
    if attn_type != ATTN_TYPES["bidirectional"] and not bool((f[0, 1:] >= f[0, :-1]).all()):
        perm = torch.sort(f[0], stable=True).indices
        q, k, v = (t.index_select(2, perm) for t in (q, k, v))
        f, pad = f[:, perm], pad[:, perm]
    if attn_type == ATTN_TYPES["bidirectional"]:
        spans = [(0, q.shape[2], 0, q.shape[2])]
    else:
        spans = _frame_spans(f, attn_type)
    has_pads = bool(pad[0].any())
    if has_pads and q.device.type == "cpu" and _CPU_FLASH_WITH_LSE is not None:
        out = _fwd_real_keys(q, k, v, pad[:1].expand(q.shape[0], -1), scale=scale, spans=spans)
    else:
        out = _fwd_frame_spans(q, k, v, f.expand(q.shape[0], -1), pad[:1].expand(q.shape[0], -1),
                               attn_type=attn_type, scale=scale, spans=spans)
    if perm is not None:
        out = torch.empty_like(out).index_copy_(2, perm, out)
    return out


def _cpu_inference_forward(q, k, v, frame_ids, pad, *, attn_type: int, scale: float,
                           chunk: int = _TWIN_CHUNK) -> torch.Tensor:
    """The CPU inference path (no gradient, no lse): out (B, H, N, D) in q.dtype.

    * causal without pads: one fused causal attention call (``is_causal``);
    * block_causal / frame_independent / bidirectional: batch rows grouped by their (frame ids,
      pads) — all rows at once when they share them, else one row at a time — each group through
      :func:`_fwd_sorted_row`: frames sorted if needed, one fused call per frame (bidirectional:
      one call), no mask; pad keys dropped on CPU;
    * otherwise (causal with pads) each query chunk of ``chunk`` tokens attends its key span
      (:func:`_chunk_spans`) through torch's fused ``scaled_dot_product_attention`` with the
      chunk's boolean mask.
    """
    if attn_type == ATTN_TYPES["causal"] and not bool(pad.any()):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    if attn_type != ATTN_TYPES["causal"]:
        shared = bool((frame_ids == frame_ids[:1]).all()) and bool((pad == pad[:1]).all())
        if shared:
            return _fwd_sorted_row(q, k, v, frame_ids, pad, attn_type=attn_type, scale=scale)
        return torch.cat([_fwd_sorted_row(q[b:b + 1], k[b:b + 1], v[b:b + 1], frame_ids[b:b + 1], pad[b:b + 1],
                                          attn_type=attn_type, scale=scale) for b in range(q.shape[0])])
    out = torch.empty_like(q)
    idx = torch.arange(q.shape[2], device=q.device)
    for q0, q1, k0, k1 in _chunk_spans(frame_ids, attn_type, chunk):
        ok = _allowed_torch(attn_type, idx[q0:q1], idx[k0:k1], f_q=frame_ids[:, q0:q1], f_k=frame_ids[:, k0:k1],
                            pad_k=pad[:, k0:k1])
        out[:, :, q0:q1] = torch.nn.functional.scaled_dot_product_attention(
            q[:, :, q0:q1], k[:, :, k0:k1], v[:, :, k0:k1], attn_mask=ok[:, None], scale=scale)
    return out


def _twin_forward(q, k, v, frame_ids, pad, *, attn_type: int, scale: float,
                  chunk: int = _TWIN_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """The twin's forward (the kernels' oracle): returns (out (B, H, N, D) in q.dtype, lse (B, H, N) fp32).

    Each query chunk of ``chunk`` tokens attends only its key span (:func:`_chunk_spans`, the
    kernels' tile walk with chunk-sized tiles), its scores, masked softmax and lse computed by hand
    in fp32.
    """
    B, H, N, D = q.shape
    out = torch.empty_like(q)
    lse = torch.empty((B, H, N), dtype=torch.float32, device=q.device)
    idx = torch.arange(N, device=q.device)
    for q0, q1, k0, k1 in _chunk_spans(frame_ids, attn_type, chunk):
        ok = _allowed_torch(attn_type, idx[q0:q1], idx[k0:k1], f_q=frame_ids[:, q0:q1], f_k=frame_ids[:, k0:k1],
                            pad_k=pad[:, k0:k1])
        s = torch.matmul(q[:, :, q0:q1].float(), k[:, :, k0:k1].float().transpose(-1, -2))
        s.mul_(scale).masked_fill_(~ok[:, None], float("-inf"))
        m = s.amax(dim=-1, keepdim=True)
        l = s.sub_(m).exp_().sum(dim=-1, keepdim=True)
        out[:, :, q0:q1] = torch.matmul(s, v[:, :, k0:k1].float()).div_(l).to(q.dtype)
        lse[:, :, q0:q1] = (m + torch.log(l)).squeeze(-1)
    return out, lse


def _torch_forward(q, k, v, frame_ids, pad, *, attn_type: int, scale: float, need_lse: bool,
                   chunk: int = _TWIN_CHUNK) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The torch path's forward: the twin's :func:`_twin_forward` (out, lse) when ``need_lse`` (a
    gradient will be needed), else the CPU inference path :func:`_cpu_inference_forward` (out, None)."""
    if need_lse:
        return _twin_forward(q, k, v, frame_ids, pad, attn_type=attn_type, scale=scale, chunk=chunk)
    return _cpu_inference_forward(q, k, v, frame_ids, pad, attn_type=attn_type, scale=scale, chunk=chunk), None


def _twin_backward(q, k, v, out, lse, dout, *, frame_ids, pad, attn_type: int, scale: float,
                   chunk: int = _TWIN_CHUNK) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The twin's backward (the kernels' oracle, and ``backend="torch"``'s backward): (dq, dk, dv)
    (B, H, N, D) in q.dtype from the forward's ``out`` / ``lse``, probabilities recomputed in fp32
    chunk by chunk over the spans of :func:`_twin_forward`."""
    B, H, N, D = q.shape
    delta = (dout.float() * out.float()).sum(-1)
    dq = torch.zeros((B, H, N, D), dtype=torch.float32, device=q.device)
    dk = torch.zeros_like(dq)
    dv = torch.zeros_like(dq)
    idx = torch.arange(N, device=q.device)
    for q0, q1, k0, k1 in _chunk_spans(frame_ids, attn_type, chunk):
        ok = _allowed_torch(attn_type, idx[q0:q1], idx[k0:k1], f_q=frame_ids[:, q0:q1], f_k=frame_ids[:, k0:k1],
                            pad_k=pad[:, k0:k1])
        qc, kc, vc = q[:, :, q0:q1].float(), k[:, :, k0:k1].float(), v[:, :, k0:k1].float()
        doc = dout[:, :, q0:q1].float()
        s = torch.matmul(qc, kc.transpose(-1, -2)) * scale
        p = torch.exp(s - lse[:, :, q0:q1, None]).masked_fill(~ok[:, None], 0.0)
        dv[:, :, k0:k1] += torch.matmul(p.transpose(-1, -2), doc)
        ds = p * (torch.matmul(doc, vc.transpose(-1, -2)) - delta[:, :, q0:q1, None])
        dq[:, :, q0:q1] += torch.matmul(ds, kc) * scale
        dk[:, :, k0:k1] += torch.matmul(ds.transpose(-1, -2), qc) * scale
    return dq.to(q.dtype), dk.to(q.dtype), dv.to(q.dtype)


# ----------------------------------------------------------------------------------------------
# CPU training path: per-span flash attention, torch's fused CPU flash attention (forward with lse,
# and its backward) over the spans above. Chosen by backend="auto" on plain CPU when a gradient is
# needed; the twin (backend="torch") stays the oracle of the kernel tests.
# ----------------------------------------------------------------------------------------------
_CPU_FLASH_BACKWARD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


def _cpu_flash_usable(q: torch.Tensor) -> bool:
    """True when torch's CPU flash attention (forward with lse and backward) can serve ``q``'s call."""
    return q.device.type == "cpu" and _CPU_FLASH_WITH_LSE is not None and _CPU_FLASH_BACKWARD is not None


def _flash_spans(frame_ids, pad, attn_type: int, chunk: int = _TWIN_CHUNK) -> list[tuple[int, int, int, int, bool]]:
    """(q0, q1, k0, k1, masked) per query span: per frame on the gazed layout (:func:`_frame_spans`,
    ``masked`` only where the key span holds a pad), else the chunk spans (always ``masked``)."""
    spans = _frame_spans(frame_ids, attn_type)
    if spans is None:
        return [(*s, True) for s in _chunk_spans(frame_ids, attn_type, chunk)]
    pads_before = torch.cat([pad.new_zeros(1, dtype=torch.long), pad.any(0).long().cumsum(0)]).tolist()
    return [(q0, q1, k0, k1, pads_before[k1] > pads_before[k0]) for q0, q1, k0, k1 in spans]


def _span_bias(q, frame_ids, pad, *, attn_type: int, span) -> torch.Tensor | None:
    """Additive mask (B, 1, q1 - q0, k1 - k0) in q's dtype (0 allowed, -inf not) of one span, or None
    when the span needs none (every pair allowed)."""
    q0, q1, k0, k1, masked = span
    if not masked:
        return None
    idx = torch.arange(q.shape[2], device=q.device)
    ok = _allowed_torch(attn_type, idx[q0:q1], idx[k0:k1], f_q=frame_ids[:, q0:q1], f_k=frame_ids[:, k0:k1],
                        pad_k=pad[:, k0:k1])
    if bool(ok.all()):
        return None
    return torch.zeros(ok.shape, dtype=q.dtype, device=q.device).masked_fill_(~ok, float("-inf"))[:, None]


class CpuFlashSpanAttention(torch.autograd.Function):
    """Per-span flash attention, the CPU training path of sparse attention: one call of torch's
    fused CPU flash attention per span (queries ``[q0, q1)`` against keys ``[k0, k1)``, masked only
    where the span needs it, :func:`_flash_spans`), keeping each span's lse; the backward calls
    torch's fused flash backward per span and adds the key/value gradients of overlapping key
    spans. Same math as the twin (only the summation order differs), several times faster; every
    query's own key lies inside its span, so no row is fully masked."""

    @staticmethod
    def forward(ctx, q, k, v, frame_ids, pad, attn_type: int, scale: float):
        spans = _flash_spans(frame_ids, pad, attn_type)
        out = torch.empty_like(q)
        lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
        for span in spans:
            q0, q1, k0, k1, _ = span
            o, l = _CPU_FLASH_WITH_LSE(q[:, :, q0:q1], k[:, :, k0:k1], v[:, :, k0:k1],
                                       attn_mask=_span_bias(q, frame_ids, pad, attn_type=attn_type, span=span),
                                       scale=scale)
            out[:, :, q0:q1] = o
            lse[:, :, q0:q1] = l
        ctx.save_for_backward(q, k, v, out, lse, frame_ids, pad)
        ctx.meta = (attn_type, scale, spans)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        q, k, v, out, lse, frame_ids, pad = ctx.saved_tensors
        attn_type, scale, spans = ctx.meta
        dout = dout.to(q.dtype).contiguous()
        dq = torch.empty_like(q)
        acc = torch.float32 if q.dtype != torch.float32 else q.dtype
        dk = torch.zeros(k.shape, dtype=acc, device=k.device)
        dv = torch.zeros(v.shape, dtype=acc, device=v.device)
        for span in spans:
            q0, q1, k0, k1, _ = span
            g_q, g_k, g_v = _CPU_FLASH_BACKWARD(
                dout[:, :, q0:q1], q[:, :, q0:q1], k[:, :, k0:k1], v[:, :, k0:k1], out[:, :, q0:q1],
                lse[:, :, q0:q1].contiguous(), 0.0, False,
                attn_mask=_span_bias(q, frame_ids, pad, attn_type=attn_type, span=span), scale=scale)
            dq[:, :, q0:q1] = g_q
            dk[:, :, k0:k1] += g_k
            dv[:, :, k0:k1] += g_v
        return dq, dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def sparse_attention_forward(q, k, v, frame_ids, pad, attn_type: str = "block_causal", scale: float | None = None,
                             *, backend: Backend = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Forward only, no autograd: returns ``(out (B, H, N, D) in q.dtype, lse (B, H, N) fp32)``.

    The Triton forward, or (CPU without the interpreter, or ``backend="torch"``) the twin's forward."""
    frame_ids, pad, t, scale = _check_inputs(q, k, v, frame_ids, pad, attn_type=attn_type, scale=scale)
    if q.shape[2] == 0:
        return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)
    if use_triton(q, backend=backend):
        return _fwd_triton(q, k, v, frame_ids, pad, attn_type=t, scale=scale)
    return _twin_forward(q, k, v, frame_ids, pad, attn_type=t, scale=scale)


def sparse_attention_backward(q, k, v, out, lse, dout, frame_ids, pad, attn_type: str = "block_causal",
                              scale: float | None = None, *, backend: Backend = "auto"):
    """Gradients ``(dq, dk, dv)`` (B, H, N, D) from the forward's ``out``/``lse`` and ``dout``: the
    Triton backward kernels, or (CPU without the interpreter, or ``backend="torch"``) the twin's backward."""
    frame_ids, pad, t, scale = _check_inputs(q, k, v, frame_ids, pad, attn_type=attn_type, scale=scale)
    if out.shape != q.shape or dout.shape != q.shape or tuple(lse.shape) != tuple(q.shape[:3]):
        raise ValueError(f"sparse_attention_backward: out/dout must be {tuple(q.shape)} and lse {tuple(q.shape[:3])}, "
                         f"got {tuple(out.shape)}, {tuple(dout.shape)}, {tuple(lse.shape)}")
    if q.shape[2] == 0:
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    dout = dout.to(q.dtype)
    if use_triton(q, backend=backend):
        return _bwd_triton(q, k, v, out, lse.float(), dout, frame_ids=frame_ids, pad=pad, attn_type=t, scale=scale)
    return _twin_backward(q, k, v, out, lse.float(), dout, frame_ids=frame_ids, pad=pad, attn_type=t, scale=scale)


class SparseAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: Triton forward/backward; or, on the torch path, the twin's forward/backward
    when a gradient is needed and the CPU inference forward when none is."""

    @staticmethod
    def forward(ctx, q, k, v, frame_ids, pad, attn_type: int, scale: float, triton_path: bool):
        if triton_path:
            out, lse = _fwd_triton(q, k, v, frame_ids, pad, attn_type=attn_type, scale=scale)
        else:
            out, lse = _torch_forward(q, k, v, frame_ids, pad, attn_type=attn_type, scale=scale,
                                      need_lse=any(ctx.needs_input_grad[:3]))
        ctx.save_for_backward(q, k, v, out, lse, frame_ids, pad)
        ctx.meta = (attn_type, scale, triton_path)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, frame_ids, pad = ctx.saved_tensors
        attn_type, scale, triton_path = ctx.meta
        dout = dout.to(q.dtype)
        backward = _bwd_triton if triton_path else _twin_backward
        dq, dk, dv = backward(q, k, v, out, lse, dout, frame_ids=frame_ids, pad=pad, attn_type=attn_type, scale=scale)
        return dq, dk, dv, None, None, None, None, None


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frame_ids: torch.Tensor,
                     pad: torch.Tensor, attn_type: str = "block_causal", scale: float | None = None,
                     *, backend: Backend = "auto") -> torch.Tensor:
    """Masked attention over packed gazed tokens (see the module docstring for the mask).

    Args:
        q, k, v: (B, H, N, D), one dtype among float32/bfloat16/float16, D <= 128, any strides.
        frame_ids: (B, N) integer frame index of every token (gazed tokens come sorted by frame;
            other orders stay correct but skip fewer tiles).
        pad: (B, N) bool, True at padded gaze slots (masked as keys; a pad query attends itself
            and the keys its attention type allows).
        attn_type: "block_causal" (default), "causal", "bidirectional" or "frame_independent".
        scale: softmax scale, default D ** -0.5.
        backend: "auto" (Triton on CUDA / under TRITON_INTERPRET=1; on plain CPU the CPU inference
            path, or per-span flash attention (:class:`CpuFlashSpanAttention`) under autograd),
            "triton", or "torch" (the twin under autograd, the CPU inference path without).

    Returns:
        (B, H, N, D) in q's dtype, contiguous. Differentiable in q, k, v.
    """
    frame_ids, pad, t, scale = _check_inputs(q, k, v, frame_ids, pad, attn_type=attn_type, scale=scale)
    if q.shape[2] == 0:
        return torch.empty_like(q)
    triton_path = use_triton(q, backend=backend)
    if (not triton_path and backend == "auto" and _cpu_flash_usable(q) and torch.is_grad_enabled()
            and (q.requires_grad or k.requires_grad or v.requires_grad)):
        return CpuFlashSpanAttention.apply(q, k, v, frame_ids, pad, t, scale)
    return SparseAttentionFunction.apply(q, k, v, frame_ids, pad, t, scale, triton_path)


def sparse_attention_torch(q, k, v, frame_ids, pad, attn_type: str = "block_causal",
                           scale: float | None = None) -> torch.Tensor:
    """The torch twin: :func:`sparse_attention` with ``backend="torch"`` (see the module docstring)."""
    return sparse_attention(q, k, v, frame_ids, pad, attn_type=attn_type, scale=scale, backend="torch")


# ----------------------------------------------------------------------------------------------
# AOT specs: every (dtype, BLOCK_D) configuration the launchers use
# ----------------------------------------------------------------------------------------------


def _aot_specs() -> list[AotSpec]:
    def strides(*names: str) -> dict[str, str]:
        return {f"stride_{t}{a}": "i32" for t in names for a in ("b", "h", "n")}

    archs_of = {"mma": _ARCHS_MMA, "fma": _ARCHS_FMA, "fp32": None}
    specs = []
    for (cls, dname, block_d), (bm, bn, w_fwd) in _FWD_CONFIGS.items():
        _, _, w_kv, w_q = _BWD_CONFIGS[cls, dname, block_d]
        bm_b, bn_b = _BWD_CONFIGS[cls, dname, block_d][:2]
        ptr = f"*{dname}"
        common = {"FRAME": "*i32", "PAD": "*i8"}
        fwd_sig = {"Q": ptr, "K": ptr, "V": ptr, "O": ptr, "LSE": "*fp32", **common, "K_LO": "*i32", "K_HI": "*i32",
                   **strides("q", "k", "v", "o"),
                   "H": "i32", "N": "i32", "D": "i32", "n_qt": "i32", "qk_scale": "fp32", "attn_type": "i32"}
        dkdv_sig = {"Q": ptr, "K": ptr, "V": ptr, "DO": ptr, "DK": ptr, "DV": ptr, "LSE": "*fp32", "DELTA": "*fp32",
                    **common, "Q_LO": "*i32", "Q_HI": "*i32", **strides("q", "k", "v", "do"),
                    "H": "i32", "N": "i32", "D": "i32", "n_kt": "i32", "qk_scale": "fp32", "sm_scale": "fp32",
                    "attn_type": "i32"}
        dq_sig = {"Q": ptr, "K": ptr, "V": ptr, "DO": ptr, "DQ": ptr, "LSE": "*fp32", "DELTA": "*fp32",
                  **common, "K_LO": "*i32", "K_HI": "*i32", **strides("q", "k", "v", "do"),
                  "H": "i32", "N": "i32", "D": "i32", "n_qt": "i32", "qk_scale": "fp32", "sm_scale": "fp32",
                  "attn_type": "i32"}
        for name, fn, sig, tiles, warps in (
            ("sparse_attn_fwd", _sparse_attn_fwd_kernel, fwd_sig, (bm, bn), w_fwd),
            ("sparse_attn_bwd_dkdv", _sparse_attn_bwd_dkdv_kernel, dkdv_sig, (bm_b, bn_b), w_kv),
            ("sparse_attn_bwd_dq", _sparse_attn_bwd_dq_kernel, dq_sig, (bm_b, bn_b), w_q),
        ):
            const = {"BLOCK_M": tiles[0], "BLOCK_N": tiles[1], "BLOCK_D": block_d, "FP32_DOT": dname == "fp32"}
            tag = f"{cls},{dname},D={block_d},BM={tiles[0]},BN={tiles[1]},w={warps}"
            specs.append(AotSpec(f"{name}[{tag}]", fn, {**sig, **{c: "constexpr" for c in const}}, const,
                                 num_warps=warps, num_stages=_NUM_STAGES, archs=archs_of[cls]))
    return specs


AOT_SPECS: list[AotSpec] = _aot_specs()
