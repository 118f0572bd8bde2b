"""Reading a checkpoint's tensors (single file or sharded) and SigLIP2's NaFlex patch layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch

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
