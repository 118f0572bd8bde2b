"""One training step of each algorithm: the batch in, a differentiable scalar loss out.

The trainer owns everything around a step (``backward``, gradient accumulation, clipping, the
optimiser, schedules, DDP); these functions own what happens inside one, as upstream's
``Trainer._one_step_ntp`` / ``Trainer._one_step`` + ``NTP`` / ``GRPO`` + the MAE task do
(tests/train/test_train_steps.py checks loss and gaze-model gradients against upstream's own step).

Public API (signatures are stable; the trainer calls them):

``TrainBatch(video, video_for_task=None, gt_gazing_info=None)``
    What one step consumes (``B`` clips of ``T`` frames), as upstream's dataloader hands it out.
    Both videos come from the same decoded uint8 frames (T, H, W, 3) of a clip:

    * ``video`` (B, T, 3, H, W) float32, the gaze model's input: the gaze checkpoint's
      :class:`~autogaze_fast.processing.autogaze.AutoGazeImageProcessor` output (NVIDIA: ``x / 127.5 - 1`` then
      ImageNet mean/std, about [-2.1, 2.6]; H = W = 224 at upstream's resolution).
    * ``video_for_task`` (B, T, 3, S, S) float32, the MAE's input (GRPO only): the MAE's video
      transform :func:`~autogaze_fast.train.mae.loading.mae_video_processor` ``(recon_model, S)`` on
      the same frames, S the MAE's largest scale (``facebook/vit-mae-*``: ``x / 255`` then ImageNet
      mean/std).
    * ``gt_gazing_info`` (NTP only): the ground-truth gaze labels as upstream's ``collate_fn`` makes
      them — a mapping with ``gazing_pos`` (B, N) long (``-1`` at pads), ``if_padded_gazing`` (B, N)
      bool, ``num_gazing_each_frame`` (T,) long (slots per frame, each frame's eos slot included, N =
      their sum) and optionally ``task_losses`` (B, N) float (targets of the task-loss head).

``Rollout(gazing_pos, if_padded_gazing, num_gazing_each_frame)``
    Sampled gaze of the ``G * B`` group rows (same shapes as ``gt_gazing_info``'s first three,
    rows copy-major: row ``g * B + b`` is copy ``g`` of clip ``b``). :func:`grpo_step` samples one
    unless given one (``rollout=``, used by the parity test and the benchmark to replay a trajectory).

``StepResult(loss, metrics, timings, rollout=None)``
    ``loss``: scalar tensor with its graph, ready for ``.backward()`` (not divided by any
    accumulation count); ``metrics``: ``dict[str, float]`` (means over the batch); ``timings``:
    seconds spent in ``"rollout"`` (sampling the gaze), ``"task"`` (MAE forward + rewards) and
    ``"loss"`` (teacher-forced gaze-model forward + algorithm losses), synchronised on CUDA;
    ``rollout``: the :class:`Rollout` a GRPO step used.

``ntp_step(gaze_model, batch, *, optimize_task_loss_prediction=False, target_scales=None,
target_patch_size=None, autocast=None) -> StepResult``
    ``loss = mean_b(ntp_loss + head_loss)``; head loss is :func:`~.algorithms.task_loss_head_loss`
    against ``gt_gazing_info["task_losses"]`` (mask all ones, as upstream) when
    ``optimize_task_loss_prediction``, else ``0 * mean(task_loss_prediction)`` so every parameter
    takes part in the graph (DDP).

``grpo_step(gaze_model, task, batch, *, group_size, temperature=1.0, generator=None, seed=None,
discount_factor=1.0, optimize_task_loss_prediction=False, train_gaze=True, train_task=False,
detach_task=False, frame_idx=None, rollout=None, gazing_ratio=None, task_loss_requirement=None,
autocast=None) -> StepResult``
    1. rollout: ``G`` copies of each clip, the gaze model's own generator (the fast static-cache loop
       for ``impl="fast"``) sampling with ``temperature`` under ``no_grad``, budgets from the model's
       config unless ``gazing_ratio`` / ``task_loss_requirement`` are given (as upstream's trainer);
    2. task: the MAE reconstructs ``frame_idx`` (default: upstream's draw of
       ``int(T * recon_sample_rate)`` frames) → per-frame losses → rewards (``-loss``), trajectory
       lengths, per-token task-loss targets; under ``no_grad`` unless ``train_task`` and not
       ``detach_task``;
    3. loss: teacher-forced log-probabilities of the rollout (with grad) →
       ``mean_rows(grpo_loss + head_loss)`` when ``train_gaze``, ``+ mean_b(task loss)`` when
       ``train_task`` (upstream's sum).
    ``generator`` (or ``seed``, which makes one) drives the sampling; ``None`` uses torch's global RNG.
    The gaze model must be in ``train()`` mode to sample (as upstream; in ``eval()`` the rollout is
    greedy). It may be wrapped in DDP: the rollout runs on the wrapped module, the teacher-forced pass
    through the wrapper so gradients are reduced.

``sample_rollout(gaze_model, video, *, temperature=1.0, generator=None, gazing_ratio=None,
task_loss_requirement=None, target_scales=None, target_patch_size=None) -> Rollout``
    Step 1 of :func:`grpo_step` on its own (``video`` already holds the G copies).

``autocast``: bf16 autocast of the teacher-forced pass and the task on CUDA, as upstream; ``None``
means on when the model is on CUDA. It does nothing on CPU.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from autogaze_fast.checks import check_int
from autogaze_fast.train.algorithms import grpo_loss, ntp_loss, repeat_for_group, task_loss_head_loss

__all__ = ["TrainBatch", "Rollout", "StepResult", "ntp_step", "grpo_step", "sample_rollout"]

_GAZE_KEYS = ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")


@dataclass
class TrainBatch:
    """One step's clips (see the module docstring for the value ranges).

    Attributes:
        video: (B, T, 3, H, W) float, the gaze model's input (AutoGazeImageProcessor output).
        video_for_task: (B, T, 3, S, S) float, the MAE's input (its video transform); GRPO only.
        gt_gazing_info: NTP labels: ``gazing_pos`` (B, N) long (-1 at pads), ``if_padded_gazing``
            (B, N) bool, ``num_gazing_each_frame`` (T,) long, optional ``task_losses`` (B, N) float.
    """

    video: torch.Tensor
    video_for_task: torch.Tensor | None = None
    gt_gazing_info: Mapping[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.video, torch.Tensor) or self.video.ndim != 5 or not self.video.is_floating_point():
            raise ValueError(f"TrainBatch.video must be a float (B, T, 3, H, W) tensor (the gaze processor's output); "
                             f"got {getattr(self.video, 'dtype', type(self.video).__name__)} "
                             f"{tuple(getattr(self.video, 'shape', ()))}")
        b, t = self.video.shape[:2]
        v = self.video_for_task
        if v is not None and (not isinstance(v, torch.Tensor) or v.ndim != 5 or tuple(v.shape[:2]) != (b, t)
                              or not v.is_floating_point()):
            raise ValueError(f"TrainBatch.video_for_task must be a float (B={b}, T={t}, 3, S, S) tensor (the MAE's "
                             f"video transform of the same frames); got {tuple(getattr(v, 'shape', ()))}")
        if self.gt_gazing_info is not None:
            _check_gaze(self.gt_gazing_info, b, "TrainBatch.gt_gazing_info")

    @property
    def batch_size(self) -> int:
        return self.video.shape[0]

    def to(self, device: torch.device | str) -> TrainBatch:
        """A copy with every tensor on ``device``."""
        info = None
        if self.gt_gazing_info is not None:
            info = {k: (x.to(device) if isinstance(x, torch.Tensor) else x) for k, x in self.gt_gazing_info.items()}
        return TrainBatch(self.video.to(device), None if self.video_for_task is None else self.video_for_task.to(device),
                          info)


@dataclass
class Rollout:
    """Sampled gaze of the G·B group rows (rows copy-major).

    Attributes:
        gazing_pos: (G·B, N) long token ids over the T·n tokens (pads hold an arbitrary id).
        if_padded_gazing: (G·B, N) bool, True at pads (eos).
        num_gazing_each_frame: (T,) long, slots of each frame's chunk (sums to N).
    """

    gazing_pos: torch.Tensor
    if_padded_gazing: torch.Tensor
    num_gazing_each_frame: torch.Tensor

    def gazing_info(self) -> dict[str, torch.Tensor]:
        """The gaze as the model's / task's ``gazing_info`` mapping."""
        return {"gazing_pos": self.gazing_pos, "if_padded_gazing": self.if_padded_gazing,
                "num_gazing_each_frame": self.num_gazing_each_frame}

    def to(self, device: torch.device | str) -> Rollout:
        return Rollout(self.gazing_pos.to(device), self.if_padded_gazing.to(device), self.num_gazing_each_frame.to(device))


@dataclass
class StepResult:
    """What a step hands back to the trainer.

    Attributes:
        loss: scalar tensor with its graph (call ``.backward()``).
        metrics: means over the batch, as floats.
        timings: seconds in ``"rollout"``, ``"task"`` and ``"loss"``.
        rollout: the gaze a GRPO step sampled (or was given); None for NTP.
    """

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    rollout: Rollout | None = None


# --------------------------------------------------------------------------- helpers
def _check_gaze(info: Mapping[str, Any], rows: int, what: str) -> None:
    """Raise a ValueError unless ``info`` holds a (rows, N) gaze with per-frame counts summing to N."""
    missing = [k for k in _GAZE_KEYS if k not in info]
    if missing:
        raise ValueError(f"{what} lacks {missing}; it needs gazing_pos (B, N), if_padded_gazing (B, N) and "
                         "num_gazing_each_frame (T,), as upstream's collate_fn makes them")
    pos, pads, counts = (info[k] for k in _GAZE_KEYS)
    if not all(isinstance(x, torch.Tensor) for x in (pos, pads, counts)):
        raise ValueError(f"{what}: gazing_pos, if_padded_gazing and num_gazing_each_frame must be tensors")
    if pos.ndim != 2 or pos.shape[0] != rows or pads.shape != pos.shape:
        raise ValueError(f"{what}: gazing_pos and if_padded_gazing must both be ({rows}, N); got "
                         f"{tuple(pos.shape)} and {tuple(pads.shape)}")
    if pos.is_floating_point() or pads.dtype != torch.bool:
        raise ValueError(f"{what}: gazing_pos must be integer and if_padded_gazing bool; got {pos.dtype}, {pads.dtype}")
    if counts.ndim != 1 or counts.is_floating_point() or int(counts.sum()) != pos.shape[1]:
        raise ValueError(f"{what}: num_gazing_each_frame must be (T,) integers summing to N = {pos.shape[1]}; got "
                         f"{counts.tolist() if counts.numel() < 64 else tuple(counts.shape)}")
    tl = info.get("task_losses")
    if tl is not None and (not isinstance(tl, torch.Tensor) or tl.shape != pos.shape):
        raise ValueError(f"{what}: task_losses must be a ({rows}, N) tensor like gazing_pos; got "
                         f"{tuple(getattr(tl, 'shape', ()))}")


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP / DataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _device(model: nn.Module) -> torch.device:
    return next(_unwrap(model).parameters()).device


def _autocast(enabled: bool | None, device: torch.device):
    use = device.type == "cuda" if enabled is None else bool(enabled) and device.type == "cuda"
    return torch.autocast("cuda", dtype=torch.bfloat16) if use else nullcontext()


class _Clock:
    """Wall-clock sections, synchronised on CUDA so GPU work is charged where it was queued."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.times: dict[str, float] = {"rollout": 0.0, "task": 0.0, "loss": 0.0}

    def section(self, name: str):
        clock = self

        class _Section:
            def __enter__(self):
                if clock.cuda:
                    torch.cuda.synchronize()
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                if clock.cuda:
                    torch.cuda.synchronize()
                clock.times[name] += time.perf_counter() - self.start
                return False

        return _Section()


def _task_layout(task: nn.Module | None, target_scales, target_patch_size) -> dict[str, Any]:
    """``target_scales`` / ``target_patch_size`` for the gaze model: given, else the task's MAE layout
    (upstream's ``task.gaze_model_kwargs``), else none."""
    if target_scales is not None or target_patch_size is not None:
        if target_scales is None or target_patch_size is None:
            raise ValueError("give target_scales and target_patch_size together (or neither)")
        return {"target_scales": list(target_scales), "target_patch_size": int(target_patch_size)}
    cfg = getattr(getattr(_unwrap(task), "mae", None), "config", None) if task is not None else None
    if cfg is None:
        return {}
    return {"target_scales": list(cfg.scales), "target_patch_size": int(cfg.patch_size)}


def _head_loss(pred: torch.Tensor, padded: torch.Tensor, optimize: bool, task_losses: torch.Tensor | None,
               task_losses_mask: torch.Tensor | None) -> torch.Tensor:
    """(rows,) task-loss head loss, or zeros tied to the head (upstream's ``0 * mean``) when not optimised."""
    if optimize:
        return task_loss_head_loss(pred, task_losses, task_losses_mask, padded)
    return torch.zeros(pred.shape[0], dtype=pred.dtype, device=pred.device) * pred.mean()


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or float64 when it already is (losses are summed at least in float32)."""
    return x if x.dtype == torch.float64 else x.float()


def _floats(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Tensors → floats with one device→host copy."""
    keys = [k for k, v in values.items() if isinstance(v, torch.Tensor)]
    out = {k: float(v) for k, v in values.items() if not isinstance(v, torch.Tensor)}
    if keys:
        stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys]).cpu().tolist()
        out.update(zip(keys, stacked))
    return out


# --------------------------------------------------------------------------- NTP
def ntp_step(gaze_model: nn.Module, batch: TrainBatch, *, optimize_task_loss_prediction: bool = False,
             target_scales: list[int] | None = None, target_patch_size: int | None = None,
             autocast: bool | None = None) -> StepResult:
    """Next-token prediction on the ground-truth gaze (upstream's ``_one_step_ntp`` + ``NTP``).

    Args:
        gaze_model: :class:`~autogaze_fast.AutoGaze` (either impl), possibly DDP-wrapped.
        batch: needs ``video`` and ``gt_gazing_info`` (``task_losses`` too when
            ``optimize_task_loss_prediction``).
        target_scales, target_patch_size: the task's token layout (upstream passes the MAE's).
    Returns:
        :class:`StepResult` with ``loss = mean_b(ntp_loss + head_loss)``; metrics ``ntp_loss``,
        ``task_loss_prediction_loss``, ``loss``.
    """
    labels = batch.gt_gazing_info
    if labels is None:
        raise ValueError("ntp_step needs batch.gt_gazing_info (the ground-truth gaze labels); give the dataset the "
                         "labels JSON (upstream's gt_gazing_pos_paths)")
    if optimize_task_loss_prediction and labels.get("task_losses") is None:
        raise ValueError("optimize_task_loss_prediction needs gt_gazing_info['task_losses'] (per-token targets in the "
                         "labels JSON)")
    device = _device(gaze_model)
    clock = _Clock(device)
    layout = _task_layout(None, target_scales, target_patch_size)
    info = {k: labels[k].to(device) for k in _GAZE_KEYS}
    with clock.section("loss"):
        with _autocast(autocast, device):
            out = gaze_model({"video": batch.video.to(device)}, gazing_info=info, **layout)
        padded = out["if_padded_gazing"].bool()
        log_probs = _wide(out["log_action_probs"])
        pred = _wide(out["task_loss_prediction"])
        ntp = ntp_loss(log_probs, padded)
        task_losses = labels.get("task_losses")
        if task_losses is not None:
            task_losses = task_losses.to(device)
        head = _head_loss(pred, padded, optimize_task_loss_prediction, task_losses,
                          None if task_losses is None else torch.ones_like(task_losses))
        loss = (ntp + head).mean()
    metrics = _floats({"loss": loss, "ntp_loss": ntp.mean(), "task_loss_prediction_loss": head.mean()})
    return StepResult(loss, metrics, clock.times)


# --------------------------------------------------------------------------- GRPO
def sample_rollout(gaze_model: nn.Module, video: torch.Tensor, *, temperature: float = 1.0,
                   generator: torch.Generator | None = None, gazing_ratio: float | None = None,
                   task_loss_requirement: float | None = None, target_scales: list[int] | None = None,
                   target_patch_size: int | None = None) -> Rollout:
    """Sample the gaze of ``video`` (rows, T, 3, H, W) with the model's generator under ``no_grad``.

    The model samples in ``train()`` mode (greedy in ``eval()``), as upstream. Budgets come from the
    model's config unless ``gazing_ratio`` / ``task_loss_requirement`` are given.
    """
    module = _unwrap(gaze_model)
    layout = {} if target_scales is None else {"target_scales": target_scales, "target_patch_size": target_patch_size}
    with torch.no_grad():
        out = module({"video": video}, gazing_ratio=gazing_ratio, task_loss_requirement=task_loss_requirement,
                     temperature=temperature, generate_only=True, generator=generator, **layout)
    return Rollout(out["gazing_pos"], out["if_padded_gazing"].bool(), out["num_gazing_each_frame"])


def grpo_step(gaze_model: nn.Module, task: nn.Module, batch: TrainBatch, *, group_size: int, temperature: float = 1.0,
              generator: torch.Generator | None = None, seed: int | None = None, discount_factor: float = 1.0,
              optimize_task_loss_prediction: bool = False, train_gaze: bool = True, train_task: bool = False,
              detach_task: bool = False, frame_idx: torch.Tensor | list[int] | None = None,
              rollout: Rollout | Mapping[str, torch.Tensor] | None = None, gazing_ratio: float | None = None,
              task_loss_requirement: float | None = None, autocast: bool | None = None) -> StepResult:
    """One GRPO step against the reconstruction task (upstream's ``_one_step`` + ``GRPO``).

    Args:
        gaze_model: :class:`~autogaze_fast.AutoGaze` (either impl) in ``train()`` mode, possibly DDP-wrapped.
        task: :class:`~autogaze_fast.train.MAEReconstructionTask` (either impl), possibly DDP-wrapped.
        batch: ``video`` (B, T, 3, H, W) and ``video_for_task`` (B, T, 3, S, S).
        group_size: G rollouts per clip.
        temperature: sampling temperature (upstream anneals it; the trainer passes the scheduled value).
        generator / seed: RNG of the rollout (``seed`` builds a generator on the model's device).
        discount_factor: GRPO's per-step discount (upstream's default config: 1).
        optimize_task_loss_prediction: train the task-loss head on the task's per-token losses.
        train_gaze / train_task / detach_task: upstream's trainer flags (which losses are summed;
            ``detach_task`` runs the task without grad).
        frame_idx: (R,) frames to reconstruct; None: the task draws them (torch's global RNG, as upstream).
        rollout: a given gaze of the G·B rows (:class:`Rollout` or a mapping with its fields) instead of
            sampling one — used to replay a trajectory (tests, benchmarks).
        gazing_ratio / task_loss_requirement: fixed rollout budgets instead of the config's.
    Returns:
        :class:`StepResult`; metrics ``loss``, ``grpo_loss``, ``task_loss_prediction_loss``,
        ``reconstruction_loss``, ``reward``, ``avg_gazing_ratio_per_frame``.
    """
    group_size = check_int(group_size, "group_size", message=f"group_size must be an int >= 1; got {group_size!r}")
    if batch.video_for_task is None:
        raise ValueError("grpo_step needs batch.video_for_task: the MAE's video transform of the same frames "
                         "(mae_video_processor(recon_model, largest scale))")
    if not (train_gaze or train_task):
        raise ValueError("grpo_step with train_gaze=False and train_task=False has nothing to train")
    device = _device(gaze_model)
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(int(seed))
    clock = _Clock(device)
    layout = _task_layout(task, None, None)
    video = repeat_for_group(batch.video.to(device), group_size)
    video_task = repeat_for_group(batch.video_for_task.to(device), group_size)
    rows = video.shape[0]

    with clock.section("rollout"):
        if rollout is None:
            rollout = sample_rollout(gaze_model, video, temperature=temperature, generator=generator,
                                     gazing_ratio=gazing_ratio, task_loss_requirement=task_loss_requirement,
                                     target_scales=layout.get("target_scales"),
                                     target_patch_size=layout.get("target_patch_size"))
        else:
            if isinstance(rollout, Mapping):
                _check_gaze(rollout, rows, "rollout")
                rollout = Rollout(*(rollout[k] for k in _GAZE_KEYS))
            _check_gaze(rollout.gazing_info(), rows, f"rollout (G*B = {group_size}*{batch.batch_size} rows)")
            rollout = rollout.to(device)

    with clock.section("loss"):
        with _autocast(autocast, device):
            gaze_out = gaze_model({"video": video}, gazing_info=rollout.gazing_info(), **layout)

    with clock.section("task"):
        grad = train_task and not detach_task
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()), _autocast(autocast, device):
            task_out = task(video_task, gaze_out, frame_idx=frame_idx)

    with clock.section("loss"):
        padded = gaze_out["if_padded_gazing"].bool()
        log_probs = _wide(gaze_out["log_action_probs"])
        pred = _wide(gaze_out["task_loss_prediction"])
        r = task_out.rewards
        grpo = grpo_loss(log_probs, _wide(r.rewards), r.traj_len_each_reward, padded, group_size, discount_factor)
        head = _head_loss(pred, padded, optimize_task_loss_prediction, _wide(r.task_losses), r.task_losses_mask)
        loss = log_probs.new_zeros(())
        if train_gaze:
            loss = loss + (grpo + head).mean()
        if train_task:
            loss = loss + _wide(task_out.loss).mean()

    n_tokens = int(gaze_out["num_vision_tokens_each_frame"]) * rollout.num_gazing_each_frame.numel()
    metrics = _floats({
        "loss": loss, "grpo_loss": grpo.mean(), "task_loss_prediction_loss": head.mean(),
        "reconstruction_loss": task_out.loss.mean(), "reward": r.rewards.mean(),
        "avg_gazing_ratio_per_frame": (~padded).sum() / (rows * n_tokens),
    })
    return StepResult(loss, metrics, clock.times, rollout)
