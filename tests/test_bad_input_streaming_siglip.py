"""Two bad inputs with clear errors, for both implementations:

* a streaming cache made for one batch size reused with a video of another (was a torch
  "Sizes of tensors must match" error deep in the stem);
* gazed SigLIP given frames that are not square at the model's largest scale (was silently
  resized: upsampled or stretched).
"""

import pytest
import torch
from conftest import FIXTURES
from safetensors.torch import load_file

from autogaze_fast import AutoGaze
from autogaze_fast.siglip import SiglipVisionModel
from autogaze_fast.siglip_config import SiglipVisionConfig

VIDEO = load_file(str(FIXTURES / "gaze_cases.safetensors"))["video"]  # (1, 4, 3, 224, 224)
IMPLS = ["reference", "fast"]


def caches(out: dict) -> dict:
    return dict(past_key_values=out["past_key_values"], past_inputs_embeds=out["past_input_embeds"],
                past_attention_mask=out["past_attention_mask"], past_conv_values=out["past_conv_values"])


def stream(model, video, **past):
    return model({"video": video}, gazing_ratio=0.1, generate_only=True, use_cache=True, **past)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("first, then", [(1, 2), (2, 1)])
def test_streaming_cache_reused_with_another_batch_size(torch_twins, impl, first, then):
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl=impl)
    frame0, frame1 = VIDEO[:, :1], VIDEO[:, 1:2]
    out = stream(model, frame0.expand(first, -1, -1, -1, -1))
    with pytest.raises(ValueError, match=f"made for a batch of {first} video.*has a batch of {then}.*no past_\\* caches"):
        stream(model, frame1.expand(then, -1, -1, -1, -1), **caches(out))
    # the stream itself is intact: the same batch continues and equals a fresh two-frame stream of that batch
    again = stream(model, frame1.expand(first, -1, -1, -1, -1), **caches(out))
    whole = model({"video": VIDEO[:, :2].expand(first, -1, -1, -1, -1)}, gazing_ratio=0.1, generate_only=True)
    n = int(out["num_gazing_each_frame"][0])
    assert torch.equal(again["gazing_pos"] + model.num_vision_tokens_each_frame, whole["gazing_pos"][:, n:])


def test_streaming_list_cache_must_be_tensors(torch_twins):
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl="reference")
    past = caches(stream(model, VIDEO[:, :1]))
    past["past_conv_values"] = "conv"
    with pytest.raises(ValueError, match="past_conv_values must be the list of tensors"):
        stream(model, VIDEO[:, 1:2], **past)


def p14_siglip(impl: str) -> SiglipVisionModel:
    """A tiny patch-14 SigLIP at upstream's any-resolution scales (largest 392); weights are irrelevant here."""
    cfg = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             image_size=384, patch_size=14, scales=[56, 112, 196, 392])
    return SiglipVisionModel(cfg, impl=impl).eval()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("height, width", [(224, 224), (384, 384), (392, 280), (448, 448)])
def test_siglip_frames_not_at_the_largest_scale(torch_twins, impl, height, width):
    """224 or 384 (upstream's so400m-384 processor) frames for a 392 model, non-square, or larger: refused."""
    model = p14_siglip(impl)
    frames = torch.zeros(1, 2, 3, height, width)
    with pytest.raises(ValueError, match=f"frames are {height}x{width}.*square at the largest scale, 392x392.*"
                                         "SigLIP image processor at size 392x392"):
        model(frames)


@pytest.mark.parametrize("impl", IMPLS)
def test_siglip_non_square_frames_with_a_gaze(torch_twins, impl):
    """tiny_siglip (largest scale 224) with the fixture gaze: 224x200 frames are refused, 224x224 accepted."""
    model = SiglipVisionModel.from_pretrained(FIXTURES / "tiny_siglip", impl=impl)
    gaze = load_file(str(FIXTURES / "siglip_cases.safetensors"))
    gaze = {k: gaze[k] for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")}
    with pytest.raises(ValueError, match="frames are 224x200.*224x224"):
        model(VIDEO[..., :200], gaze)
    with torch.no_grad():
        assert model(VIDEO, gaze).last_hidden_state.shape == (1, gaze["gazing_pos"].shape[1], 64)
