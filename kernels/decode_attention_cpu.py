"""The part of kernel family 2 that needs no Triton, so the fast gaze model on plain CPU never
imports Triton (about 70 MB of resident memory).

* :func:`validate_decode_args`: the argument checks of
  :func:`~autogaze_fast.kernels.decode_attention.decode_attention` (and of the functions below);
* the production CPU decode path (inference): :func:`cpu_attention_bias` builds one additive mask
  (0 / -inf: causal among the new queries, key padding) per decoder call, and
  :func:`fused_cpu_attention` runs **one** fused attention call (torch's
  ``scaled_dot_product_attention``) per layer with it. No split, no online softmax in Python: the
  fused call does the whole softmax. The fast decoder (:mod:`autogaze_fast.fast.decoder`) calls the
  pair directly (the mask is shared by every layer); ``decode_attention`` on CPU and
  ``decode_attention_torch`` with ``num_splits=None`` run the same pair;
* the production CPU path under autograd (training): :func:`prefill_attention_torch`, one fused
  causal attention call with the key padding folded into an extra head column; it is also the
  recompute of the Triton prefill forward's backward on CUDA.

The Triton kernels, their launcher and the split-walk twin (the torch oracle that walks the same
splits as the kernels) live in :mod:`autogaze_fast.kernels.decode_attention`, which re-exports
everything public here.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = ["prefill_attention_torch", "cpu_attention_bias", "fused_cpu_attention", "validate_decode_args",
           "MAX_HEAD_DIM", "TRITON_DTYPE_NAMES"]

MAX_HEAD_DIM = 128
#: the supported dtypes and their names in Triton signatures
TRITON_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}

# prefill_attention_torch: extra head columns that carry the key-padding mask, indexed by "on CPU"
# (CPU's fused attention takes any head dim and one column costs least; CUDA's flash needs D % 8 == 0)
_PAD_COLUMNS = {False: 8, True: 1}


def _as_int(value, name: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def _device_lengths(q: torch.Tensor, cache_len, q_start, kv_bucket) -> bool:
    """True when ``cache_len`` / ``q_start`` are one-element integer tensors on q's device (checked,
    with ``kv_bucket`` then required); False when neither is a tensor."""
    tensors = [isinstance(x, torch.Tensor) for x in (cache_len, q_start)]
    if not any(tensors):
        return False
    if not all(tensors):
        raise ValueError("cache_len and q_start must both be ints or both be one-element integer tensors")
    for name, t in (("cache_len", cache_len), ("q_start", q_start)):
        if t.numel() != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name} as a tensor must hold one integer, got {t.dtype} of shape {tuple(t.shape)}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}; keep the lengths on q's device")
    if kv_bucket is None:
        raise ValueError("lengths given as tensors need kv_bucket: the key range [0, kv_bucket) the split plan "
                         "covers (at least every cache_len the call will see)")
    return True


def validate_decode_args(q, k_cache, v_cache, key_valid, *, cache_len, q_start, kv_bucket=None) -> tuple:
    """Check every argument of :func:`~autogaze_fast.kernels.decode_attention.decode_attention`
    (shapes as documented there); return ``(cache_len, q_start)``: ints, or the one-element tensors
    as given (their values live on the device and cannot be checked here)."""
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("key_valid", key_valid)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dim() != 4:
        raise ValueError(f"q must be (B, Hq, Lq, D), got shape {tuple(q.shape)}")
    if k_cache.dim() != 4:
        raise ValueError(f"k_cache must be (B, Hkv, S_max, D), got shape {tuple(k_cache.shape)}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache shape {tuple(v_cache.shape)} must equal k_cache shape {tuple(k_cache.shape)}")
    B, Hq, Lq, D = q.shape
    Bk, Hkv, S_max, Dk = k_cache.shape
    if Bk != B:
        raise ValueError(f"batch mismatch: q has B={B}, k_cache/v_cache have B={Bk}")
    if Dk != D:
        raise ValueError(f"head dim mismatch: q has D={D}, k_cache/v_cache have D={Dk}")
    if not 1 <= D <= MAX_HEAD_DIM:
        raise ValueError(f"head dim D={D} is not supported: it must be in 1..{MAX_HEAD_DIM}")
    if Hkv < 1 or Hq % Hkv != 0:
        raise ValueError(f"query heads Hq={Hq} must be a multiple of kv heads Hkv={Hkv} (GQA)")
    if Lq < 1:
        raise ValueError("q has no query (Lq = 0); call with at least one new token")
    if tuple(key_valid.shape) != (B, S_max):
        raise ValueError(f"key_valid must be (B, S_max) = {(B, S_max)}, got {tuple(key_valid.shape)}")
    if key_valid.is_floating_point() or key_valid.is_complex():
        raise ValueError(f"key_valid must be bool or integer (nonzero = valid key), got {key_valid.dtype}")
    if q.dtype not in TRITON_DTYPE_NAMES:
        raise ValueError(f"q dtype must be float32, bfloat16 or float16, got {q.dtype}")
    if k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(
            f"dtype mismatch: q is {q.dtype}, k_cache is {k_cache.dtype}, v_cache is {v_cache.dtype}; "
            "keep the cache in the compute dtype"
        )
    devices = {t.device for t in (q, k_cache, v_cache, key_valid)}
    if len(devices) != 1:
        raise ValueError(f"q, k_cache, v_cache and key_valid must be on one device, got {sorted(map(str, devices))}")
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must have stride 1 in its last (head) dim, got strides {t.stride()}; "
                             "call .contiguous() first")
    if kv_bucket is not None:
        kv_bucket = _as_int(kv_bucket, "kv_bucket")
        if not Lq <= kv_bucket <= S_max:
            raise ValueError(f"kv_bucket must lie in [Lq, S_max] = [{Lq}, {S_max}], got {kv_bucket}")
    if _device_lengths(q, cache_len, q_start, kv_bucket):
        return cache_len, q_start
    cache_len = _as_int(cache_len, "cache_len")
    q_start = _as_int(q_start, "q_start")
    if kv_bucket is not None and cache_len > kv_bucket:
        raise ValueError(f"cache_len={cache_len} lies past kv_bucket={kv_bucket}: the split plan must cover every key")
    if q_start < 0:
        raise ValueError(f"q_start must be >= 0, got {q_start}")
    if not q_start + Lq <= cache_len <= S_max:
        raise ValueError(
            f"need q_start + Lq <= cache_len <= S_max, got q_start={q_start}, Lq={Lq}, cache_len={cache_len}, "
            f"S_max={S_max}: write the new keys into the cache before attending"
        )
    return cache_len, q_start


def prefill_attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor, *,
                            scale: float | None = None) -> torch.Tensor:
    """Causal key-padded attention of a whole sequence, differentiable: what
    :func:`~autogaze_fast.kernels.decode_attention.decode_attention` computes in prefill mode
    (``q_start = 0``, ``cache_len = L``), query i attending key j iff ``j <= i`` and ``key_valid[b, j]``.

    Args:
        q: (B, Hq, L, D); k, v: (B, Hkv, L, D), ``Hq % Hkv == 0``; key_valid: (B, L) bool or integer.
    Returns:
        (B, Hq, L, D) in q's dtype; rows with no allowed key are zeros (and pass no gradient).

    Production use: the fast model's teacher-forced (training) attention on plain CPU, run under
    autograd, and on CUDA the recompute inside the backward of the Triton prefill forward
    (:mod:`autogaze_fast.fast.sequence`). Tests check it against a float64 autograd oracle.

    What runs: **one** call of torch's fused attention with ``is_causal=True`` (blocks above the
    diagonal are skipped, no (L, L) mask is ever built). Padded keys are masked without a mask: q
    and k get ``_PAD_COLUMNS`` extra head columns (v gets zeros there), q's first one is 1 and k's
    is ``-finfo.max / 16`` at a padded key and 0 elsewhere, so a padded key's score is hugely
    negative (its softmax weight is exactly 0, hence no value and no gradient flows through it)
    while every other score gains an exact ``+ 0``. Like :func:`fused_cpu_attention`, it needs
    finite keys and values at padded positions (a model's activations always are).
    """
    if all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in (q, k)) and k.shape[2] != q.shape[2]:
        raise ValueError(f"prefill needs as many keys as queries: q has L={q.shape[2]}, k/v have {k.shape[2]}")
    validate_decode_args(q, k, v, key_valid, cache_len=q.shape[2], q_start=0)
    d = q.shape[-1]
    scale = d ** -0.5 if scale is None else float(scale)
    gqa = q.shape[1] != k.shape[1]
    valid = key_valid != 0
    if bool(valid.all()):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    extra = _PAD_COLUMNS[q.device.type == "cpu"]
    big = torch.finfo(q.dtype).max / 16
    q_ext = q.new_zeros(q.shape[:3] + (extra,))
    q_ext[..., 0] = 1.0
    k_ext = k.new_zeros(k.shape[:3] + (extra,))
    k_ext[..., 0] = (~valid)[:, None, :].to(k.dtype) * -big
    out = F.scaled_dot_product_attention(
        torch.cat([q, q_ext], -1), torch.cat([k, k_ext], -1), F.pad(v, (0, extra)),
        is_causal=True, scale=scale, enable_gqa=gqa,
    )[..., :d]
    empty = valid.cumsum(-1) == 0  # (B, L): no valid key at or before the query
    return out.masked_fill(empty[:, None, :, None], 0.0) if bool(empty.any()) else out


def cpu_attention_bias(key_valid: torch.Tensor, q_start: int, n_queries: int,
                       dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The additive mask of the production CPU decode path for ``n_queries`` queries at cache
    positions ``q_start ..``, built once and shareable by every layer of a decoder call (they all
    see the same keys).

    Args:
        key_valid: (B, >= q_start + n_queries) bool, False masks a key.
    Returns:
        bias: (B, 1, n_queries, q_start + n_queries) in ``dtype``: 0 where query i may attend key j
            (``j <= q_start + i`` and ``key_valid[b, j]``), -inf elsewhere.
        empty: (B, 1, n_queries, 1) bool marking rows with no allowed key, or None when no row is
            empty (always the case when the new keys are all valid: each query attends itself).
    """
    kv_end = q_start + n_queries
    valid = key_valid[:, :kv_end]
    bias = torch.zeros((valid.shape[0], 1, n_queries, kv_end), dtype=dtype, device=valid.device)
    bias.masked_fill_(~valid[:, None, None, :], float("-inf"))
    bias[..., q_start:].masked_fill_(_strict_upper(n_queries, valid.device), float("-inf"))
    if bool(valid[:, q_start:].all()):
        return bias, None
    # a row is empty when no valid key lies at or before its position: a prefix sum (O(S), not O(Lq·S))
    seen = valid[:, :q_start].sum(-1, keepdim=True) + valid[:, q_start:].cumsum(-1)  # (B, Lq)
    empty = (seen == 0)[:, None, :, None]
    return bias, (empty if bool(empty.any()) else None)


def fused_cpu_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, bias: torch.Tensor, *,
                        empty: torch.Tensor | None, scale: float) -> torch.Tensor:
    """The production CPU decode attention: one fused attention call with an additive mask.

    Args:
        q: (B, Hq, Lq, D) queries.
        k_cache, v_cache: (B, Hkv, >= kv_end, D), ``Hq % Hkv == 0``; only the first
            ``kv_end = bias.shape[-1]`` keys are read (keys past the queries are never attended).
        bias: (B, 1, Lq, kv_end) from :func:`cpu_attention_bias` (or a trailing slice of its rows).
        empty: the matching (B, 1, Lq, 1) rows with no allowed key (set to zeros), or None.
        scale: softmax scale.
    Returns:
        (B, Hq, Lq, D) in q's dtype: ``softmax(scale·q kᵀ + bias) v`` computed by torch's
        ``scaled_dot_product_attention`` (its fused CPU kernel), GQA without repeating the cache.
        Masked keys get weight 0, so their values must be finite (the fast model's cache is
        zero-initialised and only ever holds keys/values of validated inputs).
    """
    kv_end = bias.shape[-1]
    out = F.scaled_dot_product_attention(
        q, k_cache[:, :, :kv_end], v_cache[:, :, :kv_end], attn_mask=bias, scale=scale,
        enable_gqa=q.shape[1] != k_cache.shape[1],
    )
    return out if empty is None else out.masked_fill(empty, 0.0)


@functools.lru_cache(maxsize=64)
def _strict_upper(n: int, device: torch.device) -> torch.Tensor:
    """(n, n) bool, True above the diagonal: the causal mask among n new queries."""
    return torch.ones(n, n, dtype=torch.bool, device=device).triu_(1)
