"""Issue 24 in one process: clip batches across videos and decode workers give batch 1's files
(bitwise), a batched gaze row re-laid out equals the clip gazed alone, the torchcodec flag, and the
rough edges a new user meets (lone image / notes file, empty folder, config summary and ``--list``,
padding collate, Ctrl-C, a source rewritten at the same size).

Models: the upstream fixture models (tiny_k10, tiny_k1, tiny_siglip) and the seeded NVIDIA-shaped
gaze model; every video is generated here.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("av")

from extract_videos import dataset_videos, marker_frames, tiny_checkpoints, write_timed
from safetensors.torch import load_file

from autogaze_fast.encoder import GazedVideoEncoder, batch_row
from autogaze_fast.extract import FeatureDataset, extract_features, list_videos, load_features, pad_collate
from autogaze_fast.extract.decode import resolve_decoder, sample_clips
from autogaze_fast.extract.store import read_jsonl, read_metadata
from autogaze_fast.media.decoders import torchcodec_problem
from autogaze_fast.media.synthetic import synthetic_clip
from autogaze_fast.media.video import write_video

FREQ = 4.0


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tiny_checkpoints(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return folder, dataset_videos(folder)


def _encoder(checkpoints, model="tiny_k10", **options):
    gaze, vision = checkpoints
    options.setdefault("gazing_ratio", 0.3)
    return GazedVideoEncoder.from_pretrained(gaze.parent / model, vision, impl="fast", device="cpu", num_frames=4, **options)


def _files(folder):
    """Every result file's tensors and metadata (the run-specific fields left out)."""
    out = {}
    for path in sorted(folder.rglob("*.safetensors")):
        meta = read_metadata(path)
        out[str(path.relative_to(folder))] = (load_file(str(path)), meta)
    return out


def _assert_same_files(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        (ta, ma), (tb, mb) = a[name], b[name]
        assert ma == mb, name
        assert sorted(ta) == sorted(tb), name
        for key in ta:
            assert ta[key].dtype == tb[key].dtype and torch.equal(ta[key], tb[key]), f"{name}: {key} differs"


# ---------------------------------------------------------------------------------------------- batches, workers
def test_batched_and_worker_runs_give_batch_1_files_bitwise(videos, tmp_path, checkpoints, torch_twins):
    """Six videos (a broken one among them; last clips shorter): batch 3 across videos, in-process and
    with two decode workers, write the same bytes' tensors and metadata as batch 1; the broken video
    fails with the same reason on every path."""
    folder, _ = videos
    encoder = _encoder(checkpoints)
    runs = {}
    for name, options in {"batch1": dict(batch_clips=1), "batch3": dict(batch_clips=3),
                          "batch3_workers2": dict(batch_clips=3, decode_workers=2)}.items():
        summary = extract_features(folder, tmp_path / name, encoder=encoder, model_id="tiny", frequency=FREQ,
                                   save_tokens=True, progress=False, **options)
        assert (summary.ok, summary.failed) == (5, 1), name
        assert summary.timings["gaze"] > 0 and summary.timings["vit"] > 0 and summary.timings["decode"] > 0
        assert "waiting for decode" in summary.time_line()
        runs[name] = summary
    reference = _files(runs["batch1"].folder)
    assert len(reference) == 5
    for name in ("batch3", "batch3_workers2"):
        assert runs[name].folder.name == runs["batch1"].folder.name  # batching is not part of the config
        _assert_same_files(_files(runs[name].folder), reference)
        reasons = {r["video"]: r["reason"] for r in runs[name].failures}
        assert reasons == {r["video"]: r["reason"] for r in runs["batch1"].failures}


def test_encoder_batch_clips_equals_each_clip_alone(checkpoints, torch_twins):
    """tiny_k10 at ratio 0.4 (212 tokens a 2-frame clip) and with the task-loss stop: batch 5 of clips of
    videos of three processed sizes equals batch 1, bitwise (a clip's size decides its batch)."""
    clips = [synthetic_clip(2, size=(48, 64), seed=s) for s in range(3)]
    clips += [np.random.default_rng(0).integers(0, 255, (2, 40, 56, 3), dtype=np.uint8), synthetic_clip(2, size=64)]
    for model, options in (("tiny_k10", dict(gazing_ratio=0.4)), ("tiny_k10", dict(task_loss_requirement=0.7))):
        encoder = _encoder(checkpoints, model, **options)
        prepared = [encoder.prepare_clip(c, first_frame=2 * i) for i, c in enumerate(clips)]
        single = encoder.encode_prepared(prepared)
        encoder.batch_clips = 5
        batched = encoder.encode_prepared(prepared)
        for a, b in zip(batched, single):
            for key in ("pooled", "tokens", "token_index", "token_is_pad", "num_gazed", "token_frame", "token_box"):
                assert torch.equal(getattr(a, key), getattr(b, key)), (model, key)
        video = np.concatenate(clips[:2] + clips[:1])  # one video of two clips: __call__ batches them too
        whole = encoder(video)
        encoder.batch_clips = 1
        assert torch.equal(whole.tokens, encoder(video).tokens)


def test_batched_gaze_row_is_the_clip_gazed_alone():
    """The NVIDIA-shaped gaze model (seeded) with the task-loss stop: rows stop at different steps, so
    the batch carries extra pad steps; ``batch_row`` gives each clip's gaze alone exactly."""
    from autogaze_fast.presets import random_autogaze

    model = random_autogaze(0, impl="reference").eval()
    video = torch.rand(4, 3, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    options = dict(gazing_ratio=0.5, task_loss_requirement=-0.6, generate_only=True)
    with torch.inference_mode():
        batched = model({"video": video}, **options)
        alone = [model({"video": video[b:b + 1]}, **options) for b in range(4)]
    lengths = {tuple(a["num_gazing_each_frame"].tolist()) for a in alone}
    assert len(lengths) > 1  # the rows do stop at different steps
    for b, want in enumerate(alone):
        got, _ = batch_row(batched, b, model.config.decoder.num_multi_token_pred)
        assert torch.equal(got["num_gazing_each_frame"], want["num_gazing_each_frame"])
        assert torch.equal(got["gazing_pos"], want["gazing_pos"])
        assert torch.equal(got["if_padded_gazing"].bool(), want["if_padded_gazing"].bool())


# ---------------------------------------------------------------------------------------------- torchcodec
def test_torchcodec_flag_says_why_when_it_cannot_run(tmp_path):
    assert resolve_decoder("pyav") == "pyav"
    with pytest.raises(ValueError, match="decoder must be one of"):
        resolve_decoder("decord")
    problem = torchcodec_problem()
    if problem is None:
        assert resolve_decoder("auto") == "torchcodec"
        return
    assert resolve_decoder("auto") == "pyav"
    with pytest.raises(ImportError, match="--decoder torchcodec cannot run here") as err:
        resolve_decoder("torchcodec")
    assert problem in str(err.value)


@pytest.mark.skipif(torchcodec_problem() is not None, reason=f"torchcodec unusable here: {torchcodec_problem()}")
def test_torchcodec_frames_equal_pyav_at_the_sampled_times(tmp_path):
    """Constant (8 fps H.264, sampled at 3 Hz and every frame) and variable frame rate (lossless markers):
    the same frames at the same times, within 1 level of colour.

    Measured (2026-12-02, CPU): torchcodec 0.13.0+cpu on Debian 12's FFmpeg 5.1 against PyAV 18.1 with
    its bundled FFmpeg 8 gave a max pixel difference of **0** (bitwise) on every case here, and on
    generated H.264 clips of 90x160, 224x224, 270x482, 360x640 and 1080p. The bound is that 0 plus a
    margin of 1 level, for other FFmpeg builds' YUV-to-RGB rounding.
    """
    from autogaze_fast.media.decoders import torchcodec_clips

    cfr = write_video(tmp_path / "cfr.mp4", synthetic_clip(40, size=(48, 64), seed=5), fps=8)
    vfr = write_timed(tmp_path / "vfr.mkv", marker_frames(8), [0, 100, 150, 400, 1000, 1100, 1500, 2100])
    for path, freq in ((cfr, 3.0), (cfr, None), (vfr, 10.0), (vfr, None)):
        want = list(sample_clips(path, freq, 5))
        got = list(torchcodec_clips(path, freq, 5)[0])
        np.testing.assert_allclose(np.concatenate([t for t, _ in got]), np.concatenate([t for t, _ in want]), atol=1e-6)
        diff = np.abs(np.concatenate([f for _, f in got]).astype(int) - np.concatenate([f for _, f in want]).astype(int))
        assert diff.max() <= 1, (path.name, freq, diff.max())  # measured 0; margin 1 for other FFmpeg builds


@pytest.mark.skipif(torchcodec_problem() is not None, reason=f"torchcodec unusable here: {torchcodec_problem()}")
def test_decoder_torchcodec_writes_the_pyav_files(videos, tmp_path, checkpoints, torch_twins):
    """End to end: ``extract --decoder torchcodec`` writes the same tensors, bitwise, and the same metadata
    as PyAV (the broken video fails on both), except the probed ``fps`` of the MKVs, which have no frame
    rate in their header: PyAV reports their 1 ms time base (1000), torchcodec frames / duration."""
    folder, _ = videos
    encoder = _encoder(checkpoints)
    runs = {name: extract_features(folder, tmp_path / name, encoder=encoder, model_id="tiny", frequency=FREQ,
                                   save_tokens=True, progress=False, decoder=name) for name in ("pyav", "torchcodec")}
    assert (runs["torchcodec"].ok, runs["torchcodec"].failed) == (runs["pyav"].ok, runs["pyav"].failed) == (5, 1)
    files = {name: _files(run.folder) for name, run in runs.items()}
    mkv = [name for name in files["pyav"] if ".mkv" in name]
    assert len(mkv) == 2
    for name in mkv:
        got, want = files["torchcodec"][name][1], files["pyav"][name][1]
        assert want["fps"] == 1000.0 and 0 < got["fps"] < 20, (name, got["fps"])
        got["fps"] = want["fps"]
    _assert_same_files(files["torchcodec"], files["pyav"])


# ---------------------------------------------------------------------------------------------- rough edges
def test_lone_image_and_a_notes_file_are_refused(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "frame.png")
    with pytest.raises(ValueError, match="still image, not a video"):
        list_videos(tmp_path / "frame.png")
    notes = tmp_path / "notes.txt"
    notes.write_text("remember to buy milk\nnot a video\n")
    with pytest.raises(ValueError, match="is read as a list of videos.*'remember to buy milk'"):
        list_videos(notes)
    (tmp_path / "list.txt").write_text("frame.png\n")
    with pytest.raises(ValueError, match="still image"):
        list_videos(tmp_path / "list.txt")


def test_empty_folder_is_an_error_not_a_silent_success(tmp_path, checkpoints, torch_twins, capsys):
    from autogaze_fast.cli.main import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no videos here")
    with pytest.raises(FileNotFoundError, match="no video found"):
        extract_features(tmp_path / "empty", tmp_path / "out", encoder=_encoder(checkpoints), model_id="x", progress=False)
    gaze, vision = checkpoints
    assert main(["extract", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--model", str(gaze),
                 "--vision", str(vision)]) == 2
    assert "no video found" in capsys.readouterr().err


def test_config_summary_list_and_the_two_configs_message(videos, tmp_path, checkpoints, torch_twins, capsys):
    from autogaze_fast.cli.main import main

    _, made = videos
    encoder = _encoder(checkpoints)
    sources = [made["gray.mkv"], made["alpha.mov"]]
    a = extract_features(sources, tmp_path, encoder=encoder, model_id="tiny", frequency=FREQ, progress=False)
    b = extract_features(sources, tmp_path, encoder=encoder, model_id="tiny", frequency=2.0, progress=False)
    summary = json.loads((a.folder / "config.json").read_text())["summary"]
    assert "4.0 Hz" in summary and "ratio 0.3" in summary and "4-frame clips" in summary and "model tiny" in summary
    assert main(["extract", "--list", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and {a.folder.name, b.folder.name} == {line.split()[0] for line in lines}
    assert any("2.0 Hz" in line and "2 videos" in line for line in lines)
    with pytest.raises(ValueError, match="pass config_hash= one of") as err:
        load_features(tmp_path, "gray.mkv")
    # the tiny checkpoint stops at the default task loss 0.7 (defaults.AUTO with trained weights)
    assert f"{a.folder.name}: gazed, ratio 0.3, stop at task loss 0.7, 4.0 Hz" in str(err.value)
    assert f"{b.folder.name}: gazed, ratio 0.3, stop at task loss 0.7, 2.0 Hz" in str(err.value)
    again = extract_features(sources, tmp_path, encoder=encoder, model_id="tiny", frequency=FREQ, progress=False)
    assert again.skipped == 2  # the summary line is not part of the config hash


def test_feature_loader_pads_videos_of_different_lengths(videos, tmp_path, checkpoints, torch_twins):
    _, made = videos
    extract_features([made["landscape.mp4"], made["alpha.mov"], made["gray.mkv"]], tmp_path, encoder=_encoder(checkpoints),
                     model_id="tiny", frequency=FREQ, progress=False)
    dataset = FeatureDataset(tmp_path)
    batches = list(dataset.loader(batch_size=2))
    assert [b["video"] for b in batches] == [["alpha.mov", "gray.mkv"], ["landscape.mp4"]]
    first = batches[0]
    lengths = [dataset[i]["features"].shape[0] for i in range(2)]
    assert first["length"].tolist() == lengths and first["features"].shape == (2, max(lengths), 64)
    assert first["mask"].tolist() == [[t < n for t in range(max(lengths))] for n in lengths]
    for i in range(2):
        item = dataset[i]
        assert torch.equal(first["features"][i, :lengths[i]], item["features"])
        assert not first["features"][i, lengths[i]:].any()
    assert torch.equal(pad_collate([dataset[2]])["features"][0], dataset[2]["features"])


def test_ctrl_c_says_how_to_resume_without_a_traceback(tmp_path, checkpoints, monkeypatch, capsys):
    from autogaze_fast.cli import extract as cli_extract
    from autogaze_fast.cli.main import main

    write_video(tmp_path / "v.mp4", synthetic_clip(8, size=32), fps=8)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_extract, "extract_features", interrupted)
    gaze, vision = checkpoints
    assert main(["extract", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "out"), "--model", str(gaze), "--vision",
                 str(vision), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "rerun the same command to resume" in err and "Traceback" not in err and len(err.splitlines()) <= 3


def test_a_source_rewritten_at_the_same_size_is_redone(tmp_path, checkpoints, torch_twins):
    """Only the mtime changes (same bytes, same size): the old result no longer counts as done."""
    (tmp_path / "in").mkdir()
    path = write_timed(tmp_path / "in" / "clip.mkv", marker_frames(6), [i * 125 for i in range(6)])
    encoder = _encoder(checkpoints)
    first = extract_features(path, tmp_path / "out", encoder=encoder, model_id="tiny", frequency=FREQ, progress=False)
    assert first.ok == 1
    again = extract_features(path, tmp_path / "out", encoder=encoder, model_id="tiny", frequency=FREQ, progress=False)
    assert (again.ok, again.skipped) == (0, 1)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert path.stat().st_size == stat.st_size
    redone = extract_features(path, tmp_path / "out", encoder=encoder, model_id="tiny", frequency=FREQ, progress=False)
    assert (redone.ok, redone.skipped) == (1, 0)
    records = list(read_jsonl(first.folder / "manifest.jsonl"))
    assert [r["status"] for r in records] == ["ok", "ok"]
