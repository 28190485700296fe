"""A merge killed while it takes the lock leaves no owner file without a holder.

The owner file is written under a private name and then linked to its own, so a
process SIGKILLed at that moment leaves nothing a waiter would have to judge by its
lease (300 s by default): the next merge takes the lock at once.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from h5guard import _lock

CHILD = """
import os, sys, time
from h5guard import _lock
real_link = os.link
def stuck(src, dst, *a, **k):
    open(sys.argv[2], "w").close()  # tell the parent: the private file is written
    time.sleep(600)
_lock.os.link = stuck
with _lock.exclusive(sys.argv[1], timeout=5):
    pass
"""


def test_a_holder_killed_before_its_owner_file_is_linked_blocks_no_one(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    ready = tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(target), str(ready)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None, "the child ended before it reached the link"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    owner = Path(str(target) + ".lock" + _lock.OWNER_SUFFIX)
    assert not owner.exists()
    leftovers = [p for p in os.listdir(tmp_path) if ".new-" in p]
    assert len(leftovers) == 1  # the private file, harmless
    # timeout=5 against a 300 s lease: waiting for a holder would raise LockTimeoutError.
    with _lock.exclusive(target, timeout=5, lease=300):
        assert owner.exists() and owner.stat().st_size > 0
    assert not owner.exists()


def test_a_file_system_without_hard_links_gets_the_owner_file_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(src: str, dst: str, *args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", dst)

    monkeypatch.setattr(_lock.os, "link", refused)  # as on a file system without them
    target = tmp_path / "out.h5"
    owner = Path(str(target) + ".lock" + _lock.OWNER_SUFFIX)
    with _lock.exclusive(target, timeout=5):
        assert owner.stat().st_size > 0
    assert not owner.exists()
    assert not [p for p in os.listdir(tmp_path) if ".new-" in p]  # no private file left
