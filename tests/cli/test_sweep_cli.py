"""``layout-sweep`` follows the CLI rules of docs/cli-rules.md; one test per fix of #17.

Each of these failed on the main branch before the fix: ``--version`` did not start with
the name and version, ``status`` without a known spec said "planned: unknown" and then
"planned 0, done 0 ... pending 0" with exit 0 whatever the files held, and ``run``
without PyWake started a sweep whose every config would fail in the workers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

import h5guard
from optimizer.cli import main

REPO = Path(__file__).resolve().parents[2]
VERSION = re.compile(r"\d+\.\d+(\.\d+)?\S*")
TINY = ["--site", "iea37", "--n-turbines", "16", "--grid-size", "4", "--random-pct", "0"]
TINY += ["--seeds", "0", "--maxiter", "2", "--workers", "1", "-q"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd or REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.parametrize(
    ("module", "name"), [("h5guard.cli", "h5guard"), ("optimizer.cli", "layout-sweep")]
)
def test_version_is_name_then_version(module: str, name: str) -> None:
    proc = run(module, "--version")
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert words[0] == name
    assert VERSION.fullmatch(words[1]), proc.stdout
    assert h5guard.__version__ in proc.stdout  # both are released from one repository


@pytest.fixture(scope="module")
def one_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-config sweep: ``out.h5`` and its temp dir."""
    where = tmp_path_factory.mktemp("sweep")
    proc = run("optimizer.cli", "run", "-o", "out.h5", *TINY, cwd=where)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return where


def test_status_without_a_known_spec_counts_what_is_there(one_config: Path, tmp_path: Path) -> None:
    # An output whose spec is unknown (no sweep_spec at its root, no sweep.json): the
    # result in it is still done, and what is planned or pending cannot be known.
    out = tmp_path / "bare.h5"
    out.write_bytes((one_config / "out.h5").read_bytes())
    with h5py.File(out, "r+") as f:
        del f.attrs["sweep_spec"]
    proc = run("optimizer.cli", "status", "-o", str(out), "--json", cwd=tmp_path)
    doc = json.loads(proc.stdout)
    assert (doc["planned"], doc["done"], doc["failed"], doc["pending"]) == (None, 1, 0, None)
    assert doc["spec_known"] is False
    assert proc.returncode == 1  # cannot say every planned config is done
    text = run("optimizer.cli", "status", "-o", str(out), cwd=tmp_path)
    assert "planned unknown, done 1, failed 0, pending unknown" in text.stdout
    assert "planned 0" not in text.stdout
    assert text.returncode == 1


def test_status_with_its_spec_is_unchanged(one_config: Path) -> None:
    proc = run("optimizer.cli", "status", "-o", "out.h5", "--json", cwd=one_config)
    doc = json.loads(proc.stdout)
    assert (doc["planned"], doc["done"], doc["failed"], doc["pending"]) == (1, 1, 0, 0)
    assert proc.returncode == 0


@pytest.mark.parametrize(
    ("command", "missing"),
    [("run", "py_wake"), ("run", "scipy"), ("report", "py_wake"), ("show", "py_wake")],
)
def test_missing_wind_stack_is_one_line_naming_the_install(
    command: str,
    missing: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # A None entry in sys.modules makes the module unimportable, as when it is absent.
    monkeypatch.setitem(sys.modules, missing, None)
    out = tmp_path / "out.h5"
    args = {
        "run": ["run", "-o", str(out), *TINY],
        "report": ["report", str(out)],
        "show": ["show", str(out), "cfg-0"],
    }[command]
    code = main(args)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1, captured.err
    assert f"layout-sweep {command} needs {missing.replace('_', '-')}" in lines[0]
    assert "pip install ./sweep" in lines[0]
    assert captured.out == ""
    assert not out.exists() and not (tmp_path / "out.h5_temp").exists()  # nothing started


def test_status_infers_the_output_its_temp_dir_recorded(one_config: Path, tmp_path: Path) -> None:
    # From another directory, naming only the temp dir: the output is the one the run
    # recorded there, not ./layouts.h5 (which would count the merged results as pending).
    temp_dir = one_config / "out.h5_temp"
    proc = run("optimizer.cli", "status", "--temp-dir", str(temp_dir), "--json", cwd=tmp_path)
    doc = json.loads(proc.stdout)
    assert doc["output"] == str(one_config / "out.h5")
    assert (doc["planned"], doc["done"], doc["failed"], doc["pending"]) == (1, 1, 0, 0)
    assert proc.returncode == 0, proc.stderr
