"""Pictures of a gaze on the source frames, for ``autogaze-fast gaze``: the tiled gaze
(``--tiles anyres|pad|resize``) drawn on the full-resolution frames, and the interframe view
(``--view interframe``, see :mod:`autogaze_fast.media.interframe`).

Both work from gazed cells as boxes in source pixels: a tiled gaze reports them itself
(``out["cells"]``); an untiled gaze's masks are turned into boxes through the one-tile
``"resize"`` plan (the squash the model applies). :func:`stream_views` runs the command clip by
clip (:func:`autogaze_fast.tiling.stream.gaze_video`), writing each clip's pictures as it is done.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np

from autogaze_fast.cli.common import report
from autogaze_fast.defaults import KEYFRAME_EVERY, TILE_BATCH_SIZE, weights_origin
from autogaze_fast.media.caption import SEPARATOR, add_captions, gaze_caption, tokens_kept
from autogaze_fast.media.draw import (
    SCALE_COLOURS,
    box_pixel_spans,
    cells_overlay,
    cells_pixel_mask,
    default_cells_thickness,
    gaze_overlay,
    legend,
    outline_cells,
)
from autogaze_fast.media.interframe import (
    PSNR_EMA_FACTOR,
    InterframeCsv,
    gazed_fraction,
    interframe_stream,
    is_keyframe,
    psnr,
    psnr_ema,
)
from autogaze_fast.media.sinks import open_frame_sink
from autogaze_fast.tiling.chunks import Progress
from autogaze_fast.tiling.gaze import tile_layout
from autogaze_fast.tiling.grid import DEFAULT_MAX_TILES, TileGrid
from autogaze_fast.tiling.stream import gaze_video


def plan_tiles(model, height: int, width: int, policy: str, max_tiles: int | None) -> TileGrid:
    """The model's tile plan for ``height × width`` frames (tiles of its largest scale)."""
    tile, patch = tile_layout(model.config, None, None)
    return TileGrid.plan(height, width, tile, policy, DEFAULT_MAX_TILES if max_tiles is None else max_tiles, patch)


def grid_cell_sizes(grid: TileGrid, sides: list[int]) -> list[tuple[float, float]]:
    """Per scale, ``(w, h)`` of its cells in source pixels on ``grid`` (``sides``: each scale's cells
    per tile side): a tile's ``tile_size / g`` canvas pixels, mapped back onto the source."""
    sx = 1.0 if grid.policy == "pad" else grid.source_w / grid.canvas_w
    sy = 1.0 if grid.policy == "pad" else grid.source_h / grid.canvas_h
    return [(grid.tile_size / g * sx, grid.tile_size / g * sy) for g in sides]


def n_explained(model, tokens_per_frame: int, grid: TileGrid | None) -> str:
    """What N (the tokens a frame can keep) is made of, for the summary line."""
    per_scale = "+".join(str(n) for n in model.config.tokens_per_scale)
    scales = "+".join(str(s) for s in model.scales)
    text = f"multi-scale cells a frame can keep: {per_scale} at scales {scales}"
    if grid is not None and grid.n_tiles > 1:
        text += f", in each of {grid.n_tiles} tiles"
        if tokens_per_frame != grid.n_tiles * model.config.num_vision_tokens_each_frame:
            text += " (less the cells wholly in the padding)"
    return text


def csv_path(out: str) -> Path:
    """Where the interframe CSV goes: next to ``out``, same stem, ``.csv``."""
    return Path(out).with_suffix(".csv")


class InterframeView:
    """The interframe view built clip by clip: the stream's last output frame and the PSNR's EMA
    are carried from one clip to the next, so the pieces joined equal the view of the whole video.

    Each picture is the stream's frame with the gazed (refreshed) cells outlined in their scale's
    colour, above a caption strip: the frame number, tokens kept, the refreshed share of the pixels,
    PSNR and EMA; ``caption`` and a line defining the refreshed share; the legend of cell sizes.
    """

    def __init__(self, keyframe_every: int, caption: str | None = None,
                 cell_sizes: list[tuple[float, float]] | None = None, tokens_per_frame: int | None = None) -> None:
        self.keyframe_every = keyframe_every
        self.caption = SEPARATOR.join(
            ([caption] if caption else [])
            + [f"refreshed = the share of the pixels taken from this frame: the outlined gazed cells, or the whole "
               f"frame at a keyframe (every {keyframe_every} frames); the rest is kept from the previous picture",
               "PSNR: this picture against the input frame"])
        self.cell_sizes, self.tokens_per_frame = cell_sizes, tokens_per_frame
        self.previous: np.ndarray | None = None
        self.ema = math.inf

    def update(self, frames: np.ndarray, frame, boxes, first_frame: int = 0, scale=None, num_scales: int = 0) -> dict:
        """The view of ``frames`` (t, H, W, 3) uint8, video frames ``first_frame …``, under gazed
        cells (``frame`` (M,) counted from ``frames[0]``, ``boxes`` (M, 4) in source pixels, ``scale``
        (M,) their scale index of ``num_scales``, for the outlines; None: no outlines).

        Returns:
            dict with ``stream`` (t, H, W, 3) uint8, ``pictures`` (t, H + S, W, 3): the stream with the
            refreshed cells outlined and the caption strip), ``psnr``, ``psnr_ema``, ``gazed_fraction``
            (t,) float64 and ``keyframe`` (t,) bool.
        """
        t, h, w, _ = frames.shape
        masks = cells_pixel_mask(frame, boxes, t, h, w)
        stream = interframe_stream(frames, masks, self.keyframe_every, first_frame, self.previous)
        values = np.array([psnr(stream[i], frames[i]) for i in range(t)])
        ema = psnr_ema(values, start=self.ema)
        fraction = gazed_fraction(masks)
        key = is_keyframe(t, self.keyframe_every, first_frame)
        self.previous, self.ema = stream[-1].copy(), float(ema[-1])

        def db(v: float, exact: str) -> str:
            return f"{v:.1f} dB" if math.isfinite(v) else exact

        pictures = stream.copy()
        local = np.asarray(frame, dtype=np.int64).reshape(-1)
        if scale is not None:
            spans = box_pixel_spans(boxes).clip(0, [w, h, w, h])
            outline_cells(pictures, local, np.asarray(scale).reshape(-1), spans, num_scales,
                          default_cells_thickness(spans, h, w))
        counts = np.bincount(local, minlength=t)
        lines = [[f"frame {first_frame + i}" + (" (keyframe)" if key[i] else "") + f": "
                  f"{tokens_kept(int(counts[i]), self.tokens_per_frame)}",
                  f"refreshed {1.0 if key[i] else fraction[i]:.0%}, PSNR {db(values[i], 'inf (exact)')}, "
                  f"EMA({PSNR_EMA_FACTOR:g}) {db(ema[i], 'n/a')}"] for i in range(t)]
        entries = legend(self.cell_sizes, SCALE_COLOURS) if self.cell_sizes else ()
        pictures = add_captions(pictures, lines, self.caption, entries)
        return {"stream": stream, "pictures": pictures, "psnr": values, "psnr_ema": ema,
                "gazed_fraction": fraction, "keyframe": key}


def stream_views(model, processor, args, height: int, width: int, num_frames: int | None) -> int:
    """``autogaze-fast gaze``: decode, gaze and draw clip by clip, writing pictures (and the
    interframe CSV) as each clip is done; memory stays that of one clip whatever the video's length
    (except for a .png/.jpg grid, one picture of every frame).

    ``num_frames`` (the header's count, or None) only sizes the progress bar.
    """
    clip_frames = args.chunk_frames or model.config.max_num_frames
    sides = [math.isqrt(n) for n in model.config.tokens_per_scale]
    grid = plan_tiles(model, height, width, args.tiles or "resize", args.max_tiles if args.tiles else None)
    if args.tiles is not None:
        print(f"tiles: {args.tiles}, {grid.rows}x{grid.cols} = {grid.n_tiles} tile{'s' * (grid.n_tiles > 1)} "
              f"of {grid.tile_size} px "
              f"(canvas {grid.canvas_h}x{grid.canvas_w}, source {height}x{width}), {args.tile_batch_size} tiles per batch")
        tokens_per_frame = int((~grid.padded_tokens(sides)).sum())  # less the tokens wholly in padding
    else:
        tokens_per_frame = int(model.config.num_vision_tokens_each_frame)
    total = min(num_frames or 0, args.max_frames or num_frames or 0)
    bar = Progress(math.ceil(total / clip_frames) if total else 0, "gazing", enabled=not args.quiet)
    clips = gaze_video(model, args.video, processor, tiles=args.tiles, max_tiles=args.max_tiles,
                       tile_batch_size=args.tile_batch_size, clip_frames=clip_frames, max_frames=args.max_frames,
                       gazing_ratio=args.gazing_ratio, task_loss_requirement=args.task_loss_requirement)
    caption = gaze_caption(weights_origin(model), args.gazing_ratio, args.task_loss_requirement)
    sizes = grid_cell_sizes(grid, sides)
    view = (InterframeView(args.keyframe_every, caption, sizes, tokens_per_frame) if args.view == "interframe"
            else None)
    counts: list[int] = []
    scores: list[float] = []
    keyframes: list[bool] = []
    seconds = 0.0
    with contextlib.ExitStack() as stack:
        # The CSV is entered first, so exited last: a picture that cannot be finished deletes it too.
        table = stack.enter_context(InterframeCsv(csv_path(args.out))) if view is not None and args.out else None
        sink = stack.enter_context(open_frame_sink(args.out)) if args.out else None
        for clip in clips:
            t = clip.end - clip.start
            local = clip.cells.frame.numpy() - clip.start
            counts += np.bincount(local, minlength=t).tolist()
            seconds += clip.seconds
            if view is not None:
                shown = view.update(clip.frames, local, clip.cells.box.numpy(), clip.start, clip.cells.scale.numpy(),
                                    len(model.scales))
                scores += shown["psnr"].tolist()
                keyframes += shown["keyframe"].tolist()
                if table is not None:
                    table.write(shown["psnr"], shown["psnr_ema"], shown["gazed_fraction"], shown["keyframe"])
                pictures = shown["pictures"]
            elif sink is None:
                pictures = None
            elif args.tiles is None:
                pictures = gaze_overlay(clip.frames, [m[0] for m in clip.tile_gazing_info["gazing_mask"]], model.scales,
                                        first_frame=clip.start, caption=caption)
            else:
                pictures = cells_overlay(clip.frames, local, clip.cells.scale, clip.cells.box, model.scales,
                                         first_frame=clip.start, caption=caption, cell_sizes=sizes,
                                         tokens_per_frame=tokens_per_frame)
            if sink is not None:
                sink.write(pictures)
            del clip, pictures
            bar.update()
        if not counts:  # nothing is written (the files are deleted on the way out)
            raise ValueError(f"{args.video}: no frames were gazed (the video yielded no clip)")
    report(counts, None, tokens_per_frame, seconds, len(counts), model.impl,
           n_explained(model, tokens_per_frame, grid if args.tiles else None))
    if view is not None:
        later = np.array(scores)[~np.array(keyframes)]
        finite = later[np.isfinite(later)]
        mean = f"{finite.mean():.2f} dB" if finite.size else "n/a"
        print(f"interframe (keyframe every {args.keyframe_every}): mean PSNR of non-keyframes {mean}, "
              f"final EMA ({PSNR_EMA_FACTOR:g}) {view.ema:.2f} dB")
    if args.out:
        print(f"wrote {args.out}" + (f" and {csv_path(args.out)}" if view is not None else ""))
    return 0


def check_view_options(args) -> None:
    """Refuse option combinations that make no sense, before any model is loaded."""
    if args.tiles is None and args.max_tiles is not None:
        raise ValueError("--max-tiles needs --tiles anyres (or pad)")
    if args.tiles is None and args.tile_batch_size is not None:
        raise ValueError("--tile-batch-size needs --tiles anyres (or pad / resize)")
    if args.tile_batch_size is None:
        args.tile_batch_size = TILE_BATCH_SIZE
    if args.keyframe_every is not None and args.view != "interframe":
        raise ValueError("--keyframe-every needs --view interframe")
    if args.keyframe_every is None:
        args.keyframe_every = KEYFRAME_EVERY
    if args.keyframe_every < 1:
        raise ValueError(f"--keyframe-every must be >= 1 (1 refreshes every frame), got {args.keyframe_every}")
    if args.tile_batch_size < 1 or (args.max_tiles is not None and args.max_tiles < 1):
        raise ValueError("--tile-batch-size and --max-tiles must be >= 1")
    if args.out and Path(args.out).suffix.lower() == ".csv":
        raise ValueError("--out names the picture or video (.png/.jpg grid, .mp4, .gif); the interframe CSV is "
                         "written next to it")
