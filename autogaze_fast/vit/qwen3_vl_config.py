"""The Qwen3-VL vision tower's config, read from a Hugging Face ``config.json`` (no transformers needed).

A full checkpoint (``Qwen3VLForConditionalGeneration``, model_type ``qwen3_vl`` or ``qwen3_vl_moe``)
nests the tower's keys under ``vision_config``; a vision-only one (``Qwen3VLVisionModel.save_pretrained``)
holds them at the top level. The key names and defaults are transformers 4.57.6's
``Qwen3VLVisionConfig``. Unknown keys are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autogaze_fast.config import ConfigError
from autogaze_fast.siglip_config import HIDDEN_ACTS

__all__ = ["QWEN3_VL_MODEL_TYPES", "Qwen3VLVisionConfig"]

#: model_types whose checkpoints hold a Qwen3-VL vision tower.
QWEN3_VL_MODEL_TYPES = ("qwen3_vl", "qwen3_vl_moe")
_INT_KEYS = ("depth", "hidden_size", "intermediate_size", "num_heads", "in_channels", "patch_size",
             "spatial_merge_size", "temporal_patch_size", "out_hidden_size", "num_position_embeddings")


@dataclass
class Qwen3VLVisionConfig:
    """transformers' ``Qwen3VLVisionConfig`` (same names and defaults: Qwen3-VL's 27-block tower).

    Attributes:
        num_position_embeddings: rows of the learned position table, a square grid (48² = 2304).
        deepstack_visual_indexes: blocks after which a deepstack merger taps the hidden states.
        out_hidden_size: the LLM width the mergers project to.
    """

    model_type: str = "qwen3_vl"
    depth: int = 27
    hidden_size: int = 1152
    hidden_act: str = "gelu_pytorch_tanh"
    intermediate_size: int = 4304
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 16
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    out_hidden_size: int = 3584
    num_position_embeddings: int = 2304
    deepstack_visual_indexes: list[int] = field(default_factory=lambda: [8, 16, 24])

    def __post_init__(self) -> None:
        if self.model_type not in QWEN3_VL_MODEL_TYPES:
            raise ConfigError(f"config.json: model_type {self.model_type!r} is not a Qwen3-VL one "
                              f"({', '.join(QWEN3_VL_MODEL_TYPES)})")
        for name in _INT_KEYS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"config.json: vision {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"config.json: vision hidden_size ({self.hidden_size}) must be divisible by "
                              f"num_heads ({self.num_heads})")
        if self.head_dim % 4:
            raise ConfigError(f"config.json: the head dim hidden_size / num_heads = {self.head_dim} must be a multiple "
                              "of 4 (2-D rotary positions: a quarter of it per axis and half)")
        side = round(self.num_position_embeddings ** 0.5)
        if side * side != self.num_position_embeddings:
            raise ConfigError(f"config.json: num_position_embeddings ({self.num_position_embeddings}) must be a "
                              "square (the position table is a side x side grid)")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ConfigError(f"config.json: vision hidden_act must be one of {HIDDEN_ACTS}, got {self.hidden_act!r}")
        idx = self.deepstack_visual_indexes
        if not isinstance(idx, list | tuple) or any(isinstance(i, bool) or not isinstance(i, int) for i in idx):
            raise ConfigError(f"config.json: deepstack_visual_indexes must be a list of block indexes, got {idx!r}")
        bad = [i for i in idx if not 0 <= i < self.depth]
        if bad or len(set(idx)) != len(idx):
            raise ConfigError(f"config.json: deepstack_visual_indexes {list(idx)} must be distinct blocks in "
                              f"0..{self.depth - 1} (depth {self.depth})")
        self.deepstack_visual_indexes = list(idx)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def grid_side(self) -> int:
        """Side of the learned position table's square grid."""
        return round(self.num_position_embeddings ** 0.5)

    @property
    def merge_unit(self) -> int:
        """Patches one merged token fuses (``spatial_merge_size²``)."""
        return self.spatial_merge_size ** 2

    @property
    def patch_dim(self) -> int:
        """Values in one patch row (``in_channels · temporal_patch_size · patch_size²``)."""
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Qwen3VLVisionConfig:
        """From a parsed ``config.json``: a full checkpoint's ``vision_config`` or a vision-only top level.

        Raises:
            ConfigError: not a Qwen3-VL model_type, a ``vision_config`` that is not an object, or a bad value.
        """
        model_type = str(d.get("model_type", "") or "")
        if model_type not in QWEN3_VL_MODEL_TYPES:
            raise ConfigError(f"config.json: model_type {model_type!r} is not a Qwen3-VL one "
                              f"({', '.join(QWEN3_VL_MODEL_TYPES)})")
        vision = d.get("vision_config", d)
        if not isinstance(vision, dict):
            raise ConfigError(f"config.json: vision_config must be an object, got {type(vision).__name__}")
        values = {name: vision[name] for name in (*_INT_KEYS, "hidden_act", "deepstack_visual_indexes")
                  if name in vision}
        for name in _INT_KEYS:  # JSON may write 16.0 (taken as 16); 16.5 is refused by __post_init__
            v = values.get(name)
            if isinstance(v, float) and v.is_integer():
                values[name] = int(v)
        return cls(model_type=model_type, **values)

    def to_dict(self) -> dict[str, Any]:
        """A vision-only ``config.json`` body (``Qwen3VLVisionModel``'s layout) that :meth:`from_dict` reads back."""
        d: dict[str, Any] = {"architectures": ["Qwen3VLVisionModel"], "model_type": self.model_type}
        d.update({name: getattr(self, name) for name in _INT_KEYS})
        d.update(hidden_act=self.hidden_act, deepstack_visual_indexes=list(self.deepstack_visual_indexes))
        return d
