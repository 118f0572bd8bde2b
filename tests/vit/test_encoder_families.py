"""GazedVideoEncoder with every vision family: native gaze (CLIP at 16 px), retargeted gaze (DINOv2 at
14 px, one tile and 2 x 2 tiles), and pads dropped before the first block leaving real tokens and the
pooled features unchanged."""

from pathlib import Path

import numpy as np
import pytest
import torch

from autogaze_fast import GazedVideoEncoder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GAZE = FIXTURES / "upstream" / "tiny_k10"
FRAMES = np.random.default_rng(0).integers(0, 256, (3, 60, 80, 3), dtype=np.uint8)


@pytest.mark.parametrize("vision,vision_scales,scales,retarget", [
    ("vit_clip", None, [32, 64, 112, 224], False),
    ("vit_dinov2_reg", None, [28, 56, 98, 196], True),
    ("vit_dinov2", "56+112+196+392", [56, 112, 196, 392], True),
])
def test_every_family_encodes_and_pads_drop(torch_twins, vision, vision_scales, scales, retarget):
    enc = GazedVideoEncoder.from_pretrained(GAZE, FIXTURES / vision, vision_scales=vision_scales, num_frames=3,
                                            gazing_ratio=0.3, task_loss_requirement=0.6, device="cpu")
    assert enc.scales == scales and enc.retarget is retarget and enc.vision_family != "siglip"
    out = enc(FRAMES)
    enc.drop_pads = False
    padded = enc(FRAMES)
    assert out.pooled.shape == (3, 64) and torch.equal(out.token_is_pad, padded.token_is_pad)
    keep = ~out.token_is_pad
    assert int(out.num_gazed.sum()) == int(keep.sum()) > 0
    torch.testing.assert_close(out.tokens[keep], padded.tokens[keep], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooled, padded.pooled, atol=1e-5, rtol=0)
    # every real token's cell lies inside the frame's vision scales
    n = sum((s // enc.vision_model.config.patch_size) ** 2 for s in scales)
    assert int(out.token_index[keep].max()) < n


def test_siglip_pads_dropped_in_the_encoder(torch_twins):
    enc = GazedVideoEncoder.from_pretrained(GAZE, FIXTURES / "vit_siglip", num_frames=3, gazing_ratio=0.3,
                                            task_loss_requirement=0.6, device="cpu")
    out = enc(FRAMES)
    enc.drop_pads = False
    padded = enc(FRAMES)
    assert out.token_is_pad.any(), "the stop rule must leave pads for the check to mean anything"
    keep = ~out.token_is_pad
    torch.testing.assert_close(out.tokens[keep], padded.tokens[keep], atol=1e-5, rtol=0)
    assert (out.tokens[~keep] == 0).all()


def test_cli_extract_with_a_dinov2_vision(torch_twins, tmp_path, capsys):
    pytest.importorskip("av")  # PyAV is an optional extra
    from autogaze_fast.cli.main import main
    from autogaze_fast.extract import load_features
    from autogaze_fast.media.synthetic import synthetic_clip
    from autogaze_fast.media.video import write_video

    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "clip.mp4", synthetic_clip(4, size=(48, 64), seed=1), fps=4)
    code = main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", str(GAZE), "--vision",
                 str(FIXTURES / "vit_dinov2_reg"), "--gazing-ratio", "0.2", "--frequency", "4", "--quiet"])
    assert code == 0, capsys.readouterr()
    item = load_features(tmp_path / "out", "clip.mp4")
    assert item["features"].shape == (4, 64)
    assert item["metadata"]["config"]["vision_family"] == "dinov2"
