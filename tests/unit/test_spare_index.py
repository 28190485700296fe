"""The spare index (h5guard/_merge/spare.py): a merge into a segmented output changes the
index before the current one in place instead of copying the current one.

Every test merges real shards several times and reads the output back with plain h5py,
h5guard's readers and ``check``; the spare is only ever a file no output name points at,
and one a reader holds open, one with a second name, or one that is not this output's
is never written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from h5guard import check, compact, iter_results, merge
from h5guard._format import segments
from h5guard._merge import spare
from tests.crash._merge_child import expected_digest, output_index, write_shards


def expected(indices: range) -> dict[str, str]:
    return {f"g{i}": expected_digest(i) for i in indices}


def merged(shards: Path, out: Path, batch: range, **kwargs: object) -> None:
    write_shards(shards, batch, per_shard=3)
    report = merge(shards, out, workers=1, layout="segmented", **kwargs)  # type: ignore[arg-type]
    assert report.exit_code == 0, report.render_text()


def three_merges(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A file, its conversion into an index, one more merge: the spare exists now."""
    shards, out = tmp_path / "tmp", tmp_path / "out.h5"
    write_shards(shards, range(0, 4), per_shard=3)
    assert merge(shards, out, workers=1).exit_code == 0
    merged(shards, out, range(4, 7))
    merged(shards, out, range(7, 10))
    return shards, out, Path(spare.spare_path(str(out) + ".segments"))


def inode(path: Path) -> int:
    return os.stat(path).st_ino


def sha(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def assert_output(out: Path, keys: range) -> None:
    assert output_index(out) == expected(keys)  # plain h5py, through the links
    assert {r.key: r.digest for r in iter_results(out)} == expected(keys)
    report = check([out])
    assert report.ok, report.render_text()


def test_each_merge_changes_the_spare_in_place_and_keeps_the_old_output_as_the_next(
    tmp_path: Path,
) -> None:
    shards, out, spare_file = three_merges(tmp_path)
    assert_output(out, range(10))
    first, second = inode(spare_file), inode(out)
    assert first != second
    merged(shards, out, range(10, 13))
    # The output is now the old spare, brought up to date; the old output is the spare.
    assert (inode(out), inode(spare_file)) == (first, second)
    assert_output(out, range(13))
    merged(shards, out, range(13, 15))
    assert (inode(out), inode(spare_file)) == (second, first)
    assert_output(out, range(15))
    assert not Path(spare.partial_path(str(out) + ".segments")).exists()


def test_a_spare_a_reader_holds_open_is_not_written(tmp_path: Path) -> None:
    shards, out, spare_file = three_merges(tmp_path)
    merged(shards, out, range(10, 12))
    # A reader opens the output with plain h5py (libhdf5 takes its shared lock) and
    # keeps it open across the next two merges: its file becomes the spare.
    code = (
        "import h5py, sys\n"
        f"f = h5py.File({str(out)!r}, 'r')\n"
        "print(len(f), flush=True)\n"
        "sys.stdin.readline()\n"
        "print(max(k for k in f if not k.startswith('h5guard_')), flush=True)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as reader:
        assert reader.stdout is not None and reader.stdin is not None
        reader.stdout.readline()
        held = inode(out)
        held_fd = os.open(out, os.O_RDONLY)
        before = os.pread(held_fd, os.fstat(held_fd).st_size, 0)
        merged(shards, out, range(12, 14))
        assert inode(spare_file) == held
        merged(shards, out, range(14, 16))
        assert inode(out) != held  # copied, not the held file changed
        assert os.pread(held_fd, os.fstat(held_fd).st_size + 1, 0) == before
        os.close(held_fd)
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "g9"  # max of the reader's g0..g11
    assert_output(out, range(16))


def test_no_spare_is_written_where_readers_hold_no_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shards, out, spare_file = three_merges(tmp_path)
    monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "FALSE")
    old_spare = os.open(spare_file, os.O_RDONLY)
    before = os.pread(old_spare, 1 << 24, 0)
    merged(shards, out, range(10, 12))
    assert os.fstat(old_spare).st_ino != inode(out)
    assert os.pread(old_spare, 1 << 24, 0) == before
    os.close(old_spare)
    assert not spare_file.exists()  # none is kept either: it would never be used
    assert_output(out, range(12))


def test_a_spare_with_a_second_name_is_never_written(tmp_path: Path) -> None:
    shards, out, spare_file = three_merges(tmp_path)
    backup = tmp_path / "backup.h5"
    os.link(spare_file, backup)  # say, a user's `cp -l` of an earlier output
    before = sha(backup)
    merged(shards, out, range(10, 12))
    assert sha(backup) == before
    assert inode(out) != inode(backup)
    assert_output(out, range(12))


def test_a_spare_that_is_the_output_itself_is_dropped(tmp_path: Path) -> None:
    # What a merge killed between naming the old output the spare and renaming the new
    # index over the output leaves: both names on one file.
    shards, out, spare_file = three_merges(tmp_path)
    spare_file.unlink()
    os.link(out, spare_file)
    merged(shards, out, range(10, 12))
    assert_output(out, range(12))
    assert inode(spare_file) != inode(out)


@pytest.mark.parametrize("where", ["spare", "partial"])
def test_a_damaged_spare_or_a_killed_merges_partial_is_removed(tmp_path: Path, where: str) -> None:
    shards, out, spare_file = three_merges(tmp_path)
    segdir = str(out) + ".segments"
    if where == "spare":
        data = spare_file.read_bytes()
        spare_file.unlink()
        spare_file.write_bytes(data[: len(data) // 2])  # a new file: one name
    else:
        Path(spare.partial_path(segdir)).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 4096)
    merged(shards, out, range(10, 12))
    assert not Path(spare.partial_path(segdir)).exists()
    assert_output(out, range(12))
    merged(shards, out, range(12, 14))  # and the spare kept by that merge is used
    assert_output(out, range(14))


def test_the_spare_of_another_output_is_not_used(tmp_path: Path) -> None:
    _, out, spare_file = three_merges(tmp_path / "a")
    _, other, other_spare = three_merges(tmp_path / "b")
    spare_file.unlink()
    os.link(other_spare, spare_file)
    os.unlink(other_spare)  # one name again, but not this output's index
    merged(tmp_path / "a" / "tmp", out, range(10, 12))
    assert_output(out, range(12))
    assert_output(other, range(10))


def test_a_spare_planted_as_a_link_is_never_followed(tmp_path: Path) -> None:
    shards, out, spare_file = three_merges(tmp_path)
    victim = tmp_path / "victim.h5"
    victim.write_bytes(spare_file.read_bytes())
    spare_file.unlink()
    spare_file.symlink_to(victim)
    before = sha(victim)
    merged(shards, out, range(10, 12))
    assert sha(victim) == before
    assert_output(out, range(12))


def test_compact_removes_the_spare_with_the_segments(tmp_path: Path) -> None:
    _, out, spare_file = three_merges(tmp_path)
    assert spare_file.exists()
    compact(out)
    assert not Path(str(out) + ".segments").exists()
    assert_output(out, range(10))


def test_a_merge_that_adds_nothing_leaves_output_and_spare_alone(tmp_path: Path) -> None:
    shards, out, spare_file = three_merges(tmp_path)
    state = (sha(out), inode(out), inode(spare_file))
    time.sleep(0.01)
    report = merge(shards, out, workers=1, layout="segmented")
    assert report.exit_code == 0 and report.groups_added == 0
    assert (sha(out), inode(out), inode(spare_file)) == state


def recorded(out: Path) -> str:
    with h5py.File(out, "r") as f:
        return bytes(f.attrs[segments.SPARE_ATTR]).decode()


def listed_segments(index: Path) -> int:
    with h5py.File(index, "r") as f:
        return len(json.loads(bytes(f.attrs[segments.SEGMENTS_ATTR])))


def test_the_output_records_which_file_its_spare_is(tmp_path: Path) -> None:
    shards, out, spare_file = three_merges(tmp_path)
    for batch in (range(10, 12), range(12, 14)):
        st = os.stat(spare_file)
        fingerprint = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        assert recorded(out) == f"{fingerprint}:{listed_segments(spare_file)}"
        assert listed_segments(spare_file) == listed_segments(out) - 1
        merged(shards, out, batch)
        assert_output(out, range(batch.stop))


def test_a_spare_changed_since_it_was_recorded_is_checked_again_and_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shards, out, spare_file = three_merges(tmp_path)
    os.truncate(spare_file, spare_file.stat().st_size // 2)  # in place: the same inode
    with caplog.at_level(logging.INFO, logger=spare.__name__):
        merged(shards, out, range(10, 12))
    # Checked again (its size is not the one recorded): libhdf5 refuses it, so the index
    # was copied instead of written into the damaged file.
    assert f"{spare_file}: not used as the spare index" in caplog.text
    assert_output(out, range(12))
    merged(shards, out, range(12, 14))  # the spare that merge kept is used again
    assert_output(out, range(14))


def test_a_spare_touched_but_unchanged_is_checked_again_and_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shards, out, spare_file = three_merges(tmp_path)
    st = spare_file.stat()
    os.utime(spare_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not recorded(out).startswith(
        f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns + 10**9}:"
    )
    old = inode(spare_file)
    with caplog.at_level(logging.INFO, logger=spare.__name__):
        merged(shards, out, range(10, 12))
    assert "not used as the spare index" not in caplog.text
    assert inode(out) == old  # its content still proved it this output's earlier index
    assert_output(out, range(12))
