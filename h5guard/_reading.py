"""Reading results back as they were given to ``ShardWriter.add``.

:func:`read` returns one :class:`Result`, :func:`iter_results` every result of a file,
:func:`to_dataframe` one row per result. Each group's content digest is verified first
(v2, or v1 for files written before trees); a group that does not match raises
:class:`~h5guard.DigestMismatchError` naming the group and both digests.

Values come back as the Python objects that were stored: ``str`` as ``str``, ``bytes``
as ``bytes``, Python numbers as Python numbers, numpy scalars and arrays with their
dtype and shape, a subgroup as a ``dict`` (or a :class:`Group` when it has attributes),
a dataset with attributes as a :class:`Dataset`. docs/reading.md lists every kind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from h5guard._format import names, segments
from h5guard._format.digest import computed_digest
from h5guard._format.reader import read_tree, stored_digest, v1_strings
from h5guard._format.tree import Dataset, Group, Result, python_tree
from h5guard.errors import DigestMismatchError, MissingDependencyError, ResultNotFoundError

__all__ = ["Dataset", "Group", "Result", "iter_results", "read", "to_dataframe"]


def _result(path: str, group: h5py.Group, key: str, verify: bool) -> Result:
    node = read_tree(group, key)
    stored = stored_digest(group)
    if verify:
        computed = computed_digest(node, stored)
        if stored != computed:
            raise DigestMismatchError(path, key, stored, computed)
    if stored is not None and not stored.startswith(names.DIGEST_V2_PREFIX):
        node = v1_strings(node)
    datasets, attrs = python_tree(node)
    return Result(key, datasets, attrs, stored, path)


def _open(path: str | os.PathLike[str]) -> h5py.File:
    return h5py.File(os.fspath(path), "r", locking=False)


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
        The file has no such group.
    DigestMismatchError
        The content does not match its digest (or there is none).
    """
    where = os.fspath(path)
    with _open(where) as f:
        seg = segments.locate(f, where, key)  # an index: the segment, never the link
        with segments.open_segment(seg) if seg else contextlib.nullcontext(f) as g:
            obj = g.get(key)
            if not isinstance(obj, h5py.Group):
                raise ResultNotFoundError(where, key)
            return _result(seg or where, obj, key, verify)


def iter_results(path: str | os.PathLike[str], *, verify: bool = True) -> Iterator[Result]:
    """Every result of a file, in key order (the file stays open while iterating).

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
    if segments.is_index_path(where):  # each segment resolved by h5guard, never a link
        with segments.iter_groups(where) as groups:
            for seg, group, key in groups:
                yield _result(seg, group, key, verify)
        return
    with _open(where) as f:
        for key in sorted(f, key=lambda k: k.encode("utf-8")):
            obj = f.get(key)
            if isinstance(obj, h5py.Group):
                yield _result(where, obj, key, verify)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bytes | int | float | complex | np.generic) and not isinstance(
        value, np.void
    )


def to_dataframe(path: str | os.PathLike[str], *, verify: bool = True) -> Any:
    """One row per result (index ``key``); scalar attributes and scalar datasets as columns.

    A dataset that has the name of an attribute of the same group becomes the column
    ``datasets/<name>``.

    Parameters
    ----------
    path, verify
        As for :func:`read`.

    Returns
    -------
    pandas.DataFrame
        One row per result.

    Raises
    ------
    MissingDependencyError
        pandas is not installed (``pip install 'h5guard[dataframe]'``).
    """
    try:
        import pandas as pd
    except ImportError as err:
        raise MissingDependencyError(
            "h5guard.to_dataframe needs pandas, which is not installed; "
            "install it with: pip install 'h5guard[dataframe]' (or pip install pandas)"
        ) from err
    rows: list[dict[str, Any]] = []
    keys: list[str] = []
    for result in iter_results(path, verify=verify):
        row = {n: v for n, v in result.attrs.items() if _is_scalar(v)}
        for name, value in result.datasets.items():
            if _is_scalar(value):
                row[f"datasets/{name}" if name in row else name] = value
        rows.append(row)
        keys.append(result.key)
    return pd.DataFrame(rows, index=pd.Index(keys, name="key"))
