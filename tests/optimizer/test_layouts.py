"""Starting layouts: properties over sites, farm sizes, grids, random fractions and seeds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.layouts import (
    boundary_violation,
    check_start,
    grid_candidates,
    initial_layout,
    max_turbines_bound,
    n_random_turbines,
    spacing_violation,
)
from optimizer.sites import get_site

IEA37 = get_site("iea37")
HR1 = get_site("hornsrev1")
# Largest grid_size whose fitted lattice (the square inscribed in the circle) keeps the
# minimum spacing: R * sqrt(2) / (g - 1) >= 260 m.
IEA37_COARSEST = {
    n: math.floor(r * math.sqrt(2.0) / 260.0) + 1
    for n, r in {16: 1300.0, 36: 2000.0, 64: 3000.0}.items()
}

seeds = st.integers(min_value=0, max_value=2**32 - 1)
pcts = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


@st.composite
def grid_specs(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        site, n = IEA37, draw(st.sampled_from([16, 36, 64]))
    else:
        site, n = HR1, draw(st.integers(min_value=1, max_value=60))
    grid_size = draw(st.integers(min_value=math.ceil(math.sqrt(n)), max_value=12))
    return {
        "site": site,
        "n_turbines": n,
        "start": "grid",
        "grid_size": grid_size,
        "random_pct": draw(pcts),
        "seed": draw(seeds),
    }


@settings(deadline=None, max_examples=40)
@given(spec=grid_specs())
def test_grid_start_is_inside_right_shape_and_deterministic(spec: dict[str, Any]) -> None:
    site, n = spec["site"], spec["n_turbines"]
    layout = initial_layout(**spec)
    assert layout.shape == (n, 2)
    assert layout.dtype == np.float64
    assert np.all(np.isfinite(layout))
    assert boundary_violation(site, n, layout).max() <= 1e-6
    np.testing.assert_array_equal(layout, initial_layout(**spec))


@settings(deadline=None, max_examples=25)
@given(n=st.sampled_from([16, 36, 64]), data=st.data(), seed=seeds)
def test_coarse_grid_without_random_turbines_keeps_spacing(
    n: int, data: st.DataObject, seed: int
) -> None:
    grid_size = data.draw(st.integers(math.ceil(math.sqrt(n)), IEA37_COARSEST[n]))
    layout = initial_layout(
        IEA37, n_turbines=n, start="grid", grid_size=grid_size, random_pct=0.0, seed=seed
    )
    assert spacing_violation(IEA37, layout) == 0.0
    assert boundary_violation(IEA37, n, layout).max() <= 1e-6


@settings(deadline=None, max_examples=25)
@given(n=st.sampled_from([16, 36, 64]), random_pct=pcts, seed=seeds)
def test_baseline_start_is_inside_and_deterministic(n: int, random_pct: float, seed: int) -> None:
    kwargs: dict[str, Any] = {
        "n_turbines": n,
        "start": "baseline",
        "grid_size": 1,
        "random_pct": random_pct,
        "seed": seed,
    }
    layout = initial_layout(IEA37, **kwargs)
    assert layout.shape == (n, 2)
    assert boundary_violation(IEA37, n, layout).max() <= 1e-6
    np.testing.assert_array_equal(layout, initial_layout(IEA37, **kwargs))
    baseline = IEA37.baseline_layout(n)
    assert baseline is not None
    unchanged = np.all(np.abs(layout - baseline) < 1e-3, axis=1)
    assert unchanged.sum() >= n - n_random_turbines(n, random_pct)


@settings(deadline=None, max_examples=15)
@given(seed=seeds)
def test_sparse_random_start_keeps_spacing(seed: int) -> None:
    # 16 turbines use ~15 % of the packing bound, so rejection sampling always finds room.
    layout = initial_layout(
        IEA37, n_turbines=16, start="grid", grid_size=4, random_pct=100.0, seed=seed
    )
    assert spacing_violation(IEA37, layout) == 0.0
    assert boundary_violation(IEA37, 16, layout).max() <= 1e-6


def test_different_seeds_give_different_random_layouts() -> None:
    kwargs: dict[str, Any] = {"n_turbines": 16, "start": "grid", "grid_size": 4, "random_pct": 50.0}
    a = initial_layout(IEA37, seed=0, **kwargs)
    b = initial_layout(IEA37, seed=1, **kwargs)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a[:8], b[:8])  # the grid half does not depend on the seed


def test_grid_fits_inscribed_square_of_circle() -> None:
    points = grid_candidates(IEA37, 16, 4)
    assert len(points) == 16
    half_side = 1300.0 / math.sqrt(2.0)
    np.testing.assert_allclose(np.abs(points).max(axis=0), [half_side, half_side], rtol=1e-9)


BASE: dict[str, Any] = {"n_turbines": 16, "start": "grid", "grid_size": 4, "random_pct": 0.0}


@pytest.mark.parametrize(
    ("site_name", "override", "option"),
    [
        ("iea37", {"start": "spiral"}, "start"),
        ("iea37", {"grid_size": 0}, "grid_size"),
        ("iea37", {"grid_size": -3}, "grid_size"),
        ("iea37", {"grid_size": 2.5}, "grid_size"),
        ("iea37", {"random_pct": -5.0}, "random_pct"),
        ("iea37", {"random_pct": 100.5}, "random_pct"),
        ("iea37", {"random_pct": float("nan")}, "random_pct"),
        ("iea37", {"n_turbines": 20}, "n_turbines"),
        ("iea37", {"n_turbines": 0}, "n_turbines"),
        ("iea37", {"grid_size": 3}, "grid_size"),
        ("hornsrev1", {"n_turbines": 5000, "grid_size": 80}, "n_turbines"),
        ("hornsrev1", {"start": "baseline"}, "start"),
    ],
)
def test_check_start_rejects_impossible_specs(
    site_name: str, override: dict[str, Any], option: str
) -> None:
    spec = {**BASE, **override}
    with pytest.raises(ValueError, match=rf"^{option}: ") as info:
        check_start(get_site(site_name), **spec)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=rf"^{option}: "):
        initial_layout(get_site(site_name), seed=0, **spec)


@settings(deadline=None, max_examples=30)
@given(random_pct=st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=100.000001)))
def test_check_start_rejects_any_out_of_range_pct(random_pct: float) -> None:
    with pytest.raises(ValueError, match=r"^random_pct: expected a value in \[0, 100\]"):
        check_start(IEA37, **{**BASE, "random_pct": random_pct})


def test_random_turbines_need_fewer_grid_points() -> None:
    # 9 grid points cannot host 16 fixed turbines, but can host the 8 left at 50 % random.
    check_start(IEA37, **{**BASE, "grid_size": 3, "random_pct": 50.0})


def test_packing_bound_matches_groemer_inequality() -> None:
    # floor(2 pi R^2 / (sqrt(3) 260^2) + pi R / 260 + 1) for R = 1300, 2000, 3000 m.
    assert [max_turbines_bound(IEA37, n) for n in (16, 36, 64)] == [107, 239, 520]


def test_violation_helpers_measure_metres() -> None:
    xy = np.array([[1310.0, 0.0], [0.0, 0.0], [200.0, 0.0]])
    np.testing.assert_allclose(boundary_violation(IEA37, 16, xy), [10.0, 0.0, 0.0])
    assert spacing_violation(IEA37, xy) == pytest.approx(60.0)
    assert spacing_violation(IEA37, xy[:1]) == 0.0
    polygon = HR1.boundary(80)
    outside = polygon.min(axis=0) - [0.0, 25.0]
    assert boundary_violation(HR1, 80, outside[None, :])[0] > 0.0
