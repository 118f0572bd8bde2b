"""The gaze model's vision stem (a shallow causal video conv net) and connector.

Frames → patchify Conv3d (kernel = stride = (temporal_patch_size, 16, 16)) → LayerNorm over
channels → ``depth`` blocks of [causal temporal padding, 3×3×3 Conv3d, ReLU] (no residual) →
1×1×1 out_proj → tokens in row-major (h, w) order → ``+ pos_embed``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from autogaze_fast.config import AutoGazeConfig, VisionStemConfig


def resize_frames(video: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize (align_corners=False) of every frame of ``video`` (B, T, C, H, W) to size×size.

    Upstream does this even when the frames are already size×size (an exact copy then).
    """
    b = video.shape[0]
    frames = F.interpolate(video.flatten(0, 1), size=(size, size), mode="bicubic", align_corners=False)
    return frames.unflatten(0, (b, -1))


class CausalConvBlock(nn.Module):
    """Zero-pad (or prepend cached frames) in time, 3×3×3 Conv3d, ReLU.

    Streaming: the last ``kernel_t - 1`` frames of the padded input are returned as the cache the
    next call prepends instead of zeros.
    """

    def __init__(self, dim: int, kernel_t: int, kernel_s: int) -> None:
        super().__init__()
        self.kernel_t = kernel_t
        self.conv3d = nn.Conv3d(dim, dim, (kernel_t, kernel_s, kernel_s), padding=(0, (kernel_s - 1) // 2, (kernel_s - 1) // 2))

    def forward(self, x: torch.Tensor, past: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, T, H, W), past (B, C, kernel_t-1, H, W) or None → (B, C, T, H, W), new past."""
        if past is None:
            x = F.pad(x, (0, 0, 0, 0, self.kernel_t - 1, 0))
        else:
            x = torch.cat([past, x], dim=2)
        new_past = x[:, :, -(self.kernel_t - 1):]
        return F.relu(self.conv3d(x)), new_past


class VisionStem(nn.Module):
    """Upstream's ``vision_model``: parameter names ``temporal_conv``, ``norm``, ``blocks.{i}.conv3d``, ``out_proj``."""

    def __init__(self, config: VisionStemConfig) -> None:
        super().__init__()
        c = config.hidden_dim
        t, p = config.temporal_patch_size, config.kernel_size
        self.temporal_conv = nn.Conv3d(3, c, kernel_size=(t, p, p), stride=(t, p, p))
        self.norm = nn.LayerNorm(c)
        self.blocks = nn.ModuleList(
            CausalConvBlock(c, config.trunk_temporal_kernel_size, config.trunk_spatial_kernel_size) for _ in range(config.depth)
        )
        self.out_proj = nn.Conv3d(c, config.out_dim, kernel_size=1)

    def forward(
        self, video: torch.Tensor, past_conv_values: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """video (B, T, 3, H, W) → features (B, T', out_dim, H/p, W/p) and the per-block conv caches."""
        x = self.temporal_conv(video.permute(0, 2, 1, 3, 4))  # (B, C, T', h, w)
        x = self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        new_past = []
        for i, block in enumerate(self.blocks):
            x, past = block(x, None if past_conv_values is None else past_conv_values[i])
            new_past.append(past)
        return self.out_proj(x).transpose(1, 2), new_past


class Connector(nn.Module):
    """Adds a learned position embedding (num_tokens, C) to each frame's tokens."""

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(num_tokens, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T, num_tokens, C) → same shape."""
        return tokens + self.pos_embed[None, None]


def frame_tokens(stem: VisionStem, connector: Connector, video: torch.Tensor, config: AutoGazeConfig,
                 past_conv_values: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """video (B, T, 3, H, W) → vision tokens (B, T', num_tokens, C) and the stem's conv caches.

    Frames are first bicubic-resized to ``input_img_size`` (upstream quirk: always).
    """
    video = resize_frames(video, config.input_img_size)
    features, new_past = stem(video, past_conv_values)
    tokens = rearrange(features, "b t c h w -> b t (h w) c")
    return connector(tokens), new_past
