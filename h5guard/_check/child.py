"""Main loop of a sandbox child: read a call, run it, answer, repeat.

Started by :mod:`h5guard._sandbox` as ``python -m h5guard._check.child LIMIT``.
Frames on stdin/stdout are an 8-byte little-endian length and a pickle.
"""

from __future__ import annotations

import contextlib
import importlib
import resource
import signal
import sys
import traceback
from typing import Any

# Imported before the memory limit is set, so their mappings count as start-up.
import h5py  # noqa: F401
import numpy  # noqa: F401

from h5guard._check import deep  # noqa: F401
from h5guard._sandbox import _read_frame, _write_frame, die_with_parent, take_retirement


def _address_space() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _limit_memory(extra: int) -> None:
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    current = _address_space()
    if current:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (current + extra, current + extra))


def main() -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    _limit_memory(int(sys.argv[1]))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Nothing but frames may reach the real stdout.
    sys.stdout = sys.stderr
    _write_frame(stdout, ("ready", None, False))  # the parent starts the call's clock now
    while True:
        try:
            module, func, args = _read_frame(stdin)
        except EOFError:
            return
        answer: tuple[str, Any]
        try:
            target = getattr(importlib.import_module(module), func)
            answer = ("ok", target(*args))
        except MemoryError:
            answer = ("memory", "ran out of its memory limit")
        except Exception as err:
            last = traceback.format_exception_only(err)[-1].strip()
            answer = ("error", last)
        # After anything but a clean answer, or when the call asked for it, the answer
        # says so, and the parent kills this process rather than give it another file: a
        # heap that libhdf5 may have damaged reads no other file.
        retire = take_retirement() or answer[0] != "ok"
        try:
            _write_frame(stdout, (*answer, retire))
        except MemoryError:
            _write_frame(stdout, ("memory", "ran out of its memory limit", True))


if __name__ == "__main__":
    main()
