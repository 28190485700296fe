"""Segmented outputs: merges that add a segment and replace a small index of links.

Each test builds real shards, merges them with ``layout="segmented"`` (or the size
threshold), and reads the output back three ways: plain h5py through the external
links, h5guard's readers (which resolve segments themselves), and ``check``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from h5guard import (
    Code,
    MergeSourceError,
    ResultNotFoundError,
    UnreadableOutputError,
    WriteError,
    check,
    compact,
    iter_results,
    merge,
    plan_merge,
    read,
)
from h5guard._format import segments
from h5guard._format.names import SEGMENT_DIR_SUFFIX
from h5guard._merge import run, spare
from h5guard.report import Severity
from tests.crash._merge_child import expected_digest, output_index, write_shards

REPO = Path(__file__).resolve().parents[2]


def expected(indices: range) -> dict[str, str]:
    return {f"g{i}": expected_digest(i) for i in indices}


def segmented(tmp_path: Path, *batches: range) -> tuple[Path, Path]:
    """Merge each batch in turn, the first self-contained, the others segmented."""
    shards, out = tmp_path / "tmp", tmp_path / "out.h5"
    for n, batch in enumerate(batches):
        write_shards(shards, batch, per_shard=3)
        report = merge(shards, out, workers=1, layout="auto" if n == 0 else "segmented")
        assert report.exit_code == 0, report.render_text()
    return shards, out


def segment_files(out: Path) -> list[str]:
    """The segment directory's files, but for the spare index (tests/unit/test_spare_index.py)."""
    return sorted(set(os.listdir(str(out) + SEGMENT_DIR_SUFFIX)) - {spare.SPARE_NAME})


def test_a_segmented_merge_adds_a_segment_and_keeps_every_key_visible(tmp_path: Path) -> None:
    shards, out = segmented(tmp_path, range(0, 5))
    old_inode = os.stat(out).st_ino
    write_shards(shards, range(5, 9), per_shard=3)
    report = merge(shards, out, workers=1, layout="segmented")
    assert (report.groups_added, report.groups_total) == (4, 9)
    names = segment_files(out)
    assert len(names) == 2 and all(segments.is_segment_name(n) for n in names)
    # Segment 0 is the old output itself, by a second name: nothing was copied.
    seg0 = Path(str(out) + SEGMENT_DIR_SUFFIX) / names[0]
    assert os.stat(seg0).st_ino == old_inode
    # Plain h5py sees every key through the links.
    assert output_index(out) == expected(range(9))
    assert {r.key: r.digest for r in iter_results(out)} == expected(range(9))
    assert read(out, "g7").digest == expected_digest(7)
    report = check([out])
    assert report.ok, report.render_text()
    assert dict(report.files[0].groups) == expected(range(9))
    assert sum(len(s.groups) for s in report.files) == 9  # no group counted twice


def test_further_merges_stay_segmented_and_count_duplicates_across_segments(
    tmp_path: Path,
) -> None:
    shards, out = segmented(tmp_path, range(0, 4), range(4, 8))
    write_shards(shards, range(6, 12), per_shard=3)  # g6, g7 already merged
    report = merge(shards, out, workers=1)  # "auto": an index stays an index
    assert (report.groups_added, report.duplicates, report.groups_total) == (4, 2, 12)
    assert len(segment_files(out)) == 3
    assert {r.key: r.digest for r in iter_results(out)} == expected(range(12))
    with h5py.File(out, "r") as f:
        assert segments.is_index(f)
        assert int(f.attrs[segments.GROUPS_ATTR]) == 12


def test_a_conflict_against_a_segment_is_quarantined(tmp_path: Path) -> None:
    shards, out = segmented(tmp_path, range(0, 3), range(3, 6))
    write_shards(shards, [4], per_shard=3, variant=1)
    report = merge(shards, out, workers=1)
    assert [k for k, _ in report.conflicts] == ["g4"] and report.exit_code == 1
    assert read(out, "g4").digest == expected_digest(4)


def test_the_threshold_decides_and_single_files_stay_single_below_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shards, out = tmp_path / "tmp", tmp_path / "out.h5"
    write_shards(shards, range(3), per_shard=3)
    merge(shards, out, workers=1)
    write_shards(shards, range(3, 6), per_shard=3)
    merge(shards, out, workers=1)  # far below 64 MiB: one file
    assert not segments.is_index_path(out)
    monkeypatch.setenv(run.THRESHOLD_ENV, "1")
    write_shards(shards, range(6, 9), per_shard=3)
    merge(shards, out, workers=1)
    assert segments.is_index_path(out)
    assert output_index(out) == expected(range(9))


def test_layout_single_on_an_index_is_refused_and_a_bad_layout_is_a_value_error(
    tmp_path: Path,
) -> None:
    shards, out = segmented(tmp_path, range(0, 2), range(2, 4))
    write_shards(shards, range(4, 6), per_shard=3)
    with pytest.raises(MergeSourceError, match="compact"):
        merge(shards, out, workers=1, layout="single")
    with pytest.raises(ValueError, match="layout"):
        merge(shards, out, workers=1, layout="sharded")


def test_leftovers_of_an_interrupted_merge_are_removed_by_the_next(tmp_path: Path) -> None:
    shards, out = segmented(tmp_path, range(0, 3), range(3, 6))
    segdir = Path(str(out) + SEGMENT_DIR_SUFFIX)
    listed = set(segment_files(out))
    stray = segdir / segments.new_segment_name(7)
    stray.write_bytes(b"a segment a killed merge committed before its index")
    (segdir / (segments.new_segment_name(8) + ".partial")).write_bytes(b"half")
    (segdir / "notes.txt").write_text("the user's", encoding="utf-8")
    write_shards(shards, range(6, 8), per_shard=3)
    merge(shards, out, workers=1)
    left = set(segment_files(out))
    assert listed < left and "notes.txt" in left and stray.name not in left
    assert len(left - listed) == 2  # the new segment, and notes.txt
    assert check([out]).ok


def test_a_first_segmented_merge_never_adopts_another_outputs_segments(tmp_path: Path) -> None:
    shards, out = tmp_path / "tmp", tmp_path / "out.h5"
    write_shards(shards, range(3), per_shard=3)
    merge(shards, out, workers=1)
    segdir = Path(str(out) + SEGMENT_DIR_SUFFIX)
    segdir.mkdir()
    theirs = segdir / segments.new_segment_name(0)
    theirs.write_bytes(b"an output renamed away without its segment directory")
    write_shards(shards, range(3, 5), per_shard=3)
    with pytest.raises(MergeSourceError, match="no index of"):
        merge(shards, out, workers=1, layout="segmented")
    assert theirs.exists()
    os.environ[run.THRESHOLD_ENV] = "1"
    try:
        report = merge(shards, out, workers=1)  # "auto": falls back to one file
    finally:
        del os.environ[run.THRESHOLD_ENV]
    assert report.groups_total == 5 and not segments.is_index_path(out) and theirs.exists()


def test_a_segment_directory_that_is_a_link_is_refused(tmp_path: Path) -> None:
    shards, out = tmp_path / "tmp", tmp_path / "out.h5"
    write_shards(shards, range(2), per_shard=3)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, str(out) + SEGMENT_DIR_SUFFIX)
    with pytest.raises(WriteError, match="symbolic link"):
        merge(shards, out, workers=1, layout="segmented")
    assert list(elsewhere.iterdir()) == [] and not out.exists()


def test_h5guard_readers_never_follow_links_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out = segmented(tmp_path, range(0, 2), range(2, 4))
    index = tmp_path / "out.h5"
    # A file planted where libhdf5's search for a relative target looks first.
    planted = tmp_path / "planted"
    seg_rel = f"out.h5.segments/{segment_files(out)[1]}"
    (planted / "out.h5.segments").mkdir(parents=True)
    write_shards(planted / "x", range(2, 4), per_shard=3, variant=1)
    merge(planted / "x", planted / seg_rel, workers=1)
    monkeypatch.setenv("HDF5_EXT_PREFIX", str(planted))
    # libhdf5 itself now resolves the link to the planted file (docs/merge.md says so);
    # h5guard resolves the segment relative to the index and reads the right one.
    assert output_index(index)["g2"] == expected_digest(2, variant=1)
    assert read(index, "g2").digest == expected_digest(2)
    assert {r.key: r.digest for r in iter_results(index)} == expected(range(4))
    # A missing segment: h5guard does not fall back to the current directory.
    monkeypatch.delenv("HDF5_EXT_PREFIX")
    os.unlink(tmp_path / seg_rel)
    monkeypatch.chdir(planted)
    with pytest.raises(UnreadableOutputError, match="missing"):
        read(index, "g2")
    with pytest.raises(UnreadableOutputError, match="missing"):
        list(iter_results(index))
    assert read(index, "g0").digest == expected_digest(0)
    with pytest.raises(ResultNotFoundError):
        read(index, "nope")
    report = check([index])
    assert not report.ok
    assert any(f.code is Code.NOT_FOUND and seg_rel in f.path for f in report.findings)


def test_check_names_a_link_out_of_the_segment_directory(tmp_path: Path) -> None:
    _, out = segmented(tmp_path, range(0, 2), range(2, 4))
    victim = tmp_path / "victim.h5"
    with h5py.File(victim, "w") as f:
        f.create_group("g9")
    with h5py.File(out, "r+") as f:
        f["g9"] = h5py.ExternalLink(str(victim), "/g9")
        f.attrs[segments.GROUPS_ATTR] = np.int64(5)
    report = check([out])
    bad = [f for f in report.findings if f.obj == "/g9"]
    assert bad and bad[0].code is Code.UNEXPECTED_OBJECT and "not followed" in bad[0].message
    with pytest.raises(UnreadableOutputError, match="outside"):
        read(out, "g9")


def test_check_notices_a_segment_swapped_for_another_output(tmp_path: Path) -> None:
    _, out = segmented(tmp_path, range(0, 2), range(2, 4))
    other = tmp_path / "other"
    write_shards(other / "tmp", range(2, 4), per_shard=3, variant=1)
    merge(other / "tmp", other / "o.h5", workers=1)
    target = Path(str(out) + SEGMENT_DIR_SUFFIX) / segment_files(out)[1]
    size = target.stat().st_size
    os.replace(other / "o.h5", target)
    report = check([out])
    assert not report.ok
    codes = {f.code for f in report.findings}
    assert Code.DIGEST_MISMATCH in codes or (
        target.stat().st_size != size and Code.UNEXPECTED_OBJECT in codes
    )


def test_compact_makes_one_file_and_removes_the_segments(tmp_path: Path) -> None:
    shards, out = segmented(tmp_path, range(0, 3), range(3, 6), range(6, 8))
    before = {r.key: r.digest for r in iter_results(out)}
    assert compact(out) == 8
    assert not segments.is_index_path(out)
    assert not os.path.exists(str(out) + SEGMENT_DIR_SUFFIX)
    assert {r.key: r.digest for r in iter_results(out)} == before == expected(range(8))
    assert check([out]).ok
    assert compact(out) == 8  # one file already: nothing to do
    write_shards(shards, range(8, 10), per_shard=3)
    assert merge(shards, out, workers=1).groups_total == 10


def test_plan_merge_lists_an_index_keys_only_when_asked(tmp_path: Path) -> None:
    shards, out = segmented(tmp_path, range(0, 3), range(3, 5))
    write_shards(shards, range(4, 7), per_shard=3)
    plan = plan_merge(shards, out)
    assert (plan.new_groups, plan.duplicates, plan.output_groups) == (2, 1, 5)
    assert plan.listing is not None and plan.listing._keys is None  # not listed yet
    assert plan.output_keys == set(expected(range(5)))
    assert plan.keys == set(expected(range(7)))
    assert "output_keys" not in json.dumps(plan.to_dict())


def test_the_compact_command(tmp_path: Path) -> None:
    _, out = segmented(tmp_path, range(0, 2), range(2, 4))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "h5guard.cli", "compact", str(out), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["groups"] == 4
    proc = subprocess.run(
        [sys.executable, "-m", "h5guard.cli", "check", str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_readers_refuse_a_segment_directory_swapped_for_a_link(tmp_path: Path) -> None:
    _, out = segmented(tmp_path, range(0, 2), range(2, 4))
    segdir = Path(str(out) + SEGMENT_DIR_SUFFIX)
    moved = tmp_path / "moved"
    os.rename(segdir, moved)
    os.symlink(moved, segdir)
    with pytest.raises(UnreadableOutputError, match="link"):
        read(out, "g0")
    assert not check([out]).ok


def test_a_segments_keys_read_by_bytes_are_those_libhdf5_lists(tmp_path: Path) -> None:
    _, out = segmented(tmp_path, range(0, 5), range(5, 9), range(9, 20))
    segdir = Path(str(out) + SEGMENT_DIR_SUFFIX)
    names = segment_files(out)
    assert len(names) == 3
    for name in names:
        with segments.open_segment(str(segdir / name)) as f:
            listed = sorted(segments.segment_keys(f))
        assert segments.segment_keys_at(str(segdir / name)) == listed
    assert sorted(k for n in names for k in segments.segment_keys_at(str(segdir / n))) == sorted(
        expected(range(20))
    )
    broken = segdir / "seg-000009-0123456789ab.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\xff" * 512)
    with pytest.raises(UnreadableOutputError, match=r"seg-000009-0123456789ab\.h5"):
        segments.segment_keys_at(str(broken))
    broken.unlink()
    broken.symlink_to(segdir / names[0])
    with pytest.raises(UnreadableOutputError, match="link"):
        segments.segment_keys_at(str(broken))


def test_a_segments_keys_are_never_read_through_a_linked_segment_directory(
    tmp_path: Path,
) -> None:
    _, out = segmented(tmp_path, range(0, 5), range(5, 9))
    segdir = Path(str(out) + SEGMENT_DIR_SUFFIX)
    name = segment_files(out)[-1]
    moved = tmp_path / "elsewhere"
    segdir.rename(moved)
    segdir.symlink_to(moved)  # the same files, reached through a planted link
    with pytest.raises(UnreadableOutputError, match="link or no directory"):
        segments.segment_keys_at(str(segdir / name))


@pytest.mark.parametrize("neighbours", [3, 70], ids=["stat-each", "one-scandir"])
def test_check_of_a_directory_finds_the_index_among_other_files(
    tmp_path: Path, neighbours: int
) -> None:
    """From 64 files in one directory, the segment directories beside them are found by
    one scandir instead of a stat each: both ways the index stands for its segments."""
    _, out = segmented(tmp_path, range(0, 4), range(4, 8))
    for i in range(neighbours):
        (tmp_path / f"log-{i:03d}.h5").write_bytes(b"a worker's log, not HDF5\n")
    report = check([tmp_path], workers=1)
    summary = report.summary(str(out))
    assert summary is not None and sorted(summary.groups) == sorted(expected(range(8)))
    assert {f.path for f in report.findings if f.severity >= Severity.ERROR} == {
        str(tmp_path / f"log-{i:03d}.h5") for i in range(neighbours)
    }
