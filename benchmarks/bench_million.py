"""How h5guard scales to a million results (issue #26): each step at N and its growth per 10x.

    python benchmarks/bench_million.py [--full] [--sizes 10000,100000] [--quick] [--json]

For each N (default 10,000 and 100,000; ``--full`` adds 1,000,000) it builds N results
of one small dataset and three scalar attributes and times, in this process:

* write: one ShardWriter (``commit_every=1000``), and a plain h5py loop writing the same;
* merge of the shards into a new output, ``check`` of that output;
* ``iter_results``, ``to_dataframe`` and ``read`` of one key (median of 5) of the output;
* a plain h5py attribute loop over the output (the baseline a table should match);
* ``plan_merge`` (what ``h5guard status`` runs) of 10 new results against the output;
* a merge of those 10 new results into (a fresh copy of) the output and into an empty
  output, median of 3 each (the copy is made before the clock starts). From 64 MiB that
  merge turns the copy into a segmented output, once: the steady state of later merges,
  and #26's "at most 2x", are ``bench_incremental.py``'s.

Then one table: each step's time at every N, the growth factor per 10x (10 is linear;
``read`` of one key should stay near 1), and the targets of #26 (``to_dataframe`` of
200,000 results within 5 s and equal to the attribute loop: ``--sizes 10000,200000``
measures it). Nothing is asserted: MISS is printed.
The default run stays within about 10 minutes on the 2-core machine, idle.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Running as a script puts benchmarks/ first on sys.path; the package lives one level up.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

import h5guard  # noqa: E402
from h5guard._format.names import SEGMENT_DIR_SUFFIX  # noqa: E402

RESERVED = "h5guard_"
COMMIT_EVERY = 1000
STEPS = (
    "write (ShardWriter)",
    "write (plain h5py)",
    "merge",
    "check output",
    "iter_results",
    "to_dataframe",
    "plain attribute loop",
    "read one key",
    "plan_merge (status)",
    "merge 10 into output",
    "merge 10 into empty",
)


def result(rng: np.random.Generator, i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One small dataset and three scalar attributes."""
    return {"x": rng.random(4)}, {"status": "ok", "aep": 400.0 + float(rng.random()), "seed": i}


def key_of(i: int) -> str:
    return f"cfg-{i:08d}"


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_of(n: int, fn: Callable[[], object], before: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(n):
        if before is not None:
            before()
        os.sync()
        times.append(timed(fn))
    return float(statistics.median(times))


def write_h5guard(directory: Path, start: int, n: int, *, prefix: str) -> None:
    rng = np.random.default_rng(start)
    with h5guard.ShardWriter(directory, commit_every=COMMIT_EVERY, prefix=prefix) as w:
        for i in range(start, start + n):
            w.add(key_of(i), *result(rng, i))


def write_plain(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for i in range(n):
            datasets, attrs = result(rng, i)
            g = f.create_group(key_of(i))
            for name, value in datasets.items():
                g.create_dataset(name, data=value)
            for name, value in attrs.items():
                g.attrs[name] = value


def attribute_loop(path: Path) -> dict[str, dict[str, Any]]:
    """Every result's attributes, read with plain h5py (the baseline a table should match)."""
    rows: dict[str, dict[str, Any]] = {}
    with h5py.File(path, "r") as f:
        for key in f:
            if key.startswith(RESERVED):
                continue  # the summary is h5guard's own, not a result
            g = f[key]
            rows[key] = {name: g.attrs[name] for name in g.attrs if not name.startswith(RESERVED)}
    return rows


def same_values(frame: Any, rows: dict[str, dict[str, Any]]) -> bool:
    """Whether the DataFrame holds exactly the attributes the plain loop read."""
    if list(frame.index) != sorted(rows, key=lambda k: k.encode()):
        return False
    for name in ("status", "aep", "seed"):
        plain = [rows[k][name] for k in frame.index]
        if name == "status":
            plain = [v.decode() if isinstance(v, bytes) else str(v) for v in plain]
        if list(frame[name]) != list(plain):
            return False
    return True


def merged(shards: Path, output: Path) -> None:
    report = h5guard.merge(shards, output)
    if report.exit_code != 0:
        raise SystemExit(report.render_text())


def one_size(root: Path, n: int) -> dict[str, float]:
    d = root / f"n{n}"
    d.mkdir()
    shards, out, plain = d / "shards", d / "out.h5", d / "plain.h5"
    t: dict[str, float] = {}
    load = os.getloadavg()
    print(f"\nN = {n:,} (load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})", flush=True)

    def step(name: str, seconds: float) -> None:
        t[name] = seconds
        print(f"  {name:<24} {seconds:9.3f} s", flush=True)

    step("write (ShardWriter)", timed(lambda: write_h5guard(shards, 0, n, prefix="w")))
    step("write (plain h5py)", timed(lambda: write_plain(plain, n)))
    plain.unlink()
    os.sync()
    step("merge", timed(lambda: merged(shards, out)))
    os.sync()

    def checked() -> None:
        report = h5guard.check([out])
        if not report.ok:
            raise SystemExit(report.render_text())

    step("check output", timed(checked))
    count: list[int] = []
    step("iter_results", timed(lambda: count.append(sum(1 for _ in h5guard.iter_results(out)))))
    frame: list[Any] = []
    step("to_dataframe", timed(lambda: frame.append(h5guard.to_dataframe(out))))
    rows: list[dict[str, dict[str, Any]]] = []
    step("plain attribute loop", timed(lambda: rows.append(attribute_loop(out))))
    assert count == [n] and len(frame[0]) == n and len(rows[0]) == n, (count, len(frame[0]))
    t["to_dataframe equal"] = float(same_values(frame[0], rows[0]))
    print(f"  to_dataframe equal to the attribute loop: {bool(t['to_dataframe equal'])}")
    middle = key_of(n // 2)
    step("read one key", median_of(5, lambda: h5guard.read(out, middle)))

    new = d / "new"
    write_h5guard(new, n, 10, prefix="new")
    step("plan_merge (status)", timed(lambda: h5guard.plan_merge(new, out)))
    inc_out, inc_dir, empty_out = d / "inc.h5", d / "inc-new", d / "empty.h5"

    def fresh_existing() -> None:
        # The segment directory the round before made goes too: beside a fresh copy it
        # would be another output's segments, and the merge would (rightly) keep to
        # one file.
        shutil.rmtree(str(inc_out) + SEGMENT_DIR_SUFFIX, ignore_errors=True)
        shutil.copy(out, inc_out)
        shutil.rmtree(inc_dir, ignore_errors=True)
        shutil.copytree(new, inc_dir)

    def fresh_empty() -> None:
        empty_out.unlink(missing_ok=True)
        shutil.rmtree(inc_dir, ignore_errors=True)
        shutil.copytree(new, inc_dir)

    step("merge 10 into output", median_of(3, lambda: merged(inc_dir, inc_out), fresh_existing))
    step("merge 10 into empty", median_of(3, lambda: merged(inc_dir, empty_out), fresh_empty))
    size = out.stat().st_size / 2**20
    print(f"  output {size:,.1f} MiB; peak RSS so far {peak_mib():.0f} MiB", flush=True)
    shutil.rmtree(d)
    return t


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def growth(times: dict[int, dict[str, float]], name: str) -> float | None:
    """Growth of the time per 10x of N, from the smallest to the largest N."""
    ns = sorted(times)
    if len(ns) < 2:
        return None
    lo, hi = ns[0], ns[-1]
    decades = math.log10(hi / lo)
    return float((times[hi][name] / times[lo][name]) ** (1 / decades))


def verdicts(times: dict[int, dict[str, float]]) -> list[tuple[str, float, str, bool]]:
    """(what, ratio, target, met) for the targets of #26 that this run can judge."""
    out: list[tuple[str, float, str, bool]] = []
    for n, t in sorted(times.items()):
        base = t["plain attribute loop"]
        out.append(
            (
                f"to_dataframe / attribute loop at {n:,}",
                t["to_dataframe"] / base,
                "<= 1.00x (equal to a plain read)",
                t["to_dataframe"] <= base,
            )
        )
        out.append(
            (
                f"iter_results / attribute loop at {n:,}",
                t["iter_results"] / base,
                "none (for the record)",
                True,
            )
        )
        out.append(
            (
                f"merge 10 into output / into empty at {n:,}",
                t["merge 10 into output"] / t["merge 10 into empty"],
                "none (the first merge into a self-contained output; the steady "
                "state and #26's 2x: bench_incremental.py)",
                True,
            )
        )
        out.append(
            (
                f"to_dataframe at {n:,} equal to the attribute loop",
                t["to_dataframe equal"],
                "= 1 (the same values)",
                t["to_dataframe equal"] == 1.0,
            )
        )
        if n < 100_000:
            continue  # below that, start-up costs decide the figure
        # 5 s for 200,000 rows, scaled linearly to this N.
        budget = 5.0 * n / 200_000
        label = "200,000 within 5 s" if n == 200_000 else f"{n:,} within {budget:.2f} s"
        out.append(
            (
                f"to_dataframe {label} ({t['to_dataframe']:.2f} s) and equal to the loop",
                t["to_dataframe"] / budget,
                "<= 1.00x of 5 s per 200,000",
                t["to_dataframe"] <= budget and t["to_dataframe equal"] == 1.0,
            )
        )
    for name in STEPS:
        g = growth(times, name)
        if g is None:
            continue
        if name in ("read one key", "merge 10 into empty"):
            # Independent of N: the ratio is the growth itself.
            out.append((f"growth per 10x: {name} {g:.2f}x", g, "<= 2.00x, near 1", g <= 2.0))
        else:
            # At most linear: the ratio is the growth over 10x.
            out.append(
                (f"growth per 10x: {name} {g:.2f}x", g / 10.0, "<= 1.15x of linear", g <= 11.5)
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--full", action="store_true", help="add N = 1,000,000")
    p.add_argument("--sizes", help="comma-separated N (default 10000,100000)")
    p.add_argument("--quick", action="store_true", help="N = 50 and 500 (smoke test)")
    p.add_argument("--json", action="store_true", help="also print one JSON document at the end")
    p.add_argument("--workdir", help="where to build (default: a temporary directory)")
    args = p.parse_args()
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    elif args.quick:
        sizes = [50, 500]
    else:
        sizes = [10_000, 100_000] + ([1_000_000] if args.full else [])
    # Imports before any clock starts: pandas and the modules behind h5guard's lazy names.
    import pandas  # noqa: F401

    for name in (
        "ShardWriter",
        "check",
        "iter_results",
        "merge",
        "plan_merge",
        "read",
        "to_dataframe",
    ):
        getattr(h5guard, name)
    root = Path(tempfile.mkdtemp(prefix="bench_million-", dir=args.workdir))
    start = os.getloadavg()
    print(
        f"h5guard {h5guard.__version__}, h5py {h5py.version.version}, HDF5 {h5py.version.hdf5_version}, "
        f"{os.cpu_count()} CPU(s); load average {start[0]:.2f} {start[1]:.2f} {start[2]:.2f}"
    )
    times: dict[int, dict[str, float]] = {}
    try:
        for n in sizes:
            times[n] = one_size(root, n)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print("\n" + " " * 26 + "".join(f"{n:>12,}" for n in sizes) + "   growth/10x")
    for name in STEPS:
        g = growth(times, name)
        cells = "".join(f"{times[n][name]:11.3f}s" for n in sizes)
        print(f"  {name:<24}{cells}   {'' if g is None else f'{g:6.2f}x'}")
    print()
    judged = verdicts(times)
    for what, ratio, target, ok in judged:
        print(f"  {what:<52} ratio {ratio:6.2f}x (target {target})  {'PASS' if ok else 'MISS'}")
    end = os.getloadavg()
    print(
        f"\npeak RSS {peak_mib():.0f} MiB; load average at the end {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}"
    )
    if args.json:
        doc = {
            "sizes": sizes,
            "load_start": list(start),
            "load_end": list(end),
            "times": {str(n): t for n, t in times.items()},
            "growth_per_10x": {name: growth(times, name) for name in STEPS},
            "verdicts": [
                {"what": w, "ratio": r, "target": tg, "ok": ok} for w, r, tg, ok in judged
            ],
        }
        print(json.dumps(doc))


if __name__ == "__main__":
    main()
