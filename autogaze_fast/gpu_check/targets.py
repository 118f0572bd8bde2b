"""The headline of a ``gpu-check`` report: its figures against the GPU path's targets (issue 10 and
its clarifications), one row each, so the table can go into the README as it is.

Targets hold on CUDA at the models' own sizes (profile ``cuda``); in the CPU modes the rows are
filled the same way and marked ``n/a (CPU mode)``.
"""

from __future__ import annotations

from typing import Any

GAZE_MS_TARGET = 30.0
GAZE_X_REFERENCE_TARGET = 20.0
SIGLIP_TARGETS = {"gazed~10%": 0.2, "gazed": 1.2}
BF16_IOU_TARGET = 0.98


def _rows(report: dict, section: str, key: str) -> list[dict]:
    return ((report.get("sections", {}).get(section) or {}).get("results") or {}).get(key) or []


def _first(rows: list[dict], **match: Any) -> dict | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()) and "error" not in row:
            return row
    return None


def target_rows(report: dict) -> list[list[Any]]:
    """``[figure, measured, target, met]`` rows; ``met`` is True/False, or a note when the figure is
    missing or the mode is not CUDA."""
    cuda = (report.get("meta") or {}).get("profile") == "cuda"
    rows: list[list[Any]] = []

    def add(figure: str, value: Any, target: str, ok: bool | None) -> None:
        if value is None:
            rows.append([figure, "not measured", target, "no figure"])
        else:
            rows.append([figure, value, target, ok if cuda else "n/a (CPU mode)"])

    fixtures = _rows(report, "parity", "fixtures")
    exact = sum(bool(r.get("ok")) for r in fixtures)
    add("upstream fixtures: fast = reference = upstream (fp32)", f"{exact} of {len(fixtures)}" if fixtures else None,
        "all", bool(fixtures) and exact == len(fixtures))

    gaze = _rows(report, "end_to_end", "gaze")
    graphs = _first(gaze, impl="fast+cuda_graphs", dtype="fp32", case="ratio0.75")
    frames = graphs.get("frames") if graphs else None
    label = f"gaze {frames or 16} frames at ratio 0.75, fast + CUDA graphs, fp32"
    add(f"{label}: median ms", graphs and graphs.get("median_ms"), f"<= {GAZE_MS_TARGET:g} ms",
        graphs is not None and graphs.get("median_ms", float("inf")) <= GAZE_MS_TARGET)
    add(f"{label}: x our reference", graphs and graphs.get("x_reference"), f">= {GAZE_X_REFERENCE_TARGET:g}x",
        graphs is not None and graphs.get("x_reference", 0) >= GAZE_X_REFERENCE_TARGET)
    add(f"{label}: x fast eager (the graphs' gain)", graphs and graphs.get("x_fast_eager"), "> 1x",
        graphs is not None and graphs.get("x_fast_eager", 0) > 1)

    for dtype in ("fp32", "bf16"):
        for workload, limit in SIGLIP_TARGETS.items():
            row = _first(_rows(report, "end_to_end", "siglip"), impl="fast", dtype=dtype, workload=workload)
            if row is None and dtype == "bf16":
                continue
            tokens = f"{row['tokens']:,} of {row['dense_tokens']:,} dense tokens" if row else workload
            add(f"gazed SigLIP-B/16, {tokens}, fast {dtype}: x dense 224", row and row.get("x_dense"),
                f"<= {limit:g}x", row is not None and row.get("x_dense", float("inf")) <= limit)

    kernels = [r for r in _rows(report, "kernels", "rows") if "kernel_speedup" in r and r["op"] != "flex_attention"]
    for op in sorted({r["op"] for r in kernels}):
        worst = min(kernels, key=lambda r: r["kernel_speedup"] if r["op"] == op else float("inf"))
        add(f"{op}: torch op / kernel, worst shape ({worst.get('shape')}, {worst.get('dtype')}, vs {worst.get('impl')})",
            worst["kernel_speedup"], ">= 1x", worst["kernel_speedup"] >= 1)
    for mode in ("fwd", "fwd+bwd"):  # issue 21: our block-causal kernel vs compiled FlexAttention, mask build counted
        flex = [r for r in _rows(report, "kernels", "rows") if r.get("op") == "flex_attention" and r.get("impl") ==
                "flex+mask" and str(r.get("shape", "")).endswith(f", {mode}") and "kernel_speedup" in r]
        for row in flex:
            add(f"block-causal attention vs FlexAttention, {mode} ({row.get('shape')}, {row.get('dtype')}): "
                "flex (mask built per call) / ours", row["kernel_speedup"], ">= 1x", row["kernel_speedup"] >= 1)
        if not flex:
            add(f"block-causal attention vs FlexAttention, {mode}: flex (mask built per call) / ours",
                None if cuda else "CUDA only (CPU: bench/bench_flex_attention.py)", ">= 1x", None)

    clip = _rows(report, "parity", "clip")
    half = (_first(clip, dtype="bf16", impl="fast+cuda_graphs", case="ratio0.75")
            or _first(clip, dtype="bf16", impl="fast", case="ratio0.75"))
    add(f"bf16 gaze mask IoU vs the fp32 reference ({half['impl'] if half else 'fast'}, ratio 0.75, random weights)",
        half and half.get("mask_iou_vs_fp32_reference"), f">= {BF16_IOU_TARGET:g}",
        half is not None and half.get("mask_iou_vs_fp32_reference", 0) >= BF16_IOU_TARGET)

    for section, name in (("pytest", "pytest -m gpu"), ("pytest_triton", "pytest -m 'triton and not gpu'")):
        res = (report.get("sections", {}).get(section) or {}).get("results") or {}
        if "command" in res:
            add(name, res.get("summary") or "no summary", "all pass", res.get("returncode") == 0)
    return rows
