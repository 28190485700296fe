"""Who wrote a batch (or holds a lock), and whether that process is provably gone.

A merge may take a journal's results only from a writer that is gone: a writer that
still runs would go on appending to a journal the merge has already turned into a
shard and deleted, and those results would vanish. On one machine the kernel answers
the question (the writer's ``flock`` is dropped when it dies). On a cluster it often
cannot: Lustre without ``-o flock`` and many FUSE mounts refuse ``flock`` (``ENOSYS``),
NFS without a lock daemon says ``ENOLCK``, and BeeGFS or NFS mounted ``nolock`` keep
locks node-local, so a lock held on node A looks free from node B. So the evidence is
gathered from several sources and weighed by one pure function, :func:`decide`:

* the writer's **identity**, recorded when the batch opens (:class:`WriterIdentity`:
  host name, boot id, PID namespace, pid and the process's start time, so that a new
  process that got the same pid does not look like the writer);
* its **heartbeat**: while a batch is open, a daemon thread refreshes the journal's
  modification time every ``lease / 4`` seconds (:func:`beat`), also while the writer
  computes for an hour between two ``add()`` calls; a writer that lets go of a batch
  without committing it sets the time to :data:`RELEASED_MTIME` (:func:`release`);
* the **lock probe**: whether the merge could take the journal's ``flock``;
* the **user's or the engine's word**: writers declared gone (:class:`GoneWriters`,
  ``h5guard merge --gone HOST[:PID]``, or Dask reporting a dead worker).

The rule (also in ``docs/guarantee.md``): a held lock means alive, a released journal
means gone. On the writer's own machine (same boot id, host name and PID namespace)
the kernel's evidence decides: a pid that no longer runs (or now belongs to a process
started at another time) means gone, one that still runs with the recorded start time
means alive, and where the process table cannot tell, a free ``flock`` the writer had
taken means gone. Elsewhere a free lock is no evidence at all, and the writer is gone
only when declared gone or when its journal has not been touched for longer than the
lease; until then its batch is *pending* and the merge exits 1.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Seconds a journal (or soft lock) may stay untouched before a process on another
#: machine counts its writer as gone. The writer refreshes it every ``lease / 4`` s.
DEFAULT_LEASE = 300.0
#: Environment variable that sets the lease of writers and locks made in a process.
LEASE_ENV = "H5GUARD_LEASE"
#: The modification time a writer gives a journal it lets go of without committing it
#: (a writer dropped without ``close()``, a commit that failed): "gone" on any host at
#: once, without waiting for the lease. (Not 0, which some tools read as "unset".)
RELEASED_MTIME = 1.0
_MIN_LEASE = 1.0


def check_lease(lease: object) -> None:
    """Refuse a lease that is not a number of seconds > 0 (None: the default).

    Raises
    ------
    ValueError
        ``lease`` is a bool, not a number, not finite-positive.
    """
    if lease is None:
        return
    if isinstance(lease, bool) or not isinstance(lease, int | float) or not lease > 0:
        raise ValueError(f"lease: expected a number of seconds > 0, got {lease!r}")


def default_lease() -> float:
    """The lease of this process's writers and locks: ``$H5GUARD_LEASE`` or 300 s.

    Returns
    -------
    float
        Seconds; at least 1.
    """
    text = os.environ.get(LEASE_ENV, "")
    if text:
        try:
            value = float(text)
        except ValueError:
            log.warning(
                "%s=%r is not a number of seconds; using %g", LEASE_ENV, text, DEFAULT_LEASE
            )
        else:
            return max(_MIN_LEASE, value)
    return DEFAULT_LEASE


# -- identity ---------------------------------------------------------------------------


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot, or None if unknown.

    Field 22 of ``/proc/<pid>/stat``. Together with the pid it names one process for
    the life of the machine: a later process that gets the same pid starts later.

    Parameters
    ----------
    pid
        The process id, as this process's PID namespace sees it.

    Returns
    -------
    int or None
        None when the process does not exist, is a zombie, or ``/proc`` is missing.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split
    # after the last ')'; the state is field 3, the start time field 22.
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None  # a zombie has closed its files: as good as gone
    try:
        return int(fields[19])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class WriterIdentity:
    """One process, named well enough to tell later whether it still runs.

    Attributes
    ----------
    host
        ``socket.gethostname()``.
    boot_id
        ``/proc/sys/kernel/random/boot_id`` (new at every boot), or ``""`` if unknown.
    pidns
        The PID namespace (``/proc/self/ns/pid``), so that a container's pid is
        not compared with the host's; ``""`` if unknown.
    pid
        The process id.
    start
        The process's start time in clock ticks since boot (:func:`process_start`),
        or None if unknown.
    """

    host: str
    boot_id: str
    pidns: str
    pid: int
    start: int | None

    def same_machine(self, other: WriterIdentity) -> bool:
        """Whether ``other`` runs on the same kernel, in the same PID namespace.

        Only then can a pid be looked up and a free ``flock`` be trusted. An unknown
        boot id never matches: two machines may share a host name.

        Parameters
        ----------
        other
            The identity to compare with.

        Returns
        -------
        bool
        """
        return (
            bool(self.boot_id)
            and self.boot_id == other.boot_id
            and self.pidns == other.pidns
            and self.host == other.host
        )

    def describe(self) -> str:
        """``pid 4242 on node17`` (with the start tick where known).

        Returns
        -------
        str
        """
        started = f", started at tick {self.start}" if self.start is not None else ""
        return f"pid {self.pid} on {self.host or 'an unknown host'}{started}"

    def to_json(self) -> dict[str, Any]:
        """The identity as a JSON object (what a journal header records).

        Returns
        -------
        dict
        """
        return {
            "host": self.host,
            "boot_id": self.boot_id,
            "pidns": self.pidns,
            "pid": self.pid,
            "start": self.start,
        }

    @staticmethod
    def from_json(data: Any) -> WriterIdentity | None:
        """The identity a journal header or lock file recorded, or None if unusable.

        An older journal records only ``host`` and ``pid``: its identity has no boot
        id and never counts as this machine's.

        Parameters
        ----------
        data
            A decoded JSON object.

        Returns
        -------
        WriterIdentity or None
        """
        if not isinstance(data, dict):
            return None
        host, pid, start = data.get("host"), data.get("pid"), data.get("start")
        if not isinstance(host, str) or isinstance(pid, bool) or not isinstance(pid, int):
            return None
        boot, pidns = data.get("boot_id", ""), data.get("pidns", "")
        return WriterIdentity(
            host=host,
            boot_id=boot if isinstance(boot, str) else "",
            pidns=pidns if isinstance(pidns, str) else "",
            pid=pid,
            start=start if isinstance(start, int) and not isinstance(start, bool) else None,
        )


_ME: tuple[int, WriterIdentity] | None = None


def current() -> WriterIdentity:
    """This process's identity (cached; a forked child computes its own).

    Returns
    -------
    WriterIdentity
    """
    global _ME
    pid = os.getpid()
    if _ME is None or _ME[0] != pid:
        try:
            pidns = os.readlink("/proc/self/ns/pid")
        except OSError:
            pidns = ""
        ident = WriterIdentity(
            host=socket.gethostname(),
            boot_id=_read_text("/proc/sys/kernel/random/boot_id"),
            pidns=pidns,
            pid=pid,
            start=process_start(pid),
        )
        _ME = (pid, ident)
    return _ME[1]


def writer_identity() -> WriterIdentity:
    """This process's identity, as the journals of its writers record it.

    An engine that knows which of its workers died (Dask) collects its workers'
    identities and passes the dead ones to :func:`h5guard.merge` as ``gone_writers``.

    Returns
    -------
    WriterIdentity

    Examples
    --------
    >>> import os
    >>> writer_identity().pid == os.getpid()
    True
    """
    return current()


class ProcessState(enum.Enum):
    """What this machine's process table says about a recorded process."""

    RUNNING = "running"
    GONE = "gone"
    REUSED = "reused"  # the pid runs, but it is a process started at another time
    UNKNOWN = "unknown"  # another machine, or no /proc


def process_state(writer: WriterIdentity, me: WriterIdentity | None = None) -> ProcessState:
    """Look ``writer`` up in this machine's process table.

    Parameters
    ----------
    writer
        The recorded identity.
    me
        This process's identity (default: :func:`current`).

    Returns
    -------
    ProcessState
        UNKNOWN unless ``writer`` ran on this machine and its start time is known.
    """
    me = me or current()
    if not writer.same_machine(me) or writer.start is None:
        return ProcessState.UNKNOWN
    if writer.pid == me.pid:
        return ProcessState.RUNNING if writer.start == me.start else ProcessState.REUSED
    start = process_start(writer.pid)
    if start is None:
        if os.path.isdir("/proc/self"):
            return ProcessState.GONE
        return ProcessState.UNKNOWN
    return ProcessState.RUNNING if start == writer.start else ProcessState.REUSED


# -- the user's and the engine's word ------------------------------------------------


def _short(host: str) -> str:
    return host.split(".")[0].lower()


@dataclass(frozen=True, slots=True)
class GoneWriters:
    """Writers the user or the engine declares gone.

    Entries (``h5guard merge --gone ...``): ``HOST`` (every writer that ran there),
    ``HOST:PID`` (one process), or ``PID`` (one process on the merging machine).
    Host names match case-insensitively, by their first label too (``node7`` matches
    ``node7.cluster.local``). An engine passes whole identities instead.

    Attributes
    ----------
    hosts
        Host names, every writer of which is gone.
    processes
        ``(host, pid)`` pairs; the host ``""`` means the merging machine.
    identities
        Exact identities (the engine's word about its own workers).
    source
        Who said so, for the reason text (``"--gone"``, ``"the Dask scheduler"``).
    """

    hosts: frozenset[str] = frozenset()
    processes: frozenset[tuple[str, int]] = frozenset()
    identities: frozenset[WriterIdentity] = frozenset()
    source: str = "the user"

    @staticmethod
    def parse(
        entries: Iterable[str | WriterIdentity] | GoneWriters | None, *, source: str = "the user"
    ) -> GoneWriters:
        """Parse ``HOST``, ``HOST:PID``, ``PID`` entries (and identities).

        Parameters
        ----------
        entries
            The entries; a :class:`GoneWriters` is returned as it is.
        source
            Who declares them gone.

        Returns
        -------
        GoneWriters

        Raises
        ------
        ValueError
            For an empty entry or a pid that is not a positive integer.

        Examples
        --------
        >>> g = GoneWriters.parse(["node7", "node8:4242"])
        >>> sorted(g.hosts), sorted(g.processes)
        (['node7'], [('node8', 4242)])
        """
        if isinstance(entries, GoneWriters):
            return entries
        hosts: set[str] = set()
        procs: set[tuple[str, int]] = set()
        idents: set[WriterIdentity] = set()
        for entry in entries or ():
            if isinstance(entry, WriterIdentity):
                idents.add(entry)
                continue
            text = str(entry).strip()
            host, sep, pid_text = text.rpartition(":")
            if not sep:
                host, pid_text = ("", text) if text.isdigit() else (text, "")
            elif not host or not pid_text:
                host = pid_text = ""
            if not (host or pid_text) or (pid_text and not pid_text.isdigit()):
                raise ValueError(f"gone writer: expected HOST, HOST:PID or PID, got {entry!r}")
            if pid_text:
                if int(pid_text) < 1:
                    raise ValueError(f"gone writer: expected a pid >= 1, got {entry!r}")
                procs.add((_short(host), int(pid_text)))
            else:
                hosts.add(_short(host))
        return GoneWriters(frozenset(hosts), frozenset(procs), frozenset(idents), source)

    def __bool__(self) -> bool:
        return bool(self.hosts or self.processes or self.identities)

    def __or__(self, other: GoneWriters) -> GoneWriters:
        source = self.source if self.source == other.source else f"{self.source} and {other.source}"
        return GoneWriters(
            self.hosts | other.hosts,
            self.processes | other.processes,
            self.identities | other.identities,
            source,
        )

    def match(self, writer: WriterIdentity, me: WriterIdentity) -> str | None:
        """The entry that declares ``writer`` gone, as text, or None.

        Parameters
        ----------
        writer
            The recorded identity.
        me
            The merging process's identity (a bare ``PID`` means its machine).

        Returns
        -------
        str or None
        """
        host = _short(writer.host)
        if writer in self.identities:
            return writer.describe()
        if host in self.hosts:
            return writer.host
        if (host, writer.pid) in self.processes:
            return f"{writer.host}:{writer.pid}"
        if ("", writer.pid) in self.processes and writer.same_machine(me):
            return str(writer.pid)
        return None


# -- the decision ------------------------------------------------------------------------


class LockProbe(enum.Enum):
    """What trying the journal's ``flock`` (without waiting) said."""

    FREE = "free"  # taken: nobody on this node holds it (elsewhere: maybe node-local)
    HELD = "held"
    UNSUPPORTED = "unsupported"  # ENOSYS, ENOLCK, EOPNOTSUPP...


class Verdict(enum.Enum):
    """Whether a batch's writer is alive, gone, or cannot be shown gone (pending)."""

    ALIVE = "alive"
    GONE = "gone"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Liveness:
    """A :class:`Verdict` with the evidence that gave it, as one line of text.

    Attributes
    ----------
    verdict
        ALIVE, GONE or UNKNOWN.
    reason
        Why, for the user (``"pid 17 on node3 no longer runs"``).
    grace
        Seconds a recoverer waits between marking the journal claimed and reading it,
        when the writer might still run (declared gone, or silent for the lease): a
        live writer checks for the mark at least every ``grace / 2`` s
        (:func:`check_interval`), so whatever it appends after the read is seen by it
        and written again into a new batch. 0 where the writer is known to be gone.
    """

    verdict: Verdict
    reason: str
    grace: float = 0.0

    @property
    def gone(self) -> bool:
        """Whether the batch may be recovered."""
        return self.verdict is Verdict.GONE


_MAX_GRACE = 30.0


def grace(lease: float) -> float:
    """Seconds between marking a journal claimed and reading it, for a writer that may
    still run: a tenth of the lease, at most 30 s.

    Parameters
    ----------
    lease
        The journal's (effective) lease.

    Returns
    -------
    float
    """
    return min(_MAX_GRACE, lease / 10)


def check_interval(lease: float) -> float:
    """How often (seconds, at most) a writer checks that its journal was not claimed.

    Half of the shortest grace a recoverer of its journal waits (:func:`grace`).

    Parameters
    ----------
    lease
        The writer's lease.

    Returns
    -------
    float
    """
    return grace(lease) / 2


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def decide(
    writer: WriterIdentity | None,
    *,
    me: WriterIdentity,
    lock: LockProbe,
    writer_locked: bool,
    heartbeat_age: float | None,
    lease: float,
    released: bool = False,
    process: ProcessState = ProcessState.UNKNOWN,
    gone: GoneWriters | None = None,
) -> Liveness:
    """Weigh the evidence about a batch's writer (the rule in the module docs).

    Pure: every fact comes in as an argument.

    Parameters
    ----------
    writer
        The identity the journal recorded; None if unreadable (the writer died while
        creating the journal, or an h5guard too old to record one).
    me
        The deciding process's identity.
    lock
        What probing the journal's ``flock`` said, here and now.
    writer_locked
        Whether the writer recorded that it holds a real ``flock`` on the journal
        (False where its file system refused one).
    heartbeat_age
        Seconds since the journal was last touched (by an ``add()`` or the
        heartbeat), by this machine's clock; None if unknown.
    lease
        Seconds of silence after which a writer on another machine counts as gone.
    released
        The writer let go of the batch without committing it (:func:`release`).
    process
        What this machine's process table says about ``writer``
        (:func:`process_state`).
    gone
        Writers the user or the engine declared gone.

    Returns
    -------
    Liveness

    Examples
    --------
    >>> me = WriterIdentity("login1", "b00t", "pid:[1]", 10, 5)
    >>> w = WriterIdentity("node7", "other", "pid:[1]", 42, 99)
    >>> decide(w, me=me, lock=LockProbe.FREE, writer_locked=True,
    ...        heartbeat_age=12.0, lease=300.0).verdict
    <Verdict.UNKNOWN: 'unknown'>
    >>> decide(w, me=me, lock=LockProbe.FREE, writer_locked=True,
    ...        heartbeat_age=301.0, lease=300.0).verdict
    <Verdict.GONE: 'gone'>
    """
    gone = gone or GoneWriters()
    who = writer.describe() if writer is not None else "a writer that recorded no identity"
    if lock is LockProbe.HELD:
        return Liveness(Verdict.ALIVE, f"{who}: its lock is held (by its writer, or by a merge)")
    if released:
        return Liveness(Verdict.GONE, f"{who}: its writer let go of it without committing")
    here = writer is not None and writer.same_machine(me)
    if here:
        # The process table first: a flock that a file system grants without locking
        # anything must not make a running writer look gone.
        if process is ProcessState.GONE:
            return Liveness(Verdict.GONE, f"{who}: that process no longer runs")
        if process is ProcessState.REUSED:
            return Liveness(
                Verdict.GONE, f"{who}: that process no longer runs (its pid is now another's)"
            )
        if process is ProcessState.RUNNING:
            return Liveness(Verdict.ALIVE, f"{who}: that process still runs on this host")
        if writer_locked and lock is LockProbe.FREE:
            return Liveness(
                Verdict.GONE, f"{who}: its flock is free (the kernel drops it when a process dies)"
            )
    elif writer is None and lock is LockProbe.FREE and writer_locked:
        # The writer died while creating its journal (it locks it before writing the
        # header), or an older h5guard on this host: the lock was then taken.
        return Liveness(Verdict.GONE, f"{who}: its flock is free")
    if writer is not None:
        entry = gone.match(writer, me)
        if entry is not None:
            return Liveness(
                Verdict.GONE, f"{who}: declared gone by {gone.source} ({entry})", grace(lease)
            )
    if heartbeat_age is not None and heartbeat_age > lease:
        return Liveness(
            Verdict.GONE,
            f"{who}: its journal is untouched for {_seconds(heartbeat_age)}, "
            f"longer than the lease ({_seconds(lease)})",
            grace(lease),
        )
    age = f"touched {_seconds(heartbeat_age)} ago" if heartbeat_age is not None else "never seen"
    hint = f"--gone {writer.host}:{writer.pid}" if writer is not None else "--gone HOST"
    return Liveness(
        Verdict.UNKNOWN,
        f"{who}: cannot be shown gone from {me.host} ({age}; lease {_seconds(lease)}); "
        f"taken once untouched for the lease, or with {hint}",
    )


# -- heartbeat ---------------------------------------------------------------------------


class _Heartbeat:
    """One daemon thread that refreshes the mtime of every registered descriptor.

    It never calls libhdf5 (it only calls ``os.utime`` on file descriptors) and holds
    its lock only around that call. Registering a descriptor does not wake it (a
    journal is fresh when it is created, and the next beat comes within one period),
    so opening a batch costs no thread switch; it lingers a while with nothing to
    beat, so that the next batch reuses it. After a fork the child starts with nothing
    registered and no thread: its parent's batches are the parent's.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fds: dict[int, float] = {}  # fd -> its lease
        self.wake = threading.Condition(self.lock)
        self.thread: threading.Thread | None = None
        self.period = DEFAULT_LEASE / 4
        self.beats = 0

    def add(self, fd: int, lease: float) -> None:
        with self.lock:
            self.fds[fd] = lease
            if self.thread is None or not self.thread.is_alive():
                self.period = lease / 4
                self.thread = threading.Thread(
                    target=self._run, name="h5guard-heartbeat", daemon=True
                )
                self.thread.start()
            elif lease / 4 < self.period:
                self.period = lease / 4
                self.wake.notify()

    def remove(self, fd: int) -> None:
        with self.lock:
            self.fds.pop(fd, None)

    def _run(self) -> None:
        with self.lock:
            idle = 0.0
            while True:
                self.wake.wait(timeout=self.period)
                if not self.fds:
                    idle += self.period
                    if idle >= _LINGER:
                        break
                    continue
                idle = 0.0
                for fd in list(self.fds):
                    try:
                        os.utime(fd)
                    except OSError as err:
                        # A descriptor that cannot be touched any more (a stale NFS
                        # handle): stop beating it; the writer's next add() reports.
                        log.debug("heartbeat of fd %d stopped: %s", fd, err)
                        self.fds.pop(fd, None)
                self.beats += 1
            self.thread = None


_LINGER = 2.0  # seconds the thread waits with nothing to beat before it ends
_HEART = _Heartbeat()


def _reset_after_fork() -> None:
    global _HEART
    _HEART = _Heartbeat()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def beat(fd: int, lease: float) -> None:
    """Keep ``fd``'s modification time fresh (every ``lease / 4`` s) until :func:`stop`.

    Parameters
    ----------
    fd
        An open descriptor of the journal (or soft lock) file.
    lease
        The lease the file's header records.
    """
    _HEART.add(fd, max(_MIN_LEASE, lease))


def stop(fd: int) -> None:
    """Stop the heartbeat of ``fd``; call it before closing ``fd``.

    Parameters
    ----------
    fd
        A descriptor passed to :func:`beat` (others are ignored).
    """
    _HEART.remove(fd)


def heartbeat_threads() -> int:
    """How many heartbeat threads run in this process (0 or 1).

    A caller that forks only when it is single-threaded may discount this one: it
    holds no lock the child could need.

    Returns
    -------
    int
    """
    thread = _HEART.thread
    return 1 if thread is not None and thread.is_alive() else 0


def release(fd: int) -> None:
    """Mark the file of ``fd`` as let go of (mtime :data:`RELEASED_MTIME`), quietly.

    Parameters
    ----------
    fd
        An open descriptor of a journal whose batch this process abandons.
    """
    stop(fd)
    with contextlib.suppress(OSError):
        os.utime(fd, (RELEASED_MTIME, RELEASED_MTIME))


def is_released(mtime: float) -> bool:
    """Whether a file's modification time is the mark :func:`release` leaves.

    Parameters
    ----------
    mtime
        ``os.stat(path).st_mtime``.

    Returns
    -------
    bool
    """
    return mtime < RELEASED_MTIME + 1.0


def age(mtime: float, *, now: float | None = None) -> float:
    """Seconds since ``mtime`` by this machine's clock (never negative).

    Parameters
    ----------
    mtime
        A modification time.
    now
        The current time (default ``time.time()``).

    Returns
    -------
    float
    """
    return max(0.0, (time.time() if now is None else now) - mtime)


# -- claim marks -------------------------------------------------------------------------

#: A recoverer clears the owner-write bit of a journal before it reads it: the writer,
#: which checks after every append, then knows its record may have been missed.
_OWNER_WRITE = 0o200


def mark_claimed(fd: int) -> bool:
    """Tell the writer of ``fd``'s journal that a recoverer is taking it.

    Called before the recoverer reads the journal. Returns False where the mark
    cannot be set (another user's file): the recovery goes on without it.

    Parameters
    ----------
    fd
        A descriptor of the journal.

    Returns
    -------
    bool
    """
    try:
        mode = os.fstat(fd).st_mode
        os.fchmod(fd, mode & 0o7777 & ~_OWNER_WRITE)
    except OSError as err:
        log.debug("cannot mark fd %d claimed: %s", fd, err)
        return False
    return True


def claim_marked(fd: int) -> bool:
    """Whether a recoverer marked the journal of ``fd`` claimed (deleted or not).

    Parameters
    ----------
    fd
        The writer's journal descriptor.

    Returns
    -------
    bool
    """
    try:
        return not os.fstat(fd).st_mode & _OWNER_WRITE
    except OSError:
        return False


def was_claimed(fd: int) -> bool:
    """Whether the journal of ``fd`` was claimed by a recoverer or deleted.

    The writer asks after each append: if so, the record it just wrote may not be in
    the recovered shard, and it writes it again into a new batch.

    Parameters
    ----------
    fd
        The writer's journal descriptor.

    Returns
    -------
    bool
    """
    st = os.fstat(fd)
    return st.st_nlink == 0 or not st.st_mode & _OWNER_WRITE


# -- journals ----------------------------------------------------------------------------


def header_fields(*, lease: float, flocked: bool) -> dict[str, Any]:
    """What a journal's header records about its writer.

    Parameters
    ----------
    lease
        The writer's lease (its heartbeat runs every ``lease / 4`` s).
    flocked
        Whether the writer holds a real ``flock`` on the journal.

    Returns
    -------
    dict
        ``{"writer": identity, "lease": seconds, "flock": bool}``.
    """
    return {"writer": current().to_json(), "lease": float(lease), "flock": bool(flocked)}


def recorded_writer(meta: Any) -> WriterIdentity | None:
    """The writer a journal header names (an older header: host and pid only).

    Parameters
    ----------
    meta
        The journal's decoded header, or None.

    Returns
    -------
    WriterIdentity or None
    """
    if not isinstance(meta, dict):
        return None
    writer = WriterIdentity.from_json(meta.get("writer"))
    if writer is None:
        writer = WriterIdentity.from_json({"host": meta.get("host"), "pid": meta.get("pid")})
    return writer


def judge_journal(
    meta: Any,
    mtime: float,
    lock: LockProbe,
    *,
    gone: GoneWriters | None = None,
    lease: float | None = None,
    me: WriterIdentity | None = None,
    now: float | None = None,
) -> Liveness:
    """Gather a journal's evidence and :func:`decide` about its writer.

    Parameters
    ----------
    meta
        The journal's decoded header (None when it is cut short or unreadable).
    mtime
        The journal's modification time (its heartbeat).
    lock
        What probing its ``flock`` said.
    gone
        Writers declared gone.
    lease
        A lease to lengthen the writer's recorded one with (``--lease``).
    me
        The judging process's identity (default: :func:`current`).
    now
        The current time (default: ``time.time()``).

    Returns
    -------
    Liveness
    """
    me = me or current()
    writer = recorded_writer(meta)
    header = meta if isinstance(meta, dict) else {}
    recorded = header.get("lease")
    if not isinstance(recorded, int | float) or isinstance(recorded, bool) or recorded <= 0:
        recorded = default_lease()
    # An older writer always took the lock; one that died creating its journal took it
    # before writing the header (where the file system allows it).
    flocked = header.get("flock", True)
    return decide(
        writer,
        me=me,
        lock=lock,
        writer_locked=flocked is True,
        heartbeat_age=age(mtime, now=now),
        lease=max(float(recorded), lease or 0.0),
        released=is_released(mtime),
        process=process_state(writer, me) if writer is not None else ProcessState.UNKNOWN,
        gone=gone,
    )
