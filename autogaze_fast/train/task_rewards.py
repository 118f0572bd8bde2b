"""From the reconstruction task's per-frame losses to what the algorithms consume.

The gazed MAE task reconstructs a few frames of each clip and scores each with a loss. This module
turns those losses into GRPO's rewards (``-loss`` per reconstructed frame, with the gaze-trajectory
length before each) and into the per-token targets of the task-loss-prediction head, as upstream's
``VideoMAEReconstruction`` does (tests/train/test_train_task_rewards.py checks it against upstream). It also
chooses the frames to reconstruct the way upstream does. It knows nothing of the MAE itself.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["TaskRewards", "sample_frames_to_reconstruct", "reconstruction_rewards"]


class TaskRewards(NamedTuple):
    """What the task hands to the algorithms (``R`` reconstructed frames, ``N`` gaze steps).

    rewards: (B, R) ``-loss`` of each reconstructed frame, detached.
    traj_len_each_reward: (R,) long, gaze steps up to and including each reconstructed frame's chunk.
    task_losses: (B, N) the frame's loss at each position of a reconstructed frame's chunk whose next
        slot is a pad or the chunk's end (the last gaze of the frame); 0 elsewhere. Not detached, as
        upstream: the trainer decides whether the task is trained through it.
    task_losses_mask: (B, N) float 0/1, where ``task_losses`` holds a target (pads included; the
        task-loss head loss masks pads itself).
    """

    rewards: torch.Tensor
    traj_len_each_reward: torch.Tensor
    task_losses: torch.Tensor
    task_losses_mask: torch.Tensor


def sample_frames_to_reconstruct(num_frames: int, recon_sample_rate: float,
                                 generator: torch.Generator | None = None, device: torch.device | str | None = None
                                 ) -> torch.Tensor:
    """Choose ``int(num_frames * recon_sample_rate)`` distinct frames in random order, as upstream.

    With ``generator=None`` this draws from torch's global CPU generator exactly as upstream's task
    does, so a seeded run picks the same frames.

    Returns:
        (R,) long frame indices (on ``device``).
    """
    count = int(num_frames * recon_sample_rate)
    if count < 1 or count > num_frames:
        raise ValueError(f"recon_sample_rate={recon_sample_rate} with {num_frames} frames reconstructs {count} "
                         f"frames; choose a rate in [1/{num_frames}, 1] so at least one frame is reconstructed")
    return torch.randperm(num_frames, generator=generator)[:count].to(device)


def reconstruction_rewards(frame_losses: torch.Tensor, frame_idx: torch.Tensor, num_gazing_each_frame: torch.Tensor,
                           padded: torch.Tensor) -> TaskRewards:
    """Rewards, trajectory lengths and per-token task losses from the per-frame reconstruction losses.

    Args:
        frame_losses: (B, R) loss of each reconstructed frame, column ``r`` for frame ``frame_idx[r]``.
        frame_idx: (R,) distinct indices of the reconstructed frames, in [0, T).
        num_gazing_each_frame: (T,) gaze slots of each frame's chunk (pads included), summing to N.
        padded: (B, N) bool, True at pads (the gaze model's ``if_padded_gazing``).

    Returns:
        :class:`TaskRewards`.
    """
    if frame_losses.ndim != 2 or not frame_losses.is_floating_point():
        raise ValueError(f"frame_losses must be a floating (B, R) tensor; got {frame_losses.dtype} "
                         f"{tuple(frame_losses.shape)}")
    if padded.ndim != 2 or padded.dtype != torch.bool or padded.shape[0] != frame_losses.shape[0]:
        raise ValueError(f"padded must be a bool (B, N) tensor with B = {frame_losses.shape[0]}; got "
                         f"{padded.dtype} {tuple(padded.shape)}")
    counts = torch.as_tensor(num_gazing_each_frame, device=padded.device)
    if counts.ndim != 1 or counts.is_floating_point() or int(counts.sum()) != padded.shape[1]:
        raise ValueError(f"num_gazing_each_frame must be (T,) integers summing to N = {padded.shape[1]}; "
                         f"got {counts.tolist()}")
    frame_idx = torch.as_tensor(frame_idx, device=padded.device)
    num_frames, num_rewards = counts.shape[0], frame_losses.shape[1]
    if frame_idx.ndim != 1 or frame_idx.shape[0] != num_rewards or frame_idx.is_floating_point():
        raise ValueError(f"frame_idx must hold one integer frame index per column of frame_losses ({num_rewards}); "
                         f"got {frame_idx.tolist()}")
    if num_rewards < 1:
        raise ValueError("frame_losses has no column: at least one frame must be reconstructed")
    if (frame_idx.min() < 0 or frame_idx.max() >= num_frames or frame_idx.unique().numel() < num_rewards):
        raise ValueError(f"frame_idx must be distinct frames in [0, {num_frames}); got {frame_idx.tolist()}")

    ends = counts.cumsum(0)
    traj_len = ends[frame_idx.long()]

    # position -> its frame; a position is the last gaze of its frame when the next slot is a pad or
    # the chunk ends there
    frame_of_pos = torch.repeat_interleave(torch.arange(num_frames, device=padded.device), counts)
    chunk_end = torch.zeros(padded.shape[1], dtype=torch.bool, device=padded.device)
    chunk_end[ends[counts > 0] - 1] = True
    next_padded = torch.cat([padded[:, 1:], padded.new_ones(padded.shape[0], 1)], 1)
    last_gaze = next_padded | chunk_end

    column = torch.full((num_frames,), -1, dtype=torch.long, device=padded.device)
    column[frame_idx.long()] = torch.arange(num_rewards, device=padded.device)
    col_of_pos = column[frame_of_pos]  # (N,) reward column of the position's frame, -1 if not reconstructed
    mask = last_gaze & (col_of_pos >= 0)
    per_pos_loss = frame_losses[:, col_of_pos.clamp(min=0)]  # (B, N)
    task_losses = torch.where(mask, per_pos_loss, 0)
    return TaskRewards(-frame_losses.detach(), traj_len.long(), task_losses, mask.to(frame_losses.dtype))
