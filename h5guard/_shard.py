"""A committed shard: its name and how a batch of results becomes one.

Both ends of a batch's life write the same file in the same way: the writer at commit
(:mod:`h5guard._writer`) and the merge's recovery of a gone writer's journal
(:func:`h5guard._journal.recover_journal`). So the writing lives here, below both, and
neither the journal module nor the merge imports the writer.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from h5guard import _atomic
from h5guard._format import names, write
from h5guard._format import result as _result
from h5guard._format import seal as _seal
from h5guard._version import __version__

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


def write_shard(
    final: Path,
    results: Iterable[_result.PreparedResult],
    *,
    schema_json: str | None,
    file_attrs: _result.PreparedResult | None,
) -> dict[str, str]:
    """Write ``results`` as the sealed shard ``final``, through ``final.partial``.

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

    Returns
    -------
    dict of str to str
        The shard's index: key -> digest.

    Raises
    ------
    Exception
        Whatever writing raised; nothing is then left under either name, and the
        caller's journal still holds the results.
    """
    partial = final.with_name(final.name + _atomic.PARTIAL_SUFFIX)
    index: dict[str, str] = {}
    f = None
    try:
        f = write.create_file(os.fspath(partial), "w", userblock=_seal.SEAL_SIZE)
        f.attrs[names.FORMAT_ATTR] = np.bytes_(names.SHARD_FORMAT.encode())
        f.attrs[names.VERSION_ATTR] = np.bytes_(__version__.encode())
        if schema_json is not None:
            f.attrs[names.SCHEMA_ATTR] = np.bytes_(schema_json.encode())
        if file_attrs is not None:
            _result.write_root_attrs(f, file_attrs)
        for result in results:
            _result.write(f, result)
            index[result.key] = result.digest
        # The index lets a merge plan from one attribute instead of one per group.
        text = json.dumps(index, sort_keys=True, ensure_ascii=False)
        write.write_attr(f, names.INDEX_ATTR, np.array(text.encode(), dtype=np.bytes_))
        f.close()
        f = None
        _seal.write_seal(partial)
        _atomic.commit_file(partial, final)
    except BaseException:
        if f is not None:
            with contextlib.suppress(Exception):
                f.close()
        _atomic.remove_quietly(partial)
        raise
    return index
