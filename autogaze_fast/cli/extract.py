"""``autogaze-fast extract``: the command-line face of :func:`autogaze_fast.extract.extract_features`.

Under ``torchrun --nproc-per-node=N -m autogaze_fast extract ...`` every process runs this same
command and takes its share of the videos.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from autogaze_fast.cli.common import DEFAULT_MODEL, REQUIREMENT_HELP, checkpoint_or_random, print_settings, requirement_arg
from autogaze_fast.defaults import AUTO, GAZING_RATIO, MAX_TILES, TILE_BATCH_SIZE, TILES, describe_requirement, weights_origin
from autogaze_fast.encoder import GazedVideoEncoder
from autogaze_fast.extract.claims import DEFAULT_STALE_AFTER
from autogaze_fast.extract.dataset import list_extractions
from autogaze_fast.extract.decode import resolve_decoder
from autogaze_fast.extract.run import DEFAULT_FREQUENCY, extract_features, model_name
from autogaze_fast.extract.sources import list_videos, require_videos
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
    p.add_argument("inputs", nargs="*", help="folders (recursive), globs, or list files (.txt/.csv/.jsonl of paths)")
    p.add_argument("--out", help="output root; results go to OUT/<config-hash>/ (required unless --list)")
    p.add_argument("--list", metavar="OUT", dest="list_out",
                   help="show each config folder under OUT (its hash, settings, videos done) and exit")
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
    p.add_argument("--gazing-ratio", type=float, default=GAZING_RATIO,
                   help="max fraction of a frame's multi-scale tokens gazed (default: %(default)s)")
    p.add_argument("--task-loss-requirement", type=requirement_arg, default=AUTO, help=REQUIREMENT_HELP)
    p.add_argument("--tiles", choices=["anyres", "pad", "resize"], default=TILES,
                   help="gaze and encode frames of any size as 224-px tiles (default: none, squash every frame to a square)")
    p.add_argument("--max-tiles", type=int, default=MAX_TILES, help="most tiles per frame with --tiles (default: %(default)s)")
    p.add_argument("--tile-batch-size", type=int, default=TILE_BATCH_SIZE, help="tiles per model call (default: %(default)s)")
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
    p.add_argument("--batch-clips", type=int, default=None,
                   help="clips per gaze call and per ViT call, across consecutive videos (files equal batch 1's; "
                        "default: 1 on CPU, 8 on CUDA)")
    p.add_argument("--decode-workers", type=int, default=0,
                   help="processes decoding and preprocessing clips ahead (default: 0, in the main process)")
    p.add_argument("--decoder", choices=["auto", "torchcodec", "pyav"], default="pyav",
                   help="video decoder (default: %(default)s; torchcodec needs the [torchcodec] extra)")
    p.add_argument("--claim-stale-s", type=float, default=DEFAULT_STALE_AFTER,
                   help="seconds without a heartbeat after which another run's claim on a video is taken over "
                        "(default: %(default)s)")
    return p


def default_batch_clips(device) -> int:
    """``--batch-clips`` when not given: measured per device (bench/bench_extract.py; see the README)."""
    return 8 if str(device).startswith("cuda") else 1


def list_configs(out: str) -> int:
    """``extract --list OUT``: one line per config folder."""
    entries = list_extractions(out)
    if not entries:
        raise FileNotFoundError(f"no extraction under {out} (expected {out}/<config-hash>/config.json)")
    for e in entries:
        print(f"{e['hash']}  {e['finished']} videos  {e['summary']}")
    return 0


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


def extract_settings(encoder: GazedVideoEncoder, args, model_id: str) -> dict:
    """The settings line: the models' weights, the gaze budget and stop, tiles, frames."""
    if encoder.dense:
        gaze = {"model": "none (--dense: every patch encoded)", "tiles": "none"}
    else:
        gaze = {"model": weights_origin(encoder.gaze_model), "gazing_ratio": f"{encoder.gazing_ratio:g}",
                "task_loss_requirement": describe_requirement(encoder.task_loss_requirement, args.task_loss_requirement,
                                                              encoder.gaze_model),
                "tiles": encoder.tiles or "none (each frame resized to a square)"}
    vision = "random (SigLIP-B/16 shape, seed 0)" if model_id.startswith("random") else args.vision
    return {**gaze, "vision": vision, "frequency": "native" if args.frequency is None else f"{args.frequency:g} Hz",
            "clip_frames": encoder.num_frames, "layers": ",".join(map(str, encoder.layers))}


def run(args) -> int:
    """Run the extraction; 0 when every video succeeded, 1 when some failed."""
    if args.list_out:
        return list_configs(args.list_out)
    if not args.inputs or not args.out:
        raise ValueError("give the inputs and --out OUT (or --list OUT to show what OUT holds)")
    # SIGTERM (a scheduler's kill) unwinds like Ctrl-C, so no temporary file is left behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return _extract(args)
    except KeyboardInterrupt:
        sys.stderr.write(f"\ninterrupted: finished videos are kept in {args.out}; rerun the same command to resume "
                         "(done videos are skipped)\n")
        return 130


def _extract(args) -> int:
    # Cheap checks first: a bad output folder or inputs that name nothing fail before the models load.
    ensure_writable(Path(args.out).expanduser())
    require_videos(args.inputs, list_videos(args.inputs))
    resolve_decoder(args.decoder)
    encoder, model_id = load_encoder(args)
    batch = args.batch_clips if args.batch_clips is not None else default_batch_clips(encoder.device)
    if int(os.environ.get("RANK", "0")) == 0:
        print_settings("extract", {**extract_settings(encoder, args, model_id), "batch_clips": batch})
    summary = extract_features(args.inputs, args.out, encoder=encoder, model_id=model_id, frequency=args.frequency,
                               save_tokens=args.save_tokens, strict=args.strict, progress=not args.quiet,
                               batch_clips=batch, decode_workers=args.decode_workers, decoder=args.decoder,
                               claim_stale_after=args.claim_stale_s)
    if summary.rank == 0:
        print(summary.line())
        print(summary.time_line())
        for record in summary.failures:
            print(f"  failed: {record['video']}: {record['reason']}")
    return 1 if summary.failed else 0
