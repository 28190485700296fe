"""Scale: a synthetic sweep of many results (a trivial evaluator in place of PyWake)
written, merged and checked; peak memory, and the merge rate at N against 10,000.

    python benchmarks/bench_scale.py [--results 100000] [--per-shard 1000]

Targets: peak memory under 1 GB (this process and, separately, the largest checker
child), and the merge rate at N within 20 % of the rate at 10,000 results.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from h5guard import ShardWriter, check, merge


def write(directory: Path, n: int, per_shard: int) -> float:
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for start in range(0, n, per_shard):
        with ShardWriter(directory, commit_every=per_shard) as w:
            for i in range(start, min(n, start + per_shard)):
                w.add(
                    f"cfg-{i:08d}",
                    {
                        "layout": rng.random((16, 2)) * 1000,
                        "initial_layout": rng.random((16, 2)) * 1000,
                    },
                    {
                        "status": "ok",
                        "config": json.dumps({"seed": i}),
                        "aep_gwh": 400.0 + rng.random(),
                        "initial_aep_gwh": 380.0,
                        "iterations": 40,
                        "wall_time_s": 0.3,
                    },
                )
    return time.perf_counter() - t0


def peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def one(tmp: Path, n: int, per_shard: int) -> float:
    shards = tmp / f"shards-{n}"
    shards.mkdir()
    out = tmp / f"out-{n}.h5"
    wrote = write(shards, n, per_shard)
    t0 = time.perf_counter()
    report = merge(shards, out)
    merged = time.perf_counter() - t0
    assert report.exit_code == 0 and report.groups_total == n
    t0 = time.perf_counter()
    assert check([out]).ok
    checked = time.perf_counter() - t0
    print(
        f"{n:>8,} results: write {n / wrote:8,.0f}/s  merge {n / merged:8,.0f} groups/s  "
        f"check {n / checked:8,.0f} groups/s  output {out.stat().st_size / 2**20:7.1f} MiB"
    )
    return n / merged


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--per-shard", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as raw:
        tmp = Path(raw)
        base = one(tmp, 10_000, args.per_shard)
        rate = one(tmp, args.results, args.per_shard)
    print(f"merge rate at {args.results:,} / at 10,000: {rate / base:.2f} (target >= 0.8)")
    print(
        f"peak RSS: this process {peak_mib(resource.RUSAGE_SELF):.0f} MiB, "
        f"largest child {peak_mib(resource.RUSAGE_CHILDREN):.0f} MiB (target < 1024 MiB)"
    )


if __name__ == "__main__":
    main()
