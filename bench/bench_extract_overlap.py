"""Extraction throughput, side by side in one run (issue 24): batch 1 in-process against clip batches
with decode workers, and where the time goes. Prints a markdown table.

    OMP_NUM_THREADS=1 TRITON_INTERPRET=0 .venv/bin/python bench/bench_extract_overlap.py [--videos 8 --seconds 10]

Workload: ``--videos`` generated ``--seconds``-s videos (``--size``, default 224x224; ``--fps``, default 8)
sampled at 2 Hz (20 frames a 10-s video: a 16-frame clip and a 4-frame one), NVIDIA-shaped AutoGaze + SigLIP-B/16 with seeded
random weights (fp32, the fast implementation), gazing ratio ``--ratio``.

Rows: ``decode only`` (the clip stream alone: decode + preprocess, in-process), ``compute only``
(gaze + ViT on the prepared clips, batch 1 and batch N), ``end to end`` (``extract_features``: batch 1
in-process, batch N with ``--workers`` decode workers). Overlap efficiency = end-to-end time /
max(decode, compute) of the same configuration (1.0 = decoding fully hidden behind compute).
The decode-only row of a 1080p clip compares PyAV with torchcodec where torchcodec runs; that row
alone: ``bench/bench_extract_overlap.py --decode-only [--hd-frames 48]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "0")


def decode_1080p(root: Path, frames: int) -> str:
    """One markdown line: decode-only frames/s of a generated 1080p H.264 clip (every frame, RGB24 out),
    PyAV against torchcodec (both let FFmpeg pick the thread count), and their largest pixel difference."""
    import numpy as np

    from autogaze_fast.extract.decode import sample_clips
    from autogaze_fast.media.decoders import torchcodec_clips, torchcodec_problem
    from autogaze_fast.media.synthetic import synthetic_clip
    from autogaze_fast.media.video import write_video

    hd = write_video(root / "hd.mp4", synthetic_clip(frames, size=(1080, 1920), seed=0), fps=8)
    t0 = time.perf_counter()
    pyav_frames = [f for _, f in sample_clips(hd, None, 16)]
    pyav = time.perf_counter() - t0
    n = sum(len(f) for f in pyav_frames)
    line = f"- decode only, 1080p clip ({n} frames, every frame): PyAV {n / pyav:.1f} frames/s"
    problem = torchcodec_problem()
    if problem is not None:
        return line + f"; torchcodec not measured: {problem}"
    t0 = time.perf_counter()
    tc_frames = [f for _, f in torchcodec_clips(hd, None, 16)[0]]
    tc = time.perf_counter() - t0
    diff = np.abs(np.concatenate(tc_frames).astype(np.int16) - np.concatenate(pyav_frames).astype(np.int16)).max()
    return line + f", torchcodec {n / tc:.1f} frames/s ({pyav / tc:.2f}x PyAV); max pixel difference {diff}"


def main() -> None:
    import torch

    from autogaze_fast.extract import extract_features, list_videos
    from autogaze_fast.extract.pipeline import ClipStream
    from autogaze_fast.extract.store import ExtractionStore
    from autogaze_fast.media.synthetic import synthetic_clip
    from autogaze_fast.media.video import write_video
    from autogaze_fast.presets import random_encoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--batch", type=int, default=4, help="batch_clips of the batched rows")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--ratio", type=float, default=0.07)
    p.add_argument("--size", default="224x224", help="HxW of the generated videos (e.g. 720x1280)")
    p.add_argument("--fps", type=int, default=8, help="frame rate of the generated videos (every frame is decoded)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--hd-frames", type=int, default=48, help="frames of the 1080p decode-only clip")
    p.add_argument("--decode-only", action="store_true", help="only the 1080p PyAV-vs-torchcodec decode row")
    args = p.parse_args()
    fps, freq = args.fps, 2.0
    height, width = (int(v) for v in args.size.lower().split("x"))
    root = Path(tempfile.mkdtemp(prefix="bench-overlap-"))
    try:
        if args.decode_only:
            print(decode_1080p(root, args.hd_frames))
            return
        (root / "videos").mkdir()
        for i in range(args.videos):
            write_video(root / "videos" / f"v{i}.mp4", synthetic_clip(args.seconds * fps, size=(height, width), seed=i), fps=fps)
        encoder = random_encoder(impl="fast", device=args.device, gazing_ratio=args.ratio)
        videos = list_videos(root / "videos")

        # decode only: the clip stream (decode + preprocess) without the models
        store = ExtractionStore(root / "scratch", {"bench": 1})
        store.prepare()
        t0 = time.perf_counter()
        prepared = [item for item in ClipStream(videos, encoder.preparer(), store, None, freq) if item["kind"] == "clip"]
        decode_s = time.perf_counter() - t0
        frames = sum(len(item["times"]) for item in prepared)

        from autogaze_fast.encoder import PreparedClip

        clips = [PreparedClip(i["frames"], i["gaze"], i["vision"], i["first_frame"]) for i in prepared]
        compute = {}
        for batch in (1, args.batch):
            encoder.batch_clips = batch
            encoder.encode_prepared(clips[:1])  # warm-up
            t0 = time.perf_counter()
            encoder.encode_prepared(clips)
            compute[batch] = time.perf_counter() - t0
        e2e, timings = {}, {}
        for name, batch, workers in (("batch 1, in-process", 1, 0), (f"batch {args.batch}, {args.workers} decode worker(s)",
                                                                    args.batch, args.workers)):
            out = root / f"out-{batch}-{workers}"
            t0 = time.perf_counter()
            summary = extract_features(root / "videos", out, encoder=encoder, model_id="bench", frequency=freq,
                                       progress=False, batch_clips=batch, decode_workers=workers)
            e2e[name] = (time.perf_counter() - t0, batch, workers)
            timings[name] = summary.time_line()
            assert summary.ok == args.videos, summary.failures
        print(f"\n{args.videos} videos of {width}x{height} at {fps} fps x {args.seconds} s, sampled at {freq:g} Hz = "
              f"{frames} frames, {len(clips)} clips; "
              f"gazing ratio {args.ratio}; torch threads {torch.get_num_threads()}, OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS', '')}\n")
        print("| row | seconds | videos/s | frames/s | x batch 1 end to end | overlap (e2e / max(decode, compute)) |")
        print("|---|---|---|---|---|---|")
        print(f"| decode only (PyAV + preprocess, in-process) | {decode_s:.2f} | {args.videos / decode_s:.2f} | "
              f"{frames / decode_s:.1f} | | |")
        for batch, seconds in compute.items():
            print(f"| compute only, batch {batch} (gaze + ViT) | {seconds:.2f} | {args.videos / seconds:.2f} | "
                  f"{frames / seconds:.1f} | | |")
        base = e2e["batch 1, in-process"][0]
        for name, (seconds, batch, _) in e2e.items():
            overlap = seconds / max(decode_s, compute[batch])
            print(f"| end to end, {name} | {seconds:.2f} | {args.videos / seconds:.2f} | {frames / seconds:.1f} | "
                  f"{base / seconds:.2f}x | {overlap:.2f}x |")
        print()
        for name, line in timings.items():
            print(f"- {name}: {line}")
        print(decode_1080p(root, args.hd_frames))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
