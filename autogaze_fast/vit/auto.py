"""``AutoVisionModel``: load any supported vision tower (SigLIP / SigLIP2, CLIP, DINOv2, DINOv2 with
registers) from a Hugging Face checkpoint folder or hub id, family picked from ``config.json``.

    >>> model = AutoVisionModel.from_pretrained("facebook/dinov2-small", scales="56+112+196+392")
    >>> model(images).last_hidden_state          # (B, 3, H, W): as transformers' Dinov2Model
    >>> model(video, gazing_info=gaze)           # (B, T, 3, S, S): the gazed multi-scale tokens

Checkpoint keys may carry a prefix (``vision_model.``, ``model.``, ``dinov2.``, ``backbone.``, ...): the
prefix is found from the patch-embedding key and stripped; a full CLIP / SigLIP checkpoint's text
tower and projections, and a classifier head, are skipped. Every missing, unexpected and wrongly
shaped key is named.

A Qwen3-VL checkpoint (``qwen3_vl`` / ``qwen3_vl_moe``; the tower's own save or a full multimodal one,
``model.visual.`` / ``visual.`` prefixes) loads only its visual tensors; ``model(rows, grid_thw=..., keep=...)``
and ``model(frames, keep=...)`` return :class:`~autogaze_fast.vit.qwen_common.QwenVisionOutput`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autogaze_fast.devices import torch_dtype
from autogaze_fast.impl import resolve_impl
from autogaze_fast.loading import CheckpointError, load_state_dict_strict, resolve_model_dir, save_pretrained_files
from autogaze_fast.reference.siglip import SiglipVisionTransformer as ReferenceSiglip
from autogaze_fast.siglip_config import SiglipVisionConfig
from autogaze_fast.vit.clip import ClipVisionTransformer
from autogaze_fast.vit.config import VitConfig, family_of, read_config_json
from autogaze_fast.vit.dinov2 import Dinov2VisionTransformer
from autogaze_fast.vit.qwen3_vl import Qwen3VLVisionTower
from autogaze_fast.vit.qwen3_vl_config import Qwen3VLVisionConfig
from autogaze_fast.vit.siglip import FastSiglipVisionTransformer
from autogaze_fast.vit.weights import naflex_patch_to_conv, read_prefixed_weights, read_weights

__all__ = ["AutoVisionModel", "GazedVisionModel", "tower_state_dict"]

#: Key of the patch-embedding weight inside each family's tower (finds the checkpoint's prefix).
PATCH_KEYS = {"clip": "embeddings.patch_embedding.weight", "siglip": "embeddings.patch_embedding.weight",
              "dinov2": "embeddings.patch_embeddings.projection.weight"}
#: Prefix the family's transformers vision model writes in front of the tower's keys.
HF_PREFIX = {"clip": "vision_model.", "siglip": "vision_model.", "dinov2": "", "qwen3_vl": ""}
#: Qwen-VL towers: patch key, and the prefixes their tensors carry (full checkpoints: transformers >= 4.52, older;
#: a vision-only save: none). Only these tensors are read; the language model never is.
QWEN_TOWERS = {"qwen3_vl": ("patch_embed.proj.weight", ("model.visual.", "visual.", ""))}
#: Keys outside the tower that checkpoints of the family carry and the vision model does not use.
SKIPPED = ("text_model.", "visual_projection.", "text_projection.", "logit_scale", "logit_bias", "classifier.")


def tower_state_dict(weights: dict[str, torch.Tensor], family: str, source: str) -> dict[str, torch.Tensor]:
    """The tower's own keys: the checkpoint's prefix (found from the patch key) stripped, known extras skipped.

    Raises:
        CheckpointError: no patch-embedding key, or keys outside the tower that are not known extras.
    """
    anchor = PATCH_KEYS[family]
    hits = sorted(k for k in weights if k == anchor or k.endswith("." + anchor))
    if not hits:
        raise CheckpointError(f"{source} has no patch-embedding weight '{anchor}' (under any prefix): is it a "
                              f"{family} vision checkpoint?")
    prefix = min(hits, key=len)[: -len(anchor)]
    state, stray = {}, []
    for key, value in weights.items():
        if key.startswith(prefix):
            state[key[len(prefix):]] = value
        elif not any(key.startswith(s) or key.removeprefix("model.").startswith(s) for s in SKIPPED):
            stray.append(key)
    if stray:
        raise CheckpointError(f"{source}: unexpected keys outside the vision tower (prefix {prefix!r}) ({len(stray)}): "
                              + ", ".join(sorted(stray)[:20]))
    return state


def build_tower(family: str, config: Any, impl: str) -> nn.Module:
    """The family's tower; ``impl="reference"`` is the plain path (no kernels; SigLIP: the reference model)."""
    if family == "siglip":
        return ReferenceSiglip(config) if impl == "reference" else FastSiglipVisionTransformer(config)
    if family == "qwen3_vl":
        return Qwen3VLVisionTower(config, kernels=impl == "fast")
    cls = ClipVisionTransformer if family == "clip" else Dinov2VisionTransformer
    return cls(config, kernels=impl == "fast")


class GazedVisionModel(nn.Module):
    """A loaded vision tower of any family; ``self.vision_model`` holds it (its state dict keys are the
    tower's, below ``vision_model.``).

    ``model(pixel_values, gazing_info=None, *, output_hidden_states=False, attn_type=None, drop_pads=False)``:
    ``(B, 3, H, W)`` images without ``gazing_info`` → as the family's transformers vision model;
    ``(B, T, 3, S, S)`` videos → the gazed multi-scale tokens (see :class:`~autogaze_fast.vit.core.VisionOutput`).
    """

    def __init__(self, family: str, config: Any, impl: str | None = None):
        super().__init__()
        self.family, self.config, self.impl = family, config, resolve_impl(impl)
        self.vision_model = build_tower(family, config, self.impl)

    @property
    def scales(self) -> list[int]:
        return list(self.config.scales)

    @property
    def num_prefix_tokens(self) -> int:
        return 0 if self.family == "siglip" else int(self.config.num_prefix_tokens)

    def forward(self, pixel_values: torch.Tensor, gazing_info: Any | None = None, *, output_hidden_states: bool = False,
                attn_type: str | None = None, drop_pads: bool = False, grid_thw: torch.Tensor | None = None,
                keep: torch.Tensor | None = None) -> Any:
        tower = self.vision_model
        if self.family in QWEN_TOWERS:
            return qwen_forward(tower, pixel_values, gazing_info, grid_thw=grid_thw, keep=keep)
        if isinstance(tower, FastSiglipVisionTransformer | ClipVisionTransformer | Dinov2VisionTransformer):
            return tower(pixel_values, gazing_info, output_hidden_states=output_hidden_states, attn_type=attn_type,
                         drop_pads=drop_pads)
        if pixel_values.dim() == 4 and gazing_info is None:
            raise ValueError("the reference SigLIP encodes videos (B, T, C, S, S); use impl='fast' for images")
        return tower(pixel_values, gazing_info, output_hidden_states=output_hidden_states, attn_type=attn_type)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """A vision-only checkpoint folder in the family's transformers layout (``config.json`` last, atomic)."""
        prefix = HF_PREFIX[self.family]
        state = {prefix + k: v for k, v in self.vision_model.state_dict().items()}
        return save_pretrained_files(directory, state, self.config.to_dict())

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, scales: str | list[int] | None = None,
                        impl: str | None = None, *, attn_type: str | None = None,
                        device: torch.device | str | None = None, dtype: torch.dtype | str | None = None) -> GazedVisionModel:
        """Load a checkpoint folder (``config.json`` + ``model.safetensors``) or hub id of any supported family.

        Args:
            scales: gazed scales (``"56+112+196+392"``); default the config's ``scales``, else the
                checkpoint's ``image_size`` (SigLIP: upstream's ``"224"``).
            impl: ``"fast"`` (kernels) or ``"reference"`` (no kernels), default ``$AUTOGAZE_IMPL``.
        Raises:
            ConfigError: unsupported ``model_type`` or a bad config. CheckpointError: missing files,
                missing / unexpected / mis-shaped keys (each named).
        """
        impl = resolve_impl(impl)
        model_dir = resolve_model_dir(path_or_repo_id)
        raw = read_config_json(model_dir / "config.json")
        family = family_of(raw)
        if family in QWEN_TOWERS:
            return cls._from_qwen_checkpoint(family, raw, model_dir, impl, scales=scales, attn_type=attn_type,
                                             device=device, dtype=dtype)
        if family == "siglip":
            config = SiglipVisionConfig.from_dict(raw, scales=scales, attn_type=attn_type)
        else:
            config = VitConfig.from_dict(raw, scales=scales, attn_type=attn_type)
        weights, source = read_weights(model_dir)
        state = tower_state_dict(weights, family, source)
        if family == "siglip":
            state = naflex_patch_to_conv(state, PATCH_KEYS["siglip"], config.patch_size, config.num_channels)
        with torch.device("meta"):
            model = cls(family, config, impl=impl)
        model = model.to_empty(device="cpu")
        load_state_dict_strict(model.vision_model, state, source=source)
        return model.to(device=device, dtype=torch_dtype(dtype)).eval()


    @classmethod
    def _from_qwen_checkpoint(cls, family: str, raw: dict[str, Any], model_dir: Path, impl: str, *, scales: Any,
                              attn_type: str | None, device: Any, dtype: Any) -> GazedVisionModel:
        """A Qwen-VL tower from its own or a full checkpoint: only the visual tensors are read."""
        if scales is not None or attn_type is not None:
            raise ValueError(f"scales / attn_type do not apply to a {family} tower (it sees each clip at one "
                             "resolution; attention is per temporal patch): drop them")
        config = Qwen3VLVisionConfig.from_dict(raw)
        anchor, prefixes = QWEN_TOWERS[family]
        state, source = read_prefixed_weights(model_dir, anchor, prefixes)
        with torch.device("meta"):
            model = cls(family, config, impl=impl)
        model = model.to_empty(device="cpu")
        load_state_dict_strict(model.vision_model, state, source=source)
        return model.to(device=device, dtype=torch_dtype(dtype)).eval()


def qwen_forward(tower: nn.Module, pixel_values: torch.Tensor, gazing_info: Any | None, *,
                 grid_thw: torch.Tensor | None, keep: torch.Tensor | None) -> Any:
    """A Qwen-VL tower's call: ``(N, C·tp·p²)`` rows with ``grid_thw``, or ``(B, T, C, H, W)`` frames.

    ``keep`` per merge unit (rows: ``(U_total,)``; frames: ``(B, gt, gh/2, gw/2)``) selects the units run."""
    if gazing_info is not None:
        raise ValueError("gazing_info is not taken by a Qwen-VL tower yet: pass keep (one bool per merge unit)")
    if pixel_values.dim() == 2:
        if grid_thw is None:
            raise ValueError("patch rows (N, C*tp*p*p) need grid_thw ((n, 3) patches per clip), as transformers")
        return tower(pixel_values, grid_thw, keep)
    if pixel_values.dim() == 5:
        if grid_thw is not None:
            raise ValueError("frames (B, T, C, H, W) carry their own grid: drop grid_thw")
        return tower.encode_frames(pixel_values, keep)
    raise ValueError(f"a Qwen-VL tower takes patch rows (N, C*tp*p*p) with grid_thw or frames (B, T, C, H, W), got "
                     f"shape {tuple(pixel_values.shape)}")


class AutoVisionModel:
    """Factory: ``AutoVisionModel.from_pretrained(dir_or_id, scales=None, impl=None)`` → :class:`GazedVisionModel`."""

    def __init__(self) -> None:
        raise TypeError("use AutoVisionModel.from_pretrained(dir_or_id, scales=None, impl=None)")

    @staticmethod
    def from_pretrained(path_or_repo_id: str | os.PathLike, scales: str | list[int] | None = None,
                        impl: str | None = None, **options: Any) -> GazedVisionModel:
        return GazedVisionModel.from_pretrained(path_or_repo_id, scales=scales, impl=impl, **options)

