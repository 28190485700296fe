"""Background threads of a process: one small pool per purpose, kept for the process.

h5guard hands work to a thread where a syscall or hashlib releases the GIL while the
caller goes on: sealing a big shard after its commit, hashing a big dataset while the
next block is read, flushing a segment while a merge writes its index. Starting a pool
for each such call costs more than the work itself in a small merge (about 0.3 ms), so
each purpose keeps one pool for the life of the process, with two rules:

* a forked child has none of its parent's threads, and a pool inherited from the parent
  would queue work that no thread ever runs: the child starts its own pools;
* once the interpreter is shutting down (a call from an ``atexit`` handler) no thread
  may start: the work then runs in the calling thread, and the caller gets a finished
  future, as if a thread had done it.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

_POOLS: dict[str, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def submit(purpose: str, fn: Callable[..., T], /, *args: Any, workers: int = 1) -> Future[T]:
    """Run ``fn(*args)`` in ``purpose``'s pool (``workers`` threads, fixed by the first
    call), or here and now if no thread may start any more."""
    try:
        return _pool(purpose, workers).submit(fn, *args)
    except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
        return _run_here(fn, *args)


def _run_here(fn: Callable[..., T], /, *args: Any) -> Future[T]:
    done: Future[T] = Future()
    try:
        done.set_result(fn(*args))
    except BaseException as err:  # the caller sees it from result(), as from a thread
        done.set_exception(err)
    return done


def _pool(purpose: str, workers: int) -> ThreadPoolExecutor:
    with _LOCK:
        pool = _POOLS.get(purpose)
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"h5guard-{purpose}")
            _POOLS[purpose] = pool
        return pool


class Tasks:
    """The work one operation hands to ``purpose``'s pool, all of it finished (or
    failed) by the time the ``with`` block is left, however it is left: nothing an
    operation started runs on after it returns or raises.
    """

    def __init__(self, purpose: str, *, workers: int = 1) -> None:
        self.purpose = purpose
        self.workers = workers
        self._futures: list[Future[Any]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        future = submit(self.purpose, fn, *args, workers=self.workers)
        self._futures.append(future)
        return future

    def begin(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """:meth:`submit`, returning once a thread has started ``fn``.

        For work that begins with a blocking syscall (an fsync) while this thread goes
        on with calls that hold the GIL (libhdf5's): a thread that needs the GIL to start
        waits for the interpreter's switch interval (5 ms by default), longer than the
        fsync itself takes. Waiting here hands the GIL over at once; the call has to
        begin with the syscall, so that the GIL is released again right away.
        """
        started = threading.Event()

        def run() -> T:
            started.set()
            return fn(*args)

        future = self.submit(run)
        started.wait(sys.getswitchinterval())  # no thread free: as without the wait
        return future

    def wait(self) -> None:
        wait(self._futures)

    def __enter__(self) -> Tasks:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wait()


def _forget_after_fork() -> None:
    global _LOCK
    _POOLS.clear()
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
