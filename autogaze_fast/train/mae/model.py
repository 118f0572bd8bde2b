"""The gazed multi-scale MAE: encode only the gazed tokens of every scale, reconstruct chosen frames.

Reproduces upstream's ``ViTMAEForPreTraining`` of ``autogaze/tasks/video_mae_reconstruction`` (the
parity test runs it against outputs of upstream's own code). For a video (B, T, c, S, S) with S the
largest scale, n = Σ_s (s/p)² tokens per frame in gaze order (scales ascending, row-major patches):

Encoder
    1. every frame is resized to each scale (bicubic), cut into p × p patches and embedded (patch
       conv as a linear map) + the position table bicubic-resized to the scale's grid + the scale's
       embedding + the frame's time embedding (frame = token index // n);
    2. only the gazed tokens are kept (pads are a copy of token 0 and masked as keys), a cls token
       (``cls_token + position_embeddings[0]``) goes in front;
    3. pre-norm ViT layers with block-causal attention (:mod:`.mae_layers`), a final layernorm.
Decoder
    4. ``decoder_embed`` of every latent; the T · n slots are filled with ``mask_token`` and the
       gazed latents are scattered to their positions; each slot gets the decoder position table
       (resized as a 1-D strip per scale — upstream's quirk), the scale embedding and the time embedding;
    5. the decoder sequence, frame by frame: the *whole* frame (all n slots) for a frame to
       reconstruct, else only that frame's gazed slots (pads masked); a cls token
       (``decoder_embed(latent cls) + decoder_pos_embed[0]``) in front;
    6. pre-norm ViT layers (block-causal), ``decoder_norm``, ``decoder_pred`` → p · p · c values per
       token; the largest scale's (S/p)² tokens of each reconstructed frame are un-patchified into
       an S × S image.
Upstream quirk kept: a reconstructed frame's decoder tokens also attend every earlier
*reconstructed* frame in full (mask tokens included), so a frame's loss depends on which other
frames are reconstructed with it.

``impl="reference"``: every patch of every scale is unfolded and gathered, attention under a dense
boolean map. ``impl="fast"``: only the gazed patches are read (fused gathered patch embedding,
kernel family 1), attention over the packed tokens without an N × N mask (kernel family 3), and
frames after the last reconstructed one are dropped before the encoder (block-causal attention
makes them irrelevant to every reconstructed frame). Both give the same result (fp32 rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autogaze_fast.impl import resolve_impl
from autogaze_fast.kernels.gathered_patch_embed import PATCH_SIZES, gathered_patch_embed
from autogaze_fast.reference.siglip import GazeLayout, gaze_layout
from autogaze_fast.train.mae.config import MAEConfig
from autogaze_fast.train.mae.layers import (
    MAELayer,
    interpolate_position_grid,
    interpolate_position_sequence,
    multiscale_patches,
    unfold_patches,
    unpatchify,
)

__all__ = ["GazedMAE", "MAEPrediction", "check_frame_idx"]


@dataclass
class MAEPrediction:
    """What the MAE predicts for the frames it reconstructs (R of them, in ``frame_idx`` order).

    Attributes:
        logits: (B, R, (S/p)², p·p·c) predicted patches of the largest scale, (row, col, channel) ordered.
        reconstruction: (B, R, c, S, S) the same, un-patchified (in the video's normalised space).
        frame_idx: (R,) long, the reconstructed frames.
    """

    logits: torch.Tensor
    reconstruction: torch.Tensor
    frame_idx: torch.Tensor


def check_frame_idx(frame_idx: Any, num_frames: int, device: torch.device) -> torch.Tensor:
    """``frame_idx`` as an (R,) long tensor of distinct frames in [0, T); a clear ValueError otherwise."""
    idx = torch.as_tensor(frame_idx, device=device)
    if idx.ndim != 1 or idx.numel() == 0 or idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"frame_idx_to_reconstruct must be a non-empty 1-D integer tensor, got {frame_idx!r}")
    values = idx.tolist()
    if min(values) < 0 or max(values) >= num_frames or len(set(values)) != len(values):
        raise ValueError(f"frame_idx_to_reconstruct must hold distinct frames in [0, {num_frames}), got {values}")
    return idx.long()


class _Embeddings(nn.Module):
    """Encoder tables: ``cls_token``, ``position_embeddings`` (frozen), ``patch_embeddings.projection``,
    ``scale_embed``, ``time_embed``."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, cfg.grid ** 2 + 1, cfg.hidden_size), requires_grad=False)
        self.patch_embeddings = nn.Module()
        self.patch_embeddings.projection = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, cfg.patch_size)
        if cfg.scale_embed:
            self.scale_embed = nn.Parameter(torch.zeros(len(cfg.scales), cfg.hidden_size))
        if cfg.time_embed:
            self.time_embed = nn.Parameter(torch.zeros(cfg.max_num_frames, cfg.hidden_size))


class _Encoder(nn.Module):
    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.layer = nn.ModuleList(
            MAELayer(cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size, cfg.hidden_act,
                     cfg.layer_norm_eps, cfg.qkv_bias) for _ in range(cfg.num_hidden_layers))


class MAEEncoderModel(nn.Module):
    """``vit.*``: embeddings, encoder layers, final layernorm."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class MAEDecoder(nn.Module):
    """``decoder.*``: embed, mask token, frozen position table, layers, norm, pixel head, scale/time tables."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        width = cfg.decoder_hidden_size
        self.decoder_embed = nn.Linear(cfg.hidden_size, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, cfg.grid ** 2 + 1, width), requires_grad=False)
        self.decoder_layers = nn.ModuleList(
            MAELayer(width, cfg.decoder_num_attention_heads, cfg.decoder_intermediate_size, cfg.hidden_act,
                     cfg.layer_norm_eps, cfg.qkv_bias) for _ in range(cfg.decoder_num_hidden_layers))
        self.decoder_norm = nn.LayerNorm(width, eps=cfg.layer_norm_eps)
        self.decoder_pred = nn.Linear(width, cfg.patch_dim)
        if cfg.scale_embed:
            self.decoder_scale_embed = nn.Parameter(torch.zeros(len(cfg.scales), width))
        if cfg.time_embed:
            self.time_embed = nn.Parameter(torch.zeros(cfg.max_num_frames, width))


class GazedMAE(nn.Module):
    """The gazed multi-scale MAE (state dict keys ``vit.*`` and ``decoder.*`` as ``ViTMAEForPreTraining``).

    Call ``model(pixel_values, gazing_info, frame_idx)`` → :class:`MAEPrediction`; the per-frame loss
    is :class:`~autogaze_fast.train.mae.loss.ReconstructionLoss`'s job (see also
    :class:`~autogaze_fast.train.mae.task.MAEReconstructionTask`).
    """

    def __init__(self, config: MAEConfig, impl: str | None = None):
        super().__init__()
        self.config = config
        self.impl = resolve_impl(impl)
        self.vit = MAEEncoderModel(config)
        self.decoder = MAEDecoder(config)

    # ------------------------------------------------------------------ tables
    def _scale_of_slot(self, device: torch.device) -> torch.Tensor:
        """(n,) long: the scale index of each slot of a frame."""
        counts = torch.tensor(self.config.tokens_per_scale, device=device)
        return torch.repeat_interleave(torch.arange(len(counts), device=device), counts)

    def encoder_slot_table(self) -> torch.Tensor:
        """(n, C): position (2-D bicubic per scale) + scale embedding of each slot of a frame."""
        cfg, emb = self.config, self.vit.embeddings
        table = torch.cat([interpolate_position_grid(emb.position_embeddings[0, 1:], s // cfg.patch_size)
                           for s in cfg.scales])
        if cfg.scale_embed:
            table = table + emb.scale_embed[self._scale_of_slot(table.device)]
        return table

    def decoder_slot_table(self) -> torch.Tensor:
        """(n, C_dec): decoder position (1-D strip resize per scale) + scale embedding of each slot."""
        cfg, dec = self.config, self.decoder
        table = torch.cat([interpolate_position_sequence(dec.decoder_pos_embed[0, 1:], n) for n in cfg.tokens_per_scale])
        if cfg.scale_embed:
            table = table + dec.decoder_scale_embed[self._scale_of_slot(table.device)]
        return table

    # ------------------------------------------------------------------ encoder
    def embed(self, pixel_values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, T, c, S, S) frames, (B, N) token ids (pads → 0) → (B, N, C) embeddings (no cls)."""
        cfg, emb = self.config, self.vit.embeddings
        per_scale = multiscale_patches(pixel_values, cfg.scales, cfg.patch_size)
        conv = emb.patch_embeddings.projection
        table = self.encoder_slot_table()
        n = cfg.tokens_per_frame
        if self.impl == "fast" and cfg.patch_size in PATCH_SIZES and cfg.num_channels == 3:
            x = gathered_patch_embed(per_scale, index, conv.weight, conv.bias, table, check_index=False)
        else:
            patches = unfold_patches(per_scale, cfg.patch_size)
            gathered = torch.gather(patches, 1, index[..., None].expand(-1, -1, patches.shape[-1]))
            x = nn.functional.linear(gathered, conv.weight.flatten(1), conv.bias) + table[index % n]
        if cfg.time_embed:
            x = x + emb.time_embed[index // n]
        return x

    def encode(self, pixel_values: torch.Tensor, layout: GazeLayout) -> torch.Tensor:
        """Latents (B, 1 + N, C): cls, then one per gaze slot (pads' latents are meaningless)."""
        emb = self.vit.embeddings
        x = self.embed(pixel_values, layout.gather_index)
        cls = (emb.cls_token + emb.position_embeddings[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        frame_ids, is_pad = _with_cls(layout.frame_ids, layout.is_pad)
        for layer in self.vit.encoder.layer:
            x = layer(x, frame_ids, is_pad, self.impl)
        return self.vit.layernorm(x)

    # ------------------------------------------------------------------ decoder
    def decode(self, latent: torch.Tensor, layout: GazeLayout, counts: torch.Tensor, num_frames: int,
               frame_idx: torch.Tensor) -> torch.Tensor:
        """Decoder outputs (B, R, n, p·p·c) for the reconstructed frames, in ``frame_idx`` order."""
        cfg, dec = self.config, self.decoder
        b, n = latent.shape[0], cfg.tokens_per_frame
        y = dec.decoder_embed(latent)
        width = y.shape[-1]
        slots = num_frames * n
        # the T·n slots: mask tokens, gazed latents scattered in (pads go to a dropped extra slot)
        target = torch.where(layout.is_pad, slots, layout.gather_index)
        full = dec.mask_token.to(y.dtype).expand(b, slots + 1, width)
        full = full.scatter(1, target[..., None].expand(-1, -1, width), y[:, 1:])[:, :slots]
        full = full.view(b, num_frames, n, width) + self.decoder_slot_table()
        if cfg.time_embed:
            full = full + dec.time_embed[:num_frames, None, :]
        full = full.reshape(b, slots, width)

        # the decoder sequence: whole frames to reconstruct, gazed slots elsewhere
        recon = set(frame_idx.tolist())
        index_parts, pad_parts, id_parts = [], [], []
        starts = torch.cumsum(counts, 0) - counts
        for t in range(num_frames):
            if t in recon:
                index_parts.append((torch.arange(n, device=latent.device) + t * n).expand(b, -1))
                pad_parts.append(torch.zeros(b, n, dtype=torch.bool, device=latent.device))
                length = n
            else:
                lo, hi = int(starts[t]), int(starts[t] + counts[t])
                index_parts.append(layout.gather_index[:, lo:hi])
                pad_parts.append(layout.is_pad[:, lo:hi])
                length = hi - lo
            id_parts.append(torch.full((length,), t, dtype=torch.long, device=latent.device))
        index = torch.cat(index_parts, 1)
        is_pad = torch.cat(pad_parts, 1)
        frame_ids = torch.cat(id_parts)
        x = torch.gather(full, 1, index[..., None].expand(-1, -1, width))
        cls = y[:, :1] + dec.decoder_pos_embed[:, :1]
        x = torch.cat([cls, x], dim=1)
        frame_ids, is_pad = _with_cls(frame_ids, is_pad)
        for layer in dec.decoder_layers:
            x = layer(x, frame_ids, is_pad, self.impl)
        x = dec.decoder_pred(dec.decoder_norm(x))[:, 1:]

        # the reconstructed frames' tokens, in frame_idx order
        seq_len = torch.tensor([n if t in recon else int(counts[t]) for t in range(num_frames)], device=latent.device)
        seq_start = torch.cumsum(seq_len, 0) - seq_len
        keep = (seq_start[frame_idx][:, None] + torch.arange(n, device=latent.device)).reshape(-1)
        return x[:, keep].view(b, frame_idx.numel(), n, -1)

    # ------------------------------------------------------------------ forward
    def forward(self, pixel_values: torch.Tensor, gazing_info: Any, frame_idx: Any) -> MAEPrediction:
        """Reconstruct ``frame_idx`` of each video from its gazed tokens.

        Args:
            pixel_values: (B, T, c, S, S), S the largest scale, normalised by the MAE's video
                transform (:func:`~autogaze_fast.train.mae.loading.mae_video_processor`).
            gazing_info: AutoGaze's output (mapping or object) with ``gazing_pos`` (B, N),
                ``if_padded_gazing`` (B, N) and ``num_gazing_each_frame`` (T,), indexing the T · n
                tokens of this MAE's scales and patch size.
            frame_idx: (R,) distinct frames to reconstruct (upstream's ``frame_idx_to_reconstruct``).
        Returns:
            :class:`MAEPrediction`.
        """
        cfg = self.config
        pixel_values = self._check_video(pixel_values)
        b, t = pixel_values.shape[:2]
        device = pixel_values.device
        layout = gaze_layout(gazing_info, b, t, cfg.tokens_per_frame, device)
        counts = torch.bincount(layout.frame_ids, minlength=t)
        frame_idx = check_frame_idx(frame_idx, t, device)
        frames_used = t
        if self.impl == "fast":
            frames_used, layout, counts = _truncate(layout, counts, int(frame_idx.max()) + 1, cfg.tokens_per_frame)
        video = pixel_values[:, :frames_used]
        latent = self.encode(video, layout)
        out = self.decode(latent, layout, counts, frames_used, frame_idx)
        logits = out[:, :, cfg.tokens_per_frame - cfg.tokens_per_scale[-1]:]
        side = cfg.scales[-1]
        image = unpatchify(logits, cfg.patch_size, cfg.num_channels, side, side)
        return MAEPrediction(logits, image, frame_idx)

    def _check_video(self, pixel_values: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must be a (B, T, C, H, W) tensor, got {getattr(pixel_values, 'shape', pixel_values)}")
        b, t, c, h, w = pixel_values.shape
        if c != cfg.num_channels or not pixel_values.is_floating_point():
            raise ValueError(f"pixel_values must be float with {cfg.num_channels} channels (B, T, C, H, W), got "
                             f"{pixel_values.dtype} {tuple(pixel_values.shape)}")
        side = cfg.scales[-1]
        if h != side or w != side:
            raise ValueError(f"pixel_values frames are {h}x{w} but this MAE reconstructs {side}x{side} frames (its "
                             f"largest scale of {cfg.scales}); preprocess the video with mae_video_processor(..., "
                             f"scale={side})")
        if t > cfg.max_num_frames and cfg.time_embed:
            raise ValueError(f"the video has {t} frames but the MAE's time embedding covers max_num_frames = "
                             f"{cfg.max_num_frames}; cut the video into clips of at most that many frames")
        weight = self.decoder.decoder_pred.weight
        return pixel_values.to(device=weight.device, dtype=weight.dtype)


def _with_cls(frame_ids: torch.Tensor, is_pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prepend the cls token: frame id −1 (before every frame), never a pad."""
    ids = torch.cat([frame_ids.new_full((1,), -1), frame_ids])
    pads = torch.cat([is_pad.new_zeros(is_pad.shape[0], 1), is_pad], dim=1)
    return ids, pads


def _truncate(layout: GazeLayout, counts: torch.Tensor, frames: int, n: int
              ) -> tuple[int, GazeLayout, torch.Tensor]:
    """Keep frames [0, frames) and their gaze slots when every kept non-pad slot points into them (as AutoGaze's
    output always does); otherwise keep everything (still exact, only slower)."""
    if frames >= counts.numel():
        return counts.numel(), layout, counts
    kept = int(counts[:frames].sum())
    index = layout.gather_index[:, :kept]
    pads = layout.is_pad[:, :kept]
    if index.numel() and int(torch.where(pads, 0, index).max()) >= frames * n:
        return counts.numel(), layout, counts
    return frames, GazeLayout(index, pads, layout.frame_ids[:kept]), counts[:frames]
