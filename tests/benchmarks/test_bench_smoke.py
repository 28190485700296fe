"""The safety-cost and million-results benchmarks run at tiny sizes and print their rows.

Behaviour only: each script exits 0 and prints a ratio on every figure row. No time is
asserted (the machine is shared; the figures belong in docs/figures.md, not in tests).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERDICT = re.compile(r"\b(PASS|MISS)$")
RATIO = re.compile(r"ratio +\d+\.\d+x")


def run(script: str, tmp_path: Path, *extra: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / script),
            "--quick",
            "--workdir",
            str(tmp_path),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard, not a timing assertion
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert list(tmp_path.iterdir()) == [], "the work directory was not cleaned up"
    return proc.stdout.splitlines()


def figure_rows(lines: list[str]) -> list[str]:
    return [ln for ln in lines if VERDICT.search(ln.rstrip())]


@pytest.mark.slow
def test_safety_cost_prints_a_ratio_per_row(tmp_path: Path) -> None:
    lines = run("bench_safety_cost.py", tmp_path)
    rows = figure_rows(lines)
    names = {ln.split("  ")[0].strip() for ln in rows}
    # One figure per row of #24's table (some rows print two figures).
    for expected in (
        "merge",
        "writer-big time",
        "writer-big peak RSS",
        "merge-big peak RSS",
        "writer-tiny every=100",
        "writer-tiny every=1000",
        "iter verify=True",
        "iter verify=False",
        "to_dataframe",
        "read() per key",
        "check deep",
        "check quick layer",
    ):
        assert expected in names, (expected, sorted(names))
    for ln in rows:
        assert RATIO.search(ln), ln
    assert re.search(r"load average [\d.]+", lines[0])


@pytest.mark.slow
def test_million_prints_a_ratio_per_row(tmp_path: Path) -> None:
    lines = run("bench_million.py", tmp_path)
    rows = figure_rows(lines)
    assert rows
    for ln in rows:
        assert RATIO.search(ln), ln
    # Every step appears in the table with its growth per 10x.
    table = [ln for ln in lines if ln.rstrip().endswith("x") and "s " in ln and "ratio" not in ln]
    assert len(table) == 11, table
