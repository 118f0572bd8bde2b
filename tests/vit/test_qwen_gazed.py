"""A gaze in, merged tokens out: ``model(frames, gazing_info=gaze)`` on the Qwen towers keeps the units of
:func:`keep_units_from_gaze` and equals the explicit-mask reference on them; a gaze of every cell is dense."""

from pathlib import Path

import pytest
import torch

from autogaze_fast import AutoVisionModel
from autogaze_fast.vit.merge_units import keep_units_from_gaze

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TOWERS = {"qwen2_5_vl": (FIXTURES / "qwen2_5_vl" / "vision", 28), "qwen3_vl": (FIXTURES / "qwen3_vl" / "vision", 32)}
GRIDS = [2, 4]  # a small gaze layout: 2x2 + 4x4 cells (20 a frame)


def gaze_of(frames: int, cells: list[list[int]]) -> dict:
    width = max(len(c) for c in cells)
    pos = [[x + 20 * t for x in sorted(c)] + [20 * t] * (width - len(c)) for t, c in enumerate(cells)]
    pad = [[False] * len(c) + [True] * (width - len(c)) for c in cells]
    return {"gazing_pos": torch.tensor([sum(pos, [])]), "if_padded_gazing": torch.tensor([sum(pad, [])]),
            "num_gazing_each_frame": torch.tensor([width] * frames)}


@pytest.mark.parametrize("family", sorted(TOWERS))
def test_gazed_frames_keep_the_covered_units_and_equal_the_reference(family):
    path, unit = TOWERS[family]
    frames = torch.randn(1, 3, 3, 3 * unit, 4 * unit, generator=torch.Generator().manual_seed(0))
    gaze = gaze_of(3, [[0, 9], [17], [4, 5, 6, 7]])
    fast = AutoVisionModel.from_pretrained(path, impl="fast")
    reference = AutoVisionModel.from_pretrained(path, impl="reference")
    with torch.no_grad():
        out = fast(frames, gazing_info=gaze, gaze_grids=GRIDS)
        ref = reference(frames, gazing_info=gaze, gaze_grids=GRIDS)
    keep = keep_units_from_gaze(gaze, num_frames=3, grids=GRIDS, unit_grid=(2, 3, 4))
    assert torch.equal(out.keep, keep.flatten()) and 0 < int(keep.sum()) < keep.numel()
    assert out.last_hidden_state.shape[0] == int(keep.sum())
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=0)
    assert torch.equal(out.positions, torch.nonzero(keep[0]))  # (t, i, j) of every kept unit, in order


@pytest.mark.parametrize("family", sorted(TOWERS))
def test_a_gaze_of_every_cell_is_the_dense_tower(family):
    path, unit = TOWERS[family]
    frames = torch.randn(1, 2, 3, 2 * unit, 2 * unit, generator=torch.Generator().manual_seed(1))
    model = AutoVisionModel.from_pretrained(path, impl="fast")
    with torch.no_grad():
        gazed = model(frames, gazing_info=gaze_of(2, [list(range(4, 20))] * 2), gaze_grids=GRIDS)
        dense = model(frames)
    assert bool(gazed.keep.all())
    torch.testing.assert_close(gazed.last_hidden_state, dense.last_hidden_state, atol=1e-6, rtol=0)


def test_gazing_info_and_keep_together_are_refused():
    model = AutoVisionModel.from_pretrained(TOWERS["qwen2_5_vl"][0])
    frames = torch.zeros(1, 2, 3, 28, 28)
    with pytest.raises(ValueError, match="either gazing_info or keep"):
        model(frames, gazing_info=gaze_of(2, [[0]] * 2), keep=torch.ones(1, 1, 1, 1, dtype=torch.bool), gaze_grids=GRIDS)
