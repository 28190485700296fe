"""A big result whose add() commits it is journaled as an intent only (its record's frame
and header): its payload is written once, into the shard. A process killed inside that
add() leaves the result interrupted or present, never lost; a commit that fails as a
commit may leaves it whole in the journal before add() returns; any other failure cuts
the journal back to its last whole record."""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import h5py
import numpy as np
import pytest

import h5guard
from h5guard import InsufficientSpaceError, ShardWriter, _journal, _liveness
from h5guard import _shard as shard_module

BIG = 256 * 1024  # float64 values: 2 MiB, above the intent threshold
SMALL = 3


def big_value(seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).random(BIG)


def journal_bytes_written(calls: list[int]) -> Callable[..., None]:
    real = _journal._write_all

    def counting(fd: int, data: bytes | memoryview) -> None:
        calls.append(memoryview(data).nbytes)
        real(fd, data)

    return counting


def test_a_big_result_that_fills_the_batch_is_written_once(tmp_path: Path) -> None:
    written: list[int] = []
    with (
        mock.patch("h5guard._journal._write_all", journal_bytes_written(written)),
        ShardWriter(tmp_path, commit_bytes=1024 * 1024) as w,
    ):
        w.add("big", {"x": big_value()}, {"status": "ok"})
        assert w.pending == 0 and len(w.committed) == 1
        assert not list(tmp_path.glob("*.journal"))
    assert sum(written) < 64 * 1024  # the meta record and the intent, not 2 MiB
    [path] = w.committed
    assert h5guard.check([path], workers=1).ok
    got = h5guard.read(path, "big")
    np.testing.assert_array_equal(got.datasets["x"], big_value())
    expected = h5guard._format.result.prepare(
        "big", {"x": big_value()}, {"status": "ok"}, schema=None
    ).digest
    with h5py.File(path, "r") as f:
        assert f["big"].attrs["h5guard_digest"].decode() == expected


# Where a kill lands inside the self-committing add(): inside the HDF5 write, just
# before the rename, after the rename (before the journal is deleted), and in the seal,
# which a big shard gets just after its commit, in a background thread.
POINTS = [
    "h5guard._format.write.write_dataset",
    "h5guard._atomic.commit_file",
    "h5guard._journal.JournalWriter.remove",
    "h5guard._format.seal.write_seal_fd",
]


@pytest.mark.parametrize("earlier", [0, SMALL], ids=["alone", "after-smaller-ones"])
@pytest.mark.parametrize("where", POINTS)
def test_sigkill_inside_a_self_committing_add_never_loses_a_returned_result(
    tmp_path: Path, where: str, earlier: int
) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            w = ShardWriter(tmp_path, commit_every=100, commit_bytes=1024 * 1024)
            for i in range(earlier):
                w.add(f"small{i}", {"x": np.full(10, float(i))})
            real = _resolve(where)
            big_written = [False]

            def die(*args: Any, **kwargs: Any) -> Any:
                # write_dataset also writes the summary's datasets: kill in the big one.
                if where.endswith("write_dataset") and args[2].nbytes < BIG:
                    return real(*args, **kwargs)
                big_written[0] = True
                os.kill(os.getpid(), signal.SIGKILL)

            with mock.patch(where, die), mock.patch("h5guard._shard.IN_MEMORY_SHARD", 0):
                w.add("big", {"x": big_value()})
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    out = tmp_path / "out.h5"
    report = h5guard.merge(tmp_path, out, workers=1)
    assert report.exit_code == 0, report.render_text()
    assert not report.lost and not report.pending
    interrupted = [key for _, key in report.interrupted]
    with h5py.File(out, "r") as f:
        present = "big" in f
    # Its add() never returned: in the output, or named interrupted (docs/guarantee.md).
    assert present or interrupted == ["big"], (present, interrupted)
    if where.endswith(("remove", "write_seal_fd")):
        assert present  # the shard was renamed before the kill
    else:
        assert not present and interrupted == ["big"]
    if present:
        np.testing.assert_array_equal(h5guard.read(out, "big").datasets["x"], big_value())
    for i in range(earlier):
        np.testing.assert_array_equal(h5guard.read(out, f"small{i}").datasets["x"], np.full(10, i))
    assert h5guard.check([out], workers=1).ok


def _resolve(where: str) -> Callable[..., Any]:
    module, _, name = where.rpartition(".")
    if name == "remove":
        return _journal.JournalWriter.remove
    import importlib

    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def full_disk(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_commit_leaves_the_result_whole_in_the_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = ShardWriter(tmp_path, commit_bytes=1024 * 1024)
    w.add("small", {"x": np.arange(3.0)})
    with mock.patch("h5guard._writer.write_shard", full_disk), caplog.at_level(logging.WARNING):
        w.add("big", {"x": big_value()})  # returns: the result is safe in the journal
    assert "stay in the journal" in caplog.text
    assert w.pending == 2 and not w.committed
    assert w._journal is not None
    scanned = _journal.scan(w._journal.path)
    assert not scanned.interrupted and not scanned.damage
    assert [_journal.record_key(r.header) for r in scanned.records] == ["small", "big"]
    assert (
        w._journal.read_result(1).digest
        == h5guard._format.result.prepare("big", {"x": big_value()}, None, schema=None).digest
    )
    w.close()  # the disk has room again: both are committed
    [path] = w.committed
    np.testing.assert_array_equal(h5guard.read(path, "big").datasets["x"], big_value())
    np.testing.assert_array_equal(h5guard.read(path, "small").datasets["x"], np.arange(3.0))


def test_a_killed_writer_after_a_failed_commit_loses_nothing(tmp_path: Path) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            w = ShardWriter(tmp_path, commit_bytes=1024 * 1024)
            w.add("small", {"x": np.arange(3.0)})
            with mock.patch("h5guard._writer.write_shard", full_disk):
                w.add("big", {"x": big_value()})
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    out = tmp_path / "out.h5"
    report = h5guard.merge(tmp_path, out, workers=1)
    assert report.exit_code == 0 and not report.interrupted and not report.lost
    np.testing.assert_array_equal(h5guard.read(out, "big").datasets["x"], big_value())


def test_a_journal_that_cannot_take_the_record_either_refuses_the_add(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, commit_bytes=1024 * 1024)
    w.add("small", {"x": np.arange(3.0)})
    real = _journal._write_all

    def journal_full(fd: int, data: bytes | memoryview) -> None:
        if memoryview(data).nbytes >= BIG:  # the payload, written after the failed commit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    with (
        mock.patch("h5guard._writer.write_shard", full_disk),
        mock.patch("h5guard._journal._write_all", journal_full),
        pytest.raises(InsufficientSpaceError),
    ):
        w.add("big", {"x": big_value()})
    assert w.pending == 1
    assert w._journal is not None
    scanned = _journal.scan(w._journal.path)
    assert not scanned.interrupted and not scanned.damage
    assert [_journal.record_key(r.header) for r in scanned.records] == ["small"]
    w.add("big", {"x": big_value()})  # not added before: the key is free
    w.close()
    assert len(w.committed) == 1


def test_an_interrupted_add_cuts_the_journal_back_and_raises(tmp_path: Path) -> None:
    """Ctrl-C inside the commit: the add() raises, the result not added, the journal
    again ends at its last whole record (a later record never follows a torn one)."""
    w = ShardWriter(tmp_path, commit_bytes=1024 * 1024)
    w.add("small", {"x": np.arange(3.0)})

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    with mock.patch("h5guard._writer.write_shard", interrupted), pytest.raises(KeyboardInterrupt):
        w.add("big", {"x": big_value()})
    assert w._journal is not None
    scanned = _journal.scan(w._journal.path)
    assert not scanned.interrupted and not scanned.damage
    assert [_journal.record_key(r.header) for r in scanned.records] == ["small"]
    assert w.pending == 1
    w.add("later", {"x": np.arange(2.0)})  # appends after the last whole record
    w.close()
    [path] = w.committed
    with h5py.File(path, "r") as f:
        assert {"small", "later"} <= set(f) and "big" not in f


def test_any_error_of_the_commit_itself_keeps_the_result_in_the_journal(tmp_path: Path) -> None:
    """As for every commit, an error inside it is a WriteError: the result stays."""
    w = ShardWriter(tmp_path, commit_bytes=1024 * 1024)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("libhdf5 said no")

    with mock.patch("h5guard._writer.write_shard", broken):
        w.add("big", {"x": big_value()})
    assert w.pending == 1 and w._journal is not None
    scanned = _journal.scan(w._journal.path)
    assert [_journal.record_key(r.header) for r in scanned.records] == ["big"]
    w.close()
    [path] = w.committed
    np.testing.assert_array_equal(h5guard.read(path, "big").datasets["x"], big_value())


def test_a_journal_claimed_during_the_commit_gets_the_result_again(tmp_path: Path) -> None:
    """A merge that claims the journal while the add() commits may have read only the
    intent: the result is journaled again, whole, in a new batch before add() returns."""
    w = ShardWriter(tmp_path, commit_bytes=1024 * 1024)
    w.add("small", {"x": np.arange(3.0)})
    real = shard_module.write_shard

    def claimed_meanwhile(*args: Any, **kwargs: Any) -> Any:
        assert w._journal is not None and w._journal.fd is not None
        _liveness.mark_claimed(w._journal.fd)
        return real(*args, **kwargs)

    with mock.patch("h5guard._writer.write_shard", claimed_meanwhile):
        w.add("big", {"x": big_value()})
    assert len(w.committed) == 1 and w.pending == 1
    assert w._journal is not None
    scanned = _journal.scan(w._journal.path)
    assert [_journal.record_key(r.header) for r in scanned.records] == ["big"]
    assert not scanned.interrupted
    w.close()
    out = tmp_path / "out.h5"
    report = h5guard.merge(tmp_path, out, workers=1)
    assert report.exit_code == 0, report.render_text()
    np.testing.assert_array_equal(h5guard.read(out, "big").datasets["x"], big_value())


# A worker whose every add() commits its own big result; it prints each key whose add()
# returned, and adds until it is killed.
WORKER = """
import sys, numpy as np
from h5guard import ShardWriter
w = ShardWriter(sys.argv[1], commit_bytes=1024 * 1024)
for i in range(10_000):
    w.add(f"k{i:04d}", {"x": np.random.default_rng(i).random(256 * 1024)}, {"i": i})
    print(f"k{i:04d}", flush=True)
"""


def test_an_external_sigkill_at_any_moment_loses_no_returned_result(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(tmp_path / "tmp")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    returned = [proc.stdout.readline().strip() for _ in range(4)]
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=60)
    returned += rest.split()  # printed before the kill landed
    assert proc.returncode == -signal.SIGKILL
    out = tmp_path / "out.h5"
    report = h5guard.merge(tmp_path / "tmp", out, workers=1)
    assert report.exit_code == 0, report.render_text()
    assert not report.lost and not report.pending
    with h5py.File(out, "r") as f:
        present = {k for k in f if not k.startswith("h5guard_")}
    assert set(returned) <= present
    # Only the add() the kill landed in may be named interrupted, or be present unreturned.
    following = f"k{len(returned):04d}"
    assert [key for _, key in report.interrupted] in ([], [following])
    assert present - set(returned) <= {following}
    for key in present:
        i = int(key[1:])
        np.testing.assert_array_equal(
            h5guard.read(out, key).datasets["x"], np.random.default_rng(i).random(256 * 1024)
        )
