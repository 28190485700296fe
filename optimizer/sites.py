"""Registry of wind-farm sites for layout optimization.

Each :class:`SiteSpec` bundles everything the optimizer needs to know about a site: the
boundary (a convex polygon in metres, plus the exact circle where the site is circular),
the rotor diameter and minimum spacing, a factory for the PyWake wind farm model, an
optional baseline layout and published reference AEPs.

Sites:

``iea37``
    IEA Wind Task 37 case study 1 (16, 36 or 64 turbines in a circle of radius
    1300 / 2000 / 3000 m, IEA 3.35 MW turbines, simple Bastankhah Gaussian wake model).
``hornsrev1``
    Horns Rev 1 (Vestas V80, Weibull wind climate from PyWake's example data). Coordinates are
    local metres relative to the south-west corner turbine of the real farm (UTM32 easting
    424452, northing 6147556). The boundary is the parallelogram spanned by the four corner
    turbines of the real 8 x 10 layout, pushed outwards by one rotor diameter on every edge so
    that the real layout (whose published coordinates are rounded to whole metres and so sit up
    to ~1 m off the ideal rows) lies strictly inside.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from optimizer.geometry import FloatArray, Lease

__all__ = ["FloatArray"]  # re-exported: the package's array type, defined in geometry

logger = logging.getLogger(__name__)

# Number of vertices used to approximate circular boundaries as polygons; the exact circle is
# exposed separately, so the polygon only matters for plotting and generic geometry.
_CIRCLE_POLYGON_VERTICES = 360


@dataclass(frozen=True, kw_only=True)
class Circle:
    """An exact circular boundary (metres)."""

    center: tuple[float, float]
    radius: float


@dataclass(frozen=True, kw_only=True)
class ReferenceAEP:
    """Published AEP figures for one farm size (MWh per year)."""

    baseline_mwh: float
    best_published_mwh: float


@dataclass(frozen=True, kw_only=True)
class SiteSpec:
    """Everything the layout optimizer needs to know about one site.

    The callables are per-site factories; they are fields (not subclasses) so that the registry
    stays a plain table of frozen values.
    """

    name: str
    description: str
    default_n_turbines: int
    allowed_n_turbines: tuple[int, ...] | None
    rotor_diameter: float
    circle_fn: Callable[[int], Circle | None] = field(repr=False)
    polygon_fn: Callable[[int], FloatArray] = field(repr=False)
    wind_farm_model_fn: Callable[[int], Any] = field(repr=False)
    baseline_fn: Callable[[int], FloatArray | None] = field(repr=False)
    reference: Mapping[int, ReferenceAEP] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    # A lease of regions and exclusions (optimizer.geometry.Lease); None: the boundary above
    # (a circle or one convex polygon), handled as it always was.
    lease_fn: Callable[[int], Lease] | None = field(default=None, repr=False)
    min_spacing_diameters: float = 2.0

    @property
    def min_spacing_m(self) -> float:
        """Minimum allowed distance between two turbines (default two rotor diameters)."""
        return self.min_spacing_diameters * self.rotor_diameter

    def lease(self, n_turbines: int) -> Lease | None:
        """The site's regions and exclusions, or ``None`` for a circle or one convex polygon."""
        self.check_n_turbines(n_turbines)
        return None if self.lease_fn is None else self.lease_fn(n_turbines)

    def outline(self, n_turbines: int) -> Lease:
        """What to draw: the regions and exclusions of any site (a circle as a polygon).

        The report draws ``outline(n).regions`` as the lease and ``outline(n).exclusions`` as
        hatched no-go zones.
        """
        lease = self.lease(n_turbines)
        if lease is not None:
            return lease
        return Lease.build([self.boundary(n_turbines)], where=f"site {self.name!r}")

    def check_n_turbines(self, n_turbines: int) -> None:
        """Raise ``ValueError`` unless ``n_turbines`` is a farm size this site supports."""
        if isinstance(n_turbines, bool) or not isinstance(n_turbines, int | np.integer):
            raise ValueError(
                f"n_turbines: expected an integer, got {type(n_turbines).__name__} {n_turbines!r}"
            )
        if n_turbines < 1:
            raise ValueError(f"n_turbines: expected at least 1, got {n_turbines}")
        if self.allowed_n_turbines is not None and n_turbines not in self.allowed_n_turbines:
            raise ValueError(
                f"n_turbines: site {self.name!r} supports {list(self.allowed_n_turbines)}, "
                f"got {n_turbines}"
            )

    def circle(self, n_turbines: int) -> Circle | None:
        """The exact circular boundary, or ``None`` when the site is not circular."""
        self.check_n_turbines(n_turbines)
        return self.circle_fn(n_turbines)

    def boundary(self, n_turbines: int) -> FloatArray:
        """Boundary polygon vertices, shape (m, 2), metres, counter-clockwise, convex.

        For circular sites the polygon is inscribed in the exact circle, so a point inside the
        polygon is always inside the circle. For a site with a lease (:meth:`lease`), the
        first region; use :meth:`outline` to draw any site.
        """
        self.check_n_turbines(n_turbines)
        lease = self.lease(n_turbines)
        if lease is not None:
            return np.array(lease.regions[0], dtype=np.float64)
        return self.polygon_fn(n_turbines).copy()

    def wind_farm_model(self, n_turbines: int) -> Any:
        """The PyWake ``WindFarmModel`` for this site and farm size (cached per process)."""
        self.check_n_turbines(n_turbines)
        return self.wind_farm_model_fn(n_turbines)

    def baseline_layout(self, n_turbines: int) -> FloatArray | None:
        """Baseline layout, shape (n, 2), metres, or ``None`` if the site has none for n."""
        self.check_n_turbines(n_turbines)
        layout = self.baseline_fn(n_turbines)
        return None if layout is None else layout.copy()

    def reference_for(self, n_turbines: int) -> ReferenceAEP | None:
        """Published reference AEPs for this farm size, if any."""
        return self.reference.get(n_turbines)


def circle_polygon(circle: Circle, n_vertices: int = _CIRCLE_POLYGON_VERTICES) -> FloatArray:
    """Counter-clockwise polygon inscribed in ``circle``."""
    theta = np.linspace(0.0, 2.0 * np.pi, n_vertices, endpoint=False)
    cx, cy = circle.center
    return np.column_stack(
        (cx + circle.radius * np.cos(theta), cy + circle.radius * np.sin(theta))
    ).astype(np.float64)


def polygon_signed_area(vertices: FloatArray) -> float:
    """Shoelace area: positive for counter-clockwise vertex order."""
    x, y = vertices[:, 0], vertices[:, 1]
    return float(0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def offset_convex_polygon(vertices: FloatArray, margin: float) -> FloatArray:
    """Push every edge of a counter-clockwise convex polygon outwards by ``margin`` metres."""
    p0 = vertices
    p1 = np.roll(vertices, -1, axis=0)
    edge = p1 - p0
    # Outward normal of a CCW polygon edge (dx, dy) is (dy, -dx).
    normal = np.column_stack((edge[:, 1], -edge[:, 0])) / np.linalg.norm(edge, axis=1)[:, None]
    q0 = p0 + margin * normal
    # New vertex k is the intersection of shifted edge k-1 and shifted edge k.
    out = np.empty_like(vertices)
    m = len(vertices)
    for k in range(m):
        a_pt, a_dir = q0[k - 1], edge[k - 1]
        b_pt, b_dir = q0[k], edge[k]
        mat = np.column_stack((a_dir, -b_dir))
        t = np.linalg.solve(mat, b_pt - a_pt)
        out[k] = a_pt + t[0] * a_dir
    return out


# --- IEA Wind Task 37 case study 1 -------------------------------------------------------------

_IEA37_RADIUS_M: Mapping[int, float] = MappingProxyType({16: 1300.0, 36: 2000.0, 64: 3000.0})
_IEA37_REFERENCE: Mapping[int, ReferenceAEP] = MappingProxyType(
    {
        16: ReferenceAEP(baseline_mwh=366_941.6, best_published_mwh=418_924.4),
        36: ReferenceAEP(baseline_mwh=737_883.1, best_published_mwh=863_676.3),
        64: ReferenceAEP(baseline_mwh=1_294_974.3, best_published_mwh=1_513_311.2),
    }
)
# IEA 3.35 MW reference turbine, from iea37-335mw.yaml (rotor radius 65 m).
_IEA37_ROTOR_DIAMETER_M = 130.0


def _iea37_circle(n_turbines: int) -> Circle:
    return Circle(center=(0.0, 0.0), radius=_IEA37_RADIUS_M[n_turbines])


def _iea37_polygon(n_turbines: int) -> FloatArray:
    return circle_polygon(_iea37_circle(n_turbines))


@functools.cache
def _iea37_wfm(n_turbines: int) -> Any:
    from py_wake.literature.iea37_case_study1 import IEA37CaseStudy1

    return IEA37CaseStudy1(n_turbines)


@functools.cache
def _iea37_baseline_cached(n_turbines: int) -> FloatArray:
    from py_wake.examples.data.iea37 import iea37_path
    from py_wake.examples.data.iea37.iea37_reader import read_iea37_windfarm

    x, y, _ = read_iea37_windfarm(f"{iea37_path}iea37-ex{n_turbines}.yaml")
    layout = np.column_stack((np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)))
    layout.setflags(write=False)
    return layout


def _iea37_baseline(n_turbines: int) -> FloatArray:
    return _iea37_baseline_cached(n_turbines)


# --- Horns Rev 1 -------------------------------------------------------------------------------

_HR1_ORIGIN_UTM = (424452.0, 6147556.0)
_HR1_ROTOR_DIAMETER_M = 80.0
# Wind-direction bin width for the Horns Rev 1 AEP. PyWake's default is 1 degree, which makes
# a 16-turbine gradient ~4x slower (~220 ms) while changing AEP by only ~0.02 %.
_HR1_WD_STEP_DEG = 5.0
# Wake expansion coefficient used by PyWake's own Bastankhah examples.
_HR1_WAKE_K = 0.0324555


def _hr1_real_layout() -> FloatArray:
    from py_wake.examples.data.hornsrev1 import wt_x, wt_y

    return np.column_stack(
        (
            np.asarray(wt_x, dtype=np.float64) - _HR1_ORIGIN_UTM[0],
            np.asarray(wt_y, dtype=np.float64) - _HR1_ORIGIN_UTM[1],
        )
    )


@functools.cache
def _hr1_polygon_cached() -> FloatArray:
    from py_wake.examples.data.hornsrev1 import wt_x, wt_y

    # Corner turbines of the real 8-row x 10-column farm: SW, SE, NE, NW (counter-clockwise).
    corners_utm = np.array(
        [
            [wt_x[7], wt_y[7]],
            [wt_x[79], wt_y[79]],
            [wt_x[72], wt_y[72]],
            [wt_x[0], wt_y[0]],
        ],
        dtype=np.float64,
    )
    corners = corners_utm - np.asarray(_HR1_ORIGIN_UTM)
    polygon = offset_convex_polygon(corners, _HR1_ROTOR_DIAMETER_M)
    polygon.setflags(write=False)
    return polygon


def _hr1_polygon(n_turbines: int) -> FloatArray:
    del n_turbines  # the boundary does not depend on the farm size
    return _hr1_polygon_cached()


@functools.cache
def _hr1_wfm(n_turbines: int) -> Any:
    del n_turbines  # one model serves every farm size
    from py_wake.examples.data.hornsrev1 import V80, Hornsrev1Site
    from py_wake.literature.gaussian_models import Bastankhah_PorteAgel_2014

    site = Hornsrev1Site()
    site.default_wd = np.arange(0.0, 360.0, _HR1_WD_STEP_DEG)
    # pchip interpolation keeps the power/ct curves differentiable for autograd.
    return Bastankhah_PorteAgel_2014(site, V80(method="pchip"), k=_HR1_WAKE_K)


def _hr1_baseline(n_turbines: int) -> FloatArray | None:
    real = _hr1_real_layout()
    return real if n_turbines == len(real) else None


SITES: Mapping[str, SiteSpec] = MappingProxyType(
    {
        "iea37": SiteSpec(
            name="iea37",
            description=(
                "IEA Wind Task 37 case study 1: circular site, IEA 3.35 MW turbines, "
                "simple Bastankhah Gaussian wakes (py_wake IEA37CaseStudy1)"
            ),
            default_n_turbines=16,
            allowed_n_turbines=(16, 36, 64),
            rotor_diameter=_IEA37_ROTOR_DIAMETER_M,
            circle_fn=_iea37_circle,
            polygon_fn=_iea37_polygon,
            wind_farm_model_fn=_iea37_wfm,
            baseline_fn=_iea37_baseline,
            reference=_IEA37_REFERENCE,
        ),
        "hornsrev1": SiteSpec(
            name="hornsrev1",
            description=(
                "Horns Rev 1: real farm parallelogram padded by one rotor diameter, Vestas V80, "
                "Weibull wind rose, Bastankhah & Porte-Agel (2014) Gaussian wakes"
            ),
            default_n_turbines=80,
            allowed_n_turbines=None,
            rotor_diameter=_HR1_ROTOR_DIAMETER_M,
            circle_fn=lambda n: None,
            polygon_fn=_hr1_polygon,
            wind_farm_model_fn=_hr1_wfm,
            baseline_fn=_hr1_baseline,
        ),
    }
)


# Built-in sites written in the user-facing [sites.NAME] format (package data, see
# optimizer/data/README.md for the attribution of the IEA37 case-study data).
SPEC_SITES: Mapping[str, str] = MappingProxyType(
    {"iea37-cs3": "iea37-cs3.toml", "iea37-cs4": "iea37-cs4.toml"}
)


def site_names() -> list[str]:
    """Every built-in site name."""
    return sorted([*SITES, *SPEC_SITES])


def get_site(name: str, definition: str = "") -> SiteSpec:
    """Look up a site.

    Parameters
    ----------
    name
        A built-in site (:func:`site_names`), a site defined in a spec's ``[sites.NAME]``
        table (then ``definition`` holds it), or ``"package.module:function"``: a function
        returning an :class:`optimizer.farm.Site`, imported here (in every worker).
    definition
        The resolved ``[sites.NAME]`` table as canonical JSON (``SweepConfig.site_def``).

    Raises
    ------
    ValueError
        An unknown name, or a site definition that cannot be used.
    """
    if definition:
        from optimizer.farm import site_from_definition

        return site_from_definition(name, definition)
    if name in SITES:
        return SITES[name]
    if name in SPEC_SITES:
        from optimizer.farm import builtin_spec_site

        return builtin_spec_site(name, SPEC_SITES[name])
    if ":" in name:
        from optimizer.farm import python_site

        return python_site(name)
    raise ValueError(
        f"site: expected one of {site_names()}, a [sites.NAME] table of the spec, or "
        f"'package.module:function', got {name!r}"
    )
