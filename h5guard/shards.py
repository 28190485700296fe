"""ShardWriter: how a worker process writes results without ever leaving a bad file.

Results are buffered into an open ``*.partial`` file. A commit closes it, fsyncs it,
renames it to a final, unique, never-again-modified shard name and fsyncs the
directory. A crash therefore loses at most the results added since the last commit,
and a file under a final name is always complete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5guard import _atomic, _layout, _result, _seal
from h5guard._version import __version__
from h5guard.errors import (
    H5GuardError,
    InsufficientSpaceError,
    SchemaError,
    WriteError,
    WriterClosedError,
)
from h5guard.schema import DatasetInfo, Schema

log = logging.getLogger(__name__)

SHARD_SUFFIX = ".h5"


def new_shard_stem(prefix: str) -> str:
    """``prefix-YYYYmmddTHHMMSS-host-pid-random``: unique across hosts and restarts."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{prefix}-{stamp}-{_atomic.writer_tag()}-{uuid.uuid4().hex[:8]}"


class ShardWriter:
    """Write result groups into committed, immutable shard files in ``directory``.

    Use it as a context manager::

        with ShardWriter("run_tmp", schema=schema) as writer:
            writer.add("config-1", {"x": xs}, {"status": "ok"})

    Each ``add`` writes one top-level group with a content digest. The open batch is
    committed every ``commit_every`` results or ``commit_interval`` seconds
    (whichever comes first), on :meth:`commit`, and on a clean exit. An exception
    inside the ``with`` block discards the uncommitted batch.

    ``min_free`` bytes must stay free on the file system beyond what a group needs;
    otherwise ``add`` raises :class:`~h5guard.InsufficientSpaceError` before writing.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        schema: Schema | None = None,
        prefix: str = "shard",
        commit_every: int = 100,
        commit_interval: float = 60.0,
        min_free: int = _atomic.DEFAULT_MIN_FREE,
        file_attrs: Mapping[str, Any] | None = None,
    ) -> None:
        if commit_every < 1:
            raise ValueError(f"commit_every: expected an integer >= 1, got {commit_every}")
        if commit_interval <= 0:
            raise ValueError(f"commit_interval: expected seconds > 0, got {commit_interval}")
        if "-" in prefix or "/" in prefix or not prefix:
            raise ValueError(
                f"prefix: expected a non-empty name without '-' or '/', got {prefix!r}"
            )
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise NotADirectoryError(f"{self.directory}: expected an existing directory")
        self.schema = schema
        self.prefix = prefix
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        self.min_free = min_free
        self._file_attrs = {k: _layout.normalize_value(k, v) for k, v in (file_attrs or {}).items()}
        for k in self._file_attrs:
            if k.startswith(_layout.RESERVED_PREFIX):
                raise ValueError(f"file_attrs: {k!r} uses the reserved prefix 'h5guard_'")
        self._file: h5py.File | None = None
        self._partial: Path | None = None
        self._poisoned: BaseException | None = None
        self._batch: dict[str, str] = {}  # key -> digest
        self._batch_started = 0.0
        self._batch_bytes = 0
        self._closed = False
        self.committed: list[Path] = []
        self.committed_keys: list[str] = []

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
        else:
            self.discard()

    # -- public API ------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Results added since the last commit."""
        return len(self._batch)

    def add(
        self,
        key: str,
        datasets: Mapping[str, Any],
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        """Write one result group; commits when the batch policy says so."""
        if self._closed:
            raise WriterClosedError(f"{self.directory}: ShardWriter is closed")
        if key in self._batch:
            raise ValueError(f"group key {key!r}: already added to this batch")
        result = _result.prepare(key, datasets, attrs, schema=self.schema)
        nbytes = result.nbytes
        # A group costs its data plus a few KiB of headers; twice that leaves room for
        # HDF5's own allocations when the file is closed.
        _atomic.require_free_space(self.directory, 2 * nbytes + 64 * 1024, min_free=self.min_free)
        digest = result.digest
        f = self._open_batch()
        try:
            _result.write(f, result)
        except Exception as err:
            self._remove_half_written(f, key, err)
            raise self._write_error(f"writing group {key!r} failed", err) from err
        self._batch[key] = digest
        self._batch_bytes += nbytes
        if (
            len(self._batch) >= self.commit_every
            or time.monotonic() - self._batch_started >= self.commit_interval
        ):
            self.commit()

    def commit(self) -> Path | None:
        """Make every result added so far durable; returns the new shard's path."""
        if self._file is None or self._partial is None:
            return None
        partial = self._partial
        final = partial.with_name(partial.name[: -len(_atomic.PARTIAL_SUFFIX)])
        keys = sorted(self._batch)
        if self._poisoned is not None:
            cause = self._poisoned
            self._drop_batch()
            raise WriteError(
                str(partial),
                f"batch of {len(keys)} group(s) discarded: a failed write left a group "
                "that could not be removed",
                cause,
            )
        try:
            # The index lets a merge plan from one attribute instead of one per group.
            index = json.dumps(self._batch, sort_keys=True, ensure_ascii=False)
            _layout.write_attr(
                self._file, _layout.INDEX_ATTR, np.array(index.encode(), dtype=np.bytes_)
            )
            self._file.close()
            _seal.write_seal(partial)
        except Exception as err:
            with contextlib.suppress(Exception):
                self._file.close()
            self._forget_batch()
            _atomic.remove_quietly(partial)
            raise self._write_error("closing the shard failed", err, path=partial) from err
        self._forget_batch()
        _atomic.commit_file(partial, final)
        self.committed.append(final)
        self.committed_keys.extend(keys)
        log.debug("committed %d group(s) to %s", len(keys), final)
        return final

    def discard(self) -> None:
        """Throw the uncommitted batch away and close the writer."""
        self._drop_batch()
        self._closed = True

    def _drop_batch(self) -> None:
        partial = self._partial
        if self._file is not None:
            try:
                self._file.close()
            except Exception as err:  # the file is being thrown away anyway
                log.debug("closing discarded %s failed: %s", partial, err)
        self._forget_batch()
        if partial is not None:
            _atomic.remove_quietly(partial)
            log.info("discarded uncommitted batch %s", partial)

    def _remove_half_written(self, f: h5py.File, key: str, err: BaseException) -> None:
        """Unlink a group whose write failed, so the batch holds only whole groups."""
        try:
            if key in f:
                del f[key]
        except Exception as again:
            log.warning(
                "cannot remove half-written group %s (%s); batch will be discarded", key, again
            )
            self._poisoned = err

    def _write_error(self, what: str, err: BaseException, *, path: Path | None = None) -> OSError:
        where = str(path or self._partial or self.directory)
        if isinstance(err, H5GuardError) and isinstance(err, OSError):
            return err
        if getattr(err, "errno", None) == errno.ENOSPC or "errno = 28," in str(err):
            return InsufficientSpaceError(
                str(self.directory),
                self._batch_bytes + self.min_free,
                _atomic.free_bytes(self.directory),
            )
        return WriteError(where, what, err)

    def close(self) -> None:
        """Commit what is pending and close the writer."""
        if self._closed:
            return
        try:
            self.commit()
        finally:
            self._closed = True

    # -- internals -------------------------------------------------------------
    def _open_batch(self) -> h5py.File:
        if self._file is not None:
            return self._file
        stem = new_shard_stem(self.prefix)
        partial = self.directory / f"{stem}{SHARD_SUFFIX}{_atomic.PARTIAL_SUFFIX}"
        f = _layout.create_file(os.fspath(partial), "x", userblock=_seal.SEAL_SIZE)
        try:
            f.attrs[_layout.FORMAT_ATTR] = np.bytes_(_layout.SHARD_FORMAT.encode())
            f.attrs[_layout.VERSION_ATTR] = np.bytes_(__version__.encode())
            if self.schema is not None:
                f.attrs[_layout.SCHEMA_ATTR] = np.bytes_(self.schema.to_json().encode())
            for k, v in self._file_attrs.items():
                _layout.write_attr(f, k, v)
        except BaseException:
            f.close()
            _atomic.remove_quietly(partial)
            raise
        self._file = f
        self._partial = partial
        self._batch_started = time.monotonic()
        return f

    def _forget_batch(self) -> None:
        self._poisoned = None
        self._file = None
        self._partial = None
        self._batch = {}
        self._batch_bytes = 0

    def _check_schema(
        self,
        key: str,
        arrays: Mapping[str, npt.NDArray[Any]],
        attrs: Mapping[str, npt.NDArray[Any]],
    ) -> None:
        assert self.schema is not None
        infos = {name: DatasetInfo.of(a) for name, a in arrays.items()}
        problems = self.schema.check(infos, attrs)
        if problems:
            p = problems[0]
            where = f"{key}/{p.obj}" if p.obj else key
            raise SchemaError(f"group {where}: {p.code} {p.message} (schema {self.schema.name!r})")
