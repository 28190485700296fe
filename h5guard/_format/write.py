"""The on-disk layout h5guard writes, and the content digest of a group.

Layout (chosen because it turned damage into errors in every case we measured):

* files are created with libver lower bound ``v110`` so that every piece of metadata
  (superblock, object headers, B-trees, heaps) carries a checksum;
* datasets of at most :data:`COMPACT_LIMIT` bytes are stored *compact*, i.e. inside
  their checksummed object header; larger ones are chunked with the ``fletcher32``
  filter so each chunk is checksummed too;
* strings are fixed-length UTF-8 (variable-length strings live in the global heap,
  which has no checksum and whose damage made readers spin forever).

Results written since trees (#14) carry the v2 digest (``sha256-v2:<hex>``, over the
whole tree and each value's kind): see :mod:`h5guard._tree` and docs/format.md. The v1
digest below is still verified for older files.

Digest v1 (``h5guard_digest`` attribute of every group, ``sha256:<hex>``): SHA-256 over

    b"h5guard-digest-v1\\0"
    then for each dataset, by name in byte order:   F(b"D") F(name) F(dtype) F(shape) F(data)
    then for each attribute, by name in byte order:  F(b"A") F(name) F(dtype) F(shape) F(data)

where ``F(x)`` is the 8-byte little-endian length of ``x`` followed by ``x``; ``name``
is UTF-8; ``dtype`` is numpy's ``dtype.str`` of the value in little-endian byte order
(e.g. ``<f8``, ``|S12``, ``|b1``); ``shape`` is the decimal sizes joined by ``,``
(empty for a scalar); ``data`` is the values in C order, little-endian. The digest
attribute itself is not covered.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5guard.errors import InvalidKeyError, SchemaError

DIGEST_ATTR = "h5guard_digest"
INDEX_ATTR = "h5guard_index"  # JSON {key: digest} of a shard's groups, written at commit
FORMAT_ATTR = "h5guard_format"
SCHEMA_ATTR = "h5guard_schema"
VERSION_ATTR = "h5guard_version"
RESERVED_PREFIX = "h5guard_"
SHARD_FORMAT = "h5guard-shard/1"
OUTPUT_FORMAT = "h5guard-output/1"
DIGEST_PREFIX = "sha256:"

LIBVER = ("v110", "latest")
COMPACT_LIMIT = 32 * 1024
# Read big datasets this many bytes at a time so digesting never holds them whole.
READ_BLOCK = 16 * 1024 * 1024

_DIGEST_MAGIC = b"h5guard-digest-v1\0"
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


def _field(h: Any, data: bytes | memoryview) -> None:
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def _le(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    dt = arr.dtype
    if dt.byteorder == ">" or (dt.byteorder == "=" and not np.little_endian):
        return arr.astype(dt.newbyteorder("<"))
    return arr


def _bytes_view(arr: npt.NDArray[Any]) -> memoryview:
    contiguous = np.asarray(_le(arr), order="C")
    return memoryview(contiguous.reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def _dtype_token(dtype: np.dtype[Any]) -> bytes:
    return dtype.newbyteorder("<").str.encode() if dtype.byteorder in "<>=" else dtype.str.encode()


def _shape_token(shape: tuple[int, ...]) -> bytes:
    return ",".join(str(int(n)) for n in shape).encode()


_THREADED_HASH_MIN = 1024 * 1024
_POOL: ThreadPoolExecutor | None = None


def _hash_pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="h5guard-digest")
    return _POOL


class GroupDigest:
    """Incremental digest of one group; feed datasets then attributes, in name order."""

    def __init__(self) -> None:
        self._h = hashlib.sha256(_DIGEST_MAGIC)

    def _header(self, tag: bytes, name: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
        _field(self._h, tag)
        _field(self._h, name.encode("utf-8"))
        _field(self._h, _dtype_token(dtype))
        _field(self._h, _shape_token(shape))

    def add_array(self, tag: bytes, name: str, arr: npt.NDArray[Any]) -> None:
        self._header(tag, name, arr.dtype, arr.shape)
        _field(self._h, _bytes_view(arr))

    def add_blocks(
        self,
        name: str,
        dtype: np.dtype[Any],
        shape: tuple[int, ...],
        blocks: Iterator[npt.NDArray[Any]],
    ) -> None:
        """A dataset given as C-ordered blocks (rows along axis 0), for large data."""
        self._header(b"D", name, dtype, shape)
        nbytes = dtype.itemsize * math.prod(shape)
        self._h.update(nbytes.to_bytes(8, "little"))
        seen = 0
        hashing: Future[None] | None = None
        for block in blocks:
            view = _bytes_view(block)
            seen += view.nbytes
            if hashing is not None:
                hashing.result()
                hashing = None
            if view.nbytes >= _THREADED_HASH_MIN:
                # hashlib drops the GIL on big buffers: hash this block while the
                # caller's generator reads the next one from disk.
                hashing = _hash_pool().submit(self._h.update, view)
            else:
                self._h.update(view)
        if hashing is not None:
            hashing.result()
        if seen != nbytes:
            raise ValueError(f"{name}: digest fed {seen} bytes, expected {nbytes}")

    def hexdigest(self) -> str:
        return DIGEST_PREFIX + self._h.hexdigest()


def digest_of(
    datasets: Mapping[str, npt.NDArray[Any]], attrs: Mapping[str, npt.NDArray[Any]]
) -> str:
    """Digest of a group given as normalized arrays (see module docstring)."""
    d = GroupDigest()
    for name in sorted(datasets, key=lambda n: n.encode("utf-8")):
        d.add_array(b"D", name, datasets[name])
    for name in sorted(attrs, key=lambda n: n.encode("utf-8")):
        if name != DIGEST_ATTR:
            d.add_array(b"A", name, attrs[name])
    return d.hexdigest()


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
    gid = h5py.h5g.create(parent.id, key.encode("utf-8"), lcpl=_LCPL, gcpl=_RESULT_GCPL)
    return h5py.Group(gid)


def _space(arr: npt.NDArray[Any]) -> Any:
    if arr.ndim == 0:
        return h5py.h5s.create(h5py.h5s.SCALAR)
    return h5py.h5s.create_simple(arr.shape)


def write_dataset(group: h5py.Group, name: str, arr: npt.NDArray[Any]) -> None:
    """Write one normalized array in the hardened layout.

    Compact datasets go through the low-level API: h5py's ``create_dataset`` spends
    more time checking arguments than libhdf5 spends writing a small dataset.
    """
    if arr.nbytes <= COMPACT_LIMIT and arr.size > 0:
        tid = h5py.h5t.py_create(arr.dtype, logical=True)
        dsid = h5py.h5d.create(
            group.id, name.encode("utf-8"), tid, _space(arr), dcpl=_COMPACT_DCPL, lcpl=_LCPL
        )
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.asarray(arr, order="C"))
    elif arr.size == 0 or arr.ndim == 0:
        group.create_dataset(name, data=arr)
    else:
        group.create_dataset(name, data=arr, chunks=True, fletcher32=True)


def create_attr(obj: h5py.Group | h5py.File, name: str, arr: npt.NDArray[Any]) -> None:
    """Add a new attribute (it must not exist yet) through the low-level API."""
    create_attr_id(obj.id, name, arr)


def create_attr_id(oid: Any, name: str, arr: npt.NDArray[Any]) -> None:
    """:func:`create_attr` on a low-level object id (a group's or a dataset's)."""
    tid = h5py.h5t.py_create(arr.dtype, logical=True)
    aid = h5py.h5a.create(oid, name.encode("utf-8"), tid, _space(arr))
    aid.write(np.asarray(arr, order="C"))


def create_subgroup(parent: h5py.Group, name: str) -> h5py.Group:
    """A group nested in a result, with the same hardened creation properties."""
    gid = h5py.h5g.create(parent.id, name.encode("utf-8"), lcpl=_LCPL, gcpl=_RESULT_GCPL)
    return h5py.Group(gid)


def write_attr(obj: h5py.Group | h5py.File, name: str, arr: npt.NDArray[Any]) -> None:
    """Set an attribute, replacing an existing one of the same name."""
    obj.attrs.create(name, arr if arr.ndim else arr[()])


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


def read_attr(obj: h5py.Group | h5py.File | h5py.Dataset, name: str) -> npt.NDArray[Any]:
    """Read an attribute as an array of the stored dtype (strings stay bytes)."""
    return read_attr_id(h5py.h5a.open(obj.id, name.encode("utf-8")))


def read_attrs(obj: h5py.Group | h5py.File | h5py.Dataset) -> dict[str, npt.NDArray[Any]]:
    """Every attribute of ``obj``, opened by index (about twice as fast as by name)."""
    out: dict[str, npt.NDArray[Any]] = {}
    for index in range(h5py.h5a.get_num_attrs(obj.id)):
        aid = h5py.h5a.open(obj.id, index=index)
        out[aid.name.decode("utf-8")] = read_attr_id(aid)
    return out


def read_attr_id(aid: Any) -> npt.NDArray[Any]:
    shape = aid.shape  # each property call is a libhdf5 round trip: ask once
    dtype = aid.dtype
    if shape is None:  # a null dataspace has no value to read
        return np.zeros(0, dtype=dtype)
    out: npt.NDArray[Any] = np.empty(shape, dtype=dtype)
    aid.read(out)
    return out


def text_attr(obj: h5py.Group | h5py.File, name: str) -> str | None:
    """A string attribute as ``str`` (fixed or variable length), or None if absent."""
    if name not in obj.attrs:
        return None
    value = obj.attrs[name]
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)
