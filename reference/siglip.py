"""Pure-PyTorch reference of AutoGaze-SigLIP: a SigLIP image ViT that encodes only gazed multi-scale patches.

Sequence layout (``n`` = tokens per frame = Σ_s (s // p)², scales ascending):
frame t's tokens are ``[scale 0 patches, scale 1 patches, ...]`` in unfold (row-major) order and
frame t starts at ``t · n``; ``gazing_pos`` indexes this ``T · n`` sequence. The model

1. resizes every frame to s × s per scale (bicubic, ``align_corners=False``, no antialias — even
   when the frame already is s × s), cuts p × p patches and gathers the gazed ones (pads → index 0,
   i.e. frame 0's first patch of the smallest scale);
2. embeds them with the patch conv used as a linear map over (channel, row, col)-flattened patches
   and adds the position table, bicubic-interpolated (``align_corners=False``, no antialias) from
   its √P × √P grid to (s // p)² unless (s // p)² already equals P. As upstream, the table is
   re-interpolated on every call (no cache);
3. runs pre-norm encoder layers (``gelu_pytorch_tanh`` MLP) with the attention pattern of
   :func:`attention_allowed`, then the post-layernorm and the optional MAP pooling head.

Upstream quirks kept: the MAP head pools over every position, pads included (no key mask), and
the features at pad positions are meaningless (a pad is a copy of patch 0 that attends itself
and the non-pad keys its frame may see).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autogaze_fast.siglip_config import SiglipVisionConfig, normalize_attn_type


@dataclass
class SiglipVisionOutput:
    """Output of the gazed SigLIP vision tower.

    Attributes:
        last_hidden_state: B × N × C after the post-layernorm (N gazed tokens, pads included).
        pooler_output: B × C from the MAP head, or ``None`` without a head.
        hidden_states: with ``output_hidden_states``, L + 1 tensors B × N × C: the embeddings, then
            each encoder layer's output (the last one before the post-layernorm); else ``None``.
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class GazeLayout:
    """Gazing information in the form the encoder uses.

    Attributes:
        gather_index: B × N int64 indices into the T · n patch sequence; pads replaced by 0.
        is_pad: B × N bool, true at padded gazing slots.
        frame_ids: N int64, the frame each slot belongs to (slots are grouped by frame in order).
    """

    gather_index: torch.Tensor
    is_pad: torch.Tensor
    frame_ids: torch.Tensor


def _field(gazing_info: Any, name: str) -> Any:
    found = name in gazing_info if isinstance(gazing_info, Mapping) else hasattr(gazing_info, name)
    if not found:
        raise ValueError(
            f"gazing_info has no '{name}'; pass AutoGaze's output (gazing_pos, if_padded_gazing, num_gazing_each_frame)"
        )
    return gazing_info[name] if isinstance(gazing_info, Mapping) else getattr(gazing_info, name)


def gaze_layout(
    gazing_info: Any | None, batch: int, frames: int, tokens_per_frame: int, device: torch.device
) -> GazeLayout:
    """Validate ``gazing_info`` and turn it into a :class:`GazeLayout`.

    Args:
        gazing_info: mapping or object with ``gazing_pos`` (B × N int), ``if_padded_gazing``
            (B × N bool or 0/1) and ``num_gazing_each_frame`` (T ints summing to N). ``None``
            means dense: every patch of every scale of every frame (N = T · n, no pads).
        batch, frames: B and T of the video.
        tokens_per_frame: n, the multi-scale patch count of one frame.

    Frame ids follow upstream: slot k belongs to frame t when
    ``Σ_{t'<t} num[t'] ≤ k < Σ_{t'≤t} num[t']``, whatever frame its ``gazing_pos`` points into.
    """
    if gazing_info is None:
        index = torch.arange(frames * tokens_per_frame, device=device).expand(batch, -1)
        frame_ids = torch.arange(frames, device=device).repeat_interleave(tokens_per_frame)
        no_pads = torch.zeros(batch, frames * tokens_per_frame, dtype=torch.bool, device=device)
        return GazeLayout(index, no_pads, frame_ids)
    pos = torch.as_tensor(_field(gazing_info, "gazing_pos"), device=device)
    pad = torch.as_tensor(_field(gazing_info, "if_padded_gazing"), device=device)
    num = torch.as_tensor(_field(gazing_info, "num_gazing_each_frame"), device=device)
    if pos.dim() != 2 or pos.shape[0] != batch:
        raise ValueError(f"gazing_pos must be B x N with B = {batch} (the video's batch), got shape {tuple(pos.shape)}")
    if pos.dtype.is_floating_point or pos.dtype == torch.bool:
        raise ValueError(f"gazing_pos must hold integer indices, got dtype {pos.dtype}")
    if pad.shape != pos.shape:
        raise ValueError(f"if_padded_gazing must have gazing_pos's shape {tuple(pos.shape)}, got {tuple(pad.shape)}")
    if pad.dtype != torch.bool:
        if pad.dtype.is_floating_point or ((pad != 0) & (pad != 1)).any():
            raise ValueError("if_padded_gazing must be bool (or integer 0/1)")
        pad = pad.bool()
    if num.dim() != 1 or num.numel() != frames:
        raise ValueError(
            f"num_gazing_each_frame must hold one count per frame (T = {frames}), got shape {tuple(num.shape)}"
        )
    if (num < 0).any() or int(num.sum()) != pos.shape[1]:
        raise ValueError(
            f"num_gazing_each_frame {num.tolist()} must be non-negative and sum to gazing_pos's length {pos.shape[1]}"
        )
    index = torch.where(pad, torch.zeros_like(pos), pos).long()
    limit = frames * tokens_per_frame
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= limit):
        raise ValueError(
            f"non-padded gazing_pos must lie in [0, T*n) = [0, {limit}) for T = {frames} frames of "
            f"n = {tokens_per_frame} tokens; got values in [{int(index.min())}, {int(index.max())}] — "
            "do the model's scales and patch size match the gaze's?"
        )
    frame_ids = torch.arange(frames, device=device).repeat_interleave(num.long())
    return GazeLayout(index, pad, frame_ids)


def check_frame_size(height: int, width: int, scales: list[int]) -> None:
    """Frames must be square at the model's largest scale (what the SigLIP processor at that size gives).

    The model resizes every frame to each scale, so another size would not fail by itself: upstream
    silently stretches a non-square frame, or upsamples a small one to the largest scale, and the
    features quietly lose detail or aspect. We refuse both instead.

    Raises:
        ValueError: ``height != width`` or ``height != max(scales)``.
    """
    side = max(scales)
    if height != width or height != side:
        raise ValueError(
            f"pixel_values frames are {height}x{width} (H x W) but this model's scales are {list(scales)}: frames "
            f"must be square at the largest scale, {side}x{side}. Preprocess them with the SigLIP image processor "
            f"at size {side}x{side}: autogaze_fast.SiglipImageProcessor.for_vision_model(model, checkpoint_dir) "
            "(resize to the largest scale, rescale, normalise); the model does not fix the input size for you"
        )


def attention_allowed(frame_ids: torch.Tensor, is_pad: torch.Tensor, attn_type: str) -> torch.Tensor:
    """Dense B × N × N boolean map: ``allowed[b, i, j]`` is true when query i may attend key j.

    With f = frame id of a slot:
      * ``block_causal``: f(j) ≤ f(i) (upstream's default: lower triangle ∪ same-frame blocks);
      * ``frame_independent``: f(j) = f(i) (upstream's ``frame_independent_encoding``);
      * ``causal``: j ≤ i; ``bidirectional``: every j (upstream offers these two only with
        flash-attention 2, where pads are moved to the end; non-pad outputs agree with this map);
    then keys at pads are removed and the diagonal is set (every token attends itself).
    """
    attn_type = normalize_attn_type(attn_type)
    n = frame_ids.numel()
    fi, fj = frame_ids[:, None], frame_ids[None, :]
    if attn_type == "block_causal":
        base = fj <= fi
    elif attn_type == "frame_independent":
        base = fj == fi
    elif attn_type == "causal":
        base = torch.ones(n, n, dtype=torch.bool, device=frame_ids.device).tril()
    else:
        base = torch.ones(n, n, dtype=torch.bool, device=frame_ids.device)
    allowed = base[None] & ~is_pad[:, None, :]
    return allowed | torch.eye(n, dtype=torch.bool, device=frame_ids.device)[None]


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """The Hugging Face activation ``name`` applied to ``x``."""
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return F.gelu(x, approximate="tanh")
    if name == "gelu":
        return F.gelu(x)
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    if name == "relu":
        return F.relu(x)
    if name == "silu":
        return F.silu(x)
    raise ValueError(f"unsupported activation {name!r}")


def interpolate_position_table(table: torch.Tensor, grid: int) -> torch.Tensor:
    """Resize a P × C position table (a √P × √P grid, row-major) to grid² × C.

    Returns the table itself when grid² == P; otherwise bicubic, ``align_corners=False``, no antialias.
    """
    positions, dim = table.shape
    if grid * grid == positions:
        return table
    side = math.isqrt(positions)
    square = table.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    resized = F.interpolate(square, size=(grid, grid), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(grid * grid, dim)


class SiglipVisionEmbeddings(nn.Module):
    """Multi-scale patchify + patch embedding + position embedding, gathered at the gazed slots."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.config = config
        p = config.patch_size
        self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=p, stride=p)
        self.position_embedding = nn.Embedding(config.num_positions, config.hidden_size)

    def multiscale_patches(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All patches of every scale.

        Args:
            pixel_values: B × T × c × H × W.
        Returns:
            patches: B × (T · n) × (c · p · p), flattened (channel, row, col) as the conv weight;
            positions: n × C, the position embedding of each slot of one frame.
        """
        b, t = pixel_values.shape[:2]
        frames = pixel_values.flatten(0, 1)
        p = self.config.patch_size
        patches, positions = [], []
        for s in self.config.scales:
            resized = F.interpolate(frames, size=(s, s), mode="bicubic", align_corners=False)
            patches.append(F.unfold(resized, kernel_size=p, stride=p).transpose(1, 2))
            positions.append(interpolate_position_table(self.position_embedding.weight, s // p))
        per_frame = torch.cat(patches, dim=1)
        return per_frame.reshape(b, t * per_frame.shape[1], per_frame.shape[2]), torch.cat(positions, dim=0)

    def forward(self, pixel_values: torch.Tensor, gather_index: torch.Tensor) -> torch.Tensor:
        """Embeddings of the gazed slots.

        Args:
            pixel_values: B × T × c × H × W.
            gather_index: B × N int64 indices into the T · n patch sequence (pads already 0).
        Returns:
            B × N × C.
        """
        chunk = self.config.max_embed_batch_size or pixel_values.shape[0]
        out = []
        for start in range(0, pixel_values.shape[0], chunk):
            patches, positions = self.multiscale_patches(pixel_values[start:start + chunk])
            index = gather_index[start:start + chunk]
            n = positions.shape[0]
            gathered = torch.gather(patches, 1, index[..., None].expand(-1, -1, patches.shape[-1]))
            weight = self.patch_embedding.weight.reshape(self.patch_embedding.out_channels, -1)
            out.append(F.linear(gathered, weight, self.patch_embedding.bias) + positions[index % n])
        return torch.cat(out, dim=0)


class SiglipAttention(nn.Module):
    """Multi-head self-attention under a boolean allowed-map (torch's fused attention, as upstream's sdpa path)."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        c = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(c, c)
        self.k_proj = nn.Linear(c, c)
        self.v_proj = nn.Linear(c, c)
        self.out_proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x: B × N × C; allowed: B × N × N bool. Returns B × N × C."""
        b, n, c = x.shape
        q, k, v = (
            proj(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], scale=self.head_dim**-0.5)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class SiglipMLP(nn.Module):
    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.act = config.hidden_act
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(activation(self.act, self.fc1(x)))


class SiglipEncoderLayer(nn.Module):
    """Pre-norm block: x + attn(LN1 x), then x + mlp(LN2 x)."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = SiglipAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), allowed)
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(config) for _ in range(config.num_hidden_layers))


class PoolingAttention(nn.Module):
    """Single-query multi-head attention with ``nn.MultiheadAttention``'s parameter layout (packed q/k/v)."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        c = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * c, c))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * c))
        self.out_proj = nn.Linear(c, c)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """query: B × 1 × C; x: B × N × C (every position is a key). Returns B × 1 × C."""
        b, n, c = x.shape
        h, d = self.num_heads, c // self.num_heads
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q = F.linear(query, wq, bq).reshape(b, 1, h, d).transpose(1, 2)
        k = F.linear(x, wk, bk).reshape(b, n, h, d).transpose(1, 2)
        v = F.linear(x, wv, bv).reshape(b, n, h, d).transpose(1, 2)
        weights = ((q @ k.transpose(-1, -2)) * d**-0.5).softmax(dim=-1)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(b, 1, c))


class SiglipMultiheadAttentionPoolingHead(nn.Module):
    """MAP head: a learned probe attends all tokens (pads included), then a residual MLP; returns B × C."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, config.hidden_size))
        self.attention = PoolingAttention(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.attention(self.probe.expand(x.shape[0], -1, -1), x)
        pooled = pooled + self.mlp(self.layernorm(pooled))
        return pooled[:, 0]


class SiglipVisionTransformer(nn.Module):
    """The gazed SigLIP vision tower; parameter names follow Hugging Face's ``vision_model.*`` keys."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = SiglipVisionEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = SiglipMultiheadAttentionPoolingHead(config) if config.vision_use_head else None

    def forward(
        self,
        pixel_values: torch.Tensor,
        gazing_info: Any | None = None,
        *,
        output_hidden_states: bool = False,
        attn_type: str | None = None,
    ) -> SiglipVisionOutput:
        """Encode the gazed patches of a video.

        Args:
            pixel_values: B × T × c × S × S with S the largest scale, normalised as the SigLIP
                processor does at that size (:func:`check_frame_size`; every frame is still resized to
                each scale, even S, as upstream). Cast to the model's dtype.
            gazing_info: AutoGaze's output (``gazing_pos``, ``if_padded_gazing``,
                ``num_gazing_each_frame``), indexing the T · n multi-scale sequence of this
                model's scales and patch size; ``None`` encodes every patch (dense baseline).
            output_hidden_states: also return the embeddings and every layer's output.
            attn_type: override the config's attention pattern for this call.
        Returns:
            :class:`SiglipVisionOutput` with ``last_hidden_state`` B × N × C.
        """
        pixel_values, layout = self.prepare_inputs(pixel_values, gazing_info)
        allowed = attention_allowed(layout.frame_ids, layout.is_pad, attn_type or self.config.attn_type)

        x = self.embeddings(pixel_values, layout.gather_index)
        states = [x] if output_hidden_states else None
        for layer in self.encoder.layers:
            x = layer(x, allowed)
            if states is not None:
                states.append(x)
        return self.finish(x, states)

    def finish(self, x: torch.Tensor, states: list[torch.Tensor] | None) -> SiglipVisionOutput:
        """Post-layernorm and optional MAP head on the encoder output x (B × N × C)."""
        x = self.post_layernorm(x)
        pooled = self.head(x) if self.head is not None else None
        return SiglipVisionOutput(x, pooled, tuple(states) if states is not None else None)

    def prepare_inputs(self, pixel_values: torch.Tensor, gazing_info: Any | None) -> tuple[torch.Tensor, GazeLayout]:
        """Validate ``pixel_values`` (B × T × c × S × S, S = largest scale), cast it to the weights' dtype/device, and
        turn ``gazing_info`` into a :class:`GazeLayout`."""
        cfg = self.config
        if pixel_values.dim() != 5:
            raise ValueError(
                f"pixel_values must be B x T x C x H x W (a batch of videos), got shape {tuple(pixel_values.shape)}"
            )
        b, t, c, h, w = pixel_values.shape
        if c != cfg.num_channels:
            raise ValueError(f"pixel_values has {c} channels, the model expects {cfg.num_channels} (B x T x C x H x W)")
        if not pixel_values.dtype.is_floating_point:
            raise ValueError(f"pixel_values must be a float tensor (normalised frames), got dtype {pixel_values.dtype}")
        check_frame_size(h, w, cfg.scales)
        weight = self.embeddings.patch_embedding.weight
        pixel_values = pixel_values.to(device=weight.device, dtype=weight.dtype)
        return pixel_values, gaze_layout(gazing_info, b, t, cfg.tokens_per_frame, weight.device)
