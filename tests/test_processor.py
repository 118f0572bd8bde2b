"""AutoGazeImageProcessor: bit-exact parity with upstream's output, other config paths against a
float64 formula, and clear errors for bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autogaze_fast.loading import CheckpointError
from autogaze_fast.processor import AutoGazeImageProcessor, ProcessorOutput, resize_output_size

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@pytest.fixture(scope="module")
def upstream():
    from safetensors.numpy import load_file

    return load_file(str(FIXTURES / "processor.safetensors"))


@pytest.fixture(scope="module")
def processor():
    return AutoGazeImageProcessor.from_pretrained(FIXTURES / "tiny_k10")


def oracle(video: np.ndarray, out_hw, mean, std, resample=Image.BILINEAR, scale=1 / 127.5) -> np.ndarray:
    """Pillow resize, then ((x * scale - 1) - mean) / std in float64, channels first: (T, 3, H, W)."""
    h, w = out_hw
    resized = np.stack([np.asarray(Image.fromarray(f).resize((w, h), resample=resample)) for f in video])
    x = (resized.astype(np.float64) * scale - 1.0 - np.asarray(mean)) / np.asarray(std)
    return x.transpose(0, 3, 1, 2)


# ------------------------------------------------------------------ parity with upstream
def test_matches_upstream_square_bit_exact(processor, upstream):
    # Pillow's bilinear resize is deterministic and the float arithmetic follows upstream's order
    # (float64 product, float32 offset and normalisation), so the tolerance is zero.
    out = processor(upstream["raw"]).pixel_values
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.shape == (2, 3, 224, 224)
    np.testing.assert_array_equal(out.numpy(), upstream["pixel_values"])


def test_matches_upstream_nonsquare_bit_exact(processor, upstream):
    out = processor(list(upstream["raw_nonsquare"])).pixel_values
    assert out.shape == (1, 3, 334, 224)  # long side int(224 * 448 / 300) = 334, truncated
    np.testing.assert_array_equal(out.numpy(), upstream["pixel_values_nonsquare"])


def test_input_layouts_agree(processor, upstream):
    raw = upstream["raw"]
    ref = processor(raw).pixel_values
    for variant in (list(raw), torch.from_numpy(raw), [torch.from_numpy(f) for f in raw], [Image.fromarray(f) for f in raw]):
        torch.testing.assert_close(processor(variant).pixel_values, ref, rtol=0, atol=0)
    np.testing.assert_array_equal(processor(raw, return_tensors="np").pixel_values, ref.numpy())
    single = processor(raw[0]).pixel_values  # one frame = a one-frame video
    torch.testing.assert_close(single, ref[:1], rtol=0, atol=0)


def test_batch_of_videos(processor, upstream):
    raw = upstream["raw"]
    ref = processor(raw).pixel_values
    flipped = raw[:, :, ::-1]
    ref_flipped = processor(flipped).pixel_values
    for batch in ([raw, flipped], [list(raw), list(flipped)], np.stack([raw, flipped]), torch.from_numpy(np.stack([raw, flipped]))):
        out = processor(batch).pixel_values
        assert out.shape == (2, 2, 3, 224, 224)
        torch.testing.assert_close(out[0], ref, rtol=0, atol=0)
        torch.testing.assert_close(out[1], ref_flipped, rtol=0, atol=0)


def test_output_object(processor, upstream):
    out = processor(upstream["raw"])
    assert isinstance(out, ProcessorOutput)
    assert out["pixel_values"] is out.pixel_values and out.keys() == ["pixel_values"]
    with pytest.raises(KeyError):
        out["video"]


# ------------------------------------------------------------------ other config paths vs a float64 oracle
@pytest.mark.parametrize("hw", [(448, 300), (300, 448), (57, 91), (224, 224), (225, 224)])
def test_shortest_edge_against_oracle(processor, hw):
    rng = np.random.default_rng(hw[0] * 1000 + hw[1])
    video = rng.integers(0, 256, (2, *hw, 3), dtype=np.uint8)
    out_hw = resize_output_size(*hw, {"shortest_edge": 224})
    assert min(out_hw) == 224
    out = processor(video).pixel_values.numpy()
    np.testing.assert_allclose(out, oracle(video, out_hw, IMAGENET_MEAN, IMAGENET_STD), rtol=0, atol=2e-6)


def test_resize_output_size_truncates():
    assert resize_output_size(448, 300, {"shortest_edge": 224}) == (334, 224)
    assert resize_output_size(300, 448, {"shortest_edge": 224}) == (224, 334)
    assert resize_output_size(100, 130, {"shortest_edge": 256}) == (256, 332)  # 332.8 -> 332
    assert resize_output_size(100, 130, {"height": 392, "width": 392}) == (392, 392)


def test_fixed_size_override_from_pretrained(fixtures_dir):
    # upstream's any-resolution recipe: AutoGazeImageProcessor.from_pretrained(..., size=(392, 392))
    proc = AutoGazeImageProcessor.from_pretrained(fixtures_dir / "tiny_k10", size=(392, 392))
    assert proc.size == {"height": 392, "width": 392}
    video = np.random.default_rng(0).integers(0, 256, (1, 448, 300, 3), dtype=np.uint8)
    out = proc(video).pixel_values.numpy()
    np.testing.assert_allclose(out, oracle(video, (392, 392), IMAGENET_MEAN, IMAGENET_STD), rtol=0, atol=2e-6)
    # per-call overrides leave the processor unchanged
    out2 = AutoGazeImageProcessor.from_pretrained(fixtures_dir / "tiny_k10")(video, size={"height": 392, "width": 392})
    torch.testing.assert_close(out2.pixel_values, torch.from_numpy(out), rtol=0, atol=0)


def test_constructor_defaults_are_upstreams():
    proc = AutoGazeImageProcessor()
    assert proc.size == {"shortest_edge": 256}
    assert proc.image_mean == (0.5, 0.5, 0.5) and proc.image_std == (0.5, 0.5, 0.5)
    assert proc.resample == 2 and proc.offset and proc.do_rescale and proc.do_normalize and not proc.do_center_crop
    video = np.random.default_rng(1).integers(0, 256, (1, 100, 130, 3), dtype=np.uint8)
    out = proc(video).pixel_values.numpy()
    assert out.shape == (1, 3, 256, 332)
    np.testing.assert_allclose(out, oracle(video, (256, 332), [0.5] * 3, [0.5] * 3), rtol=0, atol=2e-6)


@pytest.mark.parametrize("crop", [(150, 231), (301, 101)])  # inside the frame, and taller than it (zero padding)
def test_center_crop(crop):
    proc = AutoGazeImageProcessor(size={"shortest_edge": 200}, do_center_crop=True, crop_size={"height": crop[0], "width": crop[1]})
    video = np.random.default_rng(2).integers(0, 256, (1, 240, 320, 3), dtype=np.uint8)
    out = proc(video).pixel_values.numpy()
    assert out.shape == (1, 3, *crop)
    # oracle: resize to 200x266, pad with zeros to cover the crop, take the centred window
    resized = np.asarray(Image.fromarray(video[0]).resize((266, 200), resample=Image.BILINEAR))
    ch, cw = crop
    ph, pw = max(ch, 200), max(cw, 266)
    canvas = np.zeros((ph, pw, 3), np.uint8)
    top, left = -(-(ph - 200) // 2), -(-(pw - 266) // 2)
    canvas[top : top + 200, left : left + 266] = resized
    y0, x0 = (ph - ch) // 2, (pw - cw) // 2
    window = canvas[y0 : y0 + ch, x0 : x0 + cw][None]
    expected = ((window.astype(np.float64) / 127.5 - 1 - 0.5) / 0.5).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6)


def test_no_rescale_no_normalize_keeps_pixel_values():
    proc = AutoGazeImageProcessor(do_resize=False, do_rescale=False, offset=False, do_normalize=False)
    video = np.random.default_rng(3).integers(0, 256, (2, 17, 23, 3), dtype=np.uint8)
    out = proc(video).pixel_values
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), video.transpose(0, 3, 1, 2).astype(np.float32))


def test_to_dict_round_trip(processor):
    again = AutoGazeImageProcessor.from_dict(json.loads(json.dumps(processor.to_dict())))
    assert again.to_dict() == processor.to_dict()


# ------------------------------------------------------------------ loading errors
def test_from_pretrained_errors(tmp_path, fixtures_dir):
    with pytest.raises(CheckpointError, match="preprocessor_config.json"):
        AutoGazeImageProcessor.from_pretrained(fixtures_dir / "tiny_siglip")
    with pytest.raises(CheckpointError, match="no such model directory"):
        AutoGazeImageProcessor.from_pretrained(tmp_path / "missing")
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        AutoGazeImageProcessor.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unknown processor parameter"):
        AutoGazeImageProcessor.from_pretrained(fixtures_dir / "tiny_k10", sise=224)


def test_config_errors():
    with pytest.raises(ValueError, match="offset=True needs do_rescale"):
        AutoGazeImageProcessor(do_rescale=False)
    with pytest.raises(ValueError, match="image_std must not contain 0"):
        AutoGazeImageProcessor(image_std=[0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="image_mean must be one float or three"):
        AutoGazeImageProcessor(image_mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="shortest_edge"):
        AutoGazeImageProcessor(size={"longest_edge": 224})
    with pytest.raises(ValueError, match="positive int"):
        AutoGazeImageProcessor(size={"shortest_edge": 0})
    with pytest.raises(ValueError, match="resample"):
        AutoGazeImageProcessor(resample=42)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((8, 8), np.uint8), "expected a frame"),
        (np.zeros((2, 8, 8, 4), np.uint8), "3 channels last"),
        (np.zeros((2, 3, 8, 8), np.uint8), "channels-first"),
        (np.zeros((2, 8, 8, 3), np.float32), "must be uint8"),
        (np.full((2, 8, 8, 3), np.nan, np.float32), "NaN or inf"),
        (torch.zeros(2, 8, 8, 3), "must be uint8"),
        (np.zeros((0, 8, 8, 3), np.uint8), "no frames"),
        (np.zeros((2, 0, 8, 3), np.uint8), "zero size"),
        ([], "empty list"),
        ([[]], "no frames"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)], "same shape"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.uint8)], "not a mix"),
        ("video.mp4", "expected frames"),
        (np.zeros((0, 2, 8, 8, 3), np.uint8), "no videos"),
    ],
)
def test_bad_input_raises(processor, bad, match):
    with pytest.raises(ValueError, match=match):
        processor(bad)


def test_ragged_batch_raises(processor):
    with pytest.raises(ValueError, match="different shapes"):
        processor([np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8)])


def test_bad_return_tensors(processor):
    with pytest.raises(ValueError, match="return_tensors"):
        processor(np.zeros((1, 8, 8, 3), np.uint8), return_tensors="tf")


def test_non_rgb_pil_image(processor):
    with pytest.raises(ValueError, match="convert"):
        processor([Image.new("L", (8, 8))])
