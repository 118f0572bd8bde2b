"""Fast gazing model: same parameters and outputs as the reference, fast decode loop."""

from __future__ import annotations

import torch

from ..reference.gazing_model import GazingModel, check_streaming_caches
from ..reference.stem import frame_tokens
from .cache import FastDecodeState, StaticKVCache
from .generation import generate_frames
from .sequence import sequence_hidden_states
from .teacher_forced import teacher_forced


class FastGazingModel(GazingModel):
    """:class:`GazingModel` whose ``generate`` runs the static-cache loop.

    Streaming: ``past_key_values`` is a :class:`FastDecodeState` (pass back what a call returned);
    ``past_input_embeds`` / ``past_attention_mask`` are returned as the per-segment lists the
    reference returns, for code that inspects them, but the state alone drives the next call.
    """

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
        b, frames = tokens.shape[:2]
        if len(max_tokens_each_frame) != frames:
            raise ValueError(f"need one token budget per frame: got {len(max_tokens_each_frame)} for {frames} frames")
        state = past_key_values
        if state is None:
            dec = cfg.decoder
            per_frame = tokens.shape[2] + max(int(x) for x in max_tokens_each_frame)
            capacity = (frames if not use_cache else max(frames, cfg.max_num_frames)) * per_frame + dec.num_multi_token_pred
            cache = StaticKVCache(dec.num_hidden_layers, b, dec.num_key_value_heads, dec.head_dim, capacity,
                                  tokens.dtype, tokens.device)
            state = FastDecodeState(cache, b, tokens.device)
        ids = generate_frames(self.gaze_decoder, tokens, [int(x) for x in max_tokens_each_frame], task_loss_requirement,
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
