"""Main loop of a sandbox child: read a call, run it, answer, repeat.

Started by :mod:`h5guard._sandbox` as ``python -I -c BOOTSTRAP ROOT FD LIMIT``: isolated
(no working directory, ``PYTHON*`` variables or user site-packages on ``sys.path``), with
h5guard's import root ``ROOT`` put first on ``sys.path`` by the bootstrap. Requests
arrive on stdin; answers leave on the inherited descriptor ``FD`` and nowhere else:
the C-level standard output is pointed at stderr before anything is imported, so a
filter plugin printing to stdout cannot corrupt the frames.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import resource
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any

# Before anything else is imported: C-level writes to fd 1 (libhdf5, plugins) go to
# stderr, and Python's stdout with them.
os.dup2(2, 1)
sys.stdout = sys.stderr

# Imported before the memory limit is set, so their mappings count as start-up.
import h5py  # noqa: E402, F401
import numpy  # noqa: E402, F401

from h5guard._check import deep  # noqa: E402, F401
from h5guard._sandbox import (  # noqa: E402
    address_space,
    die_with_parent,
    read_frame,
    take_retirement,
    write_frame,
)


def _limit_memory(extra: int) -> None:
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    current = address_space()
    if current:
        # The hard limit stays: a call on a big file raises the soft one for its time
        # (h5guard._sandbox.more_memory).
        with contextlib.suppress(ValueError, OSError):
            hard = resource.getrlimit(resource.RLIMIT_AS)[1]
            soft = current + extra
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def main(argv: Sequence[str]) -> None:
    """Serve calls until stdin closes.

    Parameters
    ----------
    argv
        ``[FD, LIMIT]``: the result descriptor and the memory limit in bytes.
    """
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    out = int(argv[0])
    os.set_inheritable(out, False)  # nothing this process starts may write answers
    _limit_memory(int(argv[1]))
    stdin = sys.stdin.buffer
    write_frame(out, ("ready", None, False))
    while True:
        try:
            module, func, args, roots = read_frame(stdin)
        except EOFError:
            return
        for root in roots:
            if root not in sys.path:
                sys.path.append(root)  # after site-packages: it cannot shadow them
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
            write_frame(out, (*answer, retire))
        except MemoryError:
            write_frame(out, ("memory", "ran out of its memory limit", True))
