"""The quick layer's fast paths give the answers of the plain ones.

lookup3 with inline rotations and a cache of leading blocks agrees with the textbook
loop on every length; a directory listed with one ``os.scandir`` yields the same paths,
in the same form, as pathlib's listing did; a file the listing says is regular is
judged as one found by ``stat``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from h5guard import Code, check
from h5guard._check.api import expand_paths
from h5guard._check.quick import quick_check
from h5guard._format import checksum
from h5guard._format.checksum import lookup3

_MASK = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def reference_lookup3(data: bytes, initval: int = 0) -> int:
    """hashlittle() as lookup3.c spells it: one rotation helper, one block at a time."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK
    i = 0
    while length > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & _MASK
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & _MASK
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & _MASK
        a = (a - c) & _MASK
        a ^= _rot(c, 4)
        c = (c + b) & _MASK
        b = (b - a) & _MASK
        b ^= _rot(a, 6)
        a = (a + c) & _MASK
        c = (c - b) & _MASK
        c ^= _rot(b, 8)
        b = (b + a) & _MASK
        a = (a - c) & _MASK
        a ^= _rot(c, 16)
        c = (c + b) & _MASK
        b = (b - a) & _MASK
        b ^= _rot(a, 19)
        a = (a + c) & _MASK
        c = (c - b) & _MASK
        c ^= _rot(b, 4)
        b = (b + a) & _MASK
        length -= 12
        i += 12
    if length == 0:
        return c
    tail = data[i:].ljust(12, b"\0")
    a = (a + int.from_bytes(tail[0:4], "little")) & _MASK
    b = (b + int.from_bytes(tail[4:8], "little")) & _MASK
    c = (c + int.from_bytes(tail[8:12], "little")) & _MASK
    c ^= b
    c = (c - _rot(b, 14)) & _MASK
    a ^= c
    a = (a - _rot(c, 11)) & _MASK
    b ^= a
    b = (b - _rot(a, 25)) & _MASK
    c ^= b
    c = (c - _rot(b, 16)) & _MASK
    a ^= c
    a = (a - _rot(c, 4)) & _MASK
    b ^= a
    b = (b - _rot(a, 14)) & _MASK
    c ^= b
    c = (c - _rot(b, 24)) & _MASK
    return c


def test_lookup3_agrees_with_the_reference_on_every_length() -> None:
    rng = random.Random(24)
    for n in [*range(0, 100), 255, 256, 1000, 4097]:
        for _ in range(3):
            data = rng.randbytes(n)
            initval = rng.randrange(2**32)
            want = reference_lookup3(data, initval)
            assert lookup3(data, initval) == want, n
            assert lookup3(memoryview(data), initval) == want, n
            assert lookup3(bytearray(data), initval) == want, n


def test_lookup3_prefix_cache_is_keyed_by_the_whole_prefix() -> None:
    # Superblocks of one directory share their first 24 bytes: the cached state after
    # them must serve only inputs that really share them (and their length, initval).
    rng = random.Random(7)
    checksum._PREFIXES.clear()
    first = rng.randbytes(44)
    assert lookup3(first) == reference_lookup3(first)
    for _ in range(200):
        data = bytearray(first)
        at = rng.randrange(44)
        data[at] ^= 1 << rng.randrange(8)  # one bit anywhere, prefix included
        data = bytes(data)
        assert lookup3(data) == reference_lookup3(data)
        assert lookup3(data, 5) == reference_lookup3(data, 5)
        assert lookup3(data + b"x") == reference_lookup3(data + b"x")


def test_expand_paths_keeps_the_path_forms_and_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "d"
    d.mkdir()
    for name in ["b.h5", "a.h5", ".h5", "c.h5.partial", "x.txt", "a.b.h5"]:
        (d / name).write_bytes(b"")
    (d / "sub.h5").mkdir()  # a directory named like a file: not listed
    os.symlink(d / "a.h5", d / "link.h5")  # followed, as pathlib's is_file() does
    monkeypatch.chdir(tmp_path)
    for arg, prefix in [("d", "d/"), ("./d", "d/"), ("d/", "d/"), (str(d), f"{d}/")]:
        files, findings = expand_paths([arg])
        assert files == [prefix + n for n in ["a.b.h5", "a.h5", "b.h5", "link.h5"]], arg
        assert [(f.path, f.code) for f in findings] == [
            (prefix + "c.h5.partial", Code.PARTIAL_FILE)
        ]
    monkeypatch.chdir(d)
    files, _ = expand_paths(["."])
    assert files == ["a.b.h5", "a.h5", "b.h5", "link.h5"]


def test_listed_regular_file_is_judged_as_a_stat_would(tmp_path: Path) -> None:
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 " * 100)
    for path in (empty, junk):
        assert quick_check(str(path), regular=True) == quick_check(str(path))
    # Replaced by a directory after the listing: not read as a file.
    gone = tmp_path / "gone.h5"
    gone.mkdir()
    [finding], info = quick_check(str(gone), regular=True)
    assert (finding.code, info) == (Code.NOT_A_FILE, None)
    missing = tmp_path / "missing.h5"
    [finding], _ = quick_check(str(missing), regular=True)
    assert finding.code is Code.NOT_FOUND


def test_quick_check_of_a_directory_reports_each_file(tmp_path: Path) -> None:
    (tmp_path / "empty.h5").write_bytes(b"")
    (tmp_path / "junk.h5").write_bytes(b"x" * 2000)
    report = check([tmp_path], deep=False)
    assert {(Path(f.path).name, f.code) for f in report.findings} == {
        ("empty.h5", Code.EMPTY),
        ("junk.h5", Code.NOT_HDF5),
    }
    assert sorted(Path(s.path).name for s in report.files) == ["empty.h5", "junk.h5"]
    assert {s.size for s in report.files} == {0, 2000}
