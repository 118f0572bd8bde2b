"""The torchcodec decoding backend (``--decoder torchcodec``; ``pip install 'autogaze-fast[torchcodec]'``).

Same contract as :func:`autogaze_fast.extract.decode.sample_clips`: the frame shown at each sampled
time ``k / f`` (the last frame whose presentation time is ``<= t``), which is torchcodec's
``get_frames_played_at``; ``frequency=None`` takes every frame. On CUDA torchcodec can decode with
NVDEC (``device="cuda"``). torchcodec is imported only here, only when asked for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np

from autogaze_fast.media.video import check_video_file


def torchcodec_problem() -> str | None:
    """``None`` when torchcodec imports and loads its native libraries here; else why not (one line)."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401  deferred: torchcodec is optional
    except ImportError as e:
        return f"torchcodec is not installed ({e}); pip install 'autogaze-fast[torchcodec]'"
    except Exception as e:  # its native libraries (FFmpeg, the CUDA runtime it was built for) do not load
        cause = e.__cause__ or e
        first = str(e).splitlines()[0] if str(e) else ""
        because = str(cause).splitlines()[0] if str(cause) else ""
        return (f"torchcodec is installed but its native libraries do not load ({type(e).__name__}: "
                f"{first}; cause: {because}): it needs FFmpeg 4-8 shared "
                "libraries on the system and a build matching this torch (CPU or its CUDA version; "
                "on PyPI, torchcodec 0.12-0.13 are CPU builds for torch >= 2.11, 0.14 on are CUDA 13 builds)")
    return None


def torchcodec_clips(path: str | os.PathLike, frequency: float | None, clip_frames: int,
                     device: str = "cpu"):
    """``(clips, probe)`` with torchcodec (``probe``: width, height, fps, duration, codec); ``clips``
    yields ``(times (t,) float64, frames (t, H, W, 3) uint8)``.

    Raises:
        FileNotFoundError / ValueError: missing, empty or unopenable file; no frame at any sampled time.
    """
    from torchcodec.decoders import VideoDecoder  # deferred: torchcodec is optional

    path = check_video_file(path)
    try:
        # num_ffmpeg_threads=0: FFmpeg picks the thread count, as the PyAV path's thread_type="AUTO" does
        decoder = VideoDecoder(str(path), device=device, seek_mode="exact", dimension_order="NHWC",
                               num_ffmpeg_threads=0)
    except Exception as e:
        raise ValueError(f"{path} is not a video torchcodec can open ({type(e).__name__}: {e})") from None
    meta = decoder.metadata
    begin = float(meta.begin_stream_seconds or 0.0)
    end = float(meta.end_stream_seconds or 0.0)
    probe = {"width": int(meta.width or 0), "height": int(meta.height or 0), "fps": float(meta.average_fps or 0.0),
             "duration": float(meta.duration_seconds or 0.0), "codec": str(meta.codec or "")}

    def clips() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if frequency is None:
            count = len(decoder)
            for start in range(0, count, clip_frames):
                batch = decoder.get_frames_in_range(start, min(start + clip_frames, count))
                yield batch.pts_seconds.double().numpy() - begin, batch.data.cpu().numpy()
            return
        times = np.arange(int(math.ceil((end - begin) * frequency - 1e-9))) / frequency
        if times.size == 0:
            raise ValueError(f"{path}: no frame falls at any sampled time (zero duration?)")
        for start in range(0, times.size, clip_frames):
            chunk = times[start:start + clip_frames]
            batch = decoder.get_frames_played_at(seconds=(chunk + begin).tolist())
            yield chunk, batch.data.cpu().numpy()

    return clips(), probe
