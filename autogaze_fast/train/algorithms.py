"""Training losses as pure functions over plain tensors: NTP, GRPO and the task-loss head.

Shapes use ``B`` for the batch (``G * B`` once a GRPO batch holds ``G`` group copies), ``N`` for
the gaze-sequence length of the step (all frames' gaze tokens, pads included) and ``R`` for the
number of rewards (one per reconstructed frame). ``padded`` is the gaze model's ``if_padded_gazing``:
True where a position is padding and takes no loss.

Every loss is returned **per sequence**, shape ``(rows,)``; a training step adds the algorithm's loss
and the task-loss head's loss and takes the batch mean, as upstream's trainer does. The values and
gradients match upstream's ``autogaze.algorithms.NTP`` / ``GRPO`` (tests/train/test_train_algorithms.py);
unlike upstream, masked positions are dropped with ``torch.where``, so a ``-inf`` log-probability or a
NaN target at a pad cannot leak a NaN into the loss, and a discount of 0 is well defined.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "repeat_for_group",
    "group_advantages",
    "discounted_advantages",
    "grpo_advantages",
    "ntp_loss",
    "grpo_loss",
    "task_loss_head_loss",
]

# Added to the mean valid length before dividing, as upstream does, so an all-pad batch gives 0.
_LENGTH_EPS = 1e-6


def _check_pair(name: str, x: torch.Tensor, padded: torch.Tensor) -> None:
    """Raise a ValueError unless ``x`` is a floating (rows, N) tensor and ``padded`` a bool of its shape."""
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, N); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor; got {x.dtype}")
    if padded.shape != x.shape:
        raise ValueError(f"padded must have the shape of {name} {tuple(x.shape)}; got {tuple(padded.shape)}")
    if padded.dtype != torch.bool:
        raise ValueError(f"padded must be a bool tensor (True = pad, no loss); got {padded.dtype}")


def _mean_valid_length(mask: torch.Tensor) -> torch.Tensor:
    """Scalar: valid positions summed over the whole batch / rows (+1e-6), upstream's normaliser."""
    return mask.sum() / mask.shape[0] + _LENGTH_EPS


def repeat_for_group(x: torch.Tensor | list, group_size: int) -> torch.Tensor | list:
    """Stack ``group_size`` copies of a batch along dim 0, copy-major.

    Args:
        x: a tensor (B, ...) or a list of B items.
        group_size: G >= 1.

    Returns:
        (G * B, ...) (or a list of G * B items) where row ``g * B + b`` is a copy of row ``b``, the
        layout :func:`group_advantages` expects.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1; got {group_size}")
    if isinstance(x, torch.Tensor):
        if x.ndim == 0:
            raise ValueError("repeat_for_group needs a batch dimension; got a 0-d tensor")
        return x.repeat(group_size, *([1] * (x.ndim - 1)))
    if isinstance(x, list):
        return x * group_size
    raise ValueError(f"repeat_for_group takes a tensor or a list; got {type(x).__name__}")


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Rewards minus the mean of their group (no std normalisation, as upstream).

    Args:
        rewards: (G * B,) rewards laid out copy-major (row ``g * B + b`` is copy ``g`` of input ``b``).
        group_size: G; must divide the number of rows.

    Returns:
        (G * B,) advantages; they sum to zero over each group (all zero when G == 1).
    """
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D (G*B,); got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.shape[0] % group_size:
        raise ValueError(f"group_size ({group_size}) must be >= 1 and divide the number of rows ({rewards.shape[0]})")
    grouped = rewards.reshape(group_size, -1)
    return (grouped - grouped.mean(dim=0, keepdim=True)).reshape(-1)


def discounted_advantages(advantages: torch.Tensor, traj_len: torch.Tensor, valid: torch.Tensor,
                          discount_factor: float) -> torch.Tensor:
    """Spread one advantage per (reward, row) over the steps taken before that reward.

    A valid step ``t < traj_len[r]`` gets ``advantages[r, i] * discount_factor ** k``, ``k`` counting the
    valid steps after ``t`` and before the reward (so the last valid step before it gets the full
    advantage). Steps at or after ``traj_len[r]`` and padded steps get 0.

    Args:
        advantages: (R, rows) one advantage per reward and row.
        traj_len: (R,) integer trajectory length before each reward, each in [0, N].
        valid: (rows, N) bool, True where a step takes loss (``~padded``).
        discount_factor: in [0, 1].

    Returns:
        (R, rows, N) per-step advantages, in ``advantages``' dtype.
    """
    num_steps = valid.shape[1]
    before = torch.arange(num_steps, device=valid.device) < traj_len.to(valid.device)[:, None]  # (R, N)
    counted = valid[None] & before[:, None, :]  # (R, rows, N)
    steps_after = counted.flip(-1).cumsum(-1).flip(-1) - 1  # valid steps after t, up to the reward
    base = torch.tensor(discount_factor, dtype=advantages.dtype, device=advantages.device)
    factor = torch.where(counted, torch.pow(base, steps_after.clamp(min=0).to(advantages.dtype)), 0)
    return advantages[:, :, None] * factor


def grpo_advantages(rewards: torch.Tensor, traj_len_each_reward: torch.Tensor | Sequence[int], padded: torch.Tensor,
                    group_size: int, discount_factor: float) -> torch.Tensor:
    """Per-step GRPO advantages: group-mean baseline per reward, discounted back from each reward, summed.

    Args:
        rewards: (G * B, R) one reward per reconstructed frame (``-loss``), rows copy-major.
        traj_len_each_reward: (R,) ints: gaze steps taken before each reward (the same for every row).
        padded: (G * B, N) bool, True at pads.
        group_size: G.
        discount_factor: in [0, 1].

    Returns:
        (G * B, N) advantages in ``rewards``' dtype, zero at pads and after the last reward.
    """
    rewards, traj_len = _check_grpo_inputs(rewards, traj_len_each_reward, padded, group_size, discount_factor)
    per_reward = torch.stack([group_advantages(rewards[:, r], group_size) for r in range(rewards.shape[1])])
    return discounted_advantages(per_reward, traj_len, ~padded, discount_factor).sum(0)


def _check_grpo_inputs(rewards: torch.Tensor, traj_len_each_reward: torch.Tensor | Sequence[int],
                       padded: torch.Tensor, group_size: int, discount_factor: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate GRPO inputs; returns ``rewards`` and ``traj_len_each_reward`` as a (R,) long tensor."""
    if padded.ndim != 2 or padded.dtype != torch.bool:
        raise ValueError(f"padded must be a 2-D bool tensor (G*B, N); got {padded.dtype} {tuple(padded.shape)}")
    rows, num_steps = padded.shape
    if rewards.ndim != 2 or rewards.shape[0] != rows or not rewards.is_floating_point():
        raise ValueError(f"rewards must be a floating (G*B, R) tensor with G*B = {rows} rows (one column per "
                         f"reward); got {rewards.dtype} {tuple(rewards.shape)}")
    if not isinstance(group_size, int) or group_size < 1 or rows % group_size:
        raise ValueError(f"group_size ({group_size}) must be an int >= 1 that divides the number of rows ({rows}); "
                         "rows hold G copies of each input (see repeat_for_group)")
    if not 0.0 <= float(discount_factor) <= 1.0:
        raise ValueError(f"discount_factor must be in [0, 1]; got {discount_factor}")
    traj_len = torch.as_tensor(traj_len_each_reward, device=padded.device)
    if traj_len.ndim != 1 or traj_len.shape[0] != rewards.shape[1] or traj_len.is_floating_point():
        raise ValueError(f"traj_len_each_reward must hold one integer per reward ({rewards.shape[1]}); "
                         f"got {traj_len.dtype} {tuple(traj_len.shape)}")
    if traj_len.numel() and (traj_len.min() < 0 or traj_len.max() > num_steps):
        raise ValueError(f"traj_len_each_reward must lie in [0, N={num_steps}]; got {traj_len.tolist()}")
    return rewards, traj_len.long()


def ntp_loss(log_probs: torch.Tensor, padded: torch.Tensor) -> torch.Tensor:
    """Next-token-prediction loss on teacher-forced ground-truth gaze sequences.

    ``-sum_t log_probs[i, t]`` over the row's valid steps, divided by the batch's mean valid length
    (total valid steps / rows + 1e-6), as upstream's ``NTP.ntp_loss``. All-pad rows give 0.

    Args:
        log_probs: (B, N) log-probability of each ground-truth gaze token.
        padded: (B, N) bool, True at pads.

    Returns:
        (B,) loss per sequence.
    """
    _check_pair("log_probs", log_probs, padded)
    valid = ~padded
    total = -torch.where(valid, log_probs, 0).sum(-1)
    return total / _mean_valid_length(valid)


def grpo_loss(log_probs: torch.Tensor, rewards: torch.Tensor, traj_len_each_reward: torch.Tensor | Sequence[int],
              padded: torch.Tensor, group_size: int, discount_factor: float = 1.0) -> torch.Tensor:
    """GRPO policy loss in ratio form for on-policy rollouts.

    ``-sum_t exp(lp_t - lp_t.detach()) * A_t`` with ``A`` from :func:`grpo_advantages`: the ratio is 1 in
    value, so the gradient w.r.t. ``log_probs`` is ``-A``. Upstream has no clipping, KL or entropy term
    and no length normalisation here, and neither has this.

    Args:
        log_probs: (G * B, N) log-probabilities of the sampled gaze tokens, rows copy-major.
        rewards: (G * B, R) reward per reconstructed frame.
        traj_len_each_reward: (R,) ints, gaze steps taken before each reward.
        padded: (G * B, N) bool, True at pads.
        group_size: G.
        discount_factor: in [0, 1] (upstream's default config: 1).

    Returns:
        (G * B,) loss per sequence.
    """
    _check_pair("log_probs", log_probs, padded)
    advantages = grpo_advantages(rewards, traj_len_each_reward, padded, group_size, discount_factor)
    log_probs = torch.where(padded, 0, log_probs)  # a -inf at a pad would make a NaN gradient below
    ratio = torch.exp(log_probs - log_probs.detach())
    return -(ratio * advantages).sum(-1)


def task_loss_head_loss(predictions: torch.Tensor, task_losses: torch.Tensor, task_losses_mask: torch.Tensor,
                        padded: torch.Tensor) -> torch.Tensor:
    """Squared error of the task-loss-prediction head against the task's per-token losses.

    ``sum_t m_t (pred_t - target_t)^2`` with ``m = task_losses_mask * ~padded``, divided by the batch's
    mean of ``m`` per row (+1e-6), as upstream's ``task_loss_prediction_loss``. Rows with no masked-in
    token give 0.

    Args:
        predictions: (B, N) the gaze model's ``task_loss_prediction``.
        task_losses: (B, N) target loss per gaze token (the task's ``task_losses``).
        task_losses_mask: (B, N) bool or 0/1 float, where a target exists (``task_losses_mask``;
            all ones for NTP on ground-truth labels).
        padded: (B, N) bool, True at pads.

    Returns:
        (B,) loss per sequence.
    """
    _check_pair("predictions", predictions, padded)
    for name, t in (("task_losses", task_losses), ("task_losses_mask", task_losses_mask)):
        if t.shape != predictions.shape:
            raise ValueError(f"{name} must have the shape of predictions {tuple(predictions.shape)}; "
                             f"got {tuple(t.shape)}")
    mask = task_losses_mask.to(predictions.dtype) * (~padded).to(predictions.dtype)
    diff = torch.where(mask != 0, predictions - task_losses.to(predictions.dtype), 0)
    return (diff.pow(2) * mask).sum(-1) / _mean_valid_length(mask)
