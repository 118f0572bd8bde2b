"""The CPU inference path of sparse attention (kernel family 3) against the dense float64 oracle.

The path (``_cpu_inference_forward``: ``backend="torch"`` without a gradient, ``"auto"`` on plain
CPU) drops pad keys (real keys gathered, pad queries' own keys merged by log-sum-exp), sorts
unsorted frame ids, runs batch rows with different frames / pads one at a time and causal without
pads as one fused causal call. Each case is checked against the N×N-mask oracle of
test_sparse_attention.py, and that it took the fused path (the masked chunk path is not run).
"""

from __future__ import annotations

import pytest
import torch
from test_sparse_attention import TOL, TYPES, naive_attention

import autogaze_fast.kernels.sparse_attention as sa

# Private: the CPU inference forward is the function under test; _chunk_spans is the masked
# fallback that the fused paths must not reach.
from autogaze_fast.kernels.sparse_attention import ATTN_TYPES, _cpu_inference_forward, sparse_attention


def gazed_layout(B, n_frames, slots, real, *, seed=0, shuffle=False, per_row=False):
    """Frame ids (B, N) and pads (B, N): ``slots`` per frame, the first ``real[f]`` of frame f real
    (pads at the end of each frame's slots, as gaze stopping early leaves them)."""
    g = torch.Generator().manual_seed(seed)
    N = n_frames * slots
    frame = (torch.arange(N) // slots).to(torch.int32)[None].repeat(B, 1)
    slot = (torch.arange(N) % slots)[None].repeat(B, 1)
    pad = slot >= torch.as_tensor(real).repeat_interleave(slots)[None]
    if per_row:  # every row its own real counts
        pad = slot >= torch.randint(0, slots + 1, (B, n_frames), generator=g).repeat_interleave(slots, dim=1)
    if shuffle:  # one token order for all rows (rows must keep sharing frames)
        perm = torch.randperm(N, generator=g)
        frame, pad = frame[:, perm], pad[:, perm]
    return frame, pad


def qkv(B, H, N, D, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, N, D, generator=g).to(dtype) for _ in range(3))


@pytest.fixture
def no_chunk_path(monkeypatch):
    """Fail if the masked chunk fallback runs."""
    def fail(*args, **kwargs):
        raise AssertionError("the CPU inference path fell back to the masked chunks")
    monkeypatch.setattr(sa, "_chunk_spans", fail)


def check(q, k, v, frame, pad, attn_type, dtype=torch.float32):
    out = _cpu_inference_forward(q, k, v, frame, pad, attn_type=ATTN_TYPES[attn_type], scale=q.shape[-1] ** -0.5)
    assert out.dtype == q.dtype and out.shape == q.shape
    ref = naive_attention(q, k, v, frame, pad, attn_type)
    torch.testing.assert_close(out.double(), ref, atol=TOL[dtype], rtol=TOL[dtype], msg=attn_type)
    return out


@pytest.mark.parametrize("attn_type", ["block_causal", "frame_independent", "bidirectional"])
@pytest.mark.parametrize("real", [[5, 0, 9, 1, 3], [0, 2, 9, 9, 0], [9, 9, 9, 9, 9]])
def test_pads_dropped_matches_oracle(no_chunk_path, attn_type, real):
    """Gazed layout with pads at each frame's end: a frame with no real token (also the first one),
    a one-token frame, full frames; 9 slots per frame."""
    frame, pad = gazed_layout(2, 5, 9, real)
    check(*qkv(2, 3, 45, 24, seed=sum(real)), frame, pad, attn_type)


@pytest.mark.parametrize("attn_type", ["block_causal", "frame_independent", "bidirectional"])
def test_unsorted_frames_and_rows_of_their_own(no_chunk_path, attn_type):
    """Token order shuffled (shared by the rows), then rows with different pads, then rows with
    different frame orders: exact through the sort and the row-by-row groups."""
    frame, pad = gazed_layout(2, 4, 7, [3, 7, 0, 5], shuffle=True, seed=1)
    check(*qkv(2, 2, 28, 16, seed=2), frame, pad, attn_type)
    frame, pad = gazed_layout(3, 4, 7, [7] * 4, per_row=True, seed=3)
    check(*qkv(3, 2, 28, 16, seed=4), frame, pad, attn_type)
    g = torch.Generator().manual_seed(5)
    frame = torch.randint(0, 4, (3, 31), generator=g).to(torch.int32)  # unsorted, different per row
    pad = torch.rand(3, 31, generator=g) < 0.4
    pad[1] = True  # an all-pad row: every query attends itself alone
    out = check(*qkv(3, 2, 31, 16, seed=6), frame, pad, attn_type)
    torch.testing.assert_close(out[1], qkv(3, 2, 31, 16, seed=6)[2][1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("N", [1, 2, 17, 64])
def test_causal_without_pads_one_fused_call(no_chunk_path, N):
    frame = torch.zeros(2, N, dtype=torch.int32)
    check(*qkv(2, 2, N, 20, seed=N), frame, torch.zeros(2, N, dtype=torch.bool), "causal")


@pytest.mark.parametrize("attn_type", TYPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_with_pads(attn_type, dtype):
    """bf16/fp16 with pads (causal with pads keeps the masked chunks)."""
    frame, pad = gazed_layout(2, 3, 11, [4, 0, 11])
    q, k, v = qkv(2, 2, 33, 32, dtype, seed=9)
    check(q, k, v, frame, pad, attn_type, dtype)


def test_public_api_cpu_inference_uses_real_keys(torch_twins, no_chunk_path):
    """``backend="auto"`` on plain CPU without a gradient, on the (B, N, H, D) projection layout."""
    B, H, D = 2, 3, 16
    frame, pad = gazed_layout(B, 6, 10, [2, 10, 0, 7, 1, 10])
    x = torch.randn(B, 60, 3, H, D, generator=torch.Generator().manual_seed(11))
    q, k, v = (x[:, :, i].transpose(1, 2) for i in range(3))
    with torch.inference_mode():
        out = sparse_attention(q, k, v, frame, pad, "block_causal")
    torch.testing.assert_close(out.double(), naive_attention(q, k, v, frame, pad, "block_causal"), atol=2e-5,
                               rtol=2e-5)
