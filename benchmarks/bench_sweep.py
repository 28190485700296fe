"""Sweep throughput with 1 and 2 workers, h5guard's share of the wall time, and where
the optimizer's time goes. All figures come from runs made by this script.

    python benchmarks/bench_sweep.py [--configs 16] [--maxiter 60]

* throughput: configs per second of `run_sweep` (LocalEngine) with 1 and 2 workers,
  and the speedup (target >= 1.8x on 2 cores);
* h5guard's share: the time h5guard itself spends in a sweep (writing the same groups
  with ShardWriter in the same batches, plus the parent's state read, merge and check),
  as a share of the 2-worker wall time (target < 2 %), and against the original
  report's way of storing them (plain h5py appends to one file per worker, then a
  naive copy loop into the output);
* the optimizer's time split per config: PyWake AEP and gradient evaluations vs the rest
  (SLSQP and our constraint code), from the timings every result records;
* the fast path: the same lattice-start sweep (IEA37, 16 and 64 turbines) with
  ``evaluator = "pywake"`` (today's path) and ``evaluator = "fast"`` (the numpy model inside
  the loop), 2 workers: configs per second of each, and the AEPs they store (which must be
  equal: both store PyWake's AEP of layouts reached through the same model).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from h5guard import ShardWriter, check, merge
from optimizer import LocalEngine, RunResult, expand_spec, run_sweep
from optimizer.results import RESULT_SCHEMA


def spec(configs: int, maxiter: int) -> dict[str, Any]:
    seeds = max(1, configs // 4)
    return {
        "sweep": [
            {
                "site": "iea37",
                "n_turbines": 16,
                "grid_size": [4, 5],
                "random_pct": [25, 50],
                "seeds": f"0-{seeds - 1}",
            }
        ],
        "optimizer": {"maxiter": maxiter, "tol": 1e-6},
    }


def evaluator_spec(evaluator: str, n_turbines: int, configs: int) -> dict[str, Any]:
    return {
        "sweep": [
            {
                "site": "iea37",
                "n_turbines": n_turbines,
                "start": "lattice",
                "seeds": f"0-{configs - 1}",
            }
        ],
        "optimizer": {"maxiter": 200, "tol": 1e-8, "evaluator": evaluator},
    }


def compare_evaluators(tmp: Path, n_turbines: int, configs: int) -> None:
    stored: dict[str, dict[int, float]] = {}
    rates: dict[str, float] = {}
    for evaluator in ("pywake", "fast"):
        sweep_spec = evaluator_spec(evaluator, n_turbines, configs)
        seconds, out, _ = run(tmp, f"{evaluator}-{n_turbines}", 2, sweep_spec)
        rates[evaluator] = configs / seconds
        stored[evaluator] = {
            int(json.loads(a["config"])["seed"]): float(a["aep_gwh"]) for _, _, a in records(out)
        }
        print(
            f"  iea37-{n_turbines} lattice, evaluator {evaluator:>6}: {configs} configs in "
            f"{seconds:6.1f} s = {rates[evaluator]:6.3f} configs/s, best AEP "
            f"{max(stored[evaluator].values()):.3f} GWh, mean {np.mean(list(stored[evaluator].values())):.3f}"
        )
    diff = max(
        abs(stored["fast"][seed] / stored["pywake"][seed] - 1.0) for seed in stored["pywake"]
    )
    print(
        f"  iea37-{n_turbines}: fast path {rates['fast'] / rates['pywake']:.2f}x the configs/s; "
        f"largest relative difference of a stored AEP, same seed: {diff:.1e}"
    )


def run(
    tmp: Path, name: str, workers: int, sweep_spec: dict[str, Any]
) -> tuple[float, Path, RunResult]:
    out = tmp / f"{name}.h5"
    with LocalEngine(workers=workers) as engine:
        # PyWake's import (~2 s per worker) is outside the timed region: a sweep of
        # thousands of configs pays it once per worker.
        engine.warm_up()
        t0 = time.perf_counter()
        result = run_sweep(sweep_spec, output=str(out), engine=engine)
        seconds = time.perf_counter() - t0
    assert result.exit_code == 0, result
    return seconds, out, result


def records(path: Path) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    with h5py.File(path, "r") as f:
        for key in f:
            if key.startswith("h5guard_"):  # the summary: h5guard's own, no result
                continue
            g = f[key]
            datasets = {k: g[k][()] for k in g}
            attrs = {
                k: (v.decode() if isinstance(v, bytes) else v)
                for k, v in g.attrs.items()
                if k != "h5guard_digest"
            }
            out.append((key, datasets, attrs))
    return out


def guarded_storage(
    tmp: Path, groups: list[tuple[str, dict[str, Any], dict[str, Any]]], batch: int
) -> float:
    shards = tmp / "guarded_shards"
    shards.mkdir()
    t0 = time.perf_counter()
    for start in range(0, len(groups), batch):
        with ShardWriter(
            shards, schema=RESULT_SCHEMA, prefix="worker", commit_every=batch + 1
        ) as w:
            for key, datasets, attrs in groups[start : start + batch]:
                w.add(key, datasets, attrs)
    merge(shards, tmp / "guarded.h5", schema=RESULT_SCHEMA)
    assert check([tmp / "guarded.h5"]).ok
    return time.perf_counter() - t0


def naive_storage(
    tmp: Path, groups: list[tuple[str, dict[str, Any], dict[str, Any]]], workers: int
) -> float:
    t0 = time.perf_counter()
    files = [tmp / f"worker_{i}.h5" for i in range(workers)]
    for i, (key, datasets, attrs) in enumerate(groups):
        with h5py.File(files[i % workers], "a") as f:
            g = f.create_group(key)
            for name, arr in datasets.items():
                g.create_dataset(name, data=arr)
            for name, value in attrs.items():
                g.attrs[name] = value
    with h5py.File(tmp / "naive.h5", "w") as out:
        for path in files:
            with h5py.File(path, "r") as f:
                for key in f:
                    if key.startswith("h5guard_"):  # the summary: h5guard's own, no result
                        continue
                    out.copy(f[key], key)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", type=int, default=16)
    parser.add_argument("--maxiter", type=int, default=60)
    parser.add_argument(
        "--fast-configs",
        type=int,
        default=16,
        metavar="N",
        help="configs per evaluator in the fast-path comparison (0: skip it; default 16)",
    )
    args = parser.parse_args()
    sweep_spec = spec(args.configs, args.maxiter)
    n = len(expand_spec(sweep_spec))
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as raw:
        tmp = Path(raw)
        one, _, _ = run(tmp, "one", 1, sweep_spec)
        two, out, result = run(tmp, "two", 2, sweep_spec)
        print(f"sweep of {n} configs (iea37-16, maxiter {args.maxiter}), PyWake start-up excluded:")
        print(f"  1 worker  {one:6.2f} s  {n / one:6.2f} configs/s")
        print(
            f"  2 workers {two:6.2f} s  {n / two:6.2f} configs/s   speedup {one / two:.2f}x (target >= 1.8)"
        )
        # Worker-side writer time runs in parallel on 2 workers: half of it is wall time.
        share = (result.parent_h5guard_seconds + result.writer_seconds / 2) / two
        print(
            f"  h5guard inside that run: parent (state, merge, check) {result.parent_h5guard_seconds * 1e3:.0f} ms, "
            f"workers' ShardWriter {result.writer_seconds * 1e3:.0f} ms in total: {100 * share:.2f} % of the wall time (target < 2 %)"
        )
        groups = records(out)
        batch = max(1, min(8, -(-n // 8)))
        guarded = guarded_storage(tmp, groups, batch)
        naive = naive_storage(tmp, groups, 2)
        print(
            f"  storing the same {n} results: h5guard (shards, merge, check) {guarded * 1e3:.0f} ms, "
            f"plain per-worker h5py files + naive merge {naive * 1e3:.0f} ms"
        )
        wall = sum(float(a["wall_time_s"]) for _, _, a in groups)
        aep = sum(float(a["aep_time_s"]) for _, _, a in groups)
        grad = sum(float(a["gradient_time_s"]) for _, _, a in groups)
        print(
            f"  per-config time split: PyWake AEP {100 * aep / wall:.1f} %, PyWake gradients {100 * grad / wall:.1f} %, "
            f"SLSQP + constraints + bookkeeping {100 * (wall - aep - grad) / wall:.1f} %"
        )
        iters = np.mean([float(a["iterations"]) for _, _, a in groups])
        pywake = json.loads(groups[0][2]["versions"])["py-wake"]
        print(f"  mean SLSQP iterations {iters:.1f}; PyWake {pywake}")
        if args.fast_configs > 0:
            print("fast path against today's path (PyWake + autograd in the loop), 2 workers:")
            compare_evaluators(tmp, 16, args.fast_configs)
            compare_evaluators(tmp, 64, max(2, args.fast_configs // 4))


if __name__ == "__main__":
    main()
