"""Video I/O (read_video, video_info, write_video) and the synthetic demo clip."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from autogaze_fast.media.synthetic import synthetic_clip  # noqa: E402
from autogaze_fast.media.video import atomic_output, read_video, video_info, write_video  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[3] / "shared" / "video" / "example_input.mp4"
COLOURS = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255], [128, 128, 128], [255, 255, 255]],
    dtype=np.uint8,
)


@pytest.fixture(scope="module")
def colour_video(tmp_path_factory) -> Path:
    """8 frames, 48 high x 64 wide, each one solid colour, written with plain PyAV (mpeg4, high quality)."""
    path = tmp_path_factory.mktemp("video") / "colours.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"qscale": "1"}
        for c in COLOURS:
            frame = np.broadcast_to(c, (48, 64, 3)).copy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_colours(video: np.ndarray) -> np.ndarray:
    return video.reshape(video.shape[0], -1, 3).mean(axis=1)


def test_read_all_frames(colour_video):
    video = read_video(colour_video)
    assert video.shape == (8, 48, 64, 3) and video.dtype == np.uint8
    # lossy yuv420p round trip of solid colours: within a few levels
    np.testing.assert_allclose(frame_colours(video), COLOURS, atol=6)


def test_read_indices_in_given_order(colour_video):
    full = read_video(colour_video)
    for idx in ([0], [7], [3, 1, 3], np.array([6, 2, 4]), range(2, 5)):
        out = read_video(colour_video, idx)
        np.testing.assert_array_equal(out, full[list(idx)])


@pytest.mark.parametrize(
    "idx, err, match",
    [([8], ValueError, r"out of range .* has 8 frames"), ([1, 20], ValueError, r"\[20\]"), ([-1], ValueError, ">= 0"),
     ([], ValueError, "empty"), ([1.5], ValueError, "integers"), ([[0, 1]], ValueError, "1-D")],
)
def test_bad_indices(colour_video, idx, err, match):
    with pytest.raises(err, match=match):
        read_video(colour_video, idx)


def test_video_info(colour_video):
    info = video_info(colour_video)
    assert (info.num_frames, info.height, info.width) == (8, 48, 64)
    assert info.fps == pytest.approx(10.0)
    assert info.codec == "mpeg4"


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    for fn in (read_video, video_info):
        with pytest.raises(FileNotFoundError, match="nope.mp4"):
            fn(missing)


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    for fn in (read_video, video_info):
        with pytest.raises(ValueError, match="empty"):
            fn(empty)


def test_directory(tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        read_video(tmp_path)


def test_garbage_file(tmp_path):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="garbage.mp4"):
        read_video(bad)


def test_truncated_file(tmp_path, colour_video):
    # the header survives, the frame data does not
    data = colour_video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="cut.mp4"):
        read_video(cut)


def test_audio_only_file(tmp_path):
    path = tmp_path / "audio.wav"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(ValueError, match="no video stream"):
        read_video(path)


def test_missing_pyav_gives_install_hint(monkeypatch, colour_video):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(ImportError, match=r"autogaze-fast\[video\]"):
        read_video(colour_video)


# ------------------------------------------------------------------ writing
def test_write_video_round_trip(tmp_path):
    clip = synthetic_clip(num_frames=6, size=64, seed=3)
    path = write_video(tmp_path / "clip.mp4", clip, fps=12)
    info = video_info(path)
    assert (info.num_frames, info.height, info.width) == (6, 64, 64) and info.fps == pytest.approx(12)
    back = read_video(path)
    assert back.shape == clip.shape
    # lossy: H.264 crf 18 is near-transparent, but yuv420p halves the chroma resolution, which
    # blurs this clip's sharp coloured 64-px textures (PSNR ~25 dB); low frequencies survive
    psnr = 10 * np.log10(255**2 / np.mean((back.astype(float) - clip) ** 2))
    assert psnr > 22
    np.testing.assert_allclose(frame_colours(back), frame_colours(clip), atol=3)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temp file left


def test_write_video_odd_size_is_padded(tmp_path):
    clip = np.full((2, 33, 47, 3), 200, np.uint8)
    back = read_video(write_video(tmp_path / "odd.mp4", clip))
    assert back.shape == (2, 34, 48, 3)
    assert np.abs(back.astype(int) - 200).max() <= 3


def test_write_video_failure_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous content")
    calls = []

    def failing_from_ndarray(array, format):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("encoder exploded")
        return original(array, format=format)

    original = av.VideoFrame.from_ndarray
    monkeypatch.setattr(av.VideoFrame, "from_ndarray", staticmethod(failing_from_ndarray))
    with pytest.raises(RuntimeError, match="encoder exploded"):
        write_video(target, synthetic_clip(num_frames=4, size=32), fps=4)
    assert target.read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


@pytest.mark.parametrize(
    "frames, fps, match",
    [(np.zeros((2, 8, 8), np.uint8), 8, "shape"), (np.zeros((2, 8, 8, 3), np.float32), 8, "uint8"),
     (np.zeros((0, 8, 8, 3), np.uint8), 8, "empty"), (np.zeros((2, 8, 8, 3), np.uint8), 0, "fps")],
)
def test_write_video_bad_input(tmp_path, frames, fps, match):
    with pytest.raises(ValueError, match=match):
        write_video(tmp_path / "x.mp4", frames, fps=fps)
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_output(tmp_path / "no" / "such.mp4"):
            pass


# ------------------------------------------------------------------ upstream's example clip (optional)
@pytest.mark.skipif(not EXAMPLE.is_file(), reason="shared/video/example_input.mp4 not present")
def test_example_clip():
    info = video_info(EXAMPLE)
    assert (info.height, info.width) == (448, 448) and info.num_frames >= 16
    first16 = read_video(EXAMPLE, range(16))
    assert first16.shape == (16, 448, 448, 3)
    with av.open(str(EXAMPLE)) as container:  # independent decode with plain PyAV
        ref = [f.to_ndarray(format="rgb24") for _, f in zip(range(16), container.decode(video=0))]
    np.testing.assert_array_equal(first16, np.stack(ref))


# ------------------------------------------------------------------ synthetic clip
def test_synthetic_clip_shape_and_determinism():
    clip = synthetic_clip()
    assert clip.shape == (16, 224, 224, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip, synthetic_clip())
    assert (clip != synthetic_clip(seed=1)).mean() > 0.5
    assert synthetic_clip(num_frames=3, size=(40, 72)).shape == (3, 40, 72, 3)


def test_synthetic_clip_has_motion_texture_and_static_background():
    clip = synthetic_clip(num_frames=8, size=96, seed=5).astype(int)
    changed = (np.abs(np.diff(clip, axis=0)).sum(-1) > 0).mean(axis=(1, 2))
    assert (changed > 0.01).all()  # something moves every frame
    assert (changed < 0.6).all()  # ... but most of the background stays put
    assert clip.std() > 20 and len(np.unique(clip.reshape(-1, 3), axis=0)) > 50  # textured, not flat


def test_synthetic_clip_is_fast():
    synthetic_clip()
    start = time.perf_counter()
    synthetic_clip()
    assert time.perf_counter() - start < 0.5  # ~0.04 s on an idle core; generous for shared CI machines


@pytest.mark.parametrize("kwargs", [{"num_frames": 0}, {"size": 4}, {"size": (10, 2)}, {"num_shapes": -1}, {"num_frames": 2.0}])
def test_synthetic_clip_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        synthetic_clip(**kwargs)
