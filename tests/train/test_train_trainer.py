"""The trainer in one process: config (YAML/JSON, overrides, typos), data (clips, labels, bad input),
the step-indexed data order, schedules, checkpoints, and tiny end-to-end NTP and GRPO runs.

Runs on the fast path's CPU torch twins (``torch_twins``), tiny models (tiny_k10 gaze model, the tiny
upstream MAE), 2-frame clips of 48 × 48 videos.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")

from train_runs import CLIP_LEN, GAZE, N, grpo_args, label_for, make_dataset, ntp_args

from autogaze_fast import AutoGaze
from autogaze_fast.cli.main import main as cli_main
from autogaze_fast.config import ConfigError
from autogaze_fast.presets import NVIDIA_PREPROCESSING
from autogaze_fast.processing.autogaze import AutoGazeImageProcessor
from autogaze_fast.train.checkpoint import find_checkpoint, list_checkpoints
from autogaze_fast.train.config import load_config
from autogaze_fast.train.data import (
    ClipDataset,
    GazeLabel,
    StepBatchSampler,
    collate_clips,
    list_split_videos,
    load_labels,
    sample_frame_indices,
)
from autogaze_fast.train.metrics import read_metrics
from autogaze_fast.train.trainer import lr_factor, scheduled_temperature, train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("train-data"))


def _params(path) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in AutoGaze.from_pretrained(path, impl="reference").state_dict().items()}


# ---------------------------------------------------------------------- config
def test_config_yaml_file_then_overrides_win(tmp_path, dataset):
    root, labels = dataset
    path = tmp_path / "cfg.yaml"
    path.write_text(f"model:\n  preset: nvidia\ndata:\n  root: {root}\n  labels: {labels}\n"
                    "algorithm:\n  name: ntp\noptim:\n  lr: 1.0e-3\n  betas: [0.8, 0.95]\n")
    cfg = load_config(path, ["optim.lr=2e-4", "run.tensorboard=false", "model.task_loss_requirement=null"])
    assert cfg.optim.lr == 2e-4 and cfg.optim.betas == (0.8, 0.95) and cfg.run.tensorboard is False
    assert cfg.model.preset == "nvidia" and cfg.model.task_loss_requirement is None
    as_json = tmp_path / "cfg.json"
    as_json.write_text(json.dumps(cfg.to_dict()))
    assert load_config(as_json).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("override, field, suggestion", [
    ("optim.lrr=1e-3", "optim.lrr", "optim.lr"),
    ("optm.lr=1e-3", "optm", "optim"),
    ("run.keep_lats=3", "run.keep_lats", "run.keep_last"),
    ("algorithm.group_sise=4", "algorithm.group_sise", "algorithm.group_size"),
])
def test_config_typo_names_the_field_and_the_closest_valid_one(dataset, override, field, suggestion):
    root, labels = dataset
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.preset=nvidia", f"data.root={root}", f"data.labels={labels}", "algorithm.name=ntp",
                           override])
    assert f"'{field}'" in str(err.value) and f"did you mean '{suggestion}'" in str(err.value)


@pytest.mark.parametrize("overrides, message", [
    (["optim.lr=fast"], "optim.lr must be a number"),
    (["optim.steps=1.5"], "optim.steps must be an integer"),
    (["run.progress=maybe"], "run.progress must be true or false"),
    (["algorithm.name=ppo"], "algorithm.name must be one of"),
    (["model.checkpoint=x"], "exactly one of model.checkpoint"),
    (["data.labels=null"], "needs data.labels"),
    (["optim.lr"], "must look like section.field=value"),
])
def test_config_bad_values_are_clear_errors(dataset, overrides, message):
    root, labels = dataset
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["model.preset=nvidia", f"data.root={root}", f"data.labels={labels}", "algorithm.name=ntp",
                           *overrides])


def test_config_global_batch_must_split_over_ranks_and_micro_batches(dataset):
    root, labels = dataset
    cfg = load_config(None, ntp_args(root, labels, Path("x")) + ["optim.global_batch=6", "optim.micro_batch=2"])
    assert cfg.batch_plan(1) == (3, 6)
    assert cfg.batch_plan(3) == (1, 2)
    with pytest.raises(ConfigError, match="multiple of world_size"):
        cfg.batch_plan(2)


def test_cli_typo_exits_with_the_suggestion(tmp_path, dataset, capsys):
    root, labels = dataset
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"checkpoint": str(GAZE)}, "data": {"root": str(root), "labels": str(labels)},
                               "algorithm": {"name": "ntp"}}))
    assert cli_main(["train", "--config", str(cfg), "optim.warmup_step=3"]) == 2
    err = capsys.readouterr().err
    assert "autogaze-fast train: error: unknown config field 'optim.warmup_step'" in err
    assert "did you mean 'optim.warmup_steps'" in err
    assert cli_main(["train", "--config", str(cfg), "--print-config", "optim.warmup_steps=3"]) == 0
    assert json.loads(capsys.readouterr().out)["optim"]["warmup_steps"] == 3


# ---------------------------------------------------------------------- schedules
def test_lr_and_temperature_schedules():
    # warm-up 0.5, 1.0 over 2 steps, then cosine from 1 to 0.1 over the 8 remaining steps
    assert lr_factor(0, 10, 2, "cosine", 0.1) == pytest.approx(0.5)
    assert lr_factor(1, 10, 2, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(2, 10, 2, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(10, 10, 2, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(6, 10, 2, "linear", 0.0) == pytest.approx(0.5)
    assert lr_factor(9, 10, 2, "constant", 0.0) == 1.0
    assert scheduled_temperature(0, 10, 3.0, 0.3) == pytest.approx(3.0)
    assert scheduled_temperature(5, 10, 3.0, 0.3) == pytest.approx(3.0 * 0.1 ** 0.5)
    assert scheduled_temperature(10, 10, 3.0, 0.3) == pytest.approx(0.3)


# ---------------------------------------------------------------------- data
def test_sample_frame_indices_follow_upstream():
    assert sample_frame_indices(4, 2, 20).tolist() == [0, 2, 5, 7]  # linspace(0, 8, 4) clipped to 7
    assert sample_frame_indices(5, 1, 3).tolist() == [0, 1, 2, 2, 2]  # short video: last frame repeated
    rng = np.random.default_rng(0)
    idx = sample_frame_indices(4, 1, 30, rng)
    assert idx[-1] - idx[0] == 3 and 0 <= idx[0] and idx[-1] < 30


def test_collate_pads_labels_like_upstream():
    labels = [GazeLabel(((1, 2), (N + 5,)), ((0.5, 0.4), (0.3,))),
              GazeLabel(((3,), (N + 7, N + 8, N + 9)), ((0.9,), (0.1, 0.2, 0.6)))]
    video = torch.zeros(CLIP_LEN, 3, 8, 8)
    out = collate_clips([{"video": video, "index": i, "video_id": f"v{i}", "label": lab} for i, lab in enumerate(labels)])
    # frame 0: longest 2 → 3 slots; frame 1: longest 3 → 4 slots; pads -1, losses padded with the frame's last
    assert out["labels"]["num_gazing_each_frame"].tolist() == [3, 4]
    assert out["labels"]["gazing_pos"].tolist() == [[1, 2, -1, N + 5, -1, -1, -1], [3, -1, -1, N + 7, N + 8, N + 9, -1]]
    assert out["labels"]["if_padded_gazing"].tolist() == [[p == -1 for p in row] for row in out["labels"]["gazing_pos"].tolist()]
    torch.testing.assert_close(out["labels"]["task_losses"], torch.tensor(
        [[0.5, 0.4, 0.4, 0.3, 0.3, 0.3, 0.3], [0.9, 0.9, 0.9, 0.1, 0.2, 0.6, 0.6]]))
    assert out["video"].shape == (2, CLIP_LEN, 3, 8, 8)


def _processor(side: int = 32) -> AutoGazeImageProcessor:
    return AutoGazeImageProcessor.from_dict(NVIDIA_PREPROCESSING, size={"shortest_edge": side}, do_center_crop=True,
                                            crop_size={"height": side, "width": side})


def test_dataset_reads_clips_and_labels(dataset):
    root, labels = dataset
    videos = list_split_videos(str(root), "train")
    ds = ClipDataset(videos, _processor(), clip_len=CLIP_LEN, labels=load_labels(str(labels), CLIP_LEN, N))
    item = ds[(2, 0)]
    assert item["video"].shape == (CLIP_LEN, 3, 32, 32) and item["video_id"] == "ds/train/v2.mp4"
    assert [list(f) for f in item["label"].gazing_pos] == label_for(2)["gazing_pos"]


def test_missing_folders_are_clear_errors(tmp_path, dataset):
    root, _ = dataset
    with pytest.raises(FileNotFoundError, match="no dataset folder at"):
        list_split_videos(str(tmp_path / "nowhere"), "train")
    (tmp_path / "only_train" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has no 'val/' folder"):
        list_split_videos(f"{root},{tmp_path / 'only_train'}", "val")


def test_labels_for_absent_videos_are_logged_and_ignored(tmp_path, dataset, caplog):
    root, _ = dataset
    labels = {f"ds/train/v{i}.mp4": label_for(i) for i in (0, 1)}
    labels["ds/train/gone.mp4"] = label_for(9)
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(labels))
    with caplog.at_level(logging.WARNING, logger="autogaze_fast.train"):
        ds = ClipDataset(list_split_videos(str(root), "train"), _processor(), clip_len=CLIP_LEN,
                         labels=load_labels(str(path), CLIP_LEN, N))
    assert [v.name for v in ds.videos] == ["v0.mp4", "v1.mp4"]  # unlabelled v2, v3 left out, as upstream
    assert "1 gazing labels name videos absent from the train split" in caplog.text and "gone.mp4" in caplog.text
    assert "2 of 4 train videos have no gazing label" in caplog.text


def test_labels_naming_no_video_or_malformed_fail_at_start(tmp_path, dataset):
    root, _ = dataset
    videos = list_split_videos(str(root), "train")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"elsewhere/train/x.mp4": label_for(0)}))
    with pytest.raises(ValueError, match="none of the 1 gazing labels names a video of the 'train' split"):
        ClipDataset(videos, _processor(), clip_len=CLIP_LEN, labels=load_labels(str(other), CLIP_LEN, N))
    per_frame = tmp_path / "per_frame.json"  # frame 1's positions not offset by N: not whole-clip positions
    per_frame.write_text(json.dumps({"ds/train/v0.mp4": {"gazing_pos": [[1], [2]], "task_losses": [[0.1], [0.2]]}}))
    with pytest.raises(ValueError, match=r"frame 1 of 'ds/train/v0.mp4' has positions \[2\] outside \[265, 530\)"):
        load_labels(str(per_frame), CLIP_LEN, N)
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"ds/train/v0.mp4": {"gazing_pos": [[1]], "task_losses": [[0.1]]}}))
    with pytest.raises(ValueError, match="must hold 2 per-frame position lists"):
        load_labels(str(short), CLIP_LEN, N)
    with pytest.raises(FileNotFoundError, match="no gazing labels file"):
        load_labels(str(tmp_path / "missing.json"), CLIP_LEN, N)


def test_corrupt_video_is_a_logged_skip(tmp_path, dataset, caplog):
    root, _ = dataset
    videos = list_split_videos(str(root), "train")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all " * 50)
    with caplog.at_level(logging.WARNING, logger="autogaze_fast.train"):
        ds = ClipDataset([videos[0], broken, videos[1]], _processor(), clip_len=CLIP_LEN)  # header check at start
    assert ds.videos == [videos[0], videos[1]] and "skipping unreadable train video" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="autogaze_fast.train"):  # found only when decoded
        late = ClipDataset([videos[0], broken, videos[1]], _processor(), clip_len=CLIP_LEN, check_videos=False)
        item = late[(1, 0)]
    assert item["index"] == 2 and item["video_id"] == "ds/train/v1.mp4"
    assert "decoding failed" in caplog.text and "broken.mp4" in caplog.text


def test_step_sampler_one_process_sees_what_two_ranks_see_and_resumes_in_place():
    single = list(StepBatchSampler(10, 4, 2, seed=3, num_steps=5))
    ranks = [list(StepBatchSampler(10, 4, 2, rank=r, world=2, seed=3, num_steps=5)) for r in range(2)]
    assert len(single) == 10 and all(len(r) == 5 for r in ranks)
    for step in range(5):  # micro-batch k of the single process = rank k's micro-batch
        assert single[2 * step] == ranks[0][step] and single[2 * step + 1] == ranks[1][step]
    assert list(StepBatchSampler(10, 4, 2, seed=3, start_step=3, num_steps=2)) == single[6:]
    epoch0 = [i for mb in single[:4] for i, e in mb]  # 2 steps per epoch (10 // 4), no repeat within an epoch
    assert len(set(epoch0)) == 8 and {e for mb in single[4:] for _, e in mb} <= {1, 2}


# ---------------------------------------------------------------------- end to end
def test_ntp_two_steps_end_to_end(torch_twins, tmp_path, dataset):
    root, labels = dataset
    out = tmp_path / "ntp"
    summary = train(load_config(None, ntp_args(root, labels, out, steps=2) + ["run.save_every=1", "run.keep_last=1"]))
    records = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["ntp_loss"] > 0 and r["task_loss_prediction_loss"] > 0 for r in records)
    assert records[0]["lr"] == pytest.approx(5e-4 * 1.0) and records[1]["lr"] == pytest.approx(5e-4 * 1.0)
    assert [s for s, _ in list_checkpoints(out)] == [2]  # keep_last=1 removed step 1
    before, after = _params(GAZE), _params(out / "checkpoints" / "step_00000002")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before), f"unchanged: {sorted(set(before) - set(changed))}"
    assert summary.step == 2 and (out / "checkpoints" / "step_00000002" / "preprocessor_config.json").is_file()


def test_grpo_two_steps_end_to_end_with_validation(torch_twins, tmp_path, dataset):
    root, _ = dataset
    out = tmp_path / "grpo"
    train(load_config(None, grpo_args(root, out, steps=2) + ["run.val_every=2", "run.val_batches=1"]))
    records = read_metrics(out / "metrics.jsonl")
    steps = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in steps] == [1, 2] and [r["step"] for r in val] == [2]
    for r in steps:
        assert all(math.isfinite(r[k]) for k in ("loss", "grpo_loss", "reconstruction_loss", "grad_norm"))
        assert r["reward"] == pytest.approx(-r["reconstruction_loss"]) and r["grad_norm"] > 0
        assert r["time_rollout"] > 0 and r["time_task"] > 0
    assert math.isfinite(val[0]["reconstruction_loss"]) and 0 < val[0]["gazing_ratio"] <= 0.1
    before, after = _params(GAZE), _params(out / "checkpoints" / "step_00000002")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # a finished run resumes to nothing; a checkpoint path that is not one is a clear error
    assert train(load_config(None, grpo_args(root, out, steps=2))).step == 2
    with pytest.raises(FileNotFoundError, match="not a training checkpoint"):
        find_checkpoint(out, str(tmp_path))


def test_stale_partial_checkpoint_is_ignored_and_cleared(torch_twins, tmp_path, dataset):
    root, labels = dataset
    out = tmp_path / "ntp"
    stale = out / "checkpoints" / ".step_00000001.abc.tmp"  # what a kill mid-write leaves
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    assert list_checkpoints(out) == [] and find_checkpoint(out, "auto") is None
    train(load_config(None, ntp_args(root, labels, out, steps=1)))
    assert not stale.exists() and [s for s, _ in list_checkpoints(out)] == [1]


# ---------------------------------------------------------------------- README "Training"
def _training_section() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return text.split("## Training\n", 1)[1].split("\n## ", 1)[0]


def test_readme_training_commands_and_yaml_resolve(tmp_path, capsys):
    import re
    import shlex

    section = _training_section()
    bash = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    commands = [line for line in bash.splitlines() if "-m autogaze_fast train" in line]
    assert len(commands) == 2 and all(line.startswith("torchrun --nproc-per-node=") for line in commands)
    names = []
    for line in commands:  # every field exists and every value parses: the run would start
        args = shlex.split(line.split("-m autogaze_fast ", 1)[1])
        assert cli_main([*args, "--print-config"]) == 0
        captured = capsys.readouterr()
        assert "cannot run yet" not in captured.err, captured.err  # --print-config says when it would not start
        names.append(json.loads(captured.out)["algorithm"]["name"])
    assert names == ["ntp", "grpo"]
    yaml_block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    (tmp_path / "run.yaml").write_text(yaml_block)
    cfg = load_config(tmp_path / "run.yaml")
    assert cfg.algorithm.name == "ntp" and cfg.optim.warmup_steps == 500


def test_readme_training_table_lists_every_config_field():
    import dataclasses
    import re

    from autogaze_fast.train.config import TrainConfig

    rows = [line for line in _training_section().splitlines() if line.startswith("| `")]
    listed = set(re.findall(r"`([a-z]+\.[a-z0-9_]+)`", " ".join(row.split(" | ")[0] for row in rows)))
    fields = {f"{section.name}.{f.name}" for section in dataclasses.fields(TrainConfig)
              for f in dataclasses.fields(section.type if isinstance(section.type, type) else
                                          getattr(TrainConfig(), section.name))}
    assert listed == fields
