"""``extract`` end to end (decode → gaze → gazed SigLIP-B/16 → store), gazed vs the dense baseline,
in one run.

Workload: 2 generated 8-s videos (224×224, 8 fps), sampled at 2 Hz → one 16-frame clip each
(32 frames, 16 video-seconds per round). Models: NVIDIA-shaped AutoGaze and SigLIP-B/16 with seeded
random weights (``autogaze_fast.presets``), fp32, the fast implementation.

* ``dense224`` (baseline): what an image-ViT extractor runs — every sampled frame fully encoded at
  224 (196 patches, each frame on its own), pooled per frame: the same output shape.
* ``gazed_r0.07``: gazing ratio 0.07 → 18 of 265 multi-scale tokens per frame, 288 per clip =
  9.2% of the dense 3,136.
* ``gazed_r0.3`` / ``gazed_r0.3_stop0.7``: ratio 0.3 (79 per frame, 40% of dense), without and
  with the task-loss stop (with random weights the stop fires arbitrarily: read ``tokens``).

``extra_info`` holds throughput (video seconds per wall second, frames per second) and the tokens
encoded. ``test_extract_memory_flat`` measures peak RSS of a 10-s and a 60-s video in fresh
processes (must be within 10%).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from memory_probe import measure

VIDEO_SECONDS, FPS, FREQUENCY = 8, 8, 2.0
CASES = {
    "dense224": None,
    "gazed_r0.07": dict(gazing_ratio=0.07),
    "gazed_r0.3": dict(gazing_ratio=0.3),
    "gazed_r0.3_stop0.7": dict(gazing_ratio=0.3, task_loss_requirement=0.7),
}


def make_video(path: Path, seconds: int, seed: int) -> Path:
    from autogaze_fast.media.synthetic import synthetic_clip
    from autogaze_fast.media.video import write_video

    return write_video(path, synthetic_clip(seconds * FPS, size=224, seed=seed), fps=FPS)


def encoder_for(case: str):
    from autogaze_fast.presets import random_encoder

    options = CASES[case]
    return random_encoder(dense=options is None, impl="fast", device="cpu", **(options or {}))


@pytest.fixture(scope="module")
def workload():
    folder = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    for i in range(2):
        make_video(folder / f"video{i}.mp4", VIDEO_SECONDS, seed=i)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("case", list(CASES))
def test_extract_throughput(benchmark, workload, case):
    from autogaze_fast.extract import extract_features

    os.environ.setdefault("TRITON_INTERPRET", "0")
    benchmark.group = "extract[2 x 8 s videos, 2 Hz, 16-frame clips, SigLIP-B/16]"
    encoder = encoder_for(case)
    outs = []

    def fresh_output():
        outs.append(Path(tempfile.mkdtemp(prefix="bench-extract-out-")))
        return (), {}

    def run():
        return extract_features(workload, outs[-1], encoder=encoder, model_id=case, frequency=FREQUENCY, progress=False)

    fresh_output()
    run()  # warm-up
    summary = benchmark.pedantic(run, setup=fresh_output, rounds=2, iterations=1)
    for out in outs:
        shutil.rmtree(out, ignore_errors=True)
    assert summary.ok == 2 and summary.failed == 0
    mean = benchmark.stats.stats.mean
    video_seconds = 2 * VIDEO_SECONDS
    tokens = summary.tokens if CASES[case] is not None else summary.frames * 196
    benchmark.extra_info.update(
        baseline=CASES[case] is None, frames=summary.frames, tokens=tokens,
        tokens_vs_dense=round(tokens / (summary.frames * 196), 3),
        video_s_per_s=round(video_seconds / mean, 2), frames_per_s=round(summary.frames / mean, 2),
    )


def memory_setup(seconds: str):
    """For ``memory_probe``: build the gazed encoder and a video of ``seconds`` s; return the extraction call."""
    os.environ.setdefault("TRITON_INTERPRET", "0")
    from autogaze_fast.extract import extract_features

    folder = Path(tempfile.mkdtemp(prefix="bench-extract-mem-"))
    make_video(folder / "video.mp4", int(seconds), seed=0)
    encoder = encoder_for("gazed_r0.07")

    def run():
        summary = extract_features(folder / "video.mp4", folder / "out", encoder=encoder, model_id="mem",
                                   frequency=FREQUENCY, progress=False)
        assert summary.ok == 1
        shutil.rmtree(folder, ignore_errors=True)

    return run


def test_extract_memory_flat(benchmark):
    """Peak RSS of a 10-s and a 60-s video (20 vs 120 sampled frames) in fresh processes: the video is
    decoded, gazed and encoded clip by clip, so the peak must not grow with its length."""
    benchmark.group = "extract memory[gazed_r0.07, 2 Hz]"
    short = measure("bench_extract:memory_setup", "10")
    long = measure("bench_extract:memory_setup", "60")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(peak_rss_mb_10s=short["peak_rss_mb"], peak_rss_mb_60s=long["peak_rss_mb"],
                                peak_rss_mb=long["peak_rss_mb"])
    assert long["peak_rss_mb"] <= 1.10 * short["peak_rss_mb"], (short, long)
