"""The summary: every result's scalars as columns, in one reserved root group.

:func:`h5guard.to_dataframe` makes one row per result of its scalar attributes and
scalar top-level datasets (:func:`row_of` says which, and how a column is named). Read
from the groups that costs a few libhdf5 calls per value; the summary stores the same
values column by column, so the table of a million results is a few dataset reads. It
is written by the writer into every shard (the values are in memory at ``add()``) and by
the merge into the output, in the same crash-safe step as the groups, and it carries a
digest of its own, which :func:`h5guard.check` and ``to_dataframe(verify=True)`` check.

Layout (docs/format.md, "The summary", gives it with an example)::

    /h5guard_summary          attrs h5guard_format, rows (N), h5guard_digest, and
                              columns: JSON [[name, kind, dtype], ...], one per part
        key_offsets, key_bytes        the keys in key order (UTF-8 at offsets)
        digest_offsets, digest_bytes  each result's h5guard_digest
        slots                 int32 (parts, N): -1 where a row has no value, else the
                              value's position in its result's row (the column order)
        <i>_values            part i's values (kinds int, float, bool, complex, numpy)
        <i>_offsets, <i>_bytes        or variable-length ones (str, bytes, numpy |S)

A column whose values have more than one type (``int`` in one result, ``str`` in
another) has one part per type, their present rows disjoint.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import mmap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5guard._format import bytes as bytes_reader
from h5guard._format import names, reader, write
from h5guard._format.result import PreparedResult
from h5guard._format.tree import (
    DatasetNode,
    GroupNode,
    Value,
    default_kind,
    python_value,
    utf8_dtype,
)

log = logging.getLogger(__name__)

Array = npt.NDArray[Any]

NAME = names.RESERVED_PREFIX + "summary"  # the root group
FORMAT = "h5guard-summary/1"
MAGIC = b"h5guard-summary-v1\0"
DIGEST_PREFIX = "sha256:"
ROWS_ATTR = "rows"
COLUMNS_ATTR = "columns"  # JSON [[name, kind, dtype], ...]: the column parts, in order

# Part kinds whose values are fixed-size, and the dtype each is stored as.
_FIXED = {"int": "<i8", "float": "<f8", "bool": "|b1", "complex": "<c16"}
# Part kinds stored as offsets + bytes, and their dtype label.
_HEAP = {"str": "utf-8", "bytes": "bytes"}
_NUMPY_BYTES = "|S"  # numpy.bytes_ scalars: variable-length too


class SummaryError(ValueError):
    """A summary that cannot be read as one (its message says where and what)."""


# -- which values are columns ------------------------------------------------------------


def is_scalar(value: Any) -> bool:
    """Whether a value read back is a column of :func:`h5guard.to_dataframe`."""
    return isinstance(value, str | bytes | int | float | complex | np.generic) and not isinstance(
        value, np.void
    )


def row_from(attrs: Mapping[str, Any], datasets: Mapping[str, Any]) -> dict[str, Any]:
    """A result's row from its values read back (attributes, then top-level datasets).

    A dataset that has the name of a (scalar) attribute becomes ``datasets/<name>``.
    """
    row = {n: v for n, v in attrs.items() if is_scalar(v)}
    for name, value in datasets.items():
        if is_scalar(value):
            row[f"datasets/{name}" if name in row else name] = value
    return row


def _by_name(items: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    # libhdf5 lists attributes and links by name in byte order: so do rows built in memory.
    return sorted(items, key=lambda item: item[0].encode("utf-8", "surrogateescape"))


def row_of(root: GroupNode) -> dict[str, Any]:
    """The row of a result tree: what reading its group back makes of it."""
    attrs = {n: python_value(v) for n, v in _by_name(root.attrs.items())}
    datasets = {
        n: python_value(m.value)
        for n, m in _by_name(root.members.items())
        if isinstance(m, DatasetNode) and not m.attrs  # a Dataset with attrs is no scalar
    }
    return row_from(attrs, datasets)


# -- the table in memory -------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Part:
    """The values of one column that have one type; ``slot`` -1 where a row has none."""

    name: str
    kind: str
    dtype: str
    slot: Array  # int32, one per row
    values: Array  # the dtype for fixed kinds; objects (str/bytes) for variable ones

    @property
    def variable(self) -> bool:
        return self.kind in _HEAP or self.dtype == _NUMPY_BYTES


def _type_of(value: Any) -> tuple[str, str]:
    """(kind, dtype) of the part a value belongs to."""
    if isinstance(value, np.generic):  # before the Python types: np.float64 is a float
        if isinstance(value, np.bytes_):
            return "numpy", _NUMPY_BYTES
        return "numpy", value.dtype.newbyteorder("<").str
    if isinstance(value, bool):
        return "bool", _FIXED["bool"]
    if isinstance(value, int):
        return "int", _FIXED["int"]
    if isinstance(value, float):
        return "float", _FIXED["float"]
    if isinstance(value, complex):
        return "complex", _FIXED["complex"]
    if isinstance(value, str):
        return "str", _HEAP["str"]
    return "bytes", _HEAP["bytes"]


def _utf8(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


_CELL_PARTS = {k: (k, d) for k, d in _FIXED.items()}


def _cell(value: Value) -> tuple[tuple[str, str], Any] | None:
    """(part, value) of a stored value that is a column, else None: ``python_value``
    and ``is_scalar`` and ``_type_of`` in one step."""
    kind = value.kind
    part = _CELL_PARTS.get(kind)
    if part is not None:
        return part, value.array[()]  # int64, float64, bool_ or complex128 into its part
    if kind == "str" or kind == "bytes":
        py = python_value(value)
        return _type_of(py), py
    if kind == "numpy" and value.array.ndim == 0:
        py = python_value(value)
        if is_scalar(py):
            return _type_of(py), py
    return None


def _fill(kind: str, dtype: str, n: int) -> Array:
    if kind in _HEAP or dtype == _NUMPY_BYTES:
        out = np.empty(n, dtype=object)
        out[:] = "" if kind == "str" else b""
        return out
    return np.zeros(n, dtype=np.dtype(dtype))


@dataclass(slots=True, eq=False)
class Table:
    """The summary of a set of results: keys, their digests, and the column parts."""

    keys: list[str]
    digests: list[str]
    parts: list[Part]

    @property
    def rows(self) -> int:
        return len(self.keys)

    def digest(self) -> str:
        """The summary digest (docs/format.md): SHA-256 over the canonical encoding."""
        h = hashlib.sha256(MAGIC)
        _feed(h, self.rows.to_bytes(8, "little"))
        for label, texts in ((b"key", self.keys), (b"digest", self.digests)):
            _feed(h, label)
            _feed_heap(h, [t.encode("utf-8") for t in texts])
        for part in self.parts:
            _feed(h, b"part")
            for text in (part.name, part.kind, part.dtype):
                _feed(h, text.encode("utf-8"))
            _feed(h, np.ascontiguousarray(part.slot, dtype="<i4"))
            if part.variable:
                _feed_heap(h, _encoded(part))
            else:
                _feed(h, np.ascontiguousarray(part.values, dtype=np.dtype(part.dtype)))
        return DIGEST_PREFIX + h.hexdigest()

    def take(self, rows: npt.NDArray[np.intp]) -> Table:
        """The table of the rows ``rows``, in that order (parts without a value dropped)."""
        order = rows.tolist()
        parts = []
        for p in self.parts:
            slot = p.slot[rows]
            if (slot >= 0).any():
                parts.append(Part(p.name, p.kind, p.dtype, slot, p.values[rows]))
        return Table([self.keys[i] for i in order], [self.digests[i] for i in order], parts)

    def select(self, keys: Iterable[str]) -> Table:
        """The rows of ``keys`` (each must be in the table)."""
        where = {k: i for i, k in enumerate(self.keys)}
        return self.take(np.array([where[k] for k in keys], dtype=np.intp))


def _feed(h: Any, data: bytes | Array) -> None:
    size = len(data) if isinstance(data, bytes) else int(data.nbytes)
    h.update(size.to_bytes(8, "little"))
    h.update(data)  # any C-contiguous buffer: hashed without a copy


def _feed_heap(h: Any, items: Sequence[bytes]) -> None:
    offsets, heap = _heap(items)
    _feed(h, offsets)
    _feed(h, heap)


def _heap(items: Sequence[bytes]) -> tuple[Array, bytes]:
    offsets = np.zeros(len(items) + 1, dtype="<i8")
    if items:
        np.cumsum(
            np.fromiter((len(b) for b in items), dtype="<i8", count=len(items)), out=offsets[1:]
        )
    return offsets, b"".join(items)


def _encoded(part: Part) -> list[bytes]:
    if part.kind == "str":
        return [str(v).encode("utf-8", "surrogateescape") for v in part.values]
    return [bytes(v) for v in part.values]


def _canonical(parts: Iterable[Part]) -> list[Part]:
    return sorted(parts, key=lambda p: (p.name.encode("utf-8", "surrogateescape"), p.kind, p.dtype))


class Builder:
    """Collects rows, one per result, into a :class:`Table`."""

    def __init__(self) -> None:
        self._keys: list[str] = []
        self._digests: list[str] = []
        # (name, kind, dtype) -> ([row], [slot], [value])
        self._cells: dict[tuple[str, str, str], tuple[list[int], list[int], list[Any]]] = {}

    def add(self, key: str, digest: str | None, row: Mapping[str, Any]) -> None:
        i = len(self._keys)
        self._keys.append(key)
        self._digests.append(digest or "")
        for slot, (name, value) in enumerate(row.items()):
            kind, dtype = _type_of(value)
            cells = self._cells.setdefault((name, kind, dtype), ([], [], []))
            cells[0].append(i)
            cells[1].append(slot)
            cells[2].append(value)

    def track(self, results: Iterable[PreparedResult]) -> Iterator[PreparedResult]:
        """Pass ``results`` through, adding the row of each (for a shard being written)."""
        for result in results:
            self.add_tree(result.key, result.digest, result.root)
            yield result

    def add_tree(self, key: str, digest: str, root: GroupNode) -> None:
        """:meth:`add` of ``row_of(root)``, without building the row (the writer's path:
        once per result at commit, so its cost counts against tiny results)."""
        i = len(self._keys)
        self._keys.append(key)
        self._digests.append(digest)
        cells = self._cells
        slot = 0
        seen: set[str] = set()
        attrs = root.attrs
        for name in sorted(attrs, key=_utf8) if len(attrs) > 1 else attrs:
            cell = _cell(attrs[name])
            if cell is not None:
                seen.add(name)
                part, value = cell
                found = cells.get((name, *part))
                if found is None:
                    found = cells[(name, *part)] = ([], [], [])
                found[0].append(i)
                found[1].append(slot)
                found[2].append(value)
                slot += 1
        members = root.members
        for name in sorted(members, key=_utf8) if len(members) > 1 else members:
            member = members[name]
            if not isinstance(member, DatasetNode) or member.attrs:
                continue
            cell = _cell(member.value)
            if cell is not None:
                column = f"datasets/{name}" if name in seen else name
                seen.add(column)
                part, value = cell
                found = cells.get((column, *part))
                if found is None:
                    found = cells[(column, *part)] = ([], [], [])
                found[0].append(i)
                found[1].append(slot)
                found[2].append(value)
                slot += 1

    def table(self) -> Table:
        n = len(self._keys)
        parts = []
        for (name, kind, dtype), (rows, slots, values) in self._cells.items():
            slot = np.full(n, -1, dtype=np.int32)
            slot[rows] = slots
            column = _fill(kind, dtype, n)
            if column.dtype == object:
                cells = np.empty(len(values), dtype=object)
                cells[:] = values
                column[rows] = cells
            else:
                column[rows] = np.array(values, dtype=column.dtype)
            parts.append(Part(name, kind, dtype, slot, column))
        table = Table(self._keys, self._digests, _canonical(parts))
        return sort(table)


def sort(table: Table) -> Table:
    """The rows in key order (UTF-8 byte order, as every reader lists groups)."""
    order = sorted(range(table.rows), key=lambda i: table.keys[i].encode("utf-8"))
    if order == list(range(table.rows)):
        return table
    return table.take(np.array(order, dtype=np.intp))


def concat(tables: Sequence[Table]) -> Table:
    """One table of all rows (keys must be distinct), in key order."""
    tables = [t for t in tables if t.rows]
    if len(tables) == 1:
        return sort(tables[0])
    total = sum(t.rows for t in tables)
    ids = sorted({(p.name, p.kind, p.dtype) for t in tables for p in t.parts})
    parts = []
    for name, kind, dtype in ids:
        slots, values = [], []
        for t in tables:
            found = next(
                (p for p in t.parts if (p.name, p.kind, p.dtype) == (name, kind, dtype)), None
            )
            if found is None:
                slots.append(np.full(t.rows, -1, dtype=np.int32))
                values.append(_fill(kind, dtype, t.rows))
            else:
                slots.append(found.slot)
                values.append(found.values)
        parts.append(Part(name, kind, dtype, np.concatenate(slots), np.concatenate(values)))
    keys = [k for t in tables for k in t.keys]
    digests = [d for t in tables for d in t.digests]
    assert len(keys) == total
    return sort(Table(keys, digests, _canonical(parts)))


# -- on disk -----------------------------------------------------------------------------


def _text_attr(obj: Any, name: str, text: str) -> None:
    data = text.encode("utf-8", "surrogateescape")
    write.create_attr(obj, name, np.array(data, dtype=utf8_dtype(max(1, len(data)))))


def _write_column(group: h5py.Group, name: str, arr: Array) -> None:
    """Compact when small, else contiguous without filters: the table's own digest covers
    its bytes, and h5guard's byte reader (a sealed shard's check) reads both layouts."""
    if arr.nbytes <= names.COMPACT_LIMIT and arr.size > 0:
        write.write_dataset(group, name, arr)
    else:
        group.create_dataset(name, data=arr)


def _write_heap(group: h5py.Group, label: str, items: Sequence[bytes]) -> None:
    offsets, heap = _heap(items)
    _write_column(group, f"{label}offsets", offsets)
    _write_column(group, f"{label}bytes", np.frombuffer(heap, dtype=np.uint8))


def write_table(f: h5py.File, table: Table) -> None:
    """Store ``table`` as ``f``'s summary, replacing an earlier one.

    Few objects (one group, a handful of datasets, four attributes): a shard of 100
    tiny results pays for it once per commit.
    """
    if f.id.links.exists(NAME.encode()):
        del f[NAME]
    top = write.create_subgroup(f, NAME)
    _text_attr(top, names.FORMAT_ATTR, FORMAT)
    write.create_attr(top, ROWS_ATTR, np.array(table.rows, dtype="<i8"))
    meta = [[p.name, p.kind, p.dtype] for p in table.parts]
    _text_attr(top, COLUMNS_ATTR, json.dumps(meta, ensure_ascii=False))
    _write_heap(top, "key_", [t.encode("utf-8") for t in table.keys])
    _write_heap(top, "digest_", [t.encode("utf-8") for t in table.digests])
    slots = np.zeros((len(table.parts), table.rows), dtype="<i4")
    for i, part in enumerate(table.parts):
        slots[i] = part.slot
        if part.variable:
            _write_heap(top, f"{i}_", _encoded(part))
        else:
            values = np.ascontiguousarray(part.values, np.dtype(part.dtype))
            _write_column(top, f"{i}_values", values)
    _write_column(top, "slots", slots)
    write.create_attr(top, names.DIGEST_ATTR, np.array(table.digest().encode(), dtype=np.bytes_))


def _read(group: h5py.Group, name: str, where: str, ndim: int = 1) -> Array:
    # The low-level calls: a merge reads every new shard's summary, and h5py's objects
    # cost more than the reads of these small datasets.
    try:
        dsid = h5py.h5d.open(group.id, name.encode())
    except KeyError as err:
        raise SummaryError(f"{where}/{name}: missing") from err
    shape = dsid.shape
    if shape is None or len(shape) != ndim:
        raise SummaryError(f"{where}/{name}: expected a {ndim}-dimensional dataset")
    out: Array = np.empty(shape, dtype=dsid.dtype)
    if out.size:
        dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
    return out


def _attr_text(obj: Any, name: str, where: str) -> str:
    if name not in obj.attrs:
        raise SummaryError(f"{where}: attribute {name!r} missing")
    raw = reader.read_attr(obj, name)
    return raw.tobytes().rstrip(b"\0").decode("utf-8", "surrogateescape")


def _read_heap(group: h5py.Group, label: str, where: str, n: int) -> list[bytes]:
    return _heap_of(lambda name, ndim: _read(group, name, where, ndim), label, where, n)


def _heap_of(read: Callable[[str, int], Array], label: str, where: str, n: int) -> list[bytes]:
    offsets = read(f"{label}offsets", 1).astype(np.int64, copy=False)
    heap = read(f"{label}bytes", 1)
    if heap.dtype != np.uint8:
        raise SummaryError(f"{where}/{label}bytes: expected uint8, found {heap.dtype}")
    if (
        len(offsets) != n + 1
        or offsets[0] != 0
        or offsets[-1] != len(heap)
        or (np.diff(offsets) < 0).any()
    ):
        raise SummaryError(f"{where}/{label}offsets: not {n + 1} increasing offsets into bytes")
    data = heap.tobytes()
    bounds = offsets.tolist()
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def load(f: h5py.File) -> Table | None:
    """The summary stored in ``f`` (None if it has none); raises SummaryError if malformed."""
    if not f.id.links.exists(NAME.encode()):
        return None
    where = f"/{NAME}"
    try:
        return _load(f[NAME], where)
    except SummaryError:
        raise
    except Exception as err:  # libhdf5 errors, bad values: the summary is damaged
        raise SummaryError(f"{where}: unreadable: {' '.join(str(err).split())}") from err


def stored_digest(f: h5py.File) -> str:
    return _attr_text(f[NAME], names.DIGEST_ATTR, f"/{NAME}")


def _load(top: Any, where: str) -> Table:
    if not isinstance(top, h5py.Group):
        raise SummaryError(f"{where}: expected a group")
    attrs = reader.read_attrs(top)  # all four at once, by index
    return _table_of(attrs, lambda name, ndim: _read(top, name, where, ndim), where)


def load_arrays(
    datasets: Mapping[str, Array], attrs: Mapping[str, Array], where: str
) -> tuple[Table, str]:
    """The table and its stored digest from the summary group's datasets and attributes
    already read as arrays (a sealed shard's, read by h5guard's byte reader)."""

    def read(name: str, ndim: int) -> Array:
        if name not in datasets:
            raise SummaryError(f"{where}/{name}: missing")
        arr = np.asarray(datasets[name])
        if arr.ndim != ndim:
            raise SummaryError(f"{where}/{name}: expected a {ndim}-dimensional dataset")
        return arr

    try:
        table = _table_of(attrs, read, where)
        if names.DIGEST_ATTR not in attrs:
            raise SummaryError(f"{where}: attribute {names.DIGEST_ATTR!r} missing")
        raw = np.asarray(attrs[names.DIGEST_ATTR]).tobytes()
        return table, raw.rstrip(b"\0").decode("utf-8", "surrogateescape")
    except SummaryError:
        raise
    except Exception as err:  # bad values: the summary is damaged
        raise SummaryError(f"{where}: unreadable: {' '.join(str(err).split())}") from err


def load_bytes(buf: bytes_reader.Buffer, base: int, addr: int, where: str) -> tuple[Table, str]:
    """The table and its stored digest of the summary group at ``addr``, read by h5guard's
    byte reader (no libhdf5).

    Raises
    ------
    SummaryError
        The summary is malformed.
    bytes_reader.Unsupported, bytes_reader.Malformed
        The byte reader cannot read the group.
    """
    datasets, attrs = bytes_reader.flat_group_arrays(buf, base, addr)
    return load_arrays(datasets, attrs, where)


def mapped(f: h5py.File, where: str) -> Table | None:
    """``f``'s summary read by the byte reader from the file libhdf5 has open, when its
    digest verifies; None when it cannot say (no summary, a layout the byte reader
    does not parse, no map of the file): read it through libhdf5 then.

    A merge reads every new shard's summary: h5py's reads of its dozen small datasets
    cost several times the parse. The digest is checked here (the libhdf5 read in a
    merge is not), so a table this returns is the one its writer digested.

    Raises
    ------
    SummaryError
        The table read does not give its stored digest.
    """
    link = NAME.encode()
    try:
        if f.id.get_access_plist().get_driver() != h5py.h5fd.SEC2:
            return None  # no file descriptor to map
        if not f.id.links.exists(link):
            return None
        info = f.id.links.get_info(link)
        if info.type != h5py.h5l.TYPE_HARD:
            return None
        # The descriptor libhdf5 reads: the very file the groups are copied from. Every
        # value is copied out of the map (bytes objects) before it is closed.
        with mmap.mmap(f.id.get_vfd_handle(), 0, access=mmap.ACCESS_READ) as buf:
            table, stored = load_bytes(buf, bytes_reader.base_address(buf), info.u, where)
    except (bytes_reader.Unsupported, bytes_reader.Malformed, SummaryError) as err:
        log.debug("%s: summary left to libhdf5 (%s)", where, err)
        return None
    except (OSError, ValueError, RuntimeError) as err:  # no map of this file
        log.debug("%s: summary not mapped (%s)", where, err)
        return None
    if table.digest() != stored:
        raise SummaryError(f"{where}: summary digest differs")
    return table


def _table_of(attrs: Mapping[str, Array], read: Callable[[str, int], Array], where: str) -> Table:

    def text(name: str) -> str:
        if name not in attrs:
            raise SummaryError(f"{where}: attribute {name!r} missing")
        return attrs[name].tobytes().rstrip(b"\0").decode("utf-8", "surrogateescape")

    fmt = text(names.FORMAT_ATTR)
    if fmt != FORMAT:
        raise SummaryError(f"{where}: format {fmt!r}, expected {FORMAT!r}")
    if ROWS_ATTR not in attrs:
        raise SummaryError(f"{where}: attribute {ROWS_ATTR!r} missing")
    n = int(np.asarray(attrs[ROWS_ATTR]).reshape(()))
    if n < 0:
        raise SummaryError(f"{where}: {n} rows")
    meta = json.loads(text(COLUMNS_ATTR))
    if not isinstance(meta, list) or not all(
        isinstance(m, list) and len(m) == 3 and all(isinstance(x, str) for x in m) for m in meta
    ):
        raise SummaryError(f"{where}@{COLUMNS_ATTR}: expected a list of [name, kind, dtype]")
    keys = [b.decode("utf-8") for b in _heap_of(read, "key_", where, n)]
    digests = [b.decode("utf-8") for b in _heap_of(read, "digest_", where, n)]
    slots = read("slots", 2)
    if slots.dtype != np.dtype("<i4") or slots.shape != (len(meta), n):
        raise SummaryError(
            f"{where}/slots: expected {len(meta)} x {n} int32, found {slots.shape} {slots.dtype}"
        )
    parts = []
    for i, (name, kind, dtype) in enumerate(meta):
        part = Part(name, kind, dtype, slots[i], np.empty(0))
        if part.variable:
            items = _heap_of(read, f"{i}_", where, n)
            values = np.empty(n, dtype=object)
            if kind == "str":
                values[:] = [b.decode("utf-8", "surrogateescape") for b in items]
            else:
                values[:] = items
        elif _FIXED.get(kind) == dtype or (kind == "numpy" and _numpy_dtype(dtype)):
            values = read(f"{i}_values", 1)
            if values.dtype != np.dtype(dtype) or len(values) != n:
                raise SummaryError(
                    f"{where}/{i}_values: expected {n} {dtype}, found {len(values)} {values.dtype}"
                )
        else:
            raise SummaryError(
                f"{where}: column part {i}: unknown kind {kind!r} of dtype {dtype!r}"
            )
        part.values = values
        parts.append(part)
    return Table(keys, digests, parts)


def _numpy_dtype(text: str) -> bool:
    try:
        dt = np.dtype(text)
    except TypeError:
        return False
    return dt.kind in "biufc" and dt.str == text


# -- checks ----------------------------------------------------------------------------


def problems(table: Table, stored: str, groups: Mapping[str, str | None] | None) -> list[str]:
    """What is wrong with a loaded summary: its digest, and (if given) its agreement with
    the file's result groups (key -> stored digest, None where not known)."""
    out: list[str] = []
    computed = table.digest()
    if computed != stored:
        out.append(f"summary digest differs: stored {stored}, computed {computed}")
    if len(set(table.keys)) != len(table.keys):
        out.append("summary lists a key more than once")
    if groups is not None:
        listed = set(table.keys)
        extra = sorted(listed - set(groups))
        lacking = sorted(set(groups) - listed)
        if extra:
            out.append(
                f"summary lists {len(extra)} key(s) the file has no group for: {_few(extra)}"
            )
        if lacking:
            out.append(f"summary lacks {len(lacking)} result group(s): {_few(lacking)}")
        wrong = sorted(
            k
            for k, d in zip(table.keys, table.digests, strict=True)
            if groups.get(k) is not None and groups[k] != d
        )
        if wrong:
            out.append(
                f"summary row digest differs from the group's h5guard_digest for "
                f"{len(wrong)} key(s): {_few(wrong)}"
            )
    return out


_ADVICE = (
    "re-merge the shards into a new output, or run h5guard salvage on the file "
    "(its groups are checked on their own)"
)


def file_problems(
    f: h5py.File, verified: Mapping[str, str | None], invalid: Iterable[str]
) -> list[str]:
    """What :func:`h5guard.check` reports about ``f``'s summary (nothing if it has none).

    ``verified``: the result groups the check verified, with their stored digests;
    ``invalid``: the ones it found damaged (their rows are compared by key only).
    """
    if NAME not in f:
        return []
    try:
        table = load(f)
        assert table is not None
        stored = stored_digest(f)
    except SummaryError as err:
        return [f"summary unreadable: {err}; {_ADVICE}"]
    groups: dict[str, str | None] = dict(verified)
    groups.update(dict.fromkeys(k for k in invalid if k not in groups))
    return [f"{p}; {_ADVICE}" for p in problems(table, stored, groups)]


def _few(keys: Sequence[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:3])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")


def result_count(f: h5py.File) -> int:
    """How many root members may be results (without listing them)."""
    return int(f.id.get_num_objs()) - (1 if f.id.links.exists(NAME.encode()) else 0)


def result_names(f: h5py.File) -> list[str]:
    """The root members that may be results: every name but the reserved ones."""
    return [n for n in reader.member_names(f.id) if not n.startswith(names.RESERVED_PREFIX)]


# -- rows read from groups ------------------------------------------------------------------


def _kinds(raw: Array | None, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    kinds = json.loads(np.asarray(raw).tobytes().rstrip(b"\0").decode("utf-8"))
    if not isinstance(kinds, dict):
        raise ValueError(f"{where}: {names.KINDS_ATTR} is not an object")
    return {str(k): str(v) for k, v in kinds.items()}


def _values(raw: dict[str, Array], where: str) -> tuple[dict[str, Value], str | None]:
    kinds = _kinds(raw.pop(names.KINDS_ATTR, None), where)
    values = {
        n: reader.stored_value(f"{where}@{n}", a, kinds.get(n))
        for n, a in raw.items()
        if not n.startswith(names.RESERVED_PREFIX)
    }
    return values, kinds.get("")


# Kinds whose value read back is a column (a "numpy" value only when 0-d and not a record).
_SCALAR_KINDS = frozenset(("int", "float", "bool", "complex", "str", "bytes"))


def group_row(group: h5py.Group, key: str) -> tuple[dict[str, Any], str | None]:
    """The row of a stored result and its stored digest, reading only what is a column.

    Attributes are read; a dataset's data only when its kind (from its type, shape and
    ``h5guard_kinds``) makes it a column. Nothing is verified here.
    """
    attrs, _ = _values(reader.read_attrs(group), key)
    members: dict[str, DatasetNode] = {}
    for name in group:
        link = group.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            continue
        obj = group.get(name)
        if not isinstance(obj, h5py.Dataset) or obj.shape is None:
            continue
        own_attrs, own = _values(reader.read_attrs(obj), f"{key}/{name}")
        if own_attrs:
            continue  # read back as a Dataset: no column
        dtype, shape = obj.dtype, tuple(obj.shape)
        kind = own or default_kind(dtype, shape)
        numpy_scalar = kind == "numpy" and shape == () and dtype.kind in "biufcS"
        if kind in _SCALAR_KINDS or numpy_scalar:
            value = reader.stored_value(f"{key}/{name}", reader.read_dataset_array(obj), own)
            members[name] = DatasetNode(value)
    digest = reader.stored_digest(group)
    node = GroupNode(attrs, members)
    if digest is not None and not digest.startswith(names.DIGEST_V2_PREFIX):
        node = reader.v1_strings(node)
    return row_of(node), digest


def table_from_groups(f: h5py.File, keys: Iterable[str] | None = None) -> Table:
    """The summary of ``f``'s result groups (``keys``, or every one), read from the groups."""
    builder = Builder()
    for key in result_names(f) if keys is None else keys:
        group = f.get(key)
        if isinstance(group, h5py.Group):
            row, digest = group_row(group, key)
            builder.add(key, digest, row)
    return builder.table()


# -- the merge -----------------------------------------------------------------------------


def _trusted(f: h5py.File, where: str, *, verify: bool) -> Table | None:
    """``f``'s summary if it reads (and, ``verify``, its digest matches), else None."""
    try:
        table = load(f)
        if table is None:
            return None
        found = problems(table, stored_digest(f), None) if verify else []
    except SummaryError as err:
        found = [str(err)]
        table = None
    if found:
        log.warning("%s: summary not used (%s); its groups are read instead", where, found[0])
        return None
    return table


class Merging:
    """The output's summary as a merge builds it: the existing rows plus the new ones.

    Created on the new output (a copy of the existing one, or empty) before groups are
    copied; :meth:`take` is called with each shard and the keys copied from it,
    :meth:`write` before the file closes. A shard's summary gives its rows in one
    parse by the byte reader (:func:`mapped`), or else in a few dataset reads; a shard
    without one (older, or not written by ShardWriter) or whose summary does not verify
    is read group by group.
    """

    def __init__(self, f: h5py.File, where: str = "output") -> None:
        base = _trusted(f, where, verify=True)
        self._tables = [base if base is not None else table_from_groups(f)]

    def take(self, src: h5py.File, keys: Sequence[str], where: str = "shard") -> None:
        if not keys:
            return
        # The libhdf5 read is not re-verified: the merge copies only from shards it
        # validated, whose seal matched (the bytes the writer summarised) or whose deep
        # check verified the summary with the groups (SUMMARY_MISMATCH is an error:
        # quarantined). The byte reader's read checks the digest all the same.
        try:
            table = mapped(src, where)
            if table is None:
                table = _trusted(src, where, verify=False)
        except SummaryError as err:
            log.warning("%s: summary not used (%s); its groups are read instead", where, err)
            table = None
        if table is not None and table.keys == list(keys):
            self._tables.append(table)
        elif table is not None and set(keys) <= set(table.keys):
            self._tables.append(table.select(keys))
        else:
            self._tables.append(table_from_groups(src, keys))

    def write(self, f: h5py.File) -> None:
        write_table(f, concat(self._tables))


# -- to pandas -------------------------------------------------------------------------------


def column_order(table: Table) -> list[str]:
    """Column names in the order a DataFrame built row by row has them: by first row,
    then by position in that row."""
    first: dict[str, tuple[int, int]] = {}
    for part in table.parts:
        present = np.flatnonzero(part.slot >= 0)
        if present.size:
            at = (int(present[0]), int(part.slot[present[0]]))
            if part.name not in first or at < first[part.name]:
                first[part.name] = at
    return sorted(first, key=first.__getitem__)


def frame(table: Table, pd: Any) -> Any:
    """The DataFrame of ``table``: the same as built from the rows of its results."""
    index = pd.Index(table.keys, name="key")
    by_name: dict[str, list[Part]] = {}
    for part in table.parts:
        by_name.setdefault(part.name, []).append(part)
    order = column_order(table)
    if not order:
        return pd.DataFrame([{} for _ in table.keys], index=index)
    columns = {name: _column(by_name[name], table.rows, pd) for name in order}
    out = pd.DataFrame(columns)
    out.index = index
    return out


def _column(parts: list[Part], n: int, pd: Any) -> Any:
    if len(parts) == 1:
        fast = _FAST.get(parts[0].kind)
        if fast is not None:
            return fast(parts[0], pd)
    # Anything else is given to pandas as the rows are: it infers the column's dtype
    # (and its quirks: a complex infj becomes nan+infj).
    cells: list[dict[str, Any]] = [{} for _ in range(n)]
    name = parts[0].name
    for part in parts:
        present = np.flatnonzero(part.slot >= 0)
        values = part.values[present]
        for i, v in zip(present.tolist(), _python(part, values), strict=True):
            cells[i] = {name: v}
    return pd.DataFrame(cells, columns=[name])[name]


def _python(part: Part, values: Array) -> list[Any]:
    if part.kind == "numpy":
        if part.dtype == _NUMPY_BYTES:
            return [np.bytes_(v) for v in values]
        return list(values)  # numpy scalars of the part's dtype
    out: list[Any] = values.tolist()
    return out  # Python int, float, bool, complex, str, bytes


def _missing(part: Part) -> Array:
    return part.slot < 0


def _fast_number(part: Part, pd: Any) -> Any:
    missing = _missing(part)
    if not missing.any():
        return pd.Series(part.values)
    out = part.values.astype(np.float64)  # pandas makes numbers with gaps float64
    out[missing] = np.nan
    return pd.Series(out)


def _fast_object(part: Part, pd: Any) -> Any:
    missing = _missing(part)
    if part.kind == "bool":
        if not missing.any():
            return pd.Series(part.values)
        out = np.empty(len(part.values), dtype=object)
        out[:] = part.values.tolist()
    else:
        out = part.values.copy()
    out[missing] = np.nan
    if part.kind == "str":
        return pd.Series(out, dtype="str")
    return pd.Series(out, dtype=object)


_FAST: dict[str, Callable[[Part, Any], Any]] = {
    "int": _fast_number,
    "float": _fast_number,
    "bool": _fast_object,
    "str": _fast_object,
    "bytes": _fast_object,
}
