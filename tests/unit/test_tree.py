"""Result trees: refused values, digest v2 against the spec, limits, reading back."""

from __future__ import annotations

import hashlib
import json
import mmap
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import h5guard
from h5guard import (
    AttrSpec,
    Dataset,
    DatasetSpec,
    DigestMismatchError,
    Group,
    GroupSpec,
    H5GuardError,
    MissingDependencyError,
    ResultLimitError,
    ResultNotFoundError,
    Schema,
    SchemaError,
    ShardWriter,
    UnsupportedValueError,
)
from h5guard._format import bytes as _fastread
from h5guard._format import digest as digests
from h5guard._format import names
from h5guard._format import result as _result
from h5guard._format import write as layout
from h5guard._format.tree import _equal

STRUCT = np.dtype([("x", "<f8"), ("n", ">i4"), ("ok", "?")])


def tree_result() -> tuple[dict[str, Any], dict[str, Any]]:
    rec = np.zeros(2, dtype=STRUCT)
    rec["x"] = [1.5, -2.0]
    rec["n"] = [7, 8]
    rec["ok"] = [True, False]
    datasets = {
        "layout": Dataset(np.arange(6.0).reshape(3, 2), attrs={"units": "m"}),
        "history": {
            "iter_000": Group({"x": np.ones(2, dtype="<f4")}, attrs={"iteration": 0}),
            "iter_001": {"x": np.zeros(2, dtype="<f4")},
        },
        "records": rec,
        "names": np.array(["héllo", "wörld"]),
        "raw": b"\x01\x00\xff\x00\x00",
        "aep": np.float64(401.5),
    }
    attrs = {"status": "ok", "seed": 3, "note": "ab", "ratio": 0.25, "flag": True}
    return datasets, attrs


# -- refused values, each with its own message --------------------------------------------

REFUSED = [
    (None, "None", "leave the member out"),
    ({"a": 1}, "a dict", "json.dumps"),
    (Path("x.txt"), "a path", "str(path)"),
    (2**70, "does not fit in 64 bits", "str(n)"),
    ([1, "a", 2.5], "a mixed list", "json.dumps"),
    ([[1, 2], [3]], "a ragged list", "pad the rows"),
    ([1, None], "a list holding None", "NaN"),
    (np.array([object()], dtype=object), "numpy object array", "fixed dtype"),
    (np.array([b"a"], dtype=h5py.string_dtype()), "variable-length", "fixed-length"),
    # What h5py returns for fixed-length UTF-8 text read from another file: as stored it
    # would read back as str, not as these bytes (it used to pass add() and then fail
    # read() and every merge of a chunked one).
    (np.array([b"ab"] * 3, dtype=h5py.string_dtype("utf-8", 8)), "tagged as UTF-8", "astype('S8')"),
    (np.zeros(2, dtype="V4"), "opaque", "uint8"),
    (np.array(["2024-01-01"], dtype="datetime64[D]"), "datetime", "int64"),
    (np.zeros(2, dtype=np.longdouble), "extended precision", "float64"),
    (np.zeros(2, dtype=[("s", "U3")]), "unicode dtype", "np.char.encode"),
    (
        np.zeros(2, dtype=np.dtype([("a", "u1"), ("b", "<f8")], align=True)),
        "padding",
        "repack_fields",
    ),
    ("ab\x00", "ending in NUL", "as bytes"),
    ("\ud800", "lone surrogates", "errors='replace'"),
    ({1, 2}, "builtins.set", "json.dumps"),
]


@pytest.mark.parametrize(("value", "what", "instead"), REFUSED, ids=[w for _, w, _ in REFUSED])
def test_each_refused_kind_says_what_it_is_and_what_to_do(
    tmp_path: Path, value: Any, what: str, instead: str
) -> None:
    with ShardWriter(tmp_path) as w:
        with pytest.raises(UnsupportedValueError) as info:
            w.add("k", {"ok": np.arange(2)}, {"bad": value})
        assert what in str(info.value) and instead in str(info.value)
        assert str(info.value).startswith("k@bad: cannot store ")
        assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
        assert not isinstance(info.value, SchemaError)
        if not isinstance(value, dict):  # a dict in datasets is a subgroup
            with pytest.raises(UnsupportedValueError, match="cannot store"):
                w.add("k", {"sub": {"bad": value}})
        w.add("k", {"ok": np.arange(2)})  # nothing half-written stayed behind
    assert [r.key for r in h5guard.iter_results(w.committed[0])] == ["k"]


def test_refusal_pickles_with_its_data() -> None:
    err = pickle.loads(pickle.dumps(UnsupportedValueError("k@x", "None", "leave it out")))
    assert (err.where, err.what, err.instead) == ("k@x", "None", "leave it out")
    assert isinstance(err, H5GuardError)


# -- digest v2: an independent implementation of docs/format.md ----------------------------


def _F(x: bytes) -> bytes:
    return len(x).to_bytes(8, "little") + x


def _token(dt: np.dtype[Any]) -> str:
    if dt.subdtype is not None:
        return f"{_token(dt.subdtype[0])}({','.join(map(str, dt.subdtype[1]))})"
    if dt.names is not None:
        fields = [[n, dt.fields[n][1], _token(dt.fields[n][0])] for n in dt.names]  # type: ignore[index]
        return json.dumps([dt.itemsize, fields], separators=(",", ":"), ensure_ascii=False)
    return dt.newbyteorder("<").str if dt.byteorder in "<>=" else dt.str


def _V(kind: str, arr: np.ndarray[Any, Any]) -> bytes:
    data = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"))).tobytes()
    shape = ",".join(map(str, arr.shape)).encode()
    return _F(kind.encode()) + _F(_token(arr.dtype).encode()) + _F(shape) + _F(data)


def _A(obj: Any, kinds: dict[str, str]) -> bytes:
    names = sorted((n for n in obj.attrs if not n.startswith("h5guard_")), key=str.encode)
    out = len(names).to_bytes(8, "little")
    for n in names:
        aid = obj.attrs.get_id(n)
        arr = np.empty(aid.shape, dtype=aid.dtype)
        aid.read(arr)
        out += _F(n.encode()) + _V(kinds.get(n) or _implied(arr), arr)
    return out


def _implied(arr: np.ndarray[Any, Any]) -> str:
    info = h5py.check_string_dtype(arr.dtype)
    if info is not None and info.encoding == "utf-8":
        if arr.shape == ():
            return "str"
        plain = arr.view(f"S{arr.dtype.itemsize}")
        return f"U{max([1, *(len(s.decode()) for s in plain.reshape(-1))])}"
    if arr.shape == ():
        return {"<i8": "int", "<f8": "float", "|b1": "bool", "<c16": "complex"}.get(
            arr.dtype.str if arr.dtype.names is None else "", "numpy"
        )
    return "ndarray"


def _kinds(obj: Any) -> dict[str, str]:
    return json.loads(obj.attrs["h5guard_kinds"].decode()) if "h5guard_kinds" in obj.attrs else {}


def _G(g: h5py.Group) -> bytes:
    out = _F(b"G") + _A(g, _kinds(g)) + len(g).to_bytes(8, "little")
    for name in sorted(g, key=str.encode):
        obj = g[name]
        out += _F(name.encode())
        if isinstance(obj, h5py.Group):
            out += _G(obj)
        else:
            arr = np.empty(obj.shape, dtype=obj.dtype)
            obj.read_direct(arr) if arr.size else None
            kinds = _kinds(obj)
            out += _F(b"D") + _A(obj, kinds) + _V(kinds.get("") or _implied(arr), arr)
    return out


def reference_digest_v2(group: h5py.Group) -> str:
    return "sha256-v2:" + hashlib.sha256(b"h5guard-digest-v2\0" + _G(group)).hexdigest()


def test_digest_v2_matches_an_independent_implementation_of_the_spec(tmp_path: Path) -> None:
    datasets, attrs = tree_result()
    with ShardWriter(tmp_path) as w:
        w.add("tree", datasets, attrs)
        w.add("flat", {"x": np.arange(3.0)}, {"status": "ok", "n": np.int32(2)})
    with h5py.File(w.committed[0], "r") as f:
        for key in ("tree", "flat"):
            stored = f[key].attrs["h5guard_digest"].decode()
            assert stored.startswith("sha256-v2:")
            assert reference_digest_v2(f[key]) == stored


def test_a_changed_kind_or_name_changes_the_digest() -> None:
    base = _result.prepare("k", {"x": np.arange(3)}, {"a": 1}, schema=None).digest
    assert _result.prepare("k", {"x": np.arange(3)}, {"a": np.int64(1)}, schema=None).digest != base
    assert _result.prepare("k", {"y": np.arange(3)}, {"a": 1}, schema=None).digest != base
    assert _result.prepare("k", {"g": {"x": np.arange(3)}}, {"a": 1}, schema=None).digest != base
    assert _result.prepare("k", {"x": np.arange(3)}, {"a": 1}, schema=None).digest == base


# -- limits -------------------------------------------------------------------------------


def test_limits_are_enforced_with_a_clear_error() -> None:
    deep: dict[str, Any] = {"x": 1}
    for _ in range(names.MAX_DEPTH + 1):
        deep = {"g": deep}
    with pytest.raises(ResultLimitError, match="nested 33 deep, expected at most 32"):
        _result.prepare("k", deep, None, schema=None)
    many = {f"x{i}": i for i in range(names.MAX_OBJECTS + 1)}
    with pytest.raises(ResultLimitError, match="more than 10000"):
        _result.prepare("k", many, None, schema=None)
    with pytest.raises(ResultLimitError, match="store it as a dataset"):
        _result.prepare("k", {}, {"big": np.zeros(names.MAX_ATTR_BYTES // 8 + 1)}, schema=None)
    with pytest.raises(ValueError, match="reserved prefix"):
        _result.prepare("k", {"g": {"h5guard_x": 1}}, None, schema=None)


# -- the journal encoding -----------------------------------------------------------------


def test_encode_decode_round_trip_a_tree_exactly() -> None:
    datasets, attrs = tree_result()
    prepared = _result.prepare("k", datasets, attrs, schema=None)
    header, buffers = _result.encode(prepared)
    back = _result.decode(header, b"".join(bytes(b) for b in buffers))
    assert back.digest == prepared.digest and back.key == "k"
    damaged = bytearray(b"".join(bytes(b) for b in buffers))
    damaged[3] ^= 1
    with pytest.raises(_result.DecodeError, match="stored digest"):
        _result.decode(header, bytes(damaged))


# -- reading back -------------------------------------------------------------------------


def test_read_gives_back_what_was_added(tmp_path: Path) -> None:
    datasets, attrs = tree_result()
    (tmp_path / "s").mkdir()
    with ShardWriter(tmp_path / "s") as w:
        w.add("k", datasets, attrs)
    out = tmp_path / "out.h5"
    assert h5guard.merge(tmp_path / "s", out, timeout=60).exit_code == 0
    back = h5guard.read(out, "k")
    assert _equal(dict(back.datasets), datasets) and _equal(dict(back.attrs), attrs)
    assert type(back.attrs["status"]) is str and type(back.datasets["raw"]) is bytes
    assert back.datasets["raw"] == b"\x01\x00\xff\x00\x00"
    assert back.datasets["names"].dtype == np.dtype("U5")
    with h5py.File(out, "r") as f:  # plain h5py and its .asstr() decode the text
        assert f["k/names"].asstr()[()].tolist() == ["héllo", "wörld"]
        assert f["k"].attrs.get_id("status").dtype.metadata == {"h5py_encoding": "utf-8"}
        assert f["k/layout"].attrs["units"] == b"m"
    assert h5guard.check([out]).ok


def test_read_names_the_group_and_both_digests_on_damage(tmp_path: Path) -> None:
    with ShardWriter(tmp_path) as w:
        w.add("k", {"x": np.arange(4.0)}, {"status": "ok"})
    path = w.committed[0]
    with h5py.File(path, "r+") as f:
        f["k/x"][1] = 99.0
    with pytest.raises(DigestMismatchError) as info:
        h5guard.read(path, "k")
    text = str(info.value)
    assert (
        ":/k: content digest differs: stored sha256-v2:" in text and "computed sha256-v2:" in text
    )
    assert info.value.stored != info.value.computed
    with pytest.raises(ResultNotFoundError, match="no result 'nope'"):
        h5guard.read(path, "nope")
    assert h5guard.read(path, "k", verify=False).datasets["x"][1] == 99.0


def test_v1_groups_still_verify_and_read(tmp_path: Path) -> None:
    path = tmp_path / "v1.h5"
    arrays = {"x": layout.normalize_value("x", np.arange(3.0))}
    attrs = {"status": layout.normalize_value("s", "ok"), "n": layout.normalize_value("n", 2)}
    with layout.create_file(str(path)) as f:
        g = layout.create_result_group(f, "old")
        for name, arr in arrays.items():
            layout.write_dataset(g, name, arr)
        for name, arr in attrs.items():
            layout.create_attr(g, name, arr)
        digest = digests.digest_of(arrays, attrs)
        layout.create_attr(g, names.DIGEST_ATTR, np.array(digest.encode(), dtype=np.bytes_))
    back = h5guard.read(path, "old")
    assert back.digest == digest and back.digest.startswith("sha256:")
    assert back.attrs == {"status": "ok", "n": 2} and type(back.attrs["n"]) is int
    with h5py.File(path, "r+") as f:
        f["old/x"][0] = 5.0
    with pytest.raises(DigestMismatchError, match="stored sha256:"):
        h5guard.read(path, "old")


def test_to_dataframe_one_row_per_result(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    with ShardWriter(tmp_path) as w:
        for i in range(4):
            w.add(f"c{i}", {"aep": np.float64(i), "xy": np.zeros((2, 2))}, {"status": "ok", "i": i})
    df = h5guard.to_dataframe(w.committed[0])
    assert list(df.index) == ["c0", "c1", "c2", "c3"] and df.index.name == "key"
    assert (df.status == "ok").sum() == 4
    assert sorted(df.columns) == ["aep", "i", "status"]
    assert df.loc["c2", "aep"] == 2.0 and isinstance(df, pd.DataFrame)


def test_to_dataframe_without_pandas_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # what an absent package looks like
    with pytest.raises(MissingDependencyError, match=r"pip install 'h5guard\[dataframe\]'"):
        h5guard.to_dataframe(tmp_path / "any.h5")


# -- h5guard's own reader agrees -----------------------------------------------------------


def test_own_reader_verifies_v2_or_leaves_it_to_libhdf5(tmp_path: Path) -> None:
    datasets, attrs = tree_result()
    with ShardWriter(tmp_path) as w:
        w.add("tree", {k: v for k, v in datasets.items() if k != "records"}, attrs)
        w.add("flat", {"x": np.arange(3.0)}, {"status": "ok", "u": np.array(["a", "bc"])})
        w.add("structured", {"r": datasets["records"]})
    path = w.committed[0]
    with h5py.File(path, "r", locking=False) as f:
        expected = {
            k: (h5py.h5o.get_info(f.id, k.encode()).addr, h5guard.read(path, k).digest)
            for k in f
            if not k.startswith("h5guard_")  # the summary is no result
        }
    base = _fastread.base_address(Path(path).read_bytes())
    problems, unsupported = _fastread.verify_groups_at(path, expected)
    assert problems == [] and unsupported == ["structured"]  # compound: libhdf5's job
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        computed, stored = _fastread.group_digest_at(buf, base, expected["tree"][0])
    assert computed == stored == expected["tree"][1]


# -- schemas over trees; every value object pickles -----------------------------------------

TREE_SCHEMA = {
    "name": "trees",
    "datasets": {
        "layout": {"dtype": "float", "shape": [None, 2], "attrs": {"units": {"dtype": "str"}}},
        "records": {"dtype": "structured", "fields": {"x": "float64", "n": "int", "ok": "bool"}},
        "names": {"dtype": "str"},
        "raw": {"dtype": "bytes"},
    },
    "attrs": {"status": {"dtype": "str", "allowed": ["ok", "failed"]}},
    "groups": {"history": {"groups": {"iter_000": {"datasets": {"x": {"dtype": "float32"}}}}}},
}


def test_schema_covers_nested_members_dataset_attrs_structured_and_strings(tmp_path: Path) -> None:
    schema = Schema.from_dict(TREE_SCHEMA)
    datasets, attrs = tree_result()
    with ShardWriter(tmp_path, schema=schema) as w:
        w.add("ok", datasets, attrs)
        cases = {
            "no units": {**datasets, "layout": np.zeros((2, 2))},
            "units as bytes": {**datasets, "layout": Dataset(np.zeros((2, 2)), {"units": b"m"})},
            "wrong field": {**datasets, "records": np.zeros(2, dtype=[("x", "<f8")])},
            "no iter_000": {**datasets, "history": {}},
            "text not bytes": {**datasets, "raw": "abc"},
        }
        messages = {}
        for label, bad in cases.items():
            with pytest.raises(SchemaError) as info:
                w.add("bad", bad, attrs)
            messages[label] = str(info.value)
    assert "layout: SCHEMA_MISSING required attribute 'units'" in messages["no units"]
    assert "attribute 'units': expected dtype str" in messages["units as bytes"]
    assert "expected fields ['n', 'ok', 'x'], found ['x']" in messages["wrong field"]
    assert "history/iter_000: SCHEMA_MISSING required group is missing" in messages["no iter_000"]
    assert "raw: SCHEMA_DTYPE expected dtype bytes" in messages["text not bytes"]
    assert h5guard.check([w.committed[0]]).ok


def _roundtrip(obj: Any) -> Any:
    return obj


def test_every_value_object_pickles_and_crosses_a_spawn_pool(tmp_path: Path) -> None:
    schema = Schema.from_dict(TREE_SCHEMA)
    with ShardWriter(tmp_path) as w:
        w.add("k", {"x": np.arange(2)}, {"status": "ok"})
    report = h5guard.validate(w.committed[0])
    values: list[Any] = [
        schema,
        schema.datasets["layout"],
        schema.datasets["layout"].attrs["units"],
        schema.groups["history"],
        DatasetSpec(dtype="float"),
        AttrSpec(allowed=("ok",)),
        GroupSpec(),
        report,
        report.files[0],
        *report.findings,
        h5guard.read(w.committed[0], "k"),
        Dataset(np.arange(2), {"u": "m"}),
        Group({"x": 1}),
    ]
    for value in values:
        assert pickle.loads(pickle.dumps(value)) == value, type(value)
    import multiprocessing

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        back = list(pool.map(_roundtrip, values))
    assert back == values
    assert back[0].to_json() == schema.to_json()


def test_checker_streams_big_datasets_of_a_tree_and_agrees_with_read(tmp_path: Path) -> None:
    big = np.random.default_rng(0).random(names.READ_BLOCK // 8 + 1000)  # > one block
    with ShardWriter(tmp_path) as w:
        w.add("big", {"run": Dataset(big, {"units": "W"}), "sub": {"x": big[:10]}})
    path = w.committed[0]
    report = h5guard.check([path])
    assert report.ok, report.render_text()
    assert report.files[0].groups["big"] == h5guard.read(path, "big").digest
    with h5py.File(path, "r+") as f:  # a changed value the fletcher32 checksum cannot see
        f["big/run"][5] = -1.0
    report = h5guard.check([path])
    assert not report.ok and "content digest differs" in report.render_text()
