"""Configs of known shapes, for demos and benchmarks when the real checkpoint cannot be had."""

from __future__ import annotations

from typing import Any

import torch

from .config import AutoGazeConfig


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
    from .model import AutoGaze

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
    return model.eval()
