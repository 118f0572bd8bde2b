"""Video files → gazed features: the encoder against gaze + encode done by hand, timestamp decoding
against the frames' own markers, sources, the store's crash safety, resume, failures, the dataset.

The models are the upstream fixture models (tiny_k10, tiny_siglip); every video is generated here
(``extract_videos.py``). The fast path runs its CPU torch twins.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("av")

from extract_videos import dataset_videos, marker_frames, marker_index, tiny_checkpoints, write_timed

from autogaze_fast.encoder import GazedVideoEncoder, parse_layers, pool_frames
from autogaze_fast.extract import FeatureDataset, extract_features, list_videos, load_features
from autogaze_fast.extract.decode import sample_clips
from autogaze_fast.extract.run import shard
from autogaze_fast.extract.store import ExtractionStore, append_jsonl, read_jsonl
from autogaze_fast.media.synthetic import synthetic_clip
from autogaze_fast.media.video import read_video, write_video

FREQ = 4.0
CLIP = 4


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tiny_checkpoints(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return folder, dataset_videos(folder)


@pytest.fixture
def encoder(checkpoints, torch_twins):
    gaze, vision = checkpoints
    return GazedVideoEncoder.from_pretrained(gaze, vision, impl="fast", device="cpu", num_frames=CLIP, gazing_ratio=0.3,
                                             task_loss_requirement=None)


# ---------------------------------------------------------------------------------------------- encoder
def test_encoder_equals_gaze_and_encode_by_hand(checkpoints, torch_twins):
    """Two clips of a 7-frame video: the encoder's tokens and pooled features are what the public API
    gives when each clip is preprocessed, gazed and encoded by hand."""
    from autogaze_fast import AutoGaze, AutoGazeImageProcessor, SiglipImageProcessor, SiglipVisionModel

    gaze_dir, vision_dir = checkpoints
    encoder = GazedVideoEncoder.from_pretrained(gaze_dir, vision_dir, impl="fast", device="cpu", num_frames=4,
                                                gazing_ratio=0.3, task_loss_requirement=None, layers="-2,-1")
    frames = synthetic_clip(7, size=(60, 80), seed=3)
    out = encoder(frames)

    model = AutoGaze.from_pretrained(gaze_dir, impl="fast")
    siglip = SiglipVisionModel.from_pretrained(vision_dir, impl="fast")
    gaze_proc = AutoGazeImageProcessor.from_pretrained(gaze_dir)
    vision_proc = SiglipImageProcessor.from_pretrained(vision_dir, size=max(siglip.scales))
    n = siglip.config.tokens_per_frame
    pooled, tokens = [], []
    for start in (0, 4):
        clip = frames[start:start + 4]
        with torch.inference_mode():
            gaze = model({"video": gaze_proc(clip).pixel_values[None]}, gazing_ratio=0.3, generate_only=True)
            enc = siglip(vision_proc(clip).pixel_values[None], gazing_info=gaze, output_hidden_states=True)
        states = torch.stack([enc.hidden_states[-2][0], enc.last_hidden_state[0]], dim=1)  # (N, 2, C)
        pad = gaze["if_padded_gazing"][0]
        frame = torch.arange(len(clip)).repeat_interleave(gaze["num_gazing_each_frame"])
        for t in range(len(clip)):
            keep = (frame == t) & ~pad
            pooled.append(states[keep].mean(0))
            assert torch.equal(out.token_index[(out.token_frame == start + t) & ~out.token_is_pad],
                               gaze["gazing_pos"][0][keep] - t * n)
        tokens.append(states)
    torch.testing.assert_close(out.tokens, torch.cat(tokens), rtol=0, atol=0)
    torch.testing.assert_close(out.pooled, torch.stack(pooled), rtol=1e-6, atol=1e-6)
    assert out.pooled.shape == (7, 2, siglip.config.hidden_size)
    assert not out.empty_frames.any()
    # Scales follow the token's cell: the first 4 cells are the 32 px scale, the last 196 the 224 px one.
    starts = np.cumsum([0] + siglip.config.tokens_per_scale)
    real = ~out.token_is_pad
    expected_scale = np.searchsorted(starts, out.token_index[real].numpy(), side="right") - 1
    assert np.array_equal(out.token_scale[real].numpy(), expected_scale)


def test_encoder_dense_mode_encodes_every_patch(checkpoints, torch_twins):
    from autogaze_fast import SiglipImageProcessor, SiglipVisionModel

    _, vision_dir = checkpoints
    siglip = SiglipVisionModel.from_pretrained(vision_dir, scales="224", impl="fast")
    encoder = GazedVideoEncoder(None, siglip, None, SiglipImageProcessor.for_vision_model(siglip, vision_dir), num_frames=2)
    frames = synthetic_clip(3, size=64, seed=0)
    out = encoder(frames)
    assert out.tokens.shape[0] == 3 * 196 and not out.token_is_pad.any()
    with torch.inference_mode():
        ref = siglip(encoder.vision_processor(frames[:2]).pixel_values[None], attn_type="frame_independent")
    torch.testing.assert_close(out.pooled[:2], ref.last_hidden_state[0].view(2, 196, -1).mean(1), rtol=1e-5, atol=1e-6)


def test_pool_frames_zeros_and_flags_empty_frames():
    tokens = torch.arange(12.0).view(6, 2)
    frame = torch.tensor([0, 0, 0, 2, 2, 2])
    pad = torch.tensor([False, True, False, False, False, True])
    pooled, counts = pool_frames(tokens, frame, pad, 3)
    torch.testing.assert_close(pooled, torch.tensor([[2.0, 3.0], [0.0, 0.0], [7.0, 8.0]]))
    assert counts.tolist() == [2, 0, 2]


def test_parse_layers():
    assert parse_layers(-1, 12) == [12]
    assert parse_layers("-4,-1", 12) == [9, 12]
    assert parse_layers("all", 3) == [1, 2, 3]
    assert parse_layers([0, 2], 3) == [0, 2]
    for bad in ("x", 13, -14, "1,1", []):
        with pytest.raises(ValueError):
            parse_layers(bad, 12)


def test_encoder_rejects_mismatched_scales(checkpoints):
    from autogaze_fast import AutoGaze, SiglipVisionModel

    gaze_dir, vision_dir = checkpoints
    with pytest.raises(ValueError, match="scales=32\\+64\\+112\\+224"):
        GazedVideoEncoder(AutoGaze.from_pretrained(gaze_dir), SiglipVisionModel.from_pretrained(vision_dir, scales="224"),
                          object(), object())


# ---------------------------------------------------------------------------------------------- decode
def test_sampling_follows_each_frames_own_timestamp(tmp_path):
    """Variable frame rate: the frame shown at time t is the last one starting at or before t."""
    pts = [0, 100, 150, 400, 1000, 1100, 1500, 2100]
    path = write_timed(tmp_path / "vfr.mkv", marker_frames(len(pts)), pts)
    clips = list(sample_clips(path, 10.0, clip_frames=8))
    times = np.concatenate([t for t, _ in clips])
    got = [i for _, f in clips for i in marker_index(f)]
    expected = [max(i for i, p in enumerate(pts) if p <= round(t * 1000)) for t in times]
    assert got == expected
    np.testing.assert_allclose(times, np.arange(22) / 10)  # up to the end of the last frame (2.1 s + 0.1 s)
    assert [len(t) for t, _ in clips] == [8, 8, 6]
    native = list(sample_clips(path, None, clip_frames=100))
    assert marker_index(native[0][1]) == list(range(len(pts)))
    np.testing.assert_allclose(native[0][0], np.array(pts) / 1000)


def test_sampling_matches_read_video_and_seeking_changes_nothing(tmp_path):
    """Constant 8 fps: sampling at 3 Hz picks frame floor(8k/3); seeking over long gaps gives the
    same frames as decoding everything."""
    clip = synthetic_clip(64, size=(32, 48), seed=5)
    path = write_video(tmp_path / "long.mp4", clip, fps=8)
    decoded = read_video(path)
    sampled = np.concatenate([f for _, f in sample_clips(path, 3.0, clip_frames=5)])
    assert np.array_equal(sampled, decoded[[(8 * k) // 3 for k in range(24)]])
    sparse_seek = np.concatenate([f for _, f in sample_clips(path, 0.2, clip_frames=5, seek_gap=1.0)])
    sparse_linear = np.concatenate([f for _, f in sample_clips(path, 0.2, clip_frames=5, seek_gap=1e9)])
    assert np.array_equal(sparse_seek, sparse_linear)
    assert np.array_equal(sparse_linear, decoded[[40 * k for k in range(2)]])


def test_sampling_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(sample_clips(tmp_path / "nope.mp4", 1.0, 4))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        list(sample_clips(empty, 1.0, 4))
    with pytest.raises(ValueError, match="frequency"):
        list(sample_clips(empty, 0.0, 4))


# ---------------------------------------------------------------------------------------------- sources
def test_list_videos_folder_glob_and_list_files(videos, tmp_path):
    folder, made = videos
    ids = [v.id for v in list_videos(folder)]
    assert ids == sorted(made)
    assert [v.id for v in list_videos(str(folder / "**" / "*.mp4"))] == ["broken.mp4", "landscape.mp4", "sub/portrait.mp4"]
    (folder / "list.txt").write_text("# two videos\nlandscape.mp4\n\nsub/portrait.mp4\n")
    (folder / "list.csv").write_text("label,path\nx,gray.mkv\ny,missing.mp4\n")
    (folder / "list.jsonl").write_text(json.dumps({"video": str(folder / "vfr.mkv")}) + "\n" + json.dumps("alpha.mov") + "\n")
    try:
        assert [v.id for v in list_videos(folder / "list.txt")] == ["landscape.mp4", "sub/portrait.mp4"]
        assert [v.id for v in list_videos(folder / "list.csv")] == ["gray.mkv", "missing.mp4"]
        assert [v.id for v in list_videos(folder / "list.jsonl")] == ["alpha.mov", "vfr.mkv"]
    finally:
        for name in ("list.txt", "list.csv", "list.jsonl"):
            (folder / name).unlink()
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_videos(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="matches no file"):
        list_videos(str(tmp_path / "*.mp4"))


def test_shard_is_balanced_deterministic_and_complete(videos):
    folder, _ = videos
    everything = list_videos(folder)
    for world in (1, 2, 3, 4):
        shares = [shard(everything, r, world) for r in range(world)]
        ids = [v.id for s in shares for v in s]
        assert sorted(ids) == [v.id for v in everything] and len(set(ids)) == len(ids)
        assert shares == [shard(everything, r, world) for r in range(world)]
        sizes = [sum(v.path.stat().st_size for v in s) for s in shares]
        biggest = max(v.path.stat().st_size for v in everything)
        assert max(sizes) - min(sizes) <= biggest  # greedy largest-first keeps loads within one file


# ---------------------------------------------------------------------------------------------- store
def test_manifest_survives_a_line_cut_by_a_crash(tmp_path):
    path = tmp_path / "manifest.jsonl"
    append_jsonl(path, {"video": "a", "status": "ok"})
    with open(path, "a") as f:
        f.write('{"video": "b", "sta')  # killed mid-line
    append_jsonl(path, {"video": "c", "status": "ok"})
    assert [r["video"] for r in read_jsonl(path)] == ["a", "c"]


def test_unwritable_output_folder_fails_before_any_work(videos, tmp_path, encoder):
    folder, _ = videos
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(OSError, match="cannot write to the output folder"):
        extract_features(folder, blocker, encoder=encoder, model_id="tiny", progress=False)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OSError, match="cannot write"):
            extract_features(folder, locked, encoder=encoder, model_id="tiny", progress=False)


def test_config_hash_separates_configs(tmp_path):
    a = ExtractionStore(tmp_path, {"frequency": 2.0, "layers": [12]})
    b = ExtractionStore(tmp_path, {"frequency": 2.0, "layers": [9, 12]})
    assert a.folder != b.folder and a.hash == ExtractionStore(tmp_path, {"layers": [12], "frequency": 2.0}).hash


# ---------------------------------------------------------------------------------------------- the run
def test_extract_six_videos_five_ok_one_failed_then_resume(videos, tmp_path, encoder):
    folder, made = videos
    out = tmp_path / "out"
    summary = extract_features(folder, out, encoder=encoder, model_id="tiny", frequency=FREQ, save_tokens=True,
                               progress=False)
    assert (summary.ok, summary.failed, summary.skipped) == (5, 1, 0)
    assert summary.failures[0]["video"] == "broken.mp4" and "not a video PyAV can open" in summary.failures[0]["reason"]
    store = summary.folder
    assert json.loads((store / "config.json").read_text())["frequency"] == FREQ
    records = list(read_jsonl(store / "manifest.jsonl"))
    assert sorted(r["video"] for r in records) == sorted(made)

    land = load_features(out, "landscape.mp4")
    assert land["features"].shape == (12, 64)  # 3 s at 4 Hz, three 4-frame clips
    np.testing.assert_allclose(land["times"].numpy(), np.arange(12) / FREQ)
    assert land["num_gazed"].tolist() == [int(0.3 * 265)] * 12
    meta = land["metadata"]
    assert meta["source_size"] == made["landscape.mp4"].stat().st_size and meta["fps"] == 8.0
    assert meta["width"] == 64 and meta["height"] == 48 and meta["config_hash"] == store.name
    # The stored features are the encoder's on the same sampled frames.
    frames = np.concatenate([f for _, f in sample_clips(made["landscape.mp4"], FREQ, CLIP)])
    direct = encoder(frames)
    torch.testing.assert_close(land["features"], direct.pooled, rtol=0, atol=0)
    torch.testing.assert_close(land["tokens"], direct.tokens, rtol=0, atol=0)
    assert torch.equal(land["token_frame"], direct.token_frame) and torch.equal(land["token_is_pad"], direct.token_is_pad)
    portrait = load_features(out, "sub/portrait.mp4")
    assert portrait["metadata"]["height"] == 64 and portrait["metadata"]["width"] == 40
    assert load_features(out, "alpha.mov")["features"].shape[0] == 3  # 5 frames at 8 fps = 0.625 s at 4 Hz
    assert load_features(store, "gray.mkv")["features"].isfinite().all()

    dataset = FeatureDataset(out)
    assert len(dataset) == 5 and dataset[0]["video"] == "alpha.mov" and dataset[0]["features"].shape == (3, 64)

    # Rerun: the five done videos are skipped, the broken one is tried again; a changed source is redone.
    again = extract_features(folder, out, encoder=encoder, model_id="tiny", frequency=FREQ, save_tokens=True, progress=False)
    assert (again.ok, again.failed, again.skipped) == (0, 1, 5)
    gray = made["gray.mkv"]
    write_timed(gray, marker_frames(8), [i * 125 for i in range(8)])
    third = extract_features(folder, out, encoder=encoder, model_id="tiny", frequency=FREQ, save_tokens=True, progress=False)
    assert (third.ok, third.failed, third.skipped) == (1, 1, 4)
    assert load_features(out, "gray.mkv")["features"].shape[0] == 4  # frames up to 0.875 s at 4 Hz
    assert not list(store.rglob(".*.tmp"))

    # Another config goes to its own folder and never mixes with this one.
    other = extract_features(folder, out, encoder=encoder, model_id="tiny", frequency=2.0, progress=False)
    assert other.folder != store and other.ok == 5
    with pytest.raises(ValueError, match="holds 2 extraction configs"):
        load_features(out, "gray.mkv")
    assert load_features(out, "gray.mkv", config_hash=other.folder.name)["features"].shape[0] == 2


def test_strict_stops_at_the_first_failure(videos, tmp_path, encoder):
    folder, made = videos
    with pytest.raises(RuntimeError, match="broken.mp4.*--strict"):
        extract_features([made["broken.mp4"], made["gray.mkv"]], tmp_path, encoder=encoder, model_id="tiny",
                         strict=True, progress=False)


def test_tiny_and_missing_videos_fail_with_a_reason_odd_sizes_work(tmp_path, encoder):
    write_timed(tmp_path / "tiny.mkv", marker_frames(3, height=6, width=6), [0, 100, 200])
    write_timed(tmp_path / "odd.mkv", marker_frames(3, height=21, width=37), [0, 250, 500])
    listing = tmp_path / "list.txt"
    listing.write_text("tiny.mkv\nmissing.mp4\nodd.mkv\n")
    summary = extract_features(listing, tmp_path / "out", encoder=encoder, model_id="tiny", progress=False)
    assert summary.ok == 1 and load_features(tmp_path / "out", "odd.mkv")["metadata"]["width"] == 37
    reasons = {r["video"]: r["reason"] for r in summary.failures}
    assert set(reasons) == {"tiny.mkv", "missing.mp4"}
    assert "6x6" in reasons["tiny.mkv"] or "6 x 6" in reasons["tiny.mkv"], reasons["tiny.mkv"]
    assert "no video file" in reasons["missing.mp4"]


def test_cli_checks_output_and_inputs_before_loading_models(videos, tmp_path, capsys):
    """The models named here do not exist: the cheap checks must fail first, with their own message."""
    from autogaze_fast.cli.main import main

    folder, _ = videos
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["extract", str(folder), "--out", str(blocker), "--model", str(tmp_path / "none")]) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err
    assert main(["extract", str(tmp_path / "absent"), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "none")]) == 2
    assert "no such folder, list file" in capsys.readouterr().err
    assert main(["extract", str(folder), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "--allow-random" in err and "none" in err


def test_encoder_tiles_equal_each_tile_gazed_and_encoded_alone(checkpoints, torch_twins):
    """AnyRes tiles (300x500 → 2 x 3 tiles of 224): every tile's tokens are what gazing and encoding that
    tile's pixels alone gives; the frame's pooled feature averages all its tiles' real tokens; each real
    token's box is one of the model's gazed cells of that frame."""
    from autogaze_fast import AutoGaze, SiglipVisionModel
    from autogaze_fast.tiling.grid import TileGrid

    gaze_dir, vision_dir = checkpoints
    encoder = GazedVideoEncoder.from_pretrained(gaze_dir, vision_dir, impl="fast", device="cpu", num_frames=4,
                                                gazing_ratio=0.1, task_loss_requirement=None, tiles="anyres",
                                                tile_batch_size=4)
    frames = synthetic_clip(2, size=(300, 500), seed=4)
    out = encoder(frames)
    grid = TileGrid.plan(300, 500, policy="anyres")
    assert (grid.rows, grid.cols) == (2, 3)
    model = AutoGaze.from_pretrained(gaze_dir, impl="fast")
    siglip = SiglipVisionModel.from_pretrained(vision_dir, impl="fast")
    gaze_tiles = grid.cut(grid.prepare(frames, encoder.gaze_processor))
    vision_tiles = grid.cut(grid.prepare(frames, encoder.vision_processor))
    pooled_sum, count = torch.zeros(2, 64), torch.zeros(2)
    for k in range(grid.n_tiles):
        with torch.inference_mode():
            gaze = model({"video": gaze_tiles[k:k + 1]}, gazing_ratio=0.1, generate_only=True)
            tokens = siglip(vision_tiles[k:k + 1], gazing_info=gaze).last_hidden_state[0]
        real = ~gaze["if_padded_gazing"][0]
        mine = (out.token_tile == k) & ~out.token_is_pad
        torch.testing.assert_close(out.tokens[mine], tokens[real], rtol=1e-5, atol=1e-5)
        frame = torch.arange(2).repeat_interleave(gaze["num_gazing_each_frame"])[real]
        pooled_sum.index_add_(0, frame, tokens[real])
        count += torch.bincount(frame, minlength=2)
    torch.testing.assert_close(out.pooled, pooled_sum / count[:, None], rtol=1e-5, atol=1e-5)
    cells = out.gaze[0]["cells"]
    real = ~out.token_is_pad
    assert sorted(map(tuple, torch.cat([out.token_frame[real, None].float(), out.token_box[real]], 1).tolist())) == \
        sorted(map(tuple, torch.cat([cells.frame[:, None].float(), cells.box], 1).tolist()))
    assert (out.token_box[real, 2] <= 500).all() and (out.token_box[real, 3] <= 300).all()


def test_cli_extract_with_anyres_tiles(checkpoints, tmp_path, torch_twins, capsys):
    from autogaze_fast.cli.main import main

    gaze_dir, vision_dir = checkpoints
    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "wide.mp4", synthetic_clip(8, size=(300, 500), seed=6), fps=8)
    code = main(["extract", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", str(gaze_dir), "--vision",
                 str(vision_dir), "--tiles", "anyres", "--tile-batch-size", "4", "--gazing-ratio", "0.1",
                 "--frequency", "2", "--save-tokens", "--quiet"])
    assert code == 0, capsys.readouterr()
    item = load_features(tmp_path / "out", "wide.mp4")
    assert item["metadata"]["config"]["tiles"] == "anyres" and item["features"].shape == (2, 64)
    real = ~item["token_is_pad"]
    assert set(item["token_tile"][real].tolist()) == set(range(6))
    assert (item["token_box"][real, 2] <= 500).all() and (item["token_box"][real, 3] <= 300).all()
    assert (item["token_box"][real, :2] >= 0).all()
