"""Draw AutoGaze's gazed patches onto video frames and save the result.

Each scale's ``gazing_mask`` is a row-major ``g × g`` grid of patches laid over the whole frame
(g = 2, 4, 7, 14 for the NVIDIA model's 32/64/112/224 scales), so coarse scales show as large
boxes and fine scales as small ones. Un-gazed pixels (covered by no gazed patch of any scale) are
dimmed; every gazed patch gets an outline in its scale's colour. Each frame is labelled with its
frame number (top left) and a legend of the scale colours (bottom left, e.g. "32px", "64px"), both
on a darkened backdrop.

A tiled gaze (``AutoGaze(..., tiles="anyres")``) reports its cells as boxes in source pixels;
:func:`cells_overlay` draws those on the full-resolution source frames, and
:func:`cells_pixel_mask` turns them into per-frame pixel masks (for :mod:`autogaze_fast.media.interframe`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

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


def _font(pixels: int):
    """Pillow's default font at ``pixels`` px (a bitmap font of fixed size on Pillow < 10.1)."""
    from PIL import ImageFont  # Pillow is imported only when a picture is drawn

    try:
        return ImageFont.load_default(size=pixels)
    except (TypeError, OSError, ImportError):  # old Pillow, or no FreeType
        return ImageFont.load_default()


def _darken(frame: np.ndarray, box: tuple[int, int, int, int], factor: float = 0.3) -> None:
    """Darken ``frame[y0:y1, x0:x1]`` in place (a backdrop that keeps white text readable)."""
    x0, y0, x1, y1 = box
    region = frame[max(0, y0) : y1, max(0, x0) : x1]
    region[:] = np.rint(region * np.float32(factor)).astype(np.uint8)


def _pad(font) -> int:
    return max(2, getattr(font, "size", 10) // 4)


class _Legend(NamedTuple):
    swatches: list[tuple[int, int, int, int]]  # (x0, y0, x1, y1) per scale, x1/y1 exclusive
    origins: list[tuple[int, int]]  # where each name's text starts
    backdrop: tuple[int, int, int, int]


def _legend_layout(width: int, height: int, names: Sequence[str], font) -> _Legend | None:
    """Place the legend at the bottom left of a ``height × width`` frame: per name a colour swatch
    and the name, left to right, wrapping onto more rows when the frame is narrow.

    Returns None when the legend would cover more than a third of the frame's height.
    """
    pad = _pad(font)
    line = font.getbbox("0px")[3] + pad
    swatch = line - pad
    widths = [swatch + pad + int(font.getlength(n)) + 2 * pad for n in names]
    rows, x = [[]], pad
    for k, w in enumerate(widths):
        if rows[-1] and x + w > width:
            rows.append([])
            x = pad
        rows[-1].append((k, x))
        x += w
    top = height - len(rows) * line - pad
    if top < height * 2 // 3 or max(widths) + pad > width:
        return None
    swatches, origins = [None] * len(names), [None] * len(names)
    right = 0
    for r, row in enumerate(rows):
        y = top + r * line + pad // 2
        for k, x in row:
            swatches[k] = (x, y, x + swatch, y + swatch)
            origins[k] = (x + swatch + pad, y)
            right = max(right, x + widths[k] - pad)
    return _Legend(swatches, origins, (0, top, min(width, right + pad), height))


def _number_box(n: int, width: int, height: int, font) -> tuple[str, tuple[int, int, int, int]] | None:
    """Text and backdrop box of frame number ``n`` at the top left: "frame n", or the bare number
    on a narrow frame; None when neither fits in the frame's top half."""
    pad = _pad(font)
    for text in (f"frame {n}", f"{n}"):
        x1, y1 = font.getbbox(text)[2:]
        box = (0, 0, x1 + 2 * pad, y1 + 2 * pad)
        if box[2] <= width and box[3] <= height // 2:
            return text, box
    return None


def label_frames(
    frames: np.ndarray,
    names: Sequence[str],
    colours: Sequence[tuple[int, int, int]] = SCALE_COLOURS,
    first_frame: int = 0,
) -> np.ndarray:
    """Write the frame number (top left) and a scale-colour legend (bottom left) on each frame.

    Args:
        frames: ``(T, H, W, 3)`` uint8, changed in place and returned.
        names: one legend entry per scale, coarsest first (e.g. ``["32px", "64px"]``), drawn with a
            swatch of ``colours[k]``.
        first_frame: number of the first frame (frames are numbered from it).

    Both sit on a darkened backdrop, in Pillow's default font scaled with the frame
    (``min(H, W) / 24`` px, at least 10). A legend that would cover more than a third of the
    frame's height is left out; on narrow frames the number is written without "frame", and left
    out if even that does not fit (frames under about 30 px).
    """
    from PIL import Image, ImageDraw  # Pillow is imported only when a picture is drawn

    t, h, w, _ = frames.shape
    font = _font(max(10, min(h, w) // 24))
    legend = _legend_layout(w, h, names, font)
    pad = _pad(font)
    white = (255, 255, 255)
    for i in range(t):
        number = _number_box(first_frame + i, w, h, font)
        if number is not None:
            _darken(frames[i], number[1])
        if legend is not None:
            _darken(frames[i], legend.backdrop)
        img = Image.fromarray(frames[i])
        draw = ImageDraw.Draw(img)
        if number is not None:
            draw.text((pad, pad), number[0], fill=white, font=font)
        if legend is not None:
            for k, ((x0, y0, x1, y1), origin) in enumerate(zip(legend.swatches, legend.origins)):
                draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=tuple(colours[k % len(colours)]))
                draw.text(origin, names[k], fill=white, font=font)
        frames[i] = np.asarray(img)
    return frames


def _cell_index(length: int, g: int) -> np.ndarray:
    """For each pixel along an axis of ``length``, the index of the grid cell (of g) it falls in."""
    return np.minimum((np.arange(length) * g) // length, g - 1)


def _cell_border(length: int, g: int, thickness: int) -> np.ndarray:
    """Pixels along an axis within ``thickness`` of their cell's edge."""
    idx = _cell_index(length, g)
    starts = (np.arange(g) * length + g - 1) // g  # first pixel of each cell
    ends = np.append(starts[1:], length)  # one past the last pixel
    pos = np.arange(length)
    return (pos - starts[idx] < thickness) | (ends[idx] - 1 - pos < thickness)


def gaze_overlay(
    frames,
    gazing_mask: Sequence,
    scales: Sequence[int] | str | None = None,
    dim: float = 0.35,
    thickness: int | None = None,
    colours: Sequence[tuple[int, int, int]] = SCALE_COLOURS,
    labels: bool = True,
    first_frame: int = 0,
) -> np.ndarray:
    """Draw gazed patches on frames, with frame numbers and a scale-colour legend.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB (numpy or torch), any size: the patch grids are
            stretched over the whole frame.
        gazing_mask: one mask per scale, coarsest first (as AutoGaze's ``gazing_mask``), each
            ``(T, n_s)`` or ``(1, T, n_s)`` of 0/1 (bool, int, float; numpy or torch); ``n_s`` must
            be a square ``g²`` with row-major patches.
        scales: optional scale sizes (list or ``"32+64+112+224"``), used to check the grids.
        dim: brightness factor for pixels covered by no gazed patch (0 black, 1 unchanged).
        thickness: outline width in pixels (default: ``max(1, min(H, W) // 224)``).
        colours: outline colour per scale, coarsest first (cycled if there are more scales).
        labels: write each frame's number (top left) and a legend of the scale colours (bottom
            left: ``"32px"``... with ``scales``, else the grid, ``"2x2"``...); see :func:`label_frames`.
        first_frame: number of the first frame, for clips cut from a longer video.

    Returns:
        ``(T, H, W, 3)`` uint8 frames.

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
    if labels:
        names = [f"{s}px" for s in scales] if scales is not None else [f"{g}x{g}" for _, g in masks]
        label_frames(out, names, colours, first_frame)
    return out


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
) -> np.ndarray:
    """Draw gazed cells given as source-pixel boxes (a tiled gaze's ``cells``) on the source frames.

    Pixels covered by no gazed cell are dimmed; every cell gets an outline ``thickness`` pixels
    wide just inside its box, in its scale's colour, coarse scales first so finer outlines stay
    on top. Pixels belong to boxes by :func:`box_pixel_spans`.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB source frames (numpy or torch).
        frame, scale: ``(M,)`` each cell's frame (0-based in ``frames``) and scale index (0 = coarsest).
        boxes: ``(M, 4)`` ``(x0, y0, x1, y1)`` in source pixels.
        scales: the scale sizes, coarsest first (legend ``"32px"``…; one per scale index).
        dim, colours, labels, first_frame: as :func:`gaze_overlay`.
        thickness: outline width (default: ``max(1, min(min(H, W) // 224, s // 6))`` with ``s`` the
            smallest box side, so small tiled cells keep their interior visible).
    Returns:
        ``(T, H, W, 3)`` uint8.
    """
    frames = check_rgb_frames(frames)
    if not 0.0 <= dim <= 1.0:
        raise ValueError(f"dim must be in [0, 1], got {dim}")
    t, h, w, _ = frames.shape
    frame, scale, spans = _check_cells(frame, scale, boxes, t)
    if len(scale) and (scale.min() < 0 or scale.max() >= len(scales)):
        raise ValueError(f"cell scales run from {scale.min()} to {scale.max()} but {len(scales)} scales were given")
    spans = spans.clip(0, [w, h, w, h])
    if thickness is None:
        sides = np.minimum(spans[:, 2] - spans[:, 0], spans[:, 3] - spans[:, 1])
        smallest = int(sides[sides > 0].min()) if (sides > 0).any() else 0
        thickness = max(1, min(min(h, w) // 224, smallest // 6))
    if thickness < 1:
        raise ValueError(f"thickness must be >= 1, got {thickness}")
    covered = cells_pixel_mask(frame, _to_numpy(boxes), t, h, w)
    out = np.where(covered[..., None], frames, np.rint(frames * np.float32(dim)).astype(np.uint8))
    th = thickness
    for s in range(len(scales)):  # coarse first
        colour = np.asarray(colours[s % len(colours)], dtype=np.uint8)
        for i in np.flatnonzero(scale == s):
            x0, y0, x1, y1 = spans[i]
            f = out[frame[i]]
            f[y0:min(y0 + th, y1), x0:x1] = colour
            f[max(y1 - th, y0):y1, x0:x1] = colour
            f[y0:y1, x0:min(x0 + th, x1)] = colour
            f[y0:y1, max(x1 - th, x0):x1] = colour
    if labels:
        label_frames(out, [f"{s}px" for s in scales], colours, first_frame)
    return out


def label_lines(frames: np.ndarray, lines: Sequence[Sequence[str]]) -> np.ndarray:
    """Write lines of text at the top left of each frame, on a darkened backdrop.

    Args:
        frames: ``(T, H, W, 3)`` uint8, changed in place and returned.
        lines: per frame, the lines to write (e.g. frame number, PSNR).
    Font as :func:`label_frames`; lines that would run below the frame are left out.
    """
    from PIL import Image, ImageDraw  # Pillow is imported only when a picture is drawn

    t, h, w, _ = frames.shape
    if len(lines) != t:
        raise ValueError(f"got {len(lines)} lists of lines for {t} frames; give one per frame")
    font = _font(max(10, min(h, w) // 24))
    pad = _pad(font)
    step = font.getbbox("0Ag")[3] + pad
    for i in range(t):
        shown = [s for k, s in enumerate(lines[i]) if pad + (k + 1) * step <= h]
        if not shown:
            continue
        right = max(int(font.getlength(s)) for s in shown) + 2 * pad
        _darken(frames[i], (0, 0, min(w, right), pad + len(shown) * step))
        img = Image.fromarray(frames[i])
        draw = ImageDraw.Draw(img)
        for k, s in enumerate(shown):
            draw.text((pad, pad + k * step), s, fill=(255, 255, 255), font=font)
        frames[i] = np.asarray(img)
    return frames
