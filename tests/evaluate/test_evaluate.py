"""``autogaze-fast evaluate`` end to end on generated videos (rows, reports, plot, resume), and the
interframe reconstruction against a hand computation."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from conftest import FIXTURES
from PIL import Image

from autogaze_fast.cli.main import main
from autogaze_fast.evaluate import Reconstruction
from autogaze_fast.media.synthetic import camera_pan_clip, moving_object_clip, scene_cut_clip, static_clip
from autogaze_fast.media.video import write_video
from autogaze_fast.selectors import NVIDIA_LAYOUT

L = NVIDIA_LAYOUT


@pytest.fixture
def videos(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name, make in (("moving", moving_object_clip), ("pan", camera_pan_clip), ("cut", scene_cut_clip)):
        write_video(folder / f"{name}.mp4", make(4), fps=8)
    return folder


SELECTORS = ("uniform", "frame-difference", "run-length", "motion-vectors")


def test_evaluate_end_to_end_on_three_videos_and_a_rerun_skips_finished_rows(videos, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["evaluate", str(videos), "--out", str(out), "--selectors", ",".join(SELECTORS), "--budgets", "0.1,0.5",
            "--quiet"]
    assert main(args) == 0
    assert "24 row(s) computed, 0 skipped" in capsys.readouterr().out
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 4 * 2
    assert {(r["video"], r["selector"], float(r["budget"])) for r in rows} == {
        (v, s, b) for v in ("moving.mp4", "pan.mp4", "cut.mp4")
        for s in SELECTORS for b in (0.1, 0.5)}
    for r in rows:
        budget = max(int(float(r["budget"]) * L.num_tokens), 1)
        assert int(r["frames"]) == 4 and 0 < float(r["tokens_kept"]) <= budget
        assert float(r["selector_ms_per_frame"]) > 0 and r["vit_ms_per_frame"] == r["feature_cosine"] == ""
        assert 0 < float(r["psnr_db"]) < 100
        if r["selector"] != "run-length":
            assert float(r["tokens_kept"]) == budget
    by = {(r["video"], r["selector"], r["budget"]): float(r["psnr_db"]) for r in rows}
    assert by[("moving.mp4", "frame-difference", "0.5")] > by[("moving.mp4", "frame-difference", "0.1")]
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert len(summary) == 8 and all(e["videos"] == 3 for e in summary)
    table = (out / "results.md").read_text()
    assert table.startswith("| selector | budget |") and table.count("\n") == 2 + 8
    with Image.open(out / "plot.png") as image:
        assert image.format == "PNG" and image.size == (960, 600)
        assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 8  # coloured lines, text
    lines = (out / "rows.jsonl").read_text().splitlines()

    assert main(args) == 0  # the rerun computes nothing
    assert "0 row(s) computed, 24 skipped" in capsys.readouterr().out
    assert (out / "rows.jsonl").read_text().splitlines() == lines

    write_video(videos / "pan.mp4", static_clip(4), fps=8)  # a changed file is redone, alone
    assert main(args) == 0
    assert "8 row(s) computed, 16 skipped" in capsys.readouterr().out
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 24


def test_the_model_and_the_vision_tower_add_their_rows_and_metrics(videos, tmp_path, torch_twins, capsys):
    out = tmp_path / "eval"
    args = ["evaluate", str(videos / "moving.mp4"), "--out", str(out), "--selectors", "autogaze,random", "--budgets",
            "0.05", "--max-frames", "2", "--model", str(FIXTURES / "tiny_k10"), "--vision", str(FIXTURES / "tiny_siglip"),
            "--quiet"]
    assert main(args) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["selector"] for r in rows] == ["autogaze", "random"]
    for r in rows:
        assert r["frames"] == 2 and r["tokens_kept"] == 13 and r["vit_ms_per_frame"] > 0
        assert -1 <= r["feature_cosine"] <= 1 and r["feature_cosine"] != 1


def test_bad_arguments_are_refused(videos, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", str(videos), "--out", str(tmp_path / "o"), "--selectors", "uniform,bogus"])
    assert "unknown selector(s) ['bogus']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", str(videos), "--out", str(tmp_path / "o"), "--budgets", "0.1,1.5"])
    assert "(0, 1]" in capsys.readouterr().err


def test_reconstruction_refreshes_kept_cells_at_their_resolution_and_keeps_the_rest():
    frames = torch.from_numpy(moving_object_clip(2)).permute(0, 3, 1, 2).float()
    masks = [torch.zeros(2, n) for n in L.tokens_per_scale]
    masks[-1][0] = 1  # frame 0: every finest cell (exact at 224: the finest scale is the frame itself)
    masks[-1][1, 17] = 1  # frame 1: one cell, row 1 col 3 -> pixels [16:32, 48:64]
    recon = Reconstruction(L)
    scores = recon.update(frames, masks)
    expected = frames[0].clone()
    expected[:, 16:32, 48:64] = frames[1][:, 16:32, 48:64]
    mse = float(((expected - frames[1]) ** 2).mean())
    assert math.isinf(scores[0]) and scores[1] == pytest.approx(10 * math.log10(255 ** 2 / mse))
    # a coarse cell refreshes its whole area with the frame as its scale sees it (blurred), not exactly
    coarse = [torch.zeros(1, n) for n in L.tokens_per_scale]
    coarse[0][0] = 1  # all 4 cells of the 2 x 2 scale
    blurred = Reconstruction(L).update(frames[:1], coarse)
    assert 10 < blurred[0] < 40
    assert recon.psnr == pytest.approx(10 * math.log10(255 ** 2 / (mse / 2)))
    assert np.isfinite(recon.psnr)
