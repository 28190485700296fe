"""Record-run options (lattice starts, WEC, the fast evaluator) from spec to checked output."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from py_wake.literature.iea37_case_study1 import IEA37CaseStudy1

from optimizer.config import SpecError, SweepConfig, expand_spec, load_spec
from optimizer.optimize import optimize_layout

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "benchmarks" / "specs"

TOML = """
[[sweep]]
site = "iea37"
n_turbines = 16
start = "lattice"
seeds = [0, 1]
ring_mode = "paired"
lattice_offset = "symmetric"

[[sweep]]
site = "iea37"
n_turbines = 16
start = "grid"
grid_size = 5
random_pct = 100
seeds = [0]
wec = [3.0, 2.0, 1.4]

[optimizer]
maxiter = 20
tol = 1e-6
evaluator = "fast"
"""


def run(*args: str, module: str = "optimizer.cli") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )


def test_configs_without_the_new_options_keep_their_ids() -> None:
    base = {
        "site": "iea37",
        "n_turbines": 16,
        "start": "grid",
        "grid_size": 4,
        "random_pct": 25.0,
        "seed": 3,
        "method": "SLSQP",
        "maxiter": 100,
        "tol": 1e-6,
    }
    # The id as it was computed before wec / wec_tol / evaluator existed.
    old = (
        "cfg-"
        + hashlib.sha256(
            json.dumps(base, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()[:16]
    )
    assert SweepConfig.from_mapping(base).config_id == old
    explicit = {**base, "wec": [], "wec_tol": 0.01, "evaluator": "pywake"}
    assert SweepConfig.from_mapping(explicit).config_id == old
    assert SweepConfig.from_mapping({**base, "evaluator": "fast"}).config_id != old
    assert SweepConfig.from_mapping({**base, "wec": [2, 1.5]}).config_id != old
    assert SweepConfig.from_mapping({**base, "ring_turbines": [4, 12]}).config_id == old
    assert SweepConfig.from_mapping({**base, "ring_turbines": [8, 8]}).config_id != old
    assert SweepConfig.from_mapping({**base, "lattice_offset": "random"}).config_id == old
    assert SweepConfig.from_mapping({**base, "lattice_offset": "symmetric"}).config_id != old


def test_wec_schedule_is_one_value_and_a_list_of_lists_is_an_axis() -> None:
    one = expand_spec({"sweep": [{"n_turbines": 16, "wec": [3, 2, 1.5]}]})
    assert [c.wec for c in one] == [(3.0, 2.0, 1.5)]
    axis = expand_spec({"sweep": [{"n_turbines": 16, "wec": [[3, 2], [2.5]]}]})
    assert [c.wec for c in axis] == [(3.0, 2.0), (2.5,)]
    # A config round-trips through its canonical form (what workers receive).
    config = one[0]
    assert SweepConfig.from_mapping(config.canonical()) == config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"wec": [3, 0.5]}, r"wec: expected wake expansion factors >= 1, got \[3, 0.5\]"),
        ({"wec": "3,2"}, "wec: expected a list of wake expansion factors >= 1"),
        ({"wec_tol": 0}, r"wec_tol: expected a value in \(0, 1\]"),
        ({"evaluator": "gpu"}, r"evaluator: expected one of \['pywake', 'fast'\], got 'gpu'"),
        ({"site": "hornsrev1", "evaluator": "fast"}, "evaluator: 'fast' covers only site"),
        ({"site": "hornsrev1", "wec": [2]}, "wec: wake expansion continuation exists only"),
        ({"start": "hexagon"}, r"start: expected one of \['grid', 'baseline', 'lattice'\]"),
        ({"ring_turbines": [12, 4]}, r"ring_turbines: expected \[low, high\] with integers"),
        ({"lattice_spacing": [0.9]}, r"lattice_spacing: expected \[low, high\] with numbers"),
        ({"lattice_margin_m": [-1, 5]}, r"lattice_margin_m: expected \[low, high\]"),
        (
            {"lattice_offset": "centre"},
            r"lattice_offset: expected one of \['random', 'symmetric'\], got 'centre'",
        ),
    ],
)
def test_bad_options_name_the_option(override: dict[str, object], message: str) -> None:
    block = {"site": "iea37", "n_turbines": 16, **override}
    if block["site"] == "hornsrev1":
        block["n_turbines"] = 10
    with pytest.raises(SpecError, match=message):
        expand_spec({"sweep": [block]})


def test_committed_specs_are_lattice_sweeps_of_the_fast_model() -> None:
    for n in (16, 36, 64):
        configs = expand_spec(load_spec(str(SPECS / f"iea37-{n}.toml")))
        assert len(configs) >= 100
        assert {(c.site, c.n_turbines, c.start, c.evaluator) for c in configs} == {
            ("iea37", n, "lattice", "fast")
        }
        assert len({c.seed for c in configs}) == len(configs)


def test_fast_and_pywake_evaluators_reach_the_same_layout() -> None:
    kwargs = {
        "site": "iea37",
        "n_turbines": 16,
        "start": "lattice",
        "grid_size": 4,
        "random_pct": 0.0,
        "seed": 5,
        "maxiter": 30,
        "tol": 1e-6,
        "wec": (2.0,),
    }
    fast = optimize_layout(**kwargs, evaluator="fast")  # type: ignore[arg-type]
    slow = optimize_layout(**kwargs, evaluator="pywake")  # type: ignore[arg-type]
    # Same model, same arithmetic to ~1e-15: SLSQP takes the same steps.
    assert np.allclose(fast.layout, slow.layout, rtol=0, atol=1e-6)
    assert fast.aep_gwh == pytest.approx(slow.aep_gwh, rel=1e-9)
    assert fast.iterations == slow.iterations


def test_cli_sweep_with_lattice_starts_and_wec_checks_clean(tmp_path: Path) -> None:
    spec = tmp_path / "records.toml"
    spec.write_text(TOML)
    out = tmp_path / "records.h5"
    proc = run("run", str(spec), "-o", str(out), "--workers", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["planned"] == 3 and summary["computed_ok"] == 3 and summary["check_ok"]
    checked = run("check", str(out), module="h5guard.cli")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with h5py.File(out, "r") as f:
        keys = sorted(k for k in f if not k.startswith("h5guard_"))  # not the summary
        assert keys == sorted(c.config_id for c in expand_spec(load_spec(str(spec))))
        for key in keys:
            group = f[key]
            config = json.loads(group.attrs["config"])
            assert config["evaluator"] == "fast"
            layout = group["layout"][()]
            # Strictly feasible, with no tolerance.
            assert np.all(np.hypot(layout[:, 0], layout[:, 1]) <= 1300.0)
            i, j = np.triu_indices(16, k=1)
            assert np.hypot(*(layout[i] - layout[j]).T).min() >= 260.0
            # The stored AEP is PyWake's own.
            aep = float(IEA37CaseStudy1(16).aep(layout[:, 0], layout[:, 1]))
            assert float(group.attrs["aep_gwh"]) == pytest.approx(aep, rel=1e-12)
    # A re-run computes nothing: every start is one resumable config.
    again = run("run", str(spec), "-o", str(out), "--workers", "1", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["skipped"] == 3


def test_report_shows_the_best_layout_beside_par4_and_par12(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    spec = tmp_path / "small.toml"
    spec.write_text(
        '[[sweep]]\nsite = "iea37"\nn_turbines = 16\nstart = "lattice"\nseeds = [3]\n'
        '[optimizer]\nmaxiter = 10\nevaluator = "fast"\n'
    )
    out = tmp_path / "small.h5"
    assert run("run", str(spec), "-o", str(out), "-q").returncode == 0
    proc = run("report", str(out), "-o", str(tmp_path / "report"), "--json", "--no-check")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    [comparison] = summary["published"]
    assert comparison["site"] == "iea37-16"
    published = comparison["published_aep_gwh"]
    # Recomputed with PyWake, not copied: the published files claim 418,924.4 / 421,561.9 MWh.
    assert published["par4"] == pytest.approx(418.924, abs=1e-3)
    assert published["par12"] == pytest.approx(421.562, abs=1e-3)
    for entry in ("par4", "par12"):
        assert comparison["difference_gwh"][entry] == pytest.approx(
            comparison["best_aep_gwh"] - published[entry], abs=1e-3
        )
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'id="published"' in page and "par12" in page
    assert (tmp_path / "report" / "published-iea37-16.png").stat().st_size > 0
    text = run("report", str(out), "-o", str(tmp_path / "report"), "--no-check")
    assert "vs published par4" in text.stdout and "par12" in text.stdout


def test_basin_hopping_never_loses_and_is_deterministic() -> None:
    kwargs = {
        "site": "iea37",
        "n_turbines": 16,
        "start": "lattice",
        "grid_size": 4,
        "random_pct": 0.0,
        "seed": 11,
        "maxiter": 40,
        "tol": 1e-6,
        "evaluator": "fast",
    }
    plain = optimize_layout(**kwargs)  # type: ignore[arg-type]
    hopped = optimize_layout(**kwargs, hops=4, hop_m=60.0)  # type: ignore[arg-type]
    again = optimize_layout(**kwargs, hops=4, hop_m=60.0)  # type: ignore[arg-type]
    assert np.array_equal(plain.initial_layout, hopped.initial_layout)
    assert hopped.aep_gwh >= plain.aep_gwh
    assert "basin hopping" in hopped.message
    assert np.array_equal(hopped.layout, again.layout) and hopped.aep_gwh == again.aep_gwh
    xy = np.asarray(hopped.layout)
    assert np.all(np.hypot(xy[:, 0], xy[:, 1]) <= 1300.0)
    i, j = np.triu_indices(16, k=1)
    assert np.hypot(*(xy[i] - xy[j]).T).min() >= 260.0
