"""AutoGaze cells → Qwen merge units: the documented rule against exact rational geometry."""

from fractions import Fraction

import pytest
import torch

from autogaze_fast.vit.merge_units import gazed_cells, keep_units_from_gaze, unit_coverage

GRIDS = [2, 4, 7, 14]  # NVIDIA's 32+64+112+224 at 16 px
OFFSETS = [0, 4, 20, 69]
N = 265


def gaze(cells_per_frame: list[list[tuple[int, int, int]]], batch: int = 1) -> dict:
    """A gaze dict from (scale, row, col) cells per frame (the same for every clip of the batch)."""
    pos, pad, num = [], [], []
    width = max(len(c) for c in cells_per_frame)
    for t, cells in enumerate(cells_per_frame):
        tokens = sorted(OFFSETS[s] + r * GRIDS[s] + c for s, r, c in cells)
        pos += [x + N * t for x in tokens] + [N * t] * (width - len(tokens))
        pad += [False] * len(tokens) + [True] * (width - len(tokens))
        num.append(width)
    return {"gazing_pos": torch.tensor([pos] * batch), "if_padded_gazing": torch.tensor([pad] * batch),
            "num_gazing_each_frame": torch.tensor(num)}


def overlap(a0, a1, b0, b1) -> Fraction:
    return max(Fraction(0), min(a1, b1) - max(a0, b0))


def union_coverage(cells, i, j, hu, wu) -> Fraction:
    """Covered fraction of unit (i, j) by the union of (scale, row, col) cells: coordinate compression."""
    rects = [(Fraction(r, GRIDS[s]), Fraction(r + 1, GRIDS[s]), Fraction(c, GRIDS[s]), Fraction(c + 1, GRIDS[s]))
             for s, r, c in cells]
    y0, y1, x0, x1 = Fraction(i, hu), Fraction(i + 1, hu), Fraction(j, wu), Fraction(j + 1, wu)
    ys = sorted({y0, y1, *[v for r in rects for v in r[:2] if y0 < v < y1]})
    xs = sorted({x0, x1, *[v for r in rects for v in r[2:] if x0 < v < x1]})
    area = Fraction(0)
    for ya, yb in zip(ys, ys[1:]):
        for xa, xb in zip(xs, xs[1:]):
            cy, cx = (ya + yb) / 2, (xa + xb) / 2
            if any(r[0] <= cy < r[1] and r[2] <= cx < r[3] for r in rects):
                area += (yb - ya) * (xb - xa)
    return area / ((y1 - y0) * (x1 - x0))


def test_hand_worked_cells_on_an_8x8_unit_grid():
    # a 224x224 Qwen2.5-VL frame: 16x16 patches of 14 px -> 8x8 units
    keep = keep_units_from_gaze(gaze([[(0, 0, 0)], [(3, 13, 13)]]), num_frames=2, grids=GRIDS, unit_grid=(1, 8, 8))
    want = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    want[0, 0, :4, :4] = True  # the coarsest cell (0, 0): the top-left quarter of the frame
    want[0, 0, 7, 7] = True    # finest cell (13, 13) = [13/14, 1)^2 lies inside unit (7, 7)
    assert torch.equal(keep, want)
    keep = keep_units_from_gaze(gaze([[(2, 0, 1)], [(2, 0, 1)]]), num_frames=2, grids=GRIDS, unit_grid=(1, 8, 8))
    # cell (0, 1) of the 7-grid: rows [0, 1/7) -> units 0, 1 (1/8 < 1/7); cols [1/7, 2/7) -> units 1, 2
    assert torch.nonzero(keep[0, 0]).tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]


@pytest.mark.parametrize("unit_grid", [(2, 8, 8), (2, 5, 9), (2, 16, 12)])
@pytest.mark.parametrize("min_coverage", [0.0, 0.3, 0.5])
def test_random_gazes_follow_the_rule_exactly(unit_grid, min_coverage):
    g = torch.Generator().manual_seed(sum(unit_grid) + int(10 * min_coverage))
    frames = 3  # odd: the last pair repeats frame 2
    per_frame = []
    for _ in range(frames):
        cells = set()
        for _ in range(int(torch.randint(1, 6, (1,), generator=g))):
            s = int(torch.randint(0, 4, (1,), generator=g))
            r, c = (int(v) for v in torch.randint(0, GRIDS[s], (2,), generator=g))
            cells.add((s, r, c))
        per_frame.append(sorted(cells))
    keep = keep_units_from_gaze(gaze(per_frame, batch=2), num_frames=frames, grids=GRIDS, unit_grid=unit_grid,
                                min_coverage=min_coverage)
    gt, hu, wu = unit_grid
    assert keep.shape == (2, gt, hu, wu) and torch.equal(keep[0], keep[1])
    for t in range(gt):
        pair = per_frame[2 * t] + (per_frame[2 * t + 1] if 2 * t + 1 < frames else [])
        for i in range(hu):
            for j in range(wu):
                assert bool(keep[0, t, i, j]) == (union_coverage(pair, i, j, hu, wu) > min_coverage), (t, i, j)


def test_any_overlap_keeps_every_gazed_pixel():
    per_frame = [[(3, r, c) for r in range(14) for c in range(14) if (r * 3 + c) % 5 == 0], [(1, 2, 1)]]
    keep = keep_units_from_gaze(gaze(per_frame), num_frames=2, grids=GRIDS, unit_grid=(1, 11, 13))
    cover = unit_coverage(gazed_cells(gaze(per_frame), 2, GRIDS), 11, 13).amax(dim=1)  # (1, 11, 13)
    assert torch.equal(keep[:, 0], cover > 0)
    assert 0 < int(keep.sum()) < 11 * 13


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="temporal patches"):
        keep_units_from_gaze(gaze([[(0, 0, 0)]] * 4), num_frames=4, grids=GRIDS, unit_grid=(3, 4, 4))
    with pytest.raises(ValueError, match="layout"):
        keep_units_from_gaze(gaze([[(0, 0, 0)]] * 2), num_frames=2, grids=[2, 4], unit_grid=(1, 4, 4))
    with pytest.raises(ValueError, match="min_coverage"):
        keep_units_from_gaze(gaze([[(0, 0, 0)]] * 2), num_frames=2, grids=GRIDS, unit_grid=(1, 4, 4), min_coverage=1)
