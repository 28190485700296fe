"""Worker functions written the way people write pools: a writer per worker process.

Top-level and importable, so every executor (spawn, fork, loky, dask) can run them.
Each returns (or raises with) the key it added, only after ``add()`` returned: the
parent's record of what h5guard promised to keep.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from h5guard import ShardWriter

WRITER: ShardWriter | None = None


def payload(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"v": np.arange(i + 1, dtype=np.float64)}, {"i": i, "status": "ok"}


def key_of(i: int) -> str:
    return f"k{i:03d}"


def init_writer(directory: str) -> None:
    """A pool initializer: one long-lived writer per worker, never closed by anyone."""
    global WRITER
    WRITER = ShardWriter(directory, commit_every=5)


def add_one(directory: str, i: int) -> tuple[str, int]:
    """Add through the worker's writer (made on first use where no initializer ran)."""
    global WRITER
    if WRITER is None:
        WRITER = ShardWriter(directory, commit_every=5)
    WRITER.add(key_of(i), *payload(i))
    return key_of(i), os.getpid()


class AddedThenFailed(RuntimeError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (AddedThenFailed, (self.key,))


def add_then_raise(directory: str, i: int) -> tuple[str, int]:
    with ShardWriter(directory, commit_every=100) as writer:
        writer.add(key_of(i), *payload(i))
        raise AddedThenFailed(key_of(i))


def add_then_interrupt(directory: str, i: int) -> tuple[str, int]:
    """Ctrl-C inside the ``with`` block, caught by the task so the pool survives."""
    try:
        with ShardWriter(directory, commit_every=100) as writer:
            writer.add(key_of(i), *payload(i))
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        return key_of(i), os.getpid()


def add_then_die(directory: str, i: int) -> tuple[str, int]:
    """Add through the worker's long-lived writer, note it, then die by SIGKILL mid-task
    (what the OOM killer does): the writer never gets a chance to commit."""
    import signal

    key, pid = add_one(directory, i)
    with open(os.path.join(directory, "..", "killed.log"), "a", encoding="utf-8") as log:
        log.write(key + "\n")
        log.flush()
        os.fsync(log.fileno())
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("unreachable")
