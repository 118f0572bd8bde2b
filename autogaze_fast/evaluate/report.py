"""The evaluation's outputs: per-row CSV and JSON, a markdown table of the means over videos, a PNG plot.

Every file is written to a temporary name and renamed, so a run cut short leaves the previous
complete version (or none), never half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from autogaze_fast.evaluate.plot import line_plot

COLUMNS = ("video", "selector", "options", "budget", "frames", "tokens_kept", "kept_fraction", "selector_ms_per_frame",
           "vit_ms_per_frame", "psnr_db", "feature_cosine")
"""Per-row CSV columns; extra task metrics (e.g. ``mae_loss``) follow."""


def atomic_write_text(path: Path, text: str | bytes) -> Path:
    """Write ``text`` to ``path`` through a temporary file in its folder, fsynced and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    extra = sorted({k for r in rows for k in r.get("metrics", {})})
    return list(COLUMNS) + extra


def flat(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row.get(k) for k in COLUMNS}
    out["options"] = json.dumps(row.get("options", {}), sort_keys=True)
    out.update(row.get("metrics", {}))
    return out


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=metric_columns(rows), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in flat(row).items()})
    return atomic_write_text(path, buffer.getvalue())


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    if any(math.isinf(v) for v in values):
        return math.inf
    return sum(values) / len(values)


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means over videos per (selector, budget), sorted by selector then budget."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["selector"], row["budget"])].append(flat(row))
    columns = [c for c in metric_columns(rows) if c not in ("video", "selector", "options", "budget", "frames")]
    out = []
    for (selector, budget), group in sorted(groups.items()):
        entry = {"selector": selector, "budget": budget, "videos": len(group)}
        for c in columns:
            entry[c] = _mean([g.get(c) for g in group if isinstance(g.get(c), (int, float))])
        out.append(entry)
    return out


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The summary as a markdown table (means over videos)."""
    table = summary(rows)
    if not table:
        return "(no results)\n"
    extra = [c for c in table[0] if c not in ("selector", "budget", "videos", "tokens_kept", "kept_fraction",
                                             "selector_ms_per_frame", "vit_ms_per_frame", "psnr_db", "feature_cosine")]
    head = ["selector", "budget", "videos", "tokens kept / frame", "kept fraction", "selector ms / frame",
            "ViT ms / frame", "PSNR dB", "feature cosine"] + extra
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for e in table:
        per_frame = None if e["tokens_kept"] is None else e["tokens_kept"]
        values = [e["selector"], f"{e['budget']:g}", e["videos"], _cell(per_frame, 1), _cell(e["kept_fraction"]),
                  _cell(e["selector_ms_per_frame"], 2), _cell(e["vit_ms_per_frame"], 2), _cell(e["psnr_db"], 2),
                  _cell(e["feature_cosine"], 4)] + [_cell(e[c], 4) for c in extra]
        lines.append("| " + " | ".join(str(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def write_reports(out: Path, rows: list[dict[str, Any]], metric: str = "psnr_db") -> dict[str, Path]:
    """``results.csv``, ``results.json``, ``results.md`` and ``plot.png`` under ``out``."""
    paths = {"csv": write_csv(out / "results.csv", rows)}
    paths["json"] = atomic_write_text(out / "results.json", json.dumps({"rows": rows, "summary": summary(rows)},
                                                                      indent=1, sort_keys=True, default=str) + "\n")
    paths["md"] = atomic_write_text(out / "results.md", markdown_table(rows))
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for e in summary(rows):
        y = e.get(metric)
        if e["kept_fraction"] is not None and y is not None and math.isfinite(y):
            series[e["selector"]].append((e["kept_fraction"], y))
    labels = {"psnr_db": "interframe PSNR (dB)", "feature_cosine": "cosine to dense pooled features"}
    png = line_plot(series, x_label="tokens kept (fraction of each frame's multi-scale tokens)",
                    y_label=labels.get(metric, metric), title=f"{labels.get(metric, metric)} against tokens kept")
    paths["png"] = atomic_write_text(out / "plot.png", png)
    return paths
