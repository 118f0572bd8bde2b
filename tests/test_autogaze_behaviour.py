"""AutoGaze behaviour beyond the fixtures: training, sampling, impl switch, bad input, loading."""

import json
import shutil

import pytest
import torch
from conftest import FIXTURES
from safetensors.torch import load_file, save_file

from autogaze_fast import AutoGaze, AutoGazeImageProcessor, CheckpointError, ConfigError
from autogaze_fast.config import AutoGazeConfig

CASES = load_file(str(FIXTURES / "gaze_cases.safetensors"))


@pytest.fixture(scope="module")
def model():
    return AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl="reference")


def test_teacher_forced_loss_gives_finite_gradients_on_every_parameter():
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl="reference").train()
    gen = torch.Generator().manual_seed(0)
    out = model({"video": CASES["video"][:, :2]}, gazing_ratio=0.1, temperature=1.0, generator=gen)
    real = (~out["if_padded_gazing"]).float()
    loss = -(out["log_action_probs"] * real).sum() / real.sum() + (out["task_loss_prediction"] ** 2 * real).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_sampling_respects_budget_and_never_repeats(model):
    model.train()
    try:
        gen = torch.Generator().manual_seed(1)
        out = model({"video": CASES["video"]}, gazing_ratio=0.2, temperature=2.0, generate_only=True, generator=gen)
    finally:
        model.eval()
    budget = int(0.2 * model.num_vision_tokens_each_frame)
    n = model.num_vision_tokens_each_frame
    assert out["num_gazing_each_frame"].tolist() == [budget] * 4
    for t, ids in enumerate(out["gazing_pos"].split(out["num_gazing_each_frame"].tolist(), dim=1)):
        ids = ids[0] - n * t
        assert ((ids >= 0) & (ids < n)).all()
        assert len(set(ids.tolist())) == len(ids)


def test_per_frame_ratio_list(model):
    out = model({"video": CASES["video"]}, gazing_ratio=[0.1, 0.2, 0.05, 0.3], generate_only=True)
    assert out["num_gazing_each_frame"].tolist() == [int(r * 265) for r in (0.1, 0.2, 0.05, 0.3)]


def slot_log_probs_oracle(model, video, gaze) -> torch.Tensor:
    """SPEC §5 from the raw lm_head output: gaze token j of a frame is scored by the hidden state
    ``j % K + 1`` positions earlier through head ``j % K``; returns log(p + 1e-8) of each token
    (pads scored as eos), (B, Σn_t)."""
    cfg = model.config
    k, eos, n = cfg.decoder.num_multi_token_pred, cfg.decoder.eos_token_id, model.num_vision_tokens_each_frame
    captured = []
    hook = model.gazing_model.gaze_decoder.lm_head.register_forward_hook(lambda mod, inp, out: captured.append(out))
    try:
        with torch.no_grad():
            model({"video": video}, gazing_info=gaze)
    finally:
        hook.remove()
    (logits,) = captured  # one teacher-forced pass over the whole interleaved sequence
    logits = logits.view(*logits.shape[:2], k, -1)
    out, offset = [], 0
    counts = gaze["num_gazing_each_frame"].tolist()
    for t, (pos, pad) in enumerate(zip(gaze["gazing_pos"].split(counts, 1), gaze["if_padded_gazing"].split(counts, 1))):
        offset += cfg.num_tokens  # this frame's vision tokens (196), then its gaze tokens
        ids = torch.where(pad.bool(), torch.full_like(pos, eos), pos - n * t)
        for j in range(ids.shape[1]):
            dist = torch.softmax(logits[:, offset + j - (j % k) - 1, j % k], dim=-1)
            out.append(torch.log(dist.gather(-1, ids[:, j:j + 1])[:, 0] + 1e-8))
        offset += ids.shape[1]
    return torch.stack(out, dim=1)


def test_given_gazing_info_is_scored_not_regenerated(model):
    """A gaze the model would not produce itself (its own greedy picks, each frame's in reverse order)
    is kept as given and scored by the teacher-forced definition, which an oracle recomputes from
    the raw lm_head output."""
    video = CASES["video"][:, :2]
    own = model({"video": video}, gazing_ratio=0.1, generate_only=True)
    counts = own["num_gazing_each_frame"].tolist()
    info = {"gazing_pos": torch.cat([p.flip(1) for p in own["gazing_pos"].split(counts, 1)], dim=1),
            "if_padded_gazing": own["if_padded_gazing"], "num_gazing_each_frame": own["num_gazing_each_frame"]}
    assert not torch.equal(info["gazing_pos"], own["gazing_pos"]), "the premise: a gaze the model would not pick"
    scored = model({"video": video}, gazing_info=info)
    assert torch.equal(scored["gazing_pos"], info["gazing_pos"])
    assert torch.equal(scored["if_padded_gazing"], info["if_padded_gazing"])
    torch.testing.assert_close(scored["log_action_probs"], slot_log_probs_oracle(model, video, info), atol=1e-5, rtol=0)
    # its own greedy order is what the model scores higher
    mine = model({"video": video}, gazing_info={k: own[k] for k in info})
    assert mine["log_action_probs"].mean() > scored["log_action_probs"].mean()


def test_impl_switch(monkeypatch):
    monkeypatch.setenv("AUTOGAZE_IMPL", "reference")
    assert AutoGaze.from_pretrained(FIXTURES / "tiny_k10").impl == "reference"
    monkeypatch.setenv("AUTOGAZE_IMPL", "bogus")
    with pytest.raises(ValueError, match="impl must be one of"):
        AutoGaze.from_pretrained(FIXTURES / "tiny_k10")


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "video, message",
    [
        (torch.zeros(4, 3, 224, 224), "expected 5 dims"),
        (torch.zeros(1, 2, 4, 224, 224), "3 \\(RGB\\) channels"),
        (torch.zeros(1, 2, 3, 224, 224, dtype=torch.uint8), "run AutoGazeImageProcessor on the uint8 frames first"),
        (torch.zeros(1, 0, 3, 224, 224), "empty"),
        ("not a tensor", "must be a torch.Tensor"),
    ],
)
def test_bad_video_shapes(model, video, message):
    with pytest.raises(ValueError, match=message):
        model({"video": video}, gazing_ratio=0.1)


@pytest.mark.parametrize(
    "video, what",
    [
        (torch.zeros(1, 2, 64, 64, 3, dtype=torch.uint8), "raw frames"),  # uint8, channels last
        (torch.zeros(2, 64, 64, 3, dtype=torch.uint8), "raw frames"),  # one video of raw frames, no batch axis
        (torch.rand(1, 2, 64, 64, 3), "frames with channels last"),  # float, channels last
    ],
)
def test_raw_frames_are_told_to_run_the_processor_first(model, video, what):
    with pytest.raises(ValueError) as err:
        model({"video": video}, gazing_ratio=0.1)
    message = str(err.value)
    assert str(tuple(video.shape)) in message and str(video.dtype) in message and what in message
    assert "run AutoGazeImageProcessor on the uint8 frames first" in message


def test_numpy_video_names_its_shape(model):
    import numpy as np

    message = (r"numpy.ndarray of shape \(1, 2, 3, 64, 64\); wrap .* torch.from_numpy\(x\); "
               r"for raw frames, run AutoGazeImageProcessor")
    with pytest.raises(ValueError, match=message):
        model({"video": np.zeros((1, 2, 3, 64, 64), np.float32)}, gazing_ratio=0.1)


def test_float_video_in_0_255_warns_and_processed_video_does_not(model):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the processor's output (CASES) must not warn
        model({"video": CASES["video"][:, :2]}, gazing_ratio=0.1, generate_only=True)
    raw = (CASES["video"][:, :2] * 0.229 + 0.485).clamp(0, 1) * 255  # undo the normalisation: 0..255 floats
    with pytest.warns(UserWarning) as record:
        model({"video": raw}, gazing_ratio=0.1, generate_only=True)
    message = str(record[0].message)
    assert str(tuple(raw.shape)) in message and "raw 0..255 pixels" in message
    assert "run AutoGazeImageProcessor on the uint8 frames first" in message
    assert record[0].filename == __file__  # points at the caller's line, not at torch or this package


def test_nan_frames_are_refused(model):
    video = CASES["video"][:, :2].clone()
    video[0, 1, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        model({"video": video}, gazing_ratio=0.1)


def test_missing_video_key(model):
    with pytest.raises(ValueError, match="'video'"):
        model({"frames": CASES["video"]}, gazing_ratio=0.1)


# ---------------------------------------------------------------- frame size limits (as the processor's)
@pytest.mark.parametrize("impl", ["reference", "fast"])
@pytest.mark.parametrize("hw, ratio", [((16, 200), "12.5"), ((300, 20), "15"), ((16, 129), "8.062")])
def test_frames_beyond_the_aspect_limit_are_refused_not_squashed(torch_twins, impl, hw, ratio):
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl=impl)
    with pytest.raises(ValueError) as err:
        model({"video": torch.zeros(1, 2, 3, *hw)}, gazing_ratio=0.1)
    message = str(err.value)
    assert f"{hw[0]}x{hw[1]} (H x W)" in message and f"aspect ratio of {ratio} : 1, more than 8 : 1" in message
    assert "tiles='anyres'" in message and "AutoGazeImageProcessor refuses such frames too" in message


@pytest.mark.parametrize("impl", ["reference", "fast"])
@pytest.mark.parametrize("hw", [(4, 4000), (15, 40), (224, 1)])
def test_frames_below_the_minimum_side_are_refused(torch_twins, impl, hw):
    """The issue's (1, 2, 3, 4, 4000) video too: its 4-px side is refused first, as the processor does."""
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl=impl)
    with pytest.raises(ValueError) as err:
        model({"video": torch.zeros(1, 2, 3, *hw)}, gazing_ratio=0.1)
    message = str(err.value)
    assert f"{hw[0]}x{hw[1]} (H x W) are too small" in message and "at least 16 px on each side" in message


def test_frames_at_the_limits_are_accepted_as_the_processor_gives_them(model):
    processor = AutoGazeImageProcessor.from_pretrained_or_default(FIXTURES / "tiny_k10")
    rng = torch.Generator().manual_seed(0)
    for hw in [(16, 128), (128, 16), (16, 16)]:  # exactly 8 : 1 both ways, and the smallest side
        frames = torch.randint(0, 256, (2, *hw, 3), dtype=torch.uint8, generator=rng).numpy()
        video = processor(frames).pixel_values[None]
        short, long = sorted(video.shape[-2:])
        assert long == 8 * short or long == short  # 224 x 1792: the processor's output at its own limit
        out = model({"video": video}, gazing_ratio=0.1, generate_only=True)
        assert out["gazing_pos"].shape[0] == 1
    out = model({"video": torch.zeros(1, 2, 3, 16, 128)}, gazing_ratio=0.1, generate_only=True)  # 8 : 1 at 16 px
    assert out["gazing_pos"].shape[0] == 1


def test_extreme_aspect_frames_still_gaze_as_tiles(model):
    out = model({"video": torch.zeros(1, 2, 3, 16, 200)}, tiles="anyres", gazing_ratio=0.1)
    assert out["num_tiles"] >= 1


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, float("nan")])
def test_ratio_outside_unit_interval(model, ratio):
    with pytest.raises(ValueError, match="\\(0, 1\\]"):
        model({"video": CASES["video"]}, gazing_ratio=ratio)


def test_ratio_list_length_must_match_frames(model):
    with pytest.raises(ValueError, match="one per frame"):
        model({"video": CASES["video"]}, gazing_ratio=[0.1, 0.2])


def test_streaming_needs_all_caches(model):
    out = model({"video": CASES["video"][:, :1]}, gazing_ratio=0.1, generate_only=True, use_cache=True)
    with pytest.raises(ValueError, match="all four"):
        model({"video": CASES["video"][:, 1:2]}, gazing_ratio=0.1, generate_only=True, use_cache=True,
              past_key_values=out["past_key_values"])


# ---------------------------------------------------------------- loading
def copy_checkpoint(tmp_path, name="tiny_k10"):
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst


def test_checkpoint_with_missing_key(tmp_path):
    ckpt = copy_checkpoint(tmp_path)
    weights = load_file(str(ckpt / "model.safetensors"))
    del weights["gazing_model.connector.pos_embed"]
    save_file(weights, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing keys.*gazing_model.connector.pos_embed"):
        AutoGaze.from_pretrained(ckpt)


def test_checkpoint_with_wrong_shape_and_extra_key(tmp_path):
    ckpt = copy_checkpoint(tmp_path)
    weights = load_file(str(ckpt / "model.safetensors"))
    weights["gazing_model.gaze_decoder.task_loss_prediction_head.weight"] = torch.zeros(3, 64)
    weights["gazing_model.extra.weight"] = torch.zeros(1)
    save_file(weights, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        AutoGaze.from_pretrained(ckpt)
    assert "task_loss_prediction_head.weight: checkpoint (3, 64) vs model (10, 64)" in str(err.value)
    assert "gazing_model.extra.weight" in str(err.value)


def test_config_vocab_must_be_n_plus_one(tmp_path):
    ckpt = copy_checkpoint(tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["gaze_model_config"]["gaze_decoder_config"]["vocab_size"] = 300
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="vocab_size is 300.*N \\+ 1 = 266"):
        AutoGaze.from_pretrained(ckpt)


def test_config_scale_layout_must_add_up():
    config = json.loads((FIXTURES / "tiny_k10" / "config.json").read_text())
    config["scales"] = "32+64+224"
    with pytest.raises(ConfigError, match="scales"):
        AutoGazeConfig.from_dict(config)


def test_corrupt_weights_file(tmp_path):
    ckpt = copy_checkpoint(tmp_path)
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        AutoGaze.from_pretrained(ckpt)


def test_unreachable_hub_id_says_how_to_pass_a_local_snapshot(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="local directory"):
        AutoGaze.from_pretrained("nobody-here/not-a-model")


def test_unknown_config_keys_are_ignored(tmp_path):
    ckpt = copy_checkpoint(tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["some_future_key"] = {"x": 1}
    (ckpt / "config.json").write_text(json.dumps(config))
    AutoGaze.from_pretrained(ckpt)
