"""A tiny training dataset in upstream's layout, made from the built-in synthetic clips (smoke runs, tests).

``make_training_data(OUT)`` writes::

    OUT/<name>/train/video_0000.mp4 …   (``videos`` clips of ``frames`` frames, size × size)
    OUT/<name>/val/video_0000.mp4 …     (``val_videos`` clips, other seeds)
    OUT/gazing_labels.json              {"<name>/train/<file>": {"gazing_pos": [...], "task_losses": [...]}}
    OUT/val_gazing_labels.json          the same for the val clips (``data.val_labels``)

which ``autogaze-fast train data.root=OUT/<name> data.labels=OUT/gazing_labels.json data.clip_len=<frames>``
reads (see :mod:`autogaze_fast.train.data` for the label format). Everything is written into a
temporary sibling folder and renamed to ``OUT`` at the end, so an interrupted run leaves no half dataset.

The labels are a heuristic, not upstream's (upstream searched gaze sequences against its MAE): per frame,
a saliency map (frame 0: gradient magnitude; later frames: the absolute change from the previous frame)
is covered greedily by multi-scale cells; each step takes the cell with the largest uncovered saliency
mass times ``scale / largest scale`` (a coarse cell sees its area at a lower resolution), until
``gazing_ratio · N`` cells are taken or 95 % of the mass is covered (at least one cell a frame). The
task loss after each gaze is the uncovered fraction of the frame's saliency, so it falls towards 0 as
the real one does. Positions are whole-clip (frame t's in ``[N t, N (t + 1))``), scales ascending and
each scale's cells row-major, as the gaze model counts them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from autogaze_fast.checks import check_int
from autogaze_fast.config import parse_scales, patch_tokens_per_scale
from autogaze_fast.media.synthetic import synthetic_clip
from autogaze_fast.media.video import current_umask, write_video

__all__ = ["TrainingData", "heuristic_gaze_label", "make_training_data"]

#: Stop gazing a frame once this fraction of its saliency is covered.
COVERAGE = 0.95


@dataclass
class TrainingData:
    """What :func:`make_training_data` wrote: ``root`` (``data.root``), ``labels`` / ``val_labels``
    (``data.labels`` / ``data.val_labels``), ``clip_len`` (``data.clip_len``), the video count per split
    and the mean gazes per frame of the labels."""

    root: Path
    labels: Path
    val_labels: Path
    clip_len: int
    num_train: int
    num_val: int
    mean_gazes_per_frame: float


def _saliency(frames: np.ndarray, side: int) -> np.ndarray:
    """(T, H, W, 3) uint8 → (T, side, side) float64 ≥ 0: frame 0's gradient magnitude, later frames' change."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).double() / 255.0
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    gray = x.mean(dim=1)
    first = gray[0]
    grad = torch.zeros_like(first)
    grad[:, 1:] += (first[:, 1:] - first[:, :-1]).abs()
    grad[1:, :] += (first[1:, :] - first[:-1, :]).abs()
    change = (x[1:] - x[:-1]).abs().mean(dim=1)
    return torch.cat([grad[None], change]).numpy()


def _cells(scales: list[int], patch_size: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Every token of a frame in gaze order: its pixel box (y0, y1, x0, x1) on the side × side map, and
    its weight ``scale / side``."""
    boxes, weights = [], []
    for s in scales:
        g = s // patch_size
        edges = [round(i * side / g) for i in range(g + 1)]
        for i in range(g):
            for j in range(g):
                boxes.append((edges[i], edges[i + 1], edges[j], edges[j + 1]))
                weights.append(s / side)
    return np.array(boxes, dtype=np.int64), np.array(weights)


def _box_sums(integral: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    y0, y1, x0, x1 = boxes.T
    return integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]


def heuristic_gaze_label(frames: np.ndarray, scales: str | list[int] = "32+64+112+224", patch_size: int = 16,
                         gazing_ratio: float = 0.1) -> dict[str, list[list]]:
    """A ground-truth-style gaze of a clip (module docstring), in ``gazing_labels.json``'s entry format.

    Args:
        frames: (T, H, W, 3) uint8.
        scales, patch_size: the gaze model's token layout (N = Σ (s / patch_size)², 265 by default).
        gazing_ratio: at most ``max(1, int(gazing_ratio · N))`` gazes a frame.
    Returns:
        ``{"gazing_pos": [[int, ...] per frame], "task_losses": [[float, ...] per frame]}``.
    """
    scales = parse_scales(scales)
    n = sum(patch_tokens_per_scale(scales, patch_size))
    if not 0 < gazing_ratio <= 1:
        raise ValueError(f"gazing_ratio must be in (0, 1], got {gazing_ratio}")
    budget = max(1, int(gazing_ratio * n))
    side = scales[-1]
    boxes, weights = _cells(scales, patch_size, side)
    positions, losses = [], []
    for t, score in enumerate(_saliency(frames, side)):
        total = float(score.sum())
        covered = np.zeros_like(score, dtype=bool)
        chosen: list[int] = []
        frame_losses: list[float] = []
        while len(chosen) < budget:
            integral = np.zeros((side + 1, side + 1))
            integral[1:, 1:] = np.where(covered, 0.0, score).cumsum(0).cumsum(1)
            gain = _box_sums(integral, boxes) * weights
            gain[chosen] = -1.0
            k = int(np.argmax(gain))
            y0, y1, x0, x1 = boxes[k]
            covered[y0:y1, x0:x1] = True
            chosen.append(k)
            left = float(np.where(covered, 0.0, score).sum()) / total if total > 0 else 0.0
            frame_losses.append(round(left, 6))
            if left <= 1 - COVERAGE:
                break
        positions.append([n * t + k for k in chosen])
        losses.append(frame_losses)
    return {"gazing_pos": positions, "task_losses": losses}


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a file" if not out.is_dir() else "a folder that is not empty"
        raise FileExistsError(f"{out} is {what}; give a new or empty folder for the training data (nothing was "
                              "written)")


def make_training_data(out: str | os.PathLike, videos: int = 8, val_videos: int = 2, frames: int = 4,
                       size: int = 64, seed: int = 0, name: str = "synthetic", scales: str = "32+64+112+224",
                       patch_size: int = 16, gazing_ratio: float = 0.1, fps: float = 8.0,
                       progress: bool = True) -> TrainingData:
    """Write a tiny synthetic dataset + ``gazing_labels.json`` under ``out`` (module docstring).

    Args:
        out: a new or empty folder.
        videos, val_videos: clips in ``train/`` (≥ 1) and ``val/`` (≥ 1).
        frames: frames per clip (the training run's ``data.clip_len``), ≥ 1.
        size: frame side in pixels (square clips), ≥ 8.
        seed: clip ``i`` of train uses seed ``seed · 100003 + i``, of val ``… + videos + i``.
        name: the dataset folder's name (the labels' first key part).
        scales, patch_size, gazing_ratio: the label layout (:func:`heuristic_gaze_label`).
        progress: a tqdm bar over the clips.
    Raises:
        FileExistsError: ``out`` is a file or a non-empty folder.
        ValueError: a bad count, size or name.
    """
    out = Path(out)
    videos = check_int(videos, "videos", message=f"--videos must be an int >= 1, got {videos!r}")
    val_videos = check_int(val_videos, "val_videos", message=f"--val-videos must be an int >= 1, got {val_videos!r}")
    frames = check_int(frames, "frames", message=f"--frames must be an int >= 1, got {frames!r}")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"--size must be an int >= 8 (pixels), got {size!r}")
    seed = check_int(seed, "seed", minimum=0, message=f"--seed must be an int >= 0, got {seed!r}")
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"--name must be a plain folder name, got {name!r}")
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        staging.chmod(0o777 & ~current_umask())  # mkdtemp's folder is private; OUT gets the usual permissions
        jobs = [("train", i, seed * 100003 + i) for i in range(videos)]
        jobs += [("val", i, seed * 100003 + videos + i) for i in range(val_videos)]
        bar = None
        if progress:
            from tqdm import tqdm  # deferred: tqdm is only needed for the progress bar

            bar = tqdm(total=len(jobs), desc="training clips", unit="clip")
        labels: dict[str, dict[str, dict]] = {"train": {}, "val": {}}
        counts: list[int] = []
        for split, i, clip_seed in jobs:
            folder = staging / name / split
            folder.mkdir(parents=True, exist_ok=True)
            file = f"video_{i:04d}.mp4"
            clip = synthetic_clip(frames, size=size, seed=clip_seed)
            write_video(folder / file, clip, fps=fps)
            label = heuristic_gaze_label(clip, scales, patch_size, gazing_ratio)
            labels[split][f"{name}/{split}/{file}"] = label
            counts += [len(f) for f in label["gazing_pos"]]
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        (staging / "gazing_labels.json").write_text(json.dumps(labels["train"]))
        (staging / "val_gazing_labels.json").write_text(json.dumps(labels["val"]))
        _check_out(out)  # nobody filled it meanwhile
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return TrainingData(out / name, out / "gazing_labels.json", out / "val_gazing_labels.json", frames, videos, val_videos,
                        float(np.mean(counts)))
