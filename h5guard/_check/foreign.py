"""Files h5guard did not write, in the deep layer: one walk over every object, once.

What "libhdf5 reads the file completely" means here, and so what a foreign file must
survive to pass ``h5guard check``:

* every object reachable from the start group by hard links is visited exactly once,
  identified by its address (hard-link cycles and shared objects are no problem);
* libhdf5 is asked for each object's info (``H5Oget_info``: the whole object header);
* every attribute of every object is opened by index and read, then opened again by
  name, which goes through the name index of dense attribute storage;
* every allocated chunk (or the contiguous or compact storage) of every dataset is
  read through the filter pipeline, in blocks of at most :data:`READ_BLOCK` bytes that
  may split any axis; chunks that were never written are not read (they hold nothing
  but the fill value) and are counted in a note;
* soft, external and user-defined links, committed datatypes, data stored in other
  files (external storage, virtual datasets with sources elsewhere) are reported the
  same way at every depth, as notes: they are not damage, and they are not followed.

With a schema, the walk keeps what it read of every group below the root (attributes,
datasets' dtypes, shapes, finiteness and attributes, subgroups) and each top-level group
is described as a :class:`~h5guard.schema.GroupInfo`, the same description h5guard's
own readers give, and checked through :meth:`h5guard.Schema.check_group`: nested rules
apply to foreign files exactly as to h5guard's. (An object reached through two hard
links is read once, and described where it was first reached.)

Each problem becomes a finding; the walk itself never raises for a bad file. It is
written against h5py's low-level API because the high-level objects cost more than
the reads of a small file, and because the walk must control exactly what is read.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5guard._check.inspector import Inspector, one_line
from h5guard._format.names import READ_BLOCK
from h5guard.report import Code, Finding, Severity
from h5guard.schema import DatasetInfo, FrozenMap, GroupInfo

log = logging.getLogger(__name__)

MAX_ATTR_FAILURES_SHOWN = 1  # further failures of one object are counted, not listed

# Registered HDF5 filter ids (https://github.com/HDFGroup/hdf5_plugins/blob/master/docs/RegisteredFilterPlugins.md)
FILTER_NAMES: dict[int, str] = {
    1: "deflate",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    305: "lzo",
    307: "bzip2",
    32000: "lzf",
    32001: "blosc",
    32002: "mafisc",
    32003: "snappy",
    32004: "lz4",
    32005: "apax",
    32006: "cbf",
    32007: "jpeg-xr",
    32008: "bitshuffle",
    32009: "spdp",
    32010: "lpc-rice",
    32011: "ccsds-123",
    32012: "jpeg-ls",
    32013: "zfp",
    32014: "fpzip",
    32015: "zstd",
    32016: "b3d",
    32017: "sz",
    32018: "fcidecomp",
    32019: "jpeg",
    32020: "vbz",
    32021: "fapec",
    32022: "bitgroom",
    32023: "granularbr",
    32024: "sz3",
    32025: "delta-rice",
    32026: "blosc2",
    32027: "flac",
    32028: "sperr",
    32033: "htj2k",
}
# The filters the ``hdf5plugin`` package (PyPI) registers when imported (its FILTERS).
HDF5PLUGIN_FILTERS = frozenset(
    {307, 32001, 32004, 32008, 32013, 32015, 32017, 32018, 32024, 32026, 32028, 32033}
)


def _decode(name: bytes | str) -> str:
    return name.decode("utf-8", errors="replace") if isinstance(name, bytes) else name


def _shown(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _join(where: str, name: bytes) -> str:
    return ("" if where == "/" else where) + "/" + _decode(name)


# -- blocks -----------------------------------------------------------------------------
def block_shape(shape: tuple[int, ...], itemsize: int, limit: int = READ_BLOCK) -> tuple[int, ...]:
    """The largest C-ordered block of ``shape`` that holds at most ``limit`` bytes.

    Whole trailing axes while they fit, then a part of the next axis, then 1 on every
    leading axis: a block is one contiguous run in C order, and any axis may be split
    (a huge single row is read in pieces too).
    """
    budget = max(1, limit // max(1, itemsize))
    out = [1] * len(shape)
    for axis in range(len(shape) - 1, -1, -1):
        n = max(1, shape[axis])
        if n <= budget:
            out[axis] = n
            budget //= n
        else:
            out[axis] = max(1, budget)
            break
    return tuple(out)


def iter_regions(
    start: tuple[int, ...], stop: tuple[int, ...], block: tuple[int, ...]
) -> Iterator[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(offset, count)`` of the blocks that tile the box ``start``..``stop``."""
    if any(b <= 0 for b in block) or any(e <= s for s, e in zip(start, stop, strict=True)):
        return
    ranges = [range(s, e, b) for s, e, b in zip(start, stop, block, strict=True)]

    def rec(axis: int, offset: list[int]) -> Iterator[tuple[tuple[int, ...], tuple[int, ...]]]:
        if axis == len(ranges):
            count = tuple(min(b, e - o) for o, b, e in zip(offset, block, stop, strict=True))
            yield tuple(offset), count
            return
        for o in ranges[axis]:
            yield from rec(axis + 1, [*offset, o])

    yield from rec(0, [])


# -- results ----------------------------------------------------------------------------
@dataclass
class DatasetRead:
    """What reading one dataset found (for a schema; the walk keeps it only if asked)."""

    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    all_finite: bool = True
    attrs: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    mtype: Any = None  # the HDF5 memory type of a type h5py cannot decode (read raw)


@dataclass
class WalkStats:
    objects: int = 0
    datasets: int = 0
    attributes: int = 0
    bytes_read: int = 0
    chunks_read: int = 0
    chunks_unallocated: int = 0


@dataclass
class Walk:
    """Walks one open file; collects findings. ``finite``: check datasets for NaN/inf.

    ``keep``: for each group below the start group (at any depth), its subgroups and,
    with ``keep_values``, its attributes and the dtype/shape/attributes of its datasets,
    so that :meth:`describe` can give a schema the group's description.
    """

    path: str
    fid: Any
    finite: bool = False
    keep: bool = False
    keep_values: bool = True
    allow_external: bool = False  # read raw data stored in other files (external, VDS)
    findings: list[Finding] = field(default_factory=list)
    stats: WalkStats = field(default_factory=WalkStats)
    # The file holds region references, whose reading is known to damage the heap:
    # a sandbox child should not read another file (errors are judged by the caller).
    tainted: bool = False
    kept_attrs: dict[str, dict[str, npt.NDArray[Any]]] = field(default_factory=dict)
    kept_datasets: dict[str, dict[str, DatasetRead]] = field(default_factory=dict)
    kept_groups: dict[str, list[str]] = field(default_factory=dict)  # path -> subgroup names
    _seen: set[tuple[int, int]] = field(default_factory=set)
    _plugins_tried: bool = False

    def add(self, obj: str, code: Code, message: str, severity: Severity = Severity.ERROR) -> None:
        self.findings.append(Finding(self.path, obj, code, severity, message))

    def describe(self, where: str) -> GroupInfo:
        """What a kept group holds, for a schema (see ``keep``)."""
        datasets = {
            name: DatasetInfo(r.dtype, r.shape, r.all_finite, FrozenMap(r.attrs))
            for name, r in self.kept_datasets.get(where, {}).items()
        }
        groups = {
            name: self.describe(f"{where}/{name}") for name in self.kept_groups.get(where, [])
        }
        return GroupInfo(
            FrozenMap(datasets), FrozenMap(self.kept_attrs.get(where, {})), FrozenMap(groups)
        )

    # -- traversal ------------------------------------------------------------------
    def run(self, start: Any, where: str = "/") -> None:
        """Visit ``start`` (an open object id) and everything below it by hard links."""
        # (parent group, link name, path, depth); a member is opened only when its turn
        # comes, so a group of a million members does not hold a million open objects.
        stack: list[tuple[Any, bytes | None, str, int]] = [(start, None, where, 0)]
        while stack:
            parent, link, name, depth = stack.pop()
            try:
                obj = parent if link is None else h5py.h5o.open(parent, link)
            except Exception as err:
                self.add(name, Code.OBJECT_UNREADABLE, f"cannot be opened: {one_line(err)}")
                continue
            try:
                children = self._visit(obj, name, depth)
            except MemoryError:
                self.add(
                    name,
                    Code.MEMORY_LIMIT,
                    "reading it needs more memory than the reader's limit (damaged sizes?)",
                )
                continue
            except Exception as err:  # a walk never raises for a bad file
                self.add(name, Code.OBJECT_UNREADABLE, f"unreadable: {one_line(err)}")
                continue
            # Reversed, so that members are visited in name order (a stack pops the last).
            stack.extend(reversed(children))

    def _visit(self, obj: Any, where: str, depth: int) -> list[tuple[Any, bytes | None, str, int]]:
        try:
            info = h5py.h5o.get_info(obj)
        except Exception as err:
            self.add(where, Code.OBJECT_UNREADABLE, f"object header unreadable: {one_line(err)}")
            return []
        key = (int(info.fileno), int(info.addr))
        if key in self._seen:
            return []  # another hard link to an object already read (or a cycle)
        self._seen.add(key)
        self.stats.objects += 1
        keep = self.keep and depth >= 1
        attrs = self.read_attributes(
            obj, where, int(info.num_attrs), keep=keep and self.keep_values
        )
        parent, _, leaf = where.rpartition("/")
        if info.type == h5py.h5o.TYPE_GROUP:
            if keep:
                self.kept_attrs[where] = attrs if attrs is not None else {}
                self.kept_datasets.setdefault(where, {})
                self.kept_groups.setdefault(where, [])
                if depth >= 2 and parent in self.kept_groups:
                    self.kept_groups[parent].append(leaf)
            return self._members(obj, where, depth)
        if info.type == h5py.h5o.TYPE_DATASET:
            self.stats.datasets += 1
            read = self.read_dataset(obj, where)
            if read is not None and keep and parent in self.kept_datasets:
                read.attrs = attrs if attrs is not None else {}
                self.kept_datasets[parent][leaf] = read
            return []
        if info.type == h5py.h5o.TYPE_NAMED_DATATYPE:
            self.add(
                where,
                Code.COMMITTED_DATATYPE,
                "committed datatype (a type shared by name, not data): its attributes were read",
                Severity.INFO,
            )
            return []
        self.add(where, Code.OBJECT_UNREADABLE, f"object of unknown type {int(info.type)}")
        return []

    def _members(
        self, gid: Any, where: str, depth: int
    ) -> list[tuple[Any, bytes | None, str, int]]:
        try:
            # What h5py's ``attrs`` asks first (creation-order tracking); a damaged
            # group-creation message (e.g. its link filter pipeline) fails here.
            gid.get_create_plist()
        except Exception as err:
            self.add(where, Code.OBJECT_UNREADABLE, f"group properties unreadable: {one_line(err)}")
        links: list[tuple[bytes, int]] = []

        def collect(name: bytes, linfo: Any) -> None:
            links.append((name, int(linfo.type)))  # h5py reuses the LinkInfo object

        try:
            gid.links.iterate(collect, info=True)
        except Exception as err:
            self.add(where, Code.OBJECT_UNREADABLE, f"member list unreadable: {one_line(err)}")
        children: list[tuple[Any, bytes | None, str, int]] = []
        for name, kind in links:
            child = _join(where, name)
            if kind == h5py.h5l.TYPE_HARD:
                children.append((gid, name, child, depth + 1))
            elif kind == h5py.h5l.TYPE_SOFT:
                self.add(child, Code.LINK_NOT_FOLLOWED, self._soft(gid, name), Severity.INFO)
            elif kind == h5py.h5l.TYPE_EXTERNAL:
                self.add(child, Code.LINK_NOT_FOLLOWED, self._external(gid, name), Severity.INFO)
            else:
                self.add(
                    child,
                    Code.LINK_NOT_FOLLOWED,
                    f"user-defined link (type {kind}): not followed",
                    Severity.INFO,
                )
        return children

    @staticmethod
    def _soft(gid: Any, name: bytes) -> str:
        try:
            target = _decode(gid.links.get_val(name))
        except Exception as err:
            return f"soft link (target unreadable: {one_line(err)}): not followed"
        return f"soft link to {target}: not followed (an object in the file is read through its hard link)"

    @staticmethod
    def _external(gid: Any, name: bytes) -> str:
        try:
            filename, objpath = gid.links.get_val(name)
        except Exception as err:
            return f"external link (target unreadable: {one_line(err)}): not followed"
        return (
            f"external link to {_decode(filename)}:{_decode(objpath)}: not followed (another file)"
        )

    # -- attributes -----------------------------------------------------------------
    def read_attributes(
        self, obj: Any, where: str, count: int, *, keep: bool = False
    ) -> dict[str, npt.NDArray[Any]] | None:
        """Walk the attribute storage, then open and read each attribute by name.

        Iterating walks the attribute storage (the object header's messages, or for
        dense storage its fractal heap) once; opening by name goes through the name
        index (for dense storage, a v2 B-tree of its own) that ``obj.attrs[name]``
        uses. Both are linear in the number of attributes: opening by *index* on the
        name index is quadratic in libhdf5 (10,000 attributes took minutes). If the
        walk fails part-way, the attributes past the damage are looked for by index.
        Returns the values when ``keep``; None when something failed.
        """
        out: dict[str, npt.NDArray[Any]] = {}
        failures: list[str] = []
        names: list[bytes] = []
        try:
            h5py.h5a.iterate(obj, names.append)
        except Exception as err:
            failures.append(
                f"attribute storage unreadable after {len(names)} of {count} attribute(s): "
                f"{one_line(err)}"
            )
            names.extend(self._names_by_index(obj, len(names), count, failures))
        else:
            if len(names) != count:
                failures.append(
                    f"the object header counts {count} attribute(s), its storage holds {len(names)}"
                )
        for name in names:
            try:
                aid = h5py.h5a.open(obj, name)
                if aid.name != name:
                    raise ValueError(f"opened by name, it calls itself {_decode(aid.name)!r}")
            except Exception as err:
                failures.append(
                    f"attribute {_decode(name)!r} cannot be opened by name: {one_line(err)}"
                )
                continue
            try:
                value = self._read_attr(aid, where)
                self.stats.attributes += 1
                if keep:
                    out[_decode(name)] = value
            except MemoryError:
                raise
            except Exception as err:
                failures.append(f"attribute {_decode(name)!r} unreadable: {one_line(err)}")
        if failures:
            shown = "; ".join(failures[:MAX_ATTR_FAILURES_SHOWN])
            more = len(failures) - MAX_ATTR_FAILURES_SHOWN
            suffix = f" (and {more} more attribute failure(s))" if more > 0 else ""
            self.add(where, Code.OBJECT_UNREADABLE, shown + suffix)
            return None
        return out

    @staticmethod
    def _names_by_index(obj: Any, start: int, count: int, failures: list[str]) -> list[bytes]:
        """Names of attributes ``start``.. ``count``, opened by index (damaged storage only)."""
        found: list[bytes] = []
        for index in range(start, count):
            try:
                found.append(h5py.h5a.open(obj, index=index).name)
            except Exception as err:
                failures.append(f"attribute #{index} unreadable: {one_line(err)}")
        return found

    def _read_attr(self, aid: Any, where: str) -> npt.NDArray[Any]:
        shape = aid.shape
        dtype, raw = self._dtype(aid, where, f"attribute {_decode(aid.name)!r}")
        self._note_references(dtype)
        if shape is None:  # a null dataspace: there is no value
            return np.zeros(0, dtype=dtype)
        buf, mtype = _buffer(tuple(int(n) for n in shape), dtype)
        if buf.size:
            aid.read(buf, mtype=raw or mtype)
        return buf

    def _note_references(self, dtype: np.dtype[Any]) -> None:
        if _has_region_references(dtype):
            # Reading dataset region references makes libhdf5 allocate dataspaces that
            # h5py frees later; on some files (valid ones too) the next read in the same
            # process finds a corrupted heap (seen with h5py 3.16 / HDF5 2.0).
            self.tainted = True

    # -- datasets -------------------------------------------------------------------
    def _dtype(self, oid: Any, where: str, what: str) -> tuple[np.dtype[Any], Any]:
        """The numpy dtype to read ``oid`` with, and the memory type (None: h5py's).

        A type h5py has no numpy equivalent for (``H5T_TIME``, as PyTables' Time64
        columns use, or a compound holding one) is not damage: it is read as raw
        bytes of the file's own type (no conversion), so its storage is still read
        through the filters. It is still an error, named for what it is: an h5py user
        cannot get these values back, and a check that passed would say they can.
        """
        try:
            return oid.dtype, None
        except (TypeError, ValueError) as err:
            tid = oid.get_type()  # raises on a damaged datatype message: unreadable
            self.add(
                where,
                Code.UNSUPPORTED_TYPE,
                f"{what} of HDF5 type {_type_name(tid)}, which h5py cannot decode "
                f"({one_line(err)}): not damage (its bytes were read through the filters), "
                "but its values cannot be read with h5py; use a reader that knows the type",
                Severity.ERROR,
            )
            return np.dtype(f"V{max(1, tid.get_size())}"), tid

    def read_dataset(self, dsid: Any, where: str) -> DatasetRead | None:
        try:
            dtype, mtype = self._dtype(dsid, where, "dataset")
            space = dsid.get_space()
            shape = tuple(int(n) for n in space.shape) if space.shape is not None else None
            dcpl = dsid.get_create_plist()
        except Exception as err:
            self.add(where, Code.OBJECT_UNREADABLE, f"dataset unreadable: {one_line(err)}")
            return None
        self._note_references(dtype)
        if shape is None:  # null dataspace: no data
            return DatasetRead(dtype, ())
        result = DatasetRead(dtype, shape, mtype=mtype)
        if math.prod(shape) == 0:
            return result
        try:
            self._read_storage(dsid, dcpl, dtype, shape, where, result)
        except MemoryError:
            raise
        except Exception as err:
            missing = self._missing_filters(dcpl)
            if missing:
                self.add(where, Code.FILTER_MISSING, _missing_message(missing))
            elif _out_of_memory(err):
                self.add(
                    where,
                    Code.MEMORY_LIMIT,
                    f"reading it needs more memory than the reader's limit: {one_line(err)}",
                )
            else:
                self.add(where, Code.OBJECT_UNREADABLE, f"data unreadable: {one_line(err)}")
            return None
        return result

    def _read_storage(
        self,
        dsid: Any,
        dcpl: Any,
        dtype: np.dtype[Any],
        shape: tuple[int, ...],
        where: str,
        result: DatasetRead,
    ) -> None:
        layout = dcpl.get_layout()
        if dcpl.get_external_count() > 0:
            if not self.allow_external:
                self._external_storage(dcpl, where)
                return
            names = [_decode(dcpl.get_external(i)[0]) for i in range(dcpl.get_external_count())]
            self.add(
                where,
                Code.EXTERNAL_DATA,
                f"raw data stored in {len(names)} external file(s) ({_shown(names)}): read "
                "(external data allowed)",
                Severity.INFO,
            )
            self._read_box(dsid, dtype, shape, (0,) * len(shape), shape, result)
            return
        if layout == h5py.h5d.VIRTUAL:
            sources = sorted(
                {_decode(dcpl.get_virtual_filename(i)) for i in range(dcpl.get_virtual_count())}
                - {"."}
            )
            if sources:
                how = "read (external data allowed)" if self.allow_external else "not read"
                self.add(
                    where,
                    Code.EXTERNAL_DATA,
                    f"virtual dataset with sources in {len(sources)} other file(s) "
                    f"({_shown(sources)}): {how}",
                    Severity.INFO,
                )
                if not self.allow_external:
                    return
        itemsize = max(1, dtype.itemsize)
        nbytes = math.prod(shape) * itemsize
        if layout == h5py.h5d.CHUNKED:
            chunk = tuple(int(n) for n in dcpl.get_chunk())
            total = math.prod(-(-n // c) for n, c in zip(shape, chunk, strict=True))
            self._plugins_for(dcpl)
            allocated = int(dsid.get_num_chunks())
            unallocated = max(0, total - allocated)
            if unallocated:
                self.stats.chunks_unallocated += unallocated
                self.add(
                    where,
                    Code.UNALLOCATED_DATA,
                    f"{unallocated} of {total} chunk(s) never written (they hold only the "
                    "fill value): not read",
                    Severity.INFO,
                )
            if nbytes <= READ_BLOCK:
                # libhdf5 reads the allocated chunks and fills the rest in memory.
                self._read_box(dsid, dtype, shape, (0,) * len(shape), shape, result)
                self.stats.chunks_read += allocated
                return
            chunk_bytes = math.prod(chunk) * itemsize
            if allocated == total and chunk_bytes <= READ_BLOCK:
                # Blocks of whole chunks: each chunk is decompressed once (a block that
                # cut through chunks bigger than the chunk cache would decompress them
                # once per block).
                grid = tuple(-(-n // c) for n, c in zip(shape, chunk, strict=True))
                in_chunks = block_shape(grid, chunk_bytes)
                block = tuple(g * c for g, c in zip(in_chunks, chunk, strict=True))
                zero = (0,) * len(shape)
                self._read_box(dsid, dtype, shape, zero, shape, result, block=block)
                self.stats.chunks_read += allocated
                return
            offsets: list[tuple[int, ...]] = []
            dsid.chunk_iter(lambda info: offsets.append(tuple(int(n) for n in info.chunk_offset)))
            for offset in offsets:
                stop = tuple(min(n, o + c) for n, o, c in zip(shape, offset, chunk, strict=True))
                self._read_box(dsid, dtype, shape, offset, stop, result)
                self.stats.chunks_read += 1
            return
        if layout == h5py.h5d.CONTIGUOUS and dsid.get_storage_size() == 0:
            self.add(
                where,
                Code.UNALLOCATED_DATA,
                "storage never written (the dataset holds only its fill value): not read",
                Severity.INFO,
            )
            return
        self._read_box(dsid, dtype, shape, (0,) * len(shape), shape, result)

    def _read_box(
        self,
        dsid: Any,
        dtype: np.dtype[Any],
        shape: tuple[int, ...],
        start: tuple[int, ...],
        stop: tuple[int, ...],
        result: DatasetRead,
        *,
        block: tuple[int, ...] | None = None,
    ) -> None:
        check = self.finite and dtype.kind in "fc"
        if not shape:  # scalar
            buf, mtype = _buffer((), dtype)
            dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, buf, mtype=result.mtype or mtype)
            self._account(buf, check, result)
            return
        itemsize = dtype.itemsize if dtype.kind != "O" else 16
        if block is None:
            block = block_shape(tuple(e - s for s, e in zip(start, stop, strict=True)), itemsize)
        if start == (0,) * len(shape) and stop == shape and block == shape:
            buf, mtype = _buffer(shape, dtype)
            dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, buf, mtype=result.mtype or mtype)
            self._account(buf, check, result)
            return
        fspace = dsid.get_space()
        for offset, count in iter_regions(start, stop, block):
            fspace.select_hyperslab(offset, count)
            buf, mtype = _buffer(count, dtype)
            mspace = h5py.h5s.create_simple(count)
            dsid.read(mspace, fspace, buf, mtype=result.mtype or mtype)
            self._account(buf, check, result)

    def _external_storage(self, dcpl: Any, where: str) -> None:
        """Raw data in other files: missing ones are an error; present ones are not read
        (another file, which a check of this one does not vouch for)."""
        base = os.path.dirname(os.path.abspath(self.path))
        names = [_decode(dcpl.get_external(i)[0]) for i in range(dcpl.get_external_count())]
        missing = [
            n for n in names if not os.path.exists(n if os.path.isabs(n) else os.path.join(base, n))
        ]
        if missing:
            self.add(
                where,
                Code.OBJECT_UNREADABLE,
                f"raw data stored in external file(s) that do not exist: {', '.join(missing[:3])}",
            )
            return
        self.add(
            where,
            Code.EXTERNAL_DATA,
            f"raw data stored in {len(names)} external file(s) ({_shown(names)}): not read "
            "(--allow-external reads it)",
            Severity.INFO,
        )

    def _account(self, buf: npt.NDArray[Any], check: bool, result: DatasetRead) -> None:
        self.stats.bytes_read += buf.nbytes
        if check and result.all_finite and not np.isfinite(buf).all():
            result.all_finite = False

    # -- filters --------------------------------------------------------------------
    def _plugins_for(self, dcpl: Any) -> None:
        """Load ``hdf5plugin`` (if installed) the first time a filter is missing."""
        if self._plugins_tried or not _unavailable(dcpl):
            return
        self._plugins_tried = True
        load_plugins()

    def _missing_filters(self, dcpl: Any) -> list[tuple[int, str]]:
        try:
            return _unavailable(dcpl)
        except Exception:
            return []


def _unavailable(dcpl: Any) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for i in range(dcpl.get_nfilters()):
        code, _flags, _values, stored_name = dcpl.get_filter(i)
        try:
            available = bool(h5py.h5z.filter_avail(code))
        except Exception:
            available = False
        if not available:
            name = FILTER_NAMES.get(int(code)) or _decode(stored_name) or "unregistered"
            out.append((int(code), name))
    return out


_PLUGINS: bool | None = None


def load_plugins() -> bool:
    """Import ``hdf5plugin`` once, registering its filters; False if not installed."""
    global _PLUGINS
    if _PLUGINS is None:
        try:
            import hdf5plugin  # noqa: F401  # registers its filters with libhdf5

            _PLUGINS = True
        except ImportError:
            _PLUGINS = False
        except Exception as err:  # a broken install: say so, read without it
            log.warning("hdf5plugin could not be loaded: %s", one_line(err))
            _PLUGINS = False
    return _PLUGINS


def _missing_message(missing: list[tuple[int, str]]) -> str:
    parts = []
    for code, name in missing:
        if code in HDF5PLUGIN_FILTERS:
            how = (
                "the hdf5plugin package provides it, but it did not load"
                if _PLUGINS
                else "the hdf5plugin package provides it (pip install hdf5plugin)"
            )
        else:
            how = "no package h5guard knows provides it (not hdf5plugin)"
        parts.append(f"filter {code} ({name}) is not available: {how}")
    return "data cannot be read or verified: " + "; ".join(parts)


def _out_of_memory(err: BaseException) -> bool:
    """libhdf5's own allocation failures (under the sandbox's address-space limit)."""
    text = str(err).lower()
    return "memory allocation failed" in text or "unable to allocate" in text


_TYPE_CLASSES = {
    h5py.h5t.INTEGER: "integer",
    h5py.h5t.FLOAT: "float",
    h5py.h5t.TIME: "time (H5T_TIME)",
    h5py.h5t.STRING: "string",
    h5py.h5t.BITFIELD: "bitfield",
    h5py.h5t.OPAQUE: "opaque",
    h5py.h5t.COMPOUND: "compound",
    h5py.h5t.REFERENCE: "reference",
    h5py.h5t.ENUM: "enum",
    h5py.h5t.VLEN: "variable-length",
    h5py.h5t.ARRAY: "array",
}


def _type_name(tid: Any, depth: int = 0) -> str:
    """An HDF5 datatype's class, and for a compound the members h5py cannot decode."""
    try:
        cls = int(tid.get_class())
    except Exception:
        return "(unreadable class)"
    name = f"{_TYPE_CLASSES.get(cls, f'class {cls}')} ({tid.get_size()} bytes)"
    if cls == h5py.h5t.COMPOUND and depth < 4:
        bad: list[str] = []
        for i in range(tid.get_nmembers()):
            member = tid.get_member_type(i)
            try:
                member.dtype  # noqa: B018 - does h5py decode it?
            except (TypeError, ValueError):
                bad.append(f"{_decode(tid.get_member_name(i))!r} {_type_name(member, depth + 1)}")
        if bad:
            name += f" with member {', '.join(bad[:3])}"
    elif cls in (h5py.h5t.ARRAY, h5py.h5t.VLEN) and depth < 4:
        name += f" of {_type_name(tid.get_super(), depth + 1)}"
    return name


def _has_region_references(dtype: np.dtype[Any]) -> bool:
    if dtype.fields:
        return any(_has_region_references(f[0]) for f in dtype.fields.values())
    if dtype.subdtype is not None:
        return _has_region_references(dtype.subdtype[0])
    base = h5py.check_dtype(vlen=dtype)
    if isinstance(base, np.dtype):
        return _has_region_references(base)
    return h5py.check_dtype(ref=dtype) is h5py.RegionReference


def _buffer(shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[npt.NDArray[Any], Any]:
    """A read buffer for ``shape`` elements of ``dtype``, and the memory type to read with.

    numpy folds a sub-array dtype into the array's shape (``np.empty(3, "(2,)i4")`` is a
    (3, 2) int32 array), so the memory type must be given explicitly: the array type,
    not the base type numpy leaves on the buffer.
    """
    if dtype.subdtype is not None:
        base, sub = dtype.subdtype
        return np.empty(shape + sub, dtype=base), h5py.h5t.py_create(dtype)
    return np.empty(shape, dtype=dtype), None


# -- the deep layer on a foreign file ------------------------------------------------


def inspect_foreign(ins: Inspector, f: h5py.File, *, allow_external: bool = False) -> bool:
    """The whole file through one walk; top-level groups then get the schema.

    ``allow_external``: read raw data the file keeps in other files too.
    """
    schema = ins.schema
    walk = Walk(
        ins.path,
        f.id,
        finite=schema is not None and schema.any_finite(),
        keep=True,
        keep_values=schema is not None,
        allow_external=allow_external,
    )
    try:
        root = h5py.h5o.open(f.id, b"/")  # the root group itself, not the file
    except Exception as err:
        ins.add("/", Code.UNREADABLE, f"root group unreadable: {one_line(err)}")
        return False
    walk.run(root, "/")
    ins.findings.extend(walk.findings)
    ins.tainted = ins.tainted or walk.tainted
    bad = [x.obj for x in walk.findings if x.severity >= Severity.WARNING]
    top = [w for w in walk.kept_groups if w.count("/") == 1]
    for where in sorted(top, key=lambda w: w.encode("utf-8")):
        key = where[1:]
        if any(obj == where or obj.startswith(where + "/") for obj in bad):
            ins.invalid.append(key)  # damaged: a schema verdict would say nothing more
            continue
        violations = schema.check_group(walk.describe(where)) if schema is not None else []
        ins.settle(key, None, None, violations)
    root_damaged = any(x.obj == "/" and x.severity is Severity.ERROR for x in walk.findings)
    return not root_damaged


def note_foreign(ins: Inspector) -> None:
    if not ins.owned:
        ins.add(
            "/",
            Code.NO_DIGESTS,
            "not written by h5guard: readable, but silent data damage cannot be ruled out",
            Severity.INFO,
        )
