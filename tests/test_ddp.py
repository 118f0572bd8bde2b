"""Training at scale: the fast model's teacher-forced pass under DistributedDataParallel.

Two gloo ranks on CPU (``torch.multiprocessing.spawn``, 127.0.0.1, a free port), each scoring 2 of
4 clips under a given gaze, must produce the gradients one process gets on the whole batch: DDP
averages the ranks' gradients, so the loss is a mean over the batch (B × N slots, pads zeroed)
and each rank holds the same number of clips and slots. Every parameter of the model is used by
the teacher-forced pass (checked: each gets a gradient), so DDP runs with
``find_unused_parameters=False``; a second step after an SGD update would fail inside DDP if any
parameter went without a gradient, and must again match the single process.

The children run the fast model's CPU torch twins (TRITON_INTERPRET=0), one thread each.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from autogaze_fast import AutoGaze

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
WORLD = 2
FRAMES = 2
LR = 0.1
STEPS = 2


def four_clips() -> torch.Tensor:
    """(4, FRAMES, 3, 224, 224): the fixture clip, its mirror, its upside-down and both flipped."""
    video = load_file(str(FIXTURES / "gaze_cases.safetensors"))["video"][:, :FRAMES]
    return torch.cat([video, video.flip(-1), video.flip(-2), video.flip(-1, -2)])


def batch_gaze(video: torch.Tensor) -> dict[str, torch.Tensor]:
    """A gaze for the 4 clips with pads (task-loss stop: rows stop at different steps)."""
    model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl="reference")
    with torch.no_grad():
        out = model({"video": video}, gazing_ratio=0.3, task_loss_requirement=-6.0, generate_only=True)
    return {k: out[k] for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")}


def loss_fn(model, video: torch.Tensor, gaze: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over the batch's B × N slots (pads zeroed) of -log p + (task-loss prediction - 0.5)²."""
    out = model({"video": video}, gazing_info=gaze)
    real = (~out["if_padded_gazing"]).float()
    return (-out["log_action_probs"] * real).mean() + ((out["task_loss_prediction"] - 0.5) ** 2 * real).mean()


def train_steps(model, video, gaze, after_backward) -> None:
    """STEPS steps of backward + SGD; ``after_backward(step)`` sees the gradients before the update."""
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        loss_fn(model, video, gaze).backward()
        after_backward(step)
        opt.step()


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    if missing:
        raise AssertionError(f"parameters without a gradient in the teacher-forced pass: {missing}")
    return {name.removeprefix("module."): p.grad.detach().clone() for name, p in model.named_parameters()}


def ddp_rank(rank: int, port: int, video: torch.Tensor, gaze: dict[str, torch.Tensor], out_dir: str) -> None:
    """One rank: its half of the batch, DDP-wrapped fast model, gradients saved per step."""
    os.environ["TRITON_INTERPRET"] = "0"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl="fast").train()
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
        rows = slice(rank * len(video) // WORLD, (rank + 1) * len(video) // WORLD)
        mine = {"gazing_pos": gaze["gazing_pos"][rows], "if_padded_gazing": gaze["if_padded_gazing"][rows],
                "num_gazing_each_frame": gaze["num_gazing_each_frame"]}
        saved = []
        train_steps(ddp, video[rows], mine, lambda step: saved.append(grads(ddp)))
        torch.save({"grads": saved, "params": {k: v.detach() for k, v in model.state_dict().items()}},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_ranks_match_one_process(torch_twins, tmp_path):
    video = four_clips()
    gaze = batch_gaze(video)
    pads = gaze["if_padded_gazing"]
    assert pads.any() and not pads.all(), "the gaze must mix real tokens and pads"
    assert pads[:2].sum() != pads[2:].sum(), "the ranks must hold different pad counts (masking is exercised)"

    single = AutoGaze.from_pretrained(FIXTURES / "tiny_k10", impl="fast").train()
    expected = []
    train_steps(single, video, gaze, lambda step: expected.append(grads(single)))

    mp.spawn(ddp_rank, args=(free_port(), video, gaze, str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    for step in range(STEPS):
        assert set(ranks[0]["grads"][step]) == set(expected[step])
        for name, want in expected[step].items():
            assert want.abs().sum() > 0, f"{name}: zero gradient"
            for r in range(WORLD):  # atol 1e-6: float32 sums split otherwise (threads, batch halves), |grad| up to ~2
                torch.testing.assert_close(ranks[r]["grads"][step][name], want, rtol=1e-5, atol=1e-6,
                                           msg=lambda m: f"step {step}, rank {r}, {name}: {m}")
    for name, p in single.state_dict().items():  # replicas stayed in sync through the updates
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r]["params"][name], p, rtol=1e-5, atol=1e-7)
