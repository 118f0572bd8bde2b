"""Kernel section of ``autogaze-fast gpu-check``: each Triton kernel against the torch op it
replaces, at the shapes the models run (see bench/bench_decode_attention.py and
bench/bench_siglip_kernels.py).

* decode attention (gaze decoder: B 1, 6 heads of 32, a ~6k context in a static cache, Lq 10 = one
  multi-token step and Lq 206 = a frame's prefill) vs ``scaled_dot_product_attention`` with the
  memory-efficient backend and the same boolean mask, and with the flash backend (bf16 only;
  flash takes no mask, so it runs the unmasked context: a lower bound on the work);
* sparse attention (gazed SigLIP-B/16: 12 heads of 64 over 198 or 20 gazed tokens per frame,
  block-causal with pad keys) vs SDPA-efficient with the N×N mask, and SDPA-flash token-causal
  (bf16 only; not the same mask, about the same work);
* gathered patch embedding (hidden 768, patch 16, scales 32+64+112+224) vs upstream's way: unfold
  every patch of every scale, gather the gazed rows, linear, add positions.
* block-causal attention against torch's FlexAttention (issue 21; CUDA only, after the rows above):
  16 frames x 198 tokens, 12 heads of 64, bf16, no pads; our Triton kernel vs
  ``torch.compile(flex_attention)`` with the mask_mod ``frame[q] >= frame[k]``, its block mask built
  per call (counted) and prebuilt, forward and forward + backward. The compile time (first call) is
  in each Flex row's note. On CPU bench/bench_flex_attention.py makes this comparison instead.

On CUDA the kernel row is ``triton``; on CPU (no CUDA) the row named ``twin`` is the
kernel's torch path (for decode and sparse attention, the production CPU path) and SDPA
runs its CPU backends. Every row has its max |Δ| against a float32 naive oracle of the same inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from autogaze_fast.gpu_check.context import CheckContext, error_text
from autogaze_fast.gpu_check.timing import free_memory, time_call

SCALES, PATCH, HIDDEN = (32, 64, 112, 224), 16, 768
DECODE_HEADS, DECODE_HEAD_DIM = 6, 32
SIGLIP_HEADS, SIGLIP_HEAD_DIM = 12, 64
N_FRAME = sum((s // PATCH) ** 2 for s in SCALES)  # 265
#: |out - oracle| <= tol + tol * |oracle| (absolute and relative) per dtype.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


def _sdpa_backend(name: str):
    """``torch.nn.attention.sdpa_kernel`` restricted to one backend (``"MATH"``, ``"FLASH_ATTENTION"``, ...)."""
    return sdpa_kernel(getattr(SDPBackend, name))


# ----------------------------------------------------------------------------- decode attention
def decode_cases(ctx: CheckContext, dtype: torch.dtype) -> list[dict[str, Any]]:
    from autogaze_fast.kernels.decode_attention import decode_attention, decode_attention_torch  # deferred: imports Triton

    s_max, context = ctx.sizes.decode_cache, ctx.sizes.decode_context
    cuda = ctx.device.type == "cuda"
    cases = []
    for lq in (10, 206):
        g = torch.Generator().manual_seed(lq)
        q = torch.randn(1, DECODE_HEADS, lq, DECODE_HEAD_DIM, generator=g).to(ctx.device, dtype)
        k, v = (torch.randn(1, DECODE_HEADS, s_max, DECODE_HEAD_DIM, generator=g).to(ctx.device, dtype) for _ in range(2))
        key_valid = (torch.rand(1, s_max, generator=g) > 0.08).to(ctx.device)
        q_start = context - lq
        pos = torch.arange(s_max, device=ctx.device)
        qpos = q_start + torch.arange(lq, device=ctx.device)
        allowed = ((pos[None, :] <= qpos[:, None]) & (pos[None, :] < context))[None, None] & key_valid[:, None, None, :]
        scale = DECODE_HEAD_DIM ** -0.5
        scores = (q.float() @ k.float().transpose(-1, -2)) * scale
        oracle = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v.float()
        impls: list[tuple[str, Callable[[], torch.Tensor], str | None, bool]] = []
        if cuda:
            impls.append(("triton", lambda q=q, k=k, v=v, kv=key_valid, qs=q_start:
                          decode_attention(q, k, v, kv, context, qs, backend="triton"), None, True))
        impls.append(("twin", lambda q=q, k=k, v=v, kv=key_valid, qs=q_start:
                      decode_attention_torch(q, k, v, kv, context, qs), None, True))
        if cuda:
            impls.append(("sdpa-efficient", lambda q=q, k=k, v=v, m=allowed: _sdpa("EFFICIENT_ATTENTION", q, k, v, m),
                          "same mask", True))
            if dtype != torch.float32:
                kc, vc = k[:, :, :context], v[:, :, :context]
                impls.append(("sdpa-flash", lambda q=q, k=kc, v=vc: _sdpa("FLASH_ATTENTION", q, k, v, None),
                              "no mask (flash takes none): lower bound", False))
        else:
            impls.append(("sdpa", lambda q=q, k=k, v=v, m=allowed: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
                          "same mask, CPU backend", True))
        cases.append({"op": "decode_attention",
                      "shape": f"B1 H{DECODE_HEADS} D{DECODE_HEAD_DIM} ctx {context}/{s_max} Lq {lq}",
                      "impls": impls, "oracle": oracle})
    return cases


def _sdpa(backend: str, q, k, v, mask):
    with _sdpa_backend(backend):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# ----------------------------------------------------------------------------- sparse attention
def _gaze_layout(frames: int, slots: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted gazed token ids (1, N) with ~10% trailing pads per frame (ids 0), pad flags, frame ids."""
    idx, pad = [], []
    for t in range(frames):
        n_pad = int(slots * 0.2 * torch.rand(1, generator=g).item())
        real = torch.sort(torch.randperm(N_FRAME, generator=g)[:slots - n_pad])[0] + t * N_FRAME
        idx.append(torch.cat([real, torch.zeros(n_pad, dtype=torch.long)]))
        pad.append(torch.arange(slots) >= slots - n_pad)
    frame_ids = (torch.arange(frames * slots) // slots).to(torch.int32)
    return torch.cat(idx)[None], torch.cat(pad)[None], frame_ids[None]


def sparse_cases(ctx: CheckContext, dtype: torch.dtype) -> list[dict[str, Any]]:
    from autogaze_fast.kernels.sparse_attention import sparse_attention  # deferred: imports Triton

    frames, cuda = ctx.sizes.sparse_frames, ctx.device.type == "cuda"
    cases = []
    for slots in (198, 20):
        g = torch.Generator().manual_seed(slots)
        _, pad, frame = (t.to(ctx.device) for t in _gaze_layout(frames, slots, g))
        n = frames * slots
        q, k, v = (torch.randn(1, SIGLIP_HEADS, n, SIGLIP_HEAD_DIM, generator=g).to(ctx.device, dtype) for _ in range(3))
        allowed = (frame[:, None, :] <= frame[:, :, None]) & ~pad[:, None, :]
        allowed |= torch.eye(n, dtype=torch.bool, device=ctx.device)[None]
        allowed = allowed[:, None]
        scores = (q.float() @ k.float().transpose(-1, -2)) * SIGLIP_HEAD_DIM ** -0.5
        oracle = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v.float()
        del scores
        impls: list[tuple[str, Callable[[], torch.Tensor], str | None, bool]] = []
        if cuda:
            impls.append(("triton", lambda q=q, k=k, v=v, f=frame, p=pad:
                          sparse_attention(q, k, v, f, p, "block_causal", backend="triton"), None, True))
        impls.append(("twin", lambda q=q, k=k, v=v, f=frame, p=pad:
                      sparse_attention(q, k, v, f, p, "block_causal", backend="torch"), None, True))
        if cuda:
            impls.append(("sdpa-efficient", lambda q=q, k=k, v=v, m=allowed: _sdpa("EFFICIENT_ATTENTION", q, k, v, m),
                          "N x N mask", True))
            if dtype != torch.float32:
                impls.append(("sdpa-flash", lambda q=q, k=k, v=v: _flash_causal(q, k, v),
                              "token-causal, not block-causal: similar work", False))
        else:
            impls.append(("sdpa", lambda q=q, k=k, v=v, m=allowed: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
                          "N x N mask, CPU backend", True))
        cases.append({"op": "sparse_attention",
                      "shape": f"B1 H{SIGLIP_HEADS} D{SIGLIP_HEAD_DIM} N {n} ({frames} frames x {slots})",
                      "impls": impls, "oracle": oracle})
    return cases


def _flash_causal(q, k, v):
    with _sdpa_backend("FLASH_ATTENTION"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


# ----------------------------------------------------------------------------- gathered patch embedding
def unfold_gather_linear(frames: list[torch.Tensor], idx, weight, bias, pos) -> torch.Tensor:
    """Upstream's way: unfold every patch of every scale, gather the gazed rows, linear, add positions."""
    b, t = frames[0].shape[:2]
    c, _, p, _ = weight.shape
    patches = torch.cat([F.unfold(f.flatten(0, 1), p, stride=p).transpose(1, 2) for f in frames], dim=1)
    patches = patches.reshape(b, -1, patches.shape[-1])
    rows = torch.arange(b, device=idx.device)[:, None]
    return F.linear(patches[rows, idx], weight.reshape(c, -1), bias) + pos.repeat(t, 1)[None].expand(b, -1, -1)[rows, idx]


def patch_embed_cases(ctx: CheckContext, dtype: torch.dtype) -> list[dict[str, Any]]:
    from autogaze_fast.kernels.gathered_patch_embed import gathered_patch_embed  # deferred: imports Triton

    frames, cuda = ctx.sizes.sparse_frames, ctx.device.type == "cuda"
    cases = []
    for slots in (198, 20):
        g = torch.Generator().manual_seed(100 + slots)
        idx = _gaze_layout(frames, slots, g)[0].to(ctx.device)
        clip = [torch.rand(1, frames, 3, s, s, generator=g).to(ctx.device, dtype) for s in SCALES]
        weight = (torch.randn(HIDDEN, 3, PATCH, PATCH, generator=g) * 0.02).to(ctx.device, dtype)
        bias = torch.randn(HIDDEN, generator=g).to(ctx.device, dtype)
        pos = torch.randn(N_FRAME, HIDDEN, generator=g).to(ctx.device, dtype)
        args = (clip, idx, weight, bias, pos)
        oracle = unfold_gather_linear([f.float() for f in clip], idx, weight.float(), bias.float(), pos.float())
        impls: list[tuple[str, Callable[[], torch.Tensor], str | None, bool]] = []
        if cuda:
            impls.append(("triton", lambda a=args: gathered_patch_embed(*a, backend="triton"), None, True))
        impls.append(("twin", lambda a=args: gathered_patch_embed(*a, backend="torch"),
                      "gather gazed patches + linear", True))
        impls.append(("unfold+gather+linear", lambda a=args: unfold_gather_linear(*a), "upstream's way", True))
        cases.append({"op": "gathered_patch_embed",
                      "shape": f"C{HIDDEN} p{PATCH} N {frames * slots} ({frames} frames x {slots})",
                      "impls": impls, "oracle": oracle})
    return cases


# ----------------------------------------------------------------------------- vs FlexAttention
FLEX_SLOTS = 198
FLEX_DTYPES = ("bf16",)  # each dtype costs a forward and a backward compile of FlexAttention
#: gradients in bf16 drift more than outputs (as tests/kernels' GRAD_TOL)
FLEX_GRAD_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 6e-2}


def _with_grads(attend: Callable[..., torch.Tensor], q, k, v, dout) -> Callable[[], torch.Tensor]:
    """A call running ``attend(q, k, v)`` forward and backward; returns (B, H, N, 3D): dq | dk | dv."""
    def run() -> torch.Tensor:
        with torch.inference_mode(False), torch.enable_grad():  # time_call runs under inference mode
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            return torch.cat(torch.autograd.grad(attend(*leaves), leaves, dout), dim=-1)
    return run


def _timed_first_call(fn: Callable[[], torch.Tensor]) -> float:
    """Seconds of ``fn``'s first call (FlexAttention compiles then), synchronised."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def flex_cases(ctx: CheckContext, dtype: torch.dtype, force: bool = False) -> list[dict[str, Any]]:
    """Our block-causal kernel vs compiled FlexAttention, forward and forward + backward (CUDA; on
    CPU no case unless ``force``: then our row is the CPU path, forward only, as FlexAttention has
    no CPU backward)."""
    if ctx.device.type != "cuda" and not force:
        return []
    from autogaze_fast.kernels.sparse_attention import sparse_attention  # deferred: imports Triton

    n = ctx.sizes.sparse_frames * FLEX_SLOTS
    g = torch.Generator().manual_seed(21)
    q, k, v, dout = (torch.randn(1, SIGLIP_HEADS, n, SIGLIP_HEAD_DIM, generator=g).to(ctx.device, dtype)
                     for _ in range(4))
    frame = (torch.arange(n, device=ctx.device) // FLEX_SLOTS).to(torch.int32)
    pad = torch.zeros(1, n, dtype=torch.bool, device=ctx.device)
    backend = "triton" if ctx.device.type == "cuda" else "torch"
    flex = torch.compile(flex_attention, dynamic=False)

    def mask_mod(b, h, qi, ki):
        return frame[qi] >= frame[ki]

    def block_mask():
        return create_block_mask(mask_mod, None, None, n, n, device=ctx.device)

    prebuilt = block_mask()

    def ours(q, k, v):
        return sparse_attention(q, k, v, frame[None], pad, "block_causal", backend=backend)

    def flex_built(q, k, v):
        return flex(q, k, v, block_mask=block_mask())

    def flex_prebuilt(q, k, v):
        return flex(q, k, v, block_mask=prebuilt)

    q64, k64, v64 = (t.to(torch.float32, copy=True).requires_grad_() for t in (q, k, v))
    allowed = (frame[None, :] <= frame[:, None])[None, None]
    scores = (q64 @ k64.transpose(-1, -2)) * SIGLIP_HEAD_DIM ** -0.5
    oracle = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v64
    grads = torch.cat(torch.autograd.grad(oracle, (q64, k64, v64), dout.float()), dim=-1)
    oracle = oracle.detach()
    del scores, q64, k64, v64, allowed
    shape = f"B1 H{SIGLIP_HEADS} D{SIGLIP_HEAD_DIM} N {n} ({ctx.sizes.sparse_frames} frames x {FLEX_SLOTS}), block-causal"
    cases = []
    for mode in ("fwd", "fwd+bwd") if backend == "triton" else ("fwd",):  # Flex has no CPU backward
        impls: list[tuple[str, Callable[[], torch.Tensor], str | None, bool]] = []
        for name, attend, note in (("triton" if backend == "triton" else "twin", ours, None),
                                   ("flex+mask", flex_built, "torch.compile(flex_attention), block mask built per call"),
                                   ("flex", flex_prebuilt, "torch.compile(flex_attention), block mask prebuilt")):
            fn = (lambda a=attend: a(q, k, v)) if mode == "fwd" else _with_grads(attend, q, k, v, dout)
            if name.startswith("flex"):
                ctx.check(f"flex_attention {mode} compile")
                note = f"{note}; first call (compile) {_timed_first_call(fn):.1f} s"
            impls.append((name, fn, note, True))
        cases.append({"op": "flex_attention", "shape": f"{shape}, {mode}", "impls": impls,
                      "oracle": oracle if mode == "fwd" else grads,
                      "tolerance": None if mode == "fwd" else FLEX_GRAD_TOLERANCE})
    return cases


# ----------------------------------------------------------------------------- the section
CASE_BUILDERS = (("decode_attention", decode_cases), ("sparse_attention", sparse_cases),
                 ("gathered_patch_embed", patch_embed_cases), ("flex_attention", flex_cases))


def _run_case(ctx: CheckContext, case: dict, dtype_name: str, dtype: torch.dtype, rows: list) -> None:
    """Check and time each implementation of one case; the first (triton on CUDA, the twin on CPU) is
    the kernel the others' ``kernel_speedup`` (their time over its time) refers to."""
    kernel_ms = None
    for i, (impl, fn, note, comparable) in enumerate(case["impls"]):
        ctx.check(f"{case['op']} {dtype_name} {impl}")
        row: dict[str, Any] = {"op": case["op"], "shape": case["shape"], "dtype": dtype_name, "impl": impl}
        if note:
            row["note"] = note
        try:
            with torch.inference_mode():
                out = fn()
            if comparable:  # same math as the oracle (flash rows run another mask: timing only)
                diff = (out.float() - case["oracle"]).abs()
                tol = (case.get("tolerance") or TOLERANCE)[dtype]
                row["max_abs_diff"] = float(diff.max())
                row["within_tol"] = bool((diff <= tol + tol * case["oracle"].abs()).all())
            del out
            row.update(time_call(fn, ctx.device, ctx.sizes.warmup, ctx.sizes.kernel_repeats, deadline=ctx.deadline))
        except Exception as e:
            row["error"] = error_text(e)
        if i == 0:
            kernel_ms = row.get("median_ms")
            row["kernel"] = True
        elif kernel_ms and "median_ms" in row:
            row["kernel_speedup"] = round(row["median_ms"] / kernel_ms, 2)
        rows.append(row)
        ctx.save()


def kernels(ctx: CheckContext, results: dict) -> None:
    """Section 4: kernels (or, on CPU, their torch twins) vs the torch ops they replace."""
    rows = results.setdefault("rows", [])
    results["kernel_row"] = "triton" if ctx.device.type == "cuda" else "twin (no CUDA: the torch twin stands in)"
    dtypes = {"fp32": torch.float32} if ctx.device.type != "cuda" else {"fp32": torch.float32, "bf16": torch.bfloat16}
    for op, build in CASE_BUILDERS:
        for dtype_name, dtype in dtypes.items():
            if op == "flex_attention" and dtype_name not in FLEX_DTYPES:
                continue
            ctx.check(f"{op} {dtype_name}")
            try:
                cases = build(ctx, dtype)
            except Exception as e:
                rows.append({"op": op, "dtype": dtype_name, "impl": "setup", "error": error_text(e)})
                ctx.save()
                continue
            for case in cases:
                _run_case(ctx, case, dtype_name, dtype, rows)
            del cases
            free_memory(ctx.device)
