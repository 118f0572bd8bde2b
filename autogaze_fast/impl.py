"""The ``AUTOGAZE_IMPL=reference|fast`` switch."""

from __future__ import annotations

import os

IMPLS = ("reference", "fast")
DEFAULT_IMPL = "fast"


def resolve_impl(impl: str | None = None) -> str:
    """Return the implementation to use: ``impl`` if given, else ``$AUTOGAZE_IMPL``, else the default."""
    chosen = impl if impl is not None else os.environ.get("AUTOGAZE_IMPL", DEFAULT_IMPL)
    chosen = chosen.strip().lower()
    if chosen not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS} (argument or AUTOGAZE_IMPL), got {chosen!r}")
    return chosen
