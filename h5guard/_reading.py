"""Reading results back as they were given to ``ShardWriter.add``.

:func:`read` returns one :class:`Result`, :func:`iter_results` every result of a file
(:func:`h5guard.to_dataframe`, one row per result, lives in :mod:`h5guard._table`). Each group's content digest is verified before
its result is returned (v2, computed in the walk that reads the group; or v1 for files
written before trees); a group that does not match raises
:class:`~h5guard.DigestMismatchError` naming the group and both digests. A result is a
top-level group reached by a hard link whose name does not start with the reserved
prefix ``h5guard_``: links are never followed (docs/reading.md).

Values come back as the Python objects that were stored: ``str`` as ``str``, ``bytes``
as ``bytes``, Python numbers as Python numbers, numpy scalars and arrays with their
dtype and shape, a subgroup as a ``dict`` (or a :class:`Group` when it has attributes),
a dataset with attributes as a :class:`Dataset`. docs/reading.md lists every kind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import h5py

from h5guard._format import names, segments
from h5guard._format.reader import link_types, read_result, v1_strings
from h5guard._format.tree import Dataset, Group, Result, python_tree
from h5guard.errors import DigestMismatchError, ResultNotFoundError

__all__ = ["Dataset", "Group", "Result", "iter_results", "read"]


def _result(path: str, gid: Any, key: str, verify: bool) -> Result:
    node, stored, computed = read_result(gid, key, verify=verify)
    if computed is not None and stored != computed:
        raise DigestMismatchError(path, key, stored, computed)
    if stored is not None and not stored.startswith(names.DIGEST_V2_PREFIX):
        node = v1_strings(node)
    datasets, attrs = python_tree(node)
    return Result(key, datasets, attrs, stored, path)


_FAPL: list[Any] = []


def _fapl() -> Any:
    """A file access property list made once: no file locking, as ``h5py.File(locking=False)``."""
    if not _FAPL:
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_file_locking(False, ignore_when_disabled=False)
        _FAPL.append(fapl)
    return _FAPL[0]


@contextmanager
def _open(path: str) -> Iterator[Any]:
    """The file, read-only, as a low-level FileID (``h5py.File`` adds a wrapper and a
    property list per open that reading results does not use)."""
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY, fapl=_fapl())
    try:
        yield fid
    finally:
        fid.close()


def _result_name(key: str) -> bytes | None:
    """``key`` as the name of a top-level group h5guard may have written, or None."""
    if not key or "/" in key or "\0" in key or key in (".", ".."):
        return None
    if key.startswith(names.RESERVED_PREFIX):  # h5guard's own groups (a summary table)
        return None
    try:
        return key.encode("utf-8")
    except UnicodeEncodeError:
        return None


def read(path: str | os.PathLike[str], key: str, *, verify: bool = True) -> Result:
    """The result ``key`` of an h5guard shard or merged output, its digest verified.

    Parameters
    ----------
    path
        The shard or merged output.
    key
        The result's key (its top-level group).
    verify
        Recompute the content digest and compare; False reads groups that no h5guard
        writer digested.

    Returns
    -------
    Result
        The datasets and attributes as they were given to ``add()``.

    Raises
    ------
    ResultNotFoundError
        The file has no such group (a link, a dataset or a name with the reserved
        prefix ``h5guard_`` is not a result).
    DigestMismatchError
        The content does not match its digest (or there is none).
    """
    where = os.fspath(path)
    with _open(where) as fid:
        # An index: the segment holding the key, resolved here, never through the link.
        seg = segments.locate(h5py.File(fid), where, key) if isinstance(key, str) else None
        if seg is None:
            return _result(where, _group_in(fid, where, key), key, verify)
    with segments.open_segment(seg) as g:
        return _result(seg, _group_in(g.id, seg, key), key, verify)


def _group_in(fid: Any, where: str, key: str) -> Any:
    """The top-level group ``key`` of the open file ``fid``, reached by a hard link only."""
    name = _result_name(key) if isinstance(key, str) else None
    # The link itself first: an external or soft link is never followed.
    if name is None or not fid.links.exists(name):
        raise ResultNotFoundError(where, str(key))
    if fid.links.get_info(name).type != h5py.h5l.TYPE_HARD:
        raise ResultNotFoundError(where, key)
    gid = h5py.h5o.open(fid, name)
    if not isinstance(gid, h5py.h5g.GroupID):
        raise ResultNotFoundError(where, key)
    return gid


def iter_results(path: str | os.PathLike[str], *, verify: bool = True) -> Iterator[Result]:
    """Every result of a file, in key order (the file stays open while iterating).

    The results are the top-level groups; links (never followed), datasets and the
    groups whose names start with the reserved prefix ``h5guard_`` are not results.

    Parameters
    ----------
    path, verify
        As for :func:`read`.

    Yields
    ------
    Result
        One per top-level group.

    Raises
    ------
    DigestMismatchError
        A group's content does not match its digest.
    """
    where = os.fspath(path)
    reserved = names.RESERVED_PREFIX.encode("utf-8")
    with _open(where) as fid:
        if segments.is_index(h5py.File(fid)):
            indexed = True
        else:
            indexed = False
            for raw, link in link_types(fid):
                if link != h5py.h5l.TYPE_HARD or raw.startswith(reserved):
                    continue
                try:
                    key = raw.decode("utf-8")
                except UnicodeDecodeError:  # h5guard writes UTF-8 keys only
                    continue
                gid = h5py.h5o.open(fid, raw)
                if isinstance(gid, h5py.h5g.GroupID):
                    yield _result(where, gid, key, verify)
    if indexed:  # each segment resolved by h5guard, never through a link
        with segments.iter_groups(where) as groups:
            for seg, sid, key in groups:  # keys the segment holds by hard links
                gid = h5py.h5o.open(sid, key.encode("utf-8"))
                if isinstance(gid, h5py.h5g.GroupID):
                    yield _result(seg, gid, key, verify)
