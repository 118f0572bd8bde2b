"""Any resolution and aspect ratio (issue 13): tile plans, cut/stitch, per-tile gaze, source boxes.

Oracles: tiles cut by hand with plain slicing and each gazed alone through the untiled model call
(reference and fast on its CPU torch twins), masks stitched by hand, upstream's any-resolution
fixture (392 × 392, target_scales [56, 112, 196, 392]) and the 224 gaze fixture, the processor
called with the canvas size by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FIXTURES
from safetensors.torch import load_file

from autogaze_fast import AutoGaze
from autogaze_fast.processing.autogaze import AutoGazeImageProcessor
from autogaze_fast.tiling.grid import TileGrid

META = json.loads((FIXTURES / "meta.json").read_text())
REQUIREMENT = META["stop_k10_task_loss_requirement"]
IMPLS = ["reference", "fast"]


@pytest.fixture(autouse=True)
def _twins(torch_twins):
    """The fast model on its CPU torch twins."""


@pytest.fixture(scope="module", params=IMPLS)
def model(request):
    return AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl=request.param)


# ------------------------------------------------------------------ plans
@pytest.mark.parametrize("hw, tile, patch, rows_cols, canvas", [
    ((1080, 1920), 224, 16, (5, 9), (1120, 2016)),   # 16:9 1080p: burn_autogaze's 45 tiles
    ((1920, 1080), 224, 16, (9, 5), (2016, 1120)),   # portrait
    ((360, 640), 224, 16, (2, 3), (448, 672)),
    ((224, 224), 224, 16, (1, 1), (224, 224)),       # the model's own size: one tile, no resize
    ((392, 392), 224, 16, (2, 2), (448, 448)),
    ((392, 392), 392, 14, (1, 1), (392, 392)),       # upstream's any-resolution case: one 392 tile
    ((3000, 100), 224, 16, (14, 1), (3136, 224)),    # 30 : 1, tall
    ((100, 3000), 224, 16, (1, 14), (224, 3136)),    # 30 : 1, wide
])
def test_anyres_plans(hw, tile, patch, rows_cols, canvas):
    grid = TileGrid.plan(*hw, tile_size=tile, patch_size=patch, max_tiles=64)
    assert (grid.rows, grid.cols) == rows_cols
    assert (grid.canvas_h, grid.canvas_w) == canvas == (grid.content_h, grid.content_w)
    assert grid.n_tiles == rows_cols[0] * rows_cols[1]
    again = TileGrid.plan(*canvas, tile_size=tile, patch_size=patch, max_tiles=64)
    assert (again.rows, again.cols) == rows_cols, "planning the canvas again must give the same grid"


@pytest.mark.parametrize("hw, max_tiles, rows_cols", [
    ((1080, 1920), 45, (5, 9)),
    ((1080, 1920), 44, (5, 8)),   # worst axis 1792/1920 = 0.93 beats 4x9's 896/1080 = 0.83
    ((1080, 1920), 8, (2, 4)),    # 448/1080 = 0.41 on both candidates' worst axis; 2x4 least distorted
    ((1080, 1920), 1, (1, 1)),
    ((2160, 3840), 64, (6, 10)),  # 4K: 180 tiles shrunk to 60
    ((3000, 100), 8, (8, 1)),
])
def test_anyres_plans_over_max_tiles_keep_most_detail(hw, max_tiles, rows_cols):
    grid = TileGrid.plan(*hw, max_tiles=max_tiles)
    assert grid.n_tiles <= max_tiles
    assert (grid.rows, grid.cols) == rows_cols
    # oracle: brute force over every grid of at most max_tiles tiles within the ceil grid
    h, w = hw
    best = max(
        ((r, c) for r in range(1, -(-h // 224) + 1) for c in range(1, -(-w // 224) + 1) if r * c <= max_tiles),
        key=lambda rc: (min(rc[0] * 224 / h, rc[1] * 224 / w),
                        -max(rc[0] * 224 / h, rc[1] * 224 / w) / min(rc[0] * 224 / h, rc[1] * 224 / w), -rc[0] * rc[1]),
    )
    assert best == rows_cols


def test_pad_and_resize_plans():
    pad = TileGrid.plan(360, 640, policy="pad")
    assert (pad.rows, pad.cols, pad.canvas_h, pad.canvas_w) == (2, 3, 448, 672)
    assert (pad.content_h, pad.content_w) == (360, 640)
    tall = TileGrid.plan(3000, 100, policy="pad")
    assert (tall.rows, tall.cols, tall.content_h, tall.content_w) == (14, 1, 3000, 100)
    for hw in [(1080, 1920), (360, 640), (224, 224), (392, 392)]:
        r = TileGrid.plan(*hw, policy="resize")
        assert (r.rows, r.cols, r.canvas_h, r.canvas_w) == (1, 1, 224, 224)


@pytest.mark.parametrize("kwargs, match", [
    (dict(height=1080, width=1920, max_tiles=0), "max_tiles must be >= 1"),
    (dict(height=1080, width=1920, max_tiles=-3), "max_tiles must be >= 1"),
    (dict(height=1080, width=1920, tile_size=200, patch_size=16), "not a multiple of the patch size 16"),
    (dict(height=392, width=392, tile_size=392, patch_size=16), "not a multiple of the patch size 16"),
    (dict(height=0, width=640), "empty"),
    (dict(height=480, width=0), "empty"),
    (dict(height=1, width=4000), "blown up 224x"),
    (dict(height=4000, width=1, policy="pad"), "too small"),
    (dict(height=15, width=640), "at least 16 px"),
    (dict(height=3000, width=100, policy="resize"), "aspect ratio of 30"),
    (dict(height=1080, width=1920, policy="pad", max_tiles=44), "needs 5x9 = 45 tiles"),
    (dict(height=1080, width=1920, policy="squash"), "must be one of"),
])
def test_bad_plans_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TileGrid.plan(**kwargs)


# ------------------------------------------------------------------ cut and stitch
def hand_stitch(tile_mask: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(B·rows·cols, T, g²) → (B, T, rows·g, cols·g) with loops."""
    n, t, gg = tile_mask.shape
    g = int(gg ** 0.5)
    b = n // (rows * cols)
    out = torch.zeros(b, t, rows * g, cols * g, dtype=tile_mask.dtype)
    for i in range(n):
        bb, k = divmod(i, rows * cols)
        r, c = divmod(k, cols)
        out[bb, :, r * g:(r + 1) * g, c * g:(c + 1) * g] = tile_mask[i].view(t, g, g)
    return out


def test_cut_matches_slicing_and_stitch_cut_round_trip():
    grid = TileGrid.plan(360, 640)  # 2 x 3 tiles of 224
    video = torch.randn(2, 3, 3, grid.canvas_h, grid.canvas_w)
    tiles = grid.cut(video)
    assert tiles.shape == (12, 3, 3, 224, 224)
    for i in range(12):
        b, k = divmod(i, 6)
        r, c = divmod(k, 3)
        assert torch.equal(tiles[i], video[b, :, :, r * 224:(r + 1) * 224, c * 224:(c + 1) * 224])
    assert torch.equal(grid.cut(video, 4, 9), tiles[4:9])

    gen = torch.Generator().manual_seed(0)
    masks = [(torch.rand(12, 3, g * g, generator=gen) < 0.3).float() for g in (2, 4, 7, 14)]
    stitched = grid.stitch(masks)
    for m, s in zip(masks, stitched):
        assert torch.equal(s, hand_stitch(m, 2, 3))
    for m, back in zip(masks, grid.cut_masks(stitched)):
        assert torch.equal(back, m)


def test_pad_stitch_drops_padding_cells():
    grid = TileGrid.plan(300, 500, policy="pad")  # canvas 448 x 672, source at the top left
    masks = [torch.ones(6, 1, g * g) for g in (2, 4, 7, 14)]
    for g, s in zip((2, 4, 7, 14), grid.stitch(masks)):
        cell = 224 / g
        for r in range(2 * g):
            for c in range(3 * g):
                inside = r * cell < 300 and c * cell < 500
                assert s[0, 0, r, c] == float(inside), (g, r, c)


def test_bad_canvas_and_masks():
    grid = TileGrid.plan(360, 640)
    with pytest.raises(ValueError, match="needs the 448x672 canvas"):
        grid.cut(torch.zeros(1, 1, 3, 360, 640))
    with pytest.raises(ValueError, match="outside the 6 tiles"):
        grid.cut(torch.zeros(1, 1, 3, 448, 672), 0, 7)
    with pytest.raises(ValueError, match="not a square grid"):
        grid.stitch([torch.zeros(6, 1, 10)])
    with pytest.raises(ValueError, match="planned for 360x640"):
        grid.place(torch.zeros(1, 1, 3, 224, 224))


# ------------------------------------------------------------------ per-tile gaze
def gaze_alone(model, tile: torch.Tensor, **kw) -> dict:
    with torch.inference_mode():
        return model({"video": tile[None]}, generate_only=True, **kw)


def real_tokens_per_frame(pos, pads, counts):
    """Per frame, the list of non-pad positions in order."""
    out = []
    for p, q in zip(pos.split(counts.tolist()), pads.bool().split(counts.tolist())):
        out.append(p[~q].tolist())
    return out


def check_tiles_equal_alone(model, out, canvas, grid, **kw):
    info = out["tile_gazing_info"][0]
    n_rows = canvas.shape[0] * grid.n_tiles
    assert info["gazing_pos"].shape[0] == n_rows
    alone_masks = []
    for i in range(n_rows):
        b, k = divmod(i, grid.n_tiles)
        r, c = divmod(k, grid.cols)
        t = grid.tile_size
        alone = gaze_alone(model, canvas[b, :, :, r * t:(r + 1) * t, c * t:(c + 1) * t], **kw)
        got = real_tokens_per_frame(info["gazing_pos"][i], info["if_padded_gazing"][i], info["num_gazing_each_frame"])
        want = real_tokens_per_frame(alone["gazing_pos"][0], alone["if_padded_gazing"][0], alone["num_gazing_each_frame"])
        assert got == want, f"tile {i}"
        alone_masks.append(alone["gazing_mask"])
    for s, got in enumerate(out["gazing_mask"]):
        want = hand_stitch(torch.cat([m[s] for m in alone_masks]), grid.rows, grid.cols)
        assert torch.equal(got, want), f"scale {s}"


def test_each_tile_gaze_equals_the_tile_alone(model):
    """6 tiles in batches of 4 + 2, with the task-loss stop ending some tiles early."""
    video = torch.randn(1, 2, 3, 300, 500, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out = model({"video": video}, tiles="anyres", tile_batch_size=4, gazing_ratio=0.2,
                    task_loss_requirement=REQUIREMENT)
    grid = out["tile_grid"]
    assert (grid.rows, grid.cols, grid.source_h, grid.source_w) == (2, 3, 300, 500)
    counts = [(~p).sum().item() for p in out["tile_gazing_info"][0]["if_padded_gazing"]]
    assert len(set(counts)) > 1, "the stop should end tiles at different lengths (else the test is weak)"
    check_tiles_equal_alone(model, out, grid.place(video), grid, gazing_ratio=0.2, task_loss_requirement=REQUIREMENT)


def test_clips_and_tile_batch_size_do_not_change_the_gaze(model, monkeypatch):
    """T = 3 frames with clips of 2: each clip of each tile is gazed alone; batch sizes 1 and 5 agree."""
    monkeypatch.setattr(model.config, "max_num_frames", 2)
    video = torch.randn(2, 3, 3, 224, 448, generator=torch.Generator().manual_seed(2))  # B=2, 1x2 tiles
    with torch.inference_mode():
        one = model({"video": video}, tiles="anyres", tile_batch_size=1, gazing_ratio=0.1)
        five = model({"video": video}, tiles="anyres", tile_batch_size=5, gazing_ratio=0.1)
    assert [i["frames"] for i in one["tile_gazing_info"]] == [(0, 2), (2, 3)]
    for a, b in zip(one["gazing_mask"], five["gazing_mask"]):
        assert torch.equal(a, b)
        assert a.shape[:2] == (2, 3)
    for i in range(4):
        b, c = divmod(i, 2)
        for clip, (s, e) in zip(one["tile_gazing_info"], [(0, 2), (2, 3)]):
            alone = gaze_alone(model, video[b, s:e, :, :, c * 224:(c + 1) * 224], gazing_ratio=0.1)
            assert real_tokens_per_frame(clip["gazing_pos"][i], clip["if_padded_gazing"][i], clip["num_gazing_each_frame"]) \
                == real_tokens_per_frame(alone["gazing_pos"][0], alone["if_padded_gazing"][0], alone["num_gazing_each_frame"])


def test_square_392_equals_upstream_fixture(model):
    case = load_file(str(FIXTURES / "anyres_cases.safetensors"))
    with torch.inference_mode():
        out = model({"video": case["video"]}, tiles="anyres", gazing_ratio=0.5, task_loss_requirement=REQUIREMENT,
                    target_scales=[56, 112, 196, 392], target_patch_size=14)
    assert out["num_tiles"] == 1
    info = out["tile_gazing_info"][0]
    assert info["num_gazing_each_frame"].tolist() == case["num_gazing_each_frame"].tolist()
    assert torch.equal(info["gazing_pos"], case["gazing_pos"])
    assert torch.equal(info["if_padded_gazing"], case["if_padded_gazing"].bool())
    for s, mask in enumerate(out["gazing_mask"]):
        assert torch.equal(mask.flatten(-2), case[f"gazing_mask_{s}"])


def test_square_224_equals_upstream_fixture(model):
    cases = load_file(str(FIXTURES / "gaze_cases.safetensors"))
    with torch.inference_mode():
        out = model({"video": cases["video"]}, tiles="anyres", gazing_ratio=0.75)
    info = out["tile_gazing_info"][0]
    assert torch.equal(info["gazing_pos"], cases["ratio_k10.gazing_pos"])
    assert torch.equal(info["if_padded_gazing"], cases["ratio_k10.if_padded_gazing"].bool())
    assert info["num_gazing_each_frame"].tolist() == cases["ratio_k10.num_gazing_each_frame"].tolist()


def test_pad_policy_never_reports_padding_cells(model):
    video = torch.randn(1, 1, 3, 240, 250, generator=torch.Generator().manual_seed(3))  # 2 x 2 tiles, mostly padding
    with torch.inference_mode():
        out = model({"video": video}, tiles="pad", gazing_ratio=0.5)
    grid = out["tile_grid"]
    assert (grid.rows, grid.cols, grid.content_h, grid.content_w) == (2, 2, 240, 250)
    canvas = grid.place(video)
    assert torch.equal(canvas[..., :240, :250], video) and not canvas[..., 240:, :].any() and not canvas[..., 250:].any()
    info = out["tile_gazing_info"][0]
    n = info["num_vision_tokens_each_frame"]
    flagged = 0
    for i in range(4):
        r, c = divmod(i, 2)
        alone = gaze_alone(model, canvas[0, :, :, r * 224:(r + 1) * 224, c * 224:(c + 1) * 224], gazing_ratio=0.5)
        want = real_tokens_per_frame(alone["gazing_pos"][0], alone["if_padded_gazing"][0], alone["num_gazing_each_frame"])[0]
        got = real_tokens_per_frame(info["gazing_pos"][i], info["if_padded_gazing"][i], info["num_gazing_each_frame"])[0]
        # oracle for "wholly in the padding": the token's cell starts below row 240 or right of column 250
        in_pad = []
        for tok in want:
            s, off = 0, tok
            for g in (2, 4, 7, 14):
                if off < g * g:
                    break
                off -= g * g
                s += 1
            cy, cx = divmod(off, g)
            in_pad.append(r * 224 + cy * 224 / g >= 240 or c * 224 + cx * 224 / g >= 250)
        assert got == [t for t, p in zip(want, in_pad) if not p], f"tile {i}"
        flagged += sum(in_pad)
        assert n == 265
    assert flagged > 0, "some gaze should fall in the padding (else the test is weak)"
    cells = out["cells"]
    assert len(cells) == sum(int(m.sum()) for m in out["gazing_mask"])
    assert (cells.box[:, 0] < 250).all() and (cells.box[:, 1] < 240).all()
    assert (cells.box[:, 2] <= 250).all() and (cells.box[:, 3] <= 240).all()


# ------------------------------------------------------------------ boxes
@pytest.mark.parametrize("policy, hw", [("anyres", (300, 500)), ("resize", (300, 500)), ("pad", (300, 500))])
def test_boxes_lie_in_the_source_and_cover_exactly_the_gazed_cells(policy, hw):
    grid = TileGrid.plan(*hw, policy=policy)
    gen = torch.Generator().manual_seed(4)
    masks = grid.stitch([(torch.rand(2 * grid.n_tiles, 3, g * g, generator=gen) < 0.3).float() for g in (2, 4, 7, 14)])
    cells = grid.cells(masks)
    h, w = hw
    assert len(cells) == sum(int(m.sum()) for m in masks)
    got = sorted(zip(cells.scale.tolist(), cells.batch.tolist(), cells.frame.tolist(), cells.row.tolist(), cells.col.tolist()))
    want = sorted((s, *idx) for s, m in enumerate(masks) for idx in m.nonzero().tolist())
    assert got == want
    box = cells.box.double()
    assert (box[:, 0] >= 0).all() and (box[:, 1] >= 0).all() and (box[:, 2] <= w).all() and (box[:, 3] <= h).all()
    assert (box[:, 2] > box[:, 0]).all() and (box[:, 3] > box[:, 1]).all()
    # oracle: the cell's canvas rectangle mapped to the source by hand
    sy = 1.0 if policy == "pad" else h / grid.canvas_h
    sx = 1.0 if policy == "pad" else w / grid.canvas_w
    for k in range(len(cells)):
        g = masks[cells.scale[k]].shape[-1] // grid.cols
        cell = grid.tile_size / g
        r, c = cells.row[k].item(), cells.col[k].item()
        want_box = [c * cell * sx, r * cell * sy, min((c + 1) * cell * sx, w), min((r + 1) * cell * sy, h)]
        assert torch.allclose(box[k], torch.tensor(want_box, dtype=torch.float64), atol=1e-3)
        assert cells.tile[k] == (r // g) * grid.cols + c // g
    # every cell of a scale together covers the source exactly once (areas add up to H x W)
    for g in (2, 4, 7, 14):
        b = grid.cell_boxes(g).double().flatten(0, 1)
        assert torch.isclose(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum(), torch.tensor(float(h * w), dtype=torch.float64))


# ------------------------------------------------------------------ preparing the canvas
@pytest.mark.parametrize("policy", ["anyres", "pad"])
def test_prepare_equals_the_processor_at_the_canvas_size(policy):
    processor = AutoGazeImageProcessor.from_pretrained(FIXTURES / "tiny_k10")
    frames = np.random.default_rng(5).integers(0, 256, (2, 100, 300, 3), dtype=np.uint8)  # 3 : 1
    grid = TileGrid.plan(100, 300, policy=policy)
    canvas = grid.prepare(frames, processor)
    assert canvas.shape == (1, 2, 3, grid.canvas_h, grid.canvas_w)
    if policy == "anyres":
        want = processor(frames, size={"height": 224, "width": 448}).pixel_values
        assert torch.equal(canvas[0], want)
    else:
        want = processor(frames, do_resize=False).pixel_values
        assert torch.equal(canvas[0, :, :, :100, :300], want)
        assert not canvas[0, :, :, 100:].any() and not canvas[0, :, :, :, 300:].any()
    with pytest.raises(ValueError, match="planned for 100x300"):
        grid.prepare(frames[:, :50], processor)


def test_model_with_a_prepared_grid_and_its_boxes(model):
    processor = AutoGazeImageProcessor.from_pretrained(FIXTURES / "tiny_k10")
    frames = np.random.default_rng(6).integers(0, 256, (1, 1000, 60, 3), dtype=np.uint8)  # 1000 x 60: 16.7 : 1
    grid = TileGrid.plan(1000, 60, max_tiles=3)
    assert (grid.rows, grid.cols) == (3, 1)
    with torch.inference_mode():
        out = model({"video": grid.prepare(frames, processor)}, tiles=grid, gazing_ratio=0.1)
    assert [m.shape for m in out["gazing_mask"]] == [(1, 1, 3 * g, g) for g in (2, 4, 7, 14)]
    box = out["cells"].box
    assert len(box) == sum(int(m.sum()) for m in out["gazing_mask"]) > 0
    assert (box[:, 2] <= 60).all() and (box[:, 3] <= 1000).all() and (box[:, :2] >= 0).all()


def test_model_bad_tiled_calls(model):
    video = torch.zeros(1, 1, 3, 224, 448)
    with pytest.raises(ValueError, match="max_tiles must be >= 1"):
        model({"video": video}, tiles="anyres", max_tiles=0)
    with pytest.raises(ValueError, match="tile_batch_size must be >= 1"):
        model({"video": video}, tiles="anyres", tile_batch_size=0)
    with pytest.raises(ValueError, match="must be one of"):
        model({"video": video}, tiles="squash")
    with pytest.raises(ValueError, match="tiles must be 'anyres'"):
        model({"video": video}, tiles=3)
    with pytest.raises(ValueError, match="max_tiles needs tiles"):
        model({"video": video}, max_tiles=4)
    with pytest.raises(ValueError, match="blown up"):
        model({"video": torch.zeros(1, 1, 3, 1, 4000)}, tiles="anyres")
    with pytest.raises(ValueError, match="plan the grid with tile_size=392, patch_size=14"):
        model({"video": video}, tiles=TileGrid.plan(224, 448), target_scales=[56, 112, 196, 392], target_patch_size=14)
    with pytest.raises(ValueError, match="canvas is 224x672"):
        model({"video": video}, tiles=TileGrid.plan(224, 600))
    with pytest.raises(ValueError, match="not a multiple of target_patch_size"):
        model({"video": video}, tiles="anyres", target_scales=[56, 112, 196, 390], target_patch_size=14)
    with pytest.raises(ValueError, match="streaming"):
        model({"video": video}, tiles="anyres", use_cache=True, generate_only=True)


def test_tile_gaze_feeds_siglip_on_the_tile_pixels(model):
    """Gazed SigLIP over all tiles with the merged per-tile gaze equals SigLIP on each tile with the
    tile's own gaze (features of the real tokens), so the pads added by merging tile batches are inert."""
    from autogaze_fast import SiglipVisionModel

    siglip = SiglipVisionModel.from_pretrained(FIXTURES / "tiny_siglip", impl=model.impl)
    video = torch.randn(1, 2, 3, 200, 420, generator=torch.Generator().manual_seed(7))  # 1 x 2 tiles
    with torch.inference_mode():
        out = model({"video": video}, tiles="anyres", tile_batch_size=1, gazing_ratio=0.2,
                    task_loss_requirement=REQUIREMENT)
        grid, info = out["tile_grid"], out["tile_gazing_info"][0]
        assert info["if_padded_gazing"].any(), "merging should have padded a tile that stopped early"
        tiles = grid.cut(grid.place(video))
        together = siglip(tiles, gazing_info=info).last_hidden_state
        for i in range(grid.n_tiles):
            alone_gaze = gaze_alone(model, tiles[i], gazing_ratio=0.2, task_loss_requirement=REQUIREMENT)
            alone = siglip(tiles[i:i + 1], gazing_info=alone_gaze).last_hidden_state[0]
            got = together[i][~info["if_padded_gazing"][i]]
            want = alone[~alone_gaze["if_padded_gazing"][0].bool()]
            assert got.shape == want.shape
            assert torch.allclose(got, want, atol=1e-5), f"tile {i}"
