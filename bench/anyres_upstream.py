"""Upstream's own AnyRes recipe, timed: run by ``bench_anyres.py`` with a scratch Python that has
upstream's dependencies (transformers, timm, einops), never with the project's. It cuts the canvas
into 16-frame 224 × 224 tiles with ``einops.rearrange`` (upstream's QUICK_START recipe) and gazes
them as one batch through upstream's model.

    python bench/anyres_upstream.py --upstream-src DIR --model DIR --canvas canvas.pt --out result.pt

torchvision (only reached through timm's incidental imports, and often built for another torch)
and wandb (imported at module level for logging) are replaced by empty stand-ins before upstream
is imported; nothing they would provide is used by generation.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import sys
import time
import types

from memory_probe import status_mb as _status_mb  # stdlib only: runs in the upstream venv too


class _AnyClassAttr(type):
    """A class whose every class attribute is another such class (``InterpolationMode.NEAREST``...)."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _AnyClassAttr(name, (), {"__init__": lambda self, *a, **k: None})
        setattr(cls, name, value)
        return value


class _AnyAttr(types.ModuleType):
    """A module whose every attribute is a do-nothing class (enough for import-time references)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _AnyClassAttr(name, (), {"__init__": lambda self, *a, **k: None})
        setattr(self, name, value)
        return value


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _AnyAttr(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        if module.__name__ == "wandb":
            module.log = lambda *a, **k: None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream-src", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--canvas", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--gazing-ratio", type=float, default=0.75)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    sys.modules.pop("torchvision", None)
    sys.meta_path.insert(0, _StandIns(("torchvision", "wandb")))
    sys.path.insert(0, args.upstream_src)
    import torch
    from autogaze.models.autogaze import AutoGaze
    from einops import rearrange

    torch.set_num_threads(args.threads)
    model = AutoGaze.from_pretrained(args.model).eval()
    canvas = torch.load(args.canvas)
    tiles = rearrange(canvas, "B (nt t) C (nh h) (nw w) -> (B nt nh nw) t C h w", t=canvas.shape[1], h=224, w=224)
    del canvas
    rss_before = _status_mb("VmRSS")
    with torch.inference_mode():
        model({"video": tiles[:1, :2]}, gazing_ratio=args.gazing_ratio, generate_only=True)  # warm-up
        start = time.perf_counter()
        out = model({"video": tiles}, gazing_ratio=args.gazing_ratio, generate_only=True)
        seconds = time.perf_counter() - start
    torch.save({
        "gazing_pos": out["gazing_pos"], "if_padded_gazing": out["if_padded_gazing"].bool(),
        "num_gazing_each_frame": torch.as_tensor(out["num_gazing_each_frame"]),
        "seconds": seconds, "peak_rss_mb": _status_mb("VmHWM"), "rss_before_mb": rss_before,
        "tiles": tuple(tiles.shape), "torch": str(torch.__version__),
    }, args.out)


if __name__ == "__main__":
    main()
