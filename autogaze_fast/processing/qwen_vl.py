"""The Qwen-VL video processors: frames → the towers' patch rows, as transformers 4.57.6 computes them.

One class for both recipes (``QwenVLVideoProcessor``; ``for_family`` gives either's defaults):

* **Qwen2-VL / Qwen2.5-VL** (transformers' ``Qwen2VLVideoProcessor``): 14-px patches, sides rounded to
  multiples of 28 (:func:`smart_resize`: the nearest multiples, then shrunk or grown so that
  ``H' · W'`` lies within ``size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}``; the
  legacy ``min_pixels`` / ``max_pixels`` keys override them), OpenAI CLIP mean / std;
* **Qwen3-VL** (``Qwen3VLVideoProcessor``): 16-px patches, multiples of 32, the pixel budget counts
  the frames too (``T' · H' · W'``, with ``T'`` rounded to the temporal patch), mean / std 0.5, and
  optional frame sampling at ``fps`` from the clip's own frame rate (:meth:`sample_indices`).

Both then resize every frame (bicubic with antialias on the uint8 frames, rounded back to uint8: what
torchvision's resize does on CPU), normalise as ``(x - 255·mean) / (255·std)`` in float32 (the fused
rescale + normalise), pad the clip to whole temporal patches by repeating its last frame and flatten
it (:func:`~autogaze_fast.processing.qwen_patches.patchify_frames`). ``tests/processing/
test_qwen_vl_processor.py`` checks every case against transformers' outputs (fixtures).
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from autogaze_fast.loading import CheckpointError, resolve_model_dir
from autogaze_fast.processing.qwen_patches import patchify_frames

__all__ = ["QwenVLVideoProcessor", "QwenVideoOutput", "smart_resize", "VIDEO_CONFIGS"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: The config files a Qwen-VL checkpoint keeps its video preprocessing in, first found wins.
VIDEO_CONFIGS = ("video_preprocessor_config.json", "preprocessor_config.json")
#: Each recipe's defaults (transformers 4.57.6's class attributes).
RECIPES: dict[str, dict[str, Any]] = {
    "qwen2_vl": dict(patch_size=14, min_pixels=128 * 28 * 28, max_pixels=28 * 28 * 768, image_mean=OPENAI_CLIP_MEAN,
                     image_std=OPENAI_CLIP_STD, do_sample_frames=False, fps=None),
    "qwen3_vl": dict(patch_size=16, min_pixels=128 * 32 * 32, max_pixels=32 * 32 * 768, image_mean=(0.5, 0.5, 0.5),
                     image_std=(0.5, 0.5, 0.5), do_sample_frames=True, fps=2.0),
}
#: model_type / processor class → recipe.
RECIPE_OF = {"qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_vl", "qwen3_vl": "qwen3_vl", "qwen3_vl_moe": "qwen3_vl",
             "Qwen2VLVideoProcessor": "qwen2_vl", "Qwen2VLImageProcessor": "qwen2_vl",
             "Qwen2VLImageProcessorFast": "qwen2_vl", "Qwen3VLVideoProcessor": "qwen3_vl"}


def smart_resize(height: int, width: int, *, factor: int, min_pixels: int, max_pixels: int, num_frames: int | None = None,
                 temporal_factor: int = 2) -> tuple[int, int]:
    """``(H', W')``, multiples of ``factor`` near ``(height, width)`` whose area lies in the budget.

    The sides are rounded to the nearest multiples; if the area (times ``T'``, the frame count rounded
    to ``temporal_factor``, when ``num_frames`` is given: Qwen3-VL) exceeds ``max_pixels`` both are
    scaled down by the same factor and floored (at least ``factor``); below ``min_pixels``, scaled up
    and ceiled.

    Raises:
        ValueError: an aspect ratio over 200, or (Qwen3-VL) fewer frames than ``temporal_factor`` or a
            side under ``factor``.
    """
    if num_frames is not None:
        if num_frames < temporal_factor:
            raise ValueError(f"a Qwen3-VL clip needs at least {temporal_factor} frames, got {num_frames}")
        if height < factor or width < factor:
            raise ValueError(f"frames of {height}x{width} are smaller than {factor} px on a side: Qwen3-VL's processor "
                             f"refuses them; upscale the video first")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"the aspect ratio {max(height, width) / min(height, width):.1f} is over 200; crop the frames")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    frames = 1 if num_frames is None else round(num_frames / temporal_factor) * temporal_factor
    count = 1 if num_frames is None else num_frames
    if frames * h_bar * w_bar > max_pixels:
        beta = math.sqrt(count * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif frames * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (count * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass
class QwenVideoOutput:
    """The processed clips: ``pixel_values`` ``(Σ t·h·w, C·tp·p²)`` float32 rows (clips concatenated) and
    ``grid_thw`` ``(n, 3)`` int64 (transformers' ``pixel_values_videos`` / ``video_grid_thw``);
    ``frame_indices``: per clip, the ``(T_used,)`` int64 indices of the input frames kept (all of them
    without sampling), before temporal padding."""

    pixel_values: torch.Tensor
    grid_thw: torch.Tensor
    frame_indices: list[np.ndarray] | None = None

    @property
    def pixel_values_videos(self) -> torch.Tensor:
        return self.pixel_values

    @property
    def video_grid_thw(self) -> torch.Tensor:
        return self.grid_thw

    def __getitem__(self, key: str) -> torch.Tensor:
        return getattr(self, key)


def as_clip(video: Any) -> torch.Tensor:
    """One clip as ``(T, 3, H, W)`` uint8: from ``(T, H, W, 3)`` (numpy or torch) or ``(T, 3, H, W)`` torch."""
    x = torch.from_numpy(np.ascontiguousarray(video)) if isinstance(video, np.ndarray) else video
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"a clip must be (T, H, W, 3) uint8 frames, got {getattr(x, 'shape', type(x))}")
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    elif x.shape[1] != 3:
        raise ValueError(f"a clip must be (T, H, W, 3) or (T, 3, H, W) with 3 channels, got {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (0..255), got {x.dtype}; convert them with .astype(np.uint8)")
    if x.shape[0] == 0:
        raise ValueError("the clip holds no frame")
    return x.contiguous()


class QwenVLVideoProcessor:
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL video preprocessing (see the module docstring).

    ``processor(videos)`` → :class:`QwenVideoOutput`; ``processor.resized_frames(clip)`` → the resized,
    normalised ``(T, 3, H', W')`` frames (no temporal padding) that a tower's ``encode_frames`` takes.
    """

    def __init__(self, recipe: str = "qwen2_vl", *, patch_size: int | None = None, temporal_patch_size: int = 2,
                 merge_size: int = 2, min_pixels: int | None = None, max_pixels: int | None = None,
                 image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
                 rescale_factor: float = 1 / 255, do_sample_frames: bool | None = None, fps: float | None = None,
                 min_frames: int = 4, max_frames: int = 768, resample: int = 3) -> None:
        if recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
        d = RECIPES[recipe]
        self.recipe = recipe
        self.patch_size = int(patch_size or d["patch_size"])
        self.temporal_patch_size, self.merge_size = int(temporal_patch_size), int(merge_size)
        self.min_pixels = int(d["min_pixels"] if min_pixels is None else min_pixels)
        self.max_pixels = int(d["max_pixels"] if max_pixels is None else max_pixels)
        self.image_mean = tuple(float(v) for v in (image_mean or d["image_mean"]))
        self.image_std = tuple(float(v) for v in (image_std or d["image_std"]))
        self.rescale_factor = float(rescale_factor)
        self.do_sample_frames = bool(d["do_sample_frames"] if do_sample_frames is None else do_sample_frames)
        self.fps = d["fps"] if fps is None else float(fps)
        self.min_frames, self.max_frames = int(min_frames), int(max_frames)
        if int(resample) not in RESAMPLE_MODES:
            raise ValueError(f"resample must be one of {sorted(RESAMPLE_MODES)} (PIL codes: 0 nearest, 2 bilinear, "
                             f"3 bicubic), got {resample!r}")
        self.resample = int(resample)
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} exceeds max_pixels {self.max_pixels}")

    # ------------------------------------------------------------------ configs
    @classmethod
    def for_family(cls, family: str, **overrides: Any) -> QwenVLVideoProcessor:
        """The defaults of a ``model_type`` (``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl``, ``qwen3_vl_moe``)."""
        if family not in RECIPE_OF:
            raise ValueError(f"no Qwen-VL video processor for {family!r}; known: {', '.join(sorted(RECIPE_OF))}")
        return cls(RECIPE_OF[family], **overrides)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], *, recipe: str | None = None, **overrides: Any) -> QwenVLVideoProcessor:
        """From a ``video_preprocessor_config.json`` / ``preprocessor_config.json`` body (transformers' keys)."""
        name = str(config.get("video_processor_type") or config.get("image_processor_type") or "")
        recipe = recipe or RECIPE_OF.get(name)
        if recipe is None:
            raise CheckpointError(f"processor type {name!r} is not a Qwen-VL video processor "
                                  f"(known: {', '.join(k for k in RECIPE_OF if k[0].isupper())})")
        size = config.get("size") or {}
        # Qwen2-VL's legacy min_pixels / max_pixels override size; Qwen3-VL's processor ignores them
        legacy = config if recipe == "qwen2_vl" else {}
        params: dict[str, Any] = dict(
            patch_size=config.get("patch_size"), temporal_patch_size=config.get("temporal_patch_size", 2),
            merge_size=config.get("merge_size", 2),
            min_pixels=legacy.get("min_pixels") or size.get("shortest_edge"),
            max_pixels=legacy.get("max_pixels") or size.get("longest_edge"),
            image_mean=config.get("image_mean"), image_std=config.get("image_std"),
            rescale_factor=config.get("rescale_factor", 1 / 255), do_sample_frames=config.get("do_sample_frames"),
            fps=config.get("fps"), min_frames=config.get("min_frames", 4), max_frames=config.get("max_frames", 768),
            resample=config.get("resample", 3))
        for key in ("do_resize", "do_rescale", "do_normalize"):
            if config.get(key) is False:
                raise CheckpointError(f"{key}=false is not supported by the Qwen-VL video processor here")
        params.update(overrides)
        return cls(recipe, **params)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, **overrides: Any) -> QwenVLVideoProcessor:
        """Read the checkpoint's ``video_preprocessor_config.json`` (else ``preprocessor_config.json``).

        Raises:
            CheckpointError: neither file, or one that is not a JSON object of a Qwen-VL processor.
        """
        model_dir = resolve_model_dir(path_or_repo_id, allow_patterns=["*.json"])
        for name in VIDEO_CONFIGS:
            path = model_dir / name
            if path.is_file():
                try:
                    config = json.loads(path.read_text())
                except (OSError, ValueError) as e:
                    raise CheckpointError(f"{path} is not readable JSON ({type(e).__name__}: {e})") from None
                if not isinstance(config, dict):
                    raise CheckpointError(f"{path} must hold a JSON object, got {type(config).__name__}")
                recipe = RECIPE_OF.get(_model_type(model_dir) or "")
                return cls.from_dict(config, **({"recipe": recipe} if recipe and not _names_type(config) else {}),
                                     **overrides)
        raise CheckpointError(f"no {' or '.join(VIDEO_CONFIGS)} in {model_dir}")

    def to_dict(self) -> dict[str, Any]:
        """transformers' keys (``video_preprocessor_config.json``)."""
        return {"video_processor_type": "Qwen2VLVideoProcessor" if self.recipe == "qwen2_vl" else "Qwen3VLVideoProcessor",
                "patch_size": self.patch_size, "temporal_patch_size": self.temporal_patch_size,
                "merge_size": self.merge_size, "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
                "image_mean": list(self.image_mean), "image_std": list(self.image_std),
                "rescale_factor": self.rescale_factor, "do_sample_frames": self.do_sample_frames, "fps": self.fps,
                "min_frames": self.min_frames, "max_frames": self.max_frames, "resample": self.resample}

    @classmethod
    def for_vision_model(cls, model_or_config: Any, model_dir: str | os.PathLike | None = None, *,
                         defaults_if_missing: bool = False) -> QwenVLVideoProcessor:
        """The processor of a Qwen-VL tower: ``model_dir``'s config; without one (``defaults_if_missing``) the
        recipe of the tower's patch size at its patch / merge / temporal sizes.

        Raises:
            CheckpointError: no processor config in ``model_dir`` and ``defaults_if_missing`` is False.
        """
        if model_dir is not None:
            try:
                return cls.from_pretrained(model_dir)
            except CheckpointError:
                if not defaults_if_missing:
                    raise
        elif not defaults_if_missing:
            raise CheckpointError("no model_dir to read the video processor config from; pass "
                                  "defaults_if_missing=True for the family's defaults")
        config = getattr(model_or_config, "config", model_or_config)
        patch = int(getattr(config, "patch_size", 14))
        return cls("qwen3_vl" if patch == 16 else "qwen2_vl", patch_size=patch,
                   merge_size=int(getattr(config, "spatial_merge_size", 2)),
                   temporal_patch_size=int(getattr(config, "temporal_patch_size", 2)))

    # ------------------------------------------------------------------ processing
    @property
    def factor(self) -> int:
        """Sides are multiples of this: one merge unit, ``patch_size · merge_size``."""
        return self.patch_size * self.merge_size

    def target_size(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        """``(H', W')`` the clip's frames are resized to."""
        return smart_resize(height, width, factor=self.factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                            num_frames=num_frames if self.recipe == "qwen3_vl" else None,
                            temporal_factor=self.temporal_patch_size)

    def sample_indices(self, total_frames: int, video_fps: float | None, *, fps: float | None = None,
                       num_frames: int | None = None) -> np.ndarray:
        """The frame indices ``(T_sampled,)`` int64 that transformers' ``sample_frames`` picks.

        Qwen3-VL: ``num_frames`` (else ``int(total / video_fps · fps)`` clamped to ``[min_frames, max_frames]``
        and the clip; an unknown ``video_fps`` counts as 24, as transformers) indices spread evenly, rounded.
        Qwen2-VL: ``num_frames`` rounded to the temporal patch (else from ``fps``, clamped, floored to the
        temporal patch), indices ``arange(0, total, total / n)`` truncated; neither → every frame.

        Raises:
            ValueError: both ``fps`` and ``num_frames``; Qwen2-VL fps sampling without ``video_fps``, or asking
                for more frames than the clip holds.
        """
        if fps is not None and num_frames is not None:
            raise ValueError("fps and num_frames are exclusive: pass one")
        fps = self.fps if fps is None and num_frames is None else fps
        if self.recipe == "qwen3_vl":
            if num_frames is None:
                if fps is not None:
                    rate = 24.0 if video_fps is None else float(video_fps)  # transformers' fallback without metadata
                    num_frames = min(max(int(total_frames / rate * fps), self.min_frames), self.max_frames, total_frames)
                else:
                    num_frames = min(max(total_frames, self.min_frames), self.max_frames)
            return np.linspace(0, total_frames - 1, num_frames).round().astype(np.int64)
        tp = self.temporal_patch_size
        if num_frames is not None:
            n: float | None = round(num_frames / tp) * tp
        elif fps is not None:
            if video_fps is None:
                raise ValueError("sampling by fps needs the clip's frame rate: pass video_fps=, or num_frames=")
            top = math.floor(min(self.max_frames, total_frames) / tp) * tp
            n = math.floor(min(max(total_frames / float(video_fps) * fps, self.min_frames), top, total_frames) / tp) * tp
        else:
            n = None
        if n is not None and n > total_frames:
            raise ValueError(f"cannot sample {n} frames from a clip of {total_frames}: lower num_frames or fps")
        if n is None:
            return np.arange(total_frames, dtype=np.int64)
        if n <= 0:
            raise ValueError(f"sampling leaves no frame (num_frames={n}) from a clip of {total_frames}: "
                             f"raise fps or num_frames")
        # the very float32 arange transformers uses, so the truncation falls the same way
        return torch.arange(0, total_frames, total_frames / n).int().numpy().astype(np.int64)

    def resized_frames(self, video: Any) -> torch.Tensor:
        """``(T, H, W, 3)`` uint8 → ``(T, 3, H', W')`` float32 resized and normalised frames."""
        clip = as_clip(video)
        t, _, h, w = clip.shape
        size = self.target_size(t, h, w)
        clip = resize_uint8(clip, size, self.resample)
        mean = torch.tensor(self.image_mean) * (1.0 / self.rescale_factor)
        std = torch.tensor(self.image_std) * (1.0 / self.rescale_factor)
        return (clip.float() - mean[:, None, None]) / std[:, None, None]

    def __call__(self, videos: Any, *, video_fps: float | Sequence[float | None] | None = None,
                 do_sample_frames: bool | None = None, fps: float | None = None,
                 num_frames: int | None = None) -> QwenVideoOutput:
        """One clip or a list of clips (each ``(T, H, W, 3)`` uint8) → :class:`QwenVideoOutput`.

        ``do_sample_frames`` (default: the config's; Qwen3-VL's is on) first picks frames at ``fps`` from
        each clip's ``video_fps``.
        """
        clips = list(videos) if isinstance(videos, (list, tuple)) else [videos]
        if not clips:
            raise ValueError("no clip to process")
        rates = list(video_fps) if isinstance(video_fps, (list, tuple)) else [video_fps] * len(clips)
        sample = self.do_sample_frames if do_sample_frames is None else do_sample_frames
        if len(rates) != len(clips):
            raise ValueError(f"video_fps holds {len(rates)} rates for {len(clips)} clips: pass one per clip")
        rows, grids, picked = [], [], []
        for clip, rate in zip(clips, rates):
            clip = as_clip(clip)
            idx = np.arange(clip.shape[0], dtype=np.int64)
            if sample:
                idx = self.sample_indices(clip.shape[0], rate, fps=fps, num_frames=num_frames)
                clip = clip[torch.from_numpy(idx)]
            picked.append(idx)
            r, grid = patchify_frames(self.resized_frames(clip), patch_size=self.patch_size,
                                      temporal_patch_size=self.temporal_patch_size, merge_size=self.merge_size)
            rows.append(r)
            grids.append(grid)
        return QwenVideoOutput(torch.cat(rows), torch.tensor(grids, dtype=torch.long), picked)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict())})"


#: PIL resample code → ``F.interpolate`` mode (as torchvision maps them).
RESAMPLE_MODES = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}


def resize_uint8(clip: torch.Tensor, size: tuple[int, int], resample: int = 3) -> torch.Tensor:
    """``(T, 3, H, W)`` uint8 → ``(T, 3, H', W')`` uint8, as torchvision's ``resize(antialias=True)`` does it.

    On CPU torch resizes uint8 natively (bicubic always; bilinear when the CPU has AVX2 / AVX512, torchvision's
    own test); otherwise, and on other devices, float32 → interpolate → clamp (bicubic) → round → uint8.
    Same-size frames come back unchanged.
    """
    if tuple(size) == tuple(clip.shape[-2:]):
        return clip
    mode = RESAMPLE_MODES[resample]
    antialias = mode != "nearest-exact"
    native = mode == "nearest-exact" or (clip.device.type == "cpu" and (
        mode == "bicubic" or torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
        or platform.machine() in ("aarch64", "arm64")))
    if native:
        return F.interpolate(clip, size=tuple(size), mode=mode, antialias=antialias)
    out = F.interpolate(clip.float(), size=tuple(size), mode=mode, antialias=antialias)
    if mode == "bicubic":
        out = out.clamp_(0, 255)
    return out.round_().to(torch.uint8)


def _model_type(model_dir) -> str | None:
    try:
        return json.loads((model_dir / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def _names_type(config: Mapping[str, Any]) -> bool:
    return bool(config.get("video_processor_type") or config.get("image_processor_type"))
