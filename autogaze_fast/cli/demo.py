"""``autogaze-fast demo``: gaze a built-in synthetic clip chunk by chunk, print counts and timing, and
draw each chunk's gaze into ``--out`` as soon as it is gazed (:func:`~autogaze_fast.media.sinks.open_frame_sink`)."""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

from autogaze_fast.cli.common import print_settings, report, summarise
from autogaze_fast.cli.gaze import add_gaze_options, gaze_settings, load_model_and_processor, resolve_gaze_options
from autogaze_fast.defaults import weights_origin
from autogaze_fast.media.caption import gaze_caption
from autogaze_fast.media.draw import gaze_overlay
from autogaze_fast.media.sinks import open_frame_sink
from autogaze_fast.media.synthetic import synthetic_clip
from autogaze_fast.tiling.chunks import gaze_in_chunks

__all__ = ["add_parser", "gaze_and_report", "run"]


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="gaze a built-in synthetic clip and print counts and timing",
                       description="Gaze a built-in synthetic clip (moving textured shapes, 224x224) with --model (or, "
                                   "when it cannot be had, a seeded random model of the NVIDIA shape) and print the "
                                   "settings, the gazed tokens per frame out of N (the multi-scale cells a frame can "
                                   "keep: 265 = 4+16+49+196 for the NVIDIA scales 32+64+112+224), and the timing.")
    add_gaze_options(p)
    p.add_argument("--frames", type=int, default=16, help="frames of the synthetic clip (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic clip (default: %(default)s)")
    return p


def gaze_and_report(model, processor, frames: np.ndarray, args) -> int:
    """Gaze ``frames`` (T, H, W, 3) uint8 in chunks of ``args.chunk_frames``, print the summary, and
    with ``args.out`` write each chunk's overlay (frames numbered across chunks) as it is done.

    ``args`` needs ``chunk_frames``, ``gazing_ratio``, ``task_loss_requirement`` (resolved: a number
    or None), ``quiet`` and ``out``. The gaze time counts the model calls only, not the drawing.
    """
    caption = gaze_caption(weights_origin(model), args.gazing_ratio, args.task_loss_requirement)
    pixel_values = processor(frames).pixel_values[None]  # (1, T, 3, h, w)
    chunks = gaze_in_chunks(model, pixel_values, args.chunk_frames, progress=not args.quiet,
                            gazing_ratio=args.gazing_ratio, task_loss_requirement=args.task_loss_requirement)
    real: list[int] = []
    padded: list[int] = []
    n, seconds = 0, 0.0
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(open_frame_sink(args.out)) if args.out else None
        start = time.perf_counter()
        for first, end, out in chunks:
            seconds += time.perf_counter() - start
            chunk_real, chunk_padded, n = summarise([out])
            real += chunk_real
            padded += chunk_padded
            if sink is not None:
                masks = [m[0] for m in out["gazing_mask"]]  # per scale (t, g*g) bool
                sink.write(gaze_overlay(frames[first:end], masks, model.scales, first_frame=first, caption=caption))
            start = time.perf_counter()
    per_scale = "+".join(str(c) for c in model.config.tokens_per_scale)
    report(real, padded, n, seconds, frames.shape[0], model.impl,
           f"N: the multi-scale cells a frame can keep, {per_scale} at scales {'+'.join(map(str, model.scales))}")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def run(args) -> int:
    model, processor, _ = load_model_and_processor(args.model, args.impl, allow_random=True)
    resolve_gaze_options(args, model)
    print_settings("demo", gaze_settings(model, args, frames=args.frames, seed=args.seed))
    clip = synthetic_clip(num_frames=args.frames, size=224, seed=args.seed)
    print(f"built-in synthetic clip: {clip.shape[0]} frames of {clip.shape[1]}x{clip.shape[2]} (moving textured shapes)")
    return gaze_and_report(model, processor, clip, args)
