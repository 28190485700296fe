"""The table of a file's results: :func:`to_dataframe`.

One row per result (index ``key``), its scalar attributes and scalar top-level datasets
as columns (:func:`h5guard._format.summary.row_of` says which). A file h5guard wrote
carries a summary of exactly those values (:mod:`h5guard._format.summary`), read
column by column; a file without one (a shard of an older version, an output merged
before summaries, a file h5guard did not write) is read group by group and gives the
same table.
"""

from __future__ import annotations

import os
from typing import Any

import h5py

from h5guard._format import segments, summary
from h5guard._reading import iter_results
from h5guard.errors import DigestMismatchError, MissingDependencyError

__all__ = ["SummaryMismatchError", "to_dataframe"]


class SummaryMismatchError(DigestMismatchError):
    """A file's summary that is damaged or disagrees with its groups (``verify=True``)."""

    def __init__(self, path: str, problem: str) -> None:
        ValueError.__init__(
            self,
            f"{path}:/{summary.NAME}: {problem}; re-merge the shards into a new output, "
            "or run h5guard salvage on the file (its groups are checked on their own)",
        )
        self.path = path
        self.key = summary.NAME
        self.stored = None
        self.computed = problem
        self.problem = problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.problem))


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError as err:
        raise MissingDependencyError(
            "h5guard.to_dataframe needs pandas, which is not installed; "
            "install it with: pip install 'h5guard[dataframe]' (or pip install pandas)"
        ) from err
    return pd


def to_dataframe(path: str | os.PathLike[str], *, verify: bool = True) -> Any:
    """One row per result (index ``key``); scalar attributes and scalar datasets as columns.

    A dataset that has the name of an attribute of the same group becomes the column
    ``datasets/<name>``. The values come from the file's summary when it has one (a
    few dataset reads however many results), else from its groups; both give the same
    table.

    Parameters
    ----------
    path
        The shard or merged output.
    verify
        With a summary: check its digest (the values returned are then exactly the
        ones the writer summarised) and that it lists exactly the file's result
        groups. Without one: verify every group's content digest, as
        :func:`h5guard.read` does. False skips these checks and, without a summary,
        reads only the values that are columns.

    Returns
    -------
    pandas.DataFrame
        One row per result, in key order (UTF-8 byte order).

    Raises
    ------
    MissingDependencyError
        pandas is not installed (``pip install 'h5guard[dataframe]'``).
    DigestMismatchError
        ``verify``: a group does not match its digest, or the summary is damaged or
        disagrees with the groups (the message says what to do).
    """
    pd = _pandas()
    where = os.fspath(path)
    parts = segments.resolve(where)  # a segmented output: its segments' summaries
    table: summary.Table | None = None
    if parts is None:
        table = _file_table(where, verify=verify)
    else:
        tables = [_file_table(seg, verify=verify, keys=keys) for seg, keys in parts]
        if all(t is not None for t in tables):
            table = summary.concat([t for t in tables if t is not None])
    if table is not None:
        return summary.frame(table, pd)
    rows: list[dict[str, Any]] = []
    keys: list[str] = []
    for result in iter_results(where, verify=True):
        rows.append(summary.row_from(result.attrs, result.datasets))
        keys.append(result.key)
    return pd.DataFrame(rows, index=pd.Index(keys, name="key"))


def _file_table(
    where: str, *, verify: bool, keys: tuple[str, ...] | None = None
) -> summary.Table | None:
    """The summary of one file (or of the ``keys`` of one segment), checked with ``verify``;
    None when only reading its groups with their digests verified can give the table."""
    opened = segments.open_segment(where) if keys is not None else None
    with opened or h5py.File(where, "r", locking=False) as f:
        if summary.NAME in f:
            try:
                table = summary.load(f)
                found = (
                    summary.problems(
                        table,
                        summary.stored_digest(f),
                        dict.fromkeys(summary.result_names(f)),
                    )
                    if verify and table is not None
                    else []
                )
            except summary.SummaryError as err:
                if verify:
                    raise SummaryMismatchError(where, str(err)) from err
                table, found = None, []
            if found:
                raise SummaryMismatchError(where, "; ".join(found))
            if table is not None:
                return table if keys is None else table.select(keys)
        if not verify:
            return summary.table_from_groups(f, keys)
    return None
