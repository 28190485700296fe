"""Values a writer must refuse rather than store wrong (issue #23): a masked array lost
its mask silently; the timedelta64 hint suggested a call that fails on timedeltas. Each
refusal's suggestion is run as written and its result stored and read back."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from h5guard import ShardWriter, UnsupportedValueError, merge, read


def _suggestions(message: str) -> list[str]:
    """The Python expressions a refusal suggests (``arr...`` or ``{...}`` in the text)."""
    return re.findall(
        r"(\{'[^}]*\}|arr\.astype\('int64'\)|arr / np\.timedelta64\(1, 's'\))", message
    )


def _refusal(tmp: Path, value: Any, *, as_attr: bool = False) -> str:
    with ShardWriter(tmp / "temp") as writer, pytest.raises(UnsupportedValueError) as info:
        if as_attr:
            writer.add("g", {"y": 1.0}, {"a": value})
        else:
            writer.add("g", {"x": value})
    return str(info.value)


def _stored(tmp: Path, datasets: dict[str, Any], attrs: dict[str, Any] | None = None) -> Any:
    with ShardWriter(tmp / "ok") as writer:
        writer.add("g", datasets, attrs or {})
    out = tmp / "out.h5"
    merge(tmp / "ok", out)
    return read(out, "g")


def test_a_masked_array_is_refused_and_the_hint_works(tmp_path: Path) -> None:
    arr = np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False])
    message = _refusal(tmp_path, arr)
    assert "masked array" in message and "mask" in message
    assert "masked array" in _refusal(tmp_path, arr, as_attr=True)
    assert "masked array" in _refusal(tmp_path, np.ma.masked)
    [hint] = _suggestions(message)
    datasets = eval(hint, {"arr": arr, "np": np})  # the suggestion, as written
    result = _stored(tmp_path, datasets)
    np.testing.assert_array_equal(result.datasets["x_mask"], [False, True, False])
    values = np.ma.masked_array(result.datasets["x"], mask=result.datasets["x_mask"])
    assert values.sum() == 4.0


@pytest.mark.parametrize("unit", ["s", "ms", "10us"])
def test_the_timedelta_hint_works(tmp_path: Path, unit: str) -> None:
    arr = np.array([1, 2, 30], dtype=f"m8[{unit}]")
    message = _refusal(tmp_path, arr)
    assert "datetime_as_string" not in message
    hints = _suggestions(message)
    assert len(hints) == 2, message
    recorded = re.search(r"with the unit '([^']+)'", message)
    assert recorded is not None and recorded.group(1) == unit
    counts = eval(hints[0], {"arr": arr, "np": np})
    seconds = eval(hints[1], {"arr": arr, "np": np})
    result = _stored(tmp_path, {"counts": counts, "seconds": seconds}, {"unit": recorded.group(1)})
    back = np.asarray(result.datasets["counts"]).astype(f"m8[{result.attrs['unit']}]")
    np.testing.assert_array_equal(back, arr)
    np.testing.assert_allclose(result.datasets["seconds"], arr / np.timedelta64(1, "s"))


def test_the_datetime_hint_works(tmp_path: Path) -> None:
    arr = np.array(["2026-12-01T20:00", "2026-12-01T21:00"], dtype="M8[m]")
    message = _refusal(tmp_path, arr)
    assert "np.datetime_as_string(arr)" in message
    result = _stored(tmp_path, {"when": np.datetime_as_string(arr)})
    np.testing.assert_array_equal(np.asarray(result.datasets["when"], dtype="M8[m]"), arr)
