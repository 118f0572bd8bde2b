"""The gazing model proper (upstream's ``gazing_model``): vision stem + connector + gaze decoder,
with clip-level generation (whole clip or streaming) and the teacher-forced forward."""

from __future__ import annotations

import torch
from torch import nn

from autogaze_fast.config import AutoGazeConfig

from .generation import generate_frame
from .llama import GazeDecoder, KVCache
from .stem import Connector, VisionStem, frame_tokens


def check_streaming_caches(past_key_values, past_inputs_embeds, past_attention_mask, past_conv_values,
                           batch: int) -> None:
    """Streaming takes all four caches a previous call returned, or none of them, for the same batch.

    Args:
        past_key_values: the decoder cache (the implementation checks its own type).
        past_inputs_embeds, past_attention_mask, past_conv_values: lists of (B, ...) tensors.
        batch: B of this call's video.
    Raises:
        ValueError: some caches given and others not, a list cache that is not a list of tensors,
            or caches made for a batch of another size than ``batch``.
    """
    pasts = (past_key_values, past_inputs_embeds, past_attention_mask, past_conv_values)
    if all(p is None for p in pasts):
        return
    if any(p is None for p in pasts):
        raise ValueError(
            "streaming needs all four of past_key_values, past_inputs_embeds, past_attention_mask and "
            "past_conv_values (pass back every one the previous call returned), or none of them"
        )
    named = (("past_inputs_embeds", past_inputs_embeds), ("past_attention_mask", past_attention_mask),
             ("past_conv_values", past_conv_values))
    for name, tensors in named:
        if not isinstance(tensors, (list, tuple)) or not all(isinstance(x, torch.Tensor) for x in tensors):
            raise ValueError(f"{name} must be the list of tensors the previous streaming call returned, "
                             f"got {type(tensors).__name__}")
        cached = {int(x.shape[0]) for x in tensors if x.dim() > 0}
        if cached and cached != {batch}:
            made_for = "/".join(str(c) for c in sorted(cached))
            raise ValueError(
                f"the streaming caches ({name}) were made for a batch of {made_for} video(s) but this video has a "
                f"batch of {batch}: a stream continues the same batch. Pass the next frames of the same "
                f"{made_for} video(s), or start a new stream for the {batch} video(s) by passing no past_* caches"
            )


def gaze_token_ids(config: AutoGazeConfig, gazing_pos: torch.Tensor, if_padded_gazing: torch.Tensor,
                   num_gazing_each_frame: torch.Tensor, frames: int) -> list[torch.Tensor]:
    """Per-frame decoder token ids of a given gaze: ``gazing_pos - N·t``, pads replaced by eos.

    Args:
        gazing_pos / if_padded_gazing: (B, Σn_t); num_gazing_each_frame: (T',); frames: T'.
    Returns:
        T' tensors (B, n_t) long.
    """
    eos, n_vision = config.decoder.eos_token_id, config.num_vision_tokens_each_frame
    counts = [int(c) for c in num_gazing_each_frame.tolist()]
    if sum(counts) != gazing_pos.shape[1]:
        raise ValueError(f"num_gazing_each_frame sums to {sum(counts)} but gazing_pos has {gazing_pos.shape[1]} entries")
    if len(counts) != frames:
        raise ValueError(f"num_gazing_each_frame has {len(counts)} frames, the video {frames}")
    return [torch.where(pads.bool(), torch.full_like(ids, eos), ids - n_vision * t)
            for t, (ids, pads) in enumerate(zip(gazing_pos.split(counts, 1), if_padded_gazing.split(counts, 1)))]


class GazingModel(nn.Module):
    """State-dict keys: ``vision_model.*``, ``connector.pos_embed``, ``gaze_decoder.*`` (as upstream)."""

    def __init__(self, config: AutoGazeConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_model = VisionStem(config.vision)
        self.connector = Connector(config.num_tokens, config.connector_dim)
        self.gaze_decoder = GazeDecoder(config.decoder)

    @torch.no_grad()
    def generate(
        self,
        video: torch.Tensor,
        max_tokens_each_frame: list[int],
        task_loss_requirement: torch.Tensor | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        use_cache: bool = False,
        past_key_values: KVCache | None = None,
        past_inputs_embeds: list[torch.Tensor] | None = None,
        past_attention_mask: list[torch.Tensor] | None = None,
        past_conv_values: list[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict:
        """Generate gaze for every frame of ``video`` (B, T, 3, H, W).

        Args:
            max_tokens_each_frame: the budget of each (sub-sampled) frame, length T'.
            task_loss_requirement: (B, T') thresholds or None.
            past_*: the caches a previous streaming call returned (all four or none).
        Returns:
            dict with ``gazing_pos`` (B, Σn_t) = token id + N·t (t counted within this call),
            ``if_padded_gazing`` (B, Σn_t) bool, ``num_gazing_each_frame`` (T',) long, and the
            caches ``past_key_values``, ``past_input_embeds``, ``past_attention_mask``,
            ``past_conv_values`` (None unless ``use_cache``).
        """
        check_streaming_caches(past_key_values, past_inputs_embeds, past_attention_mask, past_conv_values,
                               batch=video.shape[0])
        n_vision = self.config.num_vision_tokens_each_frame
        eos = self.config.decoder.eos_token_id
        tokens, conv_values = frame_tokens(self.vision_model, self.connector, video, self.config, past_conv_values)
        cache = past_key_values if past_key_values is not None else KVCache(self.config.decoder.num_hidden_layers)
        embeds = list(past_inputs_embeds) if past_inputs_embeds is not None else []
        masks = list(past_attention_mask) if past_attention_mask is not None else []
        if len(max_tokens_each_frame) != tokens.shape[1]:
            raise ValueError(f"need one token budget per frame: got {len(max_tokens_each_frame)} for {tokens.shape[1]} frames")

        positions, padded, counts = [], [], []
        for t in range(tokens.shape[1]):
            vision = tokens[:, t]
            embeds.append(vision)
            masks.append(torch.ones(vision.shape[:2], dtype=torch.long, device=vision.device))
            ids = generate_frame(
                self.gaze_decoder,
                torch.cat(embeds, dim=1),
                torch.cat(masks, dim=1),
                cache,
                int(max_tokens_each_frame[t]),
                None if task_loss_requirement is None else task_loss_requirement[:, t],
                do_sample=do_sample,
                temperature=temperature,
                generator=generator,
            )
            positions.append(ids + n_vision * t)
            padded.append(ids == eos)
            counts.append(ids.shape[1])
            embeds.append(self.gaze_decoder.embed(ids))
            masks.append((ids != eos).long())

        return {
            "gazing_pos": torch.cat(positions, dim=1),
            "if_padded_gazing": torch.cat(padded, dim=1),
            "num_gazing_each_frame": torch.tensor(counts, dtype=torch.long, device=video.device),
            "task_loss_requirement": task_loss_requirement,
            "past_key_values": cache if use_cache else None,
            "past_input_embeds": embeds if use_cache else None,
            "past_attention_mask": masks if use_cache else None,
            "past_conv_values": conv_values if use_cache else None,
        }

    def sequence_hidden_states(self, embeds: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Decoder hidden states (B, L, C) of a whole sequence (causal, key-padding ``mask`` (B, L))."""
        return self.gaze_decoder.hidden_states(embeds, position_ids, mask)

    def teacher_forced(
        self,
        video: torch.Tensor,
        gazing_pos: torch.Tensor,
        if_padded_gazing: torch.Tensor,
        num_gazing_each_frame: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Probability and task-loss prediction of each given gaze token, in one differentiable pass.

        Gaze token j of a frame is scored by the hidden state ``j % K + 1`` positions earlier through
        head ``j % K``. Upstream quirk kept: its task-loss prediction is read ``(j % K + 1) % K``
        positions earlier from head ``(j % K + 1) % K`` (so slot K-1 reads its own position, head 0).

        Args:
            video: (B, T, 3, H, W); gazing_pos / if_padded_gazing: (B, Σn_t); num_gazing_each_frame: (T',).
        Returns:
            gaze_probs (B, Σn_t) and task_loss_prediction (B, Σn_t).
        """
        cfg = self.config
        k, eos = cfg.decoder.num_multi_token_pred, cfg.decoder.eos_token_id
        tokens, _ = frame_tokens(self.vision_model, self.connector, video, cfg)
        ids_per_frame = gaze_token_ids(cfg, gazing_pos, if_padded_gazing, num_gazing_each_frame, tokens.shape[1])
        ids = torch.cat(ids_per_frame, dim=1)

        embeds, masks, gaze_index, slot = [], [], [], []
        offset = 0
        for t, frame_ids in enumerate(ids_per_frame):
            embeds += [tokens[:, t], self.gaze_decoder.embed(frame_ids)]
            masks += [torch.ones(tokens.shape[:1] + tokens.shape[2:3], dtype=torch.long, device=video.device),
                      (frame_ids != eos).long()]
            offset += tokens.shape[2]
            gaze_index.append(torch.arange(offset, offset + frame_ids.shape[1], device=video.device))
            slot.append(torch.arange(frame_ids.shape[1], device=video.device) % k)
            offset += frame_ids.shape[1]
        mask = torch.cat(masks, dim=1)
        hidden = self.sequence_hidden_states(torch.cat(embeds, dim=1), mask.cumsum(-1) - 1, mask)
        logits, task_loss = self.gaze_decoder.heads(hidden)
        gaze_index, slot = torch.cat(gaze_index), torch.cat(slot)

        step_logits = logits[:, gaze_index - slot - 1, slot]  # (B, Σn_t, V)
        probs = torch.softmax(step_logits, dim=-1).gather(-1, ids[..., None])[..., 0]
        loss_slot = (slot + 1) % k
        task_loss_prediction = task_loss[:, gaze_index - loss_slot, loss_slot]
        return probs, task_loss_prediction
