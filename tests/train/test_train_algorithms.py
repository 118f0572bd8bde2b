"""Training losses (autogaze_fast.train.algorithms) against upstream's own algorithm code, plus behaviour.

Fixtures: tests/fixtures/upstream_train/algorithms.safetensors (+ meta.json: upstream commit, torch
version, every case's settings). They were made in a scratch venv (torch CPU) by loading upstream
NVlabs/AutoGaze's ``autogaze/algorithms/ntp.py`` and ``grpo.py`` by file path and calling
``NTP(...).loss`` / ``GRPO(...).loss`` and their ``__call__`` on seeded random inputs: log-probs
``-5 * U(0, 1)``; pads laid out per frame chunk as the gaze model emits them (valid tokens first, then
pads; some cases with an all-pad row, one with i.i.d. pads); rewards ``-3 * U(0, 1)`` per
reconstructed frame with ``traj_len_each_reward`` the cumulative gaze count through each
reconstructed frame, as upstream's MAE task computes it; ``task_losses`` / ``task_losses_mask`` as the
MAE task builds them (GRPO) or with a ones mask (NTP, as upstream's trainer). Gradients saved are of
``sum(weights * alg(...)['loss'])`` w.r.t. ``log_action_probs`` and ``task_loss_prediction``; GRPO cases
also keep ``preprocess_inputs``' group copies of a small batch. Cases span group sizes 1-5, batches
1-4, 1-3 rewards in any frame order, discounts 0.5-1. The generator is not committed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from autogaze_fast.train import (
    discounted_advantages,
    group_advantages,
    grpo_advantages,
    grpo_loss,
    ntp_loss,
    repeat_for_group,
    task_loss_head_loss,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "upstream_train"
DATA = load_file(str(FIXTURES / "algorithms.safetensors"))
META = json.loads((FIXTURES / "meta.json").read_text())
TOL = dict(atol=1e-5, rtol=1e-5)


def case(kind: str, i: int) -> dict:
    prefix = f"{kind}/{i}/"
    return {k[len(prefix):]: v for k, v in DATA.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# Parity with upstream
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("i", range(len(META["cases"]["ntp"])))
def test_ntp_matches_upstream(i):
    c, m = case("ntp", i), META["cases"]["ntp"][i]
    lp = c["log_probs"].clone().requires_grad_(True)
    pred = c["pred"].clone().requires_grad_(True)
    padded = c["padded"].bool()
    loss = ntp_loss(lp, padded)
    head = task_loss_head_loss(pred, c["task_losses"], torch.ones_like(c["task_losses"]), padded)
    torch.testing.assert_close(loss, c["ntp_loss"], **TOL)
    total = loss + head if m["optimize_task_loss_prediction"] else loss
    if m["optimize_task_loss_prediction"]:
        torch.testing.assert_close(head, c["task_loss_prediction_loss"], **TOL)
    (total * c["weights"]).sum().backward()
    torch.testing.assert_close(lp.grad, c["grad_log_probs"], **TOL)
    expected_pred_grad = c["grad_pred"] if m["optimize_task_loss_prediction"] else torch.zeros_like(pred)
    torch.testing.assert_close(pred.grad if pred.grad is not None else torch.zeros_like(pred), expected_pred_grad,
                               **TOL)


@pytest.mark.parametrize("i", range(len(META["cases"]["grpo"])))
def test_grpo_matches_upstream(i):
    c, m = case("grpo", i), META["cases"]["grpo"][i]
    lp = c["log_probs"].clone().requires_grad_(True)
    pred = c["pred"].clone().requires_grad_(True)
    padded = c["padded"].bool()
    loss = grpo_loss(lp, c["reward"], c["traj_len"], padded, m["G"], m["discount_factor"])
    torch.testing.assert_close(loss, c["grpo_loss"], **TOL)
    total = loss
    if m["optimize_task_loss_prediction"]:
        head = task_loss_head_loss(pred, c["task_losses"], c["task_losses_mask"], padded)
        torch.testing.assert_close(head, c["task_loss_prediction_loss"], **TOL)
        total = loss + head
    (total * c["weights"]).sum().backward()
    torch.testing.assert_close(lp.grad, c["grad_log_probs"], **TOL)
    if m["optimize_task_loss_prediction"]:
        torch.testing.assert_close(pred.grad, c["grad_pred"], **TOL)
    else:
        assert not c["grad_pred"].any()  # upstream only keeps the head in the graph with a zero loss
    # the gradient w.r.t. the log-probs is minus the per-step advantages (ratio form, on-policy)
    adv = grpo_advantages(c["reward"], c["traj_len"], padded, m["G"], m["discount_factor"])
    torch.testing.assert_close(-adv * c["weights"][:, None], c["grad_log_probs"], **TOL)


@pytest.mark.parametrize("i", range(len(META["cases"]["grpo"])))
def test_group_copies_match_upstream(i):
    c, m = case("grpo", i), META["cases"]["grpo"][i]
    assert torch.equal(repeat_for_group(c["group_input"], m["G"]), c["group_input_repeated"])
    names = [f"v{b}" for b in range(m["B"])]
    assert repeat_for_group(names, m["G"]) == m["group_names_repeated"]


def test_fixture_covers_the_promised_cases():
    grpo = META["cases"]["grpo"]
    assert {g["G"] for g in grpo} >= {1, 3, 4}
    assert any(g["all_pad_row"] is not None for g in grpo) and any(g["random_pads"] for g in grpo)
    assert len({len(g["recon_frames"]) for g in grpo}) >= 3
    assert len({g["discount_factor"] for g in grpo}) >= 3
    assert META["upstream_commit"] and (FIXTURES / "algorithms.safetensors").stat().st_size < 1_000_000


# ---------------------------------------------------------------------------------------------
# Behaviour
# ---------------------------------------------------------------------------------------------

def frame_pads(rows: int, counts: list[int], valid: list[list[int]]) -> torch.Tensor:
    """(rows, sum(counts)) pads: in frame f, row i has valid[i][f] valid tokens then pads."""
    return torch.cat([torch.arange(c)[None] >= torch.tensor([v[f] for v in valid])[:, None]
                      for f, c in enumerate(counts)], 1)


def test_all_pad_rows_give_zero_and_no_nan():
    padded = torch.ones(3, 6, dtype=torch.bool)
    lp = torch.full((3, 6), -math.inf, requires_grad=True)  # pads may hold anything, even -inf
    loss = ntp_loss(lp, padded)
    assert torch.equal(loss, torch.zeros(3))
    loss.sum().backward()
    assert torch.equal(lp.grad, torch.zeros(3, 6))

    lp2 = torch.full((4, 6), -math.inf, requires_grad=True)
    padded2 = torch.ones(4, 6, dtype=torch.bool)
    g = grpo_loss(lp2, torch.randn(4, 2), [3, 6], padded2, group_size=2)
    assert torch.equal(g, torch.zeros(4))
    g.sum().backward()
    assert torch.equal(lp2.grad, torch.zeros(4, 6))

    pred = torch.randn(3, 6, requires_grad=True)
    target = torch.full((3, 6), math.nan)
    h = task_loss_head_loss(pred, target, torch.ones(3, 6), padded)
    assert torch.equal(h, torch.zeros(3))
    h.sum().backward()
    assert torch.equal(pred.grad, torch.zeros(3, 6))


def test_one_all_pad_row_among_others_is_zero_and_others_finite():
    padded = frame_pads(3, [4, 4], [[2, 3], [0, 0], [4, 1]])
    lp = torch.where(padded, -math.inf, -torch.rand(3, 8)).requires_grad_(True)
    loss = ntp_loss(lp, padded)
    assert loss[1] == 0 and torch.isfinite(loss).all() and (loss[[0, 2]] > 0).all()
    loss.sum().backward()
    assert torch.isfinite(lp.grad).all() and not lp.grad[padded].any()


def test_ntp_normalises_by_batch_mean_length():
    padded = frame_pads(2, [3, 3], [[3, 3], [1, 0]])  # 6 and 1 valid steps: mean length 3.5
    lp = -torch.rand(2, 6)
    expected = -torch.where(padded, 0, lp).sum(-1) / (7 / 2 + 1e-6)
    torch.testing.assert_close(ntp_loss(lp, padded), expected)


def test_group_of_one_has_zero_advantage_and_loss():
    padded = frame_pads(3, [4, 4], [[2, 3], [4, 4], [1, 1]])
    lp = -torch.rand(3, 8, requires_grad=True)
    loss = grpo_loss(lp, torch.randn(3, 2), [4, 8], padded, group_size=1)
    assert torch.equal(loss, torch.zeros(3))
    assert not grpo_advantages(torch.randn(3, 2), [4, 8], padded, 1, 0.9).any()


@pytest.mark.parametrize("group_size,batch", [(2, 1), (4, 2), (5, 3)])
def test_advantages_sum_to_zero_per_group(group_size, batch):
    rewards = torch.randn(group_size * batch, dtype=torch.float64)
    adv = group_advantages(rewards, group_size)
    # copy-major layout: the group of input b is rows b, b + B, b + 2B, ...
    sums = adv.reshape(group_size, batch).sum(0)
    torch.testing.assert_close(sums, torch.zeros(batch, dtype=torch.float64), atol=1e-12, rtol=0)
    # discount 1, no pads, one reward at the end: every step of every row carries that advantage,
    # so per-step advantages also sum to zero over each group
    steps = grpo_advantages(rewards[:, None], [5], torch.zeros(group_size * batch, 5, dtype=torch.bool),
                            group_size, 1.0)
    torch.testing.assert_close(steps, adv[:, None].expand(-1, 5))


def test_discount_counts_valid_steps_back_from_each_reward():
    # frames of 3 gaze slots; row valid counts per frame: [2, 3]; rewards after frame 0 and frame 1
    valid = ~frame_pads(1, [3, 3], [[2, 3]])
    adv = torch.tensor([[1.0], [10.0]])  # (R, rows)
    out = discounted_advantages(adv, torch.tensor([3, 6]), valid, 0.5)
    # reward 0 (traj len 3): valid steps 0, 1 -> 0.5, 1; reward 1 (traj len 6): valid steps 0,1,3,4,5
    torch.testing.assert_close(out[0, 0], torch.tensor([0.5, 1, 0, 0, 0, 0]))
    torch.testing.assert_close(out[1, 0], 10 * torch.tensor([0.5 ** 4, 0.5 ** 3, 0, 0.25, 0.5, 1]))


def test_discount_zero_rewards_only_the_last_valid_step_before_each_reward():
    padded = frame_pads(2, [3, 3], [[2, 3], [1, 2]])
    rewards = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    adv = grpo_advantages(rewards, [3, 6], padded, 2, 0.0)
    assert torch.isfinite(adv).all()
    # group of 2 rows: advantages +/- half the difference; the last valid step of frame 0 is 1 / 0,
    # of frame 1 is 5 / 4
    expected = torch.zeros(2, 6)
    expected[0, 1], expected[1, 0] = -1.0, 1.0
    expected[0, 5], expected[1, 4] = -1.5, 1.5
    torch.testing.assert_close(adv, expected)


def test_traj_len_zero_and_tensor_forms_agree():
    padded = frame_pads(2, [4], [[3], [2]])
    rewards = torch.randn(2, 2)
    a = grpo_advantages(rewards, [0, 4], padded, 2, 0.9)
    b = grpo_advantages(rewards, torch.tensor([0, 4]), padded, 2, 0.9)
    torch.testing.assert_close(a, b)
    only_last = grpo_advantages(rewards[:, 1:], [4], padded, 2, 0.9)
    torch.testing.assert_close(a, only_last)  # a reward with no steps before it moves nothing


def test_task_loss_head_mask_and_pads():
    padded = frame_pads(2, [4], [[3], [4]])
    pred, target = torch.randn(2, 4), torch.rand(2, 4)
    mask = torch.tensor([[0, 0, 1, 1], [1, 0, 0, 1]], dtype=torch.bool)  # row 0's last slot is a pad
    m = mask & ~padded
    expected = ((pred - target) ** 2 * m).sum(-1) / (m.sum() / 2 + 1e-6)
    torch.testing.assert_close(task_loss_head_loss(pred, target, mask, padded), expected)
    torch.testing.assert_close(task_loss_head_loss(pred, target, mask.float(), padded), expected)


@pytest.mark.parametrize("call,match", [
    (lambda: ntp_loss(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.bool)), "shape"),
    (lambda: ntp_loss(torch.zeros(2, 3), torch.zeros(2, 3)), "bool"),
    (lambda: ntp_loss(torch.zeros(6), torch.zeros(6, dtype=torch.bool)), "2-D"),
    (lambda: ntp_loss(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.bool)), "floating"),
    (lambda: grpo_loss(torch.zeros(6, 4), torch.zeros(6, 1), [4], torch.zeros(6, 4, dtype=torch.bool), 4),
     "divide"),
    (lambda: grpo_loss(torch.zeros(4, 4), torch.zeros(4), [4], torch.zeros(4, 4, dtype=torch.bool), 2),
     "rewards"),
    (lambda: grpo_loss(torch.zeros(4, 4), torch.zeros(4, 2), [4], torch.zeros(4, 4, dtype=torch.bool), 2),
     "one integer per reward"),
    (lambda: grpo_loss(torch.zeros(4, 4), torch.zeros(4, 1), [5], torch.zeros(4, 4, dtype=torch.bool), 2),
     r"\[0, N=4\]"),
    (lambda: grpo_loss(torch.zeros(4, 4), torch.zeros(4, 1), [2.5], torch.zeros(4, 4, dtype=torch.bool), 2),
     "integer"),
    (lambda: grpo_loss(torch.zeros(4, 4), torch.zeros(4, 1), [2], torch.zeros(4, 4, dtype=torch.bool), 2, 1.5),
     "discount_factor"),
    (lambda: grpo_loss(torch.zeros(4, 4), torch.zeros(4, 1), [2], torch.zeros(4, 4, dtype=torch.bool), 0),
     "group_size"),
    (lambda: task_loss_head_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3),
                                 torch.zeros(2, 3, dtype=torch.bool)), "task_losses must have the shape"),
    (lambda: task_loss_head_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3),
                                 torch.zeros(2, 3, dtype=torch.bool)), "task_losses_mask must have the shape"),
    (lambda: group_advantages(torch.zeros(5), 2), "divide"),
    (lambda: repeat_for_group(torch.zeros(2), 0), "group_size"),
    (lambda: repeat_for_group((1, 2), 2), "tensor or a list"),
])
def test_bad_inputs_raise_clear_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
