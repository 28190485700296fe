"""IEA37 case studies 3 and 4 record runs: the committed specs through the CLI, judged apart.

Usage::

    python benchmarks/bench_iea37_cs34.py [--cases cs3 cs4] [--workers 2] [--keep DIR]
                                          [--topfarm N] [--topfarm-seconds S]
                                          [--topfarm-maxiter M] [--from DIR]

For each case, ``layout-sweep run benchmarks/specs/iea37-CASE.toml -o OUT.h5`` runs on a clean
output, timed around the whole command (planning, PyWake start-up, every config, merge and
check). The best stored layout is then judged here, not by the sweep: its AEP is recomputed with
the official IEA37 calculator (``tests/optimizer/data/iea37-cs3-4/iea37-aepcalc.py.txt``,
unchanged), as is the published baseline's; strict feasibility is checked with matplotlib's
point-in-polygon test against the published boundary files (every turbine inside a region)
and plain numpy for the spacing (every pair >= 2 D = 396 m), no tolerance. The load average is
printed next to the times: the machine is shared, and a loaded machine inflates them.

``--topfarm N`` then runs TopFarm2 (``pip install topfarm``; for this comparison only, never a
dependency; run this script with the Python that has it) from the starting layouts of the
first N configs in the spec's order (their stored ``initial_layout``), one after the other in
this process, each with SciPy SLSQP, the same PyWake model (autograd gradients), the same
boundary (TopFarm's polygon boundary; for several regions its multi-polygon boundary of
inclusion zones) and spacing, the config's ``maxiter`` (``--topfarm-maxiter M`` to change it)
and ``tol``, and a wall-time budget per start: the sweep's own time for that config
(``--topfarm-seconds S`` for a fixed one). The result of a start is the best strictly feasible
layout TopFarm evaluated within the budget, judged by the same independent checks; SLSQP's
final layout is reported too, with its feasibility, when it returned in time.
``--from DIR`` reuses the outputs a previous ``--keep DIR`` run left instead of running the
sweep again.
"""

from __future__ import annotations

import argparse
import functools
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
from typing import Any

import h5py
import numpy as np
import yaml  # type: ignore[import-untyped, unused-ignore]
from bench_iea37 import cli_env, load_average  # this checkout's CLI environment, the load line
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


@functools.cache
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
    env = cli_env()
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
class StoredStart:
    """A config the sweep stored: its starting layout, its result and its time."""

    config_id: str
    config: dict[str, Any]
    initial_layout: NDArray[np.float64]
    layout: NDArray[np.float64]
    wall_time_s: float

    @property
    def label(self) -> str:
        c = self.config
        label = f"{c['start']} {c['grid_size']}" if c["start"] == "grid" else str(c["start"])
        label += f" r{c['random_pct']:g}% s{c['seed']}"
        return label + (f" +{c['hops']} hops" if c.get("hops") else "")


def stored_starts(case: str, output: Path, n_starts: int) -> list[StoredStart]:
    """The first ``n_starts`` successful configs of ``output``, in the order the spec lists them."""
    sys.path.insert(0, str(_ROOT))
    from optimizer.config import expand_spec, load_spec

    spec = SPECS / f"iea37-{case}.toml"
    order = [c.config_id for c in expand_spec(load_spec(str(spec)), source=str(spec))]
    starts: list[StoredStart] = []
    with h5py.File(output, "r") as f:
        for key in order:
            if len(starts) == n_starts:
                break
            if key not in f or f[key].attrs.get("status") not in ("ok", b"ok"):
                continue
            group = f[key]
            starts.append(
                StoredStart(
                    config_id=key,
                    config=json.loads(group.attrs["config"]),
                    initial_layout=np.array(group["initial_layout"][()], dtype=np.float64),
                    layout=np.array(group["layout"][()], dtype=np.float64),
                    wall_time_s=float(group.attrs["wall_time_s"]),
                )
            )
    return starts


@dataclass(frozen=True, kw_only=True)
class TopFarmStart:
    """One start side by side: TopFarm2 and the sweep from the same stored starting layout,
    both judged by the official calculator and the strict checks."""

    case: str
    start: str
    budget_s: float
    seconds: float
    finished: bool  # SLSQP returned within the budget
    evaluations: int
    message: str  # SciPy's exit message, or why there is none
    best_feasible_mwh: float  # nan: no strictly feasible layout evaluated within the budget
    final_mwh: float  # nan: SLSQP did not return within the budget
    final_feasible: bool
    final_min_gap_m: float
    final_outside: int
    sweep_mwh: float
    sweep_feasible: bool
    sweep_seconds: float
    load: str


class _OutOfTime(Exception):
    """Raised inside TopFarm's AEP and gradient calls once a start's budget is spent."""


@dataclass(kw_only=True)
class _Track:
    deadline: float
    evaluations: int = 0
    best_gwh: float = -np.inf
    best_xy: NDArray[np.float64] | None = None


def topfarm_case(
    case: str,
    output: Path,
    n_starts: int,
    *,
    budget_s: float | None = None,
    maxiter: int | None = None,
) -> list[TopFarmStart]:
    """TopFarm2 SLSQP from the starting layouts of the first ``n_starts`` stored configs.

    The same problem as the sweep's: the site's PyWake model (equal to the official
    calculator), TopFarm's polygon boundary (CS3) or its multi-polygon boundary of inclusion
    zones (CS4), 2 D spacing, the config's ``tol`` and ``maxiter`` (or ``maxiter``: the
    sweep's basin hopping runs several SLSQP solves of the config's ``maxiter``, so a larger
    one lets the time be TopFarm's limit), and a wall-time budget per start: the sweep's own
    time for that config unless ``budget_s`` is given. Every layout
    TopFarm evaluates is checked for strict feasibility; the best feasible one evaluated
    within the budget is the start's result. Once the budget is spent the AEP and gradient
    calls raise; OpenMDAO keeps the first error, feeds SLSQP zeros and re-raises it when
    SciPy returns, which takes a few cheap calls.
    """
    from py_wake.utils.gradients import autograd
    from topfarm import TopFarmProblem  # type: ignore[import-not-found, import-untyped, unused-ignore]
    from topfarm.constraint_components.boundary import InclusionZone, XYBoundaryConstraint  # type: ignore[import-not-found, import-untyped, unused-ignore]
    from topfarm.constraint_components.spacing import SpacingConstraint  # type: ignore[import-not-found, import-untyped, unused-ignore]
    from topfarm.cost_models.py_wake_wrapper import PyWakeAEPCostModelComponent  # type: ignore[import-not-found, import-untyped, unused-ignore]
    from topfarm.easy_drivers import EasyScipyOptimizeDriver  # type: ignore[import-not-found, import-untyped, unused-ignore]

    sys.path.insert(0, str(_ROOT))
    from optimizer.sites import get_site

    site = get_site(f"iea37-{case}")
    n = site.default_n_turbines
    wfm = site.wind_farm_model(n)
    regions = [np.asarray(r, dtype=np.float64) for r in site.outline(n).regions]
    rows: list[TopFarmStart] = []
    for stored in stored_starts(case, output, n_starts):
        budget = stored.wall_time_s if budget_s is None else budget_s
        if len(regions) == 1:
            boundary = XYBoundaryConstraint(regions[0], "polygon")
        else:
            zones = [InclusionZone(r) for r in regions]
            boundary = XYBoundaryConstraint(zones, "multi_polygon")
        before = load_average()
        t0 = time.perf_counter()
        track = _Track(deadline=t0 + budget)

        def aep_gwh(track: _Track = track, **kw: Any) -> float:
            if time.perf_counter() > track.deadline:
                raise _OutOfTime
            xy = np.column_stack((kw["x"], kw["y"])).astype(np.float64)
            value = float(wfm.aep(xy[:, 0], xy[:, 1]))
            track.evaluations += 1
            if value > track.best_gwh and strict_feasibility(case, xy)[0]:
                track.best_gwh, track.best_xy = value, xy
            return value

        cost = PyWakeAEPCostModelComponent(wfm, n, grad_method=autograd)
        inner_gradient = cost.cost_gradient_function

        def aep_gradient(track: _Track = track, inner: Any = inner_gradient, **kw: Any) -> Any:
            if time.perf_counter() > track.deadline:
                raise _OutOfTime
            return inner(**kw)

        cost.cost_function, cost.cost_gradient_function = aep_gwh, aep_gradient
        problem = TopFarmProblem(
            design_vars={"x": stored.initial_layout[:, 0], "y": stored.initial_layout[:, 1]},
            cost_comp=cost,
            constraints=[boundary, SpacingConstraint(MIN_SPACING_M)],
            driver=EasyScipyOptimizeDriver(
                optimizer="SLSQP",
                maxiter=int(stored.config["maxiter"]) if maxiter is None else maxiter,
                tol=float(stored.config["tol"]),
                disp=False,
            ),
        )
        final: NDArray[np.float64] | None = None
        message = f"cut at the {budget:.0f} s budget"
        try:
            _, state, _ = problem.optimize(disp=False)
            final = np.column_stack((state["x"], state["y"])).astype(np.float64)
            result = getattr(problem.driver, "_scipy_optimize_result", None)
            message = str(getattr(result, "message", "no SciPy result"))
        except _OutOfTime:
            pass
        seconds = time.perf_counter() - t0
        if final is not None and seconds <= budget:
            final_ok, final_gap, final_out = strict_feasibility(case, final)
            final_mwh = official_aep_mwh(case, final)
        else:
            final = None
            final_ok, final_gap, final_out, final_mwh = False, float("nan"), -1, float("nan")
        row = TopFarmStart(
            case=case,
            start=stored.label,
            budget_s=budget,
            seconds=seconds,
            finished=final is not None,
            evaluations=track.evaluations,
            message=message,
            best_feasible_mwh=float("nan")
            if track.best_xy is None
            else official_aep_mwh(case, track.best_xy),
            final_mwh=final_mwh,
            final_feasible=final_ok,
            final_min_gap_m=final_gap,
            final_outside=final_out,
            sweep_mwh=official_aep_mwh(case, stored.layout),
            sweep_feasible=strict_feasibility(case, stored.layout)[0],
            sweep_seconds=stored.wall_time_s,
            load=f"{before} -> {load_average()}",
        )
        print(
            f"  TopFarm2 {case} {row.start}: best feasible {row.best_feasible_mwh:.1f} MWh in "
            f"{row.seconds:.0f} s of {budget:.0f} s ({'finished' if row.finished else 'cut'}); "
            f"sweep {row.sweep_mwh:.1f} MWh in {row.sweep_seconds:.0f} s; SLSQP: {row.message}",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    return rows


def format_topfarm(rows: list[TopFarmStart], baseline_mwh: float) -> str:
    def mwh(value: float) -> str:
        return "-" if np.isnan(value) else f"{value:.1f}"

    header = (
        f"{'case':>4} {'start':<26} {'budget s':>8} {'TF s':>6} {'TF done':>7} {'TF evals':>8} "
        f"{'TF best feasible MWh':>20} {'TF final MWh':>13} {'TF final strict':>15} "
        f"{'gap m':>7} {'out':>3} "
        f"{'sweep MWh':>11} {'sweep strict':>12} {'sweep s':>7}  load (before -> after)  SLSQP exit"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        final_strict = "-" if not r.finished else ("yes" if r.final_feasible else "NO")
        lines.append(
            f"{r.case:>4} {r.start:<26} {r.budget_s:>8.1f} {r.seconds:>6.1f} "
            f"{'yes' if r.finished else 'NO':>7} {r.evaluations:>8} "
            f"{mwh(r.best_feasible_mwh):>20} {mwh(r.final_mwh):>13} {final_strict:>15} "
            f"{r.final_min_gap_m:>7.1f} {r.final_outside if r.finished else '-':>3} "
            f"{r.sweep_mwh:>11.1f} {'yes' if r.sweep_feasible else 'NO':>12} "
            f"{r.sweep_seconds:>7.1f}  {r.load}  SLSQP: {r.message}"
        )
    if rows:
        tf = [r.best_feasible_mwh for r in rows if not np.isnan(r.best_feasible_mwh)]
        sw = [r.sweep_mwh for r in rows if r.sweep_feasible]
        tf_best = max(tf) if tf else float("nan")
        sw_best = max(sw) if sw else float("nan")
        lines.append(
            f"{rows[0].case}: best of these {len(rows)} starts, strictly feasible: TopFarm2 "
            f"{mwh(tf_best)} MWh ({100 * (tf_best / baseline_mwh - 1):+.2f} %), sweep "
            f"{mwh(sw_best)} MWh ({100 * (sw_best / baseline_mwh - 1):+.2f} %) over the "
            f"baseline {baseline_mwh:.1f} MWh; TopFarm2 time {sum(r.seconds for r in rows):.0f} s,"
            f" sweep config time {sum(r.sweep_seconds for r in rows):.0f} s"
        )
    return "\n".join(lines)


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
    parser.add_argument(
        "--topfarm-seconds",
        type=float,
        default=None,
        metavar="S",
        help="TopFarm2 budget per start (default: the sweep's own time for that config)",
    )
    parser.add_argument(
        "--topfarm-maxiter",
        type=int,
        default=None,
        metavar="M",
        help="TopFarm2 SLSQP iterations per start (default: the config's maxiter)",
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
        topfarm = {
            r.case: topfarm_case(
                r.case,
                Path(args.reuse or out_dir) / f"iea37-{r.case}.h5",
                args.topfarm,
                budget_s=args.topfarm_seconds,
                maxiter=args.topfarm_maxiter,
            )
            for r in runs
            if args.topfarm
        }
    print(format_table(runs))
    for r in runs:
        if r.case in topfarm:
            print()
            print(format_topfarm(topfarm[r.case], r.baseline_mwh))
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
