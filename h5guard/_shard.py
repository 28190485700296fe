"""A committed shard: its name and how a batch of results becomes one.

Both ends of a batch's life write the same file in the same way: the writer at commit
(:mod:`h5guard._writer`) and the merge's recovery of a gone writer's journal
(:func:`h5guard._journal.recover_journal`). So the writing lives here, below both, and
neither the journal module nor the merge imports the writer.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import itertools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path

import h5py
import numpy as np

from h5guard import _atomic, _background
from h5guard._format import names, write
from h5guard._format import result as _result
from h5guard._format import seal as _seal
from h5guard._format import summary as _summary
from h5guard._version import __version__
from h5guard.errors import InsufficientSpaceError

log = logging.getLogger(__name__)

SHARD_SUFFIX = ".h5"


def new_shard_stem(prefix: str) -> str:
    """A new batch's name, unique across hosts and restarts.

    Parameters
    ----------
    prefix : str
        The writer's prefix (no ``-`` or ``/``).

    Returns
    -------
    str
        ``prefix-YYYYmmddTHHMMSS-host-pid-random``; the host and pid let a stale
        ``.partial`` be recognised (:func:`h5guard._atomic.partial_owner_alive`).
    """
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{prefix}-{stamp}-{_atomic.writer_tag()}-{uuid.uuid4().hex[:8]}"


# A shard up to this size is built in memory (libhdf5's core driver) and written with
# plain os.write calls into blocks reserved first: libhdf5 never meets the disk. A bigger
# one is written by libhdf5 into a partial whose blocks were reserved for an estimate.
IN_MEMORY_SHARD = 64 * 1024 * 1024
# HDF5's own bytes per result (object headers, links, attribute messages), generously.
_OVERHEAD_PER_RESULT = 8 * 1024
_OVERHEAD = 1024 * 1024


def estimate_size(data_bytes: int, count: int) -> int:
    """Bytes a shard of ``count`` results holding ``data_bytes`` of values may take.

    Parameters
    ----------
    data_bytes : int
        The values' bytes (:attr:`h5guard._result.PreparedResult.nbytes`, summed).
    count : int
        Results in the batch.

    Returns
    -------
    int
        An upper bound for the file h5guard's layout writes (values are stored
        contiguously or compactly, uncompressed).
    """
    return data_bytes + data_bytes // 8 + count * _OVERHEAD_PER_RESULT + _OVERHEAD


_images = itertools.count()


def _start(
    f: h5py.File, schema_json: str | None, file_attrs: _result.PreparedResult | None
) -> None:
    f.attrs[names.FORMAT_ATTR] = np.bytes_(names.SHARD_FORMAT.encode())
    f.attrs[names.VERSION_ATTR] = np.bytes_(__version__.encode())
    if schema_json is not None:
        f.attrs[names.SCHEMA_ATTR] = np.bytes_(schema_json.encode())
    if file_attrs is not None:
        _result.write_root_attrs(f, file_attrs)


def _finish(f: h5py.File, results: Iterable[_result.PreparedResult]) -> dict[str, str]:
    index: dict[str, str] = {}
    table = _summary.Builder()  # the scalars of every result, for to_dataframe
    for result in results:
        # The row is added once the group is written: a digest still being computed
        # (_result.digesting) is awaited only after the data, by the digest attribute.
        _result.write(f, result)
        table.add_tree(result.key, result.digest, result.root)
        index[result.key] = result.digest
    # The index lets a merge plan from one attribute instead of one per group.
    text = json.dumps(index, sort_keys=True, ensure_ascii=False)
    write.write_attr(f, names.INDEX_ATTR, np.array(text.encode(), dtype=np.bytes_))
    _summary.write_table(f, table.table())
    return index


def _memory_file() -> h5py.File:
    """A new HDF5 file that lives in memory only, with the shard's user block."""
    # The name is a label only, but libhdf5 tries to open it once: a path nobody can
    # create (so nothing planted is ever opened), ending like the partial it becomes.
    return h5py.File(
        f"/proc/self/fdinfo/h5guard-image-{os.getpid()}-{next(_images)}{_atomic.PARTIAL_SUFFIX}",
        "w",
        driver="core",
        backing_store=False,
        libver=names.LIBVER,
        locking=False,
        userblock_size=_seal.SEAL_SIZE,
    )


def _image(f: h5py.File) -> bytearray:
    """The file's bytes, user block included (libhdf5's image leaves the user block out)."""
    f.flush()
    image = bytearray(_seal.SEAL_SIZE)
    image += f.id.get_file_image()
    return image


def _early_fsync(fd: int) -> None:
    # An error here is met again by the commit's own fsync, which reports it.
    with contextlib.suppress(OSError):
        os.fsync(fd)


@contextlib.contextmanager
def _written_back(fd: int) -> Iterator[None]:
    """Flush ``fd`` to disk, over and over in a thread, while the block writes into it.

    The commit's fsync then writes only what came last: the disk takes a big shard's
    data while libhdf5 still writes it, instead of after (100 MB: 0.04 s of fsync that
    add() no longer waits for). Errors are left to the commit's own fsync.
    """
    done = threading.Event()

    def flush() -> None:
        while not done.is_set():
            started = time.monotonic()
            try:
                os.fdatasync(fd)
            except OSError:
                return
            if time.monotonic() - started < 0.005:
                done.wait(0.01)  # little was dirty: do not spin

    thread = threading.Thread(target=flush, name="h5guard-writeback", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def write_shard(
    final: Path,
    results: Iterable[_result.PreparedResult],
    *,
    schema_json: str | None,
    file_attrs: _result.PreparedResult | None,
    data_bytes: int = 0,
    count: int = 0,
    waiting: str = "",
    sealing: list[Future[None]] | None = None,
) -> dict[str, str]:
    """Write ``results`` as the sealed shard ``final``, through ``final.partial``.

    The partial is created exclusively (a file or a symbolic link left under its name
    is removed first, never followed), its blocks are reserved before anything is
    written into it, and a shard of up to :data:`IN_MEMORY_SHARD` is built in memory
    and written with plain ``write`` calls: a full disk is an
    :class:`~h5guard.errors.InsufficientSpaceError`, never an error inside libhdf5.

    Parameters
    ----------
    final : Path
        The shard's final name.
    results : iterable of PreparedResult
        The batch, in the order it was added.
    schema_json : str or None
        The writer's schema, embedded in the shard.
    file_attrs : PreparedResult or None
        The writer's worker-level attributes, stored at the shard's root.
    data_bytes, count : int
        The batch's value bytes and results, for the size estimate.
    waiting : str
        Where the results wait if writing fails, for the message.
    sealing : list of Future, optional
        Given, a shard written on disk (above :data:`IN_MEMORY_SHARD`) is committed
        first and sealed just after, in a background thread (:func:`seal_later`); its
        future is appended here. Without, the shard is sealed before its commit.

    Returns
    -------
    dict of str to str
        The shard's index: key -> digest.

    Raises
    ------
    InsufficientSpaceError
        The file system cannot hold the shard; nothing is left under either name.
    Exception
        Whatever else writing raised; nothing is then left under either name, and the
        caller's journal still holds the results.
    """
    partial = final.with_name(final.name + _atomic.PARTIAL_SUFFIX)
    name = os.fspath(partial)
    estimate = estimate_size(data_bytes, count)
    _atomic.clear_own_name(partial)
    fd = _atomic.create_exclusive(partial, read=True)
    f: h5py.File | None = None
    try:
        if estimate <= IN_MEMORY_SHARD:
            f = _memory_file()
            _start(f, schema_json, file_attrs)
            index = _finish(f, results)
            image = _image(f)
            f.close()
            f = None
            _seal.seal_image(image)
            _atomic.reserve(fd, len(image), path=name, waiting=waiting)
            _atomic.write_fd(fd, image)
        else:
            f = _memory_file()
            _start(f, schema_json, file_attrs)
            image = _image(f)
            f.close()
            f = None
            _atomic.reserve(fd, len(image) + estimate, path=name, waiting=waiting)
            _atomic.write_fd(fd, image)
            # libhdf5 opens the name again: check that it is still the file created above.
            f = h5py.File(name, "r+", libver=names.LIBVER, locking=False)
            if not os.path.samestat(os.fstat(f.id.get_vfd_handle()), os.fstat(fd)):
                raise OSError(errno.EEXIST, "replaced while it was being written", name)
            with _written_back(fd):
                index = _finish(f, results)
                f.close()  # truncates the file to what HDF5 used of the reservation
                f = None
            if sealing is None:
                # Writeback of the data starts now, while the seal hashes the file (both
                # wait outside the GIL); the commit's fsync then has only the seal to
                # flush.
                syncing = threading.Thread(target=_early_fsync, args=(fd,), daemon=True)
                syncing.start()
                try:
                    _seal.write_seal(name)
                finally:
                    syncing.join()
            else:
                _atomic.commit_file(partial, final)
                sealing.append(seal_later(fd, os.fspath(final)))
                return index
    except BaseException as err:
        if f is not None:
            with contextlib.suppress(Exception):
                f.close()
        os.close(fd)
        _atomic.remove_quietly(partial)
        full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
        if full and not isinstance(err, InsufficientSpaceError):
            raise InsufficientSpaceError(
                name, estimate, _atomic.free_bytes(final.parent), waiting=waiting
            ) from err
        raise
    os.close(fd)
    _atomic.commit_file(partial, final)
    return index


# -- sealing after the commit ------------------------------------------------------------
# A big shard is committed first and sealed right after, here: its add() returns without
# waiting for a hash of every byte of the file, which runs while the caller computes its
# next result. The seal only lets a later check or merge trust the file without libhdf5
# (h5guard._format.seal): until it is written the shard is a valid shard without one,
# checked the slow way, and the bytes it covers, [512, size), do not change any more.
def seal_later(fd: int, name: str) -> Future[None]:
    """Seal the committed shard open as ``fd`` in the background; the future closes ``fd``.

    Once the interpreter is shutting down (a ``close()`` from an ``atexit`` handler) no
    thread may start: the shard is sealed here instead (h5guard._background). The shard
    is committed either way, so this must not fail the commit.
    """
    return _background.submit("seal", _seal_and_close, fd, name)


def _seal_and_close(fd: int, name: str) -> None:
    try:
        _seal.write_seal_fd(fd)
    except OSError as err:  # a full disk cannot refuse a pwrite inside the file's blocks
        log.info("%s: not sealed (%s); a check reads it through libhdf5", name, err)
    finally:
        os.close(fd)
