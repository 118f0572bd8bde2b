"""Configs of known shapes, for demos and benchmarks when the real checkpoint cannot be had."""

from __future__ import annotations

from typing import Any

import torch

from autogaze_fast.config import AutoGazeConfig
from autogaze_fast.defaults import RANDOM
from autogaze_fast.devices import default_device, torch_dtype
from autogaze_fast.encoder import GazedVideoEncoder
from autogaze_fast.model import AutoGaze
from autogaze_fast.processing.autogaze import (
    NVIDIA_PREPROCESSING,  # re-exported: README examples import it from here
    AutoGazeImageProcessor,
)
from autogaze_fast.processing.siglip import SiglipImageProcessor
from autogaze_fast.siglip import SiglipVisionModel
from autogaze_fast.siglip_config import SiglipVisionConfig


def nvidia_autogaze_config_dict(num_multi_token_pred: int = 10) -> dict[str, Any]:
    """A ``config.json`` dict with the shape of ``nvidia/AutoGaze``: scales 32+64+112+224 (N = 265),
    conv stem 192 wide, a 4-layer 192-wide LLaMA with 6 heads and K = 10 multi-token prediction."""
    n = 265
    return {
        "model_type": "autogaze",
        "scales": "32+64+112+224",
        "num_vision_tokens_each_frame": n,
        "max_num_frames": 16,
        "gazing_ratio_config": {"sample_strategy_during_training": "fixed", "sample_strategy_during_inference": "fixed",
                                "fixed": {"gazing_ratio": 0.75}},
        "gazing_ratio_each_frame_config": {"sample_strategy_during_training": "uniform",
                                           "sample_strategy_during_inference": "uniform"},
        "has_task_loss_requirement_during_training": False,
        "has_task_loss_requirement_during_inference": True,
        "task_loss_requirement_config": {"sample_strategy_during_training": "fixed", "sample_strategy_during_inference": "fixed",
                                         "fixed": {"task_loss_requirement": 0.7}},
        "gaze_model_config": {
            "input_img_size": 224,
            "num_vision_tokens_each_frame": n,
            "vision_model_config": {"hidden_dim": 192, "out_dim": 192, "depth": 1, "kernel_size": 16,
                                    "temporal_patch_size": 1, "trunk_temporal_kernel_size": 3, "trunk_spatial_kernel_size": 3},
            "connector_config": {"hidden_dim": 192, "num_tokens": 196},
            "gaze_decoder_config": {
                "hidden_size": 192, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 6,
                "num_key_value_heads": 6, "head_dim": 32, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 8192},
                "vocab_size": n + 1, "eos_token_id": n, "num_multi_token_pred": num_multi_token_pred,
            },
        },
    }


def random_autogaze(seed: int = 0, impl: str | None = None, num_multi_token_pred: int = 10):
    """An NVIDIA-shaped :class:`~autogaze_fast.AutoGaze` with seeded random weights (its gaze is meaningless)."""
    config = AutoGazeConfig.from_dict(nvidia_autogaze_config_dict(num_multi_token_pred))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoGaze(config, impl=impl)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                    continue
                if p.dim() == 1:
                    p.normal_(0, 0.02)
                else:
                    p.normal_(0, 0.02 if "pos_embed" not in name else 1.0)
    model.name_or_path = f"{RANDOM} (NVIDIA shape, seed {seed})"
    return model.eval()


def siglip_b16_config(scales: list[int] | None = None):
    """A :class:`~autogaze_fast.siglip_config.SiglipVisionConfig` of the SigLIP-B/16 shape (12 layers,
    768 wide, 12 heads, patch 16, MAP head) at ``scales`` (default: AutoGaze's 32+64+112+224)."""
    return SiglipVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                              image_size=224, patch_size=16, scales=list(scales or [32, 64, 112, 224]),
                              vision_use_head=True)


def random_siglip(seed: int = 0, impl: str | None = None, scales: list[int] | None = None):
    """A SigLIP-B/16-shaped :class:`~autogaze_fast.SiglipVisionModel` with seeded random weights
    (normal(0, 0.02); layer-norm weights stay 1): its features are meaningless."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SiglipVisionModel(siglip_b16_config(scales), impl=impl)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not ("norm" in name and name.endswith("weight")):
                    p.normal_(0, 0.02)
    return model.eval()


def random_encoder(seed: int = 0, dense: bool = False, impl: str | None = None, device=None, dtype=None, **options):
    """A :class:`~autogaze_fast.encoder.GazedVideoEncoder` over :func:`random_autogaze` and
    :func:`random_siglip` (``dense``: no gaze model, SigLIP at the single scale 224), with upstream's
    NVIDIA preprocessing for the gaze model and SigLIP's default preprocessing."""
    device = torch.device(device) if device is not None else default_device()
    dtype = torch_dtype(dtype)
    gaze = None if dense else random_autogaze(seed, impl=impl).to(device=device, dtype=dtype)
    vision = random_siglip(seed, impl=impl, scales=[224] if dense else None).to(device=device, dtype=dtype)
    gaze_processor = None if dense else AutoGazeImageProcessor.from_dict(NVIDIA_PREPROCESSING)
    return GazedVideoEncoder(gaze, vision, gaze_processor, SiglipImageProcessor.for_vision_model(vision), **options)
