"""PyWake for the report: a site's geometry and model, its dominant wind, a layout's flow map.

PyWake's grid class is imported inside :func:`flow_field`; the models come from
:mod:`optimizer.sites`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from optimizer.sites import get_site

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

FLOW_GRID_POINTS = 110
"""Flow-map grid points along the longer side (~0.05 s of PyWake for 64 turbines)."""


@dataclass(frozen=True, slots=True)
class FlowField:
    """Effective wind speed on a horizontal grid at hub height, for one flow case."""

    x: FloatArray
    y: FloatArray
    ws_eff: FloatArray  # shape (len(y), len(x))
    wd: float
    ws: float


@dataclass(frozen=True, slots=True)
class SiteGeometry:
    """What a layout figure draws around the turbines, and the model its flow map uses.

    All None when the site is unknown (the figure then shows the turbines only). A lease of
    several regions with exclusion zones is drawn from ``boundary``, ``regions`` and
    ``exclusions``: :func:`site_geometry` is the one place that reads them from
    :mod:`optimizer.sites`.
    """

    boundary: FloatArray | None
    """The lease's (first) region, (m, 2) metres."""
    min_spacing_m: float | None
    wfm: Any
    exclusions: tuple[FloatArray, ...] = ()
    """Polygons inside the lease where no turbine may stand."""
    regions: tuple[FloatArray, ...] = ()
    """Further lease regions of a site of several regions."""

    @property
    def lease_points(self) -> FloatArray | None:
        """Every vertex of the lease (all regions), for the extent of a flow map."""
        polygons = [p for p in (self.boundary, *self.regions) if p is not None]
        return np.vstack(polygons) if polygons else None


def site_geometry(
    site: str,
    n_turbines: int,
    cache: dict[tuple[str, int, str], SiteGeometry] | None = None,
    *,
    site_def: str = "",
) -> SiteGeometry:
    """Look up the boundary, minimum spacing and wind farm model of a site and farm size.

    Parameters
    ----------
    site : str
        A site name of :func:`optimizer.sites.get_site`.
    n_turbines : int
        The farm size.
    cache : dict, optional
        Reused between calls of one report (building a wind farm model is not free).
    site_def : str
        The config's resolved ``[sites.NAME]`` table (``SweepConfig.site_def``), for a
        site defined in a spec.

    Returns
    -------
    SiteGeometry
        Empty (all None) for an unknown site or size, with a warning logged.
    """
    cache = {} if cache is None else cache
    key = (site, n_turbines, site_def)
    if key not in cache:
        try:
            spec = get_site(site, site_def)
            lease = spec.outline(n_turbines)
            cache[key] = SiteGeometry(
                lease.regions[0],
                spec.min_spacing_m,
                spec.wind_farm_model(n_turbines),
                exclusions=tuple(lease.exclusions),
                regions=tuple(lease.regions[1:]),
            )
        except ValueError as err:
            log.warning("no site geometry for %s-%s: %s", site, n_turbines, err)
            cache[key] = SiteGeometry(None, None, None)
    return cache[key]


def dominant_wind(wfm: Any, x: float = 0.0, y: float = 0.0) -> tuple[float, float]:
    """Find the site's largest frequency-weighted wind at (x, y).

    For each wind-direction bin of the site, the wind is weighted by its probability:
    ``sum over ws of P(wd, ws) * WS``; the dominant direction is the bin where that is
    largest, and the speed is the probability-weighted mean wind speed of that bin.

    Parameters
    ----------
    wfm : py_wake.wind_farm_models.WindFarmModel
        The site's model (its ``site`` and ``windTurbines`` are used).
    x, y : float
        Where to evaluate the local wind, metres.

    Returns
    -------
    tuple of float
        (direction in degrees, where the wind comes from, in [0, 360); speed in m/s).
    """
    site = wfm.site
    hub = np.atleast_1d(np.asarray(wfm.windTurbines.hub_height(), dtype=np.float64))[:1]
    lw = site.local_wind(
        x=np.array([x]), y=np.array([y]), h=hub, wd=site.default_wd, ws=site.default_ws
    )
    p = lw.P + 0.0 * lw.WS  # broadcast P and WS to the same dims
    weighted = p * lw.WS
    if "wd" not in weighted.dims:
        total = float(p.sum())
        return 270.0, float(weighted.sum()) / total if total else float(np.mean(site.default_ws))
    other = [d for d in weighted.dims if d != "wd"]
    w = np.asarray(weighted.sum(other) if other else weighted, dtype=np.float64)
    freq = np.asarray(p.sum(other) if other else p, dtype=np.float64)
    idx = int(np.argmax(w))
    wd = float(np.asarray(weighted["wd"])[idx])
    ws = float(w[idx] / freq[idx]) if freq[idx] > 0 else float(np.mean(site.default_ws))
    return wd % 360.0, ws


def flow_field(
    wfm: Any,
    layout: FloatArray,
    boundary: FloatArray | None,
    wd: float,
    ws: float,
    *,
    points: int = FLOW_GRID_POINTS,
) -> FlowField:
    """Compute the effective wind speed at hub height around ``layout`` for one flow case.

    Parameters
    ----------
    wfm : py_wake.wind_farm_models.WindFarmModel
        The site's model.
    layout : numpy.ndarray
        Turbine positions, shape (n, 2), metres.
    boundary : numpy.ndarray or None
        The site boundary (n, 2): the grid covers it and the layout, plus a 15 % margin.
    wd, ws : float
        The flow case: direction (degrees, where the wind comes from) and speed (m/s).
    points : int
        Grid points along the longer side.

    Returns
    -------
    FlowField
    """
    from py_wake import HorizontalGrid

    pts = layout if boundary is None else np.vstack((boundary, layout))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = float(max(hi[0] - lo[0], hi[1] - lo[1], 1.0))
    margin = 0.15 * span
    lo, hi = lo - margin, hi + margin
    step = (span + 2 * margin) / (points - 1)
    xs = np.arange(lo[0], hi[0] + step / 2, step)
    ys = np.arange(lo[1], hi[1] + step / 2, step)
    sim = wfm(layout[:, 0], layout[:, 1], wd=[wd], ws=[ws])
    fmap = sim.flow_map(HorizontalGrid(x=xs, y=ys))
    ws_eff = fmap.WS_eff.squeeze(drop=True).transpose("y", "x")
    return FlowField(
        x=np.asarray(ws_eff["x"], dtype=np.float64),
        y=np.asarray(ws_eff["y"], dtype=np.float64),
        ws_eff=np.asarray(ws_eff, dtype=np.float64),
        wd=wd,
        ws=ws,
    )
