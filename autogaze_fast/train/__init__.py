"""Training AutoGaze: NTP pre-training and GRPO against the gazed MAE reconstruction task."""

from .algorithms import (
    discounted_advantages,
    group_advantages,
    grpo_advantages,
    grpo_loss,
    ntp_loss,
    repeat_for_group,
    task_loss_head_loss,
)
from .mae import GazedMAE, MAEPrediction
from .mae_config import MAEConfig
from .mae_loading import load_mae, load_task_weights, mae_video_processor
from .mae_loss import PixelTransform, ReconstructionLoss, SiglipFeatureLoss
from .mae_task import MAEReconstructionTask, MAETaskOutput
from .steps import Rollout, StepResult, TrainBatch, grpo_step, ntp_step
from .task_rewards import TaskRewards, reconstruction_rewards, sample_frames_to_reconstruct

__all__ = [
    "GazedMAE",
    "MAEConfig",
    "MAEPrediction",
    "MAEReconstructionTask",
    "MAETaskOutput",
    "PixelTransform",
    "ReconstructionLoss",
    "Rollout",
    "StepResult",
    "SiglipFeatureLoss",
    "TaskRewards",
    "TrainBatch",
    "discounted_advantages",
    "group_advantages",
    "grpo_advantages",
    "grpo_loss",
    "grpo_step",
    "load_mae",
    "load_task_weights",
    "mae_video_processor",
    "ntp_loss",
    "ntp_step",
    "reconstruction_rewards",
    "repeat_for_group",
    "sample_frames_to_reconstruct",
    "task_loss_head_loss",
]
