"""Gazed Qwen2.5-VL vision tower (issue 23): tower time against the fraction of merge units kept, beside the dense tower.

    python bench/bench_qwen_tower.py [--depth 8] [--frames 4] [--size 336] [--repeats 3] [--threads N] [--device cpu]

One run, side by side: a tower with Qwen2.5-VL-7B's vision widths (hidden 1280, 16 heads of 80, SwiGLU
3420, out 3584, window 112 px = 4 x 4 units, full attention in every 8th block) and seeded random
weights, its depth reduced from 32 to ``--depth`` (default 8, so one full-attention block, index 7) to
fit a CPU, encodes one clip of ``--frames`` frames at ``--size`` x ``--size`` (default 4 x 336 x 336:
grid (2, 24, 24), 288 units). "dense" is ``keep=None`` (every unit, transformers' output); the gazed
rows keep a random 10 / 25 / 50 / 100 % of the units (only those are embedded and run); the dense
tower is re-timed beside every row, so both figures of a row share the machine's load. Prints a
markdown table, median of ``--repeats`` after one warm-up. Figures on a shared machine are indicative.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autogaze_fast.processing.qwen_patches import patchify_frames
from autogaze_fast.vit.qwen2_5_vl import Qwen25VisionConfig, Qwen25VisionTransformer

FRACTIONS = (0.10, 0.25, 0.50, 1.00)


def tower(depth: int, device: str) -> Qwen25VisionTransformer:
    cfg = Qwen25VisionConfig(depth=depth, hidden_size=1280, num_heads=16, intermediate_size=3420, out_hidden_size=3584,
                             window_size=112, fullatt_block_indexes=list(range(7, depth, 8)))
    torch.manual_seed(0)
    model = Qwen25VisionTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
        for block in model.blocks:
            block.norm1.weight.fill_(1.0)
            block.norm2.weight.fill_(1.0)
        model.merger.ln_q.weight.fill_(1.0)
    return model.to(device).eval()


def timed(fn, repeats: int, device: str) -> float:
    def run():
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, default=8, help="blocks (Qwen2.5-VL has 32; full attention every 8th)")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--size", type=int, default=336, help="frame side in pixels, a multiple of 28")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.size % 28:
        raise SystemExit(f"--size {args.size} must be a multiple of 28 (patch 14 x merge 2)")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = tower(args.depth, args.device)
    frames = torch.randn(args.frames, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    rows, grid = patchify_frames(frames)
    rows, grid_thw = rows.to(args.device), torch.tensor([grid])
    units = grid[0] * (grid[1] // 2) * (grid[2] // 2)
    print(f"Qwen2.5-VL-7B vision widths, depth {args.depth} of 32 (full attention in blocks "
          f"{model.config.fullatt_block_indexes}), fp32, {args.device}, {torch.get_num_threads()} threads; "
          f"{args.frames} frames at {args.size}x{args.size}: grid {grid}, {units} units; median of {args.repeats}\n")
    print("| units kept | kept % | patch rows | dense ms (keep=None) | gazed ms | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|")
    with torch.inference_mode():
        for _ in range(2):  # the first dense calls are slower (allocator warming up): keep them out of every row
            model(rows, grid_thw)
        for fraction in FRACTIONS:
            keep = torch.zeros(units, dtype=torch.bool)
            keep[torch.randperm(units, generator=torch.Generator().manual_seed(2))[:max(1, round(units * fraction))]] = True
            keep = keep.to(args.device)
            t_dense = timed(lambda: model(rows, grid_thw), args.repeats, args.device)  # re-timed per row: same load
            t_kept = timed(lambda: model(rows, grid_thw, keep), args.repeats, args.device)
            kept = int(keep.sum())
            print(f"| {kept} | {fraction:.0%} | {kept * 4} | {t_dense * 1e3:.0f} | {t_kept * 1e3:.0f} | "
                  f"{t_dense / t_kept:.2f}x |")


if __name__ == "__main__":
    main()
