"""bench_incremental.py runs at tiny sizes and prints every row with its verdict.

Behaviour only: the script exits 0 and prints a ratio for each case and row. No time is
asserted (the machine is shared; speed targets live in the script's own output).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_incremental_prints_a_verdict_per_case() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "H5GUARD_SEGMENT_THRESHOLD": "1"}
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_incremental.py"),
        "--size-mib",
        "2",
        "--tiny",
        "200",
        "--plan",
        "100,300",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = [ln for ln in proc.stdout.splitlines() if ln.rstrip().endswith(("PASS", "MISS"))]
    assert len(rows) == 2, proc.stdout
    assert "plan_merge growth per 10x" in proc.stdout


@pytest.mark.slow
def test_incremental_many_prints_a_median_per_tenth() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_incremental.py"), "--many", "20"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = [ln for ln in proc.stdout.splitlines() if "merges:" in ln and "median" in ln]
    assert len(rows) == 10, proc.stdout
    assert "last tenth / first tenth" in proc.stdout
    # Folding keeps the output's segments few: 20 merges without it would list 21.
    last_segments = int(rows[-1].split("merges:")[1].split("segments")[0])
    assert last_segments < 20, proc.stdout
