"""Read a sweep output back: its records, and the per-site statistics.

Reads only what the merge committed to the output (never a shard being written), and
only attributes unless layouts are asked for, so it stays fast on large outputs.

The per-site statistics are computed in one place, :func:`site_stats`, into one value
object, :class:`SiteStats`: ``layout-sweep run`` prints them through :func:`summarize`,
and ``layout-sweep report`` shows them (with planned and pending counts) in its page and
its ``--json`` document.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from optimizer.results import STATUS_OK, config_id_of_failure, is_failure_key, is_result_key

log = logging.getLogger(__name__)


class NotASweepOutputError(ValueError):
    """The file is not (or not yet) an output of layout-sweep."""


@dataclass(frozen=True, slots=True)
class Record:
    """One result or failure record of the output.

    Attributes
    ----------
    key : str
        The group name: ``cfg-...`` for a result, ``fail-cfg-...-N`` for a failure.
    config_id : str
        The config the record belongs to (``cfg-...``).
    status : str
        The ``status`` attribute (``"ok"`` for a result).
    config : dict
        The config, decoded from the ``config`` attribute (empty if it is not JSON).
    attrs : dict
        Every scalar attribute of the group, as plain Python values (from the output's
        summary, through :func:`h5guard.to_dataframe`, when it has one).
    """

    key: str
    config_id: str
    status: str
    config: dict[str, Any]
    attrs: dict[str, Any]

    @property
    def site_label(self) -> str:
        """``<site>-<n_turbines>``, e.g. ``iea37-16``: what the statistics are grouped by."""
        return f"{self.config.get('site', '?')}-{self.config.get('n_turbines', '?')}"


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def text_of(value: Any) -> str:
    """Return an attribute value as text (bytes decoded, 1-element lists unwrapped)."""
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, list | tuple) and len(value) == 1:
        return text_of(value[0])
    return str(value)


def number_of(value: Any) -> float:
    """Return a float from an attribute value (scalars stored as 1-element arrays too); NaN if not."""
    if isinstance(value, list | tuple | np.ndarray) and np.size(value) == 1:
        value = np.asarray(value).reshape(-1)[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _open(path: str) -> h5py.File:
    try:
        return h5py.File(path, "r", locking=False)
    except FileNotFoundError:
        raise NotASweepOutputError(f"{path}: no such file") from None
    except OSError as err:
        raise NotASweepOutputError(
            f"{path}: not a readable HDF5 file ({' '.join(str(err).split())})"
        ) from None


def read_root_spec(path: str) -> dict[str, Any] | None:
    """Read the sweep spec recorded in the output's ``sweep_spec`` attribute, or None.

    Parameters
    ----------
    path : str
        The sweep output.

    Returns
    -------
    dict or None
        None when the attribute is missing or is not a JSON object.

    Raises
    ------
    NotASweepOutputError
        The file is missing or not readable HDF5.
    """
    with _open(path) as f:
        raw = f.attrs.get("sweep_spec")
    if raw is None:
        return None
    try:
        spec = json.loads(_plain(raw))
    except ValueError:
        return None
    return spec if isinstance(spec, dict) else None


def root_attrs(path: str) -> dict[str, Any]:
    """Read every root attribute of the output, as plain Python values.

    Raises
    ------
    NotASweepOutputError
        The file is missing or not readable HDF5.
    """
    with _open(path) as f:
        return {k: _plain(v) for k, v in f.attrs.items()}


def iter_records(path: str) -> Iterator[Record]:
    """Yield every record of a sweep output, attributes only, in the file's key order.

    Parameters
    ----------
    path : str
        The sweep output.

    Yields
    ------
    Record
        One per result group and per failure group; other groups are skipped.

    Raises
    ------
    NotASweepOutputError
        The file is missing, not HDF5, or has no ``sweep_spec`` attribute.
    """
    with _open(path) as f:
        if "sweep_spec" not in f.attrs:
            raise NotASweepOutputError(
                f"{path}: not a layout-sweep output (no sweep_spec attribute)"
            )
        summarized = SUMMARY_GROUP in f
        if not summarized:  # an output merged before summaries, or not by h5guard
            for key in f:
                if is_result_key(key) or is_failure_key(key):
                    yield _record(key, {k: _plain(v) for k, v in f[key].attrs.items()})
            return
    import h5guard  # here: the report modules import this one where h5guard may be absent

    try:
        # The summary: one verified column read instead of one read per attribute.
        table = h5guard.to_dataframe(path)
    except h5guard.DigestMismatchError as err:
        log.warning("%s; reading the groups' attributes instead", err)
        with _open(path) as f:
            for key in f:
                if is_result_key(key) or is_failure_key(key):
                    yield _record(key, {k: _plain(v) for k, v in f[key].attrs.items()})
        return
    for key, row in zip(table.index, table.to_dict("records"), strict=True):
        if is_result_key(key) or is_failure_key(key):
            # A missing value is NaN in the table: absent here, as when read from the group.
            yield _record(key, {k: _plain(v) for k, v in row.items() if not _missing(v)})


# The reserved group where h5guard keeps every result's scalars (docs/format.md).
SUMMARY_GROUP = "h5guard_summary"


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _record(key: str, attrs: dict[str, Any]) -> Record:
    try:
        config = json.loads(attrs.get("config", "{}"))
    except ValueError:
        config = {}
    cid = key if is_result_key(key) else config_id_of_failure(key)
    return Record(key, cid, str(attrs.get("status", "?")), config, attrs)


def read_layouts(path: str, key: str) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Read the (initial layout, optimized layout) of one result, in metres.

    Raises
    ------
    NotASweepOutputError
        The file is unreadable, has no group ``key``, or ``key`` is a failure record.
    """
    with _open(path) as f:
        if key not in f:
            raise NotASweepOutputError(f"{path}: no result {key!r}")
        group = f[key]
        if "layout" not in group:
            raise NotASweepOutputError(f"{path}:/{key}: a failure record has no layout")
        return np.asarray(group["initial_layout"][()]), np.asarray(group["layout"][()])


# --- rows: the numbers of one record -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OkRow:
    """The numbers of one successful config (AEPs in GWh; NaN where an attribute is missing)."""

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
    site_def: str = ""  # a spec-defined site's resolved table (SweepConfig.site_def)

    @classmethod
    def of(cls, rec: Record) -> OkRow:
        """Make the row of a result record (``rec.status == "ok"``)."""
        cfg = rec.config
        return cls(
            key=rec.key,
            label=rec.site_label,
            site=str(cfg.get("site", "?")),
            n_turbines=int(number_of(cfg.get("n_turbines", 0)) or 0),
            aep_gwh=number_of(rec.attrs.get("aep_gwh")),
            initial_aep_gwh=number_of(rec.attrs.get("initial_aep_gwh")),
            wall_time_s=number_of(rec.attrs.get("wall_time_s")),
            grid_size=number_of(cfg.get("grid_size")),
            random_pct=number_of(cfg.get("random_pct")),
            seed=int(number_of(cfg.get("seed", 0)) or 0),
            start=str(cfg.get("start", "?")),
            converged=bool(rec.attrs.get("converged", False)),
            iterations=number_of(rec.attrs.get("iterations")),
            site_def=str(cfg.get("site_def", "")),
        )

    @property
    def gain_pct(self) -> float:
        """AEP gain over the starting layout, %; NaN without a starting AEP."""
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


def latest_failures(records: Iterable[Record]) -> tuple[dict[str, FailRow], int]:
    """Find the last failure of each config that has no result.

    Parameters
    ----------
    records : iterable of Record
        Results and failures, in any order.

    Returns
    -------
    failures : dict
        Config id -> its failure of the highest ``attempt``, with ``attempts`` the number
        of failure records of that config; sorted by config id. A config that failed and
        later succeeded is not in it.
    failure_records : int
        How many failure records there are in all (including those of configs that later
        succeeded).
    """
    done: set[str] = set()
    last: dict[str, FailRow] = {}
    attempts: Counter[str] = Counter()
    for rec in records:
        if rec.status == STATUS_OK:
            done.add(rec.config_id)
            continue
        attempts[rec.config_id] += 1
        attempt = int(number_of(rec.attrs.get("attempt", 0)) or 0)
        previous = last.get(rec.config_id)
        if previous is None or attempt >= previous.attempts:
            last[rec.config_id] = FailRow(
                config_id=rec.config_id,
                label=rec.site_label,
                attempts=attempt,
                error=text_of(rec.attrs.get("error", "unknown error")),
                kind=text_of(rec.attrs.get("error_kind", "")),
                traceback=text_of(rec.attrs.get("traceback", "")),
            )
    failures = {
        cid: FailRow(f.config_id, f.label, attempts[cid], f.error, f.kind, f.traceback)
        for cid, f in sorted(last.items())
        if cid not in done
    }
    return failures, sum(attempts.values())


# --- the per-site statistics -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reference:
    """Published AEP reference lines of one farm, GWh."""

    baseline_gwh: float
    best_published_gwh: float


def split_label(label: str) -> tuple[str, int] | None:
    """``"iea37-16"`` -> ``("iea37", 16)``; None if the label does not end in a number."""
    site, _, n = label.rpartition("-")
    try:
        return site, int(n)
    except ValueError:
        return None


def reference_for(label: str) -> Reference | None:
    """Look up the published reference AEPs of a site label (IEA37 sizes only), or None."""
    from optimizer.sites import get_site

    parts = split_label(label)
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


@dataclass(frozen=True, slots=True)
class SiteStats:
    """Statistics of one site and farm size (a label such as ``iea37-16``).

    AEPs in GWh, the gain in % over the starting layout; None where there is nothing to
    compute it from (no finite value), and ``planned`` / ``pending`` None when the plan is
    unknown.
    """

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
        """Return the JSON form (``layout-sweep report --json``), floats rounded to 4 digits."""

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


def site_stats(
    ok: Iterable[OkRow],
    failures: Mapping[str, FailRow] | None = None,
    planned: Mapping[str, str] | None = None,
) -> list[SiteStats]:
    """Compute the statistics of every site label, sorted by label.

    Parameters
    ----------
    ok : iterable of OkRow
        The results.
    failures : mapping, optional
        Config id -> failure, for the configs without a result (see :func:`latest_failures`).
    planned : mapping, optional
        Planned config id -> site label. Without it, ``planned`` and ``pending`` are None.

    Returns
    -------
    list of SiteStats
        One per label that has a result, a failure or a planned config. The best config is
        the one with the largest AEP (the larger config id on a tie).
    """
    failures = failures or {}
    by_label: dict[str, list[OkRow]] = defaultdict(list)
    for row in ok:
        by_label[row.label].append(row)
    failed: Counter[str] = Counter(f.label for f in failures.values())
    planned_count: Counter[str] = Counter((planned or {}).values())
    finished = {r.key for rows in by_label.values() for r in rows} | set(failures)
    pending: Counter[str] = Counter(
        label for cid, label in (planned or {}).items() if cid not in finished
    )
    out = []
    for label in sorted(set(by_label) | set(planned_count) | set(failed)):
        rows = by_label.get(label, [])
        aeps = [r.aep_gwh for r in rows if math.isfinite(r.aep_gwh)]
        gains = [r.gain_pct for r in rows if math.isfinite(r.gain_pct)]
        best = max(rows, key=lambda r: (r.aep_gwh, r.key)) if aeps else None
        ref = reference_for(label)
        out.append(
            SiteStats(
                label=label,
                planned=None if planned is None else planned_count[label],
                done=len(rows),
                failed=failed[label],
                pending=None if planned is None else pending[label],
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


def summarize(records: Iterable[Record]) -> tuple[list[SiteStats], dict[str, str]]:
    """Compute the statistics ``layout-sweep run`` prints, from the records of an output.

    Parameters
    ----------
    records : iterable of Record
        Typically ``iter_records(output)``.

    Returns
    -------
    sites : list of SiteStats
        The sites with at least one result with a finite AEP, sorted by label (planned and
        pending None: the plan is not read here).
    errors : dict
        Config id -> the error of its last failure, for the configs without a result.
    """
    records = list(records)
    ok = [OkRow.of(r) for r in records if r.status == STATUS_OK]
    failures, _ = latest_failures(records)
    sites = [s for s in site_stats(ok, failures) if s.best_aep_gwh is not None]
    return sites, {cid: f.error for cid, f in failures.items()}
