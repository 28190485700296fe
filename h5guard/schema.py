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
``"complex"``, ``"string"`` (any fixed-length text or bytes string), ``"str"`` (UTF-8
text: a Python ``str`` or a numpy unicode array), ``"bytes"`` (Python ``bytes``),
``"structured"`` (a compound dtype; ``"fields": {"x": "float64", ...}`` names exactly
its fields and their rules). A dataset with ``"required_when": {"status": "ok"}`` is
only required when the group's attributes have those values (failure records carry
no results).

Trees: a dataset spec may carry ``"attrs"`` (rules for the dataset's own attributes),
and ``"groups": {"history": {"datasets": ..., "attrs": ..., "groups": ...,
"required": true}}`` describes nested groups, at the top level or inside a group.
Every value object here is frozen and pickles (so a schema can go to a process pool).

A schema is applied in one place, :meth:`Schema.check_group`, to a :class:`GroupInfo`:
the description of a group that every reader gives (the writer's tree in memory,
h5guard's streaming and byte readers, the walk over foreign files, salvage), so a
rule applies the same way whoever wrote the file and whichever reader looked at it.
This module imports nothing of h5guard's format: the readers depend on it, not back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from h5guard.errors import SchemaError
from h5guard.report import Code

SCHEMA_FORMAT_VERSION = 1
_V = TypeVar("_V")


class FrozenMap(Mapping[str, _V]):
    """A read-only mapping that pickles (``types.MappingProxyType`` does not)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, _V] | None = None) -> None:
        self._data: dict[str, _V] = dict(data or {})

    def __getitem__(self, key: str) -> _V:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._data.items(), key=lambda kv: kv[0])))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (self._data,))


_KINDS: Mapping[str, str] = FrozenMap(
    {
        "float": "f",
        "int": "iu",
        "number": "iuf",
        "bool": "b",
        "complex": "c",
        "string": "S",
        "str": "S",
        "bytes": "u",
        "structured": "V",
    }
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


def dtype_matches(rule: str, dtype: np.dtype[Any], kind: str | None = None) -> bool:
    """Whether a stored dtype (and its value kind, when known) satisfies a dtype rule."""
    if rule == "str":
        # Imported here: schemas are loaded by `h5guard check --quick`, which must not
        # pay for h5py; only matching a string rule needs it (where h5py runs anyway).
        import h5py

        info = h5py.check_string_dtype(dtype)
        return info is not None and info.encoding == "utf-8" and info.length is not None
    if rule == "bytes":
        return kind == "bytes" if kind is not None else dtype == np.uint8
    if rule == "structured":
        return dtype.names is not None
    if rule in _KINDS:
        return dtype.kind in _KINDS[rule]
    return np.dtype(rule) == dtype.newbyteorder("=")


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """Rules for one dataset of a group.

    Parameters
    ----------
    dtype
        A numpy dtype name or a kind (``"float"``, ``"int"``, ``"number"``, ``"bool"``,
        ``"complex"``, ``"string"``, ``"str"``, ``"bytes"``, ``"structured"``).
    shape
        Sizes: an int is exact, a name any size shared by the group's datasets that
        use it, None any size.
    finite
        No NaN or infinity.
    required
        False: the dataset may be absent.
    required_when
        Required only when the group's attributes have these values.
    attrs
        Rules for the dataset's own attributes.
    fields
        For ``"structured"``: exactly these fields, each with its dtype rule.
    """

    dtype: str | None = None
    shape: ShapeRule | None = None
    finite: bool = False
    required: bool = True
    required_when: Mapping[str, str] = field(default_factory=FrozenMap)
    attrs: Mapping[str, AttrSpec] = field(default_factory=FrozenMap)
    fields: Mapping[str, str] | None = None  # structured: exactly these fields, with rules

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
        if self.attrs:
            out["attrs"] = {k: v.to_dict() for k, v in sorted(self.attrs.items())}
        if self.fields is not None:
            out["fields"] = dict(self.fields)
        return out

    @staticmethod
    def from_dict(data: Mapping[str, Any], where: str) -> DatasetSpec:
        _only_keys(
            data,
            {"dtype", "shape", "finite", "required", "required_when", "attrs", "fields"},
            where,
        )
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
        fields = data.get("fields")
        if fields is not None:
            if not isinstance(fields, Mapping) or not all(
                isinstance(v, str) for v in fields.values()
            ):
                raise SchemaError(f"{where}.fields: expected {{field: dtype rule}}, got {fields!r}")
            for name, rule in fields.items():
                _check_dtype_rule(rule, f"{where}.fields.{name}")
            fields = FrozenMap(fields)
        return DatasetSpec(
            dtype=dtype,
            shape=shape,
            finite=bool(data.get("finite", False)),
            required=bool(data.get("required", True)),
            required_when=FrozenMap(when),
            attrs=_attr_specs(data.get("attrs", {}), f"{where}.attrs"),
            fields=fields,
        )


@dataclass(frozen=True, slots=True)
class AttrSpec:
    """Rules for one attribute of a group or of a dataset.

    Parameters
    ----------
    dtype
        A numpy dtype name or a kind, as for :class:`DatasetSpec`.
    allowed
        The value must be one of these.
    required
        False: the attribute may be absent.
    """

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


def _attr_specs(section: Any, where: str) -> Mapping[str, AttrSpec]:
    if not isinstance(section, Mapping) or not all(
        isinstance(v, Mapping) for v in section.values()
    ):
        raise SchemaError(f"{where}: expected an object of objects")
    return FrozenMap({k: AttrSpec.from_dict(v, f"{where}.{k}") for k, v in section.items()})


def _dataset_specs(section: Any, where: str) -> Mapping[str, DatasetSpec]:
    if not isinstance(section, Mapping) or not all(
        isinstance(v, Mapping) for v in section.values()
    ):
        raise SchemaError(f"{where}: expected an object of objects")
    return FrozenMap({k: DatasetSpec.from_dict(v, f"{where}.{k}") for k, v in section.items()})


def _group_specs(section: Any, where: str, depth: int) -> Mapping[str, GroupSpec]:
    if not isinstance(section, Mapping) or not all(
        isinstance(v, Mapping) for v in section.values()
    ):
        raise SchemaError(f"{where}: expected an object of objects")
    if depth > 32:
        raise SchemaError(f"{where}: groups nested more than 32 deep")
    return FrozenMap({k: GroupSpec.from_dict(v, f"{where}.{k}", depth) for k, v in section.items()})


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """Rules for a group nested inside a result (or inside another nested group).

    Parameters
    ----------
    datasets
        Rules for its datasets, by name.
    attrs
        Rules for its attributes, by name.
    groups
        Rules for the groups nested in it, by name.
    required
        False: the group may be absent (its rules apply when it is there).

    Examples
    --------
    >>> from h5guard import DatasetSpec, GroupSpec, Schema
    >>> schema = Schema(groups={"history": GroupSpec(datasets={"loss": DatasetSpec("float")})})
    >>> schema.to_dict()["groups"]["history"]["datasets"]
    {'loss': {'dtype': 'float'}}
    """

    datasets: Mapping[str, DatasetSpec] = field(default_factory=FrozenMap)
    attrs: Mapping[str, AttrSpec] = field(default_factory=FrozenMap)
    groups: Mapping[str, GroupSpec] = field(default_factory=FrozenMap)
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "datasets": {k: v.to_dict() for k, v in sorted(self.datasets.items())},
            "attrs": {k: v.to_dict() for k, v in sorted(self.attrs.items())},
        }
        if self.groups:
            out["groups"] = {k: v.to_dict() for k, v in sorted(self.groups.items())}
        if not self.required:
            out["required"] = False
        return out

    @staticmethod
    def from_dict(data: Mapping[str, Any], where: str, depth: int = 0) -> GroupSpec:
        _only_keys(data, {"datasets", "attrs", "groups", "required"}, where)
        return GroupSpec(
            datasets=_dataset_specs(data.get("datasets", {}), f"{where}.datasets"),
            attrs=_attr_specs(data.get("attrs", {}), f"{where}.attrs"),
            groups=_group_specs(data.get("groups", {}), f"{where}.groups", depth + 1),
            required=bool(data.get("required", True)),
        )


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """What the checker knows of a stored dataset: enough to apply a schema."""

    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    all_finite: bool
    attrs: Mapping[str, Any] = field(default_factory=FrozenMap)
    kind: str | None = None

    @classmethod
    def of(
        cls,
        arr: npt.NDArray[Any],
        *,
        attrs: Mapping[str, Any] | None = None,
        kind: str | None = None,
    ) -> DatasetInfo:
        """The info of a dataset held in memory (finiteness scanned for float/complex)."""
        finite = True
        if arr.dtype.kind in "fc":
            finite = bool(np.isfinite(arr).all())
        elif arr.dtype.names is not None:
            finite = _structured_finite(arr)
        return cls(
            dtype=arr.dtype,
            shape=tuple(arr.shape),
            all_finite=finite,
            attrs=FrozenMap(attrs),
            kind=kind,
        )


def _structured_finite(arr: npt.NDArray[Any]) -> bool:
    assert arr.dtype.names is not None
    for name in arr.dtype.names:
        sub = arr[name]
        if sub.dtype.kind in "fc" and not np.isfinite(sub).all():
            return False
        if sub.dtype.names is not None and not _structured_finite(sub):
            return False
    return True


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    code: Code
    obj: str  # relative to the group: "" for the group itself, else a member name
    message: str


@dataclass(frozen=True, slots=True)
class Schema:
    """What every top-level group of a file must look like.

    Parameters
    ----------
    name
        Shown in messages; kept in the files that embed the schema.
    datasets
        Rules for the group's datasets, by name.
    attrs
        Rules for the group's attributes, by name.
    groups
        Rules for the groups nested in it, by name (see :class:`GroupSpec`).
    """

    name: str = "unnamed"
    datasets: Mapping[str, DatasetSpec] = field(default_factory=FrozenMap)
    attrs: Mapping[str, AttrSpec] = field(default_factory=FrozenMap)
    groups: Mapping[str, GroupSpec] = field(default_factory=FrozenMap)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "h5guard_schema": SCHEMA_FORMAT_VERSION,
            "name": self.name,
            "datasets": {k: v.to_dict() for k, v in sorted(self.datasets.items())},
            "attrs": {k: v.to_dict() for k, v in sorted(self.attrs.items())},
        }
        if self.groups:
            out["groups"] = {k: v.to_dict() for k, v in sorted(self.groups.items())}
        return out

    def to_json(self) -> str:
        """The schema as compact JSON (sorted keys): what files embed."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_dict(data: Any, *, source: str = "schema") -> Schema:
        """The schema a JSON object describes (docs/schemas.md).

        Parameters
        ----------
        data
            The parsed JSON object.
        source
            Where it came from, for error messages.

        Returns
        -------
        Schema

        Raises
        ------
        SchemaError
            Unknown keys, a bad dtype rule, a wrong version, or not an object.
        """
        if not isinstance(data, Mapping):
            raise SchemaError(f"{source}: expected a JSON object, got {type(data).__name__}")
        _only_keys(data, {"h5guard_schema", "name", "datasets", "attrs", "groups"}, source)
        version = data.get("h5guard_schema", SCHEMA_FORMAT_VERSION)
        if version != SCHEMA_FORMAT_VERSION:
            raise SchemaError(
                f"{source}: expected h5guard_schema {SCHEMA_FORMAT_VERSION}, got {version!r}"
            )
        return Schema(
            name=str(data.get("name", "unnamed")),
            datasets=_dataset_specs(data.get("datasets", {}), f"{source}.datasets"),
            attrs=_attr_specs(data.get("attrs", {}), f"{source}.attrs"),
            groups=_group_specs(data.get("groups", {}), f"{source}.groups", 0),
        )

    @staticmethod
    def from_json(text: str, *, source: str = "schema") -> Schema:
        """:meth:`from_dict` of a JSON text.

        Raises
        ------
        SchemaError
            Not valid JSON, or not a valid schema.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SchemaError(f"{source}: not valid JSON: {err}") from err
        return Schema.from_dict(data, source=source)

    @staticmethod
    def load(path: str) -> Schema:
        """The schema in a JSON file (what ``h5guard check --schema FILE`` reads).

        Raises
        ------
        SchemaError
            The file cannot be read, or does not hold a valid schema.
        """
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as err:
            raise SchemaError(f"{path}: cannot read schema: {err.strerror or err}") from err
        return Schema.from_json(text, source=path)

    def check_group(self, group: GroupInfo) -> list[SchemaViolation]:
        """Every way a top-level group breaks the schema, nested groups included.

        The one entry point of every reader: h5guard's own streaming reader, the byte
        reader, the inspector of foreign files and salvage all describe a group as a
        :class:`GroupInfo` and call this, so no reader can skip a rule.

        Parameters
        ----------
        group
            What the reader found in the group: its datasets, attributes and subgroups.

        Returns
        -------
        list[SchemaViolation]
            Empty when the group satisfies the schema. ``obj`` of each violation is
            relative to the group (``""`` for the group itself, ``"sub/x"`` below it).
        """
        out: list[SchemaViolation] = []
        _check_level(self.datasets, self.attrs, self.groups, group, "", out)
        return out

    def any_finite(self) -> bool:
        """Whether some dataset rule, at any depth, asks for finite values only."""
        return _any_finite(self.datasets, self.groups)


def _any_finite(datasets: Mapping[str, DatasetSpec], groups: Mapping[str, GroupSpec]) -> bool:
    return any(spec.finite for spec in datasets.values()) or any(
        _any_finite(g.datasets, g.groups) for g in groups.values()
    )


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """The description of a group that a :class:`Schema` checks, whatever reader made it.

    ``datasets`` and ``groups`` are the group's members by name, ``attrs`` its
    attribute values (h5guard's reserved ``h5guard_*`` attributes may be among them:
    no rule names them).
    """

    datasets: Mapping[str, DatasetInfo]
    attrs: Mapping[str, Any]
    groups: Mapping[str, GroupInfo]


def _check_level(
    dspecs: Mapping[str, DatasetSpec],
    aspecs: Mapping[str, AttrSpec],
    gspecs: Mapping[str, GroupSpec],
    group: GroupInfo,
    prefix: str,
    out: list[SchemaViolation],
) -> None:
    datasets, attrs, groups = group.datasets, group.attrs, group.groups
    attr_text = {k: _as_text(v) for k, v in attrs.items()}
    bound: dict[str, int] = {}
    for name, spec in sorted(dspecs.items()):
        obj = prefix + name
        info = datasets.get(name)
        if info is None:
            needed = spec.required and all(
                attr_text.get(a) == v for a, v in spec.required_when.items()
            )
            if needed:
                out.append(SchemaViolation(Code.SCHEMA_MISSING, obj, "required dataset is missing"))
            continue
        if spec.dtype is not None and not dtype_matches(spec.dtype, info.dtype, info.kind):
            out.append(
                SchemaViolation(
                    Code.SCHEMA_DTYPE, obj, f"expected dtype {spec.dtype}, found {info.dtype}"
                )
            )
        if spec.fields is not None:
            problem = _fields_problem(spec.fields, info.dtype)
            if problem:
                out.append(SchemaViolation(Code.SCHEMA_DTYPE, obj, problem))
        if spec.shape is not None:
            problem = _shape_problem(spec.shape, info.shape, bound)
            if problem:
                out.append(SchemaViolation(Code.SCHEMA_SHAPE, obj, problem))
        if spec.finite and not info.all_finite:
            out.append(
                SchemaViolation(
                    Code.SCHEMA_NOT_FINITE, obj, "expected only finite values, found NaN or inf"
                )
            )
        if spec.attrs:
            _check_attrs(spec.attrs, info.attrs, obj, out)
    _check_attrs(aspecs, attrs, prefix.rstrip("/"), out)
    for name, gspec in sorted(gspecs.items()):
        obj = prefix + name
        sub = groups.get(name)
        if sub is None:
            if gspec.required:
                out.append(SchemaViolation(Code.SCHEMA_MISSING, obj, "required group is missing"))
            continue
        _check_level(gspec.datasets, gspec.attrs, gspec.groups, sub, obj + "/", out)


def _check_attrs(
    specs: Mapping[str, AttrSpec], attrs: Mapping[str, Any], obj: str, out: list[SchemaViolation]
) -> None:
    for name, aspec in sorted(specs.items()):
        if name not in attrs:
            if aspec.required:
                out.append(
                    SchemaViolation(
                        Code.SCHEMA_MISSING, obj, f"required attribute {name!r} is missing"
                    )
                )
            continue
        value = np.asarray(attrs[name])
        if aspec.dtype is not None and not dtype_matches(aspec.dtype, value.dtype):
            out.append(
                SchemaViolation(
                    Code.SCHEMA_DTYPE,
                    obj,
                    f"attribute {name!r}: expected dtype {aspec.dtype}, found {value.dtype}",
                )
            )
        if aspec.allowed is not None:
            plain = _plain(attrs[name])
            if plain not in aspec.allowed:
                out.append(
                    SchemaViolation(
                        Code.SCHEMA_VALUE,
                        obj,
                        f"attribute {name!r}: expected one of {list(aspec.allowed)}, found {plain!r}",
                    )
                )


def _fields_problem(rules: Mapping[str, str], dtype: np.dtype[Any]) -> str | None:
    if dtype.names is None or dtype.fields is None:
        return f"expected a structured dtype with fields {sorted(rules)}, found {dtype}"
    if set(dtype.names) != set(rules):
        return f"expected fields {sorted(rules)}, found {sorted(dtype.names)}"
    for name, rule in rules.items():
        sub = dtype.fields[name][0]
        if not dtype_matches(rule, sub.base if sub.subdtype is not None else sub):
            return f"field {name!r}: expected dtype {rule}, found {sub}"
    return None


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
