"""Loading the gazed MAE from upstream's checkpoint formats, and its video preprocessing.

Two formats, both strict (every missing, unexpected or mis-shaped key is named):

* a ``ViTMAEForPreTraining`` directory: ``config.json`` (``model_type`` ``vit_mae``) and
  ``model.safetensors`` (or ``pytorch_model.bin``) with keys ``vit.*`` / ``decoder.*`` — what
  upstream's ``save_pretrained`` writes, and what Hugging Face ``vit-mae`` checkpoints
  (``facebook/vit-mae-base`` …) hold; the key names of transformers 4.x and 5.x both load
  (:mod:`.key_layout`). A plain ``vit-mae`` checkpoint lacks the four multi-scale /
  time tables (``vit.embeddings.{scale_embed,time_embed}``, ``decoder.{decoder_scale_embed,time_embed}``);
  with ``init_new_embeddings=True`` exactly those may be missing and are drawn from
  N(0, initializer_range²), as upstream's ``from_pretrained`` initialises them;
* upstream's trainer weights ``videomae.pt`` (``trainer.task_weights``): ``torch.save`` of the whole
  task's state dict, keys ``mae.vit.*`` / ``mae.decoder.*``, plus the frozen feature models'
  ``mae.siglip2.*`` / ``mae.dinov2_reg.*`` (skipped: those towers are loaded from their own checkpoints).
  It has no config: pass the directory the config comes from (upstream's ``recon_model``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from autogaze_fast.loading import (
    CheckpointError,
    load_state_dict_strict,
    read_preprocessor_config,
    read_safetensors,
    resolve_model_dir,
)
from autogaze_fast.processing.autogaze import AutoGazeImageProcessor
from autogaze_fast.train.mae.config import MAEConfig
from autogaze_fast.train.mae.key_layout import to_canonical_mae_keys
from autogaze_fast.train.mae.model import GazedMAE

__all__ = ["NEW_EMBEDDING_KEYS", "load_mae", "load_task_weights", "mae_video_processor", "read_mae_weights"]

#: Keys upstream adds to Hugging Face's ViT-MAE (present only when scale_embed / time_embed are on).
NEW_EMBEDDING_KEYS = ("vit.embeddings.scale_embed", "vit.embeddings.time_embed", "decoder.decoder_scale_embed",
                      "decoder.time_embed")
#: Prefixes of the frozen feature models inside a task state dict (``videomae.pt``).
FEATURE_MODEL_PREFIXES = ("mae.siglip2.", "mae.dinov2_reg.")

#: ``VivitImageProcessor``'s defaults, which upstream's MAE transform starts from.
VIVIT_DEFAULTS: dict[str, Any] = {
    "do_resize": True, "size": {"shortest_edge": 256}, "resample": 2, "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224}, "do_rescale": True, "rescale_factor": 1 / 127.5, "offset": True,
    "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
}


def read_mae_weights(model_dir: Path) -> tuple[dict[str, torch.Tensor], str]:
    """``model.safetensors`` (preferred) or ``pytorch_model.bin`` of a directory, and its path for messages."""
    single = model_dir / "model.safetensors"
    if single.is_file():
        return read_safetensors(single), str(single)
    binary = model_dir / "pytorch_model.bin"
    if binary.is_file():
        return _torch_load(binary), str(binary)
    raise CheckpointError(f"no model.safetensors or pytorch_model.bin in {model_dir}")


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, pickled objects other than tensors
        raise CheckpointError(f"{path} is not a readable torch state dict ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} must hold a state dict (name → tensor), got {type(state).__name__}")
    return state


def _init_new_embeddings(model: GazedMAE, state: dict[str, torch.Tensor],
                         generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Add N(0, initializer_range²) tables for the missing upstream-only keys (a plain vit-mae checkpoint)."""
    own = model.state_dict()
    missing_new = [k for k in NEW_EMBEDDING_KEYS if k in own and k not in state]
    if not missing_new:
        return state
    state = dict(state)
    for key in missing_new:
        table = torch.randn(own[key].shape, generator=generator) * model.config.initializer_range
        state[key] = table
    return state


def load_mae(
    path_or_repo_id: str | os.PathLike,
    *,
    task_weights: str | os.PathLike | None = None,
    init_new_embeddings: bool = False,
    generator: torch.Generator | None = None,
    impl: str | None = None,
    device: torch.device | str | None = None,
    **overrides: Any,
) -> GazedMAE:
    """Build the gazed MAE from a ``ViTMAEForPreTraining`` directory (or hub id) and load its weights.

    Args:
        path_or_repo_id: directory with ``config.json`` (+ weights unless ``task_weights`` is given),
            or a hub id such as ``facebook/vit-mae-large``.
        task_weights: upstream's ``videomae.pt``; it holds every MAE key, so the directory then only
            gives the config (its weights, if any, are not read).
        init_new_embeddings: allow the scale/time tables to be missing from the directory's weights
            (a plain ``vit-mae`` checkpoint) and initialise them; every other key stays strict.
        generator: RNG for that initialisation.
        impl: ``"reference"`` or ``"fast"`` (default ``$AUTOGAZE_IMPL``).
        overrides: upstream's ``recon_model_config`` / ``scales`` (e.g. ``scales="32+64+112+224"``,
            ``loss_type="l1+siglip2"``, ``max_num_frames=16``).
    Raises:
        CheckpointError: missing or unreadable files, or weights that do not match the config.
        ConfigError: a bad ``config.json`` or override.
    """
    model_dir = resolve_model_dir(path_or_repo_id, allow_patterns=("*.json", "*.safetensors", "pytorch_model.bin"))
    config = MAEConfig.from_json_file(model_dir / "config.json", **overrides)
    model = GazedMAE(config, impl=impl)
    if task_weights is None:
        state, source = read_mae_weights(model_dir)
        state = to_canonical_mae_keys(state, source)
        if init_new_embeddings:
            state = _init_new_embeddings(model, state, generator)
        _load_strict(model, state, source, init_new_embeddings)
    else:  # videomae.pt holds every MAE key: the directory only gives the config
        load_task_weights(model, task_weights)
    return model.to(device=device).train(False)


def _load_strict(model: GazedMAE, state: dict[str, torch.Tensor], source: str, init_new_embeddings: bool) -> None:
    """:func:`load_state_dict_strict`, its error told how to fix missing scale/time tables."""
    try:
        load_state_dict_strict(model, state, source=source)
    except CheckpointError as e:
        missing_new = [k for k in NEW_EMBEDDING_KEYS if k in model.state_dict() and k not in state]
        if not missing_new or init_new_embeddings:
            raise
        raise CheckpointError(f"{e}\n  {', '.join(missing_new)} are upstream's multi-scale / time tables, which a plain "
                              "ViT-MAE checkpoint (facebook/vit-mae-*, or one saved by transformers) lacks: set "
                              "task.init_new_embeddings=true (load_mae(..., init_new_embeddings=True)) to initialise "
                              "them, or give upstream's videomae.pt as task.task_weights") from None


def load_task_weights(model: GazedMAE, path: str | os.PathLike) -> None:
    """Load upstream's ``videomae.pt`` (the task's state dict, ``mae.``-prefixed) into ``model``, strictly.

    Raises:
        CheckpointError: unreadable file, keys without the ``mae.`` prefix, or MAE keys missing /
            unexpected / mis-shaped for the model's config.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no task weights file at {path} (upstream's videomae.pt)")
    state = _torch_load(path)
    foreign = sorted(k for k in state if not k.startswith("mae."))
    if foreign:
        raise CheckpointError(f"{path} is not upstream's MAE task state dict: keys without the 'mae.' prefix, e.g. "
                              f"{foreign[:5]}; pass a ViTMAEForPreTraining directory to load_mae instead")
    mae_state = {k[len("mae."):]: v for k, v in state.items() if not k.startswith(FEATURE_MODEL_PREFIXES)}
    load_state_dict_strict(model, to_canonical_mae_keys(mae_state, str(path)), source=str(path))


def mae_video_processor(path_or_repo_id: str | os.PathLike, scale: int) -> AutoGazeImageProcessor:
    """The MAE's video transform, as upstream: ``VivitImageProcessor.from_pretrained(recon_model, size=scale)``.

    ViViT's defaults (shortest edge resize, centre crop 224 × 224, ``x / 127.5 − 1``, mean/std 0.5),
    overridden by the checkpoint's ``preprocessor_config.json`` (``facebook/vit-mae-*``: bicubic,
    ImageNet mean/std), then the shortest edge set to ``scale``. Upstream quirk kept: the crop size
    stays the config's (224 by default) whatever ``scale`` is.
    """
    params = dict(VIVIT_DEFAULTS)
    found = read_preprocessor_config(path_or_repo_id, missing_ok=True)
    if found is not None:
        params.update({k: v for k, v in found.items() if k in VIVIT_DEFAULTS})
    params["size"] = {"shortest_edge": int(scale)}
    return AutoGazeImageProcessor.from_dict(params)
