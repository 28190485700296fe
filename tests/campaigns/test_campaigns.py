"""Short versions of the fault-injection campaigns (default suite), the long ones on demand.

The long campaigns (``-m campaign``) are what ``python -m campaigns NAME --budget S``
runs. The short ones exercise every campaign's machinery for a few seconds and hold it
to the same invariants; every I/O-error injection point is its own test, and the lock
test below pins the stale-holder race the concurrency campaign found.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from campaigns import (
    CAMPAIGNS,
    concurrency,
    corruption,
    crash,
    fuzz,
    ioerror,
    render_result,
    run_campaign,
)
from campaigns._checker import FLAGGED, Checker, Variant
from campaigns._common import CampaignResult, stop
from h5guard import Sandbox, merge

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"


def assert_ok(result: CampaignResult) -> None:
    assert result.ok, render_result(result, markdown=False)


# -- short versions ----------------------------------------------------------------------------
def test_corruption_short() -> None:
    result = corruption.run(budget=6, seed=1)
    assert_ok(result)
    rows = {r.scenario: r for r in result.rows}
    for origin in ("h5guard", "foreign"):
        assert rows[f"{origin}: truncation"].flagged == rows[f"{origin}: truncation"].runs > 0
        assert rows[f"{origin}: 0-byte"].flagged == rows[f"{origin}: 0-byte"].runs > 0
        assert any(s.startswith(f"{origin}: flip/overwrite") for s in rows)
        assert rows[f"{origin}: all"].runs > 100


def test_checker_reports_a_libhdf5_hang_as_a_timeout_finding(tmp_path: Path) -> None:
    """The hang fixture spins libhdf5 forever: it must come back as a TIMEOUT flag."""
    with Checker(tmp_path, tmp_path / "keep", timeout=1.5) as checker:
        checker.add_reference("foreign.h5", FIXTURES / "foreign.h5")
        hang = Variant("foreign", "foreign.h5", "r", "hang.h5", (FIXTURES / "hang.h5").read_bytes())
        good = Variant("foreign", "foreign.h5", "r", "copy", (FIXTURES / "foreign.h5").read_bytes())
        started = time.monotonic()
        out = checker.check([hang, good])
    assert time.monotonic() - started < 30
    assert (out[0].kind, out[0].detail) == (FLAGGED, "TIMEOUT")
    assert out[1].kind == "passed"


def test_crash_short() -> None:
    result = crash.run(budget=8, seed=1, parts=("writer", "merge"))
    assert_ok(result)
    assert all(r.runs >= 2 and r.passed == r.runs for r in result.rows)


@pytest.fixture(scope="module")
def merge_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ioerror.make_merge_template(tmp_path_factory.mktemp("ioerror") / "template")


CASES = [("writer", s) for s in ioerror.WRITER_STEPS] + [("merge", s) for s in ioerror.MERGE_STEPS]


@pytest.mark.parametrize(("protocol", "step"), CASES)
def test_ioerror_short(
    protocol: str, step: str, tmp_path: Path, sandbox: Sandbox, merge_template: Path
) -> None:
    result = CampaignResult("ioerror")
    fault = ioerror.Fault(step, errno.EIO, 1)
    row = ioerror.run_case(result, tmp_path / "case", protocol, fault, sandbox, merge_template)
    assert row.runs == 1, "the injection point was never reached"
    assert_ok(result)
    if protocol == "writer":
        # A one-off fault in an automatic commit inside add() is healed by the next
        # commit (the results wait in the journal): nothing to tell the caller.
        assert row.passed == 1 and not row.silent
    else:
        assert row.flagged == row.passed == 1


@pytest.mark.parametrize("step", ioerror.WRITER_STEPS)
def test_ioerror_writer_lasting_fault_reaches_the_caller(
    step: str, tmp_path: Path, sandbox: Sandbox, merge_template: Path
) -> None:
    """A fault that stays (every call fails): close() says so, and the merge recovers
    every result whose add() returned from the journal."""
    result = CampaignResult("ioerror")
    fault = ioerror.Fault(step, errno.EIO, 0)
    row = ioerror.run_case(result, tmp_path / "case", "writer", fault, sandbox, merge_template)
    assert row.runs == 1, "the injection point was never reached"
    assert_ok(result)
    assert row.flagged == row.passed == 1


def test_ioerror_real_full_disk(tmp_path: Path, sandbox: Sandbox) -> None:
    """A real full tmpfs (root only): the merge is refused up front, everything intact."""
    result = CampaignResult("ioerror")
    only = ("disk full: merge (refused up front)",)
    ioerror.run_full_disk(result, tmp_path / "tmpfs", sandbox, only=only)
    row = result.row("disk full: merge (refused up front)")
    if row.runs == 0:
        pytest.skip("; ".join(result.notes) or "tmpfs not available")
    assert_ok(result)
    assert row.flagged == row.passed == 1


def test_concurrency_short() -> None:
    result = concurrency.run(budget=8, seed=1)
    assert_ok(result)
    rows = {r.scenario: r for r in result.rows}
    assert all(r.runs >= 1 and r.passed == r.runs for r in rows.values())


def test_fuzz_short() -> None:
    result = fuzz.run(budget=6, seed=1)
    assert_ok(result)
    quick = next(r for r in result.rows if r.scenario.startswith("quick_check"))
    assert quick.runs > 100
    assert sum(r.runs for r in result.rows if r.scenario.startswith("validate_many")) > 20


def test_fuzz_quick_layer_with_hypothesis(tmp_path: Path) -> None:
    """The fallback engine (CI installs no atheris) works too."""
    result = CampaignResult("fuzz")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for p in FIXTURES.glob("*.h5"):
        shutil.copyfile(p, corpus / p.name)
    fuzz._quick_layer(result, corpus, 2.0, 1, tmp_path / "keep", "hypothesis")
    assert_ok(result)
    assert result.rows[0].runs > 50


def test_main_prints_a_markdown_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "campaigns", "fuzz", "--budget", "3", "--markdown"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("| campaign | scenario | runs | flagged | passed-unchanged |")


# -- reproducers of broken invariants -----------------------------------------------------------
_SLOW_HOLDER = """
import sys, time
from unittest import mock
from h5guard import _lock
real = _lock.os.replace
def slow_replace(src, dst):
    if str(dst).endswith(".lock.info"):
        print("holding", flush=True)
        time.sleep(30)
    real(src, dst)
with mock.patch.object(_lock.os, "replace", slow_replace):
    with _lock.exclusive(sys.argv[1], timeout=5, purpose="slow holder"):
        pass
"""


def test_lock_loser_names_the_current_holder(tmp_path: Path) -> None:
    """Found by the concurrency campaign (4 merges at once, lock timeout 0): a loser read
    lock.info before the new holder had rewritten it and named the previous holder."""
    for d, i in (("a", 0), ("b", 1)):
        concurrency.write_fake_shards(tmp_path / d, i, concurrency._result_schema())
    out = tmp_path / "out.h5"
    merge(tmp_path / "a", out, workers=1)  # lock.info now names this (pytest) process
    holder = subprocess.Popen(
        [sys.executable, "-c", _SLOW_HOLDER, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        loser = subprocess.run(
            [
                sys.executable,
                "-m",
                "h5guard.cli",
                "merge",
                str(tmp_path / "b"),
                "-o",
                str(out),
                "--lock-timeout",
                "0",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        stop(holder)
    assert loser.returncode == 2
    info = json.loads((tmp_path / "out.h5.lock.info").read_text())
    assert info["pid"] == os.getpid()  # the stale record the loser read
    assert f"pid {holder.pid}" in loser.stderr, loser.stderr


# -- long versions (deselected by default; -m campaign) ------------------------------------------
@pytest.mark.campaign
@pytest.mark.parametrize("name", CAMPAIGNS)
def test_campaign_long(name: str) -> None:
    budget = float(os.environ.get("CAMPAIGN_BUDGET", "120"))
    result = run_campaign(name, budget, seed=int(os.environ.get("CAMPAIGN_SEED", "0")))
    print(render_result(result, markdown=True))
    assert_ok(result)
