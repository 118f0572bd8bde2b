"""The training loop: NTP or GRPO steps, accumulated to a global batch, on one process or under torchrun + DDP.

``train(config)`` builds everything from a :class:`~.config.TrainConfig` and runs ``optim.steps``
optimizer steps::

    for each step s:   temperature(s), lr(s)
        for each of this rank's micro-batches k (DDP no_sync on all but the last):
            seed = (run seed, s, global micro-batch index)  → rollout generator and frame choice
            result = ntp_step / grpo_step(...)              (autogaze_fast.train.steps)
            (result.loss / accumulation).backward()
        clip the gradient norm → Adam(W) step → LR scheduler step
        metrics (averaged over micro-batches and ranks) → metrics.jsonl / TensorBoard / tqdm on rank 0
        every run.val_every steps: validation; every run.save_every steps: an atomic checkpoint

Determinism across world sizes: the data order (:class:`~.data.StepBatchSampler`) and every random
draw of a micro-batch depend only on the run's seed, the step and the micro-batch's place in the
global batch, so one process with ``micro_batch = global_batch / 2`` computes what two ranks compute
with ``global_batch / 2`` each (DDP averages the ranks' gradients as accumulation does). Resuming
from a checkpoint restores model, optimizer, scheduler and RNG states and restarts the data at the
checkpoint's step, so a killed and resumed run ends with the parameters of an uninterrupted one.

Launch: ``autogaze-fast train --config cfg.yaml [section.field=value ...]`` or
``torchrun --nproc-per-node=N -m autogaze_fast train ...`` (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autogaze_fast.config import ConfigError, parse_scales
from autogaze_fast.devices import resolve_device
from autogaze_fast.distributed import DistContext, init_distributed
from autogaze_fast.loading import load_state_dict_strict, read_safetensors
from autogaze_fast.model import AutoGaze
from autogaze_fast.presets import random_autogaze
from autogaze_fast.processing.autogaze import NVIDIA_PREPROCESSING, AutoGazeImageProcessor
from autogaze_fast.train.checkpoint import (
    capture_rng_state,
    find_checkpoint,
    load_train_state,
    restore_rng_state,
    save_checkpoint,
)
from autogaze_fast.train.config import TrainConfig
from autogaze_fast.train.data import ClipDataset, StepBatchSampler, collate_clips, list_split_videos, load_labels
from autogaze_fast.train.mae.loading import mae_video_processor
from autogaze_fast.train.mae.presets import preset_mae_processor
from autogaze_fast.train.mae.task import MAEReconstructionTask
from autogaze_fast.train.metrics import MetricsLogger
from autogaze_fast.train.steps import TrainBatch, grpo_step, ntp_step, sample_rollout
from autogaze_fast.train.task_rewards import sample_frames_to_reconstruct

log = logging.getLogger("autogaze_fast.train")

__all__ = ["TrainSummary", "lr_factor", "micro_batch_seed", "scheduled_temperature", "train"]


@dataclass
class TrainSummary:
    """What a run did: the last step, where it wrote, the last train metrics, checkpoints written."""

    step: int
    out_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoints: list[Path] = field(default_factory=list)
    resumed_from: Path | None = None


# ---------------------------------------------------------------------- schedules and seeds
def scheduled_temperature(step: int, total: int, start: float, end: float) -> float:
    """Upstream's exponential annealing ``start · (end / start) ** (step / total)``."""
    return start * (end / start) ** (step / max(total, 1))


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base LR at optimizer step ``step``: linear warm-up from 0 over ``warmup`` steps,
    then ``cosine`` / ``linear`` decay to ``min_ratio`` at ``total``, or ``constant``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
    return min_ratio + (1 - min_ratio) * decay


def micro_batch_seed(seed: int, step: int, index: int, stream: int = 0) -> int:
    """The seed of global micro-batch ``index`` at ``step`` (``stream`` 0: training, 1: validation):
    independent of the rank that runs it."""
    return int(np.random.SeedSequence([seed, step, index, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------- building blocks
def _build_model(cfg: TrainConfig, device: torch.device):
    m = cfg.model
    if m.checkpoint is not None:
        model = AutoGaze.from_pretrained(m.checkpoint, impl=m.impl)
    else:
        model = random_autogaze(m.preset_seed, impl=m.impl)
    if cfg.data.clip_len > model.config.max_num_frames:
        raise ConfigError(f"data.clip_len={cfg.data.clip_len} exceeds the gaze model's max_num_frames "
                          f"({model.config.max_num_frames})")
    return model.to(device).train()


def _gaze_processor(cfg: TrainConfig, side: int):
    """The gaze model's processor (the checkpoint's, else NVIDIA's), resized to the MAE's largest scale."""
    params: dict[str, Any] = dict(NVIDIA_PREPROCESSING)
    if cfg.model.checkpoint is not None:  # a broken preprocessor_config.json raises; a missing one: NVIDIA's
        params = AutoGazeImageProcessor.from_pretrained_or_default(cfg.model.checkpoint).to_dict()
    params = {k: v for k, v in params.items() if k != "image_processor_type"}
    params["size"] = {"shortest_edge": side}
    if cfg.data.center_crop:
        params.update(do_center_crop=True, crop_size={"height": side, "width": side})
    return AutoGazeImageProcessor.from_dict(params)


def _build_task(cfg: TrainConfig, device: torch.device):
    """The frozen MAE task and its video processor, or (None, None) without ``task.recon_model`` /
    ``task.recon_preset``."""
    t = cfg.task
    side = max(parse_scales(t.scales))
    common = dict(scales=t.scales, recon_sample_rate=t.recon_sample_rate, siglip2_model=t.siglip2_model,
                  impl=cfg.model.impl, loss_type=t.loss_type, loss_weights=t.loss_weights)
    if t.recon_preset:
        task = MAEReconstructionTask.from_preset(t.recon_preset, seed=t.recon_preset_seed, **common)
        processor = preset_mae_processor(side)
    elif t.recon_model:
        task = MAEReconstructionTask.from_pretrained(t.recon_model, task_weights=t.task_weights,
                                                     init_new_embeddings=t.init_new_embeddings, **common)
        processor = mae_video_processor(t.recon_model, side)
    else:
        return None, None
    for p in task.parameters():
        p.requires_grad_(False)
    return task.to(device).eval(), processor


def _dataset(cfg: TrainConfig, split: str, labels_path: str | None, model, gaze_proc, task_proc) -> ClipDataset:
    d = cfg.data
    videos = list_split_videos(d.root, split, d.video_ext)
    labels = None
    if labels_path:
        labels = load_labels(labels_path, d.clip_len, model.num_vision_tokens_each_frame)
    return ClipDataset(videos, gaze_proc, task_proc, clip_len=d.clip_len, frame_sample_rate=d.frame_sample_rate,
                       random_sample_frame=d.random_sample_frame and split == "train", seed=cfg.run.seed,
                       labels=labels, check_videos=d.check_videos, split=split)


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    cls = torch.optim.AdamW if o.adamw else torch.optim.Adam
    return cls(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


def _loader(dataset: ClipDataset, batch_sampler, cfg: TrainConfig, device: torch.device):
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batch_sampler, num_workers=cfg.data.num_workers, collate_fn=collate_clips,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(cfg.run.seed),
        persistent_workers=False)


def _batch(micro: dict[str, Any]) -> TrainBatch:
    labels = micro.get("labels")
    return TrainBatch(micro["video"], micro.get("video_for_task"), labels)


# ---------------------------------------------------------------------- validation
def _val_batches(n: int, micro_batch: int, rank: int, world: int, limit: int) -> list[list[int]]:
    mine = list(range(rank, n, world))
    batches = [mine[i:i + micro_batch] for i in range(0, len(mine), micro_batch)]
    return batches[:limit] if limit else batches


@torch.no_grad()
def _validate(cfg: TrainConfig, model: nn.Module, task, val_set: ClipDataset, ctx: DistContext,
              device: torch.device, step: int) -> dict[str, float]:
    """Greedy gaze (eval mode) → MAE reconstruction loss, and the NTP loss where labels exist;
    sums over every rank's share of the split, returned as means per clip."""
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    plan = _val_batches(len(val_set), cfg.optim.micro_batch, ctx.rank, ctx.world, cfg.run.val_batches)
    loader = _loader(val_set, plan, cfg, device)
    for k, micro in enumerate(loader):
        batch = _batch(micro)
        rows = batch.batch_size
        if task is not None:
            cfg_mae = task.mae.config
            gaze = sample_rollout(model, batch.video.to(device), gazing_ratio=cfg.model.gazing_ratio,
                                  task_loss_requirement=cfg.model.task_loss_requirement,
                                  target_scales=list(cfg_mae.scales), target_patch_size=int(cfg_mae.patch_size))
            gen = torch.Generator().manual_seed(micro_batch_seed(cfg.run.seed, step, k * ctx.world + ctx.rank, stream=1))
            frames = sample_frames_to_reconstruct(batch.video.shape[1], cfg.task.recon_sample_rate, gen, device)
            bf16 = device.type == "cuda" and cfg.run.dtype == "bf16"
            with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext():
                out = task(batch.video_for_task.to(device), gaze.gazing_info(), frame_idx=frames)
            n_tokens = task.mae.config.tokens_per_frame * gaze.num_gazing_each_frame.numel()
            ratio = (~gaze.if_padded_gazing).sum(-1).float() / n_tokens
            sums["reconstruction_loss"] = sums.get("reconstruction_loss", 0.0) + float(out.loss.float().sum())
            sums["gazing_ratio"] = sums.get("gazing_ratio", 0.0) + float(ratio.sum())
        if batch.gt_gazing_info is not None:
            res = ntp_step(model, batch, optimize_task_loss_prediction=cfg.algorithm.optimize_task_loss_prediction,
                           autocast=cfg.run.dtype == "bf16")
            for name in ("ntp_loss", "task_loss_prediction_loss"):
                sums[name] = sums.get(name, 0.0) + res.metrics[name] * rows
        count += rows
    keys = sorted(sums)
    totals = ctx.all_sum(torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64, device=device))
    model.train()
    total = float(totals[-1])
    return {k: float(v) / max(total, 1.0) for k, v in zip(keys, totals[:-1].tolist())}


# ---------------------------------------------------------------------- the run
def _train_state(cfg: TrainConfig, step: int, optimizer, scheduler, rng: list[dict], num_items: int) -> dict:
    return {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
            "sampler": {"seed": cfg.run.seed, "global_batch": cfg.optim.global_batch, "num_items": num_items,
                        "step": step},
            "config": cfg.to_dict(), "world_size": len(rng)}


def _resume(found: Path, model: nn.Module, optimizer, scheduler, ctx: DistContext, num_items: int, cfg: TrainConfig) -> int:
    state = load_train_state(found)
    load_state_dict_strict(model, read_safetensors(found / "model.safetensors"), source=str(found))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    sampler = state.get("sampler", {})
    if sampler.get("num_items") != num_items or sampler.get("global_batch") != cfg.optim.global_batch:
        log.warning("resuming with another dataset size or global batch (%s → %d videos, batch %d): the data order "
                    "differs from the interrupted run's", sampler, num_items, cfg.optim.global_batch)
    rng = state.get("rng", [])
    if len(rng) == ctx.world:
        restore_rng_state(rng[ctx.rank])
    else:
        log.warning("checkpoint written by %d ranks, resuming on %d: RNG states not restored", len(rng), ctx.world)
    return int(state["step"])


def train(cfg: TrainConfig) -> TrainSummary:
    """Run (or resume) the training described by ``cfg`` (already validated); see the module docstring."""
    cfg.validate()
    device = resolve_device(cfg.run.device, error=ConfigError,
                            message="run.device=cuda but CUDA is not available; use run.device=cpu or auto")
    ctx = init_distributed(device)
    try:
        return _run(cfg, ctx, ctx.device)
    finally:
        ctx.close()


def _run(cfg: TrainConfig, ctx: DistContext, device: torch.device) -> TrainSummary:
    out_dir = Path(cfg.run.out_dir)
    accum, _ = cfg.batch_plan(ctx.world)
    _seed_everything(cfg.run.seed + ctx.rank)
    model = _build_model(cfg, device)
    task, task_proc = _build_task(cfg, device)
    side = max(parse_scales(cfg.task.scales))
    gaze_proc = _gaze_processor(cfg, side)
    is_ntp = cfg.algorithm.name == "ntp"
    train_set = _dataset(cfg, "train", cfg.data.labels if is_ntp else None, model, gaze_proc,
                         None if is_ntp else task_proc)  # NTP trains on labels alone: no MAE copy of the clips
    val_set = None
    if cfg.run.val_every and (task is not None or cfg.data.val_labels):
        val_set = _dataset(cfg, "val", cfg.data.val_labels, model, gaze_proc, task_proc)

    optimizer = _optimizer(cfg, model)
    o = cfg.optim
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, o.steps, o.warmup_steps, o.schedule, o.min_lr / o.lr))
    found = find_checkpoint(out_dir, cfg.run.resume)
    start = _resume(found, model, optimizer, scheduler, ctx, len(train_set), cfg) if found else 0
    if ctx.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        log.info("%s from step %d of %d on %s x %d (%d micro-batch(es) of %d per rank per step)%s",
                 cfg.algorithm.name.upper(), start, o.steps, device, ctx.world, accum, o.micro_batch,
                 f", resumed from {found}" if found else "")
    ctx.barrier()

    wrapped: nn.Module = model
    if ctx.world > 1:
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    metrics_log = MetricsLogger(out_dir, enabled=ctx.rank == 0, resume_step=start, tensorboard=cfg.run.tensorboard,
                                progress_total=o.steps if cfg.run.progress else None, progress_start=start)
    summary = TrainSummary(start, out_dir, resumed_from=found)
    if start >= o.steps:
        metrics_log.close()
        return summary
    sampler = StepBatchSampler(len(train_set), o.global_batch, o.micro_batch, ctx.rank, ctx.world, cfg.run.seed,
                               start_step=start, num_steps=o.steps - start)
    micro_iter = iter(_loader(train_set, sampler, cfg, device))
    autocast = cfg.run.dtype == "bf16"
    try:
        for step in range(start, o.steps):
            t0 = time.perf_counter()
            temperature = scheduled_temperature(step, o.steps, cfg.temperature.start, cfg.temperature.end)
            lr = optimizer.param_groups[0]["lr"]
            sums: dict[str, float] = {}
            for k in range(accum):
                micro = next(micro_iter)
                seed = micro_batch_seed(cfg.run.seed, step, ctx.rank * accum + k)
                sync = k == accum - 1 or ctx.world == 1
                with (nullcontext() if sync else wrapped.no_sync()):
                    result = _one_step(cfg, wrapped, task, _batch(micro), temperature, seed, device, autocast)
                    (result.loss / accum).backward()
                for name, v in {**result.metrics, **{f"time_{t}": s for t, s in result.timings.items()}}.items():
                    sums[name] = sums.get(name, 0.0) + v / accum
            metrics = ctx.all_mean(sums)
            if math.isfinite(metrics.get("loss", 0.0)):
                if o.grad_clip:
                    metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip))
                optimizer.step()
            else:
                log.warning("step %d: non-finite loss %s on some rank; update skipped", step, metrics.get("loss"))
                metrics["skipped_update"] = 1.0
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            done = step + 1
            metrics.update(lr=lr, temperature=temperature, step_seconds=time.perf_counter() - t0)
            summary.step, summary.metrics = done, metrics
            if done % cfg.run.log_every == 0 or done == o.steps:
                metrics_log.log(done, metrics)
            metrics_log.advance(done, metrics)
            if val_set is not None and done % cfg.run.val_every == 0:
                val = _validate(cfg, model, task, val_set, ctx, device, done)
                metrics_log.log(done, val, split="val")
            if (cfg.run.save_every and done % cfg.run.save_every == 0) or done == o.steps:
                rng = ctx.gather(capture_rng_state())  # every rank's RNG state, in rank order
                if ctx.rank == 0:
                    path = save_checkpoint(out_dir, done, model, _train_state(cfg, done, optimizer, scheduler, rng,
                                                                               len(train_set)),
                                           cfg.run.keep_last, gaze_proc.to_dict())
                    summary.checkpoints.append(path)
                ctx.barrier()
    finally:
        metrics_log.close()
    return summary


def _one_step(cfg: TrainConfig, model: nn.Module, task, batch: TrainBatch, temperature: float, seed: int,
              device: torch.device, autocast: bool):
    a = cfg.algorithm
    if a.name == "ntp":
        return ntp_step(model, batch, optimize_task_loss_prediction=a.optimize_task_loss_prediction, autocast=autocast)
    generator = torch.Generator(device=device).manual_seed(seed)
    frame_idx = sample_frames_to_reconstruct(batch.video_for_task.shape[1], cfg.task.recon_sample_rate,
                                             torch.Generator().manual_seed(seed), device)
    return grpo_step(model, task, batch, group_size=a.group_size, temperature=temperature, generator=generator,
                     discount_factor=a.discount_factor, optimize_task_loss_prediction=a.optimize_task_loss_prediction,
                     frame_idx=frame_idx, gazing_ratio=cfg.model.gazing_ratio,
                     task_loss_requirement=cfg.model.task_loss_requirement, autocast=autocast)
