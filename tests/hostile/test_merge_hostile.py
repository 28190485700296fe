"""One merge per TEMP_DIR whatever its output; an altered and resealed shard is
quarantined by name; a quarantine that fails names the file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import pytest

from h5guard import LockTimeoutError, ShardWriter, WriteError, merge
from h5guard._format import seal as _seal
from h5guard._lock import exclusive
from tests.hostile._helpers import run_cli, small_fs, values


def shards(directory: Path, n: int, *, start: int = 0, per: int = 3) -> None:
    with ShardWriter(directory, commit_every=per) as w:
        for i in range(start, start + n):
            w.add(f"k{i}", *values(i))


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.name.startswith(".h5guard-merge.lock"):
            continue  # the loser opens the directory's lock, and nothing else
        st = path.lstat()
        h.update(f"{path.relative_to(root)} {st.st_size} {st.st_mtime_ns}\n".encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def test_a_second_merge_of_one_temp_dir_into_another_output_touches_nothing(
    tmp_path: Path,
) -> None:
    tmp = tmp_path / "tmp"
    shards(tmp, 6)
    (tmp / "junk.h5").write_bytes(b"x" * 3000)  # would be quarantined
    before = tree_hash(tmp)
    # The first merge (out1) holds the directory: as a merge holds it while it runs.
    with exclusive(tmp / ".h5guard-merge", timeout=0, purpose=f"h5guard merge {tmp} -o out1"):
        with pytest.raises(LockTimeoutError, match="out1"):
            merge(tmp, tmp_path / "out2.h5", workers=1, lock_timeout=0.2)
        proc = run_cli("merge", tmp, "-o", tmp_path / "out2.h5", "--lock-timeout", "0.2")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert f"pid {os.getpid()} " in line and "out1" in line and ".h5guard-merge.lock" in line
    assert tree_hash(tmp) == before and not (tmp_path / "out2.h5").exists()
    assert not (tmp / "quarantine").exists()
    assert merge(tmp, tmp_path / "out2.h5", workers=1).exit_code == 1  # junk.h5


def test_an_altered_and_resealed_shard_is_quarantined_by_name(tmp_path: Path) -> None:
    tmp, out = tmp_path / "tmp", tmp_path / "out.h5"
    shards(tmp, 6)
    altered = sorted(tmp.glob("*.h5"))[0]
    with h5py.File(altered, "r+") as f:
        key = sorted(k for k in f if not k.startswith("h5guard_"))[0]
        f[f"{key}/x"][0] = 1e9
    _seal.write_seal(altered)  # the seal matches the altered bytes
    report = merge(tmp, out, workers=1)
    assert report.exit_code == 1
    [q] = report.quarantined
    assert q.path == str(tmp / "quarantine" / altered.name)
    assert altered.name in q.reasons[0] and f"/{key}:" in q.reasons[0]
    assert "resealed" in q.reasons[0]
    with h5py.File(out, "r") as f:
        assert len({k for k in f if not k.startswith("h5guard_")}) == 3 and key not in f
    proc = run_cli("check", out)
    assert proc.returncode == 0, proc.stdout


def fill(directory: Path) -> Path:
    """Fill a file system to the last byte."""
    path = directory / "fill"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


def test_quarantine_io_errors_name_the_file(tmp_path: Path) -> None:
    tmp, out = tmp_path / "tmp", tmp_path / "out.h5"
    shards(tmp, 3)
    (tmp / "junk.h5").write_bytes(b"x" * 3000)
    with small_fs(tmp / "quarantine", "64k") as qfs:
        # The note cannot be written: the error names it and the file being quarantined.
        full = fill(qfs)
        with pytest.raises(WriteError) as err:
            merge(tmp, out, workers=1)
        text = str(err.value)
        assert "junk.h5.json" in text and f"quarantining {tmp / 'junk.h5'}" in text, text
        assert (tmp / "junk.h5").exists() and not out.exists()
        full.unlink()
        # Another file system: the move itself fails, and says which file and which step.
        with pytest.raises(WriteError) as err:
            merge(tmp, out, workers=1)
        assert f"quarantining {tmp / 'junk.h5'} failed while moving it" in str(err.value)
    report = merge(tmp, out, workers=1)
    assert report.exit_code == 1 and (tmp / "quarantine" / "junk.h5").exists()
