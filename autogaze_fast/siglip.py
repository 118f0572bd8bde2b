"""Public gazed SigLIP vision model: load SigLIP / SigLIP2 checkpoints and encode only the gazed patches.

``SiglipVisionModel.from_pretrained(dir_or_hub_id, scales="32+64+112+224")`` reads a Hugging Face
checkpoint — vision-only (upstream AutoGaze's ``siglip_vision_model``) or dual-tower ``siglip`` /
``siglip2`` (the text tower, ``logit_scale`` and ``logit_bias`` are skipped) — and
``model(pixel_values, gazing_info=autogaze_output)`` encodes the gazed tokens.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autogaze_fast.impl import resolve_impl
from autogaze_fast.loading import (
    load_state_dict_strict,
    resolve_model_dir,
    save_pretrained_files,
)
from autogaze_fast.reference.siglip import SiglipVisionOutput
from autogaze_fast.reference.siglip import SiglipVisionTransformer as ReferenceSiglipVisionTransformer
from autogaze_fast.siglip_config import SiglipVisionConfig
from autogaze_fast.vit.siglip import FastSiglipVisionTransformer
from autogaze_fast.vit.weights import naflex_patch_to_conv, read_weights

__all__ = ["SiglipVisionModel", "SiglipVisionOutput", "SiglipVisionConfig", "siglip_vision_state_dict"]

#: Checkpoint keys of a dual-tower checkpoint that the vision model does not use.
IGNORED_PREFIXES = ("text_model.",)
IGNORED_KEYS = ("logit_scale", "logit_bias")
PATCH_KEY = "vision_model.embeddings.patch_embedding.weight"


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    found = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(found, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype or a name like 'bfloat16', got {dtype!r}")
    return found


def siglip_vision_state_dict(weights: dict[str, torch.Tensor], config: SiglipVisionConfig) -> dict[str, torch.Tensor]:
    """The vision tower's state dict from a checkpoint's tensors.

    Drops ``text_model.*``, ``logit_scale`` and ``logit_bias``. A SigLIP2 (NaFlex) checkpoint
    stores the patch embedding as a linear layer C × (p·p·c) over (row, col, channel)-ordered
    patches; it is rearranged to the conv layout C × c × p × p.
    """
    state = {k: v for k, v in weights.items() if not k.startswith(IGNORED_PREFIXES) and k not in IGNORED_KEYS}
    return naflex_patch_to_conv(state, PATCH_KEY, config.patch_size, config.num_channels)


class SiglipVisionModel(nn.Module):
    """Gazed SigLIP vision tower; ``self.vision_model`` holds the ``vision_model.*`` parameters.

    The switch is by composition, as in :class:`autogaze_fast.AutoGaze`: ``self.vision_model`` is the
    reference :class:`~autogaze_fast.reference.siglip.SiglipVisionTransformer` or the fast
    :class:`~autogaze_fast.vit.siglip.FastSiglipVisionTransformer` (the gazed-ViT core) (same state dict keys); this class
    loads checkpoints and delegates ``forward`` to it.

    Call it as ``model(pixel_values, gazing_info=None, output_hidden_states=False, attn_type=None)``
    with pixel_values B × T × c × H × W; it returns a :class:`SiglipVisionOutput`
    (``last_hidden_state`` B × N × C, ``pooler_output`` B × C or ``None``, ``hidden_states``).
    """

    def __init__(self, config: SiglipVisionConfig, impl: str | None = None):
        super().__init__()
        self.impl = resolve_impl(impl)
        self.config = config
        if self.impl == "fast":
            self.vision_model = FastSiglipVisionTransformer(config)
        else:
            self.vision_model = ReferenceSiglipVisionTransformer(config)

    @property
    def scales(self) -> list[int]:
        return self.config.scales

    def save_pretrained(self, directory: str | os.PathLike, processor=None) -> Path:
        """Write a checkpoint folder that :meth:`from_pretrained` loads back: a vision-only
        ``config.json`` (scales and attention mode included), ``model.safetensors`` (the
        ``vision_model.*`` weights, on CPU, in their current dtype) and, with ``processor`` (a
        :class:`~autogaze_fast.SiglipImageProcessor`), ``preprocessor_config.json``. Files are
        written atomically; returns the folder."""
        return save_pretrained_files(directory, self.state_dict(), self.config.to_dict(),
                                     preprocessor=None if processor is None else processor.to_dict())

    def forward(
        self,
        pixel_values: torch.Tensor,
        gazing_info: Any | None = None,
        *,
        output_hidden_states: bool = False,
        attn_type: str | None = None,
        drop_pads: bool = False,
    ) -> SiglipVisionOutput:
        """See :meth:`autogaze_fast.reference.siglip.SiglipVisionTransformer.forward`.

        ``drop_pads`` (fast impl): remove the gaze's pads before the first block, so the blocks run on
        real tokens only; real tokens' outputs are unchanged, pads come out as zeros and the MAP head
        pools the real tokens. The reference ignores it (its real tokens are the same either way).
        """
        if self.impl == "fast":
            return self.vision_model(pixel_values, gazing_info, output_hidden_states=output_hidden_states,
                                     attn_type=attn_type, drop_pads=drop_pads)
        return self.vision_model(
            pixel_values, gazing_info, output_hidden_states=output_hidden_states, attn_type=attn_type
        )

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike,
        *,
        scales: str | list[int] | None = None,
        attn_type: str | None = "block_causal",
        impl: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> SiglipVisionModel:
        """Load a SigLIP / SigLIP2 checkpoint (local directory or Hugging Face hub id).

        Args:
            path_or_repo_id: directory with ``config.json`` and ``model.safetensors`` (or a
                sharded index), or a hub id such as ``google/siglip2-base-patch16-224``.
            scales: ``"32+64+112+224"`` or a list; ``None`` takes ``config.json``'s (upstream's
                default ``"224"`` when absent). Must match the gaze's scales.
            attn_type: ``block_causal`` (default), ``causal``, ``bidirectional`` or
                ``frame_independent``; ``None`` takes ``config.json``'s ``attn_type`` /
                ``frame_independent_encoding``.
            impl: ``"reference"`` or ``"fast"`` (default ``$AUTOGAZE_IMPL``).
            device, dtype: where and in which dtype to put the weights.
        Raises:
            CheckpointError: missing/corrupt files, or weights that do not match the config
                (every missing, unexpected and wrongly shaped key is named).
            ConfigError: a missing, malformed or inconsistent ``config.json``, or bad overrides.
        """
        impl = resolve_impl(impl)
        model_dir = resolve_model_dir(path_or_repo_id)
        config = SiglipVisionConfig.from_json_file(model_dir / "config.json", scales=scales, attn_type=attn_type)
        weights, source = read_weights(model_dir)
        with torch.device("meta"):
            model = cls(config, impl=impl)
        model = model.to_empty(device="cpu")
        load_state_dict_strict(model, siglip_vision_state_dict(weights, config), source=source)
        return model.to(device=device, dtype=_dtype(dtype)).eval()
