"""Long videos streamed clip by clip (issue 13, item 6), and tiles built batch by batch.

Oracles: the tiled model call on the whole clip's canvas (``grid.prepare`` / ``grid.place``) clip
by clip, Pillow's own bilinear resize of float images, Pillow's GIF quantisation, the interframe
view of the whole video, frames counted alive through weak references while the stream runs.
"""

from __future__ import annotations

import csv
import gc
import math
import weakref

import numpy as np
import pytest
import torch
from conftest import FIXTURES
from PIL import Image

from autogaze_fast import AutoGaze
from autogaze_fast.media.synthetic import synthetic_clip
from autogaze_fast.processing.autogaze import AutoGazeImageProcessor
from autogaze_fast.tiling.grid import TileGrid, resize_region

av = pytest.importorskip("av")

from autogaze_fast.media.video import read_video, write_video  # noqa: E402


@pytest.fixture(autouse=True)
def _twins(torch_twins):
    """The fast model on its CPU torch twins."""


@pytest.fixture(scope="module")
def model():
    return AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl="fast")


@pytest.fixture(scope="module")
def processor():
    return AutoGazeImageProcessor.from_pretrained(FIXTURES / "tiny_k10")


@pytest.fixture
def clips_of_two(model, monkeypatch):
    monkeypatch.setattr(model.config, "max_num_frames", 2)
    return model


# ------------------------------------------------------------------ tiles placed batch by batch
@pytest.mark.parametrize("out_hw", [(224, 448), (50, 120), (37, 301), (100, 300)])
def test_resize_region_is_pillows_bilinear(out_hw):
    """Float32 resize vs Pillow's own bilinear resize of a float ('F') image (shrinks and stretches)."""
    img = np.random.default_rng(0).random((100, 300)).astype(np.float32)
    pil = np.asarray(Image.fromarray(img, mode="F").resize(out_hw[::-1], resample=Image.Resampling.BILINEAR))
    ours = resize_region(torch.from_numpy(img), *out_hw, slice(None), slice(None)).numpy()
    np.testing.assert_allclose(ours, pil, atol=1e-6, rtol=0)


@pytest.mark.parametrize("hw, policy", [((300, 500), "anyres"), ((1080, 1920), "anyres"), ((250, 230), "pad"),
                                        ((90, 400), "resize"), ((2160, 3840), "anyres")])
def test_place_tiles_equals_cut_of_the_whole_canvas(hw, policy):
    grid = TileGrid.plan(*hw, policy=policy)
    video = torch.randn(2, 1, 3, *hw, generator=torch.Generator().manual_seed(0))
    whole = grid.cut(grid.place(video))
    total = 2 * grid.n_tiles
    for start, stop in [(0, total), (0, 1), (grid.cols - 1, grid.cols + 2), (total - 3, total), (5, 5)]:
        if 0 <= start <= stop <= total:
            assert torch.equal(grid.place_tiles(video, start, stop), whole[start:stop]), (start, stop)
    with pytest.raises(ValueError, match="outside"):
        grid.place_tiles(video, 0, total + 1)


def test_string_path_never_builds_the_canvas(model, monkeypatch):
    """tiles='anyres' on normalised source-size frames: TileGrid.place (the whole canvas) is never
    called, at most tile_batch_size tiles exist at a time, and the gaze equals the canvas call."""
    video = torch.randn(1, 2, 3, 300, 500, generator=torch.Generator().manual_seed(1))
    grid = TileGrid.plan(300, 500)
    with torch.inference_mode():
        want = model({"video": grid.place(video)}, tiles=grid, gazing_ratio=0.2)
    sizes = []
    real_place_tiles = TileGrid.place_tiles

    def recording(self, v, start=0, stop=None):
        out = real_place_tiles(self, v, start, stop)
        sizes.append(out.shape[0])
        return out

    def refuse(self, v):
        raise AssertionError("the whole canvas was built")

    monkeypatch.setattr(TileGrid, "place", refuse)
    monkeypatch.setattr(TileGrid, "place_tiles", recording)
    with torch.inference_mode():
        got = model({"video": video}, tiles="anyres", tile_batch_size=4, gazing_ratio=0.2)
    assert sizes == [4, 2]
    for a, b in zip(got["gazing_mask"], want["gazing_mask"]):
        assert torch.equal(a, b)
    assert torch.equal(got["tile_gazing_info"][0]["gazing_pos"], want["tile_gazing_info"][0]["gazing_pos"])


# ------------------------------------------------------------------ the stream equals the clip-by-clip call
@pytest.mark.parametrize("policy", ["anyres", "pad"])
def test_gaze_video_equals_the_tiled_call_clip_by_clip(clips_of_two, processor, policy):
    frames = synthetic_clip(5, size=(120, 250), seed=3)
    grid = TileGrid.plan(120, 250, policy=policy)
    clips = list(clips_of_two.gaze_video(frames, processor, tiles=policy, tile_batch_size=1, gazing_ratio=0.2,
                                         task_loss_requirement=None))
    assert [(c.start, c.end) for c in clips] == [(0, 2), (2, 4), (4, 5)]
    for c in clips:
        with torch.inference_mode():
            want = clips_of_two({"video": grid.prepare(frames[c.start:c.end], processor)}, tiles=grid, gazing_ratio=0.2)
        for a, b in zip(want["gazing_mask"], c.gazing_mask):
            assert torch.equal(a, b)
        assert torch.equal(want["cells"].frame + c.start, c.cells.frame)
        assert torch.equal(want["cells"].box, c.cells.box)
        info = want["tile_gazing_info"][0]
        for key in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame"):
            assert torch.equal(info[key], c.tile_gazing_info[key]), key
        np.testing.assert_array_equal(c.frames, frames[c.start:c.end])


def test_gaze_video_from_a_file_an_iterator_and_an_array_agree(clips_of_two, processor, tmp_path):
    path = write_video(tmp_path / "clip.mp4", synthetic_clip(5, size=(64, 96), seed=5), fps=4)
    decoded = read_video(path)

    def cells(source, **kw):
        out = [(c.start, c.end, c.cells.box, c.cells.frame)
               for c in clips_of_two.gaze_video(source, processor, tiles="anyres", gazing_ratio=0.3, **kw)]
        return out

    want = cells(decoded)
    for got in (cells(path), cells(iter(list(decoded))), cells(torch.from_numpy(decoded))):
        assert [(s, e) for s, e, _, _ in got] == [(0, 2), (2, 4), (4, 5)]
        for (_, _, box, frame), (_, _, box2, frame2) in zip(got, want):
            assert torch.equal(box, box2) and torch.equal(frame, frame2)
    assert [(s, e) for s, e, _, _ in cells(path, max_frames=3)] == [(0, 2), (2, 3)]
    untiled = list(clips_of_two.gaze_video(decoded, processor, gazing_ratio=0.3, task_loss_requirement=None))
    with torch.inference_mode():
        direct = clips_of_two({"video": processor(decoded[:2]).pixel_values[None]}, gazing_ratio=0.3, generate_only=True)
    assert torch.equal(untiled[0].tile_gazing_info["gazing_pos"], direct["gazing_pos"])


class CountingFrames:
    """A frame source that records, each time it hands out a frame, how many frames it handed out
    before are still alive somewhere, and how many of the objects in ``watched`` (clips the stream
    yielded) are (weak references)."""

    def __init__(self, n: int, h: int = 120, w: int = 250) -> None:
        self.frames = synthetic_clip(n, size=(h, w), seed=7)
        self.refs: list[weakref.ref] = []
        self.watched: list[weakref.ref] = []
        self.alive_frames: list[int] = []
        self.alive_watched: list[int] = []

    def __iter__(self):
        for f in self.frames:
            gc.collect()
            self.alive_frames.append(sum(r() is not None for r in self.refs))
            self.alive_watched.append(sum(r() is not None for r in self.watched))
            frame = f.copy()
            self.refs.append(weakref.ref(frame))
            yield frame
            del frame

    @property
    def produced(self) -> int:
        return len(self.refs)


@pytest.mark.parametrize("keep_frames", [False, True])
def test_the_stream_holds_one_clip_at_most(clips_of_two, processor, keep_frames):
    """7 frames in clips of 2: the stream reads no frame ahead of the clip it gazes, keeps at most
    the one frame it is copying (the clip is copied into one array), and while it gathers the next
    clip it holds nothing of a clip it has handed on (the caller dropped its own reference)."""
    source = CountingFrames(7)
    count = 0
    for clip in clips_of_two.gaze_video(source, processor, tiles="anyres", tile_batch_size=1, gazing_ratio=0.1,
                                        keep_frames=keep_frames):
        assert source.produced == clip.end, "frames are read lazily, one clip at a time"
        assert (clip.frames is not None) == keep_frames
        source.watched += [weakref.ref(clip)] + ([weakref.ref(clip.frames)] if keep_frames else [])
        count += 1
        del clip
    assert count == 4
    assert max(source.alive_frames) <= 1, source.alive_frames
    assert max(source.alive_watched) == 0, source.alive_watched


def test_iter_clips_holds_one_clip_at_most():
    from autogaze_fast.tiling.stream import iter_clips

    source = CountingFrames(7, 20, 24)
    sizes = []
    for clip in iter_clips(source, 3):
        sizes.append(len(clip))
        np.testing.assert_array_equal(clip, source.frames[source.produced - len(clip):source.produced])
        source.watched.append(weakref.ref(clip.base if clip.base is not None else clip))
        del clip
    assert sizes == [3, 3, 1]
    assert max(source.alive_frames) <= 1 and max(source.alive_watched) == 0
    assert [len(c) for c in iter_clips(source.frames, 3, max_frames=4)] == [3, 1]


def test_stream_bad_input(model, processor):
    with pytest.raises(ValueError, match="one frame size"):
        list(model.gaze_video([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 48, 3), np.uint8)], processor))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        list(model.gaze_video([np.zeros((32, 32, 3), np.float32)], processor))
    with pytest.raises(ValueError, match="no frames"):
        list(model.gaze_video([], processor))
    with pytest.raises(ValueError, match="one gazing_ratio"):
        list(model.gaze_video([np.zeros((32, 32, 3), np.uint8)], processor, gazing_ratio=[0.1]))
    with pytest.raises(ValueError, match="clip_frames=32"):
        list(model.gaze_video([np.zeros((32, 32, 3), np.uint8)], processor, clip_frames=32))


# ------------------------------------------------------------------ streamed pictures
def test_interframe_in_pieces_equals_the_whole():
    from autogaze_fast.media.interframe import interframe_stream, psnr_ema

    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (7, 5, 6, 3), dtype=np.uint8)
    masks = rng.random((7, 5, 6)) < 0.4
    whole = interframe_stream(frames, masks, 3)
    pieces, prev = [], None
    for s in range(0, 7, 2):
        pieces.append(interframe_stream(frames[s:s + 2], masks[s:s + 2], 3, first_frame=s, previous=prev))
        prev = pieces[-1][-1]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    with pytest.raises(ValueError, match="previous output frame"):
        interframe_stream(frames[1:3], masks[1:3], 3, first_frame=1)
    values = [math.inf, 20.0, 31.0, math.inf, 12.0]
    first = psnr_ema(values[:2])
    np.testing.assert_array_equal(np.concatenate([first, psnr_ema(values[2:], start=first[-1])]), psnr_ema(values))


def test_gif_sink_streams_pillows_quantised_frames(tmp_path):
    from autogaze_fast.media.sinks import open_frame_sink

    frames = synthetic_clip(5, size=(47, 63), seed=1)
    with open_frame_sink(tmp_path / "out.gif", fps=5) as sink:
        sink.write(frames[:2])
        sink.write(frames[2:])
    gif = Image.open(tmp_path / "out.gif")
    assert gif.n_frames == 5 and gif.size == (63, 47) and gif.info["loop"] == 0 and gif.info["duration"] == 200
    for i in range(5):
        gif.seek(i)
        want = Image.fromarray(frames[i]).convert("P", palette=Image.Palette.ADAPTIVE).convert("RGB")
        np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), np.asarray(want))
    assert read_video(tmp_path / "out.gif").shape == (5, 47, 63, 3)


def test_sinks_leave_nothing_behind_on_error(tmp_path):
    from autogaze_fast.media.sinks import open_frame_sink

    for name in ("a.gif", "a.mp4", "a.png"):
        with pytest.raises(RuntimeError, match="boom"):
            with open_frame_sink(tmp_path / name) as sink:
                sink.write(synthetic_clip(1, size=(32, 32)))
                raise RuntimeError("boom")
        with pytest.raises(ValueError, match="every frame of a stream has one size"):
            with open_frame_sink(tmp_path / name) as sink:
                sink.write(synthetic_clip(1, size=(32, 32)))
                sink.write(synthetic_clip(1, size=(32, 48)))
    assert list(tmp_path.iterdir()) == []


def test_cli_streams_clips_to_the_picture_and_csv(tmp_path, capsys, monkeypatch):
    """gaze --chunk-frames 2 on 5 frames: never decodes the whole video, hands the writer one clip
    at a time, and the interframe CSV equals the view of the whole video under the streamed gaze."""
    import autogaze_fast.media.video
    from autogaze_fast.cli.main import main
    from autogaze_fast.cli.views import InterframeView
    from autogaze_fast.media.sinks import FrameSink
    from autogaze_fast.tiling.stream import gaze_video

    path = write_video(tmp_path / "clip.mp4", synthetic_clip(5, size=(120, 250), seed=2), fps=4)
    decoded = read_video(path)
    monkeypatch.setattr(autogaze_fast.media.video, "read_video", lambda *a, **k: pytest.fail("the whole video was decoded"))
    written = []
    real_write = FrameSink.write
    monkeypatch.setattr(FrameSink, "write", lambda self, f: (written.append(len(f)), real_write(self, f)))
    args = ["gaze", str(path), "--model", str(FIXTURES / "tiny_k10"), "--gazing-ratio", "0.2", "--quiet",
            "--chunk-frames", "2", "--tiles", "anyres"]
    assert main(args + ["--out", str(tmp_path / "overlay.mp4")]) == 0
    assert written == [2, 2, 1]
    written.clear()
    assert main(args + ["--view", "interframe", "--keyframe-every", "3", "--out", str(tmp_path / "inter.gif")]) == 0
    assert written == [2, 2, 1]
    assert "frames=5" in capsys.readouterr().out

    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10")
    processor = AutoGazeImageProcessor.from_pretrained(FIXTURES / "tiny_k10")
    clips = list(gaze_video(model, decoded, processor, tiles="anyres", clip_frames=2, gazing_ratio=0.2,
                            task_loss_requirement=0.7))
    frame = np.concatenate([c.cells.frame.numpy() for c in clips])
    box = np.concatenate([c.cells.box.numpy() for c in clips])
    whole = InterframeView(3).update(decoded, frame, box, 0)
    rows = list(csv.DictReader(open(tmp_path / "inter.csv")))
    assert [int(r["keyframe"]) for r in rows] == [1, 0, 0, 1, 0]
    for r, p, e, g in zip(rows, whole["psnr"], whole["psnr_ema"], whole["gazed_fraction"]):
        assert float(r["psnr"]) == pytest.approx(p, abs=1e-4) and float(r["psnr_ema"]) == pytest.approx(e, abs=1e-4)
        assert float(r["gazed_fraction"]) == pytest.approx(g, abs=1e-6)
    assert np.isfinite([float(r["psnr"]) for r in rows][1:3]).all()


def test_encoder_streams_a_file_clip_by_clip(tmp_path, monkeypatch):
    """encoder.encode_stream(path) / encoder(path) decode clip by clip (never the whole video) and give
    the features of the decoded frames encoded as an array; anyres tiles included."""
    from extract_videos import tiny_checkpoints

    import autogaze_fast.media.video
    from autogaze_fast.encoder import ClipFeatures, GazedVideoEncoder

    gaze_dir, vision_dir = tiny_checkpoints(tmp_path / "ckpt")
    encoder = GazedVideoEncoder.from_pretrained(gaze_dir, vision_dir, impl="fast", device="cpu", num_frames=2,
                                                gazing_ratio=0.2, tiles="anyres", tile_batch_size=1)
    path = write_video(tmp_path / "clip.mp4", synthetic_clip(5, size=(120, 250), seed=6), fps=4)
    want = encoder(read_video(path))
    monkeypatch.setattr(autogaze_fast.media.video, "read_video", lambda *a, **k: pytest.fail("the whole video was decoded"))
    clips = list(encoder.encode_stream(path))
    assert [c.num_frames for c in clips] == [2, 2, 1]
    for got in (ClipFeatures.concat(clips), encoder(path)):
        torch.testing.assert_close(got.pooled, want.pooled, rtol=0, atol=0)
        assert torch.equal(got.token_frame, want.token_frame) and torch.equal(got.token_box, want.token_box)
    assert [c.num_frames for c in encoder.encode_stream(path, max_frames=3)] == [2, 1]
