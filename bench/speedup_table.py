"""Print the speed-up table of a pytest-benchmark run: ``python bench/speedup_table.py results.json``.

One block per benchmark ``group``: each entry's mean time, its speed-up over the group's baseline,
and the memory figures recorded in ``extra_info`` (``peak_rss_mb``, ``rss_growth_mb``,
``cuda_max_allocated_mb``) when present. The baseline is the entry whose ``extra_info`` has
``baseline: true``; else the one whose ``impl`` (or test name) says ``reference`` or ``naive``;
else the slowest entry of the group.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

MEMORY_KEYS = ("peak_rss_mb", "rss_growth_mb", "cuda_max_allocated_mb")


def _label(bench: dict) -> str:
    name = bench.get("name", "?")
    return name.split("::")[-1]


def _baseline(entries: list[dict]) -> dict:
    for bench in entries:
        if bench.get("extra_info", {}).get("baseline") is True:
            return bench
    for word in ("reference", "naive"):
        for bench in entries:
            impl = str(bench.get("extra_info", {}).get("impl", ""))
            if word in impl or word in _label(bench):
                return bench
    return max(entries, key=lambda b: b["stats"]["mean"])


def _time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3f} {unit}"
    return f"{seconds / 1e-9:.1f} ns"


def format_table(data: dict) -> str:
    """The table for a pytest-benchmark JSON document (``--benchmark-json`` output)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data.get("benchmarks", []):
        groups[bench.get("group") or "(no group)"].append(bench)
    if not groups:
        return "no benchmarks in this file (was the run made with --benchmark-enable?)"
    lines = []
    machine = data.get("machine_info", {})
    if machine:
        lines.append(f"machine: {machine.get('node', '?')} {machine.get('cpu', {}).get('brand_raw', '')}".rstrip())
    for group in sorted(groups):
        entries = sorted(groups[group], key=lambda b: b["stats"]["mean"], reverse=True)
        base = _baseline(entries)
        mem_keys = [k for k in MEMORY_KEYS if any(k in b.get("extra_info", {}) for b in entries)]
        head = ["benchmark", "mean", "± std", "speed-up", *mem_keys]
        rows = []
        for bench in entries:
            stats, extra = bench["stats"], bench.get("extra_info", {})
            speedup = base["stats"]["mean"] / stats["mean"] if stats["mean"] > 0 else float("inf")
            mark = " (baseline)" if bench is base else ""
            rows.append([_label(bench) + mark, _time(stats["mean"]), _time(stats.get("stddev", 0.0)),
                         f"{speedup:.2f}x", *[_mem(extra.get(k)) for k in mem_keys]])
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines.append("")
        lines.append(f"== {group} ==")
        for i, row in enumerate([head, *rows]):
            lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _mem(value) -> str:
    return "-" if value is None else f"{float(value):.1f}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python bench/speedup_table.py RESULTS.json", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        print(f"no such file: {path} (write it with pytest --benchmark-json={path})", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"{path} is not JSON: {exc}", file=sys.stderr)
        return 2
    print(format_table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
