"""Exclusive locks on a sidecar ``<target>.lock``, with a named holder, on any file system.

Two locks are taken, in this order, and both are held for the whole block:

1. an ``flock`` on ``<target>.lock``: exclusion on one machine and on file systems
   whose locks are cluster-wide (Lustre ``-o flock``, GPFS, NFSv4). The lock file is
   never deleted: unlinking a lock file that another process has open and waits on
   lets a third process lock a *new* file of the same name, and mutual exclusion is
   gone. Where the file system refuses ``flock`` (``ENOSYS``: Lustre without
   ``-o flock``, many FUSE mounts; ``ENOLCK``: NFS without a lock daemon) this step is
   skipped, with one log line per process;
2. an owner file ``<target>.lock.owner``, created with ``O_EXCL`` and holding the
   holder's identity (:class:`h5guard._liveness.WriterIdentity`) and lease; its
   modification time is kept fresh by the heartbeat. It is what excludes processes on
   *other* nodes where ``flock`` is refused or node-local (BeeGFS, NFS ``nolock``), where
   a lock on node A is invisible on node B. It is deleted on release. A holder that
   died leaves it behind: on its own machine it is taken over at once (its ``flock`` is
   free, or its pid no longer runs); from another machine by the journals' rule
   (:func:`h5guard._liveness.decide`): when declared gone, or untouched for the lease.

Who holds the lock is also written to ``<target>.lock.info`` (a human-readable record
that outlives the holder) so that a timeout can say whom the user is waiting for.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from h5guard import _atomic, _liveness
from h5guard.errors import LockTimeoutError

log = logging.getLogger(__name__)

OWNER_SUFFIX = ".owner"
#: ``flock`` errors that mean "this file system does not lock", not "someone holds it".
NO_FLOCK = frozenset({errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP})
_POLL = 0.05
_MAX_POLL = 0.5
_noted: set[tuple[int, str]] = set()


def note_no_flock(path: str, err: OSError) -> None:
    """Log, once per process and file system error, that ``flock`` is refused.

    Parameters
    ----------
    path
        The file whose lock was refused.
    err
        The error ``flock`` raised.
    """
    try:
        device = str(os.stat(os.path.dirname(os.path.abspath(path))).st_dev)
    except OSError:
        device = os.path.dirname(os.path.abspath(path))
    key = (err.errno or 0, device)
    if key in _noted:
        return
    _noted.add(key)
    log.warning(
        "%s: the file system refuses flock (%s); h5guard uses owner files and heartbeats "
        "instead (see docs/cluster.md)",
        os.path.dirname(os.path.abspath(path)) or ".",
        os.strerror(err.errno or 0),
    )


def try_flock(fd: int, path: str) -> bool | None:
    """Try to take an exclusive ``flock`` on ``fd`` without waiting.

    Parameters
    ----------
    fd
        An open descriptor.
    path
        Its path, for the log note.

    Returns
    -------
    bool or None
        True when taken, False when another process holds it, None when the file
        system refuses locks (noted once in the log).
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in NO_FLOCK:
            note_no_flock(path, err)
            return None
        raise
    return True


def _flock_holder(lock_path: str) -> int | None:
    """The pid holding a flock on ``lock_path``, from /proc/locks (Linux; else None).

    The holder writes ``.lock.info`` only after it has the lock, so in that moment the
    file still names the previous holder; the kernel's lock table never lags.
    """
    try:
        st = os.stat(lock_path)
        with open("/proc/locks", encoding="ascii") as fh:
            table = fh.read().splitlines()
    except OSError:
        return None
    for line in table:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[4].isdigit():
            inode = fields[5].rsplit(":", 1)[-1]
            if inode.isdigit() and int(inode) == st.st_ino:
                return int(fields[4])
    return None


def _holder_text(lock_path: str, info_path: str) -> str:
    pid = _flock_holder(lock_path)
    try:
        with open(info_path, encoding="utf-8") as fh:
            info = json.load(fh)
        recorded = (
            f"pid {info['pid']} on {info['host']} since {info['since']} "
            f"({info.get('command', '?')})"
        )
        recorded_pid = int(info["pid"]) if info.get("host") == socket.gethostname() else None
    except (OSError, ValueError, KeyError, TypeError):
        recorded, recorded_pid = "", None
    if pid is not None and pid != recorded_pid:
        return f"pid {pid} on {socket.gethostname()} ({_command_of(pid)})"
    return recorded or "an unknown process"


def _command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:120] or "?"
    except OSError:
        return "?"


@dataclass(frozen=True, slots=True)
class _Owner:
    """An owner file as found: its inode, the judgement of its holder, the holder text."""

    ino: int
    liveness: _liveness.Liveness
    text: str


def _read_owner(
    owner_path: str,
    *,
    flocked: bool | None,
    gone: _liveness.GoneWriters,
    lease: float,
) -> _Owner | None:
    """Judge the holder of an existing owner file (None: it vanished meanwhile)."""
    try:
        fd = os.open(owner_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        data = os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    try:
        info = json.loads(data.decode("utf-8"))
    except ValueError:
        info = None  # its creator is writing it now, or died between create and write
    holder = _liveness.WriterIdentity.from_json(info)
    recorded = info.get("lease") if isinstance(info, dict) else None
    if not isinstance(recorded, int | float) or isinstance(recorded, bool):
        recorded = _liveness.default_lease()
    lease = max(lease, float(recorded))
    holder_flocked = bool(info.get("flock")) if isinstance(info, dict) else False
    me = _liveness.current()
    liveness = _liveness.decide(
        holder,
        me=me,
        # We hold the flock (or it is refused): on the holder's machine that proves it
        # released its own; from another machine it proves nothing.
        lock=_liveness.LockProbe.FREE if flocked else _liveness.LockProbe.UNSUPPORTED,
        writer_locked=holder_flocked and bool(flocked),
        heartbeat_age=_liveness.age(st.st_mtime),
        lease=lease,
        process=_liveness.process_state(holder, me) if holder else _liveness.ProcessState.UNKNOWN,
        gone=gone,
    )
    if isinstance(info, dict) and holder is not None:
        text = f"{holder.describe()} since {info.get('since', '?')} ({info.get('command', '?')})"
    else:
        text = "a process that has not written its name yet"
    return _Owner(st.st_ino, liveness, text)


def _create_owner(owner_path: str, *, flocked: bool | None, lease: float, command: str) -> int:
    """Create the owner file exclusively (FileExistsError if there is one).

    The file is written under a private name first and then hard-linked to its own
    (``link`` never replaces a name): a process killed half-way leaves no owner file
    without a holder, which a waiter could only judge by its lease. Where the file
    system has no hard links, it is created under its own name directly.
    """
    info = {
        **_liveness.current().to_json(),
        "lease": lease,
        "flock": bool(flocked),
        "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command,
    }
    data = json.dumps(info, sort_keys=True).encode("utf-8")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    private = f"{owner_path}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    fd = os.open(private, flags, 0o644)
    try:
        os.write(fd, data)
        try:
            os.link(private, owner_path)  # FileExistsError: the lock has an owner
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            os.close(fd)
            fd = -1
            os.unlink(private)
            return _create_owner_directly(owner_path, flags, data, lease)
        _liveness.beat(fd, lease)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(private)
        raise
    with contextlib.suppress(OSError):
        os.unlink(private)
    return fd


def _create_owner_directly(owner_path: str, flags: int, data: bytes, lease: float) -> int:
    fd = os.open(owner_path, flags, 0o644)
    try:
        os.write(fd, data)
        _liveness.beat(fd, lease)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(owner_path)
        raise
    return fd


def _take_over(owner_path: str, judged: _Owner) -> None:
    """Move a gone holder's owner file aside, unless it is no longer the one judged.

    Between reading the file and moving it, another waiter may have taken over and
    created a fresh one: that one is put back (``link`` never replaces a name).
    """
    tomb = f"{owner_path}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(owner_path, tomb)
    except FileNotFoundError:
        return
    try:
        if os.stat(tomb).st_ino != judged.ino:
            with contextlib.suppress(FileExistsError):
                os.link(tomb, owner_path)
        else:
            log.warning("%s: taking over the lock of %s", owner_path, judged.liveness.reason)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tomb)


def _release_owner(owner_path: str, fd: int) -> None:
    _liveness.stop(fd)
    try:
        if os.stat(owner_path).st_ino == os.fstat(fd).st_ino:
            os.unlink(owner_path)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(
    target: str | os.PathLike[str],
    *,
    timeout: float,
    purpose: str = "",
    gone: Iterable[str | _liveness.WriterIdentity] | _liveness.GoneWriters | None = None,
    lease: float | None = None,
) -> Iterator[None]:
    """Hold ``<target>.lock`` for the duration of the block.

    Parameters
    ----------
    target : str or os.PathLike
        The file the lock protects (never locked itself).
    timeout : float
        Seconds to wait for the holder (0: do not wait).
    purpose : str
        What the holder does, for the waiters' error message.
    gone : iterable of str or WriterIdentity, or GoneWriters, optional
        Hosts or processes declared gone (``HOST``, ``HOST:PID``, ``PID``): a lock
        they left behind is taken over at once.
    lease : float, optional
        This holder's lease (default ``$H5GUARD_LEASE`` or 300 s). Waiting for a holder
        on another machine, its own recorded lease counts; ``lease`` can only lengthen
        it.

    Yields
    ------
    None

    Raises
    ------
    LockTimeoutError
        If another process still holds the lock after ``timeout`` seconds; the error
        names the holder.
    """
    lock_path = os.fspath(target) + ".lock"
    info_path = lock_path + ".info"
    owner_path = lock_path + OWNER_SUFFIX
    # Our own lease as a holder; as a waiter, another holder's recorded lease counts,
    # lengthened (never shortened) by an explicit one.
    own_lease = _liveness.default_lease() if lease is None else max(1.0, lease)
    judge_lease = 0.0 if lease is None else lease
    declared = _liveness.GoneWriters.parse(gone, source="the user")
    command = purpose or " ".join(sys.argv[:3])
    deadline = time.monotonic() + timeout
    pause = _POLL

    def wait_or_fail(holder: str) -> None:
        nonlocal pause
        left = deadline - time.monotonic()
        if left <= 0:
            raise LockTimeoutError(lock_path, timeout, holder)
        time.sleep(min(pause, left))
        pause = min(pause * 2, _MAX_POLL)

    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        while (flocked := try_flock(fd, lock_path)) is False:
            wait_or_fail(_holder_text(lock_path, info_path))
        while True:
            try:
                owner_fd = _create_owner(
                    owner_path, flocked=flocked, lease=own_lease, command=command
                )
                break
            except FileExistsError:
                found = _read_owner(owner_path, flocked=flocked, gone=declared, lease=judge_lease)
            if found is None:
                continue
            if found.liveness.gone:
                _take_over(owner_path, found)
                continue
            wait_or_fail(f"{found.text}; {found.liveness.reason}")
        try:
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "command": command,
            }
            # A private, unpredictable temporary name created exclusively: a link planted
            # at any name of ours is never written through.
            tmp = f"{info_path}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
            info_fd = _atomic.create_exclusive(tmp)
            try:
                _atomic.write_fd(info_fd, json.dumps(info).encode("utf-8"))
            finally:
                os.close(info_fd)
            os.replace(tmp, info_path)
            yield
        finally:
            _release_owner(owner_path, owner_fd)
    finally:
        os.close(fd)
