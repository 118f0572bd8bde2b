"""``AutoVisionModel``: load any supported vision tower (SigLIP / SigLIP2, CLIP, DINOv2, DINOv2 with
registers, the Qwen2.5-VL and Qwen3-VL vision towers) from a Hugging Face checkpoint folder or hub id,
family picked from ``config.json``.

    >>> model = AutoVisionModel.from_pretrained("facebook/dinov2-small", scales="56+112+196+392")
    >>> model(images).last_hidden_state          # (B, 3, H, W): as transformers' Dinov2Model
    >>> model(video, gazing_info=gaze)           # (B, T, 3, S, S): the gazed multi-scale tokens
    >>> qwen = AutoVisionModel.from_pretrained("Qwen/Qwen2.5-VL-7B-Instruct")   # only visual.* is read
    >>> qwen(pixel_values, grid_thw=grid, keep=keep)  # flattened rows: QwenVisionOutput of the kept units

Checkpoint keys may carry a prefix (``vision_model.``, ``model.``, ``dinov2.``, ``backbone.``, ...): the
prefix is found from the patch-embedding key and stripped; a full CLIP / SigLIP checkpoint's text
tower and projections, and a classifier head, are skipped. Every missing, unexpected and wrongly
shaped key is named.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autogaze_fast.config import ConfigError
from autogaze_fast.devices import torch_dtype
from autogaze_fast.impl import resolve_impl
from autogaze_fast.loading import CheckpointError, load_state_dict_strict, resolve_model_dir, save_pretrained_files
from autogaze_fast.reference.siglip import SiglipVisionTransformer as ReferenceSiglip
from autogaze_fast.siglip_config import SiglipVisionConfig
from autogaze_fast.vit.clip import ClipVisionTransformer
from autogaze_fast.vit.config import VitConfig, family_of, read_config_json
from autogaze_fast.vit.core import VisionOutput
from autogaze_fast.vit.dinov2 import Dinov2VisionTransformer
from autogaze_fast.vit.merge_units import keep_units_from_gaze
from autogaze_fast.vit.qwen2_5_vl import Qwen25VisionConfig, Qwen25VisionTransformer
from autogaze_fast.vit.qwen3_vl import Qwen3VLVisionTower
from autogaze_fast.vit.qwen3_vl_config import Qwen3VLVisionConfig
from autogaze_fast.vit.qwen_common import QwenVisionOutput
from autogaze_fast.vit.qwen_weights import read_visual_weights, visual_file_patterns
from autogaze_fast.vit.siglip import FastSiglipVisionTransformer
from autogaze_fast.vit.weights import naflex_patch_to_conv, read_weights

__all__ = ["AutoVisionModel", "GazedVisionModel", "tower_state_dict"]

#: Key of the patch-embedding weight inside each family's tower (finds the checkpoint's prefix).
PATCH_KEYS = {"clip": "embeddings.patch_embedding.weight", "siglip": "embeddings.patch_embedding.weight",
              "dinov2": "embeddings.patch_embeddings.projection.weight"}
#: Prefix the family's transformers vision model writes in front of the tower's keys.
HF_PREFIX = {"clip": "vision_model.", "siglip": "vision_model.", "dinov2": "", "qwen2_5_vl": "", "qwen3_vl": ""}
#: Cells a side of NVIDIA AutoGaze's scales (32+64+112+224 at 16 px).
NVIDIA_GAZE_GRIDS = (2, 4, 7, 14)
#: Qwen-VL families: flattened patch rows + grid_thw (or frames) and a keep mask over merge units, no scales.
QWEN_FAMILIES = ("qwen2_5_vl", "qwen3_vl")
#: Qwen-VL family → its vision config class (``from_dict`` of a full or vision-only config.json).
QWEN_CONFIGS: dict[str, Any] = {"qwen2_5_vl": Qwen25VisionConfig, "qwen3_vl": Qwen3VLVisionConfig}
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
    if family == "qwen2_5_vl":
        return Qwen25VisionTransformer(config, kernels=impl == "fast")
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
    A Qwen-VL family (:data:`QWEN_FAMILIES`): ``model(rows, grid_thw=..., keep=...)`` or
    ``model(frames (B, T, 3, H, W), keep=...)`` → :class:`~autogaze_fast.vit.qwen_common.QwenVisionOutput`;
    ``model(frames, gazing_info=gaze)`` keeps the merge units AutoGaze's cells cover
    (:func:`~autogaze_fast.vit.merge_units.keep_units_from_gaze`; ``gaze_grids`` / ``min_coverage`` options).
    """

    def __init__(self, family: str, config: Any, impl: str | None = None):
        super().__init__()
        self.family, self.config, self.impl = family, config, resolve_impl(impl)
        self.vision_model = build_tower(family, config, self.impl)

    @property
    def scales(self) -> list[int]:
        """The gazed scales; ``[]`` for a Qwen-VL tower (it takes frames at any multiple of 28)."""
        return [] if self.family in QWEN_FAMILIES else list(self.config.scales)

    @property
    def num_prefix_tokens(self) -> int:
        return 0 if self.family == "siglip" or self.family in QWEN_FAMILIES else int(self.config.num_prefix_tokens)

    def forward(self, pixel_values: torch.Tensor, gazing_info: Any | None = None, *, output_hidden_states: bool = False,
                attn_type: str | None = None, drop_pads: bool = False, grid_thw: torch.Tensor | None = None,
                keep: torch.Tensor | None = None, gaze_grids: Sequence[int] | None = None,
                min_coverage: float = 0.0) -> VisionOutput | QwenVisionOutput:
        tower = self.vision_model
        if self.family in QWEN_FAMILIES:
            if gazing_info is not None:
                keep = self.qwen_keep(pixel_values, gazing_info, keep, gaze_grids, min_coverage)
            return self.qwen_forward(pixel_values, None, grid_thw, keep)
        if isinstance(tower, FastSiglipVisionTransformer | ClipVisionTransformer | Dinov2VisionTransformer):
            return tower(pixel_values, gazing_info, output_hidden_states=output_hidden_states, attn_type=attn_type,
                         drop_pads=drop_pads)
        if pixel_values.dim() == 4 and gazing_info is None:
            raise ValueError("the reference SigLIP encodes videos (B, T, C, S, S); use impl='fast' for images")
        return tower(pixel_values, gazing_info, output_hidden_states=output_hidden_states, attn_type=attn_type)

    def qwen_keep(self, frames: torch.Tensor, gazing_info: Any, keep: torch.Tensor | None,
                  gaze_grids: Sequence[int] | None, min_coverage: float) -> torch.Tensor:
        """``(B, gt, H/(p·m), W/(p·m))`` kept units of ``(B, T, C, H, W)`` frames from a gaze of the same
        clips; ``gaze_grids``: cells a side per gaze scale (default: the gaze's ``scales`` / 16, else
        NVIDIA's 2+4+7+14)."""
        if keep is not None:
            raise ValueError(f"{self.family}: pass either gazing_info or keep, not both")
        if frames.dim() != 5:
            raise ValueError(f"{self.family}: gazing_info goes with frames (B, T, C, H, W), got shape {tuple(frames.shape)}")
        if gaze_grids is None:
            scales = gazing_info.get("scales") if isinstance(gazing_info, dict) else None
            gaze_grids = [int(s) // 16 for s in scales] if scales else list(NVIDIA_GAZE_GRIDS)
        cfg = self.config
        unit = cfg.patch_size * cfg.spatial_merge_size
        t, h, w = frames.shape[1], frames.shape[3], frames.shape[4]
        grid = (-(-t // cfg.temporal_patch_size), h // unit, w // unit)
        kept = keep_units_from_gaze(gazing_info, num_frames=t, grids=gaze_grids, unit_grid=grid,
                                    temporal_patch_size=cfg.temporal_patch_size, min_coverage=min_coverage)
        return kept.to(frames.device)

    def qwen_forward(self, pixel_values: torch.Tensor, gazing_info: Any | None, grid_thw: torch.Tensor | None,
                     keep: torch.Tensor | None) -> QwenVisionOutput:
        """A Qwen-VL tower: ``(N, C·tp·p²)`` rows with ``grid_thw`` ``(n, 3)`` and ``keep`` ``(U_total,)``, or
        ``(B, T, C, H, W)`` frames with ``keep`` ``(B, gt, H/28, W/28)``."""
        if gazing_info is not None:
            raise ValueError(f"{self.family}: map gazing_info to merge units first (forward does; or pass keep=)")
        if pixel_values.dim() == 2:
            if grid_thw is None:
                raise ValueError(f"{self.family}: flattened pixel_values (N, C*tp*p*p) need grid_thw (n, 3)")
            return self.vision_model(pixel_values, grid_thw, keep)
        if pixel_values.dim() == 5:
            if grid_thw is not None:
                raise ValueError(f"{self.family}: frames (B, T, C, H, W) carry their grid; drop grid_thw")
            return self.vision_model.encode_frames(pixel_values, keep)
        raise ValueError(f"{self.family}: pixel_values must be flattened rows (N, C*tp*p*p) with grid_thw or frames "
                         f"(B, T, C, H, W), got shape {tuple(pixel_values.shape)}")

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
                checkpoint's ``image_size`` (SigLIP: upstream's ``"224"``). Qwen-VL towers have no
                scales (``scales`` and ``attn_type`` are ignored there).
            impl: ``"fast"`` (kernels) or ``"reference"`` (no kernels), default ``$AUTOGAZE_IMPL``.
        Raises:
            ConfigError: unsupported ``model_type`` or a bad config. CheckpointError: missing files,
                missing / unexpected / mis-shaped keys (each named).
        """
        impl = resolve_impl(impl)
        model_dir = resolve_model_dir(path_or_repo_id, allow_patterns=("*.json",))  # the config first: which weights
        raw = read_config_json(model_dir / "config.json")
        family = family_of(raw)
        if family in QWEN_FAMILIES:  # a full Qwen-VL checkpoint: fetch only the vision tower's shards
            model_dir = resolve_model_dir(path_or_repo_id, allow_patterns=visual_file_patterns(model_dir))
            return cls.qwen_from_pretrained(family, raw, model_dir, impl, device, dtype)
        model_dir = resolve_model_dir(path_or_repo_id)
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
    def qwen_from_pretrained(cls, family: str, raw: dict[str, Any], model_dir: Path, impl: str,
                             device: torch.device | str | None, dtype: torch.dtype | str | None) -> GazedVisionModel:
        """A Qwen-VL tower from a vision-only or full checkpoint: only the vision tensors are read."""
        if family not in QWEN_CONFIGS:
            raise ConfigError(f"config.json: the {family} vision tower is not supported yet")
        config = QWEN_CONFIGS[family].from_dict(raw)
        state, _, source = read_visual_weights(model_dir)
        with torch.device("meta"):
            model = cls(family, config, impl=impl)
        model = model.to_empty(device="cpu")
        load_state_dict_strict(model.vision_model, state, source=source)
        return model.to(device=device, dtype=torch_dtype(dtype)).eval()


class AutoVisionModel:
    """Factory: ``AutoVisionModel.from_pretrained(dir_or_id, scales=None, impl=None)`` → :class:`GazedVisionModel`."""

    def __init__(self) -> None:
        raise TypeError("use AutoVisionModel.from_pretrained(dir_or_id, scales=None, impl=None)")

    @staticmethod
    def from_pretrained(path_or_repo_id: str | os.PathLike, scales: str | list[int] | None = None,
                        impl: str | None = None, **options: Any) -> GazedVisionModel:
        return GazedVisionModel.from_pretrained(path_or_repo_id, scales=scales, impl=impl, **options)

