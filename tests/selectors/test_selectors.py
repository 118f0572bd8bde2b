"""Selectors on generated clips whose changed pixels are known by construction: the moving region is
kept (IoU against the truly changed finest cells), static patches dropped, seeds reproduce, budgets
hold, and every selector's gaze dict encodes, in the gazed SigLIP, to what those cells give by hand."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES

from autogaze_fast.media.synthetic import (
    camera_pan_clip,
    moving_object_clip,
    scene_cut_clip,
    static_clip,
    synthetic_clip,
)
from autogaze_fast.media.video import write_video
from autogaze_fast.processing.autogaze import NVIDIA_PREPROCESSING, AutoGazeImageProcessor
from autogaze_fast.reference.siglip import interpolate_position_table
from autogaze_fast.selectors import HEURISTICS, NVIDIA_LAYOUT, SELECTORS, SelectorGazer, kept_per_frame, select
from autogaze_fast.siglip import SiglipVisionModel

L = NVIDIA_LAYOUT
FINE = L.grids[-1]


def changed_cells(frames: np.ndarray) -> torch.Tensor:
    """(T-1, 196) bool: finest cells (16 px of the 224 frame) holding any pixel that differs from the previous frame."""
    diff = torch.from_numpy((frames[1:] != frames[:-1]).any(-1))
    return diff.unflatten(1, (FINE, 16)).unflatten(3, (FINE, 16)).any(4).any(2).flatten(1)


def fine_mask(gaze: dict) -> torch.Tensor:
    return gaze["gazing_mask"][-1][0] > 0  # (T, 196)


@pytest.mark.parametrize("name", ["frame-difference", "motion-vectors"])
@pytest.mark.parametrize("velocity", [(6, 4), (0, 9), (5, -3)])
def test_moving_object_kept_at_a_budget_of_its_cells(name, velocity):
    frames = moving_object_clip(6, velocity=velocity, start=(60, 100), seed=3)
    truth = changed_cells(frames)
    for t in range(1, len(frames)):
        count = int(truth[t - 1].sum())
        assert 0 < count < 60
        gaze = select(name, frames, gazing_ratio=(count + 0.5) / L.num_tokens)  # int(ratio * N) == count
        kept = fine_mask(gaze)[t]
        assert int(kept_per_frame(gaze)[0, t]) == count
        iou = (kept & truth[t - 1]).sum() / (kept | truth[t - 1]).sum()
        assert iou >= 0.9, (name, t, float(iou))


@pytest.mark.parametrize("make", [moving_object_clip, camera_pan_clip, static_clip, scene_cut_clip])
def test_run_length_drops_every_static_patch_and_keeps_the_changed(make):
    frames = make(6)
    truth = changed_cells(frames)
    gaze = select("run-length", frames, threshold=0)
    kept = fine_mask(gaze)
    assert kept[0].all()  # the first frame is kept whole
    assert torch.equal(kept[1:], truth)
    assert all(m.sum() == 0 for m in gaze["gazing_mask"][:-1])  # patches only, no coarse cells
    # each kept patch stands for itself and the dropped frames of that patch after it
    lengths = gaze["run_lengths"][0]
    frame = torch.arange(len(frames)).repeat_interleave(gaze["num_gazing_each_frame"])
    for pos, t, length in zip(gaze["gazing_pos"][0].tolist(), frame.tolist(), lengths.tolist()):
        patch = pos - L.num_tokens * t - L.offsets[-1]
        later = kept[t + 1:, patch].nonzero()
        assert length == (int(later[0]) + 1 if len(later) else len(frames) - t)


def test_run_length_default_threshold_on_the_moving_object_and_its_budget_cap():
    frames = moving_object_clip(5)
    truth = changed_cells(frames)
    assert torch.equal(fine_mask(select("run-length", frames))[1:], truth)  # contrast far above 1 grey level
    capped = select("run-length", frames, gazing_ratio=5 / L.num_tokens + 1e-9)
    assert (kept_per_frame(capped) <= 5).all() and (fine_mask(capped)[1:] <= truth).all()


def test_change_spread_over_the_frame_moves_to_a_coarse_scale():
    budget = L.budget(0.1)  # 26 tokens
    for make in (camera_pan_clip, scene_cut_clip):
        frames = make(6)
        for name in ("frame-difference", "motion-vectors"):
            gaze = select(name, frames, gazing_ratio=0.1)
            changed = [t for t in range(1, 6) if changed_cells(frames)[t - 1].all()]
            assert changed
            for t in changed:  # >= 90 % of the spread change in the 4 x 4 scale's cells; the rest refines at 14 x 14
                coarse = int(gaze["gazing_mask"][1][0, t].sum())
                assert 12 <= coarse <= 16 and gaze["gazing_mask"][2][0, t].sum() == 0
                assert gaze["gazing_mask"][3][0, t].sum() == budget - coarse
    moving = select("frame-difference", moving_object_clip(4), gazing_ratio=0.1)
    assert all(m[0, 1:].sum() == 0 for m in moving["gazing_mask"][:-1])  # concentrated: finest cells only


def test_random_is_reproducible_by_seed_and_uniform_is_the_same_every_frame():
    frames = synthetic_clip(5, 224)
    a, b = (select("random", frames, gazing_ratio=0.2, seed=7) for _ in range(2))
    c = select("random", frames, gazing_ratio=0.2, seed=8)
    assert torch.equal(a["gazing_pos"], b["gazing_pos"]) and not torch.equal(a["gazing_pos"], c["gazing_pos"])
    assert not torch.equal(a["gazing_mask"][-1][0, 0], a["gazing_mask"][-1][0, 1])  # a fresh draw each frame
    u = select("uniform", frames, gazing_ratio=0.2)
    full = torch.cat(u["gazing_mask"], -1)[0]
    assert (full == full[:1]).all()
    assert full[0, :20].all() and full[0].sum() == L.budget(0.2)  # coarse to fine: the 2x2 and 4x4 scales first


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("name", sorted(HEURISTICS))
def test_every_selector_respects_its_budget_and_the_gaze_format(name, ratio):
    frames = synthetic_clip(4, (200, 260), seed=1)  # squashed to 224 x 224, as AutoGaze squashes
    gaze = select(name, frames, gazing_ratio=ratio)
    budget = max(int(ratio * L.num_tokens), 1)
    kept = kept_per_frame(gaze)[0]
    assert (kept <= budget).all()
    if name != "run-length":
        assert (kept == budget).all()
    counts = gaze["num_gazing_each_frame"]
    assert gaze["gazing_pos"].shape == gaze["if_padded_gazing"].shape == (1, int(counts.sum()))
    frame = torch.arange(4).repeat_interleave(counts)
    index = gaze["gazing_pos"][0] - L.num_tokens * frame
    real = ~gaze["if_padded_gazing"][0]
    assert ((index[real] >= 0) & (index[real] < L.num_tokens)).all()
    full = torch.cat(gaze["gazing_mask"], -1)[0]
    for t in range(4):  # the masks and the positions say the same
        assert torch.equal(full[t].nonzero()[:, 0], index[real & (frame == t)].sort().values)


def test_autogaze_selector_is_the_model(torch_twins):
    from autogaze_fast.model import AutoGaze

    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl="fast")
    frames = synthetic_clip(3, 224)
    processor = AutoGazeImageProcessor.from_dict(NVIDIA_PREPROCESSING)
    gaze = select("autogaze", frames, gazing_ratio=0.05, model=model, processor=processor)
    with torch.inference_mode():
        direct = model({"video": processor(frames).pixel_values[None]}, gazing_ratio=0.05, generate_only=True)
    assert torch.equal(gaze["gazing_pos"], direct["gazing_pos"]) and "autogaze" in SELECTORS


def test_gazer_takes_the_processors_output_and_equals_select():
    frames = synthetic_clip(4, (180, 320), seed=2)
    processor = AutoGazeImageProcessor.from_dict(NVIDIA_PREPROCESSING)
    video = processor(frames).pixel_values[None]  # (1, 4, 3, 224, 398): shortest edge 224
    for name in ("frame-difference", "run-length", "uniform"):
        gazer = SelectorGazer(name)
        out = gazer({"video": video}, gazing_ratio=0.1)
        # the processor's resize then the squash, as the model does: same cells as select() on most frames
        ref = select(name, frames, gazing_ratio=0.1)
        assert out["gazing_pos"].shape[0] == 1 and (kept_per_frame(out) <= L.budget(0.1)).all()
        agree = (torch.cat(out["gazing_mask"], -1) == torch.cat(ref["gazing_mask"], -1)).float().mean()
        assert agree > 0.97, (name, float(agree))
    with pytest.raises(ValueError, match="stop rule"):
        SelectorGazer("uniform")({"video": video}, gazing_ratio=0.1, task_loss_requirement=0.7)


def by_hand_embeddings(model, pixels: torch.Tensor, gaze: dict) -> torch.Tensor:
    """Each kept cell (read from gazing_mask) embedded by hand: the frame resized to its scale
    (bicubic), the patch cut, the patch conv as a matrix, plus the scale's interpolated position."""
    emb = model.vision_model.embeddings
    weight = emb.patch_embedding.weight.flatten(1)
    rows = []
    for t in range(pixels.shape[1]):
        for s, (scale, grid) in enumerate(zip(L.scales, L.grids)):
            frame = F.interpolate(pixels[0, t][None], size=(scale, scale), mode="bicubic", align_corners=False)[0]
            table = interpolate_position_table(emb.position_embedding.weight, grid)
            for cell in gaze["gazing_mask"][s][0, t].nonzero()[:, 0].tolist():
                r, c = divmod(cell, grid)
                patch = frame[:, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16].flatten()
                rows.append(weight @ patch + emb.patch_embedding.bias + table[cell])
    return torch.stack(rows)


@pytest.mark.parametrize("name", sorted(HEURISTICS))
def test_gaze_dict_encoded_by_the_gazed_siglip_equals_encoding_those_cells_by_hand(name, torch_twins):
    frames = moving_object_clip(3, seed=1)
    gaze = select(name, frames, gazing_ratio=0.05)
    fast = SiglipVisionModel.from_pretrained(FIXTURES / "tiny_siglip", impl="fast")
    reference = SiglipVisionModel.from_pretrained(FIXTURES / "tiny_siglip", impl="reference")
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[None] / 127.5 - 1
    with torch.inference_mode():
        out = fast(pixels, gazing_info=gaze, output_hidden_states=True)
        # the reference encoder on a gaze built by hand from the masks (frame by frame, scales ascending)
        hand_pos = [t * L.num_tokens + L.offsets[s] + c for t in range(3) for s in range(4)
                    for c in gaze["gazing_mask"][s][0, t].nonzero()[:, 0].tolist()]
        counts = torch.tensor([int(sum(m[0, t].sum() for m in gaze["gazing_mask"])) for t in range(3)])
        hand = {"gazing_pos": torch.tensor([hand_pos]), "if_padded_gazing": torch.zeros(1, len(hand_pos), dtype=torch.bool),
                "num_gazing_each_frame": counts}
        expected = reference(pixels, gazing_info=hand).last_hidden_state
        embedded = by_hand_embeddings(reference, pixels, gaze)
    real = ~gaze["if_padded_gazing"][0]
    assert real.all()  # one clip: no pads
    torch.testing.assert_close(out.hidden_states[0][0], embedded, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.last_hidden_state, expected, atol=1e-4, rtol=1e-4)


def test_motion_vectors_from_a_file_and_a_clear_message_when_the_codec_gives_none(tmp_path):
    frames = moving_object_clip(5)
    h264 = write_video(tmp_path / "clip.mp4", frames, codec="libx264")
    gaze = select("motion-vectors", str(h264), gazing_ratio=0.1)
    truth = changed_cells(frames)
    kept = fine_mask(gaze)
    assert (kept[1:] & truth).sum() / truth.sum() > 0.8  # the file's own (lossy, crf 18) vectors find the object
    hevc = write_video(tmp_path / "clip_hevc.mp4", frames, codec="libx265")
    with pytest.raises(ValueError, match="exported no motion vectors.*H.264"):
        select("motion-vectors", str(hevc), gazing_ratio=0.1)


def test_bad_names_and_options_are_refused():
    frames = static_clip(2)
    with pytest.raises(ValueError, match="unknown selector 'foo'; choose one of autogaze, uniform"):
        select("foo", frames, gazing_ratio=0.1)
    with pytest.raises(ValueError, match="needs a budget"):
        select("frame-difference", frames)
    with pytest.raises(ValueError, match="takes"):
        select("uniform", frames, gazing_ratio=0.1, threshold=3)
    with pytest.raises(ValueError, match="needs model"):
        select("autogaze", frames, gazing_ratio=0.1)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
        select("uniform", frames.astype(np.float32), gazing_ratio=0.1)
    assert math.isclose(L.budget(1.0), 265)
