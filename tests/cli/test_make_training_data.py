"""``autogaze-fast make-training-data``: upstream's layout, labels the trainer reads, heuristic gazes that
follow what changes, and nothing half-written (a non-empty OUT is refused, an interrupted run leaves nothing)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autogaze_fast.cli.main import main
from autogaze_fast.media.video import current_umask, read_video
from autogaze_fast.train import synthetic_data
from autogaze_fast.train.data import label_key, list_split_videos, load_labels
from autogaze_fast.train.synthetic_data import heuristic_gaze_label, make_training_data

pytest.importorskip("av")

N = 265  # tokens a frame at 32+64+112+224, patch 16


def test_cli_writes_upstreams_layout_and_labels_the_trainer_reads(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["make-training-data", str(out), "--videos", "3", "--val-videos", "1", "--frames", "3", "--size", "32",
                 "--quiet"]) == 0
    assert "data.root=" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["gazing_labels.json", "synthetic", "val_gazing_labels.json"]
    train = list_split_videos(str(out / "synthetic"), "train")
    val = list_split_videos(str(out / "synthetic"), "val")
    assert [p.name for p in train] == ["video_0000.mp4", "video_0001.mp4", "video_0002.mp4"] and len(val) == 1
    labels = load_labels(str(out / "gazing_labels.json"), clip_len=3, tokens_per_frame=N)  # the trainer's own check
    assert sorted(labels) == sorted(label_key(p) for p in train)
    assert sorted(load_labels(str(out / "val_gazing_labels.json"), 3, N)) == [label_key(val[0])]
    assert read_video(train[0]).shape == (3, 32, 32, 3)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    assert out.stat().st_mode & 0o777 == 0o777 & ~current_umask()  # not mkdtemp's private 0700


def test_same_seed_same_labels_other_seed_other_clips(tmp_path):
    a = make_training_data(tmp_path / "a", videos=2, val_videos=1, frames=2, size=32, seed=5, progress=False)
    b = make_training_data(tmp_path / "b", videos=2, val_videos=1, frames=2, size=32, seed=5, progress=False)
    c = make_training_data(tmp_path / "c", videos=2, val_videos=1, frames=2, size=32, seed=6, progress=False)
    assert a.labels.read_text() == b.labels.read_text() != c.labels.read_text()


def test_non_empty_or_file_out_is_refused_and_left_alone(tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert main(["make-training-data", str(full), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err and [p.name for p in full.iterdir()] == ["keep.txt"]
    file = tmp_path / "file"
    file.write_text("x")
    assert main(["make-training-data", str(file), "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_training_data(empty, videos=1, val_videos=1, frames=1, size=16, progress=False).root.is_dir()
    assert main(["make-training-data", str(tmp_path / "x"), "--frames", "0", "--quiet"]) == 2
    assert "--frames must be an int >= 1" in capsys.readouterr().err
    assert main(["make-training-data", str(tmp_path / "x"), "--seed", "-1", "--quiet"]) == 2
    assert "--seed must be an int >= 0" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_an_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    real = synthetic_data.write_video
    calls = []

    def failing(path, frames, fps):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, frames, fps=fps)

    monkeypatch.setattr(synthetic_data, "write_video", failing)
    with pytest.raises(KeyboardInterrupt):
        make_training_data(tmp_path / "data", videos=4, frames=1, size=16, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_heuristic_gaze_follows_the_change_and_its_loss_falls():
    rng = np.random.default_rng(0)
    clip = np.repeat(rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8), 3, axis=0)
    clip[1, 160:192, 32:64] = 255 - clip[1, 160:192, 32:64]  # frame 1: one 32 x 32 block changes
    clip[2] = clip[1]  # frame 2: nothing changes
    label = heuristic_gaze_label(clip, gazing_ratio=0.2)
    pos, losses = label["gazing_pos"], label["task_losses"]
    for t, frame in enumerate(pos):
        assert 1 <= len(frame) <= int(0.2 * N) and len(set(frame)) == len(frame)
        assert all(N * t <= p < N * (t + 1) for p in frame)
        assert all(0 <= x <= 1 for x in losses[t]) and losses[t] == sorted(losses[t], reverse=True)
    assert losses[0][-1] <= 0.05  # frame 0 (noise: edges everywhere) is covered to 95 %
    # frame 1: the block is exactly one cell of the 112 scale (7 x 7 cells of 32 px, after 2² + 4² tokens):
    # its gain (all the change, weight 112/224) beats the four 16 px cells' (a quarter each, weight 1)
    assert pos[1] == [N + 4 + 16 + 5 * 7 + 1] and losses[1] == [0.0]
    assert len(pos[2]) == 1 and losses[2] == [0.0]  # nothing changed: one gaze, nothing left to cover
    json.dumps(label)  # JSON-ready plain types
