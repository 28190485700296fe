from __future__ import annotations

import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from h5guard import (
    DuplicateKeyError,
    InsufficientSpaceError,
    InvalidKeyError,
    Schema,
    SchemaError,
    ShardWriter,
    UnsupportedValueError,
    WriteError,
    WriterClosedError,
    WriterTransferError,
    validate,
)
from h5guard._check.quick import quick_check
from h5guard._format.names import COMPACT_LIMIT, DIGEST_ATTR, SCHEMA_ATTR

SCHEMA = Schema.from_dict(
    {
        "name": "points",
        "datasets": {"xy": {"dtype": "float", "shape": ["n", 2], "finite": True}},
        "attrs": {"status": {"dtype": "string", "allowed": ["ok", "failed"]}},
    }
)


def shards(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix == ".h5")


def test_commit_makes_final_file_and_removes_journal(tmp_path: Path) -> None:
    with ShardWriter(tmp_path) as w:
        w.add("a", {"xy": np.zeros((3, 2))}, {"status": "ok"})
        [journal] = tmp_path.glob("*.journal")
        assert shards(tmp_path) == []
        assert list(tmp_path.glob("*.partial")) == []
    assert list(tmp_path.glob("*.partial")) == []
    assert not journal.exists()
    [final] = shards(tmp_path)
    assert w.committed == [final]
    assert quick_check(str(final))[0] == []
    with h5py.File(final, "r") as f:
        assert list(f) == ["a", "h5guard_summary"]
        assert f["a"].attrs[DIGEST_ATTR].startswith(b"sha256-v2:")


def test_exception_inside_with_keeps_what_was_added(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), ShardWriter(tmp_path, commit_every=2) as w:
        w.add("a", {"xy": np.zeros((1, 2))})
        w.add("b", {"xy": np.zeros((1, 2))})  # commits a+b
        w.add("c", {"xy": np.zeros((1, 2))})
        raise RuntimeError("boom")
    assert list(tmp_path.glob("*.partial")) == []
    assert list(tmp_path.glob("*.journal")) == []
    with h5py.File(shards(tmp_path)[0], "r") as f, h5py.File(shards(tmp_path)[1], "r") as g:
        assert sorted({*f, *g} - {"h5guard_summary"}) == ["a", "b", "c"]


def test_discard_is_explicit_and_drops_the_batch(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, commit_every=2) as w:
        w.add("a", {"v": np.arange(2)})
        w.add("b", {"v": np.arange(2)})  # committed
        w.add("c", {"v": np.arange(2)})
        w.discard()
    [final] = shards(tmp_path)
    with h5py.File(final, "r") as f:
        assert sorted(f) == ["a", "b", "h5guard_summary"]
    assert list(tmp_path.glob("*.journal")) == []


def test_commit_every_batches_and_names_are_unique(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, commit_every=3) as w:
        for i in range(7):
            w.add(f"k{i}", {"v": np.arange(i + 1)})
    files = shards(tmp_path)
    assert len(files) == 3
    assert len({f.name for f in files}) == 3
    assert sorted(w.committed_keys) == sorted(f"k{i}" for i in range(7))


def test_commit_interval_is_gone(tmp_path: Path) -> None:
    # Results are safe at add(); a time-based commit would need a thread inside every
    # worker (and a fork while it held libhdf5's lock would deadlock the child).
    with pytest.raises(TypeError, match="commit_interval"):
        ShardWriter(tmp_path, commit_interval=60)  # type: ignore[call-arg]


def test_hardened_layout(tmp_path: Path) -> None:
    small = np.arange(10.0)
    big = np.arange(COMPACT_LIMIT // 8 + 100, dtype=np.float64)
    with ShardWriter(tmp_path) as w:
        w.add("g", {"small": small, "big": big}, {"label": "naïve", "n": 3})
    [final] = shards(tmp_path)
    with h5py.File(final, "r") as f:
        assert f["g/small"].id.get_create_plist().get_layout() == h5py.h5d.COMPACT
        assert f["g/big"].fletcher32
        assert f["g/big"].chunks is not None
        label = f["g"].attrs.get_id("label")
        assert not label.get_type().is_variable_str()
        assert f["g"].attrs["label"].decode() == "naïve"
    assert final.read_bytes()[8] >= 2  # superblock v2+ carries a checksum


def test_schema_is_embedded_and_enforced(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, schema=SCHEMA) as w:
        w.add("ok", {"xy": np.ones((4, 2))}, {"status": "ok"})
        with pytest.raises(SchemaError, match=r"group bad/xy: SCHEMA_SHAPE"):
            w.add("bad", {"xy": np.ones((4, 3))}, {"status": "ok"})
        with pytest.raises(SchemaError, match="SCHEMA_NOT_FINITE"):
            w.add("nan", {"xy": np.full((1, 2), np.nan)}, {"status": "ok"})
        with pytest.raises(SchemaError, match="expected one of"):
            w.add("status", {"xy": np.ones((1, 2))}, {"status": "maybe"})
    [final] = shards(tmp_path)
    with h5py.File(final, "r") as f:
        assert Schema.from_json(f.attrs[SCHEMA_ATTR].decode()) == SCHEMA
        assert list(f) == ["h5guard_summary", "ok"]
    assert validate(final).ok


@pytest.mark.parametrize("key", ["", "a/b", "h5guard_x", ".", 5])
def test_bad_keys_are_refused(tmp_path: Path, key: object) -> None:
    with ShardWriter(tmp_path) as w, pytest.raises(InvalidKeyError):
        w.add(key, {"v": np.arange(2)})  # type: ignore[arg-type]


def test_unsupported_dtype_is_refused(tmp_path: Path) -> None:
    with ShardWriter(tmp_path) as w, pytest.raises(UnsupportedValueError, match="object array"):
        w.add("a", {"v": np.array([object()], dtype=object)})


def test_duplicate_key_is_refused_in_and_across_batches(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, commit_every=2) as w:
        w.add("a", {"v": np.arange(2)})
        with pytest.raises(DuplicateKeyError, match="already added by this writer"):
            w.add("a", {"v": np.arange(2)})
        w.add("b", {"v": np.arange(2)})  # commits a, b
        with pytest.raises(DuplicateKeyError):
            w.add("a", {"v": np.arange(3)})
    assert sorted(w.committed_keys) == ["a", "b"]


def test_a_writer_cannot_be_pickled(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path)
    with pytest.raises(WriterTransferError, match="create one ShardWriter in each worker"):
        pickle.dumps(w)
    assert isinstance(WriterTransferError("x"), TypeError)


def test_use_after_close(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path)
    w.close()
    with pytest.raises(WriterClosedError):
        w.add("a", {"v": np.arange(2)})


def test_full_disk_is_refused_before_writing(tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with ShardWriter(tmp_path, min_free=free + 1) as w:
        with pytest.raises(InsufficientSpaceError, match="not enough free space"):
            w.add("a", {"v": np.arange(2)})
        assert w.pending == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"commit_every": 0}, "commit_every"),
        ({"commit_every": True}, "commit_every"),
        ({"prefix": "a-b"}, "prefix"),
    ],
)
def test_bad_options(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ShardWriter(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_missing_directory_is_created_with_parents(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "a" / "b") as w:
        w.add("k", {"v": np.arange(2)})
    assert len(shards(tmp_path / "a" / "b")) == 1


def test_directory_that_cannot_be_made_is_a_write_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="expected a directory for shards"):
        ShardWriter(tmp_path / "file" / "sub")


@pytest.mark.parametrize("commit_every", [1, 3, 100])
def test_a_buffer_reused_after_add_returns_does_not_change_what_was_added(
    tmp_path: Path, commit_every: int
) -> None:
    """add() returns, then the caller overwrites its array for the next result: every
    result keeps the values it had at its own add() (regression: the commit wrote the
    caller's arrays, so earlier keys got the last values under their own digests)."""
    import h5guard

    buffer = np.zeros(4)
    with ShardWriter(tmp_path / "tmp", commit_every=commit_every) as writer:
        for i in range(5):
            buffer[:] = i
            writer.add(f"k{i}", {"x": buffer}, {"i": i})
    out = tmp_path / "out.h5"
    assert h5guard.merge(tmp_path / "tmp", out).exit_code == 0
    for i in range(5):
        result = h5guard.read(out, f"k{i}")
        np.testing.assert_array_equal(result.datasets["x"], np.full(4, float(i)))
