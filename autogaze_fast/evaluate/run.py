"""The evaluation loop: video × selector × budget → one row of metrics, appended as it is done.

For each video (decoded clip by clip, ``clip_frames`` frames a clip, at most ``max_frames``) and each
selector and budget (a gazing ratio), every clip is gazed and the row records: the real tokens kept
per frame and their fraction of N; the selector's time per frame (the gaze call on the processor's
output, as the model gets it); the interframe PSNR of :mod:`autogaze_fast.evaluate.reconstruction`;
with a vision model, the gazed ViT's time per frame and the mean over frames of the cosine between the
gazed and the dense (every multi-scale token) per-frame pooled features; and every extra task metric
given (e.g. the gazed MAE's reconstruction loss, which the command line builds).

Resumable like ``extract``: rows go to ``OUT/rows.jsonl`` one line at a time (fsynced); a rerun
skips every (video, selector, options, budget) whose row is there for the same file (size, mtime)
and the same settings, and the reports are rewritten from all rows at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autogaze_fast.evaluate.reconstruction import Reconstruction, scale_views
from autogaze_fast.evaluate.report import write_reports
from autogaze_fast.jsonl import append_jsonl, read_jsonl
from autogaze_fast.processing.autogaze import NVIDIA_PREPROCESSING, AutoGazeImageProcessor
from autogaze_fast.selectors import NVIDIA_LAYOUT, SELECTORS, GazeLayout, SelectorGazer, denormalize, kept_per_frame
from autogaze_fast.tiling.stream import iter_clips

TaskMetric = Callable[[Any, dict], float]
"""``metric(clip_uint8 (t, H, W, 3), gaze) -> float``, averaged over a video's clips."""


@dataclass
class Video:
    """One input: a stable ``id`` and its ``path``."""

    id: str
    path: Path


def _key(video: Video, selector: dict, budget: float, settings: dict) -> str:
    stat = video.path.stat()
    blob = json.dumps({"video": video.id, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "selector": selector,
                       "budget": budget, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def dense_gaze(t: int, n: int) -> dict:
    pos = torch.arange(t * n)[None]
    return {"gazing_pos": pos, "if_padded_gazing": torch.zeros_like(pos, dtype=torch.bool),
            "num_gazing_each_frame": torch.full((t,), n)}


def pooled(features: torch.Tensor, gaze: dict) -> torch.Tensor:
    """``(1, M, C)`` token features → ``(t, C)`` per-frame means over real tokens (zeros for none)."""
    counts = gaze["num_gazing_each_frame"].cpu()
    frame = torch.arange(len(counts)).repeat_interleave(counts)
    real = ~gaze["if_padded_gazing"][0].cpu().bool()
    sums = torch.zeros(len(counts), features.shape[-1])
    sums.index_add_(0, frame[real], features[0].float().cpu()[real])
    return sums / torch.bincount(frame[real], minlength=len(counts)).clamp(min=1)[:, None]


class Evaluator:
    """Holds the models and settings; :meth:`run` evaluates a list of videos.

    Args:
        selectors: names of :data:`~autogaze_fast.selectors.SELECTORS` (``autogaze`` needs ``model``).
        budgets: gazing ratios in (0, 1].
        model, processor: the AutoGaze model (for ``autogaze``, and its layout for all) and its processor.
        vision, vision_processor: a gazed SigLIP (its layout must be the selectors') and its processor.
        metrics: extra task metrics by name.
        clip_frames, max_frames: clip length (16) and most frames read per video.
        seed: the ``random`` selector's seed.
        settings: more settings that change the results (model ids), for the resume keys.
    """

    def __init__(self, selectors: Sequence[str], budgets: Sequence[float], *, model=None, processor=None, vision=None,
                 vision_processor=None, metrics: dict[str, TaskMetric] | None = None, clip_frames: int = 16,
                 max_frames: int | None = None, seed: int = 0, settings: dict | None = None) -> None:
        unknown = [s for s in selectors if s not in SELECTORS]
        if unknown:
            raise ValueError(f"unknown selector(s) {unknown}; choose from {', '.join(SELECTORS)}")
        if "autogaze" in selectors and model is None:
            raise ValueError("the 'autogaze' selector needs a model (--model DIR, or --allow-random for a random one)")
        if not selectors or not budgets:
            raise ValueError("give at least one selector and one budget")
        for b in budgets:
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 < b <= 1:
                raise ValueError(f"budgets are gazing ratios in (0, 1], got {b!r}")
        self.selectors, self.budgets = list(selectors), [float(b) for b in budgets]
        self.model, self.vision, self.vision_processor = model, vision, vision_processor
        self.processor = processor or AutoGazeImageProcessor.from_dict(NVIDIA_PREPROCESSING)
        self.layout = GazeLayout.from_config(model.config) if model is not None else \
            GazeLayout.from_config(vision.config) if vision is not None else NVIDIA_LAYOUT
        if vision is not None and GazeLayout.from_config(vision.config) != self.layout:
            raise ValueError(f"the vision model's layout {GazeLayout.from_config(vision.config)} differs from the gaze "
                             f"layout {self.layout}; load it with the gaze model's scales")
        self.metrics = dict(metrics or {})
        self.clip_frames, self.max_frames, self.seed = int(clip_frames), max_frames, int(seed)
        self.gazers = {name: SelectorGazer(name, self.layout, self.processor, self.clip_frames,
                                           **({"seed": self.seed} if name == "random" else {}))
                       for name in self.selectors if name != "autogaze"}
        self.settings = dict(settings or {}) | {"clip_frames": self.clip_frames, "max_frames": max_frames,
                                                "layout": [list(self.layout.scales), self.layout.patch_size],
                                                "vision": vision is not None, "metrics": sorted(self.metrics)}

    def describe(self, name: str) -> dict:
        return self.gazers[name].selector.describe() if name in self.gazers else {"selector": "autogaze"}

    def _gaze(self, name: str, video: torch.Tensor, budget: float) -> tuple[dict, float]:
        gazer = self.gazers.get(name, self.model)
        device = next(gazer.parameters()).device
        video = video.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode():
            gaze = gazer({"video": video}, gazing_ratio=budget, generate_only=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return gaze, time.perf_counter() - start

    def evaluate_video(self, video: Video, tasks: list[tuple[str, float]]) -> list[dict]:
        """Rows for ``tasks`` (selector, budget) of one video."""
        clips = list(iter_clips(video.path, self.clip_frames, self.max_frames))
        pixels = [self.processor(c).pixel_values[None] for c in clips]
        squares = [torch.nn.functional.interpolate(denormalize(p, self.processor)[0], size=(self.layout.side,) * 2,
                                                   mode="bilinear", antialias=True, align_corners=False).round()
                   for p in pixels]
        views = [scale_views(s, self.layout) for s in squares]
        dense_features = vision_pixels = None
        if self.vision is not None:
            vision_pixels = [self.vision_processor(c).pixel_values[None] for c in clips]
            device = next(self.vision.parameters()).device
            with torch.inference_mode():
                dense_features = [pooled(self.vision(v.to(device), gazing_info=dense_gaze(v.shape[1], self.layout.num_tokens))
                                         .last_hidden_state, dense_gaze(v.shape[1], self.layout.num_tokens))
                                  for v in vision_pixels]
        rows = []
        for name, budget in tasks:
            recon = Reconstruction(self.layout)
            frames = kept = 0
            gaze_s = vit_s = 0.0
            cosines: list[float] = []
            metric_sums = dict.fromkeys(self.metrics, 0.0)
            for i, clip in enumerate(clips):
                gaze, seconds = self._gaze(name, pixels[i], budget)
                gaze_s += seconds
                frames += clip.shape[0]
                kept += int(kept_per_frame(gaze).sum())
                recon.update(squares[i], [m[0] for m in gaze["gazing_mask"]], views[i])
                if self.vision is not None:
                    device = next(self.vision.parameters()).device
                    start = time.perf_counter()
                    with torch.inference_mode():
                        features = self.vision(vision_pixels[i].to(device), gazing_info=gaze).last_hidden_state
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    vit_s += time.perf_counter() - start
                    cosines += torch.nn.functional.cosine_similarity(pooled(features, gaze), dense_features[i]).tolist()
                for metric, fn in self.metrics.items():
                    metric_sums[metric] += float(fn(clip, gaze))
            rows.append({
                "video": video.id, "selector": name, "options": self.describe(name), "budget": budget, "frames": frames,
                "tokens_kept": kept / frames, "kept_fraction": kept / (frames * self.layout.num_tokens),
                "selector_ms_per_frame": 1000 * gaze_s / frames,
                "vit_ms_per_frame": 1000 * vit_s / frames if self.vision is not None else None,
                "psnr_db": recon.psnr, "feature_cosine": sum(cosines) / len(cosines) if cosines else None,
                "metrics": {m: v / len(clips) for m, v in metric_sums.items()},
            })
        return rows

    def run(self, videos: Sequence[Video], out: str | os.PathLike, progress: bool = True,
            plot_metric: str = "psnr_db") -> dict[str, Any]:
        """Evaluate ``videos`` into ``out`` (rows.jsonl, results.csv/.json/.md, plot.png).

        Returns:
            dict with ``rows`` (all rows of the run's tasks), ``done`` (rows computed now), ``skipped``
            (found from an earlier run), ``failed`` (video id → reason) and ``paths`` (the reports).
        """
        out = Path(out).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        rows_path = out / "rows.jsonl"
        have = {r.get("key"): r for r in read_jsonl(rows_path)}
        plan = []
        for video in videos:
            keys = {(s, b): _key(video, self.describe(s), b, self.settings) for s in self.selectors for b in self.budgets}
            plan.append((video, keys))
        total = sum(len(k) for _, k in plan)
        bar = None
        if progress:
            from tqdm.auto import tqdm  # deferred: tqdm only for a progress bar

            bar = tqdm(total=total, desc="evaluate", unit="row")
        rows, done, skipped, failed = [], 0, 0, {}
        for video, keys in plan:
            todo = [task for task, key in keys.items() if key not in have]
            skipped += len(keys) - len(todo)
            if bar is not None:
                bar.update(len(keys) - len(todo))
            if todo:
                try:
                    for row in self.evaluate_video(video, todo):
                        row["key"] = keys[(row["selector"], row["budget"])]
                        append_jsonl(rows_path, row)
                        have[row["key"]] = row
                        done += 1
                        if bar is not None:
                            bar.update(1)
                except (ValueError, OSError, RuntimeError) as e:
                    failed[video.id] = f"{type(e).__name__}: {e}"
                    if bar is not None:
                        bar.update(len(todo))
            rows += [have[k] for k in keys.values() if k in have]
        if bar is not None:
            bar.close()
        paths = write_reports(out, rows, plot_metric) if rows else {}
        return {"rows": rows, "done": done, "skipped": skipped, "failed": failed, "paths": paths}
