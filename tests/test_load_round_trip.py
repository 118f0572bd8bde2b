"""Checkpoint round trips: perturb every parameter, save in the layout ``from_pretrained`` reads
(``config.json`` + ``model.safetensors``), load with either implementation, and every tensor must
come back bit for bit (a loader that skips or mangles any key, 1-D norm weights included, fails
here). Missing, unexpected and wrongly shaped keys must each be named in one clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES
from safetensors.torch import save_file

from autogaze_fast import AutoGaze
from autogaze_fast.config import AutoGazeConfig
from autogaze_fast.loading import CheckpointError
from autogaze_fast.siglip import SiglipVisionModel
from autogaze_fast.siglip_config import SiglipVisionConfig

IMPLS = ["reference", "fast"]


@pytest.fixture(autouse=True)
def _twins(torch_twins):
    """The fast models on their CPU torch twins (the outputs only confirm what the tensors show)."""


def perturb_every_parameter(model: torch.nn.Module, seed: int) -> None:
    """Give every parameter fresh values no initialiser produces (norm weights ≠ 1, biases ≠ 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p + 0.5 + 0.3 * torch.randn(p.shape, generator=g))


def write_checkpoint(directory: Path, config_file: Path, state: dict[str, torch.Tensor]) -> Path:
    directory.mkdir(parents=True)
    shutil.copyfile(config_file, directory / "config.json")
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
    return directory


def assert_same_state(loaded: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    state = loaded.state_dict()
    assert sorted(state) == sorted(saved)
    for key, value in saved.items():
        assert torch.equal(state[key], value), f"{key} did not survive the round trip"


# ------------------------------------------------------------------------------------------ AutoGaze
@pytest.fixture(scope="module")
def autogaze_checkpoint(tmp_path_factory):
    config_file = FIXTURES / "tiny_k10" / "config.json"
    model = AutoGaze(AutoGazeConfig.from_json_file(config_file), impl="reference")
    perturb_every_parameter(model, seed=1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert any(v.dim() == 1 and k.endswith("norm.weight") for k, v in state.items())
    return write_checkpoint(tmp_path_factory.mktemp("autogaze") / "ckpt", config_file, state), state, model


@pytest.mark.parametrize("impl", IMPLS)
def test_autogaze_round_trip_is_bit_exact(autogaze_checkpoint, impl):
    path, state, original = autogaze_checkpoint
    loaded = AutoGaze.from_pretrained(path, impl=impl)
    assert loaded.impl == impl and not loaded.training
    assert_same_state(loaded, state)
    video = torch.randn(1, 2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = original.eval()({"video": video}, gazing_ratio=0.1, generate_only=True)
        b = loaded({"video": video}, gazing_ratio=0.1, generate_only=True)
    assert torch.equal(a["gazing_pos"], b["gazing_pos"])


def test_autogaze_missing_extra_and_misshaped_keys_are_all_named(autogaze_checkpoint, tmp_path):
    _, state, _ = autogaze_checkpoint
    bad = dict(state)
    del bad["gazing_model.gaze_decoder.model.layers.1.post_attention_layernorm.weight"]
    del bad["gazing_model.vision_model.norm.bias"]
    bad["gazing_model.gaze_decoder.model.layers.2.input_layernorm.weight"] = torch.ones(64)
    bad["gazing_model.vision_model.out_proj.weight"] = torch.zeros(64, 64, 1, 1, 2)
    path = write_checkpoint(tmp_path / "bad", FIXTURES / "tiny_k10" / "config.json", bad)
    for impl in IMPLS:
        with pytest.raises(CheckpointError) as err:
            AutoGaze.from_pretrained(path, impl=impl)
        text = str(err.value)
        assert ("missing keys (2): gazing_model.gaze_decoder.model.layers.1.post_attention_layernorm.weight, "
                "gazing_model.vision_model.norm.bias") in text
        assert "unexpected keys (1): gazing_model.gaze_decoder.model.layers.2.input_layernorm.weight" in text
        assert ("shape mismatches (1): gazing_model.vision_model.out_proj.weight: "
                "checkpoint (64, 64, 1, 1, 2) vs model (64, 64, 1, 1, 1)") in text


# ------------------------------------------------------------------------------------------ SigLIP
@pytest.fixture(scope="module")
def siglip_checkpoint(tmp_path_factory):
    config_file = FIXTURES / "tiny_siglip" / "config.json"
    model = SiglipVisionModel(SiglipVisionConfig.from_json_file(config_file), impl="reference")
    perturb_every_parameter(model, seed=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return write_checkpoint(tmp_path_factory.mktemp("siglip") / "ckpt", config_file, state), state, model


@pytest.mark.parametrize("impl", IMPLS)
def test_siglip_round_trip_is_bit_exact(siglip_checkpoint, impl):
    path, state, original = siglip_checkpoint
    loaded = SiglipVisionModel.from_pretrained(path, impl=impl)
    assert loaded.impl == impl and not loaded.training
    assert_same_state(loaded, state)
    # torch's own load_state_dict into the same impl is the oracle for the outputs
    direct = SiglipVisionModel(original.config, impl=impl)
    direct.load_state_dict(state)
    video = torch.randn(1, 1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a, b = direct.eval()(video), loaded(video)
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, atol=0, rtol=0)
    torch.testing.assert_close(b.pooler_output, a.pooler_output, atol=0, rtol=0)


def test_siglip_missing_extra_and_misshaped_keys_are_all_named(siglip_checkpoint, tmp_path):
    _, state, _ = siglip_checkpoint
    bad = dict(state)
    del bad["vision_model.encoder.layers.0.layer_norm1.weight"]
    bad["vision_model.encoder.layers.7.layer_norm1.weight"] = torch.ones(64)
    bad["vision_model.embeddings.patch_embedding.bias"] = torch.zeros(63)
    path = write_checkpoint(tmp_path / "bad", FIXTURES / "tiny_siglip" / "config.json", bad)
    for impl in IMPLS:
        with pytest.raises(CheckpointError) as err:
            SiglipVisionModel.from_pretrained(path, impl=impl)
        text = str(err.value)
        assert "missing keys (1): vision_model.encoder.layers.0.layer_norm1.weight" in text
        assert "unexpected keys (1): vision_model.encoder.layers.7.layer_norm1.weight" in text
        assert "vision_model.embeddings.patch_embedding.bias: checkpoint (63,) vs model (64,)" in text
