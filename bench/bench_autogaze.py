"""End-to-end gaze generation, reference vs fast, in one run: an NVIDIA-shaped model (hidden 192,
4 layers, 6 heads, K = 10, N = 265, seeded random weights) on a 16-frame 224×224 clip, with
``gazing_ratio=0.75`` and no stopping (198 tokens per frame), and with task-loss stopping.

Run: ``python -m pytest bench/bench_autogaze.py --benchmark-enable --benchmark-json=out.json``.
Peak memory of each case is measured in a fresh process (``memory_probe.py``) and stored in
``extra_info``.
"""

from __future__ import annotations

import os

import pytest
import torch
from memory_probe import measure

FRAMES = 16
# With these random weights the task-loss head predicts values around 0 (std ≈ 0.3); a threshold of
# -0.6 stops frames after a few dozen tokens, at different steps per frame.
STOP_REQUIREMENT = -0.6
CASES = {
    "ratio0.75": dict(gazing_ratio=0.75),
    "ratio0.75+stop": dict(gazing_ratio=0.75, task_loss_requirement=STOP_REQUIREMENT),
}


def setup(impl: str, case: str, device: str = "cuda" if torch.cuda.is_available() else "cpu"):
    """Build the model and clip; return the timed call (also used by the memory probe)."""
    from autogaze_fast.presets import random_autogaze

    model = random_autogaze(0, impl=impl).to(device)
    video = torch.randn(1, FRAMES, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    kwargs = CASES[case]

    def run():
        with torch.inference_mode():
            out = model({"video": video}, generate_only=True, **kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return run


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_gaze_generation(benchmark, impl, case):
    os.environ.setdefault("TRITON_INTERPRET", "0")
    benchmark.group = f"autogaze_e2e[{case}]"
    run = setup(impl, case)
    run()  # warm-up (lazy init, allocator)
    out = benchmark.pedantic(run, rounds=3, iterations=1)
    real = int((~out["if_padded_gazing"]).sum())
    benchmark.extra_info.update(impl=impl, gazed_tokens=real, tokens_per_frame=out["num_gazing_each_frame"].tolist())
    benchmark.extra_info.update(measure("bench_autogaze:setup", impl, case))


def test_fast_equals_reference():
    """The benchmarked configurations give identical gaze (checked once, outside the timing)."""
    os.environ.setdefault("TRITON_INTERPRET", "0")
    for case in CASES:
        a, b = setup("reference", case)(), setup("fast", case)()
        assert torch.equal(a["gazing_pos"], b["gazing_pos"]), case
        assert torch.equal(a["if_padded_gazing"], b["if_padded_gazing"]), case
