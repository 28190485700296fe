"""Where turbines may stand: a lease of polygon regions minus exclusion zones.

A :class:`Lease` is one or more simple polygons (the *regions*; a turbine may stand in any of
them, on an edge included) minus zero or more simple polygons (the *exclusions*; no turbine
strictly inside one). Polygons may be non-convex. Everything is in metres.

What the rest of the package asks of a lease:

* :meth:`Lease.contains` / :meth:`Lease.violation`: the strict feasibility check of every
  layout (no tolerance: a turbine 1e-12 m outside is outside);
* :meth:`Lease.signed_distance`: positive inside, for lattice margins;
* :meth:`Lease.constraints`: the optimizer's inequality constraints with their exact
  Jacobian. Each turbine is assigned to one region (the one it is deepest in when a solve
  starts); for a convex region its constraints are the region's edge half-planes (linear), for
  a non-convex one the signed distance to the region's edges; each exclusion adds the signed
  distance outside it. Signed distances are differentiable except on the medial axis, which
  an active constraint meets only at convex corners;
* :meth:`Lease.max_turbines`: an upper bound on how many turbines fit at a spacing, so a
  site too small for ``n_turbines`` is refused before anything runs.

Polygons are checked when a lease is built (:func:`as_polygon`): at least three finite
vertices, non-zero area, no two edges crossing or touching other than neighbours at their
shared vertex; a closing vertex equal to the first is dropped and clockwise input is reversed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

# How far ring points (lattice starts) are moved inwards from an edge: keeps round-off from
# putting a point on the wrong side, far below any effect on the AEP.
_RING_INSET_M = 1e-6


class GeometryError(ValueError):
    """A polygon or lease that cannot be used; the message names it and says why."""


def as_polygon(points: Any, what: str) -> FloatArray:
    """Validate ``points`` as a simple polygon; return its vertices (m, 2), counter-clockwise.

    Parameters
    ----------
    points
        Vertices ``[[x, y], ...]`` in metres, in either orientation; a last vertex equal to the
        first is dropped.
    what
        Names the polygon in error messages, e.g. ``"sites.lfarm: boundary"``.

    Returns
    -------
    numpy.ndarray
        Read-only float array of shape (m, 2), counter-clockwise.

    Raises
    ------
    GeometryError
        Fewer than three vertices, non-finite numbers, zero area, or a self-intersection.
    """
    try:
        arr = np.array(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise GeometryError(f"{what}: expected a list of [x, y] vertices, got {points!r}") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise GeometryError(
            f"{what}: expected a list of [x, y] vertices, got an array of shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise GeometryError(f"{what}: expected finite coordinates, got {arr.tolist()}")
    if len(arr) >= 2 and np.array_equal(arr[0], arr[-1]):
        arr = arr[:-1]
    if len(arr) < 3:
        raise GeometryError(f"{what}: expected at least 3 vertices, got {len(arr)}")
    if len(np.unique(arr, axis=0)) != len(arr):
        raise GeometryError(f"{what}: a vertex is repeated; expected a simple polygon")
    crossing = _first_crossing(arr)
    if crossing is not None:
        a, b = crossing
        raise GeometryError(
            f"{what}: the polygon intersects itself (edge {a} from {arr[a].tolist()} crosses "
            f"edge {b} from {arr[b].tolist()}); expected a simple polygon"
        )
    area = signed_area(arr)
    if area == 0.0:
        raise GeometryError(f"{what}: the polygon has zero area")
    out = arr if area > 0.0 else arr[::-1].copy()
    out = np.ascontiguousarray(out)
    out.setflags(write=False)
    return out


def signed_area(vertices: FloatArray) -> float:
    """Shoelace area: positive for counter-clockwise vertex order."""
    x, y = vertices[:, 0], vertices[:, 1]
    return float(0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _orient(a: FloatArray, b: FloatArray, c: FloatArray) -> float:
    return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))


def _on_segment(a: FloatArray, b: FloatArray, p: FloatArray) -> bool:
    return bool(
        min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])
    )


def _segments_touch(p1: FloatArray, p2: FloatArray, q1: FloatArray, q2: FloatArray) -> bool:
    d1, d2 = _orient(q1, q2, p1), _orient(q1, q2, p2)
    d3, d4 = _orient(p1, p2, q1), _orient(p1, p2, q2)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return bool(
        (d1 == 0 and _on_segment(q1, q2, p1))
        or (d2 == 0 and _on_segment(q1, q2, p2))
        or (d3 == 0 and _on_segment(p1, p2, q1))
        or (d4 == 0 and _on_segment(p1, p2, q2))
    )


def _first_crossing(v: FloatArray) -> tuple[int, int] | None:
    m = len(v)
    for a in range(m):
        a0, a1 = v[a], v[(a + 1) % m]
        for b in range(a + 1, m):
            b0, b1 = v[b], v[(b + 1) % m]
            if b == a + 1 or (a == 0 and b == m - 1):
                # Neighbours share a vertex; they cross only by folding back onto each other.
                shared, other_a, other_b = (a1, a0, b1) if b == a + 1 else (a0, a1, b0)
                if _orient(shared, other_a, other_b) == 0.0 and (
                    _on_segment(shared, other_a, other_b) or _on_segment(shared, other_b, other_a)
                ):
                    return a, b
                continue
            if _segments_touch(a0, a1, b0, b1):
                return a, b
    return None


def is_convex(vertices: FloatArray) -> bool:
    """Whether a counter-clockwise simple polygon is convex (collinear vertices allowed)."""
    edge = np.roll(vertices, -1, axis=0) - vertices
    cross = (
        edge[:, 0] * np.roll(edge, -1, axis=0)[:, 1] - edge[:, 1] * np.roll(edge, -1, axis=0)[:, 0]
    )
    return bool(np.all(cross >= 0.0))


def halfplanes(vertices: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Inward unit normals ``a`` (m, 2) and offsets ``b`` (m,) of a CCW polygon's edges.

    ``xy @ a.T + b`` is the signed distance of each point to each edge's line, positive on the
    inner side; for a convex polygon a point is inside iff every value is >= 0.
    """
    edge = np.roll(vertices, -1, axis=0) - vertices
    normal = np.column_stack((-edge[:, 1], edge[:, 0])) / np.linalg.norm(edge, axis=1)[:, None]
    offset = -np.einsum("ij,ij->i", normal, vertices)
    return normal.astype(np.float64), offset.astype(np.float64)


def _crossings(v: FloatArray, xy: FloatArray) -> NDArray[np.bool_]:
    """Even-odd rule: whether each point is inside the polygon (edges ambiguous)."""
    x0, y0 = v[:, 0][None, :], v[:, 1][None, :]
    x1, y1 = np.roll(v[:, 0], -1)[None, :], np.roll(v[:, 1], -1)[None, :]
    px, py = xy[:, 0][:, None], xy[:, 1][:, None]
    straddle = (y0 > py) != (y1 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
    hits = straddle & (px < x_cross)
    return np.asarray(np.sum(hits, axis=1) % 2 == 1)


def _nearest_on_edges(v: FloatArray, xy: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Distance of each point to the polygon's edges, the nearest point, the edge's normal."""
    p0 = v[None, :, :]
    edge = (np.roll(v, -1, axis=0) - v)[None, :, :]
    rel = xy[:, None, :] - p0
    t = np.clip(np.sum(rel * edge, axis=2) / np.sum(edge * edge, axis=2), 0.0, 1.0)
    nearest = p0 + t[:, :, None] * edge
    dist = np.linalg.norm(xy[:, None, :] - nearest, axis=2)
    k = np.argmin(dist, axis=1)
    rows = np.arange(len(xy))
    normals, _ = halfplanes(v)
    return dist[rows, k], nearest[rows, k], normals[k]


def polygon_signed_distance(v: FloatArray, xy: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Signed distance (positive inside) of each point to a CCW polygon, and its gradient.

    Returns ``(d, grad)`` with shapes (n,) and (n, 2). A point exactly on an edge has
    ``d == 0`` and the edge's inward normal as gradient.
    """
    dist, nearest, normal = _nearest_on_edges(v, xy)
    inside = _crossings(v, xy)
    sign = np.where(inside, 1.0, -1.0)
    delta = xy - nearest
    with np.errstate(divide="ignore", invalid="ignore"):
        grad = np.where(dist[:, None] > 0.0, sign[:, None] * delta / dist[:, None], normal)
    return (np.where(dist > 0.0, sign * dist, 0.0)).astype(np.float64), grad.astype(np.float64)


@dataclass(frozen=True, eq=False)
class Lease:
    """Regions (a turbine may stand in any, edges included) minus exclusions (none inside).

    Build one with :meth:`Lease.build`, which validates every polygon.
    """

    regions: tuple[FloatArray, ...]
    exclusions: tuple[FloatArray, ...] = ()
    _convex: tuple[bool, ...] = field(default=(), repr=False)

    @staticmethod
    def build(
        regions: Sequence[Any], exclusions: Sequence[Any] = (), *, where: str = "site"
    ) -> Lease:
        """Validate the polygons and build a lease.

        Parameters
        ----------
        regions
            One or more polygons ``[[x, y], ...]`` (metres).
        exclusions
            Zero or more polygons no turbine may stand strictly inside.
        where
            Prefix of error messages, e.g. ``"sites.lfarm"``.

        Raises
        ------
        GeometryError
            No region, or a polygon that :func:`as_polygon` refuses.
        """
        if len(regions) == 0:
            raise GeometryError(f"{where}: expected at least one region")
        regs = tuple(
            as_polygon(r, f"{where}: region {i}" if len(regions) > 1 else f"{where}: boundary")
            for i, r in enumerate(regions)
        )
        excl = tuple(as_polygon(e, f"{where}: exclusion {i}") for i, e in enumerate(exclusions))
        return Lease(regs, excl, tuple(is_convex(r) for r in regs))

    # --- plain geometry ----------------------------------------------------------------------
    @property
    def is_convex_polygon(self) -> bool:
        """One convex region and no exclusion."""
        return len(self.regions) == 1 and not self.exclusions and self._convex[0]

    def bounding_box(self) -> tuple[FloatArray, FloatArray]:
        """Lower-left and upper-right corners of the regions' bounding box."""
        allv = np.vstack(self.regions)
        return allv.min(axis=0), allv.max(axis=0)

    def area(self) -> float:
        """Area of the regions minus the exclusions (overlaps not subtracted twice: an estimate
        when exclusions overlap each other or stick out of the regions)."""
        total = sum(signed_area(r) for r in self.regions)
        return float(max(total - sum(signed_area(e) for e in self.exclusions), 0.0))

    def centroid(self) -> FloatArray:
        """Area-weighted centroid of the regions (exclusions ignored)."""
        acc = np.zeros(2)
        weight = 0.0
        for v in self.regions:
            x, y = v[:, 0], v[:, 1]
            cross = x * np.roll(y, -1) - np.roll(x, -1) * y
            a = 0.5 * float(np.sum(cross))
            acc += (
                np.array(
                    [np.sum((x + np.roll(x, -1)) * cross), np.sum((y + np.roll(y, -1)) * cross)]
                )
                / 6.0
            )
            weight += a
        return (acc / weight).astype(np.float64)

    def max_turbines(self, spacing: float) -> int:
        """Upper bound on how many points with mutual distance >= ``spacing`` fit.

        Discs of radius ``spacing / 2`` about such points are disjoint and lie in the regions
        grown by that radius, whose area is at most A + P r + V pi r^2 per polygon (area A,
        perimeter P, V vertices).
        """
        r = 0.5 * spacing
        grown = 0.0
        for v in self.regions:
            perimeter = float(np.sum(np.linalg.norm(np.roll(v, -1, axis=0) - v, axis=1)))
            grown += signed_area(v) + perimeter * r + len(v) * math.pi * r * r
        return math.floor(grown / (math.pi * r * r))

    # --- feasibility -------------------------------------------------------------------------
    def region_depths(self, xy: FloatArray) -> FloatArray:
        """Signed distance of each point to each region, shape (n, regions), positive inside."""
        return np.column_stack([polygon_signed_distance(v, xy)[0] for v in self.regions])

    def violation(self, xy: FloatArray) -> FloatArray:
        """Per point: 0 if it may hold a turbine, else the distance (m) to the nearest edge that
        would have to be crossed (out of an exclusion, or into the nearest region).

        Exact and strict: on a region's edge counts as inside, on an exclusion's edge as
        outside it, anywhere else by a hair is a violation.
        """
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        depth = self.region_depths(pts).max(axis=1)
        out = np.maximum(-depth, 0.0)
        for e in self.exclusions:
            d, _ = polygon_signed_distance(e, pts)
            out = np.maximum(out, np.maximum(d, 0.0))
        result: FloatArray = out.astype(np.float64)
        return result

    def contains(self, xy: FloatArray) -> NDArray[np.bool_]:
        """Whether each point may hold a turbine (see :meth:`violation`)."""
        return np.asarray(self.violation(xy) <= 0.0)

    def signed_distance(self, xy: FloatArray) -> FloatArray:
        """Distance to the nearest edge, positive where a turbine may stand, else negative."""
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        d = self.region_depths(pts).max(axis=1)
        for e in self.exclusions:
            d = np.minimum(d, -polygon_signed_distance(e, pts)[0])
        result: FloatArray = d.astype(np.float64)
        return result

    # --- the optimizer's constraints ---------------------------------------------------------
    def assign(self, xy: FloatArray) -> tuple[int, ...]:
        """The region each point is deepest in (or nearest to, when outside every region)."""
        return tuple(int(k) for k in np.argmax(self.region_depths(xy), axis=1))

    def constraints(
        self, xy: FloatArray, assignment: Sequence[int], margin: float
    ) -> tuple[FloatArray, FloatArray]:
        """Constraint values (metres, >= 0 when feasible by ``margin``) and their Jacobian.

        The Jacobian has shape (k, 2 n) with respect to ``[x_0 .. x_{n-1}, y_0 .. y_{n-1}]``.
        The rows depend only on ``assignment`` and the lease, so their number is fixed for a
        solve: per turbine, its region's half-planes (convex) or signed distance (non-convex),
        then per turbine and exclusion the signed distance outside the exclusion.
        """
        n = len(xy)
        values: list[FloatArray] = []
        jacs: list[FloatArray] = []
        owner = np.asarray(assignment, dtype=np.int64)
        for r, v in enumerate(self.regions):
            idx = np.flatnonzero(owner == r)
            if len(idx) == 0:
                continue
            if self._convex[r]:
                normal, offset = halfplanes(v)
                val = xy[idx] @ normal.T + offset - margin  # (k, m)
                jac = np.zeros((len(idx), len(v), 2 * n))
                jac[np.arange(len(idx)), :, idx] = normal[None, :, 0]
                jac[np.arange(len(idx)), :, n + idx] = normal[None, :, 1]
                values.append(val.ravel())
                jacs.append(jac.reshape(-1, 2 * n))
            else:
                d, g = polygon_signed_distance(v, xy[idx])
                jac = np.zeros((len(idx), 2 * n))
                jac[np.arange(len(idx)), idx] = g[:, 0]
                jac[np.arange(len(idx)), n + idx] = g[:, 1]
                values.append(d - margin)
                jacs.append(jac)
        for e in self.exclusions:
            d, g = polygon_signed_distance(e, xy)
            jac = np.zeros((n, 2 * n))
            jac[np.arange(n), np.arange(n)] = -g[:, 0]
            jac[np.arange(n), n + np.arange(n)] = -g[:, 1]
            values.append(-d - margin)
            jacs.append(jac)
        return np.concatenate(values).astype(np.float64), np.vstack(jacs).astype(np.float64)

    # --- starting layouts --------------------------------------------------------------------
    def ring(self, fractions: FloatArray) -> FloatArray:
        """Points at the given fractions of the way along the regions' edges (all regions'
        perimeters end to end), a micrometre inside; points in an exclusion are dropped."""
        pieces = []
        for v in self.regions:
            normal, _ = halfplanes(v)
            pieces.append((v, np.roll(v, -1, axis=0) - v, normal))
        starts = np.vstack([p[0] for p in pieces])
        edges = np.vstack([p[1] for p in pieces])
        normals = np.vstack([p[2] for p in pieces])
        lengths = np.linalg.norm(edges, axis=1)
        cumulative = np.concatenate(([0.0], np.cumsum(lengths)))
        arc = np.asarray(fractions, dtype=np.float64) * cumulative[-1]
        k = np.clip(np.searchsorted(cumulative, arc, side="right") - 1, 0, len(edges) - 1)
        t = (arc - cumulative[k]) / lengths[k]
        points = starts[k] + t[:, None] * edges[k] + _RING_INSET_M * normals[k]
        result: FloatArray = points[self.contains(points)].astype(np.float64)
        return result
