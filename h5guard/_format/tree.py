"""A result as a small tree, its value kinds, and Python values turned into it and back.

A result is a :class:`GroupNode`: attributes, and members that are datasets
(:class:`DatasetNode`, with attributes of their own) or nested groups. Every value
(a dataset's data, an attribute) is a :class:`Value`: the exact array h5guard stores
and digests, and its *kind*, which says what Python object reading it back returns
(``"str"`` for a Python ``str``, ``"bytes"``, ``"int"``, ``"U7"`` for a numpy unicode
array of width 7, ``"ndarray"``, ...). Kinds that the stored HDF5 type and shape imply
(:func:`default_kind`) are not written; the others go into one small JSON attribute
(``h5guard_kinds``) of the object that holds the value.

:func:`build` turns what a caller gives ``add()`` into a tree (refusing what cannot be
stored, saying what to store instead); :func:`python_tree` turns a tree back into
those values; :class:`Dataset`, :class:`Group` and :class:`Result` are the public
value classes of both directions. :func:`describe` gives a schema the same
description of a tree that every reader gives of a stored group. The digest of a tree
is :mod:`h5guard._format.digest`'s, its writing :mod:`h5guard._format.write`'s
(docs/format.md defines both).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5guard._format.names import (
    MAX_ATTR_BYTES,
    MAX_DEPTH,
    MAX_NAME_BYTES,
    MAX_OBJECTS,
    PY_SCALAR_KINDS,
    RESERVED_PREFIX,
)
from h5guard.errors import ResultLimitError, UnsupportedValueError
from h5guard.schema import DatasetInfo, FrozenMap, GroupInfo

Array = npt.NDArray[Any]


_SCALAR_DEFAULTS = {token: kind for kind, token in PY_SCALAR_KINDS.items()}
_NUMBER_KINDS = "biufc"
_UTF8_DT_CACHE: dict[int, np.dtype[Any]] = {}


def utf8_dtype(size: int) -> np.dtype[Any]:
    """numpy's ``S<size>`` tagged so that h5py writes it as a UTF-8 (H5T_CSET_UTF8) string."""
    dt = _UTF8_DT_CACHE.get(size)
    if dt is None:
        dt = _UTF8_DT_CACHE[size] = h5py.string_dtype("utf-8", size)
    return dt


def is_utf8(dtype: np.dtype[Any]) -> bool:
    """A fixed-length string dtype carrying h5py's UTF-8 tag (what h5py.check_string_dtype
    says, read straight from the metadata: this runs for every value written)."""
    metadata = dtype.metadata
    return metadata is not None and dtype.kind == "S" and metadata.get("h5py_encoding") == "utf-8"


@dataclass(frozen=True, slots=True, eq=False)
class Value:
    """One stored value: the array as written and digested, and what reading returns."""

    array: Array
    kind: str


@dataclass(frozen=True, slots=True, eq=False)
class DatasetNode:
    value: Value
    attrs: Mapping[str, Value] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, eq=False)
class GroupNode:
    attrs: Mapping[str, Value] = field(default_factory=dict)
    members: Mapping[str, GroupNode | DatasetNode] = field(default_factory=dict)


Node = GroupNode | DatasetNode


def default_kind(dtype: np.dtype[Any], shape: tuple[int, ...]) -> str:
    """The kind a stored value has when no ``h5guard_kinds`` entry names another.

    ``"U"`` (a unicode array as narrow as its longest element) is resolved by
    :func:`resolve_kind` against the data.
    """
    if is_utf8(dtype):
        return "str" if shape == () else "U"
    if shape == ():
        return "numpy" if dtype.names is not None else _SCALAR_DEFAULTS.get(dtype.str, "numpy")
    return "ndarray"


def _min_unicode_width(arr: Array) -> int:
    if arr.size == 0:
        return 1
    decoded = np.char.decode(arr.astype(f"S{arr.dtype.itemsize}"), "utf-8")
    return max(1, int(np.char.str_len(decoded).max()))


def resolve_kind(kind: str, arr: Array) -> str:
    return f"U{_min_unicode_width(arr)}" if kind == "U" else kind


def check_kind(kind: str, arr: Array, where: str) -> None:
    """Raise ValueError if ``kind`` cannot describe ``arr`` (a damaged kinds attribute)."""
    ok: bool
    if kind in PY_SCALAR_KINDS:
        ok = arr.shape == () and arr.dtype.str == PY_SCALAR_KINDS[kind]
    elif kind == "str":
        ok = arr.shape == () and is_utf8(arr.dtype)
    elif kind == "bytes":
        ok = arr.ndim == 1 and arr.dtype == np.uint8
    elif kind.startswith("U") and kind[1:].isdigit():
        ok = is_utf8(arr.dtype)
    else:
        ok = kind in ("numpy", "ndarray") and not is_utf8(arr.dtype)
    if not ok:
        raise ValueError(f"{where}: kind {kind!r} does not fit a stored {arr.dtype} {arr.shape}")


# -- the values add() takes and read() gives back ----------------------------------------


def _equal(a: Any, b: Any) -> bool:
    """Values equal in type, dtype, shape and bytes (NaN equals NaN); mappings by key."""
    if isinstance(a, Group | Dataset) or isinstance(b, Group | Dataset):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return (
            isinstance(a, Mapping)
            and isinstance(b, Mapping)
            and set(a) == set(b)
            and all(_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, np.ndarray | np.generic) or isinstance(b, np.ndarray | np.generic):
        return (
            type(a) is type(b)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.asarray(a).tobytes() == np.asarray(b).tobytes()
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, float | complex):
        return bool(a == b or (a != a and b != b)) and repr(a) == repr(b)
    return bool(a == b)


@dataclass(frozen=True, slots=True, eq=False)
class Dataset:
    """A dataset with attributes: pass it in ``datasets`` to ``add()``; read gives it back.

    A dataset without attributes is given and read back as its plain value.

    Parameters
    ----------
    data
        The value (anything ``add()`` accepts as a dataset).
    attrs
        The dataset's own attributes.

    Examples
    --------
    >>> import numpy as np
    >>> from h5guard import Dataset
    >>> layout = Dataset(np.zeros((3, 2)), attrs={"units": "m"})
    """

    data: Any
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dataset):
            return NotImplemented
        return _equal(self.data, other.data) and _equal(dict(self.attrs), dict(other.attrs))

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True, eq=False)
class Group:
    """A subgroup with attributes, in ``datasets`` of ``add()``; read gives it back.

    A subgroup without attributes is given and read back as a plain ``dict``.

    Parameters
    ----------
    members
        Its datasets and nested groups, by name (as ``datasets`` of ``add()``).
    attrs
        The group's attributes.

    Examples
    --------
    >>> from h5guard import Group
    >>> history = Group({"loss": [0.5, 0.25]}, attrs={"iteration": 3})
    """

    members: Mapping[str, Any]
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Group):
            return NotImplemented
        return _equal(dict(self.members), dict(other.members)) and _equal(
            dict(self.attrs), dict(other.attrs)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True, eq=False)
class Result:
    """One result read back: what was given to ``add(key, datasets, attrs)``.

    Parameters
    ----------
    key
        The result's key.
    datasets
        Its datasets and subgroups, as they were given.
    attrs
        Its attributes, as they were given.
    digest
        The stored content digest (None if the group had none).
    path
        The file it was read from.
    """

    key: str
    datasets: Mapping[str, Any]
    attrs: Mapping[str, Any]
    digest: str | None
    path: str

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Result):
            return NotImplemented
        return (
            self.key == other.key
            and _equal(dict(self.datasets), dict(other.datasets))
            and _equal(dict(self.attrs), dict(other.attrs))
        )

    __hash__ = None  # type: ignore[assignment]


# -- turning what a caller gives into values -------------------------------------------


def _refuse(where: str, what: str, instead: str) -> UnsupportedValueError:
    return UnsupportedValueError(where, what, instead)


def _python_classes(value: Any, seen: set[str], depth: int = 0) -> None:
    """The classes of the leaves of a (nested) list: number, str, bytes or other."""
    if depth > MAX_DEPTH:
        seen.add("other")
        return
    for item in value:
        if isinstance(item, list | tuple):
            _python_classes(item, seen, depth + 1)
        elif isinstance(item, bool | int | float | complex | np.number | np.bool_):
            seen.add("number")
        elif isinstance(item, str):
            seen.add("str")
        elif isinstance(item, bytes):
            seen.add("bytes")
        elif item is None:
            seen.add("None")
        else:
            seen.add("other")


def _check_structured(dtype: np.dtype[Any], where: str) -> None:
    """Fields of numbers, booleans, fixed bytes or nested structures, without padding."""
    offset = 0
    assert dtype.names is not None and dtype.fields is not None
    for name in dtype.names:
        sub, at = dtype.fields[name][:2]
        if at != offset:
            raise _refuse(
                where,
                f"structured dtype {dtype} with padding or overlapping fields (field {name!r} at byte {at}, expected {offset})",
                "repack it without padding: numpy.lib.recfunctions.repack_fields(arr)",
            )
        base = sub.base if sub.subdtype is not None else sub
        if base.names is not None:
            _check_structured(base, where)
        elif base.kind == "U":
            raise _refuse(
                where,
                f"structured field {name!r} of unicode dtype {base}",
                "encode the text to fixed-length bytes (np.char.encode(x, 'utf-8')), or store it as its own dataset",
            )
        elif base.kind not in _NUMBER_KINDS + "S" or (base.kind in "fc" and base.itemsize > 16):
            raise _refuse(
                where,
                f"structured field {name!r} of dtype {base}",
                "use fields of numbers, booleans, complex numbers or fixed-length bytes",
            )
        offset += sub.itemsize
    if offset != dtype.itemsize:
        raise _refuse(
            where,
            f"structured dtype {dtype} with {dtype.itemsize - offset} byte(s) of trailing padding",
            "repack it without padding: numpy.lib.recfunctions.repack_fields(arr)",
        )


def _array_value(where: str, arr: Array, kind: str) -> Value:
    dt = arr.dtype
    string_info = h5py.check_string_dtype(dt)
    if h5py.check_vlen_dtype(dt) is not None or (
        string_info is not None and string_info.length is None
    ):
        raise _refuse(
            where,
            "a variable-length array or string",
            "use fixed-length values: np.array(list_of_str) for text, one dataset per row (or padding) for ragged data",
        )
    if dt.kind == "O":
        raise _refuse(
            where,
            "a numpy object array",
            "convert it to a fixed dtype: np.array(values, dtype=str) for text, a numeric dtype for numbers, json.dumps(...) for anything else",
        )
    if dt.kind == "U":
        width = dt.itemsize // 4
        encoded = np.char.encode(arr, "utf-8")
        size = max(1, encoded.dtype.itemsize)
        stored = np.asarray(encoded, dtype=utf8_dtype(size), order="C")
        return Value(stored, f"U{width}")
    if dt.kind == "S":
        if is_utf8(dt):
            # Stored, it reads back as text of kind "U", not as these bytes: refused
            # rather than returned as something else.
            raise _refuse(
                where,
                f"a bytes array tagged as UTF-8 text ({dt}, h5py.string_dtype('utf-8'))",
                "pass text as a str array, np.char.decode(arr, 'utf-8') (read back as str), "
                f"or raw bytes untagged, arr.astype('S{max(1, dt.itemsize)}')",
            )
        if dt.itemsize == 0:
            arr = arr.astype("S1")
        return Value(np.asarray(arr, order="C"), kind)
    if dt.kind == "V":
        if dt.names is None or dt.subdtype is not None:
            raise _refuse(
                where,
                f"an opaque (void) array of dtype {dt}",
                "store raw bytes as Python bytes or a uint8 array",
            )
        _check_structured(dt, where)
        return Value(np.asarray(arr, order="C"), kind)
    if dt.kind == "m":
        unit, count = np.datetime_data(dt)
        step = f"{count}{unit}" if count != 1 else unit
        raise _refuse(
            where,
            f"a {dt} (timedelta) array",
            f"store arr.astype('int64') (counts of {step}) with the unit {step!r} in an "
            "attribute, or float seconds: arr / np.timedelta64(1, 's')",
        )
    if dt.kind == "M":
        raise _refuse(
            where,
            f"a {dt} (datetime) array",
            "store ISO-8601 text, np.datetime_as_string(arr), or arr.astype('int64') with "
            "the unit in an attribute",
        )
    if dt.kind in _NUMBER_KINDS:
        if dt.kind in "fc" and dt.itemsize > (8 if dt.kind == "f" else 16):
            raise _refuse(
                where,
                f"extended precision {dt}",
                "convert it to float64 / complex128 (HDF5 has no portable long double)",
            )
        # Not np.ascontiguousarray: it turns a scalar into a 1-element array.
        return Value(np.asarray(arr, order="C"), kind)
    raise _refuse(where, f"an array of dtype {dt}", "convert it to numbers, booleans or str")


def normalize(where: str, value: Any) -> Value:
    """The :class:`Value` h5guard stores for ``value``; raises UnsupportedValueError."""
    if isinstance(value, np.generic):
        if isinstance(value, np.str_):
            return normalize(where, str(value))
        return _array_value(where, np.asarray(value), "numpy")
    if isinstance(value, bool):
        return Value(np.asarray(value, dtype=np.bool_), "bool")
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise _refuse(
                where,
                f"the integer {value}, which does not fit in 64 bits",
                "store str(n) to keep it exact, or float(n) if an approximation will do",
            )
        return Value(np.asarray(value, dtype=np.int64), "int")
    if isinstance(value, float):
        return Value(np.asarray(value, dtype=np.float64), "float")
    if isinstance(value, complex):
        return Value(np.asarray(value, dtype=np.complex128), "complex")
    if isinstance(value, str):
        encoded = _utf8(value, where)
        if encoded.endswith(b"\0"):
            raise _refuse(
                where,
                "text ending in NUL characters (fixed-length HDF5 strings drop them)",
                "strip the NULs, or store the exact bytes as bytes",
            )
        return Value(np.array(encoded, dtype=utf8_dtype(max(1, len(encoded)))), "str")
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return Value(np.frombuffer(data, dtype=np.uint8).copy(), "bytes")
    if value is None:
        raise _refuse(
            where,
            "None",
            "leave the member out, or store NaN, an empty array, or a status attribute that says why there is no value",
        )
    if isinstance(value, Mapping):
        raise _refuse(
            where,
            "a dict",
            "store json.dumps(value) as a str; in datasets, a dict is a subgroup",
        )
    if isinstance(value, os.PathLike):
        raise _refuse(where, f"a path ({type(value).__name__})", "store str(path)")
    if isinstance(value, list | tuple):
        classes: set[str] = set()
        _python_classes(value, classes)
        if "None" in classes:
            raise _refuse(
                where,
                "a list holding None",
                "replace None with NaN (numbers) or leave the entry out",
            )
        if len(classes) > 1 or "other" in classes:
            raise _refuse(
                where,
                f"a mixed list ({', '.join(sorted(classes))})",
                "store one dataset per type, or json.dumps(the_list) as a str",
            )
        try:
            arr = np.asarray(value)
        except ValueError as err:
            raise _refuse(
                where,
                "a ragged list (rows of different lengths)",
                "pad the rows to one length, store one dataset per row, or json.dumps(the_list) as a str",
            ) from err
        return _array_value(where, arr, "ndarray")
    if isinstance(value, np.ma.MaskedArray):
        # Stored as a plain array its mask would be dropped silently: refused instead.
        raise _refuse(
            where,
            "a numpy masked array (its mask would be lost)",
            "store the values and the mask as two datasets, e.g. "
            "{'x': arr.filled(np.nan), 'x_mask': np.ma.getmaskarray(arr)}",
        )
    if isinstance(value, np.ndarray):
        return _array_value(where, value, "ndarray")
    raise _refuse(
        where,
        f"a {type(value).__module__}.{type(value).__qualname__}",
        "convert it to a number, a str, bytes or a numpy array (json.dumps for structured data)",
    )


def _utf8(value: str, where: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _refuse(
            where,
            "text that is not valid Unicode (lone surrogates)",
            "decode the source with errors='replace', or store the raw bytes as bytes",
        ) from err


def _check_name(where: str, name: object) -> str:
    if not isinstance(name, str):
        raise ValueError(
            f"{where}: member name {name!r}: expected a str, got {type(name).__name__}"
        )
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise ValueError(
            f"{where}: member name {name!r}: expected a non-empty name without '/' or NUL"
        )
    if name.startswith(RESERVED_PREFIX):
        raise ValueError(
            f"{where}: member name {name!r} uses the reserved prefix {RESERVED_PREFIX!r}; rename it"
        )
    if len(name.encode("utf-8", errors="surrogatepass")) > MAX_NAME_BYTES:
        raise ResultLimitError(
            f"{where}: name of {len(name.encode('utf-8', errors='surrogatepass'))} bytes, expected at most {MAX_NAME_BYTES}"
        )
    return name


class _Budget:
    def __init__(self, key: str) -> None:
        self.key = key
        self.objects = 0

    def take(self, where: str) -> None:
        self.objects += 1
        if self.objects > MAX_OBJECTS:
            raise ResultLimitError(
                f"group {self.key!r}: more than {MAX_OBJECTS} groups, datasets and attributes (at {where}); "
                "split it into several results or store arrays instead of many small values"
            )


def _attr_values(where: str, attrs: Mapping[str, Any] | None, budget: _Budget) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for name, raw in (attrs or {}).items():
        _check_name(where, name)
        budget.take(where)
        value = normalize(f"{where}@{name}", raw)
        if value.array.nbytes > MAX_ATTR_BYTES:
            raise ResultLimitError(
                f"{where}@{name}: attribute of {value.array.nbytes} bytes, expected at most {MAX_ATTR_BYTES}; "
                "store it as a dataset instead"
            )
        out[name] = value
    return out


def build(key: str, datasets: Mapping[str, Any], attrs: Mapping[str, Any] | None) -> GroupNode:
    """The tree of one result as given to ``add()``; raises before anything is written.

    In ``datasets``, a mapping is a subgroup, a :class:`h5guard.Group` a subgroup with
    attributes, a :class:`h5guard.Dataset` a dataset with attributes.
    """
    return _build_group(key, datasets, attrs, 0, _Budget(key))


def _build_group(
    where: str,
    members: Mapping[str, Any],
    attrs: Mapping[str, Any] | None,
    depth: int,
    budget: _Budget,
) -> GroupNode:
    if depth > MAX_DEPTH:
        raise ResultLimitError(
            f"{where}: groups nested {depth} deep, expected at most {MAX_DEPTH}; flatten the tree "
            "(e.g. 'iter_000/x' -> a dataset 'x' with one row per iteration)"
        )
    if not isinstance(members, Mapping):
        raise _refuse(
            where, f"members given as {type(members).__name__}", "pass a dict of name -> value"
        )
    out: dict[str, Node] = {}
    for name, raw in members.items():
        _check_name(where, name)
        budget.take(where)
        child = f"{where}/{name}"
        if isinstance(raw, Group):
            out[name] = _build_group(child, raw.members, raw.attrs, depth + 1, budget)
        elif isinstance(raw, Mapping):
            out[name] = _build_group(child, raw, None, depth + 1, budget)
        elif isinstance(raw, Dataset):
            out[name] = DatasetNode(
                normalize(child, raw.data), _attr_values(child, raw.attrs, budget)
            )
        else:
            out[name] = DatasetNode(normalize(child, raw))
    return GroupNode(_attr_values(where, attrs, budget), out)


def iter_values(node: Node) -> Iterator[Value]:
    if isinstance(node, DatasetNode):
        yield node.value
        yield from node.attrs.values()
        return
    yield from node.attrs.values()
    for child in node.members.values():
        yield from iter_values(child)


def nbytes(node: Node) -> int:
    return sum(v.array.nbytes for v in iter_values(node))


def is_flat(node: GroupNode) -> bool:
    """Datasets only, no dataset attributes: what the v1 layout could hold."""
    return all(isinstance(m, DatasetNode) and not m.attrs for m in node.members.values())


def stored_nbytes(dtype: np.dtype[Any], shape: tuple[int, ...]) -> int:
    return dtype.itemsize * math.prod(shape)


def describe(node: GroupNode) -> GroupInfo:
    """The description a :class:`~h5guard.Schema` checks, of a tree held in memory."""
    datasets: dict[str, DatasetInfo] = {}
    groups: dict[str, GroupInfo] = {}
    for name, child in node.members.items():
        if isinstance(child, DatasetNode):
            datasets[name] = DatasetInfo.of(
                child.value.array,
                attrs={n: v.array for n, v in child.attrs.items()},
                kind=child.value.kind,
            )
        else:
            groups[name] = describe(child)
    return GroupInfo(
        FrozenMap(datasets),
        FrozenMap({n: v.array for n, v in node.attrs.items()}),
        FrozenMap(groups),
    )


# -- from stored values back to Python objects --------------------------------------


def python_value(value: Value) -> Any:
    """What reading returns for a stored value of a given kind."""
    arr, kind = value.array, value.kind
    if kind == "int":
        return int(arr[()])
    if kind == "float":
        return float(arr[()])
    if kind == "bool":
        return bool(arr[()])
    if kind == "complex":
        return complex(arr[()])
    if kind == "str":
        return utf8_bytes(arr).tobytes().rstrip(b"\0").decode("utf-8")
    if kind == "bytes":
        return arr.tobytes()
    if kind.startswith("U"):
        decoded = np.char.decode(utf8_bytes(arr), "utf-8")
        return np.asarray(decoded, dtype=f"U{int(kind[1:])}")
    if kind == "numpy":
        return arr[()]
    return arr


def utf8_bytes(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The UTF-8 array as plain ``S`` (numpy's own string functions reject h5py's tag)."""
    return arr.view(f"S{arr.dtype.itemsize}")


def python_tree(node: GroupNode) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(datasets, attrs)`` of a group, as ``add()`` was given them."""
    members: dict[str, Any] = {}
    for name, child in node.members.items():
        if isinstance(child, GroupNode):
            sub, sub_attrs = python_tree(child)
            members[name] = Group(sub, sub_attrs) if sub_attrs else sub
        else:
            data = python_value(child.value)
            members[name] = (
                Dataset(data, {n: python_value(v) for n, v in child.attrs.items()})
                if child.attrs
                else data
            )
    return members, {n: python_value(v) for n, v in node.attrs.items()}
