"""The independent byte reader: h5guard's own files parsed without libhdf5.

After a merge copies result groups into its output with libhdf5's ``H5Ocopy``, and when
``check`` reads an h5guard file, every group's content digest is recomputed from the
bytes on disk. Reading them back through h5py costs hundreds of µs a group (tens of µs
per attribute), and it trusts the very library that wrote them. This module parses the
bytes itself (struct, numpy and hashlib only, no libhdf5) at a few percent of that
cost: a second, independent reader whose digest must agree with the one the writer
computed from its inputs. The digest definitions (:mod:`h5guard._format.digest`) and
the format's names (:mod:`h5guard._format.names`) are shared with the writer; the
parsing is not, on purpose.

It reads only the narrow subset of the format h5guard's own files use:

* superblock version 2 or 3 (``libver=("v110", "latest")``), 8-byte offsets and
  lengths, after an optional userblock;
* version-2 object headers ("OHDR") and their continuation chunks ("OCHK"), read by
  one loop (:meth:`_File.object`) whatever the object;
* groups whose links and attributes are *compact* (messages in their object header),
  whose members are hard links to datasets or to nested groups (result trees, to
  :data:`~h5guard._format.names.MAX_DEPTH` levels), with attributes on groups and
  datasets; the root group's links may also be *dense* (:func:`root_group`: a fractal
  heap without filters, indexed by a version-2 B-tree of depth 0 or 1);
* datasets with a scalar or simple dataspace and *compact* layout (or contiguous,
  for the empty and scalar datasets h5py writes that way);
* the datatypes h5py writes for numpy kinds ``b i u f c S``: integers of 1-8 bytes,
  IEEE half/single/double floats, either byte order; fixed-length strings; h5py's
  boolean enum and complex compound.

Anything else (other dense link or attribute storage, chunked data, shared messages, other
datatypes such as structured ones) raises :class:`Unsupported` and the caller verifies
that group through libhdf5 instead. Bytes that do not parse as the subset claims raise
:class:`Malformed`. Parsing is bounded by the buffer: damaged bytes give an error,
never a hang, a crash or a huge allocation.

Metadata checksums are not verified by default: lookup3 in pure Python costs more
than the rest of the parse, and the digest already covers everything the group holds.
``checksums=True`` verifies them too.

Each header is parsed once, in one pass over its messages; a group's v2 digest is tried
first (every file written now carries one), and a dataset without attributes in one
header chunk, a result's commonest member, has a short loop of its own
(:meth:`_File._plain_dataset`) that leaves anything unusual to the generic parse.

The results of one sweep repeat a few header layouts, so a header the generic parse
accepted is remembered by its bytes but its values (:class:`_Plain` for such datasets,
:class:`_Header` for groups whose header is one chunk): a header equal to it in every
other byte parses to the same objects with its own values, and is built from them.
Every value is still read from the file, and any other byte that differs means the
generic parse, with its errors.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import mmap
import os
import struct
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from h5guard._format.checksum import lookup3
from h5guard._format.digest import dtype_token, field
from h5guard._format.names import DIGEST_ATTR as _DIGEST_ATTR_NAME
from h5guard._format.names import (
    DIGEST_PREFIX,
    DIGEST_V1_MAGIC,
    DIGEST_V2_MAGIC,
    DIGEST_V2_PREFIX,
    MAX_DEPTH,
    PY_SCALAR_KINDS,
    SIGNATURE,
    UNDEFINED,
)
from h5guard._format.names import KINDS_ATTR as _KINDS_ATTR_NAME
from h5guard._format.names import RESERVED_PREFIX as _RESERVED_NAME
from h5guard.schema import DatasetInfo, FrozenMap, GroupInfo

__all__ = [
    "Malformed",
    "Unsupported",
    "base_address",
    "group_digest_at",
    "read_group_at",
    "root_attribute_values",
    "root_group",
    "verify_groups_at",
]


class Unsupported(Exception):
    """The group uses a construct outside the subset; the caller re-checks it with libhdf5."""


class _V1Digest(Exception):
    """The group carries no v2 digest: the v1 digest is computed from its parsed header."""

    def __init__(self, obj: _Object, stored: str | None) -> None:
        super().__init__("content digest v1 (or none)")
        self.obj = obj
        self.stored = stored


class Malformed(Exception):
    """The bytes do not parse as the subset claims (bad signature, out-of-range offset, truncated message...)."""


Buffer = bytes | bytearray | memoryview | mmap.mmap

_DIGEST_ATTR = _DIGEST_ATTR_NAME.encode()

# Limits that keep damaged bytes from turning into long loops or big allocations.
_MAX_RANK = 32  # H5S_MAX_RANK
_MAX_CONTIGUOUS = 64 * 1024 * 1024  # larger contiguous data: let libhdf5 stream it
_CACHE_LIMIT = 8192  # entries per cache
_CACHE_KEY_LIMIT = 1024  # bytes: a damaged name of 64 KiB is not worth keeping

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_PAIR64 = struct.Struct("<QQ")
_MSG = struct.Struct("<BHB")
_ATTR = struct.Struct("<BBHHH")
# A message header (type, size, flags, [creation order]) and an attribute's head.
_ATTR_MSG = struct.Struct("<BHBBBHHH")
_ATTR_MSG_ORDERED = struct.Struct("<BHB2xBBHHH")
_FLOAT_PROPS = struct.Struct("<HHBBBBI")

# Message types.
_NIL = 0x00
_DATASPACE = 0x01
_LINK_INFO = 0x02
_DATATYPE = 0x03
_LAYOUT = 0x08
_LINK = 0x06
_ATTRIBUTE = 0x0C
_CONTINUATION = 0x10
_ATTR_INFO = 0x15
# Messages that say nothing about the content the digest covers: old and new fill
# value, group info, comment, old and new modification time, reference count.
_IGNORED = frozenset({_NIL, 0x04, 0x05, 0x0A, 0x0D, 0x0E, 0x12, 0x16})

# Data conversions: how to turn stored element bytes into what h5py hands back.
_RAW = 0
_SWAP = 1  # big-endian numbers: h5py reads them as is, the digest wants little-endian
_NULLTERM = 2  # libhdf5 clears everything after the first NUL when h5py reads it
_SPACEPAD = 3  # libhdf5 turns trailing spaces into NULs when h5py reads it

# IEEE layouts by size: sign bit, exponent location/size, mantissa location/size, bias.
_IEEE = {
    2: (15, 10, 5, 0, 10, 15),
    4: (31, 23, 8, 0, 23, 127),
    8: (63, 52, 11, 0, 52, 1023),
}


_SCALAR_KINDS = {token: kind for kind, token in PY_SCALAR_KINDS.items()}
_KINDS_ATTR = _KINDS_ATTR_NAME.encode()
_RESERVED = _RESERVED_NAME.encode()
_MAX_DEPTH = MAX_DEPTH + 1  # the result's own group, then MAX_DEPTH nested groups


_f = field


_TAG_D = _f(b"D")
_TAG_A = _f(b"A")


class _Type:
    """A parsed datatype: its digest token and how to convert stored bytes."""

    __slots__ = ("conv", "is_string", "numpy", "scalar_kind", "size", "swap", "token", "utf8")

    def __init__(self, kind: str, size: int, conv: int, swap: int) -> None:
        self.size = size
        self.conv = conv
        self.swap = swap  # bytes per swapped unit when conv is _SWAP
        self.utf8 = kind == "T"
        if self.utf8:
            kind = "S"
        self.is_string = kind == "S"
        # numpy's dtype.str in little-endian order (numpy itself refuses strings of 2 GiB)
        order = "|" if kind in "bS" or size == 1 else "<"
        self.numpy = f"{order}{kind}{size}"
        # The token both digests use (h5guard._format.digest.dtype_token); cached with
        # the parsed type, so computing it through numpy costs once per distinct type.
        try:
            token = dtype_token(np.dtype(self.numpy))
        except (TypeError, ValueError, OverflowError) as err:
            raise Unsupported(f"datatype {self.numpy}: {err}") from err
        self.token = _f(token.encode())
        # The v2 kind of a scalar of this type when no h5guard_kinds entry names one
        # (h5guard._tree.default_kind): Python numbers only for native little-endian types.
        if self.utf8:
            self.scalar_kind = "str"
        elif conv == _SWAP:
            self.scalar_kind = "numpy"
        else:
            self.scalar_kind = _SCALAR_KINDS.get(self.numpy, "numpy")


class _Space:
    __slots__ = ("count", "scalar", "token")

    def __init__(self, dims: tuple[int, ...], scalar: bool) -> None:
        count = 1
        for n in dims:
            count *= n
        self.count = count
        self.scalar = scalar
        self.token = _f(",".join(str(n) for n in dims).encode())


class _Attr:
    """Everything about an attribute message except its value, cached by its bytes."""

    __slots__ = ("conv", "dtype", "name", "nbytes", "prefix", "scalar", "space", "v2_head")

    def __init__(self, name: bytes, dtype: _Type, space: _Space) -> None:
        self.name = name
        self.dtype = dtype
        self.space = space
        self.conv = dtype.conv
        self.nbytes = dtype.size * space.count
        self.scalar = space.scalar
        if name == _DIGEST_ATTR:
            # Not covered by the digest: its entry holds just the value.
            if not (dtype.is_string and space.scalar):
                raise Malformed("h5guard_digest attribute is not a scalar string")
            self.prefix = b""
        else:
            self.prefix = (
                _TAG_A + _f(name) + dtype.token + space.token + self.nbytes.to_bytes(8, "little")
            )
        # The v2 fields before the value when no h5guard_kinds entry names the kind
        # (name, kind, dtype, shape, size); None when the kind depends on the value
        # (UTF-8 text arrays are as wide as their longest element).
        self.v2_head: bytes | None = None
        if not (dtype.utf8 and not space.scalar):
            kind = _kind(None, dtype, space, b"")
            self.v2_head = (
                _f(name) + kind + dtype.token + space.token + self.nbytes.to_bytes(8, "little")
            )


# Parsed datatypes, dataspaces and attribute headers, keyed by their exact bytes: the
# groups of one sweep repeat the same attribute names and types, so most lookups hit.
_TYPES: dict[bytes, _Type] = {}
_SPACES: dict[bytes, _Space] = {}
_ATTRS: dict[bytes, _Attr] = {}


_V = TypeVar("_V")


def _remember(cache: dict[bytes, _V], key: bytes, value: _V) -> _V:
    if len(key) <= _CACHE_KEY_LIMIT:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = value
    return value


# -- datatypes ------------------------------------------------------------------------


def _parse_type(b: bytes, p: int, depth: int) -> tuple[str, int, int, int, int]:
    """``(kind, size, conv, swap unit, end)`` of the datatype encoded at ``b[p:]``."""
    head = b[p]
    cls, version = head & 0x0F, head >> 4
    if not 1 <= version <= 5:
        raise Unsupported(f"datatype message version {version}")
    f0, f1, f2 = b[p + 1], b[p + 2], b[p + 3]
    (size,) = _U32.unpack_from(b, p + 4)
    q = p + 8
    if cls == 0:  # fixed-point
        offset, precision = struct.unpack_from("<HH", b, q)
        if f0 & 0xF6 or f1 or f2:
            raise Unsupported("integer with padding bits or reserved flags")
        if size not in (1, 2, 4, 8) or offset != 0 or precision != 8 * size:
            raise Unsupported(f"{size}-byte integer of precision {precision} at bit {offset}")
        big = f0 & 1
        conv = _SWAP if big and size > 1 else _RAW
        return ("i" if f0 & 0x08 else "u"), size, conv, size, q + 4
    if cls == 1:  # floating-point
        offset, precision, eloc, esize, mloc, msize, bias = _FLOAT_PROPS.unpack_from(b, q)
        if f0 & 0x40:
            raise Unsupported("VAX-order float")
        if f0 & 0x8E or f2 or (f0 >> 4) & 3 != 2:
            raise Unsupported("float with padding bits or without an implied mantissa bit")
        layout = (f1, eloc, esize, mloc, msize, bias)
        if _IEEE.get(size) != layout or offset != 0 or precision != 8 * size:
            raise Unsupported(f"{size}-byte float that is not IEEE {layout}")
        return "f", size, (_SWAP if f0 & 1 else _RAW), size, q + 12
    if cls == 3:  # fixed-length string
        pad, cset = f0 & 0x0F, f0 >> 4
        if pad > 2 or cset > 1 or f1 or f2:
            raise Unsupported(f"string with padding {pad}, character set {cset}")
        if size == 0:
            raise Malformed("zero-length string type")
        # "T": UTF-8 tagged text (its digest token is numpy's "|S<n>" all the same)
        return ("T" if cset else "S"), size, (_NULLTERM, _RAW, _SPACEPAD)[pad], 1, q
    if cls == 6 and depth == 0:
        return _parse_complex(b, q, version, f0 | f1 << 8, size)
    if cls == 8 and depth == 0:
        return _parse_bool(b, q, version, f0 | f1 << 8, size)
    raise Unsupported(f"datatype class {cls}")


def _parse_complex(
    b: bytes, q: int, version: int, nmembers: int, size: int
) -> tuple[str, int, int, int, int]:
    """h5py's complex numbers: a compound of two equal floats named r and i."""
    if nmembers != 2:
        raise Unsupported(f"compound datatype of {nmembers} members")
    members = []
    offset_width = (size.bit_length() + 7) // 8
    for _ in range(2):
        end = b.index(b"\0", q)
        name = b[q:end]
        if version < 3:
            q += (end - q) // 8 * 8 + 8  # NUL-terminated, padded to 8 bytes
            (offset,) = _U32.unpack_from(b, q)
            q += 4
            if version == 1:
                if b[q] != 0:
                    raise Unsupported("compound member that is an array")
                q += 28
        else:
            q = end + 1
            offset = int.from_bytes(b[q : q + offset_width], "little")
            q += offset_width
        kind, msize, conv, _, q = _parse_type(b, q, 1)
        members.append((name, offset, kind, msize, conv))
    (rn, ro, rk, rs, rc), (im, io, ik, isz, ic) = members
    if (
        (rn, im) != (b"r", b"i")
        or (rk, ik) != ("f", "f")
        or rs != isz
        or rc != ic
        or rs not in (4, 8)
        or (ro, io) != (0, rs)
        or size != 2 * rs
    ):
        raise Unsupported("compound datatype that is not h5py's complex")
    return "c", size, rc, rs, q


def _parse_bool(
    b: bytes, q: int, version: int, nmembers: int, size: int
) -> tuple[str, int, int, int, int]:
    """h5py's booleans: an enum of a 1-byte integer with exactly FALSE=0 and TRUE=1."""
    kind, base_size, _, _, q = _parse_type(b, q, 1)
    if kind not in "iu" or base_size != 1 or size != 1 or nmembers != 2:
        raise Unsupported("enum datatype that is not h5py's bool")
    names = []
    for _ in range(2):
        end = b.index(b"\0", q)
        names.append(b[q:end])
        q = end + 1 if version >= 3 else q + (end - q) // 8 * 8 + 8
    values = b[q : q + 2]
    if len(values) != 2:
        raise Malformed("enum values past the end of the datatype")
    if dict(zip(names, values, strict=True)) != {b"FALSE": 0, b"TRUE": 1}:
        raise Unsupported("enum datatype that is not h5py's bool")
    return "b", 1, _RAW, 1, q + 2


def _datatype(raw: bytes) -> _Type:
    found = _TYPES.get(raw)
    if found is not None:
        return found
    kind, size, conv, swap, end = _parse_type(raw, 0, 0)
    if end > len(raw):
        raise Malformed("datatype runs past its message")
    return _remember(_TYPES, raw, _Type(kind, size, conv, swap))


# -- dataspaces -----------------------------------------------------------------------


def _dataspace(raw: bytes) -> _Space:
    found = _SPACES.get(raw)
    if found is not None:
        return found
    version, rank, flags = raw[0], raw[1], raw[2]
    if version == 1:
        p, scalar = 8, rank == 0
    elif version == 2:
        kind = raw[3]
        if kind == 2:
            raise Unsupported("null dataspace")
        if kind > 2 or (kind == 0) != (rank == 0):
            raise Malformed(f"dataspace of kind {kind} and rank {rank}")
        p, scalar = 4, kind == 0
    else:
        raise Unsupported(f"dataspace message version {version}")
    if rank > _MAX_RANK:
        raise Malformed(f"dataspace of rank {rank}")
    end = p + 8 * rank * (1 + (flags & 1) + (flags >> 1 & 1))
    if end > len(raw):
        raise Malformed("dataspace runs past its message")
    dims = struct.unpack_from(f"<{rank}Q", raw, p)
    return _remember(_SPACES, raw, _Space(dims, scalar))


# -- object headers -------------------------------------------------------------------


def _chunk_messages(
    chunk: bytes,
    p: int,
    end: int,
    header_size: int,
    obj: _Object,
    continuations: list[tuple[int, int]],
) -> None:
    """Sort the messages of ``chunk[p:end]`` into ``obj`` and ``continuations``.

    One pass: every message is decoded (or skipped) where it is read, so an object's
    header is parsed once, without an intermediate list of its messages.
    """
    attrs = obj.attrs if obj.attributes else None
    attr_objs, raw, links = obj.attr_objs, obj.raw, obj.link_bodies
    ignored = _IGNORED if attrs is not None else _NO_ATTRIBUTES
    cache_get = _ATTRS.get
    unpack_message = _MSG.unpack_from
    unpack_attribute = (_ATTR_MSG_ORDERED if header_size == 6 else _ATTR_MSG).unpack_from
    while p + header_size <= end:
        mtype = chunk[p]
        if mtype == _ATTRIBUTE and attrs is not None:
            # The hot path: a group holds mostly attributes, and their name, type and
            # space bytes repeat from group to group, so look them up by those bytes.
            _, msize, mflags, version, _, name_size, type_size, space_size = unpack_attribute(
                chunk, p
            )
            body = p + header_size
            p = body + msize
            if p > end:
                raise Malformed("attribute message runs past the end of its chunk")
            if mflags & 0x02:
                raise Unsupported("shared attribute message")
            if version == 3:
                data_at = body + 9 + name_size + type_size + space_size
            else:
                data_at = body + _old_attribute_header_size(
                    version, name_size, type_size, space_size
                )
            key = chunk[body:data_at]
            attr = cache_get(key) or _new_attribute(key, data_at - body)
            data_end = data_at + attr.nbytes
            if data_end > p:
                raise Malformed(f"attribute {attr.name!r}: value runs past its message")
            value = chunk[data_at:data_end]
            if attr.conv:
                value = _convert(attr.dtype, value)
            name = attr.name
            if name in attrs:
                raise Malformed(f"two attributes named {name!r}")
            attrs[name] = value
            attr_objs[name] = attr
            continue
        mtype, msize, mflags = unpack_message(chunk, p)
        body = p + header_size
        p = body + msize
        if p > end:
            raise Malformed(f"message of type {mtype:#x} runs past the end of its chunk")
        if mflags & 0x02 and mtype != _NIL:
            raise Unsupported(f"shared message of type {mtype:#x}")
        if mtype in ignored:
            continue
        if mtype == _LINK:
            links.append(chunk[body:p])
        elif mtype in _DATASET_MESSAGES:
            if mtype in raw:
                raise Malformed(f"object at {obj.addr}: message {mtype:#x} given twice")
            raw[mtype] = chunk[body:p]
        elif mtype == _LINK_INFO:
            obj.is_group = True
            obj.dense_links = _heap_address(chunk, body, p, 10, "link") != UNDEFINED
            obj.link_info = chunk[body:p]
        elif mtype == _ATTR_INFO and attrs is not None:
            if _heap_address(chunk, body, p, 4, "attribute") != UNDEFINED:
                raise Unsupported("dense attribute storage")
        elif mtype == _CONTINUATION:
            if msize < 16:
                raise Malformed("continuation message too short")
            continuations.append(_PAIR64.unpack_from(chunk, body))
        else:
            raise Unsupported(f"object header message of type {mtype:#x}")


def _heap_address(chunk: bytes, body: int, end: int, ordered_at: int, what: str) -> int:
    """The fractal heap address in a link or attribute info message at ``chunk[body:end]``
    (``ordered_at``: where it is when the message also tracks a creation order)."""
    if end - body < 2:
        raise Malformed(f"{what} info message too short")
    if chunk[body] != 0:
        raise Unsupported(f"{what} info message version {chunk[body]}")
    at = body + (ordered_at if chunk[body + 1] & 1 else 2)
    if at + 8 > end:
        raise Malformed(f"{what} info message too short")
    (heap,) = _U64.unpack_from(chunk, at)
    return int(heap)


def _checksum_ok(chunk: bytes) -> bool:
    (stored,) = _U32.unpack_from(chunk, len(chunk) - 4)
    return lookup3(chunk[:-4]) == int(stored)


# -- attributes, links, datasets ------------------------------------------------------


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def _old_attribute_header_size(
    version: int, name_size: int, type_size: int, space_size: int
) -> int:
    """Bytes before the value in an attribute message of version 1 or 2."""
    if version == 2:
        return 8 + name_size + type_size + space_size
    if version == 1:  # each part padded to 8 bytes
        return 8 + _pad8(name_size) + _pad8(type_size) + _pad8(space_size)
    raise Unsupported(f"attribute message version {version}")


def _new_attribute(head: bytes, expected: int) -> _Attr:
    """Parse the part of an attribute message before its value (a cache miss)."""
    if len(head) != expected:
        raise Malformed("attribute message truncated")
    version, flags, name_size, type_size, space_size = _ATTR.unpack_from(head, 0)
    if flags & 0x03:
        raise Unsupported("attribute with a shared datatype or dataspace")
    p = 9 if version == 3 else 8
    if name_size == 0 or head[p + name_size - 1] != 0:
        raise Malformed("attribute name not NUL-terminated")
    name = head[p : p + name_size - 1]
    if b"\0" in name:
        raise Malformed("attribute name holds a NUL")
    p += name_size if version > 1 else _pad8(name_size)
    dtype = _datatype(head[p : p + type_size])
    p += type_size if version > 1 else _pad8(type_size)
    space = _dataspace(head[p : p + space_size])
    return _remember(_ATTRS, head, _Attr(name, dtype, space))


def _swap(data: bytes, unit: int) -> bytes:
    arr = np.frombuffer(data, dtype=f">u{unit}")
    return arr.astype(f"<u{unit}").tobytes()


def _strings(data: bytes, size: int, fix: Callable[[bytes], bytes]) -> bytes:
    return b"".join(fix(data[i : i + size]).ljust(size, b"\0") for i in range(0, len(data), size))


def _before_nul(s: bytes) -> bytes:
    return s.split(b"\0", 1)[0]


def _no_trailing_spaces(s: bytes) -> bytes:
    return s.rstrip(b" ")


def _convert(dtype: _Type, data: bytes) -> bytes:
    conv = dtype.conv
    if conv == _RAW or not data:
        return data
    if conv == _SWAP:
        return _swap(data, dtype.swap)
    if conv == _NULLTERM:
        return _strings(data, dtype.size, _before_nul)
    return _strings(data, dtype.size, _no_trailing_spaces)


def _link(body: bytes) -> tuple[bytes, int]:
    """``(name, object header address)`` of a hard link message."""
    name, at = _link_at(body)
    (target,) = _U64.unpack_from(body, at)
    return name, target


def _link_at(body: bytes) -> tuple[bytes, int]:
    """``(name, where the object header address is in body)`` of a hard link message."""
    version, flags = body[0], body[1]
    if version != 1:
        raise Unsupported(f"link message version {version}")
    if flags & 0xE0:
        raise Malformed(f"link message with reserved flags {flags:#x}")
    p = 2
    link_type = 0
    if flags & 0x08:
        link_type = body[p]
        p += 1
    if flags & 0x04:
        p += 8  # creation order
    if flags & 0x10:
        p += 1  # name character set
    width = 1 << (flags & 3)
    name_size = int.from_bytes(body[p : p + width], "little")
    p += width
    name = body[p : p + name_size]
    if name_size == 0 or len(name) != name_size:
        raise Malformed("link name empty or truncated")
    if link_type != 0:
        raise Unsupported(f"link of type {link_type} (not a hard link)")
    if p + name_size + 8 > len(body):
        raise Malformed("link message truncated")
    return name, p + name_size


# -- the one object-header reader ---------------------------------------------------

_FIRST_READ = 1024  # bytes read at an object header's address, its first chunk most often
_DATASET_MESSAGES = frozenset({_DATASPACE, _DATATYPE, _LAYOUT})
_NO_ATTRIBUTES = _IGNORED | {_ATTRIBUTE, _ATTR_INFO}


class _Object:
    """The messages of one object header that h5guard's subset uses, sorted by role.

    ``attrs``: attribute name -> its value bytes as h5py reads them (``attr_objs``: the
    parsed rest of each attribute message); ``raw``: the dataspace, datatype and layout
    messages of a dataset; ``link_bodies``: a group's link messages, parsed by
    :meth:`links`; ``link_info``: its link info message.
    """

    __slots__ = (
        "addr",
        "attr_objs",
        "attributes",
        "attrs",
        "dense_links",
        "found_links",
        "is_group",
        "link_bodies",
        "link_info",
        "raw",
        "v2_plan",
    )

    def __init__(self, addr: int, attributes: bool) -> None:
        self.addr = addr
        # attributes=False: attribute messages are skipped (a v1 digest does not cover
        # a dataset's attributes), as the header's other ignorable messages are.
        self.attributes = attributes
        self.attrs: dict[bytes, bytes] = {}
        self.attr_objs: dict[bytes, _Attr] = {}
        self.raw: dict[int, bytes] = {}
        self.link_bodies: list[bytes] = []
        self.link_info = b""
        self.is_group = False
        self.dense_links = False
        self.found_links: dict[bytes, int] | None = None  # parsed already (_Header)
        self.v2_plan: _V2Plan | None = None  # its attributes' v2 heads (_Header)

    def links(self, file: _File | None = None) -> dict[bytes, int]:
        """The group's hard links, name -> object header address.

        Links in dense storage are read through ``file`` (:meth:`_File.dense_links`);
        without one they raise :class:`Unsupported`.
        """
        if self.found_links is not None:
            return self.found_links
        if self.dense_links:
            if file is None:
                raise Unsupported("dense link storage")
            if self.link_bodies:
                raise Malformed(f"group at {self.addr}: link messages beside dense storage")
            return file.dense_links(self.link_info)
        out: dict[bytes, int] = {}
        for body in self.link_bodies:
            name, target = _link(body)
            if name in out:
                raise Malformed(f"two links named {name!r}")
            out[name] = target
        return out

    def attr_value(self, name: bytes) -> bytes:
        """An attribute's value bytes, as h5py reads them."""
        return self.attrs[name]

    def v1_attrs(self) -> dict[bytes, bytes]:
        """Attribute name -> its v1 digest fields (the parsed prefix, then the value)."""
        objs = self.attr_objs
        return {name: objs[name].prefix + value for name, value in self.attrs.items()}

    def pop_digest(self) -> str | None:
        """The stored ``h5guard_digest`` text (removed from ``attrs``), or None."""
        value = self.attrs.pop(_DIGEST_ATTR, None)
        if value is None:
            return None
        del self.attr_objs[_DIGEST_ATTR]
        return value.rstrip(b"\0").decode("utf-8", errors="replace")


class _Header:
    """A group's object header parsed but for its values: attribute values and link
    addresses (:meth:`_File.object`).

    Learnt from a header the generic parse accepted (one chunk, compact links). Another
    header whose every byte but those values is the same (``matches``: signature,
    flags, chunk size, every message's type, size and flags, every attribute's name,
    type and space, every link's flags and name, the link and attribute info messages,
    the bytes between) parses to the same object with its own values, so it is built
    from them without the parse. The groups of one sweep repeat one or a few headers.
    """

    __slots__ = (
        "attr_names",
        "attr_objs",
        "convert",
        "end",
        "fixed",
        "info",
        "links",
        "plan",
        "ranges",
        "values",
    )

    def __init__(self) -> None:
        self.end = 0
        self.ranges: list[tuple[int, int]] = []  # the bytes past the key but the values
        self.fixed = b""  # what they hold
        self.values: list[tuple[int, int]] = []  # each attribute value, in message order
        self.attr_names: list[bytes] = []
        self.attr_objs: dict[bytes, _Attr] = {}
        self.convert: list[int] = []  # values stored in another byte order or padding
        self.links: list[tuple[bytes, int]] = []  # (name, where its address is)
        self.info = b""
        self.plan: _V2Plan | None = None

    def matches(self, chunk: bytes, end: int) -> bool:
        if end != self.end:
            return False
        return b"".join([chunk[a:b] for a, b in self.ranges]) == self.fixed

    def object(self, addr: int, chunk: bytes) -> _Object:
        obj = _Object(addr, True)
        values = [chunk[a:b] for a, b in self.values]
        for i in self.convert:
            values[i] = _convert(self.attr_objs[self.attr_names[i]].dtype, values[i])
        obj.attrs = dict(zip(self.attr_names, values, strict=True))
        obj.attr_objs = dict(self.attr_objs)  # a copy: the digest's entry is popped
        obj.found_links = {
            name: int.from_bytes(chunk[at : at + 8], "little") for name, at in self.links
        }
        obj.is_group = True
        obj.link_info = self.info
        obj.v2_plan = self.plan
        return obj

    @staticmethod
    def learn(chunk: bytes, p: int, end: int, header_size: int, obj: _Object) -> None:
        """Remember the header of ``obj`` (parsed from ``chunk[p:end]``), if it is one."""
        if end > _HEADER_BYTES_LIMIT:
            return
        header = _Header()
        header.end = end
        regions: list[tuple[int, int]] = []
        while p + header_size <= end:
            mtype = chunk[p]
            (msize,) = _U16.unpack_from(chunk, p + 1)
            body = p + header_size
            p = body + msize
            if mtype == _ATTRIBUTE:
                version, _, name_size, type_size, space_size = _ATTR.unpack_from(chunk, body)
                if version == 3:
                    data_at = body + 9 + name_size + type_size + space_size
                else:
                    data_at = body + _old_attribute_header_size(
                        version, name_size, type_size, space_size
                    )
                attr = _ATTRS.get(chunk[body:data_at])
                if attr is None:
                    return  # not cached (too long a name): nothing to learn
                if attr.conv:
                    header.convert.append(len(header.values))
                header.values.append((data_at, data_at + attr.nbytes))
                header.attr_names.append(attr.name)
                header.attr_objs[attr.name] = attr
                regions.append(header.values[-1])
            elif mtype == _LINK:
                name, at = _link_at(chunk[body:p])
                header.links.append((name, body + at))
                regions.append((body + at, body + at + 8))
            elif mtype == _LINK_INFO:
                header.info = chunk[body:p]
            elif mtype not in _IGNORED and mtype != _ATTR_INFO:
                return
        links = obj.links()
        if header.attr_names != list(obj.attrs) or [n for n, _ in header.links] != list(links):
            return  # not what the parse found: nothing to learn
        key_end = regions[0][0] if regions else end
        at = key_end
        for a, b in [*regions, (end, end)]:
            if a > at:
                header.ranges.append((at, a))
            at = b
        header.fixed = b"".join([chunk[a:b] for a, b in header.ranges])
        names = sorted(n for n in header.attr_names if not n.startswith(_RESERVED))
        heads = [(n, header.attr_objs[n].v2_head) for n in names]
        if all(head is not None for _, head in heads):
            header.plan = (len(names).to_bytes(8, "little"), [(n, h or b"") for n, h in heads])
        if len(_HEADER_LENGTHS) < _HEADER_LENGTH_LIMIT and key_end not in _HEADER_LENGTHS:
            _HEADER_LENGTHS.append(key_end)
        if key_end in _HEADER_LENGTHS:
            _HEADER_USE[1] += 1
            key = chunk[:key_end]
            same_start = _HEADERS.get(key)
            if same_start is None:
                if len(_HEADERS) >= _HEADER_LIMIT:
                    _HEADERS.clear()
                _HEADERS[key] = [header]
            elif len(same_start) < _HEADER_VARIANTS:
                same_start.append(header)
            else:
                same_start[len(same_start) - 1] = header


_HEADERS: dict[bytes, list[_Header]] = {}
_NO_HEADERS: list[_Header] = []  # (never added to)
# Headers that begin alike (libhdf5 orders a copy's messages as it finds room) and differ
# later, each tried in turn.
_HEADER_VARIANTS = 8
_HEADER_LIMIT = 1024  # starts kept
_HEADER_BYTES_LIMIT = 4096  # larger headers are not learnt (a result's group: a few hundred)
_HEADER_LENGTHS: list[int] = []  # the lengths of the keys of _HEADERS, tried in turn
_HEADER_LENGTH_LIMIT = 8
_HEADER_USE = [0, 0, 0]  # headers built from _HEADERS, headers learnt, chances to learn


def _learning() -> bool:
    """Whether to learn the header just parsed: not when headers are rarely met again
    (every group of the files read has a header of its own), but then still one in 64,
    so that files whose groups repeat their headers are soon read from them again."""
    hits, learnt, chances = _HEADER_USE
    _HEADER_USE[2] = chances + 1
    return learnt < 256 or hits >= learnt or chances % 64 == 0


def _digest_of_parts(datasets: dict[bytes, list[bytes]], attrs: dict[bytes, bytes]) -> str:
    parts = [DIGEST_V1_MAGIC]
    for name in sorted(datasets):
        parts += datasets[name]
    parts += map(attrs.__getitem__, sorted(attrs))
    return DIGEST_PREFIX + hashlib.sha256(b"".join(parts)).hexdigest()


def _fields(data: bytes, count: int) -> list[bytes]:
    """Split ``count`` length-prefixed digest fields F(x) F(y) ... back into x, y, ..."""
    out: list[bytes] = []
    p = 0
    for _ in range(count):
        size = int.from_bytes(data[p : p + 8], "little")
        out.append(data[p + 8 : p + 8 + size])
        p += 8 + size
    if p != len(data):
        raise Malformed("digest fields do not add up")
    return out


def _array(dtype: bytes, shape: bytes, value: bytes) -> npt.NDArray[Any]:
    dims = tuple(int(n) for n in shape.split(b",")) if shape else ()
    return np.frombuffer(value, dtype=np.dtype(dtype.decode())).reshape(dims)


# -- digest v2 (result trees; docs/format.md) -------------------------------------------

_F_G = _f(b"G")
_F_D = _f(b"D")


def _kinds_entry(attrs: dict[bytes, bytes], objs: dict[bytes, _Attr]) -> dict[str, str]:
    value = attrs.pop(_KINDS_ATTR, None)
    if value is None:
        return {}
    try:
        kinds = json.loads(value.rstrip(b"\0").decode("utf-8"))
    except ValueError as err:
        raise Malformed(f"h5guard_kinds is not JSON: {err}") from err
    if not isinstance(kinds, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in kinds.items()
    ):
        raise Malformed("h5guard_kinds is not an object of strings")
    return kinds


def _kind(hint: str | None, dtype: _Type, space: _Space, data: bytes) -> bytes:
    """The value's v2 kind: its h5guard_kinds entry, else the one its type implies."""
    if hint is None:
        if dtype.utf8:
            hint = "str" if space.scalar else "U"
        else:
            hint = dtype.scalar_kind if space.scalar else "ndarray"
    if hint == "U":  # as narrow as the longest element (at least 1)
        width = 1
        for i in range(0, len(data), dtype.size):
            width = max(width, len(data[i : i + dtype.size].rstrip(b"\0").decode("utf-8")))
        hint = f"U{width}"
    found = _KIND_FIELDS.get(hint)
    if found is None:
        found = _f(hint.encode())
        if len(hint) <= 64:  # a damaged h5guard_kinds entry is not worth keeping
            if len(_KIND_FIELDS) >= _CACHE_LIMIT:
                _KIND_FIELDS.clear()
            _KIND_FIELDS[hint] = found
    return found


_KIND_FIELDS: dict[str, bytes] = {}  # kind -> F(kind)


def _attrs_v2(
    attrs: dict[bytes, bytes],
    objs: dict[bytes, _Attr],
    kinds: Mapping[str, str],
    own: bool,
    plan: _V2Plan | None = None,
) -> bytes:
    if plan is not None and not kinds:
        # What the lines below give, the names sorted and their heads found once per
        # header layout (_Header): the same attributes, no kind named by h5guard_kinds.
        count, heads = plan
        parts = [count]
        for name, plan_head in heads:
            parts += (plan_head, attrs[name])
        return b"".join(parts)
    names = sorted(n for n in attrs if not n.startswith(_RESERVED))
    if kinds:
        known = {n.decode("utf-8", "replace") for n in names}
        if set(kinds) - known - ({""} if own else set()):
            missing = sorted(set(kinds) - known)
            raise Malformed(f"h5guard_kinds names missing attributes {missing}")
    parts = [len(names).to_bytes(8, "little")]
    for name in names:
        attr = objs[name]
        value = attrs[name]
        head = attr.v2_head
        if head is None or (kinds and name.decode("utf-8") in kinds):
            kind = _kind(kinds.get(name.decode("utf-8")), attr.dtype, attr.space, value)
            head = _f(name) + kind + attr.dtype.token + attr.space.token
            head += attr.nbytes.to_bytes(8, "little")
        parts += (head, value)
    return b"".join(parts)


_Values = dict[bytes, tuple[_Type, _Space, bytes]]
# The v2 count field and (name, head) of each attribute but the reserved ones, by name.
_V2Plan = tuple[bytes, list[tuple[bytes, bytes]]]


class _Desc:
    """What a schema check needs of a group, as parsed: values, datasets, subgroups."""

    __slots__ = ("attrs", "datasets", "groups", "values")

    def __init__(self, *, values: bool) -> None:
        self.values = values  # False: the names alone (which objects there are)
        self.attrs: _Values = {}
        # name -> (type, space, data, kind, the dataset's own attributes)
        self.datasets: dict[bytes, tuple[_Type, _Space, bytes, str, _Values]] = {}
        self.groups: dict[bytes, _Desc] = {}


def _values(obj: _Object) -> _Values:
    return {
        name: (a.dtype, a.space, obj.attr_value(name))
        for name, a in obj.attr_objs.items()
        if not name.startswith(_RESERVED)
    }


# -- fractal heaps (dense link storage) --------------------------------------------


class _Heap:
    """A fractal heap's managed objects: what a group's dense link storage needs."""

    __slots__ = (
        "blocks",
        "budget",
        "file",
        "id_length",
        "length_size",
        "loaded",
        "offset_size",
        "start_size",
        "starts",
    )

    def __init__(self, file: _File, addr: int, budget: list[int]) -> None:
        head = file._block(addr, 146, b"FRHP", budget)
        if head[4] != 0:
            raise Unsupported(f"fractal heap version {head[4]}")
        id_length, filter_length = struct.unpack_from("<HH", head, 5)
        (max_managed,) = _U32.unpack_from(head, 10)
        if filter_length:
            raise Unsupported("fractal heap with I/O filters")
        width, start_size, max_direct, max_heap_bits, _, root, rows = struct.unpack_from(
            "<HQQHHQH", head, 110
        )
        if (
            not (width and start_size and max_direct >= start_size and 0 < max_heap_bits <= 64)
            or start_size & (start_size - 1)
            or max_direct & (max_direct - 1)
            or width > 1024
        ):
            raise Malformed(f"fractal heap at {addr}: doubling table {width} x {start_size}")
        self.file = file
        self.budget = budget
        self.id_length = id_length
        self.start_size = start_size
        self.offset_size = (max_heap_bits + 7) // 8
        # libhdf5: min(bytes of a direct block offset, bytes of the largest managed object)
        self.length_size = min(
            ((max_direct.bit_length() - 1) + 7) // 8, (max_managed.bit_length() - 1) // 8 + 1
        )
        if 1 + self.offset_size + self.length_size > id_length:
            raise Malformed(f"fractal heap at {addr}: heap IDs of {id_length} bytes")
        # (heap offset, size, address) of every direct block, in heap order
        self.blocks: list[tuple[int, int, int]] = []
        self.loaded: dict[int, bytes] = {}  # direct blocks read so far, by address
        self.starts: list[int] = []  # the blocks' heap offsets, for a binary search
        if root == UNDEFINED:
            return
        if rows == 0:
            self.blocks.append((0, start_size, root))
            self.starts.append(0)
            return
        max_direct_rows = (max_direct.bit_length() - 1) - (start_size.bit_length() - 1) + 2
        if rows > max_direct_rows:
            raise Unsupported("fractal heap with indirect blocks below its root")
        entries = rows * width
        block = file._block(root, 5 + 8 + self.offset_size + 8 * entries + 4, b"FHIB", budget)
        if block[4] != 0:
            raise Unsupported(f"fractal heap indirect block version {block[4]}")
        p = 5 + 8 + self.offset_size
        offset = 0
        for row in range(rows):
            size = start_size if row < 2 else start_size << (row - 1)
            for _ in range(width):
                (child,) = _U64.unpack_from(block, p)
                p += 8
                if child != UNDEFINED:
                    self.blocks.append((offset, size, child))
                    self.starts.append(offset)
                offset += size

    def managed(self, heap_id: bytes) -> bytes:
        """The bytes of the managed object ``heap_id`` names."""
        if len(heap_id) > self.id_length or heap_id[0] & 0xF0:
            kind = heap_id[0] >> 4 & 3 if heap_id else -1
            raise Unsupported(f"heap ID of type {kind} (not a managed object)")
        o = 1 + self.offset_size
        offset = int.from_bytes(heap_id[1:o], "little")
        length = int.from_bytes(heap_id[o : o + self.length_size], "little")
        i = bisect.bisect_right(self.starts, offset) - 1
        if i < 0 or offset >= self.blocks[i][0] + self.blocks[i][1]:
            raise Malformed(f"heap object at {offset}: no direct block holds it")
        start, size, addr = self.blocks[i]
        if offset + length > start + size or length == 0:
            raise Malformed(f"heap object at {offset} ({length} bytes) past its block")
        block = self.loaded.get(addr)
        if block is None:
            block = self.loaded[addr] = self.file._block(addr, size, b"FHDB", self.budget)
        return block[offset - start : offset - start + length]


# -- one file's bytes ------------------------------------------------------------------


class _File:
    """The bytes of one file, where its addresses count from, and whether metadata
    checksums are verified: what every parse of one of its objects needs."""

    __slots__ = ("base", "buf", "checksums", "size")

    def __init__(self, buf: Buffer, base: int, *, checksums: bool = False) -> None:
        self.buf = buf
        self.base = base
        self.size = len(buf)
        self.checksums = checksums

    def object(self, addr: int, *, attributes: bool = True) -> _Object:
        """The version-2 object header at ``addr``, its messages sorted (:class:`_Object`).

        Dense attribute storage raises :class:`Unsupported`; dense link storage only
        when the links are asked for.
        """
        obj = _Object(addr, attributes)
        buf, size = self.buf, self.size
        start = self.base + addr
        if not 0 <= addr < UNDEFINED:
            raise Malformed(f"object header address {addr} outside the file")
        # Signature, version, flags, times, phase change values, chunk size (at most 38
        # bytes), then the messages: one read of a typical header's whole first chunk.
        head = bytes(buf[start : start + _FIRST_READ])
        if head[:5] != b"OHDR\x02":
            if head[:4] != b"OHDR":
                raise Malformed(f"no object header signature at address {addr}")
            raise Unsupported(f"object header version {head[4]}")
        flags = head[5]
        if flags & 0xC0:
            raise Malformed(f"object header with reserved flags {flags:#x}")
        p = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        data_start = p + (1 << (flags & 3))
        if data_start > len(head):
            raise Malformed(f"object header at {addr} runs past the end of the file")
        data_end = data_start + int.from_bytes(head[p:data_start], "little")
        if start + data_end + 4 > size:
            raise Malformed(f"object header at {addr} runs past the end of the file")
        # (The messages end at data_end: bytes read past the chunk are never parsed.)
        chunk = head if data_end + 4 <= len(head) else bytes(buf[start : start + data_end + 4])
        if self.checksums and not _checksum_ok(chunk[: data_end + 4]):
            raise Malformed(f"object header at {addr}: checksum mismatch")
        learn = attributes and not self.checksums
        if learn:
            for n in _HEADER_LENGTHS:
                variants = _HEADERS.get(chunk[:n], _NO_HEADERS)
                for i, known in enumerate(variants):
                    if known.matches(chunk, data_end):
                        _HEADER_USE[0] += 1
                        if i:  # the layout met last, tried first next time
                            variants.insert(0, variants.pop(i))
                        return known.object(addr, chunk)
        header_size = 6 if flags & 0x04 else 4  # with a creation order per message
        continuations: list[tuple[int, int]] = []
        _chunk_messages(chunk, data_start, data_end, header_size, obj, continuations)
        if continuations:
            learn = False
            self._continuations(obj, header_size, continuations, size - (data_end + 4))
        if obj.is_group and obj.raw:
            raise Malformed(f"group at {addr} carries dataset messages")
        if learn and obj.is_group and not obj.dense_links and _learning():
            with contextlib.suppress(Unsupported, Malformed, IndexError, struct.error):
                # A link the parse of the links refuses: the caller learns it from that.
                _Header.learn(chunk, data_start, data_end, header_size, obj)
        return obj

    def _continuations(
        self, obj: _Object, header_size: int, continuations: list[tuple[int, int]], budget: int
    ) -> None:
        """Sort the messages of ``obj``'s continuation chunks into it, in the order
        libhdf5 reads them.

        ``budget``: the bytes of the file outside the chunks read so far. The chunks of
        one header never overlap, so together they fit in the file: a bound on the work
        damaged continuation messages can cause.
        """
        buf, base, size, addr = self.buf, self.base, self.size, obj.addr
        seen = {addr}
        chunks: list[tuple[bytes, int, int]] = []
        while True:
            for offset, length in continuations:
                if offset in seen:
                    raise Malformed(f"object header at {addr}: continuation chunks form a cycle")
                seen.add(offset)
                cstart = base + offset
                if offset >= UNDEFINED or length < 8 or cstart + length > size:
                    raise Malformed(
                        f"continuation chunk at {offset} ({length} bytes) outside the file"
                    )
                budget -= length
                if budget < 0:
                    raise Malformed(f"object header at {addr}: chunks larger than the file")
                more = bytes(buf[cstart : cstart + length])
                if more[:4] != b"OCHK":
                    raise Malformed(f"no continuation chunk signature at address {offset}")
                if self.checksums and not _checksum_ok(more):
                    raise Malformed(f"continuation chunk at {offset}: checksum mismatch")
                chunks.append((more, 4, length - 4))
            continuations.clear()
            if not chunks:
                return
            chunk, p, end = chunks.pop()
            _chunk_messages(chunk, p, end, header_size, obj, continuations)

    def _plain(self, addr: int) -> tuple[_Plain, bytes] | None:
        """The v2 digest fields (but the data) and the data of the dataset at ``addr``
        when it is in the commonest form (:meth:`_plain_dataset`); None otherwise.

        A header whose bytes before its data are those of a header parsed before is
        not parsed again (:class:`_Plain`).
        """
        if not 0 <= addr < UNDEFINED or self.checksums:
            return None
        start = self.base + addr
        head = bytes(self.buf[start : start + _FIRST_READ])
        for n in _PLAIN_LENGTHS:
            plain = _PLAIN.get(head[:n])
            if plain is not None:
                end = n + plain.nbytes
                if end + 4 > len(head):
                    head = bytes(self.buf[start : start + end + 4])
                    if end + 4 > len(head):
                        return None  # the generic parse names the truncation
                data = head[n:end]
                return plain, (_convert(plain.dtype, data) if plain.dtype.conv else data)
        found = self._plain_dataset(addr, head)
        if found is None:
            return None
        raw, data_at, head = found
        dtype, space, nbytes, data = self.dataset_value(raw, b"")
        plain = _Plain(dtype, space, nbytes, _kind(None, dtype, space, data))
        # Only when nothing but the data follows the key: a compact layout whose data
        # ends the header chunk (data_at is 0 otherwise), and a kind the data does not
        # decide (UTF-8 text arrays are as wide as their longest element).
        if data_at and not (dtype.utf8 and not space.scalar):
            if len(_PLAIN_LENGTHS) < _PLAIN_LENGTH_LIMIT and data_at not in _PLAIN_LENGTHS:
                _PLAIN_LENGTHS.append(data_at)
            if data_at in _PLAIN_LENGTHS:
                _remember(_PLAIN, head[:data_at], plain)
        return plain, data

    def _plain_dataset(
        self, addr: int, head: bytes | None = None
    ) -> tuple[dict[int, bytes], int, bytes] | None:
        """The dataspace, datatype and layout messages of the object at ``addr`` when it
        is a dataset in the commonest form: one header chunk holding those and ignorable
        messages only (no attributes, no creation order). None otherwise, the generic
        parse (:meth:`object`) then decides, with its errors.

        Also where compact data starts in the header when the layout message, compact,
        ends the chunk (else 0), and the header's bytes (``head``: its first read).
        """
        start = self.base + addr
        if not 0 <= addr < UNDEFINED or self.checksums:
            return None
        if head is None:
            head = bytes(self.buf[start : start + _FIRST_READ])
        if head[:5] != b"OHDR\x02" or head[5] & 0xC4:
            return None
        flags = head[5]
        p = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        q = p + (1 << (flags & 3))
        end = q + int.from_bytes(head[p:q], "little")
        if start + end + 4 > self.size:
            return None
        if end + 4 > len(head):
            head = bytes(self.buf[start : start + end + 4])
            if end + 4 > len(head) or q > end:
                return None
        raw: dict[int, bytes] = {}
        unpack = _MSG.unpack_from
        mtype = _NIL
        while q + 4 <= end:
            mtype, msize, mflags = unpack(head, q)
            body = q + 4
            q = body + msize
            if q > end or mflags & 0x02:
                return None
            if mtype in _DATASET_MESSAGES:
                if mtype in raw:
                    return None
                raw[mtype] = head[body:q]
            elif mtype not in _IGNORED:
                return None
        if len(raw) != 3:
            return None
        layout = raw[_LAYOUT]
        data_at = 0
        # The last message is the layout, compact, its data filling it up to the chunk's end.
        compact = len(layout) >= 4 and layout[1] == 0
        if (
            mtype == _LAYOUT
            and q == end
            and compact
            and _U16.unpack_from(layout, 2)[0] == len(layout) - 4
        ):
            data_at = end - len(layout) + 4
        return raw, data_at, head

    def dense_links(self, link_info: bytes) -> dict[bytes, int]:
        """The hard links (name -> object header address) of a group whose links are in
        dense storage.

        The names index (a version-2 B-tree of type 5) lists a heap ID per link; each
        link message is a managed object of the group's fractal heap. The subset: a
        B-tree of depth 0 or 1, a heap without I/O filters whose root is a direct block
        or an indirect block of direct blocks (a few thousand links). Anything else
        raises :class:`Unsupported`. Each link's name must hash (lookup3) to the hash its
        B-tree record holds, as libhdf5's lookups by name require.
        """
        if len(link_info) < 18:
            raise Malformed("link info message too short")
        at = 10 if link_info[1] & 1 else 2
        heap_addr, index_addr = struct.unpack_from("<QQ", link_info, at)
        # The blocks of one heap and one B-tree never overlap, so together they fit in
        # the file: a bound on the work damaged addresses and counts can cause.
        budget = [self.size]
        heap = _Heap(self, heap_addr, budget)
        out: dict[bytes, int] = {}
        for record in self._name_index(index_addr, budget):
            name, target = _link(heap.managed(record[4:]))
            if lookup3(name) != int.from_bytes(record[:4], "little"):
                raise Malformed(f"link {name!r}: its name index record has another hash")
            if name in out:
                raise Malformed(f"two links named {name!r}")
            out[name] = target
        return out

    def _block(self, addr: int, size: int, signature: bytes, budget: list[int]) -> bytes:
        start = self.base + addr
        if not 0 <= addr < UNDEFINED or size < 10 or start + size > self.size:
            raise Malformed(f"{signature.decode()} block at {addr} outside the file")
        budget[0] -= size
        if budget[0] < 0:
            raise Malformed("dense link storage larger than the file")
        if self.checksums:  # their checksums sit mid-block: not parsed here
            raise Unsupported("checksums of dense link storage")
        block = bytes(self.buf[start : start + size])
        if block[:4] != signature:
            raise Malformed(f"no {signature.decode()} signature at address {addr}")
        return block

    def _name_index(self, addr: int, budget: list[int]) -> list[bytes]:
        """The records of a link name index (v2 B-tree, type 5): name hash, heap ID."""
        head = self._block(addr, 38, b"BTHD", budget)
        version, kind, node_size, record_size, depth = struct.unpack_from("<BBIHH", head, 4)
        root, root_count, total = struct.unpack_from("<QHQ", head, 16)
        if version != 0 or kind != 5 or record_size != 11:
            raise Unsupported(f"v2 B-tree version {version}, type {kind}, records {record_size}")
        if node_size < 10 + record_size or total > self.size:
            raise Malformed(f"v2 B-tree at {addr}: node size {node_size}, {total} records")
        ids = self._btree_node(root, root_count, depth, node_size, budget)
        if len(ids) != total:
            raise Malformed(f"v2 B-tree at {addr}: {len(ids)} records, header says {total}")
        return ids

    def _btree_node(
        self, addr: int, count: int, depth: int, node_size: int, budget: list[int]
    ) -> list[bytes]:
        if depth == 0:
            node = self._block(addr, node_size, b"BTLF", budget)
            if node[4] != 0 or node[5] != 5 or 6 + 11 * count + 4 > node_size:
                raise Malformed(f"v2 B-tree leaf at {addr}: bad version, type or count")
            return [node[p : p + 11] for p in range(6, 6 + 11 * count, 11)]
        if depth != 1:
            raise Unsupported(f"v2 B-tree of depth {depth}")
        node = self._block(addr, node_size, b"BTIN", budget)
        if node[4] != 0 or node[5] != 5:
            raise Malformed(f"v2 B-tree node at {addr}: bad version or type")
        # Each child pointer: address, then its record count in as few bytes as the most
        # records a leaf holds need (libhdf5's H5B2 "max_nrec_size").
        leaf_max = (node_size - 10) // 11
        width = (leaf_max.bit_length() + 7) // 8
        end = 6 + 11 * count + (8 + width) * (count + 1)
        if end + 4 > node_size:
            raise Malformed(f"v2 B-tree node at {addr}: {count} records do not fit")
        ids: list[bytes] = []
        p = 6 + 11 * count
        for i in range(count + 1):
            (child,) = _U64.unpack_from(node, p)
            child_count = int.from_bytes(node[p + 8 : p + 8 + width], "little")
            p += 8 + width
            if child_count > leaf_max:
                raise Malformed(f"v2 B-tree node at {addr}: child of {child_count} records")
            ids += self._btree_node(child, child_count, 0, node_size, budget)
            if i < count:  # the node's own record, between its children
                r = 6 + 11 * i
                ids.append(node[r : r + 11])
        return ids

    def dataset_fields(self, addr: int, name: bytes) -> list[bytes]:
        """The v1 digest fields of the dataset at ``addr``: tag, name, dtype, shape, data."""
        obj = self.object(addr, attributes=False)
        if obj.is_group or len(obj.raw) != 3:
            raise Unsupported(f"member {name!r} is not a dataset")
        dtype, space, nbytes, data = self.dataset_value(obj.raw, name)
        return [_TAG_D, _f(name), dtype.token, space.token, nbytes.to_bytes(8, "little"), data]

    def dataset_value(self, raw: dict[int, bytes], name: bytes) -> tuple[_Type, _Space, int, bytes]:
        """A dataset's type, space, size and data (as h5py reads it) from its messages."""
        dtype = _TYPES.get(raw[_DATATYPE]) or _datatype(raw[_DATATYPE])
        space = _SPACES.get(raw[_DATASPACE]) or _dataspace(raw[_DATASPACE])
        nbytes = dtype.size * space.count
        layout = raw[_LAYOUT]
        version, cls = layout[0], layout[1]
        if not 3 <= version <= 5:
            raise Unsupported(f"layout message version {version}")
        if cls == 0:
            (stored,) = _U16.unpack_from(layout, 2)
            data = layout[4 : 4 + stored]
            if stored != nbytes or len(data) != nbytes:
                raise Malformed(
                    f"dataset {name!r}: compact data of {stored} bytes, expected {nbytes}"
                )
        elif cls == 1:
            where, stored = _PAIR64.unpack_from(layout, 2)
            if where == UNDEFINED:
                if nbytes:
                    raise Unsupported(f"dataset {name!r}: data never written (fill value)")
                data = b""
            else:
                if nbytes > _MAX_CONTIGUOUS:
                    raise Unsupported(f"dataset {name!r}: {nbytes} bytes of contiguous data")
                start = self.base + where
                data = bytes(self.buf[start : start + nbytes])
                if stored < nbytes or len(data) != nbytes:
                    raise Malformed(f"dataset {name!r}: contiguous data outside the file")
        else:
            raise Unsupported(f"dataset {name!r}: layout class {cls}")
        if dtype.conv:
            data = _convert(dtype, data)
        return dtype, space, nbytes, data

    def group_parts(
        self, obj: _Object, stored: str | None
    ) -> tuple[dict[bytes, list[bytes]], dict[bytes, bytes], str | None]:
        """``(dataset digest fields by name, attribute digest fields by name, stored)`` of
        the v1 group whose header ``obj`` is."""
        links = obj.links()
        datasets = {name: self.dataset_fields(links[name], name) for name in links}
        return datasets, obj.v1_attrs(), stored

    def tree_digest(
        self, addr: int, desc: _Desc | None = None, *, v1_fallback: bool = False
    ) -> tuple[str, str | None]:
        """(computed v2 digest, stored digest) of the result tree at ``addr``.

        ``v1_fallback``: a group whose stored digest is not a v2 one raises
        :class:`_V1Digest` (with the parsed header) right after its header is read, so
        that the caller computes the v1 digest without parsing the header again.
        """
        obj = self.object(addr)
        stored = obj.pop_digest()
        if v1_fallback and (stored is None or not stored.startswith(DIGEST_V2_PREFIX)):
            raise _V1Digest(obj, stored)
        out = [DIGEST_V2_MAGIC]
        self._node_v2(obj, 0, out, desc, b"")
        return DIGEST_V2_PREFIX + hashlib.sha256(b"".join(out)).hexdigest(), stored

    def v1_digest(self, obj: _Object, stored: str | None) -> str:
        """The v1 digest of the group whose header ``obj`` is (its digest popped)."""
        if not obj.is_group:
            raise Unsupported(f"object at {obj.addr} is not a group with a link info message")
        datasets, attrs, _ = self.group_parts(obj, stored)
        return _digest_of_parts(datasets, attrs)

    def _node_v2(
        self, obj: _Object, depth: int, out: list[bytes], desc: _Desc | None, name: bytes
    ) -> None:
        """Append the v2 digest fields of ``obj`` (its stored digest already popped).

        ``desc``: the description of the group that holds the object (of the object itself
        at depth 0), filled in for a schema check; None when no schema asks.
        """
        attrs, objs = obj.attrs, obj.attr_objs
        kinds = _kinds_entry(attrs, objs) if _KINDS_ATTR in attrs else _NO_KINDS
        if obj.is_group:
            links = obj.links()
            fields = _attrs_v2(attrs, objs, kinds, False, obj.v2_plan)
            out += (_F_G, fields, len(links).to_bytes(8, "little"))
            own = desc
            if desc is not None and depth > 0:
                own = desc.groups[name] = _Desc(values=desc.values)
            if own is not None and own.values:
                own.attrs = _values(obj)
            if links and depth + 1 > _MAX_DEPTH:
                raise Unsupported("groups nested too deep")
            for member in sorted(links):
                out.append(len(member).to_bytes(8, "little") + member)
                addr = links[member]
                plain = self._plain(addr) if own is None or not own.values else None
                if plain is not None:
                    # What the lines below give for a dataset without attributes.
                    entry, data = plain
                    if own is not None:
                        own.datasets[member] = (entry.dtype, entry.space, data, entry.kind, {})
                    out += (entry.fields, data)
                    continue
                child = self.object(addr)
                child.pop_digest()
                self._node_v2(child, depth + 1, out, own, member)
            return
        if len(obj.raw) != 3 or depth == 0:
            raise Unsupported(f"object at {obj.addr} is not a group or a dataset of the subset")
        dtype, space, nbytes, data = self.dataset_value(obj.raw, b"")
        kind = _kind(kinds.get(""), dtype, space, data)
        if desc is not None:
            values = _values(obj) if desc.values else {}
            desc.datasets[name] = (dtype, space, data, kind[8:].decode(), values)
        out += (_F_D, _attrs_v2(attrs, objs, kinds, True) if attrs or kinds else _NO_ATTRS_V2, kind)
        out += (dtype.token, space.token, nbytes.to_bytes(8, "little"), data)


_NO_KINDS: Mapping[str, str] = MappingProxyType({})
_NO_ATTRS_V2 = (0).to_bytes(8, "little")


class _Plain:
    """What a dataset without attributes gives the v2 digest but its data (:meth:`_File._plain`).

    Cached by the header's bytes before its compact data, when the data ends the header
    chunk: those bytes hold everything the parse reads but the data (signature, flags,
    chunk size, every message's type, size and flags, the dataspace, datatype and layout
    messages up to the data), so a header that begins with them parses to the same
    result, its data apart. The results of one sweep repeat a few shapes and types.
    """

    __slots__ = ("dtype", "fields", "kind", "nbytes", "space")

    def __init__(self, dtype: _Type, space: _Space, nbytes: int, kind: bytes) -> None:
        self.dtype = dtype
        self.space = space
        self.nbytes = nbytes
        self.kind = kind[8:].decode()
        self.fields = b"".join(
            (_F_D, _NO_ATTRS_V2, kind, dtype.token, space.token, nbytes.to_bytes(8, "little"))
        )


_PLAIN: dict[bytes, _Plain] = {}
# The lengths of the keys of _PLAIN, tried in turn (a sweep's datasets have one or two).
_PLAIN_LENGTHS: list[int] = []
_PLAIN_LENGTH_LIMIT = 8


# -- public API -----------------------------------------------------------------------


def base_address(buf: Buffer) -> int:
    """Where HDF5 addresses count from: the superblock (after any userblock)."""
    size = len(buf)
    offset = 0
    while bytes(buf[offset : offset + 8]) != SIGNATURE:
        offset = 512 if offset == 0 else offset * 2
        if offset + 8 > size:
            raise Malformed("no HDF5 signature at offset 0, 512, 1024, ...")
    if offset + 12 > size:
        raise Malformed("file ends inside the superblock")
    version = buf[offset + 8]
    if version not in (2, 3):
        raise Unsupported(f"superblock version {version}")
    if (buf[offset + 9], buf[offset + 10]) != (8, 8):
        raise Unsupported(f"{buf[offset + 9]}-byte offsets, {buf[offset + 10]}-byte lengths")
    # The superblock records a base address too, but libhdf5 takes the place it found
    # the superblock at when the two differ; do the same.
    return offset


def root_attribute_values(buf: Buffer) -> dict[str, bytes]:
    """The root group's attributes as ``name -> stored value bytes`` (as h5py reads them).

    What a merge needs from a sealed shard (its format, schema and index strings) without
    opening it through libhdf5.

    Raises
    ------
    Unsupported
        The attributes are stored in a way this reader does not parse (dense storage).
    Malformed
        The bytes do not parse.
    """
    try:
        base = base_address(buf)
        (root,) = _U64.unpack_from(buf, base + 36)  # v2/v3: after base, extension, EOF
        obj = _File(buf, base).object(root)
        return {name.decode("utf-8", "replace"): obj.attr_value(name) for name in obj.attrs}
    except (IndexError, struct.error, ValueError, OverflowError) as err:
        raise Malformed(f"{type(err).__name__}: {err}") from err


def root_group(buf: Buffer) -> tuple[int, dict[str, bytes], dict[bytes, int]]:
    """The file's base address, its root group's attributes and its hard links.

    Returns
    -------
    tuple
        ``(base address, attribute name -> stored value bytes as h5py reads them,
        link name -> object header address)``; links in dense storage included.

    Raises
    ------
    Unsupported
        Attributes or links stored in a way this reader does not parse, or a link that
        is not a hard link.
    Malformed
        The bytes do not parse.
    """
    try:
        base = base_address(buf)
        (root,) = _U64.unpack_from(buf, base + 36)
        file = _File(buf, base)
        obj = file.object(root)
        if not obj.is_group:
            raise Malformed("the root object is not a group")
        attrs = {name.decode("utf-8", "replace"): value for name, value in obj.attrs.items()}
        return base, attrs, obj.links(file)
    except (IndexError, struct.error, ValueError, OverflowError) as err:
        raise Malformed(f"{type(err).__name__}: {err}") from err


def group_digest_at(
    buf: Buffer, base: int, addr: int, *, checksums: bool = False
) -> tuple[str, str | None]:
    """(computed digest, stored h5guard_digest text or None) for the group at addr.

    ``addr`` is the group's object header address relative to ``base`` (see
    :func:`base_address`). Raises :class:`Unsupported` or :class:`Malformed`.
    """
    return _digest_at(_File(buf, base, checksums=checksums), addr)


def _digest_at(file: _File, addr: int) -> tuple[str, str | None]:
    try:
        try:
            # v2 first: every file h5guard writes now carries v2 digests.
            return file.tree_digest(addr, v1_fallback=True)
        except _V1Digest as v1:
            return file.v1_digest(v1.obj, v1.stored), v1.stored
    except (IndexError, struct.error, ValueError, OverflowError) as err:
        raise Malformed(f"{type(err).__name__}: {err}") from err


def read_group_at(
    buf: Buffer, base: int, addr: int, *, describe: bool = True
) -> tuple[str, str | None, GroupInfo | None, list[bytes]]:
    """The digest of the group at ``addr`` and its description for a schema check.

    Parameters
    ----------
    buf, base
        The file's bytes and its base address (:func:`base_address`).
    addr
        The group's object header address, relative to ``base``.
    describe
        Build the :class:`~h5guard.schema.GroupInfo` (values as h5py would read
        them: read-only arrays over the parsed bytes), nested groups included.

    Returns
    -------
    tuple
        ``(computed digest, stored digest or None, description or None, members)``;
        ``members`` are the paths (relative to the group, ``b"sub/x"``) of every object
        below it, for a caller that has libhdf5 load (and checksum) their headers too.

    Raises
    ------
    Unsupported
        A construct outside the subset: check the group with libhdf5.
    Malformed
        The bytes do not parse.
    """
    try:
        file = _File(buf, base)
        desc = _Desc(values=describe)
        try:
            computed, stored = file.tree_digest(addr, desc, v1_fallback=True)
            return computed, stored, _info(desc) if describe else None, _paths(desc, b"")
        except _V1Digest as v1:
            if not v1.obj.is_group:
                raise Unsupported(
                    f"object at {addr} is not a group with a link info message"
                ) from None
            parts, attrs, stored = file.group_parts(v1.obj, v1.stored)
        info = None
        if describe:
            datasets = {}
            for name, (_, _, dtype, shape, _, data) in parts.items():
                arr = _array(_fields(dtype, 1)[0], _fields(shape, 1)[0], data)
                datasets[name.decode("utf-8")] = DatasetInfo.of(arr)
            values = {}
            for name, fields in attrs.items():
                _, _, dtype, shape, value = _fields(fields, 5)
                values[name.decode("utf-8")] = _array(dtype, shape, value)
            info = GroupInfo(FrozenMap(datasets), FrozenMap(values), FrozenMap())
        return _digest_of_parts(parts, attrs), stored, info, list(parts)
    except (IndexError, struct.error, ValueError, OverflowError, TypeError) as err:
        raise Malformed(f"{type(err).__name__}: {err}") from err


def _value_array(dtype: _Type, space: _Space, data: bytes) -> npt.NDArray[Any]:
    dims = tuple(int(n) for n in _fields(space.token, 1)[0].split(b",")) if not space.scalar else ()
    if dtype.utf8:
        import h5py  # only for the UTF-8 tag a schema's "str" rule looks for

        return np.frombuffer(data, dtype=h5py.string_dtype("utf-8", dtype.size)).reshape(dims)
    return np.frombuffer(data, dtype=np.dtype(dtype.numpy)).reshape(dims)


def _arrays(values: _Values) -> dict[str, npt.NDArray[Any]]:
    return {n.decode("utf-8"): _value_array(*v) for n, v in values.items()}


def _paths(desc: _Desc, prefix: bytes) -> list[bytes]:
    out = [prefix + name for name in desc.datasets]
    for name, sub in desc.groups.items():
        out.append(prefix + name)
        out += _paths(sub, prefix + name + b"/")
    return out


def _info(desc: _Desc) -> GroupInfo:
    datasets = {
        name.decode("utf-8"): DatasetInfo.of(
            _value_array(dtype, space, data), attrs=_arrays(attrs), kind=kind
        )
        for name, (dtype, space, data, kind, attrs) in desc.datasets.items()
    }
    groups = {name.decode("utf-8"): _info(sub) for name, sub in desc.groups.items()}
    return GroupInfo(FrozenMap(datasets), FrozenMap(_arrays(desc.attrs)), FrozenMap(groups))


def verify_groups_at(
    path: str | os.PathLike[str],
    groups: Mapping[str, tuple[int, str]],
    *,
    checksums: bool = False,
) -> tuple[list[tuple[str, str]], list[str]]:
    """Check groups of ``path`` against their expected digests, reading the file once.

    ``groups``: key -> (object header address relative to the base address, expected
    digest). Returns ``(problems, unsupported)``: ``problems`` has a ``(key, message)``
    for each group whose bytes are malformed, whose computed digest differs from the
    expected one, or whose stored ``h5guard_digest`` attribute differs or is missing;
    ``unsupported`` lists the keys this reader cannot judge (verify those with libhdf5).
    Raises OSError only if the file cannot be opened.
    """
    problems: list[tuple[str, str]] = []
    unsupported: list[str] = []
    if not groups:
        return problems, unsupported
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return [(key, "the file is empty") for key in groups], unsupported
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                base = base_address(buf)
            except Unsupported:
                return problems, list(groups)
            except Malformed as err:
                return [(key, f"unreadable superblock: {err}") for key in groups], unsupported
            file = _File(buf, base, checksums=checksums)
            for key, (addr, want) in groups.items():
                try:
                    computed, stored = _digest_at(file, addr)
                except Unsupported:
                    unsupported.append(key)
                    continue
                except Malformed as err:
                    problems.append((key, f"unreadable: {err}"))
                    continue
                if computed != want:
                    problems.append((key, f"copied group has digest {computed}, expected {want}"))
                elif stored is None:
                    problems.append((key, f"copied group has no {_DIGEST_ATTR.decode()} attribute"))
                elif stored != want:
                    problems.append((key, f"copied group stores digest {stored}, expected {want}"))
    return problems, unsupported


def flat_group_arrays(
    buf: Buffer, base: int, addr: int
) -> tuple[dict[str, npt.NDArray[Any]], dict[str, npt.NDArray[Any]]]:
    """The datasets and the attributes of the group at ``addr``, whose members are all
    datasets, as arrays over the parsed bytes.

    How a sealed shard's summary table (:mod:`h5guard._format.summary`) is read without
    libhdf5.

    Raises
    ------
    Unsupported
        A member is no dataset, or a construct outside the subset.
    Malformed
        The bytes do not parse.
    """
    try:
        file = _File(buf, base)
        obj = file.object(addr)
        if not obj.is_group:
            raise Unsupported(f"object at {addr} is not a group with a link info message")
        datasets: dict[str, npt.NDArray[Any]] = {}
        for name, target in obj.links(file).items():
            member = file.object(target, attributes=False)
            if member.is_group or len(member.raw) != 3:
                raise Unsupported(f"member {name!r} is not a dataset")
            dtype, space, _, data = file.dataset_value(member.raw, name)
            datasets[name.decode("utf-8")] = _value_array(dtype, space, data)
        attrs = {
            name.decode("utf-8"): _value_array(a.dtype, a.space, obj.attrs[name])
            for name, a in obj.attr_objs.items()
        }
        return datasets, attrs
    except (IndexError, struct.error, ValueError, OverflowError, TypeError) as err:
        raise Malformed(f"{type(err).__name__}: {err}") from err
