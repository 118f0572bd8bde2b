"""Frame preprocessing for CLIP vision towers (``CLIPImageProcessor``), and the shortest-edge-resize +
centre-crop pipeline DINOv2's ``BitImageProcessor`` shares (:mod:`autogaze_fast.processing.dinov2`).

Matches transformers' slow (Pillow-based) processors without depending on transformers. Per RGB uint8
frame, in this order, with transformers' dtypes:

1. resize with Pillow on the uint8 frame: with ``size={"shortest_edge": s}`` the short side becomes
   ``s`` and the long one ``int(s · long / short)``; with ``{"height", "width"}`` that exact size
   (``resample``: PIL bicubic = 3 by default);
2. centre crop to ``crop_size`` (top = (H - h) // 2, left = (W - w) // 2; a frame smaller than the crop
   is zero-padded around first, as transformers does);
3. rescale ``float32(float64(x) · rescale_factor)``, normalise ``(x - mean) / std`` in float32, channels first.

:meth:`ShortestEdgeCropProcessor.for_vision_model` gives the gazed-video variant: frames resized to the
model's largest scale ``S × S`` (no crop), with the checkpoint's resample, rescale and normalisation.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from autogaze_fast.loading import read_preprocessor_config
from autogaze_fast.processing.autogaze import (
    ProcessorOutput,
    VideoInput,
    as_videos,
    channel_stats,
    processor_output,
    rescale_and_normalize,
    resize_output_size,
    size_dict,
)

__all__ = ["CLIPImageProcessor", "ShortestEdgeCropProcessor", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PIL_BICUBIC = 3

_PARAMS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
           "do_normalize", "image_mean", "image_std", "do_convert_rgb")


def center_crop(frame: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    """Centre-crop an ``(H, W, 3)`` frame as transformers does (zero-padding a frame smaller than the crop)."""
    h, w = frame.shape[:2]
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    if top >= 0 and left >= 0:
        return frame[top:top + crop_h, left:left + crop_w]
    new_h, new_w = max(h, crop_h), max(w, crop_w)
    pad_top, pad_left = math.ceil((new_h - h) / 2), math.ceil((new_w - w) / 2)
    padded = np.zeros((new_h, new_w) + frame.shape[2:], dtype=frame.dtype)
    padded[pad_top:pad_top + h, pad_left:pad_left + w] = frame
    top, left = top + pad_top, left + pad_left
    return padded[max(0, top):min(new_h, top + crop_h), max(0, left):min(new_w, left + crop_w)]


class ShortestEdgeCropProcessor:
    """Resize (shortest edge or fixed size) → centre crop → rescale → normalise; see the module docstring.

    Returns a :class:`~autogaze_fast.processing.autogaze.ProcessorOutput` with ``pixel_values``
    ``(T, 3, h, w)`` float32 for one video / list of frames / single frame batch, ``(B, T, 3, h, w)`` for
    a batch of videos.
    """

    #: transformers' class name (written to ``preprocessor_config.json``).
    processor_type = "ShortestEdgeCropProcessor"
    default_size: Mapping[str, int] = {"shortest_edge": 224}
    default_crop: Mapping[str, int] = {"height": 224, "width": 224}
    default_mean: Sequence[float] = OPENAI_CLIP_MEAN
    default_std: Sequence[float] = OPENAI_CLIP_STD

    def __init__(self, do_resize: bool = True, size: Mapping[str, int] | int | None = None, resample: int = PIL_BICUBIC,
                 do_center_crop: bool = True, crop_size: Mapping[str, int] | int | None = None, do_rescale: bool = True,
                 rescale_factor: float = 1 / 255, do_normalize: bool = True,
                 image_mean: float | Sequence[float] | None = None, image_std: float | Sequence[float] | None = None,
                 do_convert_rgb: bool | None = True) -> None:
        self.do_resize = bool(do_resize)
        self.size = size_dict(size if size is not None else dict(self.default_size), "size", default_to_square=False)
        self.resample = int(resample)
        self.do_center_crop = bool(do_center_crop)
        self.crop_size = size_dict(crop_size if crop_size is not None else dict(self.default_crop), "crop_size",
                                   default_to_square=True)
        if "shortest_edge" in self.crop_size:
            raise ValueError(f"crop_size must have 'height' and 'width', got {self.crop_size}")
        self.do_rescale, self.rescale_factor = bool(do_rescale), float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = channel_stats(image_mean if image_mean is not None else self.default_mean, "image_mean")
        self.image_std = channel_stats(image_std if image_std is not None else self.default_std, "image_std")
        if self.do_normalize and any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std must not contain 0, got {self.image_std}")
        self.do_convert_rgb = None if do_convert_rgb is None else bool(do_convert_rgb)

    # ------------------------------------------------------------------ config
    @classmethod
    def from_dict(cls, config: Mapping[str, Any], **overrides: Any):
        """From a ``preprocessor_config.json`` dict (unknown keys ignored); ``overrides`` win."""
        unknown = sorted(k for k in overrides if k not in _PARAMS)
        if unknown:
            raise ValueError(f"unknown processor parameter(s) {unknown}; valid ones are {list(_PARAMS)}")
        params = {k: v for k, v in config.items() if k in _PARAMS}
        params.update(overrides)
        return cls(**params)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, **overrides: Any):
        """Load ``preprocessor_config.json`` from a checkpoint directory or hub id."""
        return cls.from_dict(read_preprocessor_config(path_or_repo_id), **overrides)

    @classmethod
    def for_vision_model(cls, model_or_config: Any, model_dir: str | os.PathLike | None = None, *,
                         defaults_if_missing: bool = False):
        """The gazed-video processor: frames resized to the model's largest scale ``S × S``, no crop."""
        config = getattr(model_or_config, "config", model_or_config)
        side = int(config.scales[-1])
        found = None if model_dir is None else read_preprocessor_config(model_dir, missing_ok=defaults_if_missing)
        return cls.from_dict(found or {}, size={"height": side, "width": side}, do_center_crop=False)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in _PARAMS}
        d["size"], d["crop_size"] = dict(self.size), dict(self.crop_size)
        d["image_mean"], d["image_std"] = list(self.image_mean), list(self.image_std)
        d["image_processor_type"] = self.processor_type
        return d

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict())})"

    # ------------------------------------------------------------------ compute
    def process_video(self, video: np.ndarray) -> np.ndarray:
        """One validated ``(T, H, W, 3)`` uint8 video → ``(T, 3, h, w)`` float32."""
        from PIL import Image  # deferred: Pillow loads on first use, not on import

        frames = []
        for frame in video:
            if self.do_resize:
                out_h, out_w = resize_output_size(frame.shape[0], frame.shape[1], self.size)
                img = Image.fromarray(np.ascontiguousarray(frame))
                frame = np.asarray(img.resize((out_w, out_h), resample=self.resample))
            if self.do_center_crop:
                frame = center_crop(frame, self.crop_size["height"], self.crop_size["width"])
            frames.append(frame)
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise ValueError(f"frames of one video came out with different sizes {sorted(shapes)}; give them one size")
        return rescale_and_normalize(np.stack(frames), self.rescale_factor if self.do_rescale else None, False,
                                     (self.image_mean, self.image_std) if self.do_normalize else None)

    def preprocess(self, videos: VideoInput, return_tensors: str | None = "pt") -> ProcessorOutput:
        """Frames ``(H, W, 3)`` / ``(T, H, W, 3)`` / ``(B, T, H, W, 3)`` uint8 (numpy or torch), a list of
        frames (arrays or PIL images) or a list of videos → ``pixel_values``."""
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        if self.do_convert_rgb:
            videos = _pil_to_rgb(videos)
        parsed, is_batch = as_videos(videos)
        return processor_output([self.process_video(v) for v in parsed], is_batch, return_tensors,
                                "use the same frame count")

    __call__ = preprocess


def _pil_to_rgb(videos: Any) -> Any:
    """PIL images in another mode (``L``, ``RGBA``, ...) → RGB, as transformers' ``do_convert_rgb``."""
    if isinstance(videos, list | tuple):
        return [_pil_to_rgb(v) for v in videos]
    if hasattr(videos, "convert") and hasattr(videos, "mode") and videos.mode != "RGB":
        return videos.convert("RGB")
    return videos


class CLIPImageProcessor(ShortestEdgeCropProcessor):
    """transformers' ``CLIPImageProcessor``: shortest edge 224 (bicubic), centre crop 224, OpenAI CLIP mean/std."""

    processor_type = "CLIPImageProcessor"
