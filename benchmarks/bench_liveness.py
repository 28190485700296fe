"""What the liveness bookkeeping costs ``ShardWriter.add()`` (issue #22: under 2 %).

    python benchmarks/bench_liveness.py [--results 4000] [--rounds 5] [--block 25]

The bookkeeping has a part paid at every ``add()`` (after the append, a look at the
clock: every ``check_interval`` seconds, an ``fstat`` to see whether a merge claimed the
journal) and a part paid once per batch (the writer's identity and lease in the journal
header, the heartbeat's registration, the release mark). The baseline is the same
writer with those hooks replaced by no-ops (the clock by a constant).

Measured in the same process, in the same batches: the adds are timed one by one, in
blocks of ``--block`` adds that alternate between the real hooks and the no-ops (so
the load of the machine, the page cache and the journal's size are the same for
both), over ``--rounds`` batches; the medians of the per-add times are compared. The
per-batch part is timed separately (opening and closing a batch of one result) and
spread over the default ``commit_every`` of 100 results.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from h5guard import ShardWriter, _journal, _liveness

SIZES: dict[str, Callable[[int], tuple[dict[str, Any], dict[str, Any]]]] = {
    "tiny (1 scalar, 2 attrs)": lambda i: ({"x": np.asarray(float(i))}, {"status": "ok"}),
    "sweep-like (2 x 64 floats, 6 attrs)": lambda i: (
        {"layout": np.full((64, 2), float(i)), "aep": np.arange(64.0)},
        {"status": "ok", "seed": i, "site": "iea37", "n": 16, "grid": 5, "pct": 25.0},
    ),
}
PER_ADD = ("was_claimed",)
PER_BATCH = ("beat", "stop", "release", "header_fields")


def _nothing(*args: Any, **kwargs: Any) -> Any:
    return {} if kwargs.get("lease") is not None else None


def _not_claimed(fd: int) -> bool:
    return False


_NO_CLOCK = types.SimpleNamespace(monotonic=float)  # float() is 0.0: never time to check


@contextlib.contextmanager
def hooks(*, live: bool, names: tuple[str, ...]) -> Iterator[None]:
    """The writer with the liveness hooks ``names`` real (``live``) or no-ops."""
    saved = {name: getattr(_liveness, name) for name in names}
    clock = _journal.time
    if not live:
        for name in names:
            setattr(_liveness, name, _not_claimed if name == "was_claimed" else _nothing)
        if "was_claimed" in names:
            _journal.time = _NO_CLOCK  # type: ignore[assignment]
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(_liveness, name, value)
        _journal.time = clock


def per_add(directory: Path, n: int, block: int, make: Any) -> tuple[list[float], list[float]]:
    """Per-add seconds with the per-add hook real and as a no-op, alternating by block."""
    payloads = [make(i) for i in range(n)]
    on: list[float] = []
    off: list[float] = []
    clock = time.perf_counter
    writer = ShardWriter(directory, commit_every=n + 1)
    for start in range(0, n, block):
        live = (start // block) % 2 == 0
        with hooks(live=live, names=PER_ADD):
            bucket = on if live else off
            for i in range(start, min(n, start + block)):
                datasets, attrs = payloads[i]
                t0 = clock()
                writer.add(f"r{i}", datasets, attrs)
                bucket.append(clock() - t0)
    writer.discard()
    return on, off


def per_batch(directory: Path, n: int, *, live: bool) -> float:
    """Median seconds to open a batch (first add) and let go of it, for ``n`` batches."""
    times: list[float] = []
    clock = time.perf_counter
    with hooks(live=live, names=PER_BATCH):
        for i in range(n):
            writer = ShardWriter(directory, commit_every=1000)
            t0 = clock()
            writer.add(f"b{i}", {"x": np.asarray(1.0)})
            writer._journal.close()  # type: ignore[union-attr]  # let go: the release mark
            times.append(clock() - t0)
            writer.discard()
    return statistics.median(times)


def _gate_seconds(n: int = 200_000) -> float:
    """What ``append`` adds to every add: one ``time.monotonic()`` and a comparison."""
    clock, never = time.monotonic, float("inf")
    t0 = time.perf_counter()
    for _ in range(n):
        if clock() >= never:
            break
    loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n):
        pass
    empty = time.perf_counter() - t0
    return max(0.0, loop - empty) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block", type=int, default=25)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-liveness-"))
    try:
        for label, make in SIZES.items():
            per_add(root / "warm", 200, args.block, make)  # imports, caches, first batch
            shutil.rmtree(root / "warm")
            on: list[float] = []
            off: list[float] = []
            for r in range(args.rounds):
                a, b = per_add(root / f"r{r}", args.results, args.block, make)
                on += a
                off += b
                shutil.rmtree(root / f"r{r}")
            add_on, add_off = statistics.median(on) * 1e6, statistics.median(off) * 1e6
            print(
                f"{label:36s} add() median {add_on:6.1f} us with the claim check, "
                f"{add_off:6.1f} us without: {(add_on / add_off - 1) * 100:+.2f} % "
                f"({len(on)} + {len(off)} adds, blocks of {args.block} alternated)"
            )
            gate = _gate_seconds() * 1e6
            print(
                f"{'':36s} the per-add statement alone (clock + compare): {gate:.3f} us, "
                f"{gate / add_off * 100:.2f} % of add()"
            )
        batch_on: list[float] = []
        batch_off: list[float] = []
        for r in range(args.rounds):
            for live in (True, False) if r % 2 == 0 else (False, True):
                d = root / f"b{r}{live}"
                (batch_on if live else batch_off).append(per_batch(d, 100, live=live))
                shutil.rmtree(d)
        extra = (statistics.median(batch_on) - statistics.median(batch_off)) * 1e6
        print(
            f"per batch (identity, heartbeat, release mark): {extra:+.1f} us, "
            f"{extra / 100:+.2f} us per add() at commit_every=100"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
