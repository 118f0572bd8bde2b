"""Vision-family configs read from a Hugging Face ``config.json`` (no transformers needed).

:func:`family_of` names the family from ``model_type`` (a full CLIP / SigLIP checkpoint nests the
vision keys under ``vision_config``); :class:`VitConfig` holds what the CLIP and DINOv2 towers need
(SigLIP keeps :class:`~autogaze_fast.siglip_config.SiglipVisionConfig`). Unknown keys are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autogaze_fast.config import ConfigError, parse_scales, patch_tokens_per_scale
from autogaze_fast.siglip_config import HIDDEN_ACTS, normalize_attn_type

#: model_type → family.
FAMILIES = {
    "clip": "clip", "clip_vision_model": "clip",
    "siglip": "siglip", "siglip_vision_model": "siglip", "siglip2": "siglip", "siglip2_vision_model": "siglip",
    "dinov2": "dinov2", "dinov2_with_registers": "dinov2",
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen3_vl": "qwen3_vl", "qwen3_vl_moe": "qwen3_vl",
}
#: model_types whose vision keys sit under ``vision_config``.
NESTED = ("clip", "siglip", "siglip2")


def read_config_json(path: str | Path) -> dict[str, Any]:
    """Parse a ``config.json``; a missing or malformed file raises :class:`ConfigError`."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no config.json at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(d).__name__}")
    return d


def family_of(d: dict[str, Any]) -> str:
    """The vision family of a parsed ``config.json``: ``"clip"``, ``"siglip"``, ``"dinov2"``, ``"qwen2_5_vl"`` ..."""
    model_type = str(d.get("model_type", "") or "")
    if model_type not in FAMILIES:
        raise ConfigError(f"config.json: model_type {model_type!r} is not a supported vision family; "
                          f"supported: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[model_type]


@dataclass
class VitConfig:
    """A CLIP or DINOv2 vision tower (and the gazed scales it encodes at).

    Attributes:
        family: ``"clip"`` or ``"dinov2"``; model_type: the checkpoint's (``dinov2_with_registers``
            interpolates its position table with antialias, plain ``dinov2`` without).
        scales: ascending frame sides of the gazed mode (default: the checkpoint's ``image_size``).
        num_register_tokens: DINOv2-with-registers' extra prefix tokens (after CLS, no position).
        layerscale_value: DINOv2's LayerScale init (the loaded ``lambda1`` values are what count).
    """

    family: str = "clip"
    model_type: str = "clip_vision_model"
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    qkv_bias: bool = True
    num_register_tokens: int = 0
    layerscale_value: float = 1.0
    scales: list[int] = field(default_factory=list)
    attn_type: str = "block_causal"

    def __post_init__(self) -> None:
        self.scales = parse_scales(self.scales or [self.image_size])
        self.attn_type = normalize_attn_type(self.attn_type)
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                     "patch_size", "image_size"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"config.json: {name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"config.json: hidden_size ({self.hidden_size}) must be divisible by "
                              f"num_attention_heads ({self.num_attention_heads})")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ConfigError(f"config.json: hidden_act must be one of {HIDDEN_ACTS}, got {self.hidden_act!r}")
        small = [s for s in self.scales if s < self.patch_size]
        if small:
            raise ConfigError(f"scales {small} are smaller than patch_size {self.patch_size}: such a scale has no patch")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_positions(self) -> int:
        """Patch rows of the position table (the class position not counted)."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_register_tokens

    @property
    def tokens_per_scale(self) -> list[int]:
        return patch_tokens_per_scale(self.scales, self.patch_size)

    @property
    def tokens_per_frame(self) -> int:
        return sum(self.tokens_per_scale)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, scales: str | list[int] | None = None,
                  attn_type: str | None = None) -> VitConfig:
        """From a parsed ``config.json`` of a CLIP (vision-only or full) or DINOv2 checkpoint."""
        family = family_of(d)
        if family == "siglip":
            raise ConfigError("a SigLIP config is read by autogaze_fast.siglip_config.SiglipVisionConfig")
        model_type = str(d["model_type"])
        vision = d
        if model_type in NESTED:
            vision = d.get("vision_config")
            if not isinstance(vision, dict):
                raise ConfigError(f"config.json: model_type {model_type!r} needs a 'vision_config' object")
        common = dict(
            family=family, model_type=model_type,
            hidden_size=int(vision.get("hidden_size", 768)),
            num_hidden_layers=int(vision.get("num_hidden_layers", 12)),
            num_attention_heads=int(vision.get("num_attention_heads", 12)),
            num_channels=int(vision.get("num_channels", 3)),
            scales=parse_scales(scales) if scales is not None else parse_scales(vision["scales"]) if "scales" in vision else [],
            attn_type=attn_type or vision.get("attn_type", "block_causal"),
        )
        if family == "clip":
            return cls(**common, intermediate_size=int(vision.get("intermediate_size", 3072)),
                       image_size=int(vision.get("image_size", 224)), patch_size=int(vision.get("patch_size", 32)),
                       hidden_act=str(vision.get("hidden_act", "quick_gelu")),
                       layer_norm_eps=float(vision.get("layer_norm_eps", 1e-5)))
        if vision.get("use_swiglu_ffn", False):
            raise ConfigError("config.json: use_swiglu_ffn (DINOv2 giant's SwiGLU MLP) is not supported yet")
        mlp_ratio = float(vision.get("mlp_ratio", 4))
        hidden = common["hidden_size"]
        return cls(**common, intermediate_size=int(hidden * mlp_ratio),
                   image_size=int(vision.get("image_size", 224)), patch_size=int(vision.get("patch_size", 14)),
                   hidden_act=str(vision.get("hidden_act", "gelu")),
                   layer_norm_eps=float(vision.get("layer_norm_eps", 1e-6)),
                   qkv_bias=bool(vision.get("qkv_bias", True)),
                   num_register_tokens=int(vision.get("num_register_tokens", 0)) if model_type == "dinov2_with_registers" else 0,
                   layerscale_value=float(vision.get("layerscale_value", 1.0)))

    def to_dict(self) -> dict[str, Any]:
        """A ``config.json`` body of this tower (vision-only layout) that :meth:`from_dict` reads back."""
        d: dict[str, Any] = {
            "model_type": "clip_vision_model" if self.family == "clip" else self.model_type,
            "hidden_size": self.hidden_size, "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads, "num_channels": self.num_channels,
            "image_size": self.image_size, "patch_size": self.patch_size, "hidden_act": self.hidden_act,
            "layer_norm_eps": self.layer_norm_eps, "scales": "+".join(map(str, self.scales)), "attn_type": self.attn_type,
        }
        if self.family == "clip":
            d["intermediate_size"] = self.intermediate_size
        else:
            d.update(mlp_ratio=self.intermediate_size / self.hidden_size, qkv_bias=self.qkv_bias,
                     num_register_tokens=self.num_register_tokens, layerscale_value=self.layerscale_value)
        return d

