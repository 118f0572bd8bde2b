"""Sampling (train mode, temperature) and training (teacher-forced gradients) for BOTH implementations.

The model is the ``tiny_k10`` fixture with its constant parameters made non-trivial (RMSNorm and
LayerNorm weights ``1 + 0.3·N``, every bias ``+ 0.1·N``), so that a norm read from the wrong
place or a dropped bias changes the result. Oracles: the reference implementation (fast sampling
draws from the same distributions in the same order, so with the same generator it must pick the
same tokens; fast gradients must equal the reference's), greedy generation (sampling at a
vanishing temperature), and the sampling rules themselves (distinct tokens within a frame, the
budget, reproducibility under a seeded generator).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FIXTURES
from safetensors.torch import load_file

from autogaze_fast import AutoGaze

IMPLS = ["reference", "fast"]
CASES = load_file(str(FIXTURES / "gaze_cases.safetensors"))
META = json.loads((FIXTURES / "meta.json").read_text())
N = 265


@pytest.fixture(autouse=True)
def _twins(torch_twins):
    """The fast model on its CPU torch twins (one test below opts into the Triton interpreter)."""


def perturbed(impl: str, seed: int = 0) -> AutoGaze:
    """tiny_k10 with non-trivial norm weights and biases (same values for either impl)."""
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl=impl)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() == 1 and name.endswith("weight"):
                p.copy_(1 + 0.3 * noise)
            elif name.endswith("bias"):
                p.add_(0.1 * noise)
    return model


def batch_video() -> torch.Tensor:
    """The fixture clip and its mirror: a batch of 2 whose sequences differ."""
    return torch.cat([CASES["video"], CASES["video"].flip(-1)])


def sample(model: AutoGaze, seed: int, temperature: float, **kwargs) -> dict:
    model.train()
    try:
        return model({"video": kwargs.pop("video", batch_video())}, temperature=temperature,
                     generator=torch.Generator().manual_seed(seed), **kwargs)
    finally:
        model.eval()


def frames_of(out: dict):
    """Yield (t, ids (B, n_t) within-frame ids, pads (B, n_t)) per frame."""
    counts = out["num_gazing_each_frame"].tolist()
    for t, (pos, pad) in enumerate(zip(out["gazing_pos"].split(counts, 1), out["if_padded_gazing"].split(counts, 1))):
        yield t, pos - N * t, pad.bool()


# ------------------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_fast_sampling_equals_reference_with_the_same_generator(temperature):
    """Both impls draw slot by slot from the same (masked, top-k, temperature-scaled) distributions in
    the same order, so one seeded generator gives the same gaze, pads and counts."""
    outs = {impl: sample(perturbed(impl), 3, temperature, gazing_ratio=0.3, generate_only=True) for impl in IMPLS}
    a, b = outs["reference"], outs["fast"]
    assert b["num_gazing_each_frame"].tolist() == a["num_gazing_each_frame"].tolist()
    assert torch.equal(b["if_padded_gazing"], a["if_padded_gazing"])
    assert torch.equal(b["gazing_pos"], a["gazing_pos"])


def test_fast_sampling_with_task_loss_stop_equals_reference():
    """Sampling with a task-loss requirement: sequences of the batch stop at different steps."""
    kwargs = dict(video=batch_video()[:, :2], gazing_ratio=0.5,
                  task_loss_requirement=META["batch2_k10_task_loss_requirement"])
    outs = {impl: sample(perturbed(impl), 5, 1.0, **kwargs) for impl in IMPLS}
    a, b = outs["reference"], outs["fast"]
    assert torch.equal(b["gazing_pos"], a["gazing_pos"])
    assert torch.equal(b["if_padded_gazing"], a["if_padded_gazing"])
    torch.testing.assert_close(b["log_action_probs"], a["log_action_probs"], atol=1e-5, rtol=0)
    torch.testing.assert_close(b["task_loss_prediction"], a["task_loss_prediction"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_sampling_never_picks_a_token_twice_in_a_frame(impl):
    """A hot temperature makes repeats likely if any slot or step forgot an earlier pick; every frame
    must still hold budget-many distinct in-range ids, and the seeded run must be reproducible."""
    model = perturbed(impl)
    video = batch_video()[:, :2]
    out = sample(model, 7, 5.0, video=video, gazing_ratio=0.3, generate_only=True)
    budget = int(0.3 * N)
    assert out["num_gazing_each_frame"].tolist() == [budget] * 2
    assert not out["if_padded_gazing"].any()
    for t, ids, _ in frames_of(out):
        for row in ids.tolist():
            assert all(0 <= i < N for i in row), (t, row)
            assert len(set(row)) == len(row), f"frame {t}: a token was picked twice"
    again = sample(model, 7, 5.0, video=video, gazing_ratio=0.3, generate_only=True)
    assert torch.equal(again["gazing_pos"], out["gazing_pos"])
    other = sample(model, 8, 5.0, video=video, gazing_ratio=0.3, generate_only=True)
    assert not torch.equal(other["gazing_pos"], out["gazing_pos"]), "a different seed must sample differently"


@pytest.mark.parametrize("impl", IMPLS)
def test_sampling_at_a_vanishing_temperature_is_greedy(impl):
    """softmax(scores / T) tends to the argmax as T → 0: sampled gaze equals eval-mode (greedy) gaze."""
    model = perturbed(impl)
    with torch.no_grad():
        greedy = model({"video": batch_video()}, gazing_ratio=0.2, generate_only=True)
    cold = sample(model, 11, 1e-4, gazing_ratio=0.2, generate_only=True)
    assert torch.equal(cold["gazing_pos"], greedy["gazing_pos"])


# ------------------------------------------------------------------------------------------ training
def teacher_forced_loss(out: dict) -> torch.Tensor:
    real = (~out["if_padded_gazing"]).float()
    return -(out["log_action_probs"] * real).sum() / real.sum() + (out["task_loss_prediction"] ** 2 * real).mean()


@pytest.mark.parametrize("impl", IMPLS)
def test_sampled_rollout_gives_finite_gradients_on_every_parameter(impl):
    """A train-mode forward (sampled gaze, then the teacher-forced pass) reaches every parameter."""
    model = perturbed(impl)
    out = sample(model, 0, 1.0, video=CASES["video"][:, :2], gazing_ratio=0.1)
    model.zero_grad()
    teacher_forced_loss(out).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def _scored_pair(video, gaze, device=torch.device("cpu")):
    """Reference (CPU) and fast (on ``device``) teacher-forced outputs; the fast one brought back to the CPU."""
    ref, fast = perturbed("reference"), perturbed("fast").to(device)
    out = fast({"video": video.to(device)}, gazing_info={k: v.to(device) for k, v in gaze.items()})
    return (ref, ref({"video": video}, gazing_info=gaze)), (fast, {k: v.cpu() for k, v in out.items()
                                                                    if isinstance(v, torch.Tensor)})


def test_teacher_forced_scores_and_gradients_equal_reference_on_sampled_gaze_with_pads():
    """Batch of 2, sampled gaze with task-loss pads (pads are masked keys in the teacher-forced pass):
    fast log-probs, task-loss predictions and every parameter's gradient equal the reference's."""
    video = batch_video()[:, :3]
    gaze = sample(perturbed("reference"), 5, 1.0, video=video, gazing_ratio=0.5, generate_only=True,
                  task_loss_requirement=META["batch2_k10_task_loss_requirement"])
    assert gaze["if_padded_gazing"].any(), "the case must hold pads"
    gaze = {k: gaze[k] for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")}
    (ref, a), (fast, b) = _scored_pair(video, gaze)
    real = ~gaze["if_padded_gazing"]
    torch.testing.assert_close(b["log_action_probs"][real], a["log_action_probs"][real], atol=1e-5, rtol=0)
    torch.testing.assert_close(b["task_loss_prediction"][real], a["task_loss_prediction"][real], atol=1e-5, rtol=0)
    teacher_forced_loss(a).backward()
    teacher_forced_loss(b).backward()
    for (name, p_ref), (_, p_fast) in zip(ref.named_parameters(), fast.named_parameters()):
        torch.testing.assert_close(p_fast.grad, p_ref.grad, atol=1e-6, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_teacher_forced_through_triton_kernels_equals_reference(triton_kernels):
    """The fast teacher-forced pass with its Triton prefill attention (interpreter on CPU, natively on
    CUDA): scores and gradients equal the reference's (one frame: the interpreter is slow)."""
    video = CASES["video"][:, :1]
    gaze = {k: CASES["stop_k10." + k] for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")}
    n = int(gaze["num_gazing_each_frame"][0])
    gaze = {"gazing_pos": gaze["gazing_pos"][:, :n], "if_padded_gazing": gaze["if_padded_gazing"][:, :n].bool(),
            "num_gazing_each_frame": gaze["num_gazing_each_frame"][:1]}
    (ref, a), (fast, b) = _scored_pair(video, gaze, triton_kernels)
    torch.testing.assert_close(b["log_action_probs"], a["log_action_probs"], atol=1e-5, rtol=0)
    teacher_forced_loss(a).backward()
    teacher_forced_loss(b).backward()
    for (name, p_ref), (_, p_fast) in zip(ref.named_parameters(), fast.named_parameters()):
        torch.testing.assert_close(p_fast.grad.cpu(), p_ref.grad, atol=1e-6, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_sampling_warpers_scale_by_temperature_then_keep_each_slots_top_k():
    """The warpers both impls share: scores / T, then every slot keeps exactly its top_k best."""
    from autogaze_fast.reference.generation import warp_for_sampling

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 10, 266, generator=g)
    scores[0, :, :5] = float("-inf")  # already masked tokens stay masked
    warped = warp_for_sampling(scores, 2.5, 50)
    kept = torch.isfinite(warped)
    assert kept.sum(-1).eq(50).all()
    top = scores.topk(50, dim=-1).indices
    assert kept.gather(-1, top).all(), "the kept tokens must be each slot's 50 best"
    torch.testing.assert_close(warped[kept], (scores / 2.5)[kept], atol=0, rtol=0)
    torch.testing.assert_close(warp_for_sampling(scores, 0.5, 0), scores / 0.5, atol=0, rtol=0)
