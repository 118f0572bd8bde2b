"""DINOv2's image processor: transformers' ``BitImageProcessor`` (shortest-edge resize, centre crop).

Same pipeline as :class:`~autogaze_fast.processing.clip.ShortestEdgeCropProcessor`. The class defaults
are transformers' ``BitImageProcessor()`` defaults (shortest edge 224, crop 224, OpenAI CLIP mean/std);
DINOv2 checkpoints' ``preprocessor_config.json`` say shortest edge 256, crop 224 and ImageNet mean/std,
so load them with :meth:`from_pretrained`.
"""

from __future__ import annotations

from autogaze_fast.processing.clip import ShortestEdgeCropProcessor

__all__ = ["BitImageProcessor", "IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD"]

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


class BitImageProcessor(ShortestEdgeCropProcessor):
    """transformers' ``BitImageProcessor`` (what ``facebook/dinov2-*`` checkpoints name)."""

    processor_type = "BitImageProcessor"
