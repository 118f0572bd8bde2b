"""``autogaze-fast extract``: the command-line face of :func:`autogaze_fast.extract.extract_features`.

Under ``torchrun --nproc-per-node=N -m autogaze_fast extract ...`` every process runs this same
command and takes its share of the videos.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from autogaze_fast.cli.common import DEFAULT_MODEL, checkpoint_or_random
from autogaze_fast.encoder import GazedVideoEncoder
from autogaze_fast.extract.run import DEFAULT_FREQUENCY, extract_features, model_name
from autogaze_fast.extract.sources import list_videos
from autogaze_fast.extract.store import ensure_writable
from autogaze_fast.presets import random_encoder
from autogaze_fast.selectors import SELECTORS, make_selector


def frequency_arg(text: str) -> float | None:
    if text.strip().lower() == "native":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected frames per second (e.g. 2) or 'native', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the frequency must be > 0, got {text}")
    return value


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "extract", help="turn a folder of videos into gazed SigLIP features (resumable; shards under torchrun)",
        description="Videos -> OUT/<config-hash>/<video-id>.safetensors (per-frame features (T, [L,] C), times, "
                    "gazed-token counts) + manifest.jsonl. A rerun skips finished videos; run the same command under "
                    "`torchrun --nproc-per-node=N -m autogaze_fast extract ...` to shard across processes.")
    p.add_argument("inputs", nargs="+", help="folders (recursive), globs, or list files (.txt/.csv/.jsonl of paths)")
    p.add_argument("--out", required=True, help="output root; results go to OUT/<config-hash>/")
    p.add_argument("--model", default=DEFAULT_MODEL, help="AutoGaze checkpoint dir or hub id (default: %(default)s)")
    p.add_argument("--vision", default="google/siglip2-base-patch16-224",
                   help="SigLIP / SigLIP2 checkpoint dir or hub id (default: %(default)s)")
    p.add_argument("--dense", action="store_true", help="no gaze: encode every patch (the dense baseline)")
    p.add_argument("--allow-random", action="store_true",
                   help="if a checkpoint cannot be had, use seeded RANDOM models of the NVIDIA / SigLIP-B/16 shape "
                        "(meaningless features; for trying the pipeline)")
    p.add_argument("--frequency", type=frequency_arg, default=DEFAULT_FREQUENCY,
                   help="frames sampled per second, or 'native' for every frame (default: %(default)s)")
    p.add_argument("--num-frames", type=int, default=None, help="frames per gaze clip (default: the model's, 16)")
    p.add_argument("--layers", default="-1", help="hidden states: -1 (default), '-4,-1', or 'all' (0 = embeddings)")
    p.add_argument("--layer-aggregation", choices=["mean"], default=None,
                   help="average the chosen layers into one (default: keep a layer axis when several)")
    p.add_argument("--gazing-ratio", type=float, default=0.75,
                   help="max fraction of tokens gazed per frame (default: %(default)s)")
    p.add_argument("--task-loss-requirement", type=float, default=None,
                   help="stop gazing a frame once the predicted task loss <= this (e.g. 0.7)")
    p.add_argument("--tiles", choices=["anyres", "pad", "resize"], default=None,
                   help="gaze and encode frames of any size as 224-px tiles (default: squash every frame to a square)")
    p.add_argument("--max-tiles", type=int, default=64, help="most tiles per frame with --tiles (default: %(default)s)")
    p.add_argument("--tile-batch-size", type=int, default=8, help="tiles per model call (default: %(default)s)")
    p.add_argument("--dtype", default=None, help="float32 (default), bfloat16 or float16")
    p.add_argument("--impl", choices=["reference", "fast"], default=None, help="implementation (default: $AUTOGAZE_IMPL or fast)")
    p.add_argument("--device", default=None, help="default: cuda:$LOCAL_RANK when CUDA is there, else cpu")
    p.add_argument("--save-tokens", action="store_true", help="also store token features with frame, cell, scale and pad flag")
    p.add_argument("--selector", choices=SELECTORS, default="autogaze",
                   help="gaze policy in the model's place (default: the AutoGaze model); --gazing-ratio is its budget")
    p.add_argument("--selector-threshold", type=float, default=None,
                   help="a heuristic's change threshold in grey levels (run-length: default 1)")
    p.add_argument("--strict", action="store_true", help="stop at the first video that fails")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def load_encoder(args) -> tuple[GazedVideoEncoder, str]:
    """The encoder of ``--model``/``--vision`` and its model id for the manifest; with
    ``--allow-random``, seeded random stand-ins when a checkpoint cannot be had."""
    options = dict(num_frames=args.num_frames, layers=args.layers, layer_aggregation=args.layer_aggregation,
                   gazing_ratio=args.gazing_ratio, task_loss_requirement=args.task_loss_requirement, tiles=args.tiles,
                   max_tiles=args.max_tiles, tile_batch_size=args.tile_batch_size)
    if getattr(args, "selector", "autogaze") != "autogaze":
        options["selector"] = make_selector(args.selector, threshold=args.selector_threshold)
    gaze = None if args.dense else args.model
    encoder, is_random = checkpoint_or_random(
        lambda: GazedVideoEncoder.from_pretrained(gaze, args.vision, impl=args.impl, device=args.device,
                                                  dtype=args.dtype, **options),
        lambda: random_encoder(dense=args.dense, impl=args.impl, device=args.device, dtype=args.dtype, **options),
        allow_random=args.allow_random, what="the checkpoints",
        refusal="\nPass --model/--vision with local checkpoint directories, or --allow-random to try the pipeline "
                "with random models",
        fallback="Using RANDOMLY INITIALISED models (seed 0) of the NVIDIA AutoGaze and SigLIP-B/16 shapes. Their "
                 "features are MEANINGLESS: use them only to try the pipeline.")
    if is_random:
        return encoder, "random:nvidia-autogaze+siglip-b16:seed0" + (":dense" if args.dense else "")
    return encoder, f"gaze={model_name(gaze)} vision={model_name(args.vision)}"


def run(args) -> int:
    """Run the extraction; 0 when every video succeeded, 1 when some failed."""
    # SIGTERM (a scheduler's kill) unwinds like Ctrl-C, so no temporary file is left behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # Cheap checks first: a bad output folder or inputs that name nothing fail before the models load.
    ensure_writable(Path(args.out).expanduser())
    list_videos(args.inputs)
    encoder, model_id = load_encoder(args)
    summary = extract_features(args.inputs, args.out, encoder=encoder, model_id=model_id, frequency=args.frequency,
                               save_tokens=args.save_tokens, strict=args.strict, progress=not args.quiet)
    if summary.rank == 0:
        print(summary.line())
        for record in summary.failures:
            print(f"  failed: {record['video']}: {record['reason']}")
    return 1 if summary.failed else 0
