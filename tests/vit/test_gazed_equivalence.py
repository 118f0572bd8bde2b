"""Gazed mode: the fast core (gathered-patch-embedding and sparse-attention kernels) equals the plain
reference (every patch unfolded then gathered; attention through an explicit B x L x L mask) per
family, fp32 within 1e-5, on the CPU paths and through the Triton kernels; prefix tokens per frame;
pads dropped leave real tokens unchanged; gazing every cell of one native scale frame by frame equals
transformers' dense output (the fixtures)."""

from pathlib import Path

import pytest
import torch
from gaze_utils import random_gaze
from safetensors.torch import load_file

from autogaze_fast import AutoVisionModel
from autogaze_fast.siglip_config import ATTN_TYPES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
#: family fixture -> gazed scales (multiples of its patch, 16 or 14)
SCALES = {"vit_clip": "32+64", "vit_dinov2": "28+56", "vit_dinov2_reg": "28+56", "vit_siglip": "32+64"}


def video(name: str, frames: int = 3, batch: int = 2, seed: int = 0) -> torch.Tensor:
    side = int(SCALES[name].split("+")[-1])
    return torch.randn(batch, frames, 3, side, side, generator=torch.Generator().manual_seed(seed))


def encode(model, pixels, gaze, *, kernels: bool, **kw):
    return model.vision_model.gazed_forward(pixels, gaze, kernels=kernels, output_hidden_states=True, **kw)


def assert_real_close(a, b, keep, atol=1e-5):
    torch.testing.assert_close(a.last_hidden_state[keep], b.last_hidden_state[keep], atol=atol, rtol=0)
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(x[keep], y[keep], atol=atol, rtol=0)
    if a.prefix_hidden_state is not None:
        torch.testing.assert_close(a.prefix_hidden_state, b.prefix_hidden_state, atol=atol, rtol=0)
    if a.pooler_output is not None:
        torch.testing.assert_close(a.pooler_output, b.pooler_output, atol=atol, rtol=0)


@pytest.mark.parametrize("attn_type", ATTN_TYPES)
@pytest.mark.parametrize("name", list(SCALES))
def test_fast_core_matches_plain_reference_cpu(torch_twins, name, attn_type):
    model = AutoVisionModel.from_pretrained(FIXTURES / name, scales=SCALES[name], impl="fast")
    n = model.config.tokens_per_frame
    gaze = random_gaze(2, 3, n, [5, 3, 6], seed=1)
    pixels = video(name)
    with torch.no_grad():
        fast = encode(model, pixels, gaze, kernels=True, attn_type=attn_type)
        plain = encode(model, pixels, gaze, kernels=False, attn_type=attn_type)
    keep = ~gaze["if_padded_gazing"]
    assert fast.last_hidden_state.shape == (2, 14, 64)
    if model.num_prefix_tokens:
        assert fast.prefix_hidden_state.shape == (2, 3, model.num_prefix_tokens, 64)
        assert fast.pooler_output.shape == (2, 3, 64)
    assert_real_close(fast, plain, keep)


@pytest.mark.parametrize("name", list(SCALES))
def test_fast_core_matches_plain_reference_triton(triton_kernels, name):
    device = triton_kernels
    model = AutoVisionModel.from_pretrained(FIXTURES / name, scales=SCALES[name], impl="fast").to(device)
    gaze = {k: v.to(device) for k, v in random_gaze(2, 2, model.config.tokens_per_frame, [4, 3], seed=2).items()}
    pixels = video(name, frames=2).to(device)
    with torch.no_grad():
        fast = encode(model, pixels, gaze, kernels=True)
        plain = encode(model, pixels, gaze, kernels=False)
    assert_real_close(fast, plain, ~gaze["if_padded_gazing"])


@pytest.mark.parametrize("name,attn_type", [(name, "block_causal") for name in SCALES] + [("vit_clip", "causal")])
def test_dropping_pads_keeps_real_tokens(torch_twins, name, attn_type):
    """Pads never act as keys, so removing them before the first block changes no real token."""
    model = AutoVisionModel.from_pretrained(FIXTURES / name, scales=SCALES[name])
    gaze = random_gaze(2, 3, model.config.tokens_per_frame, [6, 4, 5], pads=3, seed=3)
    pixels = video(name)
    keep = ~gaze["if_padded_gazing"]
    with torch.no_grad():
        padded = model(pixels, gaze, output_hidden_states=True, attn_type=attn_type)
        dropped = model(pixels, gaze, output_hidden_states=True, attn_type=attn_type, drop_pads=True)
        plain = encode(model, pixels, gaze, kernels=False, attn_type=attn_type, drop_pads=True)
    for out in (dropped, plain):
        torch.testing.assert_close(out.last_hidden_state[keep], padded.last_hidden_state[keep], atol=1e-5, rtol=0)
        for x, y in zip(out.hidden_states, padded.hidden_states):
            torch.testing.assert_close(x[keep], y[keep], atol=1e-5, rtol=0)
        assert (out.last_hidden_state[~keep] == 0).all()
    if model.num_prefix_tokens:  # CLS / registers attend only real keys in both runs
        torch.testing.assert_close(dropped.pooler_output, padded.pooler_output, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["vit_clip", "vit_dinov2", "vit_dinov2_reg", "vit_siglip"])
def test_gazing_everything_frame_by_frame_equals_transformers(torch_twins, name):
    """One scale at the native size, every cell gazed, frame-independent attention: each frame's
    prefix + patch tokens equal transformers' dense output for that image (prefix first)."""
    expected = load_file(str(FIXTURES / name / "outputs.safetensors"))
    images = expected["native.pixel_values"]  # (2, 3, S, S): a 2-frame video here
    model = AutoVisionModel.from_pretrained(FIXTURES / name, scales=str(images.shape[-1]))
    with torch.no_grad():
        out = model(images[None], None, attn_type="frame_independent", output_hidden_states=True)
    p, n = model.num_prefix_tokens, model.config.tokens_per_frame
    for t in range(2):
        tokens = out.last_hidden_state[0, t * n:(t + 1) * n]
        if p:
            tokens = torch.cat([out.prefix_hidden_state[0, t], tokens])
        torch.testing.assert_close(tokens, expected["native.last_hidden_state"][t], atol=1e-5, rtol=0)
        if p:
            torch.testing.assert_close(out.pooler_output[0, t], expected["native.pooler_output"][t], atol=1e-5, rtol=0)
