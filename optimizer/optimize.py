"""Gradient-based wind-farm layout optimization of one configuration.

The AEP of the site's PyWake model is maximised over turbine positions with SciPy's SLSQP,
using PyWake's exact autograd gradients, subject to the site boundary and a minimum spacing of
two rotor diameters (or the site's own spacing). On a lease of several regions, exclusions or
non-convex polygons the boundary constraints are :meth:`optimizer.geometry.Lease.constraints`
(each turbine held in the region it starts a solve in). Design variables are positions
relative to the boundary centre divided by the boundary radius, and the objective is AEP divided by the initial AEP, so that SLSQP sees
O(1) numbers; in metres and GWh it needs several times more iterations.

Every returned layout is exactly feasible (every turbine inside or on the boundary, every pair at
least the minimum spacing apart, in floating point) whenever any feasible layout was reached: the
optimizer's constraints carry a margin of ``CONSTRAINT_MARGIN_M`` so that SLSQP's small final
constraint violations stay on the safe side. Failing that, a returned layout is feasible to
within ``FEASIBILITY_TOL_M`` or its message says INFEASIBLE. SLSQP approaches active
constraints from outside, so when it stops early its final layout is typically centimetres
outside the boundary; such a layout is projected onto the feasible set (least squares, no AEP
evaluations). The best feasible layout seen at any AEP evaluation is also tracked, and whichever
of the two has the higher AEP is returned; ``LayoutResult.message`` says which happened and
``converged`` is true only when SLSQP converged and its own final layout was returned.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from optimizer.layouts import (
    DEFAULT_LATTICE,
    LatticeRanges,
    boundary_violation,
    check_start,
    grid_candidates,
    initial_layout,
    polygon_halfplanes,
    pull_inside,
    spacing_violation,
)
from optimizer.sites import FloatArray, SiteSpec, get_site

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("SLSQP",)
# "pywake": every evaluation by the site's PyWake model; "fast": the numpy IEA37 model inside
# the optimization loop (site iea37 only), PyWake for the stored AEPs.
EVALUATORS: tuple[str, ...] = ("pywake", "fast")
FAST_SITES: tuple[str, ...] = ("iea37",)
# Sites whose wake model has a wake expansion continuation variant.
WEC_SITES: tuple[str, ...] = ("iea37",)
FEASIBILITY_TOL_M = 1e-3
# Inward margin of the boundary and outward margin of the spacing as the optimizer sees them:
# far above SLSQP's constraint residuals at convergence (~1e-7 m), far below any AEP effect.
CONSTRAINT_MARGIN_M = 1e-4
# Relative AEP slack within which SLSQP's own final point is preferred over an earlier iterate,
# so that round-off does not flip the outcome (and the ``converged`` flag).
_AEP_TIE_RTOL = 1e-9
_REPAIR_MAXITER = 200
# Second random stream of a config's seed, for basin hopping.
_HOP_STREAM = 1
# Pairs farther apart than this many minimum spacings at the start of a solve are left out of
# its spacing constraints (see _Problem.watch_pairs_near).
_WATCH_RADIUS_SPACINGS = 3.0


@dataclass(frozen=True, kw_only=True)
class LayoutResult:
    """Outcome of one layout optimization. Positions in metres, AEP in GWh per year."""

    layout: FloatArray
    aep_gwh: float
    initial_layout: FloatArray
    initial_aep_gwh: float
    iterations: int
    aep_evaluations: int
    gradient_evaluations: int
    wall_time_s: float
    max_boundary_violation_m: float
    max_spacing_violation_m: float
    converged: bool
    message: str
    aep_time_s: float
    gradient_time_s: float


@dataclass(kw_only=True)
class _Counters:
    aep_evaluations: int = 0
    gradient_evaluations: int = 0
    aep_time_s: float = 0.0
    gradient_time_s: float = 0.0


@dataclass(kw_only=True)
class _Best:
    aep_gwh: float = -math.inf
    layout: FloatArray | None = None
    last_key: bytes = b""
    last_aep_gwh: float = math.nan


class _AEPModel(Protocol):
    name: str

    def aep_gwh(self, xy: FloatArray) -> float: ...

    def aep_gradient(self, xy: FloatArray) -> FloatArray: ...


class _PyWakeModel:
    """A PyWake wind farm model: AEP and its exact autograd gradient, one process."""

    def __init__(self, wfm: Any) -> None:
        from py_wake.utils.gradients import autograd

        self.name = "PyWake"
        self.wfm = wfm
        self._autograd = autograd

    def aep_gwh(self, xy: FloatArray) -> float:
        return float(self.wfm.aep(xy[:, 0], xy[:, 1], n_cpu=1))

    def aep_gradient(self, xy: FloatArray) -> FloatArray:
        return np.asarray(
            self.wfm.aep_gradients(
                gradient_method=self._autograd, wrt_arg=["x", "y"], x=xy[:, 0], y=xy[:, 1], n_cpu=1
            ),
            dtype=np.float64,
        )


class _FastModel:
    """The vectorized numpy IEA37 model (``optimizer.iea37_model.FastIEA37``)."""

    def __init__(self, n_turbines: int, xi: float) -> None:
        from optimizer.iea37_model import FastIEA37

        self.name = "the fast IEA37 model"
        self.fast = FastIEA37(n_turbines, xi=xi)

    def aep_gwh(self, xy: FloatArray) -> float:
        return self.fast.aep(xy)

    def aep_gradient(self, xy: FloatArray) -> FloatArray:
        return self.fast.aep_and_gradient(xy)[1]


def _model(site: SiteSpec, n_turbines: int, *, evaluator: str, xi: float) -> _AEPModel:
    """The model optimized at wake expansion factor ``xi`` (1: the site's own model)."""
    if evaluator == "fast":
        return _FastModel(n_turbines, xi)
    if xi == 1.0:
        return _PyWakeModel(site.wind_farm_model(n_turbines))
    from optimizer.iea37_model import iea37_wec_model

    return _PyWakeModel(iea37_wec_model(n_turbines, xi))


class _Problem:
    """AEP objective and constraints in scaled coordinates ``u = (xy - center) / length``.

    ``u`` is flattened as ``[x_0 .. x_{n-1}, y_0 .. y_{n-1}]`` to match PyWake's gradient layout.
    """

    def __init__(self, site: SiteSpec, n_turbines: int, model: _AEPModel) -> None:
        self.site = site
        self.n = n_turbines
        self.model = model
        self.circle = site.circle(n_turbines)
        self.lease = site.lease(n_turbines)
        self.assignment: tuple[int, ...] = ()
        if self.lease is not None:
            # Any lease (regions, exclusions, non-convex): its constraints in metres
            # (optimizer.geometry.Lease.constraints), scaled here.
            lo, hi = self.lease.bounding_box()
            self.center = 0.5 * (lo + hi)
            self.length = float(0.5 * np.linalg.norm(hi - lo))
            self.lower = np.repeat((lo - self.center) / self.length, n_turbines)
            self.upper = np.repeat((hi - self.center) / self.length, n_turbines)
            self.inner_radius = 1.0
            self.normals: FloatArray | None = None
            self.offsets: FloatArray | None = None
        elif self.circle is not None:
            self.center = np.asarray(self.circle.center, dtype=np.float64)
            self.length = float(self.circle.radius)
            self.lower = np.full(2 * n_turbines, -1.0)
            self.upper = np.full(2 * n_turbines, 1.0)
            # Scaled radius the optimizer must stay within.
            self.inner_radius = 1.0 - CONSTRAINT_MARGIN_M / self.length
            self.normals = None
            self.offsets = None
        else:
            vertices = site.boundary(n_turbines)
            lo, hi = vertices.min(axis=0), vertices.max(axis=0)
            self.center = 0.5 * (lo + hi)
            self.length = float(0.5 * np.linalg.norm(hi - lo))
            self.lower = np.repeat((lo - self.center) / self.length, n_turbines)
            self.upper = np.repeat((hi - self.center) / self.length, n_turbines)
            normals, offsets = polygon_halfplanes(vertices)
            self.normals = normals
            # Signed distance to edge j of scaled point u, in units of ``length``.
            self.offsets = (normals @ self.center + offsets - CONSTRAINT_MARGIN_M) / self.length
            self.inner_radius = 1.0
        self.pair_i, self.pair_j = np.triu_indices(n_turbines, k=1)
        self.spacing_sq = ((site.min_spacing_m + CONSTRAINT_MARGIN_M) / self.length) ** 2
        self.aep_scale = 1.0
        self.counters = _Counters()
        self.best = _Best()

    # --- coordinates -----------------------------------------------------------------------
    def to_u(self, xy: FloatArray) -> FloatArray:
        return ((xy - self.center) / self.length).T.ravel().astype(np.float64)

    def to_xy(self, u: FloatArray) -> FloatArray:
        return (u.reshape(2, self.n).T * self.length + self.center).astype(np.float64)

    def violations(self, xy: FloatArray) -> tuple[float, float]:
        bv = boundary_violation(self.site, self.n, xy)
        return float(bv.max(initial=0.0)), spacing_violation(self.site, xy)

    # --- the AEP model --------------------------------------------------------------------
    def aep_gwh(self, xy: FloatArray) -> float:
        t0 = time.perf_counter()
        value = self.model.aep_gwh(xy)
        self.counters.aep_time_s += time.perf_counter() - t0
        self.counters.aep_evaluations += 1
        if not math.isfinite(value):
            raise FloatingPointError(
                f"AEP: expected a finite value from {self.model.name}, got {value} for "
                f"{self.n} turbines on site {self.site.name!r}"
            )
        return value

    def aep_gradient(self, xy: FloatArray) -> FloatArray:
        t0 = time.perf_counter()
        grad = self.model.aep_gradient(xy)
        self.counters.gradient_time_s += time.perf_counter() - t0
        self.counters.gradient_evaluations += 1
        if grad.shape != (2, self.n) or not np.all(np.isfinite(grad)):
            raise FloatingPointError(
                f"AEP gradient: expected finite values of shape (2, {self.n}) from "
                f"{self.model.name}, got shape {grad.shape} with "
                f"{int(np.sum(~np.isfinite(grad)))} non-finite"
            )
        return grad

    # --- scaled objective ------------------------------------------------------------------
    def objective(self, u: FloatArray) -> float:
        xy = self.to_xy(u)
        aep = self.aep_gwh(xy)
        self.best.last_key, self.best.last_aep_gwh = xy.tobytes(), aep
        bv, sv = self.violations(xy)
        if bv <= 0.0 and sv <= 0.0 and aep > self.best.aep_gwh:
            self.best.aep_gwh, self.best.layout = aep, xy.copy()
        return -aep / self.aep_scale

    def objective_grad(self, u: FloatArray) -> FloatArray:
        grad = self.aep_gradient(self.to_xy(u))
        # d(-AEP/scale)/du = -(dAEP/dxy) * length / scale
        return (-grad.ravel() * self.length / self.aep_scale).astype(np.float64)

    def aep_at(self, xy: FloatArray) -> float:
        if xy.tobytes() == self.best.last_key:
            return self.best.last_aep_gwh
        return self.aep_gwh(xy)

    # --- constraints (>= 0 when feasible) --------------------------------------------------
    def assign_regions(self, xy: FloatArray) -> None:
        """Fix each turbine's region for the next solve (the one it is deepest in)."""
        if self.lease is not None:
            self.assignment = self.lease.assign(xy)

    def boundary_con(self, u: FloatArray) -> FloatArray:
        if self.lease is not None:
            values, _ = self.lease.constraints(self.to_xy(u), self.assignment, CONSTRAINT_MARGIN_M)
            return (values / self.length).astype(np.float64)
        ux, uy = u[: self.n], u[self.n :]
        if self.normals is None or self.offsets is None:
            return (self.inner_radius**2 - ux * ux - uy * uy).astype(np.float64)
        signed = np.outer(ux, self.normals[:, 0]) + np.outer(uy, self.normals[:, 1]) + self.offsets
        return signed.ravel().astype(np.float64)

    def boundary_jac(self, u: FloatArray) -> FloatArray:
        if self.lease is not None:
            # d(value / length)/du = d(value)/d(xy) * length / length
            _, jac = self.lease.constraints(self.to_xy(u), self.assignment, CONSTRAINT_MARGIN_M)
            return jac
        n = self.n
        ux, uy = u[:n], u[n:]
        idx = np.arange(n)
        if self.normals is None:
            jac = np.zeros((n, 2 * n))
            jac[idx, idx] = -2.0 * ux
            jac[idx, n + idx] = -2.0 * uy
            return jac
        m = len(self.normals)
        jac = np.zeros((n, m, 2 * n))
        jac[idx, :, idx] = self.normals[None, :, 0]
        jac[idx, :, n + idx] = self.normals[None, :, 1]
        return jac.reshape(n * m, 2 * n)

    def spacing_con(self, u: FloatArray) -> FloatArray:
        ux, uy = u[: self.n], u[self.n :]
        dx = ux[self.pair_i] - ux[self.pair_j]
        dy = uy[self.pair_i] - uy[self.pair_j]
        return ((dx * dx + dy * dy) / self.spacing_sq - 1.0).astype(np.float64)

    def spacing_jac(self, u: FloatArray) -> FloatArray:
        n = self.n
        ux, uy = u[:n], u[n:]
        i, j = self.pair_i, self.pair_j
        dx = 2.0 * (ux[i] - ux[j]) / self.spacing_sq
        dy = 2.0 * (uy[i] - uy[j]) / self.spacing_sq
        rows = np.arange(len(i))
        jac = np.zeros((len(i), 2 * n))
        jac[rows, i] = dx
        jac[rows, j] = -dx
        jac[rows, n + i] = dy
        jac[rows, n + j] = -dy
        return jac

    def watch_pairs_near(self, xy: FloatArray | None) -> None:
        """Constrain only pairs closer than ``_WATCH_RADIUS_SPACINGS`` spacings in ``xy``
        (``None``: every pair). SLSQP's work grows with the number of constraints, and a
        polish moves turbines far less than that; the caller checks every pair afterwards."""
        i, j = np.triu_indices(self.n, k=1)
        if xy is not None:
            dist = np.hypot(*(xy[i] - xy[j]).T)
            near = dist < _WATCH_RADIUS_SPACINGS * self.site.min_spacing_m
            i, j = i[near], j[near]
        self.pair_i, self.pair_j = i, j

    def unwatched_pair_too_close(self, xy: FloatArray) -> bool:
        """Whether a pair outside the spacing constraints is closer than the spacing."""
        watched = np.zeros((self.n, self.n), dtype=bool)
        watched[self.pair_i, self.pair_j] = True
        i, j = np.triu_indices(self.n, k=1)
        other = ~watched[i, j]
        if not np.any(other):
            return False
        dist = np.hypot(*(xy[i[other]] - xy[j[other]]).T)
        return bool(dist.min() < self.site.min_spacing_m)

    def constraints(self) -> list[dict[str, Any]]:
        cons: list[dict[str, Any]] = [
            {"type": "ineq", "fun": self.boundary_con, "jac": self.boundary_jac}
        ]
        if len(self.pair_i) > 0:
            cons.append({"type": "ineq", "fun": self.spacing_con, "jac": self.spacing_jac})
        return cons

    def bounds(self) -> list[tuple[float, float]]:
        return [(float(a), float(b)) for a, b in zip(self.lower, self.upper, strict=True)]

    def repair(self, xy: FloatArray) -> FloatArray:
        """Nearest feasible layout to ``xy`` (least squares), without any AEP evaluation."""
        from scipy.optimize import minimize  # imported when used: the CLI must start fast

        self.watch_pairs_near(None)
        self.assign_regions(xy)
        target = self.to_u(xy)
        res = minimize(
            lambda u: 0.5 * float(np.sum((u - target) ** 2)),
            target,
            jac=lambda u: u - target,
            method="SLSQP",
            bounds=self.bounds(),
            constraints=self.constraints(),
            options={"maxiter": _REPAIR_MAXITER, "ftol": 1e-12},
        )
        return self.to_xy(np.asarray(res.x, dtype=np.float64))


def _solve(
    problem: _Problem, xy: FloatArray, *, maxiter: int, tol: float
) -> tuple[Any, FloatArray]:
    """One SLSQP solve from ``xy``; returns SciPy's result and the final layout."""
    from scipy.optimize import minimize

    start_aep = problem.aep_gwh(xy)
    # Keep the objective O(1); a zero AEP (all turbines idle) must not divide by zero.
    problem.aep_scale = start_aep if start_aep > 0.0 else 1.0
    problem.watch_pairs_near(xy)
    problem.assign_regions(xy)
    while True:
        res = minimize(
            problem.objective,
            problem.to_u(xy),
            jac=problem.objective_grad,
            method="SLSQP",
            bounds=problem.bounds(),
            constraints=problem.constraints(),
            options={"maxiter": int(maxiter), "ftol": float(tol)},
        )
        final = problem.to_xy(np.asarray(res.x, dtype=np.float64))
        if not problem.unwatched_pair_too_close(final):
            return res, final
        # A pair left out of the constraints came too close: solve again with every pair,
        # from the same start, so the result does not depend on where the culling failed.
        logger.debug("unwatched pair closer than the spacing; solving with every pair")
        problem.watch_pairs_near(None)
        problem.best = _Best()


def _choose_layout(
    problem: _Problem, res: Any, final_xy: FloatArray
) -> tuple[FloatArray, float, bool, str]:
    """Pick the returned layout: SLSQP's final point if feasible, else its projection onto the
    feasible set, unless an earlier feasible iterate has a higher AEP."""
    slsqp_msg = f"SLSQP: {res.message} (status {res.status})"
    bv, sv = problem.violations(final_xy)
    # (label, layout, aep) in order of preference on ties.
    options: list[tuple[str, FloatArray, float]] = []
    if bv <= 0.0 and sv <= 0.0:
        options.append(("final", final_xy, problem.aep_at(final_xy)))
        note = ""
    else:
        # SLSQP iterates approach active constraints from outside, so an unconverged final
        # point is typically a few centimetres out; projecting it loses almost no AEP.
        repaired = problem.repair(final_xy)
        rbv, rsv = problem.violations(repaired)
        note = f"final layout infeasible (boundary {bv:.3g} m, spacing {sv:.3g} m)"
        if (rbv <= 0.0 and rsv <= 0.0) or (
            problem.best.layout is None and rbv <= FEASIBILITY_TOL_M and rsv <= FEASIBILITY_TOL_M
        ):
            options.append(("repaired", repaired, problem.aep_gwh(repaired)))
        elif problem.best.layout is None:
            message = (
                f"{slsqp_msg}; {note}; INFEASIBLE: no feasible iterate seen and repair left "
                f"boundary {rbv:.3g} m, spacing {rsv:.3g} m"
            )
            logger.warning("%s", message)
            return repaired, problem.aep_gwh(repaired), False, message
    if problem.best.layout is not None:
        options.append(("best iterate", problem.best.layout, problem.best.aep_gwh))
    top = max(aep for _, _, aep in options)
    label, layout, aep = next(opt for opt in options if opt[2] >= top - _AEP_TIE_RTOL * abs(top))
    if label == "final":
        return layout, aep, bool(res.success), slsqp_msg
    detail = {
        "repaired": "returned its projection onto the feasible set",
        "best iterate": "returned the best feasible iterate",
    }[label]
    if not note:
        note = "final AEP below an earlier iterate"
    message = f"{slsqp_msg}; {note}; {detail}"
    logger.info("%s", message)
    return layout, aep, False, message


def _check_options(
    *,
    site: SiteSpec,
    method: str,
    maxiter: int,
    tol: float,
    wec: tuple[float, ...],
    wec_tol: float,
    evaluator: str,
    hops: int,
    hop_m: float,
) -> None:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}")
    if isinstance(maxiter, bool) or not isinstance(maxiter, int | np.integer) or maxiter < 1:
        raise ValueError(f"maxiter: expected an integer >= 1, got {maxiter!r}")
    for name, value in (("tol", tol), ("wec_tol", wec_tol)):
        if not (isinstance(value, int | float | np.number) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: expected a finite value > 0, got {value!r}")
    if isinstance(hops, bool) or not isinstance(hops, int | np.integer) or hops < 0:
        raise ValueError(f"hops: expected an integer >= 0, got {hops!r}")
    if not (isinstance(hop_m, int | float | np.number) and math.isfinite(hop_m) and hop_m > 0):
        raise ValueError(f"hop_m: expected a finite distance > 0 (metres), got {hop_m!r}")
    if evaluator not in EVALUATORS:
        raise ValueError(f"evaluator: expected one of {list(EVALUATORS)}, got {evaluator!r}")
    if evaluator == "fast" and site.name not in FAST_SITES:
        raise ValueError(
            f"evaluator: 'fast' covers only site(s) {list(FAST_SITES)}, got site {site.name!r}; "
            f"use evaluator = 'pywake'"
        )
    if wec:
        if site.name not in WEC_SITES:
            raise ValueError(
                f"wec: wake expansion continuation exists only for site(s) {list(WEC_SITES)}, "
                f"got site {site.name!r}"
            )
        for xi in wec:
            if not (isinstance(xi, int | float) and math.isfinite(xi) and xi >= 1.0):
                raise ValueError(f"wec: expected wake expansion factors >= 1, got {list(wec)}")


def _frozen(xy: FloatArray) -> FloatArray:
    out = np.array(xy, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


def optimize_layout(
    *,
    site: str,
    site_def: str = "",
    n_turbines: int | None = None,
    start: str = "grid",
    grid_size: int,
    random_pct: float,
    seed: int,
    method: str = "SLSQP",
    maxiter: int,
    tol: float,
    wec: tuple[float, ...] = (),
    wec_tol: float = 1e-2,
    evaluator: str = "pywake",
    lattice: LatticeRanges = DEFAULT_LATTICE,
    hops: int = 0,
    hop_m: float = 50.0,
) -> LayoutResult:
    """Maximise the AEP of one configuration; see the module docstring for the guarantees.

    ``n_turbines=None`` uses the site's default farm size. ``tol`` is SLSQP's ``ftol`` on the
    objective AEP / initial AEP. ``wec`` is a wake expansion continuation schedule: one SLSQP
    solve at ``ftol=wec_tol`` per factor, in order, before the final solve at factor 1 and
    ``tol``. ``hops`` rounds of monotonic basin hopping follow: the best layout so far is
    jittered by up to ``hop_m`` metres per coordinate, polished again, and kept if better.
    ``evaluator="fast"`` evaluates the model with numpy inside the loop; the returned
    AEPs are always the site's PyWake model's. Raises ``ValueError`` for impossible options and
    ``FloatingPointError`` if the model returns a non-finite AEP or gradient.
    """
    t_start = time.perf_counter()
    spec = get_site(site, site_def)
    n = spec.default_n_turbines if n_turbines is None else n_turbines
    schedule = tuple(float(xi) for xi in wec)
    _check_options(
        site=spec,
        method=method,
        maxiter=maxiter,
        tol=tol,
        wec=schedule,
        wec_tol=wec_tol,
        evaluator=evaluator,
        hops=hops,
        hop_m=hop_m,
    )
    check_start(spec, n_turbines=n, start=start, grid_size=grid_size, random_pct=random_pct)

    xy0 = initial_layout(
        spec,
        n_turbines=n,
        start=start,
        grid_size=grid_size,
        random_pct=random_pct,
        seed=seed,
        lattice=lattice,
    )
    record = _Problem(spec, n, _PyWakeModel(spec.wind_farm_model(n)))
    initial_aep = record.aep_gwh(xy0)

    counters = record.counters
    iterations = 0
    xy = xy0
    # Continuation stages end loosely converged; only the final stage's outcome is judged.
    for xi, stage_tol in [*((xi, wec_tol) for xi in schedule), (1.0, tol)]:
        problem = _Problem(spec, n, _model(spec, n, evaluator=evaluator, xi=xi))
        problem.counters = counters
        res, xy = _solve(problem, xy, maxiter=maxiter, tol=stage_tol)
        iterations += int(res.nit)
    layout, aep, converged, message = _choose_layout(problem, res, xy)
    if hops:
        # Monotonic basin hopping: jitter the best layout, polish again, keep improvements.
        # Its own random stream, so the start of a config does not depend on ``hops``.
        hop_rng = np.random.default_rng([seed, _HOP_STREAM])
        accepted = 0
        for _ in range(hops):
            trial = pull_inside(spec, n, layout + hop_rng.uniform(-hop_m, hop_m, size=layout.shape))
            hop_problem = _Problem(spec, n, problem.model)
            hop_problem.counters = counters
            hop_res, hop_xy = _solve(hop_problem, trial, maxiter=maxiter, tol=tol)
            iterations += int(hop_res.nit)
            hop_layout, hop_aep, hop_converged, hop_message = _choose_layout(
                hop_problem, hop_res, hop_xy
            )
            bv, sv = hop_problem.violations(hop_layout)
            if bv <= 0.0 and sv <= 0.0 and hop_aep > aep * (1.0 + _AEP_TIE_RTOL):
                layout, aep, converged, message = hop_layout, hop_aep, hop_converged, hop_message
                accepted += 1
        message = f"{message}; basin hopping: {accepted} of {hops} hops improved"
    if evaluator == "fast":
        # PyWake is the model of record: the stored AEP is its value, not the fast model's.
        aep = record.aep_gwh(layout)
    out_bv, out_sv = problem.violations(layout)
    wall = time.perf_counter() - t_start
    logger.debug(
        "%s n=%d start=%s grid=%d random=%g%% seed=%d wec=%s: AEP %.3f -> %.3f GWh, %d it, %.3f s",
        site,
        n,
        start,
        grid_size,
        random_pct,
        seed,
        list(schedule),
        initial_aep,
        aep,
        iterations,
        wall,
    )
    return LayoutResult(
        layout=_frozen(layout),
        aep_gwh=float(aep),
        initial_layout=_frozen(xy0),
        initial_aep_gwh=float(initial_aep),
        iterations=iterations,
        aep_evaluations=counters.aep_evaluations,
        gradient_evaluations=counters.gradient_evaluations,
        wall_time_s=wall,
        max_boundary_violation_m=out_bv,
        max_spacing_violation_m=out_sv,
        converged=converged,
        message=message,
        aep_time_s=counters.aep_time_s,
        gradient_time_s=counters.gradient_time_s,
    )


def warm_up(*, site: str, site_def: str = "", n_turbines: int | None = None) -> float:
    """Import PyWake, build the site's model and run one AEP and one gradient; return seconds.

    Importing PyWake takes ~2 s, which otherwise lands in the first ``optimize_layout`` call
    of each worker process and skews its ``wall_time_s``.
    """
    t0 = time.perf_counter()
    spec = get_site(site, site_def)
    n = spec.default_n_turbines if n_turbines is None else n_turbines
    spec.check_n_turbines(n)
    problem = _Problem(spec, n, _PyWakeModel(spec.wind_farm_model(n)))
    side = math.ceil(math.sqrt(n)) if spec.lease(n) is None else _warm_grid(spec, n)
    xy = initial_layout(
        spec, n_turbines=n, start="grid", grid_size=max(side, 1), random_pct=0.0, seed=0
    )
    problem.aep_gwh(xy)
    problem.aep_gradient(xy)
    return time.perf_counter() - t0


def _warm_grid(spec: SiteSpec, n: int) -> int:
    """A grid size whose lease points hold ``n`` turbines (a lease can leave many cells out)."""
    size = max(math.ceil(math.sqrt(n)), 1)
    while len(grid_candidates(spec, n, size)) < n and size < 64 * max(n, 1):
        size += 1
    return size
