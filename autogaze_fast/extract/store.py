"""An extraction's files on disk: ``OUT/<config-hash>/``.

```
OUT/<hash>/config.json              the full extraction config (the hash is taken over it), plus a
                                    human-readable "summary" line (not hashed)
OUT/<hash>/<video-id>.safetensors   one video's features (see write_features)
OUT/<hash>/manifest.jsonl           one JSON line per attempt: ok / failed + reason, frames, tokens, seconds
```
A different config gets a different folder, so results never mix. Every file is written to a
temporary name, fsynced and renamed, so a run killed at any moment (even SIGKILL) leaves no partial
file that could be taken as done. Manifest lines are appended and fsynced one by one; a line cut by
a crash is skipped when reading, and the next append starts on a fresh line.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from autogaze_fast.jsonl import append_jsonl, read_jsonl

FORMAT_VERSION = 1
MANIFEST = "manifest.jsonl"
CONFIG = "config.json"
SUFFIX = ".safetensors"


SUMMARY_KEY = "summary"


def config_summary(config: dict[str, Any]) -> str:
    """One human-readable line for an extraction config (what ``config.json``'s ``summary`` says and
    ``extract --list`` shows), e.g. ``gazed, ratio 0.75, 2.0 Hz, 16-frame clips, layers [12], float32, model ...``."""
    parts = [str(config.get("mode", "?"))]
    if config.get("mode") == "gazed":
        parts.append(f"ratio {config.get('gazing_ratio')}")
        if config.get("task_loss_requirement") is not None:
            parts.append(f"stop at task loss {config['task_loss_requirement']}")
    freq = config.get("frequency")
    parts.append("native frame rate" if freq == "native" else f"{freq} Hz")
    parts.append(f"{config.get('num_frames')}-frame clips")
    layers = config.get("layers")
    parts.append(f"layers {layers}" + (f" ({config['layer_aggregation']})" if config.get("layer_aggregation") else ""))
    if config.get("tiles"):
        parts.append(f"tiles {config['tiles']} (max {config.get('max_tiles')})")
    if config.get("save_tokens"):
        parts.append("with tokens")
    parts.append(str(config.get("dtype", "?")))
    parts.append(f"model {config.get('model', '?')}")
    return ", ".join(parts)


def read_config(folder: Path) -> dict[str, Any] | None:
    """The config stored in ``folder/config.json`` (its ``summary`` line left out), or ``None``."""
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    config.pop(SUMMARY_KEY, None)
    return config


def config_hash(config: dict[str, Any]) -> str:
    """12 hex digits of the SHA-256 of the config's canonical JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and check a file can be written there.

    Raises:
        OSError (of the same kind): the folder cannot be created or written; the message names it.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise type(e)(f"cannot write to the output folder {folder}: {e.strerror or e}") from None


class ExtractionStore:
    """The folder of one extraction config: ``root / config_hash(config)``."""

    def __init__(self, root: str | os.PathLike, config: dict[str, Any]) -> None:
        self.config = dict(config, format_version=FORMAT_VERSION)
        self.hash = config_hash(self.config)
        self.root = Path(os.fspath(root)).expanduser()
        self.folder = self.root / self.hash

    # ------------------------------------------------------------------ set-up
    def prepare(self) -> None:
        """Create the folder and write ``config.json``; fail before any work if it cannot be written.

        Raises:
            PermissionError / OSError: the output folder cannot be created or written (the message
                names it).
            ValueError: an existing ``config.json`` there holds another config.
        """
        ensure_writable(self.folder)
        path = self.folder / CONFIG
        if path.exists():
            existing = read_config(self.folder)
            if existing is not None and existing != self.config:
                raise ValueError(f"{path} holds a different config than this run's (hash collision?); move it away")
            if existing is not None:
                return
        text = json.dumps({SUMMARY_KEY: config_summary(self.config), **self.config}, indent=2, sort_keys=True)
        atomic_write_bytes(path, (text + "\n").encode())

    # ------------------------------------------------------------------ features
    def feature_path(self, video_id: str) -> Path:
        return self.folder / (video_id + SUFFIX)

    def write_features(self, video_id: str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
        """Write one video's tensors (+ JSON metadata under the ``"autogaze_fast"`` key) atomically."""
        data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                    metadata={"autogaze_fast": json.dumps(metadata, sort_keys=True)})
        path = self.feature_path(video_id)
        atomic_write_bytes(path, data)
        return path

    def done_metadata(self, video_id: str) -> dict[str, Any] | None:
        """The metadata of a finished video, or ``None`` when there is no readable result file."""
        path = self.feature_path(video_id)
        if not path.is_file():
            return None
        return read_metadata(path)

    def is_done(self, video_id: str, source: Path) -> bool:
        """A result exists and was made from the source as it is now (same size and mtime)."""
        meta = self.done_metadata(video_id)
        if meta is None:
            return False
        try:
            stat = source.stat()
        except OSError:
            return False
        return meta.get("source_size") == stat.st_size and meta.get("source_mtime_ns") == stat.st_mtime_ns

    # ------------------------------------------------------------------ manifest
    def manifest_path(self, rank: int | None = None) -> Path:
        return self.folder / (MANIFEST if rank is None else f"manifest.rank{rank}.jsonl")

    def append_manifest(self, record: dict[str, Any], rank: int | None = None) -> None:
        append_jsonl(self.manifest_path(rank), record)

    def merge_rank_manifests(self) -> int:
        """Append every ``manifest.rank*.jsonl`` to ``manifest.jsonl`` and remove them; returns lines moved."""
        moved = 0
        for part in sorted(self.folder.glob("manifest.rank*.jsonl")):
            for record in read_jsonl(part):
                append_jsonl(self.manifest_path(), record)
                moved += 1
            part.unlink()
        return moved


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The ``autogaze_fast`` JSON metadata of a result file, or ``None`` if it is unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta["autogaze_fast"])
    except Exception:  # a foreign or damaged file counts as not done
        return None


