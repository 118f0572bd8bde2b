"""The Qwen towers' shared bookkeeping: unit layout and windows against a brute-force enumeration, the
kept units' block order (segments contiguous, ids ascending, restore), the 2-D RoPE's relative-position
property, the reference mask, and the segment attention's two paths."""

import itertools

import pytest
import torch

from autogaze_fast.vit.qwen_common import (
    apply_vision_rope,
    reference_mask,
    segment_attention,
    select_units,
    unit_layout,
    vision_rope,
)

GRID = torch.tensor([[2, 6, 10], [1, 4, 4], [3, 2, 6]])


def test_unit_layout_matches_a_brute_force_enumeration():
    w = 2
    layout = unit_layout(GRID, 2, window_units=w)
    rows, frame, window = [], 0, 0
    frames, windows = [], []
    for c, (gt, gh, gw) in enumerate(GRID.tolist()):
        uh_n, uw_n = gh // 2, gw // 2
        nwh, nww = -(-uh_n // w), -(-uw_n // w)
        for t, uh, uw in itertools.product(range(gt), range(uh_n), range(uw_n)):
            rows.append((c, t, uh, uw))
            frames.append(frame + t)
            windows.append(window + t * nwh * nww + (uh // w) * nww + uw // w)
        frame += gt
        window += gt * nwh * nww
    assert layout.num_units == len(rows)
    assert layout.clip.tolist() == [r[0] for r in rows]
    assert layout.position.tolist() == [list(r[1:]) for r in rows]
    assert layout.frame_segment.tolist() == frames and layout.window_segment.tolist() == windows


def test_kept_units_are_in_segment_order_and_restore():
    layout = unit_layout(GRID, 2, window_units=2)
    keep = torch.rand(layout.num_units, generator=torch.Generator().manual_seed(0)) < 0.5
    sel = select_units(layout, keep)
    kept = torch.nonzero(keep)[:, 0]
    assert sorted(sel.units.tolist()) == kept.tolist()
    assert torch.equal(sel.units[sel.restore], kept)
    for ids in (sel.frame_ids[0], sel.window_ids[0]):
        steps = ids[1:] - ids[:-1]
        assert ids[0] == 0 and bool(((steps == 0) | (steps == 1)).all())  # contiguous, dense, ascending
    # tokens with one window id are one window of one (clip, t)
    for wid in sel.window_ids[0].unique():
        units = sel.units[(sel.window_ids[0] == wid)[::4]]
        assert layout.window_segment[units].unique().numel() == 1
    assert torch.equal(sel.rows.view(-1, 4)[:, 0] // 4, sel.units)
    # patch (h, w) of each row: the unit's 2 x 2 patches in row-major order
    pos = layout.position[sel.units]
    hw = sel.patch_hw.view(-1, 4, 2)
    assert torch.equal(hw[:, 3, 0], pos[:, 1] * 2 + 1) and torch.equal(hw[:, 2, 1], pos[:, 2] * 2)


def test_without_windows_the_natural_order_is_kept():
    layout = unit_layout(GRID, 2)
    keep = torch.ones(layout.num_units, dtype=torch.bool)
    sel = select_units(layout, keep)
    assert sel.window_ids is None and torch.equal(sel.units, torch.arange(layout.num_units))


def test_rope_scores_depend_on_relative_positions_only():
    """The 2-D RoPE rotates each (i, i + D/2) pair of q and k by an angle linear in the patch's h (the
    first D/4 pairs) or w (the others), so <rot(p) q, rot(p') k> depends on p - p' only."""
    head_dim = 16
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, head_dim, generator=g), torch.randn(1, 1, 1, head_dim, generator=g)

    def score(p, p2):
        cq, sq = vision_rope(torch.tensor([p]), head_dim)
        ck, sk = vision_rope(torch.tensor([p2]), head_dim)
        return (apply_vision_rope(q, q, cq, sq)[0] * apply_vision_rope(k, k, ck, sk)[1]).sum()

    torch.testing.assert_close(score((3, 5), (1, 2)), score((7, 9), (5, 6)), atol=1e-5, rtol=0)
    assert (score((3, 5), (1, 2)) - score((3, 5), (2, 1))).abs() > 1e-3
    cos, sin = vision_rope(torch.tensor([[0, 0]]), head_dim)
    assert torch.equal(cos, torch.ones(1, head_dim)) and torch.equal(sin, torch.zeros(1, head_dim))
    with pytest.raises(ValueError, match="divisible by 4"):
        vision_rope(torch.tensor([[0, 0]]), 18)


def test_reference_mask_and_the_two_attention_paths(torch_twins):
    seg = torch.tensor([0, 0, 0, 1, 1, 2])
    keep = torch.tensor([True, False, True, True, True, False])
    mask = reference_mask(seg, keep)
    assert mask.tolist()[1] == [True, True, True, False, False, False]  # a dropped key still sees itself
    assert mask.tolist()[0] == [True, False, True, False, False, False]
    assert mask.tolist()[5] == [False, False, False, False, False, True]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 16, generator=g) for _ in range(3))
    fast = segment_attention(q, k, v, seg[None], kernels=True)
    plain = segment_attention(q, k, v, seg[None], kernels=False)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="key_keep"):
        segment_attention(q, k, v, seg[None], kernels=True, key_keep=keep)
