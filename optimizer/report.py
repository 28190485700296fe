"""A static HTML report of a sweep output, and single-layout plots.

:func:`write_report` reads a layout-sweep output (only what the merge committed, so it
works while a sweep is still filling the file), and writes ``index.html`` plus PNG figures
into a directory: a page that opens from disk, with no server, no script and nothing
fetched from the internet. :func:`write_layout_plot` draws one result.

The report is made in three steps, each in its own module of :mod:`optimizer._report`:
the data (:func:`read_sweep`: attributes are read once, lazily, via
:func:`optimizer.summary.iter_records`; layouts only for the best ``top_k`` results of each
site, so a file with thousands of groups costs one pass over its attributes plus a handful
of plots), the figures (matplotlib and PyWake flow maps, and the comparison with the
published IEA37 layouts), and the page (a Jinja2 template).

matplotlib is an optional extra (``pip install ".[report]"``); without it both entry points
raise :class:`MissingExtraError`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimizer._report.comparison import (
    COMPARED_ENTRIES,
    PublishedComparison,
    compare_with_published,
)
from optimizer._report.data import (
    NOT_CHECKED,
    CheckVerdict,
    SweepData,
    check_output,
    read_sweep,
    require_sweep_output,
)
from optimizer._report.figures import (
    INSTALL_HINT,
    LayoutFigure,
    MissingExtraError,
    require_matplotlib,
)
from optimizer._report.flow import FLOW_GRID_POINTS, SiteGeometry, dominant_wind, flow_field
from optimizer.config import CONFIG_ID_PREFIX
from optimizer.results import FAIL_PREFIX, is_failure_key, is_result_key
from optimizer.summary import (
    FailRow,
    NotASweepOutputError,
    OkRow,
    SiteStats,
    number_of,
    reference_for,
    text_of,
)

__all__ = [
    "COMPARED_ENTRIES",
    "DEFAULT_TOP_K",
    "FLOW_GRID_POINTS",
    "INDEX_NAME",
    "INSTALL_HINT",
    "CheckVerdict",
    "FailRow",
    "LayoutFigure",
    "MissingExtraError",
    "OkRow",
    "PublishedComparison",
    "ReportResult",
    "SiteStats",
    "SweepData",
    "UnknownConfigError",
    "default_report_dir",
    "dominant_wind",
    "flow_field",
    "read_sweep",
    "require_matplotlib",
    "write_layout_plot",
    "write_report",
]

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 3
INDEX_NAME = "index.html"


class UnknownConfigError(NotASweepOutputError):
    """The output has no result for the requested config id."""


@dataclass(frozen=True, slots=True)
class ReportResult:
    """What :func:`write_report` wrote, and the summary document ``--json`` prints.

    Attributes
    ----------
    index_html : pathlib.Path
        The page.
    report_dir : pathlib.Path
        The directory it is in, with its PNGs.
    images : tuple of pathlib.Path
        Every PNG written.
    summary : dict
        Counts, per-site statistics, the check verdict, the comparisons with the
        published layouts and the paths written (what ``layout-sweep report --json`` prints).
    complete : bool
        Every planned config is done, none failed, and the check did not find problems.
    """

    index_html: Path
    report_dir: Path
    images: tuple[Path, ...]
    summary: dict[str, Any]
    complete: bool


def default_report_dir(output: str | os.PathLike[str]) -> Path:
    """Return ``<output stem>_report`` next to the output.

    Examples
    --------
    >>> default_report_dir("runs/layouts.h5").as_posix()
    'runs/layouts_report'
    """
    p = Path(output)
    return p.with_name(f"{p.stem}_report")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "site"
    slug, n = base, 1
    while slug in used:
        n += 1
        slug = f"{base}_{n}"
    used.add(slug)
    return slug


def write_report(
    output: str | os.PathLike[str],
    report_dir: str | os.PathLike[str] | None = None,
    *,
    top_k: int = DEFAULT_TOP_K,
    run_check: bool = True,
) -> ReportResult:
    """Write ``report_dir/index.html`` and its PNGs for a sweep output.

    Parameters
    ----------
    output : str or os.PathLike
        The sweep output (e.g. ``layouts.h5``); only merged results are read.
    report_dir : str or os.PathLike, optional
        Where to write; default :func:`default_report_dir` of ``output``. Created if needed.
    top_k : int
        How many of the best layouts of each site to plot (0: none).
    run_check : bool
        Run ``h5guard check`` on the output and show its verdict.

    Returns
    -------
    ReportResult

    Raises
    ------
    NotASweepOutputError
        The output is missing, not HDF5, or not a layout-sweep output.
    MissingExtraError
        matplotlib is not installed.
    ValueError
        ``top_k`` is negative.
    """
    from optimizer._report import figures, html

    if top_k < 0:
        raise ValueError(f"top_k: expected an integer >= 0, got {top_k}")
    started = time.monotonic()
    path = os.fspath(output)
    data = read_sweep(path)
    require_matplotlib()
    out_dir = Path(report_dir) if report_dir is not None else default_report_dir(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    verdict = check_output(path) if run_check else NOT_CHECKED
    stats = data.site_stats()
    images: list[Path] = []
    used: set[str] = set()
    geometry: dict[tuple[str, int, str], SiteGeometry] = {}
    winds: dict[tuple[str, int], tuple[float, float]] = {}
    layouts: dict[str, list[LayoutFigure]] = {}
    axes_images: dict[str, str] = {}
    comparisons: list[PublishedComparison] = []
    for site_index, st in enumerate(stats):
        slug = _slug(st.label, used)
        rows = [r for r in data.ok if r.label == st.label]
        if not rows:
            continue
        t0 = time.monotonic()
        name = f"axes-{slug}.png"
        images.append(
            figures.write_axes_png(
                st.label,
                rows,
                out_dir / name,
                color_index=site_index,
                reference=reference_for(st.label),
            )
        )
        axes_images[st.label] = name
        log.info("%s: axes figure in %.2f s", st.label, time.monotonic() - t0)
        shown = []
        for rank, row in enumerate(data.top(st.label, top_k), start=1):
            t0 = time.monotonic()
            fig = figures.write_layout_png(
                data.path, row, rank, out_dir / f"layout-{slug}-{rank}.png", geometry, winds
            )
            if fig.image is not None:
                images.append(out_dir / fig.image)
            shown.append(fig)
            log.info("%s #%d: layout figure in %.2f s", st.label, rank, time.monotonic() - t0)
        layouts[st.label] = shown
        best = data.top(st.label, 1)
        if best:
            comparison = compare_with_published(data.path, best[0], out_dir, slug)
            if comparison is not None:
                comparisons.append(comparison)
                if comparison.image:
                    images.append(out_dir / comparison.image)
    seconds = time.monotonic() - started
    index = out_dir / INDEX_NAME
    complete = (
        data.planned is not None
        and data.pending == 0
        and data.failed == 0
        and verdict.ok is not False
    )
    summary: dict[str, Any] = {
        "output": os.path.abspath(path),
        "report_dir": os.path.abspath(out_dir),
        "index_html": os.path.abspath(index),
        "images": [os.path.abspath(p) for p in images],
        "planned": data.planned,
        "done": data.done,
        "failed": data.failed,
        "pending": data.pending,
        "unplanned_results": data.unplanned,
        "failure_records": data.failure_records,
        "complete": complete,
        "sites": [s.to_dict() for s in stats],
        "failed_configs": [
            {"config_id": f.config_id, "site": f.label, "error": f.error}
            for f in data.failures.values()
        ],
        "check": {"ok": verdict.ok, "summary": verdict.summary},
        "published": [c.to_dict() for c in comparisons],
        "spec_problem": data.spec_problem,
        "seconds": round(seconds, 2),
    }
    page = html.render_page(data, stats, verdict, layouts, axes_images, top_k, seconds, comparisons)
    _write_text(index, page)
    log.info("wrote %s and %d image(s) in %.2f s", index, len(images), seconds)
    return ReportResult(index, out_dir, tuple(images), summary, complete)


# --- show --------------------------------------------------------------------------------------


def _find_result(path: str, config_id: str) -> tuple[str, dict[str, Any]]:
    import h5py

    want = config_id.strip()
    if not want.startswith(CONFIG_ID_PREFIX):
        want = CONFIG_ID_PREFIX + want
    body = want.removeprefix(CONFIG_ID_PREFIX)
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as err:
        raise NotASweepOutputError(f"{path}: not a readable HDF5 file ({err})") from None
    with f:
        if want in f and is_result_key(want):
            key = want
        else:
            matches = sorted(k for k in f if is_result_key(k) and k.startswith(want))
            if len(matches) > 1:
                shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
                raise UnknownConfigError(
                    f"{path}: config id {config_id!r} is ambiguous ({len(matches)} results: {shown})"
                )
            if not matches:
                failed = sorted(
                    (k for k in f if is_failure_key(k) and k.startswith(FAIL_PREFIX + body)),
                    key=lambda k: int(k.rpartition("-")[2]) if k[-1].isdigit() else -1,
                )
                if failed:
                    error = text_of(f[failed[-1]].attrs.get("error", "unknown error"))
                    raise UnknownConfigError(
                        f"{path}: config {config_id!r} failed ({' '.join(error.split())}); "
                        "it has no layout"
                    )
                raise UnknownConfigError(f"{path}: no result for config id {config_id!r}")
            key = matches[0]
        attrs = {k: v for k, v in f[key].attrs.items()}
    return key, attrs


def write_layout_plot(
    output: str | os.PathLike[str],
    config_id: str,
    destination: str | os.PathLike[str] | None = None,
) -> Path:
    """Draw one result (boundary, start, optimized layout, spacing circles) as a PNG.

    Parameters
    ----------
    output : str or os.PathLike
        The sweep output.
    config_id : str
        The config; a unique prefix is enough, with or without ``cfg-``.
    destination : str or os.PathLike, optional
        The PNG to write; default ``<config id>.png`` in the current directory.

    Returns
    -------
    pathlib.Path
        The PNG written.

    Raises
    ------
    UnknownConfigError
        The output has no such result (a :class:`NotASweepOutputError`; the message says
        when the config failed, or when the prefix is ambiguous).
    NotASweepOutputError
        The output is missing, not HDF5, or not a layout-sweep output.
    MissingExtraError
        matplotlib is not installed.
    """
    from optimizer._report import figures
    from optimizer._report.flow import site_geometry
    from optimizer.summary import read_layouts

    path = os.fspath(output)
    require_sweep_output(path)
    key, attrs = _find_result(path, config_id)
    require_matplotlib()
    initial, layout = read_layouts(path, key)
    site = text_of(attrs.get("site", "?"))
    n = int(number_of(attrs.get("n_turbines", len(layout))) or len(layout))
    config = attrs.get("config")
    try:
        site_def = (
            str(json.loads(text_of(config)).get("site_def", "")) if config is not None else ""
        )
    except (ValueError, AttributeError):
        site_def = ""
    geo = site_geometry(site, n, site_def=site_def)
    aep, aep0 = number_of(attrs.get("aep_gwh")), number_of(attrs.get("initial_aep_gwh"))
    gain = 100.0 * (aep / aep0 - 1.0) if aep0 else math.nan
    fig = figures.layout_figure(
        title=f"{site}-{n}: {key}\nAEP {aep:.2f} GWh ({gain:+.2f} % over start {aep0:.2f} GWh)",
        boundary=geo.boundary,
        initial=initial,
        optimized=layout,
        min_spacing_m=geo.min_spacing_m,
        exclusions=geo.exclusions,
        regions=geo.regions,
    )
    out = Path(destination) if destination is not None else Path(f"{key}.png")
    figures.save_png(fig, out)
    figures.close(fig)
    log.info("wrote %s", out)
    return out
