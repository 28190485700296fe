"""Sweep configurations, their deterministic ids, and sweep specs (TOML).

A :class:`SweepConfig` is one layout optimization. Its id is a hash of its canonical,
type-normalized form: ``270`` and ``270.0`` give the same id, key order does not
matter, and a default left out gives the same id as the default written out.

A spec file lists one or more ``[[sweep]]`` blocks; each block is the cross product of
its axes. ``[sites.NAME]`` tables define sites the blocks use by name (docs/sites.md,
:mod:`optimizer.farm`); a config of such a site carries the resolved table as ``site_def``::

    [[sweep]]
    site = "iea37"            # or a list: ["iea37", "hornsrev1"]
    n_turbines = [16]
    start = "grid"            # "grid", "baseline" or "lattice" (lattice with a boundary ring)
    grid_size = [4, 5]
    random_pct = [25, 50]
    seeds = [0, 1, 2]         # or "0-9"

    [optimizer]               # applies to every block unless a block overrides it
    method = "SLSQP"
    maxiter = 100
    tol = 1e-6
    wec = [3.0, 2.6, 2.2, 1.8, 1.4]   # wake expansion continuation: one loose solve per factor
                                      # (a list of such lists is an axis); default [] (none)
    wec_tol = 1e-2            # SLSQP ftol of the continuation solves
    evaluator = "fast"        # "pywake" (default) or "fast": numpy IEA37 model inside the loop
    # start = "lattice" parameter ranges, each [low, high] (a list of such lists is an axis):
    ring_turbines = [4, 12]           # turbines on the boundary
    lattice_spacing = [0.8, 1.15]     # lattice spacing / sqrt(area / n)
    lattice_rotation_deg = [0, 90]    # lattice rotation
    lattice_margin_m = [0, 400]       # how far inside the boundary the lattice turbines stay
    ring_mode = "equal"               # or "paired": four groups about the lattice axes,
    ring_pair_deg = [12, 25]          # each spread over +- U(range) degrees
    lattice_offset = "random"         # or "symmetric": a lattice point, cell centre or edge
                                      # midpoint on the boundary's centroid
    hops = 0                  # basin hopping: jitter the optimum by up to hop_m, polish again,
    hop_m = 50.0              # keep it if better; this many times (default 0: none)

Options added after the first release (``wec``, ``wec_tol``, ``evaluator`` and the lattice
ranges) are left out of the
canonical form when they hold their defaults, so every config that does not use them keeps the
id it always had.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from optimizer.farm import site_tables
from optimizer.layouts import (
    DEFAULT_LATTICE,
    OFFSET_MODES,
    RING_MODES,
    STARTS,
    LatticeRanges,
    check_start,
)
from optimizer.optimize import EVALUATORS, FAST_SITES, METHODS, WEC_SITES
from optimizer.sites import get_site

CONFIG_ID_PREFIX = "cfg-"
# Options added after configs were first stored, with the defaults that keep the old ids.
_LATER_DEFAULTS: Mapping[str, Any] = {
    "wec": [],
    "wec_tol": 1e-2,
    "evaluator": "pywake",
    "ring_turbines": list(DEFAULT_LATTICE.ring_turbines),
    "lattice_spacing": list(DEFAULT_LATTICE.spacing_factor),
    "lattice_rotation_deg": list(DEFAULT_LATTICE.rotation_deg),
    "lattice_margin_m": list(DEFAULT_LATTICE.inner_margin_m),
    "hops": 0,
    "hop_m": 50.0,
    "ring_mode": DEFAULT_LATTICE.ring_mode,
    "ring_pair_deg": list(DEFAULT_LATTICE.ring_pair_deg),
    "lattice_offset": DEFAULT_LATTICE.offset_mode,
    "site_def": "",
}
# Lattice options given as [low, high]: (lowest, highest allowed value, integers only).
_RANGE_OPTIONS: Mapping[str, tuple[float, float, bool]] = {
    "ring_turbines": (0, 10_000, True),
    "lattice_spacing": (0.1, 10.0, False),
    "lattice_rotation_deg": (-360.0, 360.0, False),
    "lattice_margin_m": (0.0, 1e6, False),
    "ring_pair_deg": (0.0, 45.0, False),
}


class SpecError(ValueError):
    """A sweep spec or config that cannot be run; the message names the option."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepConfig:
    """One layout optimization: site, starting layout, optimizer settings."""

    site: str
    n_turbines: int
    start: str
    grid_size: int
    random_pct: float
    seed: int
    method: str
    maxiter: int
    tol: float
    wec: tuple[float, ...] = ()
    wec_tol: float = 1e-2
    evaluator: str = "pywake"
    ring_turbines: tuple[int, int] = DEFAULT_LATTICE.ring_turbines
    lattice_spacing: tuple[float, float] = DEFAULT_LATTICE.spacing_factor
    lattice_rotation_deg: tuple[float, float] = DEFAULT_LATTICE.rotation_deg
    lattice_margin_m: tuple[float, float] = DEFAULT_LATTICE.inner_margin_m
    hops: int = 0
    hop_m: float = 50.0
    ring_mode: str = DEFAULT_LATTICE.ring_mode
    ring_pair_deg: tuple[float, float] = DEFAULT_LATTICE.ring_pair_deg
    lattice_offset: str = DEFAULT_LATTICE.offset_mode
    # A site of the spec's [sites.NAME] tables: its resolved definition as canonical JSON
    # (optimizer.farm), so the config is self-contained; "" for built-in and Python sites.
    site_def: str = ""

    @property
    def lattice(self) -> LatticeRanges:
        return LatticeRanges(
            ring_turbines=self.ring_turbines,
            spacing_factor=self.lattice_spacing,
            rotation_deg=self.lattice_rotation_deg,
            inner_margin_m=self.lattice_margin_m,
            ring_mode=self.ring_mode,
            ring_pair_deg=self.ring_pair_deg,
            offset_mode=self.lattice_offset,
        )

    def canonical(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("wec", *_RANGE_OPTIONS):
            data[name] = list(data[name])
        for name, default in _LATER_DEFAULTS.items():
            if data[name] == default:
                del data[name]
        return data

    def canonical_json(self) -> str:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))

    @property
    def config_id(self) -> str:
        digest = hashlib.sha256(self.canonical_json().encode()).hexdigest()
        return CONFIG_ID_PREFIX + digest[:16]

    @staticmethod
    def from_mapping(data: Mapping[str, Any], *, where: str = "config") -> SweepConfig:
        """Build and validate a config; numbers are normalized to their declared types."""
        known = {
            "site",
            "n_turbines",
            "start",
            "grid_size",
            "random_pct",
            "seed",
            "method",
            "maxiter",
            "tol",
            *_LATER_DEFAULTS,
        }
        extra = sorted(set(data) - known)
        if extra:
            raise SpecError(f"{where}: unknown option(s) {extra}; expected some of {sorted(known)}")
        site_def = data.get("site_def", "")
        if not isinstance(site_def, str):
            raise SpecError(f"{where}: site_def: expected a string, got {site_def!r}")
        try:
            site = get_site(str(data.get("site", "iea37")), site_def)
        except ValueError as err:
            raise SpecError(f"{where}: {err}") from None
        n = data.get("n_turbines")
        if n is None and site.default_n_turbines < 1:
            raise SpecError(
                f"{where}: n_turbines: site {site.name!r} has no default farm size; give one"
            )
        n_turbines = (
            site.default_n_turbines if n is None else _integer(n, f"{where}: n_turbines", low=1)
        )
        config = SweepConfig(
            site=site.name,
            n_turbines=n_turbines,
            start=_choice(data.get("start", "grid"), STARTS, f"{where}: start"),
            grid_size=_integer(data.get("grid_size", 4), f"{where}: grid_size", low=1),
            random_pct=_number(data.get("random_pct", 0.0), f"{where}: random_pct", 0.0, 100.0),
            seed=_integer(data.get("seed", 0), f"{where}: seed", low=0),
            method=_choice(data.get("method", "SLSQP"), METHODS, f"{where}: method"),
            maxiter=_integer(data.get("maxiter", 100), f"{where}: maxiter", low=1),
            tol=_number(data.get("tol", 1e-6), f"{where}: tol", 0.0, 1.0, open_low=True),
            wec=_schedule(data.get("wec", []), f"{where}: wec"),
            wec_tol=_number(
                data.get("wec_tol", 1e-2), f"{where}: wec_tol", 0.0, 1.0, open_low=True
            ),
            evaluator=_choice(data.get("evaluator", "pywake"), EVALUATORS, f"{where}: evaluator"),
            **{
                name: _range(data.get(name, _LATER_DEFAULTS[name]), f"{where}: {name}", *limits)
                for name, limits in _RANGE_OPTIONS.items()
            },
            hops=_integer(data.get("hops", 0), f"{where}: hops", low=0),
            hop_m=_number(data.get("hop_m", 50.0), f"{where}: hop_m", 0.0, 1e5, open_low=True),
            ring_mode=_choice(
                data.get("ring_mode", DEFAULT_LATTICE.ring_mode), RING_MODES, f"{where}: ring_mode"
            ),
            lattice_offset=_choice(
                data.get("lattice_offset", DEFAULT_LATTICE.offset_mode),
                OFFSET_MODES,
                f"{where}: lattice_offset",
            ),
            site_def=site_def,
        )
        if config.evaluator == "fast" and config.site not in FAST_SITES:
            raise SpecError(
                f"{where}: evaluator: 'fast' covers only site(s) {list(FAST_SITES)}, got site "
                f"{config.site!r}; use evaluator = 'pywake'"
            )
        if config.wec and config.site not in WEC_SITES:
            raise SpecError(
                f"{where}: wec: wake expansion continuation exists only for site(s) "
                f"{list(WEC_SITES)}, got site {config.site!r}; use wec = []"
            )
        try:
            check_start(
                site,
                n_turbines=config.n_turbines,
                start=config.start,
                grid_size=config.grid_size,
                random_pct=config.random_pct,
            )
        except ValueError as err:
            raise SpecError(f"{where}: {err}") from None
        return config


def _integer(value: Any, what: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{what}: expected an integer, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise SpecError(f"{what}: expected an integer, got {value!r}")
    if int(value) < low:
        raise SpecError(f"{what}: expected an integer >= {low}, got {value!r}")
    return int(value)


def _number(value: Any, what: str, low: float, high: float, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"{what}: expected a number, got {value!r}")
    too_low = value <= low if open_low else value < low
    if too_low or value > high:
        bracket = "(" if open_low else "["
        raise SpecError(f"{what}: expected a value in {bracket}{low:g}, {high:g}], got {value!r}")
    return float(value)


def _range(value: Any, what: str, low: float, high: float, integer: bool) -> Any:
    kind = "integers" if integer else "numbers"
    expected = f"expected [low, high] with {kind} {low:g} <= low <= high <= {high:g}"
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or len(value) != 2:
        raise SpecError(f"{what}: {expected}, got {value!r}")
    for item in value:
        bad_type = isinstance(item, bool) or not isinstance(item, int | float)
        if bad_type or not math.isfinite(item) or (integer and not float(item).is_integer()):
            raise SpecError(f"{what}: {expected}, got {value!r}")
    lo, hi = value
    if not low <= lo <= hi <= high:
        raise SpecError(f"{what}: {expected}, got {value!r}")
    return (int(lo), int(hi)) if integer else (float(lo), float(hi))


def _schedule(value: Any, what: str) -> tuple[float, ...]:
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise SpecError(f"{what}: expected a list of wake expansion factors >= 1, got {value!r}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise SpecError(f"{what}: expected a list of numbers >= 1, got {value!r}")
        if item < 1.0:
            raise SpecError(f"{what}: expected wake expansion factors >= 1, got {value!r}")
        out.append(float(item))
    return tuple(out)


def _choice(value: Any, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise SpecError(f"{what}: expected one of {list(allowed)}, got {value!r}")
    return str(value)


def _axis(block: Mapping[str, Any], name: str, default: Any, where: str) -> list[Any]:
    value = block.get(name, default)
    if name == "seeds" and isinstance(value, str):
        return parse_range(value, f"{where}: seeds")
    if isinstance(value, list):
        if not value:
            raise SpecError(f"{where}: {name}: expected at least one value, got []")
        return value
    return [value]


def parse_range(text: str, what: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"1,3,5"`` -> [1, 3, 5]."""
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            if hi:
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(lo))
    except ValueError:
        raise SpecError(f"{what}: expected integers like '0-9' or '1,3,5', got {text!r}") from None
    if not out:
        raise SpecError(f"{what}: expected at least one integer, got {text!r}")
    return out


_BLOCK_KEYS = {
    "site",
    "n_turbines",
    "start",
    "grid_size",
    "random_pct",
    "seeds",
    "method",
    "maxiter",
    "tol",
    "wec",
    "wec_tol",
    "evaluator",
    *_RANGE_OPTIONS,
    "hops",
    "hop_m",
    "ring_mode",
    "lattice_offset",
}


def _list_axis(block: Mapping[str, Any], name: str) -> list[Any]:
    # A list of numbers is one value (a schedule, a range); a list of lists is an axis.
    value = block.get(name, _LATER_DEFAULTS[name])
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return list(value)
    return [value]


def expand_spec(spec: Mapping[str, Any], *, source: str = "spec") -> list[SweepConfig]:
    """Every config of a spec, in a stable order, duplicates removed."""
    blocks = spec.get("sweep")
    if isinstance(blocks, Mapping):
        blocks = [blocks]
    if not isinstance(blocks, list) or not blocks:
        raise SpecError(f"{source}: expected at least one [[sweep]] block")
    extra_top = sorted(set(spec) - {"sweep", "optimizer", "sites"})
    if extra_top:
        raise SpecError(
            f"{source}: unknown section(s) {extra_top}; expected [[sweep]], [optimizer] and "
            f"[sites.NAME]"
        )
    try:
        site_defs = site_tables(spec, base_dir=None, source=source)
    except ValueError as err:
        raise SpecError(str(err)) from None
    optimizer = spec.get("optimizer", {})
    if not isinstance(optimizer, Mapping):
        raise SpecError(f"{source}: [optimizer] must be a table")
    configs: dict[str, SweepConfig] = {}
    for number, block in enumerate(blocks, start=1):
        where = f"{source} [[sweep]] #{number}"
        if not isinstance(block, Mapping):
            raise SpecError(f"{where}: expected a table")
        extra = sorted(set(block) - _BLOCK_KEYS)
        if extra:
            raise SpecError(
                f"{where}: unknown option(s) {extra}; expected some of {sorted(_BLOCK_KEYS)}"
            )
        merged = {**optimizer, **block}
        axes = {
            "site": _axis(merged, "site", "iea37", where),
            "n_turbines": _axis(merged, "n_turbines", None, where),
            "start": _axis(merged, "start", "grid", where),
            "grid_size": _axis(merged, "grid_size", 4, where),
            "random_pct": _axis(merged, "random_pct", 0.0, where),
            "seed": _axis(merged, "seeds", [0], where),
            "method": _axis(merged, "method", "SLSQP", where),
            "maxiter": _axis(merged, "maxiter", 100, where),
            "tol": _axis(merged, "tol", 1e-6, where),
            "wec": _list_axis(merged, "wec"),
            **{name: _list_axis(merged, name) for name in _RANGE_OPTIONS},
            "wec_tol": _axis(merged, "wec_tol", 1e-2, where),
            "evaluator": _axis(merged, "evaluator", "pywake", where),
            "hops": _axis(merged, "hops", 0, where),
            "hop_m": _axis(merged, "hop_m", 50.0, where),
            "ring_mode": _axis(merged, "ring_mode", DEFAULT_LATTICE.ring_mode, where),
            "lattice_offset": _axis(merged, "lattice_offset", DEFAULT_LATTICE.offset_mode, where),
        }
        names = list(axes)
        for values in itertools.product(*axes.values()):
            data = dict(zip(names, values, strict=True))
            if isinstance(data["site"], str) and data["site"] in site_defs:
                data["site_def"] = site_defs[data["site"]]
            config = SweepConfig.from_mapping(data, where=where)
            configs.setdefault(config.config_id, config)
    return list(configs.values())


def load_spec(path: str) -> dict[str, Any]:
    """Read a spec file; file paths in its ``[sites.NAME]`` tables become absolute (they are
    relative to the spec file)."""
    try:
        with open(path, "rb") as fh:
            spec = tomllib.load(fh)
    except OSError as err:
        raise SpecError(f"{path}: cannot read spec: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None
    base = os.path.dirname(os.path.abspath(path))
    sites = spec.get("sites")
    if isinstance(sites, dict):
        for table in sites.values():
            turbine = table.get("turbine") if isinstance(table, dict) else None
            if isinstance(turbine, dict) and isinstance(turbine.get("power_ct_csv"), str):
                turbine["power_ct_csv"] = os.path.join(base, turbine["power_ct_csv"])
    return spec


# The built-in demo: 32 configs over both sites, ~25 s of optimization on 2 cores.
DEMO_SPEC: Mapping[str, Any] = {
    "sweep": [
        {
            "site": "iea37",
            "n_turbines": 16,
            "grid_size": [4, 5],
            "random_pct": [25, 50],
            "seeds": "0-3",
        },
        {
            "site": "iea37",
            "n_turbines": 36,
            "grid_size": [6, 7],
            "random_pct": [25, 50],
            "seeds": "0-2",
        },
        {
            "site": "iea37",
            "n_turbines": [16, 36],
            "start": "baseline",
            "random_pct": 0,
            "seeds": [0],
        },
        {
            "site": "hornsrev1",
            "n_turbines": 16,
            "grid_size": 5,
            "random_pct": [0, 50],
            "seeds": [0],
        },
    ],
    "optimizer": {"method": "SLSQP", "maxiter": 100, "tol": 1e-6},
}
