"""Qwen3-VL vision tower: time against the fraction of merge units kept, beside the dense tower, one run.

    python bench/bench_qwen3_vl.py [--depth 4] [--frames 8] [--side 256] [--repeats 3] [--threads N] [--device cpu]

Seeded random weights at Qwen3-VL-2B's tower width (hidden 1024, 16 heads, MLP 4096, out 2048;
``--depth`` blocks, deepstack taps at a third and two thirds of them); one clip of ``--frames``
frames at ``--side``² (patch 16, so ``(frames/2) · (side/32)²`` units). Rows: the dense tower
(``keep=None``), then ``keep`` with 100 / 50 / 25 / 10 % of the units (random, seeded), each the
median of ``--repeats`` runs after a warm-up. Prints a markdown table. The machine's load changes
the absolute figures; the ratios, measured side by side, hold better.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autogaze_fast.vit.qwen3_vl import Qwen3VLVisionTower
from autogaze_fast.vit.qwen3_vl_config import Qwen3VLVisionConfig

FRACTIONS = (1.0, 0.5, 0.25, 0.1)


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    depth = args.depth
    config = Qwen3VLVisionConfig(depth=depth, hidden_size=1024, num_heads=16, intermediate_size=4096,
                                 out_hidden_size=2048, deepstack_visual_indexes=sorted({depth // 3, 2 * depth // 3}))
    torch.manual_seed(0)
    tower = Qwen3VLVisionTower(config).to(device).eval()
    grid = torch.tensor([[args.frames // 2, args.side // 16, args.side // 16]], device=device)
    rows = torch.randn(int(grid.prod()), config.patch_dim, device=device)
    units = rows.shape[0] // 4
    gen = torch.Generator().manual_seed(1)
    order = torch.randperm(units, generator=gen)
    results = []
    with torch.no_grad():
        dense = timed(lambda: tower(rows, grid), args.repeats, device)
        results.append(("dense (keep=None)", units, dense))
        for frac in FRACTIONS:
            keep = torch.zeros(units, dtype=torch.bool)
            keep[order[: max(1, round(frac * units))]] = True
            keep = keep.to(device)
            results.append((f"{frac:.0%} kept", int(keep.sum()), timed(lambda: tower(rows, grid, keep),
                                                                     args.repeats, device)))
    print(f"Qwen3-VL tower, depth {depth}, hidden 1024, clip {args.frames} x {args.side}^2 (grid "
          f"{tuple(grid[0].tolist())}, {units} units), {device}, {torch.get_num_threads()} threads\n")
    print("| run | units | time (ms) | vs dense |")
    print("|---|---:|---:|---:|")
    for name, n, t in results:
        print(f"| {name} | {n} | {t * 1e3:.1f} | {dense / t:.2f}x |")


if __name__ == "__main__":
    main()
