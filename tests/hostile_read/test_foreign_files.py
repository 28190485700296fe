"""check on files other libraries write (issue #23): many attributes, family-driver
members, types h5py cannot decode."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from h5guard import check
from h5guard.report import Code, Severity


def test_ten_thousand_attributes_are_read_in_linear_time(tmp_path: Path) -> None:
    path = tmp_path / "attrs.h5"
    with h5py.File(path, "w", libver="latest") as f:
        g = f.create_group("g")
        for i in range(10_000):
            g.attrs[f"a{i:05d}"] = i
    started = time.monotonic()
    report = check([path], timeout=60)
    elapsed = time.monotonic() - started
    assert report.ok, report.render_text()
    assert list(report.files[0].groups) == ["g"]
    # Opened by index on the name index (before): minutes, quadratic; iterated: seconds.
    assert elapsed < 30, elapsed


def test_damaged_attribute_storage_is_still_found(tmp_path: Path) -> None:
    path = tmp_path / "attrs.h5"
    with h5py.File(path, "w", libver="latest") as f:
        g = f.create_group("g")
        for i in range(40):
            g.attrs[f"attribute_{i:03d}"] = np.arange(3.0) + i
    data = bytearray(path.read_bytes())
    at = data.index(b"attribute_020")
    data[at : at + 13] = b"\xff" * 13
    path.write_bytes(bytes(data))
    report = check([path], timeout=60)
    assert not report.ok, report.render_text()


@pytest.mark.parametrize("libver", [None, "latest"])
def test_a_family_member_is_named_as_such(tmp_path: Path, libver: str | None) -> None:
    pattern = str(tmp_path / "fam%d.h5")
    kwargs = {"libver": libver} if libver else {}
    with h5py.File(pattern, "w", driver="family", memb_size=64 * 1024, **kwargs) as f:
        f["g/x"] = np.arange(40_000.0)
    first = tmp_path / "fam0.h5"
    report = check([first], timeout=60)
    codes = {f.code for f in report.findings}
    assert Code.TRUNCATED not in codes, report.render_text()
    [finding] = [f for f in report.findings if f.code is Code.FAMILY_MEMBER]
    assert finding.severity is Severity.ERROR  # alone, the member cannot be opened
    assert "family" in finding.message and "memb_size=65536" in finding.message
    # What the message says to do works.
    with h5py.File(pattern, "r", driver="family", memb_size=65536) as f:
        assert f["g/x"].shape == (40_000,)


def _pytables_time64(path: Path) -> None:
    tables = pytest.importorskip("tables")

    class Event(tables.IsDescription):  # type: ignore[misc, name-defined]
        t = tables.Time64Col()
        x = tables.Float64Col()

    with tables.open_file(str(path), "w") as f:
        table = f.create_table(f.create_group("/", "run"), "events", Event)
        row = table.row
        for i in range(5):
            row["t"] = 1.7e9 + i
            row["x"] = float(i)
            row.append()
        table.flush()


def test_a_type_h5py_cannot_decode_is_named_not_called_damage(tmp_path: Path) -> None:
    path = tmp_path / "pytables.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _pytables_time64(path)
    report = check([path], timeout=60)
    assert not report.ok
    # The one error is the type, by name: the table is read, nothing is called damaged.
    assert {f.code for f in report.findings if f.severity is Severity.ERROR} == {
        Code.UNSUPPORTED_TYPE
    }
    [note] = [f for f in report.findings if f.code is Code.UNSUPPORTED_TYPE]
    assert note.obj == "/run/events" and "not damage" in note.message
    assert "H5T_TIME" in note.message and "'t'" in note.message and "h5py" in note.message


def test_an_attribute_of_a_time_type_is_named(tmp_path: Path) -> None:
    path = tmp_path / "time_attr.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("g")
        g["x"] = np.arange(3.0)
        space = h5py.h5s.create(h5py.h5s.SCALAR)
        aid = h5py.h5a.create(g.id, b"when", h5py.h5t.UNIX_D64LE, space)
        aid.write(np.array(1.7e9), mtype=h5py.h5t.UNIX_D64LE)
    report = check([path], timeout=60)
    assert {f.code for f in report.findings if f.severity is Severity.ERROR} == {
        Code.UNSUPPORTED_TYPE
    }
    [note] = [f for f in report.findings if f.code is Code.UNSUPPORTED_TYPE]
    assert note.obj == "/g" and "'when'" in note.message and "H5T_TIME" in note.message
