"""Argument checks every layer shares (one wording for one mistake)."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_integer(value: Any) -> bool:
    """True for Python and numpy integers; False for ``bool`` (an ``int`` subclass), floats and the rest."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


def check_int(value: Any, name: str, minimum: int | None = 1, *, error: type[Exception] = ValueError,
              message: str | None = None) -> int:
    """``value`` as an ``int`` when it is an integer ``>= minimum`` (no bound with ``minimum=None``).

    Raises:
        ``error`` (``ValueError`` by default) with ``message``, or by default
        ``"{name} must be an integer, got {value!r}"`` (not an integer; ``bool`` is not one) or
        ``"{name} must be >= {minimum}, got {value}"`` (below the bound).
    """
    if not is_integer(value):
        raise error(message or f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise error(message or f"{name} must be >= {minimum}, got {value}")
    return int(value)
