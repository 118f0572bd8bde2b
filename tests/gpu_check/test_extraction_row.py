"""gpu-check's extraction-throughput section (issue 24) in its CPU ``quick`` mode: both rows filled,
every video ok, the timing split and the busy share recorded, the report written."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("av")


def test_extraction_section_fills_its_rows(tmp_path):
    from autogaze_fast.gpu_check.check import SECTIONS, run_check

    assert list(SECTIONS).index("extraction") == list(SECTIONS).index("kernels") + 1
    report = run_check(tmp_path, device="cpu", quick=True, sections=["extraction"])
    entry = report["sections"]["extraction"]
    assert entry["status"] == "ok", entry
    rows = entry["results"]["rows"]
    assert [r["batch_clips"] for r in rows] == [1, 2] and all(r["ok"] == 2 and r["failed"] == 0 for r in rows)
    for row in rows:
        assert 0 < row["busy"] <= 1.0 and row["timings"]["gaze"] > 0 and row["busy_met"] == "n/a (CPU mode)"
    assert "x_batch_1" in rows[1]
    assert json.loads((tmp_path / "gpu-check.json").read_text())["sections"]["extraction"]["status"] == "ok"
    assert "## extraction" in (tmp_path / "gpu-check.md").read_text()
