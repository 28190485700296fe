"""SIGKILL a real writer process at random moments; no result whose add() returned may be lost."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from h5guard import Sandbox, merge, validate_many
from tests.crash._writer_child import group

CHILD = Path(__file__).with_name("_writer_child.py")


def run_and_kill(directory: Path, log: Path, delay: float) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), str(log), "100000"],
        cwd=Path(__file__).resolve().parents[2],
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def check_directory(directory: Path, log: Path, box: Sandbox) -> int:
    out = directory.parent / f"{directory.name}-out.h5"
    merged = merge(directory, out, sandbox=box)
    assert merged.exit_code == 0 and not merged.lost, merged.render_text()
    report = validate_many([str(out)], sandbox=box)
    assert report.ok, report.render_text()
    present = set(report.files[0].groups)
    promised = set(log.read_text().split()) if log.exists() else set()
    assert promised <= present, f"lost results: {sorted(promised - present)[:5]}"
    # At most the one add() the kill cut short is in the output without being promised.
    assert len(present - promised) <= 1
    with h5py.File(out, "r") as f:
        for key in (k for k in f if not k.startswith("h5guard_")):  # not the summary
            expected = group(int(key[1:]))
            for name, value in expected.items():
                np.testing.assert_array_equal(f[key][name][()], value)
    assert not list(directory.glob("*.journal")) and not list(directory.glob("*.partial"))
    return len(present)


def trials(n: int, tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    with Sandbox(workers=2, timeout=30) as box:
        for t in range(n):
            directory = tmp_path / f"t{t}"
            directory.mkdir()
            log = tmp_path / f"t{t}.log"
            # Start-up (imports) takes ~0.3 s; kill anywhere from before the first write
            # to deep into the commit loop.
            run_and_kill(directory, log, rnd.uniform(0.2, 1.2))
            check_directory(directory, log, box)


@pytest.mark.slow
def test_sigkill_writer_loses_nothing_committed(tmp_path: Path) -> None:
    trials(8, tmp_path, seed=1)


@pytest.mark.campaign
def test_sigkill_writer_campaign(tmp_path: Path) -> None:
    trials(200, tmp_path, seed=2)
