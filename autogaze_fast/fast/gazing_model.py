"""Fast gazing model: same parameters and outputs as the reference, fast decode loop."""

from __future__ import annotations

import torch

from autogaze_fast.fast.cache import FastDecodeState, StaticKVCache
from autogaze_fast.fast.generation import generate_frames
from autogaze_fast.fast.graphed import DEFAULT_STOP_LAG, generate_frames_graphed
from autogaze_fast.fast.sequence import sequence_hidden_states
from autogaze_fast.fast.teacher_forced import teacher_forced
from autogaze_fast.reference.gazing_model import GazingModel, check_streaming_caches
from autogaze_fast.reference.stem import frame_tokens


class FastGazingModel(GazingModel):
    """:class:`GazingModel` whose ``generate`` runs the static-cache loop.

    Streaming: ``past_key_values`` is a :class:`FastDecodeState` (pass back what a call returned);
    ``past_input_embeds`` / ``past_attention_mask`` are returned as the per-segment lists the
    reference returns, for code that inspects them, but the state alone drives the next call.

    Decode modes (greedy; sampling always runs the eager loop):

    * ``cuda_graphs=False`` (default): the eager loop (:func:`~.generation.generate_frames`).
    * ``cuda_graphs=True``: each K-token step is captured in a CUDA graph per cache-size bucket and
      replayed (:mod:`.graphed`); needs CUDA tensors (a ValueError otherwise). Set it at
      construction or later (``autogaze.gazing_model.cuda_graphs = True``). Non-streaming calls of
      the same batch size and clip length reuse one static cache and its graphs.
    * ``static_decode=True`` (without ``cuda_graphs``): the graph-ready step path run eagerly
      (tests and debugging on CPU).

    ``stop_lag``: steps enqueued ahead of the task-loss stop test in the graph-ready path (see
    :mod:`.graphed`; None: never wait, trim at each frame's end).
    """

    def __init__(self, config, cuda_graphs: bool = False, static_decode: bool = False,
                 stop_lag: int | None = DEFAULT_STOP_LAG) -> None:
        super().__init__(config)
        self.cuda_graphs = cuda_graphs
        self.static_decode = static_decode
        self.stop_lag = stop_lag
        self._reusable_state: tuple | None = None  # (key, FastDecodeState) of the last graph-ready call

    @torch.no_grad()
    def generate(
        self,
        video: torch.Tensor,
        max_tokens_each_frame: list[int],
        task_loss_requirement: torch.Tensor | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        use_cache: bool = False,
        past_key_values: FastDecodeState | None = None,
        past_inputs_embeds: list[torch.Tensor] | None = None,
        past_attention_mask: list[torch.Tensor] | None = None,
        past_conv_values: list[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict:
        check_streaming_caches(past_key_values, past_inputs_embeds, past_attention_mask, past_conv_values,
                               batch=video.shape[0])
        if past_key_values is not None and not isinstance(past_key_values, FastDecodeState):
            raise ValueError(
                f"past_key_values is a {type(past_key_values).__name__}; the fast implementation streams with the "
                "FastDecodeState its previous call returned (caches of impl='reference' are not interchangeable)"
            )
        cfg = self.config
        n_vision, eos = cfg.num_vision_tokens_each_frame, cfg.decoder.eos_token_id
        tokens, conv_values = frame_tokens(self.vision_model, self.connector, video, cfg, past_conv_values)
        if not use_cache:
            conv_values = None  # only streaming reads the stem's conv caches (they keep its last activations alive)
        b, frames = tokens.shape[:2]
        if len(max_tokens_each_frame) != frames:
            raise ValueError(f"need one token budget per frame: got {len(max_tokens_each_frame)} for {frames} frames")
        if self.cuda_graphs and not isinstance(self.cuda_graphs, bool):
            raise ValueError(f"cuda_graphs must be True or False, got {self.cuda_graphs!r}")
        if self.cuda_graphs and tokens.device.type != "cuda":
            raise ValueError(f"cuda_graphs=True captures CUDA graphs, but the model runs on {tokens.device}; "
                             "move it to a CUDA device or set cuda_graphs=False (the eager loop)")
        graph_ready = (self.cuda_graphs or self.static_decode) and not do_sample
        budgets = [int(x) for x in max_tokens_each_frame]
        state = past_key_values
        if state is None:
            dec = cfg.decoder
            per_frame = tokens.shape[2] + max(budgets)
            capacity = (frames if not use_cache else max(frames, cfg.max_num_frames)) * per_frame + dec.num_multi_token_pred
            # (inference tensors cannot be updated in place outside inference mode, nor the reverse)
            key = (b, capacity, tokens.dtype, tokens.device, torch.is_inference_mode_enabled())
            if graph_ready and not use_cache and self._reusable_state is not None and self._reusable_state[0] == key:
                state = self._reusable_state[1]  # its cache and graphs serve this call again
                state.reset()
            else:
                cache = StaticKVCache(num_layers=dec.num_hidden_layers, batch=b, kv_heads=dec.num_key_value_heads,
                                      head_dim=dec.head_dim, capacity=capacity, dtype=tokens.dtype,
                                      device=tokens.device)
                state = FastDecodeState(cache, b, tokens.device)
                if graph_ready and not use_cache:
                    self._reusable_state = (key, state)
        if graph_ready:
            ids = generate_frames_graphed(self.gaze_decoder, tokens, budgets, task_loss_requirement, state,
                                          capture=bool(self.cuda_graphs), stop_lag=self.stop_lag)
        else:
            ids = generate_frames(self.gaze_decoder, tokens, budgets, task_loss_requirement,
                                  state, do_sample=do_sample, temperature=temperature, generator=generator)
        state.conv_values = conv_values

        embeds = list(past_inputs_embeds) if past_inputs_embeds is not None else []
        masks = list(past_attention_mask) if past_attention_mask is not None else []
        if use_cache:
            for t, frame_ids in enumerate(ids):
                embeds += [tokens[:, t], self.gaze_decoder.embed(frame_ids)]
                masks += [torch.ones(tokens.shape[:1] + tokens.shape[2:3], dtype=torch.long, device=video.device),
                          (frame_ids != eos).long()]
        return {
            "gazing_pos": torch.cat([frame_ids + n_vision * t for t, frame_ids in enumerate(ids)], dim=1),
            "if_padded_gazing": torch.cat([frame_ids == eos for frame_ids in ids], dim=1),
            "num_gazing_each_frame": torch.tensor([x.shape[1] for x in ids], dtype=torch.long, device=video.device),
            "task_loss_requirement": task_loss_requirement,
            "past_key_values": state if use_cache else None,
            "past_input_embeds": embeds if use_cache else None,
            "past_attention_mask": masks if use_cache else None,
            "past_conv_values": conv_values if use_cache else None,
        }

    def sequence_hidden_states(self, embeds: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced pass through the cached-attention kernel in prefill mode (differentiable)."""
        return sequence_hidden_states(self.gaze_decoder, embeds, position_ids, mask)

    def teacher_forced(
        self,
        video: torch.Tensor,
        gazing_pos: torch.Tensor,
        if_padded_gazing: torch.Tensor,
        num_gazing_each_frame: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's teacher-forced scores, fast (:mod:`.teacher_forced`); differentiable."""
        return teacher_forced(self, video, gazing_pos, if_padded_gazing, num_gazing_each_frame)
