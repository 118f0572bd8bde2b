"""gaze_overlay (what is dimmed, outlined, left alone), its caption strip (frame number, tokens kept,
caption, legend by cell size) and the atomic savers."""

import numpy as np
import pytest
import torch
from PIL import Image

from autogaze_fast.media.caption import STRIP_BACKGROUND, add_captions, cell_size_name, gaze_caption, tokens_kept
from autogaze_fast.media.draw import SCALE_COLOURS, cells_overlay, gaze_overlay, legend, save_gaze_grid, save_gaze_video
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
    plain = gaze_overlay(frames, empty_masks(), scales=[32, 64, 112], labels=False)
    assert plain.shape == frames.shape and plain.dtype == np.uint8
    out = gaze_overlay(frames, empty_masks(), scales=[32, 64, 112])
    assert out.shape[0] == 3 and out.shape[1] > H and out.shape[2:] == (W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :H], plain)  # the caption strip is below the frame, which it leaves alone


def test_nothing_gazed_dims_everything(frames):
    out = gaze_overlay(frames, empty_masks(), dim=0.25, labels=False)
    np.testing.assert_array_equal(out, np.rint(frames * np.float32(0.25)).astype(np.uint8))


def test_gazed_cell_kept_with_outline_others_dimmed(frames):
    masks = empty_masks()
    masks[1][1, 4 * 2 + 2] = 1  # frame 1, 4x4 grid, row 2, column 2 (off the frame's edge)
    out = gaze_overlay(frames, masks, dim=0.5, thickness=2, labels=False)
    ys, xs = cell(2, 2, 4)
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
    np.testing.assert_array_equal(out[:, 2:55, 2:55], frames[:, 2:55, 2:55])
    # 1 px along the inner edges, 2 px along the frame's edge (drawn inside the frame)
    assert (out[:, :2, :56] == SCALE_COLOURS[0]).all() and (out[:, :56, :2] == SCALE_COLOURS[0]).all()
    assert (out[:, :56, 55] == SCALE_COLOURS[0]).all() and (out[:, 2:55, 54] == frames[:, 2:55, 54]).all()
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
    border[[1, H - 2], :] = border[:, [1, W - 2]] = True  # the frame's edge: twice as wide
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
    assert len(inner_rows) == 100 - 2 * 7 - 2  # each cell loses its first and last row, the frame's edge 2 rows


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


# ------------------------------------------------------------------ the caption strip
S = 224


@pytest.fixture(scope="module")
def still():
    """The same frame three times, so any difference between output pictures comes from the captions."""
    return np.repeat(synthetic_clip(num_frames=1, size=S, seed=3), 3, axis=0)


def gazed_masks(t=3):
    rng = np.random.default_rng(5)
    return [np.tile(rng.random((1, g * g)) < 0.3, (t, 1)) for g in (2, 4, 7, 14)]


def test_legend_names_cell_sizes_in_source_pixels_largest_first():
    # NVIDIA grids over a 224 frame: 112, 56, 32, 16 px cells (the old legend said 32px ... 224px, the scales)
    assert legend([(224 / g, 224 / g) for g in (2, 4, 7, 14)]) == [
        ("112 px", SCALE_COLOURS[0]), ("56 px", SCALE_COLOURS[1]), ("32 px", SCALE_COLOURS[2]), ("16 px", SCALE_COLOURS[3])]
    assert legend([(320 / 14, 180 / 14), (320 / 2, 180 / 2)])[0] == ("160x90 px", SCALE_COLOURS[1])  # largest first
    assert cell_size_name(106.67, 108) == "107x108 px" and cell_size_name(15.2, 14.9) == "15 px"


def test_caption_strip_holds_frame_number_tokens_caption_and_legend(still):
    """The strip equals one drawn from lines written out by hand: per frame its number and the
    gazed cells counted from the masks out of all 265 cells, then the caption and the legend."""
    masks = gazed_masks()
    caption = gaze_caption("random (NVIDIA shape, seed 0)", 0.75, None)
    assert caption == "model: random (NVIDIA shape, seed 0) · ratio 0.75 · stop off"
    assert gaze_caption("nvidia/AutoGaze", 0.75, 0.7) == "model: nvidia/AutoGaze · ratio 0.75 · stop: task loss <= 0.7"
    out = gaze_overlay(still, masks, scales=[32, 64, 112, 224], caption=caption)
    kept = [int(sum(m[i].sum() for m in masks)) for i in range(3)]
    assert tokens_kept(kept[0], 265) == f"{kept[0]} of 265 tokens kept ({kept[0] / 265:.0%})"
    lines = [[f"frame {i}: {kept[i]} of 265 tokens kept ({kept[i] / 265:.0%})"] for i in range(3)]
    entries = [(name, SCALE_COLOURS[k]) for k, name in enumerate(["112 px", "56 px", "32 px", "16 px"])]
    plain = gaze_overlay(still, masks, labels=False)
    np.testing.assert_array_equal(out, add_captions(plain, lines, caption, entries))
    strip = out[0, S:]
    assert (strip[-1] == STRIP_BACKGROUND).all()  # a margin at the bottom, text above it
    centres = []
    for colour in SCALE_COLOURS[:4]:  # one filled swatch per scale colour, left to right, largest cells first
        ys, xs = np.nonzero((strip == np.asarray(colour, np.uint8)).all(-1))
        assert len(ys) >= 6 * 6 and np.ptp(ys) < 20 and np.ptp(xs) < 20
        centres.append(xs.mean())
    assert centres == sorted(centres)


def test_frame_numbers_differ_only_in_the_strips_first_line(still):
    masks = gazed_masks()
    out = gaze_overlay(still, masks, scales=[32, 64, 112, 224])
    first_line = np.zeros(out.shape[1:3], bool)
    first_line[S:S + 20] = True  # 10-px font: the first line of the strip
    for i in (1, 2):  # identical frames and gaze: pictures differ only where their numbers are written
        differs = (out[i] != out[0]).any(-1)
        assert differs[first_line].any() and not differs[~first_line].any()


def test_strip_height_depends_on_size_and_caption_only(still):
    """Clips of one video drawn one by one make pictures of one size (a video file needs that)."""
    masks = gazed_masks()
    a = gaze_overlay(still, masks, caption="model: m · ratio 0.1")
    b = gaze_overlay(still[:1], [np.zeros((1, g * g), bool) for g in (2, 4, 7, 14)], caption="model: m · ratio 0.1",
                     first_frame=12345)
    assert a.shape[1:] == b.shape[1:]


def test_first_frame_continues_the_numbering(still):
    masks = gazed_masks()
    whole = gaze_overlay(still, masks, scales=[32, 64, 112, 224])
    tail = gaze_overlay(still[1:], [m[1:] for m in masks], scales=[32, 64, 112, 224], first_frame=1)
    np.testing.assert_array_equal(tail, whole[1:])


def test_grid_and_gif_carry_the_captions(tmp_path, still):
    out = gaze_overlay(still, gazed_masks(), scales=[32, 64, 112, 224])
    ph = out.shape[1]
    grid = np.asarray(Image.open(save_gaze_grid(tmp_path / "grid.png", out, columns=3, gap=2)))
    assert grid.shape == (ph, 3 * S + 4, 3)
    cells = [grid[:, c * (S + 2) : c * (S + 2) + S] for c in range(3)]
    for cell, picture in zip(cells, out):
        np.testing.assert_array_equal(cell, picture)
    with Image.open(save_gaze_video(tmp_path / "gaze.gif", out, fps=5)) as gif:
        assert gif.size == (S, ph) and gif.n_frames == 3


def test_cells_overlay_caption_measures_cell_sizes_from_the_boxes():
    """Boxes of the finest scale only: the legend scales their size to the coarser ones (sides go as
    1 / scale); the tokens line counts each frame's cells out of tokens_per_frame."""
    frames = np.full((2, 120, 250, 3), 90, np.uint8)
    boxes = np.array([[0, 0, 10, 8], [10, 10, 20, 18]], np.float32)
    out = cells_overlay(frames, [0, 0], [3, 3], boxes, [32, 64, 112, 224], tokens_per_frame=530, caption="c")
    sizes = [(10 * 224 / s, 8 * 224 / s) for s in (32, 64, 112, 224)]
    plain = cells_overlay(frames, [0, 0], [3, 3], boxes, [32, 64, 112, 224], labels=False)
    lines = [["frame 0: 2 of 530 tokens kept (0%)"], ["frame 1: 0 of 530 tokens kept (0%)"]]
    np.testing.assert_array_equal(out, add_captions(plain, lines, "c", legend(sizes)))
    assert [name for name, _ in legend(sizes)] == ["70x56 px", "35x28 px", "20x16 px", "10x8 px"]


@pytest.mark.parametrize("size", [16, 40, 1000])
def test_captions_fit_any_frame_size(size):
    frames = np.full((2, size, size, 3), 128, np.uint8)
    masks = [np.ones((2, 4), bool)]
    out = gaze_overlay(frames, masks, scales=[32], caption=gaze_caption("some/model", 0.75, 0.7))
    assert out.shape[1] > size and out.shape[2] == size
    np.testing.assert_array_equal(out[:, :size], gaze_overlay(frames, masks, scales=[32], labels=False))
    if size == 1000:  # the font grows with the frame: a strip of the same lines is taller than at 40 px
        big = gaze_overlay(frames, masks, scales=[32])
        small = gaze_overlay(frames[:, :40, :40], masks, scales=[32])
        assert big.shape[1] - size > small.shape[1] - 40
