"""`h5guard check` through a real subprocess and through main()."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from h5guard import ShardWriter, __version__
from h5guard.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def h5guard(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "h5guard.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    with ShardWriter(tmp_path) as w:
        w.add("a", {"x": np.arange(3.0)}, {"status": "ok"})
        w.add("b", {"x": np.arange(4.0)}, {"status": "ok"})
    return tmp_path


def test_clean_directory_exit_0_and_summary_on_stderr(shard_dir: Path) -> None:
    proc = h5guard("check", str(shard_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "OK: 1 file(s), 2 group(s) checked" in proc.stderr


def test_problems_exit_1_one_line_per_finding(shard_dir: Path) -> None:
    (shard_dir / "zero.h5").write_bytes(b"")
    proc = h5guard("check", str(shard_dir))
    assert proc.returncode == 1
    assert (
        proc.stdout.strip()
        == f"{shard_dir / 'zero.h5'}:/: EMPTY file is empty (0 bytes): its writer never wrote it"
    )


def test_json_shape(shard_dir: Path) -> None:
    shutil.copy(FIXTURES / "truncated.h5", shard_dir / "t.h5")
    proc = h5guard("check", str(shard_dir), "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert set(doc) == {
        "ok",
        "files_checked",
        "groups_checked",
        "groups_valid",
        "counts",
        "findings",
        "files",
    }
    assert doc["ok"] is False and doc["files_checked"] == 2 and doc["groups_checked"] == 2
    [finding] = doc["findings"]
    assert set(finding) == {"path", "object", "code", "severity", "message"}
    assert finding["code"] == "TRUNCATED" and finding["severity"] == "error"


def test_expect_keys(shard_dir: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("a\nb\n# comment\nc\n")
    proc = h5guard("check", str(shard_dir), "--expect", str(keys))
    assert proc.returncode == 1
    assert proc.stdout.strip().endswith("/c: EXPECTED_MISSING expected group is missing or invalid")


def test_quick_mode_skips_libhdf5(shard_dir: Path) -> None:
    shutil.copy(FIXTURES / "hang.h5", shard_dir / "hang.h5")
    proc = h5guard("check", "--quick", str(shard_dir))
    assert proc.returncode == 0  # the hang is only visible to the deep layer


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "/nonexistent/path.h5"], "/nonexistent/path.h5: no such file or directory"),
        (["check", "--bogus", "x"], "unrecognized arguments: --bogus"),
        (["check", "--timeout", "-1", "x"], "expected a number of seconds > 0"),
        (["check"], "the following arguments are required: PATH"),
        (["check", "--quick", "--expect", "k", "."], "--expect needs the deep layer"),
        (["check", "--schema", "/nonexistent.json", "."], "/nonexistent.json: cannot read schema"),
        (["merge", "/nonexistent"], "/nonexistent: expected a directory of shards"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    proc = h5guard(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


def test_bad_schema_file(shard_dir: Path, tmp_path: Path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text('{"datasets": {"x": {"dtype": "complex-ish"}}}')
    proc = h5guard("check", "--schema", str(schema), str(shard_dir))
    assert proc.returncode == 2
    assert "dtype 'complex-ish' is neither a numpy dtype name" in proc.stderr


def test_schema_option_applies(shard_dir: Path, tmp_path: Path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text('{"datasets": {"x": {"shape": [3]}}}')
    proc = h5guard("check", "--schema", str(schema), str(shard_dir))
    assert proc.returncode == 1
    assert "/b/x: SCHEMA_SHAPE expected shape (3), found (4,)" in proc.stdout


def test_version_and_help() -> None:
    proc = h5guard("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"h5guard {__version__}"
    proc = h5guard("check", "--help")
    assert proc.returncode == 0 and "Exit codes" in proc.stdout


def test_main_in_process(shard_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-q", str(shard_dir)]) == 0
    assert main(["check", str(shard_dir / "missing.h5")]) == 2
    err = capsys.readouterr().err
    assert "missing.h5: no such file or directory" in err


# -- issue #17 items in the check code: each failed on the code before --------------------
def test_text_summary_and_json_use_the_same_word_for_each_severity(shard_dir: Path) -> None:
    shutil.copy(FIXTURES / "foreign.h5", shard_dir / "foreign.h5")  # gets an info finding
    text = h5guard("check", str(shard_dir))
    doc = json.loads(h5guard("check", "--json", str(shard_dir)).stdout)
    summary = text.stderr.strip().splitlines()[-1]
    for word, count in doc["counts"].items():
        assert f"{count} {word}" in summary, (word, summary)
    assert doc["counts"]["info"] >= 1


def test_summary_counts_groups_that_fail_the_schema(shard_dir: Path, tmp_path: Path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text('{"datasets": {"x": {"shape": [3]}}}')  # group b has 4 values
    proc = h5guard("check", "--schema", str(schema), str(shard_dir))
    summary = proc.stderr.strip().splitlines()[-1]
    assert "2 group(s) checked, 1 invalid" in summary
    doc = json.loads(h5guard("check", "--json", "--schema", str(schema), str(shard_dir)).stdout)
    assert (doc["groups_checked"], doc["groups_valid"]) == (2, 1)


def test_a_directory_with_only_quarantine_is_not_ok(tmp_path: Path) -> None:
    (tmp_path / "quarantine").mkdir()
    shutil.copy(FIXTURES / "good_shard.h5", tmp_path / "quarantine" / "bad.h5")
    proc = h5guard("check", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stdout.strip() == (
        f"{tmp_path}:/: NOTHING_TO_CHECK directory holds no *.h5 file to check "
        "(1 quarantined file(s) in quarantine/, not checked)"
    )


_KILLED_BEFORE_FIRST_FLUSH = """
import os, sys
import numpy as np
import h5py
f = h5py.File(sys.argv[1], "w", libver=("v110", "latest"), locking=False)
f.create_dataset("x", data=np.arange(100000.0))
os._exit(0)  # killed: never flushed, never closed
"""


def test_a_never_flushed_file_is_not_said_to_be_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "killed.h5"
    subprocess.run([sys.executable, "-c", _KILLED_BEFORE_FIRST_FLUSH, str(path)], check=True)
    proc = h5guard("check", str(path))
    assert proc.returncode == 1
    assert "after the writer closed it" not in proc.stdout
    assert "written after the writer's last flush (or it was never flushed)" in proc.stdout
    assert "OPEN_FOR_WRITE" in proc.stdout


def test_quick_check_does_not_import_h5py() -> None:
    code = (
        "import sys; from h5guard.cli import main; "
        f"rc = main(['check', '--quick', '-q', {str(FIXTURES / 'foreign.h5')!r}]); "
        "print(rc, 'h5py' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["0", "False"], proc.stderr
