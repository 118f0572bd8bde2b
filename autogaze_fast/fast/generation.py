"""The fast frame-by-frame decode loop: one prefill per frame, then K-token steps, all on a
static KV cache with no copies of the cache or the sequence.

Same outputs as :mod:`autogaze_fast.reference.generation` (every upstream quirk of SPEC §4 kept):

* prefill = the previous frame's last-step tokens (mask ``id != eos``) + this frame's vision
  tokens, at cumulative-sum positions continuing from ``state.valid_count``;
* each later step feeds the previous step's K tokens at the positions of the last K prompt
  positions, attendable during the frame even when they are eos pads;
* at the frame's end the cached gaze tokens' key-valid flags become ``id != eos``.

Token choice per step runs on tensors: a (B, V) "already used" mask replaces re-scanning the
generated ids, and on CUDA the only host sync per step is the "all sequences finished" test when a
task-loss requirement is set (on CPU, where a sync is free, greedy picks are resolved on the host
from one topk). Upstream's "every score is -inf" early exit cannot fire before the
budget does (only generated ids and eos are masked, and a frame never generates more than N), so
the budget alone bounds the slots of a step.
"""

from __future__ import annotations

import torch

from autogaze_fast.fast.cache import FastDecodeState
from autogaze_fast.fast.decoder import decode_step, gather_weights
from autogaze_fast.reference.generation import NEG_INF, warp_for_sampling
from autogaze_fast.reference.llama import GazeDecoder

# The host pick's Python loop grows with the batch: measured faster than the tensor loop up to
# 4 rows (45 against 168 µs at 1 row), slower from 16 (853 against 333 µs).
HOST_PICK_MAX_ROWS = 4


def choose_step_tokens(scores: torch.Tensor, slots: int, do_sample: bool,
                       generator: torch.Generator | None) -> torch.Tensor:
    """Pick ``slots`` distinct tokens per row from ``scores`` (B, K, V) (already masked), slot by slot:
    slot i takes the best token (sampled, or argmax with the lowest index among equals) that no
    earlier slot of its row took. Returns (B, slots) int64."""
    if not do_sample and scores.device.type == "cpu" and scores.shape[0] <= HOST_PICK_MAX_ROWS:
        chosen = _greedy_on_host(scores, slots)
        if chosen is not None:
            return chosen
    rows = torch.arange(scores.shape[0], device=scores.device)
    chosen = []
    for i in range(slots):
        slot = scores[:, i]
        if do_sample:
            token = torch.multinomial(torch.softmax(slot, dim=-1), 1, generator=generator)[:, 0]
        else:
            token = slot.argmax(dim=-1)
        chosen.append(token)
        if i + 1 < slots:
            scores[rows, i + 1:, token] = NEG_INF
    return torch.stack(chosen, dim=1)


def _greedy_on_host(scores: torch.Tensor, slots: int) -> torch.Tensor | None:
    """The greedy pick of :func:`choose_step_tokens` from each slot's top ``slots + 1`` candidates, in
    Python (on CPU one topk beats ``slots`` rounds of argmax + masking). Slot i can lose at most i
    candidates to earlier slots, so its answer is among its top i + 1. Returns None (caller falls
    back to the tensor loop) when equal scores make topk's order differ from argmax's lowest-index
    rule or a slot runs out of finite candidates."""
    take = min(slots + 1, scores.shape[-1])
    values, indices = scores[:, :slots].topk(take, dim=-1)
    values, indices = values.tolist(), indices.tolist()
    picked = []
    for row_values, row_indices in zip(values, indices):
        taken: list[int] = []
        for i in range(slots):
            cand_v, cand_i = row_values[i], row_indices[i]
            j = next((j for j, t in enumerate(cand_i) if t not in taken), None)
            # a later candidate with the same score may come first in index order (or lie past the list)
            if j is None or cand_v[j] == NEG_INF or (j + 1 < take and cand_v[j + 1] == cand_v[j]):
                return None
            taken.append(cand_i[j])
        picked.append(taken)
    return torch.tensor(picked, dtype=torch.long)


@torch.no_grad()
def generate_frames(
    decoder: GazeDecoder,
    vision_tokens: torch.Tensor,
    budgets: list[int],
    task_loss_requirement: torch.Tensor | None,
    state: FastDecodeState,
    do_sample: bool = False,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """Generate gaze for each frame of ``vision_tokens`` (B, T', n_tok, C), continuing ``state``.

    Returns one (B, n_t) tensor of token ids per frame (eos = pad).
    """
    cfg = decoder.config
    k, eos, vocab = cfg.num_multi_token_pred, cfg.eos_token_id, cfg.vocab_size
    b, frames, n_tok, _ = vision_tokens.shape
    if n_tok < k:
        raise ValueError(f"each frame needs at least K={k} vision tokens, got {n_tok}")
    device = vision_tokens.device
    weights = gather_weights(decoder)
    cache = state.cache
    all_rows = torch.arange(b, device=device)
    out = []
    for t in range(frames):
        hidden, prompt_tail = prefill_frame(decoder, weights, vision_tokens[:, t], state)
        frame_start = cache.length

        # ---- K-token steps
        used = torch.zeros(b, vocab, dtype=torch.bool, device=device)
        used[:, eos] = True
        unfinished = torch.ones(b, dtype=torch.bool, device=device)
        requirement = None if task_loss_requirement is None else task_loss_requirement[:, t].float()
        steps: list[torch.Tensor] = []
        generated = 0
        first = True
        while True:
            logits = lm_logits(decoder, hidden)  # (B, K, V)
            scores = logits.float().masked_fill(used[:, None, :], NEG_INF)
            if do_sample:
                scores = warp_for_sampling(scores, temperature, cfg.top_k)
            slots = min(k, budgets[t] - generated)
            tokens = choose_step_tokens(scores, slots, do_sample, generator)
            tokens = torch.where(unfinished[:, None], tokens, eos)
            if requirement is not None:
                task_loss = decoder.task_loss_prediction_head(hidden)[:, :slots].float()
                meets = task_loss <= requirement[:, None]
                if first:
                    meets[:, 0] = False
                tokens = torch.where(meets, eos, tokens)
                unfinished = unfinished & ~meets.any(dim=1)
            used[all_rows[:, None], tokens] = True
            steps.append(tokens)
            generated += slots
            first = False
            if generated >= budgets[t] or (requirement is not None and not bool(unfinished.any())):
                break
            hidden = decode_step(decoder, weights, decoder.embed(tokens), positions=prompt_tail,
                                 new_valid=torch.ones_like(tokens, dtype=torch.bool), cache=cache)

        # ---- frame end: cached gaze tokens become attendable only if not eos; last step stays pending
        cached = torch.cat(steps[:-1], dim=1) if len(steps) > 1 else tokens[:, :0]
        cache.key_valid[:, frame_start:frame_start + cached.shape[1]] = cached != eos
        state.valid_count = state.valid_count + (cached != eos).sum(-1)
        state.pending_ids = steps[-1]
        out.append(torch.cat(steps, dim=1))
    return out


def prefill_frame(decoder: GazeDecoder, weights, frame_tokens: torch.Tensor,
                  state: FastDecodeState) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame's prefill on the static cache: the previous frame's pending last-step tokens (valid
    where ``id != eos``) followed by this frame's vision tokens ``frame_tokens`` (B, n_tok, C), at
    cumulative-sum positions continuing from ``state.valid_count`` (which it advances).

    Returns the last position's hidden state (B, C) and the last K prompt positions (B, K), where
    the frame's K-token steps are placed.
    """
    b, n_tok, _ = frame_tokens.shape
    eos, k = decoder.config.eos_token_id, decoder.config.num_multi_token_pred
    parts, valid = [frame_tokens], [torch.ones(b, n_tok, dtype=torch.bool, device=frame_tokens.device)]
    if state.pending_ids is not None:
        parts.insert(0, decoder.embed(state.pending_ids))
        valid.insert(0, state.pending_ids != eos)
    valid = torch.cat(valid, dim=1)
    positions = state.valid_count[:, None] + valid.long().cumsum(-1) - 1
    state.valid_count = state.valid_count + valid.sum(-1)
    hidden = decode_step(decoder, weights, torch.cat(parts, dim=1), positions=positions, new_valid=valid,
                         cache=state.cache)
    return hidden, positions[:, -k:]


def lm_logits(decoder: GazeDecoder, hidden: torch.Tensor) -> torch.Tensor:
    """lm_head on the last position's hidden state (B, C) → (B, K, V)."""
    cfg = decoder.config
    return decoder.lm_head(hidden).view(hidden.shape[0], cfg.num_multi_token_pred, cfg.vocab_size)
