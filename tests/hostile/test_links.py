"""Never through a link: names planted in TEMP_DIR or beside the output are never followed.

Each test plants a symbolic link where h5guard creates a file (or uses a directory),
pointing at a victim file, and checks that the victim is untouched and that h5guard
either removes the planted name (its own names: ``.partial``) or refuses with a message
naming the link (``quarantine/``, the output itself).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from h5guard import MergeSourceError, ShardWriter, WriteError, _journal, _shard, merge
from h5guard._format import result as _result
from h5guard._lock import exclusive
from h5guard._merge.output import RECORD_FILE, record_output
from tests.hostile._helpers import REPO, gone_writer, run_cli, values

VICTIM = b"precious bytes that are not h5guard's to touch\n"


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_bytes(VICTIM)
    return path


def shards(directory: Path, n: int, *, start: int = 0) -> None:
    with ShardWriter(directory, commit_every=n) as w:
        for i in range(start, start + n):
            w.add(f"k{i}", *values(i))


@pytest.mark.parametrize("first", [True, False], ids=["first-merge", "existing-output"])
def test_a_link_at_the_outputs_partial_is_removed_not_followed(tmp_path: Path, first: bool) -> None:
    tmp, out = tmp_path / "tmp", tmp_path / "out.h5"
    target = victim(tmp_path)
    if not first:
        shards(tmp, 2)
        assert merge(tmp, out, workers=1).exit_code == 0
    shards(tmp, 3, start=10)
    os.symlink(target, str(out) + ".partial")
    report = merge(tmp, out, workers=1)
    assert report.exit_code == 0
    assert target.read_bytes() == VICTIM
    assert not out.is_symlink() and out.is_file()
    assert not os.path.lexists(str(out) + ".partial")
    assert report.groups_total == (3 if first else 5)


def test_a_link_at_a_dead_writers_partial_is_removed_not_followed(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    target = victim(tmp_path)
    journal = gone_writer(tmp, ["a", "b"])
    partial = journal.with_name(journal.name.removesuffix(".journal") + ".partial")
    os.symlink(target, partial)
    report = merge(tmp, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 0 and report.recovered == ((str(journal), 2),)
    assert target.read_bytes() == VICTIM
    assert not os.path.lexists(partial)


def test_a_link_at_a_shards_partial_is_removed_by_the_writer(tmp_path: Path) -> None:
    """The commit's own partial: whatever is under the name is removed, never written through."""
    target = victim(tmp_path)
    final = tmp_path / "s.h5"
    os.symlink(target, tmp_path / "s.h5.partial")
    result = _result.prepare("a", *values(0), schema=None)
    _shard.write_shard(final, [result], schema_json=None, file_attrs=None)
    assert target.read_bytes() == VICTIM and final.is_file() and not final.is_symlink()
    assert not os.path.lexists(tmp_path / "s.h5.partial")


def test_a_journal_is_never_created_through_a_link(tmp_path: Path) -> None:
    target = victim(tmp_path)
    path = tmp_path / "x.h5.journal"
    os.symlink(target, path)
    with pytest.raises(FileExistsError):
        _journal.JournalWriter(path, {"stem": "x"})
    assert target.read_bytes() == VICTIM and path.is_symlink()


def test_a_planted_quarantine_link_is_refused_with_its_name(tmp_path: Path) -> None:
    tmp, out = tmp_path / "tmp", tmp_path / "out.h5"
    shards(tmp, 2)
    (tmp / "junk.h5").write_bytes(b"not hdf5 at all" * 100)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, tmp / "quarantine")
    with pytest.raises(
        WriteError, match=r"quarantine: expected a directory, found a symbolic link"
    ):
        merge(tmp, out, workers=1)
    assert list(elsewhere.iterdir()) == []
    assert (tmp / "junk.h5").exists() and not out.exists()
    proc = run_cli("merge", tmp, "-o", out)
    assert (
        proc.returncode == 2 and "symbolic link" in proc.stderr and "Traceback" not in proc.stderr
    )
    os.unlink(tmp / "quarantine")
    report = merge(tmp, out, workers=1)
    assert report.exit_code == 1 and len(report.quarantined) == 1
    assert (tmp / "quarantine").is_dir() and not (tmp / "quarantine").is_symlink()


def test_the_quarantine_note_is_never_written_through_a_link(tmp_path: Path) -> None:
    """The note's temporary name was predictable; it must not be followed."""
    tmp, out = tmp_path / "tmp", tmp_path / "out.h5"
    target = victim(tmp_path)
    (tmp / "quarantine").mkdir(parents=True)
    (tmp / "junk.h5").write_bytes(b"not hdf5 at all" * 100)
    os.symlink(target, tmp / "quarantine" / "junk.h5.json.tmp")
    report = merge(tmp, out, workers=1)
    assert len(report.quarantined) == 1
    assert target.read_bytes() == VICTIM
    assert (tmp / "quarantine" / "junk.h5").is_file()


def test_the_output_record_is_never_written_through_a_link(tmp_path: Path) -> None:
    target = victim(tmp_path)
    os.symlink(target, tmp_path / f"{RECORD_FILE}.{os.getpid()}.tmp")
    os.symlink(target, tmp_path / RECORD_FILE)
    record_output(tmp_path, tmp_path / "out.h5")
    assert target.read_bytes() == VICTIM
    assert not (tmp_path / RECORD_FILE).is_symlink()


def test_an_output_that_is_a_link_is_refused_naming_it_and_its_target(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    shards(tmp, 2)
    real = tmp_path / "real.h5"
    assert merge(tmp, real, workers=1).exit_code == 0
    before = real.read_bytes()
    link = tmp_path / "out.h5"
    os.symlink(real, link)
    shards(tmp, 2, start=5)
    with pytest.raises(MergeSourceError, match=r"symbolic link to .*real\.h5") as err:
        merge(tmp, link, workers=1)
    assert f"-o {real}" in str(err.value)
    assert link.is_symlink() and real.read_bytes() == before
    proc = run_cli("merge", tmp, "-o", link)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert str(link) in line and str(real) in line
    assert link.is_symlink() and real.read_bytes() == before


def test_a_killed_writers_partial_link_in_a_real_process(tmp_path: Path) -> None:
    """A writer SIGKILLed with a batch open; a link planted at its partial; merge recovers."""
    tmp = tmp_path / "tmp"
    target = victim(tmp_path)
    code = (
        "import sys, os, numpy as np\n"
        "from h5guard import ShardWriter\n"
        "w = ShardWriter(sys.argv[1], commit_every=1000)\n"
        "for i in range(5): w.add(f'k{i}', {'x': np.arange(3.0)})\n"
        "print('ready', flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with subprocess.Popen(
        [sys.executable, "-c", code, str(tmp)], stdout=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    [journal] = tmp.glob("*.journal")
    os.symlink(target, journal.with_name(journal.name.removesuffix(".journal") + ".partial"))
    report = merge(tmp, tmp_path / "out.h5", workers=1)
    assert report.exit_code == 0 and report.groups_total == 5
    assert target.read_bytes() == VICTIM


def test_links_named_like_shards_or_journals_are_quarantined_unread(tmp_path: Path) -> None:
    tmp, out = tmp_path / "tmp", tmp_path / "out.h5"
    shards(tmp, 2)
    elsewhere = tmp_path / "elsewhere"
    shards(elsewhere, 2, start=10)
    [theirs] = elsewhere.glob("*.h5")
    os.symlink(theirs, tmp / "planted.h5")
    os.symlink(victim(tmp_path), tmp / "planted.h5.journal")
    report = merge(tmp, out, workers=1)
    assert report.exit_code == 1 and report.groups_total == 2
    assert sorted(Path(q.path).name for q in report.quarantined) == [
        "planted.h5",
        "planted.h5.journal",
    ]
    assert all("SYMBOLIC_LINK" in q.reasons[0] for q in report.quarantined)
    assert theirs.exists() and (tmp_path / "victim.txt").read_bytes() == VICTIM


def test_a_temp_dir_that_is_another_accounts_link_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a link to another account needs root")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    link = tmp_path / "run_tmp"
    os.symlink(theirs, link)
    os.lchown(link, 65534, 65534)
    with pytest.raises(WriteError, match="owned by another account"):
        ShardWriter(link)
    with pytest.raises(WriteError, match="owned by another account"):
        merge(link, tmp_path / "out.h5", workers=1)
    assert list(theirs.iterdir()) == []
    mine = tmp_path / "mine"
    os.symlink(theirs, mine)  # the user's own link is the user's choice
    shards(mine, 2)
    assert merge(mine, tmp_path / "out.h5", workers=1).exit_code == 0


def test_the_lock_info_is_never_written_through_a_planted_link(tmp_path: Path) -> None:
    """The holder record beside an output lock: links planted at the record and at the
    names of earlier temporaries are left alone, the record is a regular file."""
    target = victim(tmp_path)
    out = tmp_path / "out.h5"
    info = tmp_path / "out.h5.lock.info"
    os.symlink(target, info)
    os.symlink(target, tmp_path / f"out.h5.lock.info.{os.getpid()}.tmp")
    with exclusive(out, timeout=5):
        assert info.is_file() and not info.is_symlink()
    assert target.read_bytes() == VICTIM
