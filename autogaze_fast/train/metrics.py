"""Training metrics on rank 0: one JSON line per step in ``metrics.jsonl``, TensorBoard when installed, tqdm.

Every line is ``{"step": s, "split": "train"|"val", "time": unix seconds, <metric>: value, ...}``.
On resume from step ``s`` the lines of later steps (written by the run that was killed after its
last checkpoint) are dropped, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger", "read_metrics"]


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl`` (a torn last line, from a kill mid-write, is ignored)."""
    records = []
    path = Path(path)
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLogger:
    """Writes metrics when ``enabled`` (rank 0); a no-op elsewhere.

    Args:
        out_dir: the run folder (``metrics.jsonl`` and ``tensorboard/`` go there).
        enabled: False on ranks other than 0.
        resume_step: drop records with ``step > resume_step`` (None: keep the file as is).
        tensorboard: write TensorBoard events if ``torch.utils.tensorboard`` imports.
        progress_total / progress_start: a tqdm bar over the run's steps (``progress_total=None``: no bar).
    """

    def __init__(self, out_dir: str | os.PathLike, enabled: bool = True, resume_step: int | None = None,
                 tensorboard: bool = True, progress_total: int | None = None, progress_start: int = 0):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self.tb = None
        self.bar = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        self.file = open(self.path, "a")
        if tensorboard:
            try:
                # deferred: optional (the tensorboard package), and slow to import
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=resume_step)
            except ImportError:
                self.tb = None
        if progress_total is not None:
            from tqdm import tqdm  # deferred: tqdm only for the progress bar

            self.bar = tqdm(total=progress_total, initial=progress_start, desc="train", dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, float], split: str = "train") -> None:
        """Append one record (non-finite values are written as strings, so the line stays valid JSON)."""
        if not self.enabled:
            return
        clean = {k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()}
        self.file.write(json.dumps({"step": step, "split": split, "time": time.time(), **clean}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def advance(self, step: int, metrics: dict[str, float]) -> None:
        """Move the bar one step, showing the loss and learning rate."""
        if self.bar is not None:
            self.bar.update(1)
            shown = {k: f"{metrics[k]:.4g}" for k in ("loss", "lr", "temperature") if k in metrics}
            self.bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()
