"""autogaze-fast: a Triton-accelerated PyTorch implementation of NVIDIA AutoGaze.

Public API (imported lazily so that ``import autogaze_fast`` stays cheap):
``AutoGaze``, ``AutoGazeConfig``, ``AutoGazeImageProcessor``, ``SiglipVisionModel``, ``read_video``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "AutoGaze": "autogaze_fast.model",
    "AutoGazeConfig": "autogaze_fast.config",
    "AutoGazeImageProcessor": "autogaze_fast.processor",
    "SiglipImageProcessor": "autogaze_fast.siglip_processor",
    "SiglipVisionModel": "autogaze_fast.siglip",
    "read_video": "autogaze_fast.video",
    "GazedVideoEncoder": "autogaze_fast.encoder",
    "TileGrid": "autogaze_fast.tiling",
    "CheckpointError": "autogaze_fast.loading",
    "ConfigError": "autogaze_fast.config",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'autogaze_fast' has no attribute {name!r}")
