"""Kernel families 1 and 3 (gazed SigLIP) at SigLIP-B shapes: a 16-frame clip, scales
32+64+112+224 with patch 16 (265 tokens per frame, 4,240 per clip), 3,168 gazed tokens (198 slots
per frame, ~10% of them pads), hidden 768, 12 heads of dim 64, batch 1.

Group ``gathered_patch_embed``: ``naive`` (upstream's algorithm: unfold every patch of every
scale, gather the gazed patches and position rows, linear), ``torch`` (``backend="torch"``, the
torch twin and the production CPU path: gather only the gazed patches, one GEMM) and, on CUDA,
``triton`` (the fused gather-GEMM kernel).
Group ``sparse_attention``: ``naive`` (dense N×N block-causal mask with pad keys, softmax, two
matmuls), ``torch`` (``backend="torch"`` without a gradient, the production CPU inference path:
one fused attention call per frame span, skipping future frames) and, on CUDA, ``triton`` (flash
attention with tile skipping). Forward only; float32 on CPU, bfloat16 on CUDA.

Run: ``python -m pytest bench/bench_siglip_kernels.py --benchmark-enable --benchmark-json=out.json``
then ``python bench/speedup_table.py out.json``. Peak memory of each case is measured in a fresh
process (``memory_probe.py``) and stored in ``extra_info`` (``peak_rss_mb``, and on CUDA
``cuda_max_allocated_mb``).
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "0")  # benchmarks time compiled kernels, never the interpreter

import pytest
import torch
import torch.nn.functional as F
from memory_probe import measure

FRAMES, SCALES, PATCH, HIDDEN, HEADS, HEAD_DIM = 16, (32, 64, 112, 224), 16, 768, 12, 64
SLOTS_PER_FRAME, PAD_RATE = 198, 0.1
N_GAZED = FRAMES * SLOTS_PER_FRAME  # 3168
IMPLS = ["naive", "torch"] + (["triton"] if torch.cuda.is_available() else [])
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if torch.cuda.is_available() else torch.float32


def _gaze(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gazed token ids (1, N) sorted within each frame, pad flags (trailing slots of each frame),
    frame ids (1, N)."""
    n_frame = sum((s // PATCH) ** 2 for s in SCALES)
    idx, pad = [], []
    for t in range(FRAMES):
        n_pad = int(SLOTS_PER_FRAME * PAD_RATE * 2 * torch.rand(1, generator=g).item())
        n_real = SLOTS_PER_FRAME - n_pad
        real = torch.sort(torch.randperm(n_frame, generator=g)[:n_real])[0] + t * n_frame
        idx.append(torch.cat([real, torch.zeros(n_pad, dtype=torch.long)]))
        pad.append(torch.arange(SLOTS_PER_FRAME) >= n_real)
    frame_ids = torch.arange(N_GAZED) // SLOTS_PER_FRAME
    return torch.cat(idx)[None], torch.cat(pad)[None], frame_ids.to(torch.int32)[None]


def naive_patch_embed(frames, idx, weight, bias, pos):
    """Upstream's way: unfold all patches of all scales, gather patches and positions, linear."""
    B, T = frames[0].shape[:2]
    C, _, p, _ = weight.shape
    patches = torch.cat([F.unfold(f.flatten(0, 1), p, stride=p).transpose(1, 2) for f in frames], dim=1)
    patches = patches.reshape(B, -1, patches.shape[-1])
    pos_all = pos.repeat(T, 1)[None].expand(B, -1, -1)
    rows = torch.arange(B, device=idx.device)[:, None]
    return F.linear(patches[rows, idx], weight.reshape(C, -1), bias) + pos_all[rows, idx]


def naive_sparse_attention(q, k, v, frame, pad):
    """Dense block-causal attention with an N×N mask (upstream's eager path)."""
    N = q.shape[2]
    allowed = (frame[:, None, :] <= frame[:, :, None]) & ~pad[:, None, :]
    allowed |= torch.eye(N, dtype=torch.bool, device=q.device)[None]
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    s = s.masked_fill(~allowed[:, None], float("-inf"))
    return torch.softmax(s.float(), dim=-1).to(q.dtype) @ v


def setup(impl: str, op: str):
    """Build one case's inputs; return the timed call (also used by the memory probe)."""
    # the kernel modules import Triton: only once a case runs, after TRITON_INTERPRET is set above
    from autogaze_fast.kernels.gathered_patch_embed import gathered_patch_embed
    from autogaze_fast.kernels.sparse_attention import sparse_attention

    g = torch.Generator().manual_seed(0)
    idx, pad, frame = (t.to(DEVICE) for t in _gaze(g))
    if op == "gathered_patch_embed":
        frames = [torch.rand(1, FRAMES, 3, s, s, generator=g).to(DEVICE, DTYPE) for s in SCALES]
        n_frame = sum((s // PATCH) ** 2 for s in SCALES)
        weight = (torch.randn(HIDDEN, 3, PATCH, PATCH, generator=g) * 0.02).to(DEVICE, DTYPE)
        bias = torch.randn(HIDDEN, generator=g).to(DEVICE, DTYPE)
        pos = torch.randn(n_frame, HIDDEN, generator=g).to(DEVICE, DTYPE)
        args = (frames, idx, weight, bias, pos)
        fn = {
            "naive": naive_patch_embed,
            "torch": lambda *a: gathered_patch_embed(*a, backend="torch"),
            "triton": lambda *a: gathered_patch_embed(*a, backend="triton"),
        }[impl]
    elif op == "sparse_attention":
        q, k, v = (torch.randn(1, HEADS, N_GAZED, HEAD_DIM, generator=g).to(DEVICE, DTYPE) for _ in range(3))
        args = (q, k, v, frame, pad)
        fn = {
            "naive": naive_sparse_attention,
            "torch": lambda *a: sparse_attention(*a, attn_type="block_causal", backend="torch"),
            "triton": lambda *a: sparse_attention(*a, attn_type="block_causal", backend="triton"),
        }[impl]
    else:
        raise ValueError(f"unknown op {op!r}")

    def run():
        with torch.inference_mode():
            out = fn(*args)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return out

    return run


@pytest.mark.parametrize("op", ["gathered_patch_embed", "sparse_attention"])
@pytest.mark.parametrize("impl", IMPLS)
def test_siglip_kernel(benchmark, impl, op):
    benchmark.group = op
    run = setup(impl, op)
    run()  # warm-up: Triton compile, allocator
    out = benchmark(run)
    ref = setup("naive", op)()
    tol = 2e-2 if DTYPE == torch.bfloat16 else 1e-4
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)
    benchmark.extra_info.update(impl=impl, op=op, tokens=N_GAZED, frames=FRAMES, hidden=HIDDEN, heads=HEADS,
                                head_dim=HEAD_DIM, dtype=str(DTYPE), baseline=impl == "naive")
    benchmark.extra_info.update(measure("bench_siglip_kernels:setup", impl, op))
