"""autogaze-fast: a Triton-accelerated PyTorch implementation of NVIDIA AutoGaze.

Public API (imported lazily so that ``import autogaze_fast`` stays cheap):
``AutoGaze``, ``AutoGazeConfig``, ``AutoGazeImageProcessor``, ``SiglipVisionModel``, ``AutoVisionModel``,
``AutoVisionProcessor``, ``read_video``.
"""

from __future__ import annotations

import importlib

from autogaze_fast._moved import install as _install_moved_paths

__version__ = "0.1.0"

_EXPORTS = {
    "AutoGaze": "autogaze_fast.model",
    "AutoGazeConfig": "autogaze_fast.config",
    "AutoGazeImageProcessor": "autogaze_fast.processing.autogaze",
    "SiglipImageProcessor": "autogaze_fast.processing.siglip",
    "SiglipVisionModel": "autogaze_fast.siglip",
    "AutoVisionModel": "autogaze_fast.vit.auto",
    "AutoVisionProcessor": "autogaze_fast.processing.auto",
    "read_video": "autogaze_fast.media.video",
    "GazedVideoEncoder": "autogaze_fast.encoder",
    "TileGrid": "autogaze_fast.tiling.grid",
    "CheckpointError": "autogaze_fast.loading",
    "ConfigError": "autogaze_fast.config",
}

__all__ = list(_EXPORTS)

_install_moved_paths()  # old flat-layout module paths still import, with a DeprecationWarning


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'autogaze_fast' has no attribute {name!r}")
