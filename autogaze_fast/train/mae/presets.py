"""Seeded random MAEs of known shapes (``task.recon_preset``), beside the gaze model's ``model.preset``.

For smoke runs and benchmarks without a checkpoint: the reward of a random MAE means nothing, but
every code path of GRPO runs. ``tiny`` is a 2-layer, 32-wide MAE (seconds on a laptop CPU);
``videomae-shape`` has the shape of upstream's reconstruction model (``facebook/vit-mae-large``:
24 × 1024 encoder, 8 × 512 decoder, with upstream's scale and time tables).

Weights, from ``torch.manual_seed(seed)``: linear / conv weights, cls and mask tokens and the
scale / time tables ~ N(0, initializer_range²); biases 0; layer norms 1 and 0; the two frozen
position tables are the fixed 2-D sine-cosine tables an MAE uses (cls row 0).
"""

from __future__ import annotations

from typing import Any

import torch

from autogaze_fast.config import ConfigError
from autogaze_fast.processing.autogaze import AutoGazeImageProcessor
from autogaze_fast.train.mae.config import MAEConfig
from autogaze_fast.train.mae.model import GazedMAE

__all__ = ["MAE_PRESETS", "preset_mae_config", "preset_mae_processor", "random_mae", "sincos_position_table"]

#: Shapes of the presets (everything else: :class:`MAEConfig`'s defaults, which are upstream's).
MAE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "decoder_hidden_size": 32, "decoder_num_hidden_layers": 2, "decoder_num_attention_heads": 2,
             "decoder_intermediate_size": 64},
    "videomae-shape": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                       "intermediate_size": 4096, "decoder_hidden_size": 512, "decoder_num_hidden_layers": 8,
                       "decoder_num_attention_heads": 16, "decoder_intermediate_size": 2048},
}

#: The preset's video transform: ``facebook/vit-mae-*``'s (bicubic, ImageNet mean / std) on ViViT's
#: ``x / 127.5 − 1`` rescale, as :func:`~.loading.mae_video_processor` builds it for those checkpoints.
PRESET_PREPROCESSING: dict[str, Any] = {
    "do_resize": True, "resample": 3, "do_center_crop": True, "do_rescale": True, "rescale_factor": 1 / 127.5,
    "offset": True, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
}


def preset_mae_config(name: str, **overrides: Any) -> MAEConfig:
    """The :class:`MAEConfig` of preset ``name``; ``overrides`` (``scales``, ``loss_type``, …) win.

    Raises:
        ConfigError: an unknown preset name.
    """
    if name not in MAE_PRESETS:
        raise ConfigError(f"unknown MAE preset {name!r}; choose one of {sorted(MAE_PRESETS)} (task.recon_preset)")
    return MAEConfig.from_dict(dict(MAE_PRESETS[name], model_type="vit_mae"), **overrides)


def sincos_position_table(dim: int, grid: int) -> torch.Tensor:
    """(grid² + 1, dim) fixed 2-D sine-cosine positions, row-major over the grid, a zero cls row first.

    The first half of the channels encodes the column, the second the row; each half is
    ``[sin(x · ω_k), cos(x · ω_k)]`` with ``ω_k = 10000^(−k / (dim / 4))``, k < dim / 4.
    """
    if dim % 4:
        raise ConfigError(f"MAE preset: the width {dim} must be a multiple of 4 for sine-cosine positions")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")

    def encode(x: torch.Tensor) -> torch.Tensor:
        angles = x.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([encode(cols), encode(rows)], dim=1)
    return torch.cat([table.new_zeros(1, dim), table]).float()


def random_mae(name: str, seed: int = 0, impl: str | None = None, **overrides: Any) -> GazedMAE:
    """A :class:`GazedMAE` of preset ``name`` with seeded random weights (module docstring), in eval mode."""
    config = preset_mae_config(name, **overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GazedMAE(config, impl=impl)
        std = config.initializer_range
        with torch.no_grad():
            for key, p in model.named_parameters():
                if key.endswith("position_embeddings") or key.endswith("decoder_pos_embed"):
                    p.copy_(sincos_position_table(p.shape[-1], config.grid)[None])
                elif "norm" in key.split(".")[-2] and key.endswith("weight"):
                    p.fill_(1.0)
                elif key.endswith("bias"):
                    p.zero_()
                else:
                    p.normal_(0.0, std)
    return model.eval()


def preset_mae_processor(scale: int) -> AutoGazeImageProcessor:
    """The preset MAE's video transform at frame side ``scale`` (shortest edge resize, ``scale`` square crop)."""
    scale = int(scale)
    if scale <= 0:
        raise ConfigError(f"MAE preset: the frame side must be positive, got {scale}")
    return AutoGazeImageProcessor.from_dict(dict(PRESET_PREPROCESSING, size={"shortest_edge": scale},
                                                 crop_size={"height": scale, "width": scale}))
