"""Draw AutoGaze's gazed patches onto video frames and save the result.

Each scale's ``gazing_mask`` is a row-major ``g × g`` grid of patches laid over the whole frame
(g = 2, 4, 7, 14 for the NVIDIA model's 32/64/112/224 scales), so coarse scales show as large
boxes and fine scales as small ones. Un-gazed pixels (covered by no gazed patch of any scale) are
dimmed; every gazed patch gets an outline in its scale's colour.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .video import check_rgb_frames, atomic_output, write_video

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
) -> np.ndarray:
    """Draw gazed patches on frames.

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

    Returns:
        ``(T, H, W, 3)`` uint8 frames.

    Raises:
        ValueError: bad frame or mask shapes, non-0/1 masks, or masks that do not fit ``scales``.
    """
    frames = check_rgb_frames(frames)
    if not 0.0 <= dim <= 1.0:
        raise ValueError(f"dim must be in [0, 1], got {dim}")
    t, h, w, _ = frames.shape
    masks = _check_masks(gazing_mask, t, _parse_scales(scales, len(gazing_mask)))
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
        from PIL import Image

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
    from PIL import Image

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
