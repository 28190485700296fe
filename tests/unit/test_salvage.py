"""h5guard.salvage on files written with plain h5py, intact and damaged in known ways."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import h5guard
from h5guard import (
    AttrSpec,
    DatasetSpec,
    FileSalvage,
    MergeSourceError,
    SalvageReport,
    Schema,
    ShardWriter,
    salvage,
)
from h5guard._check.quick import quick_check
from h5guard._format.checksum import lookup3
from h5guard._format.names import DIGEST_ATTR

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def pipeline_group(i: int) -> tuple[np.ndarray, float, dict[str, str]]:
    rng = np.random.default_rng(i)
    n = 3 + i % 5
    return (
        rng.uniform(-500, 500, (n, 2)),
        float(rng.uniform(100, 300)),
        {
            "status": "ok",
            "site": f"site-{i}-é",
        },
    )


def write_pipeline_file(path: Path, keys: list[str], *, libver: str | None = None) -> None:
    """Like the original workers: h5py defaults, vlen string attrs, an ``init`` dataset."""
    kw: dict[str, Any] = {"libver": libver} if libver else {}
    with h5py.File(path, "w", **kw) as f:
        f["init"] = np.arange(10.0)
        for i, key in enumerate(keys):
            layout, aep, attrs = pipeline_group(i)
            g = f.create_group(key)
            g["layout"] = layout
            g["aep"] = aep
            for name, value in attrs.items():
                g.attrs[name] = value


def assert_pipeline_groups(path: Path, keys: list[str]) -> None:
    with h5py.File(path, "r") as f:
        for i, key in enumerate(keys):
            layout, aep, attrs = pipeline_group(i)
            g = f[key]
            assert g["layout"].dtype == np.float64
            np.testing.assert_array_equal(g["layout"][()], layout)
            assert g["aep"][()] == aep
            assert {k: bytes(g.attrs[k]).decode() for k in attrs} == attrs
            assert set(g.attrs) == {*attrs, DIGEST_ATTR}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def set_superblock(path: Path, *, flags: int | None = None, eof: int | None = None) -> None:
    """Edit a v2/v3 superblock in place and fix its checksum."""
    data = bytearray(path.read_bytes())
    assert data[8] in (2, 3)
    size = data[9]
    end = 12 + 4 * size
    if flags is not None:
        data[11] = flags
    if eof is not None:
        data[12 + 2 * size : 12 + 3 * size] = eof.to_bytes(size, "little")
    data[end : end + 4] = lookup3(bytes(data[:end])).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def merge_and_validate(out: Path, tmp_path: Path) -> Path:
    merged = tmp_path / "merged.h5"
    report = h5guard.merge(out, merged, timeout=30)
    assert report.exit_code == 0, report.render_text()
    check = h5guard.validate(merged, timeout=30)
    assert check.ok, check.render_text()
    return merged


def by_path(report: SalvageReport) -> dict[str, FileSalvage]:
    return {Path(f.path).name: f for f in report.files}


# -- intact files ----------------------------------------------------------------------
def test_pipeline_file_recovered_bit_for_bit(tmp_path: Path) -> None:
    src = tmp_path / "in" / "worker_101.h5"
    src.parent.mkdir()
    keys = [f"cfg-{i}" for i in range(6)]
    write_pipeline_file(src, keys)
    before = digest(src)
    out = tmp_path / "out"
    report = salvage([src], out, timeout=30)
    assert report.exit_code == 0, report.render_text()
    [fs] = report.files
    assert fs.verdict == "ok" and sorted(fs.recovered) == keys and fs.lost == ()
    assert "init" not in fs.recovered
    [shard] = fs.shards
    with h5py.File(shard, "r") as f:
        assert bytes(f.attrs["salvaged_from"]).decode() == str(src.resolve())
    assert not [p for p in out.iterdir() if p.name.startswith(".salvage-")]
    assert digest(src) == before
    merged = merge_and_validate(out, tmp_path)
    assert_pipeline_groups(merged, keys)


def test_directory_and_file_paths_are_expanded_once(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    write_pipeline_file(d / "worker_1.h5", ["a", "b"])
    write_pipeline_file(d / "worker_2.h5", ["c"])
    (d / "notes.txt").write_text("not an input")
    report = salvage([d, d / "worker_1.h5"], tmp_path / "out", timeout=30)
    assert [Path(f.path).name for f in report.files] == ["worker_1.h5", "worker_2.h5"]
    assert report.groups_recovered == 3 and report.exit_code == 0


def test_h5guard_shard_keeps_its_digests(tmp_path: Path) -> None:
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    with ShardWriter(src_dir) as w:
        for i in range(3):
            w.add(f"g{i}", {"xy": np.full((4, 2), float(i))}, {"status": "ok", "n": i})
    [src] = w.committed
    with h5py.File(src, "r") as f:
        old = {k: bytes(f[k].attrs[DIGEST_ATTR]).decode() for k in f}
    report = salvage([src], tmp_path / "out", timeout=30)
    assert report.exit_code == 0, report.render_text()
    [shard] = report.shards
    with h5py.File(shard, "r") as f:
        new = {k: bytes(f[k].attrs[DIGEST_ATTR]).decode() for k in f}
    assert new == old


# -- damaged files -----------------------------------------------------------------------
def test_empty_not_hdf5_and_truncated_get_verdicts(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "empty.h5").write_bytes(b"")
    (d / "text.h5").write_bytes(b"worker log, not hdf5\n" * 40)
    write_pipeline_file(d / "good.h5", [f"k{i}" for i in range(40)])
    data = (d / "good.h5").read_bytes()
    (d / "head.h5").write_bytes(data[:20])  # ends inside the superblock
    (d / "half.h5").write_bytes(data[: len(data) // 2])
    hashes = {p.name: digest(p) for p in d.iterdir()}
    started = time.monotonic()
    report = salvage([d], tmp_path / "out", timeout=20)
    assert time.monotonic() - started < 30
    files = by_path(report)
    assert files["empty.h5"].verdict == "empty"
    assert files["text.h5"].verdict == "not_hdf5"
    assert files["head.h5"].verdict == "truncated"
    assert files["good.h5"].verdict == "ok"
    half = files["half.h5"]
    assert half.verdict in ("truncated", "partial"), half
    assert "superblock says the file is" in half.note
    for name in ("empty.h5", "text.h5", "head.h5"):
        assert files[name].recovered == () and files[name].shards == ()
    assert report.exit_code == 1
    assert {p.name: digest(p) for p in d.iterdir()} == hashes
    merged = merge_and_validate(tmp_path / "out", tmp_path)
    keys = [f"k{i}" for i in range(40)]
    with h5py.File(merged, "r") as f:
        assert set(keys) <= set(f)
    assert_pipeline_groups(merged, keys)


def test_open_for_write_v3_file_is_cleared_on_a_copy(tmp_path: Path) -> None:
    src = tmp_path / "worker_7.h5"
    keys = ["a", "b", "c"]
    write_pipeline_file(src, keys, libver="latest")
    set_superblock(src, flags=0x05)  # what a SIGKILLed writer leaves (write + SWMR bits)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(src, "r").close()
    before = digest(src)
    report = salvage([src], tmp_path / "out", timeout=30)
    [fs] = report.files
    assert fs.verdict == "ok", report.render_text()
    assert "open for write" in fs.note
    assert digest(src) == before
    assert quick_check(str(src))[1].open_for_write  # type: ignore[union-attr]
    assert_pipeline_groups(merge_and_validate(tmp_path / "out", tmp_path), keys)


def test_recorded_eof_past_the_end_is_lowered(tmp_path: Path) -> None:
    # A writer killed inside flush() can leave the superblock ahead of the data.
    src = tmp_path / "worker_8.h5"
    keys = ["a", "b"]
    write_pipeline_file(src, keys, libver="latest")
    set_superblock(src, flags=0x01, eof=src.stat().st_size + 4096)
    report = salvage([src], tmp_path / "out", timeout=30)
    [fs] = report.files
    assert fs.verdict == "ok", report.render_text()
    assert "end-of-file address set" in fs.note
    assert_pipeline_groups(merge_and_validate(tmp_path / "out", tmp_path), keys)


def test_root_index_past_a_stale_eof_is_read_with_the_eof_raised(tmp_path: Path) -> None:
    # What a kill inside flush() (or a cache eviction) leaves in a v0 file: metadata of
    # the root's index written past the end-of-file address the superblock records.
    src = tmp_path / "worker_10.h5"
    keys = [f"k{i:03d}" for i in range(120)]
    with h5py.File(src, "w") as f:
        for i, key in enumerate(keys):
            f[f"{key}/x"] = np.arange(3.0) + i
            if i == 20:
                f.flush()
                flushed_size = src.stat().st_size
    data = bytearray(src.read_bytes())
    assert data[8] == 0 and data[13] == 8  # v0 superblock, 8-byte addresses
    data[40:48] = flushed_size.to_bytes(8, "little")
    src.write_bytes(bytes(data))
    with pytest.raises(Exception, match="addr overflow"), h5py.File(src, "r") as f:
        list(f)
    report = salvage([src], tmp_path / "out", timeout=30)
    [fs] = report.files
    assert fs.verdict == "ok", report.render_text()
    assert sorted(fs.recovered) == keys
    assert "end-of-file address raised" in fs.note
    merged = merge_and_validate(tmp_path / "out", tmp_path)
    with h5py.File(merged, "r") as f:
        for i, key in enumerate(keys):
            np.testing.assert_array_equal(f[key]["x"][()], np.arange(3.0) + i)


def test_damaged_dense_root_index_is_read_around(tmp_path: Path) -> None:
    src = tmp_path / "worker_11.h5"
    with h5py.File(src, "w", libver="latest") as f:
        for i in range(200):
            f[f"k{i:03d}/x"] = np.arange(3.0) + i
    data = bytearray(src.read_bytes())
    leaves = [i for i in range(len(data)) if data[i : i + 4] == b"BTLF"]
    assert len(leaves) >= 3
    data[leaves[len(leaves) // 2] + 20] ^= 0xFF  # breaks that leaf's checksum
    src.write_bytes(bytes(data))
    report = salvage([src], tmp_path / "out", timeout=30)
    [fs] = report.files
    assert fs.verdict == "partial", report.render_text()
    assert 0 < len(fs.recovered) < 200
    assert "index is damaged" in fs.note
    merged = merge_and_validate(tmp_path / "out", tmp_path)
    with h5py.File(merged, "r") as f:
        for key in fs.recovered:
            np.testing.assert_array_equal(f[key]["x"][()], np.arange(3.0) + int(key[1:]))


def test_one_bad_group_never_stops_the_rest(tmp_path: Path) -> None:
    src = tmp_path / "worker_9.h5"
    keys = ["a", "b", "z"]
    write_pipeline_file(src, keys)
    with h5py.File(src, "a") as f:
        f.create_group("nested").create_group("inner")
        f["compound/data"] = np.zeros(3, dtype=[("x", "<i4"), ("y", "<f8")])
        f["with_attr/layout"] = np.ones((2, 2))
        f["with_attr/layout"].attrs["units"] = "m"
        f["null_attr"] = np.ones(2)  # a top-level dataset: not a result group
        f.create_group("empty_attr").attrs["nothing"] = h5py.Empty("f8")
        g = f.create_group("bad_digest")
        g["x"] = np.arange(3.0)
        g.attrs[DIGEST_ATTR] = np.bytes_(b"sha256:" + b"0" * 64)
        g = f.create_group("corrupt")
        g.create_dataset("big", data=np.arange(5000.0), chunks=(5000,), fletcher32=True)
        offset = g["big"].id.get_chunk_info(0).byte_offset
        f.create_group("unwritten").create_dataset("x", shape=(4,), dtype="f8")
        f["soft"] = h5py.SoftLink("/a")
    with open(src, "r+b") as fh:
        fh.seek(offset + 100)
        byte = fh.read(1)
        fh.seek(offset + 100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    report = salvage([src], tmp_path / "out", timeout=30)
    [fs] = report.files
    assert fs.verdict == "partial"
    # Trees, compound data and dataset attributes read completely: recovered (#14).
    assert sorted(fs.recovered) == sorted([*keys, "nested", "compound", "with_attr"])
    lost = dict(fs.lost)
    assert set(lost) == {"null_attr", "empty_attr", "bad_digest", "corrupt", "unwritten", "soft"}
    assert "dataset at the top level" in lost["null_attr"]
    assert "null dataspace" in lost["empty_attr"]
    assert "mismatch" in lost["bad_digest"]
    assert "unreadable" in lost["corrupt"]
    assert "no data was ever written" in lost["unwritten"]
    assert "SoftLink" in lost["soft"]
    assert report.exit_code == 1
    text = report.render_text()
    assert f"{src}:/soft: LOST " in text
    assert_pipeline_groups(merge_and_validate(tmp_path / "out", tmp_path), keys)


def test_schema_and_ignore(tmp_path: Path) -> None:
    src = tmp_path / "worker_3.h5"
    write_pipeline_file(src, ["a", "b"])
    with h5py.File(src, "a") as f:
        f["c/layout"] = np.ones((3, 3))
        f["c/aep"] = 1.0
        f["c"].attrs["status"] = "ok"
        f["c"].attrs["site"] = "x"
        f["meta"] = np.arange(3)
    schema = Schema(
        name="sweep",
        datasets={"layout": DatasetSpec(dtype="float", shape=("n", 2))},
        attrs={"status": AttrSpec(dtype="string", allowed=("ok",))},
    )
    out = tmp_path / "out"
    report = salvage([src], out, schema=schema, ignore=("init", "meta"), timeout=30)
    [fs] = report.files
    assert sorted(fs.recovered) == ["a", "b"]
    assert [k for k, _ in fs.lost] == ["c"]
    assert "schema 'sweep'" in fs.lost[0][1] and "SCHEMA_SHAPE" in fs.lost[0][1]
    with h5py.File(fs.shards[0], "r") as f:
        assert Schema.from_json(bytes(f.attrs["h5guard_schema"]).decode()) == schema
    merge_and_validate(out, tmp_path)


def test_oversized_group_is_lost_alone(tmp_path: Path) -> None:
    src = tmp_path / "worker_4.h5"
    write_pipeline_file(src, ["a", "c"])
    with h5py.File(src, "a") as f:
        f["b/huge"] = np.zeros(6_000_000)  # 48 MB, over the 32 MiB limit below
    report = salvage([src], tmp_path / "out", timeout=60, memory_limit=32 * 1024**2)
    [fs] = report.files
    assert sorted(fs.recovered) == ["a", "c"], report.render_text()
    assert [k for k, _ in fs.lost] == ["b"]
    assert "memory limit" in fs.lost[0][1]


def test_group_that_hangs_is_lost_and_the_rest_resumed(tmp_path: Path) -> None:
    # Only group b stores anything in the global heap; shrinking its first object's
    # size (the mutation of fixtures/hang.h5) makes libhdf5 spin forever reading it.
    src = tmp_path / "worker_5.h5"
    with h5py.File(src, "w") as f:
        for key in ("a", "b", "c"):
            f[f"{key}/layout"] = np.full((3, 2), float(ord(key)))
            f[key].attrs["status"] = np.bytes_(b"ok")
        f["b/names"] = np.array(["abcdefghijkl"], dtype=h5py.string_dtype())
    data = bytearray(src.read_bytes())
    gcol = data.find(b"GCOL")
    assert gcol > 0 and data[gcol + 24] == 12
    data[gcol + 24] = 1
    src.write_bytes(bytes(data))
    started = time.monotonic()
    report = salvage([src], tmp_path / "out", timeout=3)
    assert time.monotonic() - started < 3 * 2 + 10
    [fs] = report.files
    assert fs.verdict == "timeout", report.render_text()
    assert sorted(fs.recovered) == ["a", "c"]
    assert [k for k, _ in fs.lost] == ["b"] and "timeout" in fs.lost[0][1]
    assert "while reading group 'b'" in fs.note
    assert not list((tmp_path / "out").glob("*.partial"))
    merged = merge_and_validate(tmp_path / "out", tmp_path)
    with h5py.File(merged, "r") as f:
        assert sorted(f) == ["a", "c", "h5guard_summary"]
        np.testing.assert_array_equal(f["c/layout"][()], np.full((3, 2), float(ord("c"))))


@pytest.mark.skipif(not (FIXTURES / "hang.h5").exists(), reason="fixtures/hang.h5 not made")
def test_hanging_file_times_out(tmp_path: Path) -> None:
    src = tmp_path / "hang.h5"
    shutil.copyfile(FIXTURES / "hang.h5", src)
    before = digest(src)
    started = time.monotonic()
    report = salvage([src], tmp_path / "out", timeout=3)
    elapsed = time.monotonic() - started
    [fs] = report.files
    assert fs.verdict == "timeout", report.render_text()
    assert elapsed < 3 + 10, elapsed
    assert report.exit_code == 1
    assert all("timeout" in reason for _, reason in fs.lost)
    assert digest(src) == before
    assert not list((tmp_path / "out").glob("*.partial"))


# -- arguments and the report ----------------------------------------------------------
def test_bad_arguments_raise_one_line_errors(tmp_path: Path) -> None:
    src = tmp_path / "worker_1.h5"
    write_pipeline_file(src, ["a"])
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases: list[tuple[Any, Any, dict[str, Any], type[Exception], str]] = [
        ([tmp_path / "missing.h5"], tmp_path / "o1", {}, MergeSourceError, "found nothing"),
        ([], tmp_path / "o2", {}, MergeSourceError, "at least one"),
        ([src], afile, {}, MergeSourceError, "found a file"),
        ([tmp_path], tmp_path, {}, MergeSourceError, "apart from the inputs"),
        ([src], tmp_path / "o3", {"timeout": 0}, ValueError, "timeout"),
        ([src], tmp_path / "o4", {"memory_limit": 1024}, ValueError, "memory_limit"),
        ([src], tmp_path / "o5", {"workers": 0}, ValueError, "workers"),
    ]
    for paths, out, kw, exc, text in cases:
        with pytest.raises(exc, match=text) as info:
            salvage(paths, out, **kw)
        assert "\n" not in str(info.value)
    assert not (tmp_path / "o1").exists()


def test_unwritable_out_dir(tmp_path: Path) -> None:
    src = tmp_path / "worker_1.h5"
    write_pipeline_file(src, ["a"])
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        # Root ignores permission bits; /proc refuses new files even to root.
        target = Path("/proc/h5guard-salvage-out") if os.access(out, os.W_OK) else out
        with pytest.raises(MergeSourceError, match=r"writable|cannot create"):
            salvage([src], target)
    finally:
        out.chmod(0o755)


def test_report_text_json_and_progress(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "empty.h5").write_bytes(b"")
    write_pipeline_file(d / "good.h5", ["a"])
    with h5py.File(d / "good.h5", "a") as f:
        f["n"] = h5py.SoftLink("/a")
    calls: list[tuple[int, int]] = []
    report = salvage([d], tmp_path / "out", timeout=30, progress=lambda a, b: calls.append((a, b)))
    assert sorted(calls) == [(1, 2), (2, 2)]
    lines = report.render_text().splitlines()
    assert lines[0].startswith(f"{d / 'empty.h5'}: EMPTY: 0 group(s) recovered, 0 lost")
    assert lines[1].startswith(f"{d / 'good.h5'}: PARTIAL: 1 group(s) recovered, 1 lost")
    assert "converted 2 variable-length string(s)" in lines[1]
    assert lines[2].startswith(f"{d / 'good.h5'}:/n: LOST a SoftLink at the top level")
    assert lines[3].startswith("salvaged 1 group(s) from 2 file(s)")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["exit_code"] == 1 and data["totals"]["groups_recovered"] == 1
    assert data["totals"]["verdicts"]["empty"] == 1
    assert data["files"][1]["lost"][0]["key"] == "n"
