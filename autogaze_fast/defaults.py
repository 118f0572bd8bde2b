"""The gaze settings every surface shares, written once: ``autogaze-fast gaze``, ``extract`` and
``demo``, :meth:`AutoGaze.gaze_video <autogaze_fast.AutoGaze.gaze_video>` and
:class:`~autogaze_fast.GazedVideoEncoder` all take their defaults from here (the README's
"Defaults" table is checked against these values by ``tests/test_readme.py``).

The plain model call ``model({"video": v})`` keeps upstream's own rule (with neither a ratio nor a
requirement, the checkpoint config's strategies); these defaults are for the surfaces above it.

``task_loss_requirement`` defaults to :data:`AUTO`: upstream's recommended stop
(:data:`TASK_LOSS_REQUIREMENT`, 0.7) for weights loaded from a checkpoint, and no stop for a model
with random weights (a preset, or one built from a config), whose task-loss predictions are
meaningless: the stop would fire after the first step and keep one token or so per frame.
"""

from __future__ import annotations

from typing import Any

GAZING_RATIO = 0.75
"""Most tokens gazed per frame, as a fraction of the N multi-scale tokens (upstream's recommended 0.75)."""

TASK_LOSS_REQUIREMENT = 0.7
"""Upstream's recommended task-loss stop: a frame ends once the predicted task loss is at most this."""

AUTO = "auto"
"""``task_loss_requirement=AUTO``: :data:`TASK_LOSS_REQUIREMENT` with a checkpoint, no stop with random weights."""

TILES: str | None = None
"""No tiles: every frame squashed to the gaze model's 224 x 224, as upstream (``"anyres"`` keeps the aspect)."""

MAX_TILES = 64
"""Most tiles per frame with ``tiles`` (1080p at 224 takes 45)."""

TILE_BATCH_SIZE = 8
"""Tiles gazed per model call with ``tiles``."""

KEYFRAME_EVERY = 16
"""Interframe view: full refresh every this many frames, frame 0 included."""

RANDOM = "random"
"""``model.name_or_path`` of seeded random presets starts with this."""


def weights_origin(model: Any) -> str:
    """Where a gaze model's weights come from, for messages and captions: the checkpoint
    (``name_or_path`` set by ``from_pretrained``), ``"random (...)"`` for a preset, or
    ``"built from a config"``."""
    name = getattr(model, "name_or_path", None)
    return "built from a config" if name is None else str(name)


def has_trained_weights(model: Any) -> bool:
    """True when the weights were loaded from a checkpoint (``from_pretrained``); False for a random
    preset or a model built from a config (its task-loss predictions are not trained)."""
    name = getattr(model, "name_or_path", None)
    return name is not None and not str(name).startswith(RANDOM)


def resolve_task_loss_requirement(value: Any, model: Any) -> float | None:
    """``value``, with :data:`AUTO` turned into :data:`TASK_LOSS_REQUIREMENT` for trained weights and
    None (no stop) otherwise (see :func:`has_trained_weights`)."""
    if isinstance(value, str):
        if value != AUTO:
            raise ValueError(f"task_loss_requirement must be a number, None (no stop) or {AUTO!r}, got {value!r}")
        return TASK_LOSS_REQUIREMENT if has_trained_weights(model) else None
    return value


def describe_requirement(value: float | None, requested: Any, model: Any) -> str:
    """``value`` as a settings line shows it, saying why when it came from :data:`AUTO`."""
    shown = "off" if value is None else f"{value:g}"
    if requested != AUTO:
        return shown
    if value is None:
        return f"{shown} (the default for random weights: their task-loss predictions are meaningless)"
    return f"{shown} (the default with a checkpoint: upstream's recommended stop)"
