"""Ahead-of-time compile specs: what ``autogaze-fast compile-kernels`` builds for every arch.

Each kernel file exposes ``AOT_SPECS: list[AotSpec]``, one entry per constexpr configuration its
launcher can use. :mod:`autogaze_fast.cli.compile_kernels` collects them from :data:`KERNEL_MODULES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Kernel-family modules (relative to autogaze_fast.kernels) whose AOT_SPECS are compiled.
KERNEL_MODULES: list[str] = ["decode_attention", "gathered_patch_embed", "sparse_attention"]


@dataclass(frozen=True)
class AotSpec:
    """One compilable configuration of a ``@triton.jit`` kernel.

    Attributes:
        name: a readable id, e.g. ``"decode_attention[D=64,BLOCK_N=64,fp16]"``.
        fn: the ``@triton.jit`` function (a JITFunction; compile runs without TRITON_INTERPRET).
        signature: argument name → Triton type string (``"*fp16"``, ``"i32"``, ``"fp32"``, ``"constexpr"``).
        constexprs: argument name → value, for every ``tl.constexpr`` argument.
        num_warps / num_stages: launch options the launcher uses for this configuration.
        divisible_by_16: arguments that Triton's JIT would see as multiples of 16 in typical use
            (pointers 16-byte aligned, integers divisible by 16); compiled with that specialisation
            (``tt.divisibility``) so the AOT figures match the kernels launched at run time.
        archs: compute capabilities (e.g. ``(75,)``) this configuration is launched on; ``None``
            means every arch. Launchers that pick tiles per arch (Turing has no Triton tensor-core
            path, so its fp16/bf16 dots run on FMA units and need smaller tiles) compile each
            configuration only where it is used.
    """

    name: str
    fn: Callable[..., Any]
    signature: dict[str, str]
    constexprs: dict[str, Any] = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int = 2
    divisible_by_16: tuple[str, ...] = ()
    archs: tuple[int, ...] | None = None
