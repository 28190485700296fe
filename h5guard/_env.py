"""Settings read from environment variables: one way to parse them, one way to refuse."""

from __future__ import annotations

import os
from collections.abc import Callable

from h5guard.errors import SettingError


def whole_number(name: str, default: int, *, valid: Callable[[int], bool], expected: str) -> int:
    """``$name`` as an ``int``; ``default`` when it is unset or blank.

    Raises
    ------
    SettingError
        The value is no whole number, or ``valid`` refuses it: the message names the
        variable, ``expected`` and what was found, and what to do.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise SettingError(
            f"${name}: expected {expected}, got {raw!r}; set it so, or unset it for the "
            f"default ({default})"
        )
    return value
