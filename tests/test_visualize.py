"""gaze_overlay (what is dimmed, outlined, left alone) and the atomic savers."""

import numpy as np
import pytest
import torch
from PIL import Image

from autogaze_fast.synthetic import synthetic_clip
from autogaze_fast.visualize import SCALE_COLOURS, gaze_overlay, save_gaze_grid, save_gaze_video

H = W = 112  # 2x2 grid -> 56 px cells, 4x4 -> 28 px, 7x7 -> 16 px


@pytest.fixture(scope="module")
def frames():
    return synthetic_clip(num_frames=3, size=H, seed=2)


def empty_masks(t=3, grids=(2, 4, 7)):
    return [np.zeros((t, g * g), np.int64) for g in grids]


def cell(y, x, g, size=H):
    """Slices of grid cell (y, x) of a g x g grid over a size x size frame."""
    step = size // g
    return slice(y * step, (y + 1) * step), slice(x * step, (x + 1) * step)


def test_shape_and_dtype(frames):
    out = gaze_overlay(frames, empty_masks(), scales=[32, 64, 112])
    assert out.shape == frames.shape and out.dtype == np.uint8


def test_nothing_gazed_dims_everything(frames):
    out = gaze_overlay(frames, empty_masks(), dim=0.25)
    np.testing.assert_array_equal(out, np.rint(frames * np.float32(0.25)).astype(np.uint8))


def test_gazed_cell_kept_with_outline_others_dimmed(frames):
    masks = empty_masks()
    masks[1][1, 4 * 2 + 3] = 1  # frame 1, 4x4 grid, row 2, column 3
    out = gaze_overlay(frames, masks, dim=0.5, thickness=2)
    ys, xs = cell(2, 3, 4)
    inner = (slice(ys.start + 2, ys.stop - 2), slice(xs.start + 2, xs.stop - 2))
    np.testing.assert_array_equal(out[1][inner], frames[1][inner])  # inside: untouched
    ring = np.ones((28, 28), bool)
    ring[2:-2, 2:-2] = False
    assert (out[1][ys, xs][ring] == SCALE_COLOURS[1]).all()  # 2-px outline in scale 1's colour
    dimmed = np.rint(frames * np.float32(0.5)).astype(np.uint8)
    outside = np.ones((H, W), bool)
    outside[ys, xs] = False
    np.testing.assert_array_equal(out[1][outside], dimmed[1][outside])
    np.testing.assert_array_equal(out[0], dimmed[0])  # other frames: nothing gazed
    np.testing.assert_array_equal(out[2], dimmed[2])


def test_coarse_scale_covers_a_quarter(frames):
    masks = empty_masks()
    masks[0][:, 0] = 1  # top-left quarter, every frame
    out = gaze_overlay(frames, masks, thickness=1)
    ys, xs = cell(0, 0, 2)
    np.testing.assert_array_equal(out[:, 1:55, 1:55], frames[:, 1:55, 1:55])
    assert (out[:, 0, :56] == SCALE_COLOURS[0]).all() and (out[:, :56, 55] == SCALE_COLOURS[0]).all()
    assert (out[:, 56:, 56:] <= frames[:, 56:, 56:]).all() and (out[:, 56:, 56:] != frames[:, 56:, 56:]).any()


def test_finer_outline_drawn_over_coarser(frames):
    masks = empty_masks()
    masks[0][:, 0] = 1  # coarse top-left cell
    masks[2][:, 0] = 1  # fine top-left cell shares the top-left corner
    out = gaze_overlay(frames, masks, thickness=1)
    assert (out[:, 0, 0] == SCALE_COLOURS[2]).all()
    assert (out[:, 0, 40] == SCALE_COLOURS[0]).all()  # beyond the 16-px fine cell: coarse outline


def test_all_gazed_nothing_dimmed(frames):
    masks = empty_masks()
    masks[2][:] = 1
    out = gaze_overlay(frames, masks, thickness=1)
    border = np.zeros((H, W), bool)
    for k in range(7):
        border[k * 16, :] = border[k * 16 + 15, :] = border[:, k * 16] = border[:, k * 16 + 15] = True
    np.testing.assert_array_equal(out[:, ~border], frames[:, ~border])
    assert (out[:, border] == SCALE_COLOURS[2]).all()


def test_uneven_grid_covers_whole_frame():
    # 100 px over a 7x7 grid: cells of 14 or 15 px, outlines at every cell edge, last cell reaches the edge
    frames = np.full((1, 100, 100, 3), 200, np.uint8)
    masks = [np.ones((1, 49), bool)]
    out = gaze_overlay(frames, masks, thickness=1)
    assert (out[0, :, 99] == SCALE_COLOURS[0]).all() and (out[0, 99, :] == SCALE_COLOURS[0]).all()
    assert (out[0] != 0).all()  # nothing dimmed: gazed everywhere
    inner_rows = [y for y in range(100) if (out[0, y, :] == 200).any()]
    assert len(inner_rows) == 100 - 2 * 7  # each of the 7 cells loses its first and last row


def test_accepts_torch_and_batched_masks(frames):
    masks = empty_masks()
    masks[1][:, 5] = 1
    ref = gaze_overlay(frames, masks)
    as_torch = [torch.from_numpy(m)[None].float() for m in masks]  # (1, T, n_s) float, as AutoGaze returns
    np.testing.assert_array_equal(gaze_overlay(torch.from_numpy(frames), as_torch, scales="32+64+112"), ref)


@pytest.mark.parametrize(
    "masks, scales, match",
    [
        ([np.zeros((3, 5))], None, "square grid"),
        ([np.zeros((2, 4))], None, r"T=3"),
        ([np.full((3, 4), 0.5)], None, "only 0 and 1"),
        ([np.zeros((2, 3, 4))], None, "batch size 2"),
        ([np.zeros((3, 4)), np.zeros((3, 16))], [32], "one mask per scale"),
        ([np.zeros((3, 4)), np.zeros((3, 16))], [32, 112], "do not match scales"),
        ([], None, "empty"),
        (np.zeros((3, 4)), None, "list"),
    ],
)
def test_bad_masks(frames, masks, scales, match):
    with pytest.raises(ValueError, match=match):
        gaze_overlay(frames, masks, scales=scales)


def test_bad_frames():
    with pytest.raises(ValueError, match="uint8"):
        gaze_overlay(np.zeros((1, 8, 8, 3), np.float32), [np.zeros((1, 4))])
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        gaze_overlay(np.zeros((8, 8, 3), np.uint8), [np.zeros((1, 4))])
    with pytest.raises(ValueError, match="dim"):
        gaze_overlay(np.zeros((1, 8, 8, 3), np.uint8), [np.zeros((1, 4))], dim=2.0)


# ------------------------------------------------------------------ saving
def test_save_grid(tmp_path, frames):
    path = save_gaze_grid(tmp_path / "grid.png", frames, columns=2, gap=3)
    img = np.asarray(Image.open(path))
    assert img.shape == (2 * H + 3, 2 * W + 3, 3)
    np.testing.assert_array_equal(img[:H, W + 3 :], frames[1])
    assert (img[H + 3 :, W + 3 :] == 255).all()  # 3 frames in a 2x2 grid: last tile blank
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_save_gif(tmp_path, frames):
    path = save_gaze_video(tmp_path / "gaze.gif", frames, fps=5)
    with Image.open(path) as img:
        assert img.n_frames == 3 and img.size == (W, H)


def test_save_mp4(tmp_path, frames):
    pytest.importorskip("av")
    from autogaze_fast.video import read_video

    back = read_video(save_gaze_video(tmp_path / "gaze.mp4", frames, fps=5))
    assert back.shape == frames.shape


def test_failed_save_leaves_no_file(tmp_path, frames, monkeypatch):
    target = tmp_path / "grid.png"
    target.write_bytes(b"old")

    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"half an image")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    for save in (lambda: save_gaze_grid(target, frames), lambda: save_gaze_video(tmp_path / "x.gif", frames)):
        with pytest.raises(OSError, match="disk full"):
            save()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_grid_needs_known_suffix(tmp_path, frames):
    with pytest.raises(ValueError, match="suffix"):
        save_gaze_grid(tmp_path / "grid.unknown", frames)
    assert list(tmp_path.iterdir()) == []
