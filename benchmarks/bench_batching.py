"""Batch sizing: many tiny results through one long-lived writer vs one writer per result.

    python benchmarks/bench_batching.py [--results 2000]

Prints write, check and merge seconds of each pattern and their ratio (figures for
docs/guarantee.md). One writer per result makes one shard file per result.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from h5guard import ShardWriter, check, merge


def tiny(i: int) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    return {"x": np.asarray(float(i))}, {"status": "ok", "seed": i}


def run(directory: Path, n: int, *, per_result: bool) -> tuple[float, float, float, int]:
    t0 = time.perf_counter()
    if per_result:
        for i in range(n):
            with ShardWriter(directory) as w:
                w.add(f"r{i}", *tiny(i))
    else:
        with ShardWriter(directory, commit_every=100) as w:
            for i in range(n):
                w.add(f"r{i}", *tiny(i))
    t1 = time.perf_counter()
    files = len(list(directory.glob("*.h5")))
    assert check([directory]).ok
    t2 = time.perf_counter()
    out = directory.parent / f"{directory.name}.h5"
    assert merge(directory, out).exit_code == 0
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=int, default=2000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    try:
        rows = []
        for label, per_result in (("long-lived writer", False), ("writer per result", True)):
            d = root / label.replace(" ", "-")
            rows.append((label, *run(d, args.results, per_result=per_result)))
        for label, w, c, m, files in rows:
            print(
                f"{label:18s} {args.results} results  {files:6d} shard(s)  write {w:7.2f} s  check {c:7.2f} s  merge {m:7.2f} s"
            )
        (_, w0, c0, m0, _), (_, w1, c1, m1, _) = rows
        print(
            f"per-result / long-lived: write {w1 / w0:.1f}x  check {c1 / c0:.1f}x  merge {m1 / m0:.1f}x"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
