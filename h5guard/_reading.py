"""Reading results back as they were given to ``ShardWriter.add``.

:func:`read` returns one :class:`Result`, :func:`iter_results` every result of a file,
:func:`to_dataframe` one row per result. Each group's content digest is verified first
(v2, or v1 for files written before trees); a group that does not match raises
:class:`~h5guard.DigestMismatchError` naming the group and both digests.

Values come back as the Python objects that were stored: ``str`` as ``str``, ``bytes``
as ``bytes``, Python numbers as Python numbers, numpy scalars and arrays with their
dtype and shape, a subgroup as a ``dict`` (or a :class:`Group` when it has attributes),
a dataset with attributes as a :class:`Dataset`. docs/reading.md lists every kind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5guard import _layout, _tree
from h5guard.errors import DigestMismatchError, MissingDependencyError, ResultNotFoundError
from h5guard.schema import DatasetInfo, FrozenMap, GroupInfo

__all__ = ["Dataset", "Group", "Result", "iter_results", "read", "to_dataframe"]


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

    ``Dataset(np.arange(3.0), attrs={"units": "m"})``. A dataset without attributes is
    given and read back as its plain value.
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
    """A subgroup with attributes: ``Group({"x": xs}, attrs={"iteration": 3})``.

    A subgroup without attributes is given and read back as a plain ``dict``.
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
    """One result read back: what was given to ``add(key, datasets, attrs)``."""

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


# -- from stored values to Python objects ------------------------------------------------


def python_value(value: _tree.Value) -> Any:
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
        return _utf8_bytes(arr).tobytes().rstrip(b"\0").decode("utf-8")
    if kind == "bytes":
        return arr.tobytes()
    if kind.startswith("U"):
        decoded = np.char.decode(_utf8_bytes(arr), "utf-8")
        return np.asarray(decoded, dtype=f"U{int(kind[1:])}")
    if kind == "numpy":
        return arr[()]
    return arr


def _utf8_bytes(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The UTF-8 array as plain ``S`` (numpy's own string functions reject h5py's tag)."""
    return arr.view(f"S{arr.dtype.itemsize}")


def python_tree(node: _tree.GroupNode) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(datasets, attrs)`` of a group, as ``add()`` was given them."""
    members: dict[str, Any] = {}
    for name, child in node.members.items():
        if isinstance(child, _tree.GroupNode):
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


# -- from HDF5 to the tree ----------------------------------------------------------------


def _kinds(raw: npt.NDArray[Any] | None, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    import json

    try:
        kinds = json.loads(_utf8_bytes(np.asarray(raw)).tobytes().rstrip(b"\0").decode("utf-8"))
    except ValueError as err:
        raise ValueError(f"{where}: {_tree.KINDS_ATTR} is not JSON: {err}") from err
    if not isinstance(kinds, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in kinds.items()
    ):
        raise ValueError(f"{where}: {_tree.KINDS_ATTR} is not an object of strings")
    return kinds


def stored_value(where: str, arr: npt.NDArray[Any], kind: str | None) -> _tree.Value:
    """A value read from disk, with the kind its kinds entry (or its type) gives it."""
    if kind is None:
        kind = _tree.resolve_kind(_tree.default_kind(arr.dtype, arr.shape), arr)
    else:
        _tree.check_kind(kind, arr, where)
    return _tree.Value(arr, kind)


def _read_attr_values(obj: Any, where: str, own: bool) -> tuple[dict[str, _tree.Value], str | None]:
    raw = _layout.read_attrs(obj)
    kinds = _kinds(raw.pop(_tree.KINDS_ATTR, None), where)
    unknown = set(kinds) - set(raw) - ({""} if own else set())
    if unknown:
        raise ValueError(
            f"{where}: {_tree.KINDS_ATTR} names missing attribute(s) {sorted(unknown)}"
        )
    values = {
        name: stored_value(f"{where}@{name}", arr, kinds.get(name))
        for name, arr in raw.items()
        if not name.startswith(_layout.RESERVED_PREFIX)
    }
    return values, kinds.get("")


def read_dataset_array(dset: h5py.Dataset) -> npt.NDArray[Any]:
    """All of a dataset as an array of its stored dtype (trailing NULs of strings kept)."""
    if dset.shape is None:
        raise ValueError(f"{dset.name}: dataset with a null dataspace holds no value")
    out: npt.NDArray[Any] = np.empty(dset.shape, dtype=dset.dtype)
    if out.size:
        dset.id.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
    return out


def _hard_member(group: h5py.Group, name: str, where: str) -> Any:
    """A member of a result group; a result holds hard links only."""
    link = group.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise ValueError(f"{where}: {type(link).__name__} in a result (h5guard writes none)")
    return group[name]


def read_tree(group: h5py.Group, where: str, depth: int = 0) -> _tree.GroupNode:
    """The tree stored in ``group`` (nothing verified yet); raises on anything unreadable."""
    if depth > _tree.MAX_DEPTH:
        raise ValueError(f"{where}: groups nested deeper than {_tree.MAX_DEPTH}")
    attrs, _ = _read_attr_values(group, where, own=False)
    members: dict[str, _tree.Node] = {}
    for name in group:
        child = f"{where}/{name}"
        obj = _hard_member(group, name, child)
        if isinstance(obj, h5py.Group):
            members[name] = read_tree(obj, child, depth + 1)
        elif isinstance(obj, h5py.Dataset):
            dattrs, own = _read_attr_values(obj, child, own=True)
            members[name] = _tree.DatasetNode(
                stored_value(child, read_dataset_array(obj), own), dattrs
            )
        else:
            raise ValueError(f"{child}: {type(obj).__name__} in a result")
    return _tree.GroupNode(attrs, members)


def verify_tree(group: h5py.Group, key: str, *, finite: bool) -> tuple[str, GroupInfo]:
    """The v2 digest of a stored result, and what a schema check needs of it.

    Like :func:`read_tree` then :func:`h5guard._tree.digest`, but datasets larger than
    ``READ_BLOCK`` are hashed block by block and never held whole (a checker in a
    memory-limited sandbox reads results of any size). ``finite``: scan big float data
    for NaN/inf (what a schema's ``finite`` rule needs; small data is always scanned).
    """
    digest = _tree.TreeDigest()
    info = _digest_group(group, key, 0, digest, finite)
    return digest.hexdigest(), info


def _digest_group(
    group: h5py.Group, where: str, depth: int, d: _tree.TreeDigest, finite: bool
) -> GroupInfo:
    if depth > _tree.MAX_DEPTH:
        raise ValueError(f"{where}: groups nested deeper than {_tree.MAX_DEPTH}")
    attrs, _ = _read_attr_values(group, where, own=False)
    d.field(b"G")
    d.attrs(attrs)
    names = sorted(group, key=lambda n: n.encode("utf-8"))
    d.count(len(names))
    datasets: dict[str, DatasetInfo] = {}
    groups: dict[str, GroupInfo] = {}
    for name in names:
        child = f"{where}/{name}"
        obj = _hard_member(group, name, child)
        d.field(name.encode("utf-8"))
        if isinstance(obj, h5py.Group):
            groups[name] = _digest_group(obj, child, depth + 1, d, finite)
        elif isinstance(obj, h5py.Dataset):
            datasets[name] = _digest_dataset(obj, child, d, finite)
        else:
            raise ValueError(f"{child}: {type(obj).__name__} in a result")
    return GroupInfo(
        FrozenMap(datasets),
        FrozenMap({n: v.array for n, v in attrs.items()}),
        FrozenMap(groups),
        FrozenMap({n: v.kind for n, v in attrs.items()}),
    )


def _digest_dataset(
    dset: h5py.Dataset, where: str, d: _tree.TreeDigest, finite: bool
) -> DatasetInfo:
    attrs, own = _read_attr_values(dset, where, own=True)
    d.field(b"D")
    d.attrs(attrs)
    attr_arrays = {n: v.array for n, v in attrs.items()}
    if dset.shape is None:
        raise ValueError(f"{where}: dataset with a null dataspace holds no value")
    dtype, shape = dset.dtype, tuple(int(n) for n in dset.shape)
    kind = own or _tree.default_kind(dtype, shape)
    if dset.nbytes <= _layout.READ_BLOCK or kind == "U":
        value = stored_value(where, read_dataset_array(dset), own)
        d.value(value)
        return DatasetInfo.of(value.array, attrs=attr_arrays, kind=value.kind)
    # Big: hash it as it streams; the kind is checked against a data-less stand-in.
    _tree.check_kind(kind, np.broadcast_to(np.zeros((), dtype=dtype), shape), where)
    d.value_head(kind, dtype, shape)
    all_finite = True
    scan = finite and dtype.kind in "fc"

    def blocks() -> Iterator[npt.NDArray[Any]]:
        nonlocal all_finite
        for block in _layout.iter_blocks(dset):
            if scan and all_finite and not np.isfinite(block).all():
                all_finite = False
            yield block

    d.blocks(_tree.stored_nbytes(dtype, shape), blocks())
    return DatasetInfo(dtype, shape, all_finite, FrozenMap(attr_arrays), kind)


def stored_digest(group: h5py.Group) -> str | None:
    if _layout.DIGEST_ATTR not in group.attrs:
        return None
    return (
        _layout.read_attr(group, _layout.DIGEST_ATTR)
        .tobytes()
        .rstrip(b"\0")
        .decode("utf-8", "replace")
    )


def computed_digest(node: _tree.GroupNode, stored: str | None) -> str:
    """The digest of ``node`` in the version ``stored`` names (v2 when there is none)."""
    if stored is not None and not stored.startswith(_tree.DIGEST_V2_PREFIX):
        if not _tree.is_flat(node):
            return "(not a v1 group: it has subgroups or dataset attributes)"
        datasets = {n: m.value.array for n, m in node.members.items()}  # type: ignore[union-attr]
        return _layout.digest_of(datasets, {n: v.array for n, v in node.attrs.items()})
    return _tree.digest(node)


def v1_strings(node: _tree.GroupNode) -> _tree.GroupNode:
    """v1 stored every ``str`` as untagged bytes: give scalar ones back as ``str``."""

    def fix(v: _tree.Value) -> _tree.Value:
        if v.array.dtype.kind == "S" and v.array.shape == ():
            try:
                v.array.tobytes().rstrip(b"\0").decode("utf-8")
            except UnicodeDecodeError:
                return v
            return _tree.Value(v.array.view(_tree.utf8_dtype(v.array.dtype.itemsize)), "str")
        return v

    members = {
        n: _tree.DatasetNode(fix(m.value), m.attrs) if isinstance(m, _tree.DatasetNode) else m
        for n, m in node.members.items()
    }
    return _tree.GroupNode({n: fix(v) for n, v in node.attrs.items()}, members)


def _result(path: str, group: h5py.Group, key: str, verify: bool) -> Result:
    node = read_tree(group, key)
    stored = stored_digest(group)
    if verify:
        computed = computed_digest(node, stored)
        if stored != computed:
            raise DigestMismatchError(path, key, stored, computed)
    if stored is not None and not stored.startswith(_tree.DIGEST_V2_PREFIX):
        node = v1_strings(node)
    datasets, attrs = python_tree(node)
    return Result(key, datasets, attrs, stored, path)


def _open(path: str | os.PathLike[str]) -> h5py.File:
    return h5py.File(os.fspath(path), "r", locking=False)


def read(path: str | os.PathLike[str], key: str, *, verify: bool = True) -> Result:
    """The result ``key`` of an h5guard shard or merged output, its digest verified.

    Raises :class:`~h5guard.ResultNotFoundError` if the file has no such group and
    :class:`~h5guard.DigestMismatchError` if its content does not match its digest (or
    it has none: ``verify=False`` reads groups that no h5guard writer digested).
    """
    where = os.fspath(path)
    with _open(where) as f:
        obj = f.get(key)
        if not isinstance(obj, h5py.Group):
            raise ResultNotFoundError(where, key)
        return _result(where, obj, key, verify)


def iter_results(path: str | os.PathLike[str], *, verify: bool = True) -> Iterator[Result]:
    """Every result of a file, in key order (the file stays open while iterating)."""
    where = os.fspath(path)
    with _open(where) as f:
        for key in sorted(f, key=lambda k: k.encode("utf-8")):
            obj = f.get(key)
            if isinstance(obj, h5py.Group):
                yield _result(where, obj, key, verify)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bytes | int | float | complex | np.generic) and not isinstance(
        value, np.void
    )


def to_dataframe(path: str | os.PathLike[str], *, verify: bool = True) -> Any:
    """One row per result (index ``key``); scalar attributes and scalar datasets as columns.

    Needs pandas (``pip install 'h5guard[dataframe]'``). A dataset that has the name of
    an attribute of the same group becomes the column ``datasets/<name>``.
    """
    try:
        import pandas as pd
    except ImportError as err:
        raise MissingDependencyError(
            "h5guard.to_dataframe needs pandas, which is not installed; "
            "install it with: pip install 'h5guard[dataframe]' (or pip install pandas)"
        ) from err
    rows: list[dict[str, Any]] = []
    keys: list[str] = []
    for result in iter_results(path, verify=verify):
        row = {n: v for n, v in result.attrs.items() if _is_scalar(v)}
        for name, value in result.datasets.items():
            if _is_scalar(value):
                row[f"datasets/{name}" if name in row else name] = value
        rows.append(row)
        keys.append(result.key)
    return pd.DataFrame(rows, index=pd.Index(keys, name="key"))
