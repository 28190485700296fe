"""The summary (``/h5guard_summary``): to_dataframe from it equals the table read from the
groups, for every kind of value; the writer and the merge write it, check verifies it,
and nothing treats it as a result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import h5guard
from h5guard import Code, Severity
from h5guard._format import summary

# -- the reference: the table as to_dataframe built it before summaries ----------------------


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bytes | int | float | complex | np.generic) and not isinstance(
        value, np.void
    )


def reference(path: Path) -> pd.DataFrame:
    """One row per result, built from the groups read back (the specification)."""
    rows: list[dict[str, Any]] = []
    keys: list[str] = []
    for result in h5guard.iter_results(path):
        row = {n: v for n, v in result.attrs.items() if _is_scalar(v)}
        for name, value in result.datasets.items():
            if _is_scalar(value):
                row[f"datasets/{name}" if name in row else name] = value
        rows.append(row)
        keys.append(result.key)
    return pd.DataFrame(rows, index=pd.Index(keys, name="key"))


def without_summary(path: Path, into: Path) -> Path:
    shutil.copyfile(path, into)
    with h5py.File(into, "r+") as f:
        del f[summary.NAME]
    return into


def assert_tables(path: Path, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(h5guard.to_dataframe(path), expected)
    pd.testing.assert_frame_equal(h5guard.to_dataframe(path, verify=False), expected)


# -- values of every kind ----------------------------------------------------------------

_names = st.sampled_from(["a", "b", "x", "é", "z z", "datasets"])
_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.complex_numbers(allow_nan=True),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8).filter(
        lambda s: not s.endswith("\0")
    ),
    st.binary(max_size=6),
    st.sampled_from(
        [
            np.float32(1.5),
            np.float64(-2.0),
            np.float16(0.5),
            np.int8(-3),
            np.uint16(7),
            np.int64(2**40),
            np.uint64(2**63),
            np.bool_(True),
            np.complex64(1 - 1j),
            np.bytes_(b"ab"),
            np.bytes_(b"a\0b"),
        ]
    ),
)
_not_columns = st.sampled_from(
    [
        np.arange(3),
        np.array(5),  # a 0-d ndarray: read back as an array
        np.array(["u", "vw"]),
        {"sub": 1.0},
        h5guard.Dataset(2.0, attrs={"units": "m"}),
        np.zeros(2, dtype=[("p", "<i4"), ("q", "<f8")])[0],  # np.void
    ]
)
_results = st.lists(
    st.fixed_dictionaries(
        {
            "datasets": st.dictionaries(_names, st.one_of(_scalars, _not_columns), max_size=4),
            "attrs": st.dictionaries(_names, _scalars, max_size=4),
        }
    ),
    min_size=0,
    max_size=7,
)
_keys = st.text(alphabet="abcé0_-", min_size=1, max_size=5).filter(lambda k: k not in (".", ".."))


def _write(directory: Path, results: list[dict[str, Any]], keys: list[str], every: int) -> None:
    with h5guard.ShardWriter(directory, prefix="w", commit_every=every) as w:
        for key, r in zip(keys, results, strict=False):
            w.add(key, r["datasets"], attrs=r["attrs"])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    results=_results,
    keys=st.lists(_keys, min_size=7, max_size=7, unique=True),
    every=st.integers(1, 4),
)
def test_the_summary_gives_the_table_of_the_groups(
    tmp_path_factory: pytest.TempPathFactory,
    results: list[dict[str, Any]],
    keys: list[str],
    every: int,
) -> None:
    base = tmp_path_factory.mktemp("s")
    shards = base / "shards"
    _write(shards, results, keys, every)
    for shard in sorted(shards.glob("*.h5")):
        expected = reference(shard)
        with h5py.File(shard, "r") as f:
            assert summary.NAME in f
        assert_tables(shard, expected)
        assert_tables(without_summary(shard, base / "old.h5"), expected)
    out = base / "out.h5"
    h5guard.merge(shards, out)
    if results:
        expected = reference(out)
        assert_tables(out, expected)
        assert_tables(without_summary(out, base / "old.h5"), expected)
        assert not [f for f in h5guard.check([out]).findings if f.severity >= Severity.WARNING]


# -- written by the writer and the merge -------------------------------------------------------


def _study(directory: Path, start: int, count: int) -> None:
    with h5guard.ShardWriter(directory, prefix="w", commit_every=3) as w:
        for i in range(start, start + count):
            attrs: dict[str, Any] = {"i": i, "aep": i * 0.5, "site": f"s{i % 3}"}
            if i % 2:
                attrs["failed"] = True
            w.add(f"r{i:03d}", {"layout": np.arange(i % 4 + 1.0), "n": i}, attrs=attrs)


def test_incremental_merges_keep_the_summary_equal_to_the_groups(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    _study(tmp_path / "a", 0, 7)
    h5guard.merge(tmp_path / "a", out)
    _study(tmp_path / "b", 7, 5)
    h5guard.merge(tmp_path / "b", out)
    df = h5guard.to_dataframe(out)
    assert list(df.index) == [f"r{i:03d}" for i in range(12)]
    pd.testing.assert_frame_equal(df, reference(out))
    assert df["failed"].isna().sum() == 6 and df["i"].dtype == np.int64
    assert h5guard.check([out]).ok if hasattr(h5guard.Report, "ok") else True
    assert not h5guard.check([out]).findings


def test_an_output_without_a_summary_gets_one_at_its_next_merge(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    _study(tmp_path / "a", 0, 6)
    h5guard.merge(tmp_path / "a", out)
    with h5py.File(out, "r+") as f:
        del f[summary.NAME]  # as an output merged before summaries
    _study(tmp_path / "b", 6, 2)
    h5guard.merge(tmp_path / "b", out)
    with h5py.File(out, "r") as f:
        table = summary.load(f)
    assert table is not None and table.keys == [f"r{i:03d}" for i in range(8)]
    pd.testing.assert_frame_equal(h5guard.to_dataframe(out), reference(out))


def test_shards_without_a_summary_are_read_from_their_groups(tmp_path: Path) -> None:
    _study(tmp_path / "a", 0, 6)
    for shard in (tmp_path / "a").glob("*.h5"):
        # As a shard of an older version (its seal no longer matches: the check reads it).
        without_summary(shard, shard.with_suffix(".tmp"))
        shard.with_suffix(".tmp").replace(shard)
    out = tmp_path / "out.h5"
    h5guard.merge(tmp_path / "a", out)
    pd.testing.assert_frame_equal(h5guard.to_dataframe(out), reference(out))
    assert not h5guard.check([out]).findings


def test_an_output_merged_into_another_output(tmp_path: Path) -> None:
    first = tmp_path / "first.h5"
    _study(tmp_path / "a", 0, 5)
    h5guard.merge(tmp_path / "a", first)
    (tmp_path / "c").mkdir()
    shutil.copyfile(first, tmp_path / "c" / "first.h5")
    second = tmp_path / "second.h5"
    _study(tmp_path / "b", 5, 3)
    h5guard.merge(tmp_path / "b", second)
    report = h5guard.merge(tmp_path / "c", second)
    assert report.groups_added == 5, report
    assert summary.NAME not in [k for k in h5guard.read(second, "r000").datasets]
    assert [r.key for r in h5guard.iter_results(second)] == [f"r{i:03d}" for i in range(8)]
    pd.testing.assert_frame_equal(h5guard.to_dataframe(second), reference(second))
    assert not h5guard.check([second]).findings


def test_salvage_of_an_output_recovers_its_results_only(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    _study(tmp_path / "a", 0, 4)
    h5guard.merge(tmp_path / "a", out)
    report = h5guard.salvage([out], tmp_path / "salvaged")
    recovered = sorted(k for f in report.files for k in f.recovered)
    lost = [k for f in report.files for k, _ in f.lost]
    assert recovered == [f"r{i:03d}" for i in range(4)] and not lost, report
    assert summary.NAME not in recovered


# -- check and to_dataframe(verify=True) refuse a summary that is wrong --------------------------


def _merged(tmp_path: Path) -> Path:
    out = tmp_path / "out.h5"
    _study(tmp_path / "a", 0, 5)
    h5guard.merge(tmp_path / "a", out)
    return out


def _summary_findings(path: Path) -> list[h5guard.Finding]:
    return [f for f in h5guard.check([path]).findings if f.code is Code.SUMMARY_MISMATCH]


def test_a_changed_summary_value_is_an_error_of_its_own(tmp_path: Path) -> None:
    out = _merged(tmp_path)
    with h5py.File(out, "r+") as f:
        top = f[summary.NAME]
        parts = json.loads(top.attrs["columns"])
        top[f"{parts.index(['aep', 'float', '<f8'])}_values"][1] = 99.0
    findings = _summary_findings(out)
    assert len(findings) == 1 and findings[0].severity is Severity.ERROR
    assert findings[0].obj == "/h5guard_summary"
    assert "stored sha256:" in findings[0].message and "re-merge" in findings[0].message
    with pytest.raises(h5guard.DigestMismatchError, match="h5guard_summary"):
        h5guard.to_dataframe(out)


def test_a_group_the_summary_does_not_list_is_found(tmp_path: Path) -> None:
    out = _merged(tmp_path)
    shutil.copyfile(out, tmp_path / "copy.h5")
    with h5py.File(out, "r+") as f, h5py.File(tmp_path / "copy.h5", "r") as src:
        del f["r001"]
        f.copy(src["r001"], "r999")  # a valid group under a key the summary lacks
    findings = _summary_findings(out)
    assert len(findings) == 2, findings
    text = " ".join(f.message for f in findings)
    assert "'r001'" in text and "'r999'" in text
    with pytest.raises(h5guard.DigestMismatchError, match="lacks 1 result group"):
        h5guard.to_dataframe(out)


def test_a_row_digest_that_disagrees_with_its_group_is_found(tmp_path: Path) -> None:
    out = _merged(tmp_path)
    with h5py.File(out, "r+") as f:
        table = summary.load(f)
        assert table is not None
        table.digests[2] = table.digests[3]
        summary.write_table(f, table)  # a consistent summary that says the wrong thing
    findings = _summary_findings(out)
    assert len(findings) == 1 and "'r002'" in findings[0].message, findings


def test_a_malformed_summary_is_reported_not_raised(tmp_path: Path) -> None:
    out = _merged(tmp_path)
    with h5py.File(out, "r+") as f:
        del f[summary.NAME]["key_offsets"]
    findings = _summary_findings(out)
    assert len(findings) == 1 and "unreadable" in findings[0].message
    with pytest.raises(h5guard.DigestMismatchError):
        h5guard.to_dataframe(out)
    # Unverified, the table still comes from the groups.
    pd.testing.assert_frame_equal(h5guard.to_dataframe(out, verify=False), reference(out))


def test_an_empty_file_and_results_without_scalars(tmp_path: Path) -> None:
    with h5guard.ShardWriter(tmp_path / "s", prefix="w") as w:
        w.add("a", {"x": np.arange(3)})
        w.add("b", {"y": {"z": 1}})
    (shard,) = (tmp_path / "s").glob("*.h5")
    assert_tables(shard, reference(shard))
    assert h5guard.to_dataframe(shard).shape == (2, 0)


def test_a_shard_whose_summary_is_damaged_is_quarantined_not_merged(tmp_path: Path) -> None:
    # The merge reads a new shard's rows from its summary without re-hashing it, because
    # only validated shards are merged: one whose summary disagrees is an error there.
    _study(tmp_path / "a", 0, 3)
    (shard,) = (tmp_path / "a").glob("*.h5")
    with h5py.File(shard, "r+") as f:
        f[summary.NAME]["0_values"][0] = 99
    out = tmp_path / "out.h5"
    report = h5guard.merge(tmp_path / "a", out)
    assert len(report.quarantined) == 1 and report.groups_added == 0, report
    assert "SUMMARY_MISMATCH" in " ".join(report.quarantined[0].reasons)
