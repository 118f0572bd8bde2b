"""Gazed SigLIP-B/16 (12 layers, 768 wide, 12 heads, MAP head, seeded random weights) on a
16-frame 224×224 clip, reference vs fast in one run:

* ``gazed3168``: 198 gazed tokens per frame (3,168 of the 4,240 multi-scale tokens);
* ``gazed10pct``: 26 per frame (416 tokens, ~10%);
* ``dense224``: the single-scale 224 baseline, all 3,136 patches (no gaze).

Peak memory of each case is measured in a fresh process (``memory_probe.py``) into ``extra_info``.
"""

from __future__ import annotations

import os

import pytest
import torch
from memory_probe import measure

from autogaze_fast.presets import random_siglip

FRAMES = 16
N_FRAME = 265  # 2² + 4² + 7² + 14²
CASES = {"gazed3168": 198, "gazed10pct": 26, "dense224": None}


def random_gaze(per_frame: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    pos = [torch.randperm(N_FRAME, generator=g)[:per_frame].sort().values + N_FRAME * t for t in range(FRAMES)]
    pos = torch.cat(pos)[None]
    return {"gazing_pos": pos, "if_padded_gazing": torch.zeros_like(pos, dtype=torch.bool),
            "num_gazing_each_frame": torch.full((FRAMES,), per_frame)}


def setup(impl: str, case: str, device: str = "cuda" if torch.cuda.is_available() else "cpu"):
    """Build model, clip and gaze; return the timed call (also used by the memory probe)."""
    per_frame = CASES[case]
    model = random_siglip(0, impl=impl, scales=[224] if per_frame is None else [32, 64, 112, 224]).to(device)
    video = torch.randn(1, FRAMES, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(device)
    gaze = None if per_frame is None else {k: v.to(device) for k, v in random_gaze(per_frame).items()}

    def run():
        with torch.inference_mode():
            out = model(video, gaze)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return run


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_siglip_encode(benchmark, impl, case):
    os.environ.setdefault("TRITON_INTERPRET", "0")
    benchmark.group = f"siglip_b16[{case}]"
    run = setup(impl, case)
    run()
    out = benchmark.pedantic(run, rounds=2, iterations=1)
    benchmark.extra_info.update(impl=impl, tokens=out.last_hidden_state.shape[1])
    benchmark.extra_info.update(measure("bench_siglip:setup", impl, case))
