"""Task side of training (autogaze_fast.train.task_rewards) against upstream's MAE task code.

Fixture: tests/fixtures/upstream_train/task_rewards.safetensors (settings in meta.json,
``task_rewards_cases``). Made in a scratch venv by loading upstream NVlabs/AutoGaze's
``autogaze/tasks/video_mae_reconstruction/task_video_mae_reconstruction.py`` by file path (its
transformers / omegaconf / sibling-module imports stubbed, unused on this path) and calling
``VideoMAEReconstruction.forward_output``, ``loss`` and ``reward`` with the MAE replaced by a fake
whose ``loss_each_reconstruction_frame`` is ``loss_table[:, frame_idx]``. Frames were either given or,
after ``torch.manual_seed(seed)``, chosen by upstream's own sampling. Pads are laid out per frame
chunk (valid first), with an all-pad row or a fully valid frame in some cases. The generator is not
committed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from autogaze_fast.train import grpo_loss, task_loss_head_loss
from autogaze_fast.train.task_rewards import reconstruction_rewards, sample_frames_to_reconstruct

FIXTURES = Path(__file__).parents[1] / "fixtures" / "upstream_train"
DATA = load_file(str(FIXTURES / "task_rewards.safetensors"))
CASES = json.loads((FIXTURES / "meta.json").read_text())["task_rewards_cases"]


def case(i: int) -> dict:
    prefix = f"task/{i}/"
    return {k[len(prefix):]: v for k, v in DATA.items() if k.startswith(prefix)}


@pytest.mark.parametrize("i", range(len(CASES)))
def test_matches_upstream_task(i):
    c, m = case(i), CASES[i]
    if m["frame_idx_given"] is None:
        torch.manual_seed(m["seed"])
        frame_idx = sample_frames_to_reconstruct(len(m["counts"]), m["recon_sample_rate"])
        assert torch.equal(frame_idx, c["frame_idx"])  # the same frames upstream's task chose
    else:
        frame_idx = torch.tensor(m["frame_idx_given"])
    out = reconstruction_rewards(c["loss_table"][:, frame_idx], frame_idx, c["num_gazing_each_frame"],
                                 c["padded"].bool())
    torch.testing.assert_close(out.rewards, c["reward"], atol=0, rtol=0)
    assert torch.equal(out.traj_len_each_reward, c["traj_len_each_reward"])
    torch.testing.assert_close(out.task_losses, c["task_losses"], atol=0, rtol=0)
    torch.testing.assert_close(out.task_losses_mask, c["task_losses_mask"], atol=0, rtol=0)


def test_outputs_feed_the_losses():
    c = case(0)
    padded = c["padded"].bool()
    frame_losses = c["frame_losses"].repeat(2, 1)  # a group of 2 copies
    out = reconstruction_rewards(frame_losses, c["frame_idx"], c["num_gazing_each_frame"], padded.repeat(2, 1))
    lp = -torch.rand(padded.shape[0] * 2, padded.shape[1])
    loss = grpo_loss(lp, out.rewards, out.traj_len_each_reward, padded.repeat(2, 1), group_size=2)
    assert torch.equal(loss, torch.zeros_like(loss))  # identical copies: no advantage
    head = task_loss_head_loss(torch.zeros_like(lp), out.task_losses, out.task_losses_mask, padded.repeat(2, 1))
    assert torch.isfinite(head).all() and (head >= 0).all()


def test_rewards_are_detached_and_task_losses_keep_the_graph():
    frame_losses = torch.rand(2, 1, requires_grad=True)
    out = reconstruction_rewards(frame_losses, torch.tensor([1]), torch.tensor([2, 3]),
                                 torch.tensor([[False, True, False, False, True], [False, False, False, False, False]]))
    assert not out.rewards.requires_grad and out.task_losses.requires_grad
    # frame 1 is slots 2..4: row 0's last gaze is slot 3 (slot 4 is a pad, whose next is the chunk end),
    # row 1's is slot 4 (chunk end)
    assert out.task_losses_mask.tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 0, 1]]
    assert out.traj_len_each_reward.tolist() == [5]


@pytest.mark.parametrize("call,match", [
    (lambda: sample_frames_to_reconstruct(16, 0.05), "at least one frame"),
    (lambda: reconstruction_rewards(torch.rand(2, 1), torch.tensor([0]), torch.tensor([2, 2]),
                                    torch.zeros(2, 5, dtype=torch.bool)), "summing to N = 5"),
    (lambda: reconstruction_rewards(torch.rand(2, 2), torch.tensor([0, 0]), torch.tensor([2, 2]),
                                    torch.zeros(2, 4, dtype=torch.bool)), "distinct"),
    (lambda: reconstruction_rewards(torch.rand(2, 1), torch.tensor([2]), torch.tensor([2, 2]),
                                    torch.zeros(2, 4, dtype=torch.bool)), r"\[0, 2\)"),
    (lambda: reconstruction_rewards(torch.rand(2, 2), torch.tensor([0]), torch.tensor([2, 2]),
                                    torch.zeros(2, 4, dtype=torch.bool)), "one integer frame index per column"),
    (lambda: reconstruction_rewards(torch.rand(2, 0), torch.tensor([], dtype=torch.long), torch.tensor([2, 2]),
                                    torch.zeros(2, 4, dtype=torch.bool)), "at least one frame"),
    (lambda: reconstruction_rewards(torch.rand(3, 1), torch.tensor([0]), torch.tensor([2, 2]),
                                    torch.zeros(2, 4, dtype=torch.bool)), "B = 3"),
])
def test_bad_inputs_raise_clear_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
