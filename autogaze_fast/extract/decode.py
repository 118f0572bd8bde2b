"""Decode the frames of a video at sampled timestamps, clip by clip, with PyAV.

Sampling at ``frequency`` Hz takes the times ``0, 1/f, 2/f, …`` (seconds from the stream's start)
that fall before the end of the last frame; the frame shown at time ``t`` is the last one whose
presentation time is ``<= t`` (the first frame for times before it). This holds for variable frame
rates too, since it reads each frame's own timestamp. ``frequency=None`` ("native") takes every frame
at its own time.

The video is decoded forward once; when the next wanted time lies more than ``seek_gap`` seconds
ahead, the decoder seeks (to the keyframe before it) instead of decoding the gap. At most one clip of
RGB frames is held in memory: :func:`sample_clips` yields ``(times, frames)`` as each clip fills.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from autogaze_fast.media.decoders import torchcodec_clips, torchcodec_problem
from autogaze_fast.media.video import check_video_file, import_av, open_video


@dataclass(frozen=True)
class VideoProbe:
    """What the container says about a video's first video stream (nothing decoded).

    ``duration`` is in seconds (0.0 when unknown), ``fps`` the average rate (0.0 when unknown).
    """

    width: int
    height: int
    fps: float
    duration: float
    codec: str


def probe_video(path: str | os.PathLike) -> VideoProbe:
    """Size, rate, duration and codec of ``path``.

    Raises:
        FileNotFoundError / ValueError: missing, empty or unopenable file, no video stream.
    """
    path = check_video_file(path)
    with open_video(path) as (container, stream):
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        return VideoProbe(int(ctx.width), int(ctx.height), float(rate) if rate else 0.0, duration, str(ctx.name))


def _frame_time(frame, stream, start: float, fallback: float) -> float:
    """Seconds from the stream's start of a decoded frame (its index / fps when it has no pts)."""
    if frame.pts is None or frame.time_base is None:
        return fallback
    return float(frame.pts * frame.time_base) - start


def sample_clips(
    path: str | os.PathLike,
    frequency: float | None,
    clip_frames: int,
    seek_gap: float = 4.0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(times, frames)`` clip by clip: ``times`` ``(t,)`` float64 seconds, ``frames``
    ``(t, H, W, 3)`` uint8 RGB, ``t <= clip_frames`` (only the last clip may be shorter).

    Args:
        path: a video file.
        frequency: samples per second, or ``None`` for every frame.
        clip_frames: frames per clip.
        seek_gap: seek instead of decoding when the next sample is this many seconds ahead.
    Raises:
        FileNotFoundError / ValueError: missing, empty, unopenable or undecodable file (the message
            says how far decoding got), a video with no frame at any sampled time.
        ImportError: PyAV is not installed.
    """
    if frequency is not None and not (math.isfinite(frequency) and frequency > 0):
        raise ValueError(f"frequency must be a positive number of frames per second (or None for every frame), got {frequency}")
    if clip_frames < 1:
        raise ValueError(f"clip_frames must be >= 1, got {clip_frames}")
    path = check_video_file(path)
    av = import_av()
    times: list[float] = []
    frames: list[np.ndarray] = []
    emitted = 0
    with open_video(path) as (container, stream):
        stream.thread_type = "AUTO"
        base = stream.time_base
        start = float(stream.start_time * base) if stream.start_time is not None and base is not None else 0.0
        rate = stream.average_rate or stream.guessed_rate
        frame_gap = 1.0 / float(rate) if rate else 0.0
        decoder = container.decode(stream)
        prev = None  # [time, av frame, rgb array or None] of the last decoded frame
        k, last_seek, count, last_end = 0, -math.inf, 0, 0.0

        def take(entry, t: float):
            if entry[2] is None:
                entry[2] = entry[1].to_ndarray(format="rgb24")
            times.append(t)
            frames.append(entry[2])

        while True:
            try:
                frame = next(decoder)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                where = f"after {count} frame(s), at {prev[0]:.2f} s" if prev else "at the first frame"
                raise ValueError(f"{path}: decoding failed {where} ({type(e).__name__}: {e})") from None
            t_frame = _frame_time(frame, stream, start, count * frame_gap)
            count += 1
            duration = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else frame_gap
            last_end = t_frame + duration
            current = [t_frame, frame, None]
            if frequency is None:
                take(current, t_frame)
            else:
                while k / frequency < t_frame:  # sample times before this frame show the previous one
                    take(prev if prev is not None else current, k / frequency)
                    k += 1
                prev = current
                target = k / frequency
                if target - t_frame > seek_gap and target > last_seek + seek_gap and base is not None:
                    last_seek = target
                    container.seek(int((target + start) / base), stream=stream, backward=True, any_frame=False)
                    decoder = container.decode(stream)
                    prev = None
                    current = None
            if len(frames) >= clip_frames:
                yield np.asarray(times[:clip_frames]), np.stack(frames[:clip_frames])
                emitted += clip_frames
                del times[:clip_frames], frames[:clip_frames]
        if frequency is not None and prev is not None:
            while k / frequency < max(last_end, prev[0] + 1e-9):  # the last frame shows until it ends
                take(prev, k / frequency)
                k += 1
        if count == 0:
            raise ValueError(f"{path} holds no decodable video frames")
        while frames:
            yield np.asarray(times[:clip_frames]), np.stack(frames[:clip_frames])
            emitted += len(frames[:clip_frames])
            del times[:clip_frames], frames[:clip_frames]
    if emitted == 0:
        raise ValueError(f"{path}: no frame falls at any sampled time (zero duration?)")


DECODERS = ("auto", "torchcodec", "pyav")


def resolve_decoder(decoder: str) -> str:
    """``"pyav"`` or ``"torchcodec"`` for ``--decoder auto|torchcodec|pyav`` (auto: torchcodec when it
    imports and runs here, else PyAV).

    Raises:
        ValueError: an unknown name.
        ImportError: ``torchcodec`` asked for but unusable here (the message says why).
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if decoder == "pyav":
        return "pyav"
    problem = torchcodec_problem()
    if problem is None:
        return "torchcodec"
    if decoder == "auto":
        return "pyav"
    raise ImportError(f"--decoder torchcodec cannot run here: {problem}. Use --decoder pyav (or auto)")


def open_sampler(path, frequency: float | None, clip_frames: int, decoder: str = "pyav"):
    """``(clips, probe)``: the ``(times, frames)`` clips of :func:`sample_clips` (or of the torchcodec
    backend, same frames at the same times) and the video's :class:`VideoProbe`."""
    decoder = resolve_decoder(decoder)
    if decoder == "torchcodec":
        clips, facts = torchcodec_clips(path, frequency, clip_frames)
        return clips, VideoProbe(**facts)
    probe = probe_video(path)
    return sample_clips(path, frequency, clip_frames), probe
