"""The read path on low-level ids: what it refuses, skips and gives back (issue #24).

Reading lists each group's links once with their types and opens hard links only; the v2
digest is computed in the same walk; memory types are made once per dtype. These tests
pin what must not change with that: links are never followed (at the top level they are
not results, inside a result they are refused), names with the reserved prefix are not
results, damage is still a DigestMismatchError, and values keep their exact types.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import h5guard
from h5guard import Dataset, Group, ShardWriter
from h5guard._format import digest, reader


def _shard(
    directory: Path, results: dict[str, tuple[dict[str, object], dict[str, object]]]
) -> Path:
    with ShardWriter(directory, commit_every=len(results)) as w:
        for key, (datasets, attrs) in results.items():
            w.add(key, datasets, attrs)
    [path] = w.committed
    return Path(path)


def _tree_result() -> tuple[dict[str, object], dict[str, object]]:
    return (
        {
            "layout": Dataset(np.arange(6.0).reshape(3, 2), attrs={"units": "m"}),
            "history": {"iter_0": Group({"x": np.zeros(4, ">i4")}, attrs={"step": 0.5})},
            "raw": b"\x01\x00\xff\x00\x00",
            "labels": np.array(["nord", "süd"]),
            "f32": np.float32(2.5),
        },
        {"status": "ok", "seed": 3, "aep": 401.25, "flag": True, "z": 1 + 2j},
    )


def test_names_with_the_reserved_prefix_are_not_results(tmp_path: Path) -> None:
    path = _shard(tmp_path / "run", {"a": ({"x": np.arange(3.0)}, {"seed": 1})})
    with h5py.File(path, "r+") as f:
        assert "h5guard_summary" in f  # the summary table every shard carries
        f.create_group("h5guard_table")["seed"] = np.array([1])  # and any other reserved name
    assert [r.key for r in h5guard.iter_results(path)] == ["a"]
    assert [r.key for r in h5guard.iter_results(path, verify=False)] == ["a"]
    for verify in (True, False):
        for name in ("h5guard_summary", "h5guard_table"):
            with pytest.raises(h5guard.ResultNotFoundError, match=name):
                h5guard.read(path, name, verify=verify)
    assert list(h5guard.to_dataframe(path).index) == ["a"]


@pytest.mark.parametrize("key", ["", "a/x", ".", "nope", "\udcff"])
def test_keys_no_writer_can_have_written_are_not_found(tmp_path: Path, key: str) -> None:
    path = _shard(tmp_path / "run", {"a": ({"x": np.arange(3.0)}, {})})
    with pytest.raises(h5guard.ResultNotFoundError):
        h5guard.read(path, key)


def test_top_level_links_are_not_results_and_are_never_followed(tmp_path: Path) -> None:
    """An external link to another shard's result would yield that result if followed."""
    ours = _shard(tmp_path / "ours", {"a": ({"x": np.arange(3.0)}, {})})
    theirs = _shard(tmp_path / "theirs", {"b": ({"x": np.ones(2)}, {"from": "elsewhere"})})
    with h5py.File(ours, "r+") as f:
        f["soft"] = h5py.SoftLink("/a")
        f["external"] = h5py.ExternalLink(str(theirs), "/b")
        f["dangling"] = h5py.ExternalLink(str(tmp_path / "missing.h5"), "/b")
        f["dataset"] = np.arange(2)
    assert [r.key for r in h5guard.iter_results(ours)] == ["a"]
    for key in ("soft", "external", "dangling", "dataset"):
        with pytest.raises(h5guard.ResultNotFoundError):
            h5guard.read(ours, key)
    assert h5guard.read(ours, "a").datasets["x"].tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("kind", ["soft", "external"])
@pytest.mark.parametrize("verify", [True, False])
def test_links_inside_a_result_are_refused_at_any_depth(
    tmp_path: Path, kind: str, verify: bool
) -> None:
    ours = _shard(tmp_path / "ours", {"a": _tree_result()})
    theirs = _shard(tmp_path / "theirs", {"b": ({"x": np.ones(2)}, {})})
    link = h5py.SoftLink("/a/layout") if kind == "soft" else h5py.ExternalLink(str(theirs), "/b")
    with h5py.File(ours, "r+") as f:
        f["a/history/iter_0/planted"] = link
    name = "SoftLink" if kind == "soft" else "ExternalLink"
    with pytest.raises(ValueError, match=rf"a/history/iter_0/planted: {name} in a result"):
        h5guard.read(ours, "a", verify=verify)
    with pytest.raises(ValueError, match=name):
        list(h5guard.iter_results(ours, verify=verify))


def test_damage_deep_in_a_tree_is_a_mismatch_and_readable_unverified(tmp_path: Path) -> None:
    path = _shard(tmp_path / "run", {"a": _tree_result()})
    good = h5guard.read(path, "a")
    with h5py.File(path, "r+") as f:
        f["a/history/iter_0"].attrs["step"] = 0.75
    with pytest.raises(h5guard.DigestMismatchError) as err:
        h5guard.read(path, "a")
    assert err.value.stored == good.digest and err.value.computed != good.digest
    with pytest.raises(h5guard.DigestMismatchError):
        list(h5guard.iter_results(path))
    back = h5guard.read(path, "a", verify=False)
    assert back.datasets["history"]["iter_0"].attrs == {"step": 0.75}
    assert back.digest == good.digest  # what the file says, even unverified


def test_the_digest_of_the_reading_walk_is_the_digest_of_the_tree(tmp_path: Path) -> None:
    path = _shard(tmp_path / "run", {"a": _tree_result(), "b": ({"x": np.arange(3)}, {})})
    with h5py.File(path, "r") as f:
        for key in ("a", "b"):
            node, stored, computed = reader.read_result(f[key].id, key, verify=True)
            assert computed == stored == digest.digest(node)
            assert digest.digest(reader.read_tree(f[key], key)) == computed
            assert reader.read_result(f[key].id, key, verify=False)[2] is None
            assert computed == reader.verify_tree(f[key], key, finite=True)[0]


def test_values_keep_their_types_through_the_fast_path(tmp_path: Path) -> None:
    datasets, attrs = _tree_result()
    path = _shard(tmp_path / "run", {"a": (datasets, attrs)})
    for back in (h5guard.read(path, "a"), next(h5guard.iter_results(path, verify=False))):
        # Result equality compares type, dtype, shape and bytes of every value.
        assert back == h5guard.Result("a", datasets, attrs, None, str(path))
        assert type(back.attrs["z"]) is complex and type(back.attrs["flag"]) is bool
        assert type(back.datasets["f32"]) is np.float32
        assert back.datasets["history"]["iter_0"].members["x"].dtype == np.dtype(">i4")


def test_strings_of_both_encodings_and_enums_are_not_confused(tmp_path: Path) -> None:
    """One memory type per dtype: numpy's dtype equality ignores h5py's metadata (the
    UTF-8 tag, enum members), so these must not share one."""
    path = tmp_path / "foreign.h5"
    ascii_s = np.array(b"ok", dtype="S2")
    utf8 = np.array("é".encode(), dtype=h5py.string_dtype("utf-8", 2))
    enum = h5py.enum_dtype({"A": 0, "B": 1, "C": 2}, basetype="i1")
    with h5py.File(path, "w") as f:
        g = f.create_group("g")
        g.attrs["a_ascii"] = ascii_s
        g.attrs["b_utf8"] = utf8
        g.attrs.create("c_enum", 2, dtype=enum)
        g.attrs["d_int8"] = np.int8(-3)
        g["x"] = np.array(b"ab", dtype="S2")
    for _ in range(2):  # the second read uses the cached memory types
        back = h5guard.read(path, "g", verify=False)
        assert back.attrs["a_ascii"] == b"ok" and type(back.attrs["a_ascii"]) is np.bytes_
        assert back.attrs["b_utf8"] == "é"
        assert back.attrs["c_enum"] == 2 and back.attrs["d_int8"] == -3
        assert back.datasets["x"] == b"ab"
