"""Writing the ``gpu-check`` report: ``gpu-check.json`` (everything) and ``gpu-check.md`` (tables),
both rewritten atomically (temporary file + rename) every time a row or section finishes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from autogaze_fast.gpu_check.targets import target_rows

JSON_NAME, MARKDOWN_NAME, PYTEST_LOG = "gpu-check.json", "gpu-check.md", "pytest-gpu.log"
PYTEST_TRITON_LOG = "pytest-triton.log"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(out_dir: Path, report: dict) -> None:
    """Rewrite both report files from ``report`` (see :func:`autogaze_fast.gpu_check.check.run_check`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(out_dir / JSON_NAME, json.dumps(report, indent=1, default=str) + "\n")
    _atomic_write(out_dir / MARKDOWN_NAME, render_markdown(report))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.3g}" if abs(value) < 1e-2 else f"{value:,.3f}".rstrip("0").rstrip(".")
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: Iterable[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _memory(row: dict) -> Any:
    return row.get("peak_mb", row.get("rss_peak_mb"))


def _work_memory(row: dict) -> Any:
    """CUDA: memory the call itself took beyond its inputs; CPU: the process's peak RSS."""
    return row.get("work_mb", row.get("rss_peak_mb"))


def _time(row: dict) -> Any:
    if "error" in row:
        return "error: " + row["error"]
    return row.get("median_ms", row.get("note"))


def _impl_cell(row: dict) -> str:
    """``impl``, with the graphs' stop lag where the row has one (None: one stop read per frame)."""
    return f"{row.get('impl')} (stop_lag={row['stop_lag']})" if "stop_lag" in row else str(row.get("impl"))


def _section_lines(name: str, entry: dict) -> list[str]:
    res = entry.get("results") or {}
    if name == "environment":
        return table(["key", "value"], [[k, v] for k, v in res.items()])
    if name == "parity":
        lines = [f"TF32: {res.get('tf32', '')}", ""]
        lines += table(["case", "model", "reference vs upstream", "fast vs upstream", "fast vs reference",
                        "max score diff (fast)", "tol", "ok", "error"],
                       [[r["case"], r["model"], r.get("reference_vs_upstream"), r.get("fast_vs_upstream"),
                         r.get("fast_vs_reference"), r.get("fast_max_score_diff"), r.get("tolerance"), r.get("ok"),
                         r.get("error")] for r in res.get("fixtures", [])])
        lines += ["NVIDIA-shaped clip (seeded random weights, synthetic clip), against the fp32 reference:", ""]
        lines += table(["frames", "case", "dtype", "impl", "gazed tokens", "exact vs fp32 ref", "mask IoU vs fp32 ref",
                        "mask IoU vs same-dtype ref", "note / error"],
                       [[r.get("frames"), r.get("case"), r.get("dtype"), r.get("impl"), r.get("gazed_tokens"),
                         r.get("exact_vs_fp32_reference"), r.get("mask_iou_vs_fp32_reference"),
                         r.get("mask_iou_vs_same_dtype_reference"), r.get("error", r.get("note"))]
                        for r in res.get("clip", [])])
        return lines
    if name == "end_to_end":
        lines = [f"Timer: {res.get('timer', '')}. Memory (peak MB): {res.get('memory', '')}.", ""]
        lines += table(["workload", "impl", "dtype", "median ms", "min ms", "n", "peak MB", "gazed tokens", "x reference",
                        "x fast eager (graphs' gain)"],
                       [[r.get("workload"), _impl_cell(r), r.get("dtype"), _time(r), r.get("min_ms"), r.get("n"),
                         _memory(r), r.get("gazed_tokens"), r.get("x_reference"), r.get("x_fast_eager")]
                        for r in res.get("gaze", [])])
        if res.get("gaze_stopped"):
            lines += [f"Gaze timings stopped early: {res['gaze_stopped']}.", ""]
        lines += table(["tiled gaze", "tiles", "tile batch", "impl", "dtype", "median ms", "n", "peak MB", "x fast eager"],
                       [[r.get("workload"), r.get("tiles"), r.get("tile_batch_size"), r.get("impl"), r.get("dtype"),
                         _time(r), r.get("n"), _memory(r), r.get("x_fast_eager")] for r in res.get("tiles", [])])
        if res.get("tiles_stopped"):
            lines += [f"Tiled gaze stopped early: {res['tiles_stopped']}.", ""]
        lines += table(["SigLIP-B/16", "tokens (dense)", "depth", "impl", "dtype", "median ms", "n", "peak MB",
                        "x dense", "target", "met"],
                       [[r.get("workload"), f"{r.get('tokens')} ({r.get('dense_tokens')})", r.get("depth"), r.get("impl"),
                         r.get("dtype"), _time(r), r.get("n"), _memory(r), r.get("x_dense"), r.get("target"),
                         r.get("target_met")] for r in res.get("siglip", [])])
        return lines
    if name == "kernels":
        lines = [f"Kernel row: {res.get('kernel_row', '')}. `op / kernel`: the torch op's time over the kernel's "
                 "(> 1: the kernel is faster). `work MB`: CUDA peak allocated during the call beyond its inputs "
                 "(CPU: process peak RSS).", ""]
        lines += table(["op", "shape", "dtype", "impl", "median ms", "n", "work MB", "max abs diff", "op / kernel", "note"],
                       [[r.get("op"), r.get("shape"), r.get("dtype"), r.get("impl"), _time(r), r.get("n"), _work_memory(r),
                         r.get("max_abs_diff"), r.get("kernel_speedup"), r.get("note")] for r in res.get("rows", [])])
        return lines
    if name.startswith("pytest"):
        if "command" not in res:
            return [str(res.get("note", "not run")), ""]
        lines = [f"`{res.get('command', '')}`: **{res.get('summary', '')}** (exit {res.get('returncode')}, "
                 f"{'TIMED OUT, ' if res.get('timed_out') else ''}log: {res.get('log', PYTEST_LOG)})", ""]
        lines += [f"- {line}" for line in res.get("failures", [])]
        return lines + [""]
    return ["```", json.dumps(res, indent=1, default=str), "```", ""]


def render_markdown(report: dict) -> str:
    meta = report.get("meta", {})
    lines = [f"# autogaze-fast gpu-check: {meta.get('device_name', '?')}", "",
             f"Started {meta.get('started', '?')}, mode `{meta.get('profile', '?')}` on `{meta.get('device', '?')}`, "
             f"{meta.get('elapsed_s', 0):.0f} s so far{' (finished)' if meta.get('finished') else ''}. "
             f"Full results: `{JSON_NAME}`.", ""]
    sections = report.get("sections", {})
    lines += ["## Sections", ""]
    lines += table(["section", "status", "seconds", "cap s", "error"],
                   [[n, e.get("status"), e.get("seconds"), e.get("cap_s"), e.get("error")] for n, e in sections.items()])
    lines += ["## Targets", "", "The headline figures against the GPU path's targets (they hold on CUDA at the "
              "models' own sizes; this table goes into the README as it is).", ""]
    try:
        lines += table(["figure", "measured", "target", "met"], target_rows(report))
    except Exception as e:  # a malformed row must not cost the rest of the report
        lines += [f"(could not render: {type(e).__name__}: {e})", ""]
    for name, entry in sections.items():
        lines += [f"## {name}", ""]
        try:
            lines += _section_lines(name, entry)
        except Exception as e:  # a malformed row must not cost the rest of the report
            lines += [f"(could not render: {type(e).__name__}: {e})", ""]
    return "\n".join(lines)
