"""The report's figures: matplotlib drawing, and writing the figures of results as PNGs.

matplotlib is imported inside the functions only (without it, :func:`require_matplotlib`
raises :class:`MissingExtraError`). Figures are plain :class:`matplotlib.figure.Figure`
objects rendered by the Agg canvas: no pyplot, no global figure registry, no GUI backend,
safe to use from any thread or process.

Drawing (``layout_figure``, ``published_figure``, ``axes_figure``) takes arrays and numbers
only; ``write_layout_png`` and ``write_axes_png`` read what they need (layouts, the flow
map of :mod:`optimizer._report.flow`) and save the PNG.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from optimizer._report.flow import FlowField, SiteGeometry, dominant_wind, flow_field, site_geometry
from optimizer.summary import NotASweepOutputError, OkRow, Reference, read_layouts

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
INSTALL_HINT = 'pip install ".[report]"'

DPI = 100
START_COLOR = "#8c8c8c"
OPT_COLOR = "#d62728"
BOUNDARY_COLOR = "#1f4e79"
EXCLUSION_COLOR = "#7f7f7f"
REF_BASELINE_COLOR = "#7f7f7f"
REF_BEST_COLOR = "#2ca02c"
_SITE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


class MissingExtraError(RuntimeError):
    """An optional dependency (matplotlib, the ``report`` extra) is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`MissingExtraError` unless matplotlib can be imported.

    Raises
    ------
    MissingExtraError
        With the command that installs it.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            f"plotting needs matplotlib, which is not installed; install it with: {INSTALL_HINT}"
        ) from None


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG, atomically (a reader never sees half an image).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or os.PathLike
        The PNG to write (replaced if it exists).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    final = Path(path)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def _lease_polygons(boundary: FloatArray | None, regions: Sequence[FloatArray]) -> list[FloatArray]:
    """The lease as polygons to draw: the boundary, then any further regions."""
    polygons = [] if boundary is None else [boundary]
    return [p for p in (*polygons, *regions) if len(p) >= 3]


def _draw_layout(
    ax: Axes,
    *,
    boundary: FloatArray | None,
    initial: FloatArray | None,
    optimized: FloatArray,
    min_spacing_m: float | None,
    exclusions: Sequence[FloatArray] = (),
    regions: Sequence[FloatArray] = (),
    legend: bool = True,
) -> None:
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.patches import Circle, Polygon

    lease = _lease_polygons(boundary, regions)
    for i, region in enumerate(lease):
        ax.add_patch(
            Polygon(
                region,
                closed=True,
                fill=False,
                edgecolor=BOUNDARY_COLOR,
                linewidth=1.5,
                label=("boundary" if len(lease) == 1 else "lease region") if i == 0 else None,
            )
        )
    for i, zone in enumerate(z for z in exclusions if len(z) >= 3):
        ax.add_patch(
            Polygon(
                zone,
                closed=True,
                facecolor=(0.5, 0.5, 0.5, 0.15),
                edgecolor=EXCLUSION_COLOR,
                hatch="//",
                linewidth=1.0,
                label="exclusion zone" if i == 0 else None,
            )
        )
    if initial is not None and initial.shape == optimized.shape:
        segments = np.stack((initial, optimized), axis=1)
        ax.add_collection(
            LineCollection(list(segments), colors=START_COLOR, linewidths=0.6, linestyles=":")
        )
    if initial is not None and len(initial):
        ax.scatter(
            initial[:, 0],
            initial[:, 1],
            s=18,
            facecolors="none",
            edgecolors=START_COLOR,
            linewidths=1.0,
            label="start",
            zorder=3,
        )
    if min_spacing_m is not None and min_spacing_m > 0 and len(optimized):
        circles = [Circle((float(x), float(y)), min_spacing_m / 2.0) for x, y in optimized]
        ax.add_collection(
            PatchCollection(
                circles,
                facecolor=(0.84, 0.15, 0.16, 0.08),
                edgecolor=(0.84, 0.15, 0.16, 0.6),
                linewidth=0.6,
                zorder=2,
            )
        )
    if len(optimized):
        ax.scatter(
            optimized[:, 0],
            optimized[:, 1],
            s=22,
            color=OPT_COLOR,
            marker="o",
            label="optimized",
            zorder=4,
        )
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    if legend:
        extra = []
        if min_spacing_m:
            from matplotlib.lines import Line2D

            extra.append(
                Line2D(
                    [],
                    [],
                    marker="o",
                    linestyle="none",
                    markersize=9,
                    markerfacecolor=(0.84, 0.15, 0.16, 0.08),
                    markeredgecolor=(0.84, 0.15, 0.16, 0.6),
                    label=f"min spacing {min_spacing_m:.0f} m (radius = half)",
                )
            )
        handles, _ = ax.get_legend_handles_labels()
        ax.legend(
            handles=[*handles, *extra],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12),
            ncol=2,
            fontsize="small",
            frameon=False,
        )


def _draw_flow(
    ax: Axes,
    fig: Figure,
    flow: FlowField,
    *,
    boundary: FloatArray | None,
    optimized: FloatArray,
    exclusions: Sequence[FloatArray] = (),
    regions: Sequence[FloatArray] = (),
) -> None:
    extent = (float(flow.x[0]), float(flow.x[-1]), float(flow.y[0]), float(flow.y[-1]))
    # Clip the deep deficit right behind each rotor so the wakes far downstream stay visible.
    vmin = max(float(np.nanmin(flow.ws_eff)), 0.5 * flow.ws)
    image = ax.imshow(
        flow.ws_eff,
        vmin=vmin,
        vmax=max(float(np.nanmax(flow.ws_eff)), vmin + 1e-6),
        origin="lower",
        extent=extent,
        cmap="Blues_r",
        interpolation="bilinear",
        aspect="equal",
    )
    fig.colorbar(image, ax=ax, shrink=0.85, label="effective wind speed [m/s]")
    for region in _lease_polygons(boundary, regions):
        closed = np.vstack((region, region[:1]))
        ax.plot(closed[:, 0], closed[:, 1], color=BOUNDARY_COLOR, linewidth=1.0, linestyle="--")
    for zone in (z for z in exclusions if len(z) >= 3):
        closed = np.vstack((zone, zone[:1]))
        ax.plot(closed[:, 0], closed[:, 1], color=EXCLUSION_COLOR, linewidth=1.0, linestyle=":")
    ax.scatter(optimized[:, 0], optimized[:, 1], s=14, color=OPT_COLOR, zorder=3)
    # PyWake's wd is where the wind comes FROM (meteorological): the flow goes the other way.
    rad = np.deg2rad(flow.wd)
    dx, dy = -np.sin(rad), -np.cos(rad)
    ax.annotate(
        "",
        xy=(0.12 + 0.08 * dx, 0.88 + 0.08 * dy),
        xytext=(0.12 - 0.08 * dx, 0.88 - 0.08 * dy),
        xycoords="axes fraction",
        arrowprops={"arrowstyle": "->", "color": "black", "linewidth": 2.0},
    )
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_title(f"wake at dominant direction {flow.wd:.0f}°, {flow.ws:.1f} m/s", fontsize="medium")


def layout_figure(
    *,
    title: str,
    boundary: FloatArray | None,
    initial: FloatArray | None,
    optimized: FloatArray,
    min_spacing_m: float | None,
    flow: FlowField | None = None,
    exclusions: Sequence[FloatArray] = (),
    regions: Sequence[FloatArray] = (),
) -> Figure:
    """Draw a layout: boundary, start, optimized positions, spacing circles; and its wake.

    Parameters
    ----------
    title : str
        The figure's title.
    boundary : numpy.ndarray or None
        The site polygon, shape (m, 2), metres.
    initial : numpy.ndarray or None
        The starting positions, (n, 2); a dotted line joins each to its optimized position.
    optimized : numpy.ndarray
        The optimized positions, (n, 2).
    min_spacing_m : float or None
        Draws a circle of radius ``min_spacing_m / 2`` around each optimized turbine.
    flow : FlowField, optional
        With it, a second panel shows the flow map (one flow case) of the optimized layout.
    exclusions : sequence of numpy.ndarray
        Polygons (m, 2) inside the boundary where no turbine may stand, drawn hatched.
    regions : sequence of numpy.ndarray
        Further lease polygons (m, 2) of a site of several regions, drawn like the
        boundary (the first region).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if flow is None:
        fig = _figure(6.4, 6.8)
        ax = fig.add_subplot()
    else:
        fig = _figure(12.8, 6.2)
        ax, ax_flow = fig.subplots(1, 2)
        _draw_flow(
            ax_flow,
            fig,
            flow,
            boundary=boundary,
            optimized=optimized,
            exclusions=exclusions,
            regions=regions,
        )
    _draw_layout(
        ax,
        boundary=boundary,
        initial=initial,
        optimized=optimized,
        min_spacing_m=min_spacing_m,
        exclusions=exclusions,
        regions=regions,
    )
    ax.set_title("start and optimized layout", fontsize="medium")
    fig.suptitle(title, fontsize="medium")
    return fig


def published_figure(
    *,
    title: str,
    boundary: FloatArray | None,
    panels: Sequence[tuple[str, FloatArray]],
    min_spacing_m: float | None,
) -> Figure:
    """Draw layouts side by side, one panel each (the sweep's first, then the published ones).

    Parameters
    ----------
    title : str
        The figure's title.
    boundary : numpy.ndarray or None
        The site polygon drawn in every panel.
    panels : sequence of (str, numpy.ndarray)
        Each panel's title and layout (n, 2).
    min_spacing_m : float or None
        Spacing circles, as in :func:`layout_figure`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = _figure(4.6 * max(1, len(panels)), 5.2)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (label, layout) in zip(axes, panels, strict=False):
        _draw_layout(
            ax,
            boundary=boundary,
            initial=None,
            optimized=layout,
            min_spacing_m=min_spacing_m,
            legend=False,
        )
        ax.set_title(label, fontsize="small")
    fig.suptitle(title, fontsize="medium")
    return fig


def _category_order(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _strip(
    ax: Axes,
    categories: Sequence[str],
    values: Sequence[float],
    *,
    color: str,
    seed: int = 0,
) -> None:
    """Draw a box plot plus jittered points of ``values`` grouped by ``categories``.

    Numbers first, in numeric order, then words; fine with thousands of points.
    """
    cats = sorted(set(categories), key=_category_order)
    if not cats:
        return
    val_arr = np.asarray(values, dtype=np.float64)
    cat_arr = np.asarray(categories, dtype=object)
    groups = []
    for c in cats:
        group = val_arr[cat_arr == c]
        groups.append(group[np.isfinite(group)])
    positions = np.arange(len(cats), dtype=np.float64)
    ax.boxplot(
        groups,
        positions=positions,
        widths=0.5,
        showfliers=False,
        medianprops={"color": "black"},
        boxprops={"color": "#444444"},
        whiskerprops={"color": "#444444"},
        capprops={"color": "#444444"},
    )
    rng = np.random.default_rng(seed)
    alpha = 0.7 if len(val_arr) < 200 else max(0.08, 0.7 * 200 / len(val_arr))
    for pos, group in zip(positions, groups, strict=True):
        jitter = rng.uniform(-0.18, 0.18, size=len(group))
        ax.scatter(pos + jitter, group, s=10, color=color, alpha=alpha, linewidths=0, zorder=3)
    ax.set_xticks(positions, cats)
    ax.set_xlim(-0.6, len(cats) - 0.4)


def axes_figure(
    *,
    label: str,
    color_index: int,
    grid_size: Sequence[str],
    random_pct: Sequence[str],
    gain_pct: Sequence[float],
    aep_gwh: Sequence[float],
    wall_time_s: Sequence[float],
    reference: Reference | None,
) -> Figure:
    """Draw how one site's results depend on the sweep axes.

    Three panels: the gain against the grid size and against the share of randomly placed
    starting turbines (box plots with the points), and the AEP against the wall time (with
    published reference lines where known).

    Parameters
    ----------
    label : str
        The site label, for the title.
    color_index : int
        Picks the site's colour.
    grid_size, random_pct : sequence of str
        Category labels, one per result (numbers sort numerically, words after them).
    gain_pct, aep_gwh, wall_time_s : sequence of float
        One per result.
    reference : Reference or None
        The published baseline and best AEP lines.

    Returns
    -------
    matplotlib.figure.Figure
    """
    color = _SITE_COLORS[color_index % len(_SITE_COLORS)]
    fig = _figure(14.0, 4.2)
    ax_grid, ax_rand, ax_time = fig.subplots(1, 3)
    _strip(ax_grid, grid_size, gain_pct, color=color, seed=1)
    ax_grid.set_xlabel("grid_size (starting grid points per side; or the start)")
    ax_grid.set_ylabel("AEP gain over start [%]")
    ax_grid.set_title("gain vs grid_size", fontsize="medium")
    _strip(ax_rand, random_pct, gain_pct, color=color, seed=2)
    ax_rand.set_xlabel("random_pct (% of turbines started at random)")
    ax_rand.set_ylabel("AEP gain over start [%]")
    ax_rand.set_title("gain vs random_pct", fontsize="medium")
    n = len(aep_gwh)
    alpha = 0.8 if n < 200 else max(0.1, 0.8 * 200 / n)
    ax_time.scatter(wall_time_s, aep_gwh, s=12, color=color, alpha=alpha, linewidths=0)
    if reference is not None:
        ax_time.axhline(
            reference.baseline_gwh,
            color=REF_BASELINE_COLOR,
            linestyle="--",
            linewidth=1.0,
            label=f"IEA37 baseline {reference.baseline_gwh:.1f} GWh",
        )
        ax_time.axhline(
            reference.best_published_gwh,
            color=REF_BEST_COLOR,
            linestyle="-.",
            linewidth=1.0,
            label=f"IEA37 best published {reference.best_published_gwh:.1f} GWh",
        )
        ax_time.legend(loc="lower right", fontsize="small", framealpha=0.8)
    ax_time.set_xlabel("wall time per config [s]")
    ax_time.set_ylabel("optimized AEP [GWh]")
    ax_time.set_title("AEP vs wall time", fontsize="medium")
    for ax in (ax_grid, ax_rand, ax_time):
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{label}: {n} result(s)", fontsize="medium")
    return fig


def close(fig: Any) -> None:
    """Drop the figure's artists now rather than at garbage collection.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure, not used afterwards.
    """
    fig.clear()


# --- the figures of results, as PNG files -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayoutFigure:
    """One of the best layouts of a site as the page shows it: the row, its rank, its image.

    ``image`` is the PNG's file name in the report directory (None if the layout could not
    be read); ``note`` says what is missing from the figure, if anything.
    """

    row: OkRow
    rank: int
    image: str | None
    note: str | None = None


def write_layout_png(
    path: str,
    row: OkRow,
    rank: int,
    destination: Path,
    geometry: dict[tuple[str, int, str], SiteGeometry],
    winds: dict[tuple[str, int], tuple[float, float]],
) -> LayoutFigure:
    """Draw one result with its wake at the site's dominant wind and save it as a PNG.

    Parameters
    ----------
    path : str
        The sweep output the layouts are read from.
    row : OkRow
        The result.
    rank : int
        Its rank in its site (1 = best), for the title.
    destination : pathlib.Path
        The PNG to write.
    geometry, winds : dict
        Caches shared by the figures of one report: site geometry, and the dominant wind
        of each (site, farm size).

    Returns
    -------
    LayoutFigure
        With ``image`` None when the layout could not be read (nothing is written then),
        and a note when the flow map could not be computed (the layout is drawn alone).
    """
    try:
        initial, layout = read_layouts(path, row.key)
    except (NotASweepOutputError, OSError, KeyError) as err:
        log.warning("%s: cannot read the layout: %s", row.key, err)
        return LayoutFigure(row, rank, None, f"layout could not be read: {err}")
    geo = site_geometry(row.site, row.n_turbines, geometry, site_def=row.site_def)
    flow = None
    note = None
    if geo.wfm is not None and len(layout):
        key = (row.site, row.n_turbines)
        try:
            if key not in winds:
                centre = layout.mean(axis=0)
                winds[key] = dominant_wind(geo.wfm, float(centre[0]), float(centre[1]))
            wd, ws = winds[key]
            flow = flow_field(geo.wfm, layout, geo.lease_points, wd, ws)
        except Exception as err:  # a flow map is a nice-to-have; keep the layout plot
            log.warning("%s: no flow map: %s", row.key, err)
            note = f"no flow map: {err}"
    fig = layout_figure(
        title=f"{row.label} #{rank}: {row.key}, AEP {row.aep_gwh:.2f} GWh "
        f"({row.gain_pct:+.2f} % over start)",
        boundary=geo.boundary,
        initial=initial,
        optimized=layout,
        min_spacing_m=geo.min_spacing_m,
        flow=flow,
        exclusions=geo.exclusions,
        regions=geo.regions,
    )
    save_png(fig, destination)
    close(fig)
    return LayoutFigure(row, rank, destination.name, note)


def write_axes_png(
    label: str,
    rows: Sequence[OkRow],
    destination: Path,
    *,
    color_index: int,
    reference: Reference | None,
) -> Path:
    """Draw how the results of one site depend on the sweep axes, and save it as a PNG.

    Parameters
    ----------
    label : str
        The site label, e.g. ``iea37-16``.
    rows : sequence of OkRow
        Its results.
    destination : pathlib.Path
        The PNG to write.
    color_index : int
        Picks the site's colour.
    reference : Reference or None
        Published AEP lines to draw, if the site has them.

    Returns
    -------
    pathlib.Path
        ``destination``.
    """
    fig = axes_figure(
        label=label,
        color_index=color_index,
        grid_size=[f"{r.grid_size:g}" if r.start == "grid" else r.start for r in rows],
        random_pct=[f"{r.random_pct:g}" for r in rows],
        gain_pct=[r.gain_pct for r in rows],
        aep_gwh=[r.aep_gwh for r in rows],
        wall_time_s=[r.wall_time_s for r in rows],
        reference=reference,
    )
    save_png(fig, destination)
    close(fig)
    return destination
