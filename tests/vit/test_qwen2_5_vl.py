"""The Qwen2.5-VL vision tower: dense output equals transformers' ``Qwen2_5_VisionTransformerPretrainedModel``
(fixtures from a scratch venv, tests/fixtures/qwen2_5_vl/meta.json), fast and reference paths; the
kept-units path equals the explicit-mask reference for many keep masks (plain CPU and the Triton
kernels), and where a keep mask leaves whole clips or temporal patches it equals transformers' dense
tokens there; frames, loading (vision-only and full sharded layouts), errors, save_pretrained."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from autogaze_fast import AutoVisionModel
from autogaze_fast.config import ConfigError
from autogaze_fast.loading import CheckpointError
from autogaze_fast.processing.qwen_patches import patchify_frames
from autogaze_fast.vit.qwen2_5_vl import Qwen25VisionConfig
from autogaze_fast.vit.qwen_common import unit_layout

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "qwen2_5_vl"
CASES = ("video_partial_windows", "image_t1", "two_clips")


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def cases() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "cases.safetensors")


def case(cases, name):
    return cases[f"{name}.pixel_values"].float(), cases[f"{name}.grid_thw"], cases[f"{name}.output"]


def load(impl="fast", layout="vision", device="cpu"):
    return AutoVisionModel.from_pretrained(FIXTURES / layout, impl=impl, device=device)


def close(a, b):
    torch.testing.assert_close(a.cpu(), b.cpu(), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ dense equivalence
@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_dense_matches_transformers(torch_twins, cases, name, impl):
    x, grid, want = case(cases, name)
    out = load(impl)(x, grid_thw=grid)
    close(out.last_hidden_state, want)
    layout = unit_layout(grid)
    assert out.keep.all() and out.keep.shape == (layout.num_units,)
    assert torch.equal(out.positions, layout.position) and torch.equal(out.clip_index, layout.clip)
    assert torch.equal(out.grid_thw, grid) and out.deepstack is None


def test_dense_matches_transformers_triton(triton_kernels, cases):
    x, grid, want = case(cases, "two_clips")
    out = load("fast", device=triton_kernels)(x.to(triton_kernels), grid_thw=grid)
    close(out.last_hidden_state, want)


# ------------------------------------------------------------------ selection equivalence
def keep_masks(grid: torch.Tensor) -> dict[str, torch.Tensor]:
    """Named keep masks over the units of ``grid`` (window 2 x 2 units in the fixture model)."""
    layout = unit_layout(grid, 2, window_units=2)
    u = layout.num_units
    g = torch.Generator().manual_seed(3)
    masks = {"all": torch.ones(u, dtype=torch.bool), "none": torch.zeros(u, dtype=torch.bool),
             "random_half": torch.rand(u, generator=g) < 0.5, "random_tenth": torch.rand(u, generator=g) < 0.25}
    one = torch.zeros(u, dtype=torch.bool)
    one[u // 2] = True
    masks["one_unit"] = one
    masks["empty_window"] = layout.window_segment != layout.window_segment[0]
    masks["empty_temporal_patch"] = layout.frame_segment != 0
    return masks


@pytest.mark.parametrize("name", ["video_partial_windows", "two_clips"])
def test_kept_units_match_reference_cpu(torch_twins, cases, name):
    x, grid, _ = case(cases, name)
    fast, ref = load("fast"), load("reference")
    layout = unit_layout(grid)
    for label, keep in keep_masks(grid).items():
        a, b = fast(x, grid_thw=grid, keep=keep), ref(x, grid_thw=grid, keep=keep)
        assert a.last_hidden_state.shape == (int(keep.sum()), 40), label
        close(a.last_hidden_state, b.last_hidden_state)
        assert torch.equal(a.positions, layout.position[keep]), label
        assert torch.equal(a.clip_index, layout.clip[keep]) and torch.equal(a.keep, keep), label


def test_kept_units_match_reference_triton(triton_kernels, cases):
    x, grid, _ = case(cases, "two_clips")
    fast, ref = load("fast", device=triton_kernels), load("reference")
    masks = keep_masks(grid)
    for label in ("random_half", "empty_window", "empty_temporal_patch", "one_unit"):
        keep = masks[label]
        a = fast(x.to(triton_kernels), grid_thw=grid, keep=keep.to(triton_kernels))
        close(a.last_hidden_state, ref(x, grid_thw=grid, keep=keep).last_hidden_state)


def test_dropping_whole_clips_and_temporal_patches_leaves_transformers_tokens(torch_twins, cases):
    """Segments never cross a clip or a temporal patch, so keeping exactly one clip (or one temporal
    patch) gives transformers' dense tokens of it: an oracle for the kept path beside the reference."""
    x, grid, want = case(cases, "two_clips")
    layout = unit_layout(grid)
    for impl in ("fast", "reference"):
        model = load(impl)
        for keep in (layout.clip == 0, layout.clip == 1, layout.frame_segment == 2):
            close(model(x, grid_thw=grid, keep=keep).last_hidden_state, want[keep])


def test_a_dropped_unit_changes_its_windows_tokens(torch_twins, cases):
    """The mask is real: dropping one unit changes the kept tokens of its window, not those of other
    temporal patches."""
    x, grid, want = case(cases, "video_partial_windows")
    layout = unit_layout(grid, 2, window_units=2)
    keep = torch.ones(layout.num_units, dtype=torch.bool)
    keep[0] = False
    out = load("fast")(x, grid_thw=grid, keep=keep).last_hidden_state
    same_window = (layout.window_segment == layout.window_segment[0])[keep]
    other_t = (layout.frame_segment != 0)[keep]
    assert (out[same_window] - want[keep][same_window]).abs().max() > 1e-3
    close(out[other_t], want[keep][other_t])


# ------------------------------------------------------------------ frames, routing, errors
def test_encode_frames_equals_tower_on_patchified_rows(torch_twins):
    model = load("fast")
    frames = torch.randn(2, 3, 3, 56, 84, generator=torch.Generator().manual_seed(1))  # T = 3: padded to 4
    keep = torch.rand(2, 2, 2, 3, generator=torch.Generator().manual_seed(2)) < 0.6
    rows = []
    for clip in frames:
        r, grid = patchify_frames(clip)
        rows.append(r)
    grid_thw = torch.tensor([grid, grid])
    want = model(torch.cat(rows), grid_thw=grid_thw, keep=keep.reshape(-1))
    got = model(frames, keep=keep)
    close(got.last_hidden_state, want.last_hidden_state)
    assert torch.equal(got.grid_thw, grid_thw) and torch.equal(got.positions, want.positions)
    with pytest.raises(ValueError, match=r"keep must be \(B, gt"):
        model(frames, keep=keep[:, :1])


def test_bad_inputs_are_named(torch_twins, cases):
    model = load("fast")
    x, grid, _ = case(cases, "image_t1")
    with pytest.raises(ValueError, match="need grid_thw"):
        model(x)
    with pytest.raises(ValueError, match=r"pixel_values must be \(N, C\*temporal_patch_size"):
        model(x[:-1], grid_thw=grid)
    with pytest.raises(ValueError, match="multiples of spatial_merge_size"):
        model(x, grid_thw=torch.tensor([[1, 3, 8]]))
    with pytest.raises(ValueError, match=r"keep must be \(U_total,\)"):
        model(x, grid_thw=grid, keep=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="keep must be a bool"):
        model(x, grid_thw=grid, keep=torch.ones(4))


def test_config_errors_are_clear():
    raw = json.loads((FIXTURES / "full" / "config.json").read_text())
    assert Qwen25VisionConfig.from_dict(raw).hidden_size == 32
    with pytest.raises(ConfigError, match="must be an object"):
        Qwen25VisionConfig.from_dict({"model_type": "qwen2_5_vl", "vision_config": 3})
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        Qwen25VisionConfig.from_dict({"model_type": "qwen2_5_vl", "hidden_size": 30, "num_heads": 4})
    with pytest.raises(ConfigError, match="at most 128"):  # transformers' default hidden_size 3584 / 16 heads
        Qwen25VisionConfig.from_dict({"model_type": "qwen2_5_vl"})
    base = {"model_type": "qwen2_5_vl", "hidden_size": 1280, "num_heads": 16}
    with pytest.raises(ConfigError, match="fullatt_block_indexes"):
        Qwen25VisionConfig.from_dict(base | {"depth": 4, "fullatt_block_indexes": [4]})
    with pytest.raises(ConfigError, match="smaller than one merge unit"):
        Qwen25VisionConfig.from_dict(base | {"window_size": 14})
    with pytest.raises(ConfigError, match="model_type"):
        Qwen25VisionConfig.from_dict(base | {"model_type": "qwen2_vl"})
    assert Qwen25VisionConfig.from_dict(base | {"in_chans": 1}).in_channels == 1


# ------------------------------------------------------------------ loading
def test_both_layouts_load_the_same_tower_and_strays_are_skipped():
    vision, full = load(layout="vision"), load(layout="full")
    assert vision.family == full.family == "qwen2_5_vl" and vision.scales == [] and vision.num_prefix_tokens == 0
    a, b = vision.vision_model.state_dict(), full.vision_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    index = json.loads((FIXTURES / "full" / "model.safetensors.index.json").read_text())["weight_map"]
    assert any(k.startswith("model.language_model.") for k in index)


def test_only_visual_shards_are_read(tmp_path):
    shutil.copytree(FIXTURES / "full", tmp_path / "full")
    (tmp_path / "full" / "model-00002-of-00002.safetensors").write_bytes(b"not a safetensors file")
    load(layout=tmp_path / "full")  # the LLM's shard is never opened


def test_a_wrongly_shaped_key_is_named(tmp_path):
    shutil.copytree(FIXTURES / "vision", tmp_path / "v")
    state = load_file(tmp_path / "v" / "model.safetensors")
    state["blocks.2.mlp.up_proj.weight"] = state["blocks.2.mlp.up_proj.weight"][:-1].contiguous()
    del state["merger.ln_q.weight"]
    save_file(state, str(tmp_path / "v" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"(?s)missing keys.*merger\.ln_q\.weight.*blocks\.2\.mlp\.up_proj\.weight"):
        load(layout=tmp_path / "v")


def test_a_checkpoint_without_a_tower_is_refused(tmp_path):
    shutil.copy(FIXTURES / "vision" / "config.json", tmp_path / "config.json")
    save_file({"model.language_model.w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="no vision tower"):
        load(layout=tmp_path)


def test_save_pretrained_round_trip(torch_twins, tmp_path, cases):
    model = load(layout="full")
    model.save_pretrained(tmp_path / "saved")
    again = load(layout=tmp_path / "saved")
    assert again.config == model.config
    x, grid, want = case(cases, "video_partial_windows")
    close(again(x, grid_thw=grid).last_hidden_state, want)
    assert set(load_file(tmp_path / "saved" / "model.safetensors")) == set(model.vision_model.state_dict())
