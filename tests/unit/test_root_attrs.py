"""h5guard's own attribute reads and writes through libhdf5's low-level API
(``reader.text_attr``, ``write.write_attr``) store and read what h5py's attribute
manager does, on real files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from h5guard._format import reader, write

VALUES: list[Any] = [
    "plain",
    "héllo wörld",
    "",
    b"raw bytes",
    3,
    -2.5,
    True,
    1 + 2j,
    np.int8(-3),
    np.uint64(2**63),
    np.arange(5.0),
    np.array([True, False]),
    np.array(["a", "bcd"]),
    np.zeros(0),
    np.ones((2, 3), np.float32),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_write_attr_stores_what_h5pys_attribute_manager_stores(tmp_path: Path, value: Any) -> None:
    arr = write.normalize_value("a", value)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.attrs.create("by_h5py", arr if arr.ndim else arr[()])
        write.write_attr(f, "ours", np.array(b"an older value of another type"))
        write.write_attr(f, "ours", arr)  # replaces it
    with h5py.File(tmp_path / "a.h5", "r") as f:
        theirs, ours = (h5py.h5a.open(f.id, n) for n in (b"by_h5py", b"ours"))
        assert ours.get_type().equal(theirs.get_type())
        assert ours.shape == theirs.shape
        assert np.array_equal(np.asarray(f.attrs["ours"]), np.asarray(f.attrs["by_h5py"]))
        assert sorted(f.attrs) == ["by_h5py", "ours"]


def test_text_attr_reads_fixed_and_variable_length_text_and_says_none_when_absent(
    tmp_path: Path,
) -> None:
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f.attrs["fixed"] = np.bytes_("näme".encode())
        f.attrs["vlen"] = "välue"  # h5py stores a str as variable-length UTF-8
        f.attrs["fixed_array"] = np.array([b"x", b"y"])
        f.attrs["number"] = 7
        f.attrs["bad_utf8"] = np.bytes_(b"\xff\xfe")
    with h5py.File(tmp_path / "t.h5", "r") as f:
        assert reader.text_attr(f, "fixed") == "näme"
        assert reader.text_attr(f, "vlen") == "välue"
        assert reader.text_attr(f, "fixed_array") == str(f.attrs["fixed_array"])
        assert reader.text_attr(f, "number") == "7"
        assert reader.text_attr(f, "bad_utf8") == b"\xff\xfe".decode("utf-8", "replace")
        assert reader.text_attr(f, "absent") is None


def _fixed_string(f: h5py.File, name: str, raw: bytes, *, pad: int, cset: int) -> None:
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(len(raw))
    tid.set_strpad(pad)
    tid.set_cset(cset)
    aid = h5py.h5a.create(f.id, name.encode(), tid, h5py.h5s.create(h5py.h5s.SCALAR))
    aid.write(np.array(raw, dtype=f"S{len(raw)}"), mtype=tid)


def test_text_attr_reads_what_h5py_reads_for_every_padding_charset_and_number(
    tmp_path: Path,
) -> None:
    with h5py.File(tmp_path / "t.h5", "w") as f:
        for pad in (h5py.h5t.STR_NULLTERM, h5py.h5t.STR_NULLPAD, h5py.h5t.STR_SPACEPAD):
            for cset in (h5py.h5t.CSET_ASCII, h5py.h5t.CSET_UTF8):
                for n, raw in enumerate((b"plain", "näme".encode(), b"ab\0cd", b"tail\0\0")):
                    _fixed_string(f, f"s{pad}-{cset}-{n}", raw, pad=pad, cset=cset)
        f.attrs["unsigned"] = np.uint16(65535)
        f.attrs["negative"] = np.int8(-3)
        f.attrs["float"] = 2.5
        f.attrs["one_of"] = np.array([b"x"])
    with h5py.File(tmp_path / "t.h5", "r") as f:
        for name in f.attrs:
            value = f.attrs[name]
            if isinstance(value, bytes | np.bytes_):
                want = bytes(value).decode("utf-8", errors="replace")
            else:
                want = str(value)
            assert reader.text_attr(f, name) == want, name


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_update_attr_keeps_an_equal_value_and_replaces_any_other(
    tmp_path: Path, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    arr = write.normalize_value("a", value)
    with h5py.File(tmp_path / "u.h5", "w") as f:
        write.write_attr(f, "same", arr)
        write.write_attr(f, "other", np.array(b"something else"))
        before = h5py.h5o.get_info(f.id).num_attrs
        rewritten: list[str] = []
        real = write.write_attr
        monkeypatch.setattr(
            write, "write_attr", lambda o, n, a: (rewritten.append(n), real(o, n, a))
        )
        write.update_attr(f, "same", arr)
        write.update_attr(f, "other", arr)
        write.update_attr(f, "new", arr)
        assert rewritten == ["other", "new"]
        assert h5py.h5o.get_info(f.id).num_attrs == before + 1
    with h5py.File(tmp_path / "u.h5", "r") as f:
        for name in ("same", "other", "new"):
            aid = h5py.h5a.open(f.id, name.encode())
            assert aid.shape == arr.shape
            assert np.array_equal(np.asarray(f.attrs[name]), np.asarray(f.attrs["same"]))
        assert bytes(np.asarray(reader.read_attr(f, "other")).tobytes()) == arr.tobytes()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"2026-12-02T16:00:00+00:00", b"2026-12-02T17:30:00+00:00"),
        (np.int64(100), np.int64(-7)),
        (np.array([1.0, 2.0]), np.array([3.0, np.nan])),
    ],
    ids=["text", "integer", "floats"],
)
def test_update_attr_writes_a_new_value_of_the_same_type_in_place(
    tmp_path: Path, old: Any, new: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with h5py.File(tmp_path / "u.h5", "w") as f:
        write.write_attr(f, "a", write.normalize_value("a", old))
        monkeypatch.setattr(write, "write_attr", lambda *a: pytest.fail("recreated"))
        write.update_attr(f, "a", write.normalize_value("a", new))
    with h5py.File(tmp_path / "u.h5", "r") as f:
        stored = reader.read_attr(f, "a")
        assert stored.tobytes() == write.normalize_value("a", new).tobytes()
        assert stored.dtype == write.normalize_value("a", new).dtype
