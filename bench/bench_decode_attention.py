"""Kernel family 2, causal cached attention decode, at the NVIDIA gaze decoder's shape: B = 1,
6 heads (MHA), head dim 32, a 6,000-token context in a 6,144-slot static cache (~8% pad keys),
Lq = 10 (one multi-token step) and Lq = 206 (a frame's vision tokens + gaze tokens, prefill).

Compared per shape (group ``decode_attention[Lq=…]``): ``naive`` (what a plain decoder does:
mask over all S_max slots, softmax, two matmuls), ``split_walk`` (the torch twin the kernels are
tested against: :func:`decode_attention_torch` with ``num_splits`` forced, fp32 splits merged by a
running log-sum-exp), on CPU ``fused_cpu`` (the production CPU path: one fused attention call with
an additive mask, what ``decode_attention_torch`` runs on CPU by default) and, on CUDA, ``triton``
(split-KV kernel + combine kernel). float32.

Run: ``python -m pytest bench/bench_decode_attention.py --benchmark-enable --benchmark-json=out.json``
then ``python bench/speedup_table.py out.json``. Peak memory of each case is measured in a fresh
process (``memory_probe.py``) and stored in ``extra_info``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "0")  # benchmarks time compiled kernels, never the interpreter

import pytest
import torch
from memory_probe import measure

HEADS, HEAD_DIM, CONTEXT, S_MAX = 6, 32, 6000, 6144
SPLIT_WALK_SPLITS = 4  # key splits per query tile of the split-walk twin
IMPLS = ["naive", "split_walk"] + (["triton"] if torch.cuda.is_available() else ["fused_cpu"])


def naive_decode_attention(q, k_cache, v_cache, key_valid, cache_len, q_start):
    """Plain masked attention over every cache slot: (Lq, S_max) mask, softmax, matmuls."""
    Lq, D = q.shape[-2:]
    group = q.shape[1] // k_cache.shape[1]
    k = k_cache.repeat_interleave(group, dim=1)
    v = v_cache.repeat_interleave(group, dim=1)
    pos = torch.arange(k.shape[2], device=q.device)
    qpos = q_start + torch.arange(Lq, device=q.device)
    allowed = (pos[None, :] <= qpos[:, None]) & (pos[None, :] < cache_len)
    allowed = allowed[None, None] & key_valid[:, None, None, :]
    scores = (q.float() @ k.float().transpose(-1, -2)) * D ** -0.5
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
    return (probs @ v.float()).to(q.dtype)


def setup(impl: str, lq: str | int, device: str = "cuda" if torch.cuda.is_available() else "cpu"):
    """Build the cache and queries; return the timed call (also used by the memory probe)."""
    # imports Triton: only once a case runs, after TRITON_INTERPRET is set above
    from autogaze_fast.kernels.decode_attention import decode_attention, decode_attention_torch

    lq = int(lq)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, HEADS, lq, HEAD_DIM, generator=g).to(device)
    k = torch.randn(1, HEADS, S_MAX, HEAD_DIM, generator=g).to(device)
    v = torch.randn(1, HEADS, S_MAX, HEAD_DIM, generator=g).to(device)
    key_valid = (torch.rand(1, S_MAX, generator=g) > 0.08).to(device)
    args = (q, k, v, key_valid, CONTEXT, CONTEXT - lq)
    fn = {
        "naive": naive_decode_attention,
        "split_walk": lambda *a: decode_attention_torch(*a, num_splits=SPLIT_WALK_SPLITS),
        "fused_cpu": decode_attention_torch,  # on CPU tensors: cpu_attention_bias + fused_cpu_attention
        "triton": lambda *a: decode_attention(*a, backend="triton"),
    }[impl]

    def run():
        with torch.inference_mode():
            out = fn(*args)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return run


@pytest.mark.parametrize("lq", [10, 206])
@pytest.mark.parametrize("impl", IMPLS)
def test_decode_attention(benchmark, impl, lq):
    benchmark.group = f"decode_attention[Lq={lq}]"
    run = setup(impl, lq)
    run()  # warm-up: Triton compile, allocator
    out = benchmark(run)
    ref = setup("naive", lq)()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    benchmark.extra_info.update(impl=impl, lq=lq, context=CONTEXT, heads=HEADS, head_dim=HEAD_DIM,
                                baseline=impl == "naive")
    benchmark.extra_info.update(measure("bench_decode_attention:setup", impl, str(lq)))
