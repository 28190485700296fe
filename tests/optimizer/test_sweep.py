"""The sweep end to end with real PyWake, real worker processes and real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import h5guard
from h5guard import check, exclusive
from optimizer import LocalEngine, expand_spec, read_state, run_sweep
from optimizer.layouts import boundary_violation, spacing_violation
from optimizer.sites import get_site
from optimizer.summary import iter_records

SPEC: dict[str, Any] = {
    "sweep": [
        {
            "site": "iea37",
            "n_turbines": 16,
            "grid_size": [4, 5],
            "random_pct": [25],
            "seeds": [0, 1],
        }
    ],
    "optimizer": {"maxiter": 15, "tol": 1e-6},
}
TOML = """
[[sweep]]
site = "iea37"
n_turbines = 16
grid_size = [4, 5]
random_pct = [25]
seeds = [0, 1]

[optimizer]
maxiter = 15
"""


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optimizer.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "layouts.h5"
    with LocalEngine(workers=2) as engine:
        result = run_sweep(SPEC, output=str(out), engine=engine)
    assert result.exit_code == 0
    assert result.computed_ok == 4
    return out


def test_output_checks_clean_and_holds_every_config_once(sweep: Path) -> None:
    report = check([sweep])
    assert report.ok, report.render_text()
    planned = {c.config_id for c in expand_spec(SPEC)}
    with h5py.File(sweep, "r") as f:
        assert set(f) - {"h5guard_summary"} == planned
        assert f.attrs["total_configs"] == 4
        assert f.attrs["successful_configs"] == 4
        assert json.loads(f.attrs["sweep_spec"]) == SPEC


def test_every_layout_is_feasible_and_improves(sweep: Path) -> None:
    site = get_site("iea37")
    records = list(iter_records(str(sweep)))
    assert len(records) == 4
    with h5py.File(sweep, "r") as f:
        for r in records:
            layout = f[r.key]["layout"][()]
            assert layout.shape == (16, 2)
            assert boundary_violation(site, 16, layout).max() <= 1e-3
            assert spacing_violation(site, layout) <= 1e-3
            assert r.attrs["aep_gwh"] >= r.attrs["initial_aep_gwh"] - 1e-6
            assert r.attrs["iterations"] > 0 and r.attrs["aep_evaluations"] > 0
            versions = json.loads(r.attrs["versions"])
            assert "py-wake" in versions and "h5guard" in versions


def test_merged_output_opens_in_pandas_in_one_line(sweep: Path) -> None:
    df = h5guard.to_dataframe(sweep)
    assert sorted(df.index) == sorted(c.config_id for c in expand_spec(SPEC))
    assert set(df["status"]) == {"ok"}
    assert (df["aep_gwh"] >= df["initial_aep_gwh"] - 1e-6).all()


def test_rerun_computes_nothing(sweep: Path) -> None:
    with LocalEngine(workers=1) as engine:
        result = run_sweep(SPEC, output=str(sweep), engine=engine)
    assert result.computed_ok == 0 and result.skipped == 4
    assert result.exit_code == 0


def test_status_from_files(sweep: Path) -> None:
    state, spec = read_state(str(sweep), f"{sweep}_temp")
    assert spec == SPEC
    assert state.counts() == {"planned": 4, "done": 4, "failed": 0, "pending": 0}
    proc = cli("status", "-o", str(sweep), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["planned"], doc["done"], doc["pending"], doc["running"]) == (4, 4, 0, None)


def test_failures_are_recorded_and_retried(tmp_path: Path) -> None:
    configs = expand_spec(SPEC)
    raising, killing = configs[0].config_id, configs[1].config_id
    (tmp_path / "spec.toml").write_text(TOML)
    fault = {"LAYOUT_SWEEP_FAULT": f"{raising}:raise,{killing}:kill"}
    proc = cli(
        "run", "spec.toml", "-o", "out.h5", "--workers", "2", "--json", env=fault, cwd=tmp_path
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["counts"] == {"planned": 4, "done": 2, "failed": 2, "pending": 0}
    errors = {f["config_id"]: f["error"] for f in doc["failed"]}
    assert "injected fault" in errors[raising]
    assert "died 3 times" in errors[killing] or "worker process died" in errors[killing]
    assert doc["check_ok"] is True
    with h5py.File(tmp_path / "out.h5", "r") as f:
        fails = [k for k in f if k.startswith("fail-")]
        assert len(fails) == 2
        tb = {f[k].attrs["config_id"].decode(): f[k].attrs["traceback"].decode() for k in fails}
        assert "RuntimeError: injected fault" in tb[raising]
    # Without --retry-failed, failed configs are skipped; with it, they run again.
    proc = cli("run", "spec.toml", "-o", "out.h5", "--json", cwd=tmp_path)
    assert json.loads(proc.stdout)["skipped"] == 4
    proc = cli("run", "spec.toml", "-o", "out.h5", "--json", "--retry-failed", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["counts"] == {"planned": 4, "done": 4, "failed": 0, "pending": 0}
    assert doc["computed_ok"] == 2


def test_second_run_on_same_temp_dir_is_refused(tmp_path: Path) -> None:
    temp = tmp_path / "out.h5_temp"
    temp.mkdir()
    with exclusive(temp / "run", timeout=0, purpose="another run"):
        proc = cli("run", "-o", str(tmp_path / "out.h5"), "-q")
    assert proc.returncode == 2
    assert "another layout-sweep run is using this temp dir" in proc.stderr
    assert "another run" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--site", "atlantis"], "site: expected one of"),
        (["run", "--random-pct", "-5"], "random_pct: expected a value in [0, 100], got -5.0"),
        (["run", "--n-turbines", "64", "--grid-size", "2", "--random-pct", "0"], "grid"),
        (["run", "missing.toml"], "missing.toml: cannot read spec"),
        (["run", "bad.toml"], "bad.toml: not valid TOML"),
        (["run", "-o", "/nonexistent/dir/out.h5"], "does not exist"),
        (["run", "--workers", "0"], "expected at least 1 worker"),
        (["run", "--scheduler", "tcp://x:1"], "--scheduler needs --engine dask"),
        (["status"], "nothing to show"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "bad.toml").write_text("[[sweep]\n")
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_unwritable_output_dir(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        # root ignores permission bits; /proc refuses file creation even to root.
        target = "/proc/out.h5" if os.access(locked, os.W_OK) else str(locked / "out.h5")
        proc = cli("run", "-o", target, "-q")
    finally:
        locked.chmod(0o700)
    assert proc.returncode == 2
    assert "is not writable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_layouts_are_deterministic(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "again.h5"
    spec = {**SPEC, "sweep": [{**SPEC["sweep"][0], "grid_size": [4]}]}
    with LocalEngine(workers=1) as engine:
        run_sweep(spec, output=str(out), engine=engine)
    with h5py.File(sweep, "r") as a, h5py.File(out, "r") as b:
        for key in (k for k in b if not k.startswith("h5guard_")):  # not the summary
            np.testing.assert_array_equal(a[key]["layout"][()], b[key]["layout"][()])
