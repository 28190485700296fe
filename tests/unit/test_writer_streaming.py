"""The writer's memory is one result, not one batch (issue #24): ``commit_bytes``, the
commit of a result that fills the batch from the caller's arrays, the read-back of a
batch from its journal straight into the results' arrays, and the free-space budget."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest

import h5guard
from h5guard import InsufficientSpaceError, ShardWriter, _atomic, _journal
from h5guard._format import result as _result


def shards(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.h5"))


def merged(directory: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out.h5"
    report = h5guard.merge(directory, out, workers=1)
    assert report.exit_code == 0, report.render_text()
    return out


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1", True, None])
def test_a_bad_commit_bytes_is_refused_naming_the_option(tmp_path: Path, bad: object) -> None:
    with pytest.raises(
        ValueError, match=r"commit_bytes: expected an integer number of bytes >= 1, got"
    ):
        ShardWriter(tmp_path, commit_bytes=bad)  # type: ignore[arg-type]


def test_a_result_that_reaches_commit_bytes_is_committed_by_its_own_add(tmp_path: Path) -> None:
    d = tmp_path / "tmp"
    with ShardWriter(d, commit_every=100, commit_bytes=64 * 1024) as w:
        w.add("small", {"x": np.arange(10.0)})
        assert w.pending == 1 and not shards(d)
        w.add("big", {"x": np.arange(16 * 1024.0)})  # 128 KiB: fills the batch
        assert w.pending == 0 and w.committed_keys == ["small", "big"]
        assert not list(d.glob("*.journal"))
        w.add("after", {"x": np.arange(3.0)})
        assert w.pending == 1
    assert len(shards(d)) == 2
    out = merged(d, tmp_path)
    np.testing.assert_array_equal(h5guard.read(out, "big").datasets["x"], np.arange(16 * 1024.0))
    np.testing.assert_array_equal(h5guard.read(out, "small").datasets["x"], np.arange(10.0))


def test_results_accumulate_until_their_bytes_reach_commit_bytes(tmp_path: Path) -> None:
    d = tmp_path / "tmp"
    with ShardWriter(d, commit_every=1000, commit_bytes=10 * 8 * 100) as w:
        for i in range(25):
            w.add(f"k{i:02d}", {"x": np.full(100, float(i))})
        # 800 bytes a result: every 10th add commits.
        assert len(w.committed) == 2 and w.pending == 5
    out = merged(d, tmp_path)
    for i in range(25):
        np.testing.assert_array_equal(h5guard.read(out, f"k{i:02d}").datasets["x"], np.full(100, i))


@pytest.mark.parametrize("commit_bytes", [1, 100, 10**9])
def test_a_reused_buffer_never_changes_a_result_at_any_commit_bytes(
    tmp_path: Path, commit_bytes: int
) -> None:
    buffer = np.zeros(64)
    d = tmp_path / "tmp"
    with ShardWriter(d, commit_every=3, commit_bytes=commit_bytes) as w:
        for i in range(7):
            buffer[:] = i
            w.add(f"k{i}", {"x": buffer, "g": {"y": buffer[:8]}}, {"i": i})
    out = merged(d, tmp_path)
    for i in range(7):
        r = h5guard.read(out, f"k{i}")
        np.testing.assert_array_equal(r.datasets["x"], np.full(64, float(i)))
        np.testing.assert_array_equal(r.datasets["g"]["y"], np.full(8, float(i)))


def test_a_commit_that_failed_in_add_reads_the_batch_back_from_the_journal(
    tmp_path: Path,
) -> None:
    """The result that filled the batch was the caller's; after the commit failed it is
    read back from the journal, with the ones held before it, and nothing changes."""
    d = tmp_path / "tmp"
    buffer = np.zeros(1000)
    real = _atomic.reserve
    failing = mock.patch(
        "h5guard._atomic.reserve",
        side_effect=InsufficientSpaceError(str(d / "x.partial"), 1, 0),
    )
    w = ShardWriter(d, commit_every=4, commit_bytes=10**9)
    with failing:
        for i in range(4):
            buffer[:] = i
            w.add(f"k{i}", {"x": buffer})  # the 4th add's commit fails: logged, kept
    assert w.pending == 4 and w._held is None
    buffer[:] = -1  # the caller reuses its buffer: the journal is what counts
    with mock.patch("h5guard._atomic.reserve", side_effect=real) as reserve:
        w.add("k4", {"x": np.full(1000, 4.0)})
        assert reserve.called
    assert w.pending == 0
    w.close()
    out = merged(d, tmp_path)
    for i in range(5):
        np.testing.assert_array_equal(h5guard.read(out, f"k{i}").datasets["x"], np.full(1000, i))


def test_a_batch_past_the_memory_limit_is_read_back_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from h5guard import _writer

    monkeypatch.setattr(_writer, "_IN_MEMORY_BATCH", 1000)
    d = tmp_path / "tmp"
    reads: list[int] = []
    real = _journal.JournalWriter.read_result

    def counting(self: _journal.JournalWriter, index: int) -> _result.PreparedResult:
        reads.append(index)
        return real(self, index)

    monkeypatch.setattr(_journal.JournalWriter, "read_result", counting)
    with ShardWriter(d, commit_every=100) as w:
        for i in range(5):
            w.add(f"k{i}", {"x": np.full(100, float(i))}, {"s": "ok"})
    assert reads == [0, 1, 2, 3, 4]
    out = merged(d, tmp_path)
    for i in range(5):
        r = h5guard.read(out, f"k{i}")
        np.testing.assert_array_equal(r.datasets["x"], np.full(100, float(i)))
        assert r.attrs == {"s": "ok"}


def test_a_journal_record_changed_on_disk_is_refused_at_read_back(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, commit_every=100)
    w.add("k", {"x": np.arange(100.0)})
    assert w._journal is not None
    offset, hlen, plen = w._journal.records[0]
    fd = os.open(w._journal.path, os.O_RDWR)
    try:
        os.pwrite(fd, b"\x01", offset + hlen + plen - 1)
    finally:
        os.close(fd)
    with pytest.raises(_result.DecodeError, match="stored digest"):
        w._journal.read_result(0)
    w.discard()


def encoded(result: _result.PreparedResult) -> tuple[bytes, bytes]:
    header, buffers = _result.encode(result)
    return header, b"".join(bytes(b) for b in buffers)


def test_read_into_fills_many_buffers_across_short_reads(tmp_path: Path) -> None:
    data = bytes(range(256)) * 64
    path = tmp_path / "f"
    path.write_bytes(b"xx" + data)
    sizes = [0, 1, 7, 3000, 0, 5000, len(data) - 8008]
    buffers = [memoryview(bytearray(n)) for n in sizes]
    real = os.preadv

    def short(fd: int, bufs: list[memoryview], offset: int) -> int:
        # At most 1000 bytes a call, as a signal or a pipe-like file may give.
        room, out = 1000, []
        for b in bufs:
            out.append(b[: min(room, b.nbytes)])
            room -= out[-1].nbytes
            if not room:
                break
        return int(real(fd, out, offset))

    fd = os.open(path, os.O_RDONLY)
    try:
        with mock.patch("h5guard._journal.os.preadv", short):
            _journal.read_into(fd, buffers, 2)
        assert b"".join(bytes(b) for b in buffers) == data
        with pytest.raises(OSError, match="shrank"):
            _journal.read_into(fd, [memoryview(bytearray(len(data) + 1))], 2)
    finally:
        os.close(fd)


def test_a_record_is_decoded_straight_into_arrays_of_every_kind(tmp_path: Path) -> None:
    values = {
        "f": np.arange(12.0).reshape(3, 4),
        "be": np.arange(5, dtype=">i4"),
        "u": np.array(["a", "äbc"]),
        "s": "text",
        "b": b"\x00\x01",
        "empty": np.zeros((0, 3)),
        "rec": np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
        "g": {"scalar": 3, "c": 1 + 2j},
    }
    prepared = _result.prepare("k", values, {"a": 1.5, "t": "x"}, schema=None)
    header, payload = encoded(prepared)
    path = tmp_path / "rec"
    path.write_bytes(b"pad" + payload)
    fd = os.open(path, os.O_RDONLY)
    try:
        back = _journal.read_result(fd, header, 3, len(payload))
    finally:
        os.close(fd)
    assert back.digest == prepared.digest
    assert encoded(back) == (header, payload)
    assert encoded(_result.decode(header, payload)) == (header, payload)
    with pytest.raises(_result.DecodeError, match="too many"):
        _result.decode(header, payload + b"\0")
    with pytest.raises(_result.DecodeError, match="ends inside"):
        _result.decode(header, payload[:-1])


def test_private_results_do_not_share_the_callers_memory() -> None:
    x = np.arange(4.0)
    shared = _result.prepare("k", {"x": x}, None, schema=None)
    private = _result.prepare("k", {"x": x}, None, schema=None, private=True)
    assert np.shares_memory(shared.datasets["x"], x)
    assert not np.shares_memory(private.datasets["x"], x)
    assert private.digest == shared.digest


def test_the_space_budget_checks_once_per_many_small_writes(tmp_path: Path) -> None:
    budget = _atomic.SpaceBudget(tmp_path, min_free=0)
    with mock.patch("h5guard._atomic.os.statvfs", wraps=os.statvfs) as statvfs:
        for _ in range(100):
            budget.require(1000)
        assert 1 <= statvfs.call_count <= 2
        budget.require(_atomic.SpaceBudget.MAX_UNCHECKED + 1)  # bigger than any budget
        calls = statvfs.call_count
        budget.require(_atomic.SpaceBudget.MAX_UNCHECKED + 1)
        assert statvfs.call_count == calls + 1


def test_the_space_budget_refuses_what_does_not_fit(tmp_path: Path) -> None:
    free = _atomic.free_bytes(tmp_path)
    budget = _atomic.SpaceBudget(tmp_path, min_free=free)
    with pytest.raises(InsufficientSpaceError, match=str(tmp_path)):
        budget.require(10**15)


def test_a_structured_scalar_is_copied_too() -> None:
    """A numpy void scalar is a view into its array: held results must not share it."""
    arr = np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")])
    private = _result.prepare("k", {"x": arr[0]}, {"y": arr[0]}, schema=None, private=True)
    arr["a"] = 5
    assert private.datasets["x"]["a"] == 1 and private.attrs["y"]["a"] == 1


def test_python_values_are_not_copied_again() -> None:
    """Scalars, str and bytes were made into new arrays already: held as they are."""
    plain = _result.checked_tree("k", {"x": 1.5, "g": {"s": "t"}}, {"a": 1}, schema=None)
    private = _result.digested("k", plain, private=True)
    assert private.root.members["x"] is plain.members["x"]
    assert private.root.attrs is plain.attrs


@pytest.mark.parametrize("where", ["h5guard._shard._finish", "h5guard._atomic.commit_file"])
def test_sigkill_inside_the_commit_an_add_triggers_loses_only_that_add(
    tmp_path: Path, where: str
) -> None:
    """A kill in the middle of the commit that a big result's add() triggers (its
    payload journaled as an intent only, written from the caller's arrays) leaves every
    earlier result to the merge's recovery, and that one named interrupted: its add()
    never returned (docs/guarantee.md)."""
    import signal

    pid = os.fork()
    if pid == 0:
        try:
            w = ShardWriter(tmp_path, commit_every=100, commit_bytes=1024 * 1024)
            for i in range(3):
                w.add(f"small{i}", {"x": np.full(10, float(i))})

            def die(*args: object, **kwargs: object) -> None:
                os.kill(os.getpid(), signal.SIGKILL)

            with mock.patch(where, die), mock.patch("h5guard._shard.IN_MEMORY_SHARD", 0):
                w.add("big", {"x": np.arange(256 * 1024.0)})  # 2 MiB: fills the batch
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    out = tmp_path / "out.h5"
    report = h5guard.merge(tmp_path, out, workers=1)
    assert report.exit_code == 0, report.render_text()
    assert not report.lost and [key for _, key in report.interrupted] == ["big"]
    for i in range(3):
        np.testing.assert_array_equal(h5guard.read(out, f"small{i}").datasets["x"], np.full(10, i))
    with h5py.File(out, "r") as f:  # killed before the rename: not in any shard
        assert "big" not in f
