"""Any selector where the model goes: ``GazedVideoEncoder(selector=...)`` and ``autogaze-fast gaze --selector``."""

import torch
from conftest import FIXTURES

from autogaze_fast.cli.main import main
from autogaze_fast.encoder import GazedVideoEncoder
from autogaze_fast.media.synthetic import moving_object_clip
from autogaze_fast.media.video import write_video
from autogaze_fast.processing.siglip import SiglipImageProcessor
from autogaze_fast.selectors import NVIDIA_LAYOUT, select
from autogaze_fast.siglip import SiglipVisionModel


def test_encoder_with_a_selector_encodes_that_selectors_cells(torch_twins):
    vision = SiglipVisionModel.from_pretrained(FIXTURES / "tiny_siglip", impl="fast")
    encoder = GazedVideoEncoder(None, vision, None, SiglipImageProcessor.for_vision_model(vision), gazing_ratio=0.1,
                                selector="frame-difference")
    frames = moving_object_clip(5)
    out = encoder(frames)
    gaze = select("frame-difference", frames, gazing_ratio=0.1)
    assert out.num_gazed.tolist() == [NVIDIA_LAYOUT.budget(0.1)] * 5
    assert torch.equal(out.token_index, (gaze["gazing_pos"][0] - 265 * torch.arange(5).repeat_interleave(26)))
    assert encoder.describe()["selector"] == {"selector": "frame-difference", "coverage": 0.9, "threshold": None}
    assert "selector" not in GazedVideoEncoder(None, vision, None, SiglipImageProcessor.for_vision_model(vision)).describe()


def test_gaze_command_with_a_selector_needs_no_checkpoint(tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", moving_object_clip(6), fps=8)
    out = tmp_path / "view.png"
    assert main(["gaze", str(video), "--selector", "run-length", "--gazing-ratio", "0.5", "--view", "interframe",
                 "--out", str(out), "--quiet", "--model", str(tmp_path / "no-such-checkpoint")]) == 0
    printed = capsys.readouterr().out
    assert "impl=selector:run-length" in printed and out.is_file() and out.with_suffix(".csv").is_file()
    assert main(["gaze", str(video), "--selector", "uniform", "--task-loss-requirement", "0.7"]) == 2
    assert "stop rule" in capsys.readouterr().err
