"""Settings read from environment variables: one way to parse them, one way to refuse."""

from __future__ import annotations

import os
from collections.abc import Callable


def whole_number(name: str, default: int, *, valid: Callable[[int], bool], expected: str) -> int:
    """``$name`` as an ``int``; ``default`` when it is unset or blank.

    Raises
    ------
    ValueError
        The value is no whole number, or ``valid`` refuses it: the message names the
        variable, ``expected`` and what was found.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise ValueError(f"${name}: expected {expected}, got {raw!r}")
    return value
