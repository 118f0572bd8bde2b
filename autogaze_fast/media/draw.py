"""Draw AutoGaze's gazed patches onto video frames and save the result.

Each scale's ``gazing_mask`` is a row-major ``g × g`` grid of patches laid over the whole frame
(g = 2, 4, 7, 14 for the NVIDIA model's 32/64/112/224 scales), so coarse scales show as large
boxes and fine scales as small ones. Un-gazed pixels (covered by no gazed patch of any scale) are
dimmed; every gazed patch gets an outline in its scale's colour, drawn inside the cell (twice as
wide along the frame's own edge, so border cells read like inner ones, whose edges two cells share).

With ``labels`` (the default) each picture is the frame with a caption strip below it
(:mod:`autogaze_fast.media.caption`): the frame number and the tokens kept, the shared ``caption``
(:func:`~autogaze_fast.media.caption.gaze_caption`: model, ratio, stop) and a legend naming each
scale's colour by the size of its cells in source pixels, largest first. Nothing is written on the
frame itself.

    >>> pictures = gaze_overlay(frames, [m[0] for m in gaze["gazing_mask"]], model.scales,
    ...                         caption=gaze_caption("nvidia/AutoGaze", 0.75, 0.7))
    >>> save_gaze_grid("gaze.png", pictures); save_gaze_video("gaze.mp4", pictures)

A tiled gaze (``AutoGaze(..., tiles="anyres")``) reports its cells as boxes in source pixels;
:func:`cells_overlay` draws those on the full-resolution source frames, and
:func:`cells_pixel_mask` turns them into per-frame pixel masks (for :mod:`autogaze_fast.media.interframe`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autogaze_fast.media.caption import add_captions, cell_size_name, tokens_kept
from autogaze_fast.media.video import atomic_output, check_rgb_frames, write_video

# Outline colours, coarsest scale first (red, orange, yellow, cyan, then more for extra scales).
SCALE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 59, 48),
    (255, 149, 0),
    (255, 230, 32),
    (52, 199, 255),
    (175, 82, 222),
    (76, 217, 100),
)


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _parse_scales(scales: Sequence[int] | str | None, n: int) -> list[int] | None:
    if scales is None:
        return None
    if isinstance(scales, str):
        try:
            scales = [int(s) for s in scales.split("+")]
        except ValueError:
            raise ValueError(f"scales string must look like '32+64+112+224', got {scales!r}") from None
    scales = [int(s) for s in scales]
    if len(scales) != n:
        raise ValueError(f"got {len(scales)} scales {scales} but {n} gazing masks; pass one mask per scale")
    return scales


def _check_masks(gazing_mask: Sequence, num_frames: int, scales: list[int] | None) -> list[tuple[np.ndarray, int]]:
    """Return ``[(mask (T, g*g) bool, g)]`` per scale, validating shapes and values."""
    if isinstance(gazing_mask, np.ndarray) or hasattr(gazing_mask, "detach"):
        raise ValueError("gazing_mask must be a list with one (T, n_s) mask per scale, as AutoGaze returns it")
    if len(gazing_mask) == 0:
        raise ValueError("gazing_mask is empty; pass one (T, n_s) mask per scale")
    out = []
    for k, m in enumerate(gazing_mask):
        m = _to_numpy(m)
        if m.ndim == 3:
            if m.shape[0] != 1:
                raise ValueError(
                    f"gazing_mask[{k}] has batch size {m.shape[0]}; pick one video, e.g. [m[b] for m in gazing_mask]"
                )
            m = m[0]
        if m.ndim != 2 or m.shape[0] != num_frames:
            raise ValueError(f"gazing_mask[{k}] must have shape (T={num_frames}, n_s), got {tuple(m.shape)}")
        g = math.isqrt(m.shape[1])
        if g * g != m.shape[1] or g == 0:
            raise ValueError(f"gazing_mask[{k}] has {m.shape[1]} patches per frame, not a square grid")
        if m.dtype != np.bool_:
            if not np.isin(m, (0, 1)).all():
                raise ValueError(f"gazing_mask[{k}] must hold only 0 and 1 (got values outside {{0, 1}})")
            m = m != 0
        out.append((m, g))
    if scales is not None:
        ratios = {g / s for (_, g), s in zip(out, scales)}
        if max(ratios) - min(ratios) > 1e-9:
            grids = [g for _, g in out]
            raise ValueError(f"mask grids {grids} do not match scales {scales} with one patch size")
    return out


def _cell_index(length: int, g: int) -> np.ndarray:
    """For each pixel along an axis of ``length``, the index of the grid cell (of g) it falls in."""
    return np.minimum((np.arange(length) * g) // length, g - 1)


def _cell_border(length: int, g: int, thickness: int) -> np.ndarray:
    """Pixels along an axis within ``thickness`` of their cell's edge (``2 · thickness`` of the frame's edge)."""
    idx = _cell_index(length, g)
    starts = (np.arange(g) * length + g - 1) // g  # first pixel of each cell
    ends = np.append(starts[1:], length)  # one past the last pixel
    pos = np.arange(length)
    return ((pos - starts[idx] < thickness) | (ends[idx] - 1 - pos < thickness)
            | (pos < 2 * thickness) | (length - 1 - pos < 2 * thickness))


def legend(sizes: Sequence[tuple[float, float]], colours: Sequence[tuple[int, int, int]] | None = None
           ) -> list[tuple[str, tuple[int, int, int]]]:
    """``(name, colour)`` legend entries of scales whose cells are ``sizes`` (w, h) source pixels,
    coarsest scale first: named by cell size (``"112 px"``), largest first."""
    colours = SCALE_COLOURS if colours is None else colours
    entries = [(cell_size_name(w, h), tuple(colours[k % len(colours)]), w * h) for k, (w, h) in enumerate(sizes)]
    entries.sort(key=lambda e: -e[2])  # stable: equal sizes keep the scale order
    return [(name, colour) for name, colour, _ in entries]


def gaze_overlay(
    frames,
    gazing_mask: Sequence,
    scales: Sequence[int] | str | None = None,
    dim: float = 0.35,
    thickness: int | None = None,
    colours: Sequence[tuple[int, int, int]] = SCALE_COLOURS,
    labels: bool = True,
    first_frame: int = 0,
    caption: str | None = None,
) -> np.ndarray:
    """Draw gazed patches on frames, with a caption strip below each frame.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB (numpy or torch), any size: the patch grids are
            stretched over the whole frame.
        gazing_mask: one mask per scale, coarsest first (as AutoGaze's ``gazing_mask``), each
            ``(T, n_s)`` or ``(1, T, n_s)`` of 0/1 (bool, int, float; numpy or torch); ``n_s`` must
            be a square ``g²`` with row-major patches.
        scales: optional scale sizes (list or ``"32+64+112+224"``), used to check the grids.
        dim: brightness factor for pixels covered by no gazed patch (0 black, 1 unchanged).
        thickness: outline width in pixels (default: ``max(1, min(H, W) // 224)``; twice that along
            the frame's edge).
        colours: outline colour per scale, coarsest first (cycled if there are more scales).
        labels: append the caption strip (:mod:`autogaze_fast.media.caption`): ``frame N``, the
            tokens kept (``37 of 265 tokens kept (14%)``: gazed cells of every scale over all cells),
            ``caption``, and the legend of each scale's cell size in source pixels, largest first
            (``W/g x H/g``).
        first_frame: number of the first frame, for clips cut from a longer video.
        caption: shared text of the strip, e.g. :func:`~autogaze_fast.media.caption.gaze_caption`.

    Returns:
        ``(T, H, W, 3)`` uint8 frames, or ``(T, H + S, W, 3)`` with ``labels`` (S: the strip's
        height, the same for every call on frames of this size with this caption).

    Raises:
        ValueError: bad frame or mask shapes, non-0/1 masks, or masks that do not fit ``scales``.
    """
    frames = check_rgb_frames(frames)
    if not 0.0 <= dim <= 1.0:
        raise ValueError(f"dim must be in [0, 1], got {dim}")
    t, h, w, _ = frames.shape
    scales = _parse_scales(scales, len(gazing_mask))
    masks = _check_masks(gazing_mask, t, scales)
    if thickness is None:
        thickness = max(1, min(h, w) // 224)
    if thickness < 1:
        raise ValueError(f"thickness must be >= 1, got {thickness}")

    covered = np.zeros((t, h, w), dtype=bool)
    borders = []
    for m, g in masks:
        rows, cols = _cell_index(h, g), _cell_index(w, g)
        cell = rows[:, None] * g + cols[None, :]  # (H, W) cell id of each pixel
        gazed = m[:, cell]  # (T, H, W)
        covered |= gazed
        edge = _cell_border(h, g, thickness)[:, None] | _cell_border(w, g, thickness)[None, :]
        borders.append(gazed & edge)

    out = np.where(covered[..., None], frames, np.rint(frames * np.float32(dim)).astype(np.uint8))
    for k, border in enumerate(borders):  # coarse first, so finer outlines stay visible on top
        out[border] = np.asarray(colours[k % len(colours)], dtype=np.uint8)
    if not labels:
        return out
    kept = sum(m.sum(axis=1) for m, _ in masks)
    total = sum(g * g for _, g in masks)
    lines = [[f"frame {first_frame + i}: {tokens_kept(int(kept[i]), total)}"] for i in range(t)]
    return add_captions(out, lines, caption, legend([(w / g, h / g) for _, g in masks], colours))


def save_gaze_video(path: str | os.PathLike, frames, fps: float = 8.0) -> Path:
    """Write ``(T, H, W, 3)`` uint8 frames as a video (mp4 etc. via PyAV) or an animated GIF (Pillow).

    The file appears only once complete (written to a temporary file, then renamed).
    """
    path = Path(os.fspath(path)).expanduser()
    frames = check_rgb_frames(frames)
    if path.suffix.lower() == ".gif":
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        from PIL import Image  # Pillow is imported only when a picture is drawn

        images = [Image.fromarray(f) for f in frames]
        with atomic_output(path) as tmp:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return path
    return write_video(path, frames, fps=fps)


def save_gaze_grid(path: str | os.PathLike, frames, columns: int | None = None, gap: int = 2) -> Path:
    """Tile ``(T, H, W, 3)`` uint8 frames into one image (PNG, JPEG, ... by suffix), row by row.

    Args:
        columns: frames per row (default: ``ceil(sqrt(T))``).
        gap: white pixels between tiles.

    The file appears only once complete (written to a temporary file, then renamed).
    """
    from PIL import Image  # Pillow is imported only when a picture is drawn

    frames = check_rgb_frames(frames)
    t, h, w, _ = frames.shape
    columns = columns or math.ceil(math.sqrt(t))
    if columns < 1 or gap < 0:
        raise ValueError(f"columns must be >= 1 and gap >= 0, got columns={columns}, gap={gap}")
    rows = math.ceil(t / columns)
    grid = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 255, dtype=np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, columns)
        grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = f
    path = Path(os.fspath(path)).expanduser()
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the image format from {path.name!r}; use a suffix such as .png or .jpg")
    with atomic_output(path) as tmp:
        Image.fromarray(grid).save(tmp, format=fmt)
    return path


# ---------------------------------------------------------------- cells in source pixels (tiled gaze)
def box_pixel_spans(boxes) -> np.ndarray:
    """``(M, 4)`` float ``(x0, y0, x1, y1)`` boxes (x1/y1 exclusive) → ``(M, 4)`` int64 pixel spans.

    A pixel belongs to a box when its centre does: pixel ``x`` is inside when ``x0 <= x + 0.5 < x1``,
    so the span is ``[ceil(x0 - 0.5), ceil(x1 - 0.5))`` (same for y). Boxes that share an edge split
    the pixels between them with no overlap and no gap.
    """
    b = _to_numpy(boxes).astype(np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (M, 4) (x0, y0, x1, y1), got shape {b.shape}")
    if not np.isfinite(b).all():
        raise ValueError("boxes hold NaN or inf")
    return np.ceil(b - 0.5).astype(np.int64)


def _check_cells(frame, scale, boxes, num_frames: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame, scale = _to_numpy(frame).astype(np.int64).reshape(-1), _to_numpy(scale).astype(np.int64).reshape(-1)
    spans = box_pixel_spans(boxes)
    if not len(frame) == len(scale) == len(spans):
        raise ValueError(f"frame ({len(frame)}), scale ({len(scale)}) and boxes ({len(spans)}) need one entry per cell")
    if num_frames is not None and len(frame) and (frame.min() < 0 or frame.max() >= num_frames):
        raise ValueError(f"cell frames run from {frame.min()} to {frame.max()} but there are {num_frames} frames")
    return frame, scale, spans


def cells_pixel_mask(frame, boxes, num_frames: int, height: int, width: int) -> np.ndarray:
    """``(T, H, W)`` bool: the pixels covered by any gazed cell of each frame.

    Args:
        frame: ``(M,)`` frame of each cell (0-based in this stretch of frames).
        boxes: ``(M, 4)`` ``(x0, y0, x1, y1)`` in source pixels (e.g. ``GazedCells.box``); pixels
            are assigned by :func:`box_pixel_spans`.
    """
    frame, _, spans = _check_cells(frame, frame, boxes, num_frames)
    spans = spans.clip(0, [width, height, width, height])
    mask = np.zeros((num_frames, height, width), dtype=bool)
    for t, (x0, y0, x1, y1) in zip(frame, spans):
        mask[t, y0:y1, x0:x1] = True
    return mask


def default_cells_thickness(spans: np.ndarray, height: int, width: int) -> int:
    """``max(1, min(min(H, W) // 224, s // 6))`` with ``s`` the smallest box side: small tiled cells
    keep their interior visible."""
    sides = np.minimum(spans[:, 2] - spans[:, 0], spans[:, 3] - spans[:, 1])
    smallest = int(sides[sides > 0].min()) if (sides > 0).any() else 0
    return max(1, min(min(height, width) // 224, smallest // 6))


def outline_cells(out: np.ndarray, frame: np.ndarray, scale: np.ndarray, spans: np.ndarray, num_scales: int,
                  thickness: int, colours: Sequence[tuple[int, int, int]] = SCALE_COLOURS) -> np.ndarray:
    """Outline cells on ``out`` ``(T, H, W, 3)`` uint8 in place (and return it): each cell ``thickness``
    pixels wide just inside its pixel span (``spans`` ``(M, 4)`` from :func:`box_pixel_spans`, clipped
    to the frame), ``2 · thickness`` along the frame's own edge, in its scale's colour, coarse scales
    first so finer outlines stay on top."""
    _, h, w, _ = out.shape
    for s in range(num_scales):  # coarse first
        colour = np.asarray(colours[s % len(colours)], dtype=np.uint8)
        for i in np.flatnonzero(scale == s):
            x0, y0, x1, y1 = spans[i]
            f = out[frame[i]]
            top, bottom = thickness * (1 + (y0 == 0)), thickness * (1 + (y1 == h))
            left, right = thickness * (1 + (x0 == 0)), thickness * (1 + (x1 == w))
            f[y0:min(y0 + top, y1), x0:x1] = colour
            f[max(y1 - bottom, y0):y1, x0:x1] = colour
            f[y0:y1, x0:min(x0 + left, x1)] = colour
            f[y0:y1, max(x1 - right, x0):x1] = colour
    return out


def measured_cell_sizes(scale, boxes, scales: Sequence[int]) -> list[tuple[float, float]] | None:
    """Per scale ``(w, h)`` of its cells in source pixels, measured from the boxes: the largest box of
    each scale present (an edge box may be clipped), the others scaled from one present (cell sides
    go as ``1 / scale``). None when there is no box."""
    scale, b = _to_numpy(scale).astype(np.int64).reshape(-1), _to_numpy(boxes).astype(np.float64).reshape(-1, 4)
    sizes: list[tuple[float, float] | None] = []
    for s in range(len(scales)):
        sel = b[scale == s]
        sizes.append((float((sel[:, 2] - sel[:, 0]).max()), float((sel[:, 3] - sel[:, 1]).max())) if len(sel) else None)
    known = [k for k, v in enumerate(sizes) if v is not None]
    if not known:
        return None
    ref = known[-1]  # the finest present scale: its boxes are the least often clipped
    rw, rh = sizes[ref]
    return [v if v is not None else (rw * scales[ref] / scales[k], rh * scales[ref] / scales[k]) for k, v in enumerate(sizes)]


def cells_overlay(
    frames,
    frame,
    scale,
    boxes,
    scales: Sequence[int],
    dim: float = 0.35,
    thickness: int | None = None,
    colours: Sequence[tuple[int, int, int]] = SCALE_COLOURS,
    labels: bool = True,
    first_frame: int = 0,
    caption: str | None = None,
    cell_sizes: Sequence[tuple[float, float]] | None = None,
    tokens_per_frame: int | None = None,
) -> np.ndarray:
    """Draw gazed cells given as source-pixel boxes (a tiled gaze's ``cells``) on the source frames.

    Pixels covered by no gazed cell are dimmed; every cell is outlined by :func:`outline_cells`.
    Pixels belong to boxes by :func:`box_pixel_spans`.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB source frames (numpy or torch).
        frame, scale: ``(M,)`` each cell's frame (0-based in ``frames``) and scale index (0 = coarsest).
        boxes: ``(M, 4)`` ``(x0, y0, x1, y1)`` in source pixels.
        scales: the scale sizes, coarsest first (one per scale index).
        dim, colours, labels, first_frame, caption: as :func:`gaze_overlay`.
        thickness: outline width (default: :func:`default_cells_thickness`).
        cell_sizes: per scale ``(w, h)`` of its cells in source pixels, for the legend (default:
            :func:`measured_cell_sizes`; no legend when there is no box at all).
        tokens_per_frame: the tokens a frame could keep (all tiles' cells), for ``k of N tokens kept``.
    Returns:
        ``(T, H, W, 3)`` uint8, or ``(T, H + S, W, 3)`` with ``labels``.
    """
    frames = check_rgb_frames(frames)
    if not 0.0 <= dim <= 1.0:
        raise ValueError(f"dim must be in [0, 1], got {dim}")
    t, h, w, _ = frames.shape
    frame, scale, spans = _check_cells(frame, scale, boxes, t)
    if len(scale) and (scale.min() < 0 or scale.max() >= len(scales)):
        raise ValueError(f"cell scales run from {scale.min()} to {scale.max()} but {len(scales)} scales were given")
    if cell_sizes is not None and len(cell_sizes) != len(scales):
        raise ValueError(f"cell_sizes has {len(cell_sizes)} entries for {len(scales)} scales; give one (w, h) per scale")
    spans = spans.clip(0, [w, h, w, h])
    if thickness is None:
        thickness = default_cells_thickness(spans, h, w)
    if thickness < 1:
        raise ValueError(f"thickness must be >= 1, got {thickness}")
    covered = cells_pixel_mask(frame, _to_numpy(boxes), t, h, w)
    out = np.where(covered[..., None], frames, np.rint(frames * np.float32(dim)).astype(np.uint8))
    outline_cells(out, frame, scale, spans, len(scales), thickness, colours)
    if not labels:
        return out
    sizes = measured_cell_sizes(scale, boxes, scales) if cell_sizes is None else cell_sizes
    counts = np.bincount(frame, minlength=t)
    lines = [[f"frame {first_frame + i}: {tokens_kept(int(counts[i]), tokens_per_frame)}"] for i in range(t)]
    return add_captions(out, lines, caption, legend(sizes, colours) if sizes is not None else ())
