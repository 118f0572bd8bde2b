"""The fast gaze model on plain CPU (torch paths, no interpreter) never imports Triton, whose import
alone costs about 70 MB of resident memory (it counts against the bounded-memory AnyRes runs)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import sys
import torch
from autogaze_fast.presets import random_autogaze

model = random_autogaze(0, impl="fast")
video = torch.randn(1, 2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
with torch.inference_mode():  # greedy generation
    model.eval()({"video": video}, generate_only=True, gazing_ratio=0.1)
model.train()  # sampled generation, then the teacher-forced forward + backward of training
out = model({"video": video}, gazing_ratio=0.1, generator=torch.Generator().manual_seed(1))
out["log_action_probs"].sum().backward()
loaded = sorted(name for name in sys.modules if name == "triton" or name.startswith("triton."))
print("TRITON_MODULES", loaded)
"""


def test_fast_gaze_on_cpu_does_not_import_triton():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_INTERPRET="0", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "TRITON_MODULES []" in run.stdout, run.stdout[-2000:]
