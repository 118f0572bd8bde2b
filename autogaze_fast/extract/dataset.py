"""Read a finished extraction back: ``load_features`` for one video, ``FeatureDataset`` for training code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from autogaze_fast.extract.store import CONFIG, MANIFEST, SUFFIX, read_jsonl, read_metadata


def extraction_folder(out: str | os.PathLike, config_hash: str | None = None) -> Path:
    """The ``OUT/<hash>`` folder of an extraction.

    ``out`` may be that folder itself, or the output root holding one config folder (or several,
    then ``config_hash`` picks one).
    Raises:
        FileNotFoundError: nothing extracted there, or no folder with ``config_hash``.
        ValueError: several configs under ``out`` and no ``config_hash`` to choose.
    """
    root = Path(os.fspath(out)).expanduser()
    if (root / CONFIG).is_file() and config_hash in (None, root.name):
        return root
    if config_hash is not None:
        if (root / config_hash / CONFIG).is_file():
            return root / config_hash
        raise FileNotFoundError(f"no extraction with config hash {config_hash!r} under {root}")
    found = sorted(p.parent for p in root.glob(f"*/{CONFIG}"))
    if not found:
        raise FileNotFoundError(f"no extraction under {root} (expected {root}/<config-hash>/{CONFIG})")
    if len(found) > 1:
        raise ValueError(f"{root} holds {len(found)} extraction configs {[p.name for p in found]}; pass config_hash=")
    return found[0]


def load_features(out: str | os.PathLike, video: str, config_hash: str | None = None) -> dict[str, Any]:
    """One video's stored tensors plus ``"metadata"`` (source, fps, duration, full config, ...).

    Args:
        out: the output root or the ``OUT/<hash>`` folder.
        video: the video id (its path relative to the input root, e.g. ``"sub/clip.mp4"``).
    Returns:
        ``{"features": (T, [L,] C), "times": (T,), "num_gazed": (T,), "empty_frames": (T,),
        [token tensors], "metadata": dict}``.
    """
    path = extraction_folder(out, config_hash) / (video + SUFFIX)
    if not path.is_file():
        raise FileNotFoundError(f"no features for video {video!r} at {path}; see manifest.jsonl for its status")
    tensors: dict[str, Any] = load_file(str(path))
    tensors["metadata"] = read_metadata(path)
    return tensors


def finished_videos(folder: Path) -> list[str]:
    """Ids whose latest manifest line is ``ok`` and whose result file exists, sorted."""
    latest: dict[str, str] = {}
    for record in read_jsonl(folder / MANIFEST):
        if "video" in record:
            latest[record["video"]] = record.get("status", "")
    return sorted(v for v, status in latest.items() if status == "ok" and (folder / (v + SUFFIX)).is_file())


class FeatureDataset(torch.utils.data.Dataset):
    """A map-style dataset over the finished videos of an extraction.

    ``dataset[i]`` is ``{"video": id, "features": (T, [L,] C), "times": (T,), ...}`` with the
    tensors named in ``keys`` (all stored tensors when ``None``). Videos have different T: batch
    them with a collate function that pads, or use ``batch_size=1``.
    """

    def __init__(self, out: str | os.PathLike, config_hash: str | None = None,
                 keys: tuple[str, ...] | None = ("features", "times", "num_gazed", "empty_frames")) -> None:
        self.folder = extraction_folder(out, config_hash)
        self.videos = finished_videos(self.folder)
        self.keys = keys

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict[str, Any]:
        video = self.videos[index]
        tensors = load_file(str(self.folder / (video + SUFFIX)))
        if self.keys is not None:
            tensors = {k: tensors[k] for k in self.keys}
        return {"video": video, **tensors}
