"""The merge reads each shard's summary with the byte reader (``summary.mapped``): the
same table as libhdf5's read, its digest checked, and anything it cannot read or that
does not verify is read the old way (libhdf5, or the groups themselves)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest

import h5guard
from h5guard._format import summary
from h5guard._format.seal import write_seal


def _assert_same(a: summary.Table, b: summary.Table) -> None:
    assert a.keys == b.keys and a.digests == b.digests
    assert [(p.name, p.kind, p.dtype) for p in a.parts] == [
        (p.name, p.kind, p.dtype) for p in b.parts
    ]
    for p, q in zip(a.parts, b.parts, strict=True):
        assert p.slot.tolist() == q.slot.tolist()
        assert p.values.dtype == q.values.dtype
        assert (
            p.values.tobytes() == q.values.tobytes()
            if p.values.dtype != object
            else (p.values.tolist() == q.values.tolist())
        )
    assert a.digest() == b.digest()


def _mixed(directory: Path, n: int = 12, every: int = 12) -> list[Path]:
    """Shards whose rows miss values, hold text, bytes, numpy scalars, a column of two
    types, nested groups and values that are no column."""
    with h5guard.ShardWriter(directory, prefix="w", commit_every=every) as w:
        for i in range(n):
            attrs: dict[str, Any] = {"i": i, "site": f"s{i % 3}é", "raw": bytes([i, 0, 7])}
            if i % 2:
                attrs["failed"] = True
            attrs["mixed"] = i if i % 3 else f"t{i}"
            datasets: dict[str, Any] = {
                "layout": np.arange(i % 4 + 1.0),
                "e": np.float32(i),
                "tag": np.bytes_(b"a\0b" if i % 2 else b"ab"),
                "sub": {"deep": {"x": float(i)}, "y": i},
            }
            if i % 4 == 0:
                datasets["only_some"] = 1.5 * i
            w.add(f"r{i:03d}", datasets, attrs=attrs)
    return sorted(directory.glob("*.h5"))


@pytest.mark.parametrize("n", [1, 12])
def test_the_mapped_summary_is_the_table_libhdf5_reads(tmp_path: Path, n: int) -> None:
    for shard in _mixed(tmp_path, n):
        with h5py.File(shard, "r", locking=False) as f:
            fast = summary.mapped(f, str(shard))
            slow = summary.load(f)
        assert fast is not None and slow is not None
        _assert_same(fast, slow)


def test_no_summary_or_another_driver_is_left_to_libhdf5(tmp_path: Path) -> None:
    [shard] = _mixed(tmp_path, 3)
    with h5py.File(shard, "r+") as f:
        del f[summary.NAME]
    with h5py.File(shard, "r") as f:
        assert summary.mapped(f, "x") is None
    [other] = _mixed(tmp_path / "b", 3)
    with h5py.File(other, "r", driver="core", backing_store=False) as f:
        assert summary.mapped(f, "x") is None
    with h5py.File(other, "r+") as f:  # a soft link is never followed by the byte reader
        f.move(summary.NAME, "h5guard_elsewhere")
        f[summary.NAME] = h5py.SoftLink("/h5guard_elsewhere")
    with h5py.File(other, "r") as f:
        assert summary.mapped(f, "x") is None
        assert summary.load(f) is not None


def _chunked_summary(shard: Path) -> None:
    """Rewrite one summary column chunked (a layout the byte reader leaves to libhdf5)."""
    with h5py.File(shard, "r+") as f:
        top = f[summary.NAME]
        data = top["key_offsets"][()]
        del top["key_offsets"]
        top.create_dataset("key_offsets", data=data, chunks=(len(data),))
    write_seal(shard)


def test_a_summary_the_byte_reader_cannot_read_is_read_through_libhdf5(tmp_path: Path) -> None:
    [shard] = _mixed(tmp_path / "s", 12)
    _chunked_summary(shard)
    with h5py.File(shard, "r") as f:
        assert summary.mapped(f, "x") is None
        assert summary.load(f) is not None
    out = tmp_path / "out.h5"
    report = h5guard.merge(tmp_path / "s", out)
    assert report.exit_code == 0 and report.groups_added == 12
    with h5py.File(out, "r") as f:
        _assert_same(summary.load(f) or summary.Table([], [], []), summary.table_from_groups(f))
    assert not h5guard.check([out]).findings


def _alter_value(shard: Path) -> None:
    with h5py.File(shard, "r+") as f:
        top = f[summary.NAME]
        parts = json.loads(top.attrs["columns"])
        top[f"{parts.index(['i', 'int', '<i8'])}_values"][1] = 99


def test_a_mapped_summary_whose_digest_differs_is_refused(tmp_path: Path) -> None:
    [shard] = _mixed(tmp_path, 6)
    _alter_value(shard)
    with h5py.File(shard, "r") as f, pytest.raises(summary.SummaryError, match="digest"):
        summary.mapped(f, "x")


def test_the_merge_takes_rows_from_the_groups_when_the_summary_does_not_verify(
    tmp_path: Path,
) -> None:
    """Past validation (a shard altered after it was checked), the rows still come from
    the groups, never from the altered table."""
    [shard] = _mixed(tmp_path, 6)
    _alter_value(shard)
    out = tmp_path / "out.h5"
    with h5py.File(out, "w", libver=("v110", "latest")) as f:
        merging = summary.Merging(f, str(out))
        with h5py.File(shard, "r") as src:
            keys = [k for k in src if k != summary.NAME]
            merging.take(src, keys, str(shard))
            expected = summary.table_from_groups(src, keys)
        merging.write(f)
    with h5py.File(out, "r") as f:
        got = summary.load(f)
    assert got is not None
    _assert_same(got, expected)
    assert got.parts[[p.name for p in got.parts].index("i")].values[1] == 1


def test_a_merge_of_mixed_shards_gives_the_table_of_its_groups(tmp_path: Path) -> None:
    _mixed(tmp_path / "s", 20, every=6)
    out = tmp_path / "out.h5"
    report = h5guard.merge(tmp_path / "s", out)
    assert report.exit_code == 0 and report.groups_added == 20
    with h5py.File(out, "r") as f:
        got = summary.load(f)
        assert got is not None
        _assert_same(got, summary.table_from_groups(f))
    frame = h5guard.to_dataframe(out)
    pd.testing.assert_frame_equal(frame, h5guard.to_dataframe(out, verify=False))
    assert frame["i"].tolist() == list(range(20))
    assert not h5guard.check([out]).findings
