"""Gaze policies that return the gaze dict AutoGaze returns, so the gazed ViT, the encoder,
``extract``, ``gaze`` and the interframe view take any of them.

    >>> from autogaze_fast.selectors import select
    >>> gaze = select("motion-vectors", frames, gazing_ratio=0.1)   # frames (T, H, W, 3) uint8

Names (:data:`SELECTORS`): ``autogaze`` (the model), ``uniform``, ``random``, ``frame-difference``,
``run-length``, ``motion-vectors``. How each picks its cells and their scales: the modules'
docstrings (:mod:`~autogaze_fast.selectors.patterns` for the shared rules). :class:`SelectorGazer`
wraps a heuristic as an AutoGaze-like module for code that calls a model.
"""

from autogaze_fast.selectors.base import Selector
from autogaze_fast.selectors.gazer import SelectorGazer, denormalize
from autogaze_fast.selectors.layout import NVIDIA_LAYOUT, GazeLayout, gaze_from_masks, kept_per_frame
from autogaze_fast.selectors.registry import HEURISTICS, SELECTORS, make_selector, select

__all__ = ["HEURISTICS", "NVIDIA_LAYOUT", "SELECTORS", "GazeLayout", "Selector", "SelectorGazer", "denormalize",
           "gaze_from_masks", "kept_per_frame", "make_selector", "select"]
