"""Causal cached attention for the gaze decoder: new queries against a static KV cache.

Kernel family 2. A decoder call brings ``Lq`` new tokens (1, the K≈10 tokens of a multi-token
step, or a prefill chunk of a few hundred); their keys/values are already written into the
preallocated cache at positions ``q_start .. q_start+Lq-1``. For batch ``b``, query head ``h``
(reading kv head ``h // G``, ``G = Hq / Hkv``) and query ``i`` at cache position
``p_i = q_start + i``::

    allowed(i, j) = (j <= p_i) and key_valid[b, j] and (j < cache_len)
    s_ij  = scale * <q_i, k_j>                                     (fp32)
    out_i = sum_j softmax_j(s_ij over allowed j) * v_j             (fp32, cast to q.dtype)

A row with no allowed key at all yields **zeros** (not NaN). Masked keys are never read as values,
so garbage (even NaN) at pad positions of the cache cannot leak into the output.

Algorithm (flash-decoding). The key range ``[0, cache_len)`` is cut into ``num_splits`` splits of
``split_len`` keys (a multiple of ``BLOCK_N``); the split kernel runs one program per (tile of
``BLOCK_M`` query rows, batch × kv head, split) and walks its split in ``BLOCK_N`` blocks with an
online softmax in base 2, skipping key blocks past the tile's last query (causal bound). Query
heads that share a kv head are packed into the same tile (row ``r`` ↔ query ``r // G`` of head
``kvh·G + r % G``), so each key block is read once per kv head. Each split writes its normalised
partial output ``o_s`` and log-sum-exp ``lse_s = m_s + log2(l_s)`` (fp32); the combine kernel merges
them: ``out = sum_s 2^(lse_s - M) o_s / sum_s 2^(lse_s - M)``, ``M = max_s lse_s`` (zeros if every
split is empty), in the output dtype; with one split the split kernel writes the output itself
and the combine kernel is skipped. The number of splits targets
two waves of programs over the GPU's SMs: a 10-token step over a 6,000-token context gets dozens
of splits, a long prefill (many query tiles of 32–64 rows) gets one, i.e. plain flash attention.
CUDA-graph decode: ``q_start`` / ``cache_len`` may be device tensors (the kernel reads them from
``LENS``) and ``kv_bucket`` sizes the plan for a bucket of lengths (splits past ``cache_len`` are
empty), so one captured launch serves every step whose keys end inside the bucket.
The head dim is padded to a power of two ``BLOCK_D >= 32`` (32, 64, 128; D up to 128): loads are
masked along it only when ``D < BLOCK_D`` (e.g. 72 → 128). Tiles are 16 query rows (decode) or
32–64 (prefill) by 32–64 keys, chosen so that no configuration spills on sm_75…sm_120
(``autogaze-fast compile-kernels``).

What runs where:

* **CUDA** (inference and the fast model's decode loop, CUDA graphs included): the Triton split
  and combine kernels above, through :func:`decode_attention`. Under autograd (the teacher-forced
  training pass, prefill mode) the same kernels run the forward and the backward recomputes the
  attention with :func:`prefill_attention_torch` (:mod:`autogaze_fast.fast.sequence`).
* **CPU with** ``TRITON_INTERPRET=1``: the same Triton kernels through Triton's interpreter (how
  the tests run them without a GPU).
* **Plain CPU, inference** (the production CPU path): no split and no online softmax in Python but
  **one fused attention call** per layer (torch's ``scaled_dot_product_attention``) with an additive
  0 / -inf mask: :func:`cpu_attention_bias` + :func:`fused_cpu_attention`. The fast decoder calls
  that pair directly (one mask per decoder call, shared by its layers); :func:`decode_attention`
  on CPU tensors and :func:`decode_attention_torch`, both with ``num_splits=None``, run the same pair.
* **Plain CPU, under autograd** (training): :func:`prefill_attention_torch`, one fused causal
  attention call with the key padding folded into an extra head column.

The oracles the kernels are tested against: a float64 naive attention (in the tests) and the
**split-walk twin**, :func:`decode_attention_torch` with ``num_splits`` given (or on CUDA tensors):
the kernels' split / online-softmax / combine algorithm written in torch (fp32 query tiles, key
splits, a running log-sum-exp merge). Without ``num_splits`` on CPU, ``decode_attention_torch`` is
the production CPU path above (so the kernel tests also compare the kernels with what CPU runs).
The parts that need no Triton (argument checks, the production CPU paths) live in
:mod:`autogaze_fast.kernels.decode_attention_cpu` and are re-exported here.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

from .aot import AotSpec
from .decode_attention_cpu import (
    MAX_HEAD_DIM,
    TRITON_DTYPE_NAMES,
    cpu_attention_bias,
    fused_cpu_attention,
    prefill_attention_torch,
    validate_decode_args,
)
from .dispatch import Backend, use_triton

__all__ = ["decode_attention", "decode_attention_torch", "prefill_attention_torch", "cpu_attention_bias",
           "fused_cpu_attention", "validate_decode_args", "AOT_SPECS", "MAX_HEAD_DIM", "TRITON_DTYPE_NAMES"]

_BLOCK_DS = (32, 64, 128)  # BLOCK_D: head dim padded to a power of two, at least 32
_COMBINE_BLOCK_S = 16  # splits merged per step of the combine loop
_LOG2E = 1.4426950408889634
_TWIN_SCORE_BUDGET = 1 << 21  # split-walk twin: score elements per split (8 MiB fp32), sets its split length
_TWIN_Q_TILE = 512  # split-walk twin: queries per tile (long prefills skip keys past each tile's end)
# Triton's CPU interpreter multiplies bfloat16 tl.dot operands as their raw uint16 bits (Triton
# 3.9), so under TRITON_INTERPRET=1 bf16 tiles are widened to fp32 (exactly) before tl.dot. Triton
# reads the variable when kernels are defined, and so does this flag; compiled kernels never see it.
_INTERPRETER_BF16_DOT_FIX = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _tile_dot(a, b, DOT_IEEE: tl.constexpr):
    """``a @ b`` accumulated in fp32; exact fp32 products (no TF32) when ``DOT_IEEE``."""
    if _INTERPRETER_BF16_DOT_FIX:
        if a.dtype == tl.bfloat16:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
    if DOT_IEEE:
        c = tl.dot(a, b, input_precision="ieee")
    else:
        c = tl.dot(a, b)
    return c


# Lengths and everything sized by the split count never specialise (no re-JIT mid-generation):
# the step lengths live on the device (LENS), the LSE buffer's strides follow num_splits.
@triton.jit(do_not_specialize=["lq", "split_len", "stride_lb", "stride_lh", "stride_lm"])
def _decode_attn_split_kernel(
    Q, K, V, KEY_VALID, O_PART, LSE_PART, LENS,
    scale_log2, lq, split_len, n_kv_heads, group, head_dim,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_mb, stride_mn,
    stride_ob, stride_oh, stride_om, stride_os,
    stride_lb, stride_lh, stride_lm,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    EVEN_D: tl.constexpr, DOT_IEEE: tl.constexpr,
):
    """One split of the key range for one tile of packed query rows of one (batch, kv head).

    Grid ``(cdiv(lq·group, BLOCK_M), B·Hkv, num_splits)``. Row ``r`` of the tile is query
    ``i = r // group`` of head ``h = kvh·group + r % group``. With
    ``t_rj = scale·log2(e)·<q_r, k_j>`` (−inf where not allowed) it keeps per row
    ``m_r = max_j t_rj``, ``l_r = sum_j 2^(t_rj − m_r)``, ``acc_r = sum_j 2^(t_rj − m_r)·v_j``,
    rescaled by ``2^(m_old − m_new)`` after each key block, and stores
    ``O_PART[b, h, i, split] = acc_r / l_r`` and ``LSE_PART[b, h, i, split] = m_r + log2(l_r)``
    (0 and −inf for a row with no allowed key in this split). ``EVEN_D``: ``head_dim == BLOCK_D``,
    so no head-dim mask is needed (loads vectorise). ``LENS`` (int32 on the device) holds
    ``(q_start, cache_len)``, so one launch (or a captured CUDA graph) serves any length; splits
    that start past ``cache_len`` store an empty result. With one split, ``O_PART`` may be the
    output itself (any float dtype, ``stride_os`` unused): the combine kernel is then skipped.
    """
    q_start = tl.load(LENS)
    cache_len = tl.load(LENS + 1)
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_s = tl.program_id(2)
    b = (pid_bh // n_kv_heads).to(tl.int64)  # batch and kv head offsets may pass 2^31 elements
    kvh = pid_bh % n_kv_heads

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < lq * group
    qi = rows // group
    head = kvh * group + rows % group
    qpos = q_start + qi
    offs_d = tl.arange(0, BLOCK_D)
    if EVEN_D:
        d_ok = offs_d < BLOCK_D
    else:
        d_ok = offs_d < head_dim

    q_ptrs = Q + b * stride_qb + head[:, None] * stride_qh + qi[:, None] * stride_qm + offs_d[None, :]
    if EVEN_D:
        q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
    else:
        q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)

    # Keys of this split, cut at cache_len and at the tile's last query position (causal bound).
    last_qi = tl.minimum((pid_m * BLOCK_M + BLOCK_M - 1) // group, lq - 1)
    kv_lo = pid_s * split_len
    kv_hi = tl.minimum(tl.minimum(kv_lo + split_len, cache_len), q_start + last_qi + 1)

    k_base = K + b * stride_kb + kvh.to(tl.int64) * stride_kh
    v_base = V + b * stride_vb + kvh.to(tl.int64) * stride_vh
    m_base = KEY_VALID + b * stride_mb

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(kv_lo, kv_hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_ok = offs_n < kv_hi
        valid = n_ok & (tl.load(m_base + offs_n * stride_mn, mask=n_ok, other=0) != 0)
        k_ptrs = k_base + offs_n[None, :] * stride_kn + offs_d[:, None]
        if EVEN_D:
            kt = tl.load(k_ptrs, mask=n_ok[None, :], other=0.0)  # (BLOCK_D, BLOCK_N)
        else:
            kt = tl.load(k_ptrs, mask=n_ok[None, :] & d_ok[:, None], other=0.0)
        s = _tile_dot(q, kt, DOT_IEEE)
        allowed = valid[None, :] & (offs_n[None, :] <= qpos[:, None])
        s = tl.where(allowed, s * scale_log2, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.math.exp2(m_i - m_safe)
        p = tl.math.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        # Values of masked keys are never read: a pad slot holding NaN cannot poison 0·v.
        v_ptrs = v_base + offs_n[:, None] * stride_vn + offs_d[None, :]
        if EVEN_D:
            v = tl.load(v_ptrs, mask=valid[:, None], other=0.0)  # (BLOCK_N, BLOCK_D)
        else:
            v = tl.load(v_ptrs, mask=valid[:, None] & d_ok[None, :], other=0.0)
        acc = acc * alpha[:, None] + _tile_dot(p.to(v.dtype), v, DOT_IEEE)
        m_i = m_new

    has_key = l_i > 0.0
    l_safe = tl.where(has_key, l_i, 1.0)
    o = acc / l_safe[:, None]
    lse = tl.where(has_key, m_i + tl.math.log2(l_safe), float("-inf"))
    o_ptrs = (
        O_PART + b * stride_ob + head[:, None] * stride_oh + qi[:, None] * stride_om
        + pid_s * stride_os + offs_d[None, :]
    )
    tl.store(o_ptrs, o.to(O_PART.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    tl.store(LSE_PART + b * stride_lb + head * stride_lh + qi * stride_lm + pid_s, lse, mask=row_ok)


@triton.jit(do_not_specialize=["num_splits", "lq", "stride_ob", "stride_oh", "stride_om",
                                "stride_lb", "stride_lh", "stride_lm"])
def _decode_attn_combine_kernel(
    O_PART, LSE_PART, OUT,
    num_splits, n_heads, lq, head_dim,
    stride_ob, stride_oh, stride_om, stride_os,
    stride_lb, stride_lh, stride_lm,
    stride_yb, stride_yh, stride_ym,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Merge the splits of one output row ``(b, h, i)``; grid ``(B·Hq·Lq,)``.

    ``OUT[b, h, i] = sum_s w_s·O_PART[b, h, i, s] / sum_s w_s`` with
    ``w_s = 2^(LSE_PART[b, h, i, s] − M)``, ``M = max_s LSE_PART[b, h, i, s]``, computed as a
    running (online) merge over chunks of ``BLOCK_S`` splits; zeros when every split is empty.
    """
    pid = tl.program_id(0)
    i = pid % lq
    h = (pid // lq) % n_heads
    b = (pid // (lq * n_heads)).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    o_base = O_PART + b * stride_ob + h * stride_oh + i * stride_om
    l_base = LSE_PART + b * stride_lb + h * stride_lh + i * stride_lm

    m_run = tl.max(tl.full([BLOCK_S], float("-inf"), tl.float32), 0)
    den = tl.sum(tl.zeros([BLOCK_S], tl.float32), 0)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for s0 in range(0, num_splits, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        s_ok = offs_s < num_splits
        lse = tl.load(l_base + offs_s, mask=s_ok, other=float("-inf"))
        m_new = tl.maximum(m_run, tl.max(lse, 0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.math.exp2(m_run - m_safe)
        w = tl.math.exp2(lse - m_safe)
        o = tl.load(o_base + offs_s[:, None] * stride_os + offs_d[None, :], mask=s_ok[:, None] & d_ok[None, :],
                    other=0.0)
        acc = acc * alpha + tl.sum(w[:, None] * o, 0)
        den = den * alpha + tl.sum(w, 0)
        m_run = m_new
    out = acc / tl.where(den > 0.0, den, 1.0)
    tl.store(OUT + b * stride_yb + h * stride_yh + i * stride_ym + offs_d, out.to(OUT.dtype.element_ty), mask=d_ok)


# ----------------------------------------------------------------------------------------------
# Launch configuration (everything the launcher can pick is listed in AOT_SPECS)
# ----------------------------------------------------------------------------------------------


def _block_d(head_dim: int) -> int:
    """Head dim padded to the next power of two, at least 32."""
    return max(_BLOCK_DS[0], triton.next_power_of_2(head_dim))


# (BLOCK_M, BLOCK_N, num_warps) of the decode tile, the prefill tile (power-of-two head dim,
# Lq·G > 16) and the masked tile (any other head dim), per (fp32?, BLOCK_D). Chosen so that no
# configuration spills registers on sm_75…sm_120 under Triton 3.6 and 3.9: fp32 (exact FMA products,
# no TF32) and sm_75 (Triton lowers tl.dot to FMAs there) need small tiles, BLOCK_D = 128 needs 8
# warps, and fp32's masked tiles (head-dim mask, BLOCK_D 64/128) take 16 keys a block (32 spilled
# 16 B on sm_86/89/90 under Triton 3.6).
_TILES: dict[tuple[bool, int], tuple[tuple[int, int, int], ...]] = {
    (False, 32): ((16, 64, 4), (64, 32, 4), (16, 32, 4)),
    (False, 64): ((16, 32, 4), (32, 32, 4), (16, 32, 4)),
    (False, 128): ((16, 32, 4), (32, 32, 8), (16, 32, 8)),
    (True, 32): ((16, 32, 4), (32, 32, 4), (16, 32, 4)),
    (True, 64): ((16, 32, 4), (32, 32, 4), (16, 16, 4)),
    (True, 128): ((16, 32, 8), (16, 32, 8), (16, 16, 8)),
}


def _split_configs(dtype: torch.dtype, block_d: int) -> list[dict]:
    """The decode, prefill and masked split-kernel configurations for (dtype, BLOCK_D)."""
    fp32 = dtype == torch.float32
    out = []
    for (block_m, block_n, warps), even in zip(_TILES[(fp32, block_d)], (True, True, False)):
        out.append({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_D": block_d, "EVEN_D": even,
                    "DOT_IEEE": fp32, "num_warps": warps, "num_stages": 2})
    return out


def _pick_split_config(dtype: torch.dtype, head_dim: int, n_rows: int) -> dict:
    """The configuration the launcher runs for ``n_rows = Lq·G`` packed query rows."""
    block_d = _block_d(head_dim)
    decode, prefill, masked = _split_configs(dtype, block_d)
    if head_dim != block_d:
        return masked
    return decode if n_rows <= decode["BLOCK_M"] else prefill


def _combine_config(block_d: int) -> dict:
    return {"BLOCK_S": _COMBINE_BLOCK_S, "BLOCK_D": block_d, "num_warps": 4, "num_stages": 1}


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def split_plan(n_tiles: int, kv_len: int, block_n: int, device: torch.device,
               num_splits: int | None = None) -> tuple[int, int]:
    """(num_splits, split_len) over keys ``[0, kv_len)``: about two waves of programs over the
    device's SMs (or ``num_splits`` when forced), ``split_len`` a multiple of ``block_n``, no split
    empty at ``kv_len`` itself. ``kv_len`` is the live cache length, or a bucket's size when the
    plan must hold for every length up to it (CUDA-graph decode)."""
    n_blocks = triton.cdiv(kv_len, block_n)
    if num_splits is None:
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            target = 2 * _sm_count(index)
        else:  # Triton interpreter on CPU: a few splits, so the split + combine path is exercised.
            target = 4
        num_splits = max(1, min(target // max(n_tiles, 1), n_blocks, 256))
    split_len = triton.cdiv(n_blocks, min(int(num_splits), n_blocks)) * block_n
    return triton.cdiv(kv_len, split_len), split_len


_SPLIT_INT_ARGS = (
    "lq", "split_len", "n_kv_heads", "group", "head_dim",
    "stride_qb", "stride_qh", "stride_qm", "stride_kb", "stride_kh", "stride_kn",
    "stride_vb", "stride_vh", "stride_vn", "stride_mb", "stride_mn",
    "stride_ob", "stride_oh", "stride_om", "stride_os", "stride_lb", "stride_lh", "stride_lm",
)
# Aligned in the usual layout: fresh (B, H, S, D) tensors whose head dim is a multiple of 16.
_SPLIT_ALIGNED = ("Q", "K", "V", "KEY_VALID", "O_PART", "LSE_PART", "LENS", "stride_qb", "stride_qh", "stride_qm",
                  "stride_kb", "stride_kh", "stride_kn", "stride_vb", "stride_vh", "stride_vn", "stride_mb",
                  "stride_ob", "stride_oh", "stride_om", "stride_os")
_COMBINE_INT_ARGS = (
    "num_splits", "n_heads", "lq", "head_dim", "stride_ob", "stride_oh", "stride_om", "stride_os",
    "stride_lb", "stride_lh", "stride_lm", "stride_yb", "stride_yh", "stride_ym",
)


def _aot_specs() -> list[AotSpec]:
    specs: list[AotSpec] = []
    for dtype, tname in TRITON_DTYPE_NAMES.items():
        for block_d in _BLOCK_DS:
            for cfg in _split_configs(dtype, block_d):
                # O_PART: the fp32 partial buffer, or (one split) the output itself in the input dtype
                for out_t in dict.fromkeys(("fp32", tname)):
                    direct = "" if out_t == "fp32" else ",direct"
                    name = (f"decode_attn_split[{tname},BLOCK_D={block_d},BLOCK_M={cfg['BLOCK_M']},"
                            f"BLOCK_N={cfg['BLOCK_N']},EVEN_D={int(cfg['EVEN_D'])}{direct}]")
                    if any(spec.name == name for spec in specs):
                        continue  # prefill tile == decode tile
                    consts = {k: cfg[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_D", "EVEN_D", "DOT_IEEE")}
                    sig = {"Q": f"*{tname}", "K": f"*{tname}", "V": f"*{tname}", "KEY_VALID": "*u8",
                           "O_PART": f"*{out_t}", "LSE_PART": "*fp32", "LENS": "*i32", "scale_log2": "fp32"}
                    sig.update({n: "i32" for n in _SPLIT_INT_ARGS})
                    sig.update({k: "constexpr" for k in consts})
                    specs.append(AotSpec(
                        name=name,
                        fn=_decode_attn_split_kernel, signature=sig, constexprs=consts,
                        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                        divisible_by_16=_SPLIT_ALIGNED if cfg["EVEN_D"] else ("Q", "K", "V", "KEY_VALID", "O_PART",
                                                                              "LSE_PART", "LENS"),
                    ))
            cfg = _combine_config(block_d)
            consts = {"BLOCK_S": cfg["BLOCK_S"], "BLOCK_D": block_d}
            sig = {"O_PART": "*fp32", "LSE_PART": "*fp32", "OUT": f"*{tname}"}
            sig.update({n: "i32" for n in _COMBINE_INT_ARGS})
            sig.update({k: "constexpr" for k in consts})
            specs.append(AotSpec(
                name=f"decode_attn_combine[{tname},BLOCK_D={block_d}]",
                fn=_decode_attn_combine_kernel, signature=sig, constexprs=consts,
                num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                divisible_by_16=("O_PART", "LSE_PART", "OUT"),
            ))
    return specs


AOT_SPECS: list[AotSpec] = _aot_specs()


# ----------------------------------------------------------------------------------------------
# Launcher and torch twin
# ----------------------------------------------------------------------------------------------


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    key_valid: torch.Tensor,
    cache_len: int | torch.Tensor,
    q_start: int | torch.Tensor,
    *,
    scale: float | None = None,
    backend: Backend = "auto",
    num_splits: int | None = None,
    kv_bucket: int | None = None,
) -> torch.Tensor:
    """Attention of ``Lq`` new queries over a static KV cache (causal, key-padding mask, GQA).

    Args:
        q: (B, Hq, Lq, D) queries at cache positions ``q_start .. q_start+Lq-1``; float32,
            bfloat16 or float16, last-dim stride 1.
        k_cache, v_cache: (B, Hkv, S_max, D) caches in q's dtype, ``Hq % Hkv == 0``; query head h
            reads kv head ``h // (Hq // Hkv)``. The new tokens' keys/values are already written.
        key_valid: (B, S_max) bool or integer; 0/False masks a key (e.g. eos pads of past frames).
        cache_len: positions ``>= cache_len`` are ignored; ``q_start + Lq <= cache_len <= S_max``.
        q_start: cache position of query 0; query i attends key j iff
            ``j <= q_start + i and key_valid[b, j] and j < cache_len``.
            Both may be one-element integer tensors on q's device (CUDA-graph decode: the kernel
            reads them there, so nothing is synchronised and one capture serves every length); then
            ``kv_bucket`` is required and their values are the caller's to keep in range.
        scale: softmax scale, default ``D ** -0.5``.
        backend: "auto" (Triton on CUDA or under TRITON_INTERPRET=1, else the torch path of
            :func:`decode_attention_torch`: on CPU the fused CPU attention), "triton" or "torch".
        num_splits: force the number of key splits (default: chosen from the device's SM count).
        kv_bucket: size the split plan (grid, partial buffers) for keys ``[0, kv_bucket)`` instead
            of ``[0, cache_len)``: every length up to the bucket gets the same launch; splits past
            ``cache_len`` are empty. ``cache_len <= kv_bucket <= S_max``.

    Returns:
        (B, Hq, Lq, D) in q's dtype (accumulated in float32). Rows with no allowed key are zeros.
    """
    cache_len, q_start = validate_decode_args(q, k_cache, v_cache, key_valid, cache_len=cache_len, q_start=q_start,
                                              kv_bucket=kv_bucket)
    if num_splits is not None and (isinstance(num_splits, bool) or int(num_splits) < 1):
        raise ValueError(f"num_splits must be a positive int or None, got {num_splits!r}")
    B, Hq, Lq, D = q.shape
    scale = D ** -0.5 if scale is None else float(scale)
    if not use_triton(q, k_cache, v_cache, key_valid, backend=backend):
        if isinstance(cache_len, torch.Tensor):  # the torch path is never captured: read the lengths on the host
            cache_len, q_start = validate_decode_args(q, k_cache, v_cache, key_valid, cache_len=int(cache_len),
                                                      q_start=int(q_start), kv_bucket=kv_bucket)
        return _twin(q, k_cache, v_cache, key_valid, cache_len=cache_len, q_start=q_start, scale=scale,
                     num_splits=num_splits)

    Hkv = k_cache.shape[1]
    group = Hq // Hkv
    if key_valid.dtype == torch.bool:
        kv_mask = key_valid.view(torch.uint8)
    elif key_valid.dtype == torch.uint8:
        kv_mask = key_valid
    else:
        kv_mask = (key_valid != 0).view(torch.uint8)
    if isinstance(cache_len, torch.Tensor):
        lens = torch.cat([q_start.reshape(1), cache_len.reshape(1)]).to(torch.int32)
    else:
        lens = torch.tensor([q_start, cache_len], dtype=torch.int32, device=q.device)
    cfg = _pick_split_config(q.dtype, D, Lq * group)
    block_d = cfg["BLOCK_D"]
    m_tiles = triton.cdiv(Lq * group, cfg["BLOCK_M"])
    n_splits, split_len = split_plan(m_tiles * B * Hkv, kv_bucket if kv_bucket is not None else cache_len,
                                     cfg["BLOCK_N"], q.device, num_splits)

    out = torch.empty((B, Hq, Lq, D), device=q.device, dtype=q.dtype)
    if n_splits == 1:  # the split kernel writes the output itself; no combine launch
        o_part, o_strides = out, (out.stride(0), out.stride(1), out.stride(2), 0)
        lse_part = torch.empty((B, Hq, Lq, 1), device=q.device, dtype=torch.float32)
    else:
        o_part = torch.empty((B, Hq, Lq, n_splits, D), device=q.device, dtype=torch.float32)
        o_strides = o_part.stride()[:4]
        lse_part = torch.empty((B, Hq, Lq, n_splits), device=q.device, dtype=torch.float32)
    _decode_attn_split_kernel[(m_tiles, B * Hkv, n_splits)](
        q, k_cache, v_cache, kv_mask, o_part, lse_part, lens,
        scale * _LOG2E, Lq, split_len, Hkv, group, D,
        q.stride(0), q.stride(1), q.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        kv_mask.stride(0), kv_mask.stride(1),
        *o_strides,
        lse_part.stride(0), lse_part.stride(1), lse_part.stride(2),
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_D=block_d, EVEN_D=cfg["EVEN_D"],
        DOT_IEEE=cfg["DOT_IEEE"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    if n_splits == 1:
        return out
    ccfg = _combine_config(block_d)
    _decode_attn_combine_kernel[(B * Hq * Lq,)](
        o_part, lse_part, out,
        n_splits, Hq, Lq, D,
        o_part.stride(0), o_part.stride(1), o_part.stride(2), o_part.stride(3),
        lse_part.stride(0), lse_part.stride(1), lse_part.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        BLOCK_S=ccfg["BLOCK_S"], BLOCK_D=block_d, num_warps=ccfg["num_warps"], num_stages=ccfg["num_stages"],
    )
    return out


def decode_attention_torch(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    key_valid: torch.Tensor,
    cache_len: int,
    q_start: int,
    *,
    scale: float | None = None,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Torch twin of :func:`decode_attention` (same arguments, same result, any device).

    Two paths:

    * CPU tensors with ``num_splits=None`` (what ``decode_attention`` runs on plain CPU): the
      production CPU path, one fused attention call with an additive mask
      (:func:`cpu_attention_bias` + :func:`fused_cpu_attention`).
    * otherwise (CUDA tensors, or ``num_splits`` given): the **split walk**, the kernels' algorithm
      in torch and their oracle. Queries are taken in tiles (``_TWIN_Q_TILE`` at a time); for each
      tile the key range up to its last query (causal bound) is cut into splits; each split
      computes its masked fp32 scores, a normalised partial output and its log-sum-exp, and the
      splits are merged with a running log-sum-exp (online softmax). The score buffer is
      (B, Hq, tile, split_len), not (B, Hq, Lq, S_max): by default a split holds as many keys as
      fit 2M score elements (at least 256; a whole 6k context in one split for a 10-token step);
      ``num_splits`` forces a count per tile. Query heads sharing a kv head are batched against it
      without repeating the cache.

    Rows with no allowed key are zeros.
    """
    if isinstance(cache_len, torch.Tensor) and isinstance(q_start, torch.Tensor):
        cache_len, q_start = int(cache_len), int(q_start)  # the twin reads device lengths on the host
    cache_len, q_start = validate_decode_args(q, k_cache, v_cache, key_valid, cache_len=cache_len, q_start=q_start)
    return _twin(q, k_cache, v_cache, key_valid, cache_len=cache_len, q_start=q_start, scale=scale,
                 num_splits=num_splits)


def _twin(q, k_cache, v_cache, key_valid, *, cache_len: int, q_start: int, scale: float | None,
          num_splits: int | None) -> torch.Tensor:
    """Body of :func:`decode_attention_torch` on already validated arguments: the fused CPU path or
    the split walk (see there)."""
    B, Hq, Lq, D = q.shape
    Hkv = k_cache.shape[1]
    group = Hq // Hkv
    scale = D ** -0.5 if scale is None else float(scale)
    valid_all = key_valid[:, :cache_len] != 0  # (B, cache_len)
    if num_splits is None and q.device.type == "cpu":
        # the production CPU path: keys past q_start + Lq are never attended, cpu_attention_bias cuts them off
        bias, empty = cpu_attention_bias(valid_all, q_start, Lq, q.dtype)
        return fused_cpu_attention(q, k_cache, v_cache, bias, empty=empty, scale=scale)
    q5 = q.reshape(B, Hkv, group, Lq, D)
    out = torch.empty((B, Hkv, group, Lq, D), device=q.device, dtype=q.dtype)
    for c0 in range(0, Lq, _TWIN_Q_TILE):
        c1 = min(c0 + _TWIN_Q_TILE, Lq)
        rows = q5[:, :, :, c0:c1].float().reshape(B, Hkv, group * (c1 - c0), D)  # g-major rows
        qpos = q_start + torch.arange(c0, c1, device=q.device).repeat(group)
        kv_end = q_start + c1  # causal bound of this tile
        if num_splits is None:
            split_len = max(256, _TWIN_SCORE_BUDGET // (B * Hq * (c1 - c0)))
        else:
            split_len = max(1, math.ceil(kv_end / int(num_splits)))
        tile_out = _split_walk_tile(rows, qpos, k_cache, v_cache, valid_all, kv_end=kv_end, split_len=split_len,
                                    scale=scale)
        out[:, :, :, c0:c1] = tile_out.reshape(B, Hkv, group, c1 - c0, D).to(q.dtype)
    return out.reshape(B, Hq, Lq, D)


def _split_walk_tile(rows, qpos, k_cache, v_cache, valid_all, *, kv_end: int, split_len: int, scale: float):
    """The split walk for one query tile: attention of query rows (B, Hkv, R, D) fp32 at positions ``qpos`` (R,) over keys
    ``[0, kv_end)`` in splits of ``split_len``, merged by running log-sum-exp → (B, Hkv, R, D) fp32."""
    B, Hkv, R, D = rows.shape
    m_run = torch.full((B, Hkv, R, 1), float("-inf"), device=rows.device)
    den = torch.zeros((B, Hkv, R, 1), device=rows.device)
    acc = torch.zeros((B, Hkv, R, D), device=rows.device)
    for lo in range(0, kv_end, split_len):
        hi = min(lo + split_len, kv_end)
        kpos = torch.arange(lo, hi, device=rows.device)
        valid = valid_all[:, lo:hi]  # (B, n)
        allowed = valid[:, None, None, :] & (kpos[None, :] <= qpos[:, None])[None, None]  # (B, 1, R, n)
        s = torch.matmul(rows, k_cache[:, :, lo:hi].float().transpose(-1, -2)).mul_(scale)
        s.masked_fill_(~allowed, float("-inf"))
        m_s = s.amax(-1, keepdim=True)
        m_safe = m_s.masked_fill(m_s == float("-inf"), 0.0)
        p = s.sub_(m_safe).exp_()
        l_s = p.sum(-1, keepdim=True)
        has_key = l_s > 0
        l_safe = l_s.masked_fill(~has_key, 1.0)
        v = v_cache[:, :, lo:hi].float()
        pads = (~valid).nonzero()  # (n_pads, 2): batch, key; their values are zeroed (NaN never leaks)
        if pads.numel():
            v = v.to(torch.float32, copy=True)
            v[pads[:, 0], :, pads[:, 1]] = 0.0
        o_s = torch.matmul(p, v).div_(l_safe)
        lse_s = (m_safe + l_safe.log()).masked_fill_(~has_key, float("-inf"))
        # online merge of this split into the running result
        m_new = torch.maximum(m_run, lse_s)
        m_new_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)
        alpha = torch.exp(m_run - m_new_safe)
        w = torch.exp(lse_s - m_new_safe)
        acc = acc.mul_(alpha).add_(w * o_s)
        den = den.mul_(alpha).add_(w)
        m_run = m_new
    return acc / den.masked_fill(den == 0, 1.0)
