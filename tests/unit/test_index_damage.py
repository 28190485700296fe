"""``check`` of a segmented output whose index is damaged: never a traceback, and never
a pass unless every result still reads back as it was written.

The index is read through libhdf5, which may raise, crash or hang on damaged metadata as
on any file: ``check`` reads it in its sandbox. A bit flipped in the index's link
B-tree made ``check`` raise ``RuntimeError: Link iteration failed`` before.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import h5guard
from h5guard import Sandbox
from h5guard.report import Code
from tests.crash._merge_child import expected_digest, output_index, write_shards
from tests.hostile._helpers import run_cli

KEYS = [*range(0, 6), *range(10, 16), *range(20, 26)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A segmented output of three segments (a file turned into an index, two merges)."""
    d = tmp_path_factory.mktemp("pristine")
    write_shards(d / "a", range(0, 6), per_shard=3)
    h5guard.merge(d / "a", d / "out.h5", workers=1, layout="single")
    for m in range(2):
        write_shards(d / f"b{m}", range(10 + 10 * m, 16 + 10 * m), per_shard=3)
        h5guard.merge(d / f"b{m}", d / "out.h5", workers=1, layout="segmented")
    assert h5guard.check(d / "out.h5").ok
    return d


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with Sandbox(workers=1, timeout=30) as sandbox:
        yield sandbox


def fresh_copy(pristine: Path, where: Path) -> Path:
    where.mkdir()
    shutil.copy2(pristine / "out.h5", where / "out.h5")
    shutil.copytree(pristine / "out.h5.segments", where / "out.h5.segments")
    return where / "out.h5"


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def intact(out: Path) -> bool:
    """Every result reads back through the index with the digest it was written with."""
    try:
        return output_index(out) == {f"g{i}": expected_digest(i) for i in KEYS}
    except Exception:
        return False


def test_every_flipped_byte_of_the_index_is_found_or_harmless(
    pristine: Path, tmp_path: Path, box: Sandbox
) -> None:
    size = os.path.getsize(pristine / "out.h5")
    flagged = 0
    for offset in range(0, size, 29):
        out = fresh_copy(pristine, tmp_path / f"flip{offset}")
        flip(out, offset)
        report = h5guard.check(out, sandbox=box)  # never raises
        if report.ok:
            assert intact(out), f"byte {offset}: check passed, but the results changed"
        else:
            flagged += 1
            assert any(f.path.startswith(str(out)) for f in report.findings), offset
        shutil.rmtree(out.parent)
    assert flagged > size // 29 // 2  # most of an index is checksummed metadata


def test_a_truncated_index_is_never_a_pass(pristine: Path, tmp_path: Path, box: Sandbox) -> None:
    size = os.path.getsize(pristine / "out.h5")
    for cut in (0, 8, 100, size // 2, size - 1):
        out = fresh_copy(pristine, tmp_path / f"cut{cut}")
        os.truncate(out, cut)
        report = h5guard.check(out, sandbox=box)
        assert not report.ok, cut
        assert {f.path for f in report.findings} == {str(out)}, report.render_text()


def test_an_index_whose_links_cannot_be_listed_names_salvage_and_salvage_recovers_all(
    pristine: Path, tmp_path: Path, box: Sandbox
) -> None:
    # Find a byte whose flip breaks the listing of the links (the index's B-tree).
    size = os.path.getsize(pristine / "out.h5")
    for offset in range(size - 1, 0, -7):
        out = fresh_copy(pristine, tmp_path / f"f{offset}")
        flip(out, offset)
        report = h5guard.check(out, sandbox=box)
        unreadable = [f for f in report.findings if "index could not be read" in f.message]
        if unreadable:
            break
        shutil.rmtree(out.parent)
    else:
        pytest.fail("no flip of the index broke its link listing")
    assert unreadable[0].code is Code.UNREADABLE and unreadable[0].path == str(out)
    assert "h5guard compact" in unreadable[0].message
    assert "h5guard salvage" in unreadable[0].message
    proc = run_cli("check", out)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    # What the message says to do, done both ways: every result comes back.
    segments = sorted(str(p) for p in (out.parent / "out.h5.segments").glob("seg-*.h5"))
    h5guard.salvage(segments, tmp_path / "saved", workers=1)
    h5guard.merge(tmp_path / "saved", tmp_path / "new.h5", workers=1)
    assert output_index(tmp_path / "new.h5") == {f"g{i}": expected_digest(i) for i in KEYS}
    h5guard.compact(out)
    assert intact(out) and h5guard.check(out, sandbox=box).ok


def test_an_index_whose_root_libhdf5_cannot_open_says_where_the_results_are(
    pristine: Path, tmp_path: Path, box: Sandbox
) -> None:
    """Its root object header damaged, the index is no index to libhdf5 and is checked as
    any file: unreadable, and not "readable, but ..." (it said so before), with the
    segments beside it named; what it says to do brings every result back."""
    out = fresh_copy(pristine, tmp_path / "root")
    with open(out, "rb") as fh:
        root_header = fh.read(4096).index(b"OHDR")
    flip(out, root_header + 6)
    report = h5guard.check(out, sandbox=box)
    assert not report.ok
    assert [f.code for f in report.findings] == [Code.UNREADABLE]
    message = report.findings[0].message
    assert f"{out}.segments is beside it" in message and "h5guard salvage" in message
    proc = run_cli("check", out)
    assert proc.returncode == 1 and "NO_DIGESTS" not in proc.stdout
    segments = sorted(str(p) for p in (out.parent / "out.h5.segments").glob("seg-*.h5"))
    h5guard.salvage(segments, tmp_path / "saved", workers=1)
    h5guard.merge(tmp_path / "saved", tmp_path / "new.h5", workers=1)
    assert output_index(tmp_path / "new.h5") == {f"g{i}": expected_digest(i) for i in KEYS}


def test_a_foreign_file_whose_root_cannot_be_read_is_not_called_readable(
    tmp_path: Path, box: Sandbox
) -> None:
    import h5py

    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f["x"] = [1, 2, 3]
    with open(path, "rb") as fh:
        root_header = fh.read(4096).index(b"OHDR")
    flip(path, root_header + 6)
    report = h5guard.check(path, sandbox=box)
    assert [f.code for f in report.findings] == [Code.UNREADABLE]
    assert "segments" not in report.findings[0].message


def test_a_reader_of_the_index_that_hangs_is_a_finding_not_a_hang(tmp_path: Path) -> None:
    """A FIFO where the index would be, its segment directory beside it: libhdf5 in the
    child blocks opening it for ever. That is a TIMEOUT finding on it, and it is not
    opened again as a plain file (which would block the caller)."""
    out = tmp_path / "out.h5"
    os.mkfifo(out)
    (tmp_path / "out.h5.segments").mkdir()
    report = h5guard.check(out, timeout=2, workers=1)
    assert not report.ok
    assert [(f.path, f.code) for f in report.findings] == [(str(out), Code.TIMEOUT)]
    assert report.files == ()
