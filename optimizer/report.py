"""A static HTML report of a sweep output, and single-layout plots.

:func:`write_report` reads a layout-sweep output (only what the merge committed, so it
works while a sweep is still filling the file), and writes ``index.html`` plus PNG figures
into a directory: a page that opens from disk, with no server, no script and nothing
fetched from the internet. :func:`write_layout_plot` draws one result.

Attributes are read once, lazily, via :func:`optimizer.summary.iter_records`; layouts are
read only for the best ``top_k`` results of each site, so a file with thousands of groups
costs one pass over its attributes plus a handful of plots.

matplotlib is an optional extra (``pip install ".[report]"``); without it both entry points
raise :class:`MissingExtraError`.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import math
import os
import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from optimizer.config import CONFIG_ID_PREFIX, expand_spec
from optimizer.results import (
    FAIL_PREFIX,
    STATUS_OK,
    is_failure_key,
    is_result_key,
)
from optimizer.sites import get_site
from optimizer.summary import NotASweepOutputError, iter_records, read_layouts, root_attrs

if TYPE_CHECKING:
    from optimizer._plots import FlowField, Reference

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

DEFAULT_TOP_K = 3
INDEX_NAME = "index.html"
# Flow-map grid: points along the longer side (~0.05 s of PyWake for 64 turbines).
FLOW_GRID_POINTS = 110
# Long failure lists and check findings are cut in the page (the counts stay exact).
MAX_FAILURE_ROWS = 500
MAX_FINDING_ROWS = 200
MAX_TRACEBACK_CHARS = 6000
INSTALL_HINT = 'pip install ".[report]"'


class MissingExtraError(RuntimeError):
    """An optional dependency (matplotlib, the ``report`` extra) is not installed."""


class UnknownConfigError(NotASweepOutputError):
    """The output has no result for the requested config id."""


def require_matplotlib() -> None:
    """Raise :class:`MissingExtraError` unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            f"plotting needs matplotlib, which is not installed; install it with: {INSTALL_HINT}"
        ) from None


# --- reading the output ------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, list | tuple) and len(value) == 1:
        return _text(value[0])
    return str(value)


def _num(value: Any) -> float:
    """A float from an attribute value (scalars stored as 1-element arrays too); NaN if not."""
    if isinstance(value, list | tuple | np.ndarray) and np.size(value) == 1:
        value = np.asarray(value).reshape(-1)[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True, slots=True)
class OkRow:
    """The numbers of one successful config that the report uses."""

    key: str
    label: str
    site: str
    n_turbines: int
    aep_gwh: float
    initial_aep_gwh: float
    wall_time_s: float
    grid_size: float
    random_pct: float
    seed: int
    start: str
    converged: bool
    iterations: float

    @property
    def gain_pct(self) -> float:
        if not self.initial_aep_gwh or not math.isfinite(self.initial_aep_gwh):
            return math.nan
        return 100.0 * (self.aep_gwh / self.initial_aep_gwh - 1.0)


@dataclass(frozen=True, slots=True)
class FailRow:
    """The last recorded failure of a config that has no result."""

    config_id: str
    label: str
    attempts: int
    error: str
    kind: str
    traceback: str


@dataclass(frozen=True, slots=True)
class SiteStats:
    """Per site-and-farm-size statistics (AEPs in GWh, gain in % over the start)."""

    label: str
    planned: int | None
    done: int
    failed: int
    pending: int | None
    best_aep_gwh: float | None
    median_aep_gwh: float | None
    worst_aep_gwh: float | None
    median_gain_pct: float | None
    best_config_id: str | None
    reference_baseline_gwh: float | None
    reference_best_gwh: float | None

    def to_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else round(v, 4)

        return {
            "site": self.label,
            "planned": self.planned,
            "done": self.done,
            "failed": self.failed,
            "pending": self.pending,
            "best_aep_gwh": r(self.best_aep_gwh),
            "median_aep_gwh": r(self.median_aep_gwh),
            "worst_aep_gwh": r(self.worst_aep_gwh),
            "median_gain_pct": r(self.median_gain_pct),
            "best_config_id": self.best_config_id,
            "iea37_baseline_gwh": r(self.reference_baseline_gwh),
            "iea37_best_published_gwh": r(self.reference_best_gwh),
        }


@dataclass(slots=True)
class SweepData:
    """Everything the report needs from an output, read in one pass over its attributes."""

    path: str
    root: dict[str, Any]
    spec: dict[str, Any] | None
    spec_problem: str | None
    planned_labels: dict[str, str] | None  # planned config id -> site label
    ok: list[OkRow] = field(default_factory=list)
    failures: dict[str, FailRow] = field(default_factory=dict)  # configs with no result
    failure_records: int = 0
    versions: Counter[str] = field(default_factory=Counter)

    @property
    def planned(self) -> int | None:
        return None if self.planned_labels is None else len(self.planned_labels)

    @property
    def done(self) -> int:
        return len(self.ok)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def unplanned(self) -> int | None:
        """Results whose config is not in the current spec (e.g. the spec shrank)."""
        if self.planned_labels is None:
            return None
        return sum(1 for r in self.ok if r.key not in self.planned_labels)

    @property
    def pending(self) -> int | None:
        if self.planned_labels is None:
            return None
        finished = {r.key for r in self.ok} | set(self.failures)
        return sum(1 for cid in self.planned_labels if cid not in finished)

    def site_stats(self) -> list[SiteStats]:
        by_label: dict[str, list[OkRow]] = defaultdict(list)
        for row in self.ok:
            by_label[row.label].append(row)
        failed: Counter[str] = Counter(f.label for f in self.failures.values())
        planned: Counter[str] = Counter((self.planned_labels or {}).values())
        finished = {r.key for r in self.ok} | set(self.failures)
        pending: Counter[str] = Counter(
            label for cid, label in (self.planned_labels or {}).items() if cid not in finished
        )
        out = []
        for label in sorted(set(by_label) | set(planned) | set(failed)):
            rows = by_label.get(label, [])
            aeps = [r.aep_gwh for r in rows if math.isfinite(r.aep_gwh)]
            gains = [r.gain_pct for r in rows if math.isfinite(r.gain_pct)]
            best = max(rows, key=lambda r: (r.aep_gwh, r.key)) if aeps else None
            ref = _reference(label)
            out.append(
                SiteStats(
                    label=label,
                    planned=None if self.planned_labels is None else planned[label],
                    done=len(rows),
                    failed=failed[label],
                    pending=None if self.planned_labels is None else pending[label],
                    best_aep_gwh=max(aeps) if aeps else None,
                    median_aep_gwh=statistics.median(aeps) if aeps else None,
                    worst_aep_gwh=min(aeps) if aeps else None,
                    median_gain_pct=statistics.median(gains) if gains else None,
                    best_config_id=best.key if best else None,
                    reference_baseline_gwh=ref.baseline_gwh if ref else None,
                    reference_best_gwh=ref.best_published_gwh if ref else None,
                )
            )
        return out

    def top(self, label: str, k: int) -> list[OkRow]:
        rows = [r for r in self.ok if r.label == label and math.isfinite(r.aep_gwh)]
        rows.sort(key=lambda r: (-r.aep_gwh, r.key))
        return rows[:k]


def _split_label(label: str) -> tuple[str, int] | None:
    site, _, n = label.rpartition("-")
    try:
        return site, int(n)
    except ValueError:
        return None


def _reference(label: str) -> Reference | None:
    from optimizer._plots import Reference

    parts = _split_label(label)
    if parts is None:
        return None
    try:
        ref = get_site(parts[0]).reference_for(parts[1])
    except ValueError:
        return None
    if ref is None:
        return None
    return Reference(
        baseline_gwh=ref.baseline_mwh / 1e3, best_published_gwh=ref.best_published_mwh / 1e3
    )


def _require_sweep_output(path: str) -> dict[str, Any]:
    root = root_attrs(path)  # NotASweepOutputError: missing, not HDF5, unreadable
    if "sweep_spec" not in root:
        raise NotASweepOutputError(f"{path}: not a layout-sweep output (no sweep_spec attribute)")
    return root


def read_sweep(path: str | os.PathLike[str]) -> SweepData:
    """Read the committed records of a sweep output (attributes only)."""
    path = os.fspath(path)
    root = _require_sweep_output(path)
    spec: dict[str, Any] | None = None
    problem: str | None = None
    planned: dict[str, str] | None = None
    try:
        loaded = json.loads(_text(root["sweep_spec"]))
        if not isinstance(loaded, dict):
            raise ValueError("expected a JSON object")
        spec = loaded
        planned = {c.config_id: f"{c.site}-{c.n_turbines}" for c in expand_spec(spec)}
    except ValueError as err:  # SpecError is a ValueError, and so is a JSON error
        problem = f"the sweep_spec attribute cannot be expanded: {err}"
        log.warning("%s: %s", path, problem)
    data = SweepData(path, root, spec, problem, planned)
    failures: dict[str, FailRow] = {}
    attempts: Counter[str] = Counter()
    for rec in iter_records(path):
        data.versions[_text(rec.attrs.get("versions", "unknown"))] += 1
        if rec.status == STATUS_OK:
            cfg = rec.config
            data.ok.append(
                OkRow(
                    key=rec.key,
                    label=rec.site_label,
                    site=str(cfg.get("site", "?")),
                    n_turbines=int(_num(cfg.get("n_turbines", 0)) or 0),
                    aep_gwh=_num(rec.attrs.get("aep_gwh")),
                    initial_aep_gwh=_num(rec.attrs.get("initial_aep_gwh")),
                    wall_time_s=_num(rec.attrs.get("wall_time_s")),
                    grid_size=_num(cfg.get("grid_size")),
                    random_pct=_num(cfg.get("random_pct")),
                    seed=int(_num(cfg.get("seed", 0)) or 0),
                    start=str(cfg.get("start", "?")),
                    converged=bool(rec.attrs.get("converged", False)),
                    iterations=_num(rec.attrs.get("iterations")),
                )
            )
            continue
        data.failure_records += 1
        attempts[rec.config_id] += 1
        attempt = int(_num(rec.attrs.get("attempt", 0)) or 0)
        previous = failures.get(rec.config_id)
        if previous is None or attempt >= previous.attempts:
            failures[rec.config_id] = FailRow(
                config_id=rec.config_id,
                label=rec.site_label,
                attempts=attempt,
                error=_text(rec.attrs.get("error", "unknown error")),
                kind=_text(rec.attrs.get("error_kind", "")),
                traceback=_text(rec.attrs.get("traceback", "")),
            )
    done = {r.key for r in data.ok}
    data.failures = {
        cid: FailRow(f.config_id, f.label, attempts[cid], f.error, f.kind, f.traceback)
        for cid, f in sorted(failures.items())
        if cid not in done
    }
    log.info(
        "%s: %d result(s), %d failure record(s), %s planned",
        path,
        data.done,
        data.failure_records,
        data.planned,
    )
    return data


# --- PyWake: dominant wind and flow maps -------------------------------------------------------


def dominant_wind(wfm: Any, x: float = 0.0, y: float = 0.0) -> tuple[float, float]:
    """(direction, speed) of the site's largest frequency-weighted wind at (x, y).

    For each wind-direction bin of the site, the wind is weighted by its probability:
    ``sum over ws of P(wd, ws) * WS``; the dominant direction is the bin where that is
    largest, and the speed is the probability-weighted mean wind speed of that bin.
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
    """Effective wind speed at hub height around ``layout`` for one (wd, ws) case."""
    from py_wake import HorizontalGrid

    from optimizer._plots import FlowField

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


@dataclass(frozen=True, slots=True)
class _SiteGeometry:
    boundary: FloatArray | None
    min_spacing_m: float | None
    wfm: Any


def _geometry(
    site: str, n_turbines: int, cache: dict[tuple[str, int], _SiteGeometry]
) -> _SiteGeometry:
    key = (site, n_turbines)
    if key not in cache:
        try:
            spec = get_site(site)
            cache[key] = _SiteGeometry(
                spec.boundary(n_turbines), spec.min_spacing_m, spec.wind_farm_model(n_turbines)
            )
        except ValueError as err:
            log.warning("no site geometry for %s-%s: %s", site, n_turbines, err)
            cache[key] = _SiteGeometry(None, None, None)
    return cache[key]


# --- writing -----------------------------------------------------------------------------------


def default_report_dir(output: str | os.PathLike[str]) -> Path:
    """``<output stem>_report`` next to the output."""
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


@dataclass(frozen=True, slots=True)
class ReportResult:
    """What :func:`write_report` wrote, and the summary document ``--json`` prints."""

    index_html: Path
    report_dir: Path
    images: tuple[Path, ...]
    summary: dict[str, Any]
    complete: bool  # every planned config done, none failed, and the check passed


@dataclass(slots=True)
class _LayoutFigure:
    row: OkRow
    rank: int
    image: str | None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class _PublishedComparison:
    """The best layout of one IEA37 farm size beside the published par4 and par12 layouts."""

    label: str
    config_id: str
    aep_gwh: float
    published_gwh: Mapping[str, float]  # entry -> AEP recomputed with PyWake
    image: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.label,
            "config_id": self.config_id,
            "best_aep_gwh": round(self.aep_gwh, 4),
            "published_aep_gwh": {k: round(v, 4) for k, v in self.published_gwh.items()},
            "difference_gwh": {
                k: round(self.aep_gwh - v, 4) for k, v in self.published_gwh.items()
            },
        }


# The published entries shown beside the best layouts (optimizer.published has their source).
COMPARED_ENTRIES = ("par4", "par12")


def _published_comparison(
    path: str, row: OkRow, out_dir: Path, slug: str
) -> _PublishedComparison | None:
    """Best layout vs par4 and par12 of the same size, AEPs recomputed with the site model."""
    from optimizer import _plots
    from optimizer.published import PUBLISHED_DESCRIPTIONS, published_layout

    if row.site != "iea37" or row.n_turbines not in (16, 36, 64):
        return None
    site = get_site(row.site)
    wfm = site.wind_farm_model(row.n_turbines)
    published: dict[str, float] = {}
    panels: list[tuple[str, NDArray[np.float64]]] = []
    try:
        _, ours = read_layouts(path, row.key)
    except (NotASweepOutputError, OSError, KeyError) as err:
        log.warning("%s: cannot read the layout: %s", row.key, err)
        return None
    panels.append((f"this sweep: {row.key}\n{row.aep_gwh:.2f} GWh", ours))
    for entry in COMPARED_ENTRIES:
        xy = np.array(published_layout(entry, row.n_turbines))
        aep = float(wfm.aep(xy[:, 0], xy[:, 1], n_cpu=1))
        published[entry] = aep
        panels.append(
            (
                f"{PUBLISHED_DESCRIPTIONS[entry]}\n{aep:.2f} GWh "
                f"(this sweep {row.aep_gwh - aep:+.2f} GWh)",
                xy,
            )
        )
    fig = _plots.published_figure(
        title=f"{row.label}: best layout beside the published IEA37 layouts",
        boundary=site.boundary(row.n_turbines),
        panels=panels,
        min_spacing_m=site.min_spacing_m,
    )
    name = f"published-{slug}.png"
    _plots.save_png(fig, out_dir / name)
    _plots.close(fig)
    return _PublishedComparison(row.label, row.key, row.aep_gwh, published, name)


def _published_section(comparisons: list[_PublishedComparison]) -> str:
    parts = ['<section id="published"><h2>Beside the published IEA37 layouts</h2>']
    if not comparisons:
        parts.append(
            '<p class="empty">No IEA37 case study 1 results (16, 36 or 64 turbines).</p></section>'
        )
        return "".join(parts)
    parts.append(
        '<p class="meta">par4 (SNOPT + wake expansion continuation) and par12 (best published '
        "entry) of IEA Wind Task 37 case study 1 (Baker et al., AIAA SciTech 2019; layouts from "
        "IEAWindTask37/iea37-wflo-casestudies), their AEPs recomputed here with PyWake's "
        "IEA37CaseStudy1, like every AEP of this sweep.</p>"
    )
    rows = []
    for c in comparisons:
        for entry, aep in c.published_gwh.items():
            diff = c.aep_gwh - aep
            rows.append(
                [
                    _e(c.label),
                    f"<code>{_e(c.config_id)}</code>",
                    _fmt(c.aep_gwh),
                    _e(entry),
                    _fmt(aep),
                    _fmt(diff, 2, " GWh"),
                    _fmt(100.0 * diff / aep, 3, " %"),
                ]
            )
    parts.append(
        _table(
            ["site", "best config", "AEP GWh", "published", "AEP GWh", "difference", "%"],
            rows,
            numeric={2, 4, 5, 6},
        )
    )
    for c in comparisons:
        if c.image:
            src = _e(c.image)
            parts.append(
                f'<figure><a href="{src}"><img src="{src}" alt="{_e(c.label)} vs published" '
                f'loading="lazy"></a><figcaption>{_e(c.label)}: the best layout of this sweep '
                f"beside par4 and par12</figcaption></figure>"
            )
    parts.append("</section>")
    return "".join(parts)


@dataclass(slots=True)
class _CheckVerdict:
    ok: bool | None
    summary: str
    findings: list[str]


def _run_check(path: str) -> _CheckVerdict:
    import h5guard

    try:
        report = h5guard.check([path])
    except Exception as err:  # the page must still be written
        log.warning("h5guard check of %s could not run: %s", path, err)
        return _CheckVerdict(None, f"h5guard check could not run: {err}", [])
    problems = [str(f) for f in sorted(report.findings)]
    return _CheckVerdict(report.ok, report.render_summary(), problems)


def write_report(
    output: str | os.PathLike[str],
    report_dir: str | os.PathLike[str] | None = None,
    *,
    top_k: int = DEFAULT_TOP_K,
    run_check: bool = True,
) -> ReportResult:
    """Write ``report_dir/index.html`` and its PNGs for a sweep output; see the module docs.

    Raises :class:`~optimizer.summary.NotASweepOutputError` for a missing, non-HDF5 or
    foreign file and :class:`MissingExtraError` without matplotlib.
    """
    if top_k < 0:
        raise ValueError(f"top_k: expected an integer >= 0, got {top_k}")
    started = time.monotonic()
    path = os.fspath(output)
    data = read_sweep(path)
    require_matplotlib()
    from optimizer import _plots

    out_dir = Path(report_dir) if report_dir is not None else default_report_dir(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    verdict = _run_check(path) if run_check else _CheckVerdict(None, "not run (--no-check)", [])
    stats = data.site_stats()
    images: list[Path] = []
    used: set[str] = set()
    geometry: dict[tuple[str, int], _SiteGeometry] = {}
    winds: dict[tuple[str, int], tuple[float, float]] = {}
    layouts: dict[str, list[_LayoutFigure]] = {}
    axes_images: dict[str, str] = {}
    comparisons: list[_PublishedComparison] = []
    for site_index, st in enumerate(stats):
        slug = _slug(st.label, used)
        rows = [r for r in data.ok if r.label == st.label]
        if not rows:
            continue
        t0 = time.monotonic()
        fig = _plots.axes_figure(
            label=st.label,
            color_index=site_index,
            grid_size=[f"{r.grid_size:g}" if r.start == "grid" else r.start for r in rows],
            random_pct=[f"{r.random_pct:g}" for r in rows],
            gain_pct=[r.gain_pct for r in rows],
            aep_gwh=[r.aep_gwh for r in rows],
            wall_time_s=[r.wall_time_s for r in rows],
            reference=_reference(st.label),
        )
        name = f"axes-{slug}.png"
        images.append(_plots.save_png(fig, out_dir / name))
        _plots.close(fig)
        axes_images[st.label] = name
        log.info("%s: axes figure in %.2f s", st.label, time.monotonic() - t0)
        figures = []
        for rank, row in enumerate(data.top(st.label, top_k), start=1):
            t0 = time.monotonic()
            fig_entry = _layout_png(
                data.path, row, rank, out_dir / f"layout-{slug}-{rank}.png", geometry, winds
            )
            if fig_entry.image is not None:
                images.append(out_dir / fig_entry.image)
            figures.append(fig_entry)
            log.info("%s #%d: layout figure in %.2f s", st.label, rank, time.monotonic() - t0)
        layouts[st.label] = figures
        best = data.top(st.label, 1)
        if best:
            comparison = _published_comparison(data.path, best[0], out_dir, slug)
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
    page = _render_page(data, stats, verdict, layouts, axes_images, top_k, seconds, comparisons)
    _write_text(index, page)
    log.info("wrote %s and %d image(s) in %.2f s", index, len(images), seconds)
    return ReportResult(index, out_dir, tuple(images), summary, complete)


def _layout_png(
    path: str,
    row: OkRow,
    rank: int,
    destination: Path,
    geometry: dict[tuple[str, int], _SiteGeometry],
    winds: dict[tuple[str, int], tuple[float, float]],
) -> _LayoutFigure:
    from optimizer import _plots

    try:
        initial, layout = read_layouts(path, row.key)
    except (NotASweepOutputError, OSError, KeyError) as err:
        log.warning("%s: cannot read the layout: %s", row.key, err)
        return _LayoutFigure(row, rank, None, f"layout could not be read: {err}")
    geo = _geometry(row.site, row.n_turbines, geometry)
    flow = None
    note = None
    if geo.wfm is not None and len(layout):
        key = (row.site, row.n_turbines)
        try:
            if key not in winds:
                centre = layout.mean(axis=0)
                winds[key] = dominant_wind(geo.wfm, float(centre[0]), float(centre[1]))
            wd, ws = winds[key]
            flow = flow_field(geo.wfm, layout, geo.boundary, wd, ws)
        except Exception as err:  # a flow map is a nice-to-have; keep the layout plot
            log.warning("%s: no flow map: %s", row.key, err)
            note = f"no flow map: {err}"
    fig = _plots.layout_figure(
        title=f"{row.label} #{rank}: {row.key}, AEP {row.aep_gwh:.2f} GWh "
        f"({row.gain_pct:+.2f} % over start)",
        boundary=geo.boundary,
        initial=initial,
        optimized=layout,
        min_spacing_m=geo.min_spacing_m,
        flow=flow,
    )
    _plots.save_png(fig, destination)
    _plots.close(fig)
    return _LayoutFigure(row, rank, destination.name, note)


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
                    error = _text(f[failed[-1]].attrs.get("error", "unknown error"))
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

    ``config_id`` may be a unique prefix, with or without ``cfg-``. The default
    destination is ``<config id>.png`` in the current directory. Raises
    :class:`UnknownConfigError` (a :class:`~optimizer.summary.NotASweepOutputError`) when
    the output has no such result.
    """
    path = os.fspath(output)
    _require_sweep_output(path)
    key, attrs = _find_result(path, config_id)
    require_matplotlib()
    from optimizer import _plots

    initial, layout = read_layouts(path, key)
    site = _text(attrs.get("site", "?"))
    n = int(_num(attrs.get("n_turbines", len(layout))) or len(layout))
    geo = _geometry(site, n, {})
    aep, aep0 = _num(attrs.get("aep_gwh")), _num(attrs.get("initial_aep_gwh"))
    gain = 100.0 * (aep / aep0 - 1.0) if aep0 else math.nan
    fig = _plots.layout_figure(
        title=f"{site}-{n}: {key}\nAEP {aep:.2f} GWh ({gain:+.2f} % over start {aep0:.2f} GWh)",
        boundary=geo.boundary,
        initial=initial,
        optimized=layout,
        min_spacing_m=geo.min_spacing_m,
    )
    out = Path(destination) if destination is not None else Path(f"{key}.png")
    _plots.save_png(fig, out)
    _plots.close(fig)
    log.info("wrote %s", out)
    return out


# --- HTML --------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:0 auto;max-width:1320px;padding:0 1.2em 3em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.meta{color:#666;font-size:.9em}nav a{margin-right:1em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;gap:1em;flex-wrap:wrap;margin:.8em 0}
.card{border:1px solid #ccc;border-radius:6px;padding:.5em 1em;min-width:7em}
.card b{display:block;font-size:1.6em}
.ok{color:#17692d}.bad{color:#b00020}.warn{color:#9a6700}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em;max-height:30em}
code{font-size:.9em}.empty{color:#666;font-style:italic}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "&ndash;"
    return f"{value:.{digits}f}{suffix}"


def _opt(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], numeric: set[int]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _summary_section(data: SweepData, stats: list[SiteStats], verdict: _CheckVerdict) -> str:
    check_cls = {True: "ok", False: "bad", None: "warn"}[verdict.ok]
    check_word = {True: "passed", False: "PROBLEMS", None: "not run"}[verdict.ok]
    cards = [
        ("planned", _opt(data.planned), ""),
        ("done", str(data.done), "ok" if data.done else ""),
        ("failed", str(data.failed), "bad" if data.failed else ""),
        ("pending", _opt(data.pending), "warn" if data.pending else ""),
        ("h5guard check", check_word, check_cls),
    ]
    if data.unplanned:
        cards.insert(4, ("results not in the spec", str(data.unplanned), "warn"))
    parts = ['<section id="summary"><h2>Summary</h2><div class="cards">']
    for title, value, cls in cards:
        parts.append(
            f'<div class="card"><span>{_e(title)}</span><b class="{cls}">{_e(value)}</b></div>'
        )
    parts.append("</div>")
    if data.spec_problem:
        parts.append(f'<p class="bad">{_e(data.spec_problem)}; planned counts are unknown.</p>')
    if not data.ok:
        parts.append('<p class="empty">No results in this output yet.</p>')
    if stats:
        rows = []
        for s in stats:
            ref_note = "&ndash;"
            if s.reference_best_gwh and s.best_aep_gwh is not None:
                ref_note = _fmt(100.0 * s.best_aep_gwh / s.reference_best_gwh, 2, " %")
            best_link = (
                f'<a href="#{_e(s.best_config_id)}"><code>{_e(s.best_config_id)}</code></a>'
                if s.best_config_id
                else "&ndash;"
            )
            rows.append(
                [
                    _e(s.label),
                    _opt(s.planned),
                    str(s.done),
                    str(s.failed),
                    _opt(s.pending),
                    _fmt(s.best_aep_gwh),
                    _fmt(s.median_aep_gwh),
                    _fmt(s.worst_aep_gwh),
                    _fmt(s.median_gain_pct, 2, " %"),
                    _fmt(s.reference_baseline_gwh),
                    _fmt(s.reference_best_gwh),
                    ref_note,
                    best_link,
                ]
            )
        parts.append(
            _table(
                [
                    "site",
                    "planned",
                    "done",
                    "failed",
                    "pending",
                    "best AEP [GWh]",
                    "median AEP [GWh]",
                    "worst AEP [GWh]",
                    "median gain over start",
                    "IEA37 baseline [GWh]",
                    "IEA37 best published [GWh]",
                    "best / best published",
                    "best config",
                ],
                rows,
                numeric=set(range(1, 12)),
            )
        )
    parts.append(
        '<p class="meta">AEP gain = optimized AEP / AEP of the starting layout &minus; 1. '
        "Planned counts come from the <code>sweep_spec</code> attribute, re-expanded; "
        "pending = planned configs with neither a result nor a failure yet.</p></section>"
    )
    return "".join(parts)


def _failures_section(data: SweepData) -> str:
    parts = ['<section id="failures"><h2>Failed configs</h2>']
    if not data.failures:
        parts.append('<p class="empty">No failed configs.</p></section>')
        return "".join(parts)
    parts.append(
        f"<p>{data.failed} config(s) without a result, from {data.failure_records} failure "
        "record(s) (a config that failed and later succeeded is not listed).</p>"
    )
    rows = []
    for f in list(data.failures.values())[:MAX_FAILURE_ROWS]:
        tb = f.traceback
        if len(tb) > MAX_TRACEBACK_CHARS:
            tb = "...\n" + tb[-MAX_TRACEBACK_CHARS:]
        rows.append(
            [
                f"<code>{_e(f.config_id)}</code>",
                _e(f.label),
                str(f.attempts),
                _e(f.kind),
                f'<span class="bad">{_e(f.error)}</span>'
                f"<details><summary>traceback</summary><pre>{_e(tb)}</pre></details>",
            ]
        )
    parts.append(_table(["config", "site", "attempts", "kind", "error"], rows, numeric={2}))
    if data.failed > MAX_FAILURE_ROWS:
        parts.append(f"<p>&hellip; and {data.failed - MAX_FAILURE_ROWS} more.</p>")
    parts.append("</section>")
    return "".join(parts)


def _layouts_section(layouts: Mapping[str, list[_LayoutFigure]], top_k: int) -> str:
    parts = [f'<section id="layouts"><h2>Best {top_k} layout(s) per site</h2>']
    if not layouts or top_k == 0:
        parts.append('<p class="empty">No layouts to show.</p></section>')
        return "".join(parts)
    parts.append(
        '<p class="meta">Left: site boundary, starting turbine positions (hollow grey), '
        "optimized positions (red) with circles of radius min_spacing/2 (two circles may touch, "
        "never overlap), dotted lines showing each turbine's move. Right: effective wind speed "
        "of the optimized layout at hub height for the site's dominant wind direction (the "
        "direction with the largest frequency-weighted wind speed; the arrow shows where the "
        "wind blows).</p>"
    )
    for label, figures in layouts.items():
        parts.append(f"<h3>{_e(label)}</h3>")
        for fig in figures:
            r = fig.row
            caption = (
                f"#{fig.rank} <code>{_e(r.key)}</code>: AEP {_fmt(r.aep_gwh)} GWh, "
                f"start {_fmt(r.initial_aep_gwh)} GWh, gain {_fmt(r.gain_pct, 2, ' %')}; "
                f"start={_e(r.start)}"
                + (f", grid_size={r.grid_size:g}" if r.start == "grid" else "")
                + f", random_pct={r.random_pct:g}, seed={r.seed}; "
                f"{_fmt(r.iterations, 0)} iterations, "
                f"{'converged' if r.converged else 'not converged'}, "
                f"{_fmt(r.wall_time_s, 2, ' s')}"
            )
            if fig.note:
                caption += f' <span class="warn">({_e(fig.note)})</span>'
            img = ""
            if fig.image:
                src = _e(fig.image)
                img = (
                    f'<a href="{src}"><img src="{src}" alt="layout {_e(r.key)}" loading="lazy"></a>'
                )
            parts.append(
                f'<figure id="{_e(r.key)}">{img}<figcaption>{caption}</figcaption></figure>'
            )
    parts.append("</section>")
    return "".join(parts)


def _axes_section(axes_images: Mapping[str, str]) -> str:
    parts = ['<section id="axes"><h2>Dependence on the sweep axes</h2>']
    if not axes_images:
        parts.append('<p class="empty">No results yet.</p></section>')
        return "".join(parts)
    parts.append(
        '<p class="meta">Per site: AEP gain over the starting layout by <code>grid_size</code> '
        "and by <code>random_pct</code> (box = quartiles, points = configs), and optimized AEP "
        "against the wall time of each config, with the IEA37 published baseline and best "
        "AEP where the site is IEA37.</p>"
    )
    for label, name in axes_images.items():
        src = _e(name)
        parts.append(
            f'<figure><a href="{src}"><img src="{src}" alt="sweep axes {_e(label)}" '
            f'loading="lazy"></a><figcaption>{_e(label)}</figcaption></figure>'
        )
    parts.append("</section>")
    return "".join(parts)


def _provenance_section(data: SweepData, verdict: _CheckVerdict) -> str:
    cls = {True: "ok", False: "bad", None: "warn"}[verdict.ok]
    parts = [
        '<section id="provenance"><h2>Check and provenance</h2>',
        f'<p><b>h5guard check:</b> <span class="{cls}">{_e(verdict.summary)}</span></p>',
    ]
    if verdict.findings:
        shown = verdict.findings[:MAX_FINDING_ROWS]
        more = len(verdict.findings) - len(shown)
        text = "\n".join(shown) + (f"\n... and {more} more" if more > 0 else "")
        parts.append(f"<details><summary>findings</summary><pre>{_e(text)}</pre></details>")
    rows = []
    for name in sorted(data.root):
        if name in ("sweep_spec", "h5guard_schema"):
            continue
        value = data.root[name]
        text = _text(value) if not isinstance(value, list) or len(value) == 1 else str(value)
        rows.append([f"<code>{_e(name)}</code>", _e(text)])
    parts.append("<h3>File</h3>")
    stat_rows = [["path", _e(os.path.abspath(data.path))]]
    try:
        st = os.stat(data.path)
        mtime = _dt.datetime.fromtimestamp(st.st_mtime, tz=_dt.UTC).isoformat(timespec="seconds")
        stat_rows += [["size", f"{st.st_size:,} bytes"], ["modified", _e(mtime)]]
    except OSError:
        pass
    parts.append(_table(["attribute", "value"], stat_rows + rows, numeric=set()))
    parts.append("<h3>Versions of the results</h3>")
    if data.versions:
        vrows = []
        for versions, count in data.versions.most_common():
            try:
                parsed = json.loads(versions)
                described = ", ".join(f"{k} {v}" for k, v in sorted(parsed.items()))
            except (ValueError, AttributeError):
                described = versions
            vrows.append([_e(described), str(count)])
        parts.append(_table(["versions", "records"], vrows, numeric={1}))
    else:
        parts.append('<p class="empty">No records.</p>')
    parts.append("<h3>Sweep spec</h3>")
    if data.spec is not None:
        spec_text = json.dumps(data.spec, indent=2, sort_keys=True)
    else:
        spec_text = _text(data.root.get("sweep_spec", ""))
    parts.append(f"<pre>{_e(spec_text)}</pre>")
    schema = data.root.get("h5guard_schema")
    if schema is not None:
        parts.append(
            "<details><summary>embedded h5guard schema</summary>"
            f"<pre>{_e(_text(schema))}</pre></details>"
        )
    parts.append("</section>")
    return "".join(parts)


def _render_page(
    data: SweepData,
    stats: list[SiteStats],
    verdict: _CheckVerdict,
    layouts: Mapping[str, list[_LayoutFigure]],
    axes_images: Mapping[str, str],
    top_k: int,
    seconds: float,
    comparisons: list[_PublishedComparison] | None = None,
) -> str:
    now = _dt.datetime.now(tz=_dt.UTC).isoformat(timespec="seconds")
    title = f"layout-sweep report: {os.path.basename(data.path)}"
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{_e(title)}</h1>",
            f'<p class="meta">{_e(os.path.abspath(data.path))} &middot; generated {_e(now)} '
            f"in {seconds:.1f} s &middot; only committed (merged) results are shown</p>",
            '<nav><a href="#summary">summary</a><a href="#failures">failures</a>'
            '<a href="#layouts">best layouts</a><a href="#published">published</a>'
            '<a href="#axes">sweep axes</a>'
            '<a href="#provenance">check &amp; provenance</a></nav>',
            _summary_section(data, stats, verdict),
            _failures_section(data),
            _layouts_section(layouts, top_k),
            _published_section(comparisons or []),
            _axes_section(axes_images),
            _provenance_section(data, verdict),
            "</body></html>\n",
        ]
    )
