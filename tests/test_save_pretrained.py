"""``save_pretrained`` writes what ``from_pretrained`` reads: perturb every parameter of a model
loaded from upstream's fixtures, save it, load it back with either implementation, and every
tensor, the config and the processor must come back exactly (the oracle is the model that was
saved); an interrupted save leaves nothing that looks like a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FIXTURES

from autogaze_fast import AutoGaze, AutoGazeImageProcessor, SiglipImageProcessor, SiglipVisionModel
from autogaze_fast.loading import CheckpointError
from autogaze_fast.presets import NVIDIA_PREPROCESSING

IMPLS = ["reference", "fast"]


@pytest.fixture(autouse=True)
def _twins(torch_twins):
    """The fast models on their CPU torch paths."""


def perturb(model: torch.nn.Module, seed: int) -> None:
    """Values no initialiser produces (norm weights != 1, biases != 0), so a dropped key shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 + 0.3 * torch.randn(p.shape, generator=g))


def assert_same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("load_impl", IMPLS)
def test_autogaze_round_trip(tmp_path, load_impl):
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl="fast")
    perturb(model, seed=3)
    processor = AutoGazeImageProcessor.from_dict(dict(NVIDIA_PREPROCESSING, size={"shortest_edge": 112}))
    folder = model.save_pretrained(tmp_path / "ckpt", processor=processor)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]

    loaded = AutoGaze.from_pretrained(folder, impl=load_impl)
    assert loaded.impl == load_impl
    assert_same_tensors(model, loaded)
    assert json.loads((folder / "config.json").read_text()) == model.config.raw
    assert AutoGazeImageProcessor.from_pretrained(folder).to_dict() == processor.to_dict()
    video = torch.randn(1, 2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a = model.eval()({"video": video}, gazing_ratio=0.2, generate_only=True)
        b = loaded({"video": video}, gazing_ratio=0.2, generate_only=True)
    assert torch.equal(a["gazing_pos"], b["gazing_pos"]) and torch.equal(a["if_padded_gazing"], b["if_padded_gazing"])


@pytest.mark.parametrize("load_impl", IMPLS)
def test_siglip_round_trip_keeps_scales_and_attention(tmp_path, load_impl):
    model = SiglipVisionModel.from_pretrained(FIXTURES / "tiny_siglip", scales="32+64", attn_type="causal", impl="fast")
    perturb(model, seed=4)
    processor = SiglipImageProcessor.for_vision_model(model)
    folder = model.save_pretrained(tmp_path / "vision", processor=processor)

    loaded = SiglipVisionModel.from_pretrained(folder, attn_type=None, impl=load_impl)
    assert loaded.config.scales == [32, 64] and loaded.config.attn_type == "causal"
    assert_same_tensors(model, loaded)
    assert SiglipImageProcessor.from_pretrained(folder).to_dict() == processor.to_dict()
    same_impl = SiglipVisionModel(model.config, impl=load_impl).eval()  # the saved weights, in the loaded impl
    same_impl.load_state_dict(model.state_dict())
    pixels = torch.randn(1, 2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a, b = same_impl(pixels).last_hidden_state, loaded(pixels).last_hidden_state
    assert torch.equal(a, b)


def test_interrupted_save_leaves_no_checkpoint(tmp_path, monkeypatch):
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("autogaze_fast.loading.save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        model.save_pretrained(tmp_path / "ckpt")
    assert list((tmp_path / "ckpt").iterdir()) == []  # no config.json, no weights, no temporary file


def test_save_pretrained_refuses_a_file_path(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is a file"):
        AutoGaze.from_pretrained(FIXTURES / "tiny_k10").save_pretrained(target)
