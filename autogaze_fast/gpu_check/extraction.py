"""The extraction-throughput section of ``autogaze-fast gpu-check`` (issue 24): ``extract_features`` on
generated videos, batch 1 in-process against clip batches with a decode worker, and how busy the
models kept the device (gaze + ViT time over the wall time; goal on CUDA: >= 80 %).

On CUDA: 8 ten-second 224x224 videos at 2 Hz, NVIDIA-shaped AutoGaze + SigLIP-B/16 (seeded random
weights), batch 8. Without CUDA (``cpu`` / ``quick``): 2 two-second 64x64 videos and the upstream
fixture models (tiny_k10, tiny_siglip), batch 2, so the row takes seconds.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from autogaze_fast.encoder import GazedVideoEncoder
from autogaze_fast.extract import extract_features
from autogaze_fast.gpu_check.context import CheckContext, error_text
from autogaze_fast.media.synthetic import synthetic_clip
from autogaze_fast.media.video import write_video
from autogaze_fast.model import AutoGaze
from autogaze_fast.presets import random_encoder
from autogaze_fast.processing.autogaze import AutoGazeImageProcessor
from autogaze_fast.processing.siglip import SiglipImageProcessor
from autogaze_fast.siglip import SiglipVisionModel

BUSY_TARGET = 0.8
FREQUENCY = 2.0


def _encoder(ctx: CheckContext) -> GazedVideoEncoder:
    if ctx.device.type == "cuda":
        return random_encoder(impl="fast", device=ctx.device, gazing_ratio=0.75)
    gaze = AutoGaze.from_pretrained(ctx.fixtures / "tiny_k10", impl="fast", device=ctx.device)
    vision = SiglipVisionModel.from_pretrained(ctx.fixtures / "tiny_siglip", impl="fast", device=ctx.device)
    processor = SiglipImageProcessor.for_vision_model(vision, ctx.fixtures / "tiny_siglip", defaults_if_missing=True)
    return GazedVideoEncoder(gaze, vision, AutoGazeImageProcessor.from_pretrained(ctx.fixtures / "tiny_k10"), processor,
                             num_frames=4, gazing_ratio=0.3)


def extraction(ctx: CheckContext, results: dict) -> None:
    """Section: extraction throughput rows (batch 1 in-process, then batched with one decode worker)."""
    cuda = ctx.device.type == "cuda"
    count, seconds, size, batch = (8, 10, 224, 8) if cuda else (2, 2, 64, 2)
    rows: list[dict[str, Any]] = results.setdefault("rows", [])
    results["workload"] = (f"{count} generated {seconds}-s {size}x{size} videos at {FREQUENCY:g} Hz; "
                           + ("NVIDIA-shaped AutoGaze + SigLIP-B/16, seeded random weights, ratio 0.75" if cuda
                              else "tiny_k10 + tiny_siglip fixture models"))
    results["busy"] = "gaze + ViT seconds (CUDA-synchronised) over the run's wall seconds"
    root = Path(tempfile.mkdtemp(prefix="gpu-check-extract-"))
    try:
        (root / "videos").mkdir()
        for i in range(count):
            write_video(root / "videos" / f"v{i}.mp4", synthetic_clip(seconds * 8, size=size, seed=i), fps=8)
        encoder = _encoder(ctx)
        for name, batch_clips, workers in (("batch 1, in-process", 1, 0), (f"batch {batch}, 1 decode worker", batch, 1)):
            ctx.check(f"extraction {name}")
            row: dict[str, Any] = {"case": name, "batch_clips": batch_clips, "decode_workers": workers}
            try:
                start = time.perf_counter()
                summary = extract_features(root / "videos", root / f"out{batch_clips}", encoder=encoder, model_id="check",
                                           frequency=FREQUENCY, progress=False, batch_clips=batch_clips,
                                           decode_workers=workers)
                wall = time.perf_counter() - start
                busy = (summary.timings.get("gaze", 0.0) + summary.timings.get("vit", 0.0)) / max(wall, 1e-9)
                row.update(ok=summary.ok, failed=summary.failed, seconds=round(wall, 2),
                           videos_per_s=round(summary.ok / wall, 2), frames_per_s=round(summary.frames / wall, 1),
                           busy=round(busy, 3), busy_target=f">= {BUSY_TARGET:g} (CUDA)",
                           busy_met=busy >= BUSY_TARGET if cuda else "n/a (CPU mode)",
                           timings={k: round(v, 2) for k, v in summary.timings.items()})
                if rows and "seconds" in rows[0]:
                    row["x_batch_1"] = round(rows[0]["seconds"] / wall, 2)
            except Exception as e:
                row["error"] = error_text(e)
            rows.append(row)
            ctx.save()
    finally:
        shutil.rmtree(root, ignore_errors=True)
