from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from h5guard import ShardWriter, merge


def write(directory: Path, key: str, value: float) -> None:
    with ShardWriter(directory) as w:
        w.add(key, {"v": np.array([value])}, {"status": "ok"})


@pytest.mark.parametrize("policy", ["quarantine", "keep-existing"])
def test_conflict_policies(tmp_path: Path, policy: str) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    out = tmp_path / "out.h5"
    write(shards, "a", 1.0)
    assert merge(shards, out).exit_code == 0
    write(shards, "a", 2.0)  # same key, other content
    write(shards, "b", 3.0)
    report = merge(shards, out, on_conflict=policy)
    assert [k for k, _ in report.conflicts] == ["a"]
    assert report.groups_total == 2
    if policy == "quarantine":
        assert report.exit_code == 1
        assert len(report.quarantined) == 1
        assert len(list((shards / "quarantine").glob("*.h5"))) == 1
    else:
        assert report.exit_code == 0
        assert report.quarantined == ()
        assert not (shards / "quarantine").exists()
    assert list(shards.glob("*.h5")) == []


def test_bad_policy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_conflict"):
        merge(tmp_path, tmp_path / "o.h5", on_conflict="newest")
