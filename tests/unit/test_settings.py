"""``H5GUARD_*`` settings from the environment: a value h5guard cannot use is refused
before the merge locks or writes anything, with one line that names the variable, what
was expected and what was found, and a non-zero exit from the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import h5guard
from h5guard import SettingError
from h5guard._merge import fold, run
from tests.crash._merge_child import output_index, sha256_file, write_shards
from tests.hostile._helpers import run_cli

BAD = [
    (fold.FANOUT_ENV, "x", "a whole number >= 2 (0: off)"),
    (fold.FANOUT_ENV, "1", "a whole number >= 2 (0: off)"),
    (run.THRESHOLD_ENV, "-5", "a number of bytes >= 0"),
    (run.THRESHOLD_ENV, "64MiB", "a number of bytes >= 0"),
]


@pytest.fixture()
def segmented(tmp_path: Path) -> tuple[Path, Path]:
    """A segmented output and new shards for it."""
    write_shards(tmp_path / "a", range(0, 4), per_shard=2)
    h5guard.merge(tmp_path / "a", tmp_path / "out.h5", workers=1, layout="segmented")
    write_shards(tmp_path / "b", range(10, 14), per_shard=2)
    return tmp_path / "out.h5", tmp_path / "b"


@pytest.fixture(params=BAD, ids=lambda bad: f"{bad[0]}={bad[1]}")
def bad_setting(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """One bad value, set in this process's environment (the CLI's child gets it too)."""
    name, value, expected = request.param
    monkeypatch.setenv(name, value)
    return name, value, expected


def test_a_bad_setting_is_refused_before_the_merge_touches_anything(
    segmented: tuple[Path, Path], bad_setting: tuple[str, ...]
) -> None:
    (out, shards), (name, value, expected) = segmented, bad_setting
    before, listing = sha256_file(out), sorted(os.listdir(out.parent))
    with pytest.raises(SettingError) as err:
        h5guard.merge(shards, out, workers=1)
    assert isinstance(err.value, ValueError)
    assert str(err.value).startswith(f"${name}: expected {expected}, got {value!r}")
    assert sha256_file(out) == before and sorted(os.listdir(out.parent)) == listing
    assert len(list(shards.glob("*.h5"))) == 2


def test_the_cli_says_it_in_one_line_and_exits_2(
    segmented: tuple[Path, Path], bad_setting: tuple[str, ...]
) -> None:
    (out, shards), (name, _, expected) = segmented, bad_setting
    proc = run_cli("merge", shards, "-o", out)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"h5guard: error: ${name}: expected {expected}")


def test_good_values_and_blanks_are_taken(
    segmented: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, shards = segmented
    monkeypatch.setenv(fold.FANOUT_ENV, " 2 ")
    monkeypatch.setenv(run.THRESHOLD_ENV, "")
    assert (fold.fanout(), run.segment_threshold()) == (2, run.SEGMENT_THRESHOLD)
    h5guard.merge(shards, out, workers=1)
    assert sorted(output_index(out)) == sorted(f"g{i}" for i in (*range(4), *range(10, 14)))
