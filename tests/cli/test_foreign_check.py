"""``h5guard check`` on real files h5guard did not write (issue #15).

``fixtures/foreign/`` holds the few files of the shared corpus that pin each cause of a
false alarm or a missed damage found so far (see ``fixtures/README.md``); the shared
corpus itself, when present beside the repository, is checked whole.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from campaigns.foreign_corpus import check_corpus, disagreement, load_verdicts
from h5guard import Code, Report, Sandbox, Severity, validate_many
from h5guard._check.foreign import block_shape, iter_regions

REPO = Path(__file__).resolve().parents[2]
FOREIGN = REPO / "fixtures" / "foreign"
CORPUS = REPO.parent / "shared" / "corpus" / "foreign"
HAVE_PLUGINS = importlib.util.find_spec("hdf5plugin") is not None


@pytest.fixture(scope="module")
def report() -> Report:
    paths = sorted(str(p) for p in FOREIGN.glob("*.h5"))
    return validate_many(paths, timeout=30, workers=2)


def findings(report: Report, name: str, *, code: Code | None = None) -> list[str]:
    path = str(FOREIGN / name)
    return [
        f"{f.obj}: {f.code} {f.severity} {f.message}"
        for f in report.findings
        if f.path == path and (code is None or f.code is code)
    ]


def failing(report: Report, name: str) -> list[str]:
    path = str(FOREIGN / name)
    return [str(f) for f in report.findings if f.path == path and f.severity >= Severity.WARNING]


def test_every_fixture_agrees_with_its_verdict(report: Report) -> None:
    verdicts = load_verdicts(FOREIGN)
    assert len(verdicts) == len(list(FOREIGN.glob("*.h5")))
    wrong = []
    for v in verdicts:
        got = [f for f in report.findings if f.path == str(FOREIGN / v.name)]
        why = disagreement(v.verdict, got)
        if why is not None:
            wrong.append(f"{why}: {v.name} ({v.verdict}): {[str(f) for f in got]}")
    assert wrong == []


def test_array_datatypes_are_read(report: Report) -> None:
    assert failing(report, "hdf5__tarray1.h5") == []
    with h5py.File(FOREIGN / "hdf5__tarray1.h5") as f:
        assert f["Dataset1"].dtype.subdtype is not None  # what the fixture pins


@pytest.mark.parametrize("name", ["hdf5__tloop.h5", "hdf5__tudlink.h5"])
def test_cycles_and_user_defined_links_pass(report: Report, name: str) -> None:
    assert failing(report, name) == []


def test_user_defined_links_are_notes(report: Report) -> None:
    notes = findings(report, "hdf5__tudlink.h5", code=Code.LINK_NOT_FOLLOWED)
    assert notes and all("user-defined link" in n and " info " in n for n in notes)


def test_soft_and_external_links_are_notes_at_every_depth(report: Report) -> None:
    soft = findings(report, "hdf5__h5diff_softlinks.h5", code=Code.LINK_NOT_FOLLOWED)
    assert any("/softlink_noexist" in n for n in soft)
    [external] = findings(report, "pytables__elink.h5", code=Code.LINK_NOT_FOLLOWED)
    assert external.startswith("/pep/pep2:") and "external link to elink2.h5" in external
    assert failing(report, "pytables__elink.h5") == []


def test_committed_datatypes_are_notes(report: Report) -> None:
    [note] = findings(report, "hdf5__tnamed_dtype_attr.h5", code=Code.COMMITTED_DATATYPE)
    assert note.startswith("/Datatype:") and " info " in note


def test_bytes_past_eof_of_a_foreign_file_are_a_note(report: Report) -> None:
    [note] = findings(report, "pytables__vlstr_attr.h5", code=Code.TRAILING_DATA)
    assert " info " in note and "6 bytes" in note


def test_v2_write_flags_are_a_note_v3_an_error_and_damage_still_shows(report: Report) -> None:
    [v2] = findings(report, "hdf5__h5clear_sec2_v2.h5", code=Code.OPEN_FOR_WRITE)
    assert " info " in v2
    [v3] = findings(report, "hdf5__latest_h5clear_sec2_v3.h5", code=Code.OPEN_FOR_WRITE)
    assert " error " in v3
    # Damaged behind the v2 flags: the flag note does not stop the deep layer.
    assert findings(report, "hdf5cve__cve-2020-10810.h5", code=Code.UNREADABLE)


def test_sparse_datasets_read_only_their_allocated_chunks(report: Report) -> None:
    [note] = findings(report, "hdf5__tbigdims.h5", code=Code.UNALLOCATED_DATA)
    assert "4194303 of 4194305 chunk(s) never written" in note
    assert failing(report, "hdf5__h5repack_layouto.h5") == []
    assert findings(report, "hdf5__h5repack_layouto.h5", code=Code.UNALLOCATED_DATA)


@pytest.mark.parametrize(
    ("name", "where", "text"),
    [
        ("hdf5cve__cve-2024-32608.h5", "/group_main/dset_main", "attribute"),
        ("hdf5cve__cve-2018-13871.h5", "/old", "object header"),
        ("hdf5cve__gh-4431-poc-03.h5", "/", "object header"),
        ("hdf5pure__dense_attrs_colliding_v0_28_0.h5", "/", "cannot be opened by name"),
        ("hdf5cve__cve-2018-14034.h5", "/", "group properties"),
        ("hdf5__h5repack_ext.h5", "/external", "external file(s) that do not exist"),
    ],
)
def test_deep_damage_is_an_error_naming_the_object(
    report: Report, name: str, where: str, text: str
) -> None:
    errors = findings(report, name, code=Code.OBJECT_UNREADABLE)
    assert any(e.startswith(f"{where}: ") and text in e for e in errors), errors


def test_missing_filter_is_named(report: Report) -> None:
    [missing] = findings(report, "hdf5__tfilters.h5", code=Code.FILTER_MISSING)
    assert "filter 405" in missing and " error " in missing
    blosc = findings(report, "hdf5__h5ex_d_blosc.h5", code=Code.FILTER_MISSING)
    if HAVE_PLUGINS:
        assert failing(report, "hdf5__h5ex_d_blosc.h5") == []
    else:
        assert blosc and "blosc" in blosc[0] and "hdf5plugin" in blosc[0]


def test_missing_filter_names_hdf5plugin_when_it_is_not_installed(tmp_path: Path) -> None:
    """A fresh interpreter where ``import hdf5plugin`` fails, whether or not it is installed."""
    blocker = tmp_path / "hdf5plugin.py"
    blocker.write_text("raise ImportError('hidden for this test')\n")
    code = (
        "import sys; from h5guard._check.deep import inspect_file; "
        f"fs, _ = inspect_file({str(FOREIGN / 'hdf5__h5ex_d_blosc.h5')!r}); "
        "print([f.message for f in fs if f.code == 'FILTER_MISSING'])"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "HDF5_PLUGIN_PATH": str(tmp_path), "PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "filter 32001 (blosc)" in proc.stdout
    assert "the hdf5plugin package provides it (pip install hdf5plugin)" in proc.stdout


def test_a_child_that_saw_heap_damage_is_not_reused() -> None:
    """Reading region references corrupts the heap (h5py 3.16 / HDF5 2.0): the next file
    must get a fresh child, and its verdict must be the one it gets alone."""
    refs = str(FOREIGN / "hdf5__h5repack_attr_refs.h5")
    good = str(FOREIGN / "hdf5__tarray1.h5")
    with Sandbox(workers=1, timeout=30) as box:
        together = validate_many([refs, good, refs, good], sandbox=box)
        assert box.retired >= 2
    alone = validate_many([good], workers=1)
    for_good = {(f.obj, f.code) for f in together.findings if f.path == good}
    assert for_good == {(f.obj, f.code) for f in alone.findings}
    assert not [f for f in together.findings if f.code is Code.CHECKER_CRASHED]


def test_a_crash_is_contained_and_the_next_file_is_unaffected() -> None:
    crash = str(FOREIGN / "hdf5cve__cve-2024-32609.h5")
    good = str(FOREIGN / "hdf5__tloop.h5")
    report = validate_many([crash, good], workers=1, timeout=30)
    assert Code.CHECKER_CRASHED in {f.code for f in report.for_path(crash)}
    assert [f for f in report.for_path(good) if f.severity >= Severity.WARNING] == []


def test_strict_turns_structural_notes_into_warnings() -> None:
    path = str(FOREIGN / "pytables__elink.h5")
    assert validate_many([path]).ok
    strict = validate_many([path], strict=True)
    assert not strict.ok
    assert {f.code for f in strict.findings if f.severity is Severity.WARNING} == {
        Code.LINK_NOT_FOLLOWED,
        Code.TRAILING_DATA,
    }


# -- bounded reads along any axis ---------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "itemsize", "limit"),
    [((10, 10), 8, 80), ((3, 1000), 1, 100), ((2, 3, 4), 4, 7), ((5,), 8, 1), ((1, 1, 9), 2, 4)],
)
def test_blocks_tile_the_box_within_the_limit(
    shape: tuple[int, ...], itemsize: int, limit: int
) -> None:
    block = block_shape(shape, itemsize, limit)
    assert int(np.prod(block)) * itemsize <= max(limit, itemsize)
    seen = np.zeros(shape, dtype=int)
    for offset, count in iter_regions((0,) * len(shape), shape, block):
        seen[tuple(slice(o, o + c) for o, c in zip(offset, count, strict=True))] += 1
    assert (seen == 1).all()


def test_a_huge_single_row_is_read_in_bounded_blocks(tmp_path: Path) -> None:
    """One row bigger than the memory limit: the old reader split only along axis 0."""
    path = tmp_path / "wide.h5"
    with h5py.File(path, "w") as f:  # 64 MiB of zeros in one row, 2 MiB compressed chunks
        f.create_dataset(
            "wide", shape=(1, 1 << 23), dtype="f8", chunks=(1, 1 << 18), compression="gzip"
        )[0, ::4096] = 1.0
    report = validate_many([str(path)], memory_limit=48 * 1024**2, timeout=60)
    assert report.ok, report.render_text()


# -- the shared corpus --------------------------------------------------------------------
@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not present at {CORPUS}")
def test_shared_corpus_verdicts_agree() -> None:
    """Every file of ../shared/corpus/foreign agrees with VERDICTS.tsv, in one many-file call."""
    verdicts = load_verdicts(CORPUS)
    result = check_corpus(CORPUS, verdicts, timeout=120, workers=2)
    assert result.problems == []
    assert result.total.files == len(verdicts)
