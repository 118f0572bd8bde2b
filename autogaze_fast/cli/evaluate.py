"""``autogaze-fast evaluate VIDEOS... --selectors ... --budgets ...``: gaze selectors side by side at
equal token budgets (see :mod:`autogaze_fast.evaluate.run`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from autogaze_fast.cli.common import DEFAULT_MODEL, checkpoint_or_random, warn
from autogaze_fast.cli.gaze import load_model_and_processor
from autogaze_fast.evaluate import Evaluator, Video
from autogaze_fast.extract.sources import list_videos
from autogaze_fast.extract.store import ensure_writable
from autogaze_fast.presets import random_siglip
from autogaze_fast.processing.siglip import SiglipImageProcessor
from autogaze_fast.selectors import SELECTORS
from autogaze_fast.siglip import SiglipVisionModel
from autogaze_fast.train.mae.loading import mae_video_processor
from autogaze_fast.train.mae.task import MAEReconstructionTask

DEFAULT_SELECTORS = "autogaze,uniform,random,frame-difference,run-length,motion-vectors"


def names(text: str) -> list[str]:
    out = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in out if s not in SELECTORS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"unknown selector(s) {bad}; choose from {', '.join(SELECTORS)}")
    return out


def ratios(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"budgets are comma-separated gazing ratios such as 0.05,0.1, got {text!r}") from None
    if not out or not all(0 < x <= 1 for x in out):
        raise argparse.ArgumentTypeError(f"every budget must be a gazing ratio in (0, 1], got {text!r}")
    return out


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate", help="rank gaze selectors at equal token budgets (CSV, JSON, markdown table, PNG plot; resumable)",
        description="Per video x selector x budget: real tokens kept, selector ms per frame, interframe PSNR (kept "
                    "cells refreshed at their scale's resolution, the rest stale), with --vision the gazed ViT's ms per "
                    "frame and the cosine of gazed against dense pooled features, with --task-weights/--recon-model "
                    "the gazed MAE's reconstruction loss. A rerun skips finished rows.")
    p.add_argument("videos", nargs="+", help="video files, folders (recursive), globs or list files")
    p.add_argument("--out", required=True, help="output folder (rows.jsonl, results.csv/.json/.md, plot.png)")
    p.add_argument("--selectors", type=names, default=names(DEFAULT_SELECTORS), help="comma-separated (default: all)")
    p.add_argument("--budgets", type=ratios, default=ratios("0.05,0.1,0.25,0.5"),
                   help="comma-separated gazing ratios (default: 0.05,0.1,0.25,0.5)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="AutoGaze checkpoint for the autogaze selector and the layout")
    p.add_argument("--allow-random", action="store_true",
                   help="use a seeded RANDOM AutoGaze (and SigLIP with --vision random) when a checkpoint cannot be had: "
                        "its curve is meaningless")
    p.add_argument("--vision", default=None, help="SigLIP checkpoint dir / hub id ('random' for a seeded random SigLIP-B/16): "
                                                  "adds the ViT's time and the feature cosine")
    p.add_argument("--recon-model", default=None, help="the MAE (ViTMAEForPreTraining dir / hub id) for the task metric")
    p.add_argument("--task-weights", default=None, help="upstream's videomae.pt for the MAE (with --recon-model)")
    p.add_argument("--clip-frames", type=int, default=16, help="frames per clip (default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each video")
    p.add_argument("--seed", type=int, default=0, help="the random selector's seed")
    p.add_argument("--plot-metric", choices=["psnr_db", "feature_cosine", "mae_loss"], default="psnr_db",
                   help="the plot's y axis (default: %(default)s)")
    p.add_argument("--impl", choices=["reference", "fast"], default=None, help="implementation of the models")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def mae_metric(recon_model: str, task_weights: str | None, scales: list[int], impl: str | None):
    """The gazed MAE's reconstruction loss of a clip (upstream's task metric), every frame reconstructed."""
    task = MAEReconstructionTask.from_pretrained(recon_model, scales="+".join(map(str, scales)), task_weights=task_weights,
                                                 max_num_frames=16, loss_type="l1", loss_weights="1", impl=impl).eval()
    processor = mae_video_processor(recon_model, scales[-1])

    def metric(clip, gaze) -> float:
        video = processor(clip).pixel_values[None]
        with torch.inference_mode():
            out = task(video, gaze, frame_idx=torch.arange(video.shape[1]))
        return float(out.loss.mean())

    return metric


def run(args) -> int:
    ensure_writable(Path(args.out).expanduser())
    videos = [Video(v.id, v.path) for v in list_videos(args.videos)]
    if args.task_weights is not None and args.recon_model is None:
        raise ValueError("--task-weights needs --recon-model (the MAE those weights belong to)")
    model = processor = None
    settings = {}
    is_random = False
    if "autogaze" in args.selectors or args.model != DEFAULT_MODEL:
        model, processor, is_random = load_model_and_processor(args.model, args.impl, allow_random=args.allow_random)
        settings["model"] = "random:nvidia-autogaze:seed0" if is_random else str(args.model)
    vision = vision_processor = None
    if args.vision is not None:
        scales = model.scales if model is not None else [32, 64, 112, 224]
        vision, _ = checkpoint_or_random(
            lambda: SiglipVisionModel.from_pretrained(args.vision, scales=scales, impl=args.impl),
            lambda: random_siglip(0, impl=args.impl, scales=scales),
            allow_random=args.allow_random or args.vision == "random", what=f"'{args.vision}'",
            refusal="\nPass --vision with a local SigLIP checkpoint, or --vision random",
            fallback="Using a RANDOMLY INITIALISED SigLIP-B/16 (seed 0): the feature cosines are MEANINGLESS.")
        vision_processor = SiglipImageProcessor.for_vision_model(vision)
        settings["vision"] = str(args.vision)
    metrics = {}
    if args.recon_model is not None:
        scales = model.scales if model is not None else [32, 64, 112, 224]
        metrics["mae_loss"] = mae_metric(args.recon_model, args.task_weights, scales, args.impl)
        settings["recon_model"], settings["task_weights"] = str(args.recon_model), str(args.task_weights)
    if is_random and "autogaze" in args.selectors:
        warn("The autogaze rows come from a RANDOMLY INITIALISED model: its curve means nothing (the heuristics' do).")
    evaluator = Evaluator(args.selectors, args.budgets, model=model, processor=processor, vision=vision,
                          vision_processor=vision_processor, metrics=metrics, clip_frames=args.clip_frames,
                          max_frames=args.max_frames, seed=args.seed, settings=settings)
    result = evaluator.run(videos, args.out, progress=not args.quiet, plot_metric=args.plot_metric)
    print(f"evaluate: {result['done']} row(s) computed, {result['skipped']} skipped (done before), "
          f"{len(result['failed'])} video(s) failed")
    for video, reason in result["failed"].items():
        print(f"  failed: {video}: {reason}")
    if result["paths"]:
        print(Path(result["paths"]["md"]).read_text(), end="")
        print("wrote " + ", ".join(str(p) for p in result["paths"].values()))
    return 1 if result["failed"] else 0


__all__ = ["add_parser", "run"]
