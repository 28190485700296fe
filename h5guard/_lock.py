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


def _flock_holder(lock_path: str) -> int | None:
    """The pid holding a flock on ``lock_path``, from /proc/locks (Linux; else None).

    The holder writes ``.lock.info`` only after it has the lock, so in that moment the
    file still names the previous holder; the kernel's lock table never lags.
    """
    try:
        st = os.stat(lock_path)
        with open("/proc/locks", encoding="ascii") as fh:
            table = fh.read().splitlines()
    except OSError:
        return None
    for line in table:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[4].isdigit():
            inode = fields[5].rsplit(":", 1)[-1]
            if inode.isdigit() and int(inode) == st.st_ino:
                return int(fields[4])
    return None


def _holder_text(lock_path: str, info_path: str) -> str:
    pid = _flock_holder(lock_path)
    try:
        with open(info_path, encoding="utf-8") as fh:
            info = json.load(fh)
        recorded = (
            f"pid {info['pid']} on {info['host']} since {info['since']} "
            f"({info.get('command', '?')})"
        )
        recorded_pid = int(info["pid"]) if info.get("host") == socket.gethostname() else None
    except (OSError, ValueError, KeyError, TypeError):
        recorded, recorded_pid = "", None
    if pid is not None and pid != recorded_pid:
        return f"pid {pid} on {socket.gethostname()} ({_command_of(pid)})"
    return recorded or "an unknown process"


def _command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:120] or "?"
    except OSError:
        return "?"


@contextlib.contextmanager
def exclusive(
    target: str | os.PathLike[str], *, timeout: float, purpose: str = ""
) -> Iterator[None]:
    """Hold ``<target>.lock`` for the duration of the block.

    The lock file is never deleted (another process may be waiting on it); the holder
    is recorded in ``<target>.lock.info``.

    Parameters
    ----------
    target : str or os.PathLike
        The file to protect (it is never locked itself).
    timeout : float
        Seconds to wait (0: do not wait).
    purpose : str
        What the holder does, for the message another process gets.

    Raises
    ------
    LockTimeoutError
        The lock was not free within ``timeout``; the message names the holder.
    """
    lock_path = os.fspath(target) + ".lock"
    info_path = lock_path + ".info"
    lock = filelock.FileLock(lock_path, timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout as err:
        raise LockTimeoutError(lock_path, timeout, _holder_text(lock_path, info_path)) from err
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
