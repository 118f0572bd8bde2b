"""``motion-vectors``: the codec heuristic. The clip is encoded in memory (H.264 with ``libx264``
when PyAV has it, else MPEG-4 Part 2; no B-frames, one reference frame) and decoded with FFmpeg's
``flags2=+export_mvs``, or a video file is decoded as it is. Each decoded inter frame's per-pixel
change is ``|motion vector|`` (pixels) of the block holding the pixel plus the block's residual, the
mean ``|Δ|`` (grey levels) between the decoded frame and its motion-compensated prediction from the
previous decoded frame; pixels of intra-coded blocks, and whole intra frames after the first (a scene
cut), take the plain ``|Δ|`` against the previous frame. Frame 0 takes the fixed coarse-to-fine
pattern; later frames the change rule of :mod:`autogaze_fast.selectors.patterns` (finest scale while
the motion is concentrated, a coarser scale where it is spread), as ``frame-difference`` does.

FFmpeg exports motion vectors for H.264 and the MPEG-1/2/4 family; its HEVC, VP9 and AV1 decoders
export none, and such a stream raises a ValueError saying so (re-encode it, or use
``frame-difference``).
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from autogaze_fast.media.video import import_av
from autogaze_fast.selectors.base import Selector, check_video
from autogaze_fast.selectors.frame_difference import check_fraction, check_threshold, select_by_change
from autogaze_fast.selectors.layout import GazeLayout

ENCODE_OPTIONS = {
    "libx264": {"crf": "18", "bf": "0", "ref": "1", "threads": "1"},
    "mpeg4": {"bf": "0", "qmax": "4", "threads": "1"},
}
"""Per codec, the in-memory encoder's options: no B-frames and one reference frame, so every
motion vector points at the previous frame."""


def default_codec() -> str:
    return "libx264" if "libx264" in import_av().codecs_available else "mpeg4"


def encode_in_memory(frames: np.ndarray, codec: str) -> io.BytesIO:
    """``(T, H, W, 3)`` uint8 (even sides) → an MP4 in memory."""
    av = import_av()
    if codec not in ENCODE_OPTIONS:
        raise ValueError(f"the motion-vectors selector encodes clips with {sorted(ENCODE_OPTIONS)}, got codec {codec!r} "
                         "(FFmpeg exports no motion vectors for HEVC, VP9 or AV1)")
    if codec not in av.codecs_available:
        raise ValueError(f"this PyAV build has no {codec!r} encoder; use codec='mpeg4'")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=8)
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        stream.options = dict(ENCODE_OPTIONS[codec], g=str(max(len(frames), 1) * 2))
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    buffer.seek(0)
    return buffer


def decode_with_motion_vectors(source: str | os.PathLike | io.BytesIO, max_frames: int | None = None
                               ) -> tuple[list[np.ndarray], list[np.ndarray | None], str]:
    """Decode every frame with FFmpeg's motion-vector export.

    Returns:
        the ``(H, W, 3)`` uint8 RGB frames, per frame the structured array of its motion vectors
        (FFmpeg's ``AVMotionVector`` fields; None for a frame without any), and the decoder's name.
    Raises:
        ValueError: a stream whose decoder exported no motion vector for any of its inter frames.
    """
    av = import_av()
    frames, vectors, inter = [], [], 0
    with av.open(source if isinstance(source, io.BytesIO) else os.fspath(source)) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        name = stream.codec_context.name
        for frame in container.decode(stream):
            side = frame.side_data.get("MOTION_VECTORS")
            vectors.append(None if side is None else side.to_ndarray())
            inter += frames != [] and str(frame.pict_type) not in ("1", "I", "PictureType.I")
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if inter and all(v is None for v in vectors):
        raise ValueError(
            f"the {name!r} decoder exported no motion vectors for the {inter} inter-coded frame(s) of this video: "
            "FFmpeg exports them (flags2=+export_mvs) for H.264 and MPEG-1/2/4 only, not for HEVC, VP9 or AV1. "
            "Re-encode the video with H.264 (e.g. ffmpeg -c:v libx264 -bf 0), or use the frame-difference selector")
    return frames, vectors, name


def motion_change(current: np.ndarray, previous: np.ndarray, vectors: np.ndarray | None) -> np.ndarray:
    """``(H, W)`` float32 per-pixel change of ``current`` (see the module docstring).

    Args:
        current, previous: ``(H, W, 3)`` uint8 decoded frames.
        vectors: the frame's motion vectors (block centres ``dst_x/dst_y`` and ``src_x/src_y``, sizes
            ``w``/``h``, ``motion_x/motion_y`` in ``1/motion_scale`` pixels), or None (an intra frame).
    """
    h, w = current.shape[:2]
    cur, prev = current.astype(np.float32), previous.astype(np.float32)
    if vectors is None or len(vectors) == 0:
        return np.abs(cur - prev).mean(-1)
    dy = np.zeros((h, w), np.int64)
    dx = np.zeros((h, w), np.int64)
    motion = np.zeros((h, w), np.float32)
    covered = np.zeros((h, w), bool)
    for v in vectors:
        bw, bh = int(v["w"]), int(v["h"])
        x0, y0 = int(v["dst_x"]) - bw // 2, int(v["dst_y"]) - bh // 2
        xs, ys = slice(max(x0, 0), min(x0 + bw, w)), slice(max(y0, 0), min(y0 + bh, h))
        dx[ys, xs] = int(v["src_x"]) - int(v["dst_x"])
        dy[ys, xs] = int(v["src_y"]) - int(v["dst_y"])
        scale = max(int(v["motion_scale"]), 1)
        motion[ys, xs] = np.hypot(float(v["motion_x"]) / scale, float(v["motion_y"]) / scale)
        covered[ys, xs] = True
    rows = np.clip(np.arange(h)[:, None] + dy, 0, h - 1)
    cols = np.clip(np.arange(w)[None, :] + dx, 0, w - 1)
    residual = np.abs(cur - prev[rows, cols]).mean(-1)
    plain = np.abs(cur - prev).mean(-1)
    return np.where(covered, motion + residual, plain).astype(np.float32)


def change_maps(frames: list[np.ndarray], vectors: list[np.ndarray | None], side: int) -> torch.Tensor:
    """``(T - 1, side, side)`` change maps of decoded frames 1.. (resized to the layout's side)."""
    maps = [torch.from_numpy(motion_change(frames[i], frames[i - 1], vectors[i])) for i in range(1, len(frames))]
    if not maps:
        return torch.zeros(0, side, side)
    out = torch.stack(maps)
    if tuple(out.shape[-2:]) != (side, side):
        out = F.interpolate(out[:, None], size=(side, side), mode="bilinear", antialias=True, align_corners=False)[:, 0]
    return out


class MotionVectors(Selector):
    """See the module docstring.

    Args:
        codec: the in-memory encoder (``"libx264"`` when available, else ``"mpeg4"``).
        coverage, threshold: as for ``frame-difference`` (the change rule; threshold in the map's units).
    """

    name = "motion-vectors"

    def __init__(self, codec: str | None = None, coverage: float = 0.9, threshold: float | None = None) -> None:
        self.codec = codec or default_codec()
        if self.codec not in ENCODE_OPTIONS:
            raise ValueError(f"codec must be one of {sorted(ENCODE_OPTIONS)}, got {codec!r}")
        self.coverage = check_fraction(coverage, "coverage")
        self.threshold = check_threshold(threshold)

    @property
    def needs_budget(self) -> bool:  # type: ignore[override]
        return self.threshold is None

    def describe(self) -> dict[str, Any]:
        return {"selector": self.name, "codec": self.codec, "coverage": self.coverage, "threshold": self.threshold}

    def _budget(self, budget: int | None, layout: GazeLayout) -> int:
        if budget is None:
            if self.threshold is None:
                raise ValueError("the 'motion-vectors' selector needs a budget: pass gazing_ratio (e.g. 0.1) or a threshold")
            return layout.num_tokens
        return int(budget)

    def masks(self, video: torch.Tensor, layout: GazeLayout, budget: int | None) -> tuple[torch.Tensor, dict[str, Any]]:
        check_video(video, layout)
        budget = self._budget(budget, layout)
        out = []
        for row in video:
            frames = row.detach().float().cpu().round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            pad = layout.side % 2
            if pad:  # yuv420p needs even sides
                frames = np.pad(frames, ((0, 0), (0, pad), (0, pad), (0, 0)), mode="edge")
            decoded, vectors, _ = decode_with_motion_vectors(encode_in_memory(frames, self.codec))
            decoded = [f[:layout.side, :layout.side] for f in decoded]
            if len(decoded) != len(frames):
                raise RuntimeError(f"the {self.codec} round trip gave {len(decoded)} frames for {len(frames)}")
            maps = change_maps(decoded, vectors, layout.side)
            out.append(select_by_change(maps, layout, budget, self.coverage, self.threshold))
        return torch.stack(out).to(video.device), {}

    def masks_from_file(self, path: str | os.PathLike, layout: GazeLayout, budget: int | None,
                        max_frames: int | None = None) -> torch.Tensor:
        """``(1, T, N)`` bool from a video file's own motion vectors (no re-encoding; B-frame vectors
        are taken as pointing at the previous frame)."""
        decoded, vectors, _ = decode_with_motion_vectors(path, max_frames)
        maps = change_maps(decoded, vectors, layout.side)
        return select_by_change(maps, layout, self._budget(budget, layout), self.coverage, self.threshold)[None]
