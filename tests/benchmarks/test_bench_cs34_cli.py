"""benchmarks/bench_iea37_cs34.py: the TopFarm2 side-by-side plumbing (no TopFarm2, no timing)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import h5py
import numpy as np

from optimizer.config import expand_spec, load_spec

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_iea37_cs34.py"


def bench() -> ModuleType:
    # As when run as a script: its own folder on sys.path (it imports bench_iea37).
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_iea37_cs34", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_help_names_the_topfarm_options() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--topfarm N" in done.stdout
    assert "--topfarm-seconds S" in done.stdout


def test_stored_starts_follow_the_spec_order_and_skip_failures(tmp_path: Path) -> None:
    spec_path = ROOT / "benchmarks" / "specs" / "iea37-cs3.toml"
    configs = expand_spec(load_spec(str(spec_path)), source=str(spec_path))
    output = tmp_path / "iea37-cs3.h5"
    with h5py.File(output, "w") as f:
        # Stored in reverse, the first config failed: the spec's 2nd and 3rd come back, in order.
        for number, config in reversed(list(enumerate(configs[:3]))):
            group = f.create_group(config.config_id)
            group.attrs["config"] = config.canonical_json()
            group.attrs["status"] = "failed" if number == 0 else "ok"
            group.attrs["wall_time_s"] = 10.0 + number
            group["initial_layout"] = np.full((25, 2), float(number))
            group["layout"] = np.full((25, 2), float(number) + 0.5)
    starts = bench().stored_starts("cs3", output, 2)
    assert [s.config_id for s in starts] == [configs[1].config_id, configs[2].config_id]
    assert [s.wall_time_s for s in starts] == [11.0, 12.0]
    assert starts[0].initial_layout[0, 0] == 1.0 and starts[0].layout[0, 0] == 1.5
    assert starts[0].config == json.loads(configs[1].canonical_json())
    assert starts[0].label == "grid 8 r0% s0 +3 hops"


def test_a_start_cut_by_its_budget_is_reported_without_an_aep() -> None:
    module = bench()
    row = module.TopFarmStart(
        case="cs3",
        start="grid 7 r0% s0 +3 hops",
        budget_s=30.0,
        seconds=30.4,
        finished=False,
        evaluations=12,
        message="cut at the 30 s budget",
        best_feasible_mwh=math.nan,
        final_mwh=math.nan,
        final_feasible=False,
        final_min_gap_m=math.nan,
        final_outside=-1,
        sweep_mwh=950_000.0,
        sweep_feasible=True,
        sweep_seconds=30.0,
        load="5.0 5.0 5.0 -> 6.0 6.0 6.0",
    )
    table = module.format_topfarm([row], 938_573.6)
    line = table.splitlines()[2]
    assert " NO " in line and "950000.0" in line
    assert "TopFarm2 - MWh" in table and "sweep 950000.0 MWh (+1.22 %)" in table
