"""Salvage of plain-h5py files holding every structure a pipeline writes (#14)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

import h5guard
from h5guard import Dataset, Group

RECORDS = np.dtype([("turbine", "<i4"), ("power_kw", "<f8")])
ALIGNED = np.dtype([("flag", "u1"), ("value", "<f8")], align=True)  # 7 padding bytes


def write_plain_pipeline_file(path: Path) -> None:
    """h5py defaults (v0 superblock, vlen string attributes), as a user's worker writes."""
    with h5py.File(path, "w") as f:
        g = f.create_group("nested")
        g.create_group("history/iter_000").create_dataset("x", data=np.arange(3.0))
        g["history/iter_000"].attrs["step"] = 0
        g["history"].attrs["note"] = "two levels"
        g = f.create_group("dataset_attr")
        g["layout"] = np.ones((4, 2))
        g["layout"].attrs["units"] = "m"
        g["layout"].attrs["scale"] = np.float32(0.5)
        g = f.create_group("compound")
        rec = np.zeros(3, dtype=RECORDS)
        rec["turbine"] = [1, 2, 3]
        rec["power_kw"] = [1.5, 2.5, 3.5]
        g["records"] = rec
        padded = np.zeros(2, dtype=ALIGNED)
        padded["value"] = [1.0, 2.0]
        g["padded"] = padded
        g = f.create_group("vlen")
        g["names"] = np.array(["nord", "süd"], dtype=h5py.string_dtype())
        g["title"] = np.array("ein Titel", dtype=h5py.string_dtype())
        g.attrs["status"] = "ok"  # h5py stores a str attribute as a vlen string
        g.attrs["tags"] = np.array(["a", "bb"], dtype=h5py.string_dtype())


def test_every_structure_of_a_plain_file_is_recovered_and_reads_back(tmp_path: Path) -> None:
    src = tmp_path / "in" / "worker_7.h5"
    src.parent.mkdir()
    write_plain_pipeline_file(src)
    report = h5guard.salvage([src], tmp_path / "out", timeout=60)
    [fs] = report.files
    assert (fs.verdict, sorted(fs.recovered), fs.lost) == (
        "ok",
        ["compound", "dataset_attr", "nested", "vlen"],
        (),
    ), fs.render_text()
    assert report.exit_code == 0
    assert "converted 6 variable-length string(s) stored as fixed-length UTF-8" in fs.note
    assert "vlen/names" in fs.note and "vlen@status" in fs.note
    assert (
        "converted 1 compound value(s) repacked without padding bytes: compound/padded" in fs.note
    )
    out = tmp_path / "merged.h5"
    assert h5guard.merge(tmp_path / "out", out, timeout=60).exit_code == 0
    assert h5guard.check([out]).ok

    nested = h5guard.read(out, "nested").datasets["history"]
    assert nested == Group(
        {"iter_000": Group({"x": nested.members["iter_000"].members["x"]}, {"step": 0})},
        {"note": "two levels"},
    )
    np.testing.assert_array_equal(nested.members["iter_000"].members["x"], np.arange(3.0))
    layout = h5guard.read(out, "dataset_attr").datasets["layout"]
    assert isinstance(layout, Dataset) and layout.attrs == {"units": "m", "scale": np.float32(0.5)}
    compound = h5guard.read(out, "compound").datasets
    assert compound["records"].dtype == RECORDS and compound["records"]["power_kw"].tolist() == [
        1.5,
        2.5,
        3.5,
    ]
    assert compound["padded"].dtype.itemsize == 9 and compound["padded"]["value"].tolist() == [
        1.0,
        2.0,
    ]
    vlen = h5guard.read(out, "vlen")
    assert vlen.attrs["status"] == "ok" and type(vlen.attrs["status"]) is str
    assert vlen.attrs["tags"].tolist() == ["a", "bb"]
    assert (
        vlen.datasets["names"].tolist() == ["nord", "süd"] and vlen.datasets["title"] == "ein Titel"
    )
    with h5py.File(out, "r") as f:  # the hardened form: fixed-length UTF-8, no global heap
        info = h5py.check_string_dtype(f["vlen/names"].dtype)
        assert info is not None and info.encoding == "utf-8" and info.length is not None


def test_only_partial_files_are_read_not_ignored(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    with h5py.File(src / "shard-x.h5.partial", "w") as f:
        for i in range(3):
            f.create_group(f"k{i}")["x"] = np.arange(3.0) + i
    report = h5guard.salvage([src], tmp_path / "out", timeout=60)
    assert [Path(f.path).name for f in report.files] == ["shard-x.h5.partial"]
    assert report.groups_recovered == 3 and report.exit_code == 0


def test_an_unreadable_file_says_its_results_are_unknown(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "worker_1.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 4000)
    report = h5guard.salvage([src], tmp_path / "out", timeout=60)
    text = report.render_text()
    assert "0 group(s) recovered, 0 lost" not in text
    assert "how many results it held is unknown; any it held are lost" in text
    assert "1 file(s) unreadable, their results unknown and lost" in text
    assert report.exit_code == 1 and report.files[0].to_dict()["results_unknown"] is True
