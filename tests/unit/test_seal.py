"""The shard seal: a hash of a committed shard's bytes in its user block, and what
the merge may skip because of it (and what it must not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from h5guard import Code, FileKind, Schema, ShardWriter, merge, validate, validate_many
from h5guard._check.quick import quick_check
from h5guard._format import result as _result
from h5guard._format.names import INDEX_ATTR
from h5guard._format.seal import SEAL_SIZE, check_seal, parse_seal
from h5guard.schema import AttrSpec, DatasetSpec

SCHEMA = Schema(
    "seal-test",
    datasets={"xy": DatasetSpec(dtype="float64", shape=("n", 2))},
    attrs={"status": AttrSpec(dtype="string")},
)


def make_shard(directory: Path, first: int = 0, n: int = 3) -> Path:
    with ShardWriter(directory, schema=SCHEMA, prefix="s") as w:
        for i in range(first, first + n):
            w.add(f"g{i:03d}", {"xy": np.full((4, 2), float(i))}, {"status": "ok"})
    [path] = w.committed
    return path


def test_committed_shard_is_sealed_with_its_superblock_after_the_user_block(
    tmp_path: Path,
) -> None:
    path = make_shard(tmp_path)
    data = path.read_bytes()
    seal = parse_seal(data[:SEAL_SIZE])
    assert seal is not None and seal.size == len(data)
    assert check_seal(path) is True
    _, info = quick_check(str(path))
    assert info is not None and info.offset == SEAL_SIZE
    with h5py.File(path, "r") as f:  # any HDF5 reader still opens it
        assert sorted(f) == ["g000", "g001", "g002", "h5guard_summary"]


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_any_changed_byte_after_the_user_block_breaks_the_seal(tmp_path: Path, where: str) -> None:
    path = make_shard(tmp_path)
    data = bytearray(path.read_bytes())
    offset = {"first": SEAL_SIZE, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    assert check_seal(path) is False


def test_appended_bytes_break_the_seal_and_unsealed_files_have_none(tmp_path: Path) -> None:
    path = make_shard(tmp_path)
    with open(path, "ab") as fh:
        fh.write(b"\0")
    assert check_seal(path) is False
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.arange(3)
    assert check_seal(plain) is None
    assert check_seal(tmp_path / "missing.h5") is None


def test_index_lists_every_group_with_the_digest_of_its_content(tmp_path: Path) -> None:
    path = make_shard(tmp_path)
    with h5py.File(path, "r") as f:
        index = f.attrs[INDEX_ATTR]
    expected = {
        f"g{i:03d}": _result.prepare(
            f"g{i:03d}", {"xy": np.full((4, 2), float(i))}, {"status": "ok"}, schema=None
        ).digest
        for i in range(3)
    }
    assert json.loads(bytes(index).decode()) == expected


def test_trusted_summary_equals_the_full_read(tmp_path: Path) -> None:
    path = make_shard(tmp_path)
    trusted = validate_many([str(path)], schema=SCHEMA, trust_seals=True)
    full = validate(path, schema=SCHEMA)
    assert trusted.ok and full.ok
    assert trusted.files[0].kind is FileKind.SHARD
    assert dict(trusted.files[0].groups) == dict(full.files[0].groups)
    assert trusted.files[0].schema_json == full.files[0].schema_json


def test_changed_shard_is_read_fully_and_its_damage_reported(tmp_path: Path) -> None:
    path = make_shard(tmp_path)
    data = bytearray(path.read_bytes())
    value = np.full((4, 2), 1.0).tobytes()
    at = bytes(data).index(value)  # the xy data of g001, stored once, compact
    data[at + 3] ^= 0x40
    path.write_bytes(bytes(data))
    report = validate_many([str(path)], schema=SCHEMA, trust_seals=True)
    found = {f.code for f in report.findings}
    # Compact data lives in the checksummed object header: libhdf5 refuses to read it.
    assert found & {Code.DIGEST_MISMATCH, Code.OBJECT_UNREADABLE}
    assert Code.SEAL_MISMATCH in found
    assert "g001" not in report.files[0].groups


def test_seal_mismatch_alone_is_a_note_when_every_group_still_verifies(tmp_path: Path) -> None:
    path = make_shard(tmp_path)
    data = bytearray(path.read_bytes())
    at = bytes(data).index(b"sha256:") + len(b"sha256:")
    data[at] = ord("0") if data[at] != ord("0") else ord("1")  # the seal, not the content
    path.write_bytes(bytes(data))
    assert check_seal(path) is False
    report = validate(path, schema=SCHEMA)
    assert report.ok, report.findings
    assert {f.code for f in report.findings} == {Code.SEAL_MISMATCH}


def test_a_stricter_schema_than_the_embedded_one_is_checked_fully(tmp_path: Path) -> None:
    """The seal vouches only for the schema the writer checked; another one is applied
    by reading every group, and violations still quarantine the shard."""
    (tmp_path / "shards").mkdir()
    make_shard(tmp_path / "shards")
    stricter = Schema(
        "seal-test",
        datasets={"xy": DatasetSpec(dtype="float64", shape=(3, 2))},
        attrs={"status": AttrSpec(dtype="string")},
    )
    report = merge(tmp_path / "shards", tmp_path / "out.h5", schema=stricter)
    assert report.exit_code == 1
    assert report.groups_added == 0
    assert len(report.quarantined) == 1
    assert any(Code.SCHEMA_SHAPE in r for r in report.quarantined[0].reasons)


@pytest.fixture
def checker_starts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records every sandbox child started (the real ones still start)."""
    import h5guard._sandbox as sandbox_module

    started: list[int] = []
    real = sandbox_module._Child.__init__

    def counting(self: object, memory_limit: int, *args: Any) -> None:
        started.append(memory_limit)
        real(self, memory_limit, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(sandbox_module._Child, "__init__", counting)
    return started


def test_sealed_shards_merge_without_a_checker_process(
    tmp_path: Path, checker_starts: list[int]
) -> None:
    """The point of the seal: a merge of intact shards starts no sandbox child."""
    shards = tmp_path / "shards"
    shards.mkdir()
    for first in (0, 10, 20):
        make_shard(shards, first)
    report = merge(shards, tmp_path / "out.h5")
    assert report.exit_code == 0 and report.groups_added == 9
    assert checker_starts == []
    assert validate(tmp_path / "out.h5", schema=SCHEMA).ok


def test_root_attributes_are_parsed_without_libhdf5_as_h5py_reads_them(tmp_path: Path) -> None:
    import mmap

    from h5guard._format import bytes as _fastread

    path = make_shard(tmp_path)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        values = _fastread.root_attribute_values(buf)
    with h5py.File(path, "r") as f:
        expected = {name: bytes(f.attrs[name]) for name in f.attrs}
    assert {k: v.rstrip(b"\0") for k, v in values.items()} == expected


def test_many_file_attributes_in_dense_storage_still_plan_from_the_index(
    tmp_path: Path, checker_starts: list[int]
) -> None:
    """Past 8 root attributes libhdf5 moves them to a fractal heap, which h5guard's own
    reader does not parse: the sealed shard is then summarized through libhdf5."""
    import mmap

    from h5guard._format import bytes as _fastread

    attrs = {f"meta{i:02d}": f"value {i}" for i in range(12)}
    with ShardWriter(tmp_path, schema=SCHEMA, prefix="d", file_attrs=attrs) as w:
        w.add("g", {"xy": np.zeros((2, 2))}, {"status": "ok"})
    [path] = w.committed
    with (
        open(path, "rb") as fh,
        mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf,
        pytest.raises(_fastread.Unsupported),
    ):
        _fastread.root_attribute_values(buf)
    report = validate_many([str(path)], schema=SCHEMA, trust_seals=True)
    assert report.ok
    assert checker_starts == []
    assert set(report.files[0].groups) == {"g"}
    assert report.files[0].kind is FileKind.SHARD
