"""Any-resolution gazing when the target grid is not a whole number of tiles (SPEC §7).

upstream's fixture (392 = 2 × 196) needs no crop; here the target grid of the largest scale is 24
(336 / 14), so the video is padded at the bottom/right to 2 × 2 tiles of 196 px and the stitched
28 × 28 mask must be cropped back to its top-left 24 × 24. Oracle: the same tiles cut by hand and
gazed as one batch without any target layout, masks stitched and cropped by hand, gazing_pos rebuilt
from them in ascending order.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES

from autogaze_fast import AutoGaze

TARGET_SCALES, PATCH = [56, 112, 196, 336], 14
TILE_PX, TILES = 196, 2  # each tile's largest grid is the model's 14 × 14


@pytest.fixture(autouse=True)
def _twins(torch_twins):
    """The fast model on its CPU torch twins."""


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_padded_tiles_are_stitched_and_cropped_top_left(impl):
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl=impl)
    video = torch.randn(1, 2, 3, 336, 336, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = model({"video": video}, gazing_ratio=0.1, generate_only=True,
                    target_scales=TARGET_SCALES, target_patch_size=PATCH)
        padded = F.pad(video, (0, TILES * TILE_PX - 336, 0, TILES * TILE_PX - 336))
        tiles = torch.cat([padded[..., i * TILE_PX:(i + 1) * TILE_PX, j * TILE_PX:(j + 1) * TILE_PX]
                           for i in range(TILES) for j in range(TILES)])
        per_tile = model({"video": tiles}, gazing_ratio=0.1, generate_only=True)

    frames = video.shape[1]
    expected = []
    for mask, scale in zip(per_tile["gazing_mask"], TARGET_SCALES):
        g = int(mask.shape[-1] ** 0.5)
        grid = torch.zeros(frames, TILES * g, TILES * g)
        for i in range(TILES):
            for j in range(TILES):
                grid[:, i * g:(i + 1) * g, j * g:(j + 1) * g] = mask[i * TILES + j].view(frames, g, g)
        side = scale // PATCH
        expected.append(grid[:, :side, :side].reshape(1, frames, side * side))
    assert [m.shape for m in out["gazing_mask"]] == [e.shape for e in expected]
    for s, (got, want) in enumerate(zip(out["gazing_mask"], expected)):
        assert torch.equal(got, want), f"scale {TARGET_SCALES[s]}"
    assert expected[-1].sum() < per_tile["gazing_mask"][-1].sum(), "the crop must drop gazed padding"

    n = sum((s // PATCH) ** 2 for s in TARGET_SCALES)
    assert out["num_vision_tokens_each_frame"] == n
    full = torch.cat(expected, dim=-1)[0]  # (T, n)
    want_pos = torch.cat([full[t].nonzero()[:, 0] + n * t for t in range(frames)])
    assert out["num_gazing_each_frame"].tolist() == full.sum(-1).long().tolist()
    assert torch.equal(out["gazing_pos"][0], want_pos)
    assert not out["if_padded_gazing"].any()
