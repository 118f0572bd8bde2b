"""Teacher-forced training pass, reference vs fast, in one run: the NVIDIA-shaped model (hidden 192,
4 layers, 6 heads, K = 10, N = 265, seeded random weights), a batch of 2 random 16-frame clips and
their ratio-0.75 gaze (198 tokens per frame, a 6,304-token decoder sequence per clip); the loss is
the NTP-style ``-mean(log_action_probs) + mean(task_loss_prediction²)``.

Three groups: ``forward``, ``backward`` (the forward runs untimed before each round) and
``forward+backward``; peak memory of a forward+backward in a fresh process (``memory_probe.py``).
``test_fast_gradients_equal_reference`` checks, outside the timing, that both give the same
parameter gradients (rel. 1e-4).

Run: ``python -m pytest bench/bench_training.py --benchmark-enable --benchmark-json=out.json``.
The shared CPU is noisy, so ``python bench/bench_training.py [ROUNDS]`` also times the two
implementations alternately in one process (reference, fast, reference, ...) and prints best-of
and median forward / backward / total times and ratios.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "0")

FRAMES, BATCH, RATIO = 16, 2, 0.75
PHASES = ("forward", "backward", "forward+backward")


def make_batch(device: str):
    """The clips and their gaze (generated once by the fast model; both implementations give the same)."""
    from autogaze_fast.presets import random_autogaze

    video = torch.randn(BATCH, FRAMES, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode():
        out = random_autogaze(0, impl="fast").to(device)({"video": video}, gazing_ratio=RATIO, generate_only=True)
    info = {k: out[k].clone() for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")}
    return video, info


def build(impl: str, device: str, batch=None):
    """(model, forward) where ``forward()`` returns the scalar training loss (with its graph)."""
    from autogaze_fast.presets import random_autogaze

    model = random_autogaze(0, impl=impl).to(device)
    video, info = make_batch(device) if batch is None else batch

    def forward() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        out = model({"video": video}, gazing_info=info)
        real = (~out["if_padded_gazing"]).float()
        return -(out["log_action_probs"] * real).sum() / real.sum() + (out["task_loss_prediction"] ** 2 * real).mean()

    return model, forward


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def setup(impl: str, device: str = "cuda" if torch.cuda.is_available() else "cpu"):
    """The timed forward + backward (also used by the memory probe)."""
    _, forward = build(impl, device)

    def run():
        forward().backward()
        _sync(device)

    return run


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_teacher_forced_training(benchmark, impl, phase):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    benchmark.group = f"autogaze_training[{phase}]"
    _, forward = build(impl, device)
    forward().backward()  # warm-up (lazy init, allocator)
    _sync(device)
    if phase == "forward":
        def run():
            with torch.enable_grad():
                loss = forward()
            _sync(device)
            return loss

        benchmark.pedantic(run, rounds=3, iterations=1)
    elif phase == "backward":
        def make_loss():
            loss = forward()
            _sync(device)
            return (loss,), {}

        benchmark.pedantic(lambda loss: (loss.backward(), _sync(device)), setup=make_loss, rounds=3, iterations=1)
    else:
        benchmark.pedantic(setup(impl, device), rounds=3, iterations=1)
        from memory_probe import measure

        benchmark.extra_info.update(measure("bench_training:setup", impl))
    benchmark.extra_info.update(impl=impl, batch=BATCH, frames=FRAMES, gazing_ratio=RATIO)


def gradient_agreement(batch=None, device: str = "cpu") -> tuple[float, float]:
    """(loss difference, worst per-parameter ‖g_fast − g_ref‖ / ‖g_ref‖) on the benchmark case."""
    batch = make_batch(device) if batch is None else batch
    grads, losses = [], []
    for impl in ("reference", "fast"):
        model, forward = build(impl, device, batch)
        loss = forward()
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append({name: p.grad for name, p in model.named_parameters()})
    worst = max(float((grads[1][n] - g).norm() / g.norm().clamp_min(1e-30)) for n, g in grads[0].items())
    return abs(losses[1] - losses[0]), worst


def test_fast_gradients_equal_reference():
    """The benchmarked pass: same loss and same gradient on every parameter (rel. 1e-4)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = make_batch(device)
    models = [build(impl, device, batch) for impl in ("reference", "fast")]
    losses = []
    for _model, forward in models:
        loss = forward()
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
    for (name, p_ref), (_, p_fast) in zip(models[0][0].named_parameters(), models[1][0].named_parameters()):
        torch.testing.assert_close(p_fast.grad, p_ref.grad, atol=1e-6, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def alternating_ab(rounds: int, device: str = "cpu") -> dict[str, list[tuple[float, float]]]:
    """(forward, backward) seconds per round, reference and fast timed alternately in one process."""
    batch = make_batch(device)
    forwards = {impl: build(impl, device, batch)[1] for impl in ("reference", "fast")}
    times: dict[str, list[tuple[float, float]]] = {impl: [] for impl in forwards}
    for r in range(rounds + 1):  # round 0 warms up
        for impl, forward in forwards.items():
            t0 = time.perf_counter()
            loss = forward()
            _sync(device)
            t1 = time.perf_counter()
            loss.backward()
            _sync(device)
            if r:
                times[impl].append((t1 - t0, time.perf_counter() - t1))
    return times


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 5
    device = "cuda" if torch.cuda.is_available() else "cpu"
    times = alternating_ab(rounds, device)
    print(f"teacher-forced pass, batch {BATCH} x {FRAMES} frames, ratio {RATIO}, {device}, {rounds} alternating rounds")
    for label, agg in (("best", min), ("median", statistics.median)):
        cells = []
        for part, pick in (("forward", lambda t: t[0]), ("backward", lambda t: t[1]), ("total", sum)):
            ref, fast = (agg(pick(t) for t in times[impl]) for impl in ("reference", "fast"))
            cells.append(f"{part} {ref:.2f} s / {fast:.2f} s = {ref / fast:.2f}x")
        print(f"{label:6s}  reference / fast:  " + " | ".join(cells))
    loss_diff, worst = gradient_agreement(device=device)
    print(f"gradients: loss difference {loss_diff:.1e}, worst per-parameter relative difference {worst:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
