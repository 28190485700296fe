"""ShardWriter: how a worker process writes results that are never lost.

``add()`` appends the result to the batch's journal (``<stem>.h5.journal``, see
:mod:`h5guard._journal`) and returns only when the kernel holds all of it: from then on
the result survives whatever happens to the process. (A big result whose ``add()``
commits the batch is journaled as an intent only and returns once its shard is
committed: :meth:`ShardWriter._add_committing`.) A commit writes the batch as an
HDF5 shard (``.partial``, closed, sealed, fsynced, renamed to ``<stem>.h5``, directory
fsynced) and only then deletes the journal. A writer that never commits (a pool that
never calls ``close()``, SIGTERM, SIGKILL, an exception) leaves a journal that
:func:`h5guard.merge` turns into a shard, once the writer's process is gone.
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import socket
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from h5guard import _atomic, _journal, _liveness
from h5guard._format import names, tree
from h5guard._format import result as _result
from h5guard._shard import SHARD_SUFFIX, new_shard_stem, write_shard
from h5guard._version import __version__
from h5guard.errors import (
    DuplicateKeyError,
    H5GuardError,
    InsufficientSpaceError,
    ResultLimitError,
    WriteError,
    WriterClosedError,
    WriterTransferError,
)
from h5guard.schema import Schema

log = logging.getLogger(__name__)

# Below this many bytes a batch is also kept in memory (private copies of its values),
# so a commit does not read its journal back; above it (a batch that grew past
# ``commit_bytes`` because commits failed, or a larger ``commit_bytes``), results are
# read back from the journal one at a time (memory: one result).
_IN_MEMORY_BATCH = 64 * 1024 * 1024
# The default ``commit_bytes``: a batch is committed once its values reach this size,
# so a big result never waits in memory or in the journal for others.
DEFAULT_COMMIT_BYTES = 64 * 1024 * 1024
# A result of at least this many bytes whose add() commits it is journaled as an intent
# only (its frame and header, see ShardWriter._add_committing): its payload is written
# once, into the shard. Below it the whole record is journaled as for any result.
_INTENT_MIN = 1024 * 1024
# File attributes travel in the journal's meta record under this pseudo-key.
_FILE_KEY = "/"


# Writers of this process, so that a forked child drops its inherited journals at once
# (it must never write to, commit or hold the lock of its parent's batch).
_WRITERS: weakref.WeakSet[ShardWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_WRITERS):
        # Another thread of the parent may have held the lock at the fork: the child's
        # copy would never be released.
        writer._lock = threading.RLock()
        writer._leave_parent_batch()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ShardWriter:
    """Write result groups into committed, immutable shard files in ``directory``.

    **The guarantee**: once ``add()`` has returned, the result is in the output of the
    next :func:`h5guard.merge` of ``directory``, whatever then happens to this process
    (``close()`` never called, garbage collection, a pool's close/join or terminate,
    SIGTERM, SIGKILL, an exception or Ctrl-C in the ``with`` block, a fork). A power
    loss or kernel crash can lose the results added since the last commit, unless
    ``sync_every_add=True`` (one fsync per ``add()``).

    The batch is committed to a shard every ``commit_every`` results or once its
    values reach ``commit_bytes`` (a result that alone reaches it is committed by its
    own ``add()``, straight from the caller's arrays), on :meth:`commit`, on
    :meth:`close` and when the ``with`` block ends, also by an exception (which is then
    re-raised): results are independent, so what was added is kept. :meth:`discard`
    throws the uncommitted batch away, explicitly. Memory stays proportional to one
    result (plus at most ``commit_bytes`` of held copies), not to the batch.

    A key may be added once per writer: a second ``add()`` of it raises
    :class:`~h5guard.DuplicateKeyError` (a result is immutable; recomputations belong to
    the merge's ``on_conflict`` policy).

    Threads may share a writer: its methods run under one lock, so every returned
    ``add()`` is journaled whole (docs/security.md, "Threads").

    A writer belongs to the process that created it: in a forked child it starts a
    batch of its own, and it cannot be pickled (create one per worker, e.g. in a pool
    initializer or at the start of the task).

    Parameters
    ----------
    directory : str or os.PathLike
        Where the shards (and the open batch's journal) go; created if missing.
    schema : Schema, optional
        Every result is checked against it at ``add()``; shards embed it.
    prefix : str
        The start of each shard's name (non-empty, no ``-`` or ``/``).
    commit_every : int
        Results per shard (>= 1).
    commit_bytes : int
        Bytes of values (datasets and attributes) after which the batch is committed,
        whatever ``commit_every`` says (>= 1; default 64 MiB).
    min_free : int
        Bytes that must stay free on the file system beyond what a result needs;
        otherwise ``add`` raises :class:`~h5guard.InsufficientSpaceError` before writing.
        (While plenty is free, the file system is asked once per few MiB of results,
        not at every ``add``; a disk filled by others meanwhile is still met cleanly:
        the journal's own write then raises the same error.)
    file_attrs : mapping, optional
        Worker-level attributes stored at the root of each shard; a merge records them,
        per shard, in the output's ``h5guard_sources`` root attribute. Names must not
        start with ``h5guard_``.
    sync_every_add : bool
        fsync the journal at every ``add()`` (survives a power loss too).
    lease : float, optional
        Seconds after which a merge on *another* machine may take this writer's open
        batch for a dead writer's if its journal has not been touched (the heartbeat
        touches it every ``lease / 4`` s while the writer lives, computing or not).
        Default ``$H5GUARD_LEASE`` or 300 s; see docs/guarantee.md.

    Raises
    ------
    ValueError
        A bad ``commit_every``, ``commit_bytes``, ``prefix`` or ``file_attrs`` name.
    WriteError
        ``directory`` cannot be created, or is a symbolic link owned by another
        account (docs/security.md).
    WriterTransferError
        On an attempt to pickle the writer (send it to another process).

    Examples
    --------
    Use it as a context manager, or keep one for a worker's whole life:

    >>> with ShardWriter("run_tmp", schema=schema) as writer:  # doctest: +SKIP
    ...     writer.add("config-1", {"x": xs}, {"status": "ok"})
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        schema: Schema | None = None,
        prefix: str = "shard",
        commit_every: int = 100,
        commit_bytes: int = DEFAULT_COMMIT_BYTES,
        min_free: int = _atomic.DEFAULT_MIN_FREE,
        file_attrs: Mapping[str, Any] | None = None,
        sync_every_add: bool = False,
        lease: float | None = None,
    ) -> None:
        if isinstance(commit_every, bool) or not isinstance(commit_every, int) or commit_every < 1:
            raise ValueError(f"commit_every: expected an integer >= 1, got {commit_every!r}")
        if isinstance(commit_bytes, bool) or not isinstance(commit_bytes, int) or commit_bytes < 1:
            raise ValueError(
                f"commit_bytes: expected an integer number of bytes >= 1, got {commit_bytes!r}"
            )
        if not isinstance(prefix, str) or "-" in prefix or "/" in prefix or not prefix:
            raise ValueError(
                f"prefix: expected a non-empty name without '-' or '/', got {prefix!r}"
            )
        self.directory = Path(directory)
        _atomic.require_own_link(self.directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WriteError(
                str(self.directory), "expected a directory for shards, and cannot create one", err
            ) from err
        self.schema = schema
        self.prefix = prefix
        self.commit_every = commit_every
        self.commit_bytes = commit_bytes
        self.min_free = min_free
        self._space = _atomic.SpaceBudget(self.directory, min_free=min_free)
        self.sync_every_add = sync_every_add
        _liveness.check_lease(lease)
        self.lease = lease
        for k in file_attrs or {}:
            if k.startswith(names.RESERVED_PREFIX):
                raise ValueError(f"file_attrs: {k!r} uses the reserved prefix 'h5guard_'")
        self._file_attrs = _result.prepare_attrs(_FILE_KEY, dict(file_attrs or {}))
        self._pid = os.getpid()
        self._journal: _journal.JournalWriter | None = None
        self._stem = ""
        self._batch: dict[str, str] = {}  # key -> digest, in add() order
        # The batch's results as private copies, in add() order; None once over the
        # limit (the commit then reads the batch back from the journal).
        self._held: list[_result.PreparedResult] | None = []
        self._batch_bytes = 0
        self._keys: set[str] = set()
        self._closed = False
        self.committed: list[Path] = []
        # Seals of committed shards still being written (h5guard._shard.seal_later).
        self._sealing: list[Future[None]] = []
        self.committed_keys: list[str] = []
        # One writer may be shared by threads: every public method runs under this lock,
        # so each add() is journaled whole and in order (re-entrant: add() commits).
        self._lock = threading.RLock()
        _WRITERS.add(self)

    def __reduce__(self) -> NoReturn:
        raise WriterTransferError(
            f"ShardWriter({str(self.directory)!r}) cannot be sent to another process: "
            "create one ShardWriter in each worker (in the pool initializer or the task)"
        )

    # -- context manager -------------------------------------------------------
    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        # The block failed, but every result it added is independent and complete: keep
        # them, and let the block's own exception propagate.
        try:
            self.close()
        except Exception as err:
            log.error(
                "%s: committing after %s failed (%s); the results stay in %s for the next merge",
                self.directory,
                exc_type.__name__,
                err,
                self._journal.path if self._journal else "the journal",
            )

    # -- public API ------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Results added since the last commit (safe in the journal, not yet in a shard)."""
        with self._lock:
            self._own_process()
            return len(self._batch)

    def add(
        self,
        key: str,
        datasets: Mapping[str, Any],
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        """Add one result; when this returns, the result is safe (see the class docs).

        Parameters
        ----------
        key : str
            The result's group name, unique in this writer.
        datasets : mapping of str to array-like
            The result's datasets (nested mappings become subgroups).
        attrs : mapping of str to value, optional
            The result's attributes.

        Raises
        ------
        WriterClosedError
            The writer was closed (or discarded).
        DuplicateKeyError
            ``key`` was already added by this writer.
        SchemaError, InvalidKeyError, UnsupportedValueError
            The result is refused as it is; nothing was written.
        InsufficientSpaceError
            Not enough free space for the result; nothing was written.
        WriteError
            Journaling failed (or the journal was deleted, with its directory say);
            the result was not added.

        Notes
        -----
        Threads may share a writer: calls are serialised by a lock.
        """
        with self._lock:
            self._add(key, datasets, attrs)

    def _add(
        self,
        key: str,
        datasets: Mapping[str, Any],
        attrs: Mapping[str, Any] | None,
    ) -> None:
        self._own_process()
        if self._closed:
            raise WriterClosedError(f"{self.directory}: ShardWriter is closed")
        if key in self._keys:
            raise DuplicateKeyError(
                f"group key {key!r}: already added by this writer; a result is written once "
                "(use another key, or let the merge's on_conflict decide between recomputations)"
            )
        root = _result.checked_tree(key, datasets, attrs, schema=self.schema)
        nbytes = tree.nbytes(root)
        # A group costs its data plus a few KiB of headers, twice over (journal, shard),
        # plus room for HDF5's own allocations when the shard is closed.
        try:
            self._space.require(2 * nbytes + 64 * 1024)
        except InsufficientSpaceError as err:
            # Said only when refusing: where the batch waits costs an fstat to find out.
            raise InsufficientSpaceError(
                err.directory, err.needed, err.available, waiting=self._waiting()
            ) from None
        # A result that fills the batch is committed by this add(), from the caller's
        # arrays (which it cannot touch before add() returns). One that waits for a
        # later commit is held as a private copy, digested and journaled from that copy:
        # the caller may change or reuse its arrays as soon as add() returns. Past the
        # in-memory limit the commit reads the batch back from the journal instead.
        fills = (
            len(self._batch) + 1 >= self.commit_every
            or self._batch_bytes + nbytes >= self.commit_bytes
        )
        hold = (
            not fills and self._held is not None and self._batch_bytes + nbytes <= _IN_MEMORY_BATCH
        )
        if fills and nbytes >= _INTENT_MIN:
            self._add_committing(key, root, nbytes)
            return
        result = _result.digested(key, root, private=hold)
        header, buffers = _result.encode(result)
        if sum(b.nbytes for b in buffers) > _journal.MAX_PAYLOAD:
            raise ResultLimitError(
                f"group key {key!r}: {nbytes} bytes of values, above the "
                f"{_journal.MAX_PAYLOAD} bytes a result may hold; split it into several results"
            )
        self._journaled(key, lambda journal: journal.append(header, buffers))
        self._batch[key] = result.digest
        self._keys.add(key)
        self._batch_bytes += nbytes
        if not fills:
            if hold and self._held is not None:
                self._held.append(result)
            else:
                self._held = None
            return
        try:
            self._commit(last=result)
        except BaseException as err:
            # The result is safe in the journal, but not held (its arrays are the
            # caller's): the next commit reads the batch back from the journal.
            self._held = None
            if not isinstance(err, WriteError | InsufficientSpaceError):
                raise
            log.warning("%s; %d result(s) stay in the journal", err, len(self._batch))

    def _add_committing(self, key: str, root: tree.GroupNode, nbytes: int) -> None:
        """:meth:`add` of a big result that fills the batch: committed by this call.

        Its payload is not journaled (it would be written twice): the journal gets the
        record's frame and header only (an *intent*), which recovery reads as an add()
        that never returned, and the commit makes the result safe in its shard before
        add() returns. If the commit fails as a commit may (a full disk, an I/O error),
        the whole record is journaled instead, so the result is safe there; any other
        failure cuts the intent back and the add() raises, the result not added.
        """
        if nbytes > _journal.MAX_PAYLOAD:
            raise ResultLimitError(
                f"group key {key!r}: {nbytes} bytes of values, above the "
                f"{_journal.MAX_PAYLOAD} bytes a result may hold; split it into several results"
            )
        # Digested beside the shard's write (hashlib drops the GIL on big buffers); the
        # digest is awaited where the shard first needs it.
        result = _result.digesting(key, root)
        intent = json.dumps({"key": key, "intent": "commit"}, ensure_ascii=False).encode()
        journal = self._journaled(key, lambda j: j.intend(intent, nbytes))
        self._batch[key] = ""
        self._keys.add(key)
        self._batch_bytes += nbytes
        try:
            self._commit(last=result, intent=True)
        except BaseException as err:
            # The caller's arrays are not held: a later commit reads the batch back.
            self._held = None
            if isinstance(err, WriteError | InsufficientSpaceError):
                self._journal_instead(result, journal)
                log.warning("%s; %d result(s) stay in the journal", err, len(self._batch))
                return
            self._drop(key, nbytes, journal)
            raise

    def _journal_instead(
        self, result: _result.PreparedResult, journal: _journal.JournalWriter
    ) -> None:
        """The commit of a result journaled as an intent failed: journal it whole."""
        nbytes = result.nbytes
        try:
            header, buffers = _result.encode(result)
            journal.cut_back()
        except BaseException as err:
            self._drop(result.key, nbytes, journal)
            if isinstance(err, OSError):
                raise self._write_error(
                    f"journaling group {result.key!r} failed", err, journal.path
                ) from err
            raise
        if self._batch.pop(result.key, None) is not None:
            self._batch_bytes -= nbytes
        try:
            self._journaled(result.key, lambda j: j.append(header, buffers))
        except BaseException:
            self._keys.discard(result.key)
            raise
        self._batch[result.key] = result.digest
        self._batch_bytes += nbytes

    def _drop(self, key: str, nbytes: int, journal: _journal.JournalWriter) -> None:
        """Undo an add() whose intent is open: the journal ends at its last whole record."""
        if self._batch.pop(key, None) is not None:
            self._batch_bytes -= nbytes
        self._keys.discard(key)
        try:
            journal.cut_back()
        except OSError as err:
            # The journal is closed, ending in the intent (recovery: interrupted).
            log.error("%s; the %d result(s) before it stay in it", err, len(self._batch))

    def _journaled(
        self, key: str, write: Callable[[_journal.JournalWriter], None]
    ) -> _journal.JournalWriter:
        """Run ``write`` (one record, or an intent, of ``key``) on the batch's journal.

        A journal claimed by a merge meanwhile (this writer was taken for gone) is the
        merge's: the record goes into a new batch. One that lost its name (its directory
        was deleted) raises WriteError: nothing of the batch can reach a merge.
        """
        journal = self._open_batch()
        try:
            try:
                write(journal)
            except _journal.Claimed as claimed:
                # A merge took this batch for a dead writer's (this process was stopped
                # for longer than the lease): what it read is its to recover; this
                # record may not be in it, so it goes into a new batch.
                log.warning("%s; this writer starts a new batch", claimed)
                self._start_over()
                journal = self._open_batch()
                write(journal)
        except (OSError, _journal.Claimed) as err:
            raise self._write_error(f"journaling group {key!r} failed", err, journal.path) from err
        linked = journal.linked()  # one fstat per add(): a deleted journal is noticed here
        if not linked and journal.claim_marked():
            # A merge claimed, recovered and deleted the journal between two claim
            # checks: what it read is in its shard; this record goes into a new batch
            # too (a duplicate of the same digest if the merge had it already).
            log.warning("%s: claimed by a merge; this writer starts a new batch", journal.path)
            journal.close()
            self._start_over()
            journal = self._open_batch()
            try:
                write(journal)
            except (OSError, _journal.Claimed) as err:
                raise self._write_error(
                    f"journaling group {key!r} failed", err, journal.path
                ) from err
            linked = journal.linked()
        if not linked:
            # The bytes went into a file that no longer has a name (the directory was
            # deleted, say): nothing of this batch can reach a merge.
            if not self.directory.is_dir():
                # The free-space check trusts its last statvfs for a while, so this is
                # where a deleted directory is noticed; the batch stays, and its commit
                # says that it is lost.
                raise WriteError(
                    str(self.directory),
                    f"expected a directory to write into, found none; {self._waiting()}",
                    FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)),
                )
            gone = FileNotFoundError(errno.ENOENT, "the journal was deleted", str(journal.path))
            lost = len(self._batch)
            journal.close()
            self._journal = None
            self._batch, self._held, self._batch_bytes = {}, [], 0
            raise WriteError(
                str(journal.path),
                f"journaling group {key!r} failed: the journal no longer exists (was "
                f"{self.directory} deleted?); this result and the {lost} added since the "
                "last commit are lost",
                gone,
            ) from gone
        return journal

    def commit(self) -> Path | None:
        """Write the batch as a shard.

        Returns
        -------
        Path or None
            The new shard, or None if nothing was pending.

        Raises
        ------
        InsufficientSpaceError, WriteError
            The shard could not be written; the batch stays safe in its journal.
        """
        with self._lock:
            return self._commit()

    def _commit(
        self, last: _result.PreparedResult | None = None, *, intent: bool = False
    ) -> Path | None:
        """Write the batch as a shard; ``last``, its newest result, from the caller's arrays
        (``intent``: journaled as an intent only, see :meth:`_add_committing`)."""
        self._own_process()
        journal = self._journal
        if journal is None:
            return None
        if not self._batch:
            journal.remove()
            self._journal = None
            return None
        final = self.directory / f"{self._stem}{SHARD_SUFFIX}"
        keys = list(self._batch)
        tail = [] if last is None else [last]
        earlier = len(keys) - len(tail)
        held = self._held
        results: Iterable[_result.PreparedResult] = itertools.chain(
            held if held is not None else _read_back(journal, earlier), tail
        )
        if held is not None and len(held) != earlier:
            raise AssertionError(f"{len(held)} held results for a batch of {earlier}")
        try:
            write_shard(
                final,
                results,
                schema_json=self.schema.to_json() if self.schema is not None else None,
                file_attrs=self._file_attrs,
                data_bytes=self._batch_bytes,
                count=len(keys),
                waiting=self._waiting(),
                sealing=self._sealing,
            )
        except Exception as err:
            raise self._write_error("committing the batch failed", err, final) from err
        self._sealing = [f for f in self._sealing if not f.done()]
        # A merge that claimed the journal during the commit (this writer was taken for
        # gone) may have read it before the rename, the intent as an interrupted add(),
        # and may yet replace this shard with one written from the journal alone: the
        # intent's result is journaled again, whole, into a new batch.
        rejournal = last if intent and journal.claim_marked() else None
        journal.remove()
        self._journal = None
        self._batch = {}
        self._held = []
        self._batch_bytes = 0
        self.committed.append(final)
        self.committed_keys.extend(keys)
        log.debug("committed %d group(s) to %s", len(keys), final)
        if rejournal is not None:
            log.warning(
                "%s: claimed by a merge during the commit of %r; it is journaled again in "
                "a new batch",
                journal.path,
                rejournal.key,
            )
            header, buffers = _result.encode(rejournal)
            self._journaled(rejournal.key, lambda j: j.append(header, buffers))
            self._batch[rejournal.key] = rejournal.digest
            self._batch_bytes = rejournal.nbytes
            self._held = None
        return final

    def discard(self) -> None:
        """Throw the uncommitted batch away (journal included) and close the writer."""
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        self._own_process()
        if self._journal is not None:
            log.info(
                "discarding %d uncommitted result(s) of %s", len(self._batch), self._journal.path
            )
            self._journal.remove()
            self._journal = None
        for key in self._batch:
            self._keys.discard(key)
        self._batch = {}
        self._held = []
        self._batch_bytes = 0
        self._closed = True

    def close(self) -> None:
        """Commit what is pending and close the writer.

        Raises
        ------
        InsufficientSpaceError, WriteError
            The commit failed; the message says where the results wait.
        """
        with self._lock:
            self._close()

    def _close(self) -> None:
        self._own_process()
        if self._closed:
            return
        try:
            self._commit()
        finally:
            self._closed = True
            if self._journal is not None:
                # The commit failed: release the lock, so that a merge can recover it.
                self._journal.close()
            # Shards committed before their seal (big ones): sealed when close() returns.
            for sealing in self._sealing:
                sealing.result()
            self._sealing = []

    # -- internals -------------------------------------------------------------
    def _open_batch(self) -> _journal.JournalWriter:
        if self._journal is not None:
            return self._journal
        self._stem = new_shard_stem(self.prefix)
        header, buffers = _result.encode(self._file_attrs)
        meta = {
            "stem": self._stem,
            "schema": self.schema.to_json() if self.schema is not None else None,
            "file_attrs": header.decode("utf-8"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": __version__,
        }
        path = _journal.journal_of(self.directory / f"{self._stem}{SHARD_SUFFIX}")
        try:
            journal = _journal.JournalWriter(
                path, meta, buffers, fsync_each=self.sync_every_add, lease=self.lease
            )
            if self.sync_every_add:
                _atomic.fsync_dir(self.directory)
        except OSError as err:
            raise self._write_error("creating the batch journal failed", err, path) from err
        self._journal = journal
        return journal

    def _start_over(self) -> None:
        """The batch's journal was claimed by a merge: its results are the merge's now."""
        self._journal = None
        self._batch = {}
        self._held = []
        self._batch_bytes = 0

    def _own_process(self) -> None:
        if os.getpid() != self._pid:
            self._leave_parent_batch()

    def _leave_parent_batch(self) -> None:
        """This writer was inherited through a fork: the batch is the parent's."""
        if os.getpid() == self._pid:
            return
        log.info(
            "ShardWriter(%s) of process %d is used in process %d: starting a batch of its own",
            self.directory,
            self._pid,
            os.getpid(),
        )
        if self._journal is not None:
            self._journal.close()  # the parent's descriptor copy; the file is untouched
        self._pid = os.getpid()
        self._journal = None
        self._batch = {}
        self._held = []
        self._batch_bytes = 0
        self._keys = set()
        self.committed = []
        self.committed_keys = []
        self._sealing = []  # the parent's seals: its thread is not in this process

    def _waiting(self) -> str:
        """Where the batch waits, for an error's message ("" when nothing is pending)."""
        journal = self._journal
        if journal is None or not self._batch:
            return ""
        if not journal.linked():
            return (
                f"the journal {journal.path} no longer exists (was {self.directory} deleted?): "
                f"the {len(self._batch)} result(s) added since the last commit are lost"
            )
        return (
            f"{len(self._batch)} result(s) are safe in {journal.path}; "
            f"the next commit or `h5guard merge {self.directory}` writes them"
        )

    def _write_error(self, what: str, err: BaseException, path: Path) -> OSError:
        if isinstance(err, H5GuardError) and isinstance(err, OSError):
            return err
        waiting = self._waiting()
        if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "errno = 28," in str(err):
            try:
                free = _atomic.free_bytes(self.directory)
            except OSError:
                free = 0
            return InsufficientSpaceError(
                str(path), self._batch_bytes + self.min_free, free, waiting=waiting
            )
        if getattr(err, "errno", None) == errno.EROFS:
            what += "; the file system is read-only"
        return WriteError(str(path), what + (f"; {waiting}" if waiting else ""), err)


def _read_back(journal: _journal.JournalWriter, count: int) -> Iterable[_result.PreparedResult]:
    """The batch's first ``count`` results, read from the journal one at a time (each
    straight into its own arrays) and checked against their digests."""
    for index in range(count):
        yield journal.read_result(index)
