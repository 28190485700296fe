"""A segmented merge that meets an I/O error at each step of its commit (the segment's
and the index's fsync, rename and directory fsync; the index's close) fails with an
error naming the file, leaves the old output as it was, and the next merge completes it.

The error is injected into ``os.fsync`` / ``os.replace`` as h5guard calls them, and into
h5guard's close of the index, the way the I/O-error campaign injects its faults; every
file is real.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import pytest

from h5guard import H5GuardError, check, merge
from h5guard._format import reader, segments
from h5guard._merge import spare
from tests.crash._merge_child import expected_digest, output_index, write_shards


def expected(indices: range) -> dict[str, str]:
    return {f"g{i}": expected_digest(i) for i in indices}


def prepared(tmp_path: Path) -> tuple[Path, Path]:
    """A segmented output of g0-g9 with a spare index, and shards of g10-g12 waiting."""
    shards, out = tmp_path / "tmp", tmp_path / "out.h5"
    for n, batch in enumerate((range(0, 4), range(4, 7), range(7, 10))):
        write_shards(shards, batch, per_shard=3)
        layout = "auto" if n == 0 else "segmented"
        assert merge(shards, out, workers=1, layout=layout).exit_code == 0
    assert Path(spare.spare_path(str(out) + ".segments")).exists()
    write_shards(shards, range(10, 13), per_shard=3)
    return shards, out


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def failing_fsync(match: Callable[[str, bool], bool]) -> Callable[[int], None]:
    real = os.fsync

    def fsync(fd: int) -> None:
        if match(_fd_path(fd), stat.S_ISDIR(os.fstat(fd).st_mode)):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    return fsync


FSYNC_FAULTS = {
    "the index's fsync": lambda p, d: not d and p.endswith("index-spare.h5.partial"),
    "the segment's fsync": lambda p, d: not d and ".h5.segments/seg-" in p,
    "the segment directory's fsync": lambda p, d: d and p.endswith(".segments"),
    "the output directory's fsync": lambda p, d: d and not p.endswith(".segments"),
}


# The failing merge folds the index's last two segments into one (h5guard/_merge/fold.py),
# or does not: each fault meets the fold's commit too.
FOLDS = pytest.mark.parametrize("fanout", ["16", "2"], ids=["no-fold", "fold"])


@FOLDS
@pytest.mark.parametrize("fault", sorted(FSYNC_FAULTS))
def test_an_fsync_error_fails_the_merge_clearly_and_keeps_the_old_or_new_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str, fanout: str
) -> None:
    shards, out = prepared(tmp_path)
    monkeypatch.setenv("H5GUARD_SEGMENT_FANOUT", fanout)
    with monkeypatch.context() as m:
        m.setattr("h5guard._atomic.os.fsync", failing_fsync(FSYNC_FAULTS[fault]))
        try:
            merge(shards, out, workers=1)
            err: H5GuardError | None = None
        except H5GuardError as e:
            err = e
    assert err is not None, f"{fault}: the merge reported success"
    assert str(tmp_path) in str(err) or "out.h5" in str(err), str(err)
    keys = output_index(out)
    if fault == "the output directory's fsync":
        # After the rename only the directory's fsync can fail: the new output is in place.
        assert keys == expected(range(13))
    else:
        assert keys == expected(range(10))  # the old output, untouched
    assert check([out]).ok
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    report = merge(shards, out, workers=1)  # the next merge completes it
    assert report.exit_code == 0, report.render_text()
    assert output_index(out) == expected(range(13))
    assert check([out]).ok
    if fault != "the output directory's fsync":
        assert_folded(out, fanout)


def assert_folded(out: Path, fanout: str) -> None:
    """The completing merge folded (fanout 2) the last two segments, or nothing."""
    with h5py.File(out, "r", locking=False) as f:
        levels = [s.level for s in segments.open_index(f, str(out)).segments]
    assert levels == ([0, 1, 0] if fanout == "2" else [0, 0, 0, 0])


@FOLDS
@pytest.mark.parametrize("which", ["segment", "index"])
def test_a_failed_rename_or_close_fails_the_merge_and_keeps_the_old_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str, fanout: str
) -> None:
    shards, out = prepared(tmp_path)
    monkeypatch.setenv("H5GUARD_SEGMENT_FANOUT", fanout)
    real_replace, real_close = os.replace, reader.close_file

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        if which == "segment" and "/seg-" in os.fspath(src):
            raise OSError(errno.EIO, os.strerror(errno.EIO), os.fspath(src))
        real_replace(src, dst, **kw)

    def close_file(f: Any) -> None:
        name = f.filename
        real_close(f)
        if which == "index" and name.endswith("index-spare.h5.partial"):
            raise RuntimeError(f"Problems closing file (file name = '{name}')")

    with monkeypatch.context() as m:
        m.setattr("h5guard._atomic.os.replace", replace)
        m.setattr(reader, "close_file", close_file)
        with pytest.raises(H5GuardError) as caught:
            merge(shards, out, workers=1)
    assert "partial" in str(caught.value) or "seg-" in str(caught.value), str(caught.value)
    assert output_index(out) == expected(range(10))
    assert check([out]).ok
    assert merge(shards, out, workers=1).exit_code == 0
    assert output_index(out) == expected(range(13))
    assert check([out]).ok
    assert_folded(out, fanout)
