"""The deep check's fast path (h5guard's own reader plus libhdf5's header loads) must
never accept what the libhdf5-only path would reject: for intact files and for every
damaged variant, both paths give the same findings and the same accepted groups."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from h5guard import AttrSpec, Dataset, DatasetSpec, Group, GroupSpec, Schema, ShardWriter, merge
from h5guard._check import deep, own
from h5guard.report import FileSummary, Finding

SCHEMA = Schema(
    "fast-check",
    datasets={"layout": DatasetSpec(dtype="float64", shape=("n", 2), finite=True)},
    attrs={
        "status": AttrSpec(dtype="string", allowed=("ok", "failed")),
        "aep": AttrSpec(dtype="float"),
        "seed": AttrSpec(dtype="int"),
    },
)


def write_shard(directory: Path, first: int, n: int = 4) -> Path:
    rng = np.random.default_rng(first)
    with ShardWriter(directory, schema=SCHEMA, prefix="f") as w:
        for i in range(first, first + n):
            w.add(
                f"cfg-{i:04d}",
                {"layout": rng.random((8 + i % 5, 2)) * 1000.0},
                {
                    "status": "ok",
                    "aep": float(rng.random() * 400),
                    "seed": i,
                    **{f"extra{j:02d}": float(j) for j in range(12)},
                },
            )
    [path] = w.committed
    return path


TREE_SCHEMA = Schema(
    "fast-check-trees",
    datasets={"layout": DatasetSpec(dtype="float64", attrs={"units": AttrSpec(dtype="str")})},
    groups={
        "history": GroupSpec(
            datasets={"loss": DatasetSpec(dtype="float64", shape=("n",))},
            attrs={"optimizer": AttrSpec(allowed=("adam", "sgd"))},
            groups={"last": GroupSpec(datasets={"step": DatasetSpec(dtype="int")})},
        )
    },
)


def write_tree_shard(directory: Path, n: int = 4) -> Path:
    """Results that are trees: the byte reader takes those too (nested groups, attributes)."""
    rng = np.random.default_rng(7)
    with ShardWriter(directory, schema=TREE_SCHEMA, prefix="t") as w:
        for i in range(n):
            history = Group(
                {"loss": rng.random(5 + i), "last": {"step": i}},
                {"optimizer": "adam" if i % 2 else "sgd"},
            )
            w.add(
                f"tree-{i}",
                {"layout": Dataset(rng.random((4, 2)), {"units": "m"}), "history": history},
                {"seed": i},
            )
    [path] = w.committed
    return path


class Originals:
    """The intact files (a short repr: Hypothesis prints the arguments of a failure)."""

    def __init__(self, shard: Path, output: Path, trees: Path) -> None:
        self._bytes = {
            "shard": shard.read_bytes(),
            "output": output.read_bytes(),
            "trees": trees.read_bytes(),
        }

    def __getitem__(self, kind: str) -> bytes:
        return self._bytes[kind]

    def __repr__(self) -> str:
        return "Originals(shard, output, trees)"


@pytest.fixture(scope="module")
def files() -> Iterator[Originals]:
    tmp = Path(tempfile.mkdtemp(prefix="fastcheck-"))
    try:
        shard = write_shard(tmp, 0)
        shards = tmp / "shards"
        shards.mkdir()
        write_shard(shards, 10)
        write_shard(shards, 20)
        merge(shards, tmp / "out.h5")
        yield Originals(shard, tmp / "out.h5", write_tree_shard(tmp / "trees"))
    finally:
        shutil.rmtree(tmp)


def both_paths(
    path: str, monkeypatch: pytest.MonkeyPatch, schema_json: str | None = None
) -> tuple[tuple[list[Finding], FileSummary], tuple[list[Finding], FileSummary], int]:
    accepted: list[str] = []
    real_accept = own._FastGroups.accept

    def counting(self: own._FastGroups, ins: object, f: object, key: str) -> bool:
        ok = real_accept(self, ins, f, key)  # type: ignore[arg-type]
        if ok:
            accepted.append(key)
        return ok

    with monkeypatch.context() as m:
        m.setattr(own._FastGroups, "accept", counting)
        fast = deep.inspect_file(path, schema_json)
    with monkeypatch.context() as m:
        m.setattr(own, "_fast_groups", lambda _path: None)
        slow = deep.inspect_file(path, schema_json)
    return fast, slow, len(accepted)


def same(a: tuple[list[Finding], FileSummary], b: tuple[list[Finding], FileSummary]) -> bool:
    return sorted(a[0]) == sorted(b[0]) and a[1] == b[1]


@pytest.mark.parametrize("kind", ["shard", "output", "trees"])
def test_intact_files_take_the_fast_path_with_the_same_result(
    kind: str, files: Originals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"{kind}.h5"
    path.write_bytes(files[kind])
    fast, slow, accepted = both_paths(str(path), monkeypatch)
    assert same(fast, slow)
    assert fast[0] == [] and len(fast[1].groups) == accepted == (8 if kind == "output" else 4)


def test_schema_violations_are_left_to_the_libhdf5_path(
    files: Originals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shard.h5"
    path.write_bytes(files["shard"])
    stricter = Schema(
        "fast-check",
        datasets={"layout": DatasetSpec(dtype="float64", shape=(8, 2))},
        attrs={"seed": AttrSpec(dtype="int", allowed=(0, 1, 2))},
    )
    fast, slow, accepted = both_paths(str(path), monkeypatch, stricter.to_json())
    assert same(fast, slow)
    assert accepted == 1  # only cfg-0000 has 8 rows and an allowed seed
    assert {f.obj for f in fast[0] if f.code.startswith("SCHEMA_")} >= {"/cfg-0001/layout"}


def test_nested_schema_violations_are_left_to_the_libhdf5_path(
    files: Originals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "trees.h5"
    path.write_bytes(files["trees"])
    stricter = Schema(
        "fast-check-trees",
        groups={
            "history": GroupSpec(
                attrs={"optimizer": AttrSpec(allowed=("adam",))},
                groups={"last": GroupSpec(datasets={"step": DatasetSpec(dtype="float")})},
            )
        },
    )
    fast, slow, accepted = both_paths(str(path), monkeypatch, stricter.to_json())
    assert same(fast, slow)
    assert accepted == 0  # every tree breaks a nested rule
    found = {(f.obj, f.code) for f in fast[0] if f.code.startswith("SCHEMA_")}
    assert ("/tree-0/history", "SCHEMA_VALUE") in found  # optimizer "sgd"
    assert ("/tree-1/history/last/step", "SCHEMA_DTYPE") in found


@pytest.mark.parametrize("kind", ["shard", "output", "trees"])
@given(
    flips=st.lists(st.tuples(st.integers(0, 2**24), st.integers(1, 255)), min_size=1, max_size=3)
)
def test_damage_anywhere_gives_the_same_findings_on_both_paths(
    kind: str, files: Originals, flips: list[tuple[int, int]]
) -> None:
    raw = bytearray(files[kind])
    for offset, mask in flips:
        raw[offset % len(raw)] ^= mask
    tmp = tempfile.mkdtemp(prefix="fastcheck-")
    try:
        path = Path(tmp) / "damaged.h5"
        path.write_bytes(bytes(raw))
        with pytest.MonkeyPatch.context() as monkeypatch:
            fast, slow, _ = both_paths(str(path), monkeypatch)
        assert same(fast, slow), (flips, fast[0], slow[0])
    finally:
        shutil.rmtree(tmp)
