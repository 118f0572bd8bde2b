"""Frames → pixel values: each model family's image processor.

``autogaze`` holds :class:`AutoGazeImageProcessor` (upstream's video preprocessing for the gaze
model, and the NVIDIA checkpoint's settings as :data:`NVIDIA_PREPROCESSING`); ``siglip`` holds
:class:`SiglipImageProcessor` (the vision tower's preprocessing at its largest scale).
"""

from autogaze_fast.processing.autogaze import NVIDIA_PREPROCESSING, AutoGazeImageProcessor
from autogaze_fast.processing.siglip import SiglipImageProcessor

__all__ = ["NVIDIA_PREPROCESSING", "AutoGazeImageProcessor", "SiglipImageProcessor"]
