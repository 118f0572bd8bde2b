"""Reading only a Qwen-VL checkpoint's vision tensors (the tower's keys, prefix stripped).

A full Qwen2.5-VL / Qwen3-VL checkpoint holds the whole LLM beside the tower, under ``visual.`` (older
checkpoints) or ``model.visual.`` (transformers >= 4.52); a vision-only one (the transformers vision
model's ``save_pretrained``) has the tower's keys without a prefix. The prefix is found from the
patch-embedding key; only the tensors under it are read (``safe_open``, one tensor at a time), and
of a sharded checkpoint only the shards that ``model.safetensors.index.json`` maps them to.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from autogaze_fast.loading import CheckpointError

__all__ = ["PATCH_KEY", "VISUAL_PREFIXES", "read_visual_weights"]

#: The tower's patch-embedding weight (finds the prefix).
PATCH_KEY = "patch_embed.proj.weight"
#: Prefixes the tower's keys may carry, longest first.
VISUAL_PREFIXES = ("model.visual.", "visual.", "")


def shard_keys(model_dir: Path) -> tuple[dict[str, list[str]], str]:
    """``{shard file: its tensor names}`` of ``model.safetensors`` or of the shards of the index, and a
    description of the source for messages (reads names only)."""
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.is_file():
        return {str(single): safe_keys(single)}, str(single)
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            by_shard: dict[str, list[str]] = {}
            for key, shard in weight_map.items():
                by_shard.setdefault(str(model_dir / shard), []).append(str(key))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index ({type(e).__name__}: {e})") from None
        return by_shard, str(index)
    raise CheckpointError(f"no model.safetensors (or model.safetensors.index.json) in {model_dir}; only safetensors "
                          "checkpoints are supported")


def safe_keys(path: Path) -> list[str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None


def read_visual_weights(model_dir: Path) -> tuple[dict[str, torch.Tensor], str, str]:
    """The vision tower's tensors of a Qwen-VL checkpoint folder, prefix stripped.

    Returns:
        (state dict under the tower's own key names, the prefix found, a source description).
    Raises:
        CheckpointError: no safetensors, no ``patch_embed.proj.weight`` under a known prefix, or a
            shard that cannot be read.
    """
    shards, source = shard_keys(model_dir)
    every = {k for keys in shards.values() for k in keys}
    prefix = next((p for p in VISUAL_PREFIXES if p + PATCH_KEY in every), None)
    if prefix is None:
        raise CheckpointError(f"{source} has no vision tower: no '{PATCH_KEY}' under any of the prefixes "
                              f"{[p for p in VISUAL_PREFIXES if p]} or none; is it a Qwen-VL checkpoint?")
    state: dict[str, torch.Tensor] = {}
    for shard, keys in shards.items():
        wanted = [k for k in keys if k.startswith(prefix)]
        if not wanted:
            continue
        if not Path(shard).is_file():
            raise CheckpointError(f"{source} maps vision tensors to {shard}, which is missing")
        try:
            with safe_open(shard, framework="pt") as f:
                for key in wanted:
                    state[key[len(prefix):]] = f.get_tensor(key)
        except Exception as e:
            raise CheckpointError(f"{shard} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    return state, prefix, source
