"""SigLIP / SigLIP2 on the gazed-ViT core: the reference tower's parameters, the core's fast paths.

:class:`FastSiglipVisionTransformer` keeps :class:`~autogaze_fast.reference.siglip.SiglipVisionTransformer`'s
modules and state dict (``embeddings``, ``encoder.layers``, ``post_layernorm``, ``head``) and answers the
core's hooks: the patch conv, the position table bicubic-interpolated per scale (upstream's and
transformers' ``interpolate_pos_encoding``: no antialias; the table itself when the grid matches), no
prefix tokens, the pre-norm blocks, the post-layernorm and the MAP head (pooling every position, pads
included, as upstream; with ``drop_pads`` only the real tokens, since the pads are gone).

(It used to live in ``autogaze_fast.fast.siglip``; that path still imports, with a DeprecationWarning.)
"""

from __future__ import annotations

from typing import Any

import torch

from autogaze_fast.reference.siglip import SiglipMultiheadAttentionPoolingHead, SiglipVisionTransformer
from autogaze_fast.vit.core import BlockParts, GazedViT, PackedSequence, VisionOutput, resize_position_grid

#: Tokens per chunk of the inference MLP (see :data:`autogaze_fast.vit.core.MLP_CHUNK_ROWS`); read on
#: every call, so a test may shrink it.
MLP_CHUNK_ROWS = 1024


def pool_real_tokens(head: SiglipMultiheadAttentionPoolingHead, x: torch.Tensor, key_pad: torch.Tensor) -> torch.Tensor:
    """SigLIP's MAP head over the non-pad positions only: x ``(B, L, C)``, key_pad ``(B, L)`` → ``(B, C)``."""
    attn = head.attention
    b, n, c = x.shape
    h, d = attn.num_heads, c // attn.num_heads
    wq, wk, wv = attn.in_proj_weight.chunk(3)
    bq, bk, bv = attn.in_proj_bias.chunk(3)
    q = torch.nn.functional.linear(head.probe.expand(b, -1, -1), wq, bq).reshape(b, 1, h, d).transpose(1, 2)
    k = torch.nn.functional.linear(x, wk, bk).reshape(b, n, h, d).transpose(1, 2)
    v = torch.nn.functional.linear(x, wv, bv).reshape(b, n, h, d).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) * d ** -0.5
    weights = scores.masked_fill(key_pad[:, None, None, :], float("-inf")).softmax(dim=-1).nan_to_num(0.0)
    pooled = attn.out_proj((weights @ v).transpose(1, 2).reshape(b, 1, c))
    return (pooled + head.mlp(head.layernorm(pooled)))[:, 0]


class FastSiglipVisionTransformer(SiglipVisionTransformer, GazedViT):
    """Drop-in for the reference SigLIP tower (same state dict) running on the gazed-ViT core.

    ``forward(pixel_values, gazing_info=None, *, output_hidden_states=False, attn_type=None,
    drop_pads=False)``: ``(B, T, c, S, S)`` videos are encoded gazed (every patch of every scale when
    ``gazing_info`` is ``None``), as the reference; a ``(B, c, H, W)`` batch of images without
    ``gazing_info`` is encoded densely, as transformers' ``SiglipVisionModel``.
    """

    family = "siglip"

    def vit_patch_conv(self):
        conv = self.embeddings.patch_embedding
        return conv.weight, conv.bias

    def vit_position_weight(self) -> torch.Tensor:
        return self.embeddings.position_embedding.weight

    def vit_patch_positions(self, gh: int, gw: int) -> torch.Tensor:
        return resize_position_grid(self.embeddings.position_embedding.weight, gh, gw)

    def position_table(self) -> torch.Tensor:
        """``(n, C)`` position embeddings of one frame's slots, every scale interpolated to its grid."""
        return self.scale_position_table()

    def vit_blocks(self):
        for layer in self.encoder.layers:
            attn, mlp = layer.self_attn, layer.mlp
            yield BlockParts(layer.layer_norm1, attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj,
                             layer.layer_norm2, mlp.fc1, mlp.fc2, mlp.act)

    def check_gazed_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The reference's checks and messages (which name the SigLIP image processor)."""
        return self.prepare_inputs(pixel_values, None)[0]

    @property
    def vit_mlp_chunk_rows(self) -> int:
        return MLP_CHUNK_ROWS

    def vit_finish(self, x: torch.Tensor, seq: PackedSequence | None):
        x = self.post_layernorm(x)
        if self.head is None:
            return x, None
        if seq is None or seq.x.shape[1] == seq.dest.shape[1] and bool((seq.dest >= 0).all()):
            return x, self.head(x)
        return x, pool_real_tokens(self.head, x, seq.is_pad)

    def forward(
        self,
        pixel_values: torch.Tensor,
        gazing_info: Any | None = None,
        *,
        output_hidden_states: bool = False,
        attn_type: str | None = None,
        drop_pads: bool = False,
    ) -> VisionOutput:
        """Same contract as the reference's ``forward`` (plus the dense image mode and ``drop_pads``)."""
        if pixel_values.dim() == 4 and gazing_info is None:
            return self.dense_forward(pixel_values, output_hidden_states=output_hidden_states)
        return self.gazed_forward(pixel_values, gazing_info, output_hidden_states=output_hidden_states,
                                  attn_type=attn_type, drop_pads=drop_pads)
