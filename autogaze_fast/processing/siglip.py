"""Frame preprocessing for SigLIP / SigLIP2 vision towers (``SiglipImageProcessor``).

Matches the Hugging Face ``transformers`` ``SiglipImageProcessor`` (the slow, Pillow-based class;
checked against transformers 4.57.6) without depending on ``transformers``. Per RGB uint8 frame,
in this order, with the dtypes transformers uses:

1. resize with Pillow on the uint8 frame to ``(size["height"], size["width"])``, aspect ratio
   *not* kept (``resample``: PIL bicubic = 3 by default; SigLIP2 checkpoints say bilinear = 2).
   Pillow copies a frame that already has the target size, whatever the filter;
2. rescale: ``float32(float64(x) * rescale_factor)`` (the product in float64, then cast);
3. normalise: ``(x - mean) / std`` in float32, per channel (mean/std cast to float32 first);
4. channels first.

With the same Pillow the output is bit-identical to transformers' (measured max abs difference 0
on the fixture ``tests/fixtures/siglip_processor.safetensors``: square, landscape, portrait and
tiny frames; bicubic, bilinear and Lanczos; 224, 384 and 200×300 outputs; SigLIP and ImageNet
mean/std). Differences from transformers, all on inputs it would mishandle or reject: the frames
are always taken as channels last (transformers guesses the layout and reads a frame of height 1
or 3 as channels first); the output is float32 even with rescaling and normalisation both off
(transformers then returns uint8, same values); ``size`` may be an int (a square) or a
``(height, width)`` pair; a ``shortest_edge`` size is refused with a clear error (transformers
fails with a ``KeyError``).

``SiglipImageProcessor.for_vision_model(model)`` gives the processor for the gazed
:class:`~autogaze_fast.siglip.SiglipVisionModel`: frames resized to its largest scale.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from autogaze_fast.loading import read_preprocessor_config
from autogaze_fast.processing.autogaze import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    ProcessorOutput,
    VideoInput,
    as_videos,
    channel_stats,
    processor_output,
    rescale_and_normalize,
    size_dict,
)
from autogaze_fast.siglip_config import SiglipVisionConfig

__all__ = ["SiglipImageProcessor", "ProcessorOutput"]

PIL_BICUBIC = 3
#: SigLIP's default output side (``SiglipImageProcessor()`` in transformers: 224 × 224).
DEFAULT_SIDE = 224

_PARAMS = (
    "do_resize",
    "size",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)


def _fixed_size(size: Any) -> dict[str, int]:
    """``{"height": h, "width": w}`` from a dict, an int (a square) or a ``(height, width)`` pair."""
    out = size_dict(size, "size", default_to_square=True)
    if "shortest_edge" in out:
        raise ValueError(
            f"size {out} is not supported: SiglipImageProcessor resizes to a fixed size, so size must have "
            "'height' and 'width', e.g. {'height': 224, 'width': 224}"
        )
    return out


def _convert_pil_to_rgb(videos: Any) -> Any:
    """Replace every PIL image not in mode ``RGB`` (in a nested list too) by its RGB conversion."""
    from PIL import Image  # deferred: Pillow loads on first use, not on import

    if isinstance(videos, Image.Image):
        return videos if videos.mode == "RGB" else videos.convert("RGB")
    if isinstance(videos, (list, tuple)):
        return [_convert_pil_to_rgb(v) for v in videos]
    return videos


class SiglipImageProcessor:
    """Preprocess RGB uint8 frames for a SigLIP vision tower.

    Constructor defaults are SigLIP's (``{"height": 224, "width": 224}``, bicubic, rescale 1/255,
    mean/std 0.5); load a checkpoint's ``preprocessor_config.json`` with :meth:`from_pretrained`,
    or build the processor for a gazed SigLIP with :meth:`for_vision_model`.

    Calling the processor returns a :class:`~autogaze_fast.processing.autogaze.ProcessorOutput` whose
    ``pixel_values`` is ``(T, 3, H, W)`` float32 for one video (or a list of frames) and
    ``(B, T, 3, H, W)`` for a batch, with ``(H, W) = (size["height"], size["width"])``.

    ``do_convert_rgb``: when true, PIL images in another mode (``L``, ``RGBA``, ...) are converted
    to RGB first (as transformers does); arrays must already be RGB. ``None`` (what SigLIP2
    checkpoints store) means false, as in transformers.
    """

    def __init__(
        self,
        do_resize: bool = True,
        size: Mapping[str, int] | int | Sequence[int] | None = None,
        resample: int = PIL_BICUBIC,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        do_convert_rgb: bool | None = None,
    ) -> None:
        self.do_resize = bool(do_resize)
        self.size = _fixed_size(size if size is not None else {"height": DEFAULT_SIDE, "width": DEFAULT_SIDE})
        self.resample = int(resample)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = channel_stats(image_mean if image_mean is not None else IMAGENET_STANDARD_MEAN, "image_mean")
        self.image_std = channel_stats(image_std if image_std is not None else IMAGENET_STANDARD_STD, "image_std")
        self.do_convert_rgb = None if do_convert_rgb is None else bool(do_convert_rgb)
        self._validate()

    def _validate(self) -> None:
        from PIL import Image  # deferred: Pillow loads on first use, not on import

        if self.resample not in {int(r) for r in Image.Resampling}:
            raise ValueError(f"resample must be a PIL resampling filter (0-5, bicubic = 3), got {self.resample}")
        if self.do_rescale and not np.isfinite(self.rescale_factor):
            raise ValueError(f"rescale_factor must be finite, got {self.rescale_factor}")
        if self.do_normalize and any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std must not contain 0, got {self.image_std}")

    # ------------------------------------------------------------------ config
    @classmethod
    def from_dict(cls, config: Mapping[str, Any], **overrides: Any) -> SiglipImageProcessor:
        """Build from a ``preprocessor_config.json`` dict; unknown keys are ignored, ``overrides`` win.

        Raises:
            ValueError: an override that is not a processor parameter, or a config without a
                fixed ``size`` that is clearly not for this processor (SigLIP2 NaFlex's
                ``max_num_patches``): pass ``size=`` then.
        """
        unknown = sorted(k for k in overrides if k not in _PARAMS)
        if unknown:
            raise ValueError(f"unknown processor parameter(s) {unknown}; valid ones are {list(_PARAMS)}")
        if "size" not in config and "size" not in overrides and "max_num_patches" in config:
            raise ValueError(
                "this preprocessor config is SigLIP2 NaFlex's (max_num_patches, no fixed size); "
                "pass size={'height': S, 'width': S}, or use SiglipImageProcessor.for_vision_model"
            )
        params = {k: v for k, v in config.items() if k in _PARAMS}
        params.update(overrides)
        return cls(**params)

    @classmethod
    def from_pretrained(
        cls, path_or_repo_id: str | os.PathLike, *, defaults_if_missing: bool = False, **overrides: Any
    ) -> SiglipImageProcessor:
        """Load ``preprocessor_config.json`` from a local model directory or a hub id.

        Args:
            path_or_repo_id: a checkpoint directory or a hub id such as ``google/siglip2-base-patch16-224``.
            defaults_if_missing: when the checkpoint has no ``preprocessor_config.json``, use
                SigLIP's defaults (``SiglipImageProcessor()`` plus ``overrides``) instead of raising.
            **overrides: processor parameters replacing the config's, e.g. ``size=384``.

        Raises:
            autogaze_fast.loading.CheckpointError: the directory is missing, or the config file is
                missing (unless ``defaults_if_missing``) or unreadable.
        """
        config = read_preprocessor_config(
            path_or_repo_id, missing_ok=defaults_if_missing,
            missing_hint="; pass defaults_if_missing=True to use SigLIP's defaults (224x224 bicubic, rescale 1/255, "
                         "mean/std 0.5), or write the file")
        return cls.from_dict({} if config is None else config, **overrides)

    @classmethod
    def for_vision_model(
        cls,
        siglip_model_or_config: Any,
        model_dir: str | os.PathLike | None = None,
        *,
        defaults_if_missing: bool = False,
        **overrides: Any,
    ) -> SiglipImageProcessor:
        """The processor for a gazed SigLIP: frames resized to its largest scale, ``S × S``.

        The gazed model resizes each frame further to every one of its scales itself, so its
        ``pixel_values`` must come at ``S = config.scales[-1]``.

        Args:
            siglip_model_or_config: a :class:`~autogaze_fast.siglip.SiglipVisionModel` (or
                anything with a ``.config``) or a :class:`~autogaze_fast.siglip_config.SiglipVisionConfig`.
            model_dir: the checkpoint (directory or hub id) whose ``preprocessor_config.json``
                gives resample, rescale, normalisation and RGB conversion; ``None``: SigLIP's defaults.
            defaults_if_missing: see :meth:`from_pretrained`.
            **overrides: other processor parameters (not ``size``, which the model fixes).

        Raises:
            TypeError: the first argument is neither a model nor a config.
            ValueError: ``size`` passed in ``overrides``.
        """
        config = getattr(siglip_model_or_config, "config", siglip_model_or_config)
        if not isinstance(config, SiglipVisionConfig):
            raise TypeError(
                "for_vision_model needs a SiglipVisionModel or a SiglipVisionConfig, "
                f"got {type(siglip_model_or_config).__name__}"
            )
        if "size" in overrides:
            raise ValueError(
                "for_vision_model sets size to the model's largest scale; build with "
                "SiglipImageProcessor(size=...) or from_pretrained(..., size=...) for another size"
            )
        side = int(config.scales[-1])
        size = {"height": side, "width": side}
        if model_dir is None:
            return cls.from_dict({}, size=size, **overrides)
        return cls.from_pretrained(model_dir, defaults_if_missing=defaults_if_missing, size=size, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Parameters as a JSON-serialisable dict (the ``preprocessor_config.json`` layout)."""
        d = {k: getattr(self, k) for k in _PARAMS}
        d["size"] = dict(self.size)
        d["image_mean"], d["image_std"] = list(self.image_mean), list(self.image_std)
        d["image_processor_type"] = "SiglipImageProcessor"
        return d

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict())})"

    # ------------------------------------------------------------------ compute
    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` of a processed ``height × width`` frame."""
        return (self.size["height"], self.size["width"]) if self.do_resize else (height, width)

    def process_video(self, video: np.ndarray) -> np.ndarray:
        """One validated ``(T, H, W, 3)`` uint8 video → ``(T, 3, H', W')`` float32 numpy array."""
        from PIL import Image  # deferred: Pillow loads on first use, not on import

        if self.do_resize:
            out_h, out_w = self.size["height"], self.size["width"]
            resized = np.empty((video.shape[0], out_h, out_w, 3), dtype=np.uint8)
            for i, frame in enumerate(video):
                img = Image.fromarray(np.ascontiguousarray(frame))
                resized[i] = np.asarray(img.resize((out_w, out_h), resample=self.resample))
            video = resized
        return rescale_and_normalize(
            video, self.rescale_factor if self.do_rescale else None, False,
            (self.image_mean, self.image_std) if self.do_normalize else None,
        )

    def preprocess(self, videos: VideoInput, return_tensors: str | None = "pt", **overrides: Any) -> ProcessorOutput:
        """Preprocess one video or a batch; see :func:`autogaze_fast.processing.autogaze.as_videos` for the layouts.

        Args:
            videos: frames ``(H, W, 3)``/``(T, H, W, 3)``/``(B, T, H, W, 3)`` uint8 (numpy or torch),
                a list of frames (arrays or PIL images), or a list of videos.
            return_tensors: ``"pt"`` (default; ``None`` means the same) for torch, ``"np"`` for numpy.
            **overrides: processor parameters for this call only (e.g. ``size=384``).

        Returns:
            ``ProcessorOutput`` with ``pixel_values`` ``(T, 3, H', W')`` float32, or
            ``(B, T, 3, H', W')`` for a batch (its videos must then have the same frame count).

        Raises:
            ValueError: wrong rank, channels or dtype, empty input, NaN/inf, or a ragged batch.
        """
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        proc = self.from_dict(self.to_dict(), **overrides) if overrides else self
        if proc.do_convert_rgb:
            videos = _convert_pil_to_rgb(videos)
        parsed, is_batch = as_videos(videos)
        processed = [proc.process_video(v) for v in parsed]
        return processor_output(processed, is_batch, return_tensors,
                                "use the same frame count (and size when do_resize is off)")

    __call__ = preprocess
