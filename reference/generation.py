"""Frame-by-frame autoregressive gaze generation, reproducing upstream's patched ``generate`` loop.

For each frame the prompt is the whole interleaved sequence so far plus the frame's vision tokens.
Within a frame, each step runs the unprocessed tail of the sequence through the decoder, reads the
K candidate distributions and K task-loss predictions at the last position, and picks up to K new,
distinct gaze tokens.

Upstream quirks kept on purpose (see SPEC §4):

* Every step after the first feeds the previous step's K tokens with the RoPE positions of the
  **last K positions of the frame's prompt** (upstream slices the prompt's position ids once given).
* Those tokens are attended with mask 1 during their own frame even when they are eos pads; in
  later frames they get mask ``id != eos`` and cumulative-sum positions, but their cached keys and
  values keep the positions they were computed with.
* The last step's tokens of a frame are not run through the decoder in that frame: they are the
  first thing the next frame's prefill processes.
* On the first step of a frame, slot 0 never meets the task-loss requirement. A meeting slot
  becomes eos, other slots of that step keep their tokens, and the sequence finishes after the step.
"""

from __future__ import annotations

import torch

from .llama import GazeDecoder, KVCache

NEG_INF = float("-inf")


def warp_for_sampling(scores: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """Sampling warpers applied to all K slots at once, before any slot is chosen (as upstream's
    generation config does): divide by ``temperature``, then keep each slot's ``top_k`` best."""
    scores = scores / temperature
    if 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, NEG_INF)
    return scores


def choose_tokens(
    scores: torch.Tensor,
    budget_left: int,
    do_sample: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick up to K distinct tokens per row from ``scores`` (B, K, V), slot by slot.

    Slot i stops the step when ``i >= budget_left`` or when every score of slot i is -inf
    (argmax when greedy, a multinomial draw from the softmax when sampling). A chosen id is
    masked for the later slots. Returns (B, n) with n ≤ K; n < K means the step stopped early.
    """
    chosen: list[torch.Tensor] = []
    rows = torch.arange(scores.shape[0], device=scores.device)
    for i in range(scores.shape[1]):
        if len(chosen) >= budget_left:
            break
        slot = scores[:, i, :]
        if torch.all(slot == NEG_INF):
            break
        if do_sample:
            token = torch.multinomial(torch.softmax(slot, dim=-1), 1, generator=generator).squeeze(1)
        else:
            token = slot.argmax(dim=-1)
        chosen.append(token)
        scores[rows, i + 1:, token] = NEG_INF
    if not chosen:
        return scores.new_zeros((scores.shape[0], 0), dtype=torch.long)
    return torch.stack(chosen, dim=1)


def generate_frame(
    decoder: GazeDecoder,
    prompt_embeds: torch.Tensor,
    prompt_mask: torch.Tensor,
    cache: KVCache,
    max_tokens: int,
    task_loss_requirement: torch.Tensor | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Generate one frame's gaze tokens.

    Args:
        prompt_embeds: (B, L, C) the whole sequence so far, this frame's vision tokens last.
        prompt_mask: (B, L) 1 for attendable positions (vision tokens, non-eos gaze tokens).
        cache: holds keys/values of a prefix of the prompt; extended in place.
        max_tokens: the frame's token budget.
        task_loss_requirement: (B,) stop thresholds, or None for no task-loss stopping.
    Returns:
        (B, n) token ids (eos = pad), n ≤ max_tokens.
    """
    cfg = decoder.config
    k, eos = cfg.num_multi_token_pred, cfg.eos_token_id
    b, length, _ = prompt_embeds.shape
    device = prompt_embeds.device
    position_ids = prompt_mask.long().cumsum(-1) - 1
    key_mask = prompt_mask.long()
    generated = torch.zeros(b, 0, dtype=torch.long, device=device)
    unfinished = torch.ones(b, dtype=torch.bool, device=device)
    first = True
    while True:
        if first:
            past = len(cache)
            x, pos = prompt_embeds[:, past:], position_ids[:, past:]
        else:
            step_tokens = generated[:, -k:]
            x = decoder.embed(step_tokens)
            pos = position_ids[:, length - step_tokens.shape[1]:]
        hidden = decoder.hidden_states(x, pos, key_mask, cache)
        logits, task_loss = decoder.heads(hidden[:, -1:])
        scores, task_loss = logits[:, 0].float().clone(), task_loss[:, 0].float()
        key_mask = torch.cat([key_mask, key_mask.new_ones(b, k)], dim=1)

        if generated.shape[1]:
            scores.scatter_(2, generated[:, None, :].expand(-1, k, -1), NEG_INF)
        scores[..., eos] = NEG_INF
        if do_sample:
            scores = warp_for_sampling(scores, temperature, cfg.top_k)
        tokens = choose_tokens(scores, max_tokens - generated.shape[1], do_sample, generator)
        early_stop = tokens.shape[1] < k
        tokens = torch.where(unfinished[:, None], tokens, torch.full_like(tokens, eos))
        meets = torch.zeros_like(tokens, dtype=torch.bool)
        if task_loss_requirement is not None:
            meets = task_loss[:, : tokens.shape[1]] <= task_loss_requirement[:, None]
            if first and meets.shape[1]:
                meets[:, 0] = False
            tokens = torch.where(meets, torch.full_like(tokens, eos), tokens)
        hit_budget = tokens.shape[1] + generated.shape[1] >= max_tokens
        if hit_budget:
            tokens = tokens[:, : max_tokens - generated.shape[1]]
        generated = torch.cat([generated, tokens], dim=1)
        unfinished = unfinished & ~meets.any(dim=1)
        first = False
        if hit_budget or early_stop or not bool(unfinished.any()):
            return generated
