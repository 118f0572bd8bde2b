"""Frame preprocessing for the AutoGaze gaze model (``AutoGazeImageProcessor``).

Reproduces upstream's processor (a ViViT-style Hugging Face image processor) numerically, without
depending on ``transformers``. Per RGB uint8 frame, in this order:

1. resize with Pillow (bilinear by default) so the shortest edge is ``size["shortest_edge"]`` and
   the longer edge is ``int(shortest_edge * long / short)`` (truncated, not rounded), or to
   ``(size["height"], size["width"])``;
2. optional centre crop to ``crop_size`` (zero padding where the frame is smaller);
3. rescale: ``float32(float64(x) * rescale_factor)``, then ``- 1`` in float32 when ``offset``;
4. normalise: ``(x - mean) / std`` in float32, per channel;
5. channels first.

The arithmetic (float64 product, then float32 offset and normalisation) is the one the Hugging
Face transforms perform, so the result is bit-identical to upstream's for the same Pillow.

Aspect ratio: the shortest-edge resize keeps it, but the gaze model then resizes every frame to
``input_img_size`` × ``input_img_size`` (224 × 224), so a non-square frame is squashed to a square
unless it is gazed as square tiles (``AutoGaze(..., tiles="anyres")``, :mod:`autogaze_fast.tiling.grid`,
which prepares its own canvas and accepts any aspect ratio). Frames must be at least :data:`MIN_FRAME_SIDE`
pixels on each side and at most :data:`MAX_ASPECT_RATIO` : 1 (see there why).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autogaze_fast.checks import check_int, is_integer
from autogaze_fast.loading import read_preprocessor_config

IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
PIL_BILINEAR = 2

MIN_FRAME_SIDE = 16
"""Smallest frame side (pixels) the processor accepts.

The gaze model cuts a 224 × 224 frame into 14 × 14 patches of 16 px at its finest scale. A side
shorter than 16 px has fewer pixels than those patches, so they would all be interpolated from the
same few pixels and the gaze would carry no information; and the shortest-edge resize blows the
long side up by ``224 / side`` (a 1-px-wide, 224-px-tall frame becomes 224 × 50,176: 135 MB of
float32 per frame)."""

MAX_ASPECT_RATIO = 8.0
"""Largest ``long side / short side`` the processor accepts.

The shortest-edge resize makes the long side ``224 · ratio`` (8 : 1 → 1,792 px, 4.8 MB of float32
per frame) and the gaze model then squashes the frame to 224 × 224, shrinking the long axis by the
ratio: beyond 8 : 1 objects along that axis are squeezed to slivers a few pixels wide. Crop such
frames to the region of interest or cut them into tiles instead."""

VideoInput = np.ndarray | torch.Tensor | Sequence[Any]

_PARAMS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "offset",
    "do_normalize",
    "image_mean",
    "image_std",
)


@dataclass
class ProcessorOutput:
    """Result of :class:`AutoGazeImageProcessor`.

    Attributes:
        pixel_values: ``(T, 3, H, W)`` float32 for one video, ``(B, T, 3, H, W)`` for a batch
            (a torch tensor, or a numpy array with ``return_tensors="np"``).
    """

    pixel_values: torch.Tensor | np.ndarray

    def __getitem__(self, key: str) -> torch.Tensor | np.ndarray:
        if key != "pixel_values":
            raise KeyError(f"{key!r}: a processor output only holds 'pixel_values'")
        return self.pixel_values

    def keys(self) -> list[str]:
        return ["pixel_values"]


def size_dict(size: Any, param: str, default_to_square: bool) -> dict[str, int]:
    """Normalise a size given as dict, int or (height, width) the way Hugging Face configs do.

    An int means ``{"shortest_edge": n}`` when ``default_to_square`` is false, else a square.
    """
    if isinstance(size, Mapping):
        out = dict(size)
    elif is_integer(size):
        out = {"height": int(size), "width": int(size)} if default_to_square else {"shortest_edge": int(size)}
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        out = {"height": size[0], "width": size[1]}
    else:
        raise ValueError(
            f"{param} must be a dict such as {{'shortest_edge': 224}} or {{'height': 224, 'width': 224}}, "
            f"an int, or a (height, width) pair; got {size!r}"
        )
    keys = set(out)
    if keys not in ({"shortest_edge"}, {"height", "width"}):
        raise ValueError(f"{param} must have the key 'shortest_edge' or the keys 'height' and 'width'; got {sorted(keys)}")
    for k, v in out.items():
        out[k] = check_int(v, f"{param}[{k!r}]", message=f"{param}[{k!r}] must be a positive int, got {v!r}")
    return out


def channel_stats(value: Any, name: str) -> tuple[float, ...]:
    """Per-channel ``(r, g, b)`` floats from one number or three (``image_mean`` / ``image_std``); finite."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    vals = tuple(float(v) for v in value)
    if len(vals) != 3:
        raise ValueError(f"{name} must be one float or three (one per RGB channel), got {value!r}")
    if not all(np.isfinite(vals)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return vals


def resize_output_size(height: int, width: int, size: Mapping[str, int]) -> tuple[int, int]:
    """Output ``(height, width)`` of the resize step for a ``height × width`` frame.

    With ``shortest_edge``: the short side becomes ``shortest_edge`` and the long side
    ``int(shortest_edge * long / short)`` (truncation, as upstream); a square stays square.
    """
    if "shortest_edge" in size:
        target = size["shortest_edge"]
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(target * long / short)
        return (new_long, target) if width <= height else (target, new_long)
    return size["height"], size["width"]


def _center_crop(frame: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    """Centre-crop an ``(H, W, 3)`` frame; a frame smaller than the crop is zero-padded first."""
    h, w = frame.shape[:2]
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    if top >= 0 and left >= 0:
        return frame[top : top + crop_h, left : left + crop_w]
    new_h, new_w = max(h, crop_h), max(w, crop_w)
    pad_top, pad_left = -(-(new_h - h) // 2), -(-(new_w - w) // 2)
    padded = np.zeros((new_h, new_w) + frame.shape[2:], dtype=frame.dtype)
    padded[pad_top : pad_top + h, pad_left : pad_left + w] = frame
    top, left = top + pad_top, left + pad_left
    return padded[max(0, top) : min(new_h, top + crop_h), max(0, left) : min(new_w, left + crop_w)]


def _kind(x: Any) -> str:
    """``"torch"``, ``"PIL"`` or ``"numpy"``: whose API the fix in an error message should use."""
    if isinstance(x, torch.Tensor):
        return "torch"
    if type(x).__module__.startswith("PIL."):
        return "PIL"
    return "numpy"


def describe_input(x: Any) -> str:
    """A short description of processor input for error messages, e.g.
    ``"a numpy array of shape (2, 8, 8, 3) and dtype float32"`` or ``"a list of 4 frames: [a torch tensor ...]"``."""
    if isinstance(x, np.ndarray):
        return f"a numpy array of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, torch.Tensor):
        return f"a torch tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    if _kind(x) == "PIL":
        return f"a PIL image of size {x.width}x{x.height} (W x H), mode {x.mode!r}"
    if isinstance(x, (list, tuple)):
        if len(x) == 0:
            return f"an empty {type(x).__name__}"
        first = describe_input(x[0])
        return f"a {type(x).__name__} of {len(x)} items, the first {first}"
    return f"a {type(x).__name__}"


# Fixes quoted in error messages, per array library; "x" stands for the user's array.
_FIXES = {
    "numpy": {
        "channels_last": "np.moveaxis(x, -3, -1)",
        "unit": "(x * 255).round().clip(0, 255).astype(np.uint8)",
        "byte": "x.round().clip(0, 255).astype(np.uint8)",
        "int": "x.astype(np.uint8)",
        "bool": "x.astype(np.uint8) * 255",
    },
    "torch": {
        "channels_last": "x.movedim(-3, -1)",
        "unit": "(x * 255).round().clamp(0, 255).to(torch.uint8)",
        "byte": "x.round().clamp(0, 255).to(torch.uint8)",
        "int": "x.to(torch.uint8)",
        "bool": "x.to(torch.uint8) * 255",
    },
}


def _fix(kind: str, what: str) -> str:
    return _FIXES["torch" if kind == "torch" else "numpy"][what]


def _frame_to_numpy(frame: Any, where: str) -> np.ndarray:
    """One frame (or array of frames) as a numpy array, or a ValueError saying what is wrong."""
    if _kind(frame) == "PIL":
        if frame.mode != "RGB":
            raise ValueError(f"{where}: PIL image has mode {frame.mode!r}; convert it with image.convert('RGB')")
        return np.asarray(frame)
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu()
        if frame.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16; the values are only checked
            frame = frame.float()
        frame = frame.numpy()
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{where}: expected a numpy array, torch tensor or PIL image, got {type(frame).__name__}")
    return frame


def _dtype_advice(video: np.ndarray, kind: str, each: str) -> str:
    """Why a non-uint8 video is refused and how to convert it, from its dtype and value range
    (the tail of an error message, starting with " with values in ..." or "; convert ...")."""
    if video.dtype == np.bool_:
        return f"; convert {each}with {_fix(kind, 'bool')}"
    lo, hi = float(video.min()), float(video.max())
    seen = f" with values in [{lo:.4g}, {hi:.4g}]"
    if np.issubdtype(video.dtype, np.integer):
        if lo >= 0 and hi <= 255:
            return f"{seen}; convert {each}with {_fix(kind, 'int')}"
        return f"{seen}, outside [0, 255]; scale them to 0..255 first (16-bit frames: x // 257), then {_fix(kind, 'int')}"
    if lo >= 0 and hi <= 1:
        return f"{seen}, which look like floats in [0, 1]; convert {each}with {_fix(kind, 'unit')}"
    if lo >= 0 and hi <= 255:
        return f"{seen}, which look like floats in [0, 255]; convert {each}with {_fix(kind, 'byte')}"
    if lo < 0:
        return (
            f"{seen}: negative values, as in pixel values that are already normalised (this processor's output?). "
            "Pass the raw uint8 frames here, or give normalised (B, T, 3, H, W) pixel values straight to AutoGaze; "
            f"for pixels in another range, scale them to 0..255, then {_fix(kind, 'byte')}"
        )
    return f"{seen}, outside [0, 255]; scale them to 0..255 first, then {_fix(kind, 'byte')}"


def _check_video(video: np.ndarray, where: str, kind: str = "numpy", given: str | None = None, each: str = "") -> np.ndarray:
    """Validate one video array ``(T, H, W, 3)`` uint8; return it unchanged.

    Args:
        where: which part of the input this is ("input", "video 2").
        kind: ``"numpy"``, ``"torch"`` or ``"PIL"``: the API the suggested fix uses.
        given: description of the whole input (:func:`describe_input`), quoted in errors.
        each: ``"each frame "`` when the fix applies per element of a list.
    """
    given = given or describe_input(video)
    if video.ndim != 4:
        raise ValueError(f"{where}: expected frames of shape (H, W, 3); got {given}")
    t, h, w, c = video.shape
    if t == 0:
        raise ValueError(f"{where}: the video has no frames; got {given}")
    if c != 3:
        if h == 3 and kind != "PIL":
            raise ValueError(
                f"{where}: frames must be RGB with 3 channels last (T, H, W, 3); got {given}, which looks channels-first: "
                f"move the channel axis last with {_fix(kind, 'channels_last')}"
            )
        raise ValueError(f"{where}: frames must be RGB with 3 channels last (T, H, W, 3); got {given}")
    if h == 0 or w == 0:
        raise ValueError(f"{where}: frames have zero size {h}x{w}; got {given}")
    if video.dtype != np.uint8:
        if np.issubdtype(video.dtype, np.floating) and not np.isfinite(video).all():
            raise ValueError(f"{where}: frames contain NaN or inf values; got {given}. Pass uint8 RGB frames in [0, 255]")
        raise ValueError(
            f"{where}: frames must be uint8 RGB in [0, 255]; got {given}{_dtype_advice(video, kind, each)}"
        )
    return video


def _video_from_frames(frames: Sequence[Any], where: str, given: str) -> np.ndarray:
    if len(frames) == 0:
        raise ValueError(f"{where}: the video has no frames; got {given}")
    arrays = [_frame_to_numpy(f, f"{where} frame {i}") for i, f in enumerate(frames)]
    for i, a in enumerate(arrays):
        if a.ndim != 3:
            raise ValueError(f"{where} frame {i}: expected shape (H, W, 3), got {tuple(a.shape)}; the input is {given}")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"{where}: all frames of a video must have the same shape, got {sorted(shapes)}")
    return _check_video(np.stack(arrays), where, _kind(frames[0]), given, each="each frame ")


def _is_frame(x: Any) -> bool:
    if _kind(x) == "PIL":
        return True
    return isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim == 3


def as_videos(videos: VideoInput) -> tuple[list[np.ndarray], bool]:
    """Parse processor input into a list of ``(T, H, W, 3)`` uint8 videos.

    Accepted: one frame ``(H, W, 3)`` (a one-frame video, as upstream), one video ``(T, H, W, 3)``
    or a list of frames, a batch ``(B, T, H, W, 3)`` or a list of videos. Arrays may be numpy or
    torch (any device). Returns ``(videos, is_batch)``.

    Raises:
        ValueError: naming the input's shape and dtype and, where it can tell, the conversion
            (numpy or torch, as given) that fixes it.
    """
    given = describe_input(videos)
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        kind = _kind(videos)
        arr = _frame_to_numpy(videos, "input")
        if arr.ndim == 3:
            return [_check_video(arr[None], "input", kind, given)], False
        if arr.ndim == 4:
            return [_check_video(arr, "input", kind, given)], False
        if arr.ndim == 5:
            if arr.shape[0] == 0:
                raise ValueError(f"input: the batch has no videos; got {given}")
            return [_check_video(v, f"video {b}", kind, given) for b, v in enumerate(arr)], True
        raise ValueError(f"input: expected a frame (H, W, 3), a video (T, H, W, 3) or a batch (B, T, H, W, 3); got {given}")
    if not isinstance(videos, (list, tuple)):
        if _is_frame(videos):  # a PIL image
            return [_video_from_frames([videos], "input", given)], False
        raise ValueError(f"input: expected frames as numpy arrays, torch tensors or a list of them; got {given}")
    if len(videos) == 0:
        raise ValueError("input: empty list; pass at least one frame")
    if all(_is_frame(x) for x in videos):
        return [_video_from_frames(videos, "input", given)], False
    out = []
    for b, v in enumerate(videos):
        if isinstance(v, (list, tuple)):
            out.append(_video_from_frames(v, f"video {b}", given))
        elif isinstance(v, (np.ndarray, torch.Tensor)) and v.ndim == 4:
            out.append(_check_video(_frame_to_numpy(v, f"video {b}"), f"video {b}", _kind(v), given, each="each video "))
        else:
            shape = tuple(v.shape) if hasattr(v, "shape") else type(v).__name__
            raise ValueError(
                f"input: a list must hold frames (H, W, 3) or videos (T, H, W, 3) / lists of frames, "
                f"not a mix; element {b} is {shape}"
            )
    return out, True


def check_frame_size(
    video: np.ndarray, where: str, min_side: int = MIN_FRAME_SIDE, max_aspect: float = MAX_ASPECT_RATIO, given: str | None = None
) -> None:
    """Refuse frames smaller than ``min_side`` or more elongated than ``max_aspect`` : 1.

    Args:
        video: ``(T, H, W, 3)`` frames.
        where, given: which part of the input this is, and a description of the whole input, for the message.

    Raises:
        ValueError: naming the frame size and what to do (see :data:`MIN_FRAME_SIDE`, :data:`MAX_ASPECT_RATIO`).
    """
    h, w = video.shape[1:3]
    size = f"{h}x{w} (H x W)"
    given = given or describe_input(video)
    if min(h, w) < min_side:
        raise ValueError(
            f"{where}: frames of {size} are too small (got {given}): the gaze model needs at least {min_side} px on each side "
            "(its finest patches are 16 px of a 224-px frame). Pad or upscale the frames to at least "
            f"{min_side} px on each side first; to accept them anyway set processor.min_frame_side"
        )
    ratio = max(h, w) / min(h, w)
    if ratio > max_aspect:
        raise ValueError(
            f"{where}: frames of {size} have an aspect ratio of {ratio:.3g} : 1, more than {max_aspect:g} : 1 (got {given}); the "
            "gaze model squashes every frame to a square, which would shrink objects along the long side to slivers. "
            f"Crop the frames to the region of interest, or cut them into tiles of at most {max_aspect:g} : 1 and "
            "process each; to accept them anyway set processor.max_aspect_ratio"
        )


class AutoGazeImageProcessor:
    """Preprocess RGB uint8 videos for the AutoGaze gaze model.

    Constructor defaults are upstream's (``shortest_edge`` 256, mean/std 0.5); checkpoints ship a
    ``preprocessor_config.json`` that overrides them (the NVIDIA model: ``shortest_edge`` 224 and
    ImageNet mean/std), so load with :meth:`from_pretrained`.

    Calling the processor returns a :class:`ProcessorOutput` whose ``pixel_values`` is
    ``(T, 3, H, W)`` float32 for one video and ``(B, T, 3, H, W)`` for a batch. Upstream returns a
    ``BatchFeature`` holding a nested list (batch, frames) of ``(3, H, W)`` arrays and its demo
    stacks ``pixel_values[0]``; for a single video we return that stacked ``(T, 3, H, W)`` directly
    (add the batch axis with ``[None]``).

    Non-square frames: the shortest-edge resize keeps the aspect ratio (640 × 360 → 398 × 224), but
    the gaze model resizes every frame to 224 × 224, so it sees them squashed to a square
    (for any aspect ratio, gaze square tiles instead: :class:`autogaze_fast.tiling.grid.TileGrid`).

    Attributes:
        min_frame_side: smallest accepted frame side in pixels (default :data:`MIN_FRAME_SIDE`, 16).
        max_aspect_ratio: largest accepted ``long / short`` side ratio (default :data:`MAX_ASPECT_RATIO`, 8).
            Both may be set on an instance to accept other frames at your own risk.
    """

    min_frame_side: int = MIN_FRAME_SIDE
    max_aspect_ratio: float = MAX_ASPECT_RATIO

    def __init__(
        self,
        do_resize: bool = True,
        size: Mapping[str, int] | int | Sequence[int] | None = None,
        resample: int = PIL_BILINEAR,
        do_center_crop: bool = False,
        crop_size: Mapping[str, int] | int | Sequence[int] | None = None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 127.5,
        offset: bool = True,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
    ) -> None:
        self.do_resize = bool(do_resize)
        self.size = size_dict(size if size is not None else {"shortest_edge": 256}, "size", default_to_square=False)
        self.resample = int(resample)
        self.do_center_crop = bool(do_center_crop)
        self.crop_size = size_dict(crop_size if crop_size is not None else {"height": 224, "width": 224}, "crop_size", True)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.offset = bool(offset)
        self.do_normalize = bool(do_normalize)
        self.image_mean = channel_stats(image_mean if image_mean is not None else IMAGENET_STANDARD_MEAN, "image_mean")
        self.image_std = channel_stats(image_std if image_std is not None else IMAGENET_STANDARD_STD, "image_std")
        self._validate()

    def _validate(self) -> None:
        from PIL import Image  # deferred: Pillow loads on first use, not on import

        if self.resample not in {int(r) for r in Image.Resampling}:
            raise ValueError(f"resample must be a PIL resampling filter (0-5, bilinear = 2), got {self.resample}")
        if "shortest_edge" in self.crop_size and self.do_center_crop:
            raise ValueError(f"crop_size must have 'height' and 'width', got {self.crop_size}")
        if self.offset and not self.do_rescale:
            raise ValueError("offset=True needs do_rescale=True (the offset is applied after rescaling)")
        if self.do_rescale and not np.isfinite(self.rescale_factor):
            raise ValueError(f"rescale_factor must be finite, got {self.rescale_factor}")
        if self.do_normalize and any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std must not contain 0, got {self.image_std}")

    # ------------------------------------------------------------------ config
    @classmethod
    def from_dict(cls, config: Mapping[str, Any], **overrides: Any) -> AutoGazeImageProcessor:
        """Build from a ``preprocessor_config.json`` dict; unknown keys are ignored, ``overrides`` win.

        Raises:
            ValueError: an override that is not a processor parameter.
        """
        unknown = sorted(k for k in overrides if k not in _PARAMS)
        if unknown:
            raise ValueError(f"unknown processor parameter(s) {unknown}; valid ones are {list(_PARAMS)}")
        params = {k: v for k, v in config.items() if k in _PARAMS}
        params.update(overrides)
        return cls(**params)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, **overrides: Any) -> AutoGazeImageProcessor:
        """Load ``preprocessor_config.json`` from a local model directory or a hub id.

        ``overrides`` replace config values, e.g. ``size=(392, 392)`` for the any-resolution path.

        Raises:
            autogaze_fast.loading.CheckpointError: the directory or config file is missing or unreadable.
        """
        return cls.from_dict(read_preprocessor_config(path_or_repo_id), **overrides)

    @classmethod
    def from_pretrained_or_default(cls, path_or_repo_id: str | os.PathLike, default: dict[str, Any] | None = None,
                                   **overrides: Any) -> AutoGazeImageProcessor:
        """The checkpoint's processor, or ``default`` (:data:`NVIDIA_PREPROCESSING`) when the checkpoint
        ships no ``preprocessor_config.json`` (upstream's own checkpoints rely on that default).

        Raises:
            autogaze_fast.loading.CheckpointError: the checkpoint cannot be had, or its
                ``preprocessor_config.json`` is there but unreadable (a broken file is never ignored).
        """
        config = read_preprocessor_config(path_or_repo_id, missing_ok=True)
        if config is None:
            config = dict(NVIDIA_PREPROCESSING if default is None else default)
        return cls.from_dict(config, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Parameters as a JSON-serialisable dict (the ``preprocessor_config.json`` layout)."""
        d = {k: getattr(self, k) for k in _PARAMS}
        d["image_mean"], d["image_std"] = list(self.image_mean), list(self.image_std)
        d["image_processor_type"] = "AutoGazeImageProcessor"
        return d

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict())})"

    # ------------------------------------------------------------------ compute
    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` of a processed ``height × width`` frame."""
        if self.do_center_crop:
            return self.crop_size["height"], self.crop_size["width"]
        if self.do_resize:
            return resize_output_size(height, width, self.size)
        return height, width

    def _resize(self, video: np.ndarray) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 → ``(T, H', W', 3)`` uint8 with Pillow, frame by frame."""
        from PIL import Image  # deferred: Pillow loads on first use, not on import

        out_h, out_w = resize_output_size(video.shape[1], video.shape[2], self.size)
        resized = np.empty((video.shape[0], out_h, out_w, 3), dtype=np.uint8)
        for i, frame in enumerate(video):
            img = Image.fromarray(np.ascontiguousarray(frame))
            resized[i] = np.asarray(img.resize((out_w, out_h), resample=self.resample))
        return resized

    def process_video(self, video: np.ndarray) -> np.ndarray:
        """One validated ``(T, H, W, 3)`` uint8 video → ``(T, 3, H', W')`` float32 numpy array."""
        if self.do_resize:
            video = self._resize(video)
        if self.do_center_crop:
            video = np.stack([_center_crop(f, self.crop_size["height"], self.crop_size["width"]) for f in video])
        return rescale_and_normalize(
            video, self.rescale_factor if self.do_rescale else None, self.offset,
            (self.image_mean, self.image_std) if self.do_normalize else None,
        )

    def preprocess(self, videos: VideoInput, return_tensors: str | None = "pt", **overrides: Any) -> ProcessorOutput:
        """Preprocess one video or a batch; see :func:`as_videos` for the accepted layouts.

        Args:
            videos: frames ``(H, W, 3)``/``(T, H, W, 3)``/``(B, T, H, W, 3)`` uint8 (numpy or torch),
                a list of frames, or a list of videos.
            return_tensors: ``"pt"`` (default; ``None`` means the same) for torch, ``"np"`` for numpy.
            **overrides: processor parameters for this call only (e.g. ``size={"height": 392, "width": 392}``).

        Returns:
            ``ProcessorOutput`` with ``pixel_values`` ``(T, 3, H', W')`` float32, or
            ``(B, T, 3, H', W')`` for a batch (all videos must then give the same shape).

        Raises:
            ValueError: wrong rank, channels or dtype (the message names the input's shape and the
                numpy or torch conversion that fixes it), empty input, NaN/inf, frames smaller than
                ``min_frame_side`` or more elongated than ``max_aspect_ratio``, or a ragged batch.
        """
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        proc = self.from_dict(self.to_dict(), **overrides) if overrides else self
        parsed, is_batch = as_videos(videos)
        for b, v in enumerate(parsed):
            where = f"video {b}" if is_batch else "input"
            check_frame_size(v, where, self.min_frame_side, self.max_aspect_ratio, describe_input(videos))
        processed = [proc.process_video(v) for v in parsed]
        return processor_output(processed, is_batch, return_tensors, "use the same frame count and size")

    __call__ = preprocess


def rescale_and_normalize(video: np.ndarray, rescale_factor: float | None, offset: bool,
                          mean_std: tuple[Sequence[float], Sequence[float]] | None) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 → ``(T, 3, H, W)`` float32 with the Hugging Face transforms' arithmetic:
    ``float32(float64(x) * rescale_factor)`` (then ``- 1`` in float32 with ``offset``), then
    ``(x - mean) / std`` in float32. ``None`` skips a step."""
    x = video
    if rescale_factor is not None:
        x = (x.astype(np.float64) * rescale_factor).astype(np.float32)
        if offset:
            x = x - np.float32(1)
    if mean_std is not None:
        x = x.astype(np.float32, copy=False)
        mean = np.asarray(mean_std[0], dtype=np.float32)
        std = np.asarray(mean_std[1], dtype=np.float32)
        x = (x - mean) / std
    return np.ascontiguousarray(x.astype(np.float32, copy=False).transpose(0, 3, 1, 2))


def processor_output(processed: list[np.ndarray], is_batch: bool, return_tensors: str | None, advice: str) -> ProcessorOutput:
    """Processed ``(T, 3, H, W)`` videos → a :class:`ProcessorOutput`: the one video, or the batch
    stacked ``(B, T, 3, H, W)`` (a ValueError, ending with ``advice``, when their shapes differ)."""
    if is_batch:
        shapes = {p.shape for p in processed}
        if len(shapes) > 1:
            raise ValueError(
                f"videos of a batch give different shapes {sorted(shapes)} (T, 3, H, W) after preprocessing; "
                f"{advice}, or process the videos one by one"
            )
        out = np.stack(processed)
    else:
        out = processed[0]
    return ProcessorOutput(pixel_values=out if return_tensors == "np" else torch.from_numpy(out))


#: ``preprocessor_config.json`` of ``nvidia/AutoGaze`` (upstream's preprocessing for it).
NVIDIA_PREPROCESSING = {
    "size": {"shortest_edge": 224}, "do_center_crop": False, "do_rescale": True, "rescale_factor": 1 / 127.5,
    "offset": True, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
}
