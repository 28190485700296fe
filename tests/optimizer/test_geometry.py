"""optimizer.geometry: polygons, leases, strict feasibility and the constraints' gradients."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.geometry import GeometryError, Lease, as_polygon, polygon_signed_distance

L_SHAPE = [[0, 0], [6000, 0], [6000, 3000], [3000, 3000], [3000, 6000], [0, 6000]]
HOLE = [[1000, 1000], [1600, 1000], [1600, 1600], [1000, 1600]]


def test_clockwise_input_is_reversed_and_a_closing_vertex_dropped() -> None:
    ccw = as_polygon([[0, 0], [1, 0], [1, 1], [0, 1]], "p")
    cw = as_polygon([[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]], "p")
    assert len(cw) == 4
    assert not cw.flags.writeable
    # Same polygon, counter-clockwise (positive area) either way.
    assert set(map(tuple, cw.tolist())) == set(map(tuple, ccw.tolist()))
    x, y = cw[:, 0], cw[:, 1]
    assert np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([[0, 0], [2, 2], [2, 0], [0, 2]], "intersects itself"),
        ([[0, 0], [1, 0]], "at least 3 vertices"),
        ([[0, 0], [1, 0], [2, 0]], "zero area|intersects itself"),
        ([[0, 0], [1, 0], [float("nan"), 1]], "finite"),
        ([[0, 0], [1, 0], [1, 1], [1, 0], [0, 1]], "repeated"),
        ("square", "expected a list of"),
        # A vertex touching a non-adjacent edge (a pinched polygon).
        ([[0, 0], [4, 0], [4, 4], [2, 0], [0, 4]], "intersects itself"),
    ],
)
def test_bad_polygons_are_one_line_errors(points: object, message: str) -> None:
    with pytest.raises(GeometryError, match=message) as info:
        as_polygon(points, "sites.x: boundary")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("sites.x: boundary: ")


def test_the_l_shape_is_not_its_convex_hull() -> None:
    lease = Lease.build([L_SHAPE])
    inner_corner_outside = np.array([[4500.0, 4500.0]])
    assert not lease.contains(inner_corner_outside)[0]
    assert lease.violation(inner_corner_outside)[0] == pytest.approx(1500.0)
    assert lease.contains(np.array([[1000.0, 5000.0], [5000.0, 1000.0]])).all()
    assert not lease.is_convex_polygon


def test_strict_feasibility_has_no_tolerance() -> None:
    lease = Lease.build([L_SHAPE], [HOLE])
    eps = 1e-9
    pts = np.array(
        [
            [0.0, 3000.0],  # on the outer edge: allowed
            [-eps, 3000.0],  # a hair outside
            [1000.0, 1300.0],  # on the exclusion's edge: allowed
            [1000.0 + eps, 1300.0],  # a hair inside the exclusion
            [1300.0, 1300.0],  # deep inside the exclusion
        ]
    )
    assert lease.contains(pts).tolist() == [True, False, True, False, False]
    v = lease.violation(pts)
    assert v[0] == 0.0 and v[2] == 0.0
    assert 0.0 < v[1] <= 2 * eps and 0.0 < v[3] <= 2 * eps
    assert v[4] == pytest.approx(300.0)


def test_several_regions() -> None:
    a = [[0, 0], [1000, 0], [1000, 1000], [0, 1000]]
    b = [[3000, 0], [4000, 0], [4000, 1000], [3000, 1000]]
    lease = Lease.build([a, b])
    pts = np.array([[500.0, 500.0], [3500.0, 500.0], [2000.0, 500.0]])
    assert lease.contains(pts).tolist() == [True, True, False]
    assert lease.violation(pts)[2] == pytest.approx(1000.0)
    assert lease.assign(pts)[:2] == (0, 1)
    assert lease.area() == pytest.approx(2e6)


def test_site_too_small_bound_is_an_upper_bound() -> None:
    # A square of side 1000 m at 400 m spacing holds a 3 x 3 grid; the bound may not be lower.
    lease = Lease.build([[[0, 0], [1000, 0], [1000, 1000], [0, 1000]]])
    assert 9 <= lease.max_turbines(400.0) < 40


def _one_sided(lease: Lease, xy: np.ndarray, assignment: tuple[int, ...], h: float) -> np.ndarray:
    n = len(xy)
    base = lease.constraints(xy, assignment, 0.0)[0]
    cols = []
    for k in range(2 * n):
        step = np.zeros(2 * n)
        step[k] = h
        moved = lease.constraints(xy + step.reshape(2, n).T, assignment, 0.0)[0]
        cols.append((moved - base) / h)
    return np.column_stack(cols)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(100, 5900), st.floats(100, 5900)), min_size=1, max_size=5))
def test_constraint_jacobian_is_exact(points: list[tuple[float, float]]) -> None:
    convex = [[7000, 0], [9000, 0], [9000, 2000], [7000, 2000]]
    lease = Lease.build([L_SHAPE, convex], [HOLE])
    xy = np.array(points, dtype=np.float64)
    assignment = tuple(int(i % 2) for i in range(len(xy)))
    values, jac = lease.constraints(xy, assignment, 0.0)
    assert jac.shape == (len(values), 2 * len(xy))
    forward = _one_sided(lease, xy, assignment, 1e-3)
    backward = _one_sided(lease, xy, assignment, -1e-3)
    # Where a signed distance is differentiable (forward and backward differences agree; not
    # on the medial axis), the analytic Jacobian is the derivative.
    smooth = np.abs(forward - backward).max(axis=1) < 1e-6
    assert np.allclose(jac[smooth], forward[smooth], atol=1e-6)


def test_signed_distance_gradient_points_inward() -> None:
    v = as_polygon(L_SHAPE, "p")
    pts = np.array([[4000.0, 5000.0], [500.0, 3000.0], [6500.0, -500.0]])
    d, g = polygon_signed_distance(v, pts)
    assert d[0] == pytest.approx(-1000.0) and d[1] == pytest.approx(500.0)
    assert np.allclose(g[0], [-1.0, 0.0])  # from outside, back across the edge x = 3000
    assert np.allclose(g[1], [1.0, 0.0])
    # Outside a convex corner (6000, 0): towards it.
    assert d[2] == pytest.approx(-np.hypot(500, 500))
    assert np.allclose(g[2], np.array([-1.0, 1.0]) / np.sqrt(2))
