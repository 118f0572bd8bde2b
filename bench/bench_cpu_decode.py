"""The fast gaze model's CPU decode attention: the unmasked all-valid path against the masked twin
path, alternately in one process (NVIDIA-shaped model, seeded random weights, 16 frames,
``gazing_ratio=0.75``, no stop: every cached key stays valid, as in rollouts and the AnyRes bench).

Cases: greedy (``eval``) and sampled (``train`` + generator, as GRPO rollouts) at batch 1 and 8,
and greedy with the task-loss stop (pads in the cache: both sides run the masked path, a control).
Each round runs the masked side then the unmasked side; the best of the rounds is reported, and
the gaze of the two sides must be equal.

Run: ``OMP_NUM_THREADS=1 TRITON_INTERPRET=0 python bench/bench_cpu_decode.py [--batches 1 8] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TRITON_INTERPRET", "0")

import torch  # noqa: E402

from autogaze_fast.fast import decoder  # noqa: E402
from autogaze_fast.presets import random_autogaze  # noqa: E402

STOP_REQUIREMENT = -0.6  # as bench_autogaze.py: stops frames after a few dozen tokens


def cases(model, batches: list[int]) -> dict:
    """name → a call returning the gaze output."""
    out = {}
    for b in batches:
        video = torch.randn(b, 16, 3, 224, 224, generator=torch.Generator().manual_seed(0))

        def greedy(video=video, **kw):
            model.eval()
            with torch.inference_mode():
                return model({"video": video}, generate_only=True, gazing_ratio=0.75, **kw)

        def sample(video=video):
            model.train()
            with torch.no_grad():
                return model({"video": video}, generate_only=True, gazing_ratio=0.75,
                             generator=torch.Generator().manual_seed(1))

        out[f"greedy b{b}"] = greedy
        out[f"sampled b{b}"] = sample
        out[f"greedy+stop b{b} (control)"] = lambda greedy=greedy: greedy(task_loss_requirement=STOP_REQUIREMENT)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = random_autogaze(0, impl="fast")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for name, run in cases(model, args.batches).items():
        times: dict[bool, list[float]] = {False: [], True: []}
        outs = {}
        for _ in range(args.rounds):
            for unmasked in (False, True):
                decoder.CPU_ALL_VALID_PATH = unmasked
                start = time.perf_counter()
                outs[unmasked] = run()
                times[unmasked].append(time.perf_counter() - start)
        decoder.CPU_ALL_VALID_PATH = False
        same = all(torch.equal(outs[False][k], outs[True][k]) for k in ("gazing_pos", "if_padded_gazing"))
        masked, unmasked = min(times[False]), min(times[True])
        print(f"{name:28s} masked {masked:7.3f} s  unmasked {unmasked:7.3f} s  {masked / unmasked:5.3f}x  "
              f"same gaze: {same}", flush=True)


if __name__ == "__main__":
    main()
