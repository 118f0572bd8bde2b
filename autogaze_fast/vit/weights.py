"""Reading a checkpoint's tensors (single file or sharded; or only one tower's, by prefix) and SigLIP2's NaFlex
patch layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from autogaze_fast.loading import CheckpointError, read_safetensors

PATCH_KEY = "embeddings.patch_embedding.weight"


def read_weights(model_dir: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read ``model.safetensors`` or every shard listed in ``model.safetensors.index.json``.

    Returns the tensors and a description of their source for error messages.
    """
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.is_file():
        return read_safetensors(single), str(single)
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index ({type(e).__name__}: {e})") from None
        weights: dict[str, torch.Tensor] = {}
        for shard in shards:
            weights.update(read_safetensors(model_dir / shard))
        return weights, str(index)
    raise CheckpointError(
        f"no model.safetensors (or model.safetensors.index.json) in {model_dir}; "
        "only safetensors checkpoints are supported"
    )


def naflex_patch_to_conv(state: dict[str, torch.Tensor], key: str, patch_size: int, channels: int) -> dict[str, torch.Tensor]:
    """A SigLIP2 (NaFlex) checkpoint stores the patch embedding as a linear layer C × (p·p·c) over
    (row, col, channel)-ordered patches; rearrange it (in place in ``state``) to the conv layout C × c × p × p."""
    patch = state.get(key)
    p, c = patch_size, channels
    if patch is not None and patch.dim() == 2 and patch.shape[1] == p * p * c:
        state[key] = patch.reshape(patch.shape[0], p, p, c).permute(0, 3, 1, 2).contiguous()
    return state


def read_prefixed_weights(model_dir: Path, anchor: str, prefixes: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], str]:
    """Read only one tower's tensors from a (maybe sharded) checkpoint, its prefix stripped.

    The prefix is the first of ``prefixes`` (e.g. ``"model.visual."``, ``"visual."``, ``""``) under
    which ``anchor`` (the tower's patch-embedding key) is stored; only the tensors under it are read
    (``safe_open``, and only the shards that ``model.safetensors.index.json`` maps them to), so a full
    multimodal checkpoint's language model is never loaded.

    Returns:
        the tower's tensors under their own names, and a description of their source.
    Raises:
        CheckpointError: no weights file, a broken index or shard, or no ``anchor`` under any prefix.
    """
    single, index = model_dir / "model.safetensors", model_dir / "model.safetensors.index.json"
    if single.is_file():
        source = str(single)
        try:
            with safe_open(str(single), "pt") as f:
                key_file = dict.fromkeys(f.keys(), single)
        except Exception as e:
            raise CheckpointError(f"{single} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    elif index.is_file():
        source = str(index)
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            key_file = {str(k): model_dir / str(v) for k, v in weight_map.items()}
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index ({type(e).__name__}: {e})") from None
    else:
        raise CheckpointError(f"no model.safetensors (or model.safetensors.index.json) in {model_dir}; "
                              "only safetensors checkpoints are supported")
    prefix = next((p for p in prefixes if p + anchor in key_file), None)
    if prefix is None:
        raise CheckpointError(f"{source} has no '{anchor}' under any of the prefixes "
                              f"{', '.join(repr(p) for p in prefixes)}: is it a checkpoint of this vision tower?")
    wanted: dict[Path, list[str]] = {}
    for key, path in key_file.items():
        if key.startswith(prefix):
            wanted.setdefault(path, []).append(key)
    state: dict[str, torch.Tensor] = {}
    for path, keys in wanted.items():
        if not path.is_file():
            raise CheckpointError(f"{source} maps tensors to {path.name}, which is missing")
        try:
            with safe_open(str(path), "pt") as f:
                present = set(f.keys())
                for key in keys:
                    if key not in present:
                        raise CheckpointError(f"{source} maps '{key}' to {path.name}, which does not hold it")
                    state[key[len(prefix):]] = f.get_tensor(key)
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    return state, source
