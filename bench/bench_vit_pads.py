"""Pads physically dropped (issue 21): gazed encode time against the real-token count at a fixed padded length.

    python bench/bench_vit_pads.py [--layers 12] [--repeats 3] [--threads N] [--family siglip|clip|dinov2]

One run, side by side: a SigLIP-B/16-shaped gazed tower (seeded random weights; ``--family`` swaps in a
CLIP-B/16- or DINOv2-B/14-shaped one on the same core) encodes one 16-frame clip whose gaze has 198 slots
per frame (3,168 in all: AutoGaze's 0.75 budget of 265 cells), of which 10 / 25 / 50 / 100 % are real and
the rest pads (a task-loss stop that leaves the budget unused). "padded" is today's run (every slot goes
through every projection and MLP, pads masked as keys); "dropped" removes the pads before the first block
(``drop_pads=True``, what the encoder does). Real tokens' outputs are checked equal (1e-4) in the same run.
Prints a markdown table (median of ``--repeats`` after one warm-up). Figures on a shared machine are
indicative only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autogaze_fast.presets import random_siglip
from autogaze_fast.siglip_config import SiglipVisionConfig
from autogaze_fast.vit.clip import ClipVisionTransformer
from autogaze_fast.vit.config import VitConfig
from autogaze_fast.vit.dinov2 import Dinov2VisionTransformer

FRAMES, SLOTS = 16, 198
FRACTIONS = (0.10, 0.25, 0.50, 1.00)


def tower(family: str, layers: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "siglip":
        model = random_siglip(0, impl="fast")
        model.vision_model.encoder.layers = model.vision_model.encoder.layers[:layers]
        model.config.num_hidden_layers = layers
        return model.vision_model
    patch = 16 if family == "clip" else 14
    cfg = VitConfig(family=family, model_type="clip_vision_model" if family == "clip" else "dinov2",
                    num_hidden_layers=layers, patch_size=patch, image_size=224,
                    scales=[32, 64, 112, 224] if patch == 16 else [28, 56, 98, 196],
                    hidden_act="quick_gelu" if family == "clip" else "gelu",
                    layer_norm_eps=1e-5 if family == "clip" else 1e-6)
    model = (ClipVisionTransformer if family == "clip" else Dinov2VisionTransformer)(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.eval()


def gaze(fraction: float, tokens_per_frame: int) -> dict:
    """16 frames × 198 slots; the first ``fraction`` of each frame's slots real, the rest pads."""
    g = torch.Generator().manual_seed(0)
    real = max(1, round(SLOTS * fraction))
    pos, pad = [], []
    for t in range(FRAMES):
        cells = torch.randperm(tokens_per_frame, generator=g)[:SLOTS] + t * tokens_per_frame
        flag = torch.arange(SLOTS) >= real
        pos.append(torch.where(flag, torch.full_like(cells, -1), cells))
        pad.append(flag)
    return {"gazing_pos": torch.cat(pos)[None], "if_padded_gazing": torch.cat(pad)[None],
            "num_gazing_each_frame": torch.full((FRAMES,), SLOTS)}


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=12, help="encoder layers (12 = the B/16 tower)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--family", choices=("siglip", "clip", "dinov2"), default="siglip")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = tower(args.family, args.layers)
    cfg = model.config
    side = cfg.scales[-1]
    video = torch.randn(1, FRAMES, 3, side, side, generator=torch.Generator().manual_seed(1))
    kind = "SigLIP-B/16" if isinstance(cfg, SiglipVisionConfig) else f"{args.family}-B/{cfg.patch_size}"
    print(f"{kind}-shaped tower, {args.layers} layers, fp32, CPU, {torch.get_num_threads()} threads; 16 frames x 198 "
          f"slots = {FRAMES * SLOTS} per clip; median of {args.repeats}\n")
    print("| real tokens | real % | padded (today) ms | pads dropped ms | speed-up |")
    print("|---:|---:|---:|---:|---:|")
    with torch.inference_mode():
        for fraction in FRACTIONS:
            info = gaze(fraction, cfg.tokens_per_frame)
            keep = ~info["if_padded_gazing"]
            t_pad, a = timed(lambda: model(video, info), args.repeats)
            t_drop, b = timed(lambda: model(video, info, drop_pads=True), args.repeats)
            err = (a.last_hidden_state[keep] - b.last_hidden_state[keep]).abs().max().item()
            if err > 1e-4:
                raise SystemExit(f"real tokens differ by {err:.2e} at {fraction:.0%} real")
            print(f"| {int(keep.sum())} | {fraction:.0%} | {t_pad * 1e3:.0f} | {t_drop * 1e3:.0f} | {t_pad / t_drop:.2f}x |")


if __name__ == "__main__":
    main()
