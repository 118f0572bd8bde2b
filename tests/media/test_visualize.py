"""gaze_overlay (what is dimmed, outlined, left alone) and the atomic savers."""

import numpy as np
import pytest
import torch
from PIL import Image

from autogaze_fast.media.draw import SCALE_COLOURS, gaze_overlay, save_gaze_grid, save_gaze_video
from autogaze_fast.media.synthetic import synthetic_clip

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
    out = gaze_overlay(frames, empty_masks(), dim=0.25, labels=False)
    np.testing.assert_array_equal(out, np.rint(frames * np.float32(0.25)).astype(np.uint8))


def test_gazed_cell_kept_with_outline_others_dimmed(frames):
    masks = empty_masks()
    masks[1][1, 4 * 2 + 3] = 1  # frame 1, 4x4 grid, row 2, column 3
    out = gaze_overlay(frames, masks, dim=0.5, thickness=2, labels=False)
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
    out = gaze_overlay(frames, masks, thickness=1, labels=False)
    ys, xs = cell(0, 0, 2)
    np.testing.assert_array_equal(out[:, 1:55, 1:55], frames[:, 1:55, 1:55])
    assert (out[:, 0, :56] == SCALE_COLOURS[0]).all() and (out[:, :56, 55] == SCALE_COLOURS[0]).all()
    assert (out[:, 56:, 56:] <= frames[:, 56:, 56:]).all() and (out[:, 56:, 56:] != frames[:, 56:, 56:]).any()


def test_finer_outline_drawn_over_coarser(frames):
    masks = empty_masks()
    masks[0][:, 0] = 1  # coarse top-left cell
    masks[2][:, 0] = 1  # fine top-left cell shares the top-left corner
    out = gaze_overlay(frames, masks, thickness=1, labels=False)
    assert (out[:, 0, 0] == SCALE_COLOURS[2]).all()
    assert (out[:, 0, 40] == SCALE_COLOURS[0]).all()  # beyond the 16-px fine cell: coarse outline


def test_all_gazed_nothing_dimmed(frames):
    masks = empty_masks()
    masks[2][:] = 1
    out = gaze_overlay(frames, masks, thickness=1, labels=False)
    border = np.zeros((H, W), bool)
    for k in range(7):
        border[k * 16, :] = border[k * 16 + 15, :] = border[:, k * 16] = border[:, k * 16 + 15] = True
    np.testing.assert_array_equal(out[:, ~border], frames[:, ~border])
    assert (out[:, border] == SCALE_COLOURS[2]).all()


def test_uneven_grid_covers_whole_frame():
    # 100 px over a 7x7 grid: cells of 14 or 15 px, outlines at every cell edge, last cell reaches the edge
    frames = np.full((1, 100, 100, 3), 200, np.uint8)
    masks = [np.ones((1, 49), bool)]
    out = gaze_overlay(frames, masks, thickness=1, labels=False)
    assert (out[0, :, 99] == SCALE_COLOURS[0]).all() and (out[0, 99, :] == SCALE_COLOURS[0]).all()
    assert (out[0] != 0).all()  # nothing dimmed: gazed everywhere
    inner_rows = [y for y in range(100) if (out[0, y, :] == 200).any()]
    assert len(inner_rows) == 100 - 2 * 7  # each of the 7 cells loses its first and last row


def test_accepts_torch_and_batched_masks(frames):
    masks = empty_masks()
    masks[1][:, 5] = 1
    ref = gaze_overlay(frames, masks, scales=[32, 64, 112])
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
    from autogaze_fast.media.video import read_video

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


# ------------------------------------------------------------------ frame numbers and legend
S = 224  # a frame large enough for a one-row legend


@pytest.fixture(scope="module")
def still():
    """The same frame three times, so any difference between output frames comes from the labels."""
    return np.repeat(synthetic_clip(num_frames=1, size=S, seed=3), 3, axis=0)


def gazed_masks(t=3):
    rng = np.random.default_rng(5)
    return [np.tile(rng.random((1, g * g)) < 0.3, (t, 1)) for g in (2, 4, 7, 14)]


def test_legend_has_one_swatch_per_scale_colour_in_scale_order(still):
    empty = [np.zeros((3, g * g), bool) for g in (2, 4, 7, 14)]  # nothing gazed: every pixel dimmed, no pure colour
    plain = gaze_overlay(still, empty, scales=[32, 64, 112, 224], labels=False)
    out = gaze_overlay(still, empty, scales=[32, 64, 112, 224])
    bottom = slice(2 * S // 3, S)
    centres = []
    for k in range(4):
        colour = np.asarray(SCALE_COLOURS[k], np.uint8)
        assert not (plain[0, bottom] == colour).all(-1).any()
        ys, xs = np.nonzero((out[0, bottom] == colour).all(-1))
        assert len(ys) >= 8 * 8  # a filled swatch, at least 8 x 8 px
        assert np.ptp(ys) < 20 and np.ptp(xs) < 20  # one compact square
        centres.append(xs.mean())
    assert centres == sorted(centres)  # coarsest scale first, left to right


def test_legend_names_follow_scales(still):
    masks = gazed_masks()
    with_scales = gaze_overlay(still, masks, scales=[32, 64, 112, 224])
    with_grids = gaze_overlay(still, masks)  # named "2x2", "4x4", ... instead of "32px", ...
    differs = (with_scales != with_grids).any(-1)
    assert differs[:, 2 * S // 3 :].any() and not differs[:, : 2 * S // 3].any()


def test_frame_numbers_differ_only_in_the_top_left_label(still):
    masks = gazed_masks()
    plain = gaze_overlay(still, masks, labels=False)
    out = gaze_overlay(still, masks)
    top_left = np.zeros((S, S), bool)
    top_left[: S // 3, : S // 2] = True
    for i in (1, 2):  # identical inputs: frames differ only where their numbers are written
        differs = (out[i] != out[0]).any(-1)
        assert differs[top_left].any() and not differs[~top_left].any()
    labelled = (out != plain).any(-1)
    assert labelled[:, top_left].any(axis=1).all()  # a number on every frame
    bottom = np.zeros((S, S), bool)
    bottom[2 * S // 3 :] = True
    assert not labelled[:, ~(top_left | bottom)].any()  # the gaze drawing is untouched elsewhere


def test_first_frame_continues_the_numbering(still):
    masks = gazed_masks()
    whole = gaze_overlay(still, masks, scales=[32, 64, 112, 224])
    tail = gaze_overlay(still[1:], [m[1:] for m in masks], scales=[32, 64, 112, 224], first_frame=1)
    np.testing.assert_array_equal(tail, whole[1:])


def test_grid_and_gif_carry_the_frame_numbers(tmp_path, still):
    out = gaze_overlay(still, gazed_masks(), scales=[32, 64, 112, 224])
    grid = np.asarray(Image.open(save_gaze_grid(tmp_path / "grid.png", out, columns=3, gap=2)))
    cells = [grid[:S, c * (S + 2) : c * (S + 2) + S] for c in range(3)]
    for cell, frame in zip(cells, out):
        np.testing.assert_array_equal(cell, frame)
    assert (cells[0][: S // 3, : S // 2] != cells[1][: S // 3, : S // 2]).any()
    with Image.open(save_gaze_video(tmp_path / "gaze.gif", out, fps=5)) as gif:
        gif_frames = []
        for i in range(3):
            gif.seek(i)
            gif_frames.append(np.asarray(gif.convert("RGB")))
    assert (gif_frames[0][: S // 3, : S // 2] != gif_frames[2][: S // 3, : S // 2]).any()


@pytest.mark.parametrize("size", [16, 40, 1000])
def test_labels_fit_any_frame_size(size):
    frames = np.full((2, size, size, 3), 128, np.uint8)
    masks = [np.ones((2, 4), bool)]
    out = gaze_overlay(frames, masks, scales=[32])
    assert out.shape == frames.shape
    plain = gaze_overlay(frames, masks, scales=[32], labels=False)
    if size >= 40:  # room for the number at least
        assert (out[1] != out[0]).any()
    if size == 1000:  # the font grows with the frame: the label is more than 10 px tall
        rows = np.nonzero((out[0] != plain[0]).any(-1)[: size // 3].any(1))[0]
        assert rows.max() > 20
