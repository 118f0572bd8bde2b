"""GazedVideoEncoder and extraction with a Qwen-VL tower (`--vision <qwen dir>`): the merged tokens of the units
the gaze keeps, equal to the explicit-mask reference tower on the same units, with their M-RoPE grid positions."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from autogaze_fast import AutoVisionModel, GazedVideoEncoder
from autogaze_fast.processing.qwen_vl import QwenVLVideoProcessor
from autogaze_fast.vit.merge_units import keep_units_from_gaze

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GAZE = FIXTURES / "upstream" / "tiny_k10"
FRAMES = np.random.default_rng(0).integers(0, 256, (3, 60, 80, 3), dtype=np.uint8)
TOWERS = {"qwen2_5_vl": ("qwen2_5_vl", "qwen2_vl"), "qwen3_vl": ("qwen3_vl", "qwen3_vl")}


def qwen_dir(tmp_path: Path, family: str) -> Path:
    """The tower fixture with a small video processor config (frames of 60x80 -> 2 x 3 units)."""
    folder = tmp_path / family
    shutil.copytree(FIXTURES / TOWERS[family][0] / "vision", folder)
    processor = QwenVLVideoProcessor(TOWERS[family][1], min_pixels=16, max_pixels=90 * 90)
    (folder / "video_preprocessor_config.json").write_text(json.dumps(processor.to_dict()))
    return folder


@pytest.mark.parametrize("family", sorted(TOWERS))
def test_encoder_gives_the_kept_units_merged_tokens(torch_twins, tmp_path, family):
    vision = qwen_dir(tmp_path, family)
    enc = GazedVideoEncoder.from_pretrained(GAZE, vision, num_frames=3, gazing_ratio=0.3, task_loss_requirement=None,
                                            device="cpu")
    assert enc.vision_family == family and enc.scales == []
    out = enc(FRAMES)
    processor = QwenVLVideoProcessor.from_pretrained(vision)
    frames = processor.resized_frames(FRAMES)[None]                      # (1, 3, 3, H', W')
    unit = processor.factor
    grid = (2, frames.shape[3] // unit, frames.shape[4] // unit)
    grids = [int(round(n ** 0.5)) for n in enc.gaze_model.num_vision_tokens_each_scale_each_frame]
    keep = keep_units_from_gaze(out.gaze[0], num_frames=3, grids=grids, unit_grid=grid)
    assert torch.equal(out.unit_keep, keep[0]) and 0 < int(keep.sum()) <= keep.numel()
    reference = AutoVisionModel.from_pretrained(vision, impl="reference")
    with torch.no_grad():
        want = reference(frames, keep=keep)
    assert out.tokens.shape == (int(keep.sum()), enc.feature_dim)
    torch.testing.assert_close(out.tokens, want.last_hidden_state, atol=1e-5, rtol=0)
    assert torch.equal(out.token_position, torch.nonzero(keep[0]))
    assert torch.equal(out.grid_thw, torch.tensor([[2, grid[1] * 2, grid[2] * 2]]))
    assert torch.equal(out.token_frame, out.token_position[:, 0] * 2)
    # a pair's tokens are every frame's of the pair: frame 2 (the padded pair's only frame) pools pair 1
    pair1 = out.token_position[:, 0] == 1
    if pair1.any():
        torch.testing.assert_close(out.pooled[2], out.tokens[pair1].mean(0))
    assert out.num_tokens == int(keep.sum())


def test_dense_qwen_encoder_keeps_every_unit(torch_twins, tmp_path):
    vision = qwen_dir(tmp_path, "qwen2_5_vl")
    enc = GazedVideoEncoder.from_pretrained(None, vision, num_frames=4, device="cpu")
    out = enc(FRAMES[:2])
    assert bool(out.unit_keep.all()) and out.tokens.shape[0] == out.unit_keep.numel()


def test_qwen_encoder_refuses_what_does_not_apply(tmp_path):
    vision = qwen_dir(tmp_path, "qwen2_5_vl")
    with pytest.raises(ValueError, match="merged tokens"):
        GazedVideoEncoder.from_pretrained(None, vision, layers=[1, 2], device="cpu")
    with pytest.raises(ValueError, match="tiles do not apply"):
        GazedVideoEncoder.from_pretrained(GAZE, vision, tiles="anyres", device="cpu")


def test_cli_extract_with_a_qwen_vision_saves_positions(torch_twins, tmp_path, capsys):
    pytest.importorskip("av")  # PyAV is an optional extra
    from autogaze_fast.cli.main import main
    from autogaze_fast.extract import load_features
    from autogaze_fast.media.synthetic import synthetic_clip
    from autogaze_fast.media.video import write_video

    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "clip.mp4", synthetic_clip(4, size=(48, 64), seed=1), fps=4)
    vision = qwen_dir(tmp_path, "qwen2_5_vl")
    code = main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", str(GAZE), "--vision",
                 str(vision), "--gazing-ratio", "0.2", "--frequency", "4", "--save-tokens", "--quiet"])
    assert code == 0, capsys.readouterr()
    item = load_features(tmp_path / "out", "clip.mp4")
    assert item["features"].shape == (4, 40)
    assert item["metadata"]["config"]["vision_family"] == "qwen2_5_vl"
    keep = item["unit_keep"]
    assert item["token_position"].shape == (int(keep.sum()), 3) and item["tokens"].shape[0] == int(keep.sum())
    assert item["metadata"]["num_gazed_tokens"] == int(keep.sum())


def test_batched_clips_equal_one_at_a_time(torch_twins, tmp_path):
    vision = qwen_dir(tmp_path, "qwen2_5_vl")
    video = np.random.default_rng(3).integers(0, 256, (6, 60, 80, 3), dtype=np.uint8)
    one = GazedVideoEncoder.from_pretrained(GAZE, vision, num_frames=3, gazing_ratio=0.3, device="cpu")(video)
    enc = GazedVideoEncoder.from_pretrained(GAZE, vision, num_frames=3, gazing_ratio=0.3, batch_clips=2, device="cpu")
    two = enc(video)
    assert torch.equal(one.unit_keep, two.unit_keep) and torch.equal(one.token_position, two.token_position)
    assert torch.equal(one.grid_thw, two.grid_thw) and one.grid_thw.shape == (2, 3)
    torch.testing.assert_close(one.tokens, two.tokens, atol=1e-5, rtol=0)
    assert torch.equal(one.token_frame, two.token_frame) and int(two.token_frame.max()) >= 3
