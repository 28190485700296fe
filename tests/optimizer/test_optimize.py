"""Small real PyWake optimizations: feasible, no worse than the start, sane bookkeeping."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from optimizer.optimize import FEASIBILITY_TOL_M, LayoutResult, optimize_layout
from optimizer.sites import SiteSpec, get_site


def _check_result(result: LayoutResult, n_turbines: int) -> None:
    site = get_site("iea37")
    assert result.layout.shape == result.initial_layout.shape == (n_turbines, 2)
    assert result.layout.dtype == np.float64
    assert np.all(np.isfinite(result.layout))
    for value in (
        result.aep_gwh,
        result.initial_aep_gwh,
        result.wall_time_s,
        result.aep_time_s,
        result.gradient_time_s,
    ):
        assert math.isfinite(value)
    assert result.max_boundary_violation_m <= FEASIBILITY_TOL_M
    assert result.max_spacing_violation_m <= FEASIBILITY_TOL_M
    # Independent feasibility check, straight from the site geometry.
    circle = site.circle(n_turbines)
    assert circle is not None
    assert np.hypot(*result.layout.T).max() <= circle.radius + FEASIBILITY_TOL_M
    i, j = np.triu_indices(n_turbines, k=1)
    gaps = np.hypot(*(result.layout[i] - result.layout[j]).T)
    assert gaps.min() >= site.min_spacing_m - FEASIBILITY_TOL_M
    # The returned AEP is the AEP of the returned layout.
    wfm = site.wind_farm_model(n_turbines)
    assert float(wfm.aep(*result.layout.T)) == pytest.approx(result.aep_gwh, rel=1e-12)
    assert result.aep_gwh >= result.initial_aep_gwh - 1e-9
    assert result.iterations > 0
    assert result.aep_evaluations > 0 and result.gradient_evaluations > 0
    assert 0.0 < result.aep_time_s + result.gradient_time_s <= result.wall_time_s
    assert result.message


def test_small_iea37_grid_optimization_improves_and_is_feasible() -> None:
    result = optimize_layout(
        site="iea37", n_turbines=16, grid_size=4, random_pct=0.0, seed=0, maxiter=15, tol=1e-6
    )
    _check_result(result, 16)
    assert result.aep_gwh > 1.2 * result.initial_aep_gwh  # a 4x4 square is far from optimal
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.aep_gwh = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.layout[0, 0] = 0.0


@pytest.mark.parametrize(
    ("start", "random_pct", "seed", "maxiter"),
    [
        ("baseline", 0.0, 0, 40),
        ("grid", 50.0, 3, 2),
        ("baseline", 50.0, 7, 5),
    ],
)
def test_iea37_starts_and_early_stops_stay_feasible(
    start: str, random_pct: float, seed: int, maxiter: int
) -> None:
    # Early stops leave SLSQP slightly outside the circle: the fallback must still hand back a
    # feasible layout that is no worse than the start.
    result = optimize_layout(
        site="iea37",
        n_turbines=16,
        start=start,
        grid_size=5,
        random_pct=random_pct,
        seed=seed,
        maxiter=maxiter,
        tol=1e-6,
    )
    _check_result(result, 16)
    assert result.iterations <= maxiter
    if start == "baseline" and random_pct == 0.0:
        assert result.initial_aep_gwh * 1e3 == pytest.approx(366_941.57, abs=0.01)
    if not result.converged:
        assert "SLSQP" in result.message


def test_default_farm_size_and_determinism() -> None:
    kwargs: dict[str, Any] = {
        "site": "iea37",
        "grid_size": 5,
        "random_pct": 25.0,
        "seed": 11,
        "maxiter": 8,
        "tol": 1e-6,
    }
    a = optimize_layout(**kwargs)
    b = optimize_layout(**kwargs)
    assert a.layout.shape == (16, 2)
    np.testing.assert_array_equal(a.layout, b.layout)
    assert a.aep_gwh == b.aep_gwh


def test_hornsrev1_polygon_optimization_is_feasible() -> None:
    site = get_site("hornsrev1")
    result = optimize_layout(
        site="hornsrev1", n_turbines=4, grid_size=2, random_pct=50.0, seed=1, maxiter=5, tol=1e-6
    )
    assert result.layout.shape == (4, 2)
    assert result.aep_gwh >= result.initial_aep_gwh - 1e-9
    from optimizer.layouts import boundary_violation, spacing_violation

    assert boundary_violation(site, 4, result.layout).max() <= FEASIBILITY_TOL_M
    assert spacing_violation(site, result.layout) <= FEASIBILITY_TOL_M


@pytest.mark.parametrize(
    ("override", "option"),
    [
        ({"method": "COBYLA"}, "method"),
        ({"maxiter": 0}, "maxiter"),
        ({"tol": 0.0}, "tol"),
        ({"tol": float("inf")}, "tol"),
        ({"site": "nowhere"}, "site"),
        ({"n_turbines": 17}, "n_turbines"),
        ({"random_pct": -5.0}, "random_pct"),
        ({"start": "hexagon"}, "start"),
    ],
)
def test_bad_options_raise_value_error_naming_the_option(
    override: dict[str, Any], option: str
) -> None:
    kwargs: dict[str, Any] = {
        "site": "iea37",
        "n_turbines": 16,
        "grid_size": 4,
        "random_pct": 0.0,
        "seed": 0,
        "maxiter": 5,
        "tol": 1e-6,
    }
    with pytest.raises(ValueError, match=rf"^{option}: "):
        optimize_layout(**{**kwargs, **override})


class _NanAEP:
    """Real PyWake model whose AEP is poisoned, to exercise the non-finite guard."""

    def __init__(self, wfm: Any) -> None:
        self._wfm = wfm

    def aep(self, *args: Any, **kwargs: Any) -> float:
        return float(self._wfm.aep(*args, **kwargs)) * math.nan

    def aep_gradients(self, *args: Any, **kwargs: Any) -> Any:
        return self._wfm.aep_gradients(*args, **kwargs)


def test_non_finite_aep_raises_floating_point_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = SiteSpec.wind_farm_model
    monkeypatch.setattr(SiteSpec, "wind_farm_model", lambda self, n: _NanAEP(real(self, n)))
    with pytest.raises(FloatingPointError, match="AEP"):
        optimize_layout(
            site="iea37", n_turbines=16, grid_size=4, random_pct=0.0, seed=0, maxiter=5, tol=1e-6
        )


def test_warm_up_builds_the_model() -> None:
    from optimizer.optimize import warm_up

    assert 0.0 < warm_up(site="iea37", n_turbines=16) < 30.0
    with pytest.raises(ValueError, match=r"^n_turbines: "):
        warm_up(site="iea37", n_turbines=17)
