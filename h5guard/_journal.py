"""The writer's append-only journal: what makes a result safe the moment ``add()`` returns.

Why a journal: a result handed to ``ShardWriter.add`` has to survive whatever then
happens to the process (a pool that never calls ``close()``, SIGTERM, SIGKILL, a fork,
an exception). Exit hooks cover only clean shutdowns, and a signal can land inside a
libhdf5 call, so nothing that lives in the process can be relied on. Bytes that
``write(2)`` has accepted are in the kernel: they survive any death of the process
(not a power loss: that is bounded by the shard's fsync at commit). So ``add()`` appends
one self-checking record per result to ``<stem>.h5.journal`` and returns only when the
kernel holds all of it; the HDF5 shard is written from the journal at commit.

File layout::

    b"h5guard-journal/1\\n"
    record 0: the batch's meta (shard stem, schema, file attributes, who wrote it)
    record 1..n: one result each

    record = b"H5GR" | u32 header length | u64 payload length
             | u32 CRC-32 of the 16 bytes before it and the header | header | payload

The header and payload of a result are :func:`h5guard._format.result.encode`'s; decoding
recomputes the result's digest, so a record is either exactly what was added or
rejected. A record cut short (the writer died inside ``add()``, whose call then never
returned) ends the journal. A big result that its own ``add()`` commits is journaled as
such a record on purpose (:meth:`JournalWriter.intend`: its frame and a header naming
the key, no payload): the shard, not the journal, makes it safe before ``add()``
returns, and a writer that dies before that leaves it *interrupted*.

Liveness (:mod:`h5guard._liveness`): the meta record names the writer (host, boot id,
PID namespace, pid, start time), its lease and whether it holds a ``flock`` on the
journal (it takes one where the file system allows it); while the batch is open a
heartbeat thread refreshes the journal's mtime every lease / 4. A merge takes a journal
only from a writer it can show to be gone (:func:`claim`); it marks the journal claimed
before reading it, and the writer, which checks after every append, then writes the
record again into a new batch (:class:`Claimed`).

The module follows a journal through its life, one section each: writing
(:class:`JournalWriter`), reading (:func:`scan`, :func:`read_journal`), liveness
(:func:`claim`, :func:`writer_alive`, :func:`claim_journals`), recovery
(:func:`recover_journal`) and what ``check`` says about a journal it finds
(:func:`journal_finding`, :func:`partial_finding`). Decoding results needs h5py; the
functions that do import it when called, so that a quick check of a directory (which
lists journals) never loads it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from h5guard import _atomic, _liveness, _lock
from h5guard._format import seal as _seal
from h5guard.report import Code, Finding, Severity

if TYPE_CHECKING:
    from h5guard._format import result as _result

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".journal"
MAGIC = b"h5guard-journal/1\n"
_RECORD = b"H5GR"
_FRAME = struct.Struct("<4sIQ")  # magic, header length, payload length
_CRC = struct.Struct("<I")
# A header is JSON naming a result's members: a megabyte means a corrupted length.
_MAX_HEADER = 1 << 24


def journal_beside(partial_name: str) -> str | None:
    """The journal that speaks for a shard's ``.partial``.

    Parameters
    ----------
    partial_name : str
        A file name (or path) in a shard directory.

    Returns
    -------
    str or None
        The name of the journal of the batch being committed (or whose commit was cut
        short: the journal still holds its results), or None for a name that is no
        ``.partial``.
    """
    if not partial_name.endswith(_atomic.PARTIAL_SUFFIX):
        return None
    return partial_name.removesuffix(_atomic.PARTIAL_SUFFIX) + JOURNAL_SUFFIX


def journal_of(shard: Path) -> Path:
    """The journal of the batch that becomes ``shard`` (``<stem>.h5.journal``)."""
    return shard.with_name(shard.name + JOURNAL_SUFFIX)


# -- writing -------------------------------------------------------------------------


def _frame(header: bytes, payload_len: int) -> bytes:
    head = _FRAME.pack(_RECORD, len(header), payload_len)
    return head + _CRC.pack(zlib.crc32(header, zlib.crc32(head))) + header


# Records with a payload up to this size are written with one write(2).
_JOIN_LIMIT = 4096


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Claimed(Exception):
    """A merge claimed the journal while this record was being appended.

    The record is in the journal, but the merge may have read the journal before it:
    the writer writes the record again, into a new batch.
    """


class JournalWriter:
    """The open journal of one batch, locked (where the file system can) and kept fresh
    by the heartbeat while it is open.

    Parameters
    ----------
    path : Path
        The journal to create (it must not exist).
    meta : dict
        The batch's meta record; the writer's identity, lease and lock are added.
    meta_payload : sequence of memoryview
        The meta record's payload (the file attributes).
    fsync_each : bool
        fsync after every record.
    lease : float, optional
        The lease recorded for this batch (default ``$H5GUARD_LEASE`` or 300 s).
    """

    def __init__(
        self,
        path: Path,
        meta: dict[str, Any],
        meta_payload: Sequence[memoryview] = (),
        *,
        fsync_each: bool = False,
        lease: float | None = None,
    ) -> None:
        self.fd: int | None = None  # first: __del__ of a failed open must find it
        self.path = path
        self.fsync_each = fsync_each
        self.pid = os.getpid()
        self.lease = _liveness.default_lease() if lease is None else max(1.0, float(lease))
        # The claim check costs an fstat: done at most every check_interval seconds,
        # which is enough (see _liveness.Liveness.grace), and at the first append.
        self._check_every = _liveness.check_interval(self.lease)
        self._next_check = 0.0
        # Exclusive and never through a link: a name planted in a shared directory is
        # refused (FileExistsError), not followed.
        fd = _atomic.create_exclusive(path, read=True)
        try:
            # A new file nobody else has opened: True, or None where locks are refused.
            flocked = _lock.try_flock(fd, os.fspath(path)) is True
            meta = {**meta, **_liveness.header_fields(lease=self.lease, flocked=flocked)}
            header = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")
            _write_all(fd, MAGIC + _frame(header, sum(b.nbytes for b in meta_payload)))
            for buf in meta_payload:
                _write_all(fd, buf)
            if fsync_each:
                os.fsync(fd)
            _liveness.beat(fd, self.lease)
        except BaseException:
            _liveness.stop(fd)
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        self.fd = fd
        self.end = os.lseek(fd, 0, os.SEEK_CUR)
        # (offset of the header, header length, payload length) of each whole record
        self.records: list[tuple[int, int, int]] = []
        # Where the open intent (see intend) starts, while there is one.
        self._intent: int | None = None

    def append(self, header: bytes, buffers: Sequence[memoryview]) -> None:
        """Write one record; returns only when the kernel holds all of it.

        Parameters
        ----------
        header : bytes
            The record's header (a result's encoded description).
        buffers : sequence of memoryview
            Its payload, written in this order.

        Raises
        ------
        OSError
            The write failed. The journal is cut back to its last whole record first,
            so a later record never follows a torn one; if even that fails, the journal
            is closed and the error says so.
        Claimed
            The record is written, but a merge claimed the journal meanwhile (its
            writer was taken for gone: suspended for longer than the lease). The
            journal is closed; the caller writes the record again into a new batch.
        """
        fd = self._fd()
        if self._intent is not None:
            raise AssertionError(f"{self.path}: a record is appended after an open intent")
        start = self.end
        payload_len = sum(b.nbytes for b in buffers)
        if payload_len <= _JOIN_LIMIT:
            # A small record in one write(2): copying it costs less than the calls.
            self._write_at(fd, start, [b"".join([_frame(header, payload_len), *buffers])])
        else:
            self._write_at(fd, start, [_frame(header, payload_len), *buffers])
        offset = start + _FRAME.size + _CRC.size
        self.records.append((offset, len(header), payload_len))
        self.end = offset + len(header) + payload_len
        self._check_claim(fd)

    def intend(self, header: bytes, payload_len: int) -> None:
        """Write a record's frame and header only: an add() that commits its own result.

        The journal then ends in a record cut short, which is what recovery reads as an
        ``add()`` that never returned (*interrupted*, named by the header's key). The
        caller either commits the result to a shard and removes the journal, or ends the
        intent with :meth:`cut_back` (and may then :meth:`append` the whole record).

        Parameters
        ----------
        header : bytes
            A header naming the result's key (never decoded as a result).
        payload_len : int
            The payload length the frame claims (> 0: the record must stay cut short).

        Raises
        ------
        OSError, Claimed
            As :meth:`append` (after Claimed, the intent is in the claimed journal).
        """
        fd = self._fd()
        if payload_len <= 0 or self._intent is not None:
            raise AssertionError(f"{self.path}: an intent of {payload_len} payload bytes")
        start = self.end
        self._write_at(fd, start, [_frame(header, payload_len)])
        self._intent = start
        self._check_claim(fd)

    def cut_back(self) -> None:
        """End an open intent: the journal ends at its last whole record again.

        Raises
        ------
        OSError
            The journal could not be truncated; it is closed (recovery names the
            intent's result interrupted, and no record may follow it).
        """
        start, self._intent = self._intent, None
        if start is None or self.fd is None:
            return
        try:
            os.ftruncate(self.fd, start)
            os.lseek(self.fd, start, os.SEEK_SET)
            if self.fsync_each:
                os.fsync(self.fd)
        except OSError as err:
            self.close()
            raise OSError(
                err.errno, f"{self.path}: journal could not be cut back after a failed add"
            ) from err

    def _write_at(self, fd: int, start: int, parts: Sequence[bytes | memoryview]) -> None:
        """Write ``parts`` at the journal's end ``start``; on any failure cut back to it."""
        try:
            for part in parts:
                _write_all(fd, part)
            if self.fsync_each:
                os.fsync(fd)
        except BaseException:
            try:
                os.ftruncate(fd, start)
                os.lseek(fd, start, os.SEEK_SET)
            except OSError as err:
                # The journal now ends in a torn record; recovery stops there, which
                # is right for this record (its add() fails) but would hide any later
                # one, so the writer must not append again.
                self.close()
                raise OSError(
                    err.errno, f"{self.path}: journal could not be cut back after a failed write"
                ) from err
            raise

    def _check_claim(self, fd: int) -> None:
        now = time.monotonic()
        if now >= self._next_check and self._claimed(fd, now):
            # If that merge dies before it is done, the next one takes the journal
            # at once: this writer has let go of it.
            _liveness.release(fd)
            self._let_go()
            raise Claimed(f"{self.path}: claimed by a merge while its writer was adding")

    def _claimed(self, fd: int, now: float) -> bool:
        self._next_check = now + self._check_every
        return _liveness.was_claimed(fd)

    def read_result(self, index: int) -> _result.PreparedResult:
        """The ``index``-th result (0-based; the meta is not one), read straight into its
        own arrays and checked against its digest (:func:`read_result`)."""
        offset, hlen, plen = self.records[index]
        fd = self._fd()
        header = os.pread(fd, hlen, offset)
        if len(header) != hlen:
            raise OSError(errno.EIO, f"{self.path}: journal shrank while it was read")
        return read_result(fd, header, offset + hlen, plen)

    def claim_marked(self) -> bool:
        """Whether a merge marked this journal claimed (its records are the merge's)."""
        return self.fd is not None and _liveness.claim_marked(self.fd)

    def linked(self) -> bool:
        """Whether the journal still has a name (False once it, or its directory, was deleted)."""
        if self.fd is None:
            return False
        try:
            return os.fstat(self.fd).st_nlink > 0
        except OSError:
            return False

    def _fd(self) -> int:
        if self.fd is None:
            raise OSError(errno.EBADF, f"{self.path}: journal is closed")
        return self.fd

    def close(self) -> None:
        """Let go of the batch: the journal stays on disk for a merge to recover.

        Releases the lock, stops the heartbeat and marks the journal released, so a
        merge on any host takes it at once. In a process that inherited this writer
        through ``fork()`` it only closes the descriptor: the batch is the parent's.
        """
        if self.fd is not None:
            if os.getpid() == self.pid:
                _liveness.release(self.fd)
            self._let_go()

    def _let_go(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            if os.getpid() == self.pid:
                _liveness.stop(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        # A writer dropped without close() (a task's fresh globals, say) must not keep
        # its journal locked for the rest of the process's life: that would hide it
        # from recovery until the process exits.
        self.close()

    def remove(self) -> None:
        """Delete the journal (its results are committed) and release the lock."""
        if self.fd is not None and os.getpid() == self.pid:
            _liveness.stop(self.fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._let_go()


# -- reading -------------------------------------------------------------------------
# A payload longer than this is damage, whatever the file's size: ShardWriter.add()
# refuses a result above it (ResultLimitError), so no journal it wrote holds one.
MAX_PAYLOAD = 1 << 36  # 64 GiB
# Bytes read at a time while looking for the next record after damage.
_SEARCH_CHUNK = 1 << 20
_FRAME_SIZE = _FRAME.size + _CRC.size


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One whole record: its header, and where its payload is (read when needed)."""

    header: bytes
    offset: int  # of the payload in the file
    length: int  # of the payload


@dataclass(frozen=True, slots=True)
class JournalScan:
    """What a journal holds, read without trusting any of it (and never read whole)."""

    path: str
    meta: dict[str, Any] | None
    records: tuple[JournalRecord, ...]
    damage: tuple[str, ...] = ()  # damaged stretches, each named; later records still found
    # The file ends inside its last record: the writer died during that add(), whose
    # call therefore never returned. Anything else that stops the reading is damage.
    interrupted: bool = False
    meta_record: JournalRecord | None = None
    cut: bytes | None = None  # the header of the record the writer died writing

    @property
    def stem(self) -> str | None:
        stem = self.meta.get("stem") if self.meta else None
        return stem if isinstance(stem, str) else None


def _pread(fd: int, offset: int, size: int) -> bytes:
    """Up to ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
    parts: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, min(size, _SEARCH_CHUNK * 16), offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return b"".join(parts)


def _frame_at(fd: int, pos: int, size: int) -> tuple[int, int, bytes] | None:
    """``(header length, payload length, header)`` of a whole, CRC-valid frame at ``pos``."""
    frame = _pread(fd, pos, _FRAME_SIZE)
    if len(frame) < _FRAME_SIZE:
        return None
    magic, hlen, plen = _FRAME.unpack_from(frame)
    (crc,) = _CRC.unpack_from(frame, _FRAME.size)
    if magic != _RECORD or hlen > _MAX_HEADER or pos + _FRAME_SIZE + hlen > size:
        return None
    header = _pread(fd, pos + _FRAME_SIZE, hlen)
    if zlib.crc32(header, zlib.crc32(frame[: _FRAME.size])) != crc:
        return None
    return hlen, plen, header


def _next_frame(fd: int, start: int, size: int) -> int | None:
    """The offset of the next CRC-valid record frame at or after ``start``, if any.

    Streams the file (holes of a sparse file are skipped, not read).
    """
    pos = start
    while pos < size:
        try:
            pos = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left (or SEEK_DATA is not supported)
            if pos != start:
                return None
        chunk = _pread(fd, pos, _SEARCH_CHUNK + len(_RECORD) - 1)
        if not chunk:
            return None
        at = chunk.find(_RECORD)
        while at != -1:
            if _frame_at(fd, pos + at, size) is not None:
                return pos + at
            at = chunk.find(_RECORD, at + 1)
        pos += _SEARCH_CHUNK
    return None


def scan(path: str | os.PathLike[str]) -> JournalScan:
    """Every whole record of a journal, and every damaged stretch, in bounded memory.

    Records are framed by a magic and a CRC over the frame and header, so after
    damage (a bad CRC, no record where one should start, a length beyond the file or
    above :data:`MAX_PAYLOAD`) reading resumes at the next valid frame: one damaged
    record never hides the ones after it. Payloads are not read (see
    :func:`read_result`).

    Parameters
    ----------
    path : str or os.PathLike
        The journal.

    Returns
    -------
    JournalScan
        Its meta record, whole records and damage; a journal cut short or damaged is
        described, never raised.

    Raises
    ------
    OSError
        The file cannot be read (``FileNotFoundError`` once it was recovered).
    """
    name = os.fspath(path)
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    try:
        return _scan(fd, name)
    finally:
        os.close(fd)


def _scan(fd: int, name: str) -> JournalScan:
    size = os.fstat(fd).st_size
    head = _pread(fd, 0, len(MAGIC))
    if head != MAGIC:
        if MAGIC.startswith(head):  # the writer died while creating it: no add() returned
            return JournalScan(name, None, (), ("journal cut short in its magic",), True)
        return JournalScan(name, None, (), ("not an h5guard journal (no magic)",))
    records: list[JournalRecord] = []
    damage: list[str] = []
    interrupted = False
    cut: bytes | None = None
    pos = len(MAGIC)
    while pos < size:
        header: bytes | None = None
        frame = _frame_at(fd, pos, size)
        if frame is not None:
            hlen, plen, header = frame
            body = pos + _FRAME_SIZE + hlen
            if plen <= MAX_PAYLOAD and body + plen <= size:
                records.append(JournalRecord(header, body, plen))
                pos = body + plen
                continue
            if plen > MAX_PAYLOAD:
                ends, problem = (
                    False,
                    f"record at byte {pos} claims {plen} payload bytes, above the cap of {MAX_PAYLOAD}",
                )
            else:
                ends, problem = (
                    True,
                    f"record at byte {pos} claims {plen} payload bytes, more than the journal holds",
                )
        else:
            raw = _pread(fd, pos, _FRAME_SIZE)
            # The file may end inside a frame or a header that the writer was writing.
            ends = len(raw) < _FRAME_SIZE or (
                raw[:4] == _RECORD and pos + _FRAME_SIZE + _FRAME.unpack_from(raw)[1] > size
            )
            problem = f"no valid record at byte {pos} (bad magic, length or CRC)"
        nxt = _next_frame(fd, pos + 1, size)
        if nxt is None and ends:
            # Nothing valid follows: the end of the file is a record the writer died
            # writing (its add() never returned).
            interrupted, cut = True, header
            break
        damage.append(f"{problem}; bytes {pos} to {nxt if nxt is not None else size} skipped")
        if nxt is None:
            break
        pos = nxt
    if not records:
        # Not even the meta record is whole: the writer died while creating the journal,
        # before its first add() could return (or the journal is damaged from its start).
        return JournalScan(
            name, None, (), tuple(damage) or ("no meta record",), interrupted or not damage
        )
    # The meta record is the one right after the magic; if damage took it, every record
    # found is a result (its writer's schema and file attributes are then unknown).
    first = records[0]
    if first.offset != len(MAGIC) + _FRAME_SIZE + len(first.header):
        return JournalScan(name, None, tuple(records), tuple(damage), interrupted, None, cut)
    meta: Any = None
    try:
        meta = json.loads(first.header.decode("utf-8"))
    except ValueError:
        damage.insert(0, "meta record is not JSON")
    if meta is not None and not isinstance(meta, dict):
        damage.insert(0, "meta record is not a JSON object")
        meta = None
    return JournalScan(
        name, meta, tuple(records[1:]), tuple(damage), interrupted, first if meta else None, cut
    )


# Buffers per preadv call (Linux's IOV_MAX).
_IOV_MAX = 1024
# Bytes per pread where there is no preadv.
_READ_CHUNK = 16 * 1024 * 1024


def read_into(fd: int, buffers: Sequence[memoryview], offset: int) -> None:
    """Fill ``buffers`` (writable byte views), in order, from ``fd`` at ``offset``.

    The bytes go from the page cache straight into the buffers (``preadv``): no
    intermediate ``bytes``. Raises ``OSError(EIO)`` if the file ends first.
    """
    pending = [b for b in buffers if b.nbytes]
    preadv = getattr(os, "preadv", None)
    i = 0
    while i < len(pending):
        if preadv is not None:
            n = preadv(fd, pending[i : i + _IOV_MAX], offset)
        else:
            chunk = os.pread(fd, min(pending[i].nbytes, _READ_CHUNK), offset)
            n = len(chunk)
            pending[i][:n] = chunk
        if n <= 0:
            raise OSError(errno.EIO, "journal shrank while it was read")
        offset += n
        while n and i < len(pending):
            if n >= pending[i].nbytes:
                n -= pending[i].nbytes
                i += 1
            else:
                pending[i] = pending[i][n:]
                n = 0


def read_result(fd: int, header: bytes, offset: int, length: int) -> _result.PreparedResult:
    """The result of a record whose ``header`` was read and whose payload of ``length``
    bytes is at ``offset`` of ``fd``: decoded, read into its arrays, digest checked.

    Raises
    ------
    h5guard._format.result.DecodeError
        The record is not the result it claims.
    OSError
        Reading failed, or the journal ends inside the payload.
    """
    from h5guard._format import result as _result

    pending = _result.PendingRecord(header, length)
    read_into(fd, pending.buffers(), offset)
    return pending.finish()


def record_key(header: bytes) -> str | None:
    """The key a record's header claims, even when its payload is cut short."""
    try:
        key = json.loads(header.decode("utf-8")).get("key")
    except (ValueError, AttributeError):
        return None
    return key if isinstance(key, str) else None


@dataclass(frozen=True, slots=True)
class JournalState:
    """What the journal of a writer that is gone holds, verified record by record."""

    path: str
    shard: str  # the shard its batch becomes (or already became)
    schema_json: str | None
    results: tuple[tuple[str, str], ...]  # (key, digest) of each whole, verified record
    interrupted: str | None  # a result whose add() was cut short by the writer's death
    lost: tuple[str, ...]  # why results that were (or may have been) added cannot be read
    committed: bool  # its shard holds every result: the writer died before cleanup
    file_attrs: _result.PreparedResult | None = None  # the writer's file_attrs
    # Why the journal cannot be recovered as it is (it names a shard that is not its
    # own): the merge quarantines it, check reports it.
    refused: tuple[str, ...] = ()
    data_bytes: int = 0  # payload bytes of its whole records

    @property
    def groups(self) -> dict[str, str | None]:
        return dict(self.results)


class JournalResults:
    """A journal's verified results, decoded from the file one at a time when iterated.

    Memory stays bounded by the largest result, whatever the journal's size.
    """

    def __init__(self, path: str, records: Sequence[JournalRecord]) -> None:
        self.path = path
        self.records = tuple(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> _result.PreparedResult:
        return next(
            self._decoded(
                self.records[index : index + 1] if index >= 0 else self.records[index:][:1]
            )
        )

    def __iter__(self) -> Iterator[_result.PreparedResult]:
        return self._decoded(self.records)

    def _decoded(self, records: Sequence[JournalRecord]) -> Iterator[_result.PreparedResult]:
        from h5guard._format import result as _result

        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        try:
            for record in records:
                try:
                    yield read_result(fd, record.header, record.offset, record.length)
                except _result.DecodeError as err:
                    # It decoded when the journal was read, under its lock: the file was
                    # changed since, by someone who does not respect the lock.
                    raise OSError(
                        errno.EIO, f"journal changed while it was recovered: {err}", self.path
                    ) from err
        finally:
            os.close(fd)


def _shard_name_ok(stem: str) -> bool:
    return bool(stem) and "/" not in stem and "\0" not in stem and stem not in (".", "..")


def _shard_index(path: str) -> dict[str, str] | None:
    """The key -> digest index of a sealed shard (None if it has none or is unreadable)."""
    import h5py

    from h5guard._format import names, reader

    try:
        with h5py.File(path, "r", locking=False) as f:
            text = reader.text_attr(f, names.INDEX_ATTR)
        index = json.loads(text) if text else None
    except Exception:
        return None
    return index if isinstance(index, dict) else None


def read_journal(path: str | os.PathLike[str]) -> tuple[JournalState, JournalResults]:
    """Decode and verify every record of a journal (of a writer known to be gone).

    Parameters
    ----------
    path : str or os.PathLike
        The journal.

    Returns
    -------
    JournalState
        What it holds, and what of it is lost or was cut short.
    JournalResults
        Its verified results, in the order added, decoded again when iterated (one at
        a time: memory stays bounded).

    Raises
    ------
    FileNotFoundError
        The journal is gone (recovered or removed meanwhile).

    Notes
    -----
    The shard a journal becomes is named by the journal's own file name
    (``<stem>.h5.journal`` -> ``<stem>.h5``). A journal whose meta record names another
    shard (or an impossible name) is *refused*, to be quarantined: it is not what its
    writer wrote. A journal whose shard exists is taken as committed only if that
    sealed shard holds every one of its results with the same digest; otherwise its
    results are recovered into a shard of a new name, never dropped.
    """
    from h5guard import _shard
    from h5guard._format import result as _result  # h5py: only once results are decoded

    name = os.fspath(path)
    own = Path(name).name.removesuffix(JOURNAL_SUFFIX)
    if not own.endswith(_shard.SHARD_SUFFIX):
        own += _shard.SHARD_SUFFIX
    shard = str(Path(name).with_name(own))
    if os.path.islink(name):
        # Never read through a link: whatever it points to is not a writer's journal.
        why = (
            f"{name}:/: SYMBOLIC_LINK a symbolic link to {os.readlink(name)!r}, not a journal; "
            "quarantined unread"
        )
        empty = JournalState(name, shard, None, (), None, (), False, refused=(why,))
        return empty, JournalResults(name, ())
    scanned = scan(path)
    refused: list[str] = []
    recorded = scanned.meta.get("stem") if scanned.meta else None
    if scanned.meta is not None and recorded is not None:
        if not isinstance(recorded, str) or not _shard_name_ok(recorded):
            refused.append(
                f"{name}:/: JOURNAL_FILE records an impossible shard name {recorded!r}; "
                "quarantined unrecovered (h5guard never writes one)"
            )
        elif f"{recorded}{_shard.SHARD_SUFFIX}" != own:
            refused.append(
                f"{name}:/: JOURNAL_FILE records the shard name {recorded + _shard.SHARD_SUFFIX!r}, "
                f"not its own {own!r}; quarantined unrecovered (it is not what a writer left)"
            )
    meta = scanned.meta or {}
    schema_json = meta.get("schema") if isinstance(meta.get("schema"), str) else None
    results: list[tuple[str, str]] = []
    good: list[JournalRecord] = []
    lost: list[str] = []
    interrupted: str | None = None
    if scanned.meta is None and not scanned.records:
        if not scanned.interrupted:
            lost.append(f"{name}: {'; '.join(scanned.damage)}; any result it held is lost")
    else:
        lost.extend(f"{name}: {what}; any result recorded there is lost" for what in scanned.damage)
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    try:
        for i, record in enumerate(scanned.records):
            try:
                result = read_result(fd, record.header, record.offset, record.length)
            except _result.DecodeError as err:
                lost.append(f"{name}: record {i + 1}: {err}")
                continue
            results.append((result.key, result.digest))
            good.append(record)
            del result
        file_attrs = _file_attrs_of(scanned, fd)
    finally:
        os.close(fd)
    if scanned.interrupted and scanned.cut is not None:
        interrupted = record_key(scanned.cut) or "(unknown key)"
    committed = False
    if os.path.lexists(shard) and results:
        committed = _holds_all(shard, results)
        if not committed:
            # Its shard name is taken by a file that does not hold all of its results:
            # recover them under a new name, so that nothing is dropped or replaced (a
            # re-run after a crash picks the same name, and finds it committed).
            fresh = f"{own.removesuffix(_shard.SHARD_SUFFIX)}.recovered-{_token(name)}"
            shard = str(Path(name).with_name(fresh + _shard.SHARD_SUFFIX))
            committed = os.path.lexists(shard) and _holds_all(shard, results)
    state = JournalState(
        path=name,
        shard=shard,
        schema_json=schema_json,
        results=tuple(results),
        interrupted=interrupted,
        lost=tuple(lost),
        committed=committed,
        file_attrs=file_attrs,
        refused=tuple(refused),
        data_bytes=sum(r.length for r in good),
    )
    return state, JournalResults(name, good)


def _holds_all(shard: str, results: Sequence[tuple[str, str]]) -> bool:
    """Whether ``shard`` is a sealed shard holding every ``(key, digest)`` of ``results``."""
    if os.path.islink(shard) or _seal.check_seal(shard) is not True:
        return False
    index = _shard_index(shard)
    return index is not None and all(index.get(k) == d for k, d in results)


def _token(path: str) -> str:
    """A short name part that is the same for the same journal (so a re-run agrees)."""
    st = os.lstat(path)
    return zlib.crc32(f"{st.st_dev}:{st.st_ino}:{st.st_size}".encode()).to_bytes(4, "big").hex()


_MAX_META_PAYLOAD = 1 << 30


def _file_attrs_of(scanned: JournalScan, fd: int) -> _result.PreparedResult | None:
    from h5guard._format import result as _result

    header = scanned.meta.get("file_attrs") if scanned.meta else None
    record = scanned.meta_record
    if not isinstance(header, str) or record is None:
        return None
    try:
        if record.length > _MAX_META_PAYLOAD:
            raise _result.DecodeError(f"{record.length} bytes of file attributes")
        return read_result(fd, header.encode("utf-8"), record.offset, record.length)
    except (_result.DecodeError, OSError) as err:
        log.warning(
            "%s: file attributes unreadable (%s); the shard is written without them",
            scanned.path,
            err,
        )
        return None


# -- liveness ------------------------------------------------------------------------
def _read_meta(fd: int) -> dict[str, Any] | None:
    """The meta record of an open journal (its header only), or None if unreadable."""
    head_size = len(MAGIC) + _FRAME.size + _CRC.size
    head = os.pread(fd, head_size, 0)
    if len(head) < head_size or not head.startswith(MAGIC):
        return None
    magic, hlen, _ = _FRAME.unpack_from(head, len(MAGIC))
    if magic != _RECORD or hlen > _MAX_HEADER:
        return None
    header = os.pread(fd, hlen, head_size)
    (crc,) = _CRC.unpack_from(head, len(MAGIC) + _FRAME.size)
    if (
        len(header) < hlen
        or zlib.crc32(header, zlib.crc32(head[len(MAGIC) : len(MAGIC) + _FRAME.size])) != crc
    ):
        return None
    try:
        meta = json.loads(header.decode("utf-8"))
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


_PROBES = {
    True: _liveness.LockProbe.FREE,
    False: _liveness.LockProbe.HELD,
    None: _liveness.LockProbe.UNSUPPORTED,
}


@contextlib.contextmanager
def claim(
    path: str | os.PathLike[str],
    *,
    gone: _liveness.GoneWriters | None = None,
    lease: float | None = None,
    mark: bool = False,
) -> Iterator[_liveness.Liveness | None]:
    """Judge a journal's writer; if it is gone, hold the journal for the block.

    The journal's ``flock`` is tried on an open descriptor (where the file system has
    locks) and the path checked again: another recoverer may have finished and removed
    the journal in between, and the lock would then be on a deleted file. Then the
    evidence (the header's identity and lease, the mtime, the lock) is weighed by
    :func:`h5guard._liveness.judge_journal`.

    Parameters
    ----------
    path : str or os.PathLike
        The journal.
    gone : GoneWriters, optional
        Writers declared gone by the user or the engine.
    lease : float, optional
        Lengthens the writer's recorded lease (never shortens it).
    mark : bool
        When the writer is gone, mark the journal claimed before the caller reads it
        (a merge does; ``status`` and ``check`` change nothing).

    Yields
    ------
    Liveness or None
        The verdict and its reason; None if the journal is gone. While the block runs
        a gone writer's journal stays locked (where locks exist).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        yield None
        return
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        yield None  # a link planted under a journal's name is never read through
        return
    try:
        probe = _PROBES[_lock.try_flock(fd, os.fspath(path))]
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            yield None
            return
        verdict = _liveness.judge_journal(
            _read_meta(fd), os.fstat(fd).st_mtime, probe, gone=gone, lease=lease
        )
        if verdict.gone and mark:
            _liveness.mark_claimed(fd)
        yield verdict
    finally:
        os.close(fd)


def writer_alive(path: str | os.PathLike[str]) -> bool:
    """Whether the journal's writer may still be writing it (it cannot be shown gone).

    Parameters
    ----------
    path : str or os.PathLike
        The journal.

    Returns
    -------
    bool
        True while its writer runs or cannot be shown gone (:mod:`h5guard._liveness`);
        False once it is gone (or the journal was removed).
    """
    with claim(path) as verdict:
        return verdict is not None and not verdict.gone


@dataclass(frozen=True, slots=True)
class PendingJournal:
    """A journal whose writer cannot be shown gone: its results are pending.

    Attributes
    ----------
    path : str
        The journal.
    keys : tuple of str
        The keys of its whole records (results whose ``add()`` returned).
    writer : str
        Who writes it and where (``pid 4242 on node17, started at tick ...``).
    reason : str
        Why it cannot be taken, and what would settle it.
    alive : bool
        The writer is shown to run (rather than unknown).
    """

    path: str
    keys: tuple[str, ...]
    writer: str
    reason: str
    alive: bool

    def describe(self) -> str:
        """One line: how many results, where, who, why."""
        return f"{len(self.keys)} result(s) in {self.path}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ClaimedJournals:
    """The journals of writers that are gone, read under their claims, and the rest."""

    states: list[JournalState]
    results: dict[str, JournalResults]  # journal path -> its results
    live: list[str]  # journals whose writer may still be running
    pending: list[PendingJournal]  # the same, with what they hold and why


def _pending(path: str, verdict: _liveness.Liveness) -> PendingJournal | None:
    try:
        scanned = scan(path)
    except FileNotFoundError:
        return None
    keys = tuple(k for k in (record_key(r.header) for r in scanned.records) if k is not None)
    writer = _liveness.recorded_writer(scanned.meta)
    return PendingJournal(
        path=path,
        keys=keys,
        writer=writer.describe() if writer is not None else "an unknown writer",
        reason=verdict.reason,
        alive=verdict.verdict is _liveness.Verdict.ALIVE,
    )


def claim_journals(
    paths: Sequence[str],
    stack: contextlib.ExitStack,
    *,
    gone: _liveness.GoneWriters | None = None,
    lease: float | None = None,
    mark: bool = False,
) -> ClaimedJournals:
    """Claim and read every journal of ``paths`` whose writer is shown gone.

    Parameters
    ----------
    paths : sequence of str
        Journals found in a shard directory.
    stack : contextlib.ExitStack
        Holds each claimed journal until it closes: nobody else recovers the journal
        meanwhile, and its writer cannot come back (a journal is never reopened).
    gone : GoneWriters, optional
        Writers declared gone by the user or the engine.
    lease : float, optional
        Lengthens the writers' recorded leases.
    mark : bool
        Mark claimed journals (the merge, which then recovers them).

    Returns
    -------
    ClaimedJournals
        The claimed journals' states and results, and the journals whose writer
        cannot be shown gone (pending), with what they hold.
    """
    states: list[JournalState] = []
    results: dict[str, JournalResults] = {}
    live: list[str] = []
    pending: list[PendingJournal] = []
    taken: list[str] = []
    wait = 0.0
    for path in paths:
        verdict = stack.enter_context(claim(path, gone=gone, lease=lease, mark=mark))
        if verdict is None:
            continue
        if not verdict.gone:
            found = _pending(path, verdict)
            if found is not None:
                live.append(path)
                pending.append(found)
            continue
        taken.append(path)
        wait = max(wait, verdict.grace)
    if mark and wait > 0:
        # A writer taken for gone on another machine's word or its silence may still
        # run: it checks for the mark at least every wait / 2 s, so anything it
        # appends after the reading below, it sees claimed and writes again elsewhere.
        log.info("waiting %.1f s before reading journals claimed from live-looking writers", wait)
        time.sleep(wait)
    for path in taken:
        state, decoded = read_journal(path)
        states.append(state)
        results[path] = decoded
    return ClaimedJournals(states, results, live, pending)


# -- recovery ------------------------------------------------------------------------
def recover_journal(state: JournalState, results: Iterable[_result.PreparedResult]) -> None:
    """Turn a gone writer's journal into its shard, then delete the journal.

    Parameters
    ----------
    state : JournalState
        The journal, as :func:`read_journal` found it.
    results : iterable of PreparedResult
        Its results, as :func:`read_journal` decoded them.

    Notes
    -----
    The caller holds the journal's lock (:func:`claim`). The shard is written exactly
    as the writer's own commit writes it (:func:`h5guard._shard.write_shard`).
    """
    from h5guard import _shard  # h5py: only when a journal is recovered

    final = Path(state.shard)
    if not state.committed and state.results:
        _shard.write_shard(
            final,
            results,
            schema_json=state.schema_json,
            file_attrs=state.file_attrs,
            data_bytes=state.data_bytes,
            count=len(state.results),
            waiting=(
                f"its {len(state.results)} result(s) stay in {state.path}; "
                "free space and run the merge again"
            ),
        )
        log.info("recovered %d result(s) from %s into %s", len(state.results), state.path, final)
    _atomic.remove_quietly(final.with_name(final.name + _atomic.PARTIAL_SUFFIX))
    _atomic.remove_quietly(state.path)
    _atomic.fsync_dir(final.parent)


# -- what check says about a journal (or a partial) it finds --------------------------
def journal_finding(path: str) -> Finding:
    """What a shard journal in a checked directory means for its results.

    Parameters
    ----------
    path : str
        The journal.

    Returns
    -------
    Finding
        ``JOURNAL_FILE``: a running writer's journal is its open batch (info). A gone
        writer's journal holds results no shard has yet: ``h5guard merge`` recovers them
        (warning); any record it cannot read is a lost result (error). One whose shard
        was committed is leftover (info).
    """

    def finding(severity: Severity, message: str) -> Finding:
        return Finding(path, "/", Code.JOURNAL_FILE, severity, message)

    with claim(path) as verdict:
        if verdict is not None and verdict.verdict is _liveness.Verdict.ALIVE:
            return finding(Severity.INFO, f"open batch of a running writer ({verdict.reason})")
        if verdict is not None and not verdict.gone:
            return finding(
                Severity.INFO, f"open batch of a writer that cannot be shown gone: {verdict.reason}"
            )
    try:
        state, _ = read_journal(path)
    except FileNotFoundError:
        return finding(Severity.INFO, "journal removed while checking (merged meanwhile?)")
    held = f"{len(state.results)} result(s)"
    if state.refused:
        return finding(
            Severity.ERROR,
            f"{'; '.join(state.refused)}; `h5guard merge` quarantines it ({held} in it)",
        )
    cut = (
        f"; one add() of {state.interrupted!r} was cut short and never returned"
        if state.interrupted
        else ""
    )
    if state.lost:
        return finding(
            Severity.ERROR,
            f"journal of a writer that is gone, damaged: {'; '.join(state.lost)}; "
            f"`h5guard merge` recovers the {held} it can read and lists the loss{cut}",
        )
    if state.committed:
        return finding(
            Severity.INFO,
            f"journal left after its shard was committed ({held}); `h5guard merge` removes it",
        )
    if not state.results:
        return finding(Severity.INFO, f"journal of a writer that is gone, holding no result{cut}")
    return finding(
        Severity.WARNING,
        f"journal of a writer that is gone: {held} not yet in a shard; "
        f"`h5guard merge` recovers them{cut}",
    )


def partial_finding(path: str) -> Finding:
    """What a shard's ``.partial`` that no journal speaks for means (``PARTIAL_FILE``).

    Parameters
    ----------
    path : str
        The partial file.

    Returns
    -------
    Finding
        Whether its writer still runs, is gone (the batch was lost in a crash), or
        cannot be identified (another host).
    """
    alive = _atomic.partial_owner_alive(path)
    if alive:
        state = "its writer is still running"
    elif alive is None:
        state = "its writer cannot be identified"
    else:
        state = "its writer is gone: an uncommitted batch that was lost in a crash"
    return Finding(
        path, "/", Code.PARTIAL_FILE, Severity.WARNING, f"uncommitted partial file; {state}"
    )
