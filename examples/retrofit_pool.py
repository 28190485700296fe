"""The original pipeline on h5guard: a spawn pool of workers, then one merge.

Before: each worker wrote ``tmp/worker_<pid>.h5`` with plain h5py, and a final loop did
``h5_out.copy(h5_in[key], key)`` over every file (a killed worker, a full disk or two
concurrent merges lost or corrupted results silently). After: workers commit immutable
shards, and one locked, verified, crash-safe merge builds the output.

Usage: python examples/retrofit_pool.py [WORK_DIR]   (default: the current directory)
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np

import h5guard


def work(job: tuple[Path, list[int]]) -> None:
    tmp, seeds = job
    # Each result is safe once add() returns: a killed worker loses none of them.
    with h5guard.ShardWriter(tmp, commit_every=5) as writer:
        for seed in seeds:
            layout = np.random.default_rng(seed).random((16, 2)) * 2000.0
            writer.add(f"seed-{seed}", {"layout": layout}, {"aep": float(layout.sum())})


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    tmp, out = root / "results_tmp", root / "results.h5"
    tmp.mkdir(parents=True, exist_ok=True)
    h5guard.record_output(tmp, out)  # so that `h5guard merge results_tmp` knows the output
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(work, [(tmp, list(range(i, 40, 4))) for i in range(4)])
    print(h5guard.merge(tmp).render_text())
    report = h5guard.check([out], expect=[f"seed-{s}" for s in range(40)])
    print(report.render_summary())
    sys.exit(0 if report.ok else 1)
