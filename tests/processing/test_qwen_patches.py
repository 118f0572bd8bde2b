"""The Qwen-VL patch rows: every row checked against the docstring's formula, and the round trip."""

import pytest
import torch

from autogaze_fast.processing.qwen_patches import patchify_frames, unit_grid, unpatchify_rows


@pytest.mark.parametrize("frames,size,patch", [(4, (56, 84), 14), (3, (28, 56), 14), (2, (64, 32), 16)])
def test_every_row_holds_its_patch_by_the_documented_order(frames, size, patch):
    g = torch.Generator().manual_seed(0)
    video = torch.randn(frames, 3, *size, generator=g)
    rows, (gt, gh, gw) = patchify_frames(video, patch_size=patch)
    assert (gt, gh, gw) == ((frames + 1) // 2, size[0] // patch, size[1] // patch)
    padded = torch.cat([video, video[-1:]]) if frames % 2 else video
    for t in range(gt):
        for h in range(gh):
            for w in range(gw):
                row = t * gh * gw + ((h // 2) * (gw // 2) + w // 2) * 4 + (h % 2) * 2 + w % 2
                cell = padded[2 * t:2 * t + 2, :, h * patch:(h + 1) * patch, w * patch:(w + 1) * patch]
                assert torch.equal(rows[row], cell.transpose(0, 1).flatten())
    assert unit_grid((gt, gh, gw)) == (gt, gh // 2, gw // 2)


def test_round_trip():
    video = torch.randn(4, 3, 56, 28)
    rows, grid = patchify_frames(video)
    assert torch.equal(unpatchify_rows(rows, grid), video)


def test_bad_sizes_say_how_to_fix():
    with pytest.raises(ValueError, match="multiples of patch_size"):
        patchify_frames(torch.zeros(2, 3, 30, 28))
    with pytest.raises(ValueError, match="T x C x H x W"):
        patchify_frames(torch.zeros(3, 28, 28))
