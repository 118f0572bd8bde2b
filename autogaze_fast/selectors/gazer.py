"""A heuristic selector in AutoGaze's clothes: :class:`SelectorGazer` takes what the model takes (the
AutoGaze processor's normalised video) and returns what it returns, so everything built on the model
(the tiling, :func:`~autogaze_fast.tiling.stream.gaze_video`, ``GazedVideoEncoder``, ``gaze``,
``extract``) runs any selector unchanged.

The normalisation is undone (the processor's mean/std, rescale and offset; values rounded to whole
grey levels, which is exact for the processor's uint8 resize), and the frames are squashed to the
layout's square as the model squashes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autogaze_fast.processing.autogaze import NVIDIA_PREPROCESSING, AutoGazeImageProcessor
from autogaze_fast.selectors.base import Selector
from autogaze_fast.selectors.layout import NVIDIA_LAYOUT, GazeLayout
from autogaze_fast.selectors.registry import gaze_dict, make_selector


@dataclass
class SelectorConfig:
    """The slice of :class:`~autogaze_fast.config.AutoGazeConfig` the model's users read."""

    scales: list[int]
    tokens_per_scale: list[int]
    num_vision_tokens_each_frame: int
    input_img_size: int
    max_num_frames: int = 16
    frame_sampling_rate: int = 1
    extra: dict = field(default_factory=dict)


def denormalize(video: torch.Tensor, processor: Any) -> torch.Tensor:
    """The processor's normalised ``(B, T, 3, H, W)`` video back to grey levels 0..255 (rounded)."""
    x = video.float()
    if processor.do_normalize:
        mean = torch.tensor(processor.image_mean, device=x.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(processor.image_std, device=x.device).view(1, 1, 3, 1, 1)
        x = x * std + mean
    if processor.do_rescale:
        if processor.offset:
            x = x + 1
        x = x / processor.rescale_factor
    return x.round().clamp(0, 255)


class SelectorGazer(nn.Module):
    """A selector with the model's call: ``gazer({"video": v}, gazing_ratio=0.1)`` → the gaze dict.

    Args:
        selector: a heuristic's name (see :data:`~autogaze_fast.selectors.registry.SELECTORS`) or a
            built :class:`~autogaze_fast.selectors.base.Selector`.
        layout: the token layout (default NVIDIA's; e.g. ``GazeLayout.from_config(vision.config)``).
        processor: the AutoGaze processor whose output the gazer is given (default NVIDIA's).
        max_num_frames: the clip length the users of a model cut videos into (16).
        options: the selector's options when built by name.
    """

    def __init__(self, selector: str | Selector, layout: GazeLayout | None = None,
                 processor: AutoGazeImageProcessor | None = None, max_num_frames: int = 16, **options: Any) -> None:
        super().__init__()
        self.selector = make_selector(selector, **options)
        self.layout = layout or NVIDIA_LAYOUT
        self.processor = processor or AutoGazeImageProcessor.from_dict(NVIDIA_PREPROCESSING)
        layout = self.layout
        self.config = SelectorConfig(list(layout.scales), layout.tokens_per_scale, layout.num_tokens, layout.side,
                                     max_num_frames)
        self.scales = list(layout.scales)
        self.num_vision_tokens_each_frame = layout.num_tokens
        self.num_vision_tokens_each_scale_each_frame = layout.tokens_per_scale
        self.frame_sampling_rate = 1
        self.impl = f"selector:{self.selector.name}"
        # no weights: an empty parameter tells callers (next(model.parameters()).device) where to put inputs
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, inputs: Any, gazing_ratio: float | None = None, task_loss_requirement: float | None = None,
                generate_only: bool = True, **ignored: Any) -> dict:
        """Gaze ``{"video": (B, T, 3, H, W)}`` (the AutoGaze processor's output) → the gaze dict."""
        if task_loss_requirement is not None:
            raise ValueError(f"task_loss_requirement is AutoGaze's stop rule; the {self.selector.name!r} selector takes "
                             "its threshold when it is built (e.g. make_selector('run-length', threshold=2))")
        if isinstance(gazing_ratio, (list, tuple)):
            raise ValueError("a selector takes one gazing_ratio for every frame")
        video = inputs["video"] if isinstance(inputs, dict) else inputs
        if not isinstance(video, torch.Tensor) or video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(f"video must be the processor's (B, T, 3, H, W) output, got {getattr(video, 'shape', video)}")
        pixels = denormalize(video, self.processor)
        side = self.layout.side
        if tuple(pixels.shape[-2:]) != (side, side):
            b, t = pixels.shape[:2]
            pixels = F.interpolate(pixels.flatten(0, 1), size=(side, side), mode="bilinear", antialias=True,
                                   align_corners=False).round().clamp(0, 255).unflatten(0, (b, t))
        budget = None if gazing_ratio is None else self.layout.budget(gazing_ratio)
        out = gaze_dict(self.selector, pixels, self.layout, budget)
        return {k: v.to(video.device) if isinstance(v, torch.Tensor) else
                [m.to(video.device) for m in v] if k == "gazing_mask" else v for k, v in out.items()}
