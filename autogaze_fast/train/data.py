"""Training data: video folders → 16-frame clips (+ ground-truth gazing labels for NTP), batched by step.

Layout as upstream's ``VideoFolder``: each dataset root holds ``train/`` and ``val/`` folders of
videos (sorted by name). A video's id is the last three parts of its path
(``InternVid_res448_250K/train/xxx.mp4``), the key of upstream's ``gazing_labels.json``::

    {"<root name>/<split>/<file>": {"gazing_pos": [[p, ...] per frame], "task_losses": [[l, ...] per frame]}}

``gazing_pos`` are whole-clip positions (frame t's lie in ``[N·t, N·(t+1))``, ``N`` tokens a frame),
one ``task_losses`` value per position. A batch pads every frame's list to the batch's longest + 1
(the eos slot) with ``-1`` (losses with the frame's last value), as upstream's ``collate_fn``.

Frames: ``clip_len`` frames at ``frame_sample_rate`` from the start (or a random start, drawn from
a generator seeded by (seed, epoch, video) so runs repeat), short videos padded with their last frame;
the gaze model's copy is preprocessed with its own processor resized to the MAE's largest scale
(upstream: shortest edge 224), the task's copy with the MAE's processor.

Bad input never stops a run hours in: a missing folder, a labels file naming no video of the
split, or malformed labels raise a ValueError at start; labels for absent videos, videos without
labels and videos whose header cannot be read are logged and left out at start; a video that fails
to decode later is logged and replaced by the next readable one (deterministically).
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from autogaze_fast.checks import is_integer
from autogaze_fast.media.video import read_video, video_info

log = logging.getLogger("autogaze_fast.train")

__all__ = ["ClipDataset", "GazeLabel", "StepBatchSampler", "collate_clips", "label_key", "list_split_videos",
           "load_labels", "sample_frame_indices"]

#: How many following videos a failed decode may try before giving up with an error.
MAX_SUBSTITUTES = 32


def label_key(path: str | os.PathLike) -> str:
    """The last three parts of a video path, ``root_name/split/file`` (upstream's label key)."""
    parts = Path(path).as_posix().split("/")
    return "/".join(parts[-3:]) if len(parts) >= 3 else Path(path).as_posix()


def list_split_videos(roots: str | Sequence[str], split: str, video_ext: str = ".mp4") -> list[Path]:
    """Every ``*video_ext`` file of ``<root>/<split>/`` for each root, in root order, names sorted.

    Raises:
        FileNotFoundError: a root or its split folder does not exist.
        ValueError: no video at all.
    """
    roots = [r.strip() for r in roots.split(",")] if isinstance(roots, str) else list(roots)
    found: list[Path] = []
    for root in roots:
        if not root:
            continue
        folder = Path(os.path.expanduser(root)) / split
        if not Path(os.path.expanduser(root)).is_dir():
            raise FileNotFoundError(f"data.root: no dataset folder at {root}")
        if not folder.is_dir():
            raise FileNotFoundError(f"data.root: {root} has no '{split}/' folder (each root needs train/ and val/ "
                                    "sub-folders of videos)")
        found += [folder / name for name in sorted(os.listdir(folder)) if name.endswith(video_ext)
                  and (folder / name).is_file()]
    if not found:
        raise ValueError(f"no '{video_ext}' video in the '{split}/' folder of {', '.join(roots)}")
    return found


@dataclass(frozen=True)
class GazeLabel:
    """One video's ground-truth gaze: per frame, whole-clip positions and their task losses."""

    gazing_pos: tuple[tuple[int, ...], ...]
    task_losses: tuple[tuple[float, ...], ...]


def _label_files(paths: str) -> list[Path]:
    files: list[Path] = []
    for item in (p.strip() for p in paths.split(",")):
        if not item:
            continue
        if glob.has_magic(item):
            matched = sorted(glob.glob(os.path.expanduser(item)))
            if not matched:
                raise FileNotFoundError(f"data.labels: the glob {item!r} matches no file")
            files += [Path(m) for m in matched]
        else:
            path = Path(os.path.expanduser(item))
            if not path.is_file():
                raise FileNotFoundError(f"data.labels: no gazing labels file at {path}")
            files.append(path)
    return files


def _check_label(key: str, entry: Any, clip_len: int, tokens_per_frame: int, where: Path) -> GazeLabel:
    if not isinstance(entry, dict) or "gazing_pos" not in entry:
        raise ValueError(f"{where}: the label of {key!r} must be an object with 'gazing_pos' (and 'task_losses') "
                         "lists, one list per frame")
    pos, losses = entry["gazing_pos"], entry.get("task_losses")
    if not isinstance(pos, list) or len(pos) != clip_len or not all(isinstance(f, list) for f in pos):
        raise ValueError(f"{where}: the label of {key!r} must hold {clip_len} per-frame position lists "
                         f"(data.clip_len), got {len(pos) if isinstance(pos, list) else type(pos).__name__}")
    if losses is None:
        losses = [[0.0] * len(f) for f in pos]
    if not isinstance(losses, list) or [len(f) if isinstance(f, list) else -1 for f in losses] != [len(f) for f in pos]:
        raise ValueError(f"{where}: the label of {key!r} needs one task_losses value per gazing position, "
                         "frame by frame")
    for t, frame in enumerate(pos):
        low, high = tokens_per_frame * t, tokens_per_frame * (t + 1)
        bad = [p for p in frame if not is_integer(p) or not low <= p < high]
        if bad:
            raise ValueError(f"{where}: frame {t} of {key!r} has positions {bad[:5]} outside [{low}, {high}): label "
                             f"positions are whole-clip (frame t's in [N*t, N*(t+1)), N = {tokens_per_frame})")
    return GazeLabel(tuple(tuple(f) for f in pos), tuple(tuple(float(x) for x in f) for f in losses))


def load_labels(paths: str, clip_len: int, tokens_per_frame: int) -> dict[str, GazeLabel]:
    """Read upstream-format gazing labels (comma-separated files or globs; later files win on a repeated key),
    keyed by :func:`label_key`. Every entry is checked now, so a bad one fails at start naming the video."""
    labels: dict[str, GazeLabel] = {}
    for path in _label_files(paths):
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"data.labels: {path} is not readable JSON ({type(e).__name__}: {e})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"data.labels: {path} must map video paths to labels, got {type(raw).__name__}")
        for key, entry in raw.items():
            labels[label_key(key)] = _check_label(key, entry, clip_len, tokens_per_frame, path)
    return labels


def sample_frame_indices(clip_len: int, frame_sample_rate: int, num_frames: int,
                         rng: np.random.Generator | None = None) -> np.ndarray:
    """Upstream's clip sampling: ``clip_len`` indices spread over ``clip_len · rate`` frames from the start
    (a random start when ``rng`` is given); a shorter video gives its frames, the last one repeated."""
    span = int(clip_len * frame_sample_rate)
    if num_frames <= span:
        idx = np.arange(min(clip_len, num_frames))
        return np.pad(idx, (0, clip_len - len(idx)), mode="edge").astype(np.int64)
    if rng is not None:
        end = int(rng.integers(span, num_frames))
        start = end - span
    else:
        start, end = 0, span
    idx = np.linspace(start, end, num=clip_len)
    return np.clip(idx, start, end - 1).astype(np.int64)


class ClipDataset(Dataset):
    """One split's clips. ``dataset[(index, epoch)]`` (or ``dataset[index]``) returns a dict:

    ``video`` (T, 3, S, S) float32 for the gaze model, ``video_for_task`` (T, 3, S, S) for the MAE when a
    task processor is given, ``label`` (:class:`GazeLabel` or None), ``index`` (the video actually read)
    and ``video_id``.

    Args:
        videos: the split's video files (:func:`list_split_videos`).
        gaze_processor / task_processor: ``AutoGazeImageProcessor``s (task: None for NTP without a task).
        clip_len, frame_sample_rate, random_sample_frame, seed: clip sampling.
        labels: from :func:`load_labels`; when given, videos without a label are left out (logged).
        check_videos: open every header now; unreadable videos are left out (logged).
    """

    def __init__(self, videos: Sequence[Path], gaze_processor, task_processor=None, *, clip_len: int = 16,
                 frame_sample_rate: int = 1, random_sample_frame: bool = False, seed: int = 0,
                 labels: dict[str, GazeLabel] | None = None, check_videos: bool = True, split: str = "train"):
        videos = list(videos)
        self.labels = labels
        if labels is not None:
            keys = {label_key(v) for v in videos}
            labelled = [v for v in videos if label_key(v) in labels]
            unused = sorted(k for k in labels if k not in keys)
            if not labelled:
                example = next(iter(labels), None)
                raise ValueError(f"none of the {len(labels)} gazing labels names a video of the '{split}' split "
                                 f"({len(videos)} videos, ids like {label_key(videos[0])!r}; labels like {example!r}): "
                                 "label keys are the last three path parts, <root name>/<split>/<file>")
            if len(labelled) < len(videos):
                log.warning("%d of %d %s videos have no gazing label and are left out (as upstream), e.g. %s",
                            len(videos) - len(labelled), len(videos), split,
                            label_key(next(v for v in videos if label_key(v) not in labels)))
            if unused:
                log.warning("%d gazing labels name videos absent from the %s split (ignored), e.g. %s",
                            len(unused), split, unused[0])
            videos = labelled
        if check_videos:
            readable = []
            for v in videos:
                try:
                    video_info(v)
                    readable.append(v)
                except (ValueError, OSError) as e:
                    log.warning("skipping unreadable %s video %s: %s", split, v, e)
            if not readable:
                raise ValueError(f"no readable video in the '{split}' split ({len(videos)} files, all unreadable)")
            videos = readable
        self.videos = videos
        self.gaze_processor, self.task_processor = gaze_processor, task_processor
        self.clip_len, self.frame_sample_rate = int(clip_len), int(frame_sample_rate)
        self.random_sample_frame, self.seed, self.split = bool(random_sample_frame), int(seed), split

    def __len__(self) -> int:
        return len(self.videos)

    def _read(self, index: int, epoch: int) -> np.ndarray:
        path = self.videos[index]
        count = video_info(path).num_frames
        rng = np.random.default_rng([self.seed, epoch, index]) if self.random_sample_frame else None
        indices = sample_frame_indices(self.clip_len, self.frame_sample_rate, count, rng)
        frames = read_video(path, indices)
        if frames.shape[0] != self.clip_len:  # pragma: no cover - read_video returns one frame per index
            raise ValueError(f"{path}: decoded {frames.shape[0]} frames, expected {self.clip_len}")
        return frames

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        for attempt in range(min(MAX_SUBSTITUTES, len(self.videos))):
            current = (index + attempt) % len(self.videos)
            try:
                frames = self._read(current, epoch)
                break
            except (ValueError, OSError) as e:
                log.warning("skipping %s video %s (decoding failed: %s); using the next video instead",
                            self.split, self.videos[current], e)
        else:
            raise ValueError(f"{min(MAX_SUBSTITUTES, len(self.videos))} videos in a row failed to decode from "
                             f"{self.videos[index]} on; check the '{self.split}' data")
        item = {"video": self.gaze_processor(frames).pixel_values, "index": current,
                "video_id": label_key(self.videos[current]),
                "label": self.labels[label_key(self.videos[current])] if self.labels is not None else None}
        if self.task_processor is not None:
            item["video_for_task"] = self.task_processor(frames).pixel_values
        return item


def _collate_labels(labels: list[GazeLabel]) -> dict[str, torch.Tensor]:
    """Upstream's ``process_gazing_info``: pad each frame to the batch's longest + 1 (eos) with -1."""
    frames = len(labels[0].gazing_pos)
    longest = [max(len(lab.gazing_pos[t]) for lab in labels) + 1 for t in range(frames)]
    pos, losses = [], []
    for lab in labels:
        row_pos, row_loss = [], []
        for t in range(frames):
            p, l = list(lab.gazing_pos[t]), list(lab.task_losses[t])
            fill = longest[t] - len(p)
            row_pos += p + [-1] * fill
            row_loss += l + [l[-1] if l else 0.0] * fill
        pos.append(row_pos)
        losses.append(row_loss)
    gazing_pos = torch.tensor(pos, dtype=torch.long)
    return {"gazing_pos": gazing_pos, "if_padded_gazing": gazing_pos == -1,
            "num_gazing_each_frame": torch.tensor(longest, dtype=torch.long),
            "task_losses": torch.tensor(losses, dtype=torch.float32)}


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a micro-batch: ``video`` (B, T, 3, S, S), ``video_for_task`` if present, ``index`` (B,) long,
    ``video_id`` list, and the labels' ``gazing_pos`` / ``if_padded_gazing`` / ``num_gazing_each_frame`` /
    ``task_losses`` under ``"labels"`` (None without labels)."""
    out: dict[str, Any] = {"video": torch.stack([it["video"] for it in items]),
                           "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
                           "video_id": [it["video_id"] for it in items]}
    if "video_for_task" in items[0]:
        out["video_for_task"] = torch.stack([it["video_for_task"] for it in items])
    labels = [it["label"] for it in items]
    out["labels"] = _collate_labels(labels) if labels[0] is not None else None
    return out


class StepBatchSampler:
    """Deterministic data order by optimizer step (a DistributedSampler whose position is the step).

    Epoch ``e`` shuffles all indices with a generator seeded ``seed + e``; step ``s`` of the run takes the
    ``global_batch`` indices at ``(s mod steps_per_epoch) · global_batch`` of epoch ``s // steps_per_epoch``
    (an incomplete last global batch is dropped, as upstream's ``drop_last``). Rank ``r`` takes rows
    ``[r · L, (r + 1) · L)`` of it (``L = global_batch / world``), cut into micro-batches of ``micro_batch``;
    so one process accumulating ``world`` micro-batches sees exactly the rows ``world`` ranks see.

    Iterating yields, from ``start_step`` on, one list of ``(index, epoch)`` keys per micro-batch.
    """

    def __init__(self, num_items: int, global_batch: int, micro_batch: int, rank: int = 0, world: int = 1,
                 seed: int = 0, start_step: int = 0, num_steps: int | None = None, shuffle: bool = True):
        if global_batch > num_items:
            raise ValueError(f"optim.global_batch={global_batch} exceeds the {num_items} usable videos of the split; "
                             "lower it or add data")
        self.num_items, self.global_batch, self.micro_batch = num_items, global_batch, micro_batch
        self.rank, self.world, self.seed, self.shuffle = rank, world, seed, shuffle
        self.start_step, self.num_steps = start_step, num_steps
        self.steps_per_epoch = num_items // global_batch
        self.per_rank = global_batch // world

    def step_indices(self, step: int) -> list[tuple[int, int]]:
        """This rank's ``(index, epoch)`` keys for optimizer step ``step``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self.shuffle:
            order = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
        else:
            order = list(range(self.num_items))
        rows = order[pos * self.global_batch:(pos + 1) * self.global_batch]
        return [(i, epoch) for i in rows[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while self.num_steps is None or step < self.start_step + self.num_steps:
            mine = self.step_indices(step)
            for i in range(0, len(mine), self.micro_batch):
                yield mine[i:i + self.micro_batch]
            step += 1

    def __len__(self) -> int:
        if self.num_steps is None:
            raise TypeError("an endless StepBatchSampler has no length")
        return self.num_steps * (self.per_rank // self.micro_batch)
