"""``autogaze-fast gpu-check`` in CPU mode (torch twins, ``--quick`` sizes): every section is
reported, fast and reference match upstream's fixtures exactly, the markdown carries the tables,
and a section that fails or runs past its cap leaves the other sections' results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autogaze_fast.cli.main import main
from autogaze_fast.gpu_check import check as gpu_check
from autogaze_fast.gpu_check.check import SECTIONS, parse_pytest_output, run_check
from autogaze_fast.gpu_check.targets import target_rows

FIXTURE_CASES = ["ratio_k10", "stop_k10", "stream_k10", "stop_k1", "batch2_k10", "anyres", "siglip_stop_k10"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One whole quick CPU run: (report as returned, report as written, markdown)."""
    out = tmp_path_factory.mktemp("gpu-check")
    report = run_check(out, device="cpu", quick=True)
    return report, json.loads((out / "gpu-check.json").read_text()), (out / "gpu-check.md").read_text()


def test_every_section_ran_ok_and_is_on_disk(quick):
    report, written, _ = quick
    assert list(written["sections"]) == list(SECTIONS)
    statuses = {name: entry["status"] for name, entry in written["sections"].items()}
    assert statuses == {name: "ok" for name in SECTIONS}, {n: e.get("error") for n, e in written["sections"].items()}
    assert written["meta"]["finished"] and written["meta"]["profile"] == "quick"
    assert written["sections"]["environment"]["results"]["torch"] == report["sections"]["environment"]["results"]["torch"]


def test_fixture_parity_is_exact(quick):
    _, written, _ = quick
    rows = written["sections"]["parity"]["results"]["fixtures"]
    assert [r["case"] for r in rows] == FIXTURE_CASES
    for r in rows[:-1]:
        assert (r["reference_vs_upstream"], r["fast_vs_upstream"], r["fast_vs_reference"]) == ("exact",) * 3, r
    assert rows[-1]["fast_vs_upstream"] == rows[-1]["reference_vs_upstream"] == "within tol"
    assert all(r["ok"] for r in rows)
    # scores were compared where upstream stored them (the stop cases), not skipped
    assert all(r["fast_max_score_diff"] is not None for r in rows if r["case"] in ("stop_k10", "stop_k1", "batch2_k10"))


def test_clip_parity_fp32_exact_and_bf16_reported(quick):
    _, written, _ = quick
    clip = written["sections"]["parity"]["results"]["clip"]
    fp32_fast = [r for r in clip if r["dtype"] == "fp32" and r["impl"] == "fast"]
    assert {r["case"] for r in fp32_fast} == {"ratio0.75", "ratio0.75+stop"}
    assert all(r["exact_vs_fp32_reference"] and r["mask_iou_vs_fp32_reference"] == 1.0 for r in fp32_fast)
    # the graph-ready decode (CUDA graphs on CUDA; its steps run eagerly on CPU) is exact in fp32 too
    graph_ready = [r for r in clip if r["dtype"] == "fp32" and r["impl"] == "fast+static_steps"]
    assert len(graph_ready) == 2 and all(r["exact_vs_fp32_reference"] for r in graph_ready), graph_ready
    assert len([r for r in clip if r["dtype"] == "bf16" and r["impl"] == "fast+static_steps"]) == 2
    bf16_fast = [r for r in clip if r["dtype"] == "bf16" and r["impl"] == "fast"]
    assert len(bf16_fast) == 2
    for r in bf16_fast:  # an agreement figure, or the error text: never a crash
        assert "error" in r or 0.0 <= r["mask_iou_vs_fp32_reference"] <= 1.0


def test_timings_and_kernel_rows(quick):
    _, written, _ = quick
    e2e = written["sections"]["end_to_end"]["results"]
    timed = [r for r in e2e["gaze"] if r["impl"] in ("reference", "fast")]
    assert len(timed) == 4 and all(r["median_ms"] > 0 and r["n"] >= 1 for r in timed)
    for case in ("ratio0.75", "ratio0.75+stop"):  # same gaze, so the same token count
        assert len({r["gazed_tokens"] for r in timed if r["case"] == case}) == 1
    assert all(r["note"] == "n/a on CPU" for r in e2e["gaze"] if r["impl"] == "fast+cuda_graphs")
    tiles = e2e["tiles"]  # anyres tiles in one batch (1080p, 45 tiles on CUDA; 224 x 448, 2 tiles here)
    assert [(r["impl"], r["dtype"]) for r in tiles] == [("fast", "fp32"), ("fast+static_steps", "fp32")]
    assert all(r["tiles"] == 2 and r["median_ms"] > 0 for r in tiles), tiles
    assert tiles[1]["x_fast_eager"] > 0
    siglip = e2e["siglip"]
    assert [(r["impl"], r["workload"]) for r in siglip] == [
        (i, w) for i in ("reference", "fast") for w in ("dense224", "gazed", "gazed~10%")]
    assert all(r["median_ms"] > 0 for r in siglip) and all("x_dense" in r for r in siglip if r["workload"] != "dense224")
    rows = written["sections"]["kernels"]["results"]["rows"]
    assert {r["op"] for r in rows} == {"decode_attention", "sparse_attention", "gathered_patch_embed"}
    assert all(r.get("within_tol") for r in rows), [r for r in rows if not r.get("within_tol")]
    assert all("kernel_speedup" in r for r in rows if r["impl"] != "twin")
    pytest_res = written["sections"]["pytest"]["results"]
    assert pytest_res["returncode"] == 0 and pytest_res["counts"].get("skipped", 0) > 0  # no CUDA: gpu tests skip


def test_markdown_has_the_tables(quick):
    _, _, md = quick
    for name in SECTIONS:
        assert f"| {name} | ok |" in md and f"## {name}" in md
    for case in FIXTURE_CASES:
        assert f"| {case} |" in md
    assert "| ratio_k10 | tiny_k10 | exact | exact | exact |" in md
    for impl in ("reference", "fast"):
        assert f"| gaze 1 frames ratio0.75 | {impl} | fp32 |" in md
        assert f"| dense224 | 196 (196) | 1 layers | {impl} | fp32 |" in md
    for op in ("decode_attention", "sparse_attention", "gathered_patch_embed"):
        assert f"| {op} |" in md
    assert "| gaze 1 frames 448x224 anyres tiles, ratio 0.75 | 2 | 2 | fast+static_steps | fp32 |" in md
    assert "x fast eager (graphs' gain)" in md and "mask IoU vs same-dtype ref" in md
    assert "skipped" in md


def test_failing_and_overrunning_sections_keep_the_others(tmp_path, monkeypatch):
    def boom(ctx, results):
        results["fixtures"] = [{"case": "before the failure"}]
        raise RuntimeError("injected failure")

    def overrun(ctx, results):
        results["gaze"] = [{"workload": "finished before the cap"}]
        ctx.save()
        time.sleep(0.3)
        ctx.check("the next case")

    monkeypatch.setitem(SECTIONS, "parity", boom)
    monkeypatch.setitem(SECTIONS, "end_to_end", overrun)
    report = run_check(tmp_path, device="cpu", quick=True, caps={"end_to_end": 0.1},
                       pytest_args=["-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/kernels/test_decode_attention.py"])
    written = json.loads((tmp_path / "gpu-check.json").read_text())
    sections = written["sections"]
    assert {n: e["status"] for n, e in sections.items()} == {
        "environment": "ok", "parity": "error", "end_to_end": "timeout", "kernels": "ok", "extraction": "ok", "pytest": "ok",
        "pytest_triton": "ok"}
    assert sections["parity"]["error"] == "RuntimeError: injected failure" and "boom" in sections["parity"]["traceback"]
    assert sections["parity"]["results"]["fixtures"] == [{"case": "before the failure"}]
    assert sections["end_to_end"]["results"]["gaze"] == [{"workload": "finished before the cap"}]
    assert "time cap reached before the next case" in sections["end_to_end"]["error"]
    assert len(sections["kernels"]["results"]["rows"]) >= 6 and sections["environment"]["results"]["torch"]
    assert sections["pytest"]["results"]["counts"].get("skipped", 0) > 0
    md = (tmp_path / "gpu-check.md").read_text()
    assert "| parity | error |" in md and "| end_to_end | timeout |" in md and "| kernels | ok |" in md
    assert report["sections"]["parity"]["status"] == "error"


def test_hard_cap_interrupts_a_stuck_section(tmp_path, monkeypatch):
    def stuck(ctx, results):
        results["rows"] = ["started"]
        time.sleep(30)

    monkeypatch.setitem(SECTIONS, "kernels", stuck)
    monkeypatch.setattr(gpu_check, "HARD_CAP_GRACE_S", 0.0)
    start = time.perf_counter()
    report = run_check(tmp_path, device="cpu", quick=True, sections=["environment", "kernels"], caps={"kernels": 0.2})
    assert time.perf_counter() - start < 10
    assert report["sections"]["kernels"]["status"] == "timeout"
    assert report["sections"]["kernels"]["results"]["rows"] == ["started"]
    assert report["sections"]["environment"]["status"] == "ok"


def test_pytest_run_past_its_cap_is_stopped(tmp_path):
    report = run_check(tmp_path, device="cpu", quick=True, sections=["pytest"], caps={"pytest": 0.5},
                       pytest_args=["-q", "-p", "no:cacheprovider",
                                    "tests/gpu_check/test_gpu_check.py::test_parse_pytest_output"])
    entry = report["sections"]["pytest"]
    assert entry["status"] == "timeout" and entry["results"]["timed_out"]
    assert entry["results"]["summary"].startswith("timed out after")
    assert (tmp_path / "pytest-gpu.log").exists()


def test_triton_suite_runs_on_cuda_in_what_is_left(tmp_path, monkeypatch):
    """Section 6: without CUDA it only notes why; on CUDA (its device faked here, its pytest run
    replaced by a one-test run) it runs in its own log, or notes that the budget is spent."""
    report = run_check(tmp_path, device="cpu", quick=True, sections=["pytest_triton"])
    assert "CUDA only" in report["sections"]["pytest_triton"]["results"]["note"]
    monkeypatch.setattr(gpu_check, "TRITON_PYTEST_ARGS",
                        ["-q", "-p", "no:cacheprovider", "tests/gpu_check/test_gpu_check.py::test_parse_pytest_output"])
    ctx = gpu_check.CheckContext(torch.device("cuda"), gpu_check.PROFILES["quick"], gpu_check.DEFAULT_FIXTURES,
                                 tmp_path, {"meta": {}, "sections": {}}, time.perf_counter(), [])
    for left, ran in ((120.0, True), (5.0, False)):
        results: dict = {}
        ctx.deadline = time.perf_counter() + left
        gpu_check.pytest_triton_section(ctx, results)
        assert ("command" in results) == ran, results
    assert (tmp_path / "pytest-triton.log").exists()
    assert "not run" in results["note"]


def test_device_script_runs_the_check_without_pip(tmp_path):
    """bench/gpu_check_device.sh where pip cannot install the project (GPU_CHECK_LINK_ONLY=1): in a
    copy of the tree it links autogaze_fast/kernels and /reference, imports them from that copy, and
    writes the report and its logs under the folder it is given."""
    root = Path(__file__).resolve().parents[2]
    for name in ("autogaze_fast", "kernels", "reference"):
        shutil.copytree(root / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "bench").mkdir()
    shutil.copy(root / "bench" / "gpu_check_device.sh", tmp_path / "bench")
    env = dict(os.environ, GPU_CHECK_LINK_ONLY="1", PYTHON=sys.executable)
    done = subprocess.run(["bash", "bench/gpu_check_device.sh", "out", "--quick", "--sections", "environment"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (tmp_path / "out" / "device.log").read_text()
    assert f"imports {tmp_path / 'autogaze_fast' / 'kernels' / '__init__.py'}" in log, log
    written = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert written["sections"]["environment"]["status"] == "ok"
    assert (tmp_path / "out" / "gpu-check.log").read_text().strip().endswith("gpu-check.json")


def test_targets_table_judges_cuda_figures(quick):
    """The headline table: on a CUDA-profile report each figure is judged against its target (a
    missing one says so); in the CPU modes the same rows are filled and marked n/a."""
    _, written, md = quick
    assert "## Targets" in md and "n/a (CPU mode)" in md
    cpu_rows = {r[0]: r for r in target_rows(written)}
    assert cpu_rows["upstream fixtures: fast = reference = upstream (fp32)"][1:3] == [f"{len(FIXTURE_CASES)} of "
                                                                                     f"{len(FIXTURE_CASES)}", "all"]
    gaze = [{"impl": "reference", "dtype": "fp32", "case": "ratio0.75", "frames": 16, "median_ms": 900.0},
            {"impl": "fast+cuda_graphs", "dtype": "fp32", "case": "ratio0.75", "frames": 16, "median_ms": 25.0,
             "x_reference": 36.0, "x_fast_eager": 0.8}]
    siglip = [{"impl": "fast", "dtype": "fp32", "workload": "gazed~10%", "tokens": 320, "dense_tokens": 3136,
               "x_dense": 0.25},
              {"impl": "fast", "dtype": "fp32", "workload": "gazed", "tokens": 3168, "dense_tokens": 3136, "x_dense": 1.1}]
    kernels = [{"op": "sparse_attention", "shape": "a", "dtype": "bf16", "impl": "sdpa", "kernel_speedup": 1.4},
               {"op": "sparse_attention", "shape": "b", "dtype": "fp32", "impl": "sdpa", "kernel_speedup": 0.7},
               {"op": "decode_attention", "shape": "c", "dtype": "bf16", "impl": "sdpa", "kernel_speedup": 2.0}]
    report = {"meta": {"profile": "cuda"}, "sections": {
        "parity": {"results": {"fixtures": [{"ok": True}, {"ok": False}],
                               "clip": [{"dtype": "bf16", "impl": "fast+cuda_graphs", "case": "ratio0.75",
                                         "mask_iou_vs_fp32_reference": 0.99}]}},
        "end_to_end": {"results": {"gaze": gaze, "siglip": siglip}},
        "kernels": {"results": {"rows": kernels}},
        "pytest": {"results": {"command": "pytest -m gpu", "summary": "59 passed in 80s", "returncode": 0}}}}
    met = {r[0]: (r[1], r[3]) for r in target_rows(report)}
    graphs = "gaze 16 frames at ratio 0.75, fast + CUDA graphs, fp32: "
    assert met["upstream fixtures: fast = reference = upstream (fp32)"] == ("1 of 2", False)
    assert met[graphs + "median ms"] == (25.0, True)
    assert met[graphs + "x our reference"] == (36.0, True)
    assert met[graphs + "x fast eager (the graphs' gain)"] == (0.8, False)
    assert met["gazed SigLIP-B/16, 320 of 3,136 dense tokens, fast fp32: x dense 224"] == (0.25, False)
    assert met["gazed SigLIP-B/16, 3,168 of 3,136 dense tokens, fast fp32: x dense 224"] == (1.1, True)
    assert met["sparse_attention: torch op / kernel, worst shape (b, fp32, vs sdpa)"] == (0.7, False)
    assert met["decode_attention: torch op / kernel, worst shape (c, bf16, vs sdpa)"] == (2.0, True)
    assert met["bf16 gaze mask IoU vs the fp32 reference (fast+cuda_graphs, ratio 0.75, random weights)"] == (0.99, True)
    assert met["pytest -m gpu"] == ("59 passed in 80s", True)
    del report["sections"]["end_to_end"]
    assert [r[1:] for r in target_rows(report) if r[0].startswith("gaze ")][0] == ["not measured", "<= 30 ms", "no figure"]


def test_parse_pytest_output():
    text = ("..F.s\n=========== short test summary info ===========\n"
            "FAILED tests/test_x.py::test_a[fp32] - AssertionError: boom\n"
            "ERROR tests/test_y.py::test_b - RuntimeError\n"
            "==== 1 failed, 3 passed, 1 skipped, 600 deselected, 1 error in 12.34s ====\n")
    parsed = parse_pytest_output(text)
    assert parsed["summary"] == "1 failed, 3 passed, 1 skipped, 600 deselected, 1 error in 12.34s"
    assert parsed["counts"] == {"failed": 1, "passed": 3, "skipped": 1, "deselected": 600, "error": 1}
    assert parsed["failures"] == ["FAILED tests/test_x.py::test_a[fp32] - AssertionError: boom",
                                  "ERROR tests/test_y.py::test_b - RuntimeError"]


def test_cli_writes_the_report_and_refuses_unknown_sections(tmp_path, capsys):
    assert main(["gpu-check", "--out", str(tmp_path / "r"), "--quick", "--device", "cpu", "--sections", "environment"]) == 0
    assert json.loads((tmp_path / "r" / "gpu-check.json").read_text())["sections"]["environment"]["status"] == "ok"
    assert "wrote" in capsys.readouterr().out
    assert main(["gpu-check", "--out", str(tmp_path / "s"), "--quick", "--sections", "environment,gpus"]) == 2
    assert "unknown sections ['gpus']" in capsys.readouterr().err


def test_flex_attention_target_rows():
    """The FlexAttention rows of the kernels section (issue 21) become one target row per mode; in the
    CPU modes (no such rows) the target says where the CPU comparison lives."""
    rows = [{"op": "flex_attention", "shape": "N 3168, block-causal, fwd", "dtype": "bf16", "impl": "triton"},
            {"op": "flex_attention", "shape": "N 3168, block-causal, fwd", "dtype": "bf16", "impl": "flex+mask",
             "kernel_speedup": 1.6},
            {"op": "flex_attention", "shape": "N 3168, block-causal, fwd", "dtype": "bf16", "impl": "flex",
             "kernel_speedup": 0.9},
            {"op": "flex_attention", "shape": "N 3168, block-causal, fwd+bwd", "dtype": "bf16", "impl": "flex+mask",
             "kernel_speedup": 0.8},
            {"op": "sparse_attention", "shape": "s", "dtype": "bf16", "impl": "sdpa", "kernel_speedup": 3.0}]
    report = {"meta": {"profile": "cuda"}, "sections": {"kernels": {"results": {"rows": rows}}}}
    met = {r[0]: (r[1], r[3]) for r in target_rows(report)}
    flex = "block-causal attention vs FlexAttention, "
    assert met[flex + "fwd (N 3168, block-causal, fwd, bf16): flex (mask built per call) / ours"] == (1.6, True)
    assert met[flex + "fwd+bwd (N 3168, block-causal, fwd+bwd, bf16): flex (mask built per call) / ours"] == (0.8, False)
    assert met["sparse_attention: torch op / kernel, worst shape (s, bf16, vs sdpa)"] == (3.0, True)
    assert not any(k.startswith("flex_attention") for k in met)  # not in the generic kernel rows
    report["meta"]["profile"] = "cpu"
    del report["sections"]["kernels"]
    met = {r[0]: (r[1], r[3]) for r in target_rows(report)}
    assert met[flex + "fwd: flex (mask built per call) / ours"] == ("CUDA only (CPU: bench/bench_flex_attention.py)",
                                                                   "n/a (CPU mode)")


@pytest.mark.slow
def test_flex_cases_forced_on_cpu(tmp_path):
    """The FlexAttention rows' builder, forced onto the CPU (forward only: FlexAttention has no CPU
    backward; CUDA adds the forward + backward case): our row (the CPU path) and compiled
    FlexAttention, mask built per call and prebuilt, all match the dense oracle."""
    from autogaze_fast.gpu_check.context import PROFILES, CheckContext
    from autogaze_fast.gpu_check.kernels import _run_case, flex_cases

    ctx = CheckContext(torch.device("cpu"), PROFILES["quick"], tmp_path, tmp_path, {"meta": {}}, time.perf_counter(), [])
    assert flex_cases(ctx, torch.float32) == []  # not forced: CUDA only
    rows: list = []
    for case in flex_cases(ctx, torch.float32, force=True):
        _run_case(ctx, case, "fp32", torch.float32, rows)
    assert [r["impl"] for r in rows] == ["twin", "flex+mask", "flex"]
    assert all(r["within_tol"] and r["median_ms"] > 0 for r in rows), rows
    assert "first call (compile)" in rows[1]["note"] and rows[1]["kernel_speedup"] > 0
