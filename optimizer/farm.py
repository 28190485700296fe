"""Your own farm: sites from a spec's ``[sites.NAME]`` tables or from a Python function.

A spec table is resolved once, where the spec is read (:func:`resolve_site_table`): paths are
taken relative to the spec file, the CSV files are read and checked, and the result is a
plain JSON-able definition that travels inside every config (``SweepConfig.site_def``), so a
worker on another machine needs no file and a changed CSV gives new config ids. A worker
turns the definition into a :class:`~optimizer.sites.SiteSpec` (:func:`site_from_definition`,
cached per process), building the PyWake model only when it is first asked for.

The PyWake objects a definition stands for (the stored AEP is theirs):

* ``wind = {frequency, weibull_a, weibull_k, ti}``: ``UniformWeibullSite(p_wd=frequency,
  a=weibull_a, k=weibull_k, ti=ti)`` with PyWake's default directions (1 degree) and speeds
  (3 .. 25 m/s);
* ``wind = {directions, speeds, frequency, speed_frequency, ti}``: an ``XRSite`` whose
  probability of (direction i, speed j) is ``frequency[i] * speed_frequency[i][j]``, evaluated
  at exactly those directions and speeds (the IEA37 case studies 3 and 4 format);
* ``turbine = {power_ct_csv, diameter, hub_height}``: ``WindTurbine(name, diameter,
  hub_height, PowerCtTabular(ws, power_kw, "kW", ct))``; ``turbine = {cut_in, cut_out,
  rated_speed, rated_power_kw, ct, diameter, hub_height}``: ``CubePowerSimpleCt`` with
  constant thrust; ``turbine = "package.module:name"``: a PyWake turbine (class, function or
  instance) by import path;
* ``wake = "Name"``: a PyWake wind farm model class (``py_wake`` or ``py_wake.literature``)
  called as ``Name(site, turbine)``; ``wake = {model, deficit, superposition}``: composed
  from PyWake parts, e.g. ``All2All`` + ``IEA37SimpleBastankhahGaussianDeficit`` +
  ``SquaredSum``.
"""

from __future__ import annotations

import csv
import functools
import importlib
import itertools
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optimizer.geometry import FloatArray, GeometryError, Lease
from optimizer.sites import Circle, SiteSpec

SITE_KEYS = (
    "baseline",
    "boundary",
    "description",
    "exclusions",
    "min_spacing",
    "regions",
    "turbine",
    "wake",
    "wind",
)
WEIBULL_KEYS = ("frequency", "ti", "weibull_a", "weibull_k")
TABLE_KEYS = ("directions", "frequency", "speed_frequency", "speeds", "ti")
CSV_TURBINE_KEYS = ("diameter", "hub_height", "interpolation", "name", "power_ct_csv")
CUBE_TURBINE_KEYS = (
    "ct",
    "cut_in",
    "cut_out",
    "diameter",
    "hub_height",
    "name",
    "rated_power_kw",
    "rated_speed",
)
WAKE_PARTS = ("deficit", "model", "superposition")
CSV_COLUMNS = ("ws", "power_kw", "ct")
# Wind farm models by name: where to look, in order.
_WAKE_MODULES = (
    "py_wake",
    "py_wake.literature.gaussian_models",
    "py_wake.literature.noj",
    "py_wake.literature.turbopark",
)
_PART_MODULES = {
    "model": ("py_wake.wind_farm_models",),
    "deficit": ("py_wake.deficit_models", "py_wake.deficit_models.gaussian"),
    "superposition": ("py_wake.superposition_models",),
}


class SiteError(ValueError):
    """A site definition that cannot be used; the message names the site and the key."""


@dataclass(frozen=True, kw_only=True)
class Site:
    """A site from Python: what ``site = "package.module:function"`` must return.

    Parameters
    ----------
    wind_farm_model
        Any PyWake ``WindFarmModel``; its ``aep`` is the stored AEP and its autograd
        gradients drive the optimizer.
    boundary
        One polygon ``[[x, y], ...]`` in metres (any simple polygon) ...
    regions
        ... or several (a turbine may stand in any); give exactly one of the two.
    exclusions
        Polygons no turbine may stand strictly inside.
    min_spacing
        Minimum distance between turbines, in rotor diameters.
    baseline
        An optional reference layout (n, 2), for ``start = "baseline"``.
    description
        One line for the report.

    Examples
    --------
    >>> def my_site() -> Site:  # doctest: +SKIP
    ...     return Site(wind_farm_model=wfm, boundary=[[0, 0], [4000, 0], [0, 4000]])
    """

    wind_farm_model: Any
    boundary: Any = None
    regions: Any = None
    exclusions: Any = ()
    min_spacing: float = 2.0
    baseline: Any = None
    description: str = ""


# --- reading spec tables ---------------------------------------------------------------------


def resolve_site_table(name: str, table: Any, *, base_dir: str | None) -> dict[str, Any]:
    """Check a ``[sites.NAME]`` table and resolve it into a self-contained definition.

    Parameters
    ----------
    name
        The site's name in the spec.
    table
        The table as TOML gives it.
    base_dir
        Directory relative paths are taken from (the spec file's); ``None``: the current one.

    Returns
    -------
    dict
        JSON-able: polygons as lists, CSV files read into columns.

    Raises
    ------
    SiteError
        One line naming the site and the key: a missing or unknown key, a bad polygon, a CSV
        with missing columns or non-increasing speeds, an unknown wake model...
    """
    where = f"sites.{name}"
    if not isinstance(table, Mapping):
        raise SiteError(f"{where}: expected a table, got {table!r}")
    unknown = sorted(set(table) - set(SITE_KEYS))
    if unknown:
        raise SiteError(f"{where}: unknown key(s) {unknown}; expected some of {list(SITE_KEYS)}")
    if ("boundary" in table) == ("regions" in table):
        raise SiteError(f"{where}: expected exactly one of 'boundary' (one polygon) or 'regions'")
    regions = [table["boundary"]] if "boundary" in table else table["regions"]
    if not isinstance(regions, list) or not regions:
        raise SiteError(f"{where}: regions: expected a list of polygons, got {regions!r}")
    exclusions = table.get("exclusions", [])
    if not isinstance(exclusions, list):
        raise SiteError(f"{where}: exclusions: expected a list of polygons, got {exclusions!r}")
    try:
        lease = Lease.build(regions, exclusions, where=where)
    except GeometryError as err:
        raise SiteError(str(err)) from None
    for key in ("turbine", "wind", "wake"):
        if key not in table:
            raise SiteError(f"{where}: missing key {key!r}")
    out: dict[str, Any] = {
        "regions": [r.tolist() for r in lease.regions],
        "exclusions": [e.tolist() for e in lease.exclusions],
        "turbine": _resolve_turbine(table["turbine"], f"{where}: turbine", base_dir),
        "wind": _resolve_wind(table["wind"], f"{where}: wind"),
        "wake": _resolve_wake(table["wake"], f"{where}: wake"),
        "min_spacing": _positive(table.get("min_spacing", 2.0), f"{where}: min_spacing"),
        "description": str(table.get("description", "")),
    }
    if "baseline" in table:
        out["baseline"] = _layout(table["baseline"], f"{where}: baseline").tolist()
    _check_buildable(out, where)
    return out


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SiteError(f"{what}: expected a positive number, got {value!r}")
    if value <= 0:
        raise SiteError(f"{what}: expected a positive number, got {value!r}")
    return float(value)


def _numbers(value: Any, what: str, *, length: int | None = None) -> list[float]:
    if not isinstance(value, list) or not value:
        raise SiteError(f"{what}: expected a list of numbers, got {value!r}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise SiteError(f"{what}: expected finite numbers, got {item!r}")
        out.append(float(item))
    if length is not None and len(out) != length:
        raise SiteError(f"{what}: expected {length} numbers, got {len(out)}")
    return out


def _layout(value: Any, what: str) -> FloatArray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SiteError(f"{what}: expected a list of [x, y] positions, got {value!r}") from None
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.all(np.isfinite(arr)):
        raise SiteError(f"{what}: expected a list of finite [x, y] positions")
    return arr


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], what: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise SiteError(f"{what}: unknown key(s) {unknown}; expected some of {list(allowed)}")


def _resolve_turbine(value: Any, what: str, base_dir: str | None) -> dict[str, Any]:
    if isinstance(value, str):
        _import_object(value, what)
        return {"import": value}
    if not isinstance(value, Mapping):
        raise SiteError(f"{what}: expected a table or 'package.module:name', got {value!r}")
    if "power_ct_csv" in value:
        _check_keys(value, CSV_TURBINE_KEYS, what)
        path = Path(str(value["power_ct_csv"]))
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        columns = read_power_ct_csv(str(path))
        interpolation = value.get("interpolation", "linear")
        if interpolation not in ("linear", "pchip"):
            raise SiteError(
                f"{what}: interpolation: expected 'linear' or 'pchip', got {interpolation!r}"
            )
        kind: dict[str, Any] = {"kind": "power_ct", **columns, "interpolation": interpolation}
        default_name = path.stem
    elif "rated_power_kw" in value:
        _check_keys(value, CUBE_TURBINE_KEYS, what)
        kind = {"kind": "cube"}
        for key in ("cut_in", "rated_speed", "cut_out", "rated_power_kw", "ct"):
            if key not in value:
                raise SiteError(f"{what}: missing key {key!r} of a cubic power curve")
            kind[key] = _positive(value[key], f"{what}: {key}")
        if not kind["cut_in"] < kind["rated_speed"] <= kind["cut_out"]:
            raise SiteError(f"{what}: expected cut_in < rated_speed <= cut_out")
        default_name = "turbine"
    else:
        raise SiteError(
            f"{what}: expected power_ct_csv (a CSV with columns ws, power_kw, ct), a cubic "
            f"curve (cut_in, rated_speed, cut_out, rated_power_kw, ct) or 'package.module:name'"
        )
    for key in ("diameter", "hub_height"):
        if key not in value:
            raise SiteError(f"{what}: missing key {key!r} (metres)")
        kind[key] = _positive(value[key], f"{what}: {key}")
    kind["name"] = str(value.get("name", default_name))
    return kind


def read_power_ct_csv(path: str) -> dict[str, list[float]]:
    """Read a power and thrust curve: columns ``ws`` (m/s), ``power_kw``, ``ct``.

    Raises
    ------
    SiteError
        Unreadable file, missing columns, non-numbers, fewer than two rows, or wind speeds that
        do not strictly increase.
    """
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(line for line in fh if not line.lstrip().startswith("#")))
    except OSError as err:
        raise SiteError(f"{path}: cannot read the power/ct table: {err.strerror or err}") from None
    if not rows:
        raise SiteError(f"{path}: empty; expected columns {', '.join(CSV_COLUMNS)}")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise SiteError(
            f"{path}: missing column(s) {missing}; expected columns {', '.join(CSV_COLUMNS)}, "
            f"found {header}"
        )
    index = [header.index(c) for c in CSV_COLUMNS]
    columns: dict[str, list[float]] = {c: [] for c in CSV_COLUMNS}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            values = [float(row[i]) for i in index]
        except (ValueError, IndexError):
            raise SiteError(f"{path}:{number}: expected numbers, got {row}") from None
        if not all(math.isfinite(v) for v in values):
            raise SiteError(f"{path}:{number}: expected finite numbers, got {row}")
        for c, v in zip(CSV_COLUMNS, values, strict=True):
            columns[c].append(v)
    ws = columns["ws"]
    if len(ws) < 2:
        raise SiteError(f"{path}: expected at least 2 rows of ws, power_kw, ct, got {len(ws)}")
    for k in range(1, len(ws)):
        if not ws[k] > ws[k - 1]:
            raise SiteError(
                f"{path}:{k + 2}: wind speeds must strictly increase, got {ws[k]:g} after "
                f"{ws[k - 1]:g}"
            )
    if min(columns["power_kw"]) < 0 or min(columns["ct"]) < 0:
        raise SiteError(f"{path}: expected power_kw >= 0 and ct >= 0")
    return columns


def _resolve_wind(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SiteError(f"{what}: expected a table, got {value!r}")
    if "ti" not in value:
        raise SiteError(f"{what}: missing key 'ti' (turbulence intensity, e.g. 0.1)")
    ti = _positive(value["ti"], f"{what}: ti")
    if "weibull_a" in value or "weibull_k" in value:
        _check_keys(value, WEIBULL_KEYS, what)
        for key in WEIBULL_KEYS:
            if key not in value:
                raise SiteError(f"{what}: missing key {key!r} of a Weibull wind rose")
        freq = _numbers(value["frequency"], f"{what}: frequency")
        a = _numbers(value["weibull_a"], f"{what}: weibull_a", length=len(freq))
        k = _numbers(value["weibull_k"], f"{what}: weibull_k", length=len(freq))
        if min(freq) < 0 or sum(freq) <= 0 or min(a) <= 0 or min(k) <= 0:
            raise SiteError(f"{what}: expected frequency >= 0 (not all 0), weibull_a, k > 0")
        return {"kind": "weibull", "frequency": freq, "weibull_a": a, "weibull_k": k, "ti": ti}
    if "speed_frequency" in value:
        _check_keys(value, TABLE_KEYS, what)
        for key in TABLE_KEYS:
            if key not in value:
                raise SiteError(f"{what}: missing key {key!r} of a direction x speed table")
        wd = _numbers(value["directions"], f"{what}: directions")
        ws = _numbers(value["speeds"], f"{what}: speeds")
        freq = _numbers(value["frequency"], f"{what}: frequency", length=len(wd))
        table = value["speed_frequency"]
        if not isinstance(table, list) or len(table) != len(wd):
            raise SiteError(f"{what}: speed_frequency: expected {len(wd)} rows, one per direction")
        rows = [
            _numbers(r, f"{what}: speed_frequency row {i}", length=len(ws))
            for i, r in enumerate(table)
        ]
        if any(b <= a for a, b in itertools.pairwise(wd)) or not 0 <= wd[0] < 360:
            raise SiteError(f"{what}: directions: expected increasing degrees in [0, 360)")
        if any(b <= a for a, b in itertools.pairwise(ws)) or ws[0] < 0:
            raise SiteError(f"{what}: speeds: expected strictly increasing speeds >= 0")
        if min(freq) < 0 or min(min(r) for r in rows) < 0:
            raise SiteError(f"{what}: expected frequencies >= 0")
        return {
            "kind": "table",
            "directions": wd,
            "speeds": ws,
            "frequency": freq,
            "speed_frequency": rows,
            "ti": ti,
        }
    raise SiteError(
        f"{what}: expected a Weibull rose (frequency, weibull_a, weibull_k, ti) or a direction x "
        f"speed table (directions, speeds, frequency, speed_frequency, ti)"
    )


def _resolve_wake(value: Any, what: str) -> dict[str, Any]:
    if isinstance(value, str):
        _wake_class(value, what)
        return {"model": value}
    if isinstance(value, Mapping) and any(k in value for k in ("deficit", "superposition")):
        _check_keys(value, WAKE_PARTS, what)
        missing = [k for k in WAKE_PARTS if k not in value]
        if missing:
            raise SiteError(f"{what}: missing key(s) {missing}; expected {list(WAKE_PARTS)}")
        for part in WAKE_PARTS:
            _part_class(part, str(value[part]), f"{what}: {part}")
        return {"parts": {k: str(value[k]) for k in WAKE_PARTS}}
    if isinstance(value, Mapping) and "model" in value:
        # { model = "Name", k = 0.03, ... }: the model's own keyword arguments.
        _wake_class(str(value["model"]), what)
        kwargs = {k: v for k, v in value.items() if k != "model"}
        for key, arg in kwargs.items():
            if isinstance(arg, bool) or not isinstance(arg, int | float | str):
                raise SiteError(
                    f"{what}: {key}: expected a number or a string for the model's keyword "
                    f"argument, got {arg!r}"
                )
        out: dict[str, Any] = {"model": str(value["model"])}
        if kwargs:
            out["kwargs"] = kwargs
        return out
    raise SiteError(
        f"{what}: expected a PyWake model name, {{model = NAME, keyword = value, ...}} or "
        f"{{model, deficit, superposition}}"
    )


def _check_buildable(definition: Mapping[str, Any], where: str) -> None:
    """Build the site's PyWake model once, so a model PyWake refuses is a spec error."""
    try:
        with warnings.catch_warnings():
            # PyWake warns that some named models differ from their literature set-up;
            # the user named that model, and the workers show the warning if they like.
            warnings.simplefilter("ignore", UserWarning)
            build_wind_farm_model(definition)
    except (TypeError, ValueError, KeyError) as err:
        wake = definition["wake"]
        name = wake.get("model", "the composed model")
        raise SiteError(
            f"{where}: wake: PyWake cannot build {name}(site, turbine"
            f"{''.join(f', {k}={v!r}' for k, v in wake.get('kwargs', {}).items())}): {err}; "
            f"give its keyword arguments as wake = {{ model = {name!r}, NAME = VALUE }}"
        ) from None


def _find_class(name: str, modules: Sequence[str]) -> Any:
    for module_name in modules:
        module = importlib.import_module(module_name)
        found = getattr(module, name, None)
        if isinstance(found, type):
            return found
    return None


def _wake_class(name: str, what: str) -> Any:
    from py_wake.wind_farm_models.engineering_models import EngineeringWindFarmModel

    cls = _find_class(name, _WAKE_MODULES)
    if (
        cls is None
        or not issubclass(cls, EngineeringWindFarmModel)
        or cls.__module__.endswith("engineering_models")
    ):
        raise SiteError(
            f"{what}: unknown PyWake wind farm model {name!r}; expected one of {wake_names()} "
            f"or a table {{model, deficit, superposition}}"
        )
    return cls


@functools.cache
def wake_names() -> list[str]:
    """Names accepted by ``wake = "Name"``."""
    from py_wake.wind_farm_models.engineering_models import EngineeringWindFarmModel

    names = set()
    for module_name in _WAKE_MODULES:
        module = importlib.import_module(module_name)
        for attr, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, EngineeringWindFarmModel)
                and not obj.__module__.endswith("engineering_models")
            ):
                names.add(attr)
    return sorted(names)


def _part_class(part: str, name: str, what: str) -> Any:
    cls = _find_class(name, _PART_MODULES[part])
    if cls is None:
        raise SiteError(f"{what}: unknown PyWake {part} {name!r} in {list(_PART_MODULES[part])}")
    return cls


def _import_object(path: str, what: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise SiteError(f"{what}: expected 'package.module:name', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise SiteError(f"{what}: cannot import {module_name!r}: {err}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SiteError(f"{what}: {module_name!r} has no {attr!r}") from None
    return obj


# --- building PyWake objects -----------------------------------------------------------------


def build_turbine(definition: Mapping[str, Any]) -> Any:
    """The PyWake ``WindTurbine`` a resolved turbine definition stands for."""
    if "import" in definition:
        obj = _import_object(definition["import"], "turbine")
        # A class (V80) or a factory function is called; an instance is used as it is.
        # A class has a ``diameter`` method too, so it is told apart by being a type.
        made = isinstance(obj, type) or (callable(obj) and not hasattr(obj, "diameter"))
        return obj() if made else obj
    from py_wake.wind_turbines import WindTurbine
    from py_wake.wind_turbines.power_ct_functions import CubePowerSimpleCt, PowerCtTabular

    if definition["kind"] == "power_ct":
        curve = PowerCtTabular(
            np.asarray(definition["ws"]),
            np.asarray(definition["power_kw"]),
            "kW",
            np.asarray(definition["ct"]),
            method=definition["interpolation"],
        )
    else:
        curve = CubePowerSimpleCt(
            ws_cutin=definition["cut_in"],
            ws_cutout=definition["cut_out"],
            ws_rated=definition["rated_speed"],
            power_rated=definition["rated_power_kw"],
            power_unit="kW",
            ct=definition["ct"],
            ct_idle=None,
        )
    return WindTurbine(definition["name"], definition["diameter"], definition["hub_height"], curve)


def build_wind(definition: Mapping[str, Any]) -> Any:
    """The PyWake ``Site`` a resolved wind definition stands for."""
    if definition["kind"] == "weibull":
        from py_wake.site import UniformWeibullSite

        return UniformWeibullSite(
            p_wd=definition["frequency"],
            a=definition["weibull_a"],
            k=definition["weibull_k"],
            ti=definition["ti"],
        )
    import xarray as xr
    from py_wake.site import XRSite

    wd = np.asarray(definition["directions"], dtype=np.float64)
    ws = np.asarray(definition["speeds"], dtype=np.float64)
    p = np.asarray(definition["frequency"])[:, None] * np.asarray(definition["speed_frequency"])
    data = xr.Dataset({"P": (("wd", "ws"), p), "TI": definition["ti"]}, coords={"wd": wd, "ws": ws})
    site = XRSite(data, default_ws=ws)
    site.default_wd = wd
    return site


def build_wind_farm_model(definition: Mapping[str, Any]) -> Any:
    """The PyWake ``WindFarmModel`` of a resolved site definition."""
    site = build_wind(definition["wind"])
    turbine = build_turbine(definition["turbine"])
    wake = definition["wake"]
    if "model" in wake:
        return _wake_class(wake["model"], "wake")(site, turbine, **wake.get("kwargs", {}))
    parts = wake["parts"]
    model = _part_class("model", parts["model"], "wake: model")
    deficit = _part_class("deficit", parts["deficit"], "wake: deficit")
    superposition = _part_class("superposition", parts["superposition"], "wake: superposition")
    return model(site, turbine, wake_deficitModel=deficit(), superpositionModel=superposition())


def _rotor_diameter(definition: Mapping[str, Any], where: str) -> float:
    turbine = definition["turbine"]
    if "diameter" in turbine:
        return float(turbine["diameter"])
    return float(np.asarray(build_turbine(turbine).diameter()).ravel()[0])


def _spec_from_parts(
    *,
    name: str,
    description: str,
    lease: Lease,
    rotor_diameter: float,
    min_spacing: float,
    model_fn: Callable[[], Any],
    baseline: FloatArray | None,
) -> SiteSpec:
    if baseline is not None:
        baseline = np.array(baseline, dtype=np.float64)
        baseline.setflags(write=False)
    model = functools.cache(model_fn)
    return SiteSpec(
        name=name,
        description=description or f"site {name}",
        default_n_turbines=0 if baseline is None else len(baseline),
        allowed_n_turbines=None,
        rotor_diameter=rotor_diameter,
        circle_fn=_no_circle,
        polygon_fn=lambda n: lease.regions[0],
        wind_farm_model_fn=lambda n: model(),
        baseline_fn=lambda n: baseline if baseline is not None and n == len(baseline) else None,
        lease_fn=lambda n: lease,
        min_spacing_diameters=min_spacing,
    )


def _no_circle(n_turbines: int) -> Circle | None:
    return None


@functools.lru_cache(maxsize=32)
def site_from_definition(name: str, definition: str) -> SiteSpec:
    """The site of a resolved ``[sites.NAME]`` definition (canonical JSON), cached."""
    data = json.loads(definition)
    lease = Lease.build(data["regions"], data["exclusions"], where=f"sites.{name}")
    return _spec_from_parts(
        name=name,
        description=data.get("description", ""),
        lease=lease,
        rotor_diameter=_rotor_diameter(data, f"sites.{name}"),
        min_spacing=float(data["min_spacing"]),
        model_fn=lambda: build_wind_farm_model(data),
        baseline=None if "baseline" not in data else np.asarray(data["baseline"]),
    )


def canonical_definition(definition: Mapping[str, Any]) -> str:
    """The JSON a config stores for a resolved site (sorted keys, no spaces)."""
    return json.dumps(definition, sort_keys=True, separators=(",", ":"))


@functools.cache
def builtin_spec_site(name: str, filename: str) -> SiteSpec:
    """A built-in site written as a ``[sites.NAME]`` table in ``optimizer/data/``."""
    import tomllib

    path = Path(__file__).with_name("data") / filename
    with open(path, "rb") as fh:
        spec = tomllib.load(fh)
    table = spec["sites"][name]
    resolved = resolve_site_table(name, table, base_dir=str(path.parent))
    return site_from_definition(name, canonical_definition(resolved))


@functools.cache
def python_site(path: str) -> SiteSpec:
    """The site a ``"package.module:function"`` returns (a :class:`Site`), cached."""
    what = f"site {path!r}"
    func = _import_object(path, what)
    if not callable(func):
        raise SiteError(f"{what}: expected a function returning optimizer.farm.Site")
    site = func()
    if not isinstance(site, Site):
        raise SiteError(
            f"{what}: expected the function to return optimizer.farm.Site, got "
            f"{type(site).__name__}"
        )
    if (site.boundary is None) == (site.regions is None):
        raise SiteError(f"{what}: expected exactly one of boundary or regions")
    regions = [site.boundary] if site.boundary is not None else list(site.regions)
    try:
        lease = Lease.build(regions, list(site.exclusions), where=what)
    except GeometryError as err:
        raise SiteError(str(err)) from None
    wfm = site.wind_farm_model
    diameter = float(np.asarray(wfm.windTurbines.diameter()).ravel()[0])
    return _spec_from_parts(
        name=path,
        description=site.description,
        lease=lease,
        rotor_diameter=diameter,
        min_spacing=_positive(site.min_spacing, f"{what}: min_spacing"),
        model_fn=lambda: wfm,
        baseline=None if site.baseline is None else _layout(site.baseline, f"{what}: baseline"),
    )


def site_tables(spec: Mapping[str, Any], *, base_dir: str | None, source: str) -> dict[str, str]:
    """Every ``[sites.NAME]`` table of a spec, resolved: name -> canonical definition."""
    from optimizer.sites import site_names

    tables = spec.get("sites", {})
    if not isinstance(tables, Mapping):
        raise SiteError(f"{source}: [sites] must be a table of [sites.NAME] tables")
    out = {}
    for name, table in tables.items():
        if name in site_names() or ":" in name:
            raise SiteError(
                f"{source}: sites.{name}: the name is taken by a built-in site; choose another"
            )
        out[name] = canonical_definition(resolve_site_table(name, table, base_dir=base_dir))
    return out
