"""The Dask engine: same results as the local engine, and it survives killed workers.

Every run goes through the real CLI in a subprocess, on a real 2-worker LocalCluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from h5guard import check
from optimizer import expand_spec, load_spec
from tests.procs import descendants

pytest.importorskip("distributed", reason="the dask extra is not installed")

TOML = """
[[sweep]]
site = "iea37"
n_turbines = 16
grid_size = [4, 5]
random_pct = [25, 50]
seeds = [0, 1]

[optimizer]
maxiter = 40
"""


def run(
    tmp_path: Path, *extra: str, env: dict[str, str] | None = None, output: str = "out.h5"
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "optimizer.cli",
            "run",
            "spec.toml",
            "-o",
            output,
            "--workers",
            "2",
            "--json",
            *extra,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, dict[str, object], str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, (json.loads(out) if out.strip() else {}), err


def planned(tmp_path: Path) -> set[str]:
    return {c.config_id for c in expand_spec(load_spec(str(tmp_path / "spec.toml")))}


def wait_for_shard(tmp_path: Path, proc: subprocess.Popen[str], output: str = "out.h5") -> None:
    deadline = time.monotonic() + 180
    while not list((tmp_path / f"{output}_temp").glob("worker-*.h5")):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_dask_gives_the_same_results_as_local(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text(TOML)
    code, doc, err = finish(run(tmp_path, "--engine", "dask", output="dask.h5"))
    assert code == 0, err
    code, _, err = finish(run(tmp_path, output="local.h5"))
    assert code == 0, err
    assert doc["counts"] == {"planned": 8, "done": 8, "failed": 0, "pending": 0}
    with h5py.File(tmp_path / "dask.h5", "r") as d, h5py.File(tmp_path / "local.h5", "r") as loc:
        assert set(d) == set(loc) == planned(tmp_path) | {"h5guard_summary"}
        for key in planned(tmp_path):
            np.testing.assert_array_equal(d[key]["layout"][()], loc[key]["layout"][()])
    assert check([tmp_path / "dask.h5"]).ok


@pytest.mark.slow
def test_dask_worker_killed_mid_run(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text(TOML)
    proc = run(tmp_path, "--engine", "dask")
    wait_for_shard(tmp_path, proc)
    # A LocalCluster's nannies live in the client process; the workers are its
    # multiprocessing children (next to the resource tracker).
    victims = [
        p for p in descendants(proc.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
    ]
    assert victims, "no Dask worker process found"
    os.kill(victims[0], signal.SIGKILL)
    code, doc, err = finish(proc)
    assert code == 0, err
    assert doc["counts"] == {"planned": 8, "done": 8, "failed": 0, "pending": 0}
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert set(f) - {"h5guard_summary"} == planned(tmp_path)


@pytest.mark.slow
def test_dask_config_that_always_kills_its_worker_fails_alone(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text(TOML)
    killer = sorted(planned(tmp_path))[0]
    code, doc, err = finish(
        run(tmp_path, "--engine", "dask", env={"LAYOUT_SWEEP_FAULT": f"{killer}:kill"})
    )
    assert code == 1, err
    assert doc["counts"] == {"planned": 8, "done": 7, "failed": 1, "pending": 0}
    [failure] = doc["failed"]  # type: ignore[misc]
    assert failure["config_id"] == killer
    assert "killed" in failure["error"]


@pytest.mark.slow
def test_dask_client_killed_then_resumed(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text(TOML)
    proc = run(tmp_path, "--engine", "dask")
    wait_for_shard(tmp_path, proc)
    family = [proc.pid, *descendants(proc.pid)]
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.communicate()
    code, doc, err = finish(run(tmp_path, "--engine", "dask"))
    assert code == 0, err
    assert isinstance(doc["skipped"], int) and doc["skipped"] >= 1
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert set(f) - {"h5guard_summary"} == planned(tmp_path)
    assert check([tmp_path / "out.h5"]).ok


def test_dask_temp_dir_must_be_shared(tmp_path: Path) -> None:
    from optimizer.dask_engine import probe_temp_dir

    assert probe_temp_dir(str(tmp_path)) == ""
    assert "cannot write" in probe_temp_dir(str(tmp_path / "missing"))
