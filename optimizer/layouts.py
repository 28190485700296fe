"""Starting layouts and feasibility measures for layout optimization.

Starting layouts
----------------
``start="grid"``
    A ``grid_size`` x ``grid_size`` lattice spanning the boundary's bounding box is shrunk about
    the box centre by the largest factor (at most 1) for which every lattice point lies inside
    the boundary; for a circle this is the inscribed square. Points that still fall outside
    (only possible for non-convex boundaries) are dropped. The non-random turbines take evenly
    spread picks among the remaining points, listed in serpentine (boustrophedon) order.
``start="baseline"``
    The site's published baseline layout.
``start="lattice"``
    A near-square lattice with a ring of turbines on the boundary, every parameter drawn from
    ``seed`` (see :func:`lattice_layout`); ``grid_size`` is not used. Good optimized layouts of
    IEA37 case study 1 look like this (near-square lattices with 8 turbines on the circle).

In every case ``random_pct`` percent of the turbines (rounded half up) are instead placed at
random: for ``grid`` they replace the last picks, for ``baseline`` a random subset of the
baseline turbines is relocated. Random positions are drawn uniformly in the bounding box by
rejection sampling, accepting only points inside the boundary that keep the minimum spacing to
every turbine already placed. If no such point turns up within ``_RANDOM_MAX_TRIES`` draws the
turbine goes to the drawn in-boundary point farthest from its neighbours: the layout is then
still inside the boundary but may violate the spacing, which the optimizer has to repair.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from optimizer.geometry import polygon_signed_distance
from optimizer.sites import FloatArray, SiteSpec

logger = logging.getLogger(__name__)

STARTS: tuple[str, ...] = ("grid", "baseline", "lattice")

# Lattice-with-ring parameters: each draw takes a rotation ~ U(0, 90 deg), a spacing of
# sqrt(area / n) times U(0.8, 1.15), a side ratio ~ U(0.95, 1.08), an angle between the lattice
# vectors of 90 +- 3 deg, a random offset, 4-12 turbines equally spaced on the boundary with a
# random phase, and an inner margin ~ U(0, 400 m) that keeps the lattice turbines off the ring.
LATTICE_SPACING_FACTOR = (0.8, 1.15)
LATTICE_SIDE_RATIO = (0.95, 1.08)
LATTICE_ANGLE_DEG = (87.0, 93.0)
LATTICE_RING_TURBINES = (4, 12)
LATTICE_INNER_MARGIN_M = (0.0, 400.0)
LATTICE_ROTATION_DEG = (0.0, 90.0)
# ring_mode "equal": the ring turbines equally spaced with a random phase. "paired": in four
# groups, one per lattice axis (or per diagonal, at random), each group spread over +- U(range)
# degrees about its axis; par12's layouts have 8 ring turbines in pairs ~37 degrees apart.
RING_MODES: tuple[str, ...] = ("equal", "paired")
LATTICE_RING_PAIR_DEG = (12.0, 25.0)
# offset_mode "random": the lattice offset ~ U(0, 1) x U(0, 1) of a cell. "symmetric": one of the
# four offsets that make the lattice symmetric under a half turn about the boundary's centroid
# (a lattice point, a cell centre or an edge midpoint on the centroid), drawn uniformly. Good
# 36- and 64-turbine layouts of IEA37 case study 1 are nearly four-fold symmetric with a
# lattice point at the centre.
OFFSET_MODES: tuple[str, ...] = ("random", "symmetric")
SYMMETRIC_OFFSETS = np.array([[0.0, 0.0], [0.5, 0.5], [0.5, 0.0], [0.0, 0.5]])


@dataclass(frozen=True, slots=True, kw_only=True)
class LatticeRanges:
    """Ranges the lattice-with-ring parameters are drawn from (uniformly; ring count: integers).

    The defaults explore every near-square lattice; a record spec may narrow them to the
    structure of known good layouts (e.g. 8 ring turbines). ``ring_mode`` is one of
    ``RING_MODES`` and ``offset_mode`` one of ``OFFSET_MODES`` (see their comments).
    """

    ring_turbines: tuple[int, int] = LATTICE_RING_TURBINES
    spacing_factor: tuple[float, float] = LATTICE_SPACING_FACTOR
    rotation_deg: tuple[float, float] = LATTICE_ROTATION_DEG
    inner_margin_m: tuple[float, float] = LATTICE_INNER_MARGIN_M
    ring_mode: str = "equal"
    ring_pair_deg: tuple[float, float] = LATTICE_RING_PAIR_DEG
    offset_mode: str = "random"


DEFAULT_LATTICE = LatticeRanges()
# Draws tried before giving up on a lattice that keeps the spacing (then the draw with the
# largest smallest gap is used); a feasible one almost always turns up in the first few.
LATTICE_MAX_DRAWS = 200

_RANDOM_BATCH = 256
_RANDOM_MAX_TRIES = 8 * _RANDOM_BATCH
# Bisection steps for the lattice shrink factor: 2**-60 of a bounding box is far below 1e-6 m.
_SHRINK_BISECTION_STEPS = 60


def _as_layout(xy: NDArray[np.floating] | FloatArray, name: str = "xy") -> FloatArray:
    arr = np.asarray(xy, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: expected an array of shape (n, 2), got shape {arr.shape}")
    return arr


def polygon_halfplanes(vertices: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Inward unit normals ``a`` (m, 2) and offsets ``b`` (m,) of a CCW convex polygon.

    ``xy @ a.T + b`` is the signed distance of each point to each edge line, positive inside;
    a point is inside the polygon iff all of its values are >= 0.
    """
    p0 = vertices
    edge = np.roll(vertices, -1, axis=0) - p0
    # Inward normal of a CCW edge (dx, dy) is (-dy, dx).
    normal = np.column_stack((-edge[:, 1], edge[:, 0])) / np.linalg.norm(edge, axis=1)[:, None]
    offset = -np.einsum("ij,ij->i", normal, p0)
    return normal.astype(np.float64), offset.astype(np.float64)


def _polygon_outside_distance(vertices: FloatArray, xy: FloatArray) -> FloatArray:
    normal, offset = polygon_halfplanes(vertices)
    signed = xy @ normal.T + offset
    inside = np.all(signed >= 0.0, axis=1)
    p0 = vertices[None, :, :]
    edge = (np.roll(vertices, -1, axis=0) - vertices)[None, :, :]
    rel = xy[:, None, :] - p0
    t = np.clip(np.sum(rel * edge, axis=2) / np.sum(edge * edge, axis=2), 0.0, 1.0)
    nearest = p0 + t[:, :, None] * edge
    dist = np.min(np.linalg.norm(xy[:, None, :] - nearest, axis=2), axis=1)
    return np.where(inside, 0.0, dist).astype(np.float64)


def boundary_violation(site: SiteSpec, n_turbines: int, xy: FloatArray) -> FloatArray:
    """Per-turbine distance (m) outside the boundary, 0 for turbines inside or on it."""
    layout = _as_layout(xy)
    circle = site.circle(n_turbines)
    if circle is not None:
        r = np.hypot(layout[:, 0] - circle.center[0], layout[:, 1] - circle.center[1])
        return np.maximum(r - circle.radius, 0.0).astype(np.float64)
    lease = site.lease(n_turbines)
    if lease is not None:
        return lease.violation(layout)
    return _polygon_outside_distance(site.boundary(n_turbines), layout)


def spacing_violation(site: SiteSpec, xy: FloatArray) -> float:
    """Largest amount (m) by which any pair of turbines is closer than the minimum spacing."""
    layout = _as_layout(xy)
    if len(layout) < 2:
        return 0.0
    i, j = np.triu_indices(len(layout), k=1)
    dist = np.hypot(*(layout[i] - layout[j]).T)
    return float(max(0.0, site.min_spacing_m - float(dist.min())))


def max_turbines_bound(site: SiteSpec, n_turbines: int) -> int:
    """Upper bound on how many turbines fit at the minimum spacing (Groemer's inequality).

    For points with mutual distance >= d in a convex region of area A and perimeter P,
    n <= 2 A / (sqrt(3) d^2) + P / (2 d) + 1.
    """
    d = site.min_spacing_m
    lease = site.lease(n_turbines)
    if lease is not None:
        return lease.max_turbines(d)
    circle = site.circle(n_turbines)
    if circle is not None:
        area = math.pi * circle.radius**2
        perimeter = 2.0 * math.pi * circle.radius
    else:
        vertices = site.boundary(n_turbines)
        x, y = vertices[:, 0], vertices[:, 1]
        area = abs(float(0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)))
        perimeter = float(np.sum(np.linalg.norm(np.roll(vertices, -1, axis=0) - vertices, axis=1)))
    return math.floor(2.0 * area / (math.sqrt(3.0) * d * d) + perimeter / (2.0 * d) + 1.0)


def _bounding_box(site: SiteSpec, n_turbines: int) -> tuple[FloatArray, FloatArray]:
    circle = site.circle(n_turbines)
    if circle is not None:
        center = np.asarray(circle.center, dtype=np.float64)
        return center - circle.radius, center + circle.radius
    lease = site.lease(n_turbines)
    if lease is not None:
        return lease.bounding_box()
    vertices = site.boundary(n_turbines)
    return vertices.min(axis=0), vertices.max(axis=0)


def grid_candidates(site: SiteSpec, n_turbines: int, grid_size: int) -> FloatArray:
    """Feasible points of the fitted ``grid_size`` x ``grid_size`` lattice, serpentine order."""
    lo, hi = _bounding_box(site, n_turbines)
    center = 0.5 * (lo + hi)
    lease = site.lease(n_turbines)
    if lease is not None:
        # Any lease: the cell centres of a grid_size x grid_size division of the bounding box,
        # those a turbine may stand on, serpentine order. No shrinking: for a non-convex lease
        # it would pull every point into one corner.
        cells = (np.arange(grid_size) + 0.5) / grid_size - 0.5
        gx, gy = np.meshgrid(cells, cells, indexing="xy")
        gx[1::2] = gx[1::2, ::-1]
        pts = (center + np.column_stack((gx.ravel(), gy.ravel())) * (hi - lo)).astype(np.float64)
        return pts[lease.contains(pts)]
    unit = np.linspace(-0.5, 0.5, grid_size) if grid_size > 1 else np.zeros(1)
    ux, uy = np.meshgrid(unit, unit, indexing="xy")
    # Serpentine order (odd rows run right to left) so that evenly spaced picks along the list
    # interleave between rows, e.g. every other point of a 4x4 grid is a checkerboard.
    ux[1::2] = ux[1::2, ::-1]
    offsets = np.column_stack((ux.ravel(), uy.ravel())) * (hi - lo)

    def points(scale: float) -> FloatArray:
        return (center + scale * offsets).astype(np.float64)

    def fits(scale: float) -> bool:
        return bool(np.all(boundary_violation(site, n_turbines, points(scale)) <= 0.0))

    if fits(1.0):
        scale = 1.0
    else:
        lo_s, hi_s = 0.0, 1.0
        for _ in range(_SHRINK_BISECTION_STEPS):
            mid = 0.5 * (lo_s + hi_s)
            if fits(mid):
                lo_s = mid
            else:
                hi_s = mid
        scale = lo_s
    pts = points(scale)
    return pts[boundary_violation(site, n_turbines, pts) <= 0.0]


def n_random_turbines(n_turbines: int, random_pct: float) -> int:
    """Number of randomly placed turbines: ``random_pct`` % of n, rounded half up."""
    return min(n_turbines, math.floor(n_turbines * random_pct / 100.0 + 0.5))


def check_start(
    site: SiteSpec, *, n_turbines: int, start: str, grid_size: int, random_pct: float
) -> None:
    """Raise ``ValueError`` naming the offending option if the start spec is impossible."""
    if start not in STARTS:
        raise ValueError(f"start: expected one of {list(STARTS)}, got {start!r}")
    if isinstance(grid_size, bool) or not isinstance(grid_size, int | np.integer):
        raise ValueError(f"grid_size: expected an integer >= 1, got {grid_size!r}")
    if grid_size < 1:
        raise ValueError(f"grid_size: expected an integer >= 1, got {grid_size}")
    if not (isinstance(random_pct, int | float | np.number) and 0.0 <= random_pct <= 100.0):
        raise ValueError(f"random_pct: expected a value in [0, 100], got {random_pct!r}")
    site.check_n_turbines(n_turbines)
    bound = max_turbines_bound(site, n_turbines)
    if n_turbines > bound:
        raise ValueError(
            f"n_turbines: at most {bound} turbines fit on site {site.name!r} at the minimum "
            f"spacing of {site.min_spacing_m:g} m, got {n_turbines}"
        )
    n_fixed = n_turbines - n_random_turbines(n_turbines, random_pct)
    if start == "grid":
        n_points = len(grid_candidates(site, n_turbines, grid_size))
        if n_points < n_fixed:
            raise ValueError(
                f"grid_size: a {grid_size}x{grid_size} grid has {n_points} points inside the "
                f"boundary, expected at least {n_fixed} for the non-random turbines"
            )
    elif start == "baseline" and site.baseline_fn(n_turbines) is None:
        raise ValueError(
            f"start: site {site.name!r} has no baseline layout for {n_turbines} turbines, "
            f"got start='baseline'"
        )


def _place_random(
    site: SiteSpec,
    n_turbines: int,
    placed: FloatArray,
    n_new: int,
    rng: np.random.Generator,
) -> FloatArray:
    lo, hi = _bounding_box(site, n_turbines)
    min_sq = site.min_spacing_m**2
    layout = placed.copy()
    for _ in range(n_new):
        best: FloatArray | None = None
        best_gap = -np.inf
        for _batch in range(_RANDOM_MAX_TRIES // _RANDOM_BATCH):
            cand = rng.uniform(lo, hi, size=(_RANDOM_BATCH, 2))
            cand = cand[boundary_violation(site, n_turbines, cand) <= 0.0]
            if len(cand) == 0:
                continue
            if len(layout) == 0:
                gap = np.full(len(cand), np.inf)
            else:
                gap = np.min(np.sum((cand[:, None, :] - layout[None, :, :]) ** 2, axis=2), axis=1)
            ok = np.flatnonzero(gap >= min_sq)
            if len(ok):
                best = cand[ok[0]]
                break
            k = int(np.argmax(gap))
            if gap[k] > best_gap:
                best, best_gap = cand[k], float(gap[k])
        else:
            logger.debug(
                "no random position keeps %.0f m spacing after %d tries; using the roomiest",
                site.min_spacing_m,
                _RANDOM_MAX_TRIES,
            )
        if best is None:
            # Unreachable for convex boundaries (half the bounding box is inside), kept so a
            # degenerate boundary fails loudly instead of silently stacking turbines.
            raise ValueError(
                f"site: expected a boundary with non-zero area, found no point inside "
                f"{site.name!r} in {_RANDOM_MAX_TRIES} draws"
            )
        layout = np.vstack((layout, best[None, :]))
    return layout[len(placed) :]


def _area_and_centroid(site: SiteSpec, n_turbines: int) -> tuple[float, FloatArray]:
    circle = site.circle(n_turbines)
    if circle is not None:
        return math.pi * circle.radius**2, np.asarray(circle.center, dtype=np.float64)
    lease = site.lease(n_turbines)
    if lease is not None:
        return lease.area(), lease.centroid()
    v = site.boundary(n_turbines)
    x, y = v[:, 0], v[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = 0.5 * float(np.sum(cross))
    cx = float(np.sum((x + np.roll(x, -1)) * cross)) / (6.0 * area)
    cy = float(np.sum((y + np.roll(y, -1)) * cross)) / (6.0 * area)
    return abs(area), np.array([cx, cy], dtype=np.float64)


def _paired_fractions(count: int, axis: float, spread: float) -> FloatArray:
    """Fractions of a turn for ``count`` ring turbines in four groups about ``axis`` + k 90 deg."""
    groups = [count // 4 + (1 if k < count % 4 else 0) for k in range(4)]
    angles: list[float] = []
    for k, size in enumerate(groups):
        offsets = np.linspace(-spread, spread, size) if size > 1 else np.zeros(size)
        angles.extend(axis + k * 0.5 * math.pi + offsets)
    return (np.asarray(angles, dtype=np.float64) / (2.0 * math.pi)) % 1.0


def _ring(
    site: SiteSpec,
    n_turbines: int,
    count: int,
    phase: float,
    fractions: FloatArray | None = None,
) -> FloatArray:
    """``count`` points along the boundary: equally spaced with ``phase`` in [0, 1) of one gap,
    or at the given ``fractions`` of the way round."""
    circle = site.circle(n_turbines)
    if fractions is None:
        fractions = (np.arange(count) + phase) / count
    if circle is not None:
        theta = 2.0 * np.pi * fractions
        cx, cy = circle.center
        # Points exactly on the circle can land 1e-13 m outside in floating point; pull them in.
        r = circle.radius * (1.0 - 1e-12)
        return np.column_stack((cx + r * np.cos(theta), cy + r * np.sin(theta)))
    lease = site.lease(n_turbines)
    if lease is not None:
        return lease.ring(fractions)
    v = site.boundary(n_turbines)
    edges = np.roll(v, -1, axis=0) - v
    lengths = np.linalg.norm(edges, axis=1)
    cumulative = np.concatenate(([0.0], np.cumsum(lengths)))
    arc = fractions * cumulative[-1]
    k = np.clip(np.searchsorted(cumulative, arc, side="right") - 1, 0, len(v) - 1)
    t = (arc - cumulative[k]) / lengths[k]
    points = v[k] + t[:, None] * edges[k]
    # Move a hair inwards so that round-off cannot put a point on the wrong side of an edge.
    _, centroid = _area_and_centroid(site, n_turbines)
    inward: FloatArray = (points + 1e-9 * (centroid - points)).astype(np.float64)
    return inward


def _inner_distance(site: SiteSpec, n_turbines: int, xy: FloatArray) -> FloatArray:
    """Distance of each point inside the boundary to the boundary (negative outside)."""
    circle = site.circle(n_turbines)
    if circle is not None:
        r: FloatArray = np.hypot(xy[:, 0] - circle.center[0], xy[:, 1] - circle.center[1])
        inside: FloatArray = circle.radius - r
        return inside
    lease = site.lease(n_turbines)
    if lease is not None:
        return lease.signed_distance(xy)
    normals, offsets = polygon_halfplanes(site.boundary(n_turbines))
    nearest_edge: FloatArray = np.min(xy @ normals.T + offsets, axis=1)
    return nearest_edge


def _smallest_gap(xy: FloatArray) -> float:
    if len(xy) < 2:
        return math.inf
    i, j = np.triu_indices(len(xy), k=1)
    return float(np.hypot(*(xy[i] - xy[j]).T).min())


def lattice_layout(
    site: SiteSpec,
    n_turbines: int,
    rng: np.random.Generator,
    ranges: LatticeRanges = DEFAULT_LATTICE,
) -> FloatArray:
    """A lattice-with-ring starting layout of exactly ``n_turbines``, inside the boundary.

    ``nb`` turbines go equally spaced on the boundary (fewer if ``n_turbines`` is small), the
    rest at the lattice points nearest the boundary's centroid among those at least the drawn
    margin inside. Draws that break the minimum spacing or have too few inner lattice points
    are rejected; after ``LATTICE_MAX_DRAWS`` rejections the draw with the largest smallest gap
    is returned (inside the boundary, spacing possibly violated) and a warning is logged.
    """
    area, centroid = _area_and_centroid(site, n_turbines)
    lo, hi = _bounding_box(site, n_turbines)
    general = site.lease(n_turbines) is not None
    reach = float(np.linalg.norm(hi - lo))
    best: FloatArray | None = None
    best_gap = -math.inf
    for _ in range(LATTICE_MAX_DRAWS):
        rotation = math.radians(rng.uniform(*ranges.rotation_deg))
        spacing = math.sqrt(area / n_turbines) * rng.uniform(*ranges.spacing_factor)
        ratio = rng.uniform(*LATTICE_SIDE_RATIO)
        angle = math.radians(rng.uniform(*LATTICE_ANGLE_DEG))
        offset = rng.uniform(0.0, 1.0, size=2)
        n_ring = min(
            int(rng.integers(ranges.ring_turbines[0], ranges.ring_turbines[1] + 1)),
            n_turbines - 1,
        )
        phase = rng.uniform(0.0, 1.0)
        margin = rng.uniform(*ranges.inner_margin_m)
        fractions = None
        if ranges.ring_mode == "paired":
            # Drawn after every "equal" parameter, so "equal" draws stay what they always were.
            axis = rotation + (0.25 * math.pi if rng.integers(2) else 0.0)
            spread = math.radians(rng.uniform(*ranges.ring_pair_deg))
            fractions = _paired_fractions(n_ring, axis, spread)
        if ranges.offset_mode == "symmetric":
            # Drawn last too, so "random" draws stay what they always were.
            offset = SYMMETRIC_OFFSETS[int(rng.integers(len(SYMMETRIC_OFFSETS)))]
        v1 = spacing * np.array([math.cos(rotation), math.sin(rotation)])
        v2 = spacing * ratio * np.array([math.cos(rotation + angle), math.sin(rotation + angle)])
        # Enough lattice rows and columns to cover the boundary from the centroid outwards.
        half = math.ceil(reach / (spacing * min(1.0, ratio) * math.sin(angle))) + 1
        steps = np.arange(-half, half + 1, dtype=np.float64)
        a, b = np.meshgrid(steps + offset[0], steps + offset[1], indexing="ij")
        points = centroid + a.reshape(-1, 1) * v1 + b.reshape(-1, 1) * v2
        inner = points[_inner_distance(site, n_turbines, points) >= margin]
        ring = _ring(site, n_turbines, n_ring, phase, fractions) if n_ring > 0 else np.empty((0, 2))
        n_inner = n_turbines - len(ring)
        if len(inner) < n_inner:
            continue
        if general:
            # Several regions or a non-convex lease: evenly spread picks over the lattice
            # points (in lattice order), so that every part of the lease gets turbines.
            picks = np.floor((np.arange(n_inner) + 0.5) * len(inner) / max(n_inner, 1))
            chosen = inner[picks.astype(int)]
        else:
            order = np.argsort(np.hypot(*(inner - centroid).T), kind="stable")
            chosen = inner[order[:n_inner]]
        layout = np.vstack((ring, chosen)).astype(np.float64)
        if np.any(boundary_violation(site, n_turbines, layout) > 0.0):
            continue
        gap = _smallest_gap(layout)
        if gap >= site.min_spacing_m:
            return layout
        if gap > best_gap:
            best, best_gap = layout, gap
    if best is None:
        raise ValueError(
            f"start: no lattice draw fits {n_turbines} turbines inside site {site.name!r} "
            f"in {LATTICE_MAX_DRAWS} draws"
        )
    logger.warning(
        "no lattice keeps %.0f m spacing for %d turbines on %s after %d draws; "
        "using the one with the largest smallest gap (%.1f m)",
        site.min_spacing_m,
        n_turbines,
        site.name,
        LATTICE_MAX_DRAWS,
        best_gap,
    )
    return best


def pull_inside(site: SiteSpec, n_turbines: int, xy: FloatArray) -> FloatArray:
    # Published baselines are rounded and can sit ~1e-5 m outside a circle; snap them onto it so
    # every starting layout is exactly feasible with respect to the boundary.
    circle = site.circle(n_turbines)
    if circle is None:
        return pull_into_lease(site, n_turbines, xy)
    center = np.asarray(circle.center, dtype=np.float64)
    rel = xy - center
    r = np.hypot(rel[:, 0], rel[:, 1])
    factor = np.where(r > circle.radius, circle.radius / np.maximum(r, 1e-300), 1.0)
    return (center + rel * factor[:, None]).astype(np.float64)


def pull_into_lease(site: SiteSpec, n_turbines: int, xy: FloatArray) -> FloatArray:
    """Move points of ``xy`` within a metre outside a lease (rounded published layouts on its
    edge) to a feasible point at most a few millimetres from the nearest edge; others unchanged.
    """
    lease = site.lease(n_turbines)
    if lease is None:
        return xy
    out = np.array(xy, dtype=np.float64)
    angles = np.linspace(0.0, 2.0 * np.pi, 16, endpoint=False)
    ring = np.column_stack((np.cos(angles), np.sin(angles)))
    for i in np.flatnonzero(lease.violation(out) > 0.0):
        for v in (*lease.regions, *lease.exclusions):
            d, g = polygon_signed_distance(v, out[i : i + 1])
            if abs(d[0]) > 1.0:
                continue
            nearest = out[i] + d[0] * -g[0] if d[0] > 0 else out[i] + abs(d[0]) * g[0]
            # The nearest edge point, then the first feasible point on small circles about it.
            for radius in (1e-6, 1e-5, 1e-4, 1e-3):
                cands = nearest + radius * ring
                ok = np.flatnonzero(lease.violation(cands) <= 0.0)
                if len(ok):
                    out[i] = cands[ok[0]]
                    break
            if lease.violation(out[i : i + 1])[0] <= 0.0:
                break
    return out


def initial_layout(
    site: SiteSpec,
    *,
    n_turbines: int,
    start: str,
    grid_size: int,
    random_pct: float,
    seed: int,
    lattice: LatticeRanges = DEFAULT_LATTICE,
) -> FloatArray:
    """Starting layout, shape (n_turbines, 2), metres; deterministic for a given ``seed``.

    ``lattice`` gives the parameter ranges of ``start="lattice"``.
    """
    check_start(
        site, n_turbines=n_turbines, start=start, grid_size=grid_size, random_pct=random_pct
    )
    rng = np.random.default_rng(seed)
    n_rand = n_random_turbines(n_turbines, random_pct)
    n_fixed = n_turbines - n_rand
    if start == "grid":
        candidates = grid_candidates(site, n_turbines, grid_size)
        m = len(candidates)
        # Centred picks floor((j + 1/2) m / k) are distinct whenever k <= m and put a lone pick
        # in the middle of the grid.
        picks = np.floor((np.arange(n_fixed) + 0.5) * m / max(n_fixed, 1)).astype(int)
        fixed = candidates[picks]
        layout = np.vstack((fixed, _place_random(site, n_turbines, fixed, n_rand, rng)))
    elif start == "lattice":
        layout = lattice_layout(site, n_turbines, rng, lattice)
        moved = np.sort(rng.choice(n_turbines, size=n_rand, replace=False))
        keep = np.setdiff1d(np.arange(n_turbines), moved)
        layout[moved] = _place_random(site, n_turbines, layout[keep], n_rand, rng)
    else:
        baseline = site.baseline_fn(n_turbines)
        assert baseline is not None  # guaranteed by check_start
        layout = pull_inside(site, n_turbines, np.array(baseline, dtype=np.float64))
        moved = np.sort(rng.choice(n_turbines, size=n_rand, replace=False))
        keep = np.setdiff1d(np.arange(n_turbines), moved)
        layout[moved] = _place_random(site, n_turbines, layout[keep], n_rand, rng)
    return np.ascontiguousarray(layout, dtype=np.float64)
