"""Append-only JSON-lines files that survive crashes and concurrent writers (manifests, result rows)."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync (under an exclusive ``flock``: several runs may append); a previous
    line cut by a crash is closed first."""
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "ab+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; lines that do not parse (cut by a crash) are skipped."""
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record
