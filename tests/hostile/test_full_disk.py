"""A full disk kills no process: the writer, its commit, the merge and journal recovery
refuse with ``InsufficientSpaceError`` naming the file and where the results wait, and
after space is freed the next merge recovers every result whose ``add()`` returned.

Real small file systems (tmpfs mounted inside tmp_path; root only, skipped otherwise).
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import h5py
import pytest

from h5guard import InsufficientSpaceError, ShardWriter, WriteError, merge
from tests.hostile._helpers import run_cli, run_python, small_fs, values

# A worker that adds results of 256 KiB with a small margin until add() refuses; it
# prints every key whose add() returned, and what close() said.
WORKER = """
import json, sys, numpy as np
from h5guard import ShardWriter, H5GuardError
w = ShardWriter(sys.argv[1], commit_every=int(sys.argv[2]), min_free=256 * 1024)
done, errors = [], []
for i in range(400):
    try:
        w.add(f"k{i:03d}", {"x": np.full(32 * 1024, float(i))})
    except H5GuardError as err:
        errors.append(f"add: {type(err).__name__}: {err}")
        break
    done.append(f"k{i:03d}")
try:
    w.close()
except H5GuardError as err:
    errors.append(f"close: {type(err).__name__}: {err}")
print(json.dumps({"done": done, "errors": errors}))
"""


def ballast(directory: Path, size: int) -> Path:
    path = directory / "ballast.bin"
    with open(path, "wb") as fh:
        fh.write(b"\0" * size)
    return path


def keys_in(path: Path) -> set[str]:
    with h5py.File(path, "r") as f:
        return {k for k in f if not k.startswith("h5guard_")}  # not the summary


@pytest.mark.parametrize("commit_every", [1000, 12], ids=["one-big-batch", "auto-commits"])
def test_a_full_disk_kills_no_writer_and_the_merge_recovers_every_result(
    tmp_path: Path, commit_every: int
) -> None:
    with small_fs(tmp_path / "fs", "8m") as fs:
        tmp = fs / "tmp"
        tmp.mkdir()
        room = ballast(fs, 4 * 1024 * 1024)
        proc = run_python(WORKER, tmp, commit_every)
        assert proc.returncode == 0, f"worker died: {proc.returncode} {proc.stderr[-2000:]}"
        result = json.loads(proc.stdout)
        done, errors = result["done"], result["errors"]
        assert len(done) >= 5 and errors, result
        assert any("InsufficientSpaceError" in e for e in errors), errors
        closing = [e for e in errors if e.startswith("close:")]
        if closing:
            # close() names the file and where the results wait.
            assert "not enough free space" in closing[0] and ".journal" in closing[0]
            assert "safe in" in closing[0]
        out = tmp_path / "out.h5"  # outside the small file system
        merged = run_cli("merge", tmp, "-o", out)
        # The recovery meets the full disk: a message, exit 2, nothing killed.
        assert merged.returncode in (0, 2), merged.stderr[-2000:]
        if merged.returncode == 2:
            assert "not enough free space" in merged.stderr and "Traceback" not in merged.stderr
            assert ".journal" in merged.stderr
        room.unlink()
        shutil.rmtree(tmp / "quarantine", ignore_errors=True)
        report = merge(tmp, out, workers=1)
        assert report.exit_code == 0, report.render_text()
        assert set(done) <= keys_in(out)


def test_a_commit_on_a_full_disk_raises_and_keeps_the_batch(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", "8m") as fs:
        w = ShardWriter(fs / "tmp", commit_every=10_000, min_free=0)
        for i in range(12):
            w.add(f"k{i}", *values(i, 32 * 1024))
        room = ballast(fs, 8 * 1024 * 1024 - 3 * 1024 * 1024 - 256 * 1024)
        with pytest.raises(InsufficientSpaceError) as err:
            w.commit()
        assert ".partial" in str(err.value) and "12 result(s) are safe in" in str(err.value)
        assert not list((fs / "tmp").glob("*.partial"))
        room.unlink()
        assert w.commit() is not None
        w.close()


def test_merge_recovery_on_a_full_disk_reports_and_recovers_later(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", "8m") as fs:
        w = ShardWriter(fs / "tmp", commit_every=10_000, min_free=0)
        for i in range(12):
            w.add(f"k{i}", *values(i, 32 * 1024))
        assert w._journal is not None
        w._journal.close()
        room = ballast(fs, 8 * 1024 * 1024 - 3 * 1024 * 1024 - 256 * 1024)
        out = tmp_path / "out.h5"
        proc = run_cli("merge", fs / "tmp", "-o", out)
        assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
        assert proc.returncode != -signal.SIGSEGV
        [line] = proc.stderr.strip().splitlines()
        assert "not enough free space" in line and ".journal" in line
        room.unlink()
        report = merge(fs / "tmp", out, workers=1)
        assert report.exit_code == 0 and keys_in(out) == {f"k{i}" for i in range(12)}


def test_a_read_only_file_system_is_named_as_such(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", "1m", read_only=True) as fs:
        with pytest.raises(WriteError, match="read-only") as err:
            ShardWriter(fs).add("a", *values(0))
        assert "free space" not in str(err.value)


def test_a_deleted_temp_dir_is_a_write_error_and_close_claims_nothing(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    w = ShardWriter(tmp, commit_every=100)
    w.add("a", *values(0))
    w.add("b", *values(1))
    shutil.rmtree(tmp)
    with pytest.raises(WriteError) as err:
        w.add("c", *values(2))
    assert not isinstance(err.value, FileNotFoundError) or isinstance(err.value, WriteError)
    assert str(tmp) in str(err.value)
    with pytest.raises(WriteError) as closing:
        w.close()
    assert "safe in" not in str(closing.value)
    assert "no longer exists" in str(closing.value) or "found none" in str(closing.value)


def test_a_journal_deleted_under_a_running_writer_is_not_called_safe(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, commit_every=100)
    w.add("a", *values(0))
    [journal] = tmp_path.glob("*.journal")
    journal.unlink()
    with pytest.raises(WriteError, match="no longer exists") as err:
        w.add("b", *values(1))
    assert "lost" in str(err.value) and "safe in" not in str(err.value)
    w.close()


def test_a_shard_too_big_for_memory_is_written_into_reserved_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above IN_MEMORY_SHARD libhdf5 writes the shard, into blocks reserved first."""
    from h5guard import _shard, check

    monkeypatch.setattr(_shard, "IN_MEMORY_SHARD", 0)
    with small_fs(tmp_path / "fs", "8m") as fs:
        w = ShardWriter(fs / "tmp", commit_every=10_000, min_free=0)
        for i in range(12):
            w.add(f"k{i}", *values(i, 32 * 1024))
        room = ballast(fs, 8 * 1024 * 1024 - 3 * 1024 * 1024 - 256 * 1024)
        with pytest.raises(InsufficientSpaceError, match="12 result"):
            w.commit()
        room.unlink()
        shard = w.commit()
        assert shard is not None
        # The unused part of the reservation was given back when libhdf5 closed the file.
        assert shard.stat().st_size < 12 * 32 * 1024 * 8 + 64 * 1024
        assert check([shard], workers=1).ok
        w.close()
