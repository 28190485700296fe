"""A sealed shard's summary table is verified by the byte reader, as libhdf5's path does.

Every shard carries ``/h5guard_summary``: if the byte reader left such shards to
libhdf5, a check of many shards would lose its fast path. It reads the table itself,
checks its digest, its key set and each row's digest against the groups it verified,
and leaves any disagreement to the libhdf5 path, which reports SUMMARY_MISMATCH.
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import h5py
import numpy as np
import pytest

from h5guard import Code, ShardWriter, check
from h5guard._check.deep import inspect_file
from h5guard._check.sealed import inspect_sealed
from h5guard._format import bytes as bytes_reader
from h5guard._format import summary
from h5guard._format.seal import write_seal


def make_shard(directory: Path, n: int) -> Path:
    with ShardWriter(directory, commit_every=n) as w:
        for i in range(n):
            attrs = {"status": "ok", "seed": i, "aep": i / 3, "done": bool(i % 2)}
            if i % 3:
                attrs["note"] = "x" * i
            w.add(f"k{i:04d}", {"xy": np.full((4, 2), float(i)), "e": np.float32(i)}, attrs)
    [path] = w.committed
    return Path(path)


@pytest.mark.parametrize("n", [1, 9, 60, 700])
def test_the_byte_reader_reads_the_table_libhdf5_reads(tmp_path: Path, n: int) -> None:
    path = make_shard(tmp_path, n)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        base, _, links = bytes_reader.root_group(buf)
        datasets, attrs = bytes_reader.flat_group_arrays(buf, base, links[summary.NAME.encode()])
        table, stored = summary.load_arrays(datasets, attrs, "/h5guard_summary")
    with h5py.File(path, "r") as f:
        expected = summary.load(f)
        assert expected is not None
        assert stored == summary.stored_digest(f) == expected.digest() == table.digest()
    assert table.keys == expected.keys and table.digests == expected.digests


def test_a_sealed_shard_with_its_summary_is_answered_by_the_byte_reader(tmp_path: Path) -> None:
    path = make_shard(tmp_path, 9)
    [(seal, fast)] = inspect_sealed([str(path)])
    assert seal is True and fast is not None
    assert fast == inspect_file(str(path))


def _alter_summary_and_reseal(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        top = f[summary.NAME]
        parts = json.loads(top.attrs["columns"])
        top[f"{parts.index(['aep', 'float', '<f8'])}_values"][1] = 99.0
    write_seal(path)


def test_a_summary_that_disagrees_is_left_to_libhdf5_and_reported(tmp_path: Path) -> None:
    path = make_shard(tmp_path, 9)
    _alter_summary_and_reseal(path)
    [(seal, fast)] = inspect_sealed([str(path)])
    assert seal is True and fast is None
    codes = [(f.obj, f.code) for f in check([path]).findings]
    assert codes == [("/h5guard_summary", Code.SUMMARY_MISMATCH)]


def test_an_unknown_reserved_member_is_still_left_to_libhdf5(tmp_path: Path) -> None:
    path = make_shard(tmp_path, 2)
    with h5py.File(path, "a") as f:
        f.create_group("h5guard_table")
    write_seal(path)
    [(seal, fast)] = inspect_sealed([str(path)])
    assert seal is True and fast is None
    assert not check([path]).ok  # checked as a result group: it has no digest
