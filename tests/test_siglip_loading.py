"""SigLIP configuration parsing and checkpoint loading (vision-only, dual-tower SigLIP / SigLIP2, errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from autogaze_fast.config import ConfigError
from autogaze_fast.loading import CheckpointError
from autogaze_fast.siglip import SiglipVisionModel
from autogaze_fast.siglip_config import SiglipVisionConfig


@pytest.fixture(scope="module", autouse=True)
def _reference_impl():
    """These tests pin the reference SigLIP (the fast one is checked against it in test_fast_siglip.py)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOGAZE_IMPL", "reference")
        yield


FIXTURES = Path(__file__).parent / "fixtures" / "upstream"

VISION = {
    "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2,
    "image_size": 64, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
}
NAFLEX_VISION = {k: v for k, v in VISION.items() if k != "image_size"}
TEXT_KEYS = {
    "text_model.embeddings.token_embedding.weight": (100, 16),
    "text_model.final_layer_norm.weight": (16,),
    "text_model.head.weight": (16, 16),
    "logit_scale": (1,),
    "logit_bias": (1,),
}


def random_model(config: SiglipVisionConfig, seed: int = 0) -> SiglipVisionModel:
    torch.manual_seed(seed)
    model = SiglipVisionModel(config, impl="reference").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def write_checkpoint(path: Path, config: dict, tensors: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"))
    return path


def video(frames: int = 2, size: int = 48) -> torch.Tensor:
    return torch.randn(1, frames, 3, size, size, generator=torch.Generator().manual_seed(3))


def same_outputs(a: SiglipVisionModel, b: SiglipVisionModel) -> None:
    x = video()
    with torch.no_grad():
        oa, ob = a(x), b(x)
    torch.testing.assert_close(oa.last_hidden_state, ob.last_hidden_state, atol=0, rtol=0)
    torch.testing.assert_close(oa.pooler_output, ob.pooler_output, atol=0, rtol=0)


# ----------------------------------------------------------------------------- config parsing
def test_parse_upstream_vision_config():
    cfg = SiglipVisionConfig.from_json_file(FIXTURES / "tiny_siglip" / "config.json")
    assert cfg.scales == [32, 64, 112, 224]
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.patch_size) == (64, 2, 2, 16)
    assert cfg.num_positions == 196 and cfg.tokens_per_scale == [4, 16, 49, 196] and cfg.tokens_per_frame == 265
    assert cfg.attn_type == "block_causal" and cfg.vision_use_head and cfg.max_embed_batch_size is None


def test_parse_dual_tower_and_overrides():
    d = {
        "model_type": "siglip", "initializer_factor": 1.0, "some_future_key": [1, 2],
        "text_config": {"hidden_size": 16, "vocab_size": 100},
        "vision_config": dict(VISION, image_size=384, patch_size=14, torch_dtype="float32", unknown=3),
    }
    cfg = SiglipVisionConfig.from_dict(d)
    assert cfg.hidden_size == 32 and cfg.num_positions == 27 * 27
    assert cfg.scales == [224], "upstream's default scales apply when the checkpoint names none"
    assert SiglipVisionConfig.from_dict(d, scales="392+56+196+112").scales == [56, 112, 196, 392]
    assert SiglipVisionConfig.from_dict(d, scales=[392, 56]).scales == [56, 392]
    assert SiglipVisionConfig.from_dict(d, attn_type="causal").attn_type == "causal"


def test_parse_siglip2_naflex_and_frame_independent():
    d = {"model_type": "siglip2", "vision_config": dict(NAFLEX_VISION, num_patches=256)}
    cfg = SiglipVisionConfig.from_dict(d)
    assert cfg.num_positions == 256 and cfg.model_type == "siglip2"
    d = dict(VISION, model_type="siglip_vision_model", frame_independent_encoding=True, scales=[32, 64])
    cfg = SiglipVisionConfig.from_dict(d)
    assert cfg.attn_type == "frame_independent"
    again = SiglipVisionConfig.from_dict(cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize(
    "d, message",
    [
        ({"model_type": "autogaze"}, "model_type"),
        ({"model_type": "siglip"}, "vision_config"),
        (dict(VISION, num_attention_heads=3), "divisible"),
        (dict(VISION, scales="8+64"), "smaller than patch_size"),
        (dict(VISION, attn_type="sliding"), "attn_type"),
        (dict(VISION, hidden_act="swish2"), "hidden_act"),
        (dict(VISION, frame_independent_encoding=True, attn_type="causal"), "frame_independent"),
        ({"model_type": "siglip2", "vision_config": dict(NAFLEX_VISION, num_patches=200)}, "square"),
    ],
)
def test_bad_config_raises(d, message):
    with pytest.raises(ConfigError, match=message):
        SiglipVisionConfig.from_dict(d)


# ----------------------------------------------------------------------------- round trips
def test_state_dict_keys_are_upstreams():
    cfg = SiglipVisionConfig.from_json_file(FIXTURES / "tiny_siglip" / "config.json")
    theirs = load_file(FIXTURES / "tiny_siglip" / "model.safetensors")
    ours = SiglipVisionModel(cfg).state_dict()
    assert set(ours) == set(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_vision_only_round_trip(tmp_path):
    cfg = SiglipVisionConfig(**VISION, scales=[32, 48])
    model = random_model(cfg)
    path = write_checkpoint(tmp_path / "vision", cfg.to_dict(), model.state_dict())
    loaded = SiglipVisionModel.from_pretrained(path, impl="reference")
    assert loaded.config == cfg and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    same_outputs(model, loaded)


def test_dual_tower_round_trip_ignores_text_tower(tmp_path):
    cfg = SiglipVisionConfig(**VISION, scales=[32, 48])
    model = random_model(cfg, seed=1)
    tensors = dict(model.state_dict())
    tensors.update({k: torch.randn(shape) for k, shape in TEXT_KEYS.items()})
    config = {"model_type": "siglip", "text_config": {"hidden_size": 16}, "vision_config": dict(VISION)}
    path = write_checkpoint(tmp_path / "dual", config, tensors)
    loaded = SiglipVisionModel.from_pretrained(path, scales="32+48")
    same_outputs(model, loaded)


def test_siglip2_naflex_linear_patch_embedding(tmp_path):
    """A NaFlex checkpoint's linear patch weight over (row, col, channel) patches is the conv weight permuted."""
    cfg = SiglipVisionConfig(**VISION, scales=[32, 48])
    model = random_model(cfg, seed=2)
    tensors = dict(model.state_dict())
    conv = tensors["vision_model.embeddings.patch_embedding.weight"]  # C × c × p × p
    tensors["vision_model.embeddings.patch_embedding.weight"] = conv.permute(0, 2, 3, 1).reshape(conv.shape[0], -1)
    tensors.update({k: torch.randn(shape) for k, shape in TEXT_KEYS.items()})
    config = {"model_type": "siglip2", "text_config": {}, "vision_config": dict(NAFLEX_VISION, num_patches=16)}
    loaded = SiglipVisionModel.from_pretrained(write_checkpoint(tmp_path / "naflex", config, tensors), scales=[32, 48])
    same_outputs(model, loaded)


def test_sharded_checkpoint(tmp_path):
    cfg = SiglipVisionConfig(**VISION, scales=[32, 48])
    model = random_model(cfg, seed=3)
    path = tmp_path / "sharded"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(cfg.to_dict()))
    items = sorted(model.state_dict().items())
    halves = {
        "model-00001-of-00002.safetensors": dict(items[::2]),
        "model-00002-of-00002.safetensors": dict(items[1::2]),
    }
    weight_map = {}
    for name, part in halves.items():
        save_file({k: v.contiguous() for k, v in part.items()}, str(path / name))
        weight_map.update({k: name for k in part})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    same_outputs(model, SiglipVisionModel.from_pretrained(path))


def test_overrides_dtype_and_no_head(tmp_path):
    cfg = SiglipVisionConfig(**VISION, scales=[32, 48], vision_use_head=False)
    model = random_model(cfg, seed=4)
    assert not any(k.startswith("vision_model.head.") for k in model.state_dict())
    path = write_checkpoint(tmp_path / "nohead", cfg.to_dict(), model.state_dict())
    loaded = SiglipVisionModel.from_pretrained(path, attn_type="bidirectional", dtype="bfloat16", device="cpu")
    assert loaded.config.attn_type == "bidirectional"
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    with torch.no_grad():
        out = loaded(video())
    assert out.last_hidden_state.dtype == torch.bfloat16 and out.pooler_output is None
    assert SiglipVisionModel.from_pretrained(path, attn_type=None).config.attn_type == "block_causal"


def test_fixture_checkpoint_loads_with_upstream_weights():
    model = SiglipVisionModel.from_pretrained(FIXTURES / "tiny_siglip")
    theirs = load_file(FIXTURES / "tiny_siglip" / "model.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, theirs[k]), k


# ----------------------------------------------------------------------------- errors
@pytest.fixture
def good_checkpoint(tmp_path):
    cfg = SiglipVisionConfig(**VISION, scales=[32])
    return cfg, dict(random_model(cfg).state_dict())


def test_wrong_shape_key_is_named(tmp_path, good_checkpoint):
    cfg, tensors = good_checkpoint
    tensors["vision_model.encoder.layers.1.mlp.fc1.weight"] = torch.zeros(7, 32)
    path = write_checkpoint(tmp_path / "bad_shape", cfg.to_dict(), tensors)
    key = r"vision_model\.encoder\.layers\.1\.mlp\.fc1\.weight"
    with pytest.raises(CheckpointError, match=key + r": checkpoint \(7, 32\)"):
        SiglipVisionModel.from_pretrained(path)


def test_missing_and_unexpected_keys_are_named(tmp_path, good_checkpoint):
    cfg, tensors = good_checkpoint
    del tensors["vision_model.post_layernorm.bias"]
    tensors["vision_model.encoder.layers.2.mlp.fc1.weight"] = torch.zeros(48, 32)
    path = write_checkpoint(tmp_path / "missing", cfg.to_dict(), tensors)
    with pytest.raises(CheckpointError) as err:
        SiglipVisionModel.from_pretrained(path)
    assert "missing keys (1): vision_model.post_layernorm.bias" in str(err.value)
    assert "unexpected keys (1): vision_model.encoder.layers.2.mlp.fc1.weight" in str(err.value)


def test_missing_or_corrupt_files(tmp_path, good_checkpoint):
    cfg, tensors = good_checkpoint
    with pytest.raises(CheckpointError, match="no such model directory"):
        SiglipVisionModel.from_pretrained(tmp_path / "nowhere")
    path = tmp_path / "no_config"
    path.mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        SiglipVisionModel.from_pretrained(path)
    (path / "config.json").write_text(json.dumps(cfg.to_dict()))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        SiglipVisionModel.from_pretrained(path)
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        SiglipVisionModel.from_pretrained(path)


def test_impl_switch(monkeypatch):
    from autogaze_fast.fast.siglip import FastSiglipVisionTransformer
    from autogaze_fast.reference.siglip import SiglipVisionTransformer

    fast = SiglipVisionModel.from_pretrained(FIXTURES / "tiny_siglip", impl="fast")
    assert fast.impl == "fast" and isinstance(fast.vision_model, FastSiglipVisionTransformer)
    monkeypatch.setenv("AUTOGAZE_IMPL", "reference")
    ref = SiglipVisionModel.from_pretrained(FIXTURES / "tiny_siglip")
    assert ref.impl == "reference" and type(ref.vision_model) is SiglipVisionTransformer
    assert fast.state_dict().keys() == ref.state_dict().keys()
    with pytest.raises(ValueError, match="impl must be one of"):
        SiglipVisionModel.from_pretrained(FIXTURES / "tiny_siglip", impl="turbo")
