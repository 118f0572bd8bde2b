"""Every ```python block of README.md runs, in order, in one namespace (so the README never goes
stale). The blocks use the random-weight presets, so no checkpoint is needed; the fast path runs its
CPU torch twins, in a temporary working directory. The "Defaults" table equals autogaze_fast/defaults.py,
and the commands beside the README's pictures make such pictures (run here on a small clip)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_python_blocks():
    assert len(python_blocks(README.read_text())) >= 3


def test_readme_python_blocks_run(tmp_path, monkeypatch, torch_twins):
    pytest.importorskip("av")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(python_blocks(README.read_text())):
        code = compile(block, f"README.md python block {i + 1}", "exec")
        exec(code, namespace)  # noqa: S102 - the README's own examples


# ------------------------------------------------------------------ the defaults table
def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_readme_defaults_table_equals_the_code():
    from autogaze_fast import defaults as d

    rows = {}
    for line in _section(README.read_text(), "Defaults").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    assert rows == {
        "gazing_ratio": f"{d.GAZING_RATIO:g}",
        "task_loss_requirement": f"`{d.AUTO}`: {d.TASK_LOSS_REQUIREMENT:g} with a checkpoint, none with random weights",
        "tiles": "none" if d.TILES is None else f"`{d.TILES}`",
        "max_tiles": str(d.MAX_TILES),
        "tile_batch_size": str(d.TILE_BATCH_SIZE),
        "keyframe_every": str(d.KEYFRAME_EVERY),
    }


# ------------------------------------------------------------------ the pictures and the commands beside them
def picture_commands(text: str) -> list[list[str]]:
    """The shell commands of the README block that makes docs/images/, continuation lines joined."""
    import shlex

    block = next(b for b in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M) if "docs/images/" in b)
    commands = [shlex.split(c) for c in block.replace("\\\n", " ").splitlines() if c.strip()]
    return [[w for w in c if not re.match(r"^[A-Z_]+=", w)] for c in commands]  # environment settings dropped


def _run(command: list[str]) -> None:
    import runpy
    import sys

    from autogaze_fast.cli.main import main

    if command[:2] == ["python", "docs/make_clip.py"]:
        argv = sys.argv
        sys.argv = command[1:]
        try:
            runpy.run_path(str(README.parent / "docs" / "make_clip.py"), run_name="__main__")
        finally:
            sys.argv = argv
    else:
        assert command[0] == "autogaze-fast", command
        assert main(command[1:]) == 0


def _strip_rows(picture: np.ndarray, frame_height: int) -> None:
    """A picture is the frame and below it its caption strip (dark, with text in it)."""
    from autogaze_fast.media.caption import STRIP_BACKGROUND

    assert picture.shape[0] > frame_height
    strip = picture[frame_height:]
    assert (strip[-1] == STRIP_BACKGROUND).all() and (strip != STRIP_BACKGROUND).any(-1).any()


def test_readme_pictures_are_what_the_commands_beside_them_make():
    """The committed pictures have the commands' sizes and frame counts, each frame above its caption strip."""
    from PIL import Image

    commands = picture_commands(README.read_text())
    clips = {c[c.index("--out") + 1]: c for c in commands if "docs/make_clip.py" in c}
    pictures = [c for c in commands if c[0] == "autogaze-fast"]
    assert len(pictures) == 2
    for command in pictures:
        clip = clips[command[2]]
        width, height = (int(x) for x in clip[clip.index("--size") + 1].split("x"))
        frames = int(clip[clip.index("--frames") + 1])
        if "--max-frames" in command:
            frames = min(frames, int(command[command.index("--max-frames") + 1]))
        out = README.parent / command[command.index("--out") + 1]
        assert out.parent.name == "images" and out.is_file() and f"]({out.relative_to(README.parent)})" in README.read_text()
        with Image.open(out) as img:
            assert img.size[0] == width and getattr(img, "n_frames", 1) == (1 if out.suffix == ".png" else frames)
            _strip_rows(np.asarray(img.convert("RGB")), height)


def test_readme_picture_commands_run_on_a_small_clip(tmp_path, monkeypatch, torch_twins):
    """The README's commands, on 320x180 clips of 3 frames written to a temporary folder: the pictures
    come out at the clip's width with their caption strips, the interframe CSV next to its GIF."""
    pytest.importorskip("av")
    from PIL import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    outputs = []
    for command in picture_commands(README.read_text()):
        command = [w.replace("/tmp/", f"{tmp_path}/").replace("docs/images/", f"{tmp_path}/") for w in command]
        if "--size" in command:
            command[command.index("--size") + 1] = "320x180"
        if "--frames" in command:
            command[command.index("--frames") + 1] = "3"
        _run(command)
        if command[0] == "autogaze-fast":
            outputs.append(Path(command[command.index("--out") + 1]))
    assert [p.suffix for p in outputs] == [".png", ".gif"]
    for out in outputs:
        with Image.open(out) as img:
            assert img.size[0] == 320 and getattr(img, "n_frames", 1) == (1 if out.suffix == ".png" else 3)
            _strip_rows(np.asarray(img.convert("RGB")), 180)
    assert len(outputs[1].with_suffix(".csv").read_text().splitlines()) == 1 + 3
