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

__all__ = [
    "discounted_advantages",
    "group_advantages",
    "grpo_advantages",
    "grpo_loss",
    "ntp_loss",
    "repeat_for_group",
    "task_loss_head_loss",
]
