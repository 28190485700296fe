"""``check``, ``validate_many``, ``salvage`` (and ``expand_paths`` under them) take one path as well as a list of them.

A ``str`` is an iterable of strings: taken as a list, ``check("out.h5")`` checked the
files ``o``, ``u``, ``t``, ``.`` (the working directory), ``h`` and ``5`` and reported
them all NOT_FOUND or worse, a false alarm about a file that may be good.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import h5guard
from h5guard._check.api import expand_paths
from tests.crash._merge_child import write_shards


@pytest.fixture()
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_shards(tmp_path / "shards", range(4), per_shard=2)
    h5guard.merge(tmp_path / "shards", tmp_path / "out.h5", workers=1)
    monkeypatch.chdir(tmp_path)  # "." would be a directory full of other files
    (tmp_path / "notes.h5").write_bytes(b"not HDF5\n")
    return tmp_path / "out.h5"


@pytest.mark.parametrize("as_", [str, Path], ids=["str", "Path"])
def test_check_of_one_path_is_the_check_of_a_list_of_it(out: Path, as_: type) -> None:
    alone = h5guard.check(as_("out.h5"), workers=1)
    listed = h5guard.check(["out.h5"], workers=1)
    assert alone.ok and listed.ok
    assert [f.path for f in alone.files] == [f.path for f in listed.files] == ["out.h5"]
    assert alone.findings == listed.findings
    assert sorted(alone.files[0].groups) == [f"g{i}" for i in range(4)]


def test_check_of_one_bad_path_names_that_file_only(out: Path) -> None:
    report = h5guard.check("notes.h5", workers=1)
    assert not report.ok
    assert {f.path for f in report.findings} == {"notes.h5"}


@pytest.mark.parametrize("as_", [str, Path], ids=["str", "Path"])
def test_validate_many_and_expand_paths_take_one_path(out: Path, as_: type) -> None:
    report = h5guard.validate_many(as_("out.h5"), workers=1)
    assert report.ok and [f.path for f in report.files] == ["out.h5"]
    files, findings = expand_paths(as_("."))
    assert sorted(files) == ["notes.h5", "out.h5"] and findings == []


def test_salvage_takes_one_path(out: Path, tmp_path: Path) -> None:
    report = h5guard.salvage(Path("out.h5"), tmp_path / "saved", workers=1)
    assert sorted(report.files[0].recovered) == [f"g{i}" for i in range(4)]


def test_bytes_are_refused_with_what_to_pass_instead(out: Path) -> None:
    with pytest.raises(TypeError, match="expected a path or a list of paths as str, got bytes"):
        h5guard.check(b"out.h5")  # type: ignore[arg-type]
