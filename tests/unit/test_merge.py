"""The merge: what ends up in the output, in quarantine, and what is left alone."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from h5guard import (
    MergeSourceError,
    Schema,
    ShardWriter,
    UnreadableOutputError,
    __version__,
    check,
    merge,
    plan_merge,
    record_output,
)
from h5guard._atomic import writer_tag
from h5guard._format.names import FORMAT_ATTR, OUTPUT_FORMAT, SCHEMA_ATTR, VERSION_ATTR
from h5guard._merge import verify
from h5guard._merge.output import GROUPS_ATTR, LAST_MERGE_ATTR
from h5guard._sandbox import DEFAULT_MEMORY_LIMIT, SandboxResult
from tests.crash._merge_child import (
    expected_digest,
    make_group,
    output_index,
    sha256_file,
    write_shards,
)
from tests.unit._verify_helper import copied

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SCHEMA = Schema.from_dict(
    {
        "name": "layouts",
        "datasets": {
            "layout": {"dtype": "float", "shape": ["n", 2], "finite": True},
            "aep": {"dtype": "float", "shape": []},
        },
        "attrs": {"status": {"dtype": "string", "allowed": ["ok", "failed"]}},
    }
)


def expected(indices: range | list[int], *, big: int = 0, variant: int = 0) -> dict[str, str]:
    return {f"g{i}": expected_digest(i, big=big, variant=variant) for i in indices}


def h5_files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.is_file() and p.suffix == ".h5"}


def quarantine_note(directory: Path, name: str) -> dict[str, object]:
    assert (directory / "quarantine" / name).is_file(), f"{name} not in quarantine"
    note: dict[str, object] = json.loads(
        (directory / "quarantine" / f"{name}.json").read_text(encoding="utf-8")
    )
    return note


def flip_byte_of(path: Path, needle: bytes) -> None:
    """Flip one bit inside the stored bytes of a known array (guaranteed to be data)."""
    raw = bytearray(path.read_bytes())
    needle = needle[:512]  # chunked data is stored in pieces; its start is contiguous
    at = raw.find(needle)
    assert at >= 0, "array bytes not found in the file"
    raw[at + len(needle) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def dead_partial_name(directory: Path) -> Path:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = writer_tag().rsplit("-", 1)[0]
    return directory / f"shard-20200101T000000-{host}-{child.pid}-0badf00d.h5.partial"


def victim(directory: Path, prefix: str, first: int, *, big: int = 0) -> Path:
    """A committed shard of groups that exist nowhere else, to be damaged."""
    [path] = write_shards(directory, range(first, first + 3), per_shard=3, big=big, prefix=prefix)
    return path


# -- 1. a directory of good and bad files -----------------------------------------------
def test_mixed_directory_merges_good_and_quarantines_bad(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out.h5"
    with ShardWriter(tmp, schema=SCHEMA, commit_every=5) as w:
        for i in range(12):
            w.add(f"g{i}", *make_group(i))
    good = {p.name for p in w.committed}

    (tmp / "empty.h5").write_bytes(b"")
    cut = victim(tmp, "cut", 100)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    flipped = victim(tmp, "flip", 200)
    flip_byte_of(flipped, make_group(201)[0]["layout"].tobytes())  # compact, in a header
    flipped_big = victim(tmp, "flipbig", 300, big=6000)
    flip_byte_of(flipped_big, make_group(302, big=6000)[0]["wake"].tobytes())  # chunked
    (tmp / "notes.h5").write_text("worker 3 finished\n" * 40, encoding="utf-8")
    with ShardWriter(tmp, prefix="wrongschema") as w:  # (n, 3) where the schema says (n, 2)
        w.add("g400", {"layout": np.zeros((5, 3)), "aep": np.asarray(1.0)}, {"status": "ok"})
    wrong = w.committed[0]
    shutil.copy(FIXTURES / "open_for_write.h5", tmp / "open_for_write.h5")
    stale = dead_partial_name(tmp)
    stale.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 600)
    live_writer = ShardWriter(tmp, prefix="live")
    live_writer.add("g500", *make_group(500))
    [live] = list(tmp.glob("live-*.journal"))
    partial_bytes = {stale: stale.read_bytes(), live: live.read_bytes()}
    before = h5_files(tmp)
    try:
        report = merge(tmp, out, schema=SCHEMA, workers=1)
        # Read while the writer still runs, so that its partial counts as live.
        status = plan_merge(tmp, out, workers=1)
        # Partial files are never touched, and reported stale or live.
        for path, data in partial_bytes.items():
            assert path.read_bytes() == data
    finally:
        live_writer.discard()

    assert output_index(out) == expected(range(12))
    assert report.groups_added == 12 and report.shards_merged == len(good) == 3
    assert report.exit_code == 1
    bad = {
        "empty.h5": "EMPTY",
        cut.name: "TRUNCATED",
        flipped.name: "OBJECT_UNREADABLE",
        flipped_big.name: "OBJECT_UNREADABLE",
        "notes.h5": "NOT_HDF5",
        wrong.name: "SCHEMA_SHAPE",
        "open_for_write.h5": "OPEN_FOR_WRITE",
    }
    assert {Path(q.path).name for q in report.quarantined} == set(bad)
    for name, code in bad.items():
        note = quarantine_note(tmp, name)
        assert note["file"] == name
        reasons = note["reasons"]
        assert isinstance(reasons, list) and any(code in r for r in reasons), (name, reasons)
    # Nothing was deleted that was not merged: every file is in the output, in
    # quarantine, or still here.
    assert before == good | set(bad)
    assert h5_files(tmp) == set()
    assert report.shards_deleted == len(good)
    assert report.stale_partials == (str(stale),)
    assert report.live_partials == (str(live),)
    assert any(f.code == "PARTIAL_FILE" and f.path == str(stale) for f in report.findings)
    assert status.stale_partials == (str(stale),) and status.live_partials == (str(live),)
    # A dead writer's partial without a journal: its results are lost, and said so.
    assert len(report.lost) == 1 and str(stale) in report.lost[0]
    assert f"LOST: {stale}" in report.render_text()
    assert status.lost == report.lost and status.exit_code == 1


def test_readable_foreign_files_are_refused_and_left_alone(tmp_path: Path) -> None:
    """A plain-h5py worker file is the user's data: never moved, never merged digest-less."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    write_shards(tmp, range(3), per_shard=3)
    shutil.copy(FIXTURES / "foreign.h5", tmp / "worker_17.h5")
    before = {p.name: p.read_bytes() for p in tmp.iterdir()}
    for schema in (None, SCHEMA):
        with pytest.raises(MergeSourceError, match=r"worker_17\.h5.*h5guard salvage"):
            merge(tmp, tmp_path / "out.h5", schema=schema, workers=1)
        with pytest.raises(MergeSourceError, match="h5guard salvage"):
            plan_merge(tmp, tmp_path / "out.h5", schema=schema, workers=1)
    # Only the merge's own lock of the directory (.h5guard-merge.lock*) is new.
    after = {p.name: p.read_bytes() for p in tmp.iterdir()}
    assert {n: b for n, b in after.items() if not n.startswith(".h5guard-merge.lock")} == before
    assert not (tmp_path / "out.h5").exists()


def test_wrong_schema_against_schema_embedded_in_output(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out.h5"
    with ShardWriter(tmp, schema=SCHEMA) as w:
        w.add("g0", *make_group(0))
    merge(tmp, out, workers=1)
    with h5py.File(out, "r") as f:
        assert Schema.from_json(bytes(f.attrs[SCHEMA_ATTR]).decode()) == SCHEMA
    with ShardWriter(tmp, prefix="noschema") as w:  # no schema of its own, breaks the output's
        w.add("g1", {"layout": np.zeros((4, 3)), "aep": np.asarray(1.0)}, {"status": "maybe"})
        w.add("g2", *make_group(2))
    [wrong] = w.committed
    report = merge(tmp, out, workers=1)
    assert [Path(q.path).name for q in report.quarantined] == [wrong.name]
    reasons = " ".join(report.quarantined[0].reasons)
    assert "SCHEMA_SHAPE" in reasons and "SCHEMA_VALUE" in reasons
    assert output_index(out) == expected([0])  # g2 only lived in the bad shard: kept aside


# -- duplicates and conflicts ------------------------------------------------------------
def test_duplicates_are_dropped_and_counted(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out.h5"
    write_shards(tmp, range(6), per_shard=3)
    merge(tmp, out, workers=1)
    before = sha256_file(out)
    write_shards(tmp, range(4), per_shard=2, prefix="again")  # same keys, same content
    write_shards(tmp, [2, 3], per_shard=2, prefix="twice")  # and once more
    report = merge(tmp, out, workers=1)
    assert (report.groups_added, report.duplicates, report.conflicts) == (0, 6, ())
    assert report.exit_code == 0 and report.shards_deleted == 3
    assert sha256_file(out) == before  # nothing new: the output is not rewritten
    assert h5_files(tmp) == set()


def test_conflict_keeps_output_version_and_quarantines_shard(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out.h5"
    write_shards(tmp, range(3), per_shard=3)
    merge(tmp, out, workers=1)
    [other] = write_shards(tmp, [1, 7], per_shard=2, variant=1, prefix="rerun")
    report = merge(tmp, out, workers=1)
    assert report.conflicts == (("g1", str(other)),)
    assert report.exit_code == 1
    assert report.groups_added == 1  # g7 is new and merged; the shard is kept aside
    want = expected(range(3)) | {"g7": expected_digest(7, variant=1)}
    assert output_index(out) == want
    note = quarantine_note(tmp, other.name)
    assert "CONFLICT" in str(note["reasons"]) and "g1" in str(note["reasons"])
    assert "conflict: group 'g1'" in report.render_text()
    assert merge(tmp, out, workers=1).exit_code == 0  # the conflict does not come back


def test_conflict_between_two_new_shards_first_one_wins(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out.h5"
    [first] = write_shards(tmp, [0, 1], per_shard=2, prefix="a")
    [second] = write_shards(tmp, [1, 2], per_shard=2, variant=1, prefix="b")
    report = merge(tmp, out, workers=1)
    assert report.conflicts == (("g1", str(second)),)
    assert output_index(out) == {
        "g0": expected_digest(0),
        "g1": expected_digest(1),
        "g2": expected_digest(2, variant=1),
    }
    assert not first.exists() and quarantine_note(tmp, second.name)


# -- keep-shards, idempotence, provenance ----------------------------------------------
def test_keep_shards_then_remerge_is_a_noop(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out.h5"
    shards = write_shards(tmp, range(8), per_shard=4)
    first = merge(tmp, out, keep_shards=True, workers=1)
    assert first.groups_added == 8 and first.shards_deleted == 0
    assert all(p.exists() for p in shards)
    digest, stat = sha256_file(out), out.stat()
    again = merge(tmp, out, keep_shards=True, workers=1)
    assert (again.groups_added, again.duplicates, again.groups_total) == (0, 8, 8)
    assert sha256_file(out) == digest and out.stat().st_mtime_ns == stat.st_mtime_ns
    final = merge(tmp, out, workers=1)
    assert final.shards_deleted == 2 and final.groups_added == 0
    assert sha256_file(out) == digest
    empty = merge(tmp, out, workers=1)
    assert (empty.shards_merged, empty.groups_added, empty.exit_code) == (0, 0, 0)
    assert sha256_file(out) == digest
    assert not Path(f"{out}.partial").exists()


def test_provenance_attributes(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out.h5"
    with ShardWriter(tmp, schema=SCHEMA) as w:
        for i in range(5):
            w.add(f"g{i}", *make_group(i))
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    merge(tmp, out, root_attrs={"campaign": "iea37", "runs": 5}, workers=1)
    with h5py.File(out, "r") as f:
        assert bytes(f.attrs[FORMAT_ATTR]).decode() == OUTPUT_FORMAT
        assert bytes(f.attrs[VERSION_ATTR]).decode() == __version__
        assert Schema.from_json(bytes(f.attrs[SCHEMA_ATTR]).decode()) == SCHEMA
        assert int(f.attrs[GROUPS_ATTR]) == 5
        stamp = dt.datetime.fromisoformat(bytes(f.attrs[LAST_MERGE_ATTR]).decode())
        assert start <= stamp <= dt.datetime.now(dt.UTC)
        assert f.attrs["campaign"] == b"iea37" and int(f.attrs["runs"]) == 5
    write_shards(tmp, range(5, 7), per_shard=2)
    merge(tmp, out, workers=1)
    with h5py.File(out, "r") as f:
        assert int(f.attrs[GROUPS_ATTR]) == 7 == len(f) - 1  # and the summary
        assert f.attrs["campaign"] == b"iea37"  # kept from the earlier merge
    with pytest.raises(ValueError, match="reserved prefix"):
        merge(tmp, out, root_attrs={"h5guard_groups": 1}, workers=1)


# -- sources and outputs that cannot be used --------------------------------------------
def test_missing_directory_or_output_is_a_merge_source_error(tmp_path: Path) -> None:
    with pytest.raises(MergeSourceError, match="expected a directory"):
        merge(tmp_path / "nope", tmp_path / "out.h5")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    write_shards(tmp, range(2), per_shard=2)
    with pytest.raises(MergeSourceError, match="no output is recorded"):
        merge(tmp)
    # Planning only reads: without an output it plans as for a first merge.
    first = plan_merge(tmp, workers=1)
    assert (first.output, first.output_groups, first.new_groups) == ("", 0, 2)
    with pytest.raises(MergeSourceError, match="existing directory"):
        merge(tmp, tmp_path / "missing-dir" / "out.h5")
    with pytest.raises(MergeSourceError, match="found a directory"):
        merge(tmp, tmp_path)
    assert len(h5_files(tmp)) == 1  # nothing touched
    record_output(tmp, tmp_path / "recorded.h5")
    report = merge(tmp, workers=1)
    assert report.output == str(tmp_path / "recorded.h5")
    assert output_index(tmp_path / "recorded.h5") == expected(range(2))


def _damaged_outputs(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "src"
    src.mkdir()
    good = tmp_path / "good.h5"
    write_shards(src, range(4), per_shard=4, big=6000)
    merge(src, good, workers=1)
    data = good.read_bytes()
    cases = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "text": b"definitely not hdf5\n" * 100,
    }
    made = {}
    for name, content in cases.items():
        made[name] = tmp_path / f"{name}.h5"
        made[name].write_bytes(content)
    made["foreign"] = tmp_path / "foreign.h5"
    shutil.copy(FIXTURES / "foreign.h5", made["foreign"])
    # One bit of the root group's metadata: the header checksum no longer matches.
    root = bytearray(data)
    at = root.find(b"OHDR")  # the first object header is the root group's
    assert at >= 0
    root[at + 6] ^= 0x01
    made["header"] = tmp_path / "header.h5"
    made["header"].write_bytes(bytes(root))
    return made


def test_damaged_output_is_refused_and_untouched(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    write_shards(tmp, range(10, 13), per_shard=3)
    (tmp / "junk.h5").write_bytes(b"junk" * 10)
    shards = h5_files(tmp)
    for name, out in _damaged_outputs(tmp_path).items():
        before = sha256_file(out)
        with pytest.raises(UnreadableOutputError, match=r"left untouched|h5guard output") as err:
            merge(tmp, out, workers=1)
        assert str(out) in str(err.value), name
        assert sha256_file(out) == before, name
        assert not Path(f"{out}.partial").exists(), name
        assert h5_files(tmp) == shards, name  # no shard deleted or quarantined
        assert not (tmp / "quarantine").exists(), name


# -- bugs found while writing these tests -------------------------------------------------
def test_output_inside_the_shard_directory_is_not_a_shard(tmp_path: Path) -> None:
    """Regression: the output was listed as a shard of its own directory and deleted."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp / "all.h5"
    write_shards(tmp, range(4), per_shard=2)
    merge(tmp, out, workers=1)
    (tmp / "all.h5.partial").write_bytes(b"left by a killed merge")
    again = merge(tmp, out, workers=1)
    assert out.exists(), "the merge deleted its own output"
    assert output_index(out) == expected(range(4))
    assert again.stale_partials == () and again.shards_merged == 0
    assert not (tmp / "all.h5.partial").exists()


def test_quarantine_never_overwrites_an_earlier_quarantined_file(tmp_path: Path) -> None:
    """Regression: a second bad file of the same name replaced the first in quarantine."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out.h5"
    (tmp / "worker.h5").write_bytes(b"first broken file")
    merge(tmp, out, workers=1)
    (tmp / "worker.h5").write_bytes(b"second broken file")
    report = merge(tmp, out, workers=1)
    [moved] = report.quarantined
    assert Path(moved.path).read_bytes() == b"second broken file"
    assert (tmp / "quarantine" / "worker.h5").read_bytes() == b"first broken file"
    note = json.loads(Path(moved.path + ".json").read_text(encoding="utf-8"))
    assert note["file"] == "worker.h5" and "NOT_HDF5" in note["reasons"][0]
    assert os.path.dirname(moved.path) == str(tmp / "quarantine")


def test_partial_of_a_writer_on_another_host_is_not_called_stale(tmp_path: Path) -> None:
    """Regression: a partial whose owner cannot be checked (another host of a shared file
    system) was reported as 'its writer died; batch lost' although it may be in progress."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    elsewhere = tmp / "shard-20200101T000000-node17-4242-0a0b0c0d.h5.partial"
    elsewhere.write_bytes(b"being written on node17")
    dead = dead_partial_name(tmp)
    dead.write_bytes(b"left by a dead writer")
    report = merge(tmp, tmp_path / "out.h5", workers=1)
    assert report.live_partials == (str(elsewhere),)
    assert report.stale_partials == (str(dead),)
    assert elsewhere.read_bytes() == b"being written on node17"
    assert dead.read_bytes() == b"left by a dead writer"


def test_verification_helper_shares_the_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big verification is shared with a sandbox child (the sandbox's one protocol):
    a wrong digest in either half is found, and a helper killed mid-verification means
    this process verifies its half instead."""
    out, added = copied(tmp_path, 40)
    keys = sorted(added)
    monkeypatch.setattr(verify, "PARALLEL_VERIFY_MIN", 2)
    calls: list[str] = []
    size = os.path.getsize(out)
    with verify.helper(len(added), timeout=60, memory_limit=DEFAULT_MEMORY_LIMIT + size) as box:
        assert box is not None
        real_call = box.call

        def counting_call(target: str, *args: Any) -> SandboxResult:
            calls.append(target)
            return real_call(target, *args)

        monkeypatch.setattr(box, "call", counting_call)
        wrong = dict(added)
        for key in (keys[3], keys[30]):  # one in this process's half, one in the helper's
            wrong[key] = (added[key][0], "sha256:" + "0" * 64)
        problems = verify.verify_copy(out, wrong, helper=box)
        # A wrong digest in this process's half and one in the helper's half are both found.
        assert sorted(p.obj.lstrip("/") for p in problems) == [keys[3], keys[30]]
        assert verify.verify_copy(out, added, helper=box) == []
        # The helper killed mid-verification: this process verifies its half instead.
        monkeypatch.setattr(verify, "HELPER_TARGET", "tests.unit._verify_helper:dies")
        wrong = dict(added)
        wrong[keys[35]] = (added[keys[35]][0], "sha256:" + "1" * 64)
        problems = verify.verify_copy(out, wrong, helper=box)
        assert [p.obj.lstrip("/") for p in problems] == [keys[35]]
    assert len(calls) == 3


def test_file_attrs_reach_the_output_per_shard(tmp_path: Path) -> None:
    """Regression: worker-level attributes were stored in each shard, then dropped."""
    tmp = tmp_path / "tmp"
    out = tmp_path / "out.h5"
    for worker in (1, 2):
        with ShardWriter(
            tmp, prefix=f"w{worker}", file_attrs={"worker": worker, "host": "n1"}
        ) as w:
            w.add(f"g{worker}", *make_group(worker))
    assert merge(tmp, out, workers=1).exit_code == 0
    with ShardWriter(tmp, prefix="w3", file_attrs={"worker": 3}) as w:  # an incremental merge
        w.add("g3", *make_group(3))
    assert merge(tmp, out, workers=1).exit_code == 0
    with h5py.File(out, "r") as f:
        sources = json.loads(bytes(f.attrs["h5guard_sources"]).decode())
    assert sorted(v["worker"] for v in sources.values()) == [1, 2, 3]
    assert all(name.endswith(".h5") for name in sources)
    assert {v.get("host") for v in sources.values()} == {"n1", None}
    assert check([out]).ok
