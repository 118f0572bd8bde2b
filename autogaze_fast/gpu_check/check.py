"""``autogaze-fast gpu-check --out DIR``: one command that proves the GPU path on whatever machine
it runs on, writing ``DIR/gpu-check.json`` and ``DIR/gpu-check.md`` (rewritten after every row).

Sections, most important first, each with a time cap and its own error handling (a failure is
recorded and the next section runs):

1. ``environment``: GPU, driver, CUDA, torch, triton, python (on CPU: the CPU's brand);
2. ``parity``: fast vs reference vs upstream's fixtures (exact in fp32, TF32 off on CUDA), and on an
   NVIDIA-shaped clip in fp32 and bf16, eager and graph-ready decode (mask IoU vs the fp32
   reference, and for bf16 vs the bf16 reference);
3. ``end_to_end``: gaze timings (reference, fast eager, fast + CUDA graphs; fp32 and bf16), a
   1080p clip as 45 anyres tiles in one batch, and gazed SigLIP-B/16, with peak memory;
4. ``kernels``: each Triton kernel vs the torch op it replaces;
4b. ``extraction``: ``extract_features`` throughput, batch 1 against clip batches with a decode
   worker, and the device's busy share (:mod:`autogaze_fast.gpu_check.extraction`);
5. ``pytest``: ``pytest -m gpu`` in a subprocess, with a timeout (log in ``pytest-gpu.log``);
6. ``pytest_triton`` (CUDA only, in what is left of the budget): the other ``triton``-marked tests,
   which run the kernels natively on CUDA tensors there (log in ``pytest-triton.log``); without
   CUDA ``make test`` runs them through the interpreter.

On CUDA the sizes are the models' own (16 frames, SigLIP-B/16 at 3,168 tokens, medians of >= 10)
and the whole check is sized to finish within ~6 minutes on an H200. Without CUDA the same report
runs on the fast model's torch CPU paths at small sizes (``cpu``: < 2 minutes on 2 cores; ``--quick``: the
smallest, used by the tests).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from autogaze_fast.devices import resolve_device
from autogaze_fast.gpu_check.context import DEFAULT_FIXTURES, PROFILES, REPO_ROOT, CheckContext
from autogaze_fast.gpu_check.extraction import extraction
from autogaze_fast.gpu_check.kernels import kernels
from autogaze_fast.gpu_check.models import end_to_end, parity
from autogaze_fast.gpu_check.report import PYTEST_LOG, PYTEST_TRITON_LOG
from autogaze_fast.gpu_check.timing import SectionTimeout, tf32_flags

#: The SIGALRM backstop fires this long (plus half the cap) after a section's cap, should a case
#: overrun without reaching the next between-case check.
HARD_CAP_GRACE_S = 30.0


# ----------------------------------------------------------------------------- section 1: environment
def _run_text(cmd: list[str], timeout: float = 10) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
        return (done.stdout.strip() or None) if done.returncode == 0 else None
    except Exception:
        return None


def _cpu_brand() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(ctx: CheckContext, results: dict) -> None:
    """Section 1: versions and the device."""
    results["python"] = platform.python_version()
    results["platform"] = platform.platform()
    results["torch"] = torch.__version__
    try:
        import triton  # deferred: optional (Linux + CUDA only); its absence is reported

        results["triton"] = triton.__version__
    except Exception as e:
        results["triton"] = f"not importable: {type(e).__name__}: {e}"[:200]
    results["cpu"] = f"{_cpu_brand()} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})"
    if ctx.device.type == "cuda":
        props = torch.cuda.get_device_properties(ctx.device)
        results["gpu"] = props.name
        results["compute_capability"] = f"{props.major}.{props.minor}"
        results["multiprocessors"] = props.multi_processor_count
        results["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        results["driver"] = _run_text(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        results["cuda_runtime (torch)"] = torch.version.cuda
        results["cudnn"] = torch.backends.cudnn.version()
        results.update({f"default {k}": v for k, v in tf32_flags().items()})
    else:
        results["gpu"] = "none (CPU mode: the fast model runs its torch CPU paths, never Triton)"
    results["TRITON_INTERPRET"] = os.environ.get("TRITON_INTERPRET", "")
    results["git_commit"] = _run_text(["git", "rev-parse", "--short", "HEAD"])
    status = _run_text(["git", "status", "--porcelain", "--untracked-files=no"])
    results["git_dirty_files"] = len(status.splitlines()) if status else 0
    ctx.save()


# ----------------------------------------------------------------------------- section 5: pytest -m gpu
SUMMARY_RE = re.compile(r"\d+ (passed|failed|skipped|errors?|deselected|xfailed|xpassed|warnings?)\b")


def parse_pytest_output(text: str) -> dict[str, Any]:
    """The summary line, the counts in it, and the ``FAILED`` / ``ERROR`` lines of a ``pytest -q -rfE`` log."""
    lines = [line.strip().strip("=").strip() for line in text.splitlines()]
    summary = next((line for line in reversed(lines) if SUMMARY_RE.search(line) and " in " in line), "")
    counts = {kind.rstrip("s") if kind.startswith("error") else kind: int(n)
              for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", summary)}
    failures = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return {"summary": summary, "counts": counts, "failures": failures[:50]}


#: Section 6's run: every test that runs the Triton kernels, but the ``gpu`` ones section 5 ran.
TRITON_PYTEST_ARGS = ["-m", "triton and not gpu and not slow", "-q", "-rfE", "-p", "no:cacheprovider", "tests"]
#: Section 6 starts only with at least this much of the budget left.
MIN_TRITON_PYTEST_S = 30.0


def pytest_section(ctx: CheckContext, results: dict) -> None:
    """Section 5: ``pytest -m gpu`` (or ``--pytest-args``) in a subprocess, killed at the time cap."""
    _run_pytest(ctx, results, ctx.pytest_args, PYTEST_LOG)


def pytest_triton_section(ctx: CheckContext, results: dict) -> None:
    """Section 6 (CUDA only): the ``triton``-marked tests that are not ``gpu`` ones, natively, in
    what is left of the budget."""
    if ctx.device.type != "cuda":
        results["note"] = "CUDA only: without CUDA, `make test` runs these tests through the Triton interpreter"
        ctx.save()
        return
    if ctx.deadline - time.perf_counter() < MIN_TRITON_PYTEST_S:
        results["note"] = f"not run: less than {MIN_TRITON_PYTEST_S:.0f} s of the budget left"
        ctx.save()
        return
    _run_pytest(ctx, results, TRITON_PYTEST_ARGS, PYTEST_TRITON_LOG)


def _run_pytest(ctx: CheckContext, results: dict, args: list[str], log_name: str) -> None:
    """``pytest args`` in a subprocess (log in ``out_dir/log_name``), killed at the section's deadline."""
    if not (REPO_ROOT / "tests").is_dir():
        raise FileNotFoundError(f"no tests/ folder beside the package ({REPO_ROOT}): install the project "
                                "from its source tree (pip install --no-deps -e .) to run the gpu suite")
    cmd = [sys.executable, "-m", "pytest", *args]
    timeout = max(1.0, ctx.deadline - time.perf_counter())
    results.update(command=" ".join(cmd[1:]), timeout_s=round(timeout), log=log_name)
    log_path = ctx.out_dir / log_name
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    if ctx.device.type == "cuda":  # kernels run natively there, never through the interpreter
        env.pop("TRITON_INTERPRET", None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            results["returncode"] = proc.wait(timeout=timeout)
            results["timed_out"] = False
        except subprocess.TimeoutExpired:
            results["timed_out"] = True
            results["returncode"] = None
        finally:  # also when interrupted (hard cap): never leave the suite running
            if proc.poll() is None:
                _stop_process_group(proc)
    text = log_path.read_text(errors="replace")
    results.update(parse_pytest_output(text))
    if results["timed_out"]:
        results["summary"] = results["summary"] or f"timed out after {timeout:.0f} s"
        results["log_tail"] = text.splitlines()[-20:]
    ctx.save()
    if results["timed_out"]:
        raise SectionTimeout(f"pytest ran past {timeout:.0f} s and was stopped (partial log kept)")


def _stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, the process group this check started for pytest (by its id)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ----------------------------------------------------------------------------- running sections
#: Section name -> function(ctx, results); run in this order. Tests replace entries to inject failures.
SECTIONS: dict[str, Callable[[CheckContext, dict], None]] = {
    "environment": environment,
    "parity": parity,
    "end_to_end": end_to_end,
    "kernels": kernels,
    "extraction": extraction,  # issue 24: after the timing rows, so a cut-short run keeps those
    "pytest": pytest_section,
    "pytest_triton": pytest_triton_section,
}


@contextlib.contextmanager
def _hard_cap(seconds: float) -> Iterator[None]:
    """Raise :class:`SectionTimeout` in the main thread after ``seconds`` (SIGALRM), as a backstop to
    the checks between cases; a no-op off the main thread or without SIGALRM."""
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable or seconds == float("inf"):
        yield
        return

    def fire(signum, frame):
        raise SectionTimeout(f"hard time cap of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _twin_path(device: torch.device) -> Iterator[None]:
    """Without CUDA, run the fast model's torch CPU paths (never the Triton interpreter) for a section."""
    if device.type == "cuda":
        yield
        return
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = before


def run_section(ctx: CheckContext, name: str, cap_s: float) -> dict:
    """Run one section under its cap; record status ``ok`` / ``error`` / ``timeout``, seconds, error text."""
    entry: dict[str, Any] = {"status": "running", "cap_s": round(cap_s, 1), "results": {}}
    ctx.report["sections"][name] = entry
    ctx.save()
    start = time.perf_counter()
    ctx.deadline = start + cap_s
    try:
        twins = _twin_path(ctx.device) if not name.startswith("pytest") else contextlib.nullcontext()
        with _hard_cap(cap_s * 1.5 + HARD_CAP_GRACE_S), twins:
            SECTIONS[name](ctx, entry["results"])
        entry["status"] = "ok"
    except SectionTimeout as e:
        entry.update(status="timeout", error=str(e))
    except Exception as e:
        entry.update(status="error", error=f"{type(e).__name__}: {e}"[:1000],
                     traceback=traceback.format_exc(limit=8)[-4000:])
    finally:
        ctx.deadline = float("inf")
        entry["seconds"] = round(time.perf_counter() - start, 1)
        if ctx.device.type == "cuda":
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
        ctx.save()
    return entry


def run_check(out_dir: str | os.PathLike, device: str | None = None, quick: bool = False,
              sections: list[str] | None = None, caps: dict[str, float] | None = None,
              fixtures: str | os.PathLike | None = None, pytest_args: list[str] | None = None) -> dict:
    """Run the check and return the report (also written to ``out_dir``).

    Args:
        out_dir: folder for ``gpu-check.json``, ``gpu-check.md`` and ``pytest-gpu.log`` (created).
        device: "cuda" / "cpu" (default: cuda when available).
        quick: smallest sizes (the test suite's mode); otherwise the device's own mode.
        sections: a subset of :data:`SECTIONS` (their order is kept).
        caps: per-section time caps in seconds, overriding the mode's.
        fixtures: upstream fixture folder (default: tests/fixtures/upstream of the source tree).
        pytest_args: arguments of the pytest run (default: ``-m gpu -q -rfE -p no:cacheprovider tests``).
    """
    dev = resolve_device(device or None, message=f"device {device!r} asked for but torch sees no CUDA device; "
                                                 "run without --device for CPU mode")
    unknown = sorted(set(sections or []) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown sections {unknown}; choose among {list(SECTIONS)}")
    sizes = PROFILES["quick" if quick else dev.type if dev.type in PROFILES else "cpu"]
    sizes = replace(sizes, caps={**sizes.caps, **(caps or {})})
    out = Path(out_dir)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_brand()
    report = {"meta": {"started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                       "device": str(dev), "device_name": name,
                       "profile": sizes.name, "sizes": asdict(sizes), "finished": False, "elapsed_s": 0.0},
              "sections": {}}
    ctx = CheckContext(dev, sizes, Path(fixtures) if fixtures else DEFAULT_FIXTURES, out, report, time.perf_counter(),
                       list(pytest_args or ["-m", "gpu", "-q", "-rfE", "-p", "no:cacheprovider", "tests"]))
    for name in [s for s in SECTIONS if sections is None or s in sections]:
        cap = sizes.caps.get(name, 60.0)
        left = sizes.budget_s - (time.perf_counter() - ctx.started)
        if name == "pytest":  # what is left of the budget, at least a minute
            cap = min(cap, max(60.0, left))
        elif name == "pytest_triton":  # what is left after that, if anything
            cap = min(cap, max(0.0, left))
        run_section(ctx, name, cap)
    report["meta"]["finished"] = True
    ctx.save()
    return report
