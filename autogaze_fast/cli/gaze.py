"""``autogaze-fast gaze VIDEO``: decode, gaze and draw a video file clip by clip (memory flat in its
length); also the options and the model loading it shares with ``autogaze-fast demo``."""

from __future__ import annotations

import argparse

from autogaze_fast.cli.common import DEFAULT_MODEL, REQUIREMENT_HELP, checkpoint_or_random, print_settings, requirement_arg
from autogaze_fast.cli.views import check_view_options, stream_views
from autogaze_fast.defaults import (
    AUTO,
    GAZING_RATIO,
    KEYFRAME_EVERY,
    MAX_TILES,
    TILE_BATCH_SIZE,
    TILES,
    describe_requirement,
    resolve_task_loss_requirement,
    weights_origin,
)
from autogaze_fast.media.video import video_info
from autogaze_fast.model import AutoGaze
from autogaze_fast.presets import random_autogaze
from autogaze_fast.processing.autogaze import NVIDIA_PREPROCESSING, AutoGazeImageProcessor
from autogaze_fast.selectors import SELECTORS, SelectorGazer

__all__ = ["add_gaze_options", "add_parser", "gaze_settings", "load_model_and_processor", "resolve_gaze_options", "run"]


def load_model_and_processor(model_id: str, impl: str | None, allow_random: bool
                             ) -> tuple[AutoGaze, AutoGazeImageProcessor, bool]:
    """The checkpoint's model and processor (NVIDIA's preprocessing when it ships none), and False;
    if the checkpoint cannot be had and ``allow_random``, a seeded random model of the NVIDIA shape
    with NVIDIA's preprocessing (after a loud warning), and True."""
    model, is_random = checkpoint_or_random(
        lambda: AutoGaze.from_pretrained(model_id, impl=impl), lambda: random_autogaze(0, impl=impl),
        allow_random=allow_random, what=f"'{model_id}'",
        refusal="\n\nFor real gaze, pass --model DIR with a checkpoint folder (config.json + model.safetensors "
                "[+ preprocessor_config.json]): one written by `autogaze-fast train` (RUN_DIR/checkpoints/step_XXXXXXXX) "
                f"or by `model.save_pretrained(DIR)`, or a local snapshot of {DEFAULT_MODEL} "
                f"(`huggingface-cli download {DEFAULT_MODEL} --local-dir DIR`, where there is internet); or a hub id. "
                "To check only that the pipeline runs, add --allow-random: a RANDOMLY INITIALISED model "
                "(meaningless gaze).",
        fallback="Falling back to a RANDOMLY INITIALISED model of the NVIDIA shape (seed 0). Its gaze is MEANINGLESS: "
                 "use it only to check that the pipeline runs and how fast. Pass --model DIR with a local snapshot "
                 "of nvidia/AutoGaze for real gaze.")
    if is_random:
        return model, AutoGazeImageProcessor.from_dict(NVIDIA_PREPROCESSING), True
    return model, AutoGazeImageProcessor.from_pretrained_or_default(model_id), False


def add_gaze_options(p: argparse.ArgumentParser) -> None:
    """The options ``demo`` and ``gaze`` share."""
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="checkpoint folder (config.json + model.safetensors [+ preprocessor_config.json], as "
                        "`autogaze-fast train` and save_pretrained write it) or hub id (default: %(default)s)")
    p.add_argument("--impl", choices=["reference", "fast"], default=None, help="implementation (default: $AUTOGAZE_IMPL or fast)")
    p.add_argument("--gazing-ratio", type=float, default=GAZING_RATIO,
                   help="max fraction of a frame's multi-scale tokens gazed (default: %(default)s)")
    p.add_argument("--task-loss-requirement", type=requirement_arg, default=AUTO, help=REQUIREMENT_HELP)
    p.add_argument("--chunk-frames", type=int, default=None,
                   help="frames per independently gazed chunk (default: max_num_frames)")
    p.add_argument("--out", default=None,
                   help="write the gaze pictures (.mp4/.gif video or .png grid), each frame above a caption strip: "
                        "frame number, tokens kept, model, ratio, stop, and the cell size of each outline colour")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("gaze", help="gaze a video file")
    p.add_argument("video")
    add_gaze_options(p)
    p.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    p.add_argument("--allow-random", action="store_true", help="fall back to a random model if the checkpoint is unavailable")
    p.add_argument("--tiles", choices=["anyres", "pad", "resize"], default=TILES,
                   help="gaze square tiles of the model's size over the frame (anyres: a grid close to the frame's "
                        "aspect, frame resized onto it; pad: pixels kept, edges padded; resize: one squashed tile); "
                        "the overlay is drawn on the full-resolution frames. Default: none, one squashed 224x224 frame")
    p.add_argument("--max-tiles", type=int, default=None, help=f"most tiles per frame with --tiles (default {MAX_TILES})")
    p.add_argument("--tile-batch-size", type=int, default=None,
                   help=f"tiles gazed per batch with --tiles (default {TILE_BATCH_SIZE})")
    p.add_argument("--view", choices=["overlay", "interframe"], default="overlay",
                   help="overlay: gazed cells on the frames; interframe: gazed cells update from the current frame, "
                        "the rest keeps the previous output, full refresh at keyframes, with PSNR against the input "
                        "and its EMA (factor 0.9) in each picture's caption and in OUT's .csv (--out inter.gif: inter.csv)")
    p.add_argument("--keyframe-every", type=int, default=None,
                   help=f"with --view interframe: full refresh every K frames, frame 0 included (default {KEYFRAME_EVERY})")
    p.add_argument("--selector", choices=SELECTORS, default="autogaze",
                   help="gaze policy (default: the AutoGaze model); the heuristics need no checkpoint and take "
                        "--gazing-ratio as their budget (see autogaze_fast.selectors)")
    p.add_argument("--selector-threshold", type=float, default=None,
                   help="a heuristic's change threshold in grey levels (run-length: default 1)")
    return p


def print_squash_note(height: int, width: int, side: int) -> None:
    """Say so when non-square frames will be squashed to the gaze model's square input."""
    if height != width:
        print(f"note: {height}x{width} (H x W) frames are squashed to {side}x{side} for the gaze model, "
              "so their aspect ratio is not kept (pass --tiles anyres to gaze square tiles that keep it)")


def resolve_gaze_options(args, model) -> None:
    """Turn ``args.task_loss_requirement`` ``"auto"`` into the model's value (keeping what was asked
    for in ``args.requested_requirement``)."""
    args.requested_requirement = args.task_loss_requirement
    args.task_loss_requirement = resolve_task_loss_requirement(args.task_loss_requirement, model)


def gaze_settings(model, args, **more) -> dict:
    """The settings line of ``gaze`` and ``demo``: the model's weights, the budget, the stop, the tiles."""
    tiles = getattr(args, "tiles", None)
    side = model.config.input_img_size
    if tiles is None:
        shown_tiles = f"none (each frame resized to {side}x{side})"
    else:
        shown_tiles = f"{tiles} ({side}-px tiles, at most {args.max_tiles or MAX_TILES}, {args.tile_batch_size} per batch)"
    return {"model": weights_origin(model), "impl": model.impl, "gazing_ratio": f"{args.gazing_ratio:g}",
            "task_loss_requirement": describe_requirement(args.task_loss_requirement, args.requested_requirement, model),
            "tiles": shown_tiles, "clip_frames": args.chunk_frames or model.config.max_num_frames, **more}


def run(args) -> int:
    """Decode, gaze and draw the video clip by clip (memory flat in its length)."""
    check_view_options(args)
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    info = video_info(args.video)
    if args.selector != "autogaze":
        if args.task_loss_requirement not in (AUTO, None):
            raise ValueError("--task-loss-requirement is AutoGaze's stop rule; a heuristic takes --selector-threshold")
        model = SelectorGazer(args.selector, threshold=args.selector_threshold)
        model.name_or_path = f"selector {args.selector} (no model)"
        processor = model.processor
        args.requested_requirement = args.task_loss_requirement = None
    else:
        model, processor, _ = load_model_and_processor(args.model, args.impl, allow_random=args.allow_random)
        resolve_gaze_options(args, model)
    print_settings("gaze", gaze_settings(model, args, view=args.view))
    frames = min(info.num_frames, args.max_frames) if args.max_frames else info.num_frames
    print(f"{args.video}: {frames} frames of {info.height}x{info.width}")
    if args.tiles is None:
        print_squash_note(info.height, info.width, model.config.input_img_size)
    return stream_views(model, processor, args, info.height, info.width, info.num_frames)
