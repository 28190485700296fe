"""Writing primitives: a prepared result tree into an h5py group, in the hardened layout.

The layout (chosen because it turned damage into errors in every case we measured):

* files are created with libver lower bound ``v110`` so that every piece of metadata
  (superblock, object headers, B-trees, heaps) carries a checksum;
* datasets of at most :data:`~h5guard._format.names.COMPACT_LIMIT` bytes are stored
  *compact*, i.e. inside their checksummed object header; larger ones are chunked with
  the ``fletcher32`` filter so each chunk is checksummed too (chunks of about 1 MiB for
  datasets from 4 MiB, :func:`big_chunks`; h5py's guess below);
* strings are fixed-length UTF-8 (variable-length strings live in the global heap,
  which has no checksum and whose damage made readers spin forever);
* attributes stay in their object's header (no dense storage), and kinds that the
  stored type does not imply go into one small JSON attribute (``h5guard_kinds``).

The names and digests are defined in :mod:`h5guard._format.names` and
:mod:`h5guard._format.digest`; docs/format.md describes the whole format.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5guard._format.names import (
    COMPACT_LIMIT,
    KINDS_ATTR,
    LIBVER,
    MAX_CACHED_IDS,
    RESERVED_PREFIX,
)
from h5guard._format.tree import GroupNode, Value, default_kind, resolve_kind, utf8_dtype
from h5guard.errors import InvalidKeyError, SchemaError

_KEY_OK = re.compile(r"^[^/\x00]+$")


def check_key(key: object) -> str:
    """Return ``key`` if it can name a top-level HDF5 group, else raise."""
    if not isinstance(key, str):
        raise InvalidKeyError(key, f"expected a str, got {type(key).__name__}")
    if not _KEY_OK.match(key) or key in (".", ".."):
        raise InvalidKeyError(key, "expected a non-empty name without '/' or NUL")
    if key.startswith(RESERVED_PREFIX):
        raise InvalidKeyError(key, f"names starting with {RESERVED_PREFIX!r} are reserved")
    return key


def normalize_value(name: str, value: Any) -> npt.NDArray[Any]:
    """Turn a Python/numpy value into the exact array h5guard stores and digests.

    Strings become fixed-length UTF-8 bytes; object, variable-length and structured
    dtypes are refused because they cannot be stored in the hardened layout.
    """
    if isinstance(value, str):
        return np.array(value.encode("utf-8"), dtype=np.bytes_)
    arr = np.asarray(value)
    if arr.dtype.kind == "U":
        encoded = np.char.encode(arr, "utf-8")
        return np.asarray(encoded, dtype=np.bytes_)
    if arr.dtype.kind in "biufcS":
        if arr.dtype.kind == "S" and arr.dtype.itemsize == 0:
            return arr.astype("S1")
        # Not np.ascontiguousarray: it turns a scalar into a 1-element array.
        return np.asarray(arr, order="C")
    raise SchemaError(
        f"{name}: expected numbers, booleans or strings, got dtype {arr.dtype} "
        "(object, variable-length and compound values are not supported)"
    )


def create_file(path: str, mode: str = "w", *, userblock: int = 0) -> h5py.File:
    """Open a file for writing with metadata checksums on.

    ``userblock`` bytes at the start are left to the application (the shard seal).
    """
    if userblock:
        return h5py.File(path, mode, libver=LIBVER, locking=False, userblock_size=userblock)
    return h5py.File(path, mode, libver=LIBVER, locking=False)


def _utf8_plist(kind: Any) -> Any:
    plist = h5py.h5p.create(kind)
    plist.set_char_encoding(h5py.h5t.CSET_UTF8)
    return plist


def _compact_dcpl() -> Any:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    dcpl.set_obj_track_times(False)  # no timestamps: the same content gives the same bytes
    return dcpl


def _result_gcpl() -> Any:
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    # Attributes stay in the group's own (checksummed) object header however many there
    # are, instead of moving to a fractal heap past 8: one place to read, and the layout
    # h5guard's independent reader (_fastread) verifies without libhdf5. (Links past 8
    # still go dense: h5py has no H5Pset_link_phase_change; such groups are verified
    # through libhdf5.)
    gcpl.set_attr_phase_change(65535, 0)
    gcpl.set_obj_track_times(False)
    return gcpl


_LCPL = _utf8_plist(h5py.h5p.LINK_CREATE)
LINK_CREATE_UTF8 = _LCPL  # link names are UTF-8, as h5py's high-level API makes them
_COMPACT_DCPL = _compact_dcpl()
_RESULT_GCPL = _result_gcpl()


def create_result_group(parent: h5py.File, key: str) -> h5py.Group:
    """A new top-level result group in the hardened layout."""
    return h5py.Group(create_group_id(parent.id, key))


def create_group_id(parent: Any, name: str) -> Any:
    """A new group's low-level id under ``parent`` (an id), in the hardened layout."""
    return h5py.h5g.create(parent, name.encode("utf-8"), lcpl=_LCPL, gcpl=_RESULT_GCPL)


# Results repeat the same few types and shapes: one libhdf5 type and dataspace per kind
# is made once and reused (libhdf5 copies them into each object it creates). The UTF-8
# tag is part of a type's key because numpy's dtype equality ignores metadata.
_TYPES: dict[tuple[np.dtype[Any], bool], Any] = {}
_SPACES: dict[tuple[int, ...], Any] = {}


def _type(dtype: np.dtype[Any]) -> Any:
    key = (dtype, dtype.metadata is not None)
    tid = _TYPES.get(key)
    if tid is None:
        tid = h5py.h5t.py_create(dtype, logical=True)
        if len(_TYPES) < MAX_CACHED_IDS:
            _TYPES[key] = tid
    return tid


def _space(arr: npt.NDArray[Any]) -> Any:
    shape = arr.shape
    sid = _SPACES.get(shape)
    if sid is None:
        sid = h5py.h5s.create(h5py.h5s.SCALAR) if not shape else h5py.h5s.create_simple(shape)
        if len(_SPACES) < MAX_CACHED_IDS:
            _SPACES[shape] = sid
    return sid


def write_dataset(group: h5py.Group, name: str, arr: npt.NDArray[Any]) -> None:
    """Write one normalized array in the hardened layout.

    Compact datasets go through the low-level API (with cached type and dataspace
    ids): h5py's ``create_dataset`` spends more time checking arguments than libhdf5
    spends writing a small dataset.
    """
    if arr.nbytes <= COMPACT_LIMIT and arr.size > 0:
        tid = _type(arr.dtype)
        dsid = h5py.h5d.create(
            group.id, name.encode("utf-8"), tid, _space(arr), dcpl=_COMPACT_DCPL, lcpl=_LCPL
        )
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.asarray(arr, order="C"), mtype=tid)
    elif arr.size == 0 or arr.ndim == 0:
        group.create_dataset(name, data=arr)
    else:
        chunks = big_chunks(arr.shape, arr.dtype.itemsize)
        group.create_dataset(name, data=arr, chunks=chunks or True, fletcher32=True)


# A dataset of at least _BIG_DATASET bytes is cut into chunks of about _CHUNK_TARGET bytes
# (h5py's guess makes ~48 KiB chunks of a 100 MB array: writing it through the fletcher32
# filter measured 15-20 % slower than with 1 MiB chunks, and no faster with 4 MiB).
_BIG_DATASET = 4 * 1024 * 1024
_CHUNK_TARGET = 1024 * 1024


def big_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...] | None:
    """The chunk shape of a big dataset (None: small, h5py's guess).

    Leading axes are cut first, down to one slice where a slice still holds the target,
    so that a chunk is a contiguous run of the C-ordered array of at most
    :data:`_CHUNK_TARGET` bytes (or one element's row, if an element is bigger).
    """
    size = itemsize * math.prod(shape)
    if size < _BIG_DATASET or 0 in shape:
        return None
    chunk = list(shape)
    for axis, n in enumerate(shape):
        if size <= _CHUNK_TARGET:
            break
        per_slice = size // n
        if per_slice >= _CHUNK_TARGET:
            chunk[axis] = 1
            size = per_slice
        else:
            chunk[axis] = max(1, _CHUNK_TARGET // per_slice)
            break
    return tuple(chunk)


def create_attr(obj: h5py.Group | h5py.File, name: str, arr: npt.NDArray[Any]) -> None:
    """Add a new attribute (it must not exist yet) through the low-level API."""
    create_attr_id(obj.id, name, arr)


def create_attr_id(oid: Any, name: str, arr: npt.NDArray[Any]) -> None:
    """:func:`create_attr` on a low-level object id (a group's or a dataset's)."""
    tid = _type(arr.dtype)
    aid = h5py.h5a.create(oid, name.encode("utf-8"), tid, _space(arr))
    aid.write(np.asarray(arr, order="C"), mtype=tid)


def create_subgroup(parent: h5py.Group, name: str) -> h5py.Group:
    """A group nested in a result, with the same hardened creation properties."""
    return h5py.Group(create_group_id(parent.id, name))


def write_attr(obj: h5py.Group | h5py.File, name: str, arr: npt.NDArray[Any]) -> None:
    """Set an attribute, replacing an existing one of the same name.

    Only ever called on a file being written (a partial): h5py's own replacement, which
    writes a temporary attribute and renames it so that the old value survives a failed
    write, costs four times as much, and a failed write fails the whole file anyway.
    """
    raw = name.encode("utf-8")
    if h5py.h5a.exists(obj.id, raw):
        h5py.h5a.delete(obj.id, raw)
    create_attr_id(obj.id, name, arr)


def update_attr(obj: h5py.Group | h5py.File, name: str, arr: npt.NDArray[Any]) -> None:
    """:func:`write_attr`, without deleting and creating the attribute again when it
    has ``arr``'s type and shape already: then its value is written in place, and only
    if it differs. An index brought up to date keeps most of its attributes, and
    the others (the time of the last merge, the spare's record) keep their type: a
    write in place costs a third of a new attribute, a read a fraction of either."""
    raw = name.encode("utf-8")
    if h5py.h5a.exists(obj.id, raw):
        aid = h5py.h5a.open(obj.id, raw)
        tid = _type(arr.dtype)
        if aid.shape == arr.shape and aid.get_type().equal(tid):
            stored = np.empty(arr.shape, dtype=aid.dtype)
            aid.read(stored, mtype=tid)
            value = np.asarray(arr, order="C")
            if stored.tobytes() != value.tobytes():
                aid.write(value, mtype=tid)
            return
    write_attr(obj, name, arr)


# -- a result tree ------------------------------------------------------------------


def _kinds_of(attrs: Mapping[str, Value], own: Value | None) -> dict[str, str]:
    """The kinds that the stored type does not imply, keyed as in ``h5guard_kinds``."""
    out: dict[str, str] = {}
    if own is not None and own.kind != _implied(own):
        out[""] = own.kind
    for name, value in attrs.items():
        if value.kind != _implied(value):
            out[name] = value.kind
    return out


def _implied(value: Value) -> str:
    return resolve_kind(default_kind(value.array.dtype, value.array.shape), value.array)


def _write_attrs(oid: Any, attrs: Mapping[str, Value], own: Value | None) -> None:
    for name, value in attrs.items():
        create_attr_id(oid, name, value.array)
    kinds = _kinds_of(attrs, own)
    if kinds:
        text = json.dumps(kinds, ensure_ascii=False, sort_keys=True).encode("utf-8")
        create_attr_id(oid, KINDS_ATTR, np.array(text, dtype=utf8_dtype(len(text))))


def write_members(group: h5py.Group, node: GroupNode) -> None:
    """Write ``node``'s attributes and members into the (new, empty) ``group``."""
    write_members_id(group.id, node)


def write_members_id(gid: Any, node: GroupNode) -> None:
    """:func:`write_members` on a group's low-level id."""
    _write_attrs(gid, node.attrs, None)
    if not node.members:
        return
    # Datasets go through write_dataset by name, so that a fault injected there (the
    # I/O-error campaign patches it) is met by every path that writes a result.
    group = h5py.Group(gid)
    for name, child in node.members.items():
        if isinstance(child, GroupNode):
            write_members_id(create_group_id(gid, name), child)
        else:
            write_dataset(group, name, child.value.array)
            if child.attrs or _kinds_of({}, child.value):
                oid = h5py.h5o.open(gid, name.encode("utf-8"))
                _write_attrs(oid, child.attrs, child.value)
