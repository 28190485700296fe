"""The report page: a Jinja2 template with autoescape on, and its CSS, both package data.

:func:`render_page` turns what the report gathered (:class:`~optimizer._report.data.SweepData`,
the per-site statistics, the figures written, the check verdict) into the page's text:
``templates/report.html.j2`` lays it out, ``templates/report.css`` styles it (inlined, so
the page opens from disk without fetching anything). The template does presentation only;
the few values it cannot take straight from the data are prepared here.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from optimizer._report.comparison import PublishedComparison
from optimizer._report.data import CheckVerdict, SweepData
from optimizer._report.figures import LayoutFigure
from optimizer.summary import SiteStats, text_of

TEMPLATE = "report.html.j2"
STYLESHEET = "report.css"
MAX_FAILURE_ROWS = 500
"""Failed configs listed in the page (the counts stay exact)."""
MAX_FINDING_ROWS = 200
"""Check findings listed in the page."""
MAX_TRACEBACK_CHARS = 6000
"""The end of a traceback that is shown."""

_NO_VALUE = "&ndash;"
_CHECK_CLASS = {True: "ok", False: "bad", None: "warn"}
_CHECK_WORD = {True: "passed", False: "PROBLEMS", None: "not run"}


def _templates() -> Any:
    return resources.files("optimizer._report").joinpath("templates")


@functools.cache
def _environment() -> Any:
    import jinja2
    from markupsafe import Markup

    def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
        if value is None or not math.isfinite(value):
            return Markup(_NO_VALUE)
        return f"{value:.{digits}f}{suffix}"

    def opt(value: int | None) -> str:
        return "unknown" if value is None else str(value)

    def tail(text: str, limit: int) -> str:
        return "...\n" + text[-limit:] if len(text) > limit else text

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("optimizer._report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(fmt=fmt, opt=opt, tail=tail, g=lambda v: f"{v:g}")
    env.globals["css"] = Markup(_templates().joinpath(STYLESHEET).read_text(encoding="utf-8"))
    return env


@dataclass(frozen=True, slots=True)
class _Card:
    title: str
    value: str
    cls: str


def _cards(data: SweepData, verdict: CheckVerdict) -> list[_Card]:
    def opt(value: int | None) -> str:
        return "unknown" if value is None else str(value)

    cards = [
        _Card("planned", opt(data.planned), ""),
        _Card("done", str(data.done), "ok" if data.done else ""),
        _Card("failed", str(data.failed), "bad" if data.failed else ""),
        _Card("pending", opt(data.pending), "warn" if data.pending else ""),
        _Card("h5guard check", _CHECK_WORD[verdict.ok], _CHECK_CLASS[verdict.ok]),
    ]
    if data.unplanned:
        cards.insert(4, _Card("results not in the spec", str(data.unplanned), "warn"))
    return cards


def _file_rows(data: SweepData) -> list[tuple[str, str]]:
    rows = [("path", os.path.abspath(data.path))]
    try:
        st = os.stat(data.path)
    except OSError:
        return rows
    mtime = _dt.datetime.fromtimestamp(st.st_mtime, tz=_dt.UTC).isoformat(timespec="seconds")
    return [*rows, ("size", f"{st.st_size:,} bytes"), ("modified", mtime)]


def _attribute_rows(data: SweepData) -> list[tuple[str, str]]:
    rows = []
    for name in sorted(data.root):
        if name in ("sweep_spec", "h5guard_schema"):
            continue
        value = data.root[name]
        text = text_of(value) if not isinstance(value, list) or len(value) == 1 else str(value)
        rows.append((name, text))
    return rows


def _version_rows(data: SweepData) -> list[tuple[str, int]]:
    rows = []
    for versions, count in data.versions.most_common():
        try:
            parsed = json.loads(versions)
            described = ", ".join(f"{k} {v}" for k, v in sorted(parsed.items()))
        except (ValueError, AttributeError):
            described = versions
        rows.append((described, count))
    return rows


def _findings_text(verdict: CheckVerdict) -> str:
    shown = verdict.findings[:MAX_FINDING_ROWS]
    more = len(verdict.findings) - len(shown)
    return "\n".join(shown) + (f"\n... and {more} more" if more > 0 else "")


def render_page(
    data: SweepData,
    stats: Sequence[SiteStats],
    verdict: CheckVerdict,
    layouts: Mapping[str, Sequence[LayoutFigure]],
    axes_images: Mapping[str, str],
    top_k: int,
    seconds: float,
    comparisons: Sequence[PublishedComparison] = (),
) -> str:
    """Render the report page.

    Parameters
    ----------
    data : SweepData
        The output's records and plan.
    stats : sequence of SiteStats
        Its per-site statistics.
    verdict : CheckVerdict
        The h5guard check of the output.
    layouts : mapping
        Site label -> its best layouts, best first (the images are in the report directory).
    axes_images : mapping
        Site label -> the file name of its sweep-axes figure.
    top_k : int
        How many layouts per site were asked for.
    seconds : float
        How long the report took, for the page's header.
    comparisons : sequence of PublishedComparison
        The IEA37 sites' best layouts beside the published ones.

    Returns
    -------
    str
        The whole HTML document.
    """
    now = _dt.datetime.now(tz=_dt.UTC).isoformat(timespec="seconds")
    failures = list(data.failures.values())
    if data.spec is not None:
        spec_text = json.dumps(data.spec, indent=2, sort_keys=True)
    else:
        spec_text = text_of(data.root.get("sweep_spec", ""))
    schema = data.root.get("h5guard_schema")
    template = _environment().get_template(TEMPLATE)
    page: str = template.render(
        title=f"layout-sweep report: {os.path.basename(data.path)}",
        output_path=os.path.abspath(data.path),
        generated=now,
        seconds=seconds,
        data=data,
        cards=_cards(data, verdict),
        stats=stats,
        failures_shown=failures[:MAX_FAILURE_ROWS],
        failures_hidden=len(failures) - MAX_FAILURE_ROWS,
        max_traceback_chars=MAX_TRACEBACK_CHARS,
        layouts=layouts,
        top_k=top_k,
        comparisons=comparisons,
        axes_images=axes_images,
        verdict=verdict,
        check_cls=_CHECK_CLASS[verdict.ok],
        findings_text=_findings_text(verdict),
        file_rows=_file_rows(data),
        attribute_rows=_attribute_rows(data),
        version_rows=_version_rows(data),
        spec_text=spec_text,
        schema_text=None if schema is None else text_of(schema),
    )
    return page
