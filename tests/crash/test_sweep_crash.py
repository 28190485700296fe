"""SIGKILL a real sweep (the main process, or one worker) and resume it to completion."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from h5guard import check
from optimizer import expand_spec, load_spec
from tests.procs import children

TOML = """
[[sweep]]
site = "iea37"
n_turbines = 16
grid_size = [4, 5]
random_pct = [25, 50]
seeds = [0, 1, 2, 3]

[optimizer]
maxiter = 60
"""


def start(tmp_path: Path, *, stderr: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "optimizer.cli",
            "run",
            "spec.toml",
            "-o",
            "out.h5",
            "--workers",
            "2",
            "-q",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def assert_complete(tmp_path: Path) -> None:
    planned = {c.config_id for c in expand_spec(load_spec(str(tmp_path / "spec.toml")))}
    report = check([tmp_path / "out.h5"])
    assert report.ok, report.render_text()
    with h5py.File(tmp_path / "out.h5", "r") as f:
        keys = [k for k in f if k.startswith("cfg-")]
        assert sorted(keys) == sorted(planned)  # every config exactly once (keys are unique)
        assert all(f[k].attrs["status"] == b"ok" for k in keys)
    leftovers = list((tmp_path / "out.h5_temp").glob("*.h5"))
    assert leftovers == []


def resume(tmp_path: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "optimizer.cli", "run", "spec.toml", "-o", "out.h5", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def wait_for_first_shard(tmp_path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while not list((tmp_path / "out.h5_temp").glob("worker-*.h5")):
        assert proc.poll() is None, "the run ended before any shard was committed"
        assert time.monotonic() < deadline, "no shard committed within 120 s"
        time.sleep(0.02)


def kill_main_and_resume(tmp_path: Path, delay: float) -> None:
    (tmp_path / "spec.toml").write_text(TOML)
    proc = start(tmp_path)
    wait_for_first_shard(tmp_path, proc)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The workers die with their parent (PR_SET_PDEATHSIG), so nothing is left running.
    doc = resume(tmp_path)
    assert isinstance(doc["skipped"], int) and doc["skipped"] >= 1  # committed work was kept
    assert_complete(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.8])
def test_kill_main_process_then_resume(tmp_path: Path, delay: float) -> None:
    kill_main_and_resume(tmp_path, delay)


@pytest.mark.slow
def test_kill_a_worker_run_completes(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text(TOML)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "optimizer.cli",
            "run",
            "spec.toml",
            "-o",
            "out.h5",
            "--workers",
            "2",
            "--json",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_for_first_shard(tmp_path, proc)
    victims = children(proc.pid)
    assert victims, "no worker process found"
    os.kill(victims[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    doc = json.loads(out)
    assert doc["worker_deaths"] >= 1
    assert doc["counts"] == {"planned": 16, "done": 16, "failed": 0, "pending": 0}
    assert_complete(tmp_path)


@pytest.mark.campaign
def test_kill_main_campaign(tmp_path: Path) -> None:
    rnd = random.Random(7)
    for trial in range(30):
        directory = tmp_path / f"t{trial}"
        directory.mkdir()
        kill_main_and_resume(directory, rnd.uniform(0.0, 3.0))
