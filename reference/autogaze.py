"""Reference AutoGaze's outer forward (upstream's ``AutoGaze.forward``) over a gazing model:
budgets and stopping thresholds, generation or given gaze, log-probabilities, multi-scale gazing
masks and any-resolution tiling.

The functions take the gazing model (``reference.gazing_model.GazingModel`` or the fast one) and the
``training`` flag of the module that holds it, so that both implementations run this one readable
path: only the gazing model differs. :class:`autogaze_fast.AutoGaze` holds the gazing model (state
dict keys ``gazing_model.*``, as upstream) and calls :func:`autogaze_forward` once it has checked
the input.
"""

from __future__ import annotations

import random

import torch
from torch import nn

from autogaze_fast.config import AutoGazeConfig

from .resolution import needs_tiling, tile_video, untile_outputs


def gazing_masks(gazing_pos: torch.Tensor, if_padded_gazing: torch.Tensor, num_frames: int,
                 tokens_per_scale: list[int]) -> list[torch.Tensor]:
    """Per-scale 0/1 float maps (B, T', n_s) of which tokens were gazed; pads are ignored."""
    b = gazing_pos.shape[0]
    n = sum(tokens_per_scale)
    flat = torch.zeros(b, n * num_frames + 1, device=gazing_pos.device)
    index = torch.where(if_padded_gazing.bool(), torch.full_like(gazing_pos, n * num_frames), gazing_pos)
    flat[torch.arange(b, device=gazing_pos.device)[:, None], index] = 1
    per_frame = flat[:, :-1].reshape(b, num_frames, n)
    return list(per_frame.split(tokens_per_scale, dim=-1))


def _strategy(cfg: dict, training: bool, default: str) -> str:
    return cfg.get("sample_strategy_during_training" if training else "sample_strategy_during_inference", default)


# ---- budgets and thresholds from the config (used when the caller gives neither) ----
def sample_gazing_ratio(config: AutoGazeConfig, *, training: bool) -> float:
    """The clip's gazing ratio from ``gazing_ratio_config`` (fixed, uniform or exponential)."""
    cfg = config.gazing_ratio_config
    strategy = _strategy(cfg, training, "fixed")
    if strategy == "fixed":
        return float(cfg["fixed"]["gazing_ratio"])
    if strategy == "uniform":
        return random.uniform(cfg["uniform"]["gazing_ratio_min"], cfg["uniform"]["gazing_ratio_max"])
    if strategy == "exponential":
        e = cfg["exponential"]
        while True:
            ratio = random.expovariate(e["lambda"])
            if e["gazing_ratio_min"] <= ratio <= e["gazing_ratio_max"]:
                return ratio
    raise NotImplementedError(f"gazing_ratio_config strategy {strategy!r} is not supported")


def sample_task_loss_requirement(config: AutoGazeConfig, batch: int, frames: int, device, *, training: bool,
                                 force: bool = False) -> torch.Tensor | None:
    """(B, T') thresholds from ``task_loss_requirement_config``, or None when the config turns stopping off."""
    has = config.has_task_loss_requirement_during_training if training else config.has_task_loss_requirement_during_inference
    if not has and not force:
        return None
    cfg = config.task_loss_requirement_config
    strategy = _strategy(cfg, training, "fixed")
    if strategy == "fixed":
        value = cfg["fixed"]["task_loss_requirement"]
    elif strategy == "uniform":
        value = random.uniform(cfg["uniform"]["task_loss_requirement_min"], cfg["uniform"]["task_loss_requirement_max"])
    else:
        raise NotImplementedError(f"task_loss_requirement_config strategy {strategy!r} is not supported")
    return torch.ones(batch, frames, device=device) * value


def sample_ratio_each_frame(gazing_model: nn.Module, video: torch.Tensor, ratio: float, frames: int, *,
                            training: bool, temperature: float) -> torch.Tensor:
    """(T',) per-frame ratios from ``gazing_ratio_each_frame_config`` (uniform, dirichlet or self)."""
    config = gazing_model.config
    cfg = config.gazing_ratio_each_frame_config
    strategy = _strategy(cfg, training, "uniform")
    if strategy == "uniform":
        return torch.ones(frames) * ratio
    if strategy == "dirichlet":
        alpha = cfg["dirichlet"]["alpha"]
        if isinstance(alpha, str):
            alpha = torch.tensor([float(a) for a in alpha.split(",")])
        sample = torch.distributions.Dirichlet(torch.ones(frames) * alpha).sample()
        return (sample * ratio * frames).clamp(0, 1)
    if strategy == "self":
        if video.shape[0] != 1:
            raise ValueError("the 'self' per-frame ratio strategy supports batch size 1 only (as upstream)")
        n = config.num_vision_tokens_each_frame
        budget = (torch.ones(frames) * ratio * n).long().clamp(min=1)
        requirement = sample_task_loss_requirement(config, 1, frames, video.device, training=training, force=True)
        out = gazing_model.generate(video, budget.tolist(), requirement, do_sample=training, temperature=temperature)
        kept = [(~p).sum() for p in out["if_padded_gazing"].split(out["num_gazing_each_frame"].tolist(), dim=1)]
        return torch.stack(kept).float() / n
    raise NotImplementedError(f"gazing_ratio_each_frame_config strategy {strategy!r} is not supported")


def frame_budgets(gazing_model: nn.Module, video: torch.Tensor, gazing_ratio, task_loss_requirement, *,
                  training: bool, temperature: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-frame token budgets (T',) long and thresholds (B, T') or None, as upstream derives them."""
    config = gazing_model.config
    b, t = video.shape[:2]
    frames = t // config.frame_sampling_rate
    if gazing_ratio is None and task_loss_requirement is None:
        ratio = sample_ratio_each_frame(gazing_model, video, sample_gazing_ratio(config, training=training), frames,
                                        training=training, temperature=temperature)
        requirement = sample_task_loss_requirement(config, b, frames, video.device, training=training)
    else:
        if gazing_ratio is None:
            gazing_ratio = 1
        if isinstance(gazing_ratio, (list, tuple)):
            gazing_ratio = torch.tensor(gazing_ratio)
        ratio = torch.ones(frames) * gazing_ratio
        requirement = None
        if task_loss_requirement is not None:
            requirement = torch.ones(b, frames, device=video.device) * task_loss_requirement
    return (ratio * config.num_vision_tokens_each_frame).to(torch.long).clamp(min=1), requirement


def autogaze_forward(
    gazing_model: nn.Module,
    video: torch.Tensor,
    *,
    training: bool,
    gazing_ratio=None,
    task_loss_requirement=None,
    target_scales=None,
    target_patch_size=None,
    gazing_info=None,
    temperature: float = 1.0,
    generate_only: bool = False,
    use_cache: bool = False,
    past_key_values=None,
    past_inputs_embeds=None,
    past_attention_mask=None,
    past_conv_values=None,
    generator: torch.Generator | None = None,
) -> dict:
    """Upstream's ``AutoGaze.forward`` on a validated video (B, T, 3, H, W); see :class:`autogaze_fast.AutoGaze`.

    ``gazing_model`` generates (``generate``) and scores (``teacher_forced``) the gaze; ``training``
    (the holding module's mode) picks the config's training strategies and sampled generation.
    """
    config = gazing_model.config
    tiling = None
    if target_scales is not None and target_patch_size is not None and needs_tiling(config, target_scales, target_patch_size):
        video, tiling = tile_video(video, config, target_scales, target_patch_size)
    frames = video.shape[1] // config.frame_sampling_rate

    if not gazing_info:
        budgets, requirement = frame_budgets(gazing_model, video, gazing_ratio, task_loss_requirement,
                                             training=training, temperature=temperature)
        gazing_info = gazing_model.generate(
            video, budgets.tolist(), requirement,
            do_sample=training, temperature=temperature, use_cache=use_cache,
            past_key_values=past_key_values, past_inputs_embeds=past_inputs_embeds,
            past_attention_mask=past_attention_mask, past_conv_values=past_conv_values,
            generator=generator,
        )
    gazing_pos = gazing_info["gazing_pos"]
    if_padded = gazing_info["if_padded_gazing"]
    requirement = gazing_info.get("task_loss_requirement")

    log_action_probs = task_loss_prediction = None
    if not generate_only:
        probs, task_loss_prediction = gazing_model.teacher_forced(
            video, gazing_pos, if_padded, gazing_info["num_gazing_each_frame"])
        log_action_probs = torch.log(probs + 1e-8)

    out = {
        "gazing_pos": gazing_pos,
        "log_action_probs": log_action_probs,
        "gazing_mask": gazing_masks(gazing_pos, if_padded, frames, config.tokens_per_scale),
        "scales": list(config.scales),
        "frame_sampling_rate": config.frame_sampling_rate,
        "num_vision_tokens_each_frame": config.num_vision_tokens_each_frame,
        "num_gazing_each_frame": gazing_info["num_gazing_each_frame"],
        "if_padded_gazing": if_padded,
        "task_loss_prediction": task_loss_prediction,
        "has_task_loss_requirement": requirement is not None,
        "task_loss_requirement": requirement,
        "past_key_values": gazing_info.get("past_key_values") if use_cache else None,
        "past_input_embeds": gazing_info.get("past_input_embeds") if use_cache else None,
        "past_attention_mask": gazing_info.get("past_attention_mask") if use_cache else None,
        "past_conv_values": gazing_info.get("past_conv_values") if use_cache else None,
    }
    if tiling is not None:
        out = untile_outputs(out, tiling)
    return out
