"""Read a sweep output back: per-config records and the summary the CLI prints.

Reads only what the merge committed to the output (never a shard being written), and
only attributes unless layouts are asked for, so it stays fast on large outputs.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from optimizer.results import STATUS_OK, config_id_of_failure, is_failure_key, is_result_key


class NotASweepOutputError(ValueError):
    """The file is not (or not yet) an output of layout-sweep."""


@dataclass(frozen=True, slots=True)
class Record:
    """One result or failure record of the output."""

    key: str
    config_id: str
    status: str
    config: dict[str, Any]
    attrs: dict[str, Any]

    @property
    def site_label(self) -> str:
        return f"{self.config.get('site', '?')}-{self.config.get('n_turbines', '?')}"


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


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
    with _open(path) as f:
        return {k: _plain(v) for k, v in f.attrs.items()}


def iter_records(path: str) -> Iterator[Record]:
    """Every record of a sweep output, attributes only."""
    with _open(path) as f:
        if "sweep_spec" not in f.attrs:
            raise NotASweepOutputError(
                f"{path}: not a layout-sweep output (no sweep_spec attribute)"
            )
        for key in f:
            if not (is_result_key(key) or is_failure_key(key)):
                continue
            attrs = {k: _plain(v) for k, v in f[key].attrs.items()}
            try:
                config = json.loads(attrs.get("config", "{}"))
            except ValueError:
                config = {}
            cid = key if is_result_key(key) else config_id_of_failure(key)
            yield Record(key, cid, str(attrs.get("status", "?")), config, attrs)


def read_layouts(path: str, key: str) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(initial layout, optimized layout) of one result, in metres."""
    with _open(path) as f:
        if key not in f:
            raise NotASweepOutputError(f"{path}: no result {key!r}")
        group = f[key]
        if "layout" not in group:
            raise NotASweepOutputError(f"{path}:/{key}: a failure record has no layout")
        return np.asarray(group["initial_layout"][()]), np.asarray(group["layout"][()])


@dataclass(frozen=True, slots=True)
class SiteSummary:
    label: str
    done: int
    best_aep_gwh: float
    median_aep_gwh: float
    worst_aep_gwh: float
    best_key: str
    median_gain_pct: float


def summarize(records: list[Record]) -> tuple[list[SiteSummary], dict[str, str]]:
    """Per site-and-size AEP statistics, and the last error of each failed config."""
    by_site: dict[str, list[Record]] = defaultdict(list)
    done: set[str] = set()
    errors: dict[str, str] = {}
    for r in records:
        if r.status == STATUS_OK:
            by_site[r.site_label].append(r)
            done.add(r.config_id)
        else:
            errors[r.config_id] = str(r.attrs.get("error", ""))
    for cid in done:
        errors.pop(cid, None)
    sites = []
    for label, rs in sorted(by_site.items()):
        aeps = [float(r.attrs["aep_gwh"]) for r in rs]
        gains = [
            100.0 * (float(r.attrs["aep_gwh"]) / float(r.attrs["initial_aep_gwh"]) - 1.0)
            for r in rs
        ]
        best = max(rs, key=lambda r: float(r.attrs["aep_gwh"]))
        sites.append(
            SiteSummary(
                label=label,
                done=len(rs),
                best_aep_gwh=max(aeps),
                median_aep_gwh=statistics.median(aeps),
                worst_aep_gwh=min(aeps),
                best_key=best.key,
                median_gain_pct=statistics.median(gains),
            )
        )
    return sites, errors
