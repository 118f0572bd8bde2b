"""Graph-ready greedy decode: the fast gaze loop with its per-step work on static buffers, captured
in CUDA graphs (one per cache-size bucket) and replayed, gpt-fast style.

A K-token step (embed the previous step's tokens, every decoder layer against the static cache,
the LM and task-loss heads, the greedy pick and the stop test) reads and writes only fixed
buffers: the write position is a device tensor, the cache is written with ``index_copy_``, the
attention's split plan is sized for the step's :func:`~.decoder.kv_bucket` (so one capture serves
every length in the bucket), and the stop test leaves a device flag. Per frame the host then
does: the prefill (eager, its length varies), the first pick (eager, from the prefill's hidden
state), one graph replay per later step, and one synchronisation at the frame's end to read how
many steps the stop rule kept.

Stop rule without a per-step sync: steps are enqueued ahead of the flags. With a task-loss
requirement the host waits, before enqueuing step ``s``, for the flag of step ``s - stop_lag``
(copied to pinned memory behind an event, so the device keeps ``stop_lag`` steps queued); steps
run past the frame's real end (at most ``stop_lag``) are dropped at the frame's end and their
cache slots are rewound (their writes lie past the cache length, so no later query reads them
before they are overwritten). ``stop_lag=None`` never waits: every frame runs its whole budget
of steps and the single end-of-frame sync trims it.

Same tokens as :func:`~.generation.generate_frames` (greedy): same decoder arithmetic, same split
plan, the pick is slot-by-slot argmax with earlier slots' tokens masked. Sampling is not captured
(the fast model falls back to the eager loop for it).
"""

from __future__ import annotations

import torch

from autogaze_fast.fast.cache import FastDecodeState, StaticKVCache
from autogaze_fast.fast.decoder import LayerWeights, decode_step, gather_weights, kv_bucket
from autogaze_fast.fast.generation import prefill_frame
from autogaze_fast.reference.generation import NEG_INF
from autogaze_fast.reference.llama import GazeDecoder

DEFAULT_STOP_LAG = 2


def greedy_pick(scores: torch.Tensor, slots: int) -> torch.Tensor:
    """Slot i takes the argmax (lowest index among equals) of ``scores[:, i]`` (B, K, V) over the
    tokens no earlier slot of its row took. Device ops only (no host sync). Returns (B, slots)."""
    taken = torch.zeros(scores.shape[0], scores.shape[2], dtype=torch.bool, device=scores.device)
    chosen = []
    for i in range(slots):
        slot = scores[:, i] if i == 0 else scores[:, i].masked_fill(taken, NEG_INF)
        token = slot.argmax(dim=-1)
        chosen.append(token)
        if i + 1 < slots:
            taken.scatter_(1, token[:, None], True)
    return torch.stack(chosen, dim=1)


def weights_key(decoder: GazeDecoder) -> tuple:
    """Identity and in-place version of every decoder parameter: captured graphs hold the gathered
    weights, so any change (an optimiser step, ``.to()``) must trigger a new capture."""
    return tuple((id(p), p._version, p.dtype, p.device) for p in decoder.parameters())


class GraphedDecode:
    """Static buffers of one batch's K-token steps and their CUDA graphs (one per bucket).

    Args:
        decoder: the gaze decoder; its weights are gathered once (see :func:`weights_key`).
        cache: the static KV cache the steps write (its tensors must not be reallocated while this
            object lives: the graphs hold their addresses).
        with_requirement: whether steps run the task-loss stop test.
        capture: True: capture each bucket's step in a CUDA graph and replay it (CUDA only).
            False: run the very same step eagerly (CPU tests, debugging).
    """

    def __init__(self, decoder: GazeDecoder, cache: StaticKVCache, with_requirement: bool, capture: bool) -> None:
        cfg = decoder.config
        device = cache.keys.device
        if capture and device.type != "cuda":
            raise ValueError(f"CUDA-graph capture needs a CUDA device, the cache is on {device}; "
                             "use cuda_graphs=False (eager) on this device")
        b = cache.keys.shape[1]
        self.decoder, self.cache, self.capture = decoder, cache, capture
        self.weights: list[LayerWeights] = gather_weights(decoder)
        self.key = weights_key(decoder)
        self.k, self.eos = cfg.num_multi_token_pred, cfg.eos_token_id
        self.tokens = torch.full((b, self.k), self.eos, dtype=torch.long, device=device)
        self.positions = torch.zeros(b, self.k, dtype=torch.long, device=device)
        self.new_valid = torch.ones(b, self.k, dtype=torch.bool, device=device)
        self.used = torch.zeros(b, cfg.vocab_size, dtype=torch.bool, device=device)
        self.unfinished = torch.ones(b, dtype=torch.bool, device=device)
        self.requirement = torch.zeros(b, dtype=torch.float32, device=device) if with_requirement else None
        self.start = torch.zeros(1, dtype=torch.long, device=device)  # cache slot of the next step's first token
        self.keys_ptr = cache.keys.data_ptr()
        self.inference = torch.is_inference_mode_enabled()
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.pool = None

    def matches(self, decoder: GazeDecoder, cache: StaticKVCache, with_requirement: bool, capture: bool) -> bool:
        """Whether this object (its buffers, graphs) can serve a call with these arguments."""
        return (decoder is self.decoder and cache is self.cache and cache.keys.data_ptr() == self.keys_ptr
                and (self.requirement is not None) == with_requirement and capture == self.capture
                and weights_key(decoder) == self.key and torch.is_inference_mode_enabled() == self.inference)

    # ------------------------------------------------------------------ the step
    def begin_frame(self, prompt_tail: torch.Tensor, requirement: torch.Tensor | None) -> None:
        """Reset the per-frame buffers (eager, a few small device ops, no sync)."""
        self.positions.copy_(prompt_tail)
        self.used.zero_()
        self.used[:, self.eos].fill_(True)
        self.unfinished.fill_(True)
        if self.requirement is not None:
            self.requirement.copy_(requirement)
        self.start.fill_(self.cache.length)

    def pick(self, hidden: torch.Tensor, slots: int, first: bool) -> None:
        """Heads, greedy pick and stop test for hidden (B, C); writes ``tokens[:, :slots]``,
        ``used`` and ``unfinished`` in place."""
        decoder = self.decoder
        logits = decoder.lm_head(hidden).view(hidden.shape[0], self.k, decoder.config.vocab_size)
        scores = logits.float().masked_fill(self.used[:, None, :], NEG_INF)
        tokens = greedy_pick(scores, slots)
        tokens = torch.where(self.unfinished[:, None], tokens, self.eos)
        if self.requirement is not None:
            task_loss = decoder.task_loss_prediction_head(hidden)[:, :slots].float()
            meets = task_loss <= self.requirement[:, None]
            if first:
                meets[:, 0].fill_(False)
            tokens = torch.where(meets, self.eos, tokens)
            self.unfinished.logical_and_(~meets.any(dim=1))
        self.used.scatter_(1, tokens, True)
        self.tokens[:, :slots].copy_(tokens)

    def _body(self, bucket: int) -> None:
        """One K-token step on the static buffers: decode the previous tokens, pick the next."""
        x = self.decoder.embed(self.tokens)
        hidden = decode_step(self.decoder, self.weights, x, positions=self.positions, new_valid=self.new_valid,
                             cache=self.cache, start=self.start, bucket=bucket)
        self.start.add_(self.k)
        self.pick(hidden, self.k, first=False)

    def step(self, bucket: int) -> None:
        """Run one K-token step whose keys end inside ``bucket``: replay its graph (capturing it the
        first time, after a real warm-up step on a side stream), or run it eagerly."""
        if not self.capture:
            self._body(bucket)
            return
        graph = self.graphs.get(bucket)
        if graph is not None:
            graph.replay()
            return
        # Warm-up: this step for real, on a side stream (Triton JIT, cuBLAS plans), then capture the
        # same work for the next steps of the bucket (capture records, it does not run).
        current = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        side.wait_stream(current)
        with torch.cuda.stream(side):
            self._body(bucket)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self._body(bucket)
        self.pool = graph.pool()
        self.graphs[bucket] = graph


class _StopFlags:
    """Per-step "every row finished" flags, read on the host ``lag`` steps late without stalling."""

    def __init__(self, device: torch.device, capacity: int) -> None:
        self.cuda = device.type == "cuda"
        self.host = torch.zeros(capacity, dtype=torch.bool, pin_memory=self.cuda)
        self.events: list = []
        self.device_flags: list[torch.Tensor] = []

    def record(self, unfinished: torch.Tensor) -> None:
        done = ~unfinished.any()
        self.device_flags.append(done)
        if self.cuda:
            self.host[len(self.events)].copy_(done, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self.events.append(event)

    def done_at(self, step: int) -> bool:
        """Whether every row had finished after ``step`` (waits for that step only)."""
        if self.cuda:
            self.events[step].synchronize()
            return bool(self.host[step])
        return bool(self.device_flags[step])

    def first_done(self) -> int | None:
        """The first step after which every row had finished (one sync), or None."""
        flags = torch.stack(self.device_flags).tolist()
        return next((i for i, done in enumerate(flags) if done), None)


@torch.no_grad()
def generate_frames_graphed(
    decoder: GazeDecoder,
    vision_tokens: torch.Tensor,
    budgets: list[int],
    task_loss_requirement: torch.Tensor | None,
    state: FastDecodeState,
    capture: bool,
    stop_lag: int | None = DEFAULT_STOP_LAG,
) -> list[torch.Tensor]:
    """Greedy gaze for each frame of ``vision_tokens`` (B, T', n_tok, C), continuing ``state``;
    the same tokens as :func:`~.generation.generate_frames` with ``do_sample=False``.

    Returns one (B, n_t) tensor of token ids per frame (eos = pad). ``state.graphs`` keeps the
    :class:`GraphedDecode` (buffers and graphs) for the next call on the same state.
    """
    cfg = decoder.config
    k, eos = cfg.num_multi_token_pred, cfg.eos_token_id
    b, frames, n_tok, _ = vision_tokens.shape
    if n_tok < k:
        raise ValueError(f"each frame needs at least K={k} vision tokens, got {n_tok}")
    if stop_lag is not None and (isinstance(stop_lag, bool) or not isinstance(stop_lag, int) or stop_lag < 0):
        raise ValueError(f"stop_lag must be a non-negative int or None, got {stop_lag!r}")
    device = vision_tokens.device
    cache = state.cache
    # Room for every frame up front: the graphs hold the cache's addresses, so it must not grow later.
    pending = 0 if state.pending_ids is None else state.pending_ids.shape[1]
    cache.reserve(pending + sum(n_tok + int(x) + k for x in budgets))
    runner = getattr(state, "graphs", None)
    with_req = task_loss_requirement is not None
    if runner is None or not runner.matches(decoder, cache, with_req, capture):
        runner = GraphedDecode(decoder, cache, with_req, capture)
        state.graphs = runner
    weights = runner.weights
    out = []
    for t in range(frames):
        # ---- prefill (eager): pending tokens of the previous frame + this frame's vision tokens
        hidden, prompt_tail = prefill_frame(decoder, weights, vision_tokens[:, t], state)
        frame_start = cache.length

        # ---- first pick (eager), then one graph replay per K-token step
        runner.begin_frame(prompt_tail, None if not with_req else task_loss_requirement[:, t].float())
        slots = min(k, budgets[t])
        runner.pick(hidden, slots, first=True)
        steps = [runner.tokens[:, :slots].clone()]
        flags = _StopFlags(device, -(-budgets[t] // k) + 1) if with_req else None
        if flags is not None:
            flags.record(runner.unfinished)
        generated = slots
        while generated < budgets[t]:
            if flags is not None and stop_lag is not None and len(steps) > stop_lag:
                if flags.done_at(len(steps) - 1 - stop_lag):
                    break
            runner.step(kv_bucket(cache.length + k, cache.capacity))
            cache.length += k
            slots = min(k, budgets[t] - generated)
            generated += slots
            steps.append(runner.tokens[:, :slots].clone())
            if flags is not None:
                flags.record(runner.unfinished)
        if flags is not None:  # the frame's one sync: drop the steps run past the stop
            last = flags.first_done()
            if last is not None and last + 1 < len(steps):
                steps = steps[:last + 1]
                cache.length = frame_start + k * last

        # ---- frame end (as the eager loop): cached gaze tokens become attendable only if not eos
        cached = torch.cat(steps[:-1], dim=1) if len(steps) > 1 else steps[-1][:, :0]
        cache.key_valid[:, frame_start:frame_start + cached.shape[1]] = cached != eos
        state.valid_count = state.valid_count + (cached != eos).sum(-1)
        state.pending_ids = steps[-1]
        out.append(torch.cat(steps, dim=1))
    return out
