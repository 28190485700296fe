"""A segmented output on a full file system: the merge fails with one clear error, the
index stays as it was (every merged result readable through it), no partial is left
beside the output, and once there is room again the next merge completes the job.

Each case runs in a real tmpfs mounted inside tmp_path (needs root; skipped otherwise),
for the three kinds of segmented merge: the one that turns a file into an index, the
one that copies the index (no spare yet), and the one that brings the spare up to date
in place. The disk is either full before the merge (its space check refuses it) or
fills after the check (the check is skipped, as when another process fills the disk
mid-merge: the merge's reservation of its files' blocks, or libhdf5's writes, meet
ENOSPC; in a child, as libhdf5 may abort rather than raise there).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from h5guard import InsufficientSpaceError, check, merge
from h5guard._format import segments
from tests.crash._merge_child import expected_digest, output_index, sha256_file, write_shards
from tests.hostile._helpers import (
    assert_one_line_full_disk_error,
    merge_without_space_check,
    small_fs,
)

# Merges into the output before the one that meets the full disk: 0 turns the file into
# an index, 1 copies the index, 2 brings the spare up to date in place.
KINDS = pytest.mark.parametrize("before", [0, 1, 2], ids=["convert", "copy", "spare"])


def expected(indices: Iterable[int]) -> dict[str, str]:
    return {f"g{i}": expected_digest(i, big=3000) for i in indices}


def segmented_output(out: Path, work: Path, merges: int) -> range:
    """``out``: a self-contained output, segmented by ``merges`` more merges; its keys."""
    write_shards(work / "first", range(0, 4), per_shard=2, big=3000)
    merge(work / "first", out, workers=1, layout="single")
    for m in range(merges):
        batch = range(4 + 4 * m, 8 + 4 * m)
        write_shards(work / f"m{m}", batch, per_shard=2, big=3000)
        merge(work / f"m{m}", out, workers=1, layout="segmented")
    return range(0, 4 + 4 * merges)


def fill(mnt: Path, leave: int) -> Path:
    """A file taking all but about ``leave`` bytes of ``mnt``."""
    st = os.statvfs(mnt)
    filler = mnt / "filler.bin"
    size = max(st.f_bavail * st.f_frsize - leave, 0)
    with open(filler, "wb") as fh:
        chunk = b"\0" * (1 << 20)
        while size > 0:
            fh.write(chunk[: min(size, len(chunk))])
            size -= len(chunk)
    return filler


def leftovers(mnt: Path) -> list[str]:
    return sorted(
        str(p.relative_to(mnt)) for p in mnt.rglob("*") if p.name.endswith((".partial", ".tmp"))
    )


def assert_completed(out: Path, tmp: Path, keys: Iterable[int]) -> None:
    """A merge with room completes the job: every key, no shard left, check passes."""
    merge(tmp, out, workers=1, layout="segmented")
    assert output_index(out) == expected(keys)
    assert segments.is_index_path(out)
    assert check(out).ok
    assert not any(tmp.glob("*.h5"))


@contextlib.contextmanager
def full_disk(
    tmp_path: Path, before: int, new: range, *, leave: int
) -> Iterator[tuple[Path, Path, range, Path]]:
    """A segmented output (``before`` merges after its first) on a tmpfs, shards of ``new``
    beside, and the tmpfs filled but for ``leave`` bytes: ``(out, shards, old keys,
    filler)``. On leaving, the output is still the old one and nothing partial is left."""
    with small_fs(tmp_path / "mnt", "64m") as mnt:
        out = mnt / "out.h5"
        old = segmented_output(out, tmp_path, before)
        tmp = tmp_path / "new"
        write_shards(tmp, new, per_shard=4, big=3000)
        shards = sorted(tmp.glob("*.h5"))
        filler = fill(mnt, leave=leave)
        index_sha = sha256_file(out)
        yield out, tmp, old, filler
        assert sha256_file(out) == index_sha
        assert output_index(out) == expected(old)
        assert check(out).ok
        assert leftovers(mnt) == []
        assert sorted(tmp.glob("*.h5")) == shards  # no shard consumed
        filler.unlink()
        assert_completed(out, tmp, [*old, *new])


@KINDS
def test_a_segmented_merge_on_a_full_disk_is_refused_and_keeps_the_old_output(
    tmp_path: Path, before: int
) -> None:
    with full_disk(tmp_path, before, range(100, 108), leave=64 * 1024) as (out, tmp, _, _):
        with pytest.raises(InsufficientSpaceError, match="not enough free space") as err:
            merge(tmp, out, workers=1, layout="segmented")
        assert str(out.parent) in str(err.value)


@KINDS
def test_a_disk_that_fills_after_the_space_check_fails_the_merge_clearly_and_keeps_the_old_output(
    tmp_path: Path, before: int
) -> None:
    # About 1 MB of new groups into the last 256 KiB.
    with full_disk(tmp_path, before, range(100, 140), leave=256 * 1024) as (out, tmp, _, _):
        proc = merge_without_space_check(str(tmp), "-o", str(out), "--layout", "segmented")
        assert_one_line_full_disk_error(proc)
