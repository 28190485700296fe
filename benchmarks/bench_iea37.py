"""Multistart IEA37 case study 1 benchmark against the published results.

Usage: python benchmarks/bench_iea37.py [--budget SECONDS] [--sizes 16 36 64]

For each farm size, optimization starts are run until the time budget is spent: first the
published baseline layout, then fitted grids, then increasingly random starts (fully random,
half-randomised grids and partly randomised baselines) with successive seeds. The best feasible
layout is re-evaluated independently with a fresh ``IEA37CaseStudy1`` model in the IEA37 way
(16 direction bins, 9.8 m/s, normalised probabilities) and re-checked for feasibility with plain
numpy, then compared with the published baseline and best-published AEPs.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

# Running as a script puts benchmarks/ first on sys.path; the package lives one level up.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from optimizer.optimize import optimize_layout  # noqa: E402
from optimizer.sites import get_site  # noqa: E402

logger = logging.getLogger("bench_iea37")

MAXITER = 200
TOL = 1e-8
FEASIBILITY_TOL_M = 1e-3


@dataclass(frozen=True, kw_only=True)
class Start:
    start: str
    grid_size: int
    random_pct: float
    seed: int


@dataclass(frozen=True, kw_only=True)
class SizeReport:
    n_turbines: int
    published_baseline_mwh: float
    our_baseline_mwh: float
    best_published_mwh: float
    our_best_mwh: float
    time_s: float
    starts: int
    feasible: bool


def starts_for(n_turbines: int) -> Iterator[Start]:
    """Baseline first, then deterministic grids, then an endless rotation of random starts."""
    g = math.ceil(math.sqrt(n_turbines))
    yield Start(start="baseline", grid_size=g, random_pct=0.0, seed=0)
    yield Start(start="grid", grid_size=g, random_pct=0.0, seed=0)
    yield Start(start="grid", grid_size=g + 1, random_pct=0.0, seed=0)
    seed = 1
    while True:
        yield Start(start="grid", grid_size=g, random_pct=100.0, seed=seed)
        yield Start(start="grid", grid_size=g + 1, random_pct=50.0, seed=seed)
        yield Start(start="baseline", grid_size=g, random_pct=25.0, seed=seed)
        seed += 1


def iea37_aep_mwh(n_turbines: int, layout: NDArray[np.float64]) -> float:
    """AEP the IEA37 way, from a freshly built model (independent of the optimizer's cache)."""
    from py_wake.literature.iea37_case_study1 import IEA37CaseStudy1

    wfm = IEA37CaseStudy1(n_turbines)
    sim = wfm(layout[:, 0], layout[:, 1], wd=np.arange(0.0, 360.0, 22.5), ws=[9.8])
    return float(sim.aep_ilk(normalize_probabilities=True).sum()) * 1e3


def is_feasible(n_turbines: int, layout: NDArray[np.float64]) -> bool:
    radius = {16: 1300.0, 36: 2000.0, 64: 3000.0}[n_turbines]
    if np.hypot(layout[:, 0], layout[:, 1]).max() > radius + FEASIBILITY_TOL_M:
        return False
    i, j = np.triu_indices(n_turbines, k=1)
    gaps = np.hypot(layout[i, 0] - layout[j, 0], layout[i, 1] - layout[j, 1])
    return bool(gaps.min() >= 260.0 - FEASIBILITY_TOL_M)


def run_size(n_turbines: int, budget_s: float) -> SizeReport:
    site = get_site("iea37")
    reference = site.reference_for(n_turbines)
    baseline = site.baseline_layout(n_turbines)
    assert reference is not None and baseline is not None
    t0 = time.perf_counter()
    best_aep, best_layout, n_starts = -math.inf, baseline, 0
    for spec in starts_for(n_turbines):
        if n_starts > 0 and time.perf_counter() - t0 >= budget_s:
            break
        result = optimize_layout(
            site="iea37",
            n_turbines=n_turbines,
            start=spec.start,
            grid_size=spec.grid_size,
            random_pct=spec.random_pct,
            seed=spec.seed,
            maxiter=MAXITER,
            tol=TOL,
        )
        n_starts += 1
        feasible = (
            result.max_boundary_violation_m <= FEASIBILITY_TOL_M
            and result.max_spacing_violation_m <= FEASIBILITY_TOL_M
        )
        logger.info(
            "n=%d start %d (%s): %.1f -> %.1f MWh, %d it, %.2f s%s",
            n_turbines,
            n_starts,
            spec,
            result.initial_aep_gwh * 1e3,
            result.aep_gwh * 1e3,
            result.iterations,
            result.wall_time_s,
            "" if feasible else " INFEASIBLE",
        )
        if feasible and result.aep_gwh > best_aep:
            best_aep, best_layout = result.aep_gwh, np.array(result.layout)
    elapsed = time.perf_counter() - t0
    return SizeReport(
        n_turbines=n_turbines,
        published_baseline_mwh=reference.baseline_mwh,
        our_baseline_mwh=iea37_aep_mwh(n_turbines, baseline),
        best_published_mwh=reference.best_published_mwh,
        our_best_mwh=iea37_aep_mwh(n_turbines, best_layout),
        time_s=elapsed,
        starts=n_starts,
        feasible=is_feasible(n_turbines, best_layout),
    )


def format_table(reports: list[SizeReport]) -> str:
    header = (
        f"{'n':>3} {'baseline pub.':>14} {'our baseline':>14} {'best pub.':>14} "
        f"{'our best':>14} {'ratio':>7} {'time s':>7} {'starts':>6} {'feasible':>8}"
    )
    rows = [header, "-" * len(header)]
    for r in reports:
        rows.append(
            f"{r.n_turbines:>3} {r.published_baseline_mwh:>14,.1f} {r.our_baseline_mwh:>14,.1f} "
            f"{r.best_published_mwh:>14,.1f} {r.our_best_mwh:>14,.1f} "
            f"{r.our_best_mwh / r.best_published_mwh:>7.4f} {r.time_s:>7.1f} {r.starts:>6} "
            f"{'yes' if r.feasible else 'NO':>8}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds of multistart optimization per farm size (default 60)",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[16, 36, 64],
        choices=[16, 36, 64],
        help="farm sizes to run (default 16 36 64)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every start")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.budget) and args.budget > 0):
        parser.error(f"--budget: expected a finite number of seconds > 0, got {args.budget}")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    reports = [run_size(n, args.budget) for n in args.sizes]
    print(format_table(reports))
    return 0 if all(r.feasible for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
