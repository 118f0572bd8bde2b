"""The package's layout rules that neither ruff nor import-linter states (DESIGN.md, "Layout"):

- a function-local import only defers a heavy or optional dependency (Triton and the modules that
  import it, PyAV, torchcodec, tqdm, matplotlib, Pillow, the hub client), and says so in a comment on
  its line or the line above;
- nothing imports a private name (``_name``) from another module of the package.

The layers and the absence of import circles are import-linter's contracts (``make lint``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"autogaze_fast": ROOT / "autogaze_fast", "autogaze_fast.kernels": ROOT / "kernels",
           "autogaze_fast.reference": ROOT / "reference"}

#: Imports worth deferring: heavy or optional third-party modules, and our modules that import Triton.
DEFERRABLE = ("triton", "av", "torchcodec", "tqdm", "matplotlib", "PIL", "huggingface_hub", "torch.utils.tensorboard",
              "autogaze_fast.kernels.decode_attention", "autogaze_fast.kernels.sparse_attention",
              "autogaze_fast.kernels.gathered_patch_embed", "autogaze_fast.kernels.aot",
              "autogaze_fast.fast.siglip")


def _modules():
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            if package == "autogaze_fast" and path.relative_to(folder).parts[0] in ("kernels", "reference"):
                continue  # links a GPU machine's install may leave (bench/gpu_check_device.sh)
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join([package, *parts]), path, path.name == "__init__.py"


def _target(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(tree: ast.AST):
    """(node, is function-local) for every import statement."""
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, id(node) in local


def _deferrable(name: str) -> bool:
    return any(name == d or name.startswith(d + ".") for d in DEFERRABLE)


def test_function_local_imports_only_defer_heavy_optional_modules_and_say_so():
    bad = []
    for module, path, is_package in _modules():
        lines = path.read_text().splitlines()
        for node, local in _imports(ast.parse(path.read_text())):
            if not local:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [_target(module, node, is_package)]
            commented = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
            if not all(_deferrable(n) for n in names) or not commented:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {', '.join(names)}"
                           + ("" if commented else " (no comment)"))
    assert not bad, "function-local imports that defer nothing heavy, or say nothing:\n" + "\n".join(bad)


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for module, path, is_package in _modules():
        for node, _ in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = _target(module, node, is_package)
                if target.startswith("autogaze_fast"):
                    bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {a.name} from {target}"
                            for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "private names imported across modules (make them public or move them):\n" + "\n".join(bad)
