"""README "Train on a laptop": its three commands, taken from the README as written, run end to end.

make-training-data → NTP from the NVIDIA-shaped preset → GRPO from the NTP checkpoint against
``task.recon_preset=tiny``. Checked: the dataset and labels load, the NTP checkpoint is written and
loads, GRPO starts from it (the task-loss head, which NTP trains and this GRPO run does not, is the
NTP checkpoint's bit for bit and not the preset's) and writes its own checkpoint, which
``AutoGaze.from_pretrained`` loads.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

import pytest
import torch

from autogaze_fast import AutoGaze
from autogaze_fast.cli.main import main as cli_main
from autogaze_fast.presets import random_autogaze
from autogaze_fast.train.data import load_labels
from autogaze_fast.train.metrics import read_metrics

README = Path(__file__).resolve().parents[2] / "README.md"
HEAD = "gazing_model.gaze_decoder.task_loss_prediction_head.weight"


def laptop_commands() -> list[list[str]]:
    """The README section's bash lines (continuations joined), each as argv after ``autogaze-fast``."""
    section = README.read_text().split("## Train on a laptop\n", 1)[1].split("\n## ", 1)[0]
    bash = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    lines = [line.strip() for line in bash.splitlines() if line.strip()]
    assert all(line.startswith("autogaze-fast ") for line in lines), lines
    return [shlex.split(line)[1:] for line in lines]


def _arg(argv: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith(f"{name}="))


def test_readme_laptop_commands_run_end_to_end(tmp_path, monkeypatch, torch_twins, capsys):
    pytest.importorskip("av")
    monkeypatch.chdir(tmp_path)
    make, ntp, grpo = laptop_commands()
    assert [make[0], ntp[0], grpo[0]] == ["make-training-data", "train", "train"]
    assert _arg(ntp, "algorithm.name") == "ntp" and _arg(grpo, "algorithm.name") == "grpo"
    assert _arg(grpo, "task.recon_preset") == "tiny"

    start = time.perf_counter()
    assert cli_main(make) == 0
    labels = load_labels(_arg(ntp, "data.labels"), int(_arg(ntp, "data.clip_len")), 265)
    assert len(labels) == 8 and all(len(lab.gazing_pos) == 4 for lab in labels.values())

    assert cli_main(ntp) == 0, capsys.readouterr().err
    ntp_ckpt = Path(_arg(grpo, "model.checkpoint"))
    assert ntp_ckpt.parent.parent == Path(_arg(ntp, "run.out_dir"))  # GRPO points at the NTP run's checkpoint
    assert (ntp_ckpt / "config.json").is_file() and (ntp_ckpt / "model.safetensors").is_file()
    ntp_state = AutoGaze.from_pretrained(ntp_ckpt, impl="reference").state_dict()

    assert cli_main(grpo) == 0, capsys.readouterr().err
    seconds = time.perf_counter() - start
    grpo_dir = Path(_arg(grpo, "run.out_dir"))
    assert json.loads((grpo_dir / "train_config.json").read_text())["model"]["checkpoint"] == str(ntp_ckpt)
    steps = int(_arg(grpo, "optim.steps"))
    grpo_ckpt = grpo_dir / "checkpoints" / f"step_{steps:08d}"
    grpo_state = AutoGaze.from_pretrained(grpo_ckpt, impl="reference").state_dict()

    preset = random_autogaze(0, impl="reference").state_dict()
    assert not torch.equal(ntp_state[HEAD], preset[HEAD])  # NTP trained the task-loss head ...
    assert torch.equal(grpo_state[HEAD], ntp_state[HEAD])  # ... GRPO started from it and left it alone
    changed = [k for k in ntp_state if not torch.equal(ntp_state[k], grpo_state[k])]
    assert changed  # and GRPO did update the policy
    rows = [r for r in read_metrics(grpo_dir / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert all(r["reward"] == pytest.approx(-r["reconstruction_loss"], rel=1e-5) for r in rows)
    assert seconds < 300, f"the README promises well under five minutes; took {seconds:.0f} s"
