"""A merge killed between a quarantine note and the move it announces."""

from __future__ import annotations

import json
from pathlib import Path

from h5guard import merge
from tests.crash._merge_child import write_shards


def test_a_note_without_its_file_is_replaced_not_skipped(tmp_path: Path) -> None:
    shards = tmp_path / "tmp"
    write_shards(shards, range(2), per_shard=3)
    (shards / "bad.h5").write_bytes(b"not an HDF5 file\n" * 100)
    quarantine = shards / "quarantine"
    quarantine.mkdir()
    (quarantine / "bad.h5.json").write_text('{"file": "bad.h5"}', encoding="utf-8")
    report = merge(shards, tmp_path / "out.h5", workers=1)
    assert [Path(q.path).name for q in report.quarantined] == ["bad.h5"]
    assert sorted(p.name for p in quarantine.iterdir()) == ["bad.h5", "bad.h5.json"]
    assert "NOT_HDF5" in json.loads((quarantine / "bad.h5.json").read_text())["reasons"][0]
