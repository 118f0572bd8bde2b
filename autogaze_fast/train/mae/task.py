"""The gazed MAE reconstruction task: gaze → reconstructed frames → per-frame losses → rewards.

Mirrors upstream's ``VideoMAEReconstruction`` (``forward_output`` + ``loss`` + ``reward``): choose
the frames to reconstruct (``recon_sample_rate``, or given), run the gazed MAE, score each
reconstructed frame (:class:`~.mae_loss.ReconstructionLoss`) and hand GRPO its rewards and the
task-loss head its per-token targets (:func:`~.task_rewards.reconstruction_rewards`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autogaze_fast.train.mae.loading import load_mae, mae_video_processor
from autogaze_fast.train.mae.loss import PixelTransform, ReconstructionLoss, SiglipFeatureLoss
from autogaze_fast.train.mae.model import GazedMAE
from autogaze_fast.train.mae.presets import preset_mae_processor, random_mae
from autogaze_fast.train.task_rewards import TaskRewards, reconstruction_rewards, sample_frames_to_reconstruct

__all__ = ["MAEReconstructionTask", "MAETaskOutput"]


@dataclass
class MAETaskOutput:
    """One task forward (B videos, R reconstructed frames).

    Attributes:
        frame_losses: (B, R) loss of each reconstructed frame (differentiable).
        loss: (B,) their mean per video (upstream's ``reconstruction_loss``).
        reconstruction: (B, R, c, S, S) the reconstructed frames (MAE-normalised space).
        frame_idx: (R,) the reconstructed frames.
        rewards: :class:`~.task_rewards.TaskRewards` (rewards, trajectory lengths, task-loss targets + mask).
    """

    frame_losses: torch.Tensor
    loss: torch.Tensor
    reconstruction: torch.Tensor
    frame_idx: torch.Tensor
    rewards: TaskRewards


def _get(gaze: Any, name: str) -> Any:
    if isinstance(gaze, Mapping):
        if name not in gaze:
            raise ValueError(f"gaze output has no '{name}'; pass AutoGaze's output (gazing_pos, if_padded_gazing, "
                             "num_gazing_each_frame)")
        return gaze[name]
    if not hasattr(gaze, name):
        raise ValueError(f"gaze output has no '{name}'; pass AutoGaze's output")
    return getattr(gaze, name)


class MAEReconstructionTask(nn.Module):
    """Gazed MAE + reconstruction loss + reward shaping (upstream's task, minus visualisation).

    Args:
        mae: the :class:`~.mae.GazedMAE`.
        loss: its :class:`~.mae_loss.ReconstructionLoss`.
        recon_sample_rate: fraction of the T frames reconstructed when no ``frame_idx`` is given.
    """

    def __init__(self, mae: GazedMAE, loss: ReconstructionLoss, recon_sample_rate: float = 1.0):
        super().__init__()
        self.mae = mae
        self.loss_fn = loss
        self.recon_sample_rate = float(recon_sample_rate)

    @classmethod
    def from_pretrained(cls, recon_model: str | os.PathLike, *, scales: str, recon_sample_rate: float = 1.0,
                        siglip2_model: str | os.PathLike | None = None, task_weights: str | os.PathLike | None = None,
                        init_new_embeddings: bool = False, impl: str | None = None, **recon_model_config: Any
                        ) -> MAEReconstructionTask:
        """Upstream's ``VideoMAEReconstruction(recon_model, recon_model_config, scales, recon_sample_rate)``.

        ``siglip2_model`` is ``recon_model_config.siglip2_loss_config.model`` (needed when
        ``loss_type`` has ``siglip2``); ``task_weights`` is upstream's ``videomae.pt``.
        """
        mae = load_mae(recon_model, task_weights=task_weights, init_new_embeddings=init_new_embeddings, impl=impl,
                       scales=scales, **recon_model_config)
        return cls._with_loss(mae, mae_video_processor(recon_model, mae.config.scales[-1]), siglip2_model, impl,
                              recon_sample_rate)

    @classmethod
    def from_preset(cls, name: str, *, scales: str, seed: int = 0, recon_sample_rate: float = 1.0,
                    siglip2_model: str | os.PathLike | None = None, impl: str | None = None,
                    **recon_model_config: Any) -> MAEReconstructionTask:
        """The task over a seeded random MAE of preset ``name`` (``tiny`` / ``videomae-shape``,
        :mod:`~.presets`), preprocessed by :func:`~.presets.preset_mae_processor`."""
        mae = random_mae(name, seed, impl=impl, scales=scales, **recon_model_config)
        return cls._with_loss(mae, preset_mae_processor(mae.config.scales[-1]), siglip2_model, impl,
                              recon_sample_rate)

    @classmethod
    def _with_loss(cls, mae: GazedMAE, processor, siglip2_model, impl: str | None,
                   recon_sample_rate: float) -> MAEReconstructionTask:
        siglip = None
        if "siglip2" in mae.config.loss_type:
            if siglip2_model is None:
                raise ValueError("loss_type has 'siglip2': pass siglip2_model=<SigLIP checkpoint dir or hub id> "
                                 "(upstream's recon_model_config.siglip2_loss_config.model)")
            source = PixelTransform.from_processor(processor)
            siglip = SiglipFeatureLoss.from_pretrained(siglip2_model, mae.config, source, impl=impl)
        return cls(mae, ReconstructionLoss(mae.config, siglip), recon_sample_rate)

    def forward(self, video: torch.Tensor, gaze: Any, frame_idx: Any | None = None,
                generator: torch.Generator | None = None) -> MAETaskOutput:
        """Reconstruct, score and reward.

        Args:
            video: (B, T, c, S, S) the MAE-preprocessed clip (upstream's ``video_for_task``).
            gaze: AutoGaze's output with ``gazing_pos``, ``if_padded_gazing``, ``num_gazing_each_frame``
                over this MAE's scales and patch size.
            frame_idx: (R,) frames to reconstruct; ``None`` draws ``int(T · recon_sample_rate)`` of
                them (from torch's global RNG unless ``generator`` is given, as upstream).
        """
        self._check_gaze_matches(gaze)
        if frame_idx is None:
            frame_idx = sample_frames_to_reconstruct(video.shape[1], self.recon_sample_rate, generator, video.device)
        pred = self.mae(video, gaze, frame_idx)
        target = video[:, pred.frame_idx].to(pred.reconstruction.dtype)
        frame_losses = self.loss_fn(pred.reconstruction, target)
        padded = torch.as_tensor(_get(gaze, "if_padded_gazing"), device=frame_losses.device).bool()
        counts = torch.as_tensor(_get(gaze, "num_gazing_each_frame"), device=frame_losses.device)
        rewards = reconstruction_rewards(frame_losses, pred.frame_idx, counts, padded)
        return MAETaskOutput(frame_losses, frame_losses.mean(dim=-1), pred.reconstruction, pred.frame_idx, rewards)

    def _check_gaze_matches(self, gaze: Any) -> None:
        """Upstream's two assertions, when the gaze output carries the fields: same token layout, no frame skipping."""
        cfg = self.mae.config
        tokens = gaze.get("num_vision_tokens_each_frame") if isinstance(gaze, Mapping) else \
            getattr(gaze, "num_vision_tokens_each_frame", None)
        if tokens is not None and int(tokens) != cfg.tokens_per_frame:
            raise ValueError(f"the gaze has {int(tokens)} tokens per frame but the MAE's scales {cfg.scales} at patch "
                             f"{cfg.patch_size} give {cfg.tokens_per_frame}; gaze with target_scales={cfg.scales} and "
                             f"target_patch_size={cfg.patch_size}")
        rate = gaze.get("frame_sampling_rate") if isinstance(gaze, Mapping) else getattr(gaze, "frame_sampling_rate", None)
        if rate is not None and int(rate) != 1:
            raise ValueError(f"the gaze skipped frames (frame_sampling_rate={rate}); the MAE task needs a gaze on every "
                             "frame (frame_sampling_rate=1), as upstream")
