"""What the safe merge costs compared with the naive loop it replaces.

Usage: python benchmarks/bench_merge.py [--shards 100] [--groups 100] [--existing 100000]
                                        [--new 1000] [--repeat 5] [--no-profile] [--workdir DIR]

1. Builds ``shards x groups`` result groups with ShardWriter (an (n, 2) float layout of
   16-64 rows and a few scalar attributes each).
2. Full merge: times (a) the naive loop of the original report -- a fresh output, and
   ``h5_out.copy(h5_in[key], key)`` for every key of every worker file -- and (b)
   ``h5guard.merge`` (sandboxed validation, verified copy, atomic replace, shard deletion)
   on a fresh copy of the same shards. Prints both rates (groups/s) and the ratio.
3. Incremental merge: ``--new`` new groups into an output that already holds
   ``--existing`` groups, h5guard vs the naive in-place append of the same groups.
4. Peak RSS of each run (``resource.getrusage``; the merge's sandbox children apart),
   and a cProfile of the h5guard merges split into validation / index / copy / verify /
   commit / clean-up.

Each comparison alternates baseline and h5guard ``--repeat`` times and reports the run
of median time of each (this machine is shared; single runs vary by +-20 %). Every timed
run is a fresh child process, so one run's caches and memory do not leak
into the next; the time is measured around the merge call only, after an ``os.sync()``
so that earlier steps' dirty pages are not written back during the run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

# Running as a script puts benchmarks/ first on sys.path; the package lives one level up.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

import h5guard  # noqa: E402

# Where the merge's time goes: (label, file suffix, function, calling function or None);
# cumulative times, so an indented line is part of the line above it.
PHASES = (
    ("validate shards (seals, sandbox)", "h5guard/_check/api.py", "validate_many", "build"),
    ("look keys up in the output", "h5guard/_merge/output.py", "digest", "build"),
    # (h5py's Cython calls such as h5o.copy are invisible to cProfile: the copy of the
    # groups is what "build partial" holds beyond the byte copy.)
    ("build partial (copy)", "h5guard/_merge/output.py", "write_partial", None),
    ("  byte copy of the old output", "h5guard/_atomic.py", "copy_file", None),
    ("verify copied groups", "h5guard/_merge/verify.py", "verify_copy", None),
    # (with a helper, the reader's own half runs in a thread cProfile does not see)
    ("  h5guard byte reader", "h5guard/_format/bytes.py", "verify_groups_at", None),
    ("  libhdf5 re-read (fallback)", "h5guard/_check/own.py", "verify_groups", None),
    ("fsync + rename + dir fsync", "h5guard/_atomic.py", "commit_file", "merge"),
    ("delete merged shards", "h5guard/_atomic.py", "remove_quietly", "merge"),
)


def build_shards(directory: Path, shards: int, groups: int, *, prefix: str, seed: int) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for s in range(shards):
        with h5guard.ShardWriter(directory, commit_every=groups, prefix=prefix) as w:
            for g in range(groups):
                n = int(rng.integers(16, 65))
                w.add(
                    f"{prefix}_{s:05d}_{g:04d}",
                    {"layout": rng.random((n, 2)) * 2000.0},
                    {
                        "aep": float(rng.random() * 400.0),
                        "seed": g,
                        "status": "ok",
                        "runtime": float(rng.random()),
                    },
                )
    return shards * groups


# -- what runs in the timed child processes ------------------------------------------
def naive(shard_dir: str, output: str, mode: str) -> int:
    """The original report's loop (no lock, no validation, no atomicity)."""
    n = 0
    with h5py.File(output, mode) as h5_out:
        for name in sorted(os.listdir(shard_dir)):
            if not name.endswith(".h5"):
                continue
            with h5py.File(os.path.join(shard_dir, name), "r") as h5_in:
                for key in h5_in:
                    h5_out.copy(h5_in[key], key)
                    n += 1
    return n


def child(args: argparse.Namespace) -> None:
    prof = cProfile.Profile() if args.child_profile else None
    started = time.perf_counter()
    if prof:
        prof.enable()
    if args.child == "naive":
        groups = naive(args.shard_dir, args.output, args.mode)
    else:
        report = h5guard.merge(args.shard_dir, args.output)
        assert report.exit_code == 0, report.render_text()
        groups = report.groups_added
    if prof:
        prof.disable()
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "seconds": seconds,
        "groups": groups,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    if prof:
        result["profile"] = profile_split(prof, seconds)
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(12)
        result["top"] = text.getvalue()
    print(json.dumps(result))


def profile_split(prof: cProfile.Profile, total: float) -> list[tuple[str, float]]:
    stats: Any = cast(Any, pstats.Stats(prof)).stats
    out: list[tuple[str, float]] = []
    for label, suffix, func, caller in PHASES:
        cum = 0.0
        for (file, _, name), (_, _, _, ct, callers) in stats.items():
            if name != func or not file.endswith(suffix):
                continue
            if caller is None:
                cum += ct
            else:
                cum += sum(c[3] for (_, _, who), c in callers.items() if who == caller)
        out.append((label, cum))
    out.append(("total (profiled)", total))
    return out


def run_child(kind: str, shard_dir: Path, output: Path, *, mode: str = "w", profile: bool = False):  # type: ignore[no-untyped-def]
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--shard-dir",
        str(shard_dir),
        "--output",
        str(output),
        "--mode",
        mode,
    ]
    if profile:
        cmd.append("--child-profile")
    # Write back what the previous steps left dirty (copies of outputs and shards), so
    # the kernel's write-back of those does not land on this run's fsync.
    os.sync()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_pair(
    baseline: Callable[[], dict[str, Any]], ours: Callable[[], dict[str, Any]], repeat: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Alternate the two runs ``repeat`` times; the run of median time of each."""
    runs: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    for _ in range(repeat):
        runs[0].append(baseline())
        runs[1].append(ours())
    for r in runs:
        r.sort(key=lambda x: x["seconds"])
    if repeat > 1:
        for name, r in zip(("baseline", "h5guard"), runs, strict=True):
            times = ", ".join(f"{x['seconds']:.3f}" for x in r)
            print(f"  {name} runs (s, sorted): {times}")
    return runs[0][len(runs[0]) // 2], runs[1][len(runs[1]) // 2]


def rate(r: dict[str, Any]) -> float:
    return float(r["groups"] / r["seconds"])


def show_profile(title: str, r: dict[str, Any]) -> None:
    print(f"\n{title} (cProfile, cumulative wall seconds in the merge process):")
    for label, seconds in r["profile"]:
        share = 100.0 * seconds / r["seconds"]
        print(f"  {label:34s} {seconds:8.3f} s  {share:5.1f} %")
    print("  top functions by own time:")
    lines = [ln for ln in r["top"].splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("ncalls"))
    for ln in lines[start : start + 13]:
        print("   ", ln[:150])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shards", type=int, default=100)
    p.add_argument("--groups", type=int, default=100, help="groups per shard")
    p.add_argument("--existing", type=int, default=100_000, help="groups already in the output")
    p.add_argument("--new", type=int, default=1_000, help="groups added incrementally")
    p.add_argument("--repeat", type=int, default=5, help="timed runs of each, median reported")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--workdir", help="where to build (default: a temporary directory)")
    p.add_argument("--child", choices=["naive", "merge"], help=argparse.SUPPRESS)
    p.add_argument("--shard-dir", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="w", help=argparse.SUPPRESS)
    p.add_argument("--child-profile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return

    root = Path(tempfile.mkdtemp(prefix="bench_merge-", dir=args.workdir))
    try:
        print(
            f"h5guard {h5guard.__version__}, h5py {h5py.version.version}, HDF5 {h5py.version.hdf5_version}, {os.cpu_count()} CPU(s); work dir {root}"
        )
        t = time.perf_counter()
        total = build_shards(root / "shards", args.shards, args.groups, prefix="w", seed=1)
        size = sum(f.stat().st_size for f in (root / "shards").iterdir())
        print(
            f"built {args.shards} shards x {args.groups} groups = {total} groups, "
            f"{size / 2**20:.1f} MiB, in {time.perf_counter() - t:.1f} s"
        )

        # -- full merge ----------------------------------------------------------
        def full_naive() -> dict[str, Any]:
            (root / "naive.h5").unlink(missing_ok=True)
            return run_child("naive", root / "shards", root / "naive.h5")

        def full_merge() -> dict[str, Any]:
            shutil.rmtree(root / "shards-merge", ignore_errors=True)
            (root / "merged.h5").unlink(missing_ok=True)
            shutil.copytree(root / "shards", root / "shards-merge")
            return run_child("merge", root / "shards-merge", root / "merged.h5")

        print(f"\nfull merge of {total} groups from {args.shards} files:")
        nv, hg = median_pair(full_naive, full_merge, args.repeat)
        assert nv["groups"] == hg["groups"] == total, (nv["groups"], hg["groups"])
        print(
            f"  naive h5py copy loop : {nv['seconds']:7.3f} s  {rate(nv):9.0f} groups/s  peak RSS {nv['rss_mib']:.0f} MiB"
        )
        print(
            f"  h5guard.merge        : {hg['seconds']:7.3f} s  {rate(hg):9.0f} groups/s  peak RSS {hg['rss_mib']:.0f} MiB (sandbox children {hg['children_rss_mib']:.0f} MiB)"
        )
        print(f"  h5guard rate / naive rate: {rate(hg) / rate(nv):.2f} (target >= 1.0)")

        # -- incremental merge ---------------------------------------------------
        base_shards = max(1, args.existing // args.groups)
        t = time.perf_counter()
        build_shards(root / "base", base_shards, args.groups, prefix="old", seed=2)
        h5guard.merge(root / "base", root / "base.h5")
        new_shards = max(1, args.new // args.groups)
        build_shards(root / "new", new_shards, args.new // new_shards, prefix="new", seed=3)
        existing = base_shards * args.groups
        new = new_shards * (args.new // new_shards)
        print(
            f"\nincremental: {new} new groups into an output of {existing} groups "
            f"({(root / 'base.h5').stat().st_size / 2**20:.1f} MiB; built in {time.perf_counter() - t:.1f} s)"
        )

        def inc_naive() -> dict[str, Any]:
            shutil.copy(root / "base.h5", root / "inc-naive.h5")
            return run_child("naive", root / "new", root / "inc-naive.h5", mode="a")

        def inc_merge() -> dict[str, Any]:
            shutil.copy(root / "base.h5", root / "inc-merge.h5")
            shutil.rmtree(root / "new-merge", ignore_errors=True)
            shutil.copytree(root / "new", root / "new-merge")
            return run_child("merge", root / "new-merge", root / "inc-merge.h5")

        ni, hi = median_pair(inc_naive, inc_merge, args.repeat)
        assert ni["groups"] == hi["groups"] == new
        print(
            f"  naive in-place append: {ni['seconds']:7.3f} s  {rate(ni):9.0f} groups/s  peak RSS {ni['rss_mib']:.0f} MiB"
        )
        print(
            f"  h5guard.merge        : {hi['seconds']:7.3f} s  {rate(hi):9.0f} groups/s  peak RSS {hi['rss_mib']:.0f} MiB (sandbox children {hi['children_rss_mib']:.0f} MiB)"
        )
        print(f"  h5guard time / naive time: {hi['seconds'] / ni['seconds']:.2f}x (target <= 3)")

        if not args.no_profile:
            shutil.copytree(root / "shards", root / "shards-prof")
            pf = run_child("merge", root / "shards-prof", root / "prof.h5", profile=True)
            show_profile(f"full merge of {total} groups", pf)
            shutil.copy(root / "base.h5", root / "inc-prof.h5")
            shutil.copytree(root / "new", root / "new-prof")
            pi = run_child("merge", root / "new-prof", root / "inc-prof.h5", profile=True)
            show_profile(f"incremental merge of {new} into {existing} groups", pi)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
