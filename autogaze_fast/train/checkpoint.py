"""Training checkpoints: written atomically, the last N kept, everything needed for an exact resume.

A checkpoint is a folder ``<out>/checkpoints/step_00000500/``:

* ``config.json`` + ``model.safetensors`` (+ ``preprocessor_config.json``): the gaze model, loadable
  with ``AutoGaze.from_pretrained`` (and as ``model.checkpoint`` of the next run, e.g. NTP → GRPO);
* ``train_state.pt``: step, optimizer, LR scheduler, every rank's RNG states (python, numpy, torch
  CPU, CUDA), the data order's seed (the sampler's position is the step) and the run's config.

The folder is assembled under a temporary name in the same directory (each file fsynced) and
renamed into place with ``os.replace``, so a crash at any moment leaves either the complete
checkpoint or none; older checkpoints are deleted only after the new one is in place.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

__all__ = ["capture_rng_state", "find_checkpoint", "list_checkpoints", "load_train_state", "restore_rng_state",
           "save_checkpoint"]

_STEP_DIR = re.compile(r"^step_(\d{8})$")
TRAIN_STATE = "train_state.pt"


def capture_rng_state() -> dict[str, Any]:
    """This process's python / numpy / torch CPU / CUDA (every device) RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every complete checkpoint under ``out_dir/checkpoints``, oldest first."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / TRAIN_STATE).is_file() and (p / "model.safetensors").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(out_dir: str | os.PathLike, step: int, model: torch.nn.Module, train_state: dict[str, Any],
                    keep_last: int, preprocessor: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/checkpoints/step_<step>`` atomically, then delete all but the newest ``keep_last``.

    Args:
        model: the (unwrapped) :class:`~autogaze_fast.AutoGaze`; its ``config.raw`` becomes ``config.json``.
        train_state: everything else (picklable): optimizer, scheduler, RNG, step, config.
        preprocessor: the gaze processor's ``to_dict()``, written as ``preprocessor_config.json``.
    Returns:
        The checkpoint folder.
    """
    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(model.config.raw, indent=2))
        if preprocessor is not None:
            (tmp / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
        torch.save(train_state, tmp / TRAIN_STATE)
        for f in tmp.iterdir():
            _fsync(f)
        os.chmod(tmp, 0o755)
        if final.exists():  # a checkpoint of this step from an earlier, killed attempt: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, old in list_checkpoints(out_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step_*.tmp"):  # left by a process killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    return final


def find_checkpoint(out_dir: str | os.PathLike, resume: str) -> Path | None:
    """The checkpoint to resume from: ``"auto"`` → the newest under ``out_dir`` (None if none),
    ``"never"`` → None, else the given folder (a FileNotFoundError if it is not a checkpoint)."""
    if resume == "never":
        return None
    if resume == "auto":
        found = list_checkpoints(out_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / TRAIN_STATE).is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"run.resume={resume}: not a training checkpoint (no {TRAIN_STATE} / model.safetensors); "
                                "use 'auto', 'never' or a checkpoints/step_XXXXXXXX folder")
    return path


def load_train_state(folder: Path) -> dict[str, Any]:
    """``train_state.pt`` of a checkpoint folder (trusted: written by this trainer)."""
    return torch.load(folder / TRAIN_STATE, map_location="cpu", weights_only=False)
