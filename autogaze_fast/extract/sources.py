"""List the videos of an extraction: a folder (recursive), a glob, or a list file (txt / csv / jsonl).

Every video gets a stable id: its path relative to the input's root, extension kept
(``sub/clip.mp4``), so two files that differ only by extension never collide. The id names the
output file (``OUT/<hash>/<id>.safetensors``).
"""

from __future__ import annotations

import csv
import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path

#: Suffixes taken as videos when scanning a folder or a glob.
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".gif", ".ts", ".3gp", ".ogv"}
)
LIST_SUFFIXES = (".txt", ".csv", ".jsonl")
#: Still-image suffixes: refused as inputs (FFmpeg would read one as a 1-frame "video").
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".ppm", ".pgm"})
PATH_KEYS = ("path", "video", "video_path", "file", "filename")


@dataclass(frozen=True)
class VideoSource:
    """One input video: ``id`` (relative path, posix) and the absolute ``path``."""

    id: str
    path: Path


def _relative_id(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # outside the root (a list file naming other folders): keep the whole path
        return path.as_posix().lstrip("/")


def _from_folder(folder: Path) -> list[VideoSource]:
    found = [p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()]
    return [VideoSource(_relative_id(p, folder), p.resolve()) for p in found]


def _glob_root(pattern: str) -> Path:
    """The longest leading part of ``pattern`` without glob characters."""
    parts = Path(pattern).parts
    root = []
    for part in parts:
        if glob.has_magic(part):
            break
        root.append(part)
    return Path(*root) if root else Path(".")


def _from_glob(pattern: str) -> list[VideoSource]:
    root = _glob_root(os.path.expanduser(pattern)).resolve()
    found = [Path(p).resolve() for p in glob.glob(os.path.expanduser(pattern), recursive=True)]
    return [VideoSource(_relative_id(p, root), p) for p in found if p.is_file()]


def _list_entries(list_file: Path) -> list[str]:
    text = list_file.read_text()
    suffix = list_file.suffix.lower()
    if suffix == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if suffix == ".jsonl":
        entries = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{list_file}:{n} is not valid JSON ({e})") from None
            entries.append(_path_field(row, f"{list_file}:{n}"))
        return entries
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    column = next((header.index(k) for k in PATH_KEYS if k in header), None)
    if column is None:  # no header: the first column holds paths
        return [r[0].strip() for r in rows if r and r[0].strip()]
    return [r[column].strip() for r in rows[1:] if len(r) > column and r[column].strip()]


def _path_field(row, where: str) -> str:
    if isinstance(row, str):
        return row
    if isinstance(row, dict):
        for key in PATH_KEYS:
            if isinstance(row.get(key), str):
                return row[key]
    raise ValueError(f"{where}: expected a string or an object with one of the keys {list(PATH_KEYS)}, got {row!r}")


def _from_list(list_file: Path) -> list[VideoSource]:
    """The videos a list file names. An entry that is neither an existing file nor a path with a video
    suffix means the file is not a list of videos (a lone ``notes.txt``): refused, naming the line."""
    root = list_file.parent.resolve()
    out = []
    for n, entry in enumerate(_list_entries(list_file), 1):
        path = Path(os.path.expanduser(entry))
        path = (path if path.is_absolute() else root / path).resolve()
        _check_not_image(path, f"{list_file} names {entry!r}: ")
        if path.suffix.lower() not in VIDEO_SUFFIXES and not path.is_file():
            raise ValueError(
                f"{list_file} is read as a list of videos (one path a line), but entry {n}, {entry!r}, is no file and "
                f"has no video suffix ({', '.join(sorted(VIDEO_SUFFIXES))}); pass video files or folders, or a list "
                f"file of video paths")
        out.append(VideoSource(_relative_id(path, root), path))
    return out


def _check_not_image(path: Path, where: str = "") -> None:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise ValueError(f"{where}{path} is a still image, not a video; extract takes video files "
                         f"({', '.join(sorted(VIDEO_SUFFIXES))})")


def list_videos(inputs: str | os.PathLike | list[str | os.PathLike]) -> list[VideoSource]:
    """The videos named by ``inputs``, sorted by id, without duplicates.

    Args:
        inputs: a folder (scanned recursively for video suffixes), a glob pattern (``data/**/*.mp4``),
            a list file (``.txt``: one path a line; ``.csv``: a ``path``/``video`` column or the first
            column; ``.jsonl``: a string or an object with a ``path``/``video`` key a line; relative
            paths are relative to the list file), or a list of any of these.
    Returns:
        Sorted, de-duplicated :class:`VideoSource` list. A list file may name files that do not exist:
        they are kept (the run records them as failed, with the reason).
    Raises:
        FileNotFoundError: a folder or list file that does not exist, or a glob that matches nothing.
        ValueError: two different files with the same id (inputs from several roots); a still image; a
            list file whose entries are not video paths.
    """
    if isinstance(inputs, (list, tuple)):
        found = [s for item in inputs for s in list_videos(item)]
    else:
        text = os.fspath(inputs)
        path = Path(os.path.expanduser(text))
        if path.is_dir():
            found = _from_folder(path)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            found = _from_list(path)
        elif path.is_file():
            _check_not_image(path)
            found = [VideoSource(path.name, path.resolve())]
        elif glob.has_magic(text):
            found = _from_glob(text)
            if not found:
                raise FileNotFoundError(f"the glob {text!r} matches no file")
        else:
            raise FileNotFoundError(f"{text}: no such folder, list file ({'/'.join(LIST_SUFFIXES)}) or video")
    by_id: dict[str, VideoSource] = {}
    for source in found:
        other = by_id.get(source.id)
        if other is not None and other.path != source.path:
            raise ValueError(f"two inputs share the id {source.id!r}: {other.path} and {source.path}; give them distinct paths")
        by_id[source.id] = source
    return [by_id[k] for k in sorted(by_id)]


def require_videos(inputs, videos: list[VideoSource]) -> list[VideoSource]:
    """``videos`` when it holds any; else FileNotFoundError saying ``inputs`` name no video (an empty
    folder, a folder of other files) and which suffixes count."""
    if not videos:
        shown = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        raise FileNotFoundError(f"no video found in {', '.join(map(str, shown))} (video suffixes: "
                                f"{', '.join(sorted(VIDEO_SUFFIXES))}); nothing to extract")
    return videos
