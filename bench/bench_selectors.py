"""Each gaze selector's cost per 16-frame clip, at 224 and at 1080p AnyRes, beside the ViT's (issue 22).

    python bench/bench_selectors.py [--ratio 0.1] [--threads 1] [--repeats 3] [--quick]

Writes ``bench/results/selectors.json`` and ``selectors.md`` and prints the markdown table. Every
figure is the best of ``--repeats`` timings in this one process, fp32, CPU unless CUDA is there:

* 224: a 16-frame synthetic clip through NVIDIA's AutoGaze preprocessing; each heuristic selector as
  the model is called (``SelectorGazer`` on the processed clip), and the NVIDIA-shaped AutoGaze with
  seeded random weights (fast impl), at ``gazing_ratio=--ratio`` (26 tokens a frame at 0.1).
* 1080p AnyRes: a 16-frame 1920 × 1080 clip on the AnyRes canvas (5 × 9 = 45 tiles of 224, one
  batch of 45 tiles for the heuristics); AutoGaze on a batch of 8 tiles, scaled by 45 / 8 (tiles are
  gazed independently; ``--quick`` skips it).
* The ViT: SigLIP-B/16 (random weights) at the same scales, gazed with the uniform selector's cells at
  the same ratio, and dense (all 265 multi-scale tokens a frame), on one 224 clip; at 1080p that
  cost times 45 (every tile-clip is encoded on its own).

Canvas making (decode, resize, normalise) is left out of every row: it is the same for all of them.
On a shared machine the figures are indicative only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from autogaze_fast.media.synthetic import synthetic_clip
from autogaze_fast.presets import NVIDIA_PREPROCESSING, random_autogaze, random_siglip
from autogaze_fast.processing.autogaze import AutoGazeImageProcessor
from autogaze_fast.processing.siglip import SiglipImageProcessor
from autogaze_fast.selectors import HEURISTICS, SelectorGazer
from autogaze_fast.tiling.grid import TileGrid

RESULTS = Path(__file__).parent / "results"


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat, no AutoGaze at 1080p")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    processor = AutoGazeImageProcessor.from_dict(NVIDIA_PREPROCESSING)
    clip = synthetic_clip(16, 224)
    video = processor(clip).pixel_values[None]  # (1, 16, 3, 224, 224)
    wide = synthetic_clip(16, (1080, 1920))
    grid = TileGrid.plan(1080, 1920, policy="anyres")
    tiles = grid.cut(grid.prepare(wide, processor))  # (45, 16, 3, 224, 224)
    rows = []
    for name in HEURISTICS:
        gazer = SelectorGazer(name)
        at_224 = best_of(lambda: gazer({"video": video}, gazing_ratio=args.ratio), repeats)
        at_1080 = best_of(lambda: gazer({"video": tiles}, gazing_ratio=args.ratio), repeats)
        rows.append({"what": name, "s_224": at_224, "s_1080p": at_1080, "note": ""})
        print(rows[-1], flush=True)
    model = random_autogaze()
    at_224 = best_of(lambda: model({"video": video}, gazing_ratio=args.ratio, generate_only=True), repeats)
    at_1080 = None
    if not args.quick:
        at_1080 = best_of(lambda: model({"video": tiles[:8]}, gazing_ratio=args.ratio, generate_only=True), 1) * 45 / 8
    rows.append({"what": "autogaze (NVIDIA shape, random weights)", "s_224": at_224, "s_1080p": at_1080,
                 "note": "1080p: 8 tiles x 45/8"})
    print(rows[-1], flush=True)
    siglip = random_siglip()
    pixels = SiglipImageProcessor.for_vision_model(siglip)(clip).pixel_values[None]
    gaze = SelectorGazer("uniform")({"video": video}, gazing_ratio=args.ratio)
    n = 265
    pos = torch.arange(16 * n)[None]
    dense = {"gazing_pos": pos, "if_padded_gazing": torch.zeros_like(pos, dtype=torch.bool),
             "num_gazing_each_frame": torch.full((16,), n)}
    for label, info in ((f"ViT: SigLIP-B/16 gazed, {int(args.ratio * n)} tokens/frame", gaze),
                        (f"ViT: SigLIP-B/16 dense, {n} tokens/frame", dense)):
        seconds = best_of(lambda: siglip(pixels, gazing_info=info), repeats)
        rows.append({"what": label, "s_224": seconds, "s_1080p": seconds * 45, "note": "1080p: one tile-clip x 45"})
        print(rows[-1], flush=True)
    lines = [f"| per 16-frame clip, gazing ratio {args.ratio:g} | 224 (1 tile) | per frame | 1080p AnyRes (45 tiles) | note |",
             "|---|---:|---:|---:|---|"]
    for r in rows:
        big = "–" if r["s_1080p"] is None else f"{r['s_1080p']:.2f} s"
        lines.append(f"| {r['what']} | {1000 * r['s_224']:.1f} ms | {1000 * r['s_224'] / 16:.2f} ms | {big} | {r['note']} |")
    table = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "selectors.md").write_text(table)
    (RESULTS / "selectors.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")
    print(table)


if __name__ == "__main__":
    main()
