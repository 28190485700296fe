"""The spare index: the index before the current one, brought up to date in place.

An index holds one external link per key, so a new copy of it costs time and disk
writes in proportion to everything already merged (about 90 bytes per key: 9 MB for
100,000 keys, written and fsynced by every merge). Instead, each merge keeps the index
it replaces as the *spare*, ``NAME.segments/index-spare.h5``, and the next merge adds
to the spare the links it lacks (those of the segments added since it was the output,
and the new one) and renames it over the output. The old output becomes the new spare.
A merge then writes only what it adds.

An output name only ever points at a finished index; what changes in place is a file
no output name points at. The one reader that could see a spare change is one that
opened the output before the last merge, kept it open and reads it again after the next
one. Such a reader holds libhdf5's own lock on the file (a shared ``flock``, taken by
every ``h5py.File`` unless locking is switched off), so the spare is used only when an
exclusive ``flock`` on it is granted at once; otherwise, and wherever locks are refused
or switched off (``HDF5_USE_FILE_LOCKING=FALSE``), the merge copies the current index as
before. Other checks make sure the spare is one of this output's own indexes: a regular
file of this account with one name (a hard link made to it elsewhere would be written
through), not the output's own file, an index of the same segment directory whose
segments are the first ones of the output's, unchanged. After a merge that folded
segments (:mod:`h5guard._merge.fold`) the spare lists segments the output no longer
does: the index that replaced it records how many first segments the two share, and the
next merge replaces the spare's links of the folded keys with links into the new
segment (and checks the count of links before the rename).

Crash safety: the spare is renamed to ``index-spare.h5.partial`` before its first
change, so a merge killed while changing it leaves a partial that the next merge
removes and never a half-changed spare; it then copies the index once. The old output
gets the spare's name before the new index is renamed over the output, so a crash in
between leaves the spare and the output as one file (recognized: same inode) and the
spare is dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType

import h5py

from h5guard import _atomic, _background
from h5guard._format import segments as _segments
from h5guard._lock import NO_FLOCK

log = logging.getLogger(__name__)

SPARE_NAME = "index-spare.h5"
# libhdf5's switch for its own file locks: off, readers hold none, and a free lock
# would prove nothing.
_LOCKING_ENV = "HDF5_USE_FILE_LOCKING"


@dataclass
class Spare:
    """A spare taken for this merge: renamed to its partial name, locked, checked.

    Attributes
    ----------
    path : str
        Its partial name, the file the merge changes and renames over the output.
    missing : list of Segment
        The output's segments the spare does not list yet, in order. The spare may
        link some of their keys already, into segments they were folded from: those
        links are to be replaced (``write_index(relinked=...)``).
    fd : int
        A descriptor holding the exclusive ``flock`` until :meth:`release`.
    """

    path: str
    missing: list[_segments.Segment]
    fd: int
    renamed: Future[None]

    def ready(self) -> None:
        """Wait until the rename to the partial name is on disk: before the first change,
        or a crash could leave a half-changed file under the spare's name."""
        self.renamed.result()

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> Spare:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release it; after a failed merge, remove it too (unchanged or half-changed,
        it is no spare any more, and a failed merge leaves nothing behind)."""
        if exc_type is not None:
            _atomic.remove_quietly(self.path)
        self.release()


def spare_path(segdir: str) -> str:
    return os.path.join(segdir, SPARE_NAME)


def partial_path(segdir: str) -> str:
    return spare_path(segdir) + _atomic.PARTIAL_SUFFIX


def locks_trusted() -> bool:
    """Whether readers of this environment hold libhdf5's file locks."""
    return os.environ.get(_LOCKING_ENV, "").strip().upper() not in {"FALSE", "0", "NO", "OFF"}


def take(out: str, segdir: str, index: _segments.Index, pool: _background.Tasks) -> Spare | None:
    """The spare of the index ``out``, to be changed once :meth:`Spare.ready`, or None
    to copy the index.

    A spare that is not fit (see the module's notes) is removed, except one that a
    reader holds open: that one stays as it is. The directory fsync that makes its
    rename durable runs in ``pool`` (the merge builds its segment meanwhile).
    """
    _atomic.remove_quietly(partial_path(segdir))  # a killed merge's half-changed spare
    path = spare_path(segdir)
    if not locks_trusted():
        _atomic.remove_quietly(path)
        return None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as err:  # a link (ELOOP), something not ours: never used
        log.info("%s: not used as the spare index (%s)", path, err)
        _atomic.remove_quietly(path)
        return None
    try:
        st = os.fstat(fd)
        why = _unfit(st, out)
        if why is None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("%s: open in another process; the index is copied instead", path)
                os.close(fd)
                return None
            except OSError as err:
                if err.errno not in NO_FLOCK:
                    raise
                why = "the file system refuses locks, so a reader holding it cannot be seen"
        missing = None
        if why is None:
            missing = _recorded(st, index)
            if missing is None:
                missing = _missing(path, index)
        if missing is None:
            log.info("%s: not used as the spare index (%s)", path, why or "not this output's")
            os.close(fd)
            _atomic.remove_quietly(path)
            return None
        partial = partial_path(segdir)
        os.rename(path, partial)
        renamed = pool.submit(_atomic.fsync_dir, segdir)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return Spare(partial, missing, fd, renamed)


def _unfit(st: os.stat_result, out: str) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_nlink != 1:
        return f"{st.st_nlink} names (a hard link elsewhere would be changed too)"
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}"
    with contextlib.suppress(OSError):
        live = os.stat(out, follow_symlinks=False)
        if (live.st_dev, live.st_ino) == (st.st_dev, st.st_ino):
            return "the output itself"
    return None


def fingerprint(out: str, listed: int) -> str | None:
    """What a new index records of the index ``out`` it replaces, its next spare
    (:data:`~h5guard._format.segments.SPARE_ATTR`), or None if none is kept.

    ``listed``: how many of the new index's first segments that index lists too (all
    of its own, unless a fold replaced some: :mod:`h5guard._merge.fold`).

    That file is never written again under any name but the spare's partial one, so if
    the spare is still the same inode, size and modification time, it is this index:
    the next merge takes it without opening it through libhdf5 (:func:`take`).
    """
    if not locks_trusted():
        return None
    try:
        st = os.stat(out, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return f"{_which_file(st)}:{listed}"


def common_prefix(a: Sequence[_segments.Segment], b: Sequence[_segments.Segment]) -> int:
    """How many first segments ``a`` and ``b`` have in common."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _which_file(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _recorded(st: os.stat_result, index: _segments.Index) -> list[_segments.Segment] | None:
    """The segments the spare lacks, if it is the file the output's index recorded."""
    if index.spare is None:
        return None
    head, _, count = index.spare.rpartition(":")
    if head != _which_file(st) or not count.isdigit():
        return None
    listed = int(count)
    if not 0 <= listed <= len(index.segments):
        return None
    return list(index.segments[listed:])


def _missing(path: str, index: _segments.Index) -> list[_segments.Segment] | None:
    """The segments of ``index`` that the spare at ``path`` lacks, or None if the
    spare is not an earlier state of the same index."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            old = _segments.open_index(f, path)
            links = f.id.get_num_objs()
    except (OSError, ValueError, KeyError, _segments.BadIndexError):
        return None
    if old.dir_name != index.dir_name or links != old.groups:
        return None
    # Only a spare whose segments are the output's first ones: one listing others (a
    # fold's) is taken only as the record of the index that replaced it says
    # (_recorded), which knows that their keys are all in later segments.
    have: Sequence[_segments.Segment] = old.segments
    if common_prefix(have, index.segments) != len(have):
        return None
    return list(index.segments[len(have) :])


def keep_old(out: str, segdir: str) -> None:
    """Give the output's current file the spare's name, before a new index replaces it.

    Best effort: without a spare the next merge copies the index. The new name need
    not be durable before the rename over the output, so no directory fsync is spent on
    it: whichever of the two a crash keeps, the next merge finds either no spare (it
    copies), or a spare that is the output's own file (dropped), or the old index.
    """
    path = spare_path(segdir)
    try:
        _atomic.remove_quietly(path)
        if not locks_trusted():
            return  # it would never be used
        os.link(out, path, follow_symlinks=False)
    except OSError as err:
        log.info("%s: no spare index kept (%s); the next merge copies the index", path, err)
        _atomic.remove_quietly(path)
