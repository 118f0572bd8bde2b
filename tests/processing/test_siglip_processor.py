"""SiglipImageProcessor: bit-exact parity with transformers' slow ``SiglipImageProcessor``, config
loading, sizing for a gazed SigLIP, and clear errors for bad input.

How the fixture was produced (the generator script is not part of the project):
``tests/fixtures/siglip_processor.safetensors`` + ``.json`` come from transformers 4.57.6's slow,
Pillow-based ``transformers.SiglipImageProcessor`` (Pillow 13.0.0, numpy 2.4.6, CPU), called as
``SiglipImageProcessor(**config).preprocess(list(frames), return_tensors="np")``. Inputs (stored as
uint8 under ``input/<name>``) are ``autogaze_fast.media.synthetic.synthetic_clip`` clips: 224×224 (2
frames), 448×448 (1), 360×640 landscape (1), 640×360 portrait (1) and a tiny 17×23 (3). Configs
(in the json): transformers' defaults (224×224, bicubic, 1/255, mean/std 0.5); ``size`` 384×384;
a SigLIP2 config as ``google/siglip2-base-patch16-*`` ship it (bilinear ``resample`` 2,
``do_convert_rgb`` null, 224×224; the 512 checkpoint's file was seen, the 224 one assumed
identical but for the size); 200×300 Lanczos with ImageNet mean/std; and no resize. Per case the
json holds the sha256 of transformers' full float32 output ``(T, 3, H, W)`` and the safetensors
its every 7th row and column (``output/<config>/<input>``), to keep the file under 3 MB.

Tolerance: zero. The output is bit-identical (measured max abs difference 0 over all 19 cases,
full tensors) as long as Pillow resizes the same way; the test checks the full output's hash and
the stored samples exactly.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autogaze_fast.loading import CheckpointError
from autogaze_fast.processing.autogaze import ProcessorOutput
from autogaze_fast.processing.siglip import SiglipImageProcessor
from autogaze_fast.siglip_config import SiglipVisionConfig

FIXTURE = Path(__file__).parents[1] / "fixtures" / "siglip_processor"
META = json.loads(FIXTURE.with_suffix(".json").read_text())
SIGLIP2 = META["configs"]["siglip2_224"]


@pytest.fixture(scope="module")
def fixture():
    from safetensors.numpy import load_file

    return load_file(str(FIXTURE.with_suffix(".safetensors")))


def _sha256(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()


# ------------------------------------------------------------------ parity with transformers
@pytest.mark.parametrize("case", sorted(META["cases"]))
def test_matches_transformers_bit_exact(fixture, case):
    info = META["cases"][case]
    proc = SiglipImageProcessor.from_dict(META["configs"][info["config"]])
    out = proc(fixture["input/" + info["input"]]).pixel_values
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert list(out.shape) == info["shape"]
    stride = META["stride"]
    sampled = out.numpy()[:, :, ::stride, ::stride]
    ref = fixture["output/" + case]
    assert float(np.abs(sampled.astype(np.float64) - ref).max()) == 0.0
    assert _sha256(out.numpy()) == info["sha256"], "full output differs from transformers' somewhere"


def test_fixture_tells_float32_rescaling_apart(fixture):
    # The zero tolerance is meaningful: rescaling in float32 instead of float64 (one plausible
    # mistake) already changes some values of a fixture case.
    info = META["cases"]["imagenet_200x300_lanczos/sq224"]
    cfg = META["configs"][info["config"]]
    good = SiglipImageProcessor.from_dict(cfg, do_rescale=False, do_normalize=False)
    resized = good(fixture["input/sq224"], return_tensors="np").pixel_values
    mean = np.asarray(cfg["image_mean"], np.float32)[:, None, None]
    std = np.asarray(cfg["image_std"], np.float32)[:, None, None]
    wrong = (resized * np.float32(1 / 255) - mean) / std
    assert _sha256(wrong) != info["sha256"]


def test_input_layouts_agree(fixture):
    proc = SiglipImageProcessor()
    raw = fixture["input/sq224"]
    ref = proc(raw).pixel_values
    for variant in (list(raw), torch.from_numpy(raw), [torch.from_numpy(f) for f in raw], [Image.fromarray(f) for f in raw]):
        torch.testing.assert_close(proc(variant).pixel_values, ref, rtol=0, atol=0)
    batch = proc(np.stack([raw, raw[::-1]])).pixel_values
    assert batch.shape == (2, 2, 3, 224, 224)
    torch.testing.assert_close(batch[0], ref, rtol=0, atol=0)
    torch.testing.assert_close(batch[1], ref.flip(0), rtol=0, atol=0)
    single = proc(raw[0]).pixel_values  # one frame = a one-frame video
    torch.testing.assert_close(single, ref[:1], rtol=0, atol=0)
    as_np = proc(raw, return_tensors="np")
    assert isinstance(as_np, ProcessorOutput) and isinstance(as_np.pixel_values, np.ndarray)
    np.testing.assert_array_equal(as_np["pixel_values"], ref.numpy())


def test_call_overrides_and_int_size(fixture):
    raw = fixture["input/tiny17x23"]
    proc = SiglipImageProcessor()
    by_call = proc(raw, size=384).pixel_values
    assert by_call.shape == (3, 3, 384, 384)
    assert _sha256(by_call.numpy()) == META["cases"]["size384/tiny17x23"]["sha256"]
    assert proc.size == {"height": 224, "width": 224}  # the call's override does not stick
    assert SiglipImageProcessor(size=(200, 300)).size == {"height": 200, "width": 300}


# ------------------------------------------------------------------ config loading
def test_defaults_and_to_dict_round_trip():
    proc = SiglipImageProcessor()
    d = proc.to_dict()
    assert d["size"] == {"height": 224, "width": 224} and d["resample"] == 3
    assert d["rescale_factor"] == pytest.approx(1 / 255) and d["image_mean"] == [0.5] * 3 == d["image_std"]
    assert d["image_processor_type"] == "SiglipImageProcessor"
    assert SiglipImageProcessor.from_dict(json.loads(json.dumps(d))).to_dict() == d


def test_from_pretrained_reads_config_and_ignores_unknown_keys(tmp_path, fixture):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**SIGLIP2, "some_future_key": [1, 2]}))
    proc = SiglipImageProcessor.from_pretrained(tmp_path)
    assert proc.resample == 2 and proc.size == {"height": 224, "width": 224} and proc.do_convert_rgb is None
    out = proc(fixture["input/port640x360"]).pixel_values
    assert _sha256(out.numpy()) == META["cases"]["siglip2_224/port640x360"]["sha256"]
    big = SiglipImageProcessor.from_pretrained(tmp_path, size={"height": 384, "width": 384})
    assert big.size == {"height": 384, "width": 384} and big.resample == 2


def test_from_pretrained_missing_config_is_not_silent(tmp_path):
    with pytest.raises(CheckpointError, match="no preprocessor_config.json.*defaults_if_missing"):
        SiglipImageProcessor.from_pretrained(tmp_path)
    proc = SiglipImageProcessor.from_pretrained(tmp_path, defaults_if_missing=True, size=256)
    assert proc.to_dict() == SiglipImageProcessor(size=256).to_dict()
    with pytest.raises(CheckpointError, match="no such model directory"):
        SiglipImageProcessor.from_pretrained(tmp_path / "absent")


def test_from_pretrained_bad_files(tmp_path):
    path = tmp_path / "preprocessor_config.json"
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        SiglipImageProcessor.from_pretrained(tmp_path)
    path.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        SiglipImageProcessor.from_pretrained(tmp_path)
    path.write_text(json.dumps({"image_processor_type": "Siglip2ImageProcessorFast", "max_num_patches": 256}))
    with pytest.raises(ValueError, match="NaFlex"):
        SiglipImageProcessor.from_pretrained(tmp_path)
    assert SiglipImageProcessor.from_pretrained(tmp_path, size=224).size == {"height": 224, "width": 224}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": {"shortest_edge": 224}}, "fixed size"),
        ({"size": {"height": 0, "width": 4}}, "positive int"),
        ({"resample": 9}, "resampling filter"),
        ({"image_std": [0.5, 0.0, 0.5]}, "must not contain 0"),
        ({"image_mean": [0.5, 0.5]}, "three"),
        ({"rescale_factor": float("nan")}, "finite"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SiglipImageProcessor(**kwargs)


def test_unknown_override_is_refused():
    with pytest.raises(ValueError, match="unknown processor parameter"):
        SiglipImageProcessor.from_dict({}, crop_size=224)


# ------------------------------------------------------------------ sizing for a gazed SigLIP
def test_for_vision_model_uses_the_largest_scale(tmp_path):
    from autogaze_fast.siglip import SiglipVisionModel

    config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=56, patch_size=14, scales=[56, 112, 196, 392],
    )
    proc = SiglipImageProcessor.for_vision_model(config)
    assert proc.size == {"height": 392, "width": 392}
    assert proc.to_dict() == SiglipImageProcessor(size=392).to_dict()
    model = SiglipVisionModel(config, impl="reference")
    assert SiglipImageProcessor.for_vision_model(model).size == {"height": 392, "width": 392}
    frames = np.zeros((2, 100, 60, 3), np.uint8)
    assert proc(frames).pixel_values.shape == (2, 3, 392, 392)

    # normalisation, rescale and filter come from the checkpoint; only the size is the model's
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**SIGLIP2, "image_mean": [0.4, 0.5, 0.6]}))
    from_ckpt = SiglipImageProcessor.for_vision_model(model, tmp_path)
    assert from_ckpt.size == {"height": 392, "width": 392}
    assert from_ckpt.resample == 2 and from_ckpt.image_mean == (0.4, 0.5, 0.6)


def test_for_vision_model_errors(tmp_path):
    config = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(CheckpointError, match="no preprocessor_config.json"):
        SiglipImageProcessor.for_vision_model(config, tmp_path)
    assert SiglipImageProcessor.for_vision_model(config, tmp_path, defaults_if_missing=True).size == {"height": 224, "width": 224}
    with pytest.raises(ValueError, match="largest scale"):
        SiglipImageProcessor.for_vision_model(config, size=384)
    with pytest.raises(TypeError, match="SiglipVisionModel or a SiglipVisionConfig"):
        SiglipImageProcessor.for_vision_model({"scales": [224]})


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "frames, match",
    [
        (np.zeros((2, 3, 32, 32), np.uint8), "3 channels last.*channels-first"),
        (np.zeros((2, 32, 32, 4), np.uint8), "3 channels last"),
        (np.zeros((2, 32, 32, 3), np.float32), "must be uint8.*dtype float32"),
        (np.full((1, 8, 8, 3), np.nan, np.float32), "NaN or inf"),
        (np.zeros((0, 32, 32, 3), np.uint8), "no frames"),
        ([], "empty list"),
        (np.zeros((32, 32), np.uint8), "expected a frame"),
        ("frames.mp4", "expected frames as numpy arrays"),
    ],
)
def test_bad_input_gives_clear_errors(frames, match):
    with pytest.raises(ValueError, match=match):
        SiglipImageProcessor()(frames)


def test_ragged_batch_and_bad_return_tensors():
    proc = SiglipImageProcessor(size=32)
    with pytest.raises(ValueError, match="different shapes"):
        proc([np.zeros((2, 16, 16, 3), np.uint8), np.zeros((3, 16, 16, 3), np.uint8)])
    with pytest.raises(ValueError, match="return_tensors"):
        proc(np.zeros((1, 16, 16, 3), np.uint8), return_tensors="tf")


def test_convert_rgb_follows_the_flag():
    gray = Image.fromarray(np.arange(24 * 24, dtype=np.uint8).reshape(24, 24) % 251, mode="L")
    by_hand = SiglipImageProcessor(size=32)([gray.convert("RGB")]).pixel_values
    converted = SiglipImageProcessor(size=32, do_convert_rgb=True)([gray]).pixel_values
    torch.testing.assert_close(converted, by_hand, rtol=0, atol=0)
    with pytest.raises(ValueError, match="mode 'L'.*convert"):
        SiglipImageProcessor(size=32)([gray])  # None / False: as transformers, no conversion
