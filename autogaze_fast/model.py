"""Public ``AutoGaze``: loading, input checks, and the reference/fast switch.

    >>> model = AutoGaze.from_pretrained("nvidia/AutoGaze")          # or a local directory
    >>> out = model({"video": pixel_values}, gazing_ratio=0.75)       # pixel_values (B, T, 3, H, W)
    >>> out["gazing_pos"], out["if_padded_gazing"], out["gazing_mask"]

The state dict is upstream's (``gazing_model.*``), for either implementation.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import torch

from .config import AutoGazeConfig
from .impl import resolve_impl
from .loading import load_state_dict_strict, read_safetensors, resolve_model_dir
from .reference.autogaze import AutoGazeReference


def _gazing_model_class(impl: str):
    if impl == "reference":
        from .reference.gazing_model import GazingModel

        return GazingModel
    from .fast.gazing_model import FastGazingModel

    return FastGazingModel


def _check_ratio(value: float, what: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value) or not 0 < value <= 1:
        raise ValueError(f"{what} must be a number in (0, 1], got {value!r}")


class AutoGaze(AutoGazeReference):
    """AutoGaze gaze model (upstream ``AutoGaze``), pure-PyTorch reference or fast implementation.

    Attributes:
        config: the parsed :class:`AutoGazeConfig`.
        impl: ``"reference"`` or ``"fast"``.
        scales: ascending scales, e.g. [32, 64, 112, 224].
        num_vision_tokens_each_frame: N (265 for the NVIDIA model).
    """

    def __init__(self, config: AutoGazeConfig, impl: str | None = None) -> None:
        impl = resolve_impl(impl)
        super().__init__(config, _gazing_model_class(impl))
        self.impl = impl

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike,
        *,
        impl: str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> "AutoGaze":
        """Load ``config.json`` + ``model.safetensors`` from a local directory or a hub id.

        The state dict must match the config exactly: a missing, unexpected or wrongly shaped key
        raises :class:`autogaze_fast.loading.CheckpointError` listing them all.
        """
        directory = resolve_model_dir(path_or_repo_id)
        config = AutoGazeConfig.from_json_file(directory / "config.json")
        model = cls(config, impl=impl)
        load_state_dict_strict(model, read_safetensors(directory / "model.safetensors"), source=str(directory))
        model.eval()
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return model

    def forward(
        self,
        inputs: Mapping[str, Any] | torch.Tensor,
        gazing_ratio: float | list[float] | None = None,
        task_loss_requirement: float | None = None,
        target_scales: list[int] | None = None,
        target_patch_size: int | None = None,
        gazing_info: dict | None = None,
        temperature: float = 1.0,
        generate_only: bool = False,
        use_cache: bool = False,
        past_key_values=None,
        past_inputs_embeds=None,
        past_attention_mask=None,
        past_conv_values=None,
        generator: torch.Generator | None = None,
    ) -> dict:
        """Gaze a batch of clips.

        Args:
            inputs: ``{"video": (B, T, 3, H, W)}`` (upstream's call) or the tensor itself, preprocessed
                with :class:`AutoGazeImageProcessor`.
            gazing_ratio: max fraction of the N tokens gazed per frame, in (0, 1]; a list gives one per frame.
            task_loss_requirement: stop a frame once the predicted task loss is at most this.
                With neither given, the config's defaults are used (as upstream).
            target_scales, target_patch_size: the downstream ViT's layout (e.g. [56,112,196,392], 14);
                the video side must equal the largest scale.
            gazing_info: given gaze (``gazing_pos``, ``if_padded_gazing``, ``num_gazing_each_frame``) to
                score instead of generating.
            temperature: sampling temperature (sampling happens in ``train()`` mode).
            generate_only: skip the teacher-forced pass (no ``log_action_probs``).
            use_cache, past_*: streaming, one call per frame, passing back the returned caches.
            generator: optional RNG for sampling.
        Returns:
            dict with ``gazing_pos`` (B, Σn_t) long, ``if_padded_gazing`` (B, Σn_t) bool,
            ``num_gazing_each_frame`` (T',) long, ``gazing_mask`` (list per scale of (B, T', n_s)),
            ``log_action_probs`` / ``task_loss_prediction`` (B, Σn_t) or None, ``scales``,
            ``num_vision_tokens_each_frame``, ``frame_sampling_rate``, ``has_task_loss_requirement``,
            ``task_loss_requirement`` and the streaming caches ``past_key_values``,
            ``past_input_embeds``, ``past_attention_mask``, ``past_conv_values``.
        """
        video = self._check_video(inputs)
        frames = video.shape[1] // self.frame_sampling_rate
        if gazing_ratio is not None:
            if isinstance(gazing_ratio, (list, tuple)):
                if len(gazing_ratio) != frames:
                    raise ValueError(f"gazing_ratio has {len(gazing_ratio)} values but the clip has {frames} frames; give one per frame")
                for i, r in enumerate(gazing_ratio):
                    _check_ratio(r, f"gazing_ratio[{i}]")
            else:
                _check_ratio(gazing_ratio, "gazing_ratio")
        if task_loss_requirement is not None and not isinstance(task_loss_requirement, (int, float, torch.Tensor)):
            raise ValueError(f"task_loss_requirement must be a number, got {type(task_loss_requirement).__name__}")
        if (target_scales is None) != (target_patch_size is None):
            raise ValueError("give target_scales and target_patch_size together (or neither)")
        if not generate_only and any(p is not None for p in (past_key_values, past_inputs_embeds, past_attention_mask, past_conv_values)):
            raise ValueError("streaming caches (past_*) need generate_only=True, as upstream")
        return super().forward(
            video, gazing_ratio, task_loss_requirement, target_scales, target_patch_size, gazing_info, temperature,
            generate_only, use_cache, past_key_values, past_inputs_embeds, past_attention_mask, past_conv_values, generator,
        )

    def _check_video(self, inputs) -> torch.Tensor:
        if isinstance(inputs, Mapping):
            if "video" not in inputs:
                raise ValueError(f"inputs must hold a 'video' tensor (B, T, 3, H, W); got keys {sorted(inputs)}")
            video = inputs["video"]
        else:
            video = getattr(inputs, "pixel_values", inputs)
        if not isinstance(video, torch.Tensor):
            raise ValueError(f"video must be a torch.Tensor (B, T, 3, H, W), got {type(video).__name__}")
        if video.dim() == 4:
            raise ValueError(
                f"video has shape {tuple(video.shape)}: expected 5 dims (B, T, 3, H, W); "
                "add the batch dim with video[None]"
            )
        if video.dim() != 5:
            raise ValueError(f"video must have shape (B, T, 3, H, W), got {tuple(video.shape)}")
        if video.shape[2] != 3:
            raise ValueError(f"video must have 3 (RGB) channels at dim 2, got shape {tuple(video.shape)}")
        if not video.is_floating_point():
            raise ValueError(f"video must be float (preprocessed with AutoGazeImageProcessor), got {video.dtype}")
        if video.shape[0] == 0 or video.shape[1] == 0:
            raise ValueError(f"video is empty: shape {tuple(video.shape)}")
        if video.shape[1] % self.frame_sampling_rate:
            raise ValueError(f"T={video.shape[1]} frames is not a multiple of temporal_patch_size {self.frame_sampling_rate}")
        if not torch.isfinite(video).all():
            raise ValueError("video contains NaN or inf values; check the decoding/preprocessing of the frames")
        param = next(self.parameters())
        if video.device != param.device:
            raise ValueError(f"video is on {video.device} but the model is on {param.device}; move one of them")
        return video.to(param.dtype)
