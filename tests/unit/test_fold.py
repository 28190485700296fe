"""Folding (h5guard/_merge/fold.py): a merge copies the output's last small segments into
one, so that an output merged many times lists few segments.

The policy (:func:`fold.plan`) is a pure function and is tested on its own; every other
test merges real shards many times with a small fanout and reads the output back with
plain h5py through the links, h5guard's readers, ``to_dataframe`` and ``check``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from h5guard import check, compact, iter_results, merge, read, to_dataframe
from h5guard._atomic import DEFAULT_MIN_FREE
from h5guard._format import segments
from h5guard._merge import fold, spare
from tests.crash._merge_child import expected_digest, output_index, write_shards
from tests.hostile._helpers import small_fs


def seg(level: int, size: int = 1000, n: int = 0) -> segments.Segment:
    return segments.Segment(segments.new_segment_name(n), size, 10, "sha256:x", level)


def levels(*ls: int) -> list[segments.Segment]:
    return [seg(level, n=i) for i, level in enumerate(ls)]


@pytest.mark.parametrize(
    ("listed", "width", "expected"),
    [
        ((0, 0), 3, None),  # too few
        ((0, 0, 0), 3, fold.FoldPlan(0, 1)),
        ((1, 0, 0), 3, None),  # the last three are not all level 0
        ((1, 0, 0, 0), 3, fold.FoldPlan(1, 1)),  # one level 1 before: not yet a run of 2
        ((1, 1, 0, 0, 0), 3, fold.FoldPlan(0, 2)),  # completes two level-1 to three
        ((2, 1, 1, 0, 0, 0), 3, fold.FoldPlan(1, 2)),  # one level 2 before: stops there
        ((2, 2, 1, 1, 0, 0, 0), 3, fold.FoldPlan(0, 3)),  # cascades through every level
        ((0, 1, 1, 0, 0, 0), 3, fold.FoldPlan(1, 2)),
        ((0, 0, 0, 0, 0), 0, None),  # folding switched off
        ((5, 0, 0), 2, fold.FoldPlan(1, 1)),
    ],
)
def test_the_plan_folds_the_last_run_and_cascades_over_complete_runs_above_it(
    listed: tuple[int, ...], width: int, expected: fold.FoldPlan | None
) -> None:
    assert fold.plan(levels(*listed), width, 10**9) == expected


def test_the_plan_never_folds_more_than_the_byte_limit() -> None:
    small = [seg(1, 100, 0), seg(1, 100, 1), seg(0, 10, 2), seg(0, 10, 3), seg(0, 10, 4)]
    assert fold.plan(small, 3, 230) == fold.FoldPlan(0, 2)
    assert fold.plan(small, 3, 229) == fold.FoldPlan(2, 1)  # the level-1 run stays
    assert fold.plan(small, 3, 29) is None  # even the level-0 run is too big


@pytest.mark.parametrize("raw", ["1", "-3", "sixteen", "2.5"])
def test_a_bad_fanout_in_the_environment_is_refused_with_its_name(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fold.FANOUT_ENV, raw)
    with pytest.raises(ValueError, match=rf"\$H5GUARD_SEGMENT_FANOUT: expected .*{raw!r}"):
        fold.fanout()


def test_the_fanout_defaults_to_16_and_0_switches_folding_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(fold.FANOUT_ENV, raising=False)
    assert fold.fanout() == fold.DEFAULT_FANOUT == 16
    monkeypatch.setenv(fold.FANOUT_ENV, "0")
    assert fold.fanout() == 0


# -- real merges ---------------------------------------------------------------------


def expected(indices: range) -> dict[str, str]:
    return {f"g{i}": expected_digest(i) for i in indices}


def index_of(out: Path) -> segments.Index:
    with h5py.File(out, "r", locking=False) as f:
        return segments.open_index(f, str(out))


def assert_output(out: Path, keys: range) -> None:
    assert output_index(out) == expected(keys)  # plain h5py, through the links
    assert {r.key: r.digest for r in iter_results(out)} == expected(keys)
    report = check([out])
    assert report.ok, report.render_text()


class Merges:
    """One segmented output and the shards of two results each merged into it in turn."""

    def __init__(self, root: Path) -> None:
        self.shards, self.out = root / "tmp", root / "out.h5"
        self.n = 2
        write_shards(self.shards, range(2), per_shard=2)
        assert merge(self.shards, self.out, workers=1).exit_code == 0

    def next(self, count: int = 2) -> None:
        write_shards(self.shards, range(self.n, self.n + count), per_shard=2)
        self.n += count
        report = merge(self.shards, self.out, workers=1, layout="segmented")
        assert report.exit_code == 0, report.render_text()

    @property
    def segdir(self) -> Path:
        return Path(str(self.out) + ".segments")

    def on_disk(self) -> set[str]:
        return {p.name for p in self.segdir.iterdir() if segments.is_segment_name(p.name)}


def test_many_merges_keep_few_segments_and_every_result_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fold.FANOUT_ENV, "3")
    m = Merges(tmp_path)
    most = 0
    seen_levels: set[int] = set()
    for _ in range(30):
        m.next()
        assert_output(m.out, range(m.n))
        index = index_of(m.out)
        most = max(most, len(index.segments))
        seen_levels.update(s.level for s in index.segments)
        # Each level holds fewer than a fanout, the last level-0 run up to a fanout.
        for level in seen_levels - {0}:
            assert sum(s.level == level for s in index.segments) <= 2
        assert sum(s.level == 0 for s in index.segments) <= 3
    assert seen_levels >= {0, 1, 2, 3}  # 31 segments at fanout 3 fold up to level 3
    assert most <= 3 + 2 * 3
    # Without folding the output would list 31 segments.
    assert len(index_of(m.out).segments) < 10


def test_a_fold_lists_one_segment_holding_the_folded_groups_and_the_next_merge_removes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fold.FANOUT_ENV, "3")
    m = Merges(tmp_path)
    m.next()
    m.next()  # segments 0, 1, 2: level 0, due at the next merge
    before = index_of(m.out)
    assert [s.level for s in before.segments] == [0, 0, 0]
    m.next()
    after = index_of(m.out)
    assert [s.level for s in after.segments] == [1, 0]
    folded = after.segments[0]
    assert folded.groups == sum(s.groups for s in before.segments) == 6
    with h5py.File(after.segment_path(folded.name), "r") as f:
        assert sorted(k for k in f if not k.startswith("h5guard_")) == sorted(
            f"g{i}" for i in range(6)
        )
    # The folded segments stay for readers of the old output until the next merge.
    old = {s.name for s in before.segments}
    assert old <= m.on_disk()
    m.next()
    assert not old & m.on_disk()
    assert m.on_disk() == {s.name for s in index_of(m.out).segments} | {
        s.name for s in after.segments
    }
    assert_output(m.out, range(m.n))


def test_after_a_fold_the_spare_is_still_brought_up_to_date_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(fold.FANOUT_ENV, "3")
    m = Merges(tmp_path)
    for _ in range(3):
        m.next()  # the third one folds
    spare_file = Path(spare.spare_path(str(m.segdir)))
    old_output = os.stat(spare_file).st_ino
    caplog.set_level(logging.INFO, logger="h5guard")
    for _ in range(2):
        m.next()
        assert os.stat(m.out).st_ino == old_output  # the spare became the output
        old_output = os.stat(spare_file).st_ino
        assert_output(m.out, range(m.n))
    assert "not used as the spare" not in caplog.text
    assert "the index is copied" not in caplog.text


def test_a_fold_into_a_copied_index_without_a_spare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fold.FANOUT_ENV, "3")
    monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "FALSE")  # no spare is ever kept
    m = Merges(tmp_path)
    for _ in range(9):
        m.next()
        assert not Path(spare.spare_path(str(m.segdir))).exists()
    assert [s.level for s in index_of(m.out).segments] == [2, 0]  # the ninth merge cascades
    assert_output(m.out, range(m.n))


def test_read_to_dataframe_and_compact_see_the_folded_groups_as_they_went_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fold.FANOUT_ENV, "2")
    m = Merges(tmp_path)
    for _ in range(6):
        m.next()
    assert max(s.level for s in index_of(m.out).segments) >= 2
    table = to_dataframe(m.out, verify=True)
    assert sorted(table.index) == sorted(f"g{i}" for i in range(m.n))
    assert sorted(table["seed"].tolist()) == list(range(m.n))
    for i in (0, 5, m.n - 1):
        result = read(m.out, f"g{i}")
        assert result.digest == expected_digest(i)
        assert result.attrs["seed"] == i
        assert result.datasets["layout"].shape[1] == 2
    assert compact(m.out) == m.n
    assert not m.segdir.exists()
    assert_output(m.out, range(m.n))


# A reader in its own process: opens the output, says so, reads every key once told to.
READER = """
import sys, h5py
f = h5py.File(sys.argv[1], "r")
print("open", flush=True)
sys.stdin.readline()
print(" ".join(str(int(f[f"g{i}"].attrs["seed"])) for i in range(int(sys.argv[2]))), flush=True)
"""


def test_a_reader_of_the_output_from_before_a_fold_reads_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fold.FANOUT_ENV, "3")
    m = Merges(tmp_path)
    m.next()
    m.next()
    # Plain h5py in another process, holding the old index open.
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(m.out), "6"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None and reader.stdin is not None
    try:
        assert reader.stdout.readline().strip() == "open"
        m.next()  # folds every segment the open index lists
        assert [s.level for s in index_of(m.out).segments] == [1, 0]
        out, _ = reader.communicate("go\n", timeout=60)
    finally:
        reader.kill()
    assert out.split() == [str(i) for i in range(6)]  # through the old links: still there
    assert_output(m.out, range(m.n))


def test_a_segment_that_does_not_verify_is_not_folded_and_the_merge_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(fold.FANOUT_ENV, "3")
    m = Merges(tmp_path)
    m.next()
    m.next()
    index = index_of(m.out)
    victim = index.segment_path(index.segments[1].name)
    # Flip the bytes of one dataset's values in place (same size, same layout).
    with h5py.File(victim, "r") as f:
        key = next(k for k in f if not k.startswith("h5guard_"))
        values = f[key]["layout"][()].tobytes()
    raw = Path(victim).read_bytes()
    assert raw.count(values) == 1
    Path(victim).write_bytes(raw.replace(values, bytes(b ^ 0xFF for b in values)))
    caplog.set_level(logging.WARNING, logger="h5guard")
    m.next()
    assert "not folded, the merge goes on without" in caplog.text
    after = index_of(m.out)
    assert [s.level for s in after.segments] == [0, 0, 0, 0]  # nothing folded
    assert set(output_index(m.out)) == {f"g{i}" for i in range(m.n)}  # every key linked
    report = check([m.out])
    assert not report.ok
    assert any(victim in f.path and f"/{key}" in f.obj for f in report.findings)


def test_a_fold_that_does_not_fit_on_the_disk_is_left_and_the_merge_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(fold.FANOUT_ENV, "3")
    with small_fs(tmp_path / "fs", "96m") as fs:
        shards, out = fs / "tmp", fs / "out.h5"
        big = 1_000_000  # 8 MB of float64 per result
        write_shards(shards, range(2), per_shard=2, big=big)
        assert merge(shards, out, workers=1).exit_code == 0
        for start in (2, 4):
            write_shards(shards, range(start, start + 2), per_shard=2, big=big)
            assert merge(shards, out, workers=1, layout="segmented").exit_code == 0
        write_shards(shards, range(6, 8), per_shard=2)  # two small results
        # The three segments hold 48 MB: folding them needs as much again. The merge of
        # two small results needs its own bytes and the margin every write keeps free.
        free = os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize
        with open(fs / "ballast.bin", "wb") as fh:
            fh.write(b"\0" * max(0, free - DEFAULT_MIN_FREE - 4 * 1024 * 1024))
        caplog.set_level(logging.WARNING, logger="h5guard")
        report = merge(shards, out, workers=1, layout="segmented")
        assert report.exit_code == 0, report.render_text()
        assert "not folded, the merge goes on without" in caplog.text
        assert "not enough free space" in caplog.text
        assert [s.level for s in index_of(out).segments] == [0, 0, 0, 0]
        assert set(output_index(out)) == {f"g{i}" for i in range(8)}
        assert check([out]).ok
        assert not [p for p in Path(str(out) + ".segments").iterdir() if p.suffix == ".partial"]


def test_an_index_of_an_older_version_without_levels_is_read_and_folded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fold.FANOUT_ENV, "0")
    m = Merges(tmp_path)
    for _ in range(3):
        m.next()
    with h5py.File(m.out, "r", locking=False) as f:
        text = bytes(f.attrs[segments.SEGMENTS_ATTR]).decode()
    assert '"level"' not in text  # level 0 is not written: the format before folding
    monkeypatch.setenv(fold.FANOUT_ENV, "3")
    m.next()
    assert [s.level for s in index_of(m.out).segments] == [0, 1, 0]
    assert_output(m.out, range(m.n))
    assert np.all([s.groups for s in index_of(m.out).segments])
