"""What every GPU-check section shares: the workload sizes of each mode, the run's context, and how a
failure is written into a report cell."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from autogaze_fast.gpu_check.report import write_report
from autogaze_fast.gpu_check.timing import SectionTimeout

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "upstream"


@dataclass(frozen=True)
class CheckSizes:
    """Workload sizes, repetitions and per-section time caps (seconds) of one mode."""

    name: str
    frames: int  # NVIDIA-shaped clip: parity and gaze timings
    siglip_frames: int
    siglip_layers: int | None  # None: SigLIP-B/16's 12
    decode_context: int
    decode_cache: int
    sparse_frames: int  # kernel shapes: tokens = frames x 198 (and x 20)
    warmup: int
    repeats: int
    kernel_repeats: int
    budget_s: float  # the whole check; the pytest timeout is what is left of it
    caps: dict[str, float] = field(default_factory=dict)
    tiles_frames: int = 0  # high-resolution anyres tiled gaze timing (0: none)
    tiles_hw: tuple[int, int] = (1080, 1920)
    tile_batch_size: int = 45


PROFILES = {
    "cuda": CheckSizes("cuda", frames=16, siglip_frames=16, siglip_layers=None, decode_context=6000, decode_cache=6144,
                       sparse_frames=16, warmup=2, repeats=10, kernel_repeats=25, budget_s=345,
                       caps={"environment": 30, "parity": 90, "end_to_end": 130, "kernels": 60, "pytest": 240,
                             "pytest_triton": 240},
                       tiles_frames=16, tiles_hw=(1080, 1920), tile_batch_size=45),
    "cpu": CheckSizes("cpu", frames=2, siglip_frames=1, siglip_layers=4, decode_context=1500, decode_cache=1536,
                      sparse_frames=2, warmup=1, repeats=2, kernel_repeats=3, budget_s=110,
                      caps={"environment": 30, "parity": 120, "end_to_end": 120, "kernels": 60, "pytest": 120},
                      tiles_frames=1, tiles_hw=(224, 448), tile_batch_size=2),
    "quick": CheckSizes("quick", frames=1, siglip_frames=1, siglip_layers=1, decode_context=500, decode_cache=512,
                        sparse_frames=1, warmup=0, repeats=1, kernel_repeats=1, budget_s=60,
                        caps={"environment": 30, "parity": 240, "end_to_end": 240, "kernels": 120, "pytest": 120},
                        tiles_frames=1, tiles_hw=(224, 448), tile_batch_size=2),
}


@dataclass
class CheckContext:
    """What a section sees: device, sizes, fixtures, its deadline, and ``save()`` to rewrite the report."""

    device: torch.device
    sizes: CheckSizes
    fixtures: Path
    out_dir: Path
    report: dict
    started: float
    pytest_args: list[str]
    deadline: float = float("inf")

    def check(self, label: str) -> None:
        """Raise :class:`SectionTimeout` when the section's time cap is spent (before ``label`` starts)."""
        if time.perf_counter() > self.deadline:
            raise SectionTimeout(f"time cap reached before {label}")

    def save(self) -> None:
        self.report["meta"]["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        write_report(self.out_dir, self.report)


def error_text(e: BaseException) -> str:
    """``Type: first line of the message`` (at most 400 characters), for a report cell."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:400]
