from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optimizer.config import DEMO_SPEC, SpecError, SweepConfig, expand_spec, load_spec, parse_range

BASE: dict[str, Any] = {
    "site": "iea37",
    "n_turbines": 16,
    "start": "grid",
    "grid_size": 4,
    "random_pct": 50.0,
    "seed": 3,
    "method": "SLSQP",
    "maxiter": 20,
    "tol": 1e-6,
}


@given(
    order=st.permutations(list(BASE)),
    as_float=st.sets(st.sampled_from(["grid_size", "seed", "maxiter", "n_turbines"])),
)
def test_config_id_ignores_key_order_and_number_types(order: list[str], as_float: set[str]) -> None:
    data = {k: (float(BASE[k]) if k in as_float else BASE[k]) for k in order}
    data["random_pct"] = int(BASE["random_pct"])  # 50 and 50.0 are the same config
    assert SweepConfig.from_mapping(data).config_id == SweepConfig.from_mapping(BASE).config_id


@given(field=st.sampled_from(["grid_size", "seed", "maxiter", "random_pct", "tol"]))
def test_config_id_changes_with_any_field(field: str) -> None:
    changed = dict(BASE)
    changed[field] = BASE[field] + 1 if field != "tol" else 1e-5
    assert SweepConfig.from_mapping(changed).config_id != SweepConfig.from_mapping(BASE).config_id


def test_default_written_out_gives_same_id() -> None:
    implicit = {k: v for k, v in BASE.items() if k not in ("n_turbines", "method", "start")}
    assert SweepConfig.from_mapping(implicit).config_id == SweepConfig.from_mapping(BASE).config_id


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"site": "atlantis"}, "site: expected one of"),
        ({"random_pct": -5}, "random_pct: expected a value in [0, 100], got -5"),
        ({"grid_size": 2.5}, "grid_size: expected an integer"),
        ({"n_turbines": 17}, "n_turbines"),
        ({"method": "COBYLA"}, "method: expected one of"),
        ({"tol": 0}, "tol: expected a value in (0"),
        ({"bogus": 1}, "unknown option"),
        ({"n_turbines": 64, "grid_size": 2, "random_pct": 0}, "grid"),
    ],
)
def test_bad_configs_name_the_option(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        SweepConfig.from_mapping({**BASE, **change})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_hornsrev_too_many_turbines_is_impossible() -> None:
    with pytest.raises(SpecError, match="n_turbines"):
        SweepConfig.from_mapping({**BASE, "site": "hornsrev1", "n_turbines": 5000, "grid_size": 80})


def test_demo_spec_expands() -> None:
    configs = expand_spec(DEMO_SPEC)
    assert len(configs) == len({c.config_id for c in configs}) == 32
    assert {c.site for c in configs} == {"iea37", "hornsrev1"}


def test_expand_spec_cross_product_and_dedup() -> None:
    spec = {
        "sweep": [
            {"grid_size": [4, 5], "random_pct": [0, 50], "seeds": "0-2"},
            {"grid_size": 4, "random_pct": 0, "seeds": [0]},
        ]
    }
    configs = expand_spec(spec)
    assert len(configs) == 2 * 2 * 3  # the second block repeats a config of the first


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "at least one [[sweep]]"),
        ({"sweep": [{"seeds": []}]}, "seeds: expected at least one value"),
        ({"sweep": [{"seeds": "a-b"}]}, "seeds: expected integers"),
        ({"sweep": [{"grid": 4}]}, "unknown option"),
        ({"sweep": [{}], "extra": {}}, "unknown section"),
    ],
)
def test_bad_specs(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        expand_spec(spec)


def test_parse_range() -> None:
    assert parse_range("0-3", "x") == [0, 1, 2, 3]
    assert parse_range("1,3,5", "x") == [1, 3, 5]


def test_load_spec_errors(tmp_path: Any) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[sweep]\nsite=")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(str(bad))
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(str(tmp_path / "missing.toml"))
