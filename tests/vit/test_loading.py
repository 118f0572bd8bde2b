"""AutoVisionModel.from_pretrained: family from model_type, nested vision_config, key prefixes, and
errors naming missing / unexpected / mis-shaped keys."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from autogaze_fast import AutoVisionModel, CheckpointError, ConfigError
from autogaze_fast.vit.clip import ClipVisionTransformer
from autogaze_fast.vit.dinov2 import Dinov2VisionTransformer
from autogaze_fast.vit.siglip import FastSiglipVisionTransformer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def copy_with(tmp_path: Path, name: str, config=None, weights=None) -> Path:
    out = tmp_path / name
    out.mkdir()
    cfg = json.loads((FIXTURES / name / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config(cfg) if config else cfg))
    state = load_file(str(FIXTURES / name / "model.safetensors"))
    save_file(weights(state) if weights else state, str(out / "model.safetensors"))
    return out


@pytest.mark.parametrize("name,cls,family", [("vit_clip", ClipVisionTransformer, "clip"),
                                             ("vit_dinov2", Dinov2VisionTransformer, "dinov2"),
                                             ("vit_dinov2_reg", Dinov2VisionTransformer, "dinov2"),
                                             ("vit_siglip", FastSiglipVisionTransformer, "siglip")])
def test_family_from_model_type(name, cls, family):
    model = AutoVisionModel.from_pretrained(FIXTURES / name, impl="fast")
    assert model.family == family and isinstance(model.vision_model, cls)


def test_full_clip_checkpoint_nested_config_and_extras(tmp_path):
    """A CLIPModel checkpoint: vision keys under vision_config, text tower and projections skipped."""
    def nest(cfg):
        return {"model_type": "clip", "vision_config": {**cfg, "model_type": "clip_vision_model"},
                "text_config": {"hidden_size": 8}}

    def extras(state):
        return {**state, "text_model.embeddings.token_embedding.weight": torch.zeros(3, 8),
                "visual_projection.weight": torch.zeros(4, 64), "logit_scale": torch.zeros(())}

    path = copy_with(tmp_path, "vit_clip", nest, extras)
    model = AutoVisionModel.from_pretrained(path)
    ref = AutoVisionModel.from_pretrained(FIXTURES / "vit_clip")
    for (k, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("prefix", ["model.", "dinov2.", "backbone.model."])
def test_dinov2_key_prefixes(tmp_path, prefix):
    path = copy_with(tmp_path, "vit_dinov2", weights=lambda s: {prefix + k: v for k, v in s.items()})
    model = AutoVisionModel.from_pretrained(path)
    ref = AutoVisionModel.from_pretrained(FIXTURES / "vit_dinov2")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_bad_keys_are_named(tmp_path):
    def damage(state):
        state = dict(state)
        del state["encoder.layer.1.norm2.weight"]
        state["encoder.layer.0.mlp.fc3.weight"] = torch.zeros(2)
        state["layernorm.bias"] = torch.zeros(7)
        return state

    path = copy_with(tmp_path, "vit_dinov2", weights=damage)
    with pytest.raises(CheckpointError) as e:
        AutoVisionModel.from_pretrained(path)
    text = str(e.value)
    assert "encoder.layer.1.norm2.weight" in text and "encoder.layer.0.mlp.fc3.weight" in text
    assert "layernorm.bias: checkpoint (7,) vs model (64,)" in text


def test_stray_keys_and_unknown_family(tmp_path):
    path = copy_with(tmp_path, "vit_clip", weights=lambda s: {**s, "something_else.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="something_else.weight"):
        AutoVisionModel.from_pretrained(path)
    other = tmp_path / "other"
    shutil.copytree(FIXTURES / "vit_clip", other)
    (other / "config.json").write_text(json.dumps({"model_type": "vit_mae"}))
    with pytest.raises(ConfigError, match="vit_mae"):
        AutoVisionModel.from_pretrained(other)


def test_save_pretrained_round_trip(tmp_path):
    for name in ("vit_clip", "vit_dinov2_reg"):
        model = AutoVisionModel.from_pretrained(FIXTURES / name, scales="28+56" if "dino" in name else "32+64")
        back = AutoVisionModel.from_pretrained(model.save_pretrained(tmp_path / name))
        assert back.scales == model.scales and back.config == model.config
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
