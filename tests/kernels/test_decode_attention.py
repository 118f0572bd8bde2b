"""Kernel family 2 (causal cached attention decode): Triton kernel vs torch twin vs a naive oracle.

Without CUDA the kernels run through Triton's interpreter (conftest sets TRITON_INTERPRET=1), so
shapes stay small; with CUDA they run natively.
"""

from __future__ import annotations

import pytest
import torch

# The module itself (``da``): the launch-configuration tests read its private kernels and tile picks
# (_decode_attn_*_kernel, _pick_split_config, _TWIN_Q_TILE), which have no public counterpart.
from autogaze_fast.kernels import decode_attention as da
from autogaze_fast.kernels.decode_attention import decode_attention, decode_attention_torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.triton  # kernel cases run natively with CUDA (make gpu-check), else interpreted
ATOL = {torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 4e-3}
TWIN_ATOL = {torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 4e-3}  # both round to dtype


def naive_attention(q, k_cache, v_cache, key_valid, cache_len, q_start, scale=None):
    """Oracle: float64, heads repeated, a full (Lq, S_max) mask, softmax; rows with no key → 0."""
    B, Hq, Lq, D = q.shape
    group = Hq // k_cache.shape[1]
    scale = D ** -0.5 if scale is None else scale
    k = k_cache.double().repeat_interleave(group, dim=1)
    v = v_cache.double().repeat_interleave(group, dim=1)
    s = torch.einsum("bhid,bhjd->bhij", q.double(), k) * scale
    j = torch.arange(k.shape[2], device=q.device)
    i = q_start + torch.arange(Lq, device=q.device)
    allowed = (j[None, :] <= i[:, None]) & (j[None, :] < cache_len)
    allowed = allowed[None, None] & (key_valid != 0)[:, None, None, :]
    s = s.masked_fill(~allowed, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhij,bhjd->bhid", p, v)


def make_case(Lq, ctx, D, Hq, Hkv, dtype, *, seed=0, slack=11):
    """Random batch-2 case: the cache holds ``ctx`` filled positions (of S_max = ctx + slack),
    the last Lq are the new queries; batch 0 has scattered pads, batch 1 a run of pads plus a few
    scattered ones (a different pattern), and a few of the new tokens are pads too."""
    g = torch.Generator().manual_seed(seed)
    S_max = ctx + slack
    q = torch.randn(2, Hq, Lq, D, generator=g).to(dtype)
    k = torch.randn(2, Hkv, S_max, D, generator=g).to(dtype)
    v = torch.randn(2, Hkv, S_max, D, generator=g).to(dtype)
    key_valid = torch.rand(2, S_max, generator=g) > 0.3
    key_valid[1] = torch.rand(S_max, generator=g) > 0.1
    key_valid[1, ctx // 4: ctx // 2] = False
    return (q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), key_valid.to(DEVICE), ctx, ctx - Lq)


# (Lq, ctx, D, Hq, Hkv, dtype, num_splits): decode (1), multi-token step (10), prefill chunk (40);
# context lengths that are not multiples of any block; GQA and MHA; D = 32 (even) and 72 (masked).
KERNEL_CASES = [
    (1, 37, 32, 4, 2, torch.float32, None),
    (10, 100, 32, 4, 2, torch.float32, None),
    (10, 100, 32, 2, 2, torch.float32, 5),
    (40, 251, 32, 2, 2, torch.float32, None),
    (40, 100, 32, 4, 2, torch.float32, 5),
    (1, 100, 72, 2, 2, torch.float32, None),
    (10, 251, 72, 4, 2, torch.float32, 3),
    (40, 100, 72, 2, 2, torch.float32, None),
    (1, 251, 32, 4, 2, torch.bfloat16, None),
    (10, 100, 32, 2, 2, torch.bfloat16, None),
    (40, 100, 32, 4, 2, torch.bfloat16, 4),
    (10, 37, 72, 4, 2, torch.bfloat16, None),
    (1, 100, 32, 2, 2, torch.float16, 3),
    (10, 251, 32, 4, 2, torch.float16, None),
    (40, 100, 32, 2, 2, torch.float16, None),
    (10, 100, 72, 2, 2, torch.float16, None),
    (10, 37, 64, 4, 1, torch.float16, None),
    (10, 37, 128, 2, 1, torch.bfloat16, None),
    (1, 37, 16, 2, 2, torch.float32, None),
]


def _case_id(case):
    Lq, ctx, D, Hq, Hkv, dtype, ns = case
    return f"Lq{Lq}-ctx{ctx}-D{D}-H{Hq}x{Hkv}-{str(dtype).split('.')[-1]}-splits{ns}"


@pytest.mark.parametrize("case", KERNEL_CASES, ids=_case_id)
def test_kernel_matches_naive_and_twin(case):
    Lq, ctx, D, Hq, Hkv, dtype, num_splits = case
    q, k, v, kv, cache_len, q_start = make_case(Lq, ctx, D, Hq, Hkv, dtype)
    out = decode_attention(q, k, v, kv, cache_len, q_start, backend="triton", num_splits=num_splits)
    assert out.shape == q.shape and out.dtype == dtype
    ref = naive_attention(q, k, v, kv, cache_len, q_start)
    twin = decode_attention_torch(q, k, v, kv, cache_len, q_start)
    torch.testing.assert_close(out.double(), ref, atol=ATOL[dtype], rtol=0)
    torch.testing.assert_close(out.float(), twin.float(), atol=TWIN_ATOL[dtype], rtol=0)


@pytest.mark.parametrize("num_splits", [None, 2, 64])
@pytest.mark.parametrize("case", [c for c in KERNEL_CASES if c[5] != torch.float16], ids=_case_id)
def test_twin_matches_naive(case, num_splits):
    Lq, ctx, D, Hq, Hkv, dtype, _ = case
    q, k, v, kv, cache_len, q_start = make_case(Lq, ctx, D, Hq, Hkv, dtype, seed=1)
    out = decode_attention_torch(q, k, v, kv, cache_len, q_start, num_splits=num_splits)
    assert out.dtype == dtype
    ref = naive_attention(q, k, v, kv, cache_len, q_start)
    torch.testing.assert_close(out.double(), ref, atol=ATOL[dtype], rtol=0)


def _launched_splits(dtype, head_dim, lq, group, cache_len, num_splits):
    """How many splits the launcher runs for a forced ``num_splits`` (the split length is a whole
    number of key blocks, so the count can come out below the one asked for)."""
    block_n = da._pick_split_config(dtype, head_dim, lq * group)["BLOCK_N"]
    n_blocks = -(-cache_len // block_n)
    split_len = -(-n_blocks // min(num_splits, n_blocks)) * block_n
    return -(-cache_len // split_len)


# (Lq, ctx, dtype, num_splits, at least): more splits than one chunk (16) and than two chunks (32)
# of the combine kernel's loop, so its running-max rescale between chunks is exercised.
MANY_SPLIT_CASES = [
    (1, 700, torch.float32, 22, 17),
    (10, 1270, torch.float32, 40, 33),
    (1, 1400, torch.bfloat16, 22, 17),
    (10, 1270, torch.bfloat16, 40, 33),
]


@pytest.mark.parametrize("Lq, ctx, dtype, num_splits, at_least", MANY_SPLIT_CASES,
                         ids=[f"Lq{c[0]}-ctx{c[1]}-{str(c[2]).split('.')[-1]}-splits{c[3]}" for c in MANY_SPLIT_CASES])
def test_many_splits_kernel_and_twin_match_float64_oracle(Lq, ctx, dtype, num_splits, at_least):
    """> 16 and > 32 key splits: the split kernel, the chunked combine, and the twin's split walk
    against the dense float64 oracle. Queries are scaled up so that the splits' log-sum-exps spread
    (a combine that skips the rescale between chunks is then off by far more than the tolerance)."""
    q, k, v, kv, cache_len, q_start = make_case(Lq, ctx, 32, 2, 1, dtype, seed=ctx)
    q = (q.float() * 3).to(dtype)
    assert _launched_splits(dtype, 32, Lq, 2, cache_len, num_splits) >= at_least
    ref = naive_attention(q, k, v, kv, cache_len, q_start)
    out = decode_attention(q, k, v, kv, cache_len, q_start, backend="triton", num_splits=num_splits)
    twin = decode_attention_torch(q, k, v, kv, cache_len, q_start, num_splits=num_splits)
    assert out.dtype == dtype and twin.dtype == dtype
    torch.testing.assert_close(out.double(), ref, atol=ATOL[dtype], rtol=0, msg="triton vs float64 oracle")
    torch.testing.assert_close(twin.double(), ref, atol=ATOL[dtype], rtol=0, msg="twin vs float64 oracle")
    torch.testing.assert_close(out.float(), twin.float(), atol=TWIN_ATOL[dtype], rtol=0, msg="triton vs twin")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_long_context_default_splits(dtype):
    """A ~6k-key context and a 10-token step at the launcher's default split count (dozens of
    splits on a real GPU) against the float64 oracle, at the CPU tolerances."""
    q, k, v, kv, cache_len, q_start = make_case(10, 6000, 64, 6, 6, dtype, seed=6000)
    out = decode_attention(q, k, v, kv, cache_len, q_start)
    ref = naive_attention(q, k, v, kv, cache_len, q_start)
    torch.testing.assert_close(out.double(), ref, atol=ATOL[dtype], rtol=0)


@pytest.mark.parametrize("q_tile", [7, 16])
def test_twin_query_tiles_match_naive(monkeypatch, q_tile):
    """Long prefills are taken in query tiles, each cut at its own causal bound."""
    monkeypatch.setattr(da, "_TWIN_Q_TILE", q_tile)
    q, k, v, kv, cache_len, q_start = make_case(40, 100, 32, 4, 2, torch.float32, seed=6)
    for num_splits in (None, 3):
        out = decode_attention_torch(q, k, v, kv, cache_len, q_start, num_splits=num_splits)
        torch.testing.assert_close(out.double(), naive_attention(q, k, v, kv, cache_len, q_start), atol=2e-5, rtol=0)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_rows_without_any_key_are_zero_and_pads_never_leak(backend):
    """Batch 1 masks every key its first queries could see; pad slots and the unfilled tail hold NaN."""
    q, k, v, kv, cache_len, q_start = make_case(10, 37, 32, 4, 2, torch.float32, seed=2)
    kv[1, : q_start + 4] = False  # queries 0..3 of batch 1 see no valid key at all
    k, v = k.clone(), v.clone()
    for t in (k, v):
        t[:, :, cache_len:] = float("nan")
        t.masked_fill_(~kv[:, None, :, None], float("nan"))
    out = decode_attention(q, k, v, kv, cache_len, q_start, backend=backend, num_splits=2)
    assert torch.isfinite(out).all()
    assert (out[1, :, :4] == 0).all()
    assert out[1, :, 4:].abs().sum() > 0 and out[0].abs().sum() > 0
    k0, v0 = k.nan_to_num(0.0), v.nan_to_num(0.0)
    torch.testing.assert_close(out.double(), naive_attention(q, k0, v0, kv, cache_len, q_start), atol=2e-5, rtol=0)


def test_twin_default_path_rows_without_any_key_are_zero():
    """The twin's default CPU path (one split through torch's fused attention, what the fast model
    runs on CPU) also gives zeros, not NaN, for queries that see no valid key."""
    q, k, v, kv, cache_len, q_start = make_case(10, 37, 32, 4, 2, torch.float32, seed=2)
    kv[1, : q_start + 4] = False  # queries 0..3 of batch 1 see no valid key at all
    out = decode_attention_torch(q, k, v, kv, cache_len, q_start)
    assert torch.isfinite(out).all()
    assert (out[1, :, :4] == 0).all()
    torch.testing.assert_close(out.double(), naive_attention(q, k, v, kv, cache_len, q_start), atol=2e-5, rtol=0)


@pytest.mark.parametrize("rows,n,ctx,Hq,Hkv", [
    (10, 10, 100, 4, 2),  # a multi-token step (GQA)
    (2, 10, 100, 6, 6),  # the last layer's two rows of a step
    (2, 40, 97, 4, 1),  # the last rows of a prefill chunk (one kv head)
    (40, 40, 40, 2, 2),  # the first prefill: no key before the new ones
    (1, 1, 251, 2, 2),  # one-token decode
])
def test_fused_cpu_attention_on_trailing_rows_matches_naive(rows, n, ctx, Hq, Hkv):
    """The fast model's CPU decode path as it calls it: one mask for the ``n`` new tokens, a layer
    attending with its last ``rows`` of them; equals the float64 oracle, and keys past the end,
    even NaN, are never read."""
    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, Hq, rows, 32, generator=g)
    k, v = (torch.randn(2, Hkv, ctx + 5, 32, generator=g) for _ in range(2))
    k[:, :, ctx:], v[:, :, ctx:] = float("nan"), float("nan")
    kv = torch.ones(2, ctx + 5, dtype=torch.bool)
    bias, empty = da.cpu_attention_bias(kv, ctx - n, n, q.dtype)
    assert empty is None
    out = da.fused_cpu_attention(q, k, v, bias[:, :, n - rows:], empty=None, scale=0.3)
    want = naive_attention(q, k.nan_to_num(0.0), v.nan_to_num(0.0), kv, ctx, ctx - rows, scale=0.3)
    torch.testing.assert_close(out.double(), want, atol=2e-6, rtol=0)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_strided_inputs_mask_dtypes_scale_and_short_cache_len(backend):
    """q as a transposed view, a cache sliced out of a bigger buffer, integer masks, a custom
    scale, and cache_len below S_max with keys beyond it ignored."""
    g = torch.Generator().manual_seed(3)
    B, Hq, Hkv, Lq, D, S_big = 2, 4, 2, 10, 32, 80
    q = torch.randn(B, Lq, Hq, D, generator=g).to(DEVICE).transpose(1, 2)  # strides (Lq·Hq·D, D, Hq·D, 1)
    big = torch.randn(B, Hkv + 1, S_big, D, generator=g).to(DEVICE)
    k, v = big[:, 1:], big[:, :-1]  # non-contiguous batch strides, last dim still stride 1
    cache_len, q_start = 50, 40
    kv_bool = (torch.rand(B, S_big, generator=g) > 0.25).to(DEVICE)
    ref = naive_attention(q, k, v, kv_bool, cache_len, q_start, scale=0.3)
    for mask in (kv_bool, kv_bool.to(torch.uint8), kv_bool.to(torch.int64) * 7):
        out = decode_attention(q, k, v, mask, cache_len, q_start, scale=0.3, backend=backend)
        torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=0)


def test_torch_backend_is_the_twin_and_auto_dispatch(torch_twins):
    q, k, v, kv, cache_len, q_start = make_case(10, 100, 32, 4, 2, torch.float32, seed=4)
    auto = decode_attention(q, k, v, kv, cache_len, q_start)
    twin = decode_attention_torch(q, k, v, kv, cache_len, q_start)
    torch.testing.assert_close(decode_attention(q, k, v, kv, cache_len, q_start, backend="torch"), twin, atol=0, rtol=0)
    torch.testing.assert_close(auto.double(), naive_attention(q, k, v, kv, cache_len, q_start), atol=2e-5, rtol=0)


def test_every_launch_configuration_is_in_aot_specs():
    """Whatever the launcher can pick (dtype × head dim × rows) is compiled by compile-kernels."""
    compiled = {(s.fn, tuple(sorted(s.constexprs.items())), s.num_warps, s.num_stages, s.signature["Q"])
                for s in da.AOT_SPECS if s.fn is da._decode_attn_split_kernel}
    combine = {(s.constexprs["BLOCK_D"], s.signature["OUT"]) for s in da.AOT_SPECS
               if s.fn is da._decode_attn_combine_kernel}
    direct = {(tuple(sorted(s.constexprs.items())), s.signature["O_PART"]) for s in da.AOT_SPECS
              if s.fn is da._decode_attn_split_kernel}
    for dtype, tname in da.TRITON_DTYPE_NAMES.items():
        for head_dim in range(1, da.MAX_HEAD_DIM + 1):
            for rows in (1, 10, 16, 17, 20, 64, 200, 1000):
                cfg = da._pick_split_config(dtype, head_dim, rows)
                key = tuple(sorted((k, cfg[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_D", "EVEN_D", "DOT_IEEE")))
                assert (da._decode_attn_split_kernel, key, cfg["num_warps"], cfg["num_stages"], f"*{tname}") in compiled
                # one split: the split kernel writes the output (O_PART in q's dtype) itself
                assert (key, f"*{tname}") in direct
                assert cfg["BLOCK_D"] >= head_dim and cfg["EVEN_D"] == (cfg["BLOCK_D"] == head_dim)
                assert (cfg["BLOCK_D"], f"*{tname}") in combine
    for spec in da.AOT_SPECS:  # power-of-two tiles, tl.dot edges >= 16
        for name in ("BLOCK_M", "BLOCK_N", "BLOCK_D", "BLOCK_S"):
            if name in spec.constexprs:
                val = spec.constexprs[name]
                assert val >= 16 and val & (val - 1) == 0, (spec.name, name, val)


def _good():
    return make_case(10, 37, 32, 4, 2, torch.float32, seed=5)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: {**a, "q": a["q"][0]}, "q must be"),
        (lambda a: {**a, "k_cache": a["k_cache"][0]}, "k_cache must be"),
        (lambda a: {**a, "v_cache": a["v_cache"][:, :, :-1]}, "v_cache shape"),
        (lambda a: {**a, "q": a["q"][:1]}, "batch mismatch"),
        (lambda a: {**a, "q": a["q"][..., :16]}, "head dim mismatch"),
        (lambda a: {**a, "q": a["q"][:, :3]}, "multiple of kv heads"),
        (lambda a: {**a, "q": a["q"][:, :, :0]}, "Lq = 0"),
        (lambda a: {**a, "key_valid": a["key_valid"][:, :-1]}, "key_valid must be"),
        (lambda a: {**a, "key_valid": a["key_valid"].float()}, "bool or integer"),
        (lambda a: {**a, "q": a["q"].double(), "k_cache": a["k_cache"].double(),
                    "v_cache": a["v_cache"].double()}, "dtype must be"),
        (lambda a: {**a, "k_cache": a["k_cache"].half()}, "dtype mismatch"),
        (lambda a: {**a, "q": a["q"].transpose(-1, -2).contiguous().transpose(-1, -2)}, "stride 1"),
        (lambda a: {**a, "cache_len": a["cache_len"] - 1}, "q_start \\+ Lq <= cache_len"),
        (lambda a: {**a, "cache_len": a["cache_len"] + 100}, "cache_len <= S_max"),
        (lambda a: {**a, "q_start": -1}, "q_start must be >= 0"),
        (lambda a: {**a, "q_start": 3.0}, "q_start must be an int"),
        (lambda a: {**a, "num_splits": 0}, "num_splits"),
        (lambda a: {**a, "backend": "cuda"}, "backend must be"),
        (lambda a: {**a, "cache_len": torch.tensor(a["cache_len"], device=DEVICE)}, "both be ints or both"),
        (lambda a: {**a, "cache_len": torch.tensor(a["cache_len"], device=DEVICE),
                    "q_start": torch.tensor(a["q_start"], device=DEVICE)}, "need kv_bucket"),
        (lambda a: {**a, "cache_len": torch.tensor(float(a["cache_len"]), device=DEVICE),
                    "q_start": torch.tensor(a["q_start"], device=DEVICE), "kv_bucket": 48}, "hold one integer"),
        (lambda a: {**a, "kv_bucket": a["cache_len"] - 1}, "past kv_bucket"),
        (lambda a: {**a, "kv_bucket": 1000}, "kv_bucket must lie in"),
    ],
)
def test_bad_input_raises_clear_value_error(mutate, message):
    q, k, v, kv, cache_len, q_start = _good()
    args = dict(q=q, k_cache=k, v_cache=v, key_valid=kv, cache_len=cache_len, q_start=q_start)
    args = mutate(args)
    with pytest.raises(ValueError, match=message):
        decode_attention(**args)


def test_head_dim_above_limit_raises():
    q = torch.zeros(1, 1, 1, 160)
    k = torch.zeros(1, 1, 4, 160)
    with pytest.raises(ValueError, match="head dim D=160"):
        decode_attention(q, k, k, torch.ones(1, 4, dtype=torch.bool), 4, 3)
    with pytest.raises(ValueError, match="torch.Tensor"):
        decode_attention(q.numpy(), k, k, torch.ones(1, 4, dtype=torch.bool), 4, 3)


# ---------------------------------------------------------------- prefill mode, differentiable twin
def make_prefill(L, Hq, Hkv, D, pads, dtype=torch.float32, seed=7):
    """q/k/v of a whole sequence (leaf tensors that require grad) and its key mask: ``pads`` is
    "none", "scattered" (a different pattern per batch row) or "leading" (batch 1 starts with 5
    pads, so its first queries see no key at all)."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, h, L, D, generator=g).to(dtype).to(DEVICE).requires_grad_() for h in (Hq, Hkv, Hkv))
    key_valid = torch.ones(2, L, dtype=torch.bool)
    if pads != "none":
        key_valid = torch.rand(2, L, generator=g) > 0.3
        key_valid[0, 0] = True
    if pads == "leading":
        key_valid[1, :5] = False
    return q, k, v, key_valid.to(DEVICE)


PREFILL_CASES = [  # (L, Hq, Hkv, D, pads)
    (37, 2, 2, 32, "none"),
    (37, 2, 2, 32, "scattered"),
    (70, 4, 2, 32, "scattered"),
    (70, 4, 1, 16, "leading"),
    (100, 2, 2, 72, "leading"),
]


@pytest.mark.parametrize("case", PREFILL_CASES, ids=lambda c: "L{}-H{}x{}-D{}-{}".format(*c))
def test_prefill_twin_matches_naive_forward_and_gradients(case):
    """prefill_attention_torch (the training path's attention) vs the float64 oracle at q_start = 0,
    output and the gradients of q, k and v; rows with no key give zeros and pass no gradient."""
    L, Hq, Hkv, D, pads = case
    q, k, v, kv = make_prefill(L, Hq, Hkv, D, pads)
    out = da.prefill_attention_torch(q, k, v, kv)
    ref = naive_attention(q, k, v, kv, L, 0)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=0)
    if pads == "leading":
        assert (out[1, :, :5] == 0).all()
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(8)).to(DEVICE)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad_out.double())
    for name, got, want in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(got, want.float(), atol=1e-4, rtol=1e-4, msg=lambda m: f"d{name}: {m}")
    masked = ~kv[:, None, :, None]
    assert (grads[1].masked_select(masked) == 0).all() and (grads[2].masked_select(masked) == 0).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_prefill_twin_half_precision(dtype):
    q, k, v, kv = make_prefill(70, 4, 2, 32, "leading", dtype=dtype)
    out = da.prefill_attention_torch(q, k, v, kv)
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), naive_attention(q, k, v, kv, 70, 0), atol=ATOL[dtype], rtol=0)


def test_prefill_twin_rejects_bad_input():
    q, k, v, kv = make_prefill(37, 2, 2, 32, "none")
    with pytest.raises(ValueError, match="as many keys as queries"):
        da.prefill_attention_torch(q, k[:, :, :-1], v[:, :, :-1], kv)
    with pytest.raises(ValueError, match="key_valid must be"):
        da.prefill_attention_torch(q, k, v, kv[:, :-1])


# ---------------------------------------------------------------- graph-ready launches (device lengths, buckets)
@pytest.mark.parametrize("kv_len, block_n, forced", [(37, 32, None), (256, 32, None), (1000, 64, None),
                                                     (1000, 32, 7), (5, 32, 4), (4096, 32, None)])
def test_split_plan_covers_the_keys_without_an_empty_split(kv_len, block_n, forced):
    n_splits, split_len = da.split_plan(1, kv_len, block_n, torch.device("cpu"), forced)
    assert split_len % block_n == 0 and n_splits >= 1
    assert (n_splits - 1) * split_len < kv_len <= n_splits * split_len  # no split starts at or past kv_len
    assert n_splits <= (4 if forced is None else forced)  # the interpreter's target: 4 splits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("Lq, ctx, D, bucket", [(10, 37, 32, 256), (10, 100, 72, 128), (2, 251, 32, 251), (1, 40, 32, 40)])
def test_device_lengths_and_bucket_plan(triton_kernels, dtype, Lq, ctx, D, bucket):
    """Lengths as device tensors give bit for bit the launch with the same ints and bucket (one
    capture serves every length); the bucket's plan (splits past cache_len, or one split written
    directly with no combine) matches the naive oracle, and so does the live plan."""
    q, k, v, kv, cache_len, q_start = make_case(Lq, ctx, D, 4, 2, dtype, seed=3, slack=max(0, bucket - ctx) + 5)
    dev = torch.device(DEVICE)
    as_tensors = decode_attention(q, k, v, kv, torch.tensor([cache_len], device=dev),
                                  torch.tensor(q_start, device=dev), kv_bucket=bucket)
    as_ints = decode_attention(q, k, v, kv, cache_len, q_start, kv_bucket=bucket)
    assert torch.equal(as_tensors, as_ints)
    want = naive_attention(q, k, v, kv, cache_len, q_start)
    torch.testing.assert_close(as_ints.double(), want, atol=ATOL[dtype], rtol=0)
    torch.testing.assert_close(decode_attention(q, k, v, kv, cache_len, q_start).double(), want, atol=ATOL[dtype], rtol=0)
    twin = decode_attention_torch(q, k, v, kv, torch.tensor(cache_len), torch.tensor(q_start))
    torch.testing.assert_close(twin.double(), want, atol=TWIN_ATOL[dtype], rtol=0)


def test_one_split_skips_the_combine_kernel(triton_kernels, monkeypatch):
    """num_splits=1: one launch (the split kernel writes the output); more splits: split + combine."""
    launches = []
    for name in ("_decode_attn_split_kernel", "_decode_attn_combine_kernel"):
        kernel = getattr(da, name)

        class Spy:
            def __getitem__(self, grid, kernel=kernel, name=name):
                launches.append(name)
                return kernel[grid]
        monkeypatch.setattr(da, name, Spy())
    q, k, v, kv, cache_len, q_start = make_case(10, 100, 32, 4, 2, torch.float32, seed=1)
    one = decode_attention(q, k, v, kv, cache_len, q_start, num_splits=1)
    assert launches == ["_decode_attn_split_kernel"]
    launches.clear()
    three = decode_attention(q, k, v, kv, cache_len, q_start, num_splits=3)
    assert launches == ["_decode_attn_split_kernel", "_decode_attn_combine_kernel"]
    want = naive_attention(q, k, v, kv, cache_len, q_start)
    for out in (one, three):
        torch.testing.assert_close(out.double(), want, atol=2e-5, rtol=0)


def test_lengths_and_split_sized_arguments_never_specialise():
    """Arguments that change during a generation (lengths, split length, the LSE strides, the
    combine's split count) are do_not_specialize: no re-JIT mid-run."""
    def unspecialised(kernel):  # a JITFunction, or the interpreter's wrapper (which keeps the decorator's kwargs)
        names = kernel.arg_names
        listed = kernel.kwargs["do_not_specialize"] if hasattr(kernel, "kwargs") else kernel.do_not_specialize
        return {names[i] if isinstance(i, int) else i for i in listed}
    assert {"lq", "split_len", "stride_lb", "stride_lh", "stride_lm"} <= unspecialised(da._decode_attn_split_kernel)
    assert {"num_splits", "lq", "stride_lb", "stride_lh", "stride_lm"} <= unspecialised(da._decode_attn_combine_kernel)
    assert "LENS" in da._decode_attn_split_kernel.arg_names and "cache_len" not in da._decode_attn_split_kernel.arg_names


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_replays_follow_device_lengths(dtype):
    """One CUDA graph of a 10-token step (lengths on the device, a 2,048-key bucket plan) replayed
    at several cache lengths gives bit for bit the eager launch with those lengths as ints."""
    q, k, v, kv, _, _ = make_case(10, 2000, 64, 8, 2, dtype, seed=11, slack=48)
    start = torch.zeros(1, dtype=torch.long, device="cuda")
    end = start + 10

    def step():
        return decode_attention(q, k, v, kv, start + 10, start, kv_bucket=2048)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up: JIT
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    del end
    for q_start in (0, 90, 700, 1500, 2038):
        start.fill_(q_start)
        graph.replay()
        want = decode_attention(q, k, v, kv, q_start + 10, q_start, kv_bucket=2048)
        assert torch.equal(out, want), q_start
        torch.testing.assert_close(out.double(), naive_attention(q, k, v, kv, q_start + 10, q_start),
                                   atol=ATOL[dtype], rtol=0)
