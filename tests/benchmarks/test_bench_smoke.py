"""The safety-cost and million-results benchmarks run at tiny sizes and print their rows.

Behaviour only: each script exits 0 and prints a ratio on every figure row. No time is
asserted (the machine is shared; the figures belong in docs/figures.md, not in tests).
Both scripts run at once, as two processes, so the test costs the longer of the two.
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
# One figure per row of #24's table (some rows print two figures).
SAFETY_ROWS = (
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
)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    for script in ("bench_safety_cost.py", "bench_million.py"):
        work = tmp_path_factory.mktemp(script.removesuffix(".py"))
        cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--workdir", str(work)]
        procs[script] = (
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            ),
            work,
        )
    out: dict[str, list[str]] = {}
    for script, (proc, work) in procs.items():
        stdout, stderr = proc.communicate(timeout=600)  # a hang guard, not a timing assertion
        assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{stderr}{stdout}"
        assert list(work.iterdir()) == [], f"{script} left its work directory behind"
        out[script] = stdout.splitlines()
    return out


def figure_rows(lines: list[str]) -> list[str]:
    return [ln for ln in lines if VERDICT.search(ln.rstrip())]


@pytest.mark.slow
def test_safety_cost_prints_a_ratio_per_row(outputs: dict[str, list[str]]) -> None:
    lines = outputs["bench_safety_cost.py"]
    rows = figure_rows(lines)
    names = {ln.split("  ")[0].strip() for ln in rows}
    for expected in SAFETY_ROWS:
        assert expected in names, (expected, sorted(names))
    for ln in rows:
        assert RATIO.search(ln), ln
    assert re.search(r"load average [\d.]+", lines[0]), lines[0]


@pytest.mark.slow
def test_million_prints_a_ratio_per_row(outputs: dict[str, list[str]]) -> None:
    lines = outputs["bench_million.py"]
    rows = figure_rows(lines)
    assert rows
    for ln in rows:
        assert RATIO.search(ln), ln
    # Every step appears in the summary table with its growth per 10x.
    table = [ln for ln in lines if re.search(r"s +\d+\.\d+x$", ln.rstrip()) and "ratio" not in ln]
    assert len(table) == 11, table
    assert re.search(r"load average [\d.]+", lines[0]), lines[0]
