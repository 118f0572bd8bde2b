"""``AutoVisionProcessor.from_pretrained(dir_or_id)``: the image processor a vision checkpoint names.

``preprocessor_config.json``'s ``image_processor_type`` picks the class (``CLIPImageProcessor``,
``BitImageProcessor``, ``SiglipImageProcessor`` / ``Siglip2ImageProcessor``); without one, the family
of ``config.json``'s ``model_type`` does. A Qwen-VL checkpoint (``qwen2_vl``, ``qwen2_5_vl``,
``qwen3_vl``, ``qwen3_vl_moe``, or a config naming a Qwen processor) gets the
:class:`~autogaze_fast.processing.qwen_vl.QwenVLVideoProcessor` of its ``video_preprocessor_config.json``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from autogaze_fast.loading import CheckpointError, read_preprocessor_config, resolve_model_dir
from autogaze_fast.processing.clip import CLIPImageProcessor
from autogaze_fast.processing.dinov2 import BitImageProcessor
from autogaze_fast.processing.qwen_vl import RECIPE_OF as QWEN_TYPES
from autogaze_fast.processing.qwen_vl import VIDEO_CONFIGS, QwenVLVideoProcessor
from autogaze_fast.processing.siglip import SiglipImageProcessor

__all__ = ["AutoVisionProcessor", "PROCESSORS"]

PROCESSORS = {"CLIPImageProcessor": CLIPImageProcessor, "CLIPImageProcessorFast": CLIPImageProcessor,
              "BitImageProcessor": BitImageProcessor, "BitImageProcessorFast": BitImageProcessor,
              "SiglipImageProcessor": SiglipImageProcessor, "SiglipImageProcessorFast": SiglipImageProcessor}
#: model_type → processor, for a preprocessor config that names no class.
BY_MODEL_TYPE = {"clip": CLIPImageProcessor, "clip_vision_model": CLIPImageProcessor, "dinov2": BitImageProcessor,
                 "dinov2_with_registers": BitImageProcessor, "siglip": SiglipImageProcessor,
                 "siglip_vision_model": SiglipImageProcessor}


class AutoVisionProcessor:
    """Factory: ``AutoVisionProcessor.from_pretrained(dir_or_id, **overrides)``."""

    def __init__(self) -> None:
        raise TypeError("use AutoVisionProcessor.from_pretrained(dir_or_id)")

    @staticmethod
    def from_pretrained(path_or_repo_id: str | os.PathLike, **overrides: Any):
        model_dir = resolve_model_dir(path_or_repo_id, allow_patterns=["*.json"])
        if is_qwen_checkpoint(model_dir):  # the Qwen-VL towers' video processor
            return QwenVLVideoProcessor.from_pretrained(path_or_repo_id, **overrides)
        config = read_preprocessor_config(path_or_repo_id)
        name = str(config.get("image_processor_type", "") or "")
        cls = PROCESSORS.get(name)
        if cls is None and not name:
            try:
                model_type = json.loads((resolve_model_dir(path_or_repo_id) / "config.json").read_text()).get("model_type")
            except (OSError, json.JSONDecodeError):
                model_type = None
            cls = BY_MODEL_TYPE.get(str(model_type))
        if cls is None:
            raise CheckpointError(f"{path_or_repo_id}: image_processor_type {name!r} is not supported; "
                                  f"supported: {', '.join(sorted(PROCESSORS))}")
        return cls.from_dict(config, **overrides)


def is_qwen_checkpoint(model_dir) -> bool:
    """A Qwen-VL checkpoint: its ``config.json`` model_type, or a config file naming a Qwen processor."""
    try:
        if json.loads((model_dir / "config.json").read_text()).get("model_type") in QWEN_TYPES:
            return True
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    for name in VIDEO_CONFIGS:
        try:
            config = json.loads((model_dir / name).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(config, dict):
            return str(config.get("video_processor_type") or config.get("image_processor_type")) in QWEN_TYPES
    return False
