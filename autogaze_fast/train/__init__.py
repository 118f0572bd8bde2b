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
from .task_rewards import TaskRewards, reconstruction_rewards, sample_frames_to_reconstruct

__all__ = [
    "TaskRewards",
    "discounted_advantages",
    "group_advantages",
    "grpo_advantages",
    "grpo_loss",
    "ntp_loss",
    "reconstruction_rewards",
    "repeat_for_group",
    "sample_frames_to_reconstruct",
    "task_loss_head_loss",
]
