"""Checkpoint files shared by AutoGaze and SigLIP: resolve a directory, read safetensors and
``preprocessor_config.json``, load a state dict strictly with an error that lists every mismatch,
and write a checkpoint folder back (``save_pretrained``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

PREPROCESSOR_CONFIG = "preprocessor_config.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not match the model built from its config."""


GAZE_CHECKPOINT_HELP = (
    "A checkpoint folder holds config.json and model.safetensors (and usually preprocessor_config.json). "
    "To get one: train it (`autogaze-fast train ...` writes RUN_DIR/checkpoints/step_XXXXXXXX/), write a model made "
    "in Python with `model.save_pretrained(DIR)`, or pass a hub id such as nvidia/AutoGaze (where there is no "
    "internet, `huggingface-cli download nvidia/AutoGaze --local-dir DIR` elsewhere and copy DIR here)."
)
"""What an AutoGaze checkpoint folder holds and how to get one (said when a folder is not one)."""


def checkpoint_config_file(directory: Path, help_text: str = GAZE_CHECKPOINT_HELP) -> Path:
    """``directory / "config.json"``, or a :class:`CheckpointError` saying that ``directory`` is not a
    checkpoint folder (what it holds instead, what one holds, and ``help_text`` on how to get one)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        present = sorted(p.name for p in Path(directory).iterdir())[:8]
        holds = f"it holds {', '.join(present)}{' ...' if len(present) == 8 else ''}" if present else "it is empty"
        raise CheckpointError(f"{directory} is not a checkpoint folder: there is no config.json ({holds}). {help_text}")
    return path


def resolve_model_dir(path_or_repo_id: str | os.PathLike, allow_patterns: Iterable[str] = ("*.json", "*.safetensors")) -> Path:
    """Return a local directory holding the checkpoint.

    A local directory is used as is. Anything else is taken as a Hugging Face hub id and
    fetched with ``huggingface_hub.snapshot_download`` (from the local cache when offline).
    """
    path = Path(os.fspath(path_or_repo_id)).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; pass the directory that holds config.json and model.safetensors")
    repo_id = os.fspath(path_or_repo_id)
    if repo_id.startswith((".", "/", "~")) or repo_id.count("/") != 1:
        raise CheckpointError(f"no such model directory: {repo_id}")
    try:
        from huggingface_hub import snapshot_download  # deferred: the hub client is only needed for hub ids

        return Path(snapshot_download(repo_id, allow_patterns=list(allow_patterns)))
    except Exception as e:  # offline, missing repo, network error: all end the same way for the user
        raise CheckpointError(
            f"could not get '{repo_id}' from the Hugging Face hub ({type(e).__name__}: {e}). "
            "If this machine is offline, download the snapshot elsewhere "
            f"(`huggingface-cli download {repo_id} --local-dir DIR`), copy DIR here and pass "
            "that local directory instead of the hub id."
        ) from None


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read every tensor of a ``.safetensors`` file, with a clear error for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    try:
        return load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None


def load_state_dict_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Copy ``state_dict`` into ``module``, refusing any missing, unexpected or wrongly shaped key.

    Raises:
        CheckpointError: listing every missing, unexpected and shape-mismatched key.
    """
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match the model built from its config:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
        if unexpected:
            lines.append(
                f"  unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:20]) + (" ..." if len(unexpected) > 20 else "")
            )
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): " + "; ".join(mismatched[:20]))
        raise CheckpointError("\n".join(lines))
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state_dict[k].to(dtype=v.dtype))


def read_preprocessor_config(path_or_repo_id: str | os.PathLike, *, missing_ok: bool = False,
                             missing_hint: str = "") -> dict[str, Any] | None:
    """The checkpoint's ``preprocessor_config.json`` (a local directory or a hub id) as a dict.

    Args:
        missing_ok: return ``None`` when the checkpoint has no such file (instead of raising).
        missing_hint: appended to the error for a missing file (what the caller could do instead).
    Raises:
        CheckpointError: the checkpoint cannot be had; the file is missing (unless ``missing_ok``),
            not readable JSON, or not a JSON object. A broken file always raises.
    """
    model_dir = resolve_model_dir(path_or_repo_id, allow_patterns=["*.json"])
    path = model_dir / PREPROCESSOR_CONFIG
    if not path.is_file():
        if missing_ok:
            return None
        raise CheckpointError(f"no {PREPROCESSOR_CONFIG} in {model_dir}{missing_hint}")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not readable JSON ({type(e).__name__}: {e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config


def _write_atomically(path: Path, write) -> None:
    """``write(tmp_path)``, fsync, then rename onto ``path``: a reader sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_pretrained_files(directory: str | os.PathLike, state_dict: dict[str, torch.Tensor], config: dict[str, Any],
                          preprocessor: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder that ``from_pretrained`` reads: ``model.safetensors`` (the tensors,
    copied to CPU), ``config.json`` and, when given, ``preprocessor_config.json``.

    Each file is written to a temporary name in ``directory`` and renamed into place, weights first
    and ``config.json`` last, so an interrupted save never leaves a folder that looks complete.
    Returns the folder.
    """
    directory = Path(os.fspath(directory)).expanduser()
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory} is a file; save_pretrained writes a folder (config.json, model.safetensors)")
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    _write_atomically(directory / "model.safetensors",
                      lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    if preprocessor is not None:
        _write_atomically(directory / PREPROCESSOR_CONFIG,
                          lambda tmp: tmp.write_text(json.dumps(preprocessor, indent=2) + "\n"))
    _write_atomically(directory / "config.json", lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
    return directory
