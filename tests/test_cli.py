"""The command line: demo with a local checkpoint and with the random fallback, gaze on a video file,
chunking, and clear errors for unreadable input."""

import re

import numpy as np
import pytest
import torch

from autogaze_fast import AutoGaze
from autogaze_fast.chunking import chunk_bounds, gaze_in_chunks
from autogaze_fast.cli import main
from autogaze_fast.video import write_video

from conftest import FIXTURES, SHARED


@pytest.fixture(autouse=True)
def _twins(torch_twins):
    """CLI runs use the CPU torch twins (the interpreter would be needlessly slow here)."""


def test_chunk_bounds():
    assert chunk_bounds(35, 16) == [(0, 16), (16, 32), (32, 35)]
    with pytest.raises(ValueError):
        chunk_bounds(10, 0)


def test_chunks_equal_independent_calls():
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl="reference")
    video = torch.randn(1, 5, 3, 64, 64)
    chunks = list(gaze_in_chunks(model, video, chunk_frames=2, progress=False, gazing_ratio=0.05))
    assert [(s, e) for s, e, _ in chunks] == [(0, 2), (2, 4), (4, 5)]
    with torch.inference_mode():
        direct = model({"video": video[:, 2:4]}, gazing_ratio=0.05, generate_only=True)
    assert torch.equal(chunks[1][2]["gazing_pos"], direct["gazing_pos"])


def test_demo_with_local_checkpoint(capsys, tmp_path):
    out = tmp_path / "overlay.png"
    assert main(["demo", "--model", str(FIXTURES / "tiny_k10"), "--frames", "3", "--gazing-ratio", "0.1",
                 "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "gazed tokens per frame" in text and "kept-token ratio" in text and "gaze time" in text
    assert out.stat().st_size > 0


def test_demo_random_fallback_warns(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["demo", "--model", "nobody-here/not-a-model", "--frames", "1", "--gazing-ratio", "0.05", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "RANDOMLY INITIALISED" in captured.err and "MEANINGLESS" in captured.err
    assert "gazed tokens per frame (pads excluded): 13" in captured.out


def test_gaze_video_file(tmp_path, capsys):
    """The printed summary is the gaze of the decoded, preprocessed clip: per-frame counts (pads
    excluded) and the kept ratio equal a direct call of the model with the CLI's defaults
    (the checkpoint's processor, task-loss requirement 0.7), and the overlay PNG is written."""
    from autogaze_fast.processor import AutoGazeImageProcessor
    from autogaze_fast.video import read_video

    frames = (np.random.default_rng(0).random((3, 48, 64, 3)) * 255).astype(np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames, fps=4)
    overlay = tmp_path / "overlay.png"
    assert main(["gaze", str(video), "--model", str(FIXTURES / "tiny_k10"), "--gazing-ratio", "0.1", "--quiet",
                 "--out", str(overlay)]) == 0
    text = capsys.readouterr().out
    assert "frames=3" in text and "N=265" in text
    printed = [int(c) for c in re.search(r"gazed tokens per frame \(pads excluded\): ([\d ]+)", text).group(1).split()]

    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10")
    pixels = AutoGazeImageProcessor.from_pretrained(FIXTURES / "tiny_k10")(read_video(video)).pixel_values[None]
    with torch.inference_mode():
        out = model({"video": pixels}, gazing_ratio=0.1, task_loss_requirement=0.7, generate_only=True)
    counts = out["num_gazing_each_frame"].tolist()
    expected = [int((~pads).sum()) for pads in out["if_padded_gazing"].split(counts, dim=1)]
    assert printed == expected
    assert f"kept-token ratio: {sum(expected) / (265 * 3):.3f} ({sum(expected)} of {265 * 3}" in text
    assert overlay.stat().st_size > 0


def test_gaze_unreadable_video(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage")
    assert main(["gaze", str(bad), "--model", str(FIXTURES / "tiny_k10")]) == 2
    assert "error" in capsys.readouterr().err


def test_gaze_missing_model_without_fallback(tmp_path, capsys):
    frames = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames, fps=4)
    assert main(["gaze", str(video), "--model", str(tmp_path / "no-such-dir")]) == 2
    assert "no such model directory" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED / "video" / "example_input.mp4").exists(), reason="needs ../shared/video/example_input.mp4")
def test_gaze_upstream_example_clip(capsys):
    path = SHARED / "video" / "example_input.mp4"
    assert main(["gaze", str(path), "--model", str(FIXTURES / "tiny_k10"), "--max-frames", "2",
                 "--gazing-ratio", "0.05", "--quiet"]) == 0
    assert "frames=2" in capsys.readouterr().out


def test_gaze_missing_model_says_how_to_get_it_or_allow_random(tmp_path, capsys):
    frames = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames, fps=4)
    assert main(["gaze", str(video), "--model", str(tmp_path / "no-such-dir")]) == 2
    err = capsys.readouterr().err
    assert "huggingface-cli download nvidia/AutoGaze --local-dir DIR" in err and "--model DIR" in err
    assert "--allow-random" in err


def test_gaze_allow_random_on_non_square_frames_notes_the_squash(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    frames = np.zeros((1, 36, 64, 3), dtype=np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames, fps=4)
    assert main(["gaze", str(video), "--model", str(tmp_path / "no-such-dir"), "--allow-random",
                 "--gazing-ratio", "0.05", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "RANDOMLY INITIALISED" in captured.err
    assert "note: 36x64 (H x W) frames are squashed to 224x224 for the gaze model" in captured.out
    assert "AnyRes tiling is not implemented yet" in captured.out


def test_square_frames_get_no_squash_note(tmp_path, capsys):
    frames = np.zeros((1, 48, 48, 3), dtype=np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames, fps=4)
    assert main(["gaze", str(video), "--model", str(FIXTURES / "tiny_k10"), "--gazing-ratio", "0.05", "--quiet"]) == 0
    assert "squashed" not in capsys.readouterr().out


def test_gaze_refuses_a_too_thin_video_with_the_reason(tmp_path, capsys):
    frames = np.zeros((2, 64, 4, 3), dtype=np.uint8)
    video = write_video(tmp_path / "thin.mp4", frames, fps=4)
    assert main(["gaze", str(video), "--model", str(FIXTURES / "tiny_k10"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "64x4 (H x W)" in err and "at least 16 px" in err


def test_chunked_overlay_numbers_frames_across_chunks(tmp_path):
    from PIL import Image

    from autogaze_fast.cli import save_overlay
    from autogaze_fast.processor import AutoGazeImageProcessor
    from autogaze_fast.synthetic import synthetic_clip
    from autogaze_fast.visualize import gaze_overlay

    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl="reference")
    frames = synthetic_clip(num_frames=3, size=64, seed=1)
    video = AutoGazeImageProcessor.from_pretrained(FIXTURES / "tiny_k10")(frames).pixel_values[None]
    outputs = [out for _, _, out in gaze_in_chunks(model, video, chunk_frames=2, progress=False, gazing_ratio=0.1)]
    save_overlay(str(tmp_path / "grid.png"), frames, outputs, model.scales)
    # oracle: one overlay of the whole clip, numbered 0, 1, 2
    masks = [torch.cat([out["gazing_mask"][k][0] for out in outputs]) for k in range(len(model.scales))]
    whole = gaze_overlay(frames, masks, model.scales)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    np.testing.assert_array_equal(grid[66:130, :64], whole[2])  # 2x2 grid, gap 2: frame 2 is bottom left
