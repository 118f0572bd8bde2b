"""Peak memory of one call, measured in a fresh process so that benchmarks in the same run do not
mask each other: ``python bench/memory_probe.py MODULE:FUNCTION [ARGS...]`` prints JSON with the
peak resident set size grown during the call (MB) and, on CUDA, ``torch.cuda.max_memory_allocated``.

The function is called twice: ``setup(*args)`` (model building, not counted) and the returned
callable (counted).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path


def status_mb(field: str) -> float:
    """A memory line of /proc/self/status in MB (``VmRSS`` now, ``VmHWM`` = this process's peak).

    ``ru_maxrss`` is not used: on Linux a child inherits its parent's value, so under pytest every
    probe would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(target: str, *args: str) -> dict:
    """Run ``target`` (``module:setup_function``) in a subprocess; return its memory figures."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).parent) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, __file__, target, *args], capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"memory probe {target} {args} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    import torch

    module, name = sys.argv[1].split(":")
    run = getattr(importlib.import_module(module), name)(*sys.argv[2:])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = status_mb("VmRSS")
    run()
    peak = status_mb("VmHWM")
    out = {"peak_rss_mb": round(peak, 1), "rss_growth_mb": round(max(peak - base, 0.0), 1)}
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        out["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
