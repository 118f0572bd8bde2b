"""Dense mode equals transformers 4.57.6 (fixtures: tiny random-init CLIPVisionModel, Dinov2Model,
Dinov2WithRegistersModel, SiglipVisionModel; see tests/fixtures/vit_*/meta.json): last_hidden_state,
pooler_output and every hidden state within 1e-5, at the native size, a rectangular size and a larger
square (both force the position-table interpolation)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from autogaze_fast import AutoVisionModel

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CASES = [("vit_clip", "native"), ("vit_clip", "interp"), ("vit_clip", "square"),
         ("vit_dinov2", "native"), ("vit_dinov2", "interp"), ("vit_dinov2", "square"),
         ("vit_dinov2_reg", "native"), ("vit_dinov2_reg", "interp"), ("vit_dinov2_reg", "square"),
         ("vit_siglip", "native"), ("vit_siglip", "square")]


# the reference SigLIP encodes videos only (it is the gazed oracle); SigLIP's dense images run on the core
RUNS = [(name, tag, impl) for name, tag in CASES for impl in ("fast", "reference")
        if not (name == "vit_siglip" and impl == "reference")]


@pytest.mark.parametrize("name,tag,impl", RUNS)
def test_dense_matches_transformers(torch_twins, name, tag, impl):
    expected = load_file(str(FIXTURES / name / "outputs.safetensors"))
    model = AutoVisionModel.from_pretrained(FIXTURES / name, impl=impl)
    with torch.no_grad():
        out = model(expected[f"{tag}.pixel_values"], output_hidden_states=True)
    torch.testing.assert_close(out.last_hidden_state, expected[f"{tag}.last_hidden_state"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooler_output, expected[f"{tag}.pooler_output"], atol=1e-5, rtol=0)
    count = sum(k.startswith(f"{tag}.hidden_states.") for k in expected)
    assert len(out.hidden_states) == count == model.config.num_hidden_layers + 1
    for i, state in enumerate(out.hidden_states):
        torch.testing.assert_close(state, expected[f"{tag}.hidden_states.{i}"], atol=1e-5, rtol=0)


def test_interpolation_quirk_matters(torch_twins):
    """DINOv2-with-registers interpolates with antialias, plain DINOv2 without: the other's rule misses."""
    expected = load_file(str(FIXTURES / "vit_dinov2_reg" / "outputs.safetensors"))
    model = AutoVisionModel.from_pretrained(FIXTURES / "vit_dinov2_reg")
    model.config.model_type = "dinov2"
    with torch.no_grad():
        out = model(expected["interp.pixel_values"])
    assert (out.last_hidden_state - expected["interp.last_hidden_state"]).abs().max() > 1e-3
