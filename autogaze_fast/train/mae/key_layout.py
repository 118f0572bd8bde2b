"""The ``ViTMAEForPreTraining`` state-dict key layouts of transformers 4.x and 5.x, mapped onto ours.

Our :class:`~autogaze_fast.train.mae.model.GazedMAE` names its parameters as transformers 4.x does
(and as upstream's checkpoints and ``videomae.pt`` hold them). Two other layouts exist in the wild,
both found by saving the same tiny model with each library (``tests/fixtures/mae_layouts/``):

* **5.x ``save_pretrained`` files**: transformers 5 renames on load and renames back on save, but its
  reverse rule for the encoder (``layers.`` → ``encoder.layer.``) also hits the decoder, so the decoder
  layers are written as ``decoder.decoder_encoder.layer.N.…`` instead of ``decoder.decoder_layers.N.…``
  (everything else is 4.x-named);
* **5.x module keys** (``model.state_dict()`` saved directly): ``vit.layers.N.`` for the encoder layers
  and, in every layer, ``attention.{q,k,v,o}_proj`` and ``mlp.fc{1,2}``.

:func:`to_canonical_mae_keys` maps either onto the 4.x names; 4.x keys pass unchanged.
"""

from __future__ import annotations

import re

import torch

from autogaze_fast.loading import CheckpointError

__all__ = ["LAYER_RENAMES", "PREFIX_RENAMES", "to_canonical_mae_keys"]

#: Where a layer stack lives: (pattern of a 5.x prefix, its 4.x prefix).
PREFIX_RENAMES = (
    (re.compile(r"^vit\.layers\.(\d+)\."), r"vit.encoder.layer.\1."),
    (re.compile(r"^decoder\.decoder_encoder\.layer\.(\d+)\."), r"decoder.decoder_layers.\1."),
)
#: Inside one layer (after its ``….N.`` prefix): 5.x module name → 4.x module name.
LAYER_RENAMES = (
    ("attention.q_proj.", "attention.attention.query."),
    ("attention.k_proj.", "attention.attention.key."),
    ("attention.v_proj.", "attention.attention.value."),
    ("attention.o_proj.", "attention.output.dense."),
    ("mlp.fc1.", "intermediate.dense."),
    ("mlp.fc2.", "output.dense."),
)
_LAYER = re.compile(r"^(vit\.encoder\.layer\.\d+\.|decoder\.decoder_layers\.\d+\.)(.*)$")


def canonical_mae_key(key: str) -> str:
    """One key in the 4.x layout (unchanged when it already is, or is not a layer key)."""
    for pattern, target in PREFIX_RENAMES:
        key = pattern.sub(target, key)
    match = _LAYER.match(key)
    if match is None:
        return key
    prefix, rest = match.groups()
    for new, old in LAYER_RENAMES:
        if rest.startswith(new):
            return prefix + old + rest[len(new):]
    return key


def to_canonical_mae_keys(state: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """``state`` with every key in the transformers 4.x layout (see the module docstring).

    Raises:
        CheckpointError: two keys land on the same 4.x name (a file mixing layouts).
    """
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        name = canonical_mae_key(key)
        if name in out:
            raise CheckpointError(f"{source} mixes ViT-MAE key layouts: {origin[name]!r} and {key!r} are both "
                                  f"{name!r} (transformers 4.x and 5.x names of the same weight); save it again "
                                  "with one library")
        out[name], origin[name] = value, key
    return out
