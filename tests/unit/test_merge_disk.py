"""Merging into a full file system: refused cleanly, old output intact, no partial left.

Uses a real 2 MiB tmpfs mounted inside tmp_path (needs root; skipped otherwise).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from h5guard import InsufficientSpaceError, merge
from h5guard import _atomic as atomic
from tests.crash._merge_child import output_index, sha256_file, write_shards
from tests.hostile._helpers import (
    assert_one_line_full_disk_error,
    merge_without_space_check,
    small_fs,
)

REPO = Path(__file__).resolve().parents[2]


def small_tmpfs(where: Path, size: str = "2m") -> contextlib.AbstractContextManager[Path]:
    return small_fs(where, size)


def setup(tmp_path: Path, *, old_big: int) -> tuple[Path, Path]:
    """An old output (made elsewhere) and a directory of new shards."""
    src, tmp = tmp_path / "src", tmp_path / "tmp"
    src.mkdir()
    tmp.mkdir()
    write_shards(src, range(4), per_shard=4, big=old_big)
    merge(src, tmp_path / "old.h5", workers=1)
    write_shards(tmp, range(10, 30), per_shard=5, big=2000)
    return tmp_path / "old.h5", tmp


def shard_names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.suffix == ".h5"}


def test_merge_into_full_tmpfs_is_refused(tmp_path: Path) -> None:
    old, tmp = setup(tmp_path, old_big=20000)
    with small_tmpfs(tmp_path / "mnt") as mnt:
        out = mnt / "out.h5"
        shutil.copy(old, out)
        before, shards = sha256_file(out), shard_names(tmp)
        with pytest.raises(InsufficientSpaceError, match="not enough free space") as err:
            merge(tmp, out, workers=1)
        assert err.value.directory == str(mnt)
        assert err.value.needed > err.value.available
        assert sha256_file(out) == before
        assert output_index(out) == output_index(old)
        assert not (mnt / "out.h5.partial").exists()
        assert shard_names(tmp) == shards  # nothing deleted

        proc = subprocess.run(
            [sys.executable, "-m", "h5guard.cli", "merge", str(tmp), "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "not enough free space" in lines[0], proc.stderr
        assert lines[0].startswith("h5guard: error:") and "Traceback" not in proc.stderr
        assert sha256_file(out) == before
        assert sorted(os.listdir(mnt)) == ["out.h5", "out.h5.lock", "out.h5.lock.info"]


def test_enospc_despite_the_estimate_is_insufficient_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The estimate is skipped, so the copy of the old output really hits ENOSPC."""
    old, tmp = setup(tmp_path, old_big=37_000)  # a 1.2 MB output in 2 MiB
    monkeypatch.setattr(atomic, "require_free_space", lambda *a, **k: None)
    with small_tmpfs(tmp_path / "mnt") as mnt:
        out = mnt / "out.h5"
        shutil.copy(old, out)
        before, shards = sha256_file(out), shard_names(tmp)
        with pytest.raises(InsufficientSpaceError) as err:
            merge(tmp, out, workers=1)
        assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == 28
        assert sha256_file(out) == before
        assert not (mnt / "out.h5.partial").exists()
        assert shard_names(tmp) == shards


def test_enospc_inside_libhdf5_is_insufficient_space(tmp_path: Path) -> None:
    """The estimate is skipped and the old output is small, so libhdf5 itself hits ENOSPC
    while copying the new groups (as when another process fills the disk mid-merge)."""
    src, tmp = tmp_path / "src", tmp_path / "tmp"
    src.mkdir()
    tmp.mkdir()
    write_shards(src, range(2), per_shard=2)
    merge(src, tmp_path / "old.h5", workers=1)
    write_shards(tmp, range(10, 30), per_shard=5, big=20000)  # 3.2 MB of new groups
    with small_tmpfs(tmp_path / "mnt") as mnt:
        out = mnt / "out.h5"
        shutil.copy(tmp_path / "old.h5", out)
        before, shards = sha256_file(out), shard_names(tmp)
        assert_one_line_full_disk_error(merge_without_space_check(str(tmp), "-o", str(out)))
        assert sha256_file(out) == before
        assert not (mnt / "out.h5.partial").exists()
        assert shard_names(tmp) == shards
