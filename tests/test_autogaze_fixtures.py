"""AutoGaze against upstream's golden outputs (tests/fixtures/upstream, produced by NVlabs/AutoGaze).

Every case runs for every implementation that exists; gaze positions, padding, counts and masks
must be exactly equal, log-probabilities and task-loss predictions within 1e-4.
"""

import json

import pytest
import torch
from conftest import FIXTURES
from safetensors.torch import load_file

from autogaze_fast import AutoGaze

IMPLS = ["reference", "fast"]
META = json.loads((FIXTURES / "meta.json").read_text())
CASES = load_file(str(FIXTURES / "gaze_cases.safetensors"))
ANYRES = load_file(str(FIXTURES / "anyres_cases.safetensors"))


@pytest.fixture(scope="module", params=IMPLS)
def models(request):
    """Both implementations; the fast one on its CPU torch twins here (the Triton kernels through the
    interpreter are exercised in test_fast_autogaze.py and test_sampling_training.py)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "0")
        yield {
            name: AutoGaze.from_pretrained(FIXTURES / name, impl=request.param)
            for name in ("tiny_k10", "tiny_k1")
        }


def assert_gaze_equal(out, expected, prefix=""):
    pos, pads, counts = (expected[prefix + k] for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame"))
    assert out["num_gazing_each_frame"].tolist() == counts.tolist()
    assert torch.equal(out["if_padded_gazing"], pads.bool())
    assert torch.equal(out["gazing_pos"], pos)
    i = 0
    while prefix + f"gazing_mask_{i}" in expected:
        assert torch.equal(out["gazing_mask"][i], expected[prefix + f"gazing_mask_{i}"]), f"mask of scale {i}"
        i += 1
    assert i == len(out["gazing_mask"])


def assert_scores_close(out, expected, prefix):
    real = ~out["if_padded_gazing"]
    for key in ("log_action_probs", "task_loss_prediction"):
        got, want = out[key], expected[prefix + key]
        assert got.shape == want.shape
        torch.testing.assert_close(got[real], want[real], atol=1e-4, rtol=0)


def test_ratio_k10(models):
    out = models["tiny_k10"]({"video": CASES["video"]}, gazing_ratio=0.75, generate_only=True)
    assert_gaze_equal(out, CASES, "ratio_k10.")
    assert out["log_action_probs"] is None


def test_stop_k10_with_log_probs(models):
    out = models["tiny_k10"]({"video": CASES["video"]}, gazing_ratio=0.5,
                             task_loss_requirement=META["stop_k10_task_loss_requirement"])
    assert_gaze_equal(out, CASES, "stop_k10.")
    assert_scores_close(out, CASES, "stop_k10.")


def test_stop_k1(models):
    out = models["tiny_k1"]({"video": CASES["video"]}, gazing_ratio=0.3,
                            task_loss_requirement=META["stop_k1_task_loss_requirement"])
    assert_gaze_equal(out, CASES, "stop_k1.")
    assert_scores_close(out, CASES, "stop_k1.")


def test_batch2_k10_sequences_stop_at_different_steps(models):
    video = torch.cat([CASES["video"], CASES["video"].flip(-1)])
    out = models["tiny_k10"]({"video": video}, gazing_ratio=0.5,
                             task_loss_requirement=META["batch2_k10_task_loss_requirement"])
    assert_gaze_equal(out, CASES, "batch2_k10.")
    assert_scores_close(out, CASES, "batch2_k10.")
    assert out["if_padded_gazing"].any(), "the case must exercise padding"


def test_stream_k10_equals_upstream_and_whole_clip(models):
    model, video = models["tiny_k10"], CASES["video"]
    n = model.num_vision_tokens_each_frame
    state = dict(past_key_values=None, past_inputs_embeds=None, past_attention_mask=None, past_conv_values=None)
    pos, pads, counts = [], [], []
    for t in range(video.shape[1]):
        out = model({"video": video[:, t:t + 1]}, gazing_ratio=0.5, generate_only=True, use_cache=True,
                    task_loss_requirement=META["stop_k10_task_loss_requirement"], **state)
        state = dict(past_key_values=out["past_key_values"], past_inputs_embeds=out["past_input_embeds"],
                     past_attention_mask=out["past_attention_mask"], past_conv_values=out["past_conv_values"])
        pos.append(out["gazing_pos"] + n * t)
        pads.append(out["if_padded_gazing"])
        counts += out["num_gazing_each_frame"].tolist()
    assert counts == CASES["stream_k10.num_gazing_each_frame"].tolist()
    assert torch.equal(torch.cat(pos, 1), CASES["stream_k10.gazing_pos"])
    assert torch.equal(torch.cat(pads, 1), CASES["stream_k10.if_padded_gazing"].bool())
    assert torch.equal(torch.cat(pos, 1), CASES["stop_k10.gazing_pos"])


def test_anyres_tiles_and_stitches(models):
    out = models["tiny_k10"]({"video": ANYRES["video"]}, gazing_ratio=0.5,
                             task_loss_requirement=META["stop_k10_task_loss_requirement"],
                             target_scales=[56, 112, 196, 392], target_patch_size=14)
    assert_gaze_equal(out, ANYRES)
    assert out["num_vision_tokens_each_frame"] == 16 + 64 + 196 + 784
    assert "log_action_probs" not in out and "task_loss_prediction" not in out


def test_default_budget_comes_from_config(models):
    """With neither ratio nor requirement, upstream uses the config's (fixed ratio 0.75, requirement 0.7)."""
    model = models["tiny_k10"]
    cfg = model.config
    default = model({"video": CASES["video"]}, generate_only=True)
    explicit = model({"video": CASES["video"]}, generate_only=True,
                     gazing_ratio=cfg.gazing_ratio_config["fixed"]["gazing_ratio"],
                     task_loss_requirement=cfg.task_loss_requirement_config["fixed"]["task_loss_requirement"])
    assert torch.equal(default["gazing_pos"], explicit["gazing_pos"])
    assert default["has_task_loss_requirement"]
