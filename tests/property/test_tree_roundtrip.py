"""Random result trees go through ShardWriter.add -> merge -> h5guard.read unchanged.

Each tree has random nesting, values of every supported kind (numbers, bools, complex,
structured, unicode, str, bytes, Python scalars, numpy scalars, 0-d arrays) and
attributes on groups and datasets. What comes back must be equal in value *and* type,
and plain h5py must read the same values (``.asstr()`` for text).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import h5guard
from h5guard import Dataset, Group, ShardWriter
from h5guard._format.tree import _equal
from tests.strategies import names

_NUMERIC = [
    np.dtype(t)
    for t in ("<f8", "<f4", "<f2", ">f8", "<i8", ">i4", "<i2", "|i1", "|u1", "<u8", "|b1")
] + [np.dtype("<c16"), np.dtype("<c8")]
_STRUCTURED = [
    np.dtype([("x", "<f8"), ("n", ">i4"), ("ok", "?")]),
    np.dtype([("z", "<c16"), ("tag", "S4"), ("v", "<f4", (3,))]),
    np.dtype([("inner", [("a", "<i2"), ("b", "<f8")]), ("c", "u1")]),
]
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)
_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def numeric_arrays(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    return draw(hnp.arrays(draw(st.sampled_from(_NUMERIC)), _shapes))


@st.composite
def structured_arrays(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    dtype = draw(st.sampled_from(_STRUCTURED))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
    raw = draw(
        st.binary(
            min_size=dtype.itemsize * int(np.prod(shape)),
            max_size=dtype.itemsize * int(np.prod(shape)),
        )
    )
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    # Booleans are one byte of 0 or 1 in HDF5's enum: keep them valid.
    for name in dtype.names or ():
        if dtype[name] == np.bool_:
            arr[name] = arr[name].view(np.uint8) & 1
    return arr


@st.composite
def unicode_arrays(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
    values = draw(st.lists(_text, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    width = draw(st.integers(min_value=0, max_value=3))
    longest = max((len(v) for v in values), default=1)
    return np.array(values, dtype=f"U{max(1, longest) + width}").reshape(shape)


values = st.one_of(
    numeric_arrays(),
    structured_arrays(),
    unicode_arrays(),
    _text,
    st.binary(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.complex_numbers(allow_nan=False),
    numeric_arrays().map(lambda a: a.reshape(-1)[0] if a.size else a),  # numpy scalars
)
_attrs = st.dictionaries(names, values, max_size=3)


def _dataset(value: Any, attrs: dict[str, Any]) -> Any:
    return Dataset(value, attrs) if attrs else value


def _group(members: dict[str, Any], attrs: dict[str, Any]) -> Any:
    return Group(members, attrs) if attrs else members


members = st.recursive(
    st.builds(_dataset, values, _attrs),
    lambda children: st.builds(_group, st.dictionaries(names, children, max_size=3), _attrs),
    max_leaves=8,
)
results = st.fixed_dictionaries(
    {"datasets": st.dictionaries(names, members, max_size=4), "attrs": _attrs}
)


def _plain_h5py_value(obj: Any, name: str | None = None) -> Any:
    """What plain h5py reads for a dataset (name None) or an attribute ``name`` of obj."""
    if name is None:
        info = h5py.check_string_dtype(obj.dtype)
        return obj.asstr()[()] if info is not None and info.encoding == "utf-8" else obj[()]
    value = obj.attrs[name]
    info = h5py.check_string_dtype(obj.attrs.get_id(name).dtype)
    if info is not None and info.encoding == "utf-8":
        return np.char.decode(
            np.asarray(value).astype(f"S{np.asarray(value).dtype.itemsize}"), "utf-8"
        )
    return value


def _expected_plain(given: Any) -> Any:
    """What plain h5py shows for a value given to add()."""
    if isinstance(given, str):
        return given
    if isinstance(given, bytes):
        return np.frombuffer(given, dtype=np.uint8)
    return np.asarray(given)


def _same_plain(seen: Any, given: Any) -> bool:
    want = _expected_plain(given)
    got = seen if isinstance(seen, str) else np.asarray(seen)
    if isinstance(want, str):
        return isinstance(got, str | np.ndarray) and str(np.asarray(got)[()]) == want
    got = np.asarray(got)
    if want.dtype.kind == "U":
        return got.shape == want.shape and got.astype(str).tolist() == want.tolist()
    return (
        got.shape == want.shape
        and got.dtype.newbyteorder("=") == want.dtype.newbyteorder("=")
        and got.tobytes() == want.astype(got.dtype).tobytes()
    )


def _check_plain(group: h5py.Group, datasets: dict[str, Any], attrs: dict[str, Any]) -> None:
    for name, value in attrs.items():
        assert _same_plain(_plain_h5py_value(group, name), value), (group.name, name)
    for name, member in datasets.items():
        obj = group[name]
        if isinstance(member, Group):
            _check_plain(obj, dict(member.members), dict(member.attrs))
        elif isinstance(member, dict):
            _check_plain(obj, member, {})
        else:
            data, dattrs = (
                (member.data, member.attrs) if isinstance(member, Dataset) else (member, {})
            )
            assert _same_plain(_plain_h5py_value(obj), data), obj.name
            for aname, avalue in dattrs.items():
                assert _same_plain(_plain_h5py_value(obj, aname), avalue), (obj.name, aname)


@given(content=st.dictionaries(names, results, min_size=1, max_size=3))
def test_trees_come_back_equal_in_value_and_type(
    tmp_path_factory: Any, content: dict[str, dict[str, Any]]
) -> None:
    base: Path = tmp_path_factory.mktemp("tree")
    shards = base / "shards"
    shards.mkdir()
    with ShardWriter(shards) as w:
        for key, result in content.items():
            w.add(key, result["datasets"], result["attrs"])
    out = base / "out.h5"
    report = h5guard.merge(shards, out, timeout=60)
    assert report.exit_code == 0, report.render_text()
    for key, result in content.items():
        back = h5guard.read(out, key)
        assert _equal(dict(back.datasets), result["datasets"]), key
        assert _equal(dict(back.attrs), result["attrs"]), key
    assert [r.key for r in h5guard.iter_results(out)] == sorted(content, key=str.encode)
    with h5py.File(out, "r") as f:
        for key, result in content.items():
            _check_plain(f[key], result["datasets"], result["attrs"])
