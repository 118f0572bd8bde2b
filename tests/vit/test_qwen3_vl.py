"""The Qwen3-VL vision tower: dense equals transformers 4.57.6's Qwen3VLVisionModel (fixtures: merged tokens and
deepstack features), the kept-units fast path equals the explicit-mask reference (fp32, 1e-5, CPU and the Triton
kernels), loading both checkpoint layouts (only the visual tensors read), save_pretrained, encode_frames."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from autogaze_fast import AutoVisionModel, CheckpointError, ConfigError
from autogaze_fast.kernels import sparse_attention as sparse_attention_module
from autogaze_fast.processing.qwen_patches import patchify_frames
from autogaze_fast.vit.qwen3_vl import Qwen3VLVisionTower, interpolate_pos_embed
from autogaze_fast.vit.qwen3_vl_config import Qwen3VLVisionConfig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "qwen3_vl"
CASES = load_file(str(FIXTURES / "cases.safetensors"))
DENSE = ["video", "image", "two_clips", "big_grid"]


def case(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The case's pixel_values rows (int8 / 32, as the fixture script fed transformers) and grid_thw."""
    return CASES[f"{name}.rows_int8"].float() / 32, CASES[f"{name}.grid_thw"]


def load(sub: str = "vision", impl: str = "fast", **kw):
    return AutoVisionModel.from_pretrained(FIXTURES / sub, impl=impl, **kw)


def run(model, rows, grid, keep=None):
    with torch.no_grad():
        return model(rows, grid_thw=grid, keep=keep)


def all_units(grid: torch.Tensor) -> torch.Tensor:
    """(U, 3) (t, uh, uw) of every unit, clip after clip, row-major: transformers' merged-token order."""
    return torch.cat([torch.cartesian_prod(torch.arange(t), torch.arange(h // 2), torch.arange(w // 2))
                      for t, h, w in grid.tolist()]).reshape(-1, 3)


def assert_matches_fixture(out, name: str, keep: torch.Tensor | None = None) -> None:
    want = CASES[f"{name}.merged"]
    sel = slice(None) if keep is None else keep
    torch.testing.assert_close(out.last_hidden_state, want[sel], atol=1e-5, rtol=0)
    deep = sorted(k for k in CASES if k.startswith(f"{name}.deepstack"))
    assert out.deepstack is not None and len(out.deepstack) == len(deep)
    for got, key in zip(out.deepstack, deep):
        torch.testing.assert_close(got, CASES[key][sel], atol=1e-5, rtol=0)


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("name", DENSE)
def test_dense_equals_transformers(torch_twins, name, impl):
    rows, grid = case(name)
    out = run(load(impl=impl), rows, grid)
    assert_matches_fixture(out, name)
    units = all_units(grid)
    assert torch.equal(out.positions, units) and out.keep.all() and out.keep.shape == (units.shape[0],)
    sizes = [t * (h // 2) * (w // 2) for t, h, w in grid.tolist()]
    assert torch.equal(out.clip_index, torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes)))
    assert torch.equal(out.grid_thw, grid)


def test_dense_equals_transformers_triton(triton_kernels):
    rows, grid = case("two_clips")
    model = load().to(triton_kernels)
    out = run(model, rows.to(triton_kernels), grid.to(triton_kernels))
    torch.testing.assert_close(out.last_hidden_state.cpu(), CASES["two_clips.merged"], atol=1e-5, rtol=0)
    for i, d in enumerate(out.deepstack):
        torch.testing.assert_close(d.cpu(), CASES[f"two_clips.deepstack{i}"], atol=1e-5, rtol=0)


def random_keep(grid: torch.Tensor, seed: int, fraction: float = 0.4) -> torch.Tensor:
    """Random units kept; the last clip's first temporal patch keeps exactly one unit (a lone query)."""
    sizes = [t * (h // 2) * (w // 2) for t, h, w in grid.tolist()]
    keep = torch.rand(sum(sizes), generator=torch.Generator().manual_seed(seed)) < fraction
    start, per_t = sum(sizes[:-1]), (grid[-1, 1] // 2) * (grid[-1, 2] // 2)
    keep[start:start + per_t] = False
    keep[start + per_t // 2] = True
    return keep


def assert_same(fast, ref) -> None:
    torch.testing.assert_close(fast.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=0)
    for a, b in zip(fast.deepstack, ref.deepstack, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    for field in ("positions", "clip_index", "grid_thw", "keep"):
        assert torch.equal(getattr(fast, field), getattr(ref, field)), field


@pytest.mark.parametrize("name", ["video", "two_clips", "big_grid"])
def test_selection_fast_equals_masked_reference_cpu(torch_twins, name):
    rows, grid = case(name)
    keep = random_keep(grid, seed=len(name))
    fast, ref = run(load(), rows, grid, keep), run(load(impl="reference"), rows, grid, keep)
    assert fast.last_hidden_state.shape == (int(keep.sum()), 16)
    assert_same(fast, ref)
    assert torch.equal(fast.positions, all_units(grid)[keep])
    # the dropped units' pixels do not matter: the kept tokens never see them
    noisy = rows.clone()
    noisy[~keep.repeat_interleave(4)] = torch.randn(int((~keep).sum()) * 4, rows.shape[1])
    assert_same(run(load(), noisy, grid, keep), fast)


def test_selection_fast_equals_masked_reference_triton(triton_kernels, monkeypatch):
    rows, grid = case("two_clips")
    keep = random_keep(grid, seed=3)
    dev = triton_kernels
    calls = []
    forward = sparse_attention_module._fwd_triton
    monkeypatch.setattr(sparse_attention_module, "_fwd_triton", lambda *a, **k: calls.append(1) or forward(*a, **k))
    fast = run(load().to(dev), rows.to(dev), grid.to(dev), keep.to(dev))
    assert len(calls) == 4  # every block's attention went through the Triton kernel
    ref = run(load(impl="reference"), rows, grid, keep)
    torch.testing.assert_close(fast.last_hidden_state.cpu(), ref.last_hidden_state, atol=1e-5, rtol=0)
    for a, b in zip(fast.deepstack, ref.deepstack, strict=True):
        torch.testing.assert_close(a.cpu(), b, atol=1e-5, rtol=0)
    assert torch.equal(fast.positions.cpu(), ref.positions)


def test_every_unit_kept_is_dense_and_none_kept_is_empty(torch_twins):
    rows, grid = case("video")
    model = load()
    out = run(model, rows, grid, torch.ones(rows.shape[0] // 4, dtype=torch.bool))
    assert_matches_fixture(out, "video")
    empty = run(model, rows, grid, torch.zeros(rows.shape[0] // 4, dtype=torch.bool))
    assert empty.last_hidden_state.shape == (0, 16) and all(d.shape == (0, 16) for d in empty.deepstack)
    assert empty.positions.shape == (0, 3)


def test_position_table_on_its_own_grid_is_the_table_and_kept_units_take_the_full_grid_values():
    table = torch.randn(64, 5)
    r, c = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    assert torch.equal(interpolate_pos_embed(table, (8, 8), r.flatten(), c.flatten()), table)
    # a 3-wide grid samples columns 0, 3.5 and 7 of the 8-wide table
    mid = interpolate_pos_embed(table, (8, 3), torch.tensor([2]), torch.tensor([1]))
    torch.testing.assert_close(mid[0], (table[2 * 8 + 3] + table[2 * 8 + 4]) / 2)


def test_encode_frames_equals_the_tower_on_patchified_rows(torch_twins):
    model = load()
    frames = torch.randn(2, 3, 3, 64, 96, generator=torch.Generator().manual_seed(5))  # T = 3: last frame repeated
    keep = torch.rand(2, 2, 2, 3, generator=torch.Generator().manual_seed(6)) < 0.5
    with torch.no_grad():
        got = model(frames, keep=keep)
        clips = [patchify_frames(f, patch_size=16) for f in frames]
        want = model.vision_model(torch.cat([r for r, _ in clips]), torch.tensor([g for _, g in clips]), keep.flatten())
    assert [g for _, g in clips] == [(2, 4, 6), (2, 4, 6)]
    assert_same(got, want)
    with pytest.raises(ValueError, match="keep must be"):
        model(frames, keep=keep[:, :1])


def test_bad_inputs_are_named(torch_twins):
    rows, grid = case("video")
    model = load()
    with pytest.raises(ValueError, match=r"= \(48, 1536\) for grid_thw \[\[2, 4, 6\]\], got shape \(40, 1536\)"):
        model(rows[:40], grid_thw=grid)
    with pytest.raises(ValueError, match="multiples of spatial_merge_size 2"):
        model(rows, grid_thw=torch.tensor([[2, 3, 8]]))
    with pytest.raises(ValueError, match=r"keep must be \(U_total,\) = \(12,\)"):
        model(rows, grid_thw=grid, keep=torch.ones(11, dtype=torch.bool))
    with pytest.raises(ValueError, match="need grid_thw"):
        model(rows)


def copy_fixture(tmp_path: Path, sub: str) -> Path:
    out = tmp_path / sub
    shutil.copytree(FIXTURES / sub, out)
    return out


def test_full_checkpoint_reads_only_the_visual_tensors(torch_twins, tmp_path):
    path = copy_fixture(tmp_path, "full")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    llm = [k for k in index["weight_map"] if not k.startswith("model.visual.")]
    assert "lm_head.weight" in llm and any(k.startswith("model.language_model.") for k in llm)
    # the language model's tensors now point to a shard that is not there: never opened
    index["weight_map"].update(dict.fromkeys(llm, "model-llm-not-here.safetensors"))
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    model = AutoVisionModel.from_pretrained(path)
    assert model.family == "qwen3_vl" and model.config.depth == 2 and model.config.deepstack_visual_indexes == [0]
    rows, grid = case("full")
    assert_matches_fixture(run(model, rows, grid), "full")


def single_file_full_checkpoint(tmp_path: Path, prefix: str, edit=None) -> Path:
    """The full fixture rewritten as one model.safetensors with the visual tensors under ``prefix``."""
    src = FIXTURES / "full"
    state = {}
    for shard in sorted(src.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    state = {(prefix + k.removeprefix("model.visual.")) if k.startswith("model.visual.") else k: v
             for k, v in state.items()}
    out = tmp_path / prefix.strip(".")
    out.mkdir()
    save_file(edit(state) if edit else state, str(out / "model.safetensors"))
    shutil.copy(src / "config.json", out / "config.json")
    return out


def test_older_visual_prefix_and_moe_model_type(torch_twins, tmp_path):
    path = single_file_full_checkpoint(tmp_path, "visual.")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "model_type": "qwen3_vl_moe"}))
    rows, grid = case("full")
    assert_matches_fixture(run(AutoVisionModel.from_pretrained(path), rows, grid), "full")


def test_wrong_shaped_and_stray_keys_are_named(tmp_path):
    def narrow(state):
        state["visual.blocks.1.mlp.linear_fc1.weight"] = state["visual.blocks.1.mlp.linear_fc1.weight"][:5]
        return state

    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.linear_fc1\.weight: checkpoint \(5, 16\)"):
        AutoVisionModel.from_pretrained(single_file_full_checkpoint(tmp_path, "visual.", narrow))
    stray = copy_fixture(tmp_path, "vision")
    state = load_file(str(stray / "model.safetensors"))
    save_file({**state, "blocks.9.attn.qkv.weight": torch.zeros(2, 2)}, str(stray / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): blocks\.9\.attn\.qkv\.weight"):
        AutoVisionModel.from_pretrained(stray)
    with pytest.raises(CheckpointError, match="patch_embed.proj.weight"):
        AutoVisionModel.from_pretrained(single_file_full_checkpoint(
            tmp_path, "vision_tower.", lambda s: {k.replace("vision_tower.", "tower."): v for k, v in s.items()}))


def test_config_errors_say_what_is_wrong():
    base = json.loads((FIXTURES / "vision" / "config.json").read_text())
    assert Qwen3VLVisionConfig.from_dict(base).deepstack_visual_indexes == [1, 2]
    for edit, match in ((dict(deepstack_visual_indexes=[1, 4]), "deepstack_visual_indexes"),
                        (dict(num_position_embeddings=60), "must be a square"),
                        (dict(hidden_size=33), "divisible by num_heads"),
                        (dict(hidden_size=28), "multiple of 4"),
                        (dict(hidden_act="swish"), "hidden_act"),
                        (dict(depth=0), "depth must be a positive integer")):
        with pytest.raises(ConfigError, match=match):
            Qwen3VLVisionConfig.from_dict({**base, **edit})
    with pytest.raises(ConfigError, match="vision_config must be an object"):
        Qwen3VLVisionConfig.from_dict({"model_type": "qwen3_vl", "vision_config": [1]})


def test_save_pretrained_round_trip(torch_twins, tmp_path):
    model = AutoVisionModel.from_pretrained(FIXTURES / "full")
    saved = model.save_pretrained(tmp_path / "saved")
    cfg = json.loads((saved / "config.json").read_text())
    assert cfg["model_type"] == "qwen3_vl" and cfg["depth"] == 2 and "vision_config" not in cfg
    assert all(not k.startswith(("model.", "visual.")) for k in load_file(str(saved / "model.safetensors")))
    again = AutoVisionModel.from_pretrained(saved)
    assert again.config == model.config
    rows, grid = case("full")
    keep = random_keep(grid, seed=1, fraction=0.6)
    assert_same(run(again, rows, grid, keep), run(model, rows, grid, keep))


def test_tower_state_dict_names_are_transformers():
    names = set(Qwen3VLVisionTower(Qwen3VLVisionConfig.from_dict(
        json.loads((FIXTURES / "vision" / "config.json").read_text()))).state_dict())
    assert names == set(load_file(str(FIXTURES / "vision" / "model.safetensors")))
