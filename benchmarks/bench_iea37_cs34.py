"""IEA37 case studies 3 and 4 record runs: the committed specs through the CLI, judged apart.

Usage::

    python benchmarks/bench_iea37_cs34.py [--cases cs3 cs4] [--workers 2] [--keep DIR]

For each case, ``layout-sweep run benchmarks/specs/iea37-CASE.toml -o OUT.h5`` runs on a clean
output, timed around the whole command (planning, PyWake start-up, every config, merge and
check). The best stored layout is then judged here, not by the sweep: its AEP is recomputed with
the official IEA37 calculator (``tests/optimizer/data/iea37-cs3-4/iea37-aepcalc.py.txt``,
unchanged), as is the published baseline's; strict feasibility is checked with matplotlib's
point-in-polygon test against the published boundary files (every turbine inside a region)
and plain numpy for the spacing (every pair >= 2 D = 396 m), no tolerance. The load average is
printed next to the times: the machine is shared, and a loaded machine inflates them.
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
    args = parser.parse_args(argv)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-iea37-cs34-") as tmp:
        out_dir = Path(args.keep) if args.keep else Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for case in args.cases:
            run = run_case(case, args.workers, out_dir)
            print(
                f"  iea37-{case}: {run.best_mwh:.1f} MWh in {run.seconds:.0f} s (load {run.load})",
                file=sys.stderr,
                flush=True,
            )
            runs.append(run)
            if args.keep:
                (out_dir / "runs.json").write_text(json.dumps([asdict(r) for r in runs], indent=2))
    print(format_table(runs))
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
