"""One GRPO step, ours vs upstream's code, in one run: rollout / task / update.

Workload (issue 11): group 4 × batch 2 (8 rollouts), 16-frame 224 × 224 clips (seeded noise), the
NVIDIA-shaped gaze model (``presets.random_autogaze(0)``: hidden 192, 4 layers, K = 10, N = 265,
gazing ratio 0.75 from its config, sampled at temperature 1 in ``train()`` mode) and the tiny MAE of
tests/fixtures/upstream_train/mae_tiny (l1 loss, half of the frames reconstructed), upstream's
default trainer flags (``train_gaze`` and ``train_task``: the reconstruction loss trains the MAE too).

* rollout — sampling the gaze of the 8 rows (no grad);
* task — the MAE forward, per-frame losses, rewards and per-token task losses;
* update — the teacher-forced forward (log-probabilities with grad), the GRPO loss and ``backward``
  (no optimiser step: it is the same few Adam lines on both sides).

Ours: :func:`autogaze_fast.train.grpo_step` (``impl="fast"``) then ``loss.backward()``. Upstream:
its ``AutoGaze`` (``generate_only`` call, then the ``gazing_info`` call — the two halves of its
``forward``), ``VideoMAEReconstruction`` and ``GRPO``, same weights, run by a separate runner script in
a scratch venv that holds upstream (``--upstream-python``, ``--upstream-runner``: never imported here);
the two sides alternate round by round so load on a shared machine hits both alike. Without the runner
only our side is timed.

Run: ``OMP_NUM_THREADS=1 python bench/bench_train_step.py [--rounds 2]``; writes
bench/results/train_step.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("TRITON_INTERPRET", "0")

ROOT = Path(__file__).resolve().parents[1]
MAE_DIR = ROOT / "tests" / "fixtures" / "upstream_train" / "mae_tiny"
RESULTS = ROOT / "bench" / "results"
GROUP, BATCH, FRAMES, RECON_RATE = 4, 2, 16, 0.5
PHASES = ("rollout", "task", "update", "step")


def make_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(video, video_for_task): seeded noise clips (B, T, 3, 224, 224) and the MAE's stand-in input."""
    video = torch.randn(BATCH, FRAMES, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    return video, video * 0.5


class Ours:
    """Our GRPO step (fast impl)."""

    def __init__(self, impl: str = "fast"):
        from autogaze_fast.presets import random_autogaze
        from autogaze_fast.train import MAEReconstructionTask, TrainBatch

        self.model = random_autogaze(0, impl=impl).train()
        self.task = MAEReconstructionTask.from_pretrained(MAE_DIR, scales="32+64+112+224", max_num_frames=16,
                                                          loss_type="l1", loss_weights="1",
                                                          recon_sample_rate=RECON_RATE, impl=impl).train()
        self.batch = TrainBatch(*make_inputs())

    def run(self, seed: int) -> dict:
        from autogaze_fast.train import grpo_step

        self.model.zero_grad(set_to_none=True)
        self.task.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        result = grpo_step(self.model, self.task, self.batch, group_size=GROUP, temperature=1.0, seed=seed,
                           train_task=True)
        start = time.perf_counter()
        result.loss.backward()
        backward = time.perf_counter() - start
        t = result.timings
        return {"rollout": t["rollout"], "task": t["task"], "update": t["loss"] + backward, "loss": float(result.loss),
                "tokens": int((~result.rollout.if_padded_gazing).sum())}


class Upstream:
    """Upstream's step in a subprocess of its own venv (line protocol: ``run SEED`` → one JSON line)."""

    def __init__(self, python: str, runner: str, model: torch.nn.Module, workdir: Path):
        from safetensors.torch import save_file

        from autogaze_fast.presets import nvidia_autogaze_config_dict

        (workdir / "gaze_config.json").write_text(json.dumps(nvidia_autogaze_config_dict()))
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(workdir / "gaze.safetensors"))
        video, video_for_task = make_inputs()
        torch.save({"video": video, "video_for_task": video_for_task}, workdir / "video.pt")
        (workdir / "options.json").write_text(json.dumps({"group_size": GROUP, "recon_sample_rate": RECON_RATE}))
        self.proc = subprocess.Popen([python, runner, str(workdir), str(MAE_DIR)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env={**os.environ})
        hello = self._read()
        if not hello.get("ready"):
            raise RuntimeError(f"upstream runner did not start: {hello}")

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("upstream runner exited (see its stderr above)")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, seed: int) -> dict:
        self.proc.stdin.write(f"run {seed}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def summarise(rounds: list[dict]) -> dict:
    out = {}
    for phase in PHASES:
        values = [r["rollout"] + r["task"] + r["update"] if phase == "step" else r[phase] for r in rounds]
        out[phase] = {"best": min(values), "median": statistics.median(values), "all": values}
    out["gazed_tokens"] = [r["tokens"] for r in rounds]
    return out


def write_report(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_step.json").write_text(json.dumps(result, indent=1))
    lines = ["# One GRPO step: ours (fast) vs upstream's code, same run", "",
             f"Group {GROUP} x batch {BATCH} (8 rollouts), {FRAMES} frames 224x224, NVIDIA-shaped gaze model "
             "(seeded random weights, ratio 0.75 from its config), tiny MAE (l1, half the frames), train_gaze + "
             f"train_task. {result['rounds']} alternating round(s) after one warm-up each; "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; {result['machine']}.", ""]
    ours, up = result["ours"], result.get("upstream")
    if up is None:
        lines += ["Upstream runner not available: our side only.", ""]
    lines += ["| phase | ours best (s) | ours median (s) | upstream best (s) | upstream median (s) "
              "| speed-up (best) | speed-up (median) |",
              "|---|---|---|---|---|---|---|"]
    for phase in PHASES:
        o = ours[phase]
        if up is None:
            lines.append(f"| {phase} | {o['best']:.2f} | {o['median']:.2f} | - | - | - | - |")
        else:
            u = up[phase]
            lines.append(f"| {phase} | {o['best']:.2f} | {o['median']:.2f} | {u['best']:.2f} | {u['median']:.2f} | "
                         f"{u['best'] / o['best']:.2f}x | {u['median'] / o['median']:.2f}x |")
    lines += ["", f"Gazed tokens per round (8 rollouts): ours {ours['gazed_tokens']}"
              + (f", upstream {up['gazed_tokens']}" if up else ""), "",
              "update = teacher-forced forward + GRPO loss + backward (gaze model and MAE); no optimiser step.",
              "Figures from a shared, loaded CPU are indicative; rerun on an idle machine for the record.", ""]
    (RESULTS / "train_step.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per side (after one warm-up each)")
    parser.add_argument("--upstream-python", default="/tmp/train-mae-venv/bin/python")
    parser.add_argument("--upstream-runner", default="/tmp/train-steps-gen/upstream_step_runner.py")
    parser.add_argument("--no-upstream", action="store_true", help="time our side only")
    parser.add_argument("--no-warmup", action="store_true")
    args = parser.parse_args(argv)

    ours = Ours()
    upstream = None
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_upstream and Path(args.upstream_python).exists() and Path(args.upstream_runner).exists():
            upstream = Upstream(args.upstream_python, args.upstream_runner, ours.model, Path(tmp))
        sides = [("ours", ours)] + ([("upstream", upstream)] if upstream else [])
        timed: dict[str, list[dict]] = {name: [] for name, _ in sides}
        try:
            if not args.no_warmup:
                for name, side in sides:
                    print(name, "warm-up", side.run(100), flush=True)
            for i in range(args.rounds):
                for name, side in sides:
                    r = side.run(i)
                    print(name, "round", i, r, flush=True)
                    timed[name].append(r)
        finally:
            if upstream:
                upstream.close()
    import platform

    result = {"rounds": args.rounds, "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}",
              "ours": summarise(timed["ours"])}
    if upstream:
        result["upstream"] = summarise(timed["upstream"])
        result["speedup_best"] = {p: result["upstream"][p]["best"] / result["ours"][p]["best"] for p in PHASES}
        result["speedup_median"] = {p: result["upstream"][p]["median"] / result["ours"][p]["median"] for p in PHASES}
    write_report(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
