"""Properties of the writer and the validators over arbitrary groups and damage."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h5guard import Code, Sandbox, ShardWriter, validate
from h5guard._check.quick import quick_check
from h5guard._format.write import normalize_value
from tests.strategies import groups, names


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.dictionaries(names, groups, min_size=1, max_size=4))
def test_write_validate_read_roundtrip(
    tmp_path_factory: Any, sandbox: Sandbox, content: dict[str, dict[str, Any]]
) -> None:
    directory = tmp_path_factory.mktemp("rt")
    with ShardWriter(directory) as w:
        for key, group in content.items():
            w.add(key, group["datasets"], group["attrs"])
    [path] = w.committed
    report = validate(path, sandbox=sandbox)
    assert report.ok, report.render_text()
    assert set(report.files[0].groups) == set(content)
    with h5py.File(path, "r") as f:
        for key, group in content.items():
            for name, value in group["datasets"].items():
                assert _same(f[key][name][()], normalize_value(name, value)), (key, name)
                assert f[key][name].shape == np.shape(value)
            for name, value in group["attrs"].items():
                stored = f[key].attrs[name]
                assert _same(stored, normalize_value(name, value)), (key, name)
                assert np.shape(stored) == np.shape(value), (key, name)


def _shard(directory: Path) -> Path:
    with ShardWriter(directory) as w:
        for i in range(3):
            w.add(
                f"g{i}",
                {"xy": np.full((5, 2), i + 0.5), "big": np.arange(5000.0) * i},
                {"status": "ok", "i": i},
            )
    return w.committed[0]


def test_quick_layer_flags_truncation_at_every_offset(tmp_path: Path) -> None:
    data = _shard(tmp_path).read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data)
    for size in reversed(range(len(data))):
        # Shrinking one file in place keeps this at a syscall per offset.
        os.truncate(cut, size)
        findings, _ = quick_check(str(cut))
        assert findings, f"truncation to {size} of {len(data)} bytes passed the quick layer"
        assert {f.code for f in findings} <= {Code.EMPTY, Code.NOT_HDF5, Code.TRUNCATED}, size


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bit_flips_are_flagged_or_harmless(
    tmp_path_factory: Any, sandbox: Sandbox, data: st.DataObject
) -> None:
    """A flipped bit is either reported, or sits in bytes nobody reads (same values)."""
    directory = tmp_path_factory.mktemp("flip")
    original = _shard(directory)
    raw = bytearray(original.read_bytes())
    offset = data.draw(st.integers(0, len(raw) - 1), label="offset")
    bit = data.draw(st.integers(0, 7), label="bit")
    damaged = directory / "damaged.h5"
    raw[offset] ^= 1 << bit
    damaged.write_bytes(bytes(raw))
    report = validate(damaged, sandbox=sandbox)
    if report.ok:
        # Passed: then every value must read back exactly as written.
        with h5py.File(original, "r") as a, h5py.File(damaged, "r") as b:
            for key in a:
                for name in a[key]:
                    assert _same(a[key][name][()], b[key][name][()]), (offset, bit, key, name)
                assert {k: bytes(np.asarray(v).tobytes()) for k, v in a[key].attrs.items()} == {
                    k: bytes(np.asarray(v).tobytes()) for k, v in b[key].attrs.items()
                }, (offset, bit)
    shutil.rmtree(directory)
