"""Big datasets are chunked in pieces of about 1 MiB (still fletcher32): every reader of
h5guard's, the independent one included, and plain h5py read them back bit-exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import h5guard
from h5guard import ShardWriter
from h5guard._format.write import big_chunks

SHAPES: list[tuple[int, ...]] = [(700_000,), (300, 50, 40), (3, 2, 300_000)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_big_datasets_get_chunks_of_about_a_mebibyte_and_read_back(
    tmp_path: Path, shape: tuple[int, ...]
) -> None:
    values: Any = np.random.default_rng(len(shape)).random(shape)
    with ShardWriter(tmp_path / "tmp") as w:
        w.add("big", {"x": values, "g": {"y": values[..., ::-1].copy()}}, {"status": "ok"})
        w.add("small", {"x": np.arange(10.0)})
    [path] = w.committed
    chunks = big_chunks(shape, 8)
    assert chunks is not None
    assert 512 * 1024 <= 8 * np.prod(chunks) <= 1024 * 1024
    with h5py.File(path, "r") as f:
        assert f["big/x"].chunks == chunks and f["big/x"].fletcher32
        np.testing.assert_array_equal(f["big/x"][()], values)
    assert h5guard.check([path], workers=1).ok
    out = tmp_path / "out.h5"
    report = h5guard.merge(tmp_path / "tmp", out, workers=1)
    assert report.exit_code == 0, report.render_text()
    assert h5guard.check([out], workers=1).ok
    got = h5guard.read(out, "big")
    np.testing.assert_array_equal(got.datasets["x"], values)
    assert [r.key for r in h5guard.iter_results(out)] == ["big", "small"]


def test_small_and_odd_shapes_keep_h5py_s_guess() -> None:
    assert big_chunks((1000,), 8) is None
    assert big_chunks((0, 10**7), 8) is None
    # An element row bigger than the target: one row per chunk, cut further along.
    assert big_chunks((4, 2, 1_000_000), 8) == (1, 1, 131072)
