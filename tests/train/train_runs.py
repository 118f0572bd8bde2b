"""Tiny datasets and run arguments for the trainer tests (tiny_k10 gaze model, the tiny upstream MAE).

The dataset root ``ds`` holds ``train/`` (4 videos) and ``val/`` (2 videos) of 6 frames, 48 × 48; the
labels JSON gives every video a ground-truth gaze of 1–2 positions per frame over ``clip_len`` frames,
in upstream's format (whole-clip positions, one task loss each).
"""

from __future__ import annotations

import json
from pathlib import Path

from autogaze_fast.media.synthetic import synthetic_clip
from autogaze_fast.media.video import write_video

FIXTURES = Path(__file__).parents[1] / "fixtures"
GAZE = FIXTURES / "upstream" / "tiny_k10"
MAE = FIXTURES / "upstream_train" / "mae_tiny"
N = 265  # tokens per frame of tiny_k10 / mae_tiny (32+64+112+224 at patch 16)
CLIP_LEN = 2


def label_for(i: int, clip_len: int = CLIP_LEN) -> dict:
    """Video ``i``'s label: frame t gazes 1 or 2 whole-clip positions in [N t, N (t + 1))."""
    pos = [[N * t + (3 * i + 7 * t) % N, N * t + 100 + i][: 1 + (i + t) % 2] for t in range(clip_len)]
    return {"gazing_pos": pos, "task_losses": [[0.5, 0.25][: len(f)] for f in pos]}


def make_dataset(folder: Path, train: int = 4, val: int = 2, clip_len: int = CLIP_LEN) -> tuple[Path, Path]:
    """Write ``folder/ds/{train,val}/v*.mp4`` and ``folder/labels.json``; returns (root, labels)."""
    root = folder / "ds"
    labels = {}
    for split, count, offset in (("train", train, 0), ("val", val, 100)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            write_video(root / split / f"v{i}.mp4", synthetic_clip(6, size=(48, 48), seed=offset + i), fps=8)
            labels[f"ds/{split}/v{i}.mp4"] = label_for(offset + i, clip_len)
    path = folder / "labels.json"
    path.write_text(json.dumps(labels))
    return root, path


def ntp_args(root: Path, labels: Path, out: Path, steps: int = 2) -> list[str]:
    return [f"model.checkpoint={GAZE}", f"data.root={root}", f"data.labels={labels}", f"data.clip_len={CLIP_LEN}",
            "algorithm.name=ntp", "algorithm.optimize_task_loss_prediction=true", "optim.global_batch=2",
            "optim.micro_batch=1", f"optim.steps={steps}", "optim.warmup_steps=1", f"run.out_dir={out}",
            "run.device=cpu", "run.progress=false", "run.val_every=0"]


def grpo_args(root: Path, out: Path, steps: int = 2, micro_batch: int = 1, save_every: int = 500,
              keep_last: int = 2, global_batch: int = 2) -> list[str]:
    return [f"model.checkpoint={GAZE}", f"data.root={root}", f"data.clip_len={CLIP_LEN}", "algorithm.name=grpo",
            "algorithm.group_size=2", "algorithm.discount_factor=0.9", "algorithm.optimize_task_loss_prediction=true",
            f"task.recon_model={MAE}", "task.recon_sample_rate=0.5", "model.gazing_ratio=0.1",
            f"optim.global_batch={global_batch}", f"optim.micro_batch={micro_batch}", f"optim.steps={steps}",
            "optim.warmup_steps=1",
            "optim.lr=1e-3", f"run.save_every={save_every}", f"run.keep_last={keep_last}", f"run.out_dir={out}",
            "run.device=cpu", "run.progress=false", "run.val_every=0", "data.random_sample_frame=true"]
