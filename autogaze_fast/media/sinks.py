"""Write pictures frame by frame as a stream produces them: a video file or an animated GIF, with
no more than the current frames in memory, or a PNG/JPEG grid (which holds every frame: a grid is
one picture of the whole stretch, so keep it for short ones).

    >>> with open_frame_sink("gaze.mp4", fps=8) as sink:
    ...     for pictures in stream:            # (t, H, W, 3) uint8 each
    ...         sink.write(pictures)

Each file appears only once complete: it is written to a temporary file beside the target and
renamed onto it when the ``with`` block ends without an error (deleted otherwise).
"""

from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from autogaze_fast.media.draw import save_gaze_grid
from autogaze_fast.media.video import atomic_output, check_rgb_frames, container_format, import_av

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")


class FrameSink:
    """Base: ``write(frames)`` any number of times inside ``with``; the file is finished on exit."""

    def __init__(self, path: str | os.PathLike, fps: float = 8.0) -> None:
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.path = Path(os.fspath(path)).expanduser()
        self.fps = float(fps)
        self.frames_written = 0
        self.size: tuple[int, int] | None = None
        self._stack = contextlib.ExitStack()
        self._tmp: Path | None = None

    def __enter__(self) -> FrameSink:
        self._tmp = self._stack.enter_context(atomic_output(self.path))
        return self

    def __exit__(self, kind, value, tb) -> bool:
        try:
            if kind is None:
                if self.frames_written == 0:
                    raise ValueError(f"no frames were written to {self.path}")
                self._finish()
            else:
                self._abandon()
        except BaseException as e:  # the temporary file is deleted, the error goes on
            self._stack.__exit__(type(e), e, e.__traceback__)
            raise
        return bool(self._stack.__exit__(kind, value, tb))

    def write(self, frames) -> None:
        """Append ``(t, H, W, 3)`` uint8 frames (all of one size)."""
        frames = check_rgb_frames(frames)
        if self.size is None:
            self.size = frames.shape[1:3]
        elif frames.shape[1:3] != self.size:
            raise ValueError(f"frames are {frames.shape[1]}x{frames.shape[2]} but {self.path.name} is "
                             f"{self.size[0]}x{self.size[1]}; every frame of a stream has one size")
        for frame in frames:
            self._write_frame(frame)
            self.frames_written += 1

    def _write_frame(self, frame: np.ndarray) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        pass

    def _abandon(self) -> None:
        pass


class VideoSink(FrameSink):
    """A video file through PyAV: H.264 (crf 18, yuv420p) when available, else MPEG-4 Part 2, as
    :func:`autogaze_fast.media.video.write_video` (odd sides padded by repeating the last row/column)."""

    def __init__(self, path, fps: float = 8.0, crf: int = 18) -> None:
        super().__init__(path, fps)
        self.crf = crf
        self._container = self._stream = None

    def _open(self, height: int, width: int) -> None:
        av = import_av()
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._container = av.open(str(self._tmp), mode="w", format=container_format(self.path))
        self._stream = self._container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1001))
        self._stream.height, self._stream.width = height + height % 2, width + width % 2
        self._stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self._stream.options = {"crf": str(self.crf)}

    def _write_frame(self, frame: np.ndarray) -> None:
        av = import_av()
        h, w = frame.shape[:2]
        if self._container is None:
            self._open(h, w)
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            self._container.mux(packet)

    def _finish(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def _abandon(self) -> None:
        if self._container is not None:
            self._container.close()


class GifSink(FrameSink):
    """An animated GIF (looping), one frame at a time: each frame gets its own adaptive 256-colour
    palette (as Pillow's GIF writer quantises an RGB frame) and is encoded as it arrives."""

    def __init__(self, path, fps: float = 8.0) -> None:
        super().__init__(path, fps)
        self._file = None
        self._duration = round(1000 / self.fps)

    def _write_frame(self, frame: np.ndarray) -> None:
        from PIL import GifImagePlugin, Image  # Pillow is deferred until a GIF is written

        image = Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE)
        if self._file is None:
            self._file = open(self._tmp, "wb")
            header, _ = GifImagePlugin.getheader(image, None, {"loop": 0, "duration": self._duration})
            for chunk in header:
                self._file.write(chunk)
        for chunk in GifImagePlugin.getdata(image, duration=self._duration, include_color_table=True):
            self._file.write(chunk)

    def _finish(self) -> None:
        self._file.write(b";")  # GIF trailer
        self._file.close()

    def _abandon(self) -> None:
        if self._file is not None:
            self._file.close()


class GridSink(FrameSink):
    """A PNG/JPEG grid of every frame (:func:`autogaze_fast.media.draw.save_gaze_grid`), written on exit.
    The frames are kept until then: the grid is one picture of all of them."""

    def __init__(self, path, fps: float = 8.0) -> None:
        super().__init__(path, fps)
        self._frames: list[np.ndarray] = []

    def _write_frame(self, frame: np.ndarray) -> None:
        self._frames.append(frame.copy())

    def _finish(self) -> None:
        save_gaze_grid(self._tmp, np.stack(self._frames))


def open_frame_sink(path: str | os.PathLike, fps: float = 8.0) -> FrameSink:
    """The sink for ``path``'s suffix: ``.png``/``.jpg``/``.jpeg`` a grid, ``.gif`` an animated GIF,
    anything else a video file (``.mp4``, ``.webm``, ``.mkv``, ...). Use it in a ``with`` block."""
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix in PICTURE_SUFFIXES:
        return GridSink(path, fps)
    if suffix == ".gif":
        return GifSink(path, fps)
    return VideoSink(path, fps)
