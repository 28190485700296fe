"""``h5guard merge`` and ``h5guard status`` through a real process and through main()."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from h5guard import exclusive, record_output
from h5guard._atomic import writer_tag
from h5guard.cli import main
from tests.crash._merge_child import expected_digest, output_index, write_shards

REPO = Path(__file__).resolve().parents[2]
REPORT_KEYS = {
    "recovered",
    "interrupted",
    "lost",
    "pending",
    "output",
    "ok",
    "shards_merged",
    "groups_added",
    "duplicates",
    "conflicts",
    "quarantined",
    "stale_partials",
    "live_partials",
    "groups_total",
    "shards_deleted",
    "seconds",
}


def run(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "h5guard.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.stdout == ""
    return lines[0]


def tree_hash(root: Path) -> str:
    """Names, sizes, mtimes and contents of everything under ``root``.

    The merge's own lock of the directory (``.h5guard-merge.lock*``) is left out.
    """
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.name.startswith(".h5guard-merge.lock"):
            continue
        st = path.lstat()
        h.update(f"{path.relative_to(root)} {st.st_size} {st.st_mtime_ns}\n".encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def populated(tmp_path: Path) -> tuple[Path, Path]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    write_shards(tmp, range(6), per_shard=3)
    return tmp, tmp_path / "out.h5"


def test_merge_subprocess_exit_codes_and_json(tmp_path: Path) -> None:
    tmp, out = populated(tmp_path)
    proc = run("merge", tmp, "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == REPORT_KEYS
    assert doc["ok"] is True and doc["output"] == str(out)
    assert (doc["shards_merged"], doc["groups_added"], doc["groups_total"]) == (2, 6, 6)
    assert doc["conflicts"] == [] and doc["quarantined"] == []
    assert isinstance(doc["seconds"], float)
    assert proc.stderr == ""  # --json: nothing but the document

    write_shards(tmp, [6], per_shard=1)
    (tmp / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    proc = run("merge", tmp, "-o", out, "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["groups_added"] == 1 and doc["groups_total"] == 7
    [q] = doc["quarantined"]
    assert q["path"] == str(tmp / "quarantine" / "broken.h5")
    assert q["reasons"] and all(isinstance(r, str) for r in q["reasons"])
    assert output_index(out) == {f"g{i}": expected_digest(i) for i in range(7)}

    # Text mode: findings on stdout, the summary on stderr.
    (tmp / "junk.h5").write_text("junk", encoding="utf-8")
    proc = run("merge", tmp, "-o", out)
    assert proc.returncode == 1
    assert "NOT_HDF5" in proc.stdout and "quarantined" in proc.stderr


def test_merge_keep_shards_and_recorded_output(tmp_path: Path) -> None:
    tmp, out = populated(tmp_path)
    record_output(tmp, out)
    proc = run("merge", tmp, "--keep-shards", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["shards_deleted"] == 0
    assert len(list(tmp.glob("*.h5"))) == 2
    proc = run("merge", tmp, "--json", "-q")
    doc = json.loads(proc.stdout)
    assert (doc["groups_added"], doc["duplicates"], doc["shards_deleted"]) == (0, 6, 2)
    assert list(tmp.glob("*.h5")) == []


def test_merge_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    tmp, out = populated(tmp_path)
    line = one_line_error(run("merge", tmp_path / "missing", "-o", out))
    assert line.startswith("h5guard: error:") and "expected a directory" in line
    line = one_line_error(run("merge", tmp))
    assert "no output is recorded" in line and "-o OUTPUT" in line
    line = one_line_error(run("merge", tmp, "-o", out, "--bogus"))
    assert line.startswith("error: h5guard") and "--bogus" in line
    line = one_line_error(run("merge", tmp, "-o", out, "--lock-timeout", "-1"))
    assert "--lock-timeout" in line
    line = one_line_error(run("merge"))
    assert "TEMP_DIR" in line
    assert not out.exists() and len(list(tmp.glob("*.h5"))) == 2


def test_merge_lock_timeout_names_the_holder(tmp_path: Path) -> None:
    tmp, out = populated(tmp_path)
    before = tree_hash(tmp)
    with exclusive(out, timeout=0, purpose="pytest holding the lock"):
        line = one_line_error(run("merge", tmp, "-o", out, "--lock-timeout", "0.3"))
        code = main(["merge", str(tmp), "-o", str(out), "--lock-timeout", "0"])
    assert "still locked after 0.3 s" in line
    assert f"pid {os.getpid()} " in line and "pytest holding the lock" in line
    assert code == 2
    assert tree_hash(tmp) == before and not out.exists()
    assert run("merge", tmp, "-o", out).returncode == 0


def test_main_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tmp, out = populated(tmp_path)
    assert main(["merge", str(tmp), "-o", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["groups_added"] == 6
    assert main(["merge", str(tmp_path / "nope"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected a directory" in err
    assert main(["merge", str(tmp)]) == 2
    assert "no output is recorded" in capsys.readouterr().err
    assert main(["merge", str(tmp), "-o", str(out), "--nope"]) == 2
    assert "unrecognized arguments: --nope" in capsys.readouterr().err
    assert main(["status", str(tmp), "-o", str(out)]) == 0
    assert "would add:        0 new group(s)" in capsys.readouterr().out


def test_status_reports_counts_and_changes_nothing(tmp_path: Path) -> None:
    tmp, out = populated(tmp_path)
    assert run("merge", tmp, "-o", out).returncode == 0
    write_shards(tmp, range(4, 10), per_shard=3)  # g4, g5 duplicates; g6..g9 new
    write_shards(tmp, [0], per_shard=1, variant=1, prefix="rerun")  # a conflict
    (tmp / "cut.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = writer_tag().rsplit("-", 1)[0]
    (tmp / f"shard-20200101T000000-{host}-{child.pid}-00000000.h5.partial").write_bytes(b"x")
    # A writer on another host of a shared file system: may still be writing.
    (tmp / "shard-20200101T000000-othernode-1-00000000.h5.partial").write_bytes(b"y")
    record_output(tmp, out)
    before = tree_hash(tmp_path)
    proc = run("status", tmp)
    assert proc.returncode == 1, proc.stderr
    text = proc.stdout
    assert f"output:           {out} (6 group(s))" in text
    assert "valid shards:     3 holding 7 group(s)" in text
    assert "would add:        4 new group(s), 2 duplicate(s)" in text
    assert "conflicts:        1 (on conflict: quarantine)" in text
    # The bad file and the shard whose g0 conflicts: what the merge will move aside.
    assert "would quarantine: 2 file(s)" in text and "cut.h5" in text
    assert "still being written: 1" in text
    assert "lost:             1" in text and f"{child.pid}-00000000.h5.partial" in text
    proc = run("status", tmp, "--json")
    doc = json.loads(proc.stdout)
    assert (doc["output_groups"], doc["valid_shards"], doc["new_groups"]) == (6, 3, 4)
    assert doc["duplicates"] == 2 and [c["key"] for c in doc["conflicts"]] == ["g0"]
    assert [Path(b["path"]).name for b in doc["bad_shards"]] == ["cut.h5"]
    assert len(doc["would_quarantine"]) == 2 and len(doc["lost"]) == 1 and doc["ok"] is False
    assert tree_hash(tmp_path) == before, "status modified something"
    assert not (tmp / "quarantine").exists()
    line = one_line_error(run("status", tmp_path / "missing"))
    assert "expected a directory" in line


def test_retrofit_pool_example_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "retrofit_pool.py")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "40 group(s) added" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("OK: 1 file(s), 40 group(s)")
    assert len(output_index(tmp_path / "results.h5")) == 40
    assert list((tmp_path / "results_tmp").glob("*.h5")) == []


def test_status_without_an_output_plans_a_first_merge(tmp_path: Path) -> None:
    """Regression: status exited 2 for a missing -o although it only reads."""
    tmp = tmp_path / "tmp"
    write_shards(tmp, range(3), per_shard=3)
    proc = run("status", tmp)
    assert proc.returncode == 0, proc.stderr
    assert "none recorded (planned as a first merge" in proc.stdout
    assert "would add:        3 new group(s)" in proc.stdout
    # merge still needs to know where to write
    assert "no output is recorded" in one_line_error(run("merge", tmp))


def test_on_conflict_option(tmp_path: Path) -> None:
    tmp, out = populated(tmp_path)
    assert run("merge", tmp, "-o", out).returncode == 0
    write_shards(tmp, [0], per_shard=1, variant=1, prefix="rerun")
    status = run("status", tmp, "-o", out, "--on-conflict", "keep-existing", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["would_quarantine"] == []
    status = run("status", tmp, "-o", out, "--json")
    assert status.returncode == 1 and len(json.loads(status.stdout)["would_quarantine"]) == 1
    proc = run("merge", tmp, "-o", out, "--on-conflict", "keep-existing")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp / "quarantine").exists()
    assert output_index(out)["g0"] == expected_digest(0)
    assert "invalid choice" in one_line_error(run("merge", tmp, "-o", out, "--on-conflict", "x"))


def test_merge_recovers_the_journal_of_a_killed_writer(tmp_path: Path) -> None:
    tmp, out = tmp_path / "tmp", tmp_path / "out.h5"
    code = (
        "import os, signal, numpy as np, h5guard\n"
        f"w = h5guard.ShardWriter({str(tmp)!r})\n"
        "for i in range(7): w.add(f'k{i}', {'v': np.arange(i + 1)})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False, timeout=60)
    status = run("status", tmp, "-o", out)
    assert (
        status.returncode == 0
        and "would recover:    7 result(s) from 1 journal(s)" in status.stdout
    )
    proc = run("merge", tmp, "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["groups_added"] == 7 and [r["results"] for r in doc["recovered"]] == [7]
    assert run("check", out).returncode == 0


def test_cli_on_conflict_choices_are_the_merges() -> None:
    from h5guard import cli
    from h5guard._merge.plan import ON_CONFLICT

    assert cli.ON_CONFLICT == ON_CONFLICT


def test_cli_layout_choices_are_the_merges() -> None:
    from h5guard import cli
    from h5guard._merge.run import LAYOUTS

    assert cli.LAYOUTS == LAYOUTS


def test_merge_layout_option_segments_and_refuses_single_on_an_index(tmp_path: Path) -> None:
    tmp, out = tmp_path / "tmp", tmp_path / "out.h5"
    write_shards(tmp, range(0, 3), per_shard=3)
    assert run("merge", tmp, "-o", out, "-q").returncode == 0
    assert not Path(str(out) + ".segments").exists()  # small: one file by default
    write_shards(tmp, range(3, 6), per_shard=3)
    assert run("merge", tmp, "-o", out, "-q", "--layout", "segmented").returncode == 0
    assert Path(str(out) + ".segments").is_dir()
    assert output_index(out) == {f"g{i}": expected_digest(i) for i in range(6)}
    write_shards(tmp, range(6, 8), per_shard=3)
    before = (out.read_bytes(), tree_hash(tmp))
    line = one_line_error(run("merge", tmp, "-o", out, "--layout", "single"))
    assert "h5guard compact" in line and str(out) in line
    assert (out.read_bytes(), tree_hash(tmp)) == before  # refused before anything changed
    line = one_line_error(run("merge", tmp, "-o", out, "--layout", "one-file"))
    assert "--layout" in line and "segmented" in line
