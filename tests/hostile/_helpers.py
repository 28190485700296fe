"""What the hostile tests share: a real small file system, a gone writer's journal, the CLI."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def small_fs(where: Path, size: str = "8m", *, read_only: bool = False) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``where`` (root only; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if proc.returncode != 0:
        pytest.skip(f"mount is not permitted here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield where
    finally:
        done = subprocess.run(["umount", str(where)], check=False, timeout=30)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


def values(i: int, size: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"x": np.arange(size, dtype=np.float64) + i}, {"status": "ok", "i": i}


_GONE_WRITER = """
import os, signal, sys
from h5guard import ShardWriter
from tests.hostile._helpers import values
w = ShardWriter(sys.argv[1], commit_every=10_000)
for n, key in enumerate(sys.argv[2:]):
    w.add(key, *values(n))
print(w._journal.path, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # dies with its batch open, never committed
"""


def gone_writer(directory: Path, keys: list[str]) -> Path:
    """A journal holding ``keys`` whose writer is gone: a real process, SIGKILLed with
    its batch open (so the journal may be altered afterwards and still be its)."""
    proc = run_python(_GONE_WRITER, directory, *keys)
    assert proc.returncode == -9, proc.stderr
    return Path(proc.stdout.strip())


def run_cli(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "h5guard.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def run_python(code: str, *args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


# The CLI with the merge's up-front space check switched off: the disk then fills inside
# the merge, as when another process fills it meanwhile. In a child, since libhdf5 may
# abort rather than raise on a full disk.
_MERGE_WITHOUT_SPACE_CHECK = """
import sys
import h5guard._atomic
h5guard._atomic.require_free_space = lambda *args, **kwargs: None
from h5guard.cli import main
sys.exit(main(sys.argv[1:]))
"""


def merge_without_space_check(*args: str) -> subprocess.CompletedProcess[str]:
    """``h5guard merge ARGS`` in a child whose merge skips its space check."""
    return run_python(_MERGE_WITHOUT_SPACE_CHECK, "merge", *args)


def assert_one_line_full_disk_error(proc: subprocess.CompletedProcess[str]) -> None:
    """Exit 2 and one line on stderr that says the disk is full; no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not enough free space" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
