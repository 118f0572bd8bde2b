"""Fused multi-scale gathered patch embedding for the gazed SigLIP.

Kernel family 1. Every frame of a clip is resized to each scale ``s`` (ascending, as the model
passes them) and cut into ``p × p`` patches in unfold order (row-major over the ``s/p × s/p``
grid). A frame's tokens are the concatenation over scales of those patches, ``N_frame =
sum_s (s/p)²`` of them, and frame ``t`` owns tokens ``t·N_frame … (t+1)·N_frame - 1``. The gaze
picks ``N`` of them per sequence (``token_index``, pads already replaced by index 0). For batch
``b`` and gazed slot ``n`` with ``g = token_index[b, n]``, ``t = g // N_frame``, ``r = g % N_frame``::

    x      = the 3·p·p pixels of patch r of frame t at its scale, in (channel, row, column) order
    out[b, n, :] = W.reshape(C, 3·p·p) @ x + bias + pos_table[r]          (fp32 accumulate)

Only the gazed patches are ever read: nothing unfolds all patches of all scales.

Frames come either as a list of per-scale tensors ``(B, T, 3, s, s)`` (packed here into one
buffer) or already as that flat buffer ``(B, T, F)``, ``F = 3·sum_s s²``, holding for each frame
its scales one after the other, each as a contiguous ``(3, s, s)`` image (:func:`pack_frames`
builds it; a caller may also resize straight into views of it, see :func:`scale_views`). A
per-token table (:func:`patch_layout`) gives the offset of each patch's top-left pixel inside a
frame's buffer and the side ``s`` of its scale.

Kernel (``_gathered_patch_embed_kernel``): one program per ``BLOCK_M`` gazed tokens ×
``BLOCK_C`` output channels; the reduction walks the patch one pixel row at a time (channel
``ch``, row ``i``): the ``p`` pixels of that row, padded to ``P_PAD`` (a power of two >= 16) with
masks, times the matching ``P_PAD × BLOCK_C`` slice of ``W^T``. The torch twin gathers the gazed
patches (``M × 3p²``) and multiplies. The backward is torch (documented choice: its cost is two
GEMMs on the gazed patches): ``grad_W = G^T X`` with ``X`` re-gathered, ``grad_bias = sum G``,
``grad_pos = index_add over r of G``, ``grad_frames = scatter-add of G W`` onto the gazed pixels.

What runs where: on CUDA (and on CPU under ``TRITON_INTERPRET=1``) the Triton forward; on plain CPU
the torch twin's forward (``_embed_torch``), which is both the production CPU path and, with the
tests' float64 unfold-everything oracle, what the kernel is checked against. Under autograd the
backward above (torch) runs on every device.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .aot import AotSpec
from .dispatch import Backend, interpreter_enabled, use_triton

__all__ = [
    "AOT_SPECS",
    "PATCH_SIZES",
    "PatchLayout",
    "gathered_patch_embed",
    "gathered_patch_embed_torch",
    "gather_patches",
    "pack_frames",
    "patch_layout",
    "scale_views",
]

PATCH_SIZES = (14, 16)
_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
_NUM_STAGES = 2
# (arch class, dtype name) -> (BLOCK_M, BLOCK_C, num_warps); arch classes as in sparse_attention:
# "mma" fp16/bf16 on sm_80+, "fma" fp16/bf16 on sm_75 (no Triton tensor-core path), "fp32" all.
_CONFIGS: dict[tuple[str, str], tuple[int, int, int]] = {
    ("mma", "fp16"): (128, 128, 8),
    ("mma", "bf16"): (128, 128, 8),
    ("fma", "fp16"): (32, 64, 4),
    ("fma", "bf16"): (32, 64, 4),
    ("fp32", "fp32"): (64, 128, 8),
}
_ARCHS = {"mma": (80, 86, 89, 90, 100, 120), "fma": (75,), "fp32": None}


# ----------------------------------------------------------------------------------------------
# Frame layout
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchLayout:
    """Where every token of a frame lives in the flat per-frame buffer.

    Attributes:
        scales: the scales in buffer / token order.
        patch_size: p.
        tokens_per_frame: N_frame = sum_s (s/p)².
        frame_numel: F = 3·sum_s s², elements of one frame in the flat buffer.
        pix_off: (N_frame,) int32, offset of each token's top-left pixel (channel 0) in a frame.
        side: (N_frame,) int32, the side s of each token's scale (row stride; s² = channel stride).
        pixel_offsets: (N_frame, 3·p·p) int64, offset in a frame of every pixel of every token's
            patch, in (channel, row, column) order (used by the torch twin and the backward).
    """

    scales: tuple[int, ...]
    patch_size: int
    tokens_per_frame: int
    frame_numel: int
    pix_off: torch.Tensor
    side: torch.Tensor
    pixel_offsets: torch.Tensor


@functools.lru_cache(maxsize=64)
def _layout_cached(scales: tuple[int, ...], patch_size: int, device: str) -> PatchLayout:
    offs, sides = [], []
    start = 0
    for s in scales:
        g = s // patch_size
        rows = torch.arange(g).repeat_interleave(g)
        cols = torch.arange(g).repeat(g)
        offs.append(start + rows * patch_size * s + cols * patch_size)
        sides.append(torch.full((g * g,), s))
        start += 3 * s * s
    pix_off, side = torch.cat(offs), torch.cat(sides)
    k = torch.arange(3 * patch_size * patch_size)
    ch, i, j = k // patch_size**2, (k // patch_size) % patch_size, k % patch_size
    pixel_offsets = pix_off[:, None] + (ch[None, :] * side[:, None] + i[None, :]) * side[:, None] + j[None, :]
    return PatchLayout(scales=tuple(scales), patch_size=patch_size, tokens_per_frame=int(pix_off.numel()),
                       frame_numel=start, pix_off=pix_off.to(torch.int32).to(device),
                       side=side.to(torch.int32).to(device), pixel_offsets=pixel_offsets.to(device))


def patch_layout(scales: Sequence[int], patch_size: int, device: torch.device | str = "cpu") -> PatchLayout:
    """The :class:`PatchLayout` of ``scales`` (each a multiple of ``patch_size``), cached per device."""
    scales = tuple(int(s) for s in scales)
    if not scales:
        raise ValueError("patch_layout: scales is empty; pass at least one scale, e.g. [32, 64, 112, 224]")
    bad = [s for s in scales if s <= 0 or s % patch_size]
    if bad:
        raise ValueError(f"patch_layout: every scale must be a positive multiple of the patch size {patch_size}, "
                         f"got {bad} in {list(scales)}")
    return _layout_cached(scales, int(patch_size), str(torch.device(device)))


def pack_frames(frames: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-scale frames ``[(B, T, 3, s, s), ...]`` into the flat buffer ``(B, T, F)``.

    Differentiable (a ``torch.cat``); costs one copy of the resized pixels, never an unfold.
    """
    if isinstance(frames, torch.Tensor) or len(frames) == 0:
        raise ValueError("pack_frames: frames must be a non-empty list of (B, T, 3, s, s) tensors")
    B, T = frames[0].shape[:2]
    for i, f in enumerate(frames):
        if f.dim() != 5 or f.shape[0] != B or f.shape[1] != T or f.shape[2] != 3 or f.shape[3] != f.shape[4]:
            raise ValueError(f"pack_frames: frames[{i}] must be (B, T, 3, s, s) with B={B}, T={T}, got "
                             f"{tuple(f.shape)}")
        if f.dtype != frames[0].dtype or f.device != frames[0].device:
            raise ValueError(f"pack_frames: frames[{i}] is {f.dtype} on {f.device}, frames[0] is "
                             f"{frames[0].dtype} on {frames[0].device}; use one dtype and device")
    return torch.cat([f.reshape(B, T, -1) for f in frames], dim=2)


def scale_views(flat: torch.Tensor, scales: Sequence[int]) -> list[torch.Tensor]:
    """Views ``(B, T, 3, s, s)`` into a flat buffer ``(B, T, F)`` (contiguous last dim), one per
    scale, so resized frames can be written in place (``view.copy_(resized)``)."""
    B, T, F = flat.shape
    if F != 3 * sum(s * s for s in scales):
        raise ValueError(f"scale_views: buffer has {F} elements per frame, scales {list(scales)} need "
                         f"{3 * sum(s * s for s in scales)}")
    views, start = [], 0
    for s in scales:
        views.append(flat[:, :, start:start + 3 * s * s].unflatten(2, (3, s, s)))
        start += 3 * s * s
    return views


# ----------------------------------------------------------------------------------------------
# Triton kernel
# ----------------------------------------------------------------------------------------------


@triton.jit
def _gathered_patch_embed_kernel(
    FRAMES, IDX, W, BIAS, POS, PIX_OFF, SIDE, OUT,
    stride_fb, stride_ft,
    M, N, N_FRAME, C,
    P: tl.constexpr, P_PAD: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, FP32_DOT: tl.constexpr,
):
    """out[m, c] = sum_k weight[c, k] x_m[k] + bias[c] + pos[r_m, c] for gazed tokens m = b·N + n.

    Grid (cdiv(B·N, BLOCK_M), cdiv(C, BLOCK_C)). IDX (B·N,) int32 gazed token ids g; frame
    t = g // N_FRAME, token r = g % N_FRAME. Patch pixel k = (ch·P + i)·P + j sits at
    ``FRAMES + b·stride_fb + t·stride_ft + PIX_OFF[r] + (ch·side + i)·side + j`` (side = SIDE[r]).
    W is the weight re-laid out as contiguous (3·P, P_PAD, C):
    ``W[ch·P + i, j, c] = weight[c, ch, i, j]`` for j < P, zero for P <= j < P_PAD.
    POS is contiguous (N_FRAME, C), OUT contiguous (B·N, C). C is a multiple of 8 and W/POS/OUT
    are 16-byte aligned (the launcher pads/copies to ensure it), so their rows start 16-byte
    aligned. The reduction runs over the 3·P pixel rows, each padded from P to P_PAD columns
    (masked pixel loads, zero weight rows).
    """
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_in = offs_m < M
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_in = offs_c < C
    offs_j = tl.arange(0, P_PAD)
    j_in = offs_j < P

    g = tl.load(IDX + offs_m, mask=m_in, other=0)
    t = g // N_FRAME
    r = g - t * N_FRAME
    side = tl.load(SIDE + r, mask=m_in, other=0)
    b = offs_m // N
    base = b.to(tl.int64) * stride_fb + t.to(tl.int64) * stride_ft + tl.load(PIX_OFF + r, mask=m_in, other=0)
    x_ptrs = FRAMES + base[:, None] + offs_j[None, :]
    x_mask = m_in[:, None] & j_in[None, :]
    w_ptrs = tl.multiple_of(W + offs_j[:, None] * C + offs_c[None, :], (1, 16))
    w_mask = c_in[None, :]

    acc = tl.zeros((BLOCK_M, BLOCK_C), tl.float32)
    for row in range(0, 3 * P):
        ch = row // P
        i = row - ch * P
        x = tl.load(x_ptrs + ((ch * side + i) * side)[:, None], mask=x_mask, other=0.0)
        w_t = tl.load(tl.multiple_of(w_ptrs + row * (P_PAD * C), (1, 16)), mask=w_mask, other=0.0)
        if FP32_DOT:
            acc = tl.dot(x.to(tl.float32), w_t.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(x, w_t, acc)

    pos_ptrs = tl.multiple_of(POS + r[:, None].to(tl.int64) * C + offs_c[None, :], (1, 16))
    acc += tl.load(pos_ptrs, mask=m_in[:, None] & c_in[None, :], other=0.0).to(tl.float32)
    if HAS_BIAS:
        acc += tl.load(BIAS + offs_c, mask=c_in, other=0.0).to(tl.float32)[None, :]
    out_ptrs = tl.multiple_of(OUT + offs_m[:, None].to(tl.int64) * C + offs_c[None, :], (1, 16))
    tl.store(out_ptrs, acc.to(OUT.dtype.element_ty), mask=m_in[:, None] & c_in[None, :])


def _arch_class(t: torch.Tensor) -> str:
    if t.dtype == torch.float32:
        return "fp32"
    if t.is_cuda and torch.cuda.get_device_capability(t.device) < (8, 0):
        return "fma"
    return "mma"


def _embed_triton(flat, idx, weight, bias, pos, *, layout: PatchLayout) -> torch.Tensor:
    B, N = idx.shape
    C = weight.shape[0]
    if C % 8:  # the kernel wants 16-byte aligned rows: pad the channels, slice the result
        extra = 8 - C % 8
        weight = torch.nn.functional.pad(weight, (0, 0, 0, 0, 0, 0, 0, extra))
        bias = None if bias is None else torch.nn.functional.pad(bias, (0, extra))
        return _embed_triton(flat, idx, weight, bias, torch.nn.functional.pad(pos, (0, extra)), layout=layout)[..., :C]
    if pos.data_ptr() % 16 or not pos.is_contiguous():
        pos = pos.clone(memory_format=torch.contiguous_format)
    p = layout.patch_size
    M = B * N
    out = torch.empty((B, N, C), dtype=weight.dtype, device=weight.device)
    if M == 0:
        return out
    block_m, block_c, warps = _CONFIGS[_arch_class(weight), _DTYPES[weight.dtype]]
    p_pad = max(16, triton.next_power_of_2(p))
    w_rows = torch.zeros((3 * p, p_pad, C), dtype=weight.dtype, device=weight.device)
    w_rows[:, :p, :] = weight.reshape(C, 3 * p, p).permute(1, 2, 0)
    grid = (triton.cdiv(M, block_m), triton.cdiv(C, block_c))
    _gathered_patch_embed_kernel[grid](
        flat, idx, w_rows, bias if bias is not None else w_rows, pos, layout.pix_off, layout.side, out,
        flat.stride(0), flat.stride(1),
        M, N, layout.tokens_per_frame, C,
        P=p, P_PAD=p_pad, HAS_BIAS=bias is not None,
        BLOCK_M=block_m, BLOCK_C=block_c,
        # The Triton 3.9 interpreter multiplies bf16 operands as raw bits: dots in fp32 there.
        FP32_DOT=weight.dtype == torch.float32 or interpreter_enabled(),
        num_warps=warps, num_stages=_NUM_STAGES,
    )
    return out


# ----------------------------------------------------------------------------------------------
# Torch twin and backward (gather the gazed patches only)
# ----------------------------------------------------------------------------------------------


def _patch_addresses(flat: torch.Tensor, idx: torch.Tensor, layout: PatchLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """(addresses (B·N, 3p²) int64 into contiguous ``flat`` viewed 1-D, token-in-frame r (B·N,) int64)."""
    B, N = idx.shape
    g = idx.reshape(-1).long()
    t = torch.div(g, layout.tokens_per_frame, rounding_mode="floor")
    r = g - t * layout.tokens_per_frame
    frame_base = torch.arange(B, device=flat.device).repeat_interleave(N) * flat.stride(0) + t * flat.stride(1)
    offsets = layout.pixel_offsets.to(flat.device)[r]
    return offsets.add_(frame_base[:, None]), r


def gather_patches(flat: torch.Tensor, token_index: torch.Tensor, layout: PatchLayout) -> torch.Tensor:
    """The gazed patches ``(B·N, 3·p·p)`` in (channel, row, column) order, read from contiguous ``flat``."""
    addr, _ = _patch_addresses(flat, token_index, layout)
    return flat.reshape(-1).take(addr)


def _embed_torch(flat, idx, weight, bias, pos, *, layout: PatchLayout) -> torch.Tensor:
    B, N = idx.shape
    C = weight.shape[0]
    addr, r = _patch_addresses(flat, idx, layout)
    x = flat.reshape(-1).take(addr).float()  # only the gazed patches: (B·N, 3p²)
    out = x @ weight.reshape(C, -1).float().t() + pos.float()[r]
    if bias is not None:
        out += bias.float()
    return out.to(weight.dtype).reshape(B, N, C)


class GatheredPatchEmbedFunction(torch.autograd.Function):
    """Triton (or twin) forward; torch backward on the re-gathered gazed patches."""

    @staticmethod
    def forward(ctx, flat, idx, weight, bias, pos, layout: PatchLayout, triton_path: bool):
        fwd = _embed_triton if triton_path else _embed_torch
        out = fwd(flat, idx, weight, bias, pos, layout=layout)
        ctx.save_for_backward(flat, idx, weight)
        ctx.layout = layout
        ctx.has_bias = bias is not None
        ctx.pos_shape = pos.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        flat, idx, weight = ctx.saved_tensors
        layout = ctx.layout
        C = weight.shape[0]
        g = grad_out.reshape(-1, C).float()
        addr, r = _patch_addresses(flat, idx, layout)
        need_frames, _, need_w, need_b, need_pos = ctx.needs_input_grad[:5]
        grad_frames = grad_w = grad_b = grad_pos = None
        if need_w:
            x = flat.reshape(-1).take(addr).float()
            grad_w = (g.t() @ x).to(weight.dtype).reshape(weight.shape)
        if need_b and ctx.has_bias:
            grad_b = g.sum(0).to(weight.dtype)
        if need_pos:
            grad_pos = torch.zeros(ctx.pos_shape, dtype=torch.float32, device=g.device).index_add_(0, r, g)
            grad_pos = grad_pos.to(weight.dtype)
        if need_frames:
            gx = g @ weight.reshape(C, -1).float()
            grad_frames = torch.zeros(flat.numel(), dtype=torch.float32, device=g.device)
            grad_frames.index_add_(0, addr.reshape(-1), gx.reshape(-1))
            grad_frames = grad_frames.to(flat.dtype).reshape(flat.shape)
        return grad_frames, None, grad_w, grad_b, grad_pos, None, None


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def _check(frames, token_index, weight, bias, pos_table, *, scales, check_index: bool):
    """Validate and normalise: returns (flat (B, T, F) contiguous, idx (B, N) int32, layout)."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.shape[1] != 3 \
            or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"gathered_patch_embed: weight must be (C, 3, p, p), got {getattr(weight, 'shape', weight)}")
    C, _, p, _ = weight.shape
    if p not in PATCH_SIZES:
        raise ValueError(f"gathered_patch_embed: patch size must be one of {PATCH_SIZES}, got {p}")
    if weight.dtype not in _DTYPES:
        raise ValueError(f"gathered_patch_embed: dtype must be float32, bfloat16 or float16, got {weight.dtype}")
    if isinstance(frames, torch.Tensor):
        if scales is None:
            raise ValueError("gathered_patch_embed: a flat (B, T, F) frame buffer needs scales=[...] "
                             "(or pass the list of per-scale (B, T, 3, s, s) frames)")
        if frames.dim() != 3:
            raise ValueError(f"gathered_patch_embed: flat frames must be (B, T, F), got {tuple(frames.shape)}")
        flat = frames
    else:
        frames = list(frames)
        flat = pack_frames(frames)
        got = [int(f.shape[-1]) for f in frames]
        if scales is not None and [int(s) for s in scales] != got:
            raise ValueError(f"gathered_patch_embed: scales {list(scales)} do not match the frame sides {got}")
        scales = got
    layout = patch_layout(scales, p, flat.device)
    B, T, F = flat.shape
    if F != layout.frame_numel:
        raise ValueError(f"gathered_patch_embed: flat frames hold {F} values per frame, scales {list(scales)} "
                         f"need 3·sum(s²) = {layout.frame_numel}")
    if not isinstance(token_index, torch.Tensor) or token_index.dim() != 2 or token_index.shape[0] != B:
        raise ValueError(f"gathered_patch_embed: token_index must be (B, N) with B={B}, got "
                         f"{getattr(token_index, 'shape', token_index)}")
    if token_index.dtype.is_floating_point or token_index.dtype == torch.bool or token_index.is_complex():
        raise ValueError(f"gathered_patch_embed: token_index must be an integer tensor, got {token_index.dtype}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != C):
        raise ValueError(f"gathered_patch_embed: bias must be (C,) = ({C},), got {tuple(bias.shape)}")
    if tuple(pos_table.shape) != (layout.tokens_per_frame, C):
        raise ValueError(f"gathered_patch_embed: pos_table must be (N_frame, C) = ({layout.tokens_per_frame}, {C}) "
                         f"for scales {list(scales)} and patch {p}, got {tuple(pos_table.shape)}")
    tensors = {"frames": flat, "pos_table": pos_table, **({"bias": bias} if bias is not None else {})}
    for name, t in tensors.items():
        if t.dtype != weight.dtype:
            raise ValueError(f"gathered_patch_embed: {name} is {t.dtype} but weight is {weight.dtype}; use one dtype")
    for name, t in {**tensors, "token_index": token_index}.items():
        if t.device != weight.device:
            raise ValueError(f"gathered_patch_embed: {name} is on {t.device} but weight is on {weight.device}")
    if check_index and token_index.numel():
        lo, hi = int(token_index.min()), int(token_index.max())
        if lo < 0 or hi >= T * layout.tokens_per_frame:
            raise ValueError(f"gathered_patch_embed: token_index values must lie in [0, T·N_frame) = "
                             f"[0, {T * layout.tokens_per_frame}), got [{lo}, {hi}] (replace pads by 0)")
    return flat.contiguous(), token_index.to(torch.int32).contiguous(), layout


def gathered_patch_embed(
    frames: torch.Tensor | Sequence[torch.Tensor],
    token_index: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pos_table: torch.Tensor,
    *,
    scales: Sequence[int] | None = None,
    backend: Backend = "auto",
    check_index: bool = True,
) -> torch.Tensor:
    """Embed only the gazed patches of a multi-scale clip (see the module docstring for the math).

    Args:
        frames: list of per-scale frames ``(B, T, 3, s, s)`` in token order (ascending scales),
            or the flat buffer ``(B, T, F)`` of :func:`pack_frames` together with ``scales``.
        token_index: (B, N) integer gazed token ids into the per-frame concatenation of all
            scales' patches (frame t owns ``t·N_frame … (t+1)·N_frame - 1``); pads must already
            be replaced by a valid id (0).
        weight: (C, 3, p, p) patch-embedding weight (the conv used as a linear map), p in 14/16.
        bias: (C,) or None.
        pos_table: (N_frame, C) position embeddings of every scale, concatenated in token order
            (each already interpolated to its (s/p)² grid).
        scales: the scales, required with a flat buffer.
        backend: "auto" (Triton on CUDA / under TRITON_INTERPRET=1, torch twin otherwise),
            "triton" or "torch".
        check_index: verify 0 <= token_index < T·N_frame (one device sync; turn off under CUDA
            graph capture once the indices are known to be valid).

    Returns:
        (B, N, C) in weight's dtype. Differentiable in frames, weight, bias and pos_table.
    """
    flat, idx, layout = _check(frames, token_index, weight, bias, pos_table, scales=scales, check_index=check_index)
    triton_path = use_triton(weight, backend=backend)
    return GatheredPatchEmbedFunction.apply(flat, idx, weight, bias, pos_table, layout, triton_path)


def gathered_patch_embed_torch(frames, token_index, weight, bias, pos_table, *, scales=None) -> torch.Tensor:
    """The CPU twin: :func:`gathered_patch_embed` with ``backend="torch"``."""
    return gathered_patch_embed(frames, token_index, weight, bias, pos_table, scales=scales, backend="torch")


# ----------------------------------------------------------------------------------------------
# AOT specs
# ----------------------------------------------------------------------------------------------


def _aot_specs() -> list[AotSpec]:
    specs = []
    for (cls, dname), (bm, bc, warps) in _CONFIGS.items():
        ptr = f"*{dname}"
        for p in PATCH_SIZES:
            for has_bias in (True, False):
                sig = {"FRAMES": ptr, "IDX": "*i32", "W": ptr, "BIAS": ptr, "POS": ptr, "PIX_OFF": "*i32",
                       "SIDE": "*i32", "OUT": ptr, "stride_fb": "i32", "stride_ft": "i32",
                       "M": "i32", "N": "i32", "N_FRAME": "i32", "C": "i32"}
                const = {"P": p, "P_PAD": max(16, triton.next_power_of_2(p)), "HAS_BIAS": has_bias,
                         "BLOCK_M": bm, "BLOCK_C": bc, "FP32_DOT": dname == "fp32"}
                sig.update({c: "constexpr" for c in const})
                name = f"gathered_patch_embed[{cls},{dname},p={p},bias={int(has_bias)},BM={bm},BC={bc},w={warps}]"
                specs.append(AotSpec(name, _gathered_patch_embed_kernel, sig, const, num_warps=warps,
                                     num_stages=_NUM_STAGES, archs=_ARCHS[cls]))
    return specs


AOT_SPECS: list[AotSpec] = _aot_specs()
