"""``autogaze-fast gpu-check --out DIR``: the command line of :mod:`autogaze_fast.gpu_check`."""

from __future__ import annotations

import argparse
from pathlib import Path

from autogaze_fast.gpu_check.check import SECTIONS, run_check
from autogaze_fast.gpu_check.check import __doc__ as CHECK_DOC


# ----------------------------------------------------------------------------- command line
def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("gpu-check", help="parity, timings, kernels and the gpu test suite in one report "
                       "(CPU mode without CUDA)", description=CHECK_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="report folder (gpu-check.json, gpu-check.md, pytest-gpu.log)")
    p.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    p.add_argument("--quick", action="store_true", help="smallest sizes (seconds on CPU)")
    p.add_argument("--sections", default=None, help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--fixtures", default=None, help="upstream fixture folder (default: tests/fixtures/upstream)")
    p.add_argument("--pytest-args", default=None, help="arguments of the pytest run, as one string "
                   "(default: '-m gpu -q -rfE -p no:cacheprovider tests')")
    return p


def run(args) -> int:
    """CLI entry: 0 when every section finished ``ok``, 1 otherwise (the report is written either way)."""
    sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None
    report = run_check(args.out, device=args.device, quick=args.quick, sections=sections, fixtures=args.fixtures,
                       pytest_args=args.pytest_args.split() if args.pytest_args else None)
    for name, entry in report["sections"].items():
        print(f"{name:13s} {entry['status']:8s} {entry.get('seconds', 0):7.1f} s  {entry.get('error', '')}"[:200])
    print(f"wrote {Path(args.out) / 'gpu-check.md'} and gpu-check.json")
    return 0 if all(e["status"] == "ok" for e in report["sections"].values()) else 1
