"""Any resolution, any length (issue 13): speed against upstream's own AnyRes recipe, and memory.

    python bench/bench_anyres.py [--upstream-python /tmp/perturbed-venv/bin/python]
                                 [--upstream-src /tmp/autogaze-upstream] [--threads 1] [--quick]

Writes ``bench/results/anyres.json`` and ``anyres.md``. Every figure comes from one run on the same
machine, each measured in a fresh subprocess (peak RSS = the process's ``VmHWM``, its whole
resident high-water mark: Python, torch, the model, the decoded frames and the gaze state):

1. **Speed** (NVIDIA-shaped model, seeded random weights, ``gazing_ratio=0.75``, no task-loss stop,
   so every frame of every tile gazes 198 tokens): a 16-frame 1920 × 1080 clip, written as an MP4
   by this script, decoded, and put on the AnyRes canvas (5 × 9 = 45 tiles of 224, 1120 × 2016)
   with the model's processor. Upstream's recipe (``rearrange`` into 45 tiles, one batch through
   upstream's model, run with ``--upstream-python``, a scratch interpreter with upstream's
   dependencies: never the project's) against ours on the same canvas, ``tiles=grid``, with all
   45 tiles in one batch, with ``tile_batch_size=8`` and one tile at a time (the single-clip cost
   a batch must beat). The gaze of every tile must be the same
   (non-pad tokens in order, frame by frame).
2. **Memory, 1080p**: ``model.gaze_video(mp4, tiles="anyres")`` (decode → uint8 canvas → tiles
   normalised per batch → gaze) at ``tile_batch_size=8`` against all 45 tiles at once; targets
   ``<= 1 GB`` and ``<= 0.4x``. Its gaze must equal the speed run's.
3. **4K**: a 16-frame 3840 × 2160 MP4 the same way (AnyRes with the default ``max_tiles=64``: 6 × 10
   tiles), ``tile_batch_size=8``; bounded: its peak within 1.25x of the 1080p run's (4x the pixels:
   only the uint8 canvas and the decoder grow with the frame, not the gaze state).
4. **Length**: 1,000 frames at 224 × 224 against 64 frames, streamed from MP4 files; target: peak
   RSS within 10%.

Run it on an idle machine: the timings of a loaded machine are only indicative (the ratios, measured
side by side here, hold better). ``--quick`` shrinks everything for a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memory_probe import status_mb as _status_mb

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GAZING_RATIO = 0.75


def _load_model(work: Path):
    from autogaze_fast import AutoGaze

    return AutoGaze.from_pretrained(work / "model", impl="fast")


def _processor():
    from autogaze_fast.presets import NVIDIA_PREPROCESSING
    from autogaze_fast.processing.autogaze import AutoGazeImageProcessor

    return AutoGazeImageProcessor.from_dict(NVIDIA_PREPROCESSING)


def real_tokens(pos, pads, counts) -> list[list[list[int]]]:
    """Per row, per frame: the non-pad gazed positions in order."""
    counts = [int(c) for c in counts]
    out = []
    for p_row, q_row in zip(pos, pads.bool()):
        out.append([p[~q].tolist() for p, q in zip(p_row.split(counts), q_row.split(counts))])
    return out


# ------------------------------------------------------------------ workers (fresh subprocesses)
def worker_speed(work: Path, tile_batch_size: int, out: Path) -> dict:
    """Ours on the saved canvas with ``tiles=grid`` (the same input upstream gets)."""
    import torch

    from autogaze_fast.tiling.grid import TileGrid

    model = _load_model(work)
    canvas = torch.load(work / "canvas.pt")
    meta = json.loads((work / "meta.json").read_text())
    grid = TileGrid.plan(meta["height"], meta["width"], policy="anyres")
    with torch.inference_mode():
        model({"video": grid.cut(canvas, 0, 1)[:, :2]}, gazing_ratio=GAZING_RATIO, generate_only=True)  # warm-up
        rss_before = _status_mb("VmRSS")
        start = time.perf_counter()
        result = model({"video": canvas}, tiles=grid, tile_batch_size=tile_batch_size, gazing_ratio=GAZING_RATIO)
        seconds = time.perf_counter() - start
    info = result["tile_gazing_info"][0]
    torch.save({k: info[k] for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")}, out)
    return {"seconds": seconds, "tiles": grid.n_tiles, "tile_batch_size": tile_batch_size,
            "rss_before_mb": round(rss_before, 1), "peak_rss_mb": round(_status_mb("VmHWM"), 1)}


def worker_stream(work: Path, video: str, tile_batch_size: int, out: Path | None) -> dict:
    """``model.gaze_video(path)``: decode → canvas → tiles per batch → gaze, clip by clip."""
    import torch

    model = _load_model(work)
    processor = _processor()
    rss_before = _status_mb("VmRSS")
    start = time.perf_counter()
    frames = clips = cells = 0
    infos = []
    grid = None
    for clip in model.gaze_video(str(work / video), processor, tiles="anyres", tile_batch_size=tile_batch_size,
                                 gazing_ratio=GAZING_RATIO, task_loss_requirement=None, keep_frames=False):
        frames, clips, cells, grid = clip.end, clips + 1, cells + len(clip.cells), clip.grid
        if out is not None:
            infos.append({k: clip.tile_gazing_info[k] for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")})
        del clip
    seconds = time.perf_counter() - start
    if out is not None:
        torch.save(infos[0], out)
    return {"seconds": seconds, "frames": frames, "clips": clips, "gazed_cells": cells, "tiles": grid.n_tiles,
            "grid": f"{grid.rows}x{grid.cols}", "tile_batch_size": tile_batch_size,
            "rss_before_mb": round(rss_before, 1), "peak_rss_mb": round(_status_mb("VmHWM"), 1)}


def _run_worker(args: list[str], threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TRITON_INTERPRET="0")
    proc = subprocess.run([sys.executable, __file__, "--worker", *args, "--threads", str(threads)],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ inputs
def make_inputs(work: Path, quick: bool) -> dict:
    """The model folder (upstream's layout, loadable by both), the MP4 clips and the 1080p canvas."""
    import torch
    from safetensors.torch import save_file

    from autogaze_fast.media.synthetic import synthetic_clip
    from autogaze_fast.media.video import read_video, write_video
    from autogaze_fast.presets import nvidia_autogaze_config_dict, random_autogaze
    from autogaze_fast.tiling.grid import TileGrid

    (work / "model").mkdir()
    model = random_autogaze(0, impl="fast")
    (work / "model" / "config.json").write_text(json.dumps(nvidia_autogaze_config_dict()))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(work / "model" / "model.safetensors"),
              metadata={"format": "pt"})
    frames = 4 if quick else 16
    hd = (360, 640) if quick else (1080, 1920)
    uhd = (720, 1280) if quick else (2160, 3840)
    long_frames, short_frames = (48, 16) if quick else (1000, 64)
    write_video(work / "hd.mp4", synthetic_clip(frames, size=hd, seed=13), fps=8)
    write_video(work / "uhd.mp4", synthetic_clip(frames, size=uhd, seed=14), fps=8)
    write_video(work / "long.mp4", synthetic_clip(long_frames, size=224, seed=15), fps=25)
    write_video(work / "short.mp4", synthetic_clip(short_frames, size=224, seed=15), fps=25)
    decoded = read_video(work / "hd.mp4")
    grid = TileGrid.plan(*hd, policy="anyres")
    torch.save(grid.prepare(decoded, _processor()).contiguous(), work / "canvas.pt")
    meta = {"height": hd[0], "width": hd[1], "frames": frames, "uhd": list(uhd), "long_frames": long_frames,
            "short_frames": short_frames, "grid": f"{grid.rows}x{grid.cols}", "tiles": grid.n_tiles}
    (work / "meta.json").write_text(json.dumps(meta))
    return meta


def run_upstream(work: Path, python: str, src: str, threads: int) -> dict:
    out = work / "upstream.pt"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([python, str(HERE / "anyres_upstream.py"), "--upstream-src", src, "--model", str(work / "model"),
                           "--canvas", str(work / "canvas.pt"), "--out", str(out), "--gazing-ratio", str(GAZING_RATIO),
                           "--threads", str(threads)], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"upstream run failed:\n{proc.stderr[-3000:]}")
    return {"file": out}


def same_gaze(a: dict, b: dict) -> tuple[bool, int]:
    """Whether every tile's real tokens (in order, frame by frame) agree; and how many tiles differ."""
    ra = real_tokens(a["gazing_pos"], a["if_padded_gazing"], a["num_gazing_each_frame"])
    rb = real_tokens(b["gazing_pos"], b["if_padded_gazing"], b["num_gazing_each_frame"])
    differ = sum(x != y for x, y in zip(ra, rb)) + abs(len(ra) - len(rb))
    return differ == 0, differ


# ------------------------------------------------------------------ report
def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "anyres.json").write_text(json.dumps(results, indent=2) + "\n")
    s, m = results["speed"], results["memory"]
    meta = results["inputs"]
    lines = [
        "# Any resolution, any length: AnyRes tiles and streamed long videos",
        "",
        f"`python bench/bench_anyres.py` on {results['machine']} ({results['threads']} torch thread(s)), "
        f"{results['date']}. NVIDIA-shaped AutoGaze, seeded random weights, gazing ratio {GAZING_RATIO} "
        "(198 tokens per frame per tile, no task-loss stop). Each figure from a fresh subprocess; "
        "peak RSS is the whole process's VmHWM.",
        "",
        f"## Speed: {meta['frames']} frames of {meta['width']}x{meta['height']}, AnyRes {meta['grid']} = "
        f"{meta['tiles']} tiles of 224",
        "",
        "| run | seconds | per tile-clip | vs upstream | peak RSS |",
        "|---|---:|---:|---:|---:|",
    ]
    up = s.get("upstream")
    for key, name in (("upstream", "upstream recipe (rearrange, one batch)"), ("ours_all", "ours, all tiles in one batch"),
                      ("ours_tb8", "ours, tile_batch_size=8"), ("ours_tb1", "ours, one tile at a time (single-clip cost)")):
        r = s.get(key)
        if r is None:
            lines.append(f"| {name} | not run | | | |")
            continue
        ratio = f"{up['seconds'] / r['seconds']:.2f}x" if up else "n/a"
        per_tile = r["seconds"] / meta["tiles"]
        lines.append(f"| {name} | {r['seconds']:.1f} | {per_tile:.2f} s | {ratio} | {r['peak_rss_mb']:.0f} MB |")
    lines += ["", f"Exact gaze on every tile: {results['exact']}", ""]
    lines += [
        "## Memory",
        "",
        "| run | frames | tiles | seconds | peak RSS | RSS before the gaze |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, name in (("hd_tb8", "1080p stream, tile_batch_size=8"), ("hd_all", "1080p stream, all tiles at once"),
                      ("uhd_tb8", "4K stream, tile_batch_size=8"), ("short", f"{meta['short_frames']} frames at 224"),
                      ("long", f"{meta['long_frames']} frames at 224")):
        r = m[key]
        lines.append(f"| {name} | {r['frames']} | {r['grid']} = {r['tiles']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} MB | "
                     f"{r['rss_before_mb']:.0f} MB |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in results["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |")
    (out / "anyres.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream-python", default=os.environ.get("AUTOGAZE_UPSTREAM_PYTHON", "/tmp/perturbed-venv/bin/python"))
    parser.add_argument("--upstream-src", default=os.environ.get("AUTOGAZE_UPSTREAM_SRC", "/tmp/autogaze-upstream"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test (report in --out)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default bench/results; with --quick a temporary folder)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        kind, work, *rest = args.worker
        work = Path(work)
        if kind == "speed":
            result = worker_speed(work, int(rest[0]), Path(rest[1]))
        else:
            result = worker_stream(work, rest[0], int(rest[1]), Path(rest[2]) if len(rest) > 2 else None)
        print(json.dumps(result))
        return

    import platform

    import torch

    with tempfile.TemporaryDirectory(prefix="bench_anyres_") as tmp:
        work = Path(tmp)
        print("making the inputs ...", flush=True)
        meta = make_inputs(work, args.quick)
        n = meta["tiles"]
        speed, memory = {}, {}
        have_upstream = Path(args.upstream_python).exists() and Path(args.upstream_src, "autogaze").is_dir()
        if have_upstream:
            print("upstream recipe ...", flush=True)
            run_upstream(work, args.upstream_python, args.upstream_src, args.threads)
            up = torch.load(work / "upstream.pt")
            speed["upstream"] = {k: up[k] for k in ("seconds", "peak_rss_mb", "rss_before_mb")}
            speed["upstream"]["torch"] = up["torch"]
        for key, tb in (("ours_all", n), ("ours_tb8", 8), ("ours_tb1", 1)):
            print(f"ours, tile_batch_size={tb} ...", flush=True)
            speed[key] = _run_worker(["speed", str(work), str(tb), str(work / f"{key}.pt")], args.threads)
        for key, video, tb in (("hd_tb8", "hd.mp4", 8), ("hd_all", "hd.mp4", n), ("uhd_tb8", "uhd.mp4", 8),
                               ("short", "short.mp4", 8), ("long", "long.mp4", 8)):
            print(f"stream {key} ...", flush=True)
            extra = [str(work / f"{key}.pt")] if key.startswith("hd") else []
            memory[key] = _run_worker(["stream", str(work), video, str(tb), *extra], args.threads)

        reference = torch.load(work / "ours_all.pt")
        exact = {}
        for key in ("ours_tb8", "ours_tb1", "hd_tb8", "hd_all"):
            ok, differ = same_gaze(reference, torch.load(work / f"{key}.pt"))
            exact[f"{key} vs ours_all"] = "yes" if ok else f"NO ({differ} tiles differ)"
        if have_upstream:
            ok, differ = same_gaze(reference, up)
            exact["ours_all vs upstream"] = "yes" if ok else f"NO ({differ} of {n} tiles differ)"

    targets = []
    if have_upstream:
        for key in ("ours_all", "ours_tb8"):
            ratio = speed["upstream"]["seconds"] / speed[key]["seconds"]
            targets.append({"target": f"{key}: >= 5x upstream's recipe (goal; floor 3x)", "measured": f"{ratio:.2f}x",
                            "met": ratio >= 5, "floor_met": ratio >= 3})
    batched = speed["ours_all"]["seconds"] / speed["ours_tb1"]["seconds"]
    targets.append({"target": f"per-clip cost of a {n}-tile batch well below the single-clip cost",
                    "measured": f"{speed['ours_all']['seconds'] / n:.2f} s vs {speed['ours_tb1']['seconds'] / n:.2f} s "
                                f"per tile-clip ({batched:.2f}x)", "met": batched <= 0.85})
    tb8, everything = memory["hd_tb8"]["peak_rss_mb"], memory["hd_all"]["peak_rss_mb"]
    targets.append({"target": "1080p peak RSS at tile_batch_size=8 <= 1 GB", "measured": f"{tb8:.0f} MB", "met": tb8 <= 1024})
    targets.append({"target": "... and <= 0.4x all tiles at once", "measured": f"{tb8 / everything:.2f}x ({everything:.0f} MB)",
                    "met": tb8 <= 0.4 * everything})
    uhd = memory["uhd_tb8"]["peak_rss_mb"]
    targets.append({"target": "4K 16 frames in bounded memory: peak <= 1.25x the 1080p one at tile_batch_size=8 "
                              "(4x the pixels)", "measured": f"{uhd:.0f} MB = {uhd / tb8:.2f}x", "met": uhd <= 1.25 * tb8})
    growth = memory["long"]["peak_rss_mb"] / memory["short"]["peak_rss_mb"]
    targets.append({"target": f"{meta['long_frames']} frames within 10% of {meta['short_frames']} frames (peak RSS)",
                    "measured": f"{growth:.3f}x", "met": growth <= 1.10})
    targets.append({"target": "exact gaze on every tile", "measured": "; ".join(f"{k}: {v}" for k, v in exact.items()),
                    "met": all(v == "yes" for v in exact.values())})
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "threads": args.threads, "quick": args.quick, "torch": torch.__version__, "inputs": meta,
        "speed": speed, "memory": memory, "exact": exact, "targets": targets,
    }
    out = args.out or (Path(tempfile.gettempdir()) / "bench_anyres_quick" if args.quick else RESULTS)
    write_report(results, out)
    print((out / "anyres.md").read_text())


if __name__ == "__main__":
    main()
