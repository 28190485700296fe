"""The one h5py reader of h5guard's results: attributes, values, trees, streamed digests.

:func:`read_tree` gives the tree stored in a group (what :func:`h5guard.read` returns,
once verified); :func:`verify_tree` computes the v2 digest of a stored result while it
streams big datasets block by block, and describes the group for a schema: the check
(:mod:`h5guard._check.own`) and the merge's verification of copied groups
(:func:`h5guard._check.own.verify_groups`) both read through it. Salvage reads damaged
files through :func:`read_tree` too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from h5guard._format import digest as digests
from h5guard._format.names import DIGEST_ATTR, KINDS_ATTR, MAX_DEPTH, READ_BLOCK, RESERVED_PREFIX
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


def _read_attr_values(obj: Any, where: str, own: bool) -> tuple[dict[str, Value], str | None]:
    raw = read_attrs(obj)
    kinds = _kinds(raw.pop(KINDS_ATTR, None), where)
    unknown = set(kinds) - set(raw) - ({""} if own else set())
    if unknown:
        raise ValueError(f"{where}: {KINDS_ATTR} names missing attribute(s) {sorted(unknown)}")
    values = {
        name: stored_value(f"{where}@{name}", arr, kinds.get(name))
        for name, arr in raw.items()
        if not name.startswith(RESERVED_PREFIX)
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


def read_tree(group: h5py.Group, where: str, depth: int = 0) -> GroupNode:
    """The tree stored in ``group`` (nothing verified yet); raises on anything unreadable."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: groups nested deeper than {MAX_DEPTH}")
    attrs, _ = _read_attr_values(group, where, own=False)
    members: dict[str, Node] = {}
    for name in group:
        child = f"{where}/{name}"
        obj = _hard_member(group, name, child)
        if isinstance(obj, h5py.Group):
            members[name] = read_tree(obj, child, depth + 1)
        elif isinstance(obj, h5py.Dataset):
            dattrs, own = _read_attr_values(obj, child, own=True)
            members[name] = DatasetNode(stored_value(child, read_dataset_array(obj), own), dattrs)
        else:
            raise ValueError(f"{child}: {type(obj).__name__} in a result")
    return GroupNode(attrs, members)


def verify_tree(group: h5py.Group, key: str, *, finite: bool) -> tuple[str, GroupInfo]:
    """The v2 digest of a stored result, and what a schema check needs of it.

    Like :func:`read_tree` then :func:`h5guard.digest`, but datasets larger than
    ``READ_BLOCK`` are hashed block by block and never held whole (a checker in a
    memory-limited sandbox reads results of any size). ``finite``: scan big float data
    for NaN/inf (what a schema's ``finite`` rule needs; small data is always scanned).
    """
    digest = digests.TreeDigest()
    info = _digest_group(group, key, 0, digest, finite)
    return digest.hexdigest(), info


def _digest_group(
    group: h5py.Group, where: str, depth: int, d: digests.TreeDigest, finite: bool
) -> GroupInfo:
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: groups nested deeper than {MAX_DEPTH}")
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
    )


def _digest_dataset(
    dset: h5py.Dataset, where: str, d: digests.TreeDigest, finite: bool
) -> DatasetInfo:
    attrs, own = _read_attr_values(dset, where, own=True)
    d.field(b"D")
    d.attrs(attrs)
    attr_arrays = {n: v.array for n, v in attrs.items()}
    if dset.shape is None:
        raise ValueError(f"{where}: dataset with a null dataspace holds no value")
    dtype, shape = dset.dtype, tuple(int(n) for n in dset.shape)
    kind = own or default_kind(dtype, shape)
    if dset.nbytes <= READ_BLOCK or kind == "U":
        value = stored_value(where, read_dataset_array(dset), own)
        d.value(value)
        return DatasetInfo.of(value.array, attrs=attr_arrays, kind=value.kind)
    # Big: hash it as it streams; the kind is checked against a data-less stand-in.
    check_kind(kind, np.broadcast_to(np.zeros((), dtype=dtype), shape), where)
    d.value_head(kind, dtype, shape)
    all_finite = True
    scan = finite and dtype.kind in "fc"

    def blocks() -> Iterator[npt.NDArray[Any]]:
        nonlocal all_finite
        for block in iter_blocks(dset):
            if scan and all_finite and not np.isfinite(block).all():
                all_finite = False
            yield block

    d.blocks(stored_nbytes(dtype, shape), blocks())
    return DatasetInfo(dtype, shape, all_finite, FrozenMap(attr_arrays), kind)


def stored_digest(group: h5py.Group) -> str | None:
    if DIGEST_ATTR not in group.attrs:
        return None
    return read_attr(group, DIGEST_ATTR).tobytes().rstrip(b"\0").decode("utf-8", "replace")


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
