"""The interframe view (issue 13, item 5): the stream, PSNR and its EMA, gazed fraction, the CSV,
and source-pixel boxes turned into pixel masks.

Oracles: the stream's defining rule checked frame by frame, a stream written out by hand, PSNR
and EMA values computed by hand, and pixel membership by pixel centres tested one box at a time.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from autogaze_fast.media.draw import box_pixel_spans, cells_pixel_mask
from autogaze_fast.media.interframe import (
    PSNR_EMA_FACTOR,
    gazed_fraction,
    interframe_stream,
    is_keyframe,
    psnr,
    psnr_ema,
    write_interframe_csv,
)
from autogaze_fast.tiling.grid import TileGrid


# ------------------------------------------------------------------ stream
@pytest.mark.parametrize("keyframe_every", [1, 2, 3, 10])
def test_stream_rule_frame_by_frame(keyframe_every):
    rng = np.random.default_rng(keyframe_every)
    frames = rng.integers(0, 256, (7, 9, 11, 3), dtype=np.uint8)
    masks = rng.random((7, 9, 11)) < 0.3
    out = interframe_stream(frames, masks, keyframe_every)
    assert out.shape == frames.shape and out.dtype == np.uint8
    for t in range(7):
        if t % keyframe_every == 0:
            np.testing.assert_array_equal(out[t], frames[t])  # keyframe: the input, whole
        else:
            np.testing.assert_array_equal(out[t][masks[t]], frames[t][masks[t]])  # gazed: the current frame
            np.testing.assert_array_equal(out[t][~masks[t]], out[t - 1][~masks[t]])  # elsewhere: the previous output
    assert not np.array_equal(out, frames) or keyframe_every == 1  # stale pixels exist between keyframes


def test_stream_written_out_by_hand():
    # 1 x 3 frames, one channel; frame t has every pixel equal to 10 (t + 1)
    frames = np.array([[[[10], [10], [10]]], [[[20], [20], [20]]], [[[30], [30], [30]]], [[[40], [40], [40]]]], np.uint8)
    masks = np.array([[[False, False, False]], [[True, False, False]], [[False, True, False]], [[False, False, True]]])
    expected = np.array([
        [10, 10, 10],   # frame 0: keyframe
        [20, 10, 10],   # pixel 0 gazed
        [20, 30, 10],   # pixel 1 gazed, pixel 0 kept from frame 1
        [40, 40, 40],   # keyframe (K = 3)
    ], np.uint8)
    np.testing.assert_array_equal(interframe_stream(frames, masks, 3)[:, 0, :, 0], expected)
    np.testing.assert_array_equal(interframe_stream(frames, masks, 100)[3, 0, :, 0], [20, 30, 40])
    assert is_keyframe(7, 3).tolist() == [True, False, False, True, False, False, True]


def test_stream_bad_input():
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="keyframe_every"):
        interframe_stream(frames, np.zeros((2, 4, 4), bool), 0)
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        interframe_stream(frames, np.zeros((2, 4, 5), bool), 2)
    with pytest.raises(ValueError, match="boolean"):
        interframe_stream(frames, np.zeros((2, 4, 4), np.uint8), 2)
    with pytest.raises(ValueError, match=r"\(T, H, W, C\)"):
        interframe_stream(frames[0], np.zeros((4, 4, 3), bool), 2)


# ------------------------------------------------------------------ PSNR and EMA
def test_psnr_by_hand():
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255                          # MSE = 255² / 12 → PSNR = 10 log10(12)
    assert psnr(a, b) == pytest.approx(10 * math.log10(12), abs=1e-12)
    c = a + 1                                 # MSE = 1 → PSNR = 20 log10(255) = 48.13 dB
    assert psnr(a, c) == pytest.approx(48.130803608679, abs=1e-9)
    assert psnr(c, a) == psnr(a, c)
    # uint8 arithmetic must not wrap: 0 - 255 is -255, not 1
    assert psnr(np.array([0], np.uint8), np.array([255], np.uint8)) == 0.0
    # float images with peak 1: MSE = 0.25 → 10 log10(4)
    assert psnr(np.zeros(4), np.full(4, 0.5), peak=1.0) == pytest.approx(10 * math.log10(4))


def test_psnr_of_identical_images_is_inf_not_capped():
    a = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    assert psnr(a, a.copy()) == math.inf
    with pytest.raises(ValueError, match="one shape"):
        psnr(a, a[:-1])


def test_psnr_ema_by_hand():
    assert PSNR_EMA_FACTOR == 0.9
    ema = psnr_ema([math.inf, 20.0, 30.0, math.inf, 10.0])
    # starts at the first finite value; inf (an exact frame) leaves it unchanged
    np.testing.assert_allclose(ema, [math.inf, 20.0, 0.9 * 20 + 0.1 * 30, 21.0, 0.9 * 21 + 0.1 * 10])
    np.testing.assert_allclose(psnr_ema([10.0, 20.0], factor=0.5), [10.0, 15.0])
    with pytest.raises(ValueError, match="factor"):
        psnr_ema([1.0], factor=1.0)
    with pytest.raises(ValueError, match="NaN"):
        psnr_ema([1.0, math.nan])


def test_gazed_fraction_and_csv(tmp_path):
    masks = np.zeros((2, 4, 5), bool)
    masks[0, :2] = True                        # half of frame 0
    masks[1, 0, 0] = True                      # 1 of 20 pixels
    np.testing.assert_allclose(gazed_fraction(masks), [0.5, 0.05])
    path = write_interframe_csv(tmp_path / "x.csv", [math.inf, 31.25], [math.inf, 31.25], [0.5, 0.05], [True, False])
    rows = list(csv.DictReader(open(path)))
    assert list(rows[0]) == ["frame", "psnr", "psnr_ema", "gazed_fraction", "keyframe"]
    assert [(int(r["frame"]), float(r["psnr"]), float(r["psnr_ema"]), float(r["gazed_fraction"]), int(r["keyframe"]))
            for r in rows] == [(0, math.inf, math.inf, 0.5, 1), (1, 31.25, 31.25, 0.05, 0)]
    with pytest.raises(ValueError, match="one value per frame"):
        write_interframe_csv(tmp_path / "y.csv", [1.0], [1.0, 2.0], [0.1], [True])
    assert not (tmp_path / "y.csv").exists()


# ------------------------------------------------------------------ boxes -> pixels
def _centre_mask(box, height, width):
    """Oracle: pixels whose centre (x + 0.5, y + 0.5) lies in [x0, x1) x [y0, y1)."""
    x0, y0, x1, y1 = box
    xc, yc = np.arange(width) + 0.5, np.arange(height) + 0.5
    return ((yc >= y0) & (yc < y1))[:, None] & ((xc >= x0) & (xc < x1))[None, :]


def test_box_pixels_by_centres():
    boxes = np.array([[0.4, 0.0, 1.6, 1.0], [0.6, 0.0, 2.5, 2.51], [3.2, 1.2, 3.4, 1.4], [0.0, 0.0, 5.0, 3.0]])
    np.testing.assert_array_equal(box_pixel_spans(boxes), [[0, 0, 2, 1], [1, 0, 2, 3], [3, 1, 3, 1], [0, 0, 5, 3]])
    mask = cells_pixel_mask([0, 1, 1, 2], boxes, 3, 3, 5)
    np.testing.assert_array_equal(mask[0], _centre_mask(boxes[0], 3, 5))
    np.testing.assert_array_equal(mask[1], _centre_mask(boxes[1], 3, 5) | _centre_mask(boxes[2], 3, 5))
    assert mask[2].all()
    with pytest.raises(ValueError, match="one entry per cell"):
        cells_pixel_mask([0], boxes, 3, 3, 5)
    with pytest.raises(ValueError, match="3 frames"):
        cells_pixel_mask([0, 1, 1, 3], boxes, 3, 3, 5)


@pytest.mark.parametrize("hw, policy", [((120, 250), "anyres"), ((96, 160), "anyres"), ((100, 300), "pad"),
                                        ((90, 170), "resize")])
def test_cell_boxes_tile_the_frame_pixel_for_pixel(hw, policy):
    """Every scale's cell boxes in source pixels split the frame: each pixel in exactly one cell,
    the same cell as its centre says."""
    h, w = hw
    grid = TileGrid.plan(h, w, policy=policy)
    for g in (2, 4, 7, 14):
        boxes = grid.cell_boxes(g).reshape(-1, 4).numpy()
        spans = box_pixel_spans(boxes).clip(0, [w, h, w, h])
        count = np.zeros((h, w), int)
        for x0, y0, x1, y1 in spans:
            count[y0:y1, x0:x1] += 1
        assert (count == 1).all(), (g, np.unique(count))
        k = np.random.default_rng(g).integers(len(boxes))
        np.testing.assert_array_equal(cells_pixel_mask([0], boxes[k:k + 1], 1, h, w)[0], _centre_mask(boxes[k], h, w))
