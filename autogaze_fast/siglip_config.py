"""SigLIP vision configuration: parse a Hugging Face ``config.json`` into a small dataclass.

Three layouts are understood:

* vision-only (``model_type`` ``siglip_vision_model``, what upstream AutoGaze saves): the vision
  keys sit at the top level;
* dual-tower ``siglip`` (e.g. ``google/siglip2-base-patch16-224``, whose config says ``siglip``)
  and ``siglip2`` (the NaFlex checkpoints): the vision keys sit under ``vision_config`` and the
  text tower is ignored.

Unknown keys are ignored. Upstream's AutoGaze-specific keys (``scales``, ``attn_type``,
``frame_independent_encoding``, ``max_embed_batch_size``) are read when present; Google's
checkpoints have none of them, so their defaults apply — including upstream's default
``scales = "224"`` whatever the checkpoint's own image size (pass ``scales=`` to override).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autogaze_fast.config import ConfigError, parse_scales, patch_tokens_per_scale

#: Attention patterns among the gazed tokens (see ``autogaze_fast.reference.siglip.attention_allowed``).
ATTN_TYPES = ("block_causal", "causal", "bidirectional", "frame_independent")
#: Activation names accepted in ``hidden_act``.
HIDDEN_ACTS = ("gelu_pytorch_tanh", "gelu_new", "gelu", "quick_gelu", "relu", "silu")
#: ``model_type`` values of a vision-only config.
VISION_MODEL_TYPES = ("siglip_vision_model", "siglip2_vision_model")
#: ``model_type`` values of a dual-tower config with a nested ``vision_config``.
DUAL_TOWER_MODEL_TYPES = ("siglip", "siglip2")


def normalize_attn_type(attn_type: str) -> str:
    """Return the canonical attention-type name; ``"frame_independent_encoding"`` is an alias."""
    name = str(attn_type).strip().lower()
    if name == "frame_independent_encoding":
        name = "frame_independent"
    if name not in ATTN_TYPES:
        raise ConfigError(f"attn_type must be one of {ATTN_TYPES}, got {attn_type!r}")
    return name


@dataclass
class SiglipVisionConfig:
    """What the gazed SigLIP vision tower needs.

    Attributes:
        scales: ascending frame sides the video is encoded at, e.g. ``[32, 64, 112, 224]``.
        num_positions: rows of the position table P (a square grid √P × √P);
            ``(image_size // patch_size)²`` for SigLIP, ``num_patches`` for SigLIP2 NaFlex.
        attn_type: one of :data:`ATTN_TYPES`; upstream's ``frame_independent_encoding: true``
            is read as ``"frame_independent"``.
        vision_use_head: whether the MAP pooling head exists (upstream: true unless the config
            says otherwise).
        max_embed_batch_size: embed videos in batch chunks of this size (memory only; same result).
        model_type: the ``model_type`` the config came from; ``"siglip2"`` checkpoints store the
            patch embedding as a linear layer over (row, col, channel)-ordered patches.
    """

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 16
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    scales: list[int] = field(default_factory=lambda: [224])
    attn_type: str = "block_causal"
    vision_use_head: bool = True
    max_embed_batch_size: int | None = None
    num_positions: int | None = None
    model_type: str = "siglip_vision_model"

    def __post_init__(self) -> None:
        self.scales = parse_scales(self.scales)
        self.attn_type = normalize_attn_type(self.attn_type)
        if self.num_positions is None:
            self.num_positions = (self.image_size // self.patch_size) ** 2
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def tokens_per_scale(self) -> list[int]:
        """Patches per frame at each scale: ``(s // patch_size)²`` (unfold drops a ragged border)."""
        return patch_tokens_per_scale(self.scales, self.patch_size)

    @property
    def tokens_per_frame(self) -> int:
        """n: multi-scale patches per frame, the stride of frame t in ``gazing_pos``."""
        return sum(self.tokens_per_scale)

    def validate(self) -> None:
        """Check the invariants the model relies on; raise :class:`ConfigError` naming the bad key."""
        sizes = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        for name in sizes + ("num_channels", "patch_size"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"config.json: {name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"config.json: hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act not in HIDDEN_ACTS:
            raise ConfigError(f"config.json: hidden_act must be one of {HIDDEN_ACTS}, got {self.hidden_act!r}")
        side = math.isqrt(int(self.num_positions))
        if self.num_positions <= 0 or side * side != self.num_positions:
            raise ConfigError(
                f"config.json: the position table has {self.num_positions} rows, which is not a square grid"
            )
        small = [s for s in self.scales if s < self.patch_size]
        if small:
            raise ConfigError(
                f"scales {small} are smaller than patch_size {self.patch_size}: such a scale has no patch; "
                "use scales of at least one patch"
            )
        if self.max_embed_batch_size is not None and self.max_embed_batch_size <= 0:
            raise ConfigError(
                f"config.json: max_embed_batch_size must be positive or null, got {self.max_embed_batch_size}"
            )

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], *, scales: str | list[int] | None = None, attn_type: str | None = None
    ) -> SiglipVisionConfig:
        """Build from a parsed ``config.json`` (vision-only or dual-tower); ``scales``/``attn_type`` override it."""
        if not isinstance(d, dict):
            raise ConfigError(f"config.json must hold a JSON object, got {type(d).__name__}")
        model_type = str(d.get("model_type", "") or "")
        if model_type in DUAL_TOWER_MODEL_TYPES or (not model_type and "vision_config" in d):
            vision = d.get("vision_config")
            if not isinstance(vision, dict):
                raise ConfigError(f"config.json: model_type {model_type!r} needs a 'vision_config' object")
        elif model_type in VISION_MODEL_TYPES or not model_type:
            vision = d
        else:
            raise ConfigError(
                f"config.json: model_type is {model_type!r}; expected a SigLIP vision config "
                f"({', '.join(VISION_MODEL_TYPES + DUAL_TOWER_MODEL_TYPES)})"
            )
        is_siglip2 = model_type == "siglip2" or vision.get("model_type") == "siglip2_vision_model"
        patch_size = int(vision.get("patch_size", 16))
        if "num_patches" in vision and "image_size" not in vision:
            num_positions = int(vision["num_patches"])
            image_size = math.isqrt(num_positions) * patch_size
        else:
            image_size = int(vision.get("image_size", 224))
            num_positions = (image_size // patch_size) ** 2
        chosen_attn = vision.get("attn_type", "block_causal") if attn_type is None else attn_type
        chosen_attn = normalize_attn_type(chosen_attn)
        if attn_type is None and vision.get("frame_independent_encoding", False):
            if chosen_attn not in ("block_causal", "frame_independent"):
                raise ConfigError(
                    f"config.json: frame_independent_encoding is true with attn_type {chosen_attn!r}; "
                    "frame-independent encoding only combines with 'block_causal'"
                )
            chosen_attn = "frame_independent"
        use_head = vision.get("vision_use_head", d.get("vision_use_head", True))
        max_embed = vision.get("max_embed_batch_size")
        return cls(
            hidden_size=int(vision.get("hidden_size", 768)),
            intermediate_size=int(vision.get("intermediate_size", 3072)),
            num_hidden_layers=int(vision.get("num_hidden_layers", 12)),
            num_attention_heads=int(vision.get("num_attention_heads", 12)),
            num_channels=int(vision.get("num_channels", 3)),
            image_size=image_size,
            patch_size=patch_size,
            hidden_act=str(vision.get("hidden_act", "gelu_pytorch_tanh")),
            layer_norm_eps=float(vision.get("layer_norm_eps", 1e-6)),
            attention_dropout=float(vision.get("attention_dropout", 0.0)),
            scales=parse_scales(scales if scales is not None else vision.get("scales", "224")),
            attn_type=chosen_attn,
            vision_use_head=bool(True if use_head is None else use_head),
            max_embed_batch_size=None if max_embed is None else int(max_embed),
            num_positions=num_positions,
            model_type="siglip2" if is_siglip2 else (model_type or "siglip_vision_model"),
        )

    @classmethod
    def from_json_file(
        cls, path: str | Path, *, scales: str | list[int] | None = None, attn_type: str | None = None
    ) -> SiglipVisionConfig:
        """Read and parse a ``config.json``; a missing or malformed file raises :class:`ConfigError`."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no config.json at {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(d, scales=scales, attn_type=attn_type)

    def to_dict(self) -> dict[str, Any]:
        """A vision-only ``config.json`` body (``model_type`` ``siglip_vision_model``) that round-trips."""
        return {
            "model_type": "siglip_vision_model",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_channels": self.num_channels,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "hidden_act": self.hidden_act,
            "layer_norm_eps": self.layer_norm_eps,
            "attention_dropout": self.attention_dropout,
            "scales": "+".join(str(s) for s in self.scales),
            "attn_type": "block_causal" if self.attn_type == "frame_independent" else self.attn_type,
            "frame_independent_encoding": self.attn_type == "frame_independent",
            "vision_use_head": self.vision_use_head,
            "max_embed_batch_size": self.max_embed_batch_size,
        }
