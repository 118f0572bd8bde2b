"""Long videos of any size, streamed: decode → clips → tiles → gaze, one clip at a time.

    >>> for clip in model.gaze_video("talk_1080p.mp4", processor, tiles="anyres", tile_batch_size=8):
    ...     clip.start, clip.end, clip.cells.box        # frames [start, end) and their gazed cells in source pixels

:func:`gaze_video` takes a video file (decoded clip by clip with PyAV), a ``(T, H, W, 3)`` uint8
array, or any iterable of ``(H, W, 3)`` uint8 frames (a generator reading a camera, say), and yields
one :class:`ClipGaze` per clip of ``max_num_frames`` frames. At any time it holds one clip of source
frames, that clip's canvas as uint8 (the source resized onto the tile grid with the processor's
Pillow filter, exactly as :meth:`~autogaze_fast.tiling.grid.TileGrid.prepare` resizes), and one batch
of ``tile_batch_size`` normalised tiles with the gaze model's state for them; nothing grows with
the video's length unless the caller keeps the yielded clips.

The gaze of each tile equals the model's on ``grid.cut(grid.prepare(clip, processor))`` (rows of a
generation batch are independent), so it equals ``model({"video": canvas}, tiles=grid)`` clip by clip.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from autogaze_fast.checks import check_int
from autogaze_fast.defaults import TILE_BATCH_SIZE, TILES
from autogaze_fast.media.video import check_video_file, import_av, open_video
from autogaze_fast.processing.autogaze import NVIDIA_PREPROCESSING, AutoGazeImageProcessor, rescale_and_normalize
from autogaze_fast.tiling.gaze import gaze_clip_tiles, tile_layout
from autogaze_fast.tiling.grid import DEFAULT_MAX_TILES, GazedCells, TileGrid


@dataclass
class ClipGaze:
    """The gaze of one clip of a streamed video.

    Attributes:
        start, end: the clip's frames ``[start, end)`` in the whole video.
        frames: ``(t, H, W, 3)`` uint8 source frames of the clip (None with ``keep_frames=False``).
        cells: every gazed cell, ``frame`` counted from the video's start, boxes in source pixels.
        gazing_mask: per scale ``(1, t', rows·g, cols·g)``, stitched over the tile grid.
        tile_gazing_info: the per-tile gaze (rows = tiles in row-major order; see
            ``AutoGaze(..., tiles=...)``), or the untiled gaze's own output with ``tiles=None``.
        grid: the tile plan (the one-tile ``"resize"`` plan for ``tiles=None``).
        seconds: time spent in the gaze model for this clip.
    """

    start: int
    end: int
    frames: np.ndarray | None
    cells: GazedCells
    gazing_mask: list[torch.Tensor]
    tile_gazing_info: dict
    grid: TileGrid
    seconds: float


# ------------------------------------------------------------------ clips of frames
def _check_frame(frame: Any, index: int, shape: tuple[int, ...] | None) -> np.ndarray:
    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().numpy()
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame {index} must be an (H, W, 3) uint8 RGB array, got shape {frame.shape} and dtype "
                         f"{frame.dtype}")
    if shape is not None and frame.shape != shape:
        raise ValueError(f"frame {index} is {frame.shape[0]}x{frame.shape[1]} but the video's first frame is "
                         f"{shape[0]}x{shape[1]} (H x W); a stream must keep one frame size")
    return frame


def _decode_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Every frame of a video file as ``(H, W, 3)`` uint8 RGB, decoded one at a time."""
    path = check_video_file(path)
    av = import_av()
    count = 0
    with open_video(path) as (container, stream):
        stream.thread_type = "SLICE"  # frame threading would hold several decoded frames in flight
        decoder = container.decode(stream)
        while True:
            try:
                frame = next(decoder)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                raise ValueError(f"{path}: decoding failed after {count} frame(s) ({type(e).__name__}: {e})") from None
            count += 1
            box = [frame.to_ndarray(format="rgb24")]
            del frame
            yield box.pop()  # no decoded frame stays referenced here while the caller works
    if count == 0:
        raise ValueError(f"{path} holds no decodable video frames")


def iter_frames(source: Any, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield the ``(H, W, 3)`` uint8 frames of ``source`` one at a time, checked (one size throughout).

    Args:
        source: a video file path (decoded frame by frame with PyAV, never whole), a ``(T, H, W, 3)``
            uint8 numpy array or torch tensor, or an iterable of ``(H, W, 3)`` uint8 frames (consumed
            lazily).
        max_frames: stop after this many frames (None: the whole source).
    Raises:
        ValueError: frames of the wrong shape or dtype, a size change mid-stream, an empty source.
    """
    limit = None if max_frames is None else check_int(max_frames, "max_frames")
    if isinstance(source, (str, os.PathLike)):
        frames: Iterable[Any] = _decode_frames(source)
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        if source.ndim != 4:
            raise ValueError(f"a video array must be (T, H, W, 3) uint8, got shape {tuple(source.shape)}")
        frames = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else source
    else:
        frames = source
    shape = None
    count = 0
    for frame in frames:
        if limit is not None and count >= limit:
            break
        box = [_check_frame(frame, count, shape)]
        del frame
        shape = box[0].shape
        count += 1
        yield box.pop()  # nothing of the frame stays referenced here while the caller works
    if count == 0:
        raise ValueError("the video holds no frames")


def iter_clips(source: Any, clip_frames: int, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield ``(t, H, W, 3)`` uint8 clips of ``clip_frames`` frames (the last may be shorter) from
    :func:`iter_frames`: each clip is filled frame by frame into one array, so a clip is the most
    that is ever held (the generator keeps no reference to a clip it has yielded)."""
    clip_frames = check_int(clip_frames, "clip_frames")
    box: list[np.ndarray] = []
    filled = 0
    for frame in iter_frames(source, max_frames):
        if not box:
            box.append(np.empty((clip_frames,) + frame.shape, dtype=np.uint8))
        box[0][filled] = frame
        del frame
        filled += 1
        if filled == clip_frames:
            filled = 0
            yield box.pop()
    if box:
        yield box.pop()[:filled]


# ------------------------------------------------------------------ tiles of a uint8 clip
class ClipCanvas:
    """One clip's frames on a tile grid's canvas, kept as uint8 tile by tile; tiles are normalised on demand.

    ``tiles(i, j)`` equals ``grid.cut(grid.prepare(frames, processor), i, j)`` bit for bit: the
    canvas is resized with the processor's Pillow filter (``"anyres"``/``"resize"``) or is the
    source itself (``"pad"``: the normalised tile is padded with 0), and the processor's
    rescale/normalisation is per pixel, so normalising a tile equals cutting the normalised canvas.
    Works with :class:`AutoGazeImageProcessor` and :class:`~autogaze_fast.processing.siglip.SiglipImageProcessor`
    (both resize uint8 frames with Pillow, then rescale and normalise).

    Build it from a whole clip (``ClipCanvas(frames, grid, processor)``) or frame by frame
    (``ClipCanvas(None, grid, processor, capacity=16)`` then :meth:`add`): the source frames need
    not be kept. With ``release=True`` each tile's pixels are dropped once its normalised tile has
    been built (ask for each tile once), so the canvas shrinks as its tile batches are gazed.
    """

    def __init__(self, frames: np.ndarray | None, grid: TileGrid, processor: Any, capacity: int | None = None,
                 release: bool = False) -> None:
        self.grid, self.processor, self.release = grid, processor, release
        self.capacity = len(frames) if frames is not None else check_int(capacity, "capacity")
        self._resize = not (grid.policy == "pad" or (grid.canvas_h, grid.canvas_w) == (grid.source_h, grid.source_w))
        self._tiles: list[np.ndarray | None] = [None] * grid.n_tiles  # (capacity, th, tw, 3) uint8 each
        self.frames = 0
        for frame in frames if frames is not None else ():
            self.add(frame)

    def add(self, frame: np.ndarray) -> None:
        """Put one ``(source_h, source_w, 3)`` uint8 frame onto the canvas."""
        g, s = self.grid, self.grid.tile_size
        if frame.shape[:2] != (g.source_h, g.source_w):
            raise ValueError(f"clip frames are {frame.shape[0]}x{frame.shape[1]} but the grid was planned for "
                             f"{g.source_h}x{g.source_w} (H x W)")
        if self.frames == self.capacity:
            raise ValueError(f"the canvas holds {self.capacity} frames; start a new clip")
        if self._resize:
            from PIL import Image  # deferred: Pillow loads on first use, not on import

            image = Image.fromarray(np.ascontiguousarray(frame))
            frame = np.asarray(image.resize((g.canvas_w, g.canvas_h), resample=self.processor.resample))
        for k in range(g.n_tiles):
            r, c = divmod(k, g.cols)
            part = frame[r * s:(r + 1) * s, c * s:(c + 1) * s]  # partial at the edges with "pad"
            if self._tiles[k] is None:
                self._tiles[k] = np.empty((self.capacity,) + part.shape, dtype=np.uint8)
            self._tiles[k][self.frames] = part
        self.frames += 1

    def __len__(self) -> int:
        return self.grid.n_tiles

    def tiles(self, start: int, stop: int) -> torch.Tensor:
        """Tiles ``start … stop-1`` (row-major) → ``(n, t, 3, tile, tile)`` float32."""
        p, s = self.processor, self.grid.tile_size
        norm = (p.image_mean, p.image_std) if p.do_normalize else None
        rescale = p.rescale_factor if p.do_rescale else None
        out = []
        for k in range(start, stop):
            if self._tiles[k] is None:
                raise ValueError(f"tile {k} was released after its normalised tile was built (release=True)"
                                 if self.frames else "the canvas holds no frame yet")
            part = self._tiles[k][:self.frames]
            tile = torch.from_numpy(rescale_and_normalize(part, rescale, getattr(p, "offset", False), norm))
            if tile.shape[-2:] != (s, s):
                tile = F.pad(tile, (0, s - tile.shape[-1], 0, s - tile.shape[-2]))
            out.append(tile)
            if self.release:
                self._tiles[k] = None
        return torch.stack(out)


# ------------------------------------------------------------------ the stream
def gaze_video(
    model,
    source: Any,
    processor: AutoGazeImageProcessor | None = None,
    *,
    tiles: str | None = TILES,
    max_tiles: int | None = None,
    tile_batch_size: int = TILE_BATCH_SIZE,
    clip_frames: int | None = None,
    max_frames: int | None = None,
    keep_frames: bool = True,
    **gaze_kwargs: Any,
) -> Iterator[ClipGaze]:
    """Gaze a video of any size and length clip by clip (see the module docstring).

    Args:
        model: an :class:`~autogaze_fast.AutoGaze`.
        source: a video path, a ``(T, H, W, 3)`` uint8 array/tensor, or an iterable of ``(H, W, 3)``
            uint8 frames (see :func:`iter_clips`).
        processor: the model's :class:`AutoGazeImageProcessor` (default: NVIDIA's preprocessing).
        tiles: a :mod:`~autogaze_fast.tiling.grid` policy (``"anyres"``, ``"pad"``, ``"resize"``), or
            None for the untiled model call (every frame squashed by the processor, as upstream).
        max_tiles: most tiles per frame (default 64).
        tile_batch_size: tiles per generation batch.
        clip_frames: frames per clip (default and most: ``config.max_num_frames``).
        max_frames: only the first frames of the source.
        keep_frames: keep each clip's source frames in the yielded :class:`ClipGaze` (for drawing).
        **gaze_kwargs: ``gazing_ratio`` (a number), ``task_loss_requirement``, ``temperature``, ``generator``.
    Yields:
        one :class:`ClipGaze` per clip, in order.
    """
    if isinstance(gaze_kwargs.get("gazing_ratio"), (list, tuple)):
        raise ValueError("a streamed video takes one gazing_ratio for every frame (its length is not known ahead)")
    unknown = set(gaze_kwargs) - {"gazing_ratio", "task_loss_requirement", "temperature", "generator"}
    if unknown:
        raise ValueError(f"unknown gaze options {sorted(unknown)}; use gazing_ratio, task_loss_requirement, "
                         "temperature or generator")
    if tiles is None and max_tiles is not None:
        raise ValueError("max_tiles needs tiles='anyres' (or 'pad'/'resize')")
    tile_batch_size = check_int(tile_batch_size, "tile_batch_size")
    limit = model.config.max_num_frames
    clip_frames = limit if clip_frames is None else check_int(clip_frames, "clip_frames")
    if clip_frames > limit or clip_frames % model.frame_sampling_rate:
        raise ValueError(f"clip_frames={clip_frames} must be at most the model's max_num_frames={limit} and a "
                         f"multiple of its temporal patch size {model.frame_sampling_rate}")
    if processor is None:
        processor = AutoGazeImageProcessor.from_dict(NVIDIA_PREPROCESSING)
    device = next(model.parameters()).device
    tile, patch = tile_layout(model.config, None, None)
    grid = None

    def gaze(batch: torch.Tensor, ratio) -> dict:
        return model({"video": batch.to(device)}, generate_only=True, **gaze_kwargs)

    frames = iter_frames(source, max_frames)
    end = 0
    while True:
        frame = next(frames, None)
        if frame is None:
            break
        if grid is None:
            h, w = frame.shape[:2]
            grid = TileGrid.plan(h, w, tile, tiles or "resize", DEFAULT_MAX_TILES if max_tiles is None else max_tiles, patch)
        # gather one clip: its source frames only if asked for (or untiled), its canvas as uint8
        kept = np.empty((clip_frames,) + frame.shape, dtype=np.uint8) if keep_frames or tiles is None else None
        canvas = ClipCanvas(None, grid, processor, capacity=clip_frames, release=True) if tiles is not None else None
        n = 0
        while frame is not None:
            if kept is not None:
                kept[n] = frame
            if canvas is not None:
                canvas.add(frame)
            n += 1
            frame = next(frames, None) if n < clip_frames else None
        start_frame, end = end, end + n
        kept = None if kept is None else kept[:n]
        begin = time.perf_counter()
        with torch.inference_mode():
            if tiles is None:
                info = gaze(processor(kept).pixel_values[None], None)
                masks = list(info["gazing_mask"])
            else:
                masks, info = gaze_clip_tiles(gaze, canvas.tiles, grid.n_tiles, grid, tile_batch_size=tile_batch_size)
        canvas = None
        seconds = time.perf_counter() - begin
        stitched = grid.stitch([m.cpu() for m in masks])
        masks = None
        clip = ClipGaze(start_frame, end, kept if keep_frames else None, grid.cells(stitched, frame_offset=start_frame),
                        stitched, info, grid, seconds)
        kept = stitched = info = None
        box = [clip]
        del clip
        yield box.pop()  # nothing of this clip stays referenced here while the caller works
