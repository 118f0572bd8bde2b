"""Fast gazed SigLIP vs upstream's fixture and vs the reference: every attention type, pads, the
patch-14 any-resolution layout, the dense baseline, gradients; CPU twins and Triton interpreter."""

import pytest
import torch
from conftest import FIXTURES
from safetensors.torch import load_file

from autogaze_fast.fast.siglip import FastSiglipVisionTransformer
from autogaze_fast.reference.siglip import SiglipVisionTransformer
from autogaze_fast.siglip import SiglipVisionModel
from autogaze_fast.siglip_config import ATTN_TYPES, SiglipVisionConfig

GAZE = load_file(str(FIXTURES / "gaze_cases.safetensors"))
SIGLIP_CASE = load_file(str(FIXTURES / "siglip_cases.safetensors"))
STOP_K10 = {k: GAZE[f"stop_k10.{k}"] for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")}
# the Triton case runs natively on CUDA when it is there (the fixture returns the device), else interpreted
BACKENDS = ["torch_twins", pytest.param("triton_kernels", marks=pytest.mark.triton)]


def kernels_device(request, backend) -> torch.device:
    """Switch the kernels on (``backend``: a fixture name) and return the device to run on."""
    return request.getfixturevalue(backend) or torch.device("cpu")


def to(device, tensors: dict) -> dict:
    return {k: v.to(device) for k, v in tensors.items()}


def pair(path=FIXTURES / "tiny_siglip"):
    return (SiglipVisionModel.from_pretrained(path, impl="reference"),
            SiglipVisionModel.from_pretrained(path, impl="fast"))


def first_frames(gaze, frames):
    n = int(gaze["num_gazing_each_frame"][:frames].sum())
    return {"gazing_pos": gaze["gazing_pos"][:, :n], "if_padded_gazing": gaze["if_padded_gazing"][:, :n],
            "num_gazing_each_frame": gaze["num_gazing_each_frame"][:frames]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_upstream_siglip_case(request, backend):
    device = kernels_device(request, backend)
    _, fast = pair()
    with torch.no_grad():
        out = fast.to(device)(GAZE["video"].to(device), to(device, STOP_K10)).last_hidden_state.cpu()
    keep = ~STOP_K10["if_padded_gazing"].bool()
    torch.testing.assert_close(out[keep], SIGLIP_CASE["last_hidden_state"][keep], atol=1e-4, rtol=0)


@pytest.mark.parametrize("attn_type", ATTN_TYPES)
def test_attention_types_match_reference(torch_twins, attn_type):
    ref, fast = pair()
    with torch.no_grad():
        a = ref(GAZE["video"], STOP_K10, attn_type=attn_type, output_hidden_states=True)
        b = fast(GAZE["video"], STOP_K10, attn_type=attn_type, output_hidden_states=True)
    keep = ~STOP_K10["if_padded_gazing"].bool()
    torch.testing.assert_close(b.last_hidden_state[keep], a.last_hidden_state[keep], atol=1e-4, rtol=0)
    torch.testing.assert_close(b.pooler_output, a.pooler_output, atol=1e-4, rtol=0)
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(y[keep], x[keep], atol=1e-4, rtol=0)


def test_dense_baseline_matches_reference(torch_twins):
    ref, fast = pair()
    video = GAZE["video"][:, :2]
    with torch.no_grad():
        a, b = ref(video), fast(video)
    assert b.last_hidden_state.shape == (1, 2 * 265, 64)
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, atol=1e-4, rtol=0)


def p14_pair():
    cfg = SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                             image_size=384, patch_size=14, scales=[56, 112, 196, 392])
    ref = SiglipVisionTransformer(cfg)
    g = torch.Generator().manual_seed(14)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if "norm" in name and name.endswith("weight") else 0.2 * noise)
    fast = FastSiglipVisionTransformer(cfg)
    fast.load_state_dict(ref.state_dict())
    return ref.eval(), fast.eval()


@pytest.mark.parametrize("backend", BACKENDS)
def test_patch14_anyres_gaze_matches_reference(request, backend):
    device = kernels_device(request, backend)
    case = load_file(str(FIXTURES / "anyres_cases.safetensors"))
    gaze = {k: case[k].clone() for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")}
    gaze["if_padded_gazing"] = gaze["if_padded_gazing"].bool()
    gaze["if_padded_gazing"][0, [5, 140, 271]] = True  # pads inside both frames and at the end
    ref, fast = p14_pair()
    with torch.no_grad():
        a = ref(case["video"], gaze).last_hidden_state
        b = fast.to(device)(case["video"].to(device), to(device, gaze)).last_hidden_state.cpu()
    keep = ~gaze["if_padded_gazing"]
    torch.testing.assert_close(b[keep], a[keep], atol=1e-4, rtol=0)


def test_gradients_match_reference(torch_twins):
    ref, fast = pair()
    gaze = first_frames(STOP_K10, 2)
    video = GAZE["video"][:, :2]
    keep = ~gaze["if_padded_gazing"].bool()
    for model in (ref, fast):
        model.train()
        out = model(video, gaze)
        (out.last_hidden_state[keep].square().mean() + out.pooler_output.square().mean()).backward()
    for (name, p_ref), (_, p_fast) in zip(ref.named_parameters(), fast.named_parameters()):
        torch.testing.assert_close(p_fast.grad, p_ref.grad, atol=1e-4, rtol=1e-3, msg=lambda m: f"{name}: {m}")


def test_position_table_cache_follows_weight_updates(torch_twins):
    """The fast model caches its interpolated position table; after an in-place update of the
    position embedding it must match the reference (which interpolates on every call) again."""
    ref, fast = pair()
    video = GAZE["video"][:, :1]
    gaze = first_frames(STOP_K10, 1)
    keep = ~gaze["if_padded_gazing"].bool()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = fast(video, gaze).last_hidden_state
        torch.testing.assert_close(before[keep], ref(video, gaze).last_hidden_state[keep], atol=1e-4, rtol=0)
        update = torch.randn(fast.vision_model.embeddings.position_embedding.weight.shape, generator=g)
        for model in (ref, fast):
            model.vision_model.embeddings.position_embedding.weight.add_(update)
        after = fast(video, gaze).last_hidden_state
        torch.testing.assert_close(after[keep], ref(video, gaze).last_hidden_state[keep], atol=1e-4, rtol=0)
    assert (after[keep] - before[keep]).abs().max() > 1e-2, "the update must matter for the check to mean anything"


def test_chunked_inference_mlp_matches_reference(torch_twins, monkeypatch):
    """Inference runs the MLP in token chunks (a ragged last chunk here: 7 rows a chunk); same output."""
    import autogaze_fast.fast.siglip as fast_siglip

    monkeypatch.setattr(fast_siglip, "MLP_CHUNK_ROWS", 7)
    ref, fast = pair()
    with torch.no_grad():
        a = ref(GAZE["video"], STOP_K10, output_hidden_states=True)
        b = fast(GAZE["video"], STOP_K10, output_hidden_states=True)
    assert b.last_hidden_state.shape[1] % 7 != 0
    keep = ~STOP_K10["if_padded_gazing"].bool()
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(y[keep], x[keep], atol=1e-4, rtol=0)
