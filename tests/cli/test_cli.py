"""The command line: demo with a local checkpoint and with the random fallback, gaze on a video file,
chunking, and clear errors for unreadable input."""

import importlib.util
import re

import numpy as np
import pytest
import torch
from conftest import FIXTURES, SHARED

from autogaze_fast import AutoGaze
from autogaze_fast.cli.main import main
from autogaze_fast.media.video import write_video
from autogaze_fast.tiling.chunks import chunk_bounds, gaze_in_chunks

#: Video files need PyAV (an optional extra); without it these tests cannot make or read one.
needs_av = pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="needs PyAV: pip install av")


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


@needs_av
def test_gaze_video_file(tmp_path, capsys):
    """The printed summary is the gaze of the decoded, preprocessed clip: per-frame counts (pads
    excluded) and the kept ratio equal a direct call of the model with the CLI's defaults
    (the checkpoint's processor, task-loss requirement 0.7), and the overlay PNG is written."""
    from autogaze_fast.media.video import read_video
    from autogaze_fast.processing.autogaze import AutoGazeImageProcessor

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


@needs_av
def test_gaze_unreadable_video(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage")
    assert main(["gaze", str(bad), "--model", str(FIXTURES / "tiny_k10")]) == 2
    assert "error" in capsys.readouterr().err


@needs_av
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


@needs_av
def test_gaze_missing_model_says_how_to_get_it_or_allow_random(tmp_path, capsys):
    frames = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames, fps=4)
    assert main(["gaze", str(video), "--model", str(tmp_path / "no-such-dir")]) == 2
    err = capsys.readouterr().err
    assert "huggingface-cli download nvidia/AutoGaze --local-dir DIR" in err and "--model DIR" in err
    assert "--allow-random" in err


@needs_av
def test_gaze_allow_random_on_non_square_frames_notes_the_squash(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    frames = np.zeros((1, 36, 64, 3), dtype=np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames, fps=4)
    assert main(["gaze", str(video), "--model", str(tmp_path / "no-such-dir"), "--allow-random",
                 "--gazing-ratio", "0.05", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "RANDOMLY INITIALISED" in captured.err
    assert "note: 36x64 (H x W) frames are squashed to 224x224 for the gaze model" in captured.out
    assert "pass --tiles anyres" in captured.out


@needs_av
def test_square_frames_get_no_squash_note(tmp_path, capsys):
    frames = np.zeros((1, 48, 48, 3), dtype=np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames, fps=4)
    assert main(["gaze", str(video), "--model", str(FIXTURES / "tiny_k10"), "--gazing-ratio", "0.05", "--quiet"]) == 0
    assert "squashed" not in capsys.readouterr().out


@needs_av
def test_gaze_refuses_a_too_thin_video_with_the_reason(tmp_path, capsys):
    frames = np.zeros((2, 64, 4, 3), dtype=np.uint8)
    video = write_video(tmp_path / "thin.mp4", frames, fps=4)
    assert main(["gaze", str(video), "--model", str(FIXTURES / "tiny_k10"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "64x4 (H x W)" in err and "at least 16 px" in err


def test_chunked_overlay_numbers_frames_across_chunks(tmp_path):
    """The demo's writer (each chunk's overlay streamed into the file as it is gazed)."""
    import argparse

    from PIL import Image

    from autogaze_fast.cli.demo import gaze_and_report
    from autogaze_fast.media.caption import gaze_caption
    from autogaze_fast.media.draw import gaze_overlay
    from autogaze_fast.media.synthetic import synthetic_clip
    from autogaze_fast.processing.autogaze import AutoGazeImageProcessor

    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl="reference")
    frames = synthetic_clip(num_frames=3, size=64, seed=1)
    processor = AutoGazeImageProcessor.from_pretrained(FIXTURES / "tiny_k10")
    video = processor(frames).pixel_values[None]
    outputs = [out for _, _, out in gaze_in_chunks(model, video, chunk_frames=2, progress=False, gazing_ratio=0.1)]
    args = argparse.Namespace(chunk_frames=2, gazing_ratio=0.1, task_loss_requirement=None, quiet=True,
                              out=str(tmp_path / "grid.png"))
    gaze_and_report(model, processor, frames, args)
    # oracle: one overlay of the whole clip, numbered 0, 1, 2, captioned with the model's folder, ratio and stop
    masks = [torch.cat([out["gazing_mask"][k][0] for out in outputs]) for k in range(len(model.scales))]
    whole = gaze_overlay(frames, masks, model.scales, caption=gaze_caption(str(FIXTURES / "tiny_k10"), 0.1, None))
    ph = whole.shape[1]  # the frame and its caption strip
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    np.testing.assert_array_equal(grid[ph + 2:2 * ph + 2, :64], whole[2])  # 2x2 grid, gap 2: frame 2 is bottom left


# ------------------------------------------------------------------ pictures on the source frames (issue 13)
TILED_ARGS = ["--model", str(FIXTURES / "tiny_k10"), "--gazing-ratio", "0.2", "--task-loss-requirement", "-1000",
              "--quiet"]


def _direct_tiled_cells(video, frames_hw=(120, 250)):
    """Oracle: the model called directly on the AnyRes canvas of the decoded clip."""
    from autogaze_fast.media.video import read_video
    from autogaze_fast.processing.autogaze import AutoGazeImageProcessor
    from autogaze_fast.tiling.grid import TileGrid

    frames = read_video(video)
    grid = TileGrid.plan(*frames_hw, policy="anyres")
    canvas = grid.prepare(frames, AutoGazeImageProcessor.from_pretrained(FIXTURES / "tiny_k10"))
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10")
    with torch.inference_mode():
        out = model({"video": canvas}, tiles=grid, gazing_ratio=0.2, task_loss_requirement=-1000)
    return frames, grid, out["cells"]


def _shrunk(box, h, w):
    """The pixels of the box left inside its outline: 1 px in from each edge, 2 px from one on the frame's edge."""
    x0, y0, x1, y1 = box.tolist()
    step = [1.0 + (x0 < 0.5), 1.0 + (y0 < 0.5), -1.0 - (x1 > w - 0.5), -1.0 - (y1 > h - 0.5)]
    return _inside(box + torch.tensor(step), h, w)


def _inside(box, h, w):
    """Pixels whose centre lies in the box [x0, x1) x [y0, y1)."""
    x0, y0, x1, y1 = box.tolist()
    yc, xc = np.arange(h) + 0.5, np.arange(w) + 0.5
    return ((yc >= y0) & (yc < y1))[:, None] & ((xc >= x0) & (xc < x1))[None, :]


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory):
    """3 frames of 120 x 250: AnyRes plans 1 x 2 tiles of 224 (a 224 x 448 canvas)."""
    from autogaze_fast.media.synthetic import synthetic_clip

    return write_video(tmp_path_factory.mktemp("wide") / "wide.mp4", synthetic_clip(3, size=(120, 250), seed=3), fps=4)


@needs_av
def test_gaze_tiles_anyres_draws_cells_where_they_are_on_the_source_frame(wide_clip, tmp_path, capsys):
    """The overlay PNG is drawn on the 120 x 250 source frames: pixel by pixel (outside the labels),
    outlines of the finest scale whose gazed box has the pixel on its 1-px border, the source where
    any gazed box covers it, the dimmed source elsewhere — boxes from a direct tiled model call."""
    from PIL import Image

    from autogaze_fast.media.caption import STRIP_BACKGROUND
    from autogaze_fast.media.draw import SCALE_COLOURS

    out_png = tmp_path / "overlay.png"
    assert main(["gaze", str(wide_clip), *TILED_ARGS, "--tiles", "anyres", "--tile-batch-size", "1",
                 "--out", str(out_png)]) == 0
    text = capsys.readouterr().out
    assert "tiles: anyres, 1x2 = 2 tiles of 224 px (canvas 224x448, source 120x250)" in text
    assert "squashed" not in text and "N=530" in text
    frames, grid, cells = _direct_tiled_cells(wide_clip)
    printed = [int(c) for c in re.search(r"pads excluded\): ([\d ]+)", text).group(1).split()]
    assert printed == np.bincount(cells.frame.numpy(), minlength=3).tolist() and min(printed) > 50
    assert set(cells.scale.tolist()) == {0, 1, 2, 3} and set(cells.tile.tolist()) == {0, 1}
    # each box is its stitched cell (row, col) of the 224 x 448 canvas scaled onto the 120 x 250 source
    side = 224 / torch.tensor([2, 4, 7, 14])[cells.scale]
    by_hand = torch.stack([cells.col * side * 250 / 448, cells.row * side * 120 / 224,
                           (cells.col + 1) * side * 250 / 448, (cells.row + 1) * side * 120 / 224], dim=1)
    torch.testing.assert_close(cells.box, by_hand.float())

    grid_png = np.asarray(Image.open(out_png))
    h, w = 120, 250
    ph = (grid_png.shape[0] - 2) // 2  # each picture: the frame, then its caption strip
    assert grid_png.shape == (2 * ph + 2, 2 * w + 2, 3) and ph > h  # 3 pictures in a 2 x 2 grid, gap 2
    for t in range(3):
        r, c = divmod(t, 2)
        shown = grid_png[r * (ph + 2):r * (ph + 2) + h, c * (w + 2):c * (w + 2) + w]
        expected = np.rint(frames[t] * np.float32(0.35)).astype(np.uint8)
        covered = np.zeros((h, w), bool)
        colour_of = np.full((h, w), -1)
        for s in range(4):  # coarse first, finer outlines on top
            for box in cells.box[(cells.frame == t) & (cells.scale == s)]:
                inside = _inside(box, h, w)
                covered |= inside
                colour_of[inside & ~_shrunk(box, h, w)] = s
        expected[covered] = frames[t][covered]
        for s in range(4):
            expected[colour_of == s] = SCALE_COLOURS[s]
        np.testing.assert_array_equal(shown, expected)  # nothing written on the frame: the text is in the strip
        assert all((colour_of == s).sum() > 0 for s in range(4)), "every scale's outlines are compared"
        assert (colour_of[:, [0, 1, w - 2, w - 1]] >= 0).any(), "outlines on the frame's edge are drawn inside it"
        assert (grid_png[r * (ph + 2) + h:r * (ph + 2) + ph, c * (w + 2):c * (w + 2) + w] == STRIP_BACKGROUND).any()


@needs_av
def test_gaze_interframe_view_writes_stream_and_csv(wide_clip, tmp_path, capsys):
    """--view interframe --keyframe-every 2 on the tiled gaze: the stream (gazed pixels from the
    current frame, the rest from the previous output, frame 2 a keyframe) in the PNG, and per frame
    PSNR against the input, its EMA and the gazed fraction in inter.csv, against a hand-made stream."""
    import csv as csv_module
    import math

    from PIL import Image

    out_png = tmp_path / "inter.png"
    assert main(["gaze", str(wide_clip), *TILED_ARGS, "--tiles", "anyres", "--view", "interframe",
                 "--keyframe-every", "2", "--out", str(out_png)]) == 0
    text = capsys.readouterr().out
    assert "interframe (keyframe every 2)" in text and "inter.csv" in text
    frames, grid, cells = _direct_tiled_cells(wide_clip)
    h, w = 120, 250
    masks = np.zeros((3, h, w), bool)
    for t, box in zip(cells.frame.tolist(), cells.box):
        masks[t] |= _inside(box, h, w)
    stream = [frames[0], np.where(masks[1][..., None], frames[1], frames[0]), frames[2]]

    rows = list(csv_module.DictReader(open(tmp_path / "inter.csv")))
    assert [int(r["frame"]) for r in rows] == [0, 1, 2] and [int(r["keyframe"]) for r in rows] == [1, 0, 1]
    mse = np.mean((stream[1].astype(np.float64) - frames[1]) ** 2)
    assert mse > 0
    assert float(rows[1]["psnr"]) == pytest.approx(10 * math.log10(255 ** 2 / mse), abs=1e-4)
    assert float(rows[0]["psnr"]) == float(rows[2]["psnr"]) == math.inf
    assert float(rows[1]["psnr_ema"]) == float(rows[2]["psnr_ema"]) == pytest.approx(float(rows[1]["psnr"]), abs=1e-4)
    for t in range(3):
        assert float(rows[t]["gazed_fraction"]) == pytest.approx(masks[t].mean(), abs=1e-6)

    from autogaze_fast.media.draw import SCALE_COLOURS

    grid_png = np.asarray(Image.open(out_png))
    ph = (grid_png.shape[0] - 2) // 2  # each picture: the stream's frame, then its caption strip
    strips = []
    for t in range(3):
        r, c = divmod(t, 2)
        picture = grid_png[r * (ph + 2):r * (ph + 2) + ph, c * (w + 2):c * (w + 2) + w]
        shown, strips = picture[:h], strips + [picture[h:]]
        ring = np.zeros((h, w), bool)  # the refreshed (gazed) cells' outlines: the rest is the stream itself
        for box in cells.box[cells.frame == t]:
            ring |= _inside(box, h, w) & ~_shrunk(box, h, w)
        np.testing.assert_array_equal(shown[~ring], stream[t][~ring])
        finest = np.array([SCALE_COLOURS[s] for s in range(4)], np.uint8)
        assert ring.any() and (shown[ring][:, None] == finest[None]).all(-1).any(-1).all(), "outlines in scale colours"
    assert (strips[0] != strips[1]).any() and (strips[1] != strips[2]).any(), "each frame's numbers are in its strip"


@needs_av
@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_gaze_interframe_without_tiles_writes_video_and_csv(tmp_path, capsys, suffix):
    from autogaze_fast.media.video import read_video

    frames = (np.random.default_rng(1).random((3, 48, 64, 3)) * 255).astype(np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames, fps=4)
    out = tmp_path / f"inter{suffix}"
    assert main(["gaze", str(video), "--model", str(FIXTURES / "tiny_k10"), "--gazing-ratio", "0.1", "--quiet",
                 "--view", "interframe", "--out", str(out)]) == 0
    assert "squashed" in capsys.readouterr().out
    assert read_video(out).shape[0] == 3
    assert len((tmp_path / "inter.csv").read_text().splitlines()) == 4


@pytest.mark.parametrize("extra, message", [
    (["--max-tiles", "4"], "--max-tiles needs --tiles"),
    (["--tile-batch-size", "4"], "--tile-batch-size needs --tiles"),
    (["--keyframe-every", "4"], "--keyframe-every needs --view interframe"),
    (["--view", "interframe", "--keyframe-every", "0"], "--keyframe-every must be >= 1"),
    (["--tiles", "anyres", "--max-tiles", "0"], "must be >= 1"),
    (["--view", "interframe", "--out", "x.csv"], "the interframe CSV is written next to it"),
])
def test_gaze_view_options_refused_before_loading(tmp_path, capsys, extra, message):
    assert main(["gaze", str(tmp_path / "not-read.mp4"), "--model", str(tmp_path / "no-model"), *extra]) == 2
    assert message in capsys.readouterr().err


@needs_av
@pytest.mark.parametrize("view", ["overlay", "interframe"])
def test_gaze_that_yields_no_clip_fails_and_leaves_no_file(tmp_path, capsys, monkeypatch, view):
    """A stream that ends before its first clip (no video file with zero decodable frames opens, so
    the stream is made empty here): a clear error, and neither the picture nor the CSV (nor a
    temporary file) is left behind."""
    import autogaze_fast.cli.views

    video = write_video(tmp_path / "clip.mp4", np.zeros((2, 32, 32, 3), dtype=np.uint8), fps=4)
    monkeypatch.setattr(autogaze_fast.cli.views, "gaze_video", lambda *args, **kwargs: iter(()))
    assert main(["gaze", str(video), "--model", str(FIXTURES / "tiny_k10"), "--quiet", "--view", view,
                 "--out", str(tmp_path / "out.png")]) == 2
    assert "no frames were gazed" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


@needs_av
def test_gaze_failing_on_its_first_clip_leaves_no_picture_or_csv(tmp_path, capsys):
    video = write_video(tmp_path / "thin.mp4", np.zeros((2, 64, 4, 3), dtype=np.uint8), fps=4)
    assert main(["gaze", str(video), "--model", str(FIXTURES / "tiny_k10"), "--quiet", "--view", "interframe",
                 "--out", str(tmp_path / "inter.gif")]) == 2
    assert "64x4 (H x W)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thin.mp4"]


# ------------------------------------------------------------------ settings and messages (issue 20)
def test_demo_prints_its_settings_and_says_what_n_is(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["demo", "--model", "nobody-here/not-a-model", "--frames", "1", "--gazing-ratio", "0.05", "--quiet"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("demo settings: model=random (NVIDIA shape, seed 0)") and "gazing_ratio=0.05" in first
    assert "task_loss_requirement=off (the default for random weights" in first and "tiles=none" in first
    assert "N=265 (N: the multi-scale cells a frame can keep, 4+16+49+196 at scales 32+64+112+224)" in out


@needs_av
def test_gaze_settings_line_and_the_stop_turned_off(tmp_path, capsys):
    """With a checkpoint the default stop is upstream's 0.7, said on the first line; `none` turns it
    off, and the counts are then those of the unstopped call."""
    from autogaze_fast.media.video import read_video
    from autogaze_fast.processing.autogaze import AutoGazeImageProcessor

    frames = (np.random.default_rng(3).random((2, 48, 48, 3)) * 255).astype(np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames, fps=4)
    base = ["gaze", str(video), "--model", str(FIXTURES / "tiny_k10"), "--quiet"]
    assert main(base) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"gaze settings: model={FIXTURES / 'tiny_k10'}") and "gazing_ratio=0.75" in first
    assert "task_loss_requirement=0.7 (the default with a checkpoint" in first and "tiles=none" in first
    assert main(base + ["--task-loss-requirement", "none"]) == 0
    text = capsys.readouterr().out
    assert "task_loss_requirement=off " in text.splitlines()[0]
    printed = [int(c) for c in re.search(r"pads excluded\): ([\d ]+)", text).group(1).split()]
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10")
    pixels = AutoGazeImageProcessor.from_pretrained(FIXTURES / "tiny_k10")(read_video(video)).pixel_values[None]
    with torch.inference_mode():
        out = model({"video": pixels}, gazing_ratio=0.75, generate_only=True)
    assert printed == [int((~p).sum()) for p in out["if_padded_gazing"].split(out["num_gazing_each_frame"].tolist(), 1)]


def test_task_loss_requirement_option_refuses_words_it_does_not_know(capsys):
    with pytest.raises(SystemExit):
        main(["gaze", "x.mp4", "--task-loss-requirement", "soon"])
    assert "expected a number (e.g. 0.7), 'none' or 'auto'" in capsys.readouterr().err


@needs_av
def test_extract_prints_its_settings(tmp_path, capsys):
    from extract_videos import tiny_checkpoints

    from autogaze_fast.media.synthetic import synthetic_clip

    gaze_dir, vision_dir = tiny_checkpoints(tmp_path / "ckpt")
    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "a.mp4", synthetic_clip(4, size=48, seed=0), fps=4)
    assert main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", str(gaze_dir), "--vision",
                 str(vision_dir), "--frequency", "2", "--quiet"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"extract settings: model={gaze_dir}") and "gazing_ratio=0.75" in first
    assert "task_loss_requirement=0.7 (the default with a checkpoint" in first and f"vision={vision_dir}" in first
    assert "frequency=2 Hz" in first and "tiles=none" in first


@needs_av
@pytest.mark.parametrize("contents", [[], ["notes.txt"]])
def test_model_folder_without_config_says_what_a_checkpoint_holds(tmp_path, capsys, monkeypatch, contents):
    from autogaze_fast.loading import CheckpointError

    folder = tmp_path / "not-a-checkpoint"
    folder.mkdir()
    for name in contents:
        (folder / name).write_text("hello")
    video = write_video(tmp_path / "clip.mp4", np.zeros((1, 32, 32, 3), dtype=np.uint8), fps=4)
    assert main(["gaze", str(video), "--model", str(folder), "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{folder} is not a checkpoint folder: there is no config.json" in err
    assert ("it is empty" if not contents else "it holds notes.txt") in err
    assert "holds config.json and model.safetensors (and usually preprocessor_config.json)" in err
    assert "autogaze-fast train" in err and "save_pretrained(DIR)" in err and "nvidia/AutoGaze" in err
    assert "--allow-random" in err
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):  # the Python API says the same
        AutoGaze.from_pretrained(folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["gaze", str(video), "--model", str(folder), "--allow-random", "--gazing-ratio", "0.05", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "not a checkpoint folder" in captured.err and "RANDOMLY INITIALISED" in captured.err
