"""The gazed-ViT core: what every vision family shares, written once.

A family adapter (a ``nn.Module`` holding the checkpoint's parameters under their Hugging Face names)
mixes in :class:`GazedViT` and answers a few hooks:

* :meth:`GazedViT.vit_patch_conv` — the patch conv ``(C, c, p, p)`` weight and bias (or ``None``);
* :meth:`GazedViT.vit_patch_positions` — the patch position table at a ``gh × gw`` grid, interpolated
  the family's own way (quirks included);
* :meth:`GazedViT.vit_prefix` — the ``(P, C)`` prefix tokens one frame carries (CLS, registers) with
  their positions, or ``None``;
* :meth:`GazedViT.vit_blocks` — each block as :class:`BlockParts` (pre-norm, attention projections,
  MLP, optional LayerScale);
* :meth:`GazedViT.vit_finish` — the family's final norm and pooling.

The core does the rest, in two modes:

* **dense** (``pixel_values`` ``(B, c, H, W)``, no gaze): as the family's transformers vision model —
  patch conv, positions at ``H/p × W/p``, prefix tokens first, full attention;
* **gazed** (``pixel_values`` ``(B, T, c, S, S)`` with AutoGaze's ``gazing_info``): every frame is
  resized to each scale (bicubic), only the gazed patches are embedded (kernel family 1) with that
  scale's interpolated positions, each frame's prefix tokens are put in front of its gazed tokens,
  and attention runs over the packed sequence with per-token frame ids and pad flags (kernel family
  3: block-causal / causal / bidirectional / frame-independent). With ``drop_pads`` the pad slots are
  removed before the first block (rows padded to the batch's largest real count), so the blocks run
  on real tokens only; real tokens' outputs are unchanged (pads never act as keys).

``kernels=False`` runs the same gazed math with no kernel at all (every patch unfolded, then gathered;
attention through an explicit ``B × L × L`` boolean mask): the plain reference the fast path is tested
against.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from autogaze_fast.reference.siglip import SiglipVisionOutput, activation, gaze_layout
from autogaze_fast.siglip_config import normalize_attn_type

#: Inference runs the MLP over this many tokens at a time (keeps the (rows, intermediate) activation
#: under glibc's mmap threshold and recycled from the heap; measured ~10% faster on CPU for SigLIP-B).
MLP_CHUNK_ROWS = 1024
#: Patch sizes the gathered-patch-embedding kernel supports; others take the unfold path.
KERNEL_PATCH_SIZES = (14, 16)


@dataclass
class VisionOutput(SiglipVisionOutput):
    """Output of a gazed / dense ViT.

    Attributes:
        last_hidden_state: dense ``(B, P + h·w, C)`` (prefix tokens first, as transformers); gazed
            ``(B, N, C)``, one row per gaze slot (pads included; zeros at pads with ``drop_pads``).
        pooler_output: the family's pooling: dense ``(B, C)``; gazed, per frame ``(B, T, C)`` for a
            CLS family, ``(B, C)`` for SigLIP's MAP head; ``None`` without one.
        hidden_states: with ``output_hidden_states``, L + 1 tensors laid out as ``last_hidden_state``
            (the embeddings, then every block's output, before the final norm).
        prefix_hidden_state: gazed only, ``(B, T, P, C)`` the prefix tokens of every frame after the
            family's final norm (``None`` without prefix tokens).
    """

    prefix_hidden_state: torch.Tensor | None = None


class BlockParts(NamedTuple):
    """One pre-norm block: ``x += ls1 · o(attn(q, k, v of norm1 x))``, then ``x += ls2 · fc2(act(fc1(norm2 x)))``."""

    norm1: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    norm2: nn.Module
    fc1: nn.Linear
    fc2: nn.Linear
    act: str
    scale1: torch.Tensor | None = None
    scale2: torch.Tensor | None = None


def resize_position_grid(table: torch.Tensor, gh: int, gw: int, *, antialias: bool = False,
                         in_float32: bool = False) -> torch.Tensor:
    """A ``(P, C)`` position table on its ``√P × √P`` grid (row-major) at ``gh × gw``: ``(gh·gw, C)``.

    The table itself when the grid already matches; else bicubic, ``align_corners=False``, with the
    family's ``antialias`` (DINOv2-with-registers) and, with ``in_float32``, computed in float32 and cast
    back (DINOv2's).
    """
    positions, dim = table.shape
    side = int(round(positions ** 0.5))
    if side * side != positions:
        raise ValueError(f"the position table has {positions} rows, not a square grid")
    if gh == side and gw == side:
        return table
    grid = table.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    source = grid.float() if in_float32 else grid
    resized = F.interpolate(source, size=(gh, gw), mode="bicubic", align_corners=False, antialias=antialias)
    return resized.to(table.dtype).permute(0, 2, 3, 1).reshape(gh * gw, dim)


@dataclass
class PackedSequence:
    """The gazed tokens of a batch laid out as the blocks see them.

    Attributes:
        x: ``(B, L, C)`` per row: frame 0's prefix tokens, frame 0's (kept) gazed tokens, frame 1's ...,
            then fill slots up to L.
        frame_ids: ``(B, L)`` int32 frame of every position (fill slots: the last frame).
        is_pad: ``(B, L)`` bool, true at pads and fill slots (never attended as keys).
        dest: ``(B, N)`` int64 position of every gaze slot in the sequence, ``-1`` where dropped.
        prefix_dest: ``(B, T, P)`` int64 position of every prefix token, or ``None``.
    """

    x: torch.Tensor
    frame_ids: torch.Tensor
    is_pad: torch.Tensor
    dest: torch.Tensor
    prefix_dest: torch.Tensor | None

    def gazed(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, L, C)`` sequence → ``(B, N, C)`` per gaze slot (zeros where the slot was dropped)."""
        keep = self.dest >= 0
        if bool(keep.all()) and self.dest.shape[1] == y.shape[1] and self.prefix_dest is None:
            return y
        out = y.new_zeros(self.dest.shape + y.shape[2:])
        rows = torch.arange(y.shape[0], device=y.device)[:, None].expand_as(self.dest)
        return out.index_put((rows[keep], torch.nonzero(keep, as_tuple=True)[1]), y[rows[keep], self.dest[keep]])

    def prefix(self, y: torch.Tensor) -> torch.Tensor | None:
        """``(B, L, C)`` → ``(B, T, P, C)`` prefix tokens, or ``None``."""
        if self.prefix_dest is None:
            return None
        rows = torch.arange(y.shape[0], device=y.device)[:, None, None].expand_as(self.prefix_dest)
        return y[rows, self.prefix_dest]


def pack_sequence(emb: torch.Tensor, is_pad: torch.Tensor, frame_ids: torch.Tensor, frames: int,
                  prefix: torch.Tensor | None, drop_pads: bool) -> PackedSequence:
    """Put each frame's prefix tokens before its gazed tokens and (with ``drop_pads``) remove pads.

    Args:
        emb: ``(B, N, C)`` gazed embeddings; is_pad ``(B, N)``; frame_ids ``(N,)`` (sorted, one per slot).
        frames: T. prefix: ``(P, C)`` tokens every frame starts with, or ``None``.
    """
    b, n, c = emb.shape
    device = emb.device
    p = 0 if prefix is None else prefix.shape[0]
    frame = frame_ids.to(device=device, dtype=torch.long)[None].expand(b, n)
    if p == 0 and not drop_pads:
        dest = torch.arange(n, device=device)[None].expand(b, n)
        return PackedSequence(emb, frame.to(torch.int32), is_pad, dest, None)
    keep = ~is_pad if drop_pads else torch.ones_like(is_pad)
    keep_l = keep.long()
    dest = torch.cumsum(keep_l, 1) - keep_l + (frame + 1) * p
    per_frame = torch.zeros(b, frames, dtype=torch.long, device=device).scatter_add_(1, frame, keep_l)
    before = torch.cumsum(per_frame, 1) - per_frame
    t_idx = torch.arange(frames, device=device)
    prefix_dest = None
    if p:
        prefix_dest = before[:, :, None] + t_idx[None, :, None] * p + torch.arange(p, device=device)[None, None]
    length = int((keep_l.sum(1) + frames * p).max()) if b else 0
    rows = torch.arange(b, device=device)[:, None]
    x = emb.new_zeros(b, length, c)
    seq_frame = torch.full((b, length), max(frames - 1, 0), dtype=torch.long, device=device)
    seq_pad = torch.ones(b, length, dtype=torch.bool, device=device)
    r, d = rows.expand(b, n)[keep], dest[keep]
    x = x.index_put((r, d), emb[keep])
    seq_frame[r, d] = frame[keep]
    seq_pad[r, d] = is_pad[keep]
    if p:
        pr = rows[:, :, None].expand_as(prefix_dest)
        x = x.index_put((pr.flatten(), prefix_dest.flatten()), prefix.expand(b, frames, p, c).reshape(-1, c))
        seq_frame[pr, prefix_dest] = t_idx[None, :, None].expand_as(prefix_dest)
        seq_pad[pr, prefix_dest] = False
    dest = torch.where(keep, dest, torch.full_like(dest, -1))
    return PackedSequence(x, seq_frame.to(torch.int32), seq_pad, dest, prefix_dest)


def allowed_mask(frame_ids: torch.Tensor, is_pad: torch.Tensor, attn_type: str) -> torch.Tensor:
    """Explicit ``(B, L, L)`` boolean map of the sparse attention (the reference path's oracle).

    ``allowed[b, i, j]``: block-causal f(j) ≤ f(i); frame-independent f(j) = f(i); causal j ≤ i;
    bidirectional always; then keys at pads removed and the diagonal set.
    """
    attn_type = normalize_attn_type(attn_type)
    b, length = frame_ids.shape
    fi, fj = frame_ids[:, :, None], frame_ids[:, None, :]
    if attn_type == "block_causal":
        base = fj <= fi
    elif attn_type == "frame_independent":
        base = fj == fi
    else:
        base = torch.ones(length, length, dtype=torch.bool, device=frame_ids.device)
        base = (base.tril() if attn_type == "causal" else base)[None].expand(b, -1, -1)
    eye = torch.eye(length, dtype=torch.bool, device=frame_ids.device)[None]
    return (base & ~is_pad[:, None, :]) | eye


def run_mlp(parts: BlockParts, h: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """``fc2(act(fc1(h)))`` for h ``(B, L, C)``; chunked over tokens when no gradient is recorded."""
    fc1, fc2 = parts.fc1, parts.fc2
    if torch.is_grad_enabled() or h.shape[0] * h.shape[1] <= chunk_rows:
        return fc2(activation(parts.act, fc1(h)))
    rows = h.reshape(-1, h.shape[-1])
    out = torch.empty(rows.shape[0], fc2.out_features, dtype=h.dtype, device=h.device)
    weight_t = fc2.weight.t()
    for i in range(0, rows.shape[0], chunk_rows):
        hidden = activation(parts.act, fc1(rows[i:i + chunk_rows]))
        if fc2.bias is None:
            torch.mm(hidden, weight_t, out=out[i:i + chunk_rows])
        else:  # F.linear's own op, written straight into the output rows
            torch.addmm(fc2.bias, hidden, weight_t, out=out[i:i + chunk_rows])
    return out.view(h.shape[:-1] + (fc2.out_features,))


class GazedViT:
    """Mixin: dense and gazed forward of a pre-norm ViT family (see the module docstring).

    The class mixing it in is a ``nn.Module`` with ``self.config`` (``hidden_size``,
    ``num_attention_heads``, ``patch_size``, ``num_channels``, ``scales``, ``tokens_per_frame``,
    ``attn_type``) and implements the ``vit_*`` hooks.
    """

    #: Family name, for messages.
    family = "vit"

    # ------------------------------------------------------------------ hooks
    def vit_patch_conv(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def vit_patch_positions(self, gh: int, gw: int) -> torch.Tensor:
        raise NotImplementedError

    def vit_prefix(self) -> torch.Tensor | None:
        return None

    def vit_embed_norm(self, x: torch.Tensor) -> torch.Tensor:
        """Applied to every token after the embeddings (CLIP's pre-layernorm); identity by default."""
        return x

    def vit_blocks(self) -> Iterable[BlockParts]:
        raise NotImplementedError

    def vit_finish(self, x: torch.Tensor, seq: PackedSequence | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final norm and pooling on the block output ``x (B, L, C)``: returns (normed x, pooled)."""
        raise NotImplementedError

    @property
    def vit_mlp_chunk_rows(self) -> int:
        return MLP_CHUNK_ROWS

    # ------------------------------------------------------------------ shared pieces
    def scale_position_table(self) -> torch.Tensor:
        """``(n, C)`` positions of one frame's slots, every scale's grid; cached for inference while
        the weights are unchanged (in-place updates bump the weights' version)."""
        weight = self.vit_position_weight()
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, tuple(self.config.scales))
        cache = getattr(self, "_vit_position_cache", None)
        if cache is not None and cache[0] == key and not torch.is_grad_enabled():
            return cache[1]
        p = self.config.patch_size
        table = torch.cat([self.vit_patch_positions(s // p, s // p) for s in self.config.scales])
        if not (torch.is_grad_enabled() and weight.requires_grad):
            self._vit_position_cache = (key, table.detach())
        return table

    def vit_position_weight(self) -> torch.Tensor:
        """The parameter the position tables are computed from (the cache's key)."""
        raise NotImplementedError

    def attend(self, parts: BlockParts, x: torch.Tensor, frame_ids: torch.Tensor | None, pad: torch.Tensor | None,
               attn_type: str, kernels: bool) -> torch.Tensor:
        """Multi-head attention of one block on ``x (B, L, C)``; ``frame_ids is None`` means full attention."""
        b, n, c = x.shape
        heads = self.config.num_attention_heads
        q, k, v = (proj(x).view(b, n, heads, c // heads).transpose(1, 2) for proj in (parts.q, parts.k, parts.v))
        scale = (c // heads) ** -0.5
        if frame_ids is None:
            out = F.scaled_dot_product_attention(q, k, v, scale=scale)
        elif kernels:
            # deferred: the sparse attention module imports Triton
            from autogaze_fast.kernels.sparse_attention import sparse_attention

            out = sparse_attention(q, k, v, frame_ids, pad, attn_type=attn_type, scale=scale)
        else:
            mask = allowed_mask(frame_ids, pad, attn_type)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], scale=scale)
        return parts.o(out.transpose(1, 2).reshape(b, n, c))

    def run_blocks(self, x: torch.Tensor, frame_ids, pad, attn_type: str, kernels: bool,
                   states: list[torch.Tensor] | None) -> torch.Tensor:
        chunk = self.vit_mlp_chunk_rows
        for parts in self.vit_blocks():
            h = self.attend(parts, parts.norm1(x), frame_ids, pad, attn_type, kernels)
            x = x + (h if parts.scale1 is None else h * parts.scale1)
            h = run_mlp(parts, parts.norm2(x), chunk)
            x = x + (h if parts.scale2 is None else h * parts.scale2)
            if states is not None:
                states.append(x)
        return x

    # ------------------------------------------------------------------ dense
    def dense_forward(self, pixel_values: torch.Tensor, *, output_hidden_states: bool = False) -> VisionOutput:
        """As the family's transformers vision model on ``(B, c, H, W)`` (positions interpolated to
        ``H/p × W/p`` when they differ from the table's grid)."""
        weight, bias = self.vit_patch_conv()
        b, c, h, w = pixel_values.shape
        if c != weight.shape[1]:
            raise ValueError(f"pixel_values has {c} channels, the model expects {weight.shape[1]} (B x C x H x W)")
        p = self.config.patch_size
        if h < p or w < p:
            raise ValueError(f"pixel_values is {h}x{w}, smaller than one {p}x{p} patch")
        pixel_values = pixel_values.to(device=weight.device, dtype=weight.dtype)
        x = F.conv2d(pixel_values, weight, bias, stride=p).flatten(2).transpose(1, 2)
        x = x + self.vit_patch_positions(h // p, w // p)
        prefix = self.vit_prefix()
        if prefix is not None:
            x = torch.cat([prefix.expand(b, -1, -1), x], dim=1)
        x = self.vit_embed_norm(x)
        states = [x] if output_hidden_states else None
        x = self.run_blocks(x, None, None, "bidirectional", False, states)
        normed, pooled = self.vit_finish(x, None)
        return VisionOutput(normed, pooled, tuple(states) if states is not None else None)

    # ------------------------------------------------------------------ gazed
    def embed_gazed(self, pixel_values: torch.Tensor, gather_index: torch.Tensor, kernels: bool) -> torch.Tensor:
        """``(B, T, c, S, S)`` frames, ``(B, N)`` slot indices → ``(B, N, C)`` patch + position embeddings."""
        b, t = pixel_values.shape[:2]
        frames = pixel_values.flatten(0, 1)
        scales, p = self.config.scales, self.config.patch_size
        weight, bias = self.vit_patch_conv()
        table = self.scale_position_table()
        resized = [F.interpolate(frames, size=(s, s), mode="bicubic", align_corners=False) for s in scales]
        if kernels and p in KERNEL_PATCH_SIZES:
            # deferred: the gathered-patch-embedding module imports Triton
            from autogaze_fast.kernels.gathered_patch_embed import gathered_patch_embed

            per_scale = [r.unflatten(0, (b, t)) for r in resized]
            return gathered_patch_embed(per_scale, gather_index, weight, bias, table, check_index=False)
        patches = torch.cat([F.unfold(r, kernel_size=p, stride=p).transpose(1, 2) for r in resized], dim=1)
        patches = patches.reshape(b, -1, patches.shape[-1])
        gathered = torch.gather(patches, 1, gather_index[..., None].expand(-1, -1, patches.shape[-1]))
        n = table.shape[0]
        return F.linear(gathered, weight.reshape(weight.shape[0], -1), bias) + table[gather_index % n]

    def embed_real(self, pixel_values: torch.Tensor, gather_index: torch.Tensor, is_pad: torch.Tensor,
                   kernels: bool) -> torch.Tensor:
        """:meth:`embed_gazed` of the real slots only (each row's real slots first, rows padded to the
        batch's largest real count), scattered back to ``(B, N, C)`` with zeros at the pads."""
        keep = ~is_pad
        b, n = gather_index.shape
        order = torch.argsort(is_pad.to(torch.int8), dim=1, stable=True)  # real slots first, in order
        width = int(keep.sum(1).max()) if b and n else 0
        order = order[:, :width]
        emb = self.embed_gazed(pixel_values, torch.gather(gather_index, 1, order), kernels)
        out = emb.new_zeros(b, n, emb.shape[-1])
        rows = torch.arange(b, device=emb.device)[:, None].expand_as(order)
        valid = torch.gather(keep, 1, order)
        return out.index_put((rows[valid], order[valid]), emb[valid])

    def check_gazed_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must be B x T x C x H x W (a batch of videos) with gazing_info, "
                             f"got shape {tuple(pixel_values.shape)}")
        _, _, c, h, w = pixel_values.shape
        if c != cfg.num_channels:
            raise ValueError(f"pixel_values has {c} channels, the model expects {cfg.num_channels} (B x T x C x H x W)")
        if not pixel_values.dtype.is_floating_point:
            raise ValueError(f"pixel_values must be a float tensor (normalised frames), got dtype {pixel_values.dtype}")
        side = max(cfg.scales)
        if h != w or h != side:
            raise ValueError(f"pixel_values frames are {h}x{w} (H x W) but this model's scales are {list(cfg.scales)}: "
                             f"frames must be square at the largest scale, {side}x{side}; preprocess them at that size")
        weight, _ = self.vit_patch_conv()
        return pixel_values.to(device=weight.device, dtype=weight.dtype)

    def gazed_forward(self, pixel_values: torch.Tensor, gazing_info: Any | None, *, output_hidden_states: bool = False,
                      attn_type: str | None = None, kernels: bool = True, drop_pads: bool = False) -> VisionOutput:
        """Encode the gazed multi-scale tokens of ``(B, T, c, S, S)`` videos (``gazing_info=None``: every
        patch of every scale of every frame). See :class:`VisionOutput` for the layout."""
        pixel_values = self.check_gazed_pixels(pixel_values)
        b, t = pixel_values.shape[:2]
        layout = gaze_layout(gazing_info, b, t, self.config.tokens_per_frame, pixel_values.device)
        attn_type = normalize_attn_type(attn_type or self.config.attn_type)
        if drop_pads:
            emb = self.embed_real(pixel_values, layout.gather_index, layout.is_pad, kernels)
        else:
            emb = self.embed_gazed(pixel_values, layout.gather_index, kernels)
        seq = pack_sequence(emb, layout.is_pad, layout.frame_ids, t, self.vit_prefix(), drop_pads)
        x = self.vit_embed_norm(seq.x)
        states = [x] if output_hidden_states else None
        x = self.run_blocks(x, seq.frame_ids, seq.is_pad, attn_type, kernels, states)
        normed, pooled = self.vit_finish(x, seq)
        hidden = tuple(seq.gazed(s) for s in states) if states is not None else None
        return VisionOutput(seq.gazed(normed), pooled, hidden, seq.prefix(normed))
