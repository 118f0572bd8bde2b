"""The MAE loader reads transformers 4.x and 5.x ``ViTMAEForPreTraining`` key layouts alike.

Fixtures: tests/fixtures/mae_layouts/ (recipe in its meta.json): one tiny plain ViT-MAE with
perturbed weights, saved by transformers 4.57.6 (``hf4``), loaded and saved again by transformers
5.24 (``hf5``: its decoder layers land at ``decoder.decoder_encoder.layer.N``) and its 5.x module
state dict saved as is (``hf5_module_keys``). transformers itself says the three hold the same weights
(5.x loaded the 4.x file with no missing or unexpected key), so each must load into the same MAE.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from autogaze_fast.loading import CheckpointError
from autogaze_fast.train.mae.key_layout import canonical_mae_key
from autogaze_fast.train.mae.loading import NEW_EMBEDDING_KEYS, load_mae

LAYOUTS = Path(__file__).parents[1] / "fixtures" / "mae_layouts"
SCALES = "32+64+112+224"


def _load(name: str, impl: str = "reference"):
    return load_mae(LAYOUTS / name, init_new_embeddings=True, generator=torch.Generator().manual_seed(3),
                    scales=SCALES, max_num_frames=4, impl=impl)


def test_the_fixtures_really_differ_in_layout():
    hf4, hf5, module = (set(load_file(str(LAYOUTS / n / "model.safetensors"))) for n in ("hf4", "hf5", "hf5_module_keys"))
    assert any(k.startswith("decoder.decoder_layers.0.attention.attention.") for k in hf4)
    assert any(k.startswith("decoder.decoder_encoder.layer.0.") for k in hf5) and hf5 != hf4
    assert any(".attention.q_proj." in k for k in module) and any(k.startswith("vit.layers.1.") for k in module)
    assert {canonical_mae_key(k) for k in hf5} == hf4 == {canonical_mae_key(k) for k in module}


@pytest.mark.parametrize("name", ["hf5", "hf5_module_keys"])
def test_5x_layouts_load_the_4x_weights_and_give_the_same_outputs(name):
    want, got = _load("hf4"), _load(name)
    a, b = want.state_dict(), got.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    raw = load_file(str(LAYOUTS / "hf4" / "model.safetensors"))  # the file's values, not only self-consistency
    assert torch.equal(a["decoder.decoder_layers.1.output.dense.weight"], raw["decoder.decoder_layers.1.output.dense.weight"])
    g = torch.Generator().manual_seed(0)
    video = torch.randn(1, 2, 3, 224, 224, generator=g)
    n = 265
    pos = torch.tensor([[0, 5, 40, 200, n + 1, n + 30, n + 264, -1]])
    gaze = {"gazing_pos": pos, "if_padded_gazing": pos < 0, "num_gazing_each_frame": torch.tensor([4, 4])}
    frames = torch.tensor([1, 0])
    with torch.no_grad():
        out_a, out_b = want(video, gaze, frames), got(video, gaze, frames)
    assert torch.isfinite(out_a.reconstruction).all()
    assert torch.equal(out_a.reconstruction, out_b.reconstruction)


def test_missing_new_embeddings_error_names_the_config_fix():
    with pytest.raises(CheckpointError) as err:
        load_mae(LAYOUTS / "hf5", scales=SCALES)
    text = str(err.value)
    assert "task.init_new_embeddings=true" in text
    assert all(k in text for k in NEW_EMBEDDING_KEYS)
    assert "decoder.decoder_layers" not in text and "decoder_encoder" not in text  # only the tables are missing


def test_a_file_mixing_layouts_is_refused(tmp_path):
    state = load_file(str(LAYOUTS / "hf4" / "model.safetensors"))
    module = load_file(str(LAYOUTS / "hf5_module_keys" / "model.safetensors"))
    mixed = dict(state, **{"vit.layers.0.attention.q_proj.weight": module["vit.layers.0.attention.q_proj.weight"]})
    save_file(mixed, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((LAYOUTS / "hf4" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="mixes ViT-MAE key layouts"):
        load_mae(tmp_path, init_new_embeddings=True, scales=SCALES)
