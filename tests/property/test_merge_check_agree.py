"""Merge and check never contradict each other, and status predicts the merge exactly.

Random directories mix shards with and without a schema, failure records, duplicate
and conflicting keys, damaged files, journals of writers that died, foreign files.
Properties: a merge that exits 0 leaves an output that ``check`` passes (in fact every
output it writes passes); ``plan_merge`` (``h5guard status``) run just before predicts
what the merge adds, quarantines, recovers and reports lost, and its exit code.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from h5guard import MergeSourceError, Sandbox, Schema, ShardWriter, check, merge, plan_merge
from tests.conftest import FIXTURES

SCHEMA = Schema.from_dict(
    {
        "name": "points",
        "datasets": {"xy": {"dtype": "float", "shape": ["n", 2]}},
        "attrs": {"status": {"dtype": "string", "allowed": ["ok", "failed"]}},
    }
)

source = st.one_of(
    st.tuples(
        st.just("shard"),
        st.lists(st.integers(0, 9), min_size=1, max_size=4, unique=True),
        st.integers(0, 1),
        st.booleans(),
    ),
    st.tuples(
        st.just("failures"),
        st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True),
        st.just(0),
        st.just(False),
    ),
    st.tuples(
        st.just("dead-writer"),
        st.lists(st.integers(0, 9), min_size=1, max_size=4, unique=True),
        st.integers(0, 1),
        st.booleans(),
    ),
    st.tuples(st.just("truncated"), st.just([50]), st.just(0), st.just(True)),
    st.tuples(st.just("garbage"), st.just([]), st.just(0), st.just(False)),
    st.tuples(st.just("foreign"), st.just([]), st.just(0), st.just(False)),
)


def result(i: int, variant: int) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"xy": np.full((i + 1, 2), float(i + 10 * variant))}, {"status": "ok"}


def write(directory: Path, n: int, kind: str, keys: list[int], variant: int, schema: bool) -> None:
    prefix = f"s{n}"
    if kind == "shard":
        with ShardWriter(directory, schema=SCHEMA if schema else None, prefix=prefix) as w:
            for k in keys:
                w.add(f"g{k}", *result(k, variant))
    elif kind == "failures":  # failure records: no datasets, no schema
        with ShardWriter(directory, prefix=prefix) as w:
            for k in keys:
                w.add(f"g{k}", {}, {"status": "failed", "error": "ValueError: boom"})
    elif kind == "dead-writer":
        pid = os.fork()
        if pid == 0:  # add() never touches libhdf5: the child only journals, then dies
            try:
                w = ShardWriter(directory, schema=SCHEMA if schema else None, prefix=prefix)
                for k in keys:
                    w.add(f"g{k}", *result(k, variant))
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    elif kind == "truncated":
        with ShardWriter(directory, prefix=prefix) as w:
            w.add(f"g{keys[0]}", *result(keys[0], 0))
        [path] = w.committed
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "garbage":
        (directory / f"{prefix}.h5").write_bytes(b"worker log\n" * 30)
    elif kind == "foreign":
        shutil.copy(FIXTURES / "foreign.h5", directory / f"worker_{n}.h5")


@given(
    sources=st.lists(source, min_size=1, max_size=6),
    with_schema=st.booleans(),
    keep_existing=st.booleans(),
    second_round=st.booleans(),
)
def test_merge_exit_0_implies_check_passes_and_status_predicts_it(
    sandbox: Sandbox,
    sources: list[tuple[str, list[int], int, bool]],
    with_schema: bool,
    keep_existing: bool,
    second_round: bool,
) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        directory, out = root / "tmp", root / "out.h5"
        directory.mkdir()
        on_conflict = "keep-existing" if keep_existing else "quarantine"
        rounds = (
            [sources[: len(sources) // 2], sources[len(sources) // 2 :]]
            if second_round
            else [sources]
        )
        n = 0
        for batch in rounds:
            for kind, keys, variant, schema in batch:
                write(directory, n, kind, keys, variant, schema)
                n += 1
            options: dict[str, Any] = {
                "schema": SCHEMA if with_schema else None,
                "on_conflict": on_conflict,
                "sandbox": sandbox,
            }
            before = out.read_bytes() if out.exists() else None
            try:
                plan = plan_merge(directory, out, **options)
            except MergeSourceError as err:
                assert "h5guard salvage" in str(err)
                try:
                    merge(directory, out, **options)
                except MergeSourceError:
                    pass
                else:
                    raise AssertionError("status refused a directory that merge took") from err
                assert (out.read_bytes() if out.exists() else None) == before
                return
            report = merge(directory, out, **options)
            assert report.exit_code == plan.exit_code
            assert report.groups_added == plan.new_groups
            assert report.lost == plan.lost
            assert report.recovered == plan.recovered
            assert sorted(Path(q.path).name for q in report.quarantined) == sorted(
                Path(p).name for p in plan.quarantines
            )
            verdict = check([out], sandbox=sandbox)
            if report.exit_code == 0:
                assert verdict.ok, verdict.render_text()
            # Stronger: whatever the merge writes is an output check passes.
            assert verdict.ok, verdict.render_text()
    finally:
        shutil.rmtree(root, ignore_errors=True)
