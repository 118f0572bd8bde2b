"""Pictures of a gaze on the source frames, for ``autogaze-fast gaze``: the tiled gaze
(``--tiles anyres|pad|resize``) drawn on the full-resolution frames, and the interframe view
(``--view interframe``, see :mod:`autogaze_fast.interframe`).

Both work from gazed cells as boxes in source pixels: a tiled gaze reports them itself
(``out["cells"]``); an untiled gaze's masks are turned into boxes through the one-tile
``"resize"`` plan (the squash the model applies).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .tiling import TileGrid

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class SourceCells:
    """Gazed cells of a whole video in source pixels (M cells).

    Attributes:
        frame: (M,) int64 frame index in the video.
        scale: (M,) int64 scale index (0 = coarsest).
        box: (M, 4) float32 ``(x0, y0, x1, y1)`` in source pixels, x1/y1 exclusive.
        scales: the scale sizes, coarsest first (tile-local, e.g. [32, 64, 112, 224]).
        tokens_per_frame: gazeable tokens per frame (per-tile N times the tiles, less the tokens
            wholly in the ``"pad"`` policy's padding).
    """

    frame: np.ndarray
    scale: np.ndarray
    box: np.ndarray
    scales: list[int]
    tokens_per_frame: int

    def counts(self, num_frames: int) -> list[int]:
        """Gazed cells per frame, ``(T,)`` as a list."""
        return np.bincount(self.frame, minlength=num_frames).tolist()


def _concat(parts: list, frame_offsets: list[int], scales: list[int], tokens_per_frame: int) -> SourceCells:
    frame = [p.frame.numpy() + off for p, off in zip(parts, frame_offsets)]
    return SourceCells(
        frame=np.concatenate(frame).astype(np.int64) if frame else np.zeros(0, np.int64),
        scale=np.concatenate([p.scale.numpy() for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64),
        box=np.concatenate([p.box.numpy() for p in parts]).astype(np.float32) if parts else np.zeros((0, 4), np.float32),
        scales=list(scales),
        tokens_per_frame=tokens_per_frame,
    )


def plan_tiles(model, height: int, width: int, policy: str, max_tiles: int | None) -> TileGrid:
    """The model's tile plan for ``height × width`` frames (tiles of its largest scale)."""
    from .tiled_gaze import tile_layout
    from .tiling import DEFAULT_MAX_TILES

    tile, patch = tile_layout(model.config, None, None)
    return TileGrid.plan(height, width, tile, policy, DEFAULT_MAX_TILES if max_tiles is None else max_tiles, patch)


def gaze_tiled(model, processor, frames: np.ndarray, grid: TileGrid, *, chunk_frames: int | None,
               tile_batch_size: int, progress: bool, **gaze_kwargs) -> tuple[SourceCells, float]:
    """Gaze ``(T, H, W, 3)`` uint8 frames tile by tile, chunk by chunk (one chunk's canvas in memory).

    Returns the gazed cells of the whole video in source pixels, and the seconds spent in the model.
    """
    from .chunking import Progress, chunk_bounds

    bounds = chunk_bounds(frames.shape[0], chunk_frames or model.config.max_num_frames)
    bar = Progress(len(bounds), "gazing", enabled=progress)
    parts, seconds = [], 0.0
    for start, end in bounds:
        canvas = grid.prepare(frames[start:end], processor)
        begin = time.perf_counter()
        with torch.inference_mode():
            out = model({"video": canvas}, tiles=grid, tile_batch_size=tile_batch_size, **gaze_kwargs)
        seconds += time.perf_counter() - begin
        parts.append(out["cells"])
        bar.update()
    sides = [math.isqrt(n) for n in model.config.tokens_per_scale]
    gazeable = int((~grid.padded_tokens(sides)).sum())  # tokens of every tile, less those wholly in padding
    return _concat(parts, [s for s, _ in bounds], model.scales, gazeable), seconds


def untiled_cells(model, outputs: list[dict], height: int, width: int) -> SourceCells:
    """Cells of an untiled gaze (chunks of ``AutoGaze`` outputs, batch 1) as source-pixel boxes:
    the masks laid over the whole frame through the one-tile ``"resize"`` plan."""
    grid = plan_tiles(model, height, width, "resize", 1)
    parts, offsets, start = [], [], 0
    for out in outputs:
        parts.append(grid.cells(grid.stitch([m[:1] for m in out["gazing_mask"]])))
        offsets.append(start)
        start += out["gazing_mask"][0].shape[1]
    return _concat(parts, offsets, model.scales, int(model.config.num_vision_tokens_each_frame))


def save_frames(path: str, frames: np.ndarray) -> None:
    """A PNG/JPEG grid of the frames, or a video / GIF, by the suffix of ``path``."""
    from .visualize import save_gaze_grid, save_gaze_video

    if Path(path).suffix.lower() in PICTURE_SUFFIXES:
        save_gaze_grid(path, frames)
    else:
        save_gaze_video(path, frames)


def csv_path(out: str) -> Path:
    """Where the interframe CSV goes: next to ``out``, same stem, ``.csv``."""
    return Path(out).with_suffix(".csv")


def interframe_view(frames: np.ndarray, cells: SourceCells, keyframe_every: int) -> dict:
    """The interframe stream of ``frames`` (T, H, W, 3) uint8 under ``cells``, its scores and labelled pictures.

    Returns:
        dict with ``stream`` (T, H, W, 3) uint8, ``pictures`` (the stream with frame number,
        PSNR, EMA and gazed fraction written on each frame), ``psnr``, ``psnr_ema``,
        ``gazed_fraction`` (T,) float64 and ``keyframe`` (T,) bool.
    """
    from .interframe import PSNR_EMA_FACTOR, gazed_fraction, interframe_stream, is_keyframe, psnr, psnr_ema
    from .visualize import cells_pixel_mask, label_lines

    t, h, w, _ = frames.shape
    masks = cells_pixel_mask(cells.frame, cells.box, t, h, w)
    stream = interframe_stream(frames, masks, keyframe_every)
    values = np.array([psnr(stream[i], frames[i]) for i in range(t)])
    ema = psnr_ema(values)
    fraction = gazed_fraction(masks)
    key = is_keyframe(t, keyframe_every)

    def db(v: float, exact: str) -> str:
        return f"{v:.1f} dB" if math.isfinite(v) else exact

    lines = [[f"frame {i}" + (" keyframe" if key[i] else ""), f"PSNR {db(values[i], 'inf (exact)')}",
              f"EMA({PSNR_EMA_FACTOR:g}) {db(ema[i], 'n/a')}", f"gazed {fraction[i]:.0%}"] for i in range(t)]
    pictures = label_lines(stream.copy(), lines)
    return {"stream": stream, "pictures": pictures, "psnr": values, "psnr_ema": ema,
            "gazed_fraction": fraction, "keyframe": key}


def run_views(model, processor, frames: np.ndarray, args) -> int:
    """``autogaze-fast gaze`` with ``--tiles`` and/or ``--view interframe``: gaze, report, write pictures."""
    from .cli import report, run_gaze
    from .interframe import PSNR_EMA_FACTOR, write_interframe_csv
    from .visualize import cells_overlay

    t, h, w, _ = frames.shape
    kwargs = dict(gazing_ratio=args.gazing_ratio, task_loss_requirement=args.task_loss_requirement)
    if args.tiles is not None:
        grid = plan_tiles(model, h, w, args.tiles, args.max_tiles)
        print(f"tiles: {args.tiles}, {grid.rows}x{grid.cols} = {grid.n_tiles} tile{'s' * (grid.n_tiles > 1)} of {grid.tile_size} px "
              f"(canvas {grid.canvas_h}x{grid.canvas_w}, source {h}x{w}), {args.tile_batch_size} tiles per batch")
        cells, seconds = gaze_tiled(model, processor, frames, grid, chunk_frames=args.chunk_frames,
                                    tile_batch_size=args.tile_batch_size, progress=not args.quiet, **kwargs)
    else:
        outputs, seconds, _ = run_gaze(model, processor, frames, args)
        cells = untiled_cells(model, outputs, h, w)
    report(cells.counts(t), None, cells.tokens_per_frame, seconds, t, model.impl)

    if args.view == "interframe":
        view = interframe_view(frames, cells, args.keyframe_every)
        later = view["psnr"][~view["keyframe"]]
        finite = later[np.isfinite(later)]
        mean = f"{finite.mean():.2f} dB" if finite.size else "n/a"
        print(f"interframe (keyframe every {args.keyframe_every}): mean PSNR of non-keyframes {mean}, "
              f"final EMA ({PSNR_EMA_FACTOR:g}) {view['psnr_ema'][-1]:.2f} dB")
        if args.out:
            save_frames(args.out, view["pictures"])
            table = write_interframe_csv(csv_path(args.out), view["psnr"], view["psnr_ema"],
                                         view["gazed_fraction"], view["keyframe"])
            print(f"wrote {args.out} and {table}")
        return 0
    if args.out:
        save_frames(args.out, cells_overlay(frames, cells.frame, cells.scale, cells.box, cells.scales))
        print(f"wrote {args.out}")
    return 0


def check_view_options(args) -> None:
    """Refuse option combinations that make no sense, before any model is loaded."""
    if args.tiles is None and args.max_tiles is not None:
        raise ValueError("--max-tiles needs --tiles anyres (or pad)")
    if args.tiles is None and args.tile_batch_size is not None:
        raise ValueError("--tile-batch-size needs --tiles anyres (or pad / resize)")
    if args.tile_batch_size is None:
        args.tile_batch_size = 8
    if args.keyframe_every is not None and args.view != "interframe":
        raise ValueError("--keyframe-every needs --view interframe")
    if args.keyframe_every is None:
        args.keyframe_every = 16
    if args.keyframe_every < 1:
        raise ValueError(f"--keyframe-every must be >= 1 (1 refreshes every frame), got {args.keyframe_every}")
    if args.tile_batch_size < 1 or (args.max_tiles is not None and args.max_tiles < 1):
        raise ValueError("--tile-batch-size and --max-tiles must be >= 1")
    if args.out and Path(args.out).suffix.lower() == ".csv":
        raise ValueError("--out names the picture or video (.png/.jpg grid, .mp4, .gif); the interframe CSV is "
                         "written next to it")
