"""The writer's journal: every truncation and every damage is classified, never trusted."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from h5guard import ShardWriter, merge
from h5guard._journal import claim, read_journal, writer_alive


def journal_of(tmp_path: Path, n: int = 3) -> tuple[Path, ShardWriter]:
    w = ShardWriter(tmp_path, commit_every=1000)
    for i in range(n):
        w.add(f"k{i}", {"v": np.arange(i + 2, dtype=np.int32)}, {"note": f"r{i}"})
    [path] = tmp_path.glob("*.journal")
    return path, w


def as_if_dead(path: Path) -> None:
    """Rewritten by the test, the journal names this (running) process as its writer:
    give it back the mark its writer left when it let go (see h5guard._liveness)."""
    from h5guard import _liveness

    os.utime(path, (_liveness.RELEASED_MTIME, _liveness.RELEASED_MTIME))


def test_a_live_writer_holds_its_journal(tmp_path: Path) -> None:
    path, w = journal_of(tmp_path)
    assert writer_alive(path)
    with claim(path) as verdict:
        assert verdict is not None and not verdict.gone
        assert "lock is held" in verdict.reason
    w.close()
    assert not path.exists()


def test_a_dropped_writer_releases_its_journal(tmp_path: Path) -> None:
    path, w = journal_of(tmp_path)
    del w  # never closed: garbage collection must release the lock, not the results
    assert path.exists() and not writer_alive(path)
    state, results = read_journal(path)
    assert [k for k, _ in state.results] == ["k0", "k1", "k2"] and not state.lost
    np.testing.assert_array_equal(results[2].datasets["v"], np.arange(4, dtype=np.int32))


def test_every_truncation_offset_is_an_interrupted_add_never_a_loss(tmp_path: Path) -> None:
    path, w = journal_of(tmp_path)
    assert w._journal is not None
    records = list(w._journal.records)
    data = path.read_bytes()
    w.discard()
    ends = [off + hlen + plen for off, hlen, plen in records]
    cut = tmp_path / "cut.h5.journal"
    for size in range(len(data) + 1):
        cut.write_bytes(data[:size])
        state, _ = read_journal(cut)
        assert len(state.results) == sum(1 for end in ends if end <= size), size
        assert not state.lost, (size, state.lost)
        # A cut inside a result's payload names the result whose add() never returned.
        named = any(off + hlen <= size < off + hlen + plen for off, hlen, plen in records)
        assert (state.interrupted is not None) == named, size


@pytest.mark.parametrize("where", ["header", "payload"])
def test_damage_inside_a_record_is_a_named_loss(tmp_path: Path, where: str) -> None:
    path, w = journal_of(tmp_path)
    w._journal.close()  # type: ignore[union-attr]  # as if the writer died
    raw = bytearray(path.read_bytes())
    needle = b'"k1"' if where == "header" else np.arange(3, dtype=np.int32).tobytes()
    at = raw.find(needle)
    raw[at + 1] ^= 0x01
    path.write_bytes(bytes(raw))
    as_if_dead(path)
    state, _ = read_journal(path)
    assert state.lost and "k0" in dict(state.results)
    report = merge(tmp_path, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 1 and report.lost == state.lost
    assert "LOST:" in report.render_text()


def test_sync_every_add_fsyncs_each_add(tmp_path: Path) -> None:
    real = os.fsync
    synced: list[str] = []

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    with mock.patch("os.fsync", fsync):
        with ShardWriter(tmp_path / "a", sync_every_add=True, commit_every=100) as w:
            for i in range(4):
                w.add(f"k{i}", {"v": np.arange(2)})
        # the meta record, then one per add()
        assert sum(p.endswith(".journal") for p in synced) == 5
        synced.clear()
        with ShardWriter(tmp_path / "b") as w:
            w.add("k", {"v": np.arange(2)})
        assert not any(p.endswith(".journal") for p in synced)
        assert any(p.endswith(".h5.partial") for p in synced)  # the commit is fsynced


def test_a_forked_child_never_touches_its_parents_batch(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, commit_every=1000)
    w.add("parent-0", {"v": np.arange(2)})
    [parent_journal] = tmp_path.glob("*.journal")
    before = parent_journal.read_bytes()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            w.add("child-0", {"v": np.arange(3)})
            w.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent_journal.read_bytes() == before and writer_alive(parent_journal)
    w.add("parent-1", {"v": np.arange(2)})
    w.close()
    report = merge(tmp_path, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 0 and report.groups_added == 3


def test_sigkill_inside_add_is_reported_as_interrupted(tmp_path: Path) -> None:
    """The kill lands while add() writes: that one result is named, not counted as lost."""
    pid = os.fork()
    if pid == 0:
        try:
            w = ShardWriter(tmp_path)
            w.add("k0", {"v": np.arange(2)})
            real_write = os.write
            calls = []

            def write_then_die(fd: int, data: bytes) -> int:
                calls.append(1)
                if len(calls) == 2:  # the frame went out, the payload did not
                    os.kill(os.getpid(), signal.SIGKILL)
                return real_write(fd, data)

            with mock.patch("h5guard._journal.os.write", write_then_die):
                w.add("k1", {"v": np.arange(1000)})
        finally:
            os._exit(3)
    os.waitpid(pid, 0)
    report = merge(tmp_path, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 0 and report.groups_added == 1
    assert [k for _, k in report.interrupted] == ["k1"]


def test_a_journal_left_after_its_commit_is_removed_not_merged_twice(tmp_path: Path) -> None:
    """The writer died between renaming its shard and deleting its journal."""
    w = ShardWriter(tmp_path, commit_every=1000, file_attrs={"worker": 7})
    for i in range(3):
        w.add(f"k{i}", {"v": np.arange(i + 1)})
    [journal] = tmp_path.glob("*.journal")
    saved = journal.read_bytes()
    w.close()
    journal.write_bytes(saved)  # as if the unlink never happened (no lock held)
    as_if_dead(journal)
    state, _ = read_journal(journal)
    assert state.committed and state.file_attrs is not None
    report = merge(tmp_path, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 0 and report.groups_added == 3 and not report.recovered
    assert not journal.exists() and not list(tmp_path.glob("*.partial"))


def test_a_recovered_batch_keeps_its_file_attrs(tmp_path: Path) -> None:
    import json

    import h5py

    w = ShardWriter(tmp_path, file_attrs={"worker": 7, "host": "n1"})
    w.add("k", {"v": np.arange(2)})
    del w  # never closed: recovered by the merge
    report = merge(tmp_path, tmp_path / "out.h5", workers=1)
    assert [n for _, n in report.recovered] == [1]
    with h5py.File(tmp_path / "out.h5", "r") as f:
        [attrs] = json.loads(bytes(f.attrs["h5guard_sources"]).decode()).values()
    assert attrs == {"worker": 7, "host": "n1"}


def _journal_findings(directory: Path) -> tuple[list[tuple[str, str]], bool]:
    from h5guard import check

    report = check([directory], workers=1)
    found = [(f.severity.name, f.message) for f in report.findings if f.code == "JOURNAL_FILE"]
    return found, report.ok


def test_check_of_a_directory_reports_every_journal_state(tmp_path: Path) -> None:
    # A running writer's batch is a note; the check still passes.
    path, w = journal_of(tmp_path / "live")
    [(severity, message)], ok = _journal_findings(tmp_path / "live")
    assert (severity, ok) == ("INFO", True) and "running writer" in message
    w.close()
    assert _journal_findings(tmp_path / "live") == ([], True)

    # A dead writer's batch, with the partial of a commit it was cut short in: the journal
    # speaks for both (no "lost in a crash" for the partial), and the check fails until merge.
    dead = tmp_path / "dead"
    path, w = journal_of(dead)
    w._journal.close()  # type: ignore[union-attr]  # as if the writer died
    path.with_name(path.name.removesuffix(".journal") + ".partial").write_bytes(b"")
    [(severity, message)], ok = _journal_findings(dead)
    assert (severity, ok) == ("WARNING", False)
    assert "3 result(s) not yet in a shard" in message and "h5guard merge" in message
    from h5guard import check

    assert not [f for f in check([dead], workers=1).findings if f.code == "PARTIAL_FILE"]
    assert merge(dead, dead / "out.h5", workers=1).exit_code == 0
    assert _journal_findings(dead) == ([], True)


def test_check_of_a_directory_names_a_damaged_journal_as_an_error(tmp_path: Path) -> None:
    path, w = journal_of(tmp_path)
    w._journal.close()  # type: ignore[union-attr]
    raw = bytearray(path.read_bytes())
    raw[raw.find(b'"k1"') + 1] ^= 0x01
    path.write_bytes(bytes(raw))
    as_if_dead(path)
    [(severity, message)], ok = _journal_findings(tmp_path)
    assert (severity, ok) == ("ERROR", False)
    # The records after the damaged one are still found (resynchronised on the frame).
    assert "damaged" in message and "2 result(s)" in message


def test_check_of_a_directory_notes_a_journal_left_after_its_commit(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, commit_every=1000)
    w.add("k0", {"v": np.arange(3)})
    [journal] = tmp_path.glob("*.journal")
    saved = journal.read_bytes()
    w.close()
    journal.write_bytes(saved)
    as_if_dead(journal)
    [(severity, message)], ok = _journal_findings(tmp_path)
    assert (severity, ok) == ("INFO", True) and "committed" in message


def test_check_of_a_directory_names_an_add_cut_short(tmp_path: Path) -> None:
    path, w = journal_of(tmp_path)
    w._journal.close()  # type: ignore[union-attr]
    data = path.read_bytes()
    path.write_bytes(data[:-3])  # the writer died inside the last add(): k2 never returned
    as_if_dead(path)
    [(severity, message)], ok = _journal_findings(tmp_path)
    assert (severity, ok) == ("WARNING", False)
    assert "2 result(s) not yet in a shard" in message and "'k2' was cut short" in message


def test_the_header_names_the_writer_and_its_lease(tmp_path: Path) -> None:
    from h5guard import _journal, _liveness

    w = ShardWriter(tmp_path, commit_every=1000, lease=42)
    w.add("k", {"v": np.arange(3.0)})
    [path] = tmp_path.glob("*.journal")
    meta = _journal.scan(path).meta
    assert meta is not None and meta["lease"] == 42.0 and meta["flock"] is True
    assert _liveness.WriterIdentity.from_json(meta["writer"]) == _liveness.current()
    # A dropped writer marks its journal released: any host takes it at once.
    del w
    assert _liveness.is_released(path.stat().st_mtime)
    with claim(path) as verdict:
        assert verdict is not None and verdict.gone and "let go" in verdict.reason


def test_a_journal_claimed_under_the_writer_starts_a_new_batch(tmp_path: Path) -> None:
    """A merge that took the batch for a dead writer's (the writer was stopped for longer
    than the lease): the next add() writes its result again into a new batch."""
    from h5guard import _liveness

    w = ShardWriter(tmp_path, commit_every=1000, lease=1)  # checks every 0.05 s
    for i in range(2):
        w.add(f"k{i}", {"v": np.arange(3, dtype=np.int32)})
    [path] = tmp_path.glob("*.journal")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _liveness.mark_claimed(fd)
    finally:
        os.close(fd)
    time.sleep(2 * _liveness.check_interval(1))
    w.add("k9", {"v": np.arange(3, dtype=np.int32)})
    journals = sorted(tmp_path.glob("*.journal"))
    assert len(journals) == 2 and path in journals
    [new] = [j for j in journals if j != path]
    state, _ = read_journal(new)
    assert [k for k, _ in state.results] == ["k9"]
    assert _liveness.is_released(path.stat().st_mtime)  # the old one: let go of
    w.close()
