"""LLM M-RoPE ids of gazed Qwen video tokens: dense equals transformers' get_rope_index (fixtures);
gazed equals the dense ids with the dropped tokens' columns removed."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from autogaze_fast.vit.qwen_positions import VideoTokens, mrope_position_ids, split_temporal_patches

FIXTURES = Path(__file__).parent.parent / "fixtures" / "qwen_mrope"
META = json.loads((FIXTURES / "meta.json").read_text())
TENSORS = load_file(str(FIXTURES / "mrope.safetensors"))
VIDEO = META["token_ids"]["video"]


def runs(ids: list[int]) -> list[tuple[bool, int]]:
    """(is_video, length) runs of a token sequence."""
    out: list[tuple[bool, int]] = []
    for x in ids:
        v = x == VIDEO
        if out and out[-1][0] == v:
            out[-1] = (v, out[-1][1] + 1)
        else:
            out.append((v, 1))
    return out


def grid_positions(unit_grid) -> torch.Tensor:
    gt, hu, wu = unit_grid
    return torch.cartesian_prod(torch.arange(gt), torch.arange(hu), torch.arange(wu))


def units(grid_thw) -> tuple[int, int, int]:
    t, h, w = grid_thw
    return t, h // 2, w // 2


def qwen2_5_pieces(keeps=None):
    case = next(c for c in META["cases"] if c["name"] == "qwen2_5_vl")
    videos = iter(range(len(case["video_grid_thw"])))
    pieces, kept_columns, col = [], [], 0
    for is_video, n in runs(TENSORS["qwen2_5_vl.input_ids"][0].tolist()):
        if not is_video:
            pieces.append(n)
            kept_columns += range(col, col + n)
        else:
            k = next(videos)
            grid = units(case["video_grid_thw"][k])
            pos = grid_positions(grid)
            keep = torch.ones(len(pos), dtype=torch.bool) if keeps is None else keeps[k]
            assert len(pos) == n
            pieces.append(VideoTokens(pos[keep], grid, case["second_per_grid_ts"][k]))
            kept_columns += [col + i for i in torch.nonzero(keep).flatten().tolist()]
        col += n
    return pieces, kept_columns, case["tokens_per_second"]


def test_dense_qwen2_5_vl_equals_transformers_get_rope_index():
    pieces, _, tps = qwen2_5_pieces()
    ids, delta = mrope_position_ids(pieces, tokens_per_second=tps)
    assert torch.equal(ids, TENSORS["qwen2_5_vl.position_ids"][:, 0])
    assert delta == int(TENSORS["qwen2_5_vl.rope_deltas"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gazed_ids_are_the_dense_ids_of_the_kept_tokens(seed):
    g = torch.Generator().manual_seed(seed)
    case = next(c for c in META["cases"] if c["name"] == "qwen2_5_vl")
    keeps = [torch.rand(len(grid_positions(units(gr))), generator=g) < 0.3 for gr in case["video_grid_thw"]]
    pieces, kept_columns, tps = qwen2_5_pieces(keeps)
    ids, delta = mrope_position_ids(pieces, tokens_per_second=tps)
    assert torch.equal(ids, TENSORS["qwen2_5_vl.position_ids"][:, 0, kept_columns])
    assert delta == int(TENSORS["qwen2_5_vl.rope_deltas"]) + (TENSORS["qwen2_5_vl.input_ids"].shape[1] - ids.shape[1])


def test_qwen3_vl_pieces_per_temporal_patch_equal_transformers():
    case = next(c for c in META["cases"] if c["name"] == "qwen3_vl")
    grid = units(case["video_grid_thw"][0])
    frames = iter(split_temporal_patches(VideoTokens(grid_positions(grid), grid)))
    pieces = [n if not is_video else next(frames) for is_video, n in runs(TENSORS["qwen3_vl.input_ids"][0].tolist())]
    ids, delta = mrope_position_ids(pieces)
    assert torch.equal(ids, TENSORS["qwen3_vl.position_ids"][:, 0])
    assert delta == int(TENSORS["qwen3_vl.rope_deltas"])


def test_bad_positions_are_refused():
    with pytest.raises(ValueError, match="unit grid"):
        VideoTokens(torch.tensor([[0, 4, 0]]), (1, 4, 4))
