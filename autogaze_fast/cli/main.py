"""``autogaze-fast`` command line: ``demo``, ``gaze VIDEO``, ``extract INPUTS --out OUT``, ``train --config CFG``, ``gpu-check --out DIR`` and ``compile-kernels``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT_MODEL = "nvidia/AutoGaze"
# Upstream's preprocessing for nvidia/AutoGaze (used when the checkpoint's own file is unavailable).
from autogaze_fast.presets import NVIDIA_PREPROCESSING as DEFAULT_PREPROCESSING  # noqa: E402


def warn(message: str) -> None:
    bar = "!" * 78
    sys.stderr.write(f"{bar}\n{message}\n{bar}\n")


def load_model_and_processor(model_id: str, impl: str | None, allow_random: bool):
    """Load the checkpoint; if it cannot be had and ``allow_random``, fall back to a seeded random
    model of the NVIDIA shape (with a loud warning)."""
    from autogaze_fast.loading import CheckpointError
    from autogaze_fast.model import AutoGaze
    from autogaze_fast.processing.autogaze import AutoGazeImageProcessor

    try:
        model = AutoGaze.from_pretrained(model_id, impl=impl)
    except CheckpointError as e:
        if not allow_random:
            raise CheckpointError(
                f"{e}\n\nFor real gaze, pass --model DIR with a local snapshot of the checkpoint "
                f"(`huggingface-cli download {DEFAULT_MODEL} --local-dir DIR`, where there is internet). "
                "To check only that the pipeline runs, add --allow-random: a RANDOMLY INITIALISED model "
                "(meaningless gaze)."
            ) from None
        from autogaze_fast.presets import random_autogaze

        warn(f"Could not load '{model_id}':\n{e}\n\nFalling back to a RANDOMLY INITIALISED model of the NVIDIA "
             "shape (seed 0). Its gaze is MEANINGLESS: use it only to check that the pipeline runs and how "
             "fast. Pass --model DIR with a local snapshot of nvidia/AutoGaze for real gaze.")
        model = random_autogaze(0, impl=impl)
        return model, AutoGazeImageProcessor.from_dict(DEFAULT_PREPROCESSING), True
    try:
        processor = AutoGazeImageProcessor.from_pretrained(model_id)
    except Exception:
        processor = AutoGazeImageProcessor.from_dict(DEFAULT_PREPROCESSING)
    return model, processor, False


def resolve_requirement(args, is_random: bool) -> None:
    """Default task-loss requirement: upstream's recommended 0.7, except for the random fallback model."""
    if args.task_loss_requirement is None and not is_random:
        args.task_loss_requirement = 0.7


def summarise(outputs: list[dict]) -> tuple[list[int], list[int], int]:
    """Per-frame real gaze counts, per-frame counts with pads, and N."""
    real, padded = [], []
    n = outputs[0]["num_vision_tokens_each_frame"]
    for out in outputs:
        counts = out["num_gazing_each_frame"].tolist()
        for pads in out["if_padded_gazing"].split(counts, dim=1):
            real.append(int((~pads[0]).sum()))
            padded.append(pads.shape[1])
    return real, padded, n


def report(real: list[int], padded: list[int], n: int, seconds: float, frames: int, impl: str) -> None:
    print(f"impl={impl}  frames={frames}  tokens/frame N={n}")
    print("gazed tokens per frame (pads excluded): " + " ".join(str(c) for c in real))
    kept = sum(real) / (n * len(real))
    print(f"kept-token ratio: {kept:.3f} ({sum(real)} of {n * len(real)} multi-scale tokens)")
    print(f"gaze time: {seconds:.2f} s ({frames / seconds:.1f} frames/s)")


def run_gaze(model, processor, frames_uint8: np.ndarray, args) -> tuple[list[dict], float, torch.Tensor]:
    """Preprocess (T, H, W, 3) uint8 frames and gaze them chunk by chunk → outputs, seconds, pixel values."""
    from autogaze_fast.tiling.chunks import gaze_in_chunks

    pixel_values = processor(frames_uint8).pixel_values[None]
    kwargs = dict(gazing_ratio=args.gazing_ratio, task_loss_requirement=args.task_loss_requirement)
    start = time.perf_counter()
    outputs = [out for _, _, out in gaze_in_chunks(model, pixel_values, args.chunk_frames, progress=not args.quiet, **kwargs)]
    return outputs, time.perf_counter() - start, pixel_values


def save_overlay(path: str, frames_uint8: np.ndarray, outputs: list[dict], scales) -> None:
    from autogaze_fast.media.draw import gaze_overlay, save_gaze_grid, save_gaze_video

    pieces, start = [], 0
    for out in outputs:
        t = out["gazing_mask"][0].shape[1]
        masks = [m[0] for m in out["gazing_mask"]]
        pieces.append(gaze_overlay(frames_uint8[start:start + t], masks, scales, first_frame=start))
        start += t
    overlay = np.concatenate(pieces)
    suffix = Path(path).suffix.lower()
    if suffix in (".png", ".jpg", ".jpeg"):
        save_gaze_grid(path, overlay)
    else:
        save_gaze_video(path, overlay)
    print(f"wrote {path}")


def print_squash_note(height: int, width: int, side: int) -> None:
    """Say so when non-square frames will be squashed to the gaze model's square input."""
    if height != width:
        print(f"note: {height}x{width} (H x W) frames are squashed to {side}x{side} for the gaze model, "
              "so their aspect ratio is not kept (pass --tiles anyres to gaze square tiles that keep it)")


def gaze_and_report(model, processor, frames: np.ndarray, args) -> int:
    """Gaze (T, H, W, 3) uint8 frames, print the summary, write the overlay if asked."""
    outputs, seconds, _ = run_gaze(model, processor, frames, args)
    real, padded, n = summarise(outputs)
    report(real, padded, n, seconds, frames.shape[0], model.impl)
    if args.out:
        save_overlay(args.out, frames, outputs, model.scales)
    return 0


def cmd_demo(args) -> int:
    from autogaze_fast.media.synthetic import synthetic_clip

    model, processor, is_random = load_model_and_processor(args.model, args.impl, allow_random=True)
    resolve_requirement(args, is_random)
    clip = synthetic_clip(num_frames=args.frames, size=224, seed=args.seed)
    print(f"built-in synthetic clip: {clip.shape[0]} frames of {clip.shape[1]}x{clip.shape[2]} (moving textured shapes)")
    return gaze_and_report(model, processor, clip, args)


def cmd_gaze(args) -> int:
    """Decode, gaze and draw the video clip by clip (memory flat in its length)."""
    from autogaze_fast.cli.views import check_view_options, stream_views
    from autogaze_fast.media.video import video_info

    check_view_options(args)
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    info = video_info(args.video)
    model, processor, is_random = load_model_and_processor(args.model, args.impl, allow_random=args.allow_random)
    resolve_requirement(args, is_random)
    frames = min(info.num_frames, args.max_frames) if args.max_frames else info.num_frames
    print(f"{args.video}: {frames} frames of {info.height}x{info.width}")
    if args.tiles is None:
        print_squash_note(info.height, info.width, model.config.input_img_size)
    return stream_views(model, processor, args, info.height, info.width, info.num_frames)


def add_gaze_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="local checkpoint directory or hub id (default: %(default)s)")
    p.add_argument("--impl", choices=["reference", "fast"], default=None, help="implementation (default: $AUTOGAZE_IMPL or fast)")
    p.add_argument("--gazing-ratio", type=float, default=0.75, help="max fraction of tokens gazed per frame")
    p.add_argument("--task-loss-requirement", type=float, default=None,
                   help="stop a frame once the predicted task loss <= this (default 0.7 with a real checkpoint; "
                        "off for the random fallback model, whose loss predictions are meaningless)")
    p.add_argument("--chunk-frames", type=int, default=None, help="frames per independently gazed chunk (default: max_num_frames)")
    p.add_argument("--out", default=None, help="write a gaze overlay (.mp4/.gif video or .png grid)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autogaze-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="gaze a built-in synthetic clip and print counts and timing")
    add_gaze_options(demo)
    demo.add_argument("--frames", type=int, default=16)
    demo.add_argument("--seed", type=int, default=0)
    gaze = sub.add_parser("gaze", help="gaze a video file")
    gaze.add_argument("video")
    add_gaze_options(gaze)
    gaze.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    gaze.add_argument("--allow-random", action="store_true", help="fall back to a random model if the checkpoint is unavailable")
    gaze.add_argument("--tiles", choices=["anyres", "pad", "resize"], default=None,
                      help="gaze square tiles of the model's size over the frame (anyres: a grid close to the frame's "
                           "aspect, frame resized onto it; pad: pixels kept, edges padded; resize: one squashed tile); "
                           "the overlay is drawn on the full-resolution frames. Default: one squashed 224x224 frame")
    gaze.add_argument("--max-tiles", type=int, default=None, help="most tiles per frame with --tiles (default 64)")
    gaze.add_argument("--tile-batch-size", type=int, default=None, help="tiles gazed per batch with --tiles (default 8)")
    gaze.add_argument("--view", choices=["overlay", "interframe"], default="overlay",
                      help="overlay: gazed cells on the frames; interframe: gazed cells update from the current frame, "
                           "the rest keeps the previous output, full refresh at keyframes, with PSNR against the input "
                           "and its EMA (factor 0.9) on each picture and in OUT's .csv")
    gaze.add_argument("--keyframe-every", type=int, default=None,
                      help="with --view interframe: full refresh every K frames, frame 0 included (default 16)")
    from autogaze_fast.cli.extract import add_parser as add_extract_parser

    add_extract_parser(sub)
    from autogaze_fast.cli.gpu_check import add_parser as add_gpu_check_parser

    add_gpu_check_parser(sub)
    from autogaze_fast.cli.train import add_parser as add_train_parser

    add_train_parser(sub)
    ck = sub.add_parser("compile-kernels", add_help=False,
                        help="AOT-compile every Triton kernel for GPU archs, no GPU needed "
                             "(options: --arch 75,80,86,89,90,100,120 --json --module M --match REGEX --smoke)")
    ck.add_argument("options", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compile-kernels"]:  # its options (and --help) belong to autogaze_fast.cli.compile_kernels
        from autogaze_fast.cli.compile_kernels import main as compile_main

        return compile_main(argv[1:])
    args = build_parser().parse_args(argv)
    from autogaze_fast.cli.extract import run as cmd_extract

    from autogaze_fast.cli.gpu_check import run as cmd_gpu_check

    from autogaze_fast.cli.train import run as cmd_train

    handlers = {"demo": cmd_demo, "gaze": cmd_gaze, "extract": cmd_extract, "gpu-check": cmd_gpu_check,
                "train": cmd_train}
    try:
        return handlers[args.command](args)
    except (ValueError, OSError, RuntimeError) as e:
        sys.stderr.write(f"autogaze-fast {args.command}: error: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
