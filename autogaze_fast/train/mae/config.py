"""Configuration of the gazed multi-scale MAE (upstream's ``ViTMAEConfig`` + ``recon_model_config``).

Upstream builds its MAE from a Hugging Face ``vit_mae`` ``config.json`` (e.g. ``facebook/vit-mae-large``)
and overrides it with the task's ``recon_model_config`` (``scale_embed``, ``time_embed``,
``max_num_frames``, ``causal``, ``loss_type``, ``loss_weights``) and ``scales``.
:meth:`MAEConfig.from_dict` does the same: unknown keys (the dozens of generic Hugging Face keys)
are ignored, the overrides win.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from autogaze_fast.config import ConfigError, parse_scales, patch_tokens_per_scale
from autogaze_fast.siglip_config import HIDDEN_ACTS

__all__ = ["LOSS_TYPES", "MAEConfig"]

#: Reconstruction loss terms upstream knows; ``dinov2_reg`` is not built here yet.
LOSS_TYPES = ("l1", "siglip2", "dinov2_reg")
SUPPORTED_LOSS_TYPES = ("l1", "siglip2")


def _split(value: Any, cast: type, name: str) -> list:
    """``"l1+siglip2"`` / ``"1+0.3"`` (or a list) → list of ``cast``."""
    items = list(value) if isinstance(value, (list, tuple)) else [s for s in str(value).split("+") if s.strip()]
    try:
        return [cast(str(v).strip()) if cast is not str else str(v).strip() for v in items]
    except ValueError:
        raise ConfigError(f"{name} must be '+'-separated {cast.__name__}s like {'1+0.3' if cast is float else 'l1'}, "
                          f"got {value!r}") from None


@dataclass
class MAEConfig:
    """What the gazed MAE needs (field names and defaults are upstream's ``ViTMAEConfig``'s).

    Attributes:
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: the encoder ViT.
        decoder_*: the decoder ViT (its own width, depth, heads and MLP size).
        hidden_act, layer_norm_eps, qkv_bias: shared by encoder and decoder layers.
        image_size, patch_size: the position tables hold ``(image_size // patch_size)² + 1`` rows
            (a cls row, then a square grid); frames are cut into ``patch_size`` patches at every scale.
        scales: ascending frame sides; a frame has ``n = Σ (s // patch_size)²`` tokens, in gaze order.
        loss_type, loss_weights: the per-frame loss, ``Σ weight · term`` (``l1`` pixel loss,
            ``siglip2`` feature loss; ``dinov2_reg`` is not implemented yet).
        scale_embed, time_embed, max_num_frames: learned per-scale and per-frame tables.
        initializer_range: std of the tables initialised when loading a plain ``vit-mae`` checkpoint.
    """

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 8
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 2048
    scales: list[int] = field(default_factory=lambda: [224])
    loss_type: list[str] = field(default_factory=lambda: ["l1"])
    loss_weights: list[float] = field(default_factory=lambda: [1.0])
    scale_embed: bool = True
    time_embed: bool = True
    max_num_frames: int = 256
    causal: bool = True
    initializer_range: float = 0.02
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0

    def __post_init__(self) -> None:
        self.scales = parse_scales(self.scales)
        self.loss_type = _split(self.loss_type, str, "loss_type")
        self.loss_weights = _split(self.loss_weights, float, "loss_weights")
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def grid(self) -> int:
        """Side of the position tables' square grid, ``image_size // patch_size``."""
        return self.image_size // self.patch_size

    @property
    def tokens_per_scale(self) -> list[int]:
        """Patches per frame at each scale, ``(s // patch_size)²``."""
        return patch_tokens_per_scale(self.scales, self.patch_size)

    @property
    def tokens_per_frame(self) -> int:
        """n: the stride of frame t in ``gazing_pos`` (265 for 32+64+112+224 at patch 16)."""
        return sum(self.tokens_per_scale)

    @property
    def patch_dim(self) -> int:
        """Values the decoder predicts per patch, ``patch_size² · num_channels``."""
        return self.patch_size ** 2 * self.num_channels

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first inconsistent field."""
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
                     "num_channels", "decoder_hidden_size", "decoder_num_hidden_layers",
                     "decoder_num_attention_heads", "decoder_intermediate_size", "max_num_frames", "image_size"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"MAE config: {name} must be positive, got {getattr(self, name)}")
        for width, heads in (("hidden_size", "num_attention_heads"), ("decoder_hidden_size", "decoder_num_attention_heads")):
            if getattr(self, width) % getattr(self, heads):
                raise ConfigError(f"MAE config: {width} ({getattr(self, width)}) must be divisible by {heads} "
                                  f"({getattr(self, heads)})")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ConfigError(f"MAE config: hidden_act must be one of {HIDDEN_ACTS}, got {self.hidden_act!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"MAE config: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        bad = [s for s in self.scales if s % self.patch_size]
        if bad:
            raise ConfigError(f"MAE config: scales {bad} are not multiples of patch_size {self.patch_size}; every scale "
                              "must cut into whole patches")
        unknown = [t for t in self.loss_type if t not in LOSS_TYPES]
        if unknown:
            raise ConfigError(f"MAE config: loss_type {unknown} unknown; choose from {LOSS_TYPES} joined by '+'")
        later = [t for t in self.loss_type if t not in SUPPORTED_LOSS_TYPES]
        if later:
            raise ConfigError(f"MAE config: loss_type {later} is not implemented yet (the DINOv2-reg feature loss is "
                              f"left for later); use {' / '.join(SUPPORTED_LOSS_TYPES)}")
        if len(self.loss_weights) != len(self.loss_type):
            raise ConfigError(f"MAE config: {len(self.loss_type)} loss_type terms {self.loss_type} but "
                              f"{len(self.loss_weights)} loss_weights {self.loss_weights}; give one weight per term")
        if len(set(self.loss_type)) != len(self.loss_type):
            raise ConfigError(f"MAE config: loss_type {self.loss_type} repeats a term")
        if not self.causal:
            raise ConfigError("MAE config: causal=False is not supported (upstream's MAE needs its block-causal "
                              "attention mask and fails without one); use causal=True")
        if self.hidden_dropout_prob or self.attention_probs_dropout_prob:
            raise ConfigError("MAE config: dropout is not implemented (upstream trains with 0); set "
                              "hidden_dropout_prob and attention_probs_dropout_prob to 0")

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> MAEConfig:
        """Build from a parsed ``vit_mae`` ``config.json``; ``overrides`` (e.g. upstream's
        ``recon_model_config`` items and ``scales``) replace its values. Unknown keys in ``d`` are
        ignored; an unknown override is an error (a typo would otherwise be silently dropped)."""
        if not isinstance(d, dict):
            raise ConfigError(f"MAE config.json must hold a JSON object, got {type(d).__name__}")
        model_type = d.get("model_type")
        if model_type not in (None, "", "vit_mae"):
            raise ConfigError(f"MAE config.json: model_type is {model_type!r}, expected 'vit_mae' "
                              "(a ViTMAEForPreTraining checkpoint such as facebook/vit-mae-base)")
        names = {f.name for f in fields(cls)}
        ignored_overrides = {"l1_loss_config", "dinov2_reg_loss_config", "siglip2_loss_config"}
        unknown = sorted(k for k in overrides if k not in names and k not in ignored_overrides)
        if unknown:
            raise ConfigError(f"unknown MAE config override(s) {unknown}; valid ones are {sorted(names)}")
        merged = {k: v for k, v in d.items() if k in names and v is not None}
        merged.update({k: v for k, v in overrides.items() if k in names})
        return cls(**merged)

    @classmethod
    def from_json_file(cls, path: str | Path, **overrides: Any) -> MAEConfig:
        """Read ``config.json``; a missing or malformed file raises :class:`ConfigError`."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no config.json at {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(d, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """A ``vit_mae`` ``config.json`` body that :meth:`from_dict` reads back (``+``-joined lists, as upstream)."""
        d = asdict(self)
        d["scales"] = "+".join(str(s) for s in self.scales)
        d["loss_type"] = "+".join(self.loss_type)
        d["loss_weights"] = "+".join(repr(w) for w in self.loss_weights)
        d["model_type"] = "vit_mae"
        return d
