"""The gazed MAE task on CPU, reference vs fast, in one run: forward (no grad) and forward + backward.

The fast path must never be slower than its oracle where training uses it. Workload: the tiny MAE of
tests/fixtures/upstream_train/mae_tiny (scales 32+64+112+224, l1 loss, half of the frames
reconstructed) on seeded noise clips, a random gaze of 198 of the 265 tokens per frame (ratio 0.75)
in which every other row stops early in some frames (pads), so the masked spans are timed too.
Cases: 8 rows x 16 frames (a GRPO step's group 4 x batch 2), 2 x 16 and 2 x 4. Reference and fast
alternate round by round (load on a shared machine hits both alike); best-of and median per side.

Run: ``OMP_NUM_THREADS=1 python bench/bench_mae.py [--rounds 3]``; writes bench/results/mae_train.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("TRITON_INTERPRET", "0")

ROOT = Path(__file__).resolve().parents[1]
MAE_DIR = ROOT / "tests" / "fixtures" / "upstream_train" / "mae_tiny"
RESULTS = ROOT / "bench" / "results"
CASES = ((8, 16), (2, 16), (2, 4))
KEPT, TOKENS = 198, 265  # gazed tokens per frame, tokens per frame of the four scales


def make_gaze(rows: int, frames: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random gaze of ``KEPT`` distinct tokens per frame; odd rows pad the tail of every third frame."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.stack([torch.stack([torch.randperm(TOKENS, generator=g)[:KEPT] + t * TOKENS for t in range(frames)])
                       for _ in range(rows)]).reshape(rows, frames * KEPT)
    pads = torch.zeros(rows, frames, KEPT, dtype=torch.bool)
    pads[1::2, ::3, KEPT // 2:] = True
    return {"gazing_pos": pos, "if_padded_gazing": pads.reshape(rows, -1),
            "num_gazing_each_frame": torch.full((frames,), KEPT)}


def run_case(rows: int, frames: int, rounds: int) -> dict:
    from autogaze_fast.train import MAEReconstructionTask

    tasks = {impl: MAEReconstructionTask.from_pretrained(MAE_DIR, scales="32+64+112+224", max_num_frames=16,
                                                         loss_type="l1", loss_weights="1", recon_sample_rate=0.5,
                                                         impl=impl).train() for impl in ("reference", "fast")}
    video = torch.randn(rows, frames, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    gaze, frame_idx = make_gaze(rows, frames), list(range(0, frames, 2))
    times = {(impl, phase): [] for impl in tasks for phase in ("forward", "forward+backward")}
    losses = {}
    for r in range(rounds + 1):  # round 0 warms up
        for impl, task in tasks.items():
            task.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            with torch.no_grad():
                task(video, gaze, frame_idx=frame_idx)
            t1 = time.perf_counter()
            loss = task(video, gaze, frame_idx=frame_idx).loss.mean()
            loss.backward()
            t2 = time.perf_counter()
            losses[impl] = float(loss)
            if r:
                times[impl, "forward"].append(t1 - t0)
                times[impl, "forward+backward"].append(t2 - t1)
    out = {"rows": rows, "frames": frames, "loss_difference": abs(losses["fast"] - losses["reference"])}
    for phase in ("forward", "forward+backward"):
        ref, fast = times["reference", phase], times["fast", phase]
        out[phase] = {"reference": {"best": min(ref), "median": statistics.median(ref), "all": ref},
                      "fast": {"best": min(fast), "median": statistics.median(fast), "all": fast},
                      "speedup_best": min(ref) / min(fast), "speedup_median": statistics.median(ref) / statistics.median(fast)}
    return out


def write_report(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mae_train.json").write_text(json.dumps(result, indent=1))
    lines = ["# Gazed MAE task on CPU: reference vs fast, same run", "",
             f"Tiny MAE (l1, half the frames reconstructed), ratio-0.75 random gaze with pads. {result['rounds']} "
             f"alternating round(s) after one warm-up; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
             f"{result['machine']}.", "",
             "| rows x frames | phase | reference best (s) | fast best (s) | speed-up (best) | speed-up (median) |",
             "|---|---|---|---|---|---|"]
    for case in result["cases"]:
        for phase in ("forward", "forward+backward"):
            c = case[phase]
            lines.append(f"| {case['rows']} x {case['frames']} | {phase} | {c['reference']['best']:.3f} | "
                         f"{c['fast']['best']:.3f} | {c['speedup_best']:.2f}x | {c['speedup_median']:.2f}x |")
    lines += ["", "forward: no grad (the task under GRPO without train_task); forward+backward: the loss with its "
              "graph, then backward (train_task).", f"Largest loss difference fast vs reference: "
              f"{max(c['loss_difference'] for c in result['cases']):.1e}.",
              "Figures from a shared, loaded CPU are indicative; rerun on an idle machine for the record.", ""]
    (RESULTS / "mae_train.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per side (after one warm-up)")
    args = parser.parse_args(argv)
    cases = [run_case(rows, frames, args.rounds) for rows, frames in CASES]
    result = {"rounds": args.rounds, "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}",
              "cases": cases}
    write_report(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
