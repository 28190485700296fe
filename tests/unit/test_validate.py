from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from h5guard import Code, FileKind, Sandbox, Schema, Severity, ShardWriter, check, validate
from h5guard._check.quick import quick_check
from h5guard._format.checksum import lookup3
from h5guard._format.names import DIGEST_ATTR


def make_shard(directory: Path, n: int = 3, *, schema: Schema | None = None) -> Path:
    with ShardWriter(directory, schema=schema) as w:
        for i in range(n):
            w.add(
                f"g{i}",
                {"xy": np.full((4, 2), float(i)), "big": np.arange(6000.0) + i},
                {"status": "ok"},
            )
    [path] = w.committed
    return path


def codes(report: object) -> set[Code]:
    return {f.code for f in report.findings}  # type: ignore[attr-defined]


def test_lookup3_known_values() -> None:
    # Published test vectors of Bob Jenkins' hashlittle().
    assert lookup3(b"") == 0xDEADBEEF
    assert lookup3(b"Four score and seven years ago", 0) == 0x17770551
    assert lookup3(b"Four score and seven years ago", 1) == 0xCD628161


def test_good_shard_is_clean(tmp_path: Path, sandbox: Sandbox) -> None:
    path = make_shard(tmp_path)
    report = validate(path, sandbox=sandbox)
    assert report.ok, report.render_text()
    [summary] = report.files
    assert summary.kind is FileKind.SHARD
    assert sorted(summary.groups) == ["g0", "g1", "g2"]
    assert all(d and d.startswith("sha256-v2:") for d in summary.groups.values())


def test_missing_empty_and_not_hdf5(tmp_path: Path) -> None:
    (tmp_path / "empty.h5").write_bytes(b"")
    (tmp_path / "text.h5").write_bytes(b"hello world, not hdf5" * 50)
    assert codes(validate(tmp_path / "nope.h5")) == {Code.NOT_FOUND}
    assert codes(validate(tmp_path / "empty.h5")) == {Code.EMPTY}
    assert codes(validate(tmp_path / "text.h5")) == {Code.NOT_HDF5}
    assert codes(validate(tmp_path)) == {Code.NOT_A_FILE}


def test_truncation_and_trailing_data(tmp_path: Path) -> None:
    path = make_shard(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    assert Code.TRUNCATED in codes(validate(cut, deep=False))
    longer = tmp_path / "longer.h5"
    longer.write_bytes(data + b"junk")
    quick = validate(longer, deep=False)
    assert codes(quick) == {Code.TRAILING_DATA}
    assert quick.ok  # libhdf5 ignores bytes past the end; the quick layer cannot say whose
    deep = validate(longer)  # ... the deep layer can: h5guard never leaves any
    assert [f.severity for f in deep.findings if f.code is Code.TRAILING_DATA] == [Severity.WARNING]
    assert not deep.ok


def test_superblock_checksum(tmp_path: Path) -> None:
    path = make_shard(tmp_path)
    data = bytearray(path.read_bytes())
    _, info = quick_check(str(path))
    assert info is not None
    data[info.offset + 20] ^= 0x10  # inside the base/extension address fields of a v3 superblock
    path.write_bytes(bytes(data))
    assert codes(validate(path, deep=False)) == {Code.SUPERBLOCK_CORRUPT}


def test_userblock_signature_offset(tmp_path: Path, sandbox: Sandbox) -> None:
    path = tmp_path / "ub.h5"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["x"] = np.arange(3)
    findings, info = quick_check(str(path))
    assert findings == []
    assert info is not None and info.offset == 512
    assert validate(path, sandbox=sandbox).ok


def test_open_for_write_flag(tmp_path: Path) -> None:
    path = tmp_path / "open.h5"
    f = h5py.File(path, "w", libver=("v110", "latest"))
    f.create_dataset("x", data=np.arange(5))
    f.flush()
    try:
        assert Code.OPEN_FOR_WRITE in codes(validate(path, deep=False))
    finally:
        f.close()
    assert validate(path, deep=False).ok


def test_digest_mismatch_is_found(tmp_path: Path, sandbox: Sandbox) -> None:
    path = make_shard(tmp_path, n=1)
    with h5py.File(path, "r+") as f:
        # Rewrite the data through HDF5 itself so every checksum stays valid: only the
        # content digest can tell.
        f["g0/xy"][0, 0] = 42.0
    report = validate(path, sandbox=sandbox)
    assert Code.DIGEST_MISMATCH in codes(report)
    [finding] = [f for f in report.findings if f.code is Code.DIGEST_MISMATCH]
    assert finding.obj == "/g0"
    assert "stored sha256-v2:" in finding.message and "computed sha256-v2:" in finding.message


def test_missing_digest_in_h5guard_file(tmp_path: Path, sandbox: Sandbox) -> None:
    path = make_shard(tmp_path, n=1)
    with h5py.File(path, "r+") as f:
        del f["g0"].attrs[DIGEST_ATTR]
    assert Code.DIGEST_MISSING in codes(validate(path, sandbox=sandbox))


def test_foreign_file_gets_a_note(tmp_path: Path, sandbox: Sandbox) -> None:
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("cfg1")
        g["layout"] = np.zeros((3, 2))
        g.attrs["status"] = "success"
        f["init"] = np.array([1])
    report = validate(path, sandbox=sandbox)
    assert report.ok
    assert codes(report) == {Code.NO_DIGESTS}
    assert report.findings[0].severity is Severity.INFO
    assert report.files[0].kind is FileKind.FOREIGN
    assert list(report.files[0].groups) == ["cfg1"]


def test_schema_applies_to_foreign_files(tmp_path: Path, sandbox: Sandbox) -> None:
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f.create_group("a")["layout"] = np.zeros((3, 2))
        f.create_group("b")["aep"] = np.array(1.0)
    schema = Schema.from_dict({"datasets": {"layout": {"shape": [None, 2]}}})
    report = validate(path, schema=schema, sandbox=sandbox)
    [missing] = [f for f in report.findings if f.code is Code.SCHEMA_MISSING]
    assert missing.obj == "/b/layout"
    assert list(report.files[0].groups) == ["a"]


def test_check_directory_expect_and_partials(tmp_path: Path) -> None:
    make_shard(tmp_path, n=2)
    (tmp_path / "shard-x-host-999999-abc.h5.partial").write_bytes(b"")
    keys = ["g0", "g1", "missing"]
    report = check([tmp_path], expect=keys, workers=1)
    got = {(f.code, f.obj) for f in report.findings}
    assert (Code.EXPECTED_MISSING, "/missing") in got
    assert Code.PARTIAL_FILE in {c for c, _ in got}
    assert not report.ok


def test_sandbox_timeout_crash_and_memory(tmp_path: Path) -> None:
    with Sandbox(workers=1, timeout=1.0, memory_limit=64 * 2**20) as box:
        slow = box.call("time:sleep", 30)
        assert slow.failure == "timeout"
        crash = box.call("os:abort")
        assert crash.failure == "crashed" and "SIGABRT" in crash.detail
        memory = box.call("numpy:ones", 2**30)
        assert memory.failure == "memory"
        error = box.call("os:stat", str(tmp_path / "nope"))
        assert error.failure == "error" and "FileNotFoundError" in error.detail
        fine = box.call("os:getpid")
        assert fine.ok and fine.value != os.getpid()


def test_shared_sandbox_reuses_the_children_with_its_own_timeout() -> None:
    with Sandbox(workers=1, timeout=60.0) as owner:
        first = owner.call("os:getpid")
        view = owner.share(timeout=4.0)  # start-up of a new child counts against it
        assert view.call("os:getpid").value == first.value  # no new interpreter
        assert view.call("time:sleep", 30).failure == "timeout"  # the view's limit
        second = view.call("os:getpid")  # a new child replaces the killed one
        assert second.ok and second.value != first.value
        with view:
            pass  # closing the view leaves the owner's children alone
        assert owner.call("os:getpid").value == second.value


def test_sandbox_map_runs_all_calls(sandbox: Sandbox) -> None:
    results = dict(sandbox.map("math:sqrt", [(float(i * i),) for i in range(20)]))
    assert [results[i].value for i in range(20)] == [float(i) for i in range(20)]


@pytest.mark.parametrize("bad", [{"timeout": 0}, {"memory_limit": 10}])
def test_sandbox_options(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Sandbox(**bad)  # type: ignore[arg-type]


def _set_write_flag(path: Path) -> None:
    """What a writer killed before closing leaves in a version-3 superblock."""
    data = bytearray(path.read_bytes())
    _, info = quick_check(str(path))
    assert info is not None and info.version == 3
    o = info.offset
    data[o + 11] |= 0x01
    end = o + 12 + 4 * data[o + 9]
    data[end : end + 4] = lookup3(bytes(data[o:end])).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_write_flags_do_not_hide_damage_behind_them(tmp_path: Path, sandbox: Sandbox) -> None:
    path = tmp_path / "killed.h5"
    values = np.arange(4096.0)
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("x", data=values, chunks=(512,), fletcher32=True)
    intact = tmp_path / "intact.h5"
    intact.write_bytes(path.read_bytes())
    _set_write_flag(intact)
    data = bytearray(path.read_bytes())
    data[data.find(values[100:101].tobytes())] ^= 0x10  # one bit of the raw data
    path.write_bytes(bytes(data))
    _set_write_flag(path)
    damaged = path.read_bytes()
    report = validate(path, sandbox=sandbox)
    assert {Code.OPEN_FOR_WRITE, Code.OBJECT_UNREADABLE} <= codes(report)
    assert not codes(validate(intact, sandbox=sandbox)) & {Code.OBJECT_UNREADABLE}
    assert path.read_bytes() == damaged  # the file itself was not modified
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r", locking=False)  # what libhdf5 itself says about it
