"""Video file I/O with PyAV: read frames, probe metadata, write mp4 atomically.

PyAV is an optional dependency (``pip install autogaze-fast[video]``); it is imported only when a
function here needs it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

_INSTALL_HINT = "reading and writing video files needs PyAV: pip install 'autogaze-fast[video]' (or pip install av)"


def import_av():
    """The ``av`` module (PyAV), or an ImportError that says how to install it."""
    try:
        import av  # PyAV is optional (the [video] extra)
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return av


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a video file's first video stream.

    ``num_frames`` comes from the container header, or from counting packets when the header
    does not say; ``fps`` is the average frame rate (0.0 when unknown).
    """

    num_frames: int
    fps: float
    height: int
    width: int
    codec: str


def check_video_file(path: str | os.PathLike) -> Path:
    """``path`` as a ``Path`` (``~`` expanded) once it names a non-empty file; FileNotFoundError or
    ValueError otherwise."""
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no video file at {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); it holds no video")
    return path


@contextlib.contextmanager
def open_video(path: Path) -> Iterator[tuple[object, object]]:
    """Open ``path`` and yield ``(container, first video stream)``, with ValueErrors naming the path."""
    av = import_av()
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise ValueError(f"{path} is not a video PyAV can open ({type(e).__name__}: {e})") from None
    try:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        yield container, container.streams.video[0]
    finally:
        container.close()


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame count, frame rate, size and codec of a video file, without decoding it.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is empty, not a video, or has no video stream.
    """
    path = check_video_file(path)
    av = import_av()
    with open_video(path) as (container, stream):
        num_frames = int(stream.frames or 0)
        if num_frames == 0:
            try:
                num_frames = sum(1 for p in container.demux(stream) if p.size > 0)
            except av.error.FFmpegError as e:
                raise ValueError(f"{path}: cannot read the video stream ({type(e).__name__}: {e})") from None
        rate = stream.average_rate or stream.guessed_rate
        ctx = stream.codec_context
        return VideoInfo(num_frames, float(rate) if rate else 0.0, int(ctx.height), int(ctx.width), str(ctx.name))


def _check_indices(indices: Sequence[int] | np.ndarray, path: Path) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1:
        raise ValueError(f"indices must be a 1-D sequence of frame numbers, got shape {idx.shape}")
    if idx.size == 0:
        raise ValueError("indices is empty; pass at least one frame number (or None for all frames)")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
    if (idx < 0).any():
        raise ValueError(f"indices must be >= 0, got {idx[idx < 0].tolist()} for {path}")
    return idx.astype(np.int64)


def read_video(path: str | os.PathLike, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Decode frames of a video file as RGB.

    Args:
        path: video file (anything FFmpeg reads: mp4, webm, avi, ...).
        indices: frame numbers (0-based, in decode order) to return, in the order given; repeats
            allowed. ``None`` returns every frame. Upstream's ``read_video_pyav`` returns each
            selected frame once, in file order: the same result for sorted unique indices.

    Returns:
        ``(T, H, W, 3)`` uint8 array, ``T = len(indices)`` (or the frame count).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: empty or undecodable file, no video stream, no frames, or an index past the
            last frame (the message gives the frame count).
        ImportError: PyAV is not installed.
    """
    path = check_video_file(path)
    idx = None if indices is None else _check_indices(indices, path)
    av = import_av()
    wanted = None if idx is None else set(idx.tolist())
    last = None if idx is None else int(idx.max())
    decoded: dict[int, np.ndarray] = {}
    frames: list[np.ndarray] = []
    count = 0
    with open_video(path) as (container, stream):
        expected = int(stream.frames or 0)
        stream.thread_type = "AUTO"
        try:
            for i, frame in enumerate(container.decode(stream)):
                count = i + 1
                if wanted is None:
                    frames.append(frame.to_ndarray(format="rgb24"))
                elif i in wanted:
                    decoded[i] = frame.to_ndarray(format="rgb24")
                if last is not None and i >= last:
                    break
        except av.error.FFmpegError as e:
            raise ValueError(f"{path}: decoding failed after {count} frame(s) ({type(e).__name__}: {e})") from None
    if count == 0:
        raise ValueError(f"{path} holds no decodable video frames")
    if idx is None:
        if expected and count < expected:
            warnings.warn(
                f"{path}: the header announces {expected} frames but only {count} decoded (truncated file?)", stacklevel=2
            )
        return np.stack(frames)
    if last >= count:
        bad = sorted(i for i in wanted if i >= count)
        raise ValueError(f"frame indices {bad} are out of range for {path}, which has {count} frames (0..{count - 1})")
    return np.stack([decoded[i] for i in idx.tolist()])


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, else delete it.

    The temporary file keeps ``path``'s suffix (so writers can infer the format) and lives in the
    same directory (so the final ``os.replace`` is atomic). Nothing half-written is left behind.
    """
    path = Path(os.fspath(path)).expanduser()
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_rgb_frames(frames: np.ndarray, what: str = "frames") -> np.ndarray:
    if hasattr(frames, "detach"):  # torch tensor
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{what} must have shape (T, H, W, 3), got {tuple(frames.shape)}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"{what} is empty: shape {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 RGB in [0, 255], got dtype {frames.dtype}")
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 8.0, codec: str | None = None, crf: int = 18) -> Path:
    """Encode ``(T, H, W, 3)`` uint8 RGB frames to a video file (atomically).

    H.264 (``libx264``, yuv420p) when available, else MPEG-4 Part 2. yuv420p needs even sides:
    an odd height or width is padded by repeating the last row or column.

    Raises:
        ValueError: bad frames or fps.
        ImportError: PyAV is not installed.
    """
    frames = check_rgb_frames(frames)
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    av = import_av()
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    if codec is None:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    path = Path(os.fspath(path)).expanduser()
    with atomic_output(path) as tmp:
        with av.open(str(tmp), mode="w", format=container_format(path)) as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.height, stream.width = frames.shape[1], frames.shape[2]
            stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": str(crf)}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def container_format(path: Path) -> str | None:
    """FFmpeg muxer for ``path``'s suffix (the temp file's suffix would confuse guessing)."""
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}.get(
        path.suffix.lower()
    )
