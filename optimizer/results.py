"""How a sweep result or failure is stored: one h5guard group per record.

A successful config is the group ``cfg-<id>``; a failed attempt is the group
``fail-<id>-<attempt>`` (failures are data too, and a later success does not
overwrite them). Both carry the config as JSON and a ``status`` attribute, so a
single schema describes the whole file.
"""

from __future__ import annotations

import json
import platform
from functools import cache
from importlib import metadata
from typing import Any

import numpy as np

from h5guard import Schema
from optimizer.config import CONFIG_ID_PREFIX, SweepConfig
from optimizer.optimize import LayoutResult

FAIL_PREFIX = "fail-"
STATUS_OK = "ok"
STATUS_FAILED = "failed"

RESULT_SCHEMA = Schema.from_dict(
    {
        "name": "layout-sweep-result/1",
        "datasets": {
            name: {
                "dtype": "float",
                "shape": ["n", 2],
                "finite": True,
                "required_when": {"status": STATUS_OK},
            }
            for name in ("layout", "initial_layout")
        },
        "attrs": {
            "status": {"dtype": "string", "allowed": [STATUS_OK, STATUS_FAILED]},
            "config": {"dtype": "string"},
            "config_id": {"dtype": "string"},
            "versions": {"dtype": "string"},
        },
    }
)
# Numbers a successful result must carry (checked on write, by the schema's datasets
# for arrays and here for scalars stored as attributes).
OK_SCALARS = (
    "aep_gwh",
    "initial_aep_gwh",
    "iterations",
    "aep_evaluations",
    "gradient_evaluations",
    "wall_time_s",
    "aep_time_s",
    "gradient_time_s",
    "max_boundary_violation_m",
    "max_spacing_violation_m",
)


@cache
def versions_json() -> str:
    versions = {"python": platform.python_version()}
    for dist in ("h5guard", "py-wake", "numpy", "scipy", "h5py"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "unknown"
    return json.dumps(versions, sort_keys=True)


def failure_key(config_id: str, attempt: int) -> str:
    return f"{FAIL_PREFIX}{config_id.removeprefix(CONFIG_ID_PREFIX)}-{attempt}"


def config_id_of_failure(key: str) -> str:
    body = key.removeprefix(FAIL_PREFIX)
    return CONFIG_ID_PREFIX + body.rsplit("-", 1)[0]


def is_result_key(key: str) -> bool:
    return key.startswith(CONFIG_ID_PREFIX)


def is_failure_key(key: str) -> bool:
    return key.startswith(FAIL_PREFIX)


def result_group(
    config: SweepConfig, result: LayoutResult
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Datasets and attributes of a successful config."""
    scalars = {name: getattr(result, name) for name in OK_SCALARS}
    for name, value in scalars.items():
        if not np.isfinite(value):
            raise FloatingPointError(
                f"{config.config_id}: {name} is {value}, expected a finite number"
            )
    datasets = {
        "layout": np.asarray(result.layout, dtype=np.float64),
        "initial_layout": np.asarray(result.initial_layout, dtype=np.float64),
    }
    attrs: dict[str, Any] = {
        "status": STATUS_OK,
        "config": config.canonical_json(),
        "config_id": config.config_id,
        "site": config.site,
        "n_turbines": config.n_turbines,
        "converged": bool(result.converged),
        "message": result.message,
        "versions": versions_json(),
        **scalars,
    }
    return datasets, attrs


def failure_group(
    config: SweepConfig, *, error: str, traceback: str, attempt: int, kind: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Datasets (none) and attributes of a failed attempt."""
    return {}, {
        "status": STATUS_FAILED,
        "config": config.canonical_json(),
        "config_id": config.config_id,
        "site": config.site,
        "n_turbines": config.n_turbines,
        "error": error or "unknown error",
        "error_kind": kind,
        "traceback": traceback or "(no traceback: the worker process died)",
        "attempt": attempt,
        "versions": versions_json(),
    }
