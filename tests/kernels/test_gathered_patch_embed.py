"""Fused multi-scale gathered patch embedding (kernel family 1) vs the unfold-everything oracle.

The oracle is upstream's algorithm: unfold every patch of every scale, embed all of them with the
conv weight as a linear map, add the position tables, concatenate scales per frame and frames
along the sequence, then keep the gazed tokens. Without CUDA the Triton kernel runs through the
interpreter (tests/conftest.py); with CUDA the kernel cases run natively on CUDA tensors
(``DEVICE``), and the whole file carries the ``triton`` marker (``make gpu-check`` runs it there).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import KERNEL_DEVICE as DEVICE

from autogaze_fast.kernels.gathered_patch_embed import (
    gather_patches,
    gathered_patch_embed,
    pack_frames,
    patch_layout,
    scale_views,
)

pytestmark = pytest.mark.triton

TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 4e-2}


def naive_embed(frames, token_index, weight, bias, pos_table):
    """Embed all patches of all scales (float64), then gather: (B, N, C)."""
    B, T = frames[0].shape[:2]
    C, _, p, _ = weight.shape
    per_scale = []
    for f in frames:
        s = f.shape[-1]
        cols = F.unfold(f.reshape(B * T, 3, s, s).double(), kernel_size=p, stride=p).transpose(1, 2)
        per_scale.append(cols)
    patches = torch.cat(per_scale, dim=1)  # (B·T, N_frame, 3p²)
    emb = patches @ weight.reshape(C, -1).double().t() + pos_table.double()
    if bias is not None:
        emb = emb + bias.double()
    emb = emb.reshape(B, -1, C)  # frames along the sequence
    return emb[torch.arange(B, device=emb.device)[:, None], token_index]


def make_case(p, dtype, B=2, T=3, C=40, N=23, scales_mult=(1, 2, 3), seed=0, empty_frame=False, bias=True,
              device=DEVICE):
    """Frames per scale (B, T, 3, s, s), gazed ids (B, N) with trailing pads, conv weight, bias, positions; on ``device``."""
    g = torch.Generator().manual_seed(seed)
    scales = [m * p for m in scales_mult]
    frames = [torch.randn(B, T, 3, s, s, generator=g).to(dtype) for s in scales]
    n_frame = sum((s // p) ** 2 for s in scales)
    per_frame = [torch.sort(torch.randperm(n_frame, generator=g)[: N // T])[0] + t * n_frame for t in range(T)]
    idx = torch.cat(per_frame)
    idx = torch.cat([idx, torch.zeros(N - idx.numel(), dtype=torch.long)])  # trailing pads -> 0
    idx = torch.stack([idx, idx.flip(0)] + [idx] * (B - 2))[:B]
    if empty_frame:  # frame 1 gazed nothing: its slots are pads, i.e. index 0
        idx[(idx >= n_frame) & (idx < 2 * n_frame)] = 0
    weight = (torch.randn(C, 3, p, p, generator=g) * 0.05).to(dtype)
    b = torch.randn(C, generator=g).to(dtype) if bias else None
    pos = torch.randn(n_frame, C, generator=g).to(dtype)
    frames, idx, weight, pos = [f.to(device) for f in frames], idx.to(device), weight.to(device), pos.to(device)
    return frames, idx, weight, None if b is None else b.to(device), pos


@pytest.mark.parametrize("p", [14, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matches_unfold_oracle(p, dtype):
    frames, idx, weight, bias, pos = make_case(p, dtype, seed=p)
    ref = naive_embed(frames, idx, weight, bias, pos)
    for backend in ("triton", "torch"):
        out = gathered_patch_embed(frames, idx, weight, bias, pos, backend=backend)
        assert out.shape == ref.shape and out.dtype == dtype
        torch.testing.assert_close(out.double(), ref, atol=TOL[dtype], rtol=TOL[dtype], msg=backend)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_odd_count_empty_frame_no_bias_flat_buffer(backend):
    """Odd N and C, a frame with no gazed token, no bias, and the flat (B, T, F) input form."""
    frames, idx, weight, _, pos = make_case(16, torch.float32, B=3, T=4, C=37, N=31, seed=7, empty_frame=True,
                                            bias=False)  # C = 37: not a multiple of 8, padded for the kernel
    ref = naive_embed(frames, idx, weight, None, pos)
    flat = pack_frames(frames)
    out = gathered_patch_embed(flat, idx, weight, None, pos, scales=[16, 32, 48], backend=backend)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_triton_and_twin_agree_bf16():
    frames, idx, weight, bias, pos = make_case(14, torch.bfloat16, N=29, seed=4)
    a = gathered_patch_embed(frames, idx, weight, bias, pos, backend="triton")
    b = gathered_patch_embed(frames, idx, weight, bias, pos, backend="torch")
    torch.testing.assert_close(a.float(), b.float(), atol=4e-2, rtol=2e-2)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_gradients_match_oracle_autograd(backend):
    frames, idx, weight, bias, pos = make_case(14, torch.float32, N=20, seed=9, empty_frame=True)
    leaves = [*frames, weight, bias, pos]
    for t in leaves:
        t.requires_grad_()
    g = torch.randn(idx.shape[0], idx.shape[1], weight.shape[0], generator=torch.Generator().manual_seed(1)).to(DEVICE)
    gathered_patch_embed(frames, idx, weight, bias, pos, backend=backend).backward(g)
    got = [t.grad for t in leaves]
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    naive_embed(ref_leaves[:3], idx, *ref_leaves[3:]).backward(g.double())
    names = ["frames0", "frames1", "frames2", "weight", "bias", "pos_table"]
    for name, a, b in zip(names, got, (t.grad for t in ref_leaves)):
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-5, msg=name)


def test_layout_tables_and_views():
    layout = patch_layout([32, 64], 16)
    assert layout.tokens_per_frame == 4 + 16 and layout.frame_numel == 3 * (32 * 32 + 64 * 64)
    # token 5 = scale 64, grid (0, 1): top-left pixel at column 16 of the 64-image after the 32-image
    assert int(layout.pix_off[5]) == 3 * 32 * 32 + 16 and int(layout.side[5]) == 64
    frames = [torch.randn(2, 3, 3, s, s) for s in (32, 64)]
    flat = torch.empty(2, 3, layout.frame_numel)
    for view, f in zip(scale_views(flat, [32, 64]), frames):
        view.copy_(f)
    torch.testing.assert_close(flat, pack_frames(frames))
    idx = torch.tensor([[0, 5, 23], [4, 19, 59]])
    patches = gather_patches(flat, idx, layout)
    every_patch = torch.cat([F.unfold(f.reshape(6, 3, f.shape[-1], f.shape[-1]), 16, stride=16).transpose(1, 2)
                             for f in frames], dim=1)  # (B·T, N_frame, 768)
    want = every_patch.reshape(2, -1, 768)[torch.arange(2)[:, None], idx].reshape(-1, 768)
    torch.testing.assert_close(patches, want)


def test_bad_inputs_raise_clear_errors():
    frames, idx, weight, bias, pos = make_case(16, torch.float32, device="cpu")
    with pytest.raises(ValueError, match="patch size"):
        gathered_patch_embed(frames, idx, weight[:, :, :8, :8], bias, pos)
    with pytest.raises(ValueError, match=r"\(C, 3, p, p\)"):
        gathered_patch_embed(frames, idx, weight[:, :2], bias, pos)
    with pytest.raises(ValueError, match="token_index values"):
        gathered_patch_embed(frames, idx + 10_000, weight, bias, pos)
    with pytest.raises(ValueError, match="token_index values"):
        gathered_patch_embed(frames, idx - 1, weight, bias, pos)
    with pytest.raises(ValueError, match="integer"):
        gathered_patch_embed(frames, idx.float(), weight, bias, pos)
    with pytest.raises(ValueError, match="pos_table"):
        gathered_patch_embed(frames, idx, weight, bias, pos[:-1])
    with pytest.raises(ValueError, match="bias"):
        gathered_patch_embed(frames, idx, weight, bias[:-1], pos)
    with pytest.raises(ValueError, match="one dtype"):
        gathered_patch_embed(frames, idx, weight, bias, pos.half())
    with pytest.raises(ValueError, match="scales="):
        gathered_patch_embed(pack_frames(frames), idx, weight, bias, pos)
    with pytest.raises(ValueError, match="values per frame"):
        gathered_patch_embed(pack_frames(frames), idx, weight, bias, pos, scales=[16, 32])
    with pytest.raises(ValueError, match="multiple of the patch size"):
        gathered_patch_embed([torch.zeros(2, 3, 3, 20, 20)], idx, weight, bias, pos)
    with pytest.raises(ValueError, match=r"\(B, T, 3, s, s\)"):
        gathered_patch_embed([frames[0], frames[1][:1]], idx, weight, bias, pos)


@pytest.mark.gpu
@pytest.mark.parametrize("p", [14, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_kernel_matches_unfold_oracle(p, dtype):
    """The compiled kernel (forward, and the torch backward it feeds) at SigLIP-B size against the
    float64 unfold oracle, at the CPU tolerances."""
    frames, idx, weight, bias, pos = make_case(p, dtype, B=2, T=16, C=768, N=16 * 150,
                                               scales_mult=(2, 4, 7, 14) if p == 16 else (4, 8, 14, 28), device="cpu")
    ref = naive_embed(frames, idx, weight, bias, pos)
    out = gathered_patch_embed([f.cuda() for f in frames], idx.cuda(), weight.cuda(), bias.cuda(), pos.cuda())
    assert out.dtype == dtype
    torch.testing.assert_close(out.double().cpu(), ref, atol=TOL[dtype], rtol=TOL[dtype])
    if dtype == torch.float32:
        leaves = [weight.cuda().requires_grad_(), bias.cuda().requires_grad_(), pos.cuda().requires_grad_()]
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(p))
        gathered_patch_embed([f.cuda() for f in frames], idx.cuda(), *leaves).backward(g.cuda())
        ref_leaves = [t.detach().double().requires_grad_() for t in (weight, bias, pos)]
        naive_embed(frames, idx, *ref_leaves).backward(g.double())
        for name, a, b in zip(("weight", "bias", "pos_table"), leaves, ref_leaves):
            torch.testing.assert_close(a.grad.double().cpu(), b.grad, atol=1e-4, rtol=1e-5, msg=name)
