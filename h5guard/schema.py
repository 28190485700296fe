"""Declarative description of what a valid result group is.

A :class:`Schema` lists the datasets and attributes a top-level group must have,
with dtype rules, shape rules (``("n", 2)``: any ``n``, but the same ``n`` for every
dataset of the group that names it), allowed values and finiteness. It round-trips
through JSON::

    {
      "h5guard_schema": 1,
      "name": "my-results",
      "datasets": {"layout": {"dtype": "float", "shape": ["n", 2], "finite": true}},
      "attrs": {"status": {"dtype": "string", "allowed": ["ok", "failed"]}}
    }

dtype rules are a numpy dtype name (``"float64"``, ``"int32"``, ``"bool"``) or a kind:
``"float"``, ``"int"`` (signed or unsigned), ``"number"`` (any of those), ``"bool"``,
``"string"``. A dataset with ``"required_when": {"status": "ok"}`` is only required
when the group's attributes have those values (failure records carry no results).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from h5guard.errors import SchemaError
from h5guard.report import Code

SCHEMA_FORMAT_VERSION = 1
_KINDS: Mapping[str, str] = MappingProxyType(
    {"float": "f", "int": "iu", "number": "iuf", "bool": "b", "string": "S"}
)
ShapeRule = tuple[int | str | None, ...]


def _check_dtype_rule(rule: str, where: str) -> str:
    if rule in _KINDS:
        return rule
    try:
        np.dtype(rule)
    except TypeError as err:
        raise SchemaError(
            f"{where}: dtype {rule!r} is neither a numpy dtype name nor one of {sorted(_KINDS)}"
        ) from err
    return rule


def dtype_matches(rule: str, dtype: np.dtype[Any]) -> bool:
    if rule in _KINDS:
        return dtype.kind in _KINDS[rule]
    return np.dtype(rule) == dtype.newbyteorder("=")


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """Rules for one dataset of a group."""

    dtype: str | None = None
    shape: ShapeRule | None = None
    finite: bool = False
    required: bool = True
    required_when: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.dtype is not None:
            out["dtype"] = self.dtype
        if self.shape is not None:
            out["shape"] = list(self.shape)
        if self.finite:
            out["finite"] = True
        if not self.required:
            out["required"] = False
        if self.required_when:
            out["required_when"] = dict(self.required_when)
        return out

    @staticmethod
    def from_dict(data: Mapping[str, Any], where: str) -> DatasetSpec:
        _only_keys(data, {"dtype", "shape", "finite", "required", "required_when"}, where)
        dtype = data.get("dtype")
        if dtype is not None:
            if not isinstance(dtype, str):
                raise SchemaError(f"{where}.dtype: expected a string, got {dtype!r}")
            _check_dtype_rule(dtype, f"{where}.dtype")
        shape = data.get("shape")
        if shape is not None:
            if not isinstance(shape, list | tuple) or not all(
                d is None or isinstance(d, str) or (isinstance(d, int) and d >= 0) for d in shape
            ):
                raise SchemaError(
                    f"{where}.shape: expected a list of sizes, names or null, got {shape!r}"
                )
            shape = tuple(shape)
        when = data.get("required_when", {})
        if not isinstance(when, Mapping) or not all(isinstance(v, str) for v in when.values()):
            raise SchemaError(f"{where}.required_when: expected {{attr: string}}, got {when!r}")
        return DatasetSpec(
            dtype=dtype,
            shape=shape,
            finite=bool(data.get("finite", False)),
            required=bool(data.get("required", True)),
            required_when=MappingProxyType(dict(when)),
        )


@dataclass(frozen=True, slots=True)
class AttrSpec:
    """Rules for one attribute of a group."""

    dtype: str | None = None
    allowed: tuple[Any, ...] | None = None
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.dtype is not None:
            out["dtype"] = self.dtype
        if self.allowed is not None:
            out["allowed"] = list(self.allowed)
        if not self.required:
            out["required"] = False
        return out

    @staticmethod
    def from_dict(data: Mapping[str, Any], where: str) -> AttrSpec:
        _only_keys(data, {"dtype", "allowed", "required"}, where)
        dtype = data.get("dtype")
        if dtype is not None:
            if not isinstance(dtype, str):
                raise SchemaError(f"{where}.dtype: expected a string, got {dtype!r}")
            _check_dtype_rule(dtype, f"{where}.dtype")
        allowed = data.get("allowed")
        if allowed is not None and not isinstance(allowed, list | tuple):
            raise SchemaError(f"{where}.allowed: expected a list of values, got {allowed!r}")
        return AttrSpec(
            dtype=dtype,
            allowed=tuple(allowed) if allowed is not None else None,
            required=bool(data.get("required", True)),
        )


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """What the checker knows of a stored dataset: enough to apply a schema."""

    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    all_finite: bool

    @classmethod
    def of(cls, arr: npt.NDArray[Any]) -> DatasetInfo:
        """The info of a dataset held in memory (finiteness scanned for float/complex)."""
        finite = bool(np.isfinite(arr).all()) if arr.dtype.kind in "fc" else True
        return cls(dtype=arr.dtype, shape=tuple(arr.shape), all_finite=finite)


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    code: Code
    obj: str  # relative to the group: "" for the group itself, else a member name
    message: str


@dataclass(frozen=True, slots=True)
class Schema:
    """What every top-level group of a file must look like."""

    name: str = "unnamed"
    datasets: Mapping[str, DatasetSpec] = field(default_factory=dict)
    attrs: Mapping[str, AttrSpec] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "h5guard_schema": SCHEMA_FORMAT_VERSION,
            "name": self.name,
            "datasets": {k: v.to_dict() for k, v in sorted(self.datasets.items())},
            "attrs": {k: v.to_dict() for k, v in sorted(self.attrs.items())},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_dict(data: Any, *, source: str = "schema") -> Schema:
        if not isinstance(data, Mapping):
            raise SchemaError(f"{source}: expected a JSON object, got {type(data).__name__}")
        _only_keys(data, {"h5guard_schema", "name", "datasets", "attrs"}, source)
        version = data.get("h5guard_schema", SCHEMA_FORMAT_VERSION)
        if version != SCHEMA_FORMAT_VERSION:
            raise SchemaError(
                f"{source}: expected h5guard_schema {SCHEMA_FORMAT_VERSION}, got {version!r}"
            )
        datasets = data.get("datasets", {})
        attrs = data.get("attrs", {})
        for label, section in (("datasets", datasets), ("attrs", attrs)):
            if not isinstance(section, Mapping) or not all(
                isinstance(v, Mapping) for v in section.values()
            ):
                raise SchemaError(f"{source}.{label}: expected an object of objects")
        return Schema(
            name=str(data.get("name", "unnamed")),
            datasets=MappingProxyType(
                {k: DatasetSpec.from_dict(v, f"{source}.datasets.{k}") for k, v in datasets.items()}
            ),
            attrs=MappingProxyType(
                {k: AttrSpec.from_dict(v, f"{source}.attrs.{k}") for k, v in attrs.items()}
            ),
        )

    @staticmethod
    def from_json(text: str, *, source: str = "schema") -> Schema:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SchemaError(f"{source}: not valid JSON: {err}") from err
        return Schema.from_dict(data, source=source)

    @staticmethod
    def load(path: str) -> Schema:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as err:
            raise SchemaError(f"{path}: cannot read schema: {err.strerror or err}") from err
        return Schema.from_json(text, source=path)

    def check(
        self, datasets: Mapping[str, DatasetInfo], attrs: Mapping[str, Any]
    ) -> list[SchemaViolation]:
        """Every way a group (its datasets' infos and attribute values) breaks the schema."""
        out: list[SchemaViolation] = []
        attr_text = {k: _as_text(v) for k, v in attrs.items()}
        bound: dict[str, int] = {}
        for name, spec in sorted(self.datasets.items()):
            info = datasets.get(name)
            if info is None:
                needed = spec.required and all(
                    attr_text.get(a) == v for a, v in spec.required_when.items()
                )
                if needed:
                    out.append(
                        SchemaViolation(Code.SCHEMA_MISSING, name, "required dataset is missing")
                    )
                continue
            if spec.dtype is not None and not dtype_matches(spec.dtype, info.dtype):
                out.append(
                    SchemaViolation(
                        Code.SCHEMA_DTYPE, name, f"expected dtype {spec.dtype}, found {info.dtype}"
                    )
                )
            if spec.shape is not None:
                problem = _shape_problem(spec.shape, info.shape, bound)
                if problem:
                    out.append(SchemaViolation(Code.SCHEMA_SHAPE, name, problem))
            if spec.finite and not info.all_finite:
                out.append(
                    SchemaViolation(
                        Code.SCHEMA_NOT_FINITE,
                        name,
                        "expected only finite values, found NaN or inf",
                    )
                )
        for name, aspec in sorted(self.attrs.items()):
            if name not in attrs:
                if aspec.required:
                    out.append(
                        SchemaViolation(
                            Code.SCHEMA_MISSING, "", f"required attribute {name!r} is missing"
                        )
                    )
                continue
            value = np.asarray(attrs[name])
            if aspec.dtype is not None and not dtype_matches(aspec.dtype, value.dtype):
                out.append(
                    SchemaViolation(
                        Code.SCHEMA_DTYPE,
                        "",
                        f"attribute {name!r}: expected dtype {aspec.dtype}, found {value.dtype}",
                    )
                )
            if aspec.allowed is not None:
                plain = _plain(attrs[name])
                if plain not in aspec.allowed:
                    out.append(
                        SchemaViolation(
                            Code.SCHEMA_VALUE,
                            "",
                            f"attribute {name!r}: expected one of {list(aspec.allowed)}, found {plain!r}",
                        )
                    )
        return out


def _only_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise SchemaError(f"{where}: unknown key(s) {extra}; expected some of {sorted(allowed)}")


def _shape_problem(rule: ShapeRule, shape: tuple[int, ...], bound: dict[str, int]) -> str | None:
    if len(rule) != len(shape):
        return f"expected {len(rule)} dimension(s) {_fmt_rule(rule)}, found shape {shape}"
    for want, got in zip(rule, shape, strict=True):
        if want is None:
            continue
        if isinstance(want, int):
            if want != got:
                return f"expected shape {_fmt_rule(rule)}, found {shape}"
        elif bound.setdefault(want, got) != got:
            return f"expected {want}={bound[want]} as in the other datasets, found shape {shape}"
    return None


def _fmt_rule(rule: ShapeRule) -> str:
    return "(" + ", ".join("*" if d is None else str(d) for d in rule) + ")"


def _plain(value: Any) -> Any:
    arr = np.asarray(value)
    if arr.ndim:
        return [_plain(v) for v in arr]
    item = arr[()]
    if isinstance(item, bytes | np.bytes_):
        return bytes(item).decode("utf-8", errors="replace")
    if isinstance(item, np.generic):
        return item.item()
    return item


def _as_text(value: Any) -> str | None:
    plain = _plain(value)
    return plain if isinstance(plain, str) else None
