"""Read a finished extraction back: ``load_features`` for one video, ``FeatureDataset`` for training code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from autogaze_fast.extract.store import CONFIG, MANIFEST, SUFFIX, config_summary, read_config, read_jsonl, read_metadata


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
        listing = "\n".join(f"  {e['hash']}: {e['summary']} ({e['finished']} videos)" for e in list_extractions(root))
        raise ValueError(f"{root} holds {len(found)} extraction configs; pass config_hash= one of:\n{listing}")
    return found[0]


def list_extractions(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Every config folder under the output root ``out``: ``{"hash", "folder", "summary", "finished",
    "config"}`` (``finished``: videos done there), sorted by hash. What ``autogaze-fast extract --list OUT`` prints."""
    root = Path(os.fspath(out)).expanduser()
    folders = [root] if (root / CONFIG).is_file() else sorted(p.parent for p in root.glob(f"*/{CONFIG}"))
    entries = []
    for folder in folders:
        config = read_config(folder) or {}
        entries.append({"hash": folder.name, "folder": folder, "summary": config_summary(config) if config else
                        "unreadable config.json", "finished": len(finished_videos(folder)), "config": config})
    return entries


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


def pad_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`FeatureDataset` items of different lengths: each tensor is zero-padded along its
    first axis to the longest item's and stacked → ``(B, T_max, ...)``; ``"video"`` is the list of ids,
    ``"length"`` ``(B,)`` int64 each item's own length (of ``"times"``, else of its first tensor) and
    ``"mask"`` ``(B, T_max)`` bool, true on real frames. Tensors with other first axes (``tokens``:
    ``N`` per video) are padded to their own longest and get no mask of their own."""
    if not items:
        raise ValueError("pad_collate got an empty batch")
    keys = [k for k in items[0] if k != "video"]
    out: dict[str, Any] = {"video": [item["video"] for item in items]}
    for key in keys:
        values = [item[key] for item in items]
        longest = max(v.shape[0] for v in values)
        batch = values[0].new_zeros((len(values), longest) + tuple(values[0].shape[1:]))
        for i, v in enumerate(values):
            batch[i, :v.shape[0]] = v
        out[key] = batch
    ref = "times" if "times" in keys else keys[0]
    lengths = torch.tensor([item[ref].shape[0] for item in items], dtype=torch.long)
    out["length"] = lengths
    out["mask"] = torch.arange(int(lengths.max()))[None] < lengths[:, None]
    return out


class FeatureDataset(torch.utils.data.Dataset):
    """A map-style dataset over the finished videos of an extraction.

    ``dataset[i]`` is ``{"video": id, "features": (T, [L,] C), "times": (T,), ...}`` with the
    tensors named in ``keys`` (all stored tensors when ``None``). Videos have different T: batch
    them with :func:`pad_collate` (``dataset.loader(batch_size=8)`` does), or use ``batch_size=1``.
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

    def loader(self, batch_size: int = 1, **kwargs: Any) -> torch.utils.data.DataLoader:
        """A ``DataLoader`` over this dataset that pads videos of different lengths (:func:`pad_collate`)."""
        kwargs.setdefault("collate_fn", pad_collate)
        return torch.utils.data.DataLoader(self, batch_size=batch_size, **kwargs)
