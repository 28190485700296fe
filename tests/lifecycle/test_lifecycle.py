"""The guarantee, in every ordinary lifecycle of the pools and executors people use.

Each cell runs a real pipeline in a fresh process (``_driver.py``): workers keep a
ShardWriter for their whole life (or make one per task), the parent records every key
whose ``add()`` returned, then the pool ends the way the cell says. After that the
merge must hold every recorded key, exit 0, and its output must pass ``check``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from h5guard import check, merge
from h5guard._journal import writer_alive
from tests.lifecycle._pipelines import key_of, payload

DRIVER = Path(__file__).with_name("_driver.py")
REPO = Path(__file__).resolve().parents[2]

ENDINGS = ("close", "terminate", "sigkill", "exception", "interrupt")
CELLS = [
    *[("mp-fork", e) for e in (*ENDINGS, "fork")],
    *[("mp-spawn", e) for e in ENDINGS],
    *[("ppe-fork", e) for e in (*ENDINGS, "fork")],
    *[("ppe-spawn", e) for e in ENDINGS],
    *[("loky", e) for e in ENDINGS],
    ("joblib-main", "close"),
    ("joblib-main", "terminate"),
    *[
        pytest.param("dask", e, marks=pytest.mark.slow)
        for e in ("close", "terminate", "sigkill", "exception")
    ],
]


def wait_for_writers(directory: Path, timeout: float = 60.0) -> None:
    """Workers of an executor may outlive its shutdown() by a moment."""
    deadline = time.monotonic() + timeout
    while any(writer_alive(j) for j in directory.glob("*.journal")):
        assert time.monotonic() < deadline, "a writer process never went away"
        time.sleep(0.1)


@pytest.mark.parametrize(("executor", "ending"), CELLS)
def test_every_returned_add_is_merged(tmp_path: Path, executor: str, ending: str) -> None:
    directory = tmp_path / "tmp"
    proc = subprocess.run(
        [sys.executable, str(DRIVER), executor, ending, str(directory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    promised = set(json.loads(proc.stdout.strip().splitlines()[-1])["promised"])
    assert len(promised) >= 12, promised
    wait_for_writers(directory)
    out = tmp_path / "out.h5"
    report = merge(directory, out, workers=1)
    assert report.exit_code == 0, report.render_text()
    assert not report.lost
    with h5py.File(out, "r") as f:
        stored = set(f)
        for key in promised - {"parent-a", "parent-b"}:
            i = int(key[1:])
            np.testing.assert_array_equal(f[key]["v"][()], payload(i)[0]["v"])
    assert promised <= stored, f"lost: {sorted(promised - stored)}"
    assert check([out]).ok
    # Nothing is left behind for a later merge to trip over.
    assert not list(directory.glob("*.journal")) and not list(directory.glob("*.partial"))


def test_key_names_match_the_pipeline() -> None:
    assert key_of(7) == "k007"
