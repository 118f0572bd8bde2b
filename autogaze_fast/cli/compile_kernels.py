"""``autogaze-fast compile-kernels``: AOT-compile every Triton kernel for every GPU arch, no GPU needed.

Every kernel-family module named in :data:`autogaze_fast.kernels.aot.KERNEL_MODULES` lists, in
``AOT_SPECS``, each constexpr configuration its launcher can pick. Each one is compiled with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` down to a cubin, and the
cubin's resource usage is read with the ``cuobjdump`` shipped in the Triton wheel
(``triton/backends/nvidia/bin``): ``REG`` registers per thread; ``LOCAL`` + ``STACK`` bytes of
local memory per thread, reported as ``spills`` (Triton kernels make no calls, so their stack frame
holds nothing but spilled registers: ptxas files register spills under the stack frame);
``SHARED`` static shared memory, to which Triton's dynamic shared memory (``metadata.shared``) is
added. Without that ``cuobjdump`` the figures come from the compiled
kernel's metadata where it has them (``n_regs`` / ``n_spills`` are only filled in by a driver).

A configuration is ``ok`` when it compiles and its shared memory fits the arch's per-block limit.

Triton's interpreter (``TRITON_INTERPRET=1``) replaces kernels by Python functions when they are
defined, so nothing can be compiled in such a process: :func:`main` then re-runs itself in a
child process with the variable removed; :func:`compile_all` raises a ``RuntimeError``.

Run as ``autogaze-fast compile-kernels [--arch 75,80,...] [--json]`` or
``python -m autogaze_fast compile-kernels ...``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ARCHS: tuple[int, ...] = (75, 80, 86, 89, 90, 100, 120)

# Largest shared memory one block may use (opt-in dynamic limit), bytes, per compute capability.
MAX_SHARED_BYTES: dict[int, int] = {
    70: 98304, 75: 65536, 80: 166912, 86: 101376, 87: 166912, 89: 101376,
    90: 232448, 100: 232448, 103: 232448, 110: 232448, 120: 101376, 121: 101376,
}


def _interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def load_specs(modules: Iterable[str] | None = None,
               errors: dict[str, str] | None = None) -> list[tuple[str, Any]]:
    """``(module, AotSpec)`` for every spec of every kernel module (default: ``KERNEL_MODULES``).

    A module that fails to import (or has no ``AOT_SPECS``) raises, unless ``errors`` is given:
    then its message is stored there under the module name and the module is skipped.
    """
    from autogaze_fast.kernels.aot import KERNEL_MODULES  # imports Triton: deferred until kernels are compiled

    out = []
    for mod_name in modules if modules is not None else KERNEL_MODULES:
        try:
            module = importlib.import_module(f"autogaze_fast.kernels.{mod_name}")
            specs = getattr(module, "AOT_SPECS", None)
            if specs is None:
                raise RuntimeError(f"kernel module {mod_name!r} has no AOT_SPECS list")
        except Exception as exc:  # noqa: BLE001
            if errors is None:
                raise
            errors[mod_name] = f"{type(exc).__name__}: {exc}"
            continue
        out.extend((mod_name, spec) for spec in specs)
    return out


def _cuobjdump() -> Path | None:
    import triton  # deferred: Triton is heavy and only compiling needs it

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _resource_usage(cubin: bytes, kernel_name: str, tool: Path) -> dict[str, int]:
    """Parse ``cuobjdump --dump-resource-usage`` for ``kernel_name``: REG, SHARED, LOCAL, STACK."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        proc = subprocess.run([str(tool), "--dump-resource-usage", str(path)], capture_output=True, text=True,
                              timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"cuobjdump failed: {proc.stderr.strip() or proc.stdout.strip()}")
    blocks = re.split(r"^\s*Function\s+", proc.stdout, flags=re.M)[1:]
    for block in blocks:
        name, _, body = block.partition(":")
        if name.strip() == kernel_name or len(blocks) == 1:
            return {k: int(v) for k, v in re.findall(r"\b(REG|SHARED|LOCAL|STACK):(\d+)", body)}
    raise RuntimeError(f"cuobjdump output has no function {kernel_name!r}:\n{proc.stdout}")


def _attrs(spec: Any) -> dict[tuple[int, ...], list[list[Any]]]:
    """``tt.divisibility`` attributes for the arguments a spec marks as multiples of 16."""
    names = list(spec.fn.arg_names)
    aligned = getattr(spec, "divisible_by_16", ())
    unknown = [n for n in aligned if n not in names]
    if unknown:
        raise ValueError(f"{spec.name}: divisible_by_16 names unknown arguments {unknown}")
    return {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}


def compile_spec(spec: Any, arch: int) -> dict[str, Any]:
    """Compile one AotSpec for ``sm_<arch>``; return ``kernel, arch, ok, registers, spills, shared``
    (+ ``error`` when not ok). Compilation errors are reported, not raised."""
    import triton  # deferred, as its submodules below: Triton is heavy and only compiling needs it
    from triton.backends.compiler import GPUTarget  # deferred (Triton)
    from triton.compiler import ASTSource  # deferred (Triton)

    row: dict[str, Any] = {"kernel": spec.name, "arch": arch, "ok": False, "registers": None, "spills": None,
                           "shared": None}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")
            compiled = triton.compile(
                ASTSource(spec.fn, spec.signature, spec.constexprs, attrs=_attrs(spec)),
                target=GPUTarget("cuda", arch, 32),
                options={"num_warps": spec.num_warps, "num_stages": spec.num_stages},
            )
    except Exception as exc:  # noqa: BLE001 - any compiler failure is a result to report
        msg = str(exc).strip().splitlines()
        row["error"] = f"{type(exc).__name__}: {msg[-1] if msg else ''}"[:500]
        return row

    dynamic_shared = int(getattr(compiled.metadata, "shared", 0) or 0)
    tool = _cuobjdump()
    try:
        if tool is not None and "cubin" in compiled.asm:
            usage = _resource_usage(compiled.asm["cubin"], compiled.metadata.name, tool)
            row["registers"] = usage.get("REG")
            row["spills"] = usage.get("LOCAL", 0) + usage.get("STACK", 0)
            row["shared"] = usage.get("SHARED", 0) + dynamic_shared
        else:
            row["registers"] = getattr(compiled, "n_regs", None)
            row["spills"] = getattr(compiled, "n_spills", None)
            row["shared"] = dynamic_shared
    except Exception as exc:  # noqa: BLE001
        row["error"] = f"compiled, but reading resource usage failed: {exc}"[:500]
        return row

    limit = MAX_SHARED_BYTES.get(arch)
    if limit is not None and row["shared"] is not None and row["shared"] > limit:
        row["error"] = f"needs {row['shared']} B of shared memory, sm_{arch} allows {limit} B per block"
        return row
    row["ok"] = True
    return row


def compile_all(archs: Sequence[int] = ARCHS, modules: Iterable[str] | None = None,
                match: str | None = None, smoke: bool = False) -> list[dict[str, Any]]:
    """Compile every AotSpec of every kernel module for every arch in ``archs``.

    ``modules`` restricts to those kernel modules, ``match`` to specs whose name contains a match
    of that regular expression, ``smoke`` to the first configuration of each ``@triton.jit``
    function (a quick check that every kernel compiles everywhere).

    A spec whose ``archs`` is set is compiled for those of ``archs`` only (the launcher uses it
    there only). Returns one dict per (spec, arch): ``kernel``, ``arch``, ``ok``, ``registers``, ``spills``
    (local-memory bytes per thread), ``shared`` (bytes per block), and ``error`` when not ok; a
    kernel module that cannot be imported gives one failed ``<module>[import]`` row per arch.
    Raises RuntimeError under ``TRITON_INTERPRET=1`` (kernels are not compilable there).
    """
    if _interpreter_on():
        raise RuntimeError(
            "compile-kernels cannot run with TRITON_INTERPRET=1: the interpreter turns kernels into Python "
            "functions. Unset it (e.g. `env -u TRITON_INTERPRET autogaze-fast compile-kernels`)."
        )
    import triton  # deferred: Triton is heavy and only compiling needs it

    pattern = re.compile(match) if match else None
    import_errors: dict[str, str] = {}
    specs = load_specs(modules, errors=import_errors)
    rows = [
        {"kernel": f"{mod}[import]", "arch": int(arch), "ok": False, "registers": None, "spills": None,
         "shared": None, "error": f"cannot load the module's AOT_SPECS: {msg}"}
        for mod, msg in import_errors.items()
        for arch in archs
    ]
    seen_fns: set[int] = set()
    for _, spec in specs:
        if pattern is not None and not pattern.search(spec.name):
            continue
        if smoke:
            if id(spec.fn) in seen_fns:
                continue
            seen_fns.add(id(spec.fn))
        if not isinstance(spec.fn, triton.runtime.jit.JITFunction):
            raise RuntimeError(f"{spec.name}: {spec.fn!r} is not a compilable @triton.jit function "
                               "(was TRITON_INTERPRET=1 set when the kernels were imported?)")
        only = getattr(spec, "archs", None)  # a configuration launched on some archs only
        for arch in archs:
            if only is None or int(arch) in only:
                rows.append(compile_spec(spec, int(arch)))
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`compile_all` rows, then a one-line summary."""
    head = ("kernel", "arch", "ok", "regs", "spills", "shared")
    body = [
        (r["kernel"], f"sm_{r['arch']}", "yes" if r["ok"] else "NO", _cell(r["registers"]), _cell(r["spills"]),
         _cell(r["shared"]))
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in (head, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in rows:
        if not r["ok"]:
            lines.append(f"error {r['kernel']} sm_{r['arch']}: {r.get('error', '')}")
    n_ok = sum(r["ok"] for r in rows)
    n_spill = sum(1 for r in rows if r["spills"])
    lines.append(f"{n_ok}/{len(rows)} compiled ok, {n_spill} with register spills")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _parse_archs(text: str) -> list[int]:
    try:
        archs = [int(a.strip().removeprefix("sm_")) for a in text.split(",") if a.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--arch wants comma-separated compute capabilities like 80,90, got {text!r}") from None
    if not archs:
        raise argparse.ArgumentTypeError("--arch needs at least one compute capability")
    return archs


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="autogaze-fast compile-kernels",
        description="AOT-compile every Triton kernel for each GPU arch and report registers, spills, shared memory.",
    )
    parser.add_argument("--arch", type=_parse_archs, default=list(ARCHS),
                        help="comma-separated compute capabilities (default: 75,80,86,89,90,100,120)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--module", action="append", default=None,
                        help="only this kernel module (repeatable; default: every module in KERNEL_MODULES)")
    parser.add_argument("--match", default=None, metavar="REGEX",
                        help="only configurations whose name matches this regular expression")
    parser.add_argument("--smoke", action="store_true",
                        help="only the first configuration of each kernel function (quick check)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: returns 0 when every configuration compiled ok, 1 otherwise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if _interpreter_on():
        # Kernels imported under the interpreter cannot be compiled: re-run in a clean child process.
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        return subprocess.run([sys.executable, "-m", "autogaze_fast", "compile-kernels", *argv], env=env).returncode
    rows = compile_all(args.arch, args.module, args.match, args.smoke)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows))
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
