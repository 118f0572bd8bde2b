"""Gazing videos longer than the model's clip length: cut into chunks and gaze each independently
(upstream's recipe for long videos), with a progress bar on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import torch


def chunk_bounds(num_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """[(start, end), ...] covering ``num_frames`` in chunks of ``chunk_frames`` (the last may be shorter)."""
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    return [(s, min(s + chunk_frames, num_frames)) for s in range(0, num_frames, chunk_frames)]


class Progress:
    """A minimal text progress bar on stderr (silent when ``enabled`` is False)."""

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.done, self.start = 0, time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.enabled:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            elapsed = time.perf_counter() - self.start
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {elapsed:.1f}s")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def gaze_in_chunks(model, video: torch.Tensor, chunk_frames: int | None = None, progress: bool = True,
                   **gaze_kwargs) -> Iterator[tuple[int, int, dict]]:
    """Yield ``(start, end, outputs)`` for each chunk of ``video`` (B, T, 3, H, W).

    Each chunk is gazed independently (no state carried over), as upstream recommends for videos
    longer than ``config.max_num_frames``. ``gazing_pos`` inside each output counts from the chunk's
    first frame.
    """
    chunk_frames = chunk_frames or model.config.max_num_frames
    bounds = chunk_bounds(video.shape[1], chunk_frames)
    bar = Progress(len(bounds), "gazing", enabled=progress)
    for start, end in bounds:
        with torch.inference_mode():
            out = model({"video": video[:, start:end]}, generate_only=True, **gaze_kwargs)
        bar.update()
        yield start, end, out
