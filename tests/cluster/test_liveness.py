"""The liveness rule: identities, the decision table, the heartbeat, the gone list."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from h5guard import _liveness as lv
from h5guard._liveness import LockProbe, ProcessState, Verdict, WriterIdentity
from tests.cluster._sim import Node

ME = WriterIdentity("login1", "boot-a", "pid:[1]", 100, 5000)
HERE = WriterIdentity("login1", "boot-a", "pid:[1]", 200, 6000)  # same machine
AWAY = WriterIdentity("node7", "boot-b", "pid:[1]", 200, 6000)  # another machine
LEASE = 300.0


def verdict(writer: WriterIdentity | None, **kw: object) -> lv.Liveness:
    args: dict[str, object] = {
        "me": ME,
        "lock": LockProbe.FREE,
        "writer_locked": True,
        "heartbeat_age": 5.0,
        "lease": LEASE,
    }
    args.update(kw)
    return lv.decide(writer, **args)  # type: ignore[arg-type]


# -- the decision table ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("writer", "kw", "expected", "words"),
    [
        # a held lock: alive, wherever the writer ran
        (HERE, {"lock": LockProbe.HELD}, Verdict.ALIVE, "lock is held"),
        (AWAY, {"lock": LockProbe.HELD, "heartbeat_age": 1e6}, Verdict.ALIVE, "lock is held"),
        # same machine: the kernel's evidence decides
        (HERE, {}, Verdict.GONE, "flock is free"),
        # a flock granted without locking anything cannot hide a running writer
        (HERE, {"process": ProcessState.RUNNING}, Verdict.ALIVE, "still runs"),
        (HERE, {"process": ProcessState.GONE}, Verdict.GONE, "no longer runs"),
        (HERE, {"lock": LockProbe.UNSUPPORTED, "writer_locked": False,
                "process": ProcessState.RUNNING}, Verdict.ALIVE, "still runs"),
        (HERE, {"lock": LockProbe.UNSUPPORTED, "writer_locked": False,
                "process": ProcessState.GONE}, Verdict.GONE, "no longer runs"),
        (HERE, {"lock": LockProbe.UNSUPPORTED, "writer_locked": False,
                "process": ProcessState.REUSED}, Verdict.GONE, "now another's"),
        # a running process that let go of its batch (dropped writer, failed commit)
        (HERE, {"lock": LockProbe.UNSUPPORTED, "writer_locked": False, "released": True,
                "process": ProcessState.RUNNING}, Verdict.GONE, "let go"),
        # a running writer beats a stale heartbeat (SIGSTOP, a suspended job) and the user
        (HERE, {"lock": LockProbe.UNSUPPORTED, "writer_locked": False, "heartbeat_age": 1e6,
                "process": ProcessState.RUNNING, "gone": lv.GoneWriters.parse(["login1"])},
         Verdict.ALIVE, "still runs"),
        # the writer had no flock, the merger has one: a free lock proves nothing
        (HERE, {"writer_locked": False, "process": ProcessState.RUNNING}, Verdict.ALIVE, "runs"),
        # another machine: a free lock is no evidence (node-local locks)
        (AWAY, {}, Verdict.UNKNOWN, "cannot be shown gone"),
        (AWAY, {"lock": LockProbe.UNSUPPORTED}, Verdict.UNKNOWN, "--gone node7:200"),
        (AWAY, {"heartbeat_age": 301.0}, Verdict.GONE, "longer than the lease"),
        (AWAY, {"heartbeat_age": None}, Verdict.UNKNOWN, "never seen"),
        (AWAY, {"released": True}, Verdict.GONE, "let go"),
        (AWAY, {"gone": lv.GoneWriters.parse(["node7"])}, Verdict.GONE, "declared gone"),
        (AWAY, {"gone": lv.GoneWriters.parse(["node7:200"])}, Verdict.GONE, "node7:200"),
        (AWAY, {"gone": lv.GoneWriters.parse(["node7:201"])}, Verdict.UNKNOWN, "cannot"),
        (AWAY, {"gone": lv.GoneWriters.parse(["NODE7.cluster.local"])}, Verdict.GONE, "gone"),
        # a bare pid names a process of the merging machine only
        (AWAY, {"gone": lv.GoneWriters.parse(["200"])}, Verdict.UNKNOWN, "cannot"),
        (HERE, {"lock": LockProbe.UNSUPPORTED, "writer_locked": False,
                "gone": lv.GoneWriters.parse(["200"])}, Verdict.GONE, "declared gone"),
        # the engine's word: an exact identity
        (AWAY, {"gone": lv.GoneWriters.parse([AWAY], source="the Dask scheduler")},
         Verdict.GONE, "the Dask scheduler"),
        # same host name, another boot (or another machine of that name): lease rule
        (WriterIdentity("login1", "boot-z", "pid:[1]", 200, 1), {}, Verdict.UNKNOWN, "cannot"),
        # another PID namespace on this kernel (a container): its pids are not ours
        (WriterIdentity("login1", "boot-a", "pid:[9]", 200, 1),
         {"process": ProcessState.UNKNOWN}, Verdict.UNKNOWN, "cannot"),
        # no identity (an older journal, or one cut short in its header)
        (None, {}, Verdict.GONE, "flock is free"),
        (None, {"lock": LockProbe.UNSUPPORTED}, Verdict.UNKNOWN, "cannot"),
        (None, {"lock": LockProbe.UNSUPPORTED, "heartbeat_age": 400.0}, Verdict.GONE, "lease"),
    ],
)  # fmt: skip
def test_decision_table(
    writer: WriterIdentity | None, kw: dict[str, object], expected: Verdict, words: str
) -> None:
    result = verdict(writer, **kw)
    assert result.verdict is expected, result.reason
    assert words in result.reason
    assert "\n" not in result.reason


def test_unknown_says_where_and_who() -> None:
    reason = verdict(AWAY).reason
    assert "pid 200 on node7" in reason and "lease 300 s" in reason


def test_gone_entries_are_checked() -> None:
    for bad in ("", "host:", "host:x", ":0", "0"):
        with pytest.raises(ValueError, match="gone writer"):
            lv.GoneWriters.parse([bad])
    both = lv.GoneWriters.parse(["a"]) | lv.GoneWriters.parse(["b:3"], source="x")
    assert both.hosts == {"a"} and both.processes == {("b", 3)} and bool(both)
    assert not lv.GoneWriters.parse(None)


def test_identity_round_trip_and_old_journals() -> None:
    me = lv.current()
    assert WriterIdentity.from_json(me.to_json()) == me
    assert me.pid == os.getpid() and me.boot_id and me.start is not None
    old = WriterIdentity.from_json({"host": me.host, "pid": 7})
    assert old is not None and not old.same_machine(me)
    assert WriterIdentity.from_json({"host": "h", "pid": True}) is None
    assert WriterIdentity.from_json(["x"]) is None


# -- processes ---------------------------------------------------------------------------


def test_a_dead_process_and_a_reused_pid_are_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = lv.process_start(child.pid)
        assert start is not None
        ident = WriterIdentity(**{**lv.current().to_json(), "pid": child.pid, "start": start})
        assert lv.process_state(ident) is ProcessState.RUNNING
        # The same pid with another start time is another process.
        reused = WriterIdentity(**{**ident.to_json(), "start": start - 1})
        assert lv.process_state(reused) is ProcessState.REUSED
    finally:
        child.kill()
        child.wait()
    assert lv.process_state(ident) is ProcessState.GONE
    assert lv.process_state(AWAY) is ProcessState.UNKNOWN


def test_a_zombie_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = None
    for _ in range(100):
        start = lv.process_start(child.pid)
        if start is None:
            break
        time.sleep(0.05)
    # Not reaped yet: a zombie, whose files the kernel has closed.
    assert start is None
    child.wait()


def test_another_node_has_another_identity() -> None:
    proc = Node(host="nodeB").run("identity", timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("IDENTITY "))
    other = WriterIdentity.from_json(__import__("json").loads(line.split(" ", 1)[1]))
    me = lv.current()
    assert other is not None and other.host == "nodeB" and other.boot_id == me.boot_id
    assert not other.same_machine(me)
    assert lv.process_state(other, me) is ProcessState.UNKNOWN


# -- heartbeat ---------------------------------------------------------------------------


def test_heartbeat_refreshes_an_idle_file_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "j"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.utime(fd, (1000.0, 1000.0))
        lv.beat(fd, 1.0)  # the minimum lease: a beat every 0.25 s
        deadline = time.monotonic() + 10
        while os.stat(path).st_mtime < 2000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lv.age(os.stat(path).st_mtime) < 5
        assert lv.heartbeat_threads() == 1
        lv.release(fd)
        assert lv.is_released(os.stat(path).st_mtime)
        time.sleep(0.6)
        assert lv.is_released(os.stat(path).st_mtime), "a stopped heartbeat touched the file"
        deadline = time.monotonic() + 5
        while lv.heartbeat_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lv.heartbeat_threads() == 0
    finally:
        os.close(fd)


def test_a_forked_child_beats_only_its_own(tmp_path: Path) -> None:
    parent_file, child_file = tmp_path / "p", tmp_path / "c"
    pfd = os.open(parent_file, os.O_RDWR | os.O_CREAT, 0o644)
    lv.beat(pfd, 1.0)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no heartbeat of its parent's, and one of its own works
        code = 1
        try:
            os.close(read_end)
            ok = lv.heartbeat_threads() == 0
            cfd = os.open(child_file, os.O_RDWR | os.O_CREAT, 0o644)
            os.utime(cfd, (1000.0, 1000.0))
            lv.beat(cfd, 1.0)
            deadline = time.monotonic() + 10
            while os.stat(child_file).st_mtime < 2000 and time.monotonic() < deadline:
                time.sleep(0.05)
            ok = ok and os.stat(child_file).st_mtime > 2000
            lv.stop(cfd)
            os.write(write_end, b"ok" if ok else b"no")
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        _, status = os.waitpid(pid, 0)
        assert os.read(read_end, 2) == b"ok" and status == 0
    finally:
        os.close(read_end)
        lv.stop(pfd)
        os.close(pfd)


def test_claim_marks(tmp_path: Path) -> None:
    path = tmp_path / "j"
    wfd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert not lv.was_claimed(wfd)
        rfd = os.open(path, os.O_RDONLY)
        assert lv.mark_claimed(rfd)
        os.close(rfd)
        assert lv.was_claimed(wfd)
        os.fchmod(wfd, 0o644)
        os.unlink(path)
        assert lv.was_claimed(wfd)
    finally:
        os.close(wfd)


def test_lease_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lv.LEASE_ENV, "12.5")
    assert lv.default_lease() == 12.5
    monkeypatch.setenv(lv.LEASE_ENV, "0")
    assert lv.default_lease() == 1.0
    monkeypatch.delenv(lv.LEASE_ENV)
    assert lv.default_lease() == lv.DEFAULT_LEASE


def test_sigkill_of_a_sleeping_writer_is_seen(tmp_path: Path) -> None:
    """The start time survives a kill: a dead writer's identity reads as gone."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    start = lv.process_start(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    ident = WriterIdentity(**{**lv.current().to_json(), "pid": child.pid, "start": start})
    result = verdict(
        ident,
        me=lv.current(),
        lock=LockProbe.UNSUPPORTED,
        writer_locked=False,
        process=lv.process_state(ident),
    )
    assert result.verdict is Verdict.GONE, result.reason


def test_judge_journal_reads_the_header() -> None:
    me = lv.current()
    now = 10_000.0
    fields = lv.header_fields(lease=60, flocked=False)
    assert fields["writer"] == me.to_json() and fields["lease"] == 60.0
    # This very process, still running: alive, whatever the lock says.
    assert lv.judge_journal(fields, now, LockProbe.FREE, now=now).verdict is Verdict.ALIVE
    # Released: gone at once.
    assert lv.judge_journal(fields, lv.RELEASED_MTIME, LockProbe.FREE, now=now).gone
    away = {**fields, "writer": AWAY.to_json()}
    assert lv.judge_journal(away, now - 30, LockProbe.FREE, now=now).verdict is Verdict.UNKNOWN
    assert lv.judge_journal(away, now - 61, LockProbe.FREE, now=now).gone
    # --lease may lengthen the writer's lease, never shorten it.
    late = lv.judge_journal(away, now - 61, LockProbe.FREE, lease=120, now=now)
    assert late.verdict is Verdict.UNKNOWN
    assert lv.judge_journal(away, now - 61, LockProbe.FREE, lease=1, now=now).gone
    # An older header (host and pid only) is never this machine's: the lease decides.
    old = {"host": me.host, "pid": me.pid}
    assert lv.judge_journal(old, now - 5, LockProbe.FREE, now=now).verdict is Verdict.UNKNOWN
    assert lv.judge_journal(None, now - 5, LockProbe.FREE, now=now).gone  # cut short, unlocked
    assert lv.judge_journal(None, now - 5, LockProbe.HELD, now=now).verdict is Verdict.ALIVE


@pytest.mark.parametrize("lease", [0, -1.0, float("nan"), True, "300", [300]])
def test_a_lease_that_is_not_seconds_is_refused_by_writer_and_merge(
    tmp_path: Path, lease: object
) -> None:
    """One rule for the writer's and the merge's lease: a clear ValueError, never a
    comparison TypeError (a string lease used to raise one in ShardWriter)."""
    from h5guard import ShardWriter, plan_merge

    with pytest.raises(ValueError, match="lease: expected a number of seconds > 0"):
        ShardWriter(tmp_path / "tmp", lease=lease)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lease: expected a number of seconds > 0"):
        plan_merge(tmp_path / "tmp", lease=lease)  # type: ignore[arg-type]
