"""The task-loss stop rule at its extremes (SPEC §4, step 5), for both implementations.

With a requirement every prediction meets, each frame's first step keeps only slot 0 (on a frame's
first step slot 0 never meets), every other slot of that step becomes eos, and the sequence is
finished: one real token per frame, padded to K. With a requirement no prediction meets, the stop
never fires and the gaze is the ratio-only gaze.
"""

from __future__ import annotations

import pytest
import torch
from conftest import FIXTURES
from safetensors.torch import load_file

from autogaze_fast import AutoGaze

CASES = load_file(str(FIXTURES / "gaze_cases.safetensors"))
IMPLS = ["reference", "fast"]


@pytest.fixture(autouse=True)
def _twins(torch_twins):
    """The fast model on its CPU torch twins."""


def gaze(model, video, **kwargs) -> dict:
    with torch.inference_mode():
        return model({"video": video}, generate_only=True, **kwargs)


@pytest.mark.parametrize("impl", IMPLS)
def test_requirement_everyone_meets_keeps_slot_zero_of_each_frames_first_step(impl):
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl=impl)
    k, n = model.config.decoder.num_multi_token_pred, model.num_vision_tokens_each_frame
    video = torch.cat([CASES["video"], CASES["video"].flip(-1)])[:, :3]
    free = gaze(model, video[:, :1], gazing_ratio=0.004)  # one token: frame 0's first greedy pick
    out = gaze(model, video, gazing_ratio=0.5, task_loss_requirement=1e9)
    assert out["num_gazing_each_frame"].tolist() == [k] * 3
    pads = out["if_padded_gazing"].view(2, 3, k)
    assert not pads[:, :, 0].any(), "slot 0 of a frame's first step never meets the requirement"
    assert pads[:, :, 1:].all(), "every other slot of that step meets it and becomes eos"
    first = out["gazing_pos"].view(2, 3, k)[:, :, 0]
    # frame 0's first pick is the ratio-only run's (same prompt); every pick is a valid token of its frame
    assert torch.equal(first[:, 0], free["gazing_pos"][:, 0])
    assert ((first >= n * torch.arange(3)) & (first < n * (torch.arange(3) + 1))).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_requirement_nobody_meets_changes_nothing(impl):
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl=impl)
    video = CASES["video"][:, :2]
    free = gaze(model, video, gazing_ratio=0.2)
    out = gaze(model, video, gazing_ratio=0.2, task_loss_requirement=-1e9)
    assert torch.equal(out["gazing_pos"], free["gazing_pos"])
    assert not out["if_padded_gazing"].any()
