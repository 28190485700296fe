"""What the liveness bookkeeping costs ``ShardWriter.add()`` (issue #22: under 2 %).

    python benchmarks/bench_liveness.py [--results 2000] [--rounds 9]

The bookkeeping: the writer's identity and lease in the journal header, the heartbeat
thread (registered when a batch opens, stopped when it closes), and the check after
every append that the journal was not claimed (one ``fstat``). The baseline is the same
writer with those hooks replaced by no-ops, measured in the same process; the two are
alternated (ABBA...) for ``--rounds`` rounds and the medians compared. Only the time
inside ``add()`` is counted (no commit happens during the timed adds).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from h5guard import ShardWriter, _liveness

SIZES = {
    "tiny (1 scalar, 2 attrs)": lambda i: ({"x": np.asarray(float(i))}, {"status": "ok"}),
    "sweep-like (2 x 64 floats, 6 attrs)": lambda i: (
        {"layout": np.full((64, 2), float(i)), "aep": np.arange(64.0)},
        {"status": "ok", "seed": i, "site": "iea37", "n": 16, "grid": 5, "pct": 25.0},
    ),
}


@contextlib.contextmanager
def without_liveness() -> Iterator[None]:
    """The same writer with every liveness hook a no-op."""

    def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    with contextlib.ExitStack() as stack:
        for name in ("beat", "stop", "release"):
            stack.enter_context(mock.patch.object(_liveness, name, nothing))
        stack.enter_context(mock.patch.object(_liveness, "was_claimed", lambda fd: False))
        stack.enter_context(mock.patch.object(_liveness, "header_fields", lambda **kw: {}))
        yield


def time_adds(directory: Path, n: int, make: Any) -> float:
    """Seconds spent inside ``add()`` for ``n`` results (one batch, never committed)."""
    payloads = [make(i) for i in range(n)]
    writer = ShardWriter(directory, commit_every=n + 1)
    spent = 0.0
    clock = time.perf_counter
    for i, (datasets, attrs) in enumerate(payloads):
        t0 = clock()
        writer.add(f"r{i}", datasets, attrs)
        spent += clock() - t0
    writer.discard()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-liveness-"))
    try:
        for label, make in SIZES.items():
            time_adds(root / "warm", 200, make)  # imports, caches, first-batch costs
            on: list[float] = []
            off: list[float] = []
            for r in range(args.rounds):
                order = (True, False) if r % 2 == 0 else (False, True)
                for live in order:
                    d = root / f"{r}-{live}"
                    if live:
                        on.append(time_adds(d, args.results, make))
                    else:
                        with without_liveness():
                            off.append(time_adds(d, args.results, make))
                    shutil.rmtree(d)
            per_on = statistics.median(on) / args.results * 1e6
            per_off = statistics.median(off) / args.results * 1e6
            ratios = [a / b for a, b in zip(on, off, strict=True)]
            print(
                f"{label:36s} add() {per_on:7.1f} us with liveness, {per_off:7.1f} us without: "
                f"{(per_on / per_off - 1) * 100:+.2f} % (median of per-round ratios "
                f"{(statistics.median(ratios) - 1) * 100:+.2f} %, {args.rounds} rounds x "
                f"{args.results} results)"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
