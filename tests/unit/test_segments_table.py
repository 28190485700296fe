"""The table of a segmented output: every segment's summary, in key order.

``to_dataframe`` of an index must give exactly what reading every result gives, with
and without verification, and a damaged summary in any segment is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from h5guard import DigestMismatchError, ShardWriter, check, iter_results, merge, to_dataframe
from h5guard._format import segments, summary


def add_batch(shards: Path, start: int, n: int) -> None:
    with ShardWriter(shards, commit_every=4) as w:
        for i in range(start, start + n):
            attrs = {"aep": i / 7, "seed": i, "status": "ok" if i % 4 else "failed"}
            if i % 2:
                attrs[f"only_in_{i % 3}"] = i  # columns some segments lack
            w.add(f"c{i:05d}", {"xy": np.full((3, 2), float(i))}, attrs)


def by_reading(path: Path) -> pd.DataFrame:
    rows, keys = [], []
    for r in iter_results(path):
        rows.append({n: v for n, v in r.attrs.items() if summary.is_scalar(v)})
        keys.append(r.key)
    return pd.DataFrame(rows, index=pd.Index(keys, name="key"))


@pytest.fixture
def segmented_output(tmp_path: Path) -> Path:
    shards, out = tmp_path / "tmp", tmp_path / "out.h5"
    for n, start in enumerate((0, 9, 20)):
        add_batch(shards, start, 9 + n)
        layout = "auto" if n == 0 else "segmented"
        assert merge(shards, out, workers=1, layout=layout).exit_code == 0
    assert segments.resolve(out) is not None and len(segments.resolve(out) or []) == 3
    return out


@pytest.mark.parametrize("verify", [True, False])
def test_the_table_of_an_index_is_the_table_of_its_results(
    segmented_output: Path, verify: bool
) -> None:
    table = to_dataframe(segmented_output, verify=verify)
    expected = by_reading(segmented_output)
    assert len(table) == 9 + 10 + 11
    assert set(table.columns) == set(expected.columns)
    pd.testing.assert_frame_equal(table, expected[table.columns])
    assert check([segmented_output]).ok


def test_a_damaged_summary_in_one_segment_is_refused(segmented_output: Path) -> None:
    [_, (second, _), _] = segments.resolve(segmented_output) or []
    with h5py.File(second, "r+") as f:
        top = f[summary.NAME]
        parts = json.loads(top.attrs["columns"])
        top[f"{parts.index(['aep', 'float', '<f8'])}_values"][0] = -1.0
    with pytest.raises(DigestMismatchError, match="h5guard_summary"):
        to_dataframe(segmented_output)
    assert not check([segmented_output]).ok
