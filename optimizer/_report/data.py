"""What the report shows, read from a sweep output: :class:`SweepData` and the check verdict.

Attributes are read once, lazily, through :func:`optimizer.summary.iter_records`; the
per-site statistics are :func:`optimizer.summary.site_stats`, the same function the status
summary of ``layout-sweep run`` uses.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from optimizer.config import expand_spec
from optimizer.results import STATUS_OK
from optimizer.summary import (
    FailRow,
    NotASweepOutputError,
    OkRow,
    SiteStats,
    iter_records,
    latest_failures,
    root_attrs,
    site_stats,
    text_of,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SweepData:
    """Everything the report needs from an output, read in one pass over its attributes.

    Attributes
    ----------
    path : str
        The output file.
    root : dict
        Its root attributes.
    spec : dict or None
        The sweep spec of the ``sweep_spec`` attribute, if it could be expanded.
    spec_problem : str or None
        Why it could not, if so.
    planned_labels : dict or None
        Planned config id -> site label (None when the spec could not be expanded).
    ok : list of OkRow
        The results.
    failures : dict
        Config id -> last failure, for the configs without a result.
    failure_records : int
        All failure records, including those of configs that later succeeded.
    versions : Counter
        The ``versions`` attribute of each record (JSON text) -> how many records carry it.
    """

    path: str
    root: dict[str, Any]
    spec: dict[str, Any] | None
    spec_problem: str | None
    planned_labels: dict[str, str] | None
    ok: list[OkRow] = field(default_factory=list)
    failures: dict[str, FailRow] = field(default_factory=dict)
    failure_records: int = 0
    versions: Counter[str] = field(default_factory=Counter)

    @property
    def planned(self) -> int | None:
        """Planned configs, None when the plan is unknown."""
        return None if self.planned_labels is None else len(self.planned_labels)

    @property
    def done(self) -> int:
        """Configs with a result."""
        return len(self.ok)

    @property
    def failed(self) -> int:
        """Configs with failures and no result."""
        return len(self.failures)

    @property
    def unplanned(self) -> int | None:
        """Results whose config is not in the current spec (e.g. the spec shrank)."""
        if self.planned_labels is None:
            return None
        return sum(1 for r in self.ok if r.key not in self.planned_labels)

    @property
    def pending(self) -> int | None:
        """Planned configs with neither a result nor a failure; None when the plan is unknown."""
        if self.planned_labels is None:
            return None
        finished = {r.key for r in self.ok} | set(self.failures)
        return sum(1 for cid in self.planned_labels if cid not in finished)

    def site_stats(self) -> list[SiteStats]:
        """Compute the per-site statistics (:func:`optimizer.summary.site_stats`), sorted by label."""
        return site_stats(self.ok, self.failures, self.planned_labels)

    def top(self, label: str, k: int) -> list[OkRow]:
        """Return the ``k`` results of ``label`` with the largest AEP, best first."""
        rows = [r for r in self.ok if r.label == label and math.isfinite(r.aep_gwh)]
        rows.sort(key=lambda r: (-r.aep_gwh, r.key))
        return rows[:k]


def require_sweep_output(path: str) -> dict[str, Any]:
    """Read the root attributes of an output; :class:`NotASweepOutputError` if it is none."""
    root = root_attrs(path)  # NotASweepOutputError: missing, not HDF5, unreadable
    if "sweep_spec" not in root:
        raise NotASweepOutputError(f"{path}: not a layout-sweep output (no sweep_spec attribute)")
    return root


def read_sweep(path: str | os.PathLike[str]) -> SweepData:
    """Read the committed records of a sweep output (attributes only).

    Parameters
    ----------
    path : str or os.PathLike
        The sweep output.

    Returns
    -------
    SweepData
        Results, failures and the plan; a ``sweep_spec`` that cannot be expanded leaves the
        plan unknown and says why in ``spec_problem``.

    Raises
    ------
    NotASweepOutputError
        The file is missing, not HDF5, or not a layout-sweep output.
    """
    path = os.fspath(path)
    root = require_sweep_output(path)
    spec: dict[str, Any] | None = None
    problem: str | None = None
    planned: dict[str, str] | None = None
    try:
        loaded = json.loads(text_of(root["sweep_spec"]))
        if not isinstance(loaded, dict):
            raise ValueError("expected a JSON object")
        spec = loaded
        planned = {c.config_id: f"{c.site}-{c.n_turbines}" for c in expand_spec(spec)}
    except ValueError as err:  # SpecError is a ValueError, and so is a JSON error
        problem = f"the sweep_spec attribute cannot be expanded: {err}"
        log.warning("%s: %s", path, problem)
    data = SweepData(path, root, spec, problem, planned)
    records = list(iter_records(path))
    for rec in records:
        data.versions[text_of(rec.attrs.get("versions", "unknown"))] += 1
        if rec.status == STATUS_OK:
            data.ok.append(OkRow.of(rec))
    data.failures, data.failure_records = latest_failures(records)
    log.info(
        "%s: %d result(s), %d failure record(s), %s planned",
        path,
        data.done,
        data.failure_records,
        data.planned,
    )
    return data


@dataclass(frozen=True, slots=True)
class CheckVerdict:
    """The h5guard check of the output: passed (True), problems (False) or not run (None)."""

    ok: bool | None
    summary: str
    findings: tuple[str, ...] = ()


NOT_CHECKED = CheckVerdict(None, "not run (--no-check)")


def check_output(path: str) -> CheckVerdict:
    """Check ``path`` with h5guard; a check that cannot run is reported, never raised."""
    import h5guard

    try:
        report = h5guard.check([path])
    except Exception as err:  # the page must still be written
        log.warning("h5guard check of %s could not run: %s", path, err)
        return CheckVerdict(None, f"h5guard check could not run: {err}")
    problems = tuple(str(f) for f in sorted(report.findings))
    return CheckVerdict(report.ok, report.render_summary(), problems)
