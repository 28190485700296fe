"""IEA37 case studies 3 and 4 record runs: the committed specs through the CLI, judged apart.

Usage::

    python benchmarks/bench_iea37_cs34.py [--cases cs3 cs4] [--workers 2] [--keep DIR]
                                          [--topfarm N] [--from DIR]

For each case, ``layout-sweep run benchmarks/specs/iea37-CASE.toml -o OUT.h5`` runs on a clean
output, timed around the whole command (planning, PyWake start-up, every config, merge and
check). The best stored layout is then judged here, not by the sweep: its AEP is recomputed with
the official IEA37 calculator (``tests/optimizer/data/iea37-cs3-4/iea37-aepcalc.py.txt``,
unchanged), as is the published baseline's; strict feasibility is checked with matplotlib's
point-in-polygon test against the published boundary files (every turbine inside a region)
and plain numpy for the spacing (every pair >= 2 D = 396 m), no tolerance. The load average is
printed next to the times: the machine is shared, and a loaded machine inflates them.

``--topfarm N`` then runs TopFarm2 (``pip install topfarm``; for this comparison only, never a
dependency) from the starting layouts of the first N stored configs, one after the other in
this process, each with SciPy SLSQP, the same PyWake model (autograd gradients), the same
boundary (TopFarm's polygon boundary; for several regions its multi-polygon boundary) and
spacing, and the same ``maxiter``; its layouts are judged by the same independent checks.
``--from DIR`` reuses the outputs a previous ``--keep DIR`` run left instead of running the
sweep again.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import h5py
import numpy as np
import yaml
from numpy.typing import NDArray

_ROOT = Path(__file__).resolve().parents[1]
SPECS = _ROOT / "benchmarks" / "specs"
DATA = _ROOT / "tests" / "optimizer" / "data" / "iea37-cs3-4"
BASELINE = {"cs3": "iea37-ex-opt3.yaml", "cs4": "iea37-ex-opt4.yaml"}
BOUNDARY = {"cs3": "iea37-boundary-cs3.yaml", "cs4": "iea37-boundary-cs4.yaml"}
MIN_SPACING_M = 2 * 198.0
TIME_LIMIT_S = 900.0


@dataclass(frozen=True, kw_only=True)
class Run:
    case: str
    seconds: float
    load: str
    exit_code: int
    configs: int
    best_mwh: float
    baseline_mwh: float
    feasible: bool
    min_gap_m: float
    outside: int


def official() -> ModuleType:
    path = DATA / "iea37-aepcalc.py.txt"
    loader = importlib.machinery.SourceFileLoader("iea37_aepcalc", str(path))
    spec = importlib.util.spec_from_loader("iea37_aepcalc", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def official_aep_mwh(case: str, xy: NDArray[np.float64] | None = None) -> float:
    """The official calculator's AEP of ``xy`` (default: the published baseline)."""
    calc = official()
    layout_file = DATA / BASELINE[case]
    coords, turbine_file, rose_file = calc.getTurbLocYAML(str(layout_file))
    wd, freq, ws, probs, *_ = calc.getWindRoseYAML(str(DATA / rose_file))
    ci, co, rated_ws, rated_pwr, diameter = calc.getTurbAtrbtYAML(str(DATA / turbine_file))
    use = coords if xy is None else xy
    return float(
        np.sum(calc.calcAEPcs3(use, freq, ws, probs, wd, diameter, ci, co, rated_ws, rated_pwr))
    )


def strict_feasibility(case: str, xy: NDArray[np.float64]) -> tuple[bool, float, int]:
    """(feasible with no tolerance, smallest pair distance, turbines outside every region)."""
    from matplotlib.path import Path as MplPath

    regions = yaml.safe_load((DATA / BOUNDARY[case]).read_text())["boundaries"].values()
    inside = np.zeros(len(xy), dtype=bool)
    for polygon in regions:
        inside |= MplPath(np.asarray(polygon, dtype=np.float64)).contains_points(xy)
    i, j = np.triu_indices(len(xy), k=1)
    min_gap = float(np.hypot(xy[i, 0] - xy[j, 0], xy[i, 1] - xy[j, 1]).min())
    outside = int(np.sum(~inside))
    return bool(outside == 0 and min_gap >= MIN_SPACING_M), min_gap, outside


def best_stored_layout(path: Path) -> tuple[NDArray[np.float64], int]:
    best_key, best_aep, count = None, -np.inf, 0
    with h5py.File(path, "r") as f:
        for key in f:
            group = f[key]
            if group.attrs.get("status") not in ("ok", b"ok"):
                continue
            count += 1
            if float(group.attrs["aep_gwh"]) > best_aep:
                best_key, best_aep = key, float(group.attrs["aep_gwh"])
        if best_key is None:
            raise SystemExit(f"{path}: no successful result stored")
        return np.array(f[best_key]["layout"][()], dtype=np.float64), count


def load_average() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def judge_kept(case: str, out_dir: Path) -> Run:
    """Judge the output a ``--keep`` run left (its times from runs.json)."""
    kept = {r["case"]: r for r in json.loads((out_dir / "runs.json").read_text())}
    layout, count = best_stored_layout(out_dir / f"iea37-{case}.h5")
    feasible, min_gap, outside = strict_feasibility(case, layout)
    return Run(
        case=case,
        seconds=float(kept[case]["seconds"]),
        load=str(kept[case]["load"]),
        exit_code=int(kept[case]["exit_code"]),
        configs=count,
        best_mwh=official_aep_mwh(case, layout),
        baseline_mwh=official_aep_mwh(case),
        feasible=feasible,
        min_gap_m=min_gap,
        outside=outside,
    )


def run_case(case: str, workers: int, out_dir: Path) -> Run:
    spec = SPECS / f"iea37-{case}.toml"
    output = out_dir / f"iea37-{case}.h5"
    command = [sys.executable, "-m", "optimizer.cli", "run", str(spec), "-o", str(output), "-q"]
    command += ["--workers", str(workers)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    before = load_average()
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    layout, count = best_stored_layout(output)
    feasible, min_gap, outside = strict_feasibility(case, layout)
    return Run(
        case=case,
        seconds=seconds,
        load=f"{before} -> {load_average()}",
        exit_code=done.returncode,
        configs=count,
        best_mwh=official_aep_mwh(case, layout),
        baseline_mwh=official_aep_mwh(case),
        feasible=feasible,
        min_gap_m=min_gap,
        outside=outside,
    )


@dataclass(frozen=True, kw_only=True)
class TopFarmRun:
    case: str
    starts: int
    seconds: float
    load: str
    best_mwh: float
    feasible_starts: int
    best_feasible_mwh: float


def topfarm_case(case: str, output: Path, n_starts: int) -> TopFarmRun:
    """TopFarm2 SLSQP from the first ``n_starts`` stored starting layouts."""
    from py_wake.utils.gradients import autograd
    from topfarm import TopFarmProblem
    from topfarm.constraint_components.boundary import XYBoundaryConstraint
    from topfarm.constraint_components.spacing import SpacingConstraint
    from topfarm.cost_models.py_wake_wrapper import PyWakeAEPCostModelComponent
    from topfarm.easy_drivers import EasyScipyOptimizeDriver

    sys.path.insert(0, str(_ROOT))
    from optimizer.sites import get_site

    site = get_site(f"iea37-{case}")
    n = site.default_n_turbines
    wfm = site.wind_farm_model(n)
    regions = site.outline(n).regions
    starts = []
    maxiter = 200
    with h5py.File(output, "r") as f:
        for key in sorted(f)[:n_starts]:
            starts.append(np.array(f[key]["initial_layout"][()], dtype=np.float64))
            maxiter = int(json.loads(f[key].attrs["config"]).get("maxiter", maxiter))
    if len(regions) == 1:
        boundary = XYBoundaryConstraint(np.asarray(regions[0]), "polygon")
    else:
        boundary = XYBoundaryConstraint([(np.asarray(r), 1) for r in regions], "multi_polygon")
    before = load_average()
    t0 = time.perf_counter()
    best, best_feasible, feasible_count = -np.inf, -np.inf, 0
    for xy in starts:
        problem = TopFarmProblem(
            design_vars={"x": xy[:, 0], "y": xy[:, 1]},
            cost_comp=PyWakeAEPCostModelComponent(wfm, n, grad_method=autograd),
            constraints=[boundary, SpacingConstraint(MIN_SPACING_M)],
            driver=EasyScipyOptimizeDriver(optimizer="SLSQP", maxiter=maxiter, disp=False),
        )
        _, state, _ = problem.optimize(disp=False)
        layout = np.column_stack((state["x"], state["y"])).astype(np.float64)
        aep = official_aep_mwh(case, layout)
        ok, _, _ = strict_feasibility(case, layout)
        best = max(best, aep)
        if ok:
            feasible_count += 1
            best_feasible = max(best_feasible, aep)
    return TopFarmRun(
        case=case,
        starts=len(starts),
        seconds=time.perf_counter() - t0,
        load=f"{before} -> {load_average()}",
        best_mwh=best,
        feasible_starts=feasible_count,
        best_feasible_mwh=best_feasible,
    )


def format_table(runs: list[Run]) -> str:
    header = (
        f"{'case':>4} {'time s':>7} {'exit':>4} {'configs':>7} {'AEP MWh':>13} "
        f"{'baseline MWh':>13} {'gain':>7} {'min gap m':>10} {'outside':>7} {'strict':>6}  "
        "load (1/5/15 min, before -> after)"
    )
    lines = [header, "-" * len(header)]
    for r in runs:
        lines.append(
            f"{r.case:>4} {r.seconds:>7.1f} {r.exit_code:>4} {r.configs:>7} {r.best_mwh:>13.1f} "
            f"{r.baseline_mwh:>13.1f} {100 * (r.best_mwh / r.baseline_mwh - 1):>+6.2f}% "
            f"{r.min_gap_m:>10.2f} {r.outside:>7} {'yes' if r.feasible else 'NO':>6}  {r.load}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cases", nargs="+", default=["cs3", "cs4"], choices=["cs3", "cs4"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", metavar="DIR", help="keep the outputs in DIR")
    parser.add_argument(
        "--topfarm", type=int, default=0, metavar="N", help="TopFarm2 from N starts"
    )
    parser.add_argument("--from", dest="reuse", metavar="DIR", help="judge outputs kept in DIR")
    args = parser.parse_args(argv)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-iea37-cs34-") as tmp:
        out_dir = Path(args.keep) if args.keep else Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for case in args.cases:
            if args.reuse:
                run = judge_kept(case, Path(args.reuse))
            else:
                run = run_case(case, args.workers, out_dir)
            print(
                f"  iea37-{case}: {run.best_mwh:.1f} MWh in {run.seconds:.0f} s (load {run.load})",
                file=sys.stderr,
                flush=True,
            )
            runs.append(run)
            if args.keep:
                # Keep the other cases' earlier runs: cs3 and cs4 may run in separate calls.
                path = out_dir / "runs.json"
                kept = json.loads(path.read_text()) if path.exists() else []
                mine = {r.case for r in runs}
                entries = [k for k in kept if k["case"] not in mine] + [asdict(r) for r in runs]
                path.write_text(json.dumps(entries, indent=2))
        topfarm = [
            topfarm_case(r.case, Path(args.reuse or out_dir) / f"iea37-{r.case}.h5", args.topfarm)
            for r in runs
            if args.topfarm
        ]
    print(format_table(runs))
    for t in topfarm:
        print(
            f"TopFarm2 {t.case}: {t.starts} starts in {t.seconds:.0f} s (load {t.load}): best "
            f"{t.best_mwh:.1f} MWh, {t.feasible_starts} of {t.starts} strictly feasible, best "
            f"feasible {t.best_feasible_mwh:.1f} MWh"
        )
    for r in runs:
        print(
            f"{r.case}: above baseline {'yes' if r.best_mwh > r.baseline_mwh else 'NO'}, "
            f"within {TIME_LIMIT_S:.0f} s {'yes' if r.seconds <= TIME_LIMIT_S else 'NO'}, "
            f"strictly feasible {'yes' if r.feasible else 'NO'}"
        )
    ok = all(r.feasible and r.best_mwh > r.baseline_mwh and r.seconds <= TIME_LIMIT_S for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
