"""AutoGazeImageProcessor: bit-exact parity with upstream's output, other config paths against a
float64 formula, and clear errors for bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autogaze_fast.loading import CheckpointError
from autogaze_fast.processing.autogaze import AutoGazeImageProcessor, ProcessorOutput, resize_output_size

FIXTURES = Path(__file__).parents[1] / "fixtures" / "upstream"
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
    for batch in ([raw, flipped], [list(raw), list(flipped)], np.stack([raw, flipped]),
                  torch.from_numpy(np.stack([raw, flipped]))):
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
    proc = AutoGazeImageProcessor(size={"shortest_edge": 200}, do_center_crop=True,
                                  crop_size={"height": crop[0], "width": crop[1]})
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
        processor([np.zeros((2, 16, 16, 3), np.uint8), np.zeros((3, 16, 16, 3), np.uint8)])


def test_bad_return_tensors(processor):
    with pytest.raises(ValueError, match="return_tensors"):
        processor(np.zeros((1, 8, 8, 3), np.uint8), return_tensors="tf")


def test_non_rgb_pil_image(processor):
    with pytest.raises(ValueError, match="convert"):
        processor([Image.new("L", (8, 8))])


# ------------------------------------------------------------------ advice that names the input and fits its type
def _advised_fix(message: str) -> str:
    """The conversion an error message suggests (the text after its last 'with ')."""
    return message.rsplit(" with ", 1)[1]


def _apply(fix: str, x):
    return eval(fix, {"np": np, "torch": torch, "x": x})


@pytest.mark.parametrize(
    "make, expect_fix",
    [
        (lambda v: v.astype(np.float32), "x.round().clip(0, 255).astype(np.uint8)"),  # floats in 0..255
        (lambda v: v.astype(np.float64) / 255, "(x * 255).round().clip(0, 255).astype(np.uint8)"),  # floats in 0..1
        (lambda v: torch.from_numpy(v).float(), "x.round().clamp(0, 255).to(torch.uint8)"),
        (lambda v: torch.from_numpy(v).float() / 255, "(x * 255).round().clamp(0, 255).to(torch.uint8)"),
        (lambda v: torch.from_numpy(v).to(torch.bfloat16), "x.round().clamp(0, 255).to(torch.uint8)"),
        (lambda v: v.astype(np.int64), "x.astype(np.uint8)"),
        (lambda v: torch.from_numpy(v).long(), "x.to(torch.uint8)"),
    ],
)
def test_non_uint8_frames_get_the_fix_for_their_range_and_library(processor, make, expect_fix):
    frames = np.random.default_rng(4).integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    frames[0, 0, 0] = (0, 255, 128)  # the full range is present
    x = make(frames)
    with pytest.raises(ValueError) as err:
        processor(x)
    message = str(err.value)
    assert "(2, 16, 24, 3)" in message and str(x.dtype) in message
    assert _advised_fix(message) == expect_fix
    assert ("np." in message) != isinstance(x, torch.Tensor)  # numpy advice for numpy, torch advice for torch
    # the advice works: the converted frames are accepted and equal the original uint8 frames
    # (bfloat16 rounds 0..255 to 8 significant bits, so compare with what it holds)
    expected = np.asarray(x.float() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    expected = np.clip(np.round(expected * (255 if expected.max() <= 1 else 1)), 0, 255).astype(np.uint8)
    torch.testing.assert_close(processor(_apply(expect_fix, x)).pixel_values, processor(expected).pixel_values, rtol=0, atol=0)


def test_float_0_255_advice_does_not_overflow(processor):
    frames = np.full((1, 16, 16, 3), 200.0, np.float32)
    with pytest.raises(ValueError) as err:
        processor(frames)
    assert "x * 255" not in str(err.value)
    assert (_apply(_advised_fix(str(err.value)), frames) == 200).all()


@pytest.mark.parametrize(
    "x, fix",
    [
        (np.zeros((2, 3, 16, 16), np.uint8), "np.moveaxis(x, -3, -1)"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), "x.movedim(-3, -1)"),
        (torch.zeros(1, 2, 3, 16, 16, dtype=torch.uint8), "x.movedim(-3, -1)"),
        (np.zeros((3, 16, 16), np.uint8), "np.moveaxis(x, -3, -1)"),
    ],
)
def test_channels_first_names_the_input_shape_and_its_librarys_fix(processor, x, fix):
    with pytest.raises(ValueError) as err:
        processor(x)
    message = str(err.value)
    assert str(tuple(x.shape)) in message  # the whole input's shape, not one frame's
    assert "channels-first" in message and message.endswith(fix)
    assert ("permute" in message) is False and ("np." in message) != isinstance(x, torch.Tensor)
    processor(_apply(fix, x))  # the advice works


def test_batch_error_names_the_whole_input_shape(processor):
    batch = np.zeros((2, 3, 16, 16, 4), np.uint8)
    with pytest.raises(ValueError, match=r"video 0: .*\(2, 3, 16, 16, 4\)"):
        processor(batch)


def test_list_of_float_frames_is_told_to_convert_each_frame(processor):
    frames = [torch.rand(16, 16, 3) for _ in range(3)]
    with pytest.raises(ValueError) as err:
        processor(frames)
    message = str(err.value)
    assert "list of 3 items" in message and "(16, 16, 3)" in message
    assert "each frame with (x * 255).round().clamp(0, 255).to(torch.uint8)" in message
    processor([_apply(_advised_fix(message), f) for f in frames])


def test_normalised_input_is_recognised(processor, upstream):
    processed = processor(upstream["raw"]).pixel_values.permute(0, 2, 3, 1)  # channels last, to get past that check
    with pytest.raises(ValueError, match="already normalised.*straight to AutoGaze"):
        processor(processed)


# ------------------------------------------------------------------ frame size limits
@pytest.mark.parametrize("hw", [(224, 1), (1, 224), (15, 40)])
def test_frames_below_the_minimum_side_are_refused(processor, hw):
    with pytest.raises(ValueError) as err:
        processor(np.zeros((4, *hw, 3), np.uint8))
    message = str(err.value)
    assert f"{hw[0]}x{hw[1]} (H x W)" in message and f"(4, {hw[0]}, {hw[1]}, 3)" in message
    assert "at least 16 px" in message and "min_frame_side" in message


@pytest.mark.parametrize("hw", [(16, 129), (300, 20)])
def test_frames_beyond_the_aspect_limit_are_refused(processor, hw):
    with pytest.raises(ValueError, match=r"aspect ratio of .* : 1, more than 8 : 1.*Crop.*max_aspect_ratio"):
        processor(np.zeros((1, *hw, 3), np.uint8))


def test_frames_at_the_limits_are_accepted_and_limits_can_be_changed(processor):
    assert processor(np.zeros((1, 16, 128, 3), np.uint8)).pixel_values.shape == (1, 3, 224, 1792)
    assert processor(np.zeros((1, 16, 16, 3), np.uint8)).pixel_values.shape == (1, 3, 224, 224)
    relaxed = AutoGazeImageProcessor.from_dict(processor.to_dict())
    relaxed.min_frame_side, relaxed.max_aspect_ratio = 4, 16.0
    assert relaxed(np.zeros((1, 8, 128, 3), np.uint8)).pixel_values.shape == (1, 3, 224, 3584)
    with pytest.raises(ValueError, match="too small"):  # the class default is untouched
        processor(np.zeros((1, 8, 128, 3), np.uint8))
