"""The deep layer's entry: open a file with libhdf5 and read every byte of it.

:func:`inspect_file` is what the sandbox child runs for each file (it may hang or
crash on a damaged one); it is an ordinary function that can run in-process on files
h5guard itself just wrote. h5guard's own files go to :mod:`h5guard._check.own` (digests
verified), the others to :mod:`h5guard._check.foreign` (every object read); both
settle each top-level group in one :class:`~h5guard._check.inspector.Inspector`.
"""

from __future__ import annotations

import h5py

from h5guard._check.foreign import inspect_foreign, note_foreign
from h5guard._check.inspector import (
    Inspector,
    attr_text,
    file_size,
    one_line,
    pick_schema,
    retire,
)
from h5guard._check.own import inspect_owned
from h5guard._check.quick import FlagsClearedView
from h5guard._format import reader
from h5guard._format.names import FORMAT_ATTR, OUTPUT_FORMAT, SCHEMA_ATTR, SHARD_FORMAT
from h5guard._sandbox import more_memory
from h5guard.report import Code, FileKind, FileSummary, Finding


def inspect_file(
    path: str,
    schema_json: str | None = None,
    clear_write_flags: bool = False,
    allow_external: bool = False,
    swmr: bool = False,
) -> tuple[list[Finding], FileSummary]:
    """Read every object of ``path``; return findings and a summary of the file.

    Parameters
    ----------
    path
        The file.
    schema_json
        The schema to apply, as JSON; None: the one the file embeds, if any.
    clear_write_flags
        The superblock's "open for write" flags are set (libhdf5 refuses such a file;
        the quick layer reported it): read the file as if they were clear, so that
        damage behind the flags is reported too. The file is not modified.
    allow_external
        Read raw data the file keeps in other files (external storage, virtual
        datasets' sources) too; False: name those files, read nothing of them.
    swmr
        Open as an SWMR reader (a live SWMR writer holds the file).

    Returns
    -------
    tuple[list[Finding], FileSummary]
        The findings and the file's summary.
    """
    # Room in proportion to the file, in a sandbox child: the byte reader maps it whole,
    # and its groups' digests and summary rows are Python objects (a million results,
    # 575 MB, ran out of the fixed 1 GiB). Damaged sizes still meet a limit.
    with more_memory(MEMORY_PER_BYTE * file_size(path)):
        return _inspect_file(path, schema_json, clear_write_flags, allow_external, swmr)


# Bytes of address space a sandboxed check may take per byte of the file, on top of the
# sandbox's own limit: the mapping (1) and the Python objects of its groups. Measured:
# the check of a million small results (576 MiB) peaked at 1,204 MiB of address space
# in its child (1,124 MiB resident), with the limit at start-up plus 1 GiB refused.
MEMORY_PER_BYTE = 3


def _inspect_file(
    path: str, schema_json: str | None, clear_write_flags: bool, allow_external: bool, swmr: bool
) -> tuple[list[Finding], FileSummary]:
    ins = Inspector(path, None)
    size = file_size(path)
    try:
        f = _open(path, clear_write_flags=clear_write_flags, swmr=swmr)
    except Exception as err:
        ins.add("/", Code.UNREADABLE, f"HDF5 cannot open the file: {one_line(err)}")
        retire(ins)
        return ins.findings, FileSummary(path, FileKind.UNREADABLE, size)
    with f:
        fmt = _root_text(f, FORMAT_ATTR)
        kind = {
            SHARD_FORMAT: FileKind.SHARD,
            OUTPUT_FORMAT: FileKind.OUTPUT,
        }.get(fmt or "", FileKind.FOREIGN)
        ins.owned = kind is not FileKind.FOREIGN
        if ins.owned:
            readable, embedded = inspect_owned(ins, f, schema_json)
        else:
            embedded = _root_text(f, SCHEMA_ATTR)
            ins.schema = pick_schema(ins, schema_json, embedded)
            readable = inspect_foreign(ins, f, allow_external=allow_external)
            if readable:  # of an unreadable root, "readable, but ..." would be wrong
                note_foreign(ins)
    retire(ins)
    summary = FileSummary(
        path,
        kind if readable else FileKind.UNREADABLE,
        size,
        groups=ins.groups,
        schema_json=embedded if embedded is not None else schema_json,
        invalid_groups=tuple(ins.invalid),
    )
    return ins.findings, summary


def _root_text(f: h5py.File, name: str) -> str | None:
    """One root attribute as text, opened by name alone (the walk reads all of them)."""
    try:
        if not h5py.h5a.exists(f.id, name.encode("utf-8")):
            return None
        value = reader.read_attr_id(h5py.h5a.open(f.id, name.encode("utf-8")))
    except Exception:  # damaged attribute storage: the walk reports it
        return None
    return attr_text({name: value}, name)


def _open(path: str, *, clear_write_flags: bool, swmr: bool = False) -> h5py.File:
    if swmr:
        return h5py.File(path, "r", libver="latest", swmr=True, locking=False)
    if not clear_write_flags:
        return h5py.File(path, "r", locking=False)
    view = FlagsClearedView(path)
    try:
        return h5py.File(view, "r", locking=False)
    except BaseException:
        view.close()
        raise
