"""AutoGaze configuration: parse a Hugging Face ``config.json`` into small typed dataclasses.

Only the keys the model needs are read; the dozens of generic Hugging Face keys that ride
along in upstream's ``config.json`` are ignored. :func:`AutoGazeConfig.validate` checks the
invariants the checkpoint layout depends on (vocab = N + 1, scale layout vs N).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A ``config.json`` is missing a key or is internally inconsistent."""


def parse_scales(scales: str | int | list[int] | tuple[int, ...]) -> list[int]:
    """Parse ``"32+64+112+224"`` (or an int, or a list) into a sorted list of ints."""
    if isinstance(scales, (list, tuple)):
        values = [int(s) for s in scales]
    else:
        values = [int(s) for s in str(scales).split("+") if s.strip()]
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"scales must be positive integers like '32+64+112+224', got {scales!r}")
    return sorted(values)


def tokens_per_scale(scales: list[int], num_tokens: int) -> list[int]:
    """Upstream's split of the gaze model's ``num_tokens`` over scales: ``int(s² / Σ s'² · N)`` for each scale."""
    total = sum(s * s for s in scales)
    return [int(s * s / total * num_tokens) for s in scales]


def patch_tokens_per_scale(scales: list[int], patch_size: int) -> list[int]:
    """Patches per frame at each scale of a ViT (SigLIP, the MAE): ``(s // patch_size)²`` (a ragged border is dropped)."""
    return [(s // patch_size) ** 2 for s in scales]


def _require(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ConfigError(f"config.json: missing key '{key}' in {where}")
    return d[key]


@dataclass
class VisionStemConfig:
    """The shallow conv stem: patchify Conv3d → LayerNorm → ``depth`` causal 3×3×3 conv blocks → 1×1 out."""

    hidden_dim: int
    out_dim: int
    depth: int
    kernel_size: int = 16
    temporal_patch_size: int = 1
    trunk_temporal_kernel_size: int = 3
    trunk_spatial_kernel_size: int = 3

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VisionStemConfig:
        where = "gaze_model_config.vision_model_config"
        return cls(
            hidden_dim=int(_require(d, "hidden_dim", where)),
            out_dim=int(_require(d, "out_dim", where)),
            depth=int(_require(d, "depth", where)),
            kernel_size=int(d.get("kernel_size", 16)),
            temporal_patch_size=int(d.get("temporal_patch_size", 1)),
            trunk_temporal_kernel_size=int(d.get("trunk_temporal_kernel_size", 3)),
            trunk_spatial_kernel_size=int(d.get("trunk_spatial_kernel_size", 3)),
        )


@dataclass
class DecoderConfig:
    """The LLaMA gaze decoder with a K-token multi-token-prediction head."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    eos_token_id: int
    num_multi_token_pred: int = 1
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    top_k: int = 50

    def __post_init__(self) -> None:
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecoderConfig:
        where = "gaze_model_config.gaze_decoder_config"
        heads = int(_require(d, "num_attention_heads", where))
        eos = _require(d, "eos_token_id", where)
        if isinstance(eos, list):
            eos = eos[0]
        return cls(
            hidden_size=int(_require(d, "hidden_size", where)),
            intermediate_size=int(_require(d, "intermediate_size", where)),
            num_hidden_layers=int(_require(d, "num_hidden_layers", where)),
            num_attention_heads=heads,
            num_key_value_heads=int(d.get("num_key_value_heads") or heads),
            vocab_size=int(_require(d, "vocab_size", where)),
            eos_token_id=int(eos),
            num_multi_token_pred=int(d.get("num_multi_token_pred", 1)),
            head_dim=d.get("head_dim"),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=float(d.get("rope_theta", 10000.0)),
            rope_scaling=d.get("rope_scaling"),
            top_k=int(d.get("top_k", 50) or 0),
        )


@dataclass
class AutoGazeConfig:
    """Everything the AutoGaze model needs from ``config.json`` (model_type ``autogaze``).

    Attributes:
        scales: ascending per-scale frame sides, e.g. ``[32, 64, 112, 224]``.
        num_vision_tokens_each_frame: N, the multi-scale token count per frame (265 = 2²+4²+7²+14²).
        input_img_size: side the gaze model resizes every frame to (224).
        num_tokens: connector tokens per frame, ``(input_img_size / kernel_size)²`` (196).
    """

    scales: list[int]
    num_vision_tokens_each_frame: int
    input_img_size: int
    num_tokens: int
    connector_dim: int
    vision: VisionStemConfig
    decoder: DecoderConfig
    max_num_frames: int = 16
    gazing_ratio_config: dict[str, Any] = field(default_factory=dict)
    gazing_ratio_each_frame_config: dict[str, Any] = field(default_factory=dict)
    task_loss_requirement_config: dict[str, Any] = field(default_factory=dict)
    has_task_loss_requirement_during_training: bool = False
    has_task_loss_requirement_during_inference: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def tokens_per_scale(self) -> list[int]:
        return tokens_per_scale(self.scales, self.num_vision_tokens_each_frame)

    @property
    def frame_sampling_rate(self) -> int:
        return self.vision.temporal_patch_size

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AutoGazeConfig:
        model_type = d.get("model_type", "autogaze")
        if model_type not in ("autogaze", ""):
            raise ConfigError(f"config.json: model_type is {model_type!r}, expected 'autogaze'")
        gaze = _require(d, "gaze_model_config", "the top level")
        connector = _require(gaze, "connector_config", "gaze_model_config")
        config = cls(
            scales=parse_scales(d.get("scales", "224")),
            num_vision_tokens_each_frame=int(
                d.get("num_vision_tokens_each_frame", gaze.get("num_vision_tokens_each_frame", 196))
            ),
            input_img_size=int(gaze.get("input_img_size", 224)),
            num_tokens=int(_require(connector, "num_tokens", "gaze_model_config.connector_config")),
            connector_dim=int(_require(connector, "hidden_dim", "gaze_model_config.connector_config")),
            vision=VisionStemConfig.from_dict(_require(gaze, "vision_model_config", "gaze_model_config")),
            decoder=DecoderConfig.from_dict(_require(gaze, "gaze_decoder_config", "gaze_model_config")),
            max_num_frames=int(d.get("max_num_frames", 16)),
            gazing_ratio_config=dict(d.get("gazing_ratio_config") or {}),
            gazing_ratio_each_frame_config=dict(d.get("gazing_ratio_each_frame_config") or {}),
            task_loss_requirement_config=dict(d.get("task_loss_requirement_config") or {}),
            has_task_loss_requirement_during_training=bool(d.get("has_task_loss_requirement_during_training", False)),
            has_task_loss_requirement_during_inference=bool(d.get("has_task_loss_requirement_during_inference", False)),
            raw=d,
        )
        config.validate()
        return config

    @classmethod
    def from_json_file(cls, path: str | Path) -> AutoGazeConfig:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no config.json at {path}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def validate(self) -> None:
        """Check the invariants that the checkpoint layout and generation rely on."""
        n = self.num_vision_tokens_each_frame
        dec = self.decoder
        if dec.vocab_size != n + 1:
            raise ConfigError(
                f"config.json: gaze_decoder_config.vocab_size is {dec.vocab_size} but "
                f"num_vision_tokens_each_frame is {n}; the vocabulary must be N + 1 = {n + 1} "
                "(N gaze positions plus eos)"
            )
        if dec.eos_token_id != n:
            raise ConfigError(f"config.json: eos_token_id is {dec.eos_token_id}, expected N = {n}")
        per_scale = self.tokens_per_scale
        if sum(per_scale) != n:
            raise ConfigError(
                f"config.json: scales {self.scales} split N={n} into {per_scale} (sum {sum(per_scale)}); "
                "the per-scale token counts must add up to num_vision_tokens_each_frame"
            )
        for s, count in zip(self.scales, per_scale):
            side = int(round(count**0.5))
            if side * side != count:
                raise ConfigError(f"config.json: scale {s} gets {count} tokens, which is not a square grid")
        grid = self.input_img_size // self.vision.kernel_size
        if grid * grid != self.num_tokens:
            raise ConfigError(
                f"config.json: connector num_tokens is {self.num_tokens} but input_img_size/kernel_size "
                f"gives a {grid}x{grid} grid"
            )
        if self.connector_dim != self.vision.out_dim or self.vision.out_dim != dec.hidden_size:
            raise ConfigError(
                "config.json: vision out_dim, connector hidden_dim and decoder hidden_size must be equal, got "
                f"{self.vision.out_dim}, {self.connector_dim}, {dec.hidden_size}"
            )
