"""Fast teacher-forced scoring (training): the reference's math with less data movement.

- The interleaved sequence (frame 0's vision tokens, frame 0's gaze tokens, frame 1's, ...) is one
  gather from ``[all vision tokens, all gaze-token embeddings]`` rather than 2·T slices and a
  concatenation (whose backward writes T full-size zero gradients of the vision tokens).
- The reference computes every head on every position — (B, L, K·V) logits, ~134 MB for a
  16-frame batch of 2 — and then reads one head's V logits at one position per gaze token. Here
  the decoder returns only the positions that are read (:func:`~.sequence.sequence_hidden_states`
  with ``rows``) and each gaze token's logits come from its own head's (V, C) slice: positions
  grouped by head, one GEMM per head.
- GRPO scores G copies of each clip: rows that hold the same frames (:func:`distinct_clips`) share
  one run of the vision stem, whose tokens are then indexed out per row (their gradients summed).
Only the order of floating-point sums differs from the reference (gradients agree to ~1e-6).
"""

from __future__ import annotations

import torch

from autogaze_fast.fast.sequence import sequence_hidden_states
from autogaze_fast.reference.gazing_model import GazingModel, gaze_token_ids
from autogaze_fast.reference.stem import frame_tokens


def distinct_clips(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rows of ``video`` (B, ...) that are exact copies of earlier ones (GRPO's group copies of a clip).

    Returns:
        ``(first, inverse)`` — (U,) the first row of each distinct clip and (B,) the distinct clip of
        each row, so ``video[first][inverse]`` equals ``video`` — or None when all rows differ.
    Rows are compared exactly (a strided sample first, then the whole row), so NaN rows never match.
    """
    b = video.shape[0]
    if b < 2:
        return None
    flat = video.reshape(b, -1)
    probe = flat[:, ::max(1, flat.shape[1] // 4096)]
    first: list[int] = []
    inverse: list[int] = []
    for i in range(b):
        match = next((u for u, r in enumerate(first) if torch.equal(probe[i], probe[r]) and torch.equal(flat[i], flat[r])),
                     None)
        if match is None:
            match = len(first)
            first.append(i)
        inverse.append(match)
    if len(first) == b:
        return None
    return (torch.tensor(first, device=video.device), torch.tensor(inverse, device=video.device))


def per_slot_logits(hidden: torch.Tensor, weight: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """Logits of each position through its own head.

    Args:
        hidden: (B, M, C); weight: (K, V, C) the heads; slot: (M,) long, the head of each position.
    Returns:
        (B, M, V) with ``out[b, m] = weight[slot[m]] @ hidden[b, m]``.
    """
    k = weight.shape[0]
    order = torch.argsort(slot, stable=True)
    counts = torch.bincount(slot, minlength=k).tolist()
    parts = [hidden[:, idx] @ weight[s].t() for s, idx in enumerate(order.split(counts)) if counts[s]]
    return torch.cat(parts, dim=1)[:, torch.argsort(order)]


def interleave_layout(n_vision: int, counts: list[int], k: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Where each token of the interleaved sequence comes from.

    The sources are ``[vision tokens of frames 0..T-1 (T·n_vision), gaze tokens of frames 0..T-1 (M)]``.
    Returns:
        source (L,): the source index of sequence position p; gaze_index (M,): the sequence
        position of gaze token m; slot (M,): its head ``j % K`` (j = its index within its frame).
    """
    frames, m = len(counts), sum(counts)
    source, gaze_index, slot = [], [], []
    offset, seen = 0, 0
    for t, n in enumerate(counts):
        source += [torch.arange(t * n_vision, (t + 1) * n_vision),
                   torch.arange(frames * n_vision + seen, frames * n_vision + seen + n)]
        gaze_index.append(torch.arange(offset + n_vision, offset + n_vision + n))
        slot.append(torch.arange(n) % k)
        offset, seen = offset + n_vision + n, seen + n
    assert seen == m
    return tuple(torch.cat(x).to(device) for x in (source, gaze_index, slot))


def teacher_forced(model: GazingModel, video: torch.Tensor, gazing_pos: torch.Tensor, if_padded_gazing: torch.Tensor,
                   num_gazing_each_frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`GazingModel.teacher_forced` (same arguments and outputs), fast.

    Returns:
        gaze_probs (B, Σn_t): softmax probability of each token from the hidden state ``j % K + 1``
        positions earlier through head ``j % K``; task_loss_prediction (B, Σn_t): task-loss head
        ``(j % K + 1) % K`` read that many positions earlier (upstream's quirk, see the reference).
    """
    cfg = model.config
    decoder = model.gaze_decoder
    k, vocab, eos = cfg.decoder.num_multi_token_pred, cfg.decoder.vocab_size, cfg.decoder.eos_token_id
    copies = distinct_clips(video)
    if copies is None:
        tokens, _ = frame_tokens(model.vision_model, model.connector, video, cfg)  # (B, T, N, C)
    else:  # GRPO group copies share their frames: run the vision stem once per distinct clip
        first, inverse = copies
        tokens = frame_tokens(model.vision_model, model.connector, video[first], cfg)[0][inverse]
    b, frames, n_vision, c = tokens.shape
    ids_per_frame = gaze_token_ids(cfg, gazing_pos, if_padded_gazing, num_gazing_each_frame, frames)
    ids = torch.cat(ids_per_frame, dim=1)  # (B, M)
    source, gaze_index, slot = interleave_layout(n_vision, [x.shape[1] for x in ids_per_frame], k, video.device)
    embeds = torch.cat([tokens.reshape(b, frames * n_vision, c), decoder.embed(ids)], dim=1)[:, source]
    mask = torch.cat([torch.ones(b, frames * n_vision, dtype=torch.long, device=video.device), (ids != eos).long()], 1)[:, source]

    m = slot.shape[0]
    loss_slot = (slot + 1) % k
    rows, where = torch.unique(torch.cat([gaze_index - slot - 1, gaze_index - loss_slot]), return_inverse=True)
    hidden = sequence_hidden_states(decoder, embeds, mask.cumsum(-1) - 1, mask, rows)  # (B, R, C)
    logits = per_slot_logits(hidden[:, where[:m]], decoder.lm_head.weight.view(k, vocab, -1), slot)
    probs = torch.softmax(logits, dim=-1).gather(-1, ids[..., None])[..., 0]
    task_head = decoder.task_loss_prediction_head.weight  # (K, C)
    task_loss_prediction = (hidden[:, where[m:]] * task_head[loss_slot]).sum(-1)
    return probs, task_loss_prediction
