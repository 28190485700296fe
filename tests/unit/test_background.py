"""h5guard._background: per-process pools that survive a fork and an interpreter's
shutdown, with real forks and real interpreters."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from h5guard import _background
from h5guard._format import digest

REPO = Path(__file__).resolve().parents[2]


def blocks_digest() -> str:
    """A dataset fed in 1 MiB blocks: each block is hashed in the "digest" pool."""
    g = digest.GroupDigest()
    blocks = [np.full(2**17, float(i)) for i in range(3)]
    g.add_blocks("x", np.dtype(np.float64), (3 * 2**17,), iter(blocks))
    return g.hexdigest()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_pool_instead_of_its_parents_dead_one() -> None:
    # Before this module, a child forked after its parent had hashed a big dataset
    # queued its own hashing into the parent's pool, which has no thread in the child,
    # and hung for ever.
    expected = blocks_digest()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        try:
            os.write(write, blocks_digest().encode())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on its digest")
    with os.fdopen(read, "rb") as r:
        assert r.read().decode() == expected
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_work_submitted_while_the_interpreter_shuts_down_runs_in_the_caller() -> None:
    code = textwrap.dedent(
        """
        import atexit, threading
        from h5guard import _background

        def at_exit():
            future = _background.submit("late", lambda: threading.current_thread().name)
            print("ran in", future.result())
            failing = _background.submit("late", lambda: 1 / 0)
            print("raised", type(failing.exception()).__name__)
            with _background.Tasks("late") as tasks:  # begin neither waits nor hangs
                print("began in", tasks.begin(lambda: threading.current_thread().name).result())

        atexit.register(at_exit)
        print("before", _background.submit("late", lambda: 42).result())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "before 42",
        "ran in MainThread",
        "raised ZeroDivisionError",
        "began in MainThread",
    ]


def test_tasks_are_all_finished_when_the_block_is_left_by_an_exception() -> None:
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.2)
        finished.set()

    with pytest.raises(KeyError), _background.Tasks("test-tasks", workers=2) as tasks:
        tasks.submit(slow)
        raise KeyError("the operation failed while its work ran")
    assert finished.is_set()


def test_begin_returns_once_the_work_has_started_not_when_it_ends() -> None:
    entered = threading.Event()
    release = threading.Event()

    def fsync_like() -> str:
        entered.set()
        release.wait(10)
        return "synced"

    with _background.Tasks("test-begin", workers=1) as tasks:
        future = tasks.begin(fsync_like)
        started = entered.is_set()  # read before anything else can hand the GIL over
        running = not future.done()
        release.set()
        assert started and running
        assert future.result(10) == "synced"


def test_begin_goes_on_without_a_free_thread() -> None:
    """Both threads busy: begin gives up waiting (after the interpreter's switch
    interval) and the work runs once a thread is free."""
    release = threading.Event()
    order: list[str] = []

    def busy(name: str) -> None:
        release.wait(10)
        order.append(name)

    with _background.Tasks("test-begin-busy", workers=1) as tasks:
        tasks.submit(busy, "first")
        queued = tasks.begin(order.append, "second")
        assert not queued.done()
        release.set()
        queued.result(10)
    assert order == ["first", "second"]
