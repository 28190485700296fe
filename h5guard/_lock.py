"""Exclusive locks on a sidecar ``<target>.lock`` file, with a named holder.

The lock file is never deleted: unlinking a lock file that another process has
open and is waiting on lets a third process lock a *new* file of the same name,
and mutual exclusion is gone. Who holds the lock is written to ``<target>.lock.info``
(not into the lock file, which waiters truncate when they open it) so that a
timeout can say whom the user is waiting for.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
from collections.abc import Iterator

import filelock

from h5guard.errors import LockTimeoutError


def _holder_text(info_path: str) -> str:
    try:
        with open(info_path, encoding="utf-8") as fh:
            info = json.load(fh)
        return (
            f"pid {info['pid']} on {info['host']} since {info['since']} "
            f"({info.get('command', '?')})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process"


@contextlib.contextmanager
def exclusive(
    target: str | os.PathLike[str], *, timeout: float, purpose: str = ""
) -> Iterator[None]:
    """Hold ``<target>.lock`` for the duration of the block.

    Waits up to ``timeout`` seconds (0: do not wait), then raises
    :class:`~h5guard.LockTimeoutError` naming the holder.
    """
    lock_path = os.fspath(target) + ".lock"
    info_path = lock_path + ".info"
    lock = filelock.FileLock(lock_path, timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout as err:
        raise LockTimeoutError(lock_path, timeout, _holder_text(info_path)) from err
    try:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "command": purpose or " ".join(sys.argv[:3]),
        }
        tmp = f"{info_path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(info, fh)
        os.replace(tmp, info_path)
        yield
    finally:
        lock.release()
