"""One result as the writer holds it: normalized, schema-checked, digested, encodable.

This is the single place that decides what a result *is*: :func:`prepare` turns what a
caller hands to :meth:`ShardWriter.add <h5guard.ShardWriter.add>` into a
:class:`PreparedResult` (or refuses it), :func:`encode` / :func:`decode` carry it
through the writer's journal byte for byte, and :func:`write` puts it into an HDF5 file
in the hardened layout. The writer, the journal recovery and salvage all go through it,
so a value is stored the same way whichever path it takes.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5guard._format import digest as digests
from h5guard._format import names, tree
from h5guard._format import write as layout
from h5guard.errors import SchemaError
from h5guard.schema import Schema


@dataclass(frozen=True, slots=True)
class PreparedResult:
    """A result ready to be journaled and written: a tree of normalized values.

    ``root`` is the result's own group (:class:`h5guard._format.tree.GroupNode`);
    :attr:`digest` its v2 content digest (docs/format.md), given or still being computed
    (:func:`digesting`).
    """

    key: str
    root: tree.GroupNode
    _digest: str | Future[str]

    @property
    def digest(self) -> str:
        """The v2 content digest (waits for it if it is being computed)."""
        known = self._digest
        return known if isinstance(known, str) else known.result()

    @property
    def datasets(self) -> dict[str, Any]:
        """The top-level datasets' stored arrays (subgroups left out): a flat view."""
        return {
            name: node.value.array
            for name, node in self.root.members.items()
            if isinstance(node, tree.DatasetNode)
        }

    @property
    def attrs(self) -> dict[str, Any]:
        """The result group's attributes as stored arrays."""
        return {name: value.array for name, value in self.root.attrs.items()}

    @property
    def nbytes(self) -> int:
        """Bytes of values (datasets and attributes), without HDF5's headers."""
        return tree.nbytes(self.root)


def prepare(
    key: str,
    datasets: Mapping[str, Any],
    attrs: Mapping[str, Any] | None,
    *,
    schema: Schema | None,
    private: bool = False,
) -> PreparedResult:
    """Normalize, check and digest one result; raises before anything is written.

    Values h5guard cannot store raise :class:`~h5guard.UnsupportedValueError` (saying
    what to store instead), results past the limits :class:`~h5guard.ResultLimitError`,
    and only a result that breaks a given schema :class:`~h5guard.SchemaError`.
    ``private``: see :func:`digested`.
    """
    return digested(key, checked_tree(key, datasets, attrs, schema=schema), private=private)


def checked_tree(
    key: str,
    datasets: Mapping[str, Any],
    attrs: Mapping[str, Any] | None,
    *,
    schema: Schema | None,
) -> tree.GroupNode:
    """:func:`prepare`'s first half: the normalized tree, checked (not yet digested)."""
    layout.check_key(key)
    root = tree.build(key, datasets, attrs)
    if schema is not None:
        _check_schema(schema, key, root)
    return root


def digested(key: str, root: tree.GroupNode, *, private: bool) -> PreparedResult:
    """:func:`prepare`'s second half: the result of a checked tree, digested.

    ``private=True`` copies every value first (values may be views of the caller's
    arrays, which the caller may change or reuse once ``add()`` returns), so that the
    digest, the journal and the shard all come from the same bytes.
    """
    if private:
        root = _private(root)
    return PreparedResult(key, root, digests.digest(root))


def digesting(key: str, root: tree.GroupNode) -> PreparedResult:
    """:func:`digested` without copies, the digest computed in a thread of its own.

    For a result written by the call that digests it (the writer's self-committing
    ``add()``): the hashing of big values runs beside the HDF5 write (hashlib drops the
    GIL on big buffers), and :attr:`PreparedResult.digest` waits for it where the digest
    is first needed. A thread per call, not a pool: a pool's idle threads do not survive
    a ``fork()``.
    """
    future: Future[str] = Future()

    def run() -> None:
        try:
            future.set_result(digests.digest(root))
        except BaseException as err:  # handed to whoever waits for the digest
            future.set_exception(err)

    threading.Thread(target=run, name="h5guard-digest", daemon=True).start()
    return PreparedResult(key, root, future)


# Only a caller's own ndarray, or a numpy scalar (a structured one is a view into its
# array), can be stored as a view of the caller's memory: every other kind (Python
# scalars, str, bytes, unicode arrays) was made into a new array by the normalization.
_MAY_SHARE = frozenset({"ndarray", "numpy"})


def _private_value(value: tree.Value) -> tree.Value:
    if value.kind not in _MAY_SHARE:
        return value
    # ndarray.copy keeps the dtype object, so h5py's UTF-8 tag too.
    return tree.Value(value.array.copy(), value.kind)


def _private_attrs(attrs: Mapping[str, tree.Value]) -> Mapping[str, tree.Value]:
    if all(v.kind not in _MAY_SHARE for v in attrs.values()):
        return attrs
    return {n: _private_value(v) for n, v in attrs.items()}


def _private(node: tree.GroupNode) -> tree.GroupNode:
    members: dict[str, tree.Node] = {}
    for name, child in node.members.items():
        if isinstance(child, tree.GroupNode):
            members[name] = _private(child)
        elif child.value.kind not in _MAY_SHARE and child.attrs is _private_attrs(child.attrs):
            members[name] = child
        else:
            members[name] = tree.DatasetNode(
                _private_value(child.value), _private_attrs(child.attrs)
            )
    return tree.GroupNode(_private_attrs(node.attrs), members)


def prepare_attrs(key: str, attrs: Mapping[str, Any]) -> PreparedResult:
    """Attributes alone (a shard's file attributes), normalized and digested like a result's."""
    root = tree.GroupNode(tree.build(key, {}, attrs).attrs)
    return PreparedResult(key, root, digests.digest(root))


def write_root_attrs(f: h5py.File, attrs: PreparedResult) -> None:
    """Store :func:`prepare_attrs`' values as attributes of the file's root group."""
    for name, value in attrs.root.attrs.items():
        layout.write_attr(f, name, value.array)


def check_schema(schema: Schema, result: PreparedResult) -> None:
    """Raise :class:`~h5guard.SchemaError` if ``result`` breaks ``schema``."""
    _check_schema(schema, result.key, result.root)


def _check_schema(schema: Schema, key: str, root: tree.GroupNode) -> None:
    problems = schema.check_group(tree.describe(root))
    if problems:
        p = problems[0]
        where = f"{key}/{p.obj}" if p.obj else key
        raise SchemaError(f"group {where}: {p.code} {p.message} (schema {schema.name!r})")


def write(f: h5py.File, result: PreparedResult) -> None:
    """Write ``result`` as a new top-level group of ``f``, digest attribute included."""
    gid = layout.create_group_id(f.id, result.key)
    layout.write_members_id(gid, result.root)
    layout.create_attr_id(gid, names.DIGEST_ATTR, np.array(result.digest.encode(), dtype=np.bytes_))


# -- the journal encoding ---------------------------------------------------------------
# header (UTF-8 JSON): {"key", "digest", "root": NODE} where a group NODE is
# ["G", ATTRS, [[name, NODE], ...]], a dataset NODE ["D", ATTRS, VALUE], ATTRS is
# [[name, VALUE], ...] and VALUE is [kind, descr, shape]. The payload is every VALUE's
# data in C order, in the order the header lists them (depth first, a node's attributes
# before its members or its data), in the byte order its numpy ``descr`` says. Strings
# of kind "str" and "U<n>" are UTF-8 (descr ``|S<n>``). Decoding recomputes the digest,
# so any change of a byte is caught there, not trusted.


_SMALL_VALUE = 4096
_DESCR_OF: dict[tuple[np.dtype[Any], bool], Any] = {}


def _descr(dtype: np.dtype[Any]) -> Any:
    # The UTF-8 tag is part of the key: numpy's dtype equality ignores metadata.
    utf8 = tree.is_utf8(dtype)
    descr = _DESCR_OF.get((dtype, utf8))
    if descr is None:
        # UTF-8 strings carry h5py's tag as dtype metadata, which numpy's descr drops
        # (with a warning): the kind says they are UTF-8, so record the plain "|S<n>".
        descr = f"|S{dtype.itemsize}" if utf8 else np.lib.format.dtype_to_descr(dtype)
        if len(_DESCR_OF) < 1024:
            _DESCR_OF[(dtype, utf8)] = descr
    return descr


def _value_meta(value: tree.Value, buffers: list[memoryview]) -> list[Any]:
    arr = value.array
    if arr.nbytes <= _SMALL_VALUE:
        # A copy of a few bytes costs less than the views that avoid it.
        buffers.append(memoryview(arr.tobytes()))
    else:
        contiguous = np.ascontiguousarray(arr)
        buffers.append(memoryview(contiguous.reshape(-1).view(np.uint8)))  # type: ignore[arg-type]
    return [value.kind, _descr(arr.dtype), list(arr.shape)]


def _node_meta(node: tree.Node, buffers: list[memoryview]) -> list[Any]:
    attrs = [[name, _value_meta(v, buffers)] for name, v in node.attrs.items()]
    if isinstance(node, tree.DatasetNode):
        return ["D", attrs, _value_meta(node.value, buffers)]
    return ["G", attrs, [[name, _node_meta(m, buffers)] for name, m in node.members.items()]]


def encode(result: PreparedResult) -> tuple[bytes, list[memoryview]]:
    """The header and the payload buffers (no copy of the data) of one result."""
    buffers: list[memoryview] = []
    header = {"key": result.key, "digest": result.digest, "root": _node_meta(result.root, buffers)}
    return json.dumps(header, ensure_ascii=False).encode("utf-8"), buffers


class DecodeError(ValueError):
    """A journal record that does not decode to the result it claims (internal)."""


_DESCRS: dict[str, np.dtype[Any]] = {}


def _dtype(kind: str, descr: Any) -> np.dtype[Any]:
    if isinstance(descr, str):
        dtype = _DESCRS.get(descr)
        if dtype is None:
            dtype = np.lib.format.descr_to_dtype(_tuples(descr))
            if len(_DESCRS) < 1024:
                _DESCRS[descr] = dtype
    else:
        dtype = np.lib.format.descr_to_dtype(_tuples(descr))
    if kind == "str" or (kind.startswith("U") and kind[1:].isdigit()):
        dtype = tree.utf8_dtype(dtype.itemsize)
    return dtype


class _Skeleton:
    """A record's tree with empty arrays of the right dtypes and shapes, to be filled."""

    def __init__(self, key: str, limit: int) -> None:
        self.key = key
        self.limit = limit  # the payload's length: no array is allocated beyond it
        self.arrays: list[npt.NDArray[Any]] = []
        self.nbytes = 0

    def value(self, meta: Sequence[Any]) -> tree.Value:
        kind, descr, shape = meta
        kind = str(kind)
        dtype = _dtype(kind, descr)
        dims = tuple(int(n) for n in shape)
        if any(n < 0 for n in dims):
            raise DecodeError(f"record of {self.key!r}: negative shape {dims}")
        if self.nbytes + dtype.itemsize * math.prod(dims) > self.limit:
            raise DecodeError(f"record of {self.key!r} ends inside a value")
        arr = np.empty(dims, dtype=dtype)
        tree.check_kind(kind, arr, self.key)
        self.arrays.append(arr)
        self.nbytes += arr.nbytes
        return tree.Value(arr, kind)

    def node(self, meta: Sequence[Any], depth: int) -> tree.Node:
        if depth > names.MAX_DEPTH + 1:
            raise DecodeError(f"record of {self.key!r} nests too deep")
        tag, attrs_meta, rest = meta
        attrs = {str(name): self.value(v) for name, v in attrs_meta}
        if tag == "D":
            return tree.DatasetNode(self.value(rest), attrs)
        if tag != "G":
            raise DecodeError(f"record of {self.key!r}: unknown node tag {tag!r}")
        members = {str(name): self.node(m, depth + 1) for name, m in rest}
        return tree.GroupNode(attrs, members)

    def buffers(self) -> list[memoryview]:
        """Writable byte views of the arrays, in payload order (empty ones left out)."""
        return [
            memoryview(arr.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
            for arr in self.arrays
            if arr.nbytes
        ]


class PendingRecord:
    """A journal record being read: fill :meth:`buffers` with its payload, then
    :meth:`finish` verifies the digest and gives the result (one copy of the data, from
    wherever the payload is straight into the result's own arrays)."""

    def __init__(self, header: bytes, payload_length: int) -> None:
        try:
            meta = json.loads(header.decode("utf-8"))
            self.key = str(meta["key"])
            self.digest = str(meta["digest"])
            self._skeleton = _Skeleton(self.key, payload_length)
            root = self._skeleton.node(meta["root"], 0)
        except DecodeError:
            raise
        except Exception as err:
            raise DecodeError(f"undecodable record: {err}") from err
        if not isinstance(root, tree.GroupNode):
            raise DecodeError(f"record of {self.key!r}: the root is not a group")
        self.root = root
        if self._skeleton.nbytes < payload_length:
            raise DecodeError(
                f"record of {self.key!r} has {payload_length - self._skeleton.nbytes} "
                "byte(s) too many"
            )

    def buffers(self) -> list[memoryview]:
        """Where the payload goes, in order: together exactly the payload's length."""
        return self._skeleton.buffers()

    def finish(self) -> PreparedResult:
        """The result, once its buffers hold the payload; DecodeError if it is not the one
        the record claims."""
        computed = digests.digest(self.root)
        if computed != self.digest:
            raise DecodeError(
                f"record of {self.key!r}: stored digest {self.digest}, computed {computed}"
            )
        return PreparedResult(self.key, self.root, self.digest)


def decode(header: bytes, payload: bytes | memoryview) -> PreparedResult:
    """The inverse of :func:`encode`; raises :class:`DecodeError` on any inconsistency."""
    view = memoryview(payload).cast("B")
    pending = PendingRecord(header, view.nbytes)
    offset = 0
    for buf in pending.buffers():
        buf[:] = view[offset : offset + buf.nbytes]
        offset += buf.nbytes
    return pending.finish()


def _tuples(descr: Any) -> Any:
    """JSON turned numpy's descr tuples into lists; give them back their shape."""
    if isinstance(descr, list):
        return [_field(item) for item in descr]
    return descr


def _field(item: Any) -> Any:
    # A field is [name, descr] or [name, descr, shape]; descr may be nested fields.
    if not isinstance(item, list):
        return item
    name, sub, *shape = item
    fixed = _tuples(sub) if isinstance(sub, list) else sub
    return (name, fixed, tuple(shape[0])) if shape else (name, fixed)
