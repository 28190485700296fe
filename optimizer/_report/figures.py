"""Matplotlib drawing for ``layout-sweep report`` and ``show``.

matplotlib is an optional extra, so it is imported inside the functions only. Figures are
plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas: no pyplot, no
global figure registry, no GUI backend, safe to use from any thread or process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FloatArray = NDArray[np.float64]

DPI = 100
START_COLOR = "#8c8c8c"
OPT_COLOR = "#d62728"
BOUNDARY_COLOR = "#1f4e79"
REF_BASELINE_COLOR = "#7f7f7f"
REF_BEST_COLOR = "#2ca02c"
_SITE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


@dataclass(frozen=True, slots=True)
class FlowField:
    """Effective wind speed on a horizontal grid at hub height, for one flow case."""

    x: FloatArray
    y: FloatArray
    ws_eff: FloatArray  # shape (len(y), len(x))
    wd: float
    ws: float


@dataclass(frozen=True, slots=True)
class Reference:
    """Published AEP reference lines, GWh."""

    baseline_gwh: float
    best_published_gwh: float


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG, atomically (a reader never sees half an image)."""
    final = Path(path)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def _draw_layout(
    ax: Axes,
    *,
    boundary: FloatArray | None,
    initial: FloatArray | None,
    optimized: FloatArray,
    min_spacing_m: float | None,
    legend: bool = True,
) -> None:
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.patches import Circle, Polygon

    if boundary is not None and len(boundary) >= 3:
        ax.add_patch(
            Polygon(
                boundary,
                closed=True,
                fill=False,
                edgecolor=BOUNDARY_COLOR,
                linewidth=1.5,
                label="boundary",
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
    if boundary is not None and len(boundary) >= 3:
        closed = np.vstack((boundary, boundary[:1]))
        ax.plot(closed[:, 0], closed[:, 1], color=BOUNDARY_COLOR, linewidth=1.0, linestyle="--")
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
) -> Figure:
    """The layout (boundary, start, optimized, spacing circles), plus its wake if ``flow``."""
    if flow is None:
        fig = _figure(6.4, 6.8)
        ax = fig.add_subplot()
        _draw_layout(
            ax,
            boundary=boundary,
            initial=initial,
            optimized=optimized,
            min_spacing_m=min_spacing_m,
        )
    else:
        fig = _figure(12.8, 6.2)
        ax, ax_flow = fig.subplots(1, 2)
        _draw_layout(
            ax,
            boundary=boundary,
            initial=initial,
            optimized=optimized,
            min_spacing_m=min_spacing_m,
        )
        _draw_flow(ax_flow, fig, flow, boundary=boundary, optimized=optimized)
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
    """Layouts side by side (ours first, then the published ones), one panel each."""
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
    """Box plot plus jittered points of ``values`` grouped by ``categories`` (numbers first,
    in numeric order, then words); fine with thousands of points."""
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
    """How one site's results depend on the sweep axes: gain vs grid size and vs the share of
    randomly placed starting turbines, and AEP vs wall time (with published reference lines
    where known). ``grid_size`` and ``random_pct`` are category labels, one per result."""
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
    """Drop the figure's artists now rather than at garbage collection."""
    fig.clear()
