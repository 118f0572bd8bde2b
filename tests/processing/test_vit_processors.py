"""CLIPImageProcessor and DINOv2's BitImageProcessor equal transformers' 4.57.6 (fixtures of their
outputs on fixed uint8 portrait / landscape images: tests/fixtures/vit_processors), and
AutoVisionProcessor picks the class a checkpoint names."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from autogaze_fast import AutoVisionModel, AutoVisionProcessor, SiglipImageProcessor
from autogaze_fast.processing.clip import CLIPImageProcessor, center_crop
from autogaze_fast.processing.dinov2 import BitImageProcessor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CASES = load_file(str(FIXTURES / "vit_processors" / "processors.safetensors"))


@pytest.mark.parametrize("family,cls", [("clip", CLIPImageProcessor), ("dinov2", BitImageProcessor)])
@pytest.mark.parametrize("image", ["portrait", "landscape"])
def test_processor_equals_transformers(family, cls, image):
    proc = AutoVisionProcessor.from_pretrained(FIXTURES / "vit_processors" / family)
    assert type(proc) is cls
    out = proc(CASES[f"image.{image}"].numpy()).pixel_values  # one frame -> (1, 3, h, w)
    torch.testing.assert_close(out[0], CASES[f"{family}.{image}"], atol=0, rtol=0)


def test_defaults_are_transformers_defaults():
    clip, bit = CLIPImageProcessor(), BitImageProcessor()
    for proc in (clip, bit):
        assert proc.size == {"shortest_edge": 224} and proc.crop_size == {"height": 224, "width": 224}
        assert proc.resample == 3 and proc.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_center_crop_pads_a_small_frame():
    frame = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    out = center_crop(frame, 4, 3)
    assert out.shape == (4, 3, 3) and (out[0] == 0).all() and (out[1:3] == frame).all()


def test_auto_processor_per_checkpoint_and_gazed_variant(tmp_path):
    assert type(AutoVisionProcessor.from_pretrained(FIXTURES / "vit_clip")) is CLIPImageProcessor
    assert type(AutoVisionProcessor.from_pretrained(FIXTURES / "vit_dinov2_reg")) is BitImageProcessor
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(SiglipImageProcessor(size=64).to_dict()))
    assert AutoVisionProcessor.from_pretrained(tmp_path).size == {"height": 64, "width": 64}
    model = AutoVisionModel.from_pretrained(FIXTURES / "vit_dinov2", scales="28+56")
    proc = BitImageProcessor.for_vision_model(model, FIXTURES / "vit_dinov2")
    frames = np.zeros((3, 40, 70, 3), dtype=np.uint8)
    assert proc(frames).pixel_values.shape == (3, 3, 56, 56)
    assert proc.image_mean == pytest.approx((0.485, 0.456, 0.406))
