"""Small generated videos and tiny checkpoints for the extraction tests (no file from outside).

Every frame of the "marker" videos is one flat grey level ``10 · i`` (i = frame index), written
losslessly (FFV1 / PNG), so a decoded frame tells which source frame it is.
"""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

from autogaze_fast.media.synthetic import synthetic_clip
from autogaze_fast.media.video import write_video

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
SIGLIP_PREPROCESSING = {"do_resize": True, "size": {"height": 224, "width": 224}, "resample": 3, "do_rescale": True,
                        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}


def write_timed(path: Path, frames: np.ndarray, pts_ms: list[int], codec: str = "ffv1", pix_fmt: str = "gray",
                in_format: str = "rgb24") -> Path:
    """Encode ``frames`` (T, H, W, C) with explicit presentation times in milliseconds."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=1000)  # a 1 ms codec clock keeps the given times exact
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.time_base = Fraction(1, 1000)
        for frame, pts in zip(frames, pts_ms):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=in_format)
            vf.pts, vf.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def marker_frames(count: int, height: int = 20, width: int = 32, channels: int = 3) -> np.ndarray:
    """``(count, H, W, channels)`` uint8 frames, frame i filled with ``10 · i`` (alpha 128 for a 4th channel)."""
    frames = np.stack([np.full((height, width, 3), 10 * i, np.uint8) for i in range(count)])
    if channels == 4:
        frames = np.concatenate([frames, np.full(frames.shape[:3] + (1,), 128, np.uint8)], axis=-1)
    return frames


def marker_index(frames: np.ndarray) -> list[int]:
    """The source frame index of each decoded marker frame."""
    return [int(round(float(f[..., 0].mean()) / 10)) for f in frames]


def tiny_checkpoints(folder: Path) -> tuple[Path, Path]:
    """The upstream fixture models as checkpoint folders: gaze (tiny_k10) and SigLIP (tiny_siglip, plus
    a SigLIP ``preprocessor_config.json``)."""
    gaze = FIXTURES / "tiny_k10"
    vision = folder / "tiny_siglip"
    if not vision.exists():
        shutil.copytree(FIXTURES / "tiny_siglip", vision)
        (vision / "preprocessor_config.json").write_text(json.dumps(SIGLIP_PREPROCESSING))
    return gaze, vision


def dataset_videos(folder: Path) -> dict[str, Path]:
    """Six videos: landscape (longer than two 4-frame clips at 4 Hz), portrait (in a sub-folder),
    grayscale, with alpha, variable frame rate, and a broken file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    videos = {
        "landscape.mp4": write_video(folder / "landscape.mp4", synthetic_clip(24, size=(48, 64), seed=1), fps=8),
        "sub/portrait.mp4": write_video(folder / "sub" / "portrait.mp4", synthetic_clip(8, size=(64, 40), seed=2), fps=8),
        "gray.mkv": write_timed(folder / "gray.mkv", marker_frames(6), [i * 125 for i in range(6)]),
        "alpha.mov": write_timed(folder / "alpha.mov", marker_frames(5, channels=4), [i * 125 for i in range(5)],
                                 codec="png", pix_fmt="rgba", in_format="rgba"),
        "vfr.mkv": write_timed(folder / "vfr.mkv", marker_frames(6), [0, 100, 150, 400, 1000, 1100]),
    }
    broken = folder / "broken.mp4"
    broken.write_bytes(b"this is not a video " * 64)
    videos["broken.mp4"] = broken
    return videos
