"""Training AutoGaze: NTP pre-training and GRPO against the gazed MAE reconstruction task."""

from autogaze_fast.train.algorithms import (
    discounted_advantages,
    group_advantages,
    grpo_advantages,
    grpo_loss,
    ntp_loss,
    repeat_for_group,
    task_loss_head_loss,
)
from autogaze_fast.train.mae.config import MAEConfig
from autogaze_fast.train.mae.loading import load_mae, load_task_weights, mae_video_processor
from autogaze_fast.train.mae.loss import PixelTransform, ReconstructionLoss, SiglipFeatureLoss
from autogaze_fast.train.mae.model import GazedMAE, MAEPrediction
from autogaze_fast.train.mae.presets import MAE_PRESETS, random_mae
from autogaze_fast.train.mae.task import MAEReconstructionTask, MAETaskOutput
from autogaze_fast.train.steps import Rollout, StepResult, TrainBatch, grpo_step, ntp_step
from autogaze_fast.train.synthetic_data import heuristic_gaze_label, make_training_data
from autogaze_fast.train.task_rewards import TaskRewards, reconstruction_rewards, sample_frames_to_reconstruct

__all__ = [
    "GazedMAE",
    "MAE_PRESETS",
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
    "heuristic_gaze_label",
    "load_mae",
    "load_task_weights",
    "mae_video_processor",
    "make_training_data",
    "ntp_loss",
    "ntp_step",
    "random_mae",
    "reconstruction_rewards",
    "repeat_for_group",
    "sample_frames_to_reconstruct",
    "task_loss_head_loss",
]
