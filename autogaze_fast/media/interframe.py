"""The interframe view of a gaze: what a viewer that only re-reads the gazed cells would show.

Frame by frame, pixels inside the gazed cells are taken from the current input frame and every
other pixel keeps the previous output frame's value; at a keyframe (frames ``0, K, 2K, …``) the
whole frame is refreshed from the input. How far that stream drifts from the input, measured by
the PSNR, says how much of the picture the gaze left stale.

Pure numpy, no model: :func:`interframe_stream` builds the stream from frames and per-frame
masks in source pixels (e.g. :func:`autogaze_fast.media.draw.cells_pixel_mask` of a gaze's cell
boxes), :func:`psnr` and :func:`psnr_ema` score it, :func:`write_interframe_csv` records the scores.

PSNR of identical images is ``inf`` (no cap): the stream equals the input at every keyframe.
Infinite values do not enter the EMA (see :func:`psnr_ema`).
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autogaze_fast.checks import check_int
from autogaze_fast.media.video import atomic_output, current_umask

PSNR_EMA_FACTOR = 0.9
"""Weight of the past in the PSNR's EMA: ``ema_t = 0.9 · ema_{t-1} + 0.1 · psnr_t``."""

CSV_COLUMNS = ("frame", "psnr", "psnr_ema", "gazed_fraction", "keyframe")


def is_keyframe(num_frames: int, keyframe_every: int, first_frame: int = 0) -> np.ndarray:
    """``(T,)`` bool: True at frames ``0, K, 2K, …`` of the video (frame 0 is always a keyframe),
    for ``T`` frames numbered from ``first_frame``."""
    k = check_int(keyframe_every, "keyframe_every",
                  message=f"keyframe_every must be an integer >= 1 (1 refreshes every frame), got {keyframe_every!r}")
    return (first_frame + np.arange(num_frames)) % k == 0


def interframe_stream(frames: np.ndarray, masks_in_source_pixels: np.ndarray, keyframe_every: int,
                      first_frame: int = 0, previous: np.ndarray | None = None) -> np.ndarray:
    """The interframe stream of ``frames`` under a gaze.

    Args:
        frames: ``(T, H, W, C)`` input frames (any dtype, e.g. uint8 RGB).
        masks_in_source_pixels: ``(T, H, W)`` bool, True where a gazed cell covers the pixel.
        keyframe_every: K >= 1; frames ``0, K, 2K, …`` are refreshed whole (K = 1: every frame).
        first_frame, previous: to continue a stream piece by piece: the video frame number of
            ``frames[0]`` and the stream's output frame just before it (needed unless
            ``first_frame`` is a keyframe). Pieces joined equal the stream of the whole video.
    Returns:
        ``(T, H, W, C)`` of ``frames``' dtype: ``out[t] = frames[t]`` at a keyframe, else
        ``frames[t]`` where ``masks[t]`` and ``out[t - 1]`` elsewhere.
    Raises:
        ValueError: shapes that do not match, a non-boolean mask, or ``keyframe_every < 1``.
    """
    frames = np.asarray(frames)
    masks = np.asarray(masks_in_source_pixels)
    if frames.ndim != 4:
        raise ValueError(f"frames must be (T, H, W, C), got shape {frames.shape}")
    if masks.shape != frames.shape[:3]:
        raise ValueError(f"masks must be (T, H, W) = {frames.shape[:3]} to match the frames, got {masks.shape}")
    if masks.dtype != np.bool_:
        raise ValueError(f"masks must be boolean (True = gazed pixel), got dtype {masks.dtype}")
    key = is_keyframe(frames.shape[0], keyframe_every, first_frame)
    if frames.shape[0] and not key[0] and (previous is None or np.shape(previous) != frames.shape[1:]):
        raise ValueError(f"frame {first_frame} is not a keyframe: give the stream's previous output frame "
                         f"{frames.shape[1:]} as previous")
    out = np.empty_like(frames)
    for t in range(frames.shape[0]):
        if key[t]:
            out[t] = frames[t]
        else:
            out[t] = np.where(masks[t][..., None], frames[t], out[t - 1] if t else previous)
    return out


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio ``10 · log10(peak² / MSE)`` in dB between two images.

    Args:
        a, b: arrays of one shape (e.g. ``(H, W, 3)`` uint8); the MSE is the mean over every
            element, computed in float64.
        peak: the largest possible value (255 for uint8).
    Returns:
        the PSNR in dB; ``inf`` when the images are identical (MSE 0), never capped.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images must have one shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("images are empty")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def psnr_ema(values: Sequence[float], factor: float = PSNR_EMA_FACTOR, start: float = math.inf) -> np.ndarray:
    """Exponential moving average of per-frame PSNR values.

    ``ema_t = factor · ema_{t-1} + (1 - factor) · psnr_t``, starting at the first finite value.
    An infinite PSNR (an exact frame, e.g. a keyframe) leaves the EMA as it was, so one exact frame
    does not turn the average infinite for good; before the first finite value the EMA is ``inf``.

    Args:
        values: ``(T,)`` PSNR values in dB.
        factor: weight of the past, in [0, 1).
        start: the EMA before the first value (to continue an EMA piece by piece: the last value
            of the previous piece).
    Returns:
        ``(T,)`` float64.
    """
    if not 0.0 <= factor < 1.0:
        raise ValueError(f"the EMA factor must be in [0, 1), got {factor}")
    out = np.empty(len(values), dtype=np.float64)
    ema = float(start)
    for t, v in enumerate(values):
        v = float(v)
        if math.isnan(v):
            raise ValueError(f"PSNR value {t} is NaN")
        if math.isfinite(v):
            ema = v if math.isinf(ema) else factor * ema + (1.0 - factor) * v
        out[t] = ema
    return out


def gazed_fraction(masks_in_source_pixels: np.ndarray) -> np.ndarray:
    """``(T, H, W)`` bool masks → ``(T,)`` fraction of each frame's pixels covered by gazed cells."""
    masks = np.asarray(masks_in_source_pixels)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (T, H, W), got shape {masks.shape}")
    return masks.reshape(masks.shape[0], -1).mean(axis=1, dtype=np.float64)


class InterframeCsv:
    """The CSV of :func:`write_interframe_csv`, written row by row as a stream goes (to a temporary
    file renamed onto ``path`` by :meth:`close`; :meth:`abort` deletes it). As a context manager it
    closes when the ``with`` block ends without an error and aborts otherwise."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(os.fspath(path)).expanduser()
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"cannot write {self.path}: directory {self.path.parent} does not exist")
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._tmp = Path(name)
        self._file = os.fdopen(fd, "w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(CSV_COLUMNS)
        self._rows = 0

    def __enter__(self) -> InterframeCsv:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def write(self, psnr_values: Sequence[float], ema: Sequence[float], fraction: Sequence[float],
              keyframes: Sequence[bool]) -> None:
        for p, e, g, k in zip(psnr_values, ema, fraction, keyframes, strict=True):
            self._writer.writerow([self._rows, f"{p:.4f}", f"{e:.4f}", f"{g:.6f}", int(bool(k))])
            self._rows += 1

    def close(self) -> Path:
        self._file.close()
        os.chmod(self._tmp, 0o666 & ~current_umask())
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


def write_interframe_csv(path: str | os.PathLike, psnr_values: Sequence[float], ema: Sequence[float],
                         fraction: Sequence[float], keyframes: Sequence[bool]) -> Path:
    """Write one row per frame: ``frame, psnr, psnr_ema, gazed_fraction, keyframe`` (0/1).

    Infinite PSNRs are written as ``inf`` (which ``float()`` reads back). The file appears only
    once complete.
    """
    if not len(psnr_values) == len(ema) == len(fraction) == len(keyframes):
        raise ValueError("psnr, ema, gazed_fraction and keyframes need one value per frame each")
    path = Path(os.fspath(path)).expanduser()
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for t, row in enumerate(zip(psnr_values, ema, fraction, keyframes)):
            p, e, g, k = row
            writer.writerow([t, f"{p:.4f}", f"{e:.4f}", f"{g:.6f}", int(bool(k))])
    return path
