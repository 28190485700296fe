"""``h5guard check`` on the committed fixtures, through a real process each time.

The fixtures and their expected outcomes are in fixtures/ (made by
fixtures/make_fixtures.py, described in fixtures/README.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
CASES: dict[str, dict[str, Any]] = EXPECTED["fixtures"]

CHECK_TIMEOUT = 5.0
# The checker's own timeout plus interpreter and sandbox start-up on a loaded machine.
RETURN_WITHIN = CHECK_TIMEOUT + 10.0
# Far above RETURN_WITHIN so that a wedged checker fails the test instead of hanging it.
PROCESS_TIMEOUT = 120.0


def run_check(path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "h5guard.cli",
            "check",
            str(path),
            "--json",
            "--timeout",
            str(CHECK_TIMEOUT),
        ],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        cwd=path.parent,
        check=False,
    )
    return proc, time.monotonic() - started


def test_every_fixture_has_an_expectation() -> None:
    on_disk = {p.name for p in FIXTURES.glob("*.h5")}
    assert on_disk == set(CASES)


# hang.h5 costs the full check timeout, so it has one test of its own below.
@pytest.mark.parametrize("name", sorted(set(CASES) - {"hang.h5"}))
def test_check_classifies_fixture(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    path = tmp_path / name
    shutil.copyfile(FIXTURES / name, path)

    proc, elapsed = run_check(path)

    assert proc.returncode == case["exit"], proc.stderr
    report = json.loads(proc.stdout)
    found = {f["code"] for f in report["findings"]}
    assert set(case["codes"]) <= found, report["findings"]
    assert report["ok"] is (case["exit"] == 0)
    assert report["files_checked"] == 1
    assert elapsed < RETURN_WITHIN, f"check took {elapsed:.1f} s"


def test_hang_fixture_is_reported_as_timeout(tmp_path: Path) -> None:
    path = tmp_path / "hang.h5"
    shutil.copyfile(FIXTURES / "hang.h5", path)

    proc, elapsed = run_check(path)

    assert proc.returncode == CASES["hang.h5"]["exit"], proc.stderr
    report = json.loads(proc.stdout)
    assert [(f["object"], f["code"]) for f in report["findings"]] == [("/", "TIMEOUT")]
    # It must have waited for the limit (a quick exit would mean it did not hang).
    assert CHECK_TIMEOUT <= elapsed < RETURN_WITHIN, f"check took {elapsed:.1f} s"


def test_regeneration_is_byte_identical(tmp_path: Path) -> None:
    # --no-verify skips the seconds-long self-checks; it writes the same bytes.
    out = tmp_path / "regen"
    proc = subprocess.run(
        [sys.executable, str(FIXTURES / "make_fixtures.py"), "--no-verify", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    made = {p.name for p in out.iterdir()}
    assert made == {*CASES, "expected.json"}
    versions = EXPECTED["generated_with"]
    for name in sorted(made):
        assert (out / name).read_bytes() == (FIXTURES / name).read_bytes(), (
            f"{name} differs from the committed fixture (generated with h5py "
            f"{versions['h5py']}, HDF5 {versions['hdf5']}); if the change is intended "
            "(e.g. the shard layout changed), run: python fixtures/make_fixtures.py"
        )
