"""The published IEA37 layouts, read from their package data file."""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optimizer import published
from optimizer.published import PUBLISHED_DESCRIPTIONS, PUBLISHED_ENTRIES, published_layout

REPO = Path(__file__).resolve().parents[2]
# The last commit where the coordinates were Python literals in optimizer/published.py.
LITERALS_COMMIT = "e1b466f"
# sha256 of published_layout(entry, n).tobytes() as the literal module returned it (float64,
# C order, x then y per turbine): the data file must give back the same bits.
DIGESTS = {
    ("baseline", 16): "6c682569181384002ea58491e0137ec88d3c219c3559c18f3c9a3aaf8a3db65a",
    ("baseline", 36): "c1ee46c08bc8954481860a3f46e1ec7f7e015225362d48e90ee3b4e669adbd4d",
    ("baseline", 64): "14e8b9b44cc0edfb318e93af7e81722ab1dcaa965fd3e284fd6f713659edb0ce",
    ("par4", 16): "cdc8d0809fde8b70016e848bd5dbf20b404e9cb0c549e47ee20f090b107aec46",
    ("par4", 36): "3759bfb03ba368f5c48ae2db9fa2914d2703e278d0590afafc1840a65f045584",
    ("par4", 64): "22f4f7c83c4fc05d1c19d07d16d99cac02ef098d3e984ec23577c6e273dddf29",
    ("par12", 16): "670adaea81299989aa6bfbfb0f164664c52a3f296daac0fde8acedcfcee5b4a4",
    ("par12", 36): "d5ea28ae2ade2202b6be357c0fd2104726f9c0247afc7f0e21c4124befe56a18",
    ("par12", 64): "8b37a07f58a74a4abc25bd76934030d4bd36ca52beeb368a4943ccd6768186df",
}


@pytest.mark.parametrize(("entry", "n"), sorted(DIGESTS))
def test_layouts_are_bit_for_bit_the_old_literals(entry: str, n: int) -> None:
    layout = published_layout(entry, n)
    assert layout.shape == (n, 2) and layout.dtype == np.float64
    assert layout.flags.c_contiguous and not layout.flags.writeable
    assert hashlib.sha256(layout.tobytes()).hexdigest() == DIGESTS[(entry, n)]


def _old_module() -> dict[str, Any]:
    proc = subprocess.run(
        ["git", "show", f"{LITERALS_COMMIT}:optimizer/published.py"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"git history with commit {LITERALS_COMMIT} not available")
    namespace: dict[str, Any] = {"__name__": "old_published"}
    exec(compile(proc.stdout, "old_published.py", "exec"), namespace)
    return namespace


def test_layouts_equal_the_old_module_from_git() -> None:
    old = _old_module()
    assert tuple(old["PUBLISHED_ENTRIES"]) == PUBLISHED_ENTRIES
    assert dict(old["PUBLISHED_DESCRIPTIONS"]) == dict(PUBLISHED_DESCRIPTIONS)
    assert set(old["_COORDINATES"]) == set(DIGESTS)
    for (entry, n), (xs, ys) in old["_COORDINATES"].items():
        new = published_layout(entry, n)
        assert new.tobytes() == old["published_layout"](entry, n).tobytes()
        assert tuple(new[:, 0].tolist()) == xs and tuple(new[:, 1].tolist()) == ys


def test_the_data_file_keeps_its_attribution() -> None:
    doc = json.loads(
        resources.files("optimizer").joinpath(published.DATA_FILE).read_text(encoding="utf-8")
    )
    assert "IEAWindTask37/iea37-wflo-casestudies" in doc["source"]
    assert "Baker et al." in doc["reference"] and doc["units"] == "metres"
    assert list(doc["entries"]) == list(PUBLISHED_ENTRIES)


def test_unknown_layout_names_what_exists() -> None:
    with pytest.raises(ValueError, match=r"'par99' with 16"):
        published_layout("par99", 16)
    with pytest.raises(ValueError, match=r"16, 36 or 64 turbines, got 'par4' with 20"):
        published_layout("par4", 20)
