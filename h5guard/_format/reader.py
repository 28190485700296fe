"""The one h5py reader of h5guard's results: attributes, values, trees, streamed digests.

:func:`read_tree` gives the tree stored in a group (what :func:`h5guard.read` returns,
once verified); :func:`verify_tree` computes the v2 digest of a stored result while it
streams big datasets block by block, and describes the group for a schema: the check
(:mod:`h5guard._check.own`) and the merge's verification of copied groups
(:func:`h5guard._check.own.verify_groups`) both read through it. Salvage reads damaged
files through :func:`read_tree` too.

Every reader here works on h5py's low-level identifiers: the high-level wrappers cost more
libhdf5 round trips than the values themselves (a ``Dataset`` reads its creation property
list and filter pipeline when it is made, ``Group.get(name, getlink=True)`` and
``group[name]`` look the name up twice). A group's links are listed once, with their types,
by one iteration; only hard links are opened, so a soft or external link in a result is
refused before anything follows it. :func:`read_result` reads a result and computes its
digest in the same walk.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5guard._format import digest as digests
from h5guard._format.names import (
    DIGEST_ATTR,
    DIGEST_V2_PREFIX,
    KINDS_ATTR,
    MAX_CACHED_IDS,
    MAX_DEPTH,
    READ_BLOCK,
    RESERVED_PREFIX,
)
from h5guard._format.tree import (
    DatasetNode,
    GroupNode,
    Node,
    Value,
    check_kind,
    default_kind,
    resolve_kind,
    stored_nbytes,
    utf8_bytes,
    utf8_dtype,
)
from h5guard.schema import DatasetInfo, FrozenMap, GroupInfo

# -- attributes and datasets -------------------------------------------------------------


def iter_blocks(dset: h5py.Dataset) -> Iterator[npt.NDArray[Any]]:
    """Read a dataset as C-ordered blocks of whole rows, at most READ_BLOCK bytes.

    Big datasets are read into two buffers used in turn (fresh 16 MiB arrays cost their
    page faults on every block): a block stays valid until the one after the next is
    requested, which is what a reader hashing one block while reading the next needs.
    """
    if dset.ndim == 0 or dset.nbytes <= READ_BLOCK:
        # Into an array of the stored dtype: dset[()] of a scalar fixed-length string
        # returns bytes with its trailing NULs stripped, which would change the digest.
        whole: npt.NDArray[Any] = np.empty(dset.shape, dtype=dset.dtype)
        if whole.size:
            dset.id.read(h5py.h5s.ALL, h5py.h5s.ALL, whole)
        yield whole
        return
    shape = tuple(int(n) for n in dset.shape)
    row_bytes = max(1, dset.nbytes // max(1, shape[0]))
    rows = max(1, READ_BLOCK // row_bytes)
    buffers: list[npt.NDArray[Any]] = []
    for i, start in enumerate(range(0, shape[0], rows)):
        stop = min(shape[0], start + rows)
        if len(buffers) < 2:
            buffers.append(np.empty((rows, *shape[1:]), dtype=dset.dtype))
        block = buffers[i % 2][: stop - start]
        dset.read_direct(block, source_sel=np.s_[start:stop])
        yield block


_MTYPES: dict[tuple[np.dtype[Any], str | None], h5py.h5t.TypeID] = {}


def _mtype(dtype: np.dtype[Any]) -> h5py.h5t.TypeID | None:
    """The memory type h5py's ``read`` would make for ``dtype``, made once per dtype.

    ``read(arr)`` without a type calls ``h5t.py_create(arr.dtype)`` every time (a new
    libhdf5 type per value read). The cached type is that same ``py_create`` result, so
    libhdf5 converts exactly as before. Only plain numbers and fixed-length strings are
    cached: numpy's dtype equality ignores metadata, where h5py keeps a string's encoding
    (part of the key) and enum members (not cached); anything else gets h5py's own type
    (None).
    """
    if dtype.kind not in "biufcS" or dtype.names is not None or dtype.subdtype is not None:
        return None
    metadata = dtype.metadata
    encoding: str | None = None
    if metadata is not None:
        if dtype.kind != "S" or set(metadata) != {"h5py_encoding"}:
            return None
        encoding = str(metadata["h5py_encoding"])
    key = (dtype, encoding)
    mtype = _MTYPES.get(key)
    if mtype is None:
        mtype = h5py.h5t.py_create(dtype)
        # Bounded (names.MAX_CACHED_IDS says why): string attributes of ever new lengths,
        # as an index's segment list, would otherwise keep a type alive for each length.
        if len(_MTYPES) < MAX_CACHED_IDS:
            _MTYPES[key] = mtype
    return mtype


def read_attr(obj: h5py.Group | h5py.File | h5py.Dataset, name: str) -> npt.NDArray[Any]:
    """Read an attribute as an array of the stored dtype (strings stay bytes)."""
    return read_attr_id(h5py.h5a.open(obj.id, name.encode("utf-8")))


def read_attrs(obj: h5py.Group | h5py.File | h5py.Dataset) -> dict[str, npt.NDArray[Any]]:
    """Every attribute of ``obj``, opened by index (about twice as fast as by name)."""
    return _attr_arrays(obj.id)


def _attr_arrays(oid: Any) -> dict[str, npt.NDArray[Any]]:
    out: dict[str, npt.NDArray[Any]] = {}
    for index in range(h5py.h5a.get_num_attrs(oid)):
        aid = h5py.h5a.open(oid, index=index)
        out[aid.name.decode("utf-8")] = read_attr_id(aid)
    return out


def read_attr_id(aid: Any) -> npt.NDArray[Any]:
    shape = aid.shape  # each property call is a libhdf5 round trip: ask once
    dtype = aid.dtype
    if shape is None:  # a null dataspace has no value to read
        return np.zeros(0, dtype=dtype)
    out: npt.NDArray[Any] = np.empty(shape, dtype=dtype)
    aid.read(out, mtype=_mtype(dtype))
    return out


def close_file(f: h5py.File) -> None:
    """Close ``f`` and every object of it still open, as :meth:`h5py.File.close` does,
    without its search through every file ID of the process (about 1 ms a file when
    other files are open, more than a small merge spends in an index).

    Nothing else opens the file through another ID, so once its objects are closed its
    own ID is the last and libhdf5 flushes and closes it.
    """
    close_objects = getattr(f.id, "_close_open_objects", None)
    if close_objects is None:  # a private h5py method: another h5py may not have it
        f.close()
    elif f.id.valid:
        close_objects(h5py.h5f.OBJ_LOCAL | ~h5py.h5f.OBJ_FILE)
        f.id.close()


def text_attrs(obj: h5py.Group | h5py.File, wanted: Iterable[str]) -> dict[str, str]:
    """The attributes ``wanted`` of ``obj`` that it has, as :func:`text_attr` gives them.

    By name: opening attributes by position makes libhdf5 sort them all for each one.
    """
    out: dict[str, str] = {}
    for name in wanted:
        text = text_attr(obj, name)
        if text is not None:
            out[name] = text
    return out


def text_attr(obj: h5py.Group | h5py.File, name: str) -> str | None:
    """A string attribute as ``str`` (fixed or variable length), or None if absent."""
    raw = name.encode("utf-8")
    if not h5py.h5a.exists(obj.id, raw):
        return None
    # h5guard's own text attributes are fixed-length scalars: read through the low-level
    # API, a third of the time of h5py's attribute manager (an index merge reads a
    # dozen of them); any other type is converted by h5py as before.
    aid = h5py.h5a.open(obj.id, raw)
    tid = aid.get_type()
    scalar = aid.get_space().get_simple_extent_type() == h5py.h5s.SCALAR
    if scalar and tid.get_class() == h5py.h5t.STRING and not tid.is_variable_str():
        # Into a buffer of the type h5py would read it with (h5py's dtype of the
        # attribute costs as long as the rest of the read together).
        utf8 = tid.get_cset() == h5py.h5t.CSET_UTF8
        size = tid.get_size()
        buf = np.empty((), dtype=h5py.string_dtype("utf-8", size) if utf8 else f"S{size}")
        aid.read(buf, mtype=_mtype(buf.dtype))
        return bytes(buf[()]).decode("utf-8", errors="replace")
    if scalar and tid.get_class() == h5py.h5t.INTEGER:
        return str(read_attr_id(aid)[()])  # as str() of h5py's numpy scalar
    value = obj.attrs[name]
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


# -- result trees -----------------------------------------------------------------------


def _kinds(raw: npt.NDArray[Any] | None, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    try:
        kinds = json.loads(utf8_bytes(np.asarray(raw)).tobytes().rstrip(b"\0").decode("utf-8"))
    except ValueError as err:
        raise ValueError(f"{where}: {KINDS_ATTR} is not JSON: {err}") from err
    if not isinstance(kinds, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in kinds.items()
    ):
        raise ValueError(f"{where}: {KINDS_ATTR} is not an object of strings")
    return kinds


def stored_value(where: str, arr: npt.NDArray[Any], kind: str | None) -> Value:
    """A value read from disk, with the kind its kinds entry (or its type) gives it."""
    if kind is None:
        kind = resolve_kind(default_kind(arr.dtype, arr.shape), arr)
    else:
        check_kind(kind, arr, where)
    return Value(arr, kind)


def _attr_values(
    oid: Any, where: str, own: bool
) -> tuple[dict[str, Value], str | None, npt.NDArray[Any] | None]:
    """The user attributes of an object, its own kind, and its raw digest attribute."""
    raw = _attr_arrays(oid)
    if not raw:  # most datasets: nothing to decode
        return {}, None, None
    kinds = _kinds(raw.pop(KINDS_ATTR, None), where)
    if kinds:
        unknown = set(kinds) - set(raw) - ({""} if own else set())
        if unknown:
            raise ValueError(f"{where}: {KINDS_ATTR} names missing attribute(s) {sorted(unknown)}")
    values = {
        name: stored_value(f"{where}@{name}", arr, kinds.get(name))
        for name, arr in raw.items()
        if not name.startswith(RESERVED_PREFIX)
    }
    return values, kinds.get(""), raw.get(DIGEST_ATTR)


def read_dataset_array(dset: h5py.Dataset) -> npt.NDArray[Any]:
    """All of a dataset as an array of its stored dtype (trailing NULs of strings kept)."""
    return _dataset_array(dset.id, dset.name or "")


def _dataset_array(dsid: Any, where: str) -> npt.NDArray[Any]:
    shape = dsid.shape
    if shape is None:
        raise ValueError(f"{where}: dataset with a null dataspace holds no value")
    dtype = dsid.dtype
    out: npt.NDArray[Any] = np.empty(shape, dtype=dtype)
    if out.size:
        dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, out, mtype=_mtype(dtype))
    return out


_LINK_CLASSES = {h5py.h5l.TYPE_SOFT: "SoftLink", h5py.h5l.TYPE_EXTERNAL: "ExternalLink"}


# Links are listed in the order libhdf5 keeps them in ("native"), then sorted here.
_NATIVE = {"idx_type": h5py.h5.INDEX_NAME, "order": h5py.h5.ITER_NATIVE}
# libhdf5's metadata cache starts at 2 MiB: a group of many links keeps them in a
# B-tree and a heap of about 90 bytes a link, and one pass over 100,000 of them
# (9 MB) evicted and read its blocks again and again: 1.5 s, against 0.13 s with room
# for them all. A listing of a group that big gets room for the whole file (bounded)
# for its duration.
_MANY_LINKS = 2_000
_CACHE_CAP = 128 * 1024 * 1024  # the most libhdf5 allows (H5C__MAX_MAX_CACHE_SIZE)


@contextmanager
def room_for_metadata(fid: Any) -> Iterator[None]:
    """libhdf5's metadata cache of the open file ``fid`` large enough for all of the
    file's metadata (up to 128 MiB) while the block runs, as it was afterwards.

    The cache only holds what is read: the room costs memory only as it is used.
    """
    try:
        size = fid.get_filesize()
        old = fid.get_mdc_config()
    except Exception:  # another driver, a closed file: leave the cache alone
        yield
        return
    want = min(size + size // 4, _CACHE_CAP)
    if want <= old.initial_size:
        yield
        return
    roomy = fid.get_mdc_config()
    roomy.set_initial_size = True
    roomy.initial_size = want
    roomy.max_size = max(old.max_size, want)
    fid.set_mdc_config(roomy)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            old.set_initial_size = True
            old.initial_size = min(old.initial_size, old.max_size)
            fid.set_mdc_config(old)


def _iterate(gid: Any, fn: Any, *, info: bool = False) -> None:
    if gid.get_num_objs() < _MANY_LINKS:
        gid.links.iterate(fn, info=info, **_NATIVE)
        return
    with room_for_metadata(h5py.h5i.get_file_id(gid)):
        gid.links.iterate(fn, info=info, **_NATIVE)


def link_types(gid: Any) -> list[tuple[bytes, int]]:
    """``(name, link type)`` of every link of a group, in name (byte) order, from one
    iteration of its link messages: nothing is opened or followed."""
    found: list[tuple[bytes, int]] = []
    _iterate(gid, lambda name, info: found.append((name, info.type)), info=True)
    found.sort()
    return found


def member_names(gid: Any) -> list[str]:
    """The names of a group's links in name (byte) order, from one iteration of its links.

    ``list(group)`` in h5py asks libhdf5 for each name by its position, which costs more
    the more names there are: listing a million took 12 s, one iteration 1 s, and for
    100,000 links of an index 1.5 s with libhdf5's metadata cache as it starts, 0.13 s
    with room for them (:func:`room_for_metadata`).
    """
    found: list[bytes] = []
    _iterate(gid, found.append)
    found.sort()
    return [name.decode("utf-8") for name in found]


def _members(gid: Any, where: str) -> list[tuple[bytes, str]]:
    """The members of a result group, by name in byte order; a result holds hard links only."""
    out: list[tuple[bytes, str]] = []
    for raw, link in link_types(gid):
        if link != h5py.h5l.TYPE_HARD:
            shown = raw.decode("utf-8", "replace")
            what = _LINK_CLASSES.get(link, "user-defined link")
            raise ValueError(f"{where}/{shown}: {what} in a result (h5guard writes none)")
        try:
            out.append((raw, raw.decode("utf-8")))
        except UnicodeDecodeError:
            shown = raw.decode("utf-8", "replace")
            raise ValueError(f"{where}/{shown}: a member name that is not UTF-8") from None
    return out


def _not_a_member(oid: Any) -> str:
    return "Datatype" if isinstance(oid, h5py.h5t.TypeID) else type(oid).__name__


def read_tree(group: h5py.Group, where: str, depth: int = 0) -> GroupNode:
    """The tree stored in ``group`` (nothing verified yet); raises on anything unreadable."""
    return _tree(group.id, where, depth, None, None)


def read_result(gid: Any, where: str, *, verify: bool) -> tuple[GroupNode, str | None, str | None]:
    """A result group's tree, its stored digest, and (``verify``) the digest it has.

    The v2 digest is computed in the same walk that reads the tree, from the values as
    they are read (what :func:`h5guard._format.digest.digest` of the finished tree
    gives, without a second walk); a v1 group is digested once read. ``verify=False``
    computes nothing (None).
    """
    attrs, _, raw_digest = _attr_values(gid, where, own=False)
    stored = None if raw_digest is None else _digest_text(raw_digest)
    v2 = stored is None or stored.startswith(DIGEST_V2_PREFIX)
    d = digests.TreeDigest() if verify and v2 else None
    node = _tree(gid, where, 0, d, attrs)
    if d is not None:
        return node, stored, d.hexdigest()
    return node, stored, digests.computed_digest(node, stored) if verify else None


def _tree(
    gid: Any,
    where: str,
    depth: int,
    d: digests.TreeDigest | None,
    attrs: dict[str, Value] | None,
) -> GroupNode:
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: groups nested deeper than {MAX_DEPTH}")
    if attrs is None:
        attrs = _attr_values(gid, where, own=False)[0]
    links = _members(gid, where)
    if d is not None:  # the order of docs/format.md, as digest.TreeDigest.node feeds it
        d.field(b"G")
        d.attrs(attrs)
        d.count(len(links))
    members: dict[str, Node] = {}
    for raw, name in links:
        child = f"{where}/{name}"
        oid = h5py.h5o.open(gid, raw)
        if d is not None:
            d.field(raw)
        if isinstance(oid, h5py.h5g.GroupID):
            members[name] = _tree(oid, child, depth + 1, d, None)
        elif isinstance(oid, h5py.h5d.DatasetID):
            dattrs, own, _ = _attr_values(oid, child, own=True)
            value = stored_value(child, _dataset_array(oid, child), own)
            if d is not None:
                d.field(b"D")
                d.attrs(dattrs)
                d.value(value)
            members[name] = DatasetNode(value, dattrs)
        else:
            raise ValueError(f"{child}: {_not_a_member(oid)} in a result")
    return GroupNode(attrs, members)


def verify_tree(group: h5py.Group, key: str, *, finite: bool) -> tuple[str, GroupInfo]:
    """The v2 digest of a stored result, and what a schema check needs of it.

    Like :func:`read_tree` then :func:`h5guard.digest`, but datasets larger than
    ``READ_BLOCK`` are hashed block by block and never held whole (a checker in a
    memory-limited sandbox reads results of any size). ``finite``: scan big float data
    for NaN/inf (what a schema's ``finite`` rule needs; small data is always scanned).
    """
    digest = digests.TreeDigest()
    info = _digest_group(group.id, key, 0, digest, finite)
    return digest.hexdigest(), info


def _digest_group(
    gid: Any, where: str, depth: int, d: digests.TreeDigest, finite: bool
) -> GroupInfo:
    if isinstance(gid, h5py.Group):  # callers that still pass the high-level group
        gid = gid.id
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: groups nested deeper than {MAX_DEPTH}")
    attrs = _attr_values(gid, where, own=False)[0]
    d.field(b"G")
    d.attrs(attrs)
    links = _members(gid, where)
    d.count(len(links))
    datasets: dict[str, DatasetInfo] = {}
    groups: dict[str, GroupInfo] = {}
    for raw, name in links:
        child = f"{where}/{name}"
        oid = h5py.h5o.open(gid, raw)
        d.field(raw)
        if isinstance(oid, h5py.h5g.GroupID):
            groups[name] = _digest_group(oid, child, depth + 1, d, finite)
        elif isinstance(oid, h5py.h5d.DatasetID):
            datasets[name] = _digest_dataset(oid, child, d, finite)
        else:
            raise ValueError(f"{child}: {_not_a_member(oid)} in a result")
    return GroupInfo(
        FrozenMap(datasets),
        FrozenMap({n: v.array for n, v in attrs.items()}),
        FrozenMap(groups),
    )


def _digest_dataset(dsid: Any, where: str, d: digests.TreeDigest, finite: bool) -> DatasetInfo:
    if isinstance(dsid, h5py.Dataset):
        dsid = dsid.id
    attrs, own, _ = _attr_values(dsid, where, own=True)
    d.field(b"D")
    d.attrs(attrs)
    attr_arrays = {n: v.array for n, v in attrs.items()}
    space = dsid.shape
    if space is None:
        raise ValueError(f"{where}: dataset with a null dataspace holds no value")
    dtype, shape = dsid.dtype, tuple(int(n) for n in space)
    kind = own or default_kind(dtype, shape)
    if stored_nbytes(dtype, shape) <= READ_BLOCK or kind == "U":
        value = stored_value(where, _dataset_array(dsid, where), own)
        d.value(value)
        return DatasetInfo.of(value.array, attrs=attr_arrays, kind=value.kind)
    # Big: hash it as it streams; the kind is checked against a data-less stand-in.
    check_kind(kind, np.broadcast_to(np.zeros((), dtype=dtype), shape), where)
    d.value_head(kind, dtype, shape)
    all_finite = True
    scan = finite and dtype.kind in "fc"

    def blocks() -> Iterator[npt.NDArray[Any]]:
        nonlocal all_finite
        for block in iter_blocks(h5py.Dataset(dsid)):
            if scan and all_finite and not np.isfinite(block).all():
                all_finite = False
            yield block

    d.blocks(stored_nbytes(dtype, shape), blocks())
    return DatasetInfo(dtype, shape, all_finite, FrozenMap(attr_arrays), kind)


def stored_digest(group: h5py.Group) -> str | None:
    if DIGEST_ATTR not in group.attrs:
        return None
    return _digest_text(read_attr(group, DIGEST_ATTR))


def _digest_text(raw: npt.NDArray[Any]) -> str:
    return raw.tobytes().rstrip(b"\0").decode("utf-8", "replace")


def v1_strings(node: GroupNode) -> GroupNode:
    """v1 stored every ``str`` as untagged bytes: give scalar ones back as ``str``."""

    def fix(v: Value) -> Value:
        if v.array.dtype.kind == "S" and v.array.shape == ():
            try:
                v.array.tobytes().rstrip(b"\0").decode("utf-8")
            except UnicodeDecodeError:
                return v
            return Value(v.array.view(utf8_dtype(v.array.dtype.itemsize)), "str")
        return v

    members = {
        n: DatasetNode(fix(m.value), m.attrs) if isinstance(m, DatasetNode) else m
        for n, m in node.members.items()
    }
    return GroupNode({n: fix(v) for n, v in node.attrs.items()}, members)
