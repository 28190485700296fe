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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5guard import _layout
from h5guard.errors import SchemaError
from h5guard.schema import DatasetInfo, Schema

Array = npt.NDArray[Any]


@dataclass(frozen=True, slots=True)
class PreparedResult:
    """A result ready to be journaled and written: every value already normalized."""

    key: str
    datasets: Mapping[str, Array]
    attrs: Mapping[str, Array]
    digest: str

    @property
    def nbytes(self) -> int:
        """Bytes of values (datasets and attributes), without HDF5's headers."""
        return sum(a.nbytes for a in self.datasets.values()) + sum(
            a.nbytes for a in self.attrs.values()
        )


def prepare(
    key: str,
    datasets: Mapping[str, Any],
    attrs: Mapping[str, Any] | None,
    *,
    schema: Schema | None,
) -> PreparedResult:
    """Normalize, check and digest one result; raises before anything is written."""
    _layout.check_key(key)
    arrays = {name: _layout.normalize_value(f"{key}/{name}", v) for name, v in datasets.items()}
    attr_arrays = {
        name: _layout.normalize_value(f"{key}@{name}", v) for name, v in (attrs or {}).items()
    }
    for name in (*arrays, *attr_arrays):
        if not name or "/" in name or name.startswith(_layout.RESERVED_PREFIX):
            raise ValueError(
                f"group {key!r}: member name {name!r} is empty, contains '/', "
                "or uses the reserved prefix 'h5guard_'"
            )
    if schema is not None:
        _check_schema(schema, key, arrays, attr_arrays)
    return PreparedResult(key, arrays, attr_arrays, _layout.digest_of(arrays, attr_arrays))


def prepare_attrs(key: str, attrs: Mapping[str, Any]) -> PreparedResult:
    """Attributes alone (a shard's file attributes), normalized and digested like a result's."""
    arrays = {name: _layout.normalize_value(f"{key}@{name}", v) for name, v in attrs.items()}
    return PreparedResult(key, {}, arrays, _layout.digest_of({}, arrays))


def write_root_attrs(f: h5py.File, attrs: PreparedResult) -> None:
    """Store :func:`prepare_attrs`' values as attributes of the file's root group."""
    for name, arr in attrs.attrs.items():
        _layout.write_attr(f, name, arr)


def check_schema(schema: Schema, result: PreparedResult) -> None:
    """Raise :class:`~h5guard.SchemaError` if ``result`` breaks ``schema``."""
    _check_schema(schema, result.key, result.datasets, result.attrs)


def _check_schema(
    schema: Schema, key: str, arrays: Mapping[str, Array], attrs: Mapping[str, Array]
) -> None:
    infos = {name: DatasetInfo.of(a) for name, a in arrays.items()}
    problems = schema.check(infos, attrs)
    if problems:
        p = problems[0]
        where = f"{key}/{p.obj}" if p.obj else key
        raise SchemaError(f"group {where}: {p.code} {p.message} (schema {schema.name!r})")


def write(f: h5py.File, result: PreparedResult) -> None:
    """Write ``result`` as a new top-level group of ``f``, digest attribute included."""
    group = _layout.create_result_group(f, result.key)
    for name, arr in result.datasets.items():
        _layout.write_dataset(group, name, arr)
    for name, arr in result.attrs.items():
        _layout.create_attr(group, name, arr)
    _layout.create_attr(
        group, _layout.DIGEST_ATTR, np.array(result.digest.encode(), dtype=np.bytes_)
    )


# -- the journal encoding ---------------------------------------------------------------
# header (UTF-8 JSON): {"key", "digest", "members": [[kind, name, descr, shape], ...]}
# payload: each member's values in C order, in the header's order, native byte order of
# the descr (numpy's own ``descr`` string says it). Decoding recomputes the digest, so
# any change of a byte is caught there, not trusted.


def encode(result: PreparedResult) -> tuple[bytes, list[memoryview]]:
    """The header and the payload buffers (no copy of the data) of one result."""
    members: list[list[Any]] = []
    buffers: list[memoryview] = []
    for kind, values in (("D", result.datasets), ("A", result.attrs)):
        for name, arr in values.items():
            contiguous = np.ascontiguousarray(arr) if arr.ndim else np.asarray(arr).reshape(())
            members.append([kind, name, np.lib.format.dtype_to_descr(arr.dtype), list(arr.shape)])
            buffers.append(memoryview(contiguous.reshape(-1).view(np.uint8)))  # type: ignore[arg-type]
    header = {"key": result.key, "digest": result.digest, "members": members}
    return json.dumps(header, ensure_ascii=False).encode("utf-8"), buffers


class DecodeError(ValueError):
    """A journal record that does not decode to the result it claims (internal)."""


def decode(header: bytes, payload: bytes | memoryview) -> PreparedResult:
    """The inverse of :func:`encode`; raises :class:`DecodeError` on any inconsistency."""
    try:
        meta = json.loads(header.decode("utf-8"))
        key = str(meta["key"])
        digest = str(meta["digest"])
        members: Sequence[Sequence[Any]] = meta["members"]
        datasets: dict[str, Array] = {}
        attrs: dict[str, Array] = {}
        offset = 0
        view = memoryview(payload)
        for kind, name, descr, shape in members:
            dtype = np.lib.format.descr_to_dtype(_tuples(descr))
            dims = tuple(int(n) for n in shape)
            size = dtype.itemsize * math.prod(dims)
            chunk = view[offset : offset + size]
            if len(chunk) != size:
                raise DecodeError(f"record of {key!r} ends inside member {name!r}")
            arr = np.frombuffer(chunk, dtype=dtype).reshape(dims).copy()
            offset += size
            (datasets if kind == "D" else attrs)[str(name)] = arr
        if offset != len(view):
            raise DecodeError(f"record of {key!r} has {len(view) - offset} byte(s) too many")
    except DecodeError:
        raise
    except Exception as err:
        raise DecodeError(f"undecodable record: {err}") from err
    computed = _layout.digest_of(datasets, attrs)
    if computed != digest:
        raise DecodeError(f"record of {key!r}: stored digest {digest}, computed {computed}")
    return PreparedResult(key, datasets, attrs, digest)


def _tuples(descr: Any) -> Any:
    """JSON turned numpy's descr tuples into lists; give them back their shape."""
    if isinstance(descr, list):
        return [
            tuple(_tuples(x) for x in item) if isinstance(item, list) else item for item in descr
        ]
    return descr
