"""``task.recon_preset`` (seeded random MAEs beside ``model.preset``) and ``train --print-config`` on an
unfinished config (defaults printed, unset required fields marked, exit 0)."""

from __future__ import annotations

import json

import pytest
import torch

from autogaze_fast.cli.main import main
from autogaze_fast.config import ConfigError
from autogaze_fast.train.config import RECON_PRESETS, TrainConfig, load_config
from autogaze_fast.train.mae.model import GazedMAE
from autogaze_fast.train.mae.presets import (
    MAE_PRESETS,
    preset_mae_config,
    preset_mae_processor,
    random_mae,
    sincos_position_table,
)
from autogaze_fast.train.mae.task import MAEReconstructionTask

BASE = ["model.preset=nvidia", "data.root=somewhere"]


def test_config_names_the_same_presets_as_the_library():
    assert sorted(RECON_PRESETS) == sorted(MAE_PRESETS)


@pytest.mark.parametrize("overrides, message", [
    (["task.recon_model=dir", "task.recon_preset=tiny"], "at most one of task.recon_model"),
    (["task.recon_preset=huge"], "task.recon_preset must be one of \\['tiny', 'videomae-shape'\\]"),
    (["task.recon_preset=tiny", "task.task_weights=videomae.pt"], "task.task_weights needs task.recon_model"),
    ([], "needs task.recon_model.*or task.recon_preset=tiny\\|videomae-shape"),
])
def test_recon_preset_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [*BASE, "algorithm.name=grpo", *overrides])


def test_grpo_with_a_preset_validates():
    cfg = load_config(None, [*BASE, "algorithm.name=grpo", "task.recon_preset=tiny"])
    assert cfg.task.recon_preset == "tiny" and cfg.task.recon_model is None


def test_random_mae_is_seeded_and_has_the_preset_shape():
    a, b, c = (random_mae("tiny", seed, scales="32+64+112+224") for seed in (0, 0, 1))
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), key
    changed = [k for k, x in a.state_dict().items() if not torch.equal(x, c.state_dict()[k])]
    assert "decoder.decoder_pred.weight" in changed and "vit.embeddings.position_embeddings" not in changed
    assert a.config.hidden_size == 32 and a.config.tokens_per_frame == 265 and not a.training
    state = a.state_dict()
    assert torch.equal(state["vit.encoder.layer.0.layernorm_before.weight"], torch.ones(32))
    assert torch.equal(state["decoder.decoder_layers.1.output.dense.bias"], torch.zeros(32))
    assert 0.015 < float(state["decoder.decoder_pred.weight"].std()) < 0.025
    large = preset_mae_config("videomae-shape", scales="224")  # facebook/vit-mae-large's shape (not built here)
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads, large.intermediate_size) == \
        (1024, 24, 16, 4096)
    assert (large.decoder_hidden_size, large.decoder_num_hidden_layers, large.decoder_num_attention_heads) == (512, 8, 16)
    with pytest.raises(ConfigError, match="unknown MAE preset 'big'"):
        random_mae("big")


def test_sincos_position_table():
    table = sincos_position_table(8, 3)  # 8 channels: 2 frequencies x (sin, cos) for column, then for row
    assert table.shape == (10, 8) and torch.equal(table[0], torch.zeros(8))
    omega = torch.tensor([1.0, 1 / 100.0])
    for r in range(3):
        for c in range(3):
            want = torch.cat([torch.sin(c * omega), torch.cos(c * omega), torch.sin(r * omega), torch.cos(r * omega)])
            torch.testing.assert_close(table[1 + r * 3 + c], want)


def test_task_from_preset_runs_a_gazed_reconstruction(torch_twins):
    task = MAEReconstructionTask.from_preset("tiny", scales="32+64", seed=0, max_num_frames=4)
    assert isinstance(task.mae, GazedMAE) and task.mae.config.tokens_per_frame == 4 + 16
    video = preset_mae_processor(64)(torch.randint(0, 256, (2, 80, 96, 3), dtype=torch.uint8).numpy()).pixel_values
    assert tuple(video.shape) == (2, 3, 64, 64)
    pos = torch.tensor([[0, 3, 7, 20, 25, -1]])
    gaze = {"gazing_pos": pos, "if_padded_gazing": pos < 0, "num_gazing_each_frame": torch.tensor([3, 3])}
    out = task(video[None], gaze, torch.tensor([1]))
    assert out.frame_losses.shape == (1, 1) and torch.isfinite(out.frame_losses).all()


def test_print_config_shows_defaults_and_marks_required_fields(capsys):
    assert main(["train", "--print-config"]) == 0
    captured = capsys.readouterr()
    shown = json.loads(captured.out)
    defaults = TrainConfig().to_dict()
    assert shown["optim"] == defaults["optim"] and shown["run"] == defaults["run"]
    assert shown["model"]["checkpoint"].startswith("<required") and shown["model"]["preset"].startswith("<required")
    assert shown["data"]["root"].startswith("<required")
    assert "task.recon_preset" in shown["task"]["recon_model"]  # GRPO (the default) needs one of the two
    assert "cannot run yet" in captured.err
    assert main(["train", "--print-config", "algorithm.name=ntp", "model.preset=nvidia", "data.root=d"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["data"]["labels"] == "<required: by algorithm.name=ntp>" and shown["model"]["preset"] == "nvidia"
    assert shown["task"]["recon_model"] is None  # NTP needs no MAE
    assert main(["train", "--print-config", "optim.lrr=1"]) == 2  # a typo still stops it
    assert "did you mean 'optim.lr'" in capsys.readouterr().err


def test_print_config_of_a_runnable_config_marks_nothing(capsys):
    assert main(["train", "--print-config", *BASE, "algorithm.name=grpo", "task.recon_preset=tiny"]) == 0
    captured = capsys.readouterr()
    assert "<required" not in captured.out and captured.err == ""
