"""The deep check of sealed shards by the byte reader alone (h5guard._check.sealed).

It answers only for a shard that passes everything, and then exactly as the libhdf5
path (:func:`h5guard._check.deep.inspect_file`) would; every other file is left to the
libhdf5 path, so damage behind a matching seal is still reported.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from h5guard import Code, Schema, ShardWriter, check
from h5guard._check.deep import inspect_file
from h5guard._check.sealed import inspect_sealed
from h5guard._format.seal import write_seal

MARK = 12345.678125  # a float64 whose bytes are easy to find in the file


def make_shard(directory: Path, n: int, *, schema: Schema | None = None) -> Path:
    with ShardWriter(directory, schema=schema, commit_every=n) as w:
        for i in range(n):
            w.add(
                f"k{i:04d}",
                {"xy": np.full((4, 2), MARK if i == 0 else float(i)), "n": np.arange(i % 5)},
                {"status": "ok", "seed": i, "aep": i / 3},
            )
    [path] = w.committed
    return Path(path)


def answer(path: Path, schema: Schema | None = None) -> object:
    [(seal, result)] = inspect_sealed([str(path)], schema.to_json() if schema else None)
    assert seal is True
    return result


# 9 groups: compact root links; 60: dense, a B-tree of depth 1; 2000: depth 2 (outside
# the byte reader's subset: left to libhdf5).
@pytest.mark.parametrize("n", [1, 9, 60, 700, 2000])
def test_good_shard_answered_as_libhdf5_answers(tmp_path: Path, n: int) -> None:
    path = make_shard(tmp_path, n)
    fast = answer(path)
    if n == 2000:
        assert fast is None
        assert check([path]).ok
        return
    assert fast is not None
    findings, summary = inspect_file(str(path))
    assert fast == (findings, summary)
    assert len(summary.groups) == n


def test_schema_embedded_and_given(tmp_path: Path) -> None:
    embedded = Schema.from_dict({"datasets": {"xy": {"shape": [4, 2]}}})
    path = make_shard(tmp_path, 3, schema=embedded)
    assert answer(path) == inspect_file(str(path))
    other = Schema.from_dict({"datasets": {"xy": {"shape": [None, 2], "dtype": "float"}}})
    fast = answer(path, other)
    assert fast is not None
    assert fast == inspect_file(str(path), other.to_json())
    assert {f.code for f in fast[0]} == {Code.SCHEMA_MISMATCH}  # an info, not a verdict


def test_schema_violation_is_left_to_libhdf5(tmp_path: Path) -> None:
    path = make_shard(tmp_path, 3)
    wrong = Schema.from_dict({"datasets": {"xy": {"shape": [3, 2]}}})
    assert answer(path, wrong) is None
    report = check([path], schema=wrong)
    assert not report.ok
    assert Code.SCHEMA_SHAPE in {f.code for f in report.findings}


def test_damage_behind_a_matching_seal_is_reported(tmp_path: Path) -> None:
    path = make_shard(tmp_path, 3)
    data = bytearray(path.read_bytes())
    at = data.find(np.float64(MARK).tobytes())
    assert at > 0
    data[at] ^= 0x01  # one bit of k0000/xy, then a seal that matches the damage
    path.write_bytes(bytes(data))
    write_seal(path)
    assert answer(path) is None
    report = check([path])
    assert not report.ok
    # compact data sits in the checksummed object header: libhdf5 refuses to load it
    assert [(f.obj, f.code) for f in report.findings] == [("/k0000", Code.OBJECT_UNREADABLE)]
    assert sorted(report.files[0].groups) == ["k0001", "k0002"]


def test_reserved_root_member_is_left_to_libhdf5(tmp_path: Path) -> None:
    path = make_shard(tmp_path, 2)
    with h5py.File(path, "a") as f:
        f.create_group("h5guard_table")
    write_seal(path)
    assert answer(path) is None
    assert check([path]) == check([path])  # the libhdf5 path's verdict, whatever it is


def test_unsealed_and_mismatched_seals(tmp_path: Path) -> None:
    path = make_shard(tmp_path, 2)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    [(seal, result)] = inspect_sealed([str(path)])
    assert (seal, result) == (False, None)
    report = check([path])
    assert Code.SEAL_MISMATCH in {f.code for f in report.findings}
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = 1
    assert inspect_sealed([str(plain)]) == [(None, None)]


def test_damaged_bytes_under_a_forged_seal_never_raise(tmp_path: Path) -> None:
    """Whatever the bytes, the byte reader's pass returns (an answer or None): it runs in
    the calling process, so damage must never become an exception, a hang or a crash.
    (A forged seal is outside what the seal guards against: accidental change.)"""
    import random

    path = make_shard(tmp_path, 60)
    good = path.read_bytes()
    rng = random.Random(24)
    answered = 0
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.choice((1, 1, 4))):
            data[rng.randrange(512, len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        write_seal(path)
        [(seal, result)] = inspect_sealed([str(path)])
        assert seal is True
        answered += result is not None
    assert answered < 300  # most damage is noticed (digests, structure)
