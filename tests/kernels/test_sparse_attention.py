"""Sparse gathered-patch attention (kernel family 3): Triton kernel and torch twin vs a dense oracle.

The oracle builds the full N×N mask straight from the definition (what upstream's
``get_causal_mask`` builds) and runs softmax attention in float64. Without CUDA the Triton
kernels run through the interpreter (tests/conftest.py), so shapes stay tiny; with CUDA the kernel
cases run natively on CUDA tensors (``DEVICE``), and the whole file carries the ``triton`` marker
(``make gpu-check`` runs it there).
"""

from __future__ import annotations

import pytest
import torch
from conftest import KERNEL_DEVICE as DEVICE

# Private helpers tested directly: the tile-walk plan (_tile_summaries, _key/_query_tile_ranges) has no
# public entry point, and the twin's chunk size (``chunk``) is a knob only the private functions take.
from autogaze_fast.kernels.sparse_attention import (
    ATTN_TYPES,
    _key_tile_ranges,
    _query_tile_ranges,
    _tile_summaries,
    _torch_forward,
    _twin_backward,
    _twin_forward,
    sparse_attention,
    sparse_attention_backward,
    sparse_attention_forward,
)

pytestmark = pytest.mark.triton

TYPES = sorted(ATTN_TYPES)
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def dense_mask(frame: torch.Tensor, pad: torch.Tensor, attn_type: str) -> torch.Tensor:
    """(B, N, N) bool: may query i attend key j."""
    B, N = frame.shape
    fq, fk = frame[:, :, None], frame[:, None, :]
    idx = torch.arange(N, device=frame.device)
    rule = {
        "bidirectional": torch.ones(B, N, N, dtype=torch.bool, device=frame.device),
        "block_causal": fk <= fq,
        "causal": (idx[None, :] <= idx[:, None]).expand(B, N, N),
        "frame_independent": fk == fq,
    }[attn_type]
    return (rule & ~pad[:, None, :]) | torch.eye(N, dtype=torch.bool, device=frame.device)[None]


def naive_attention(q, k, v, frame, pad, attn_type, scale=None):
    """Dense float64 reference."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    s = s.masked_fill(~dense_mask(frame, pad, attn_type)[:, None], float("-inf"))
    return s.softmax(-1) @ v.double()


def make_inputs(B, H, N, D, dtype, seed=0, n_frames=4, pad_rate=0.3, empty_frame=True, all_pad_row=False,
                device=DEVICE):
    """Random q, k, v and gazed-token metadata on ``device``: tokens sorted by frame, some frames all pads."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, N, D, generator=g).to(dtype) for _ in range(3))
    frame = torch.sort(torch.randint(0, n_frames, (B, N), generator=g), dim=1).values.to(torch.int32)
    pad = torch.rand(B, N, generator=g) < pad_rate
    if empty_frame:  # every token of frame 1 is a pad (a frame whose gaze stopped at once)
        pad |= frame == 1
    if all_pad_row:
        pad[-1] = True
    return tuple(t.to(device) for t in (q, k, v, frame, pad))


@pytest.mark.parametrize("attn_type", TYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("B,H,N,D", [(2, 2, 37, 64), (1, 3, 70, 72)])
def test_forward_matches_dense_oracle(attn_type, dtype, B, H, N, D):
    q, k, v, frame, pad = make_inputs(B, H, N, D, dtype, seed=N + D)
    ref = naive_attention(q, k, v, frame, pad, attn_type)
    for backend in ("triton", "torch"):
        out = sparse_attention(q, k, v, frame, pad, attn_type, backend=backend)
        assert out.dtype == dtype and out.shape == q.shape
        torch.testing.assert_close(out.double(), ref, atol=TOL[dtype], rtol=TOL[dtype], msg=backend)


@pytest.mark.parametrize("attn_type", TYPES)
@pytest.mark.parametrize("N,D", [(1, 16), (17, 20), (45, 36)])
def test_odd_lengths_and_head_dims_fp32(attn_type, N, D):
    """N = 1, lengths not a multiple of any tile, head dims that are not multiples of 8 or 16."""
    q, k, v, frame, pad = make_inputs(2, 1, N, D, torch.float32, seed=N, n_frames=3)
    ref = naive_attention(q, k, v, frame, pad, attn_type)
    for backend in ("triton", "torch"):
        out = sparse_attention(q, k, v, frame, pad, attn_type, backend=backend)
        torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5, msg=backend)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_all_pad_row_attends_only_itself(backend):
    q, k, v, frame, pad = make_inputs(2, 2, 29, 32, torch.float32, seed=3, all_pad_row=True)
    out = sparse_attention(q, k, v, frame, pad, "block_causal", backend=backend)
    torch.testing.assert_close(out[-1], v[-1], atol=1e-6, rtol=0)
    ref = naive_attention(q, k, v, frame, pad, "block_causal")
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_non_contiguous_inputs_and_custom_scale(backend):
    """q/k/v as (B, N, H, D) projections viewed as (B, H, N, D), the layout the ViT produces."""
    B, H, N, D = 2, 3, 33, 16
    g = torch.Generator().manual_seed(5)
    qkv = torch.randn(B, N, 3, H, D, generator=g).to(DEVICE)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    assert not q.is_contiguous()
    _, _, _, frame, pad = make_inputs(B, H, N, D, torch.float32, seed=5)
    out = sparse_attention(q, k, v, frame, pad, "frame_independent", scale=0.3, backend=backend)
    ref = naive_attention(q, k, v, frame, pad, "frame_independent", scale=0.3)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5)
    # Misaligned storage (offset of one element, odd row stride): copied to the kernels' layout.
    wide = torch.randn(B, H, N, D + 1, generator=g).to(DEVICE)[..., 1:]
    out = sparse_attention(wide, wide, wide, frame, pad, "causal", backend=backend)
    torch.testing.assert_close(out.double(), naive_attention(wide, wide, wide, frame, pad, "causal"),
                               atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("attn_type", TYPES)
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_gradients_match_dense_autograd(attn_type, backend):
    B, H, N, D = 2, 2, 41, 24
    q, k, v, frame, pad = make_inputs(B, H, N, D, torch.float32, seed=11, all_pad_row=True)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    dout = torch.randn(B, H, N, D, generator=torch.Generator().manual_seed(12)).to(DEVICE)
    sparse_attention(q, k, v, frame, pad, attn_type, backend=backend).backward(dout)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    naive_attention(q64, k64, v64, frame, pad, attn_type).backward(dout.double())
    for name, got, want in (("dq", q.grad, q64.grad), ("dk", k.grad, k64.grad), ("dv", v.grad, v64.grad)):
        torch.testing.assert_close(got.double(), want, atol=5e-5, rtol=5e-5, msg=f"{backend} {name}")


def test_bf16_gradients_close_to_fp32():
    B, H, N, D = 1, 2, 35, 72
    q, k, v, frame, pad = make_inputs(B, H, N, D, torch.float32, seed=21)
    dout = torch.randn(B, H, N, D, generator=torch.Generator().manual_seed(22)).to(DEVICE)
    out, lse = sparse_attention_forward(q, k, v, frame, pad, backend="torch")
    want = sparse_attention_backward(q, k, v, out, lse, dout, frame, pad, backend="torch")
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    out_b, lse_b = sparse_attention_forward(qb, kb, vb, frame, pad, backend="triton")
    got = sparse_attention_backward(qb, kb, vb, out_b, lse_b, dout.bfloat16(), frame, pad, backend="triton")
    for g, w in zip(got, want):
        assert g.dtype == torch.bfloat16
        torch.testing.assert_close(g.float(), w, atol=6e-2, rtol=6e-2)


@pytest.mark.parametrize("attn_type", TYPES)
def test_twin_walk_with_small_chunks(attn_type):
    """The twin's chunk walk (forward both ways, backward) with many 16-token chunks."""
    B, H, N, D = 2, 2, 67, 16
    q, k, v, frame, pad = make_inputs(B, H, N, D, torch.float32, seed=31, n_frames=6, all_pad_row=True, device="cpu")
    t, scale = ATTN_TYPES[attn_type], D ** -0.5
    ref = naive_attention(q, k, v, frame, pad, attn_type)
    out, lse = _twin_forward(q, k, v, frame, pad, attn_type=t, scale=scale, chunk=16)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5)
    out_fast, _ = _torch_forward(q, k, v, frame, pad, attn_type=t, scale=scale, need_lse=False, chunk=16)
    torch.testing.assert_close(out_fast.double(), ref, atol=2e-5, rtol=2e-5)
    dout = torch.randn(B, H, N, D, generator=torch.Generator().manual_seed(32))
    q64, k64, v64 = (x.double().requires_grad_() for x in (q, k, v))
    naive_attention(q64, k64, v64, frame, pad, attn_type).backward(dout.double())
    grads = _twin_backward(q, k, v, out, lse, dout, frame_ids=frame, pad=pad, attn_type=t, scale=scale, chunk=16)
    for got, want in zip(grads, (q64.grad, k64.grad, v64.grad)):
        torch.testing.assert_close(got.double(), want, atol=5e-5, rtol=5e-5)


def test_lse_matches_dense():
    q, k, v, frame, pad = make_inputs(2, 2, 30, 16, torch.float32, seed=8)
    s = (q.double() @ k.double().transpose(-1, -2)) * 16 ** -0.5
    s = s.masked_fill(~dense_mask(frame, pad, "block_causal")[:, None], float("-inf"))
    for backend in ("triton", "torch"):
        _, lse = sparse_attention_forward(q, k, v, frame, pad, backend=backend)
        torch.testing.assert_close(lse.double(), torch.logsumexp(s, -1), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# Tile walk: complete (every needed tile visited) and, for frame-sorted tokens, tight.
# ------------------------------------------------------------------------------------------


def _needed_tiles(frame, pad, attn_type, bm, bn):
    """(B, n_qt, n_kt) bool: does the tile pair hold at least one allowed (i, j)."""
    B, N = frame.shape
    mask = dense_mask(frame, pad, attn_type)
    n_qt, n_kt = -(-N // bm), -(-N // bn)
    full = torch.zeros(B, n_qt * bm, n_kt * bn, dtype=torch.bool)
    full[:, :N, :N] = mask
    return full.view(B, n_qt, bm, n_kt, bn).any(dim=4).any(dim=2)


@pytest.mark.parametrize("attn_type", TYPES)
@pytest.mark.parametrize("sorted_frames", [True, False])
@pytest.mark.parametrize("bm,bn", [(16, 16), (32, 16), (16, 64)])
def test_tile_ranges_cover_every_needed_tile(attn_type, sorted_frames, bm, bn):
    g = torch.Generator().manual_seed(bm + bn)
    B, N = 3, 150
    frame = torch.randint(0, 6, (B, N), generator=g)
    if sorted_frames:
        frame = frame.sort(dim=1).values
    frame = frame.to(torch.int32)
    pad = torch.rand(B, N, generator=g) < 0.3
    t = ATTN_TYPES[attn_type]
    q_sum, k_sum = _tile_summaries(frame, bm), _tile_summaries(frame, bn)
    k_lo, k_hi = _key_tile_ranges(q_sum, k_sum, attn_type=t, N=N, block_m=bm, block_n=bn)
    q_lo, q_hi = _query_tile_ranges(q_sum, k_sum, attn_type=t, N=N, block_m=bm, block_n=bn)
    need = _needed_tiles(frame, pad, attn_type, bm, bn)
    n_qt, n_kt = need.shape[1:]
    kt = torch.arange(n_kt)[None, None, :]
    qt = torch.arange(n_qt)[None, :, None]
    walked_fwd = (kt >= k_lo[:, :, None]) & (kt < k_hi[:, :, None])
    walked_bwd = ((qt >= q_lo[:, None, :]) & (qt < q_hi[:, None, :]))
    assert not (need & ~walked_fwd).any(), "forward/dq walk misses a needed key tile"
    assert not (need & ~walked_bwd).any(), "dk/dv walk misses a needed query tile"
    if sorted_frames and attn_type != "bidirectional":
        # For frame-sorted tokens the walk skips every tile pair whose frames/indices rule it out.
        type_only = _needed_tiles(frame, torch.zeros_like(pad), attn_type, bm, bn)
        assert torch.equal(walked_fwd, type_only)
        assert torch.equal(walked_bwd, type_only)


def test_block_causal_walk_skips_future_frames():
    """16 frames of 198 tokens each (the SigLIP-B benchmark layout): the forward visits about half
    of the tile pairs, as block-causal attention needs."""
    N = 16 * 198
    frame = (torch.arange(N) // 198).to(torch.int32)[None]
    s = _tile_summaries(frame, 64)
    lo, hi = _key_tile_ranges(s, s, attn_type=ATTN_TYPES["block_causal"], N=N, block_m=64, block_n=64)
    visited = int((hi - lo).sum())
    n_t = s[0].shape[1]
    assert visited < 0.56 * n_t * n_t


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    q, k, v, frame, pad = make_inputs(1, 2, 10, 16, torch.float32, device="cpu")
    with pytest.raises(ValueError, match="same shape"):
        sparse_attention(q, k[:, :, :5], v, frame, pad)
    with pytest.raises(ValueError, match="one dtype"):
        sparse_attention(q, k.half(), v, frame, pad)
    with pytest.raises(ValueError, match="4-D"):
        sparse_attention(q[0], k[0], v[0], frame, pad)
    with pytest.raises(ValueError, match="head dim"):
        big = torch.zeros(1, 1, 4, 160)
        sparse_attention(big, big, big, frame[:, :4], pad[:, :4])
    with pytest.raises(ValueError, match="frame_ids must be"):
        sparse_attention(q, k, v, frame[:, :5], pad)
    with pytest.raises(ValueError, match="integer"):
        sparse_attention(q, k, v, frame.float(), pad)
    with pytest.raises(ValueError, match="pad must be a bool"):
        sparse_attention(q, k, v, frame, pad.int())
    with pytest.raises(ValueError, match="attn_type"):
        sparse_attention(q, k, v, frame, pad, "sliding")
    with pytest.raises(ValueError, match="scale"):
        sparse_attention(q, k, v, frame, pad, scale=-1.0)
    with pytest.raises(ValueError, match="float32/bfloat16/float16"):
        sparse_attention(q.double(), k.double(), v.double(), frame, pad)


def test_empty_sequence():
    q = torch.zeros(2, 3, 0, 16)
    out = sparse_attention(q, q, q, torch.zeros(2, 0, dtype=torch.int32), torch.zeros(2, 0, dtype=torch.bool))
    assert out.shape == (2, 3, 0, 16)


# Gradient tolerances: fp32 as the CPU gradient tests, bf16 as test_bf16_gradients_close_to_fp32,
# fp16 (8x finer mantissa than bf16) in proportion.
GRAD_TOL = {torch.float32: 5e-5, torch.bfloat16: 6e-2, torch.float16: 1e-2}


@pytest.mark.gpu
@pytest.mark.parametrize("attn_type", TYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("D", [64, 72, 128])
def test_cuda_kernel_matches_float64_oracle(attn_type, dtype, D):
    """The compiled kernels (forward and the gradient of each input) against the dense float64
    oracle at the CPU tolerances, on a 1000-token, 16-frame layout with pads and an empty frame."""
    B, H, N = 2, 4, 1000
    q, k, v, frame, pad = make_inputs(B, H, N, D, dtype, seed=D, n_frames=16, device="cpu")
    dout = torch.randn(B, H, N, D, generator=torch.Generator().manual_seed(D + 1)).to(dtype)
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    ref = naive_attention(q64, k64, v64, frame, pad, attn_type)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), dout.double())
    qc, kc, vc = (t.cuda().requires_grad_() for t in (q, k, v))
    out = sparse_attention(qc, kc, vc, frame.cuda(), pad.cuda(), attn_type)
    grads = torch.autograd.grad(out, (qc, kc, vc), dout.cuda())
    torch.testing.assert_close(out.double().cpu(), ref.detach(), atol=TOL[dtype], rtol=TOL[dtype])
    for name, got, want in zip(("dq", "dk", "dv"), grads, ref_grads):
        torch.testing.assert_close(got.double().cpu(), want, atol=GRAD_TOL[dtype], rtol=GRAD_TOL[dtype], msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n_frames", [3, 8, 9])
def test_inference_frame_spans_with_cross_half_merge(dtype, n_frames):
    """Inference on the gazed layout without pads: per-frame spans, and (from 4 frames on, CPU,
    block-causal) the second half's queries meeting the first half's keys in one call merged by
    log-sum-exp. Every attention type against the dense oracle."""
    B, H, N, D = 2, 2, 9 * n_frames + 5, 32
    q, k, v, _, _ = make_inputs(B, H, N, D, dtype, seed=n_frames, device="cpu")
    sizes = torch.full((n_frames,), N // n_frames)
    sizes[: N % n_frames] += 1  # unequal frames
    frame = torch.repeat_interleave(torch.arange(n_frames), sizes).to(torch.int32)[None].expand(B, N)
    pad = torch.zeros(B, N, dtype=torch.bool)
    for attn_type in TYPES:
        ref = naive_attention(q, k, v, frame, pad, attn_type)
        out, lse = _torch_forward(q, k, v, frame, pad, attn_type=ATTN_TYPES[attn_type], scale=D ** -0.5,
                                  need_lse=False)
        assert lse is None and out.dtype == dtype
        torch.testing.assert_close(out.double(), ref, atol=TOL[dtype], rtol=TOL[dtype], msg=attn_type)


def _cpu_flash_grads(q, k, v, frame, pad, attn_type, dout, scale=None):
    """Output and (dq, dk, dv) of the CPU training path (backend="auto" on plain CPU, with grad)."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = sparse_attention(*leaves, frame, pad, attn_type, scale)
    assert out.grad_fn is not None and "CpuFlash" in type(out.grad_fn).__name__
    out.backward(dout)
    return out, [t.grad for t in leaves]


@pytest.mark.parametrize("attn_type", TYPES)
@pytest.mark.parametrize("layout", ["gazed", "gazed_with_pads", "per_row_frames"])
def test_cpu_training_path_matches_dense_oracle_and_twin(torch_twins, attn_type, layout):
    """backend="auto" on plain CPU under autograd runs torch's fused flash attention per span
    (per frame on the gazed layout, masked only where a span holds pads; the twin's chunks
    otherwise): output and gradients equal the float64 oracle and the twin (backend="torch")."""
    B, H, D, n_frames = 2, 2, 16, 5
    if layout == "per_row_frames":  # frames differ per batch row, pads, an all-pad row: the twin's chunks
        q, k, v, frame, pad = make_inputs(B, H, 53, D, torch.float32, seed=41, n_frames=n_frames, all_pad_row=True,
                                          device="cpu")
    else:
        sizes = torch.tensor([1, 9, 12, 7, 11])  # a cls-like one-token frame first, unequal frames
        N = int(sizes.sum())
        q, k, v, _, _ = make_inputs(B, H, N, D, torch.float32, seed=42, device="cpu")
        frame = torch.repeat_interleave(torch.arange(n_frames), sizes).to(torch.int32)[None].expand(B, N)
        pad = torch.zeros(B, N, dtype=torch.bool)
        if layout == "gazed_with_pads":
            pad[0, 12:15] = True  # frame 2 of row 0 only
            pad[1, 30:40] = True  # frame 3 and frame 4 of row 1
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(43))
    out, grads = _cpu_flash_grads(q, k, v, frame, pad, attn_type, dout)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = naive_attention(q64, k64, v64, frame, pad, attn_type)
    ref.backward(dout.double())
    torch.testing.assert_close(out.double(), ref.detach(), atol=2e-5, rtol=2e-5)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    twin = sparse_attention(*leaves, frame, pad, attn_type, backend="torch")
    twin.backward(dout)
    torch.testing.assert_close(out, twin, atol=2e-6, rtol=2e-5)
    for name, got, want, twin_grad in zip(("dq", "dk", "dv"), grads, (q64.grad, k64.grad, v64.grad), leaves):
        torch.testing.assert_close(got.double(), want, atol=5e-5, rtol=5e-5, msg=name)
        torch.testing.assert_close(got, twin_grad.grad, atol=5e-6, rtol=5e-5, msg=f"{name} vs twin")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_training_path_half_precision(torch_twins, dtype):
    """Half-precision inputs: outputs and gradients keep the dtype and stay close to the fp32 twin."""
    B, H, N, D = 2, 2, 40, 32
    q, k, v, frame, pad = make_inputs(B, H, N, D, torch.float32, seed=51, device="cpu")
    dout = torch.randn(B, H, N, D, generator=torch.Generator().manual_seed(52))
    out, grads = _cpu_flash_grads(*(t.to(dtype) for t in (q, k, v)), frame, pad, "block_causal", dout.to(dtype))
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    sparse_attention(*leaves, frame, pad, "block_causal", backend="torch").backward(dout)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    for got, want in zip(grads, leaves):
        torch.testing.assert_close(got.float(), want.grad, atol=6e-2, rtol=6e-2)


def test_cpu_training_path_only_with_grad_on_plain_cpu(torch_twins):
    """Without grad the CPU call stays on the twin's inference path; backend="torch" always runs the twin."""
    q, k, v, frame, pad = make_inputs(1, 2, 20, 16, torch.float32, seed=61, device="cpu")
    with torch.no_grad():
        assert sparse_attention(q, k, v, frame, pad).grad_fn is None
    q.requires_grad_()
    out = sparse_attention(q, k, v, frame, pad, backend="torch")
    assert type(out.grad_fn).__name__ == "SparseAttentionFunctionBackward"
