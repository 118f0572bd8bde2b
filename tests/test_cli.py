"""The command line: demo with a local checkpoint and with the random fallback, gaze on a video file,
chunking, and clear errors for unreadable input."""

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
    frames = (np.random.default_rng(0).random((3, 48, 64, 3)) * 255).astype(np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames, fps=4)
    assert main(["gaze", str(video), "--model", str(FIXTURES / "tiny_k10"), "--gazing-ratio", "0.1", "--quiet"]) == 0
    assert "frames=3" in capsys.readouterr().out


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
