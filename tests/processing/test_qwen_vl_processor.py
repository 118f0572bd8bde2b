"""The Qwen-VL video processors equal transformers 4.57.6's Qwen2VLVideoProcessor / Qwen3VLVideoProcessor
(fixtures: tests/fixtures/qwen_processors/meta.json): grids exactly, rows to 1e-6, frame sampling's indices."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from autogaze_fast import AutoVisionProcessor
from autogaze_fast.loading import CheckpointError
from autogaze_fast.processing.qwen_vl import QwenVLVideoProcessor, smart_resize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "qwen_processors"
META = json.loads((FIXTURES / "meta.json").read_text())
TENSORS = load_file(FIXTURES / "cases.safetensors")
CASES = {c["name"]: c for c in META["cases"]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_equal_transformers(name):
    case = CASES[name]
    processor = QwenVLVideoProcessor.from_pretrained(FIXTURES / name)  # the processor's own save_pretrained
    videos = [TENSORS[f"{name}.video{i}"].numpy() for i in range(case["videos"])]
    rates = [m["fps"] for m in case["metadata"]] if case["metadata"] else None
    out = processor(videos, video_fps=rates, do_sample_frames=case["call"].get("do_sample_frames"),
                    fps=case["call"].get("fps"))
    assert torch.equal(out.grid_thw, TENSORS[f"{name}.video_grid_thw"])
    torch.testing.assert_close(out.pixel_values, TENSORS[f"{name}.pixel_values_videos"], atol=0, rtol=0)
    assert out["pixel_values_videos"] is out.pixel_values and out.video_grid_thw is out.grid_thw


def test_the_resize_itself_is_bit_exact():
    # q2_round's rows, unnormalised by hand, give back uint8 levels: the resize matches to the level
    processor = QwenVLVideoProcessor.from_pretrained(FIXTURES / "q2_round")
    frames = processor.resized_frames(TENSORS["q2_round.video0"].numpy())
    mean = torch.tensor(processor.image_mean)[:, None, None] * 255
    std = torch.tensor(processor.image_std)[:, None, None] * 255
    levels = frames * std + mean
    assert (levels - levels.round()).abs().max() < 1e-3


def test_sampling_indices_follow_the_clip_rate():
    p = QwenVLVideoProcessor.for_family("qwen3_vl")
    assert p.sample_indices(20, 10.0, fps=2).tolist() == [0, 6, 13, 19]  # 20 / 10 * 2 = 4 frames
    assert p.sample_indices(100, 25.0).tolist() == np.linspace(0, 99, 8).round().astype(int).tolist()
    assert len(p.sample_indices(3, 30.0)) == 3  # never more than the clip holds


def test_smart_resize_rules():
    assert smart_resize(50, 70, factor=28, min_pixels=56 * 56, max_pixels=28 * 28 * 20) == (56, 56)
    assert smart_resize(20, 60, factor=28, min_pixels=28 * 28 * 4, max_pixels=10 ** 6) == (56, 112)  # grown
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 3000, factor=28, min_pixels=1, max_pixels=10 ** 8)
    with pytest.raises(ValueError, match="at least 2 frames"):
        smart_resize(64, 64, factor=32, min_pixels=1, max_pixels=10 ** 8, num_frames=1)


def test_auto_processor_and_model_types(tmp_path):
    folder = tmp_path / "qwen"
    shutil.copytree(FIXTURES / "q3_no_sampling", folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))
    p = AutoVisionProcessor.from_pretrained(folder)
    assert isinstance(p, QwenVLVideoProcessor) and p.recipe == "qwen3_vl" and p.patch_size == 16
    for model_type, patch in (("qwen2_5_vl", 14), ("qwen3_vl_moe", 16)):
        bare = tmp_path / model_type
        bare.mkdir()
        (bare / "config.json").write_text(json.dumps({"model_type": model_type}))
        (bare / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 784, "longest_edge": 9999}}))
        got = AutoVisionProcessor.from_pretrained(bare)
        assert got.patch_size == patch and got.min_pixels == 784
    again = QwenVLVideoProcessor.from_dict(p.to_dict())
    assert again.to_dict() == p.to_dict()


def test_bad_input_is_named(tmp_path):
    p = QwenVLVideoProcessor()
    with pytest.raises(ValueError, match="uint8"):
        p(np.zeros((2, 28, 28, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        p(np.zeros((28, 28, 3), np.uint8))
    with pytest.raises(CheckpointError, match="video_preprocessor_config.json"):
        QwenVLVideoProcessor.from_pretrained(tmp_path)


# ---------------------------------------------------------------- the extra fixtures (tests/fixtures/qwen_processors_extra)
EXTRA = Path(__file__).resolve().parents[1] / "fixtures" / "qwen_processors_extra"
EXTRA_META = json.loads((EXTRA / "meta.json").read_text())
EXTRA_TENSORS = load_file(EXTRA / "cases.safetensors")
EXTRA_CASES = {c["name"]: c for c in EXTRA_META["cases"]}


@pytest.mark.parametrize("name", sorted(EXTRA_CASES))
def test_sampling_filters_and_mean_std_equal_transformers(name):
    # Qwen2-VL fps / num_frames sampling, bilinear and nearest resize, custom mean / std, Qwen3 frame clamps
    case = EXTRA_CASES[name]
    config = dict(case["config"])
    processor = QwenVLVideoProcessor.from_dict(config, recipe=case["recipe"])
    videos = [EXTRA_TENSORS[f"{name}.video{i}"].numpy() for i in range(case["videos"])]
    rates = [m["fps"] for m in case["metadata"]] if case["metadata"] else None
    out = processor(videos, video_fps=rates, **case["call"])
    assert torch.equal(out.grid_thw, EXTRA_TENSORS[f"{name}.video_grid_thw"])
    # uint8 resize and the fused normalise reproduce transformers' arithmetic: bit-identical rows
    assert torch.equal(out.pixel_values, EXTRA_TENSORS[f"{name}.pixel_values_videos"])
    assert len(out.frame_indices) == case["videos"]


@pytest.mark.parametrize("recipe", ["qwen2_vl", "qwen3_vl"])
def test_sample_indices_equal_transformers(recipe):
    processor = QwenVLVideoProcessor(recipe, **EXTRA_META["sample_processors"][recipe])
    checked = 0
    for s in (s for s in EXTRA_META["samples"] if s["recipe"] == recipe):
        call = lambda: processor.sample_indices(s["total"], s["video_fps"], fps=s["fps"], num_frames=s["num_frames"])  # noqa: E731,B023
        if s["error"] is not None:
            with pytest.raises(ValueError):
                call()
        else:
            assert call().tolist() == s["indices"], s
        checked += 1
    assert checked == 144


def test_tensor_and_channels_first_inputs_agree():
    p = QwenVLVideoProcessor(min_pixels=784, max_pixels=4 * 784)
    clip = EXTRA_TENSORS["q2_bilinear.video0"]
    a = p(clip.numpy())
    b = p(torch.as_tensor(clip))
    c = p(clip.permute(0, 3, 1, 2))
    assert torch.equal(a.pixel_values, b.pixel_values) and torch.equal(a.pixel_values, c.pixel_values)
    frames = p.resized_frames(clip.numpy())
    assert frames.dtype == torch.float32 and frames.shape == (3, 3, 28, 56)  # no temporal padding


def test_for_vision_model(tmp_path):
    class Config:
        patch_size, spatial_merge_size, temporal_patch_size = 16, 2, 2

    p = QwenVLVideoProcessor.for_vision_model(Config(), tmp_path, defaults_if_missing=True)
    assert p.recipe == "qwen3_vl" and p.factor == 32
    with pytest.raises(CheckpointError, match="video_preprocessor_config.json"):
        QwenVLVideoProcessor.for_vision_model(Config(), tmp_path)
    got = QwenVLVideoProcessor.for_vision_model(Config(), FIXTURES / "q2_round")
    assert got.recipe == "qwen2_vl" and got.min_pixels == 3136


def test_more_bad_input_is_named():
    p = QwenVLVideoProcessor()
    with pytest.raises(ValueError, match="3 channels"):
        p(np.zeros((2, 28, 28, 4), np.uint8))
    with pytest.raises(ValueError, match="no frame"):
        p(np.zeros((0, 28, 28, 3), np.uint8))
    with pytest.raises(ValueError, match="no clip"):
        p([])
    with pytest.raises(ValueError, match="resample"):
        QwenVLVideoProcessor(resample=5)
    with pytest.raises(ValueError, match="video_fps"):
        QwenVLVideoProcessor(fps=2.0)(np.zeros((4, 28, 28, 3), np.uint8), do_sample_frames=True)
    with pytest.raises(ValueError, match="exclusive"):
        p.sample_indices(10, 5.0, fps=1, num_frames=2)
    with pytest.raises(ValueError, match="one per clip"):
        p([np.zeros((2, 28, 28, 3), np.uint8)] * 2, video_fps=[1.0])
    with pytest.raises(ValueError, match="uint8"):
        p(torch.full((2, 3, 28, 28), float("nan")))  # NaN frames are float: refused with the dtype fix


def test_legacy_pixel_keys_count_for_qwen2_only():
    # transformers 4.57.6 (checked by hand in the scratch venv): Qwen3VLVideoProcessor(min_pixels=5*1024,
    # max_pixels=6*1024, size={"shortest_edge": 1024, "longest_edge": 64*1024}) on a (4, 3, 70, 70) clip
    # gives grid [2, 4, 4]: the legacy keys are ignored; Qwen2-VL's override size
    config = {"min_pixels": 5 * 1024, "max_pixels": 6 * 1024, "size": {"shortest_edge": 1024, "longest_edge": 64 * 1024}}
    clip = np.zeros((4, 70, 70, 3), np.uint8)
    q3 = QwenVLVideoProcessor.from_dict(config, recipe="qwen3_vl")
    assert q3(clip, do_sample_frames=False).grid_thw.tolist() == [[2, 4, 4]]
    q2 = QwenVLVideoProcessor.from_dict(config, recipe="qwen2_vl")
    assert (q2.min_pixels, q2.max_pixels) == (5 * 1024, 6 * 1024)
