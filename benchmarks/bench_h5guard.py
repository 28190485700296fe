"""What h5guard's safety costs, each figure a ratio against a baseline run in the same process.

    python benchmarks/bench_h5guard.py [--groups 1000] [--files 1000] [--big-mb 1024]

* writer: ShardWriter (digests, hardened layout, atomic commit at the default policy)
  against writing the same groups straight into an open h5py file;
* check: `h5guard check` (deep, sandboxed, digests) on many shard files against an
  unsandboxed in-process full read of the same files with h5py;
* quick layer: files per second;
* one big file: check against a plain h5py full read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from h5guard import ShardWriter, check
from h5guard._check.quick import quick_check


def result(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    rng = np.random.default_rng(i)
    datasets = {"layout": rng.random((16, 2)) * 1000, "initial_layout": rng.random((16, 2)) * 1000}
    attrs: dict[str, Any] = {
        "status": "ok",
        "config": json.dumps({"site": "iea37", "n_turbines": 16, "seed": i}),
        "aep_gwh": 400.0 + rng.random(),
        "initial_aep_gwh": 380.0,
        "iterations": 40,
        "wall_time_s": 0.3,
    }
    return datasets, attrs


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def write_plain(path: Path, groups: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    with h5py.File(path, "w") as f:
        for key, datasets, attrs in groups:
            g = f.create_group(key)
            for name, arr in datasets.items():
                g.create_dataset(name, data=arr)
            for name, value in attrs.items():
                g.attrs[name] = value


def bench_writer(tmp: Path, n: int) -> None:
    groups = [(f"cfg-{i:08d}", *result(i)) for i in range(n)]

    def plain() -> None:
        write_plain(tmp / "plain.h5", groups)

    def guarded() -> None:
        d = tmp / "shards"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        with ShardWriter(d) as w:
            for key, datasets, attrs in groups:
                w.add(key, datasets, attrs)

    # Alternated, best of five each: on a shared machine a burst of load during one
    # side's runs would otherwise decide the ratio.
    bases, ours_ = [], []
    for _ in range(5):
        bases.append(timed(plain, repeat=1))
        ours_.append(timed(guarded, repeat=1))
    base, ours = min(bases), min(ours_)
    print(
        f"writer: {n} groups  h5py {base * 1e3:8.1f} ms  ShardWriter {ours * 1e3:8.1f} ms  ratio {ours / base:.2f}x (target <= 1.10)"
    )


def read_all(path: str) -> None:
    def visit(_: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            obj[()]
        for name in obj.attrs:
            obj.attrs[name]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
        for name in f.attrs:
            f.attrs[name]


def bench_check(tmp: Path, files: int) -> list[str]:
    d = tmp / "many"
    d.mkdir()
    for i in range(files):
        with ShardWriter(d, commit_every=10) as w:
            for j in range(10):
                w.add(f"cfg-{i:05d}-{j}", *result(i * 10 + j))
    paths = sorted(str(p) for p in d.glob("*.h5"))

    def in_process() -> None:
        for p in paths:
            read_all(p)

    def sandboxed() -> None:
        report = check([d])
        assert report.ok

    base, ours = timed(in_process, 1), timed(sandboxed, 1)
    print(
        f"check: {len(paths)} files x 10 groups  in-process h5py read {len(paths) / base:8.0f} files/s  "
        f"h5guard check {len(paths) / ours:8.0f} files/s  rate ratio {base / ours:.2f}x (target >= 0.8)"
    )
    quick = timed(lambda: [quick_check(p) for p in paths])
    print(f"quick layer: {len(paths) / quick:,.0f} files/s (target >= 10,000)")
    return paths


def bench_big(tmp: Path, megabytes: int) -> None:
    d = tmp / "big"
    d.mkdir()
    rows = 1024 * 1024 // 8
    with ShardWriter(d) as w:
        for i in range(max(1, megabytes // 64)):
            w.add(f"block-{i:04d}", {"data": np.random.default_rng(i).random((64 * rows,))})
    [path] = w.committed

    def plain() -> None:
        with h5py.File(path, "r") as f:
            for key in f:
                if key.startswith("h5guard_"):  # the summary: h5guard's own, no result
                    continue
                f[key]["data"][()]

    def ours() -> None:
        assert check([path]).ok

    base, guarded = timed(plain, 1), timed(ours, 1)
    size = path.stat().st_size / 2**20
    print(
        f"big file: {size:,.0f} MiB  h5py read {base:6.2f} s  h5guard check {guarded:6.2f} s  ratio {guarded / base:.2f}x (target <= 1.5)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--groups", type=int, default=1000, help="groups per shard for the writer benchmark"
    )
    parser.add_argument(
        "--files", type=int, default=1000, help="shard files for the check benchmark"
    )
    parser.add_argument("--big-mb", type=int, default=1024, help="size of the big file (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="h5guard-bench-") as raw:
        tmp = Path(raw)
        bench_writer(tmp, args.groups)
        bench_check(tmp, args.files)
        if args.big_mb:
            bench_big(tmp, args.big_mb)


if __name__ == "__main__":
    main()
