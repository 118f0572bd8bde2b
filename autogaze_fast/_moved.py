"""Old module paths of the flat layout (before the package was laid out by layer), kept importable
for one release: ``import autogaze_fast.synthetic`` still works, warns once with a
:class:`DeprecationWarning` naming the new path, and gives the new module itself."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module path -> new module path
MOVED = {
    "autogaze_fast.processor": "autogaze_fast.processing.autogaze",
    "autogaze_fast.siglip_processor": "autogaze_fast.processing.siglip",
    "autogaze_fast.fast.siglip": "autogaze_fast.vit.siglip",
    "autogaze_fast.video": "autogaze_fast.media.video",
    "autogaze_fast.synthetic": "autogaze_fast.media.synthetic",
    "autogaze_fast.visualize": "autogaze_fast.media.draw",
    "autogaze_fast.frame_sinks": "autogaze_fast.media.sinks",
    "autogaze_fast.interframe": "autogaze_fast.media.interframe",
    "autogaze_fast.tiled_gaze": "autogaze_fast.tiling.gaze",
    "autogaze_fast.streaming": "autogaze_fast.tiling.stream",
    "autogaze_fast.chunking": "autogaze_fast.tiling.chunks",
    "autogaze_fast.gaze_views": "autogaze_fast.cli.views",
    "autogaze_fast.compile_kernels": "autogaze_fast.cli.compile_kernels",
    "autogaze_fast.extract.cli": "autogaze_fast.cli.extract",
    "autogaze_fast.train.cli": "autogaze_fast.cli.train",
    "autogaze_fast.gpu_check_kernels": "autogaze_fast.gpu_check.kernels",
    "autogaze_fast.gpu_check_models": "autogaze_fast.gpu_check.models",
    "autogaze_fast.gpu_check_report": "autogaze_fast.gpu_check.report",
    "autogaze_fast.gpu_check_targets": "autogaze_fast.gpu_check.targets",
    "autogaze_fast.gpu_check_timing": "autogaze_fast.gpu_check.timing",
    "autogaze_fast.train.mae_config": "autogaze_fast.train.mae.config",
    "autogaze_fast.train.mae_layers": "autogaze_fast.train.mae.layers",
    "autogaze_fast.train.mae_loading": "autogaze_fast.train.mae.loading",
    "autogaze_fast.train.mae_loss": "autogaze_fast.train.mae.loss",
    "autogaze_fast.train.mae_task": "autogaze_fast.train.mae.task",
}


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {self.new}; import it from there (the old path goes in the next release)",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(self.new)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # The new module already ran; the import machinery set its __spec__ to the old name's: restore it.
        module.__spec__ = self.real_spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves the old paths of :data:`MOVED` to their new modules."""

    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        return importlib.util.spec_from_loader(fullname, _MovedLoader(new)) if new else None


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
