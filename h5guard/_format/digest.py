"""The content digests of a result: v1 (flat groups) and v2 (result trees), one dtype token.

Digest v1 (``h5guard_digest`` attribute of every group, ``sha256:<hex>``), still
verified for files written before result trees: SHA-256 over

    b"h5guard-digest-v1\\0"
    then for each dataset, by name in byte order:   F(b"D") F(name) F(dtype) F(shape) F(data)
    then for each attribute, by name in byte order:  F(b"A") F(name) F(dtype) F(shape) F(data)

where ``F(x)`` is the 8-byte little-endian length of ``x`` followed by ``x``; ``name``
is UTF-8; ``dtype`` is the :func:`dtype_token`; ``shape`` is the decimal sizes joined by
``,`` (empty for a scalar); ``data`` is the values in C order, little-endian. The digest
attribute itself is not covered.

Digest v2 (``sha256-v2:<hex>``) covers the whole tree, every value's kind, every name
and the shape of the tree: docs/format.md gives it byte for byte. :class:`TreeDigest`
is fed in that order. The independent byte reader (:mod:`h5guard._format.bytes`)
builds the same byte stream from the file's bytes and uses the same :func:`dtype_token`.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from typing import Any

import numpy as np
import numpy.typing as npt

from h5guard import _background
from h5guard._format.names import (
    DIGEST_ATTR,
    DIGEST_PREFIX,
    DIGEST_V1_MAGIC,
    DIGEST_V2_MAGIC,
    DIGEST_V2_PREFIX,
    RESERVED_PREFIX,
)
from h5guard._format.tree import DatasetNode, GroupNode, Node, Value, is_flat

Array = npt.NDArray[Any]


def field(data: bytes) -> bytes:
    """``F(x)``: the 8-byte little-endian length of ``data``, then ``data``."""
    return len(data).to_bytes(8, "little") + data


def dtype_token(dtype: np.dtype[Any]) -> str:
    """The dtype as the v2 digest names it (docs/format.md, "dtype token")."""
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return f"{dtype_token(base)}({','.join(str(n) for n in shape)})"
    if dtype.names is not None:
        assert dtype.fields is not None
        fields = [
            [name, dtype.fields[name][1], dtype_token(dtype.fields[name][0])]
            for name in dtype.names
        ]
        return json.dumps([dtype.itemsize, fields], ensure_ascii=False, separators=(",", ":"))
    if dtype.byteorder in "<>=":
        return dtype.newbyteorder("<").str
    return dtype.str


def shape_token(shape: tuple[int, ...]) -> bytes:
    """The shape as both digests name it: decimal sizes joined by ``,``."""
    return ",".join(str(int(n)) for n in shape).encode()


# Byte orders that are little-endian already for a plain (not structured) dtype.
_LITTLE = frozenset("<|=" if sys.byteorder == "little" else "<|")


def _le(arr: Array) -> Array:
    dtype = arr.dtype
    if dtype.byteorder in _LITTLE and dtype.names is None and dtype.subdtype is None:
        return arr  # the common case, without making a dtype to compare with
    little = dtype.newbyteorder("<")
    return arr if dtype == little else arr.astype(little)


def _bytes_view(arr: Array) -> memoryview:
    contiguous = np.ascontiguousarray(_le(arr))
    return memoryview(contiguous.reshape(-1).view(np.uint8))  # type: ignore[arg-type]


# -- digest v1 --------------------------------------------------------------------------

_THREADED_HASH_MIN = 1024 * 1024


class GroupDigest:
    """Incremental digest of one group; feed datasets then attributes, in name order."""

    def __init__(self) -> None:
        self._h = hashlib.sha256(DIGEST_V1_MAGIC)

    def _header(self, tag: bytes, name: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
        for part in (tag, name.encode("utf-8"), dtype_token(dtype).encode(), shape_token(shape)):
            self._h.update(field(part))

    def add_array(self, tag: bytes, name: str, arr: npt.NDArray[Any]) -> None:
        self._header(tag, name, arr.dtype, arr.shape)
        view = _bytes_view(arr)
        self._h.update(view.nbytes.to_bytes(8, "little"))
        self._h.update(view)

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
                hashing = _background.submit("digest", self._h.update, view)
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


# -- digest v2 --------------------------------------------------------------------------

# Fields up to this size are gathered in the digest's buffer; larger ones are hashed
# from their own memory (hashlib then drops the GIL).
_SMALL_FIELD = 4096
# The encoded (kind, dtype, shape) of a value, by those: results repeat the same few.
# The UTF-8 tag is part of the key because numpy's dtype equality ignores metadata.
_HEADS: dict[tuple[str, np.dtype[Any], bool, tuple[int, ...]], bytes] = {}
_MAX_HEADS = 4096


def _is_tagged(dtype: np.dtype[Any]) -> bool:
    return dtype.metadata is not None


class TreeDigest:
    """Incremental v2 digest, fed in the order of docs/format.md.

    The many small fields of a result (tags, names, kinds, dtypes, shapes, small values)
    are gathered in one buffer and hashed together: one ``update`` per few hundred bytes
    instead of two per field. Big data is hashed straight from the caller's buffer.
    """

    __slots__ = ("_buf", "_h")

    def __init__(self) -> None:
        self._h = hashlib.sha256(DIGEST_V2_MAGIC)
        self._buf = bytearray()

    def _flush(self) -> None:
        if self._buf:
            self._h.update(self._buf)
            self._buf.clear()

    def field(self, data: bytes | memoryview) -> None:
        n = len(data) if isinstance(data, bytes) else data.nbytes
        self._buf += n.to_bytes(8, "little")
        if n <= _SMALL_FIELD:
            self._buf += data
            return
        self._flush()
        self._h.update(data)

    def count(self, n: int) -> None:
        self._buf += n.to_bytes(8, "little")

    def value_head(self, kind: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
        head = _HEADS.get((kind, dtype, _is_tagged(dtype), shape))
        if head is None:
            head = b"".join(
                len(part).to_bytes(8, "little") + part
                for part in (kind.encode(), dtype_token(dtype).encode("utf-8"), shape_token(shape))
            )
            if len(_HEADS) >= _MAX_HEADS:
                _HEADS.clear()
            _HEADS[(kind, dtype, _is_tagged(dtype), shape)] = head
        self._buf += head

    def value(self, value: Value) -> None:
        arr = value.array
        self.value_head(value.kind, arr.dtype, arr.shape)
        if arr.nbytes <= _SMALL_FIELD:  # small values: one copy is cheaper than the views
            self.field(_le(arr).tobytes())
            return
        data = np.ascontiguousarray(_le(arr)).reshape(-1).view(np.uint8)
        self.field(memoryview(data))  # type: ignore[arg-type]

    def blocks(self, nbytes_total: int, blocks: Iterator[Array]) -> None:
        """The data field of a value given as C-ordered blocks (large datasets)."""
        self.count(nbytes_total)
        self._flush()
        seen = 0
        for block in blocks:
            view = np.ascontiguousarray(_le(block)).reshape(-1).view(np.uint8)
            seen += view.nbytes
            self._h.update(memoryview(view))  # type: ignore[arg-type]
        if seen != nbytes_total:
            raise ValueError(f"digest fed {seen} bytes, expected {nbytes_total}")

    def attrs(self, attrs: Mapping[str, Value]) -> None:
        names = sorted(
            (n for n in attrs if not n.startswith(RESERVED_PREFIX)),
            key=lambda n: n.encode("utf-8"),
        )
        self.count(len(names))
        for name in names:
            self.field(name.encode("utf-8"))
            self.value(attrs[name])

    def node(self, node: Node) -> None:
        if isinstance(node, DatasetNode):
            self.field(b"D")
            self.attrs(node.attrs)
            self.value(node.value)
            return
        self.field(b"G")
        self.attrs(node.attrs)
        names = sorted(node.members, key=lambda n: n.encode("utf-8"))
        self.count(len(names))
        for name in names:
            self.field(name.encode("utf-8"))
            self.node(node.members[name])

    def hexdigest(self) -> str:
        self._flush()
        return DIGEST_V2_PREFIX + self._h.hexdigest()


def digest(root: GroupNode) -> str:
    d = TreeDigest()
    d.node(root)
    return d.hexdigest()


def computed_digest(node: GroupNode, stored: str | None) -> str:
    """The digest of ``node`` in the version ``stored`` names (v2 when there is none)."""
    if stored is not None and not stored.startswith(DIGEST_V2_PREFIX):
        if not is_flat(node):
            return "(not a v1 group: it has subgroups or dataset attributes)"
        datasets = {n: m.value.array for n, m in node.members.items()}  # type: ignore[union-attr]
        return digest_of(datasets, {n: v.array for n, v in node.attrs.items()})
    return digest(node)
