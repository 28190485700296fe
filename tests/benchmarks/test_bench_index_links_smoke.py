"""bench_index_links.py runs at tiny sizes and prints a row per size and a growth line.

Behaviour only: no time is asserted (the figures belong in docs/merge.md, measured by
the script itself). The free-space record count is a fact of the files it made, so it
is checked: more links, more records.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\s+([\d,]+) links .* ([\d,]+) free-space records\):(  \S.* ms)+$")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_index_links.py"), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_index_links_prints_a_row_per_size_and_the_growth() -> None:
    proc = run("--sizes", "300,3000,30000", "--rounds", "3")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = [m for m in map(ROW.match, proc.stdout.splitlines()) if m]
    assert [int(m.group(1).replace(",", "")) for m in rows] == [300, 3000, 30000], proc.stdout
    records = [int(m.group(2).replace(",", "")) for m in rows]
    assert records[0] < records[1] < records[2], proc.stdout
    growth = [ln for ln in proc.stdout.splitlines() if "->" in ln]
    assert len(growth) == 2 and all("20 links" in ln for ln in growth), proc.stdout


def test_index_links_refuses_bad_sizes_in_one_line() -> None:
    proc = run("--sizes", "10,many")
    assert proc.returncode == 2
    assert "--sizes: expected numbers" in proc.stderr and "Traceback" not in proc.stderr
