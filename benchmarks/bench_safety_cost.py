"""What h5guard's safety costs, one row per row of issue #24's table.

    python benchmarks/bench_safety_cost.py [--rows merge,writer-big,...] [--repeat 3]
                                           [--quick] [--json] [--workdir DIR]

Every timed run is a whole child process (this script with ``--child``); baseline and
h5guard runs alternate (baseline, h5guard, baseline, ...) ``--repeat`` times and each
figure is the median of its runs, printed as a ratio against the baseline measured in
the same run, with the target and PASS/MISS next to it. The time is taken inside the
child around the operation only (imports and building the inputs excluded; the parent
calls ``os.sync()`` before each run so earlier steps' dirty pages are not written back
during it). Peak RSS is the child's own high-water mark (``VmHWM``; ``ru_maxrss`` of
``RUSAGE_SELF`` where there is no /proc) and ``ru_maxrss`` of its own children
(``RUSAGE_CHILDREN``: the merge's and check's sandbox), the larger of the two per run,
the largest over the runs.

Rows (``--rows`` takes the group names):

=========== =========================================================================
merge       ``merge`` of 100 shards x 100 groups vs the original report's merge loop
writer-big  ShardWriter, 8 results of 100 MB (defaults) vs plain h5py; time and RSS
merge-big   ``merge`` of those 8 x 100 MB shards vs the naive loop; peak RSS
writer-tiny 100,000 tiny results at ``commit_every`` 100 and 1000 vs a plain h5py loop
iter        ``iter_results`` (verify on / off) over 5,000 results vs a plain h5py loop
dataframe   ``to_dataframe`` vs a DataFrame built by hand from h5py attributes
read        ``read()`` of 500 keys (one call each) vs opening and reading with h5py
check       ``check`` of 1,000 shards, and the quick layer, vs an in-process h5py read
=========== =========================================================================

``--quick`` shrinks every size (a smoke test, not a measurement). Nothing here asserts
a time: MISS is printed, the exit code is 0 unless a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Running as a script puts benchmarks/ first on sys.path; the package lives one level up.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from bench_h5guard import read_all  # noqa: E402  (the same full read as bench_h5guard's)

import h5guard  # noqa: E402

MIB = 2**20
RESERVED = "h5guard_"

# Sizes: (default, --quick).
SIZES: dict[str, tuple[int, int]] = {
    "merge_shards": (100, 3),
    "merge_groups": (100, 10),
    "big_results": (8, 2),
    "big_mb": (100, 1),
    "tiny_results": (100_000, 300),
    "read_results": (5_000, 40),
    "read_keys": (500, 10),
    "check_shards": (1_000, 10),
}

Params = dict[str, Any]
Run = dict[str, Any]


# -- the data --------------------------------------------------------------------------
def small_result(rng: np.random.Generator, g: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two small datasets and four scalar attributes (the sweep's result, roughly)."""
    n = int(rng.integers(16, 65))
    return (
        {"layout": rng.random((n, 2)) * 2000.0, "initial_layout": rng.random((n, 2)) * 2000.0},
        {
            "aep": float(rng.random() * 400.0),
            "seed": g,
            "status": "ok",
            "runtime": float(rng.random()),
        },
    )


def tiny_result(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One float and two attributes."""
    return {"x": float(i)}, {"status": "ok", "seed": i}


def build_shards(directory: Path, shards: int, groups: int, *, prefix: str, seed: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for s in range(shards):
        with h5guard.ShardWriter(directory, commit_every=groups, prefix=prefix) as w:
            for g in range(groups):
                w.add(f"{prefix}_{s:05d}_{g:04d}", *small_result(rng, g))


def big_array(mb: int, i: int) -> np.ndarray[Any, Any]:
    """``mb`` MiB of float64 (random, so nothing compresses or dedups), distinct per ``i``."""
    return np.random.default_rng(i).random(mb * MIB // 8)


# -- what the timed children do (each returns the number of items it handled) ----------
def child_merge_naive(p: Params) -> int:
    """The original report's merge loop (seed/original-report.txt), shard deletion included."""
    n = 0
    with h5py.File(p["output"], "w") as h5_out:
        for name in sorted(os.listdir(p["shards"])):
            if not name.endswith(".h5"):
                continue
            worker_file = os.path.join(p["shards"], name)
            if os.path.getsize(worker_file) == 0:
                continue
            with h5py.File(worker_file, "r") as h5_in:
                for key in h5_in:
                    # h5guard_summary: the shards' own table, no result to merge.
                    if key != "init" and not key.startswith(RESERVED) and key not in h5_out:
                        h5_out.copy(h5_in[key], key)
                        n += 1
            os.remove(worker_file)
    return n


def child_merge_h5guard(p: Params) -> int:
    report = h5guard.merge(p["shards"], p["output"])
    if report.exit_code != 0:
        raise SystemExit(report.render_text())
    return int(report.groups_added)


def child_big_plain(p: Params) -> float:
    """Only the h5py calls are timed; each result is a fresh array (the previous one dropped)."""
    spent = 0.0
    with h5py.File(p["output"], "w") as f:
        for i in range(p["results"]):
            data = big_array(p["mb"], i)
            t0 = time.perf_counter()
            g = f.create_group(f"big_{i:03d}")
            g.create_dataset("data", data=data)
            g.attrs["status"] = "ok"
            spent += time.perf_counter() - t0
            del data
        t0 = time.perf_counter()
    return spent + time.perf_counter() - t0


def child_big_h5guard(p: Params) -> float:
    """As :func:`child_big_plain`: ``add()`` calls and the final commit are timed.

    A fresh array per result, not one buffer refilled: the writer keeps a reference to
    the caller's array until the commit (see perf-findings), so refilling one buffer
    after ``add()`` commits the later content under the earlier digest.
    """
    spent = 0.0
    w = h5guard.ShardWriter(p["shards"])
    for i in range(p["results"]):
        data = big_array(p["mb"], i)
        t0 = time.perf_counter()
        w.add(f"big_{i:03d}", {"data": data}, {"status": "ok"})
        spent += time.perf_counter() - t0
        del data
    t0 = time.perf_counter()
    w.close()
    return spent + time.perf_counter() - t0


def child_tiny_plain(p: Params) -> int:
    with h5py.File(p["output"], "w") as f:
        for i in range(p["results"]):
            datasets, attrs = tiny_result(i)
            g = f.create_group(f"r{i:07d}")
            for name, value in datasets.items():
                g.create_dataset(name, data=value)
            for name, value in attrs.items():
                g.attrs[name] = value
    return int(p["results"])


def child_tiny_h5guard(p: Params) -> int:
    with h5guard.ShardWriter(p["shards"], commit_every=p["commit_every"]) as w:
        for i in range(p["results"]):
            w.add(f"r{i:07d}", *tiny_result(i))
    return int(p["results"])


def _plain_group(g: h5py.Group) -> tuple[dict[str, Any], dict[str, Any]]:
    datasets = {name: g[name][()] for name in g}
    attrs = {name: g.attrs[name] for name in g.attrs if not name.startswith(RESERVED)}
    return datasets, attrs


def child_iter_plain(p: Params) -> int:
    n = 0
    with h5py.File(p["output"], "r") as f:
        for key in f:
            if key.startswith("h5guard_"):  # the summary: h5guard's own, no result
                continue
            _plain_group(f[key])
            n += 1
    return n


def child_iter_h5guard(p: Params) -> int:
    return sum(1 for _ in h5guard.iter_results(p["output"], verify=p["verify"]))


def _scalar(value: Any) -> bool:
    return isinstance(value, str | bytes | int | float | np.generic) and not isinstance(
        value, np.void
    )


def child_df_plain(p: Params) -> int:
    import pandas as pd

    rows: list[dict[str, Any]] = []
    keys: list[str] = []
    with h5py.File(p["output"], "r") as f:
        for key in f:
            if key.startswith("h5guard_"):  # the summary: h5guard's own, no result
                continue
            g = f[key]
            row = {
                name: v
                for name in g.attrs
                if not name.startswith(RESERVED) and _scalar(v := g.attrs[name])
            }
            for name in g:
                d = g[name]
                if d.shape == ():
                    row[name] = d[()]
            rows.append(row)
            keys.append(key)
    return len(pd.DataFrame(rows, index=pd.Index(keys, name="key")))


def child_df_h5guard(p: Params) -> int:
    return len(h5guard.to_dataframe(p["output"]))


def child_read_plain(p: Params) -> int:
    for key in p["keys"]:
        with h5py.File(p["output"], "r") as f:
            _plain_group(f[key])
    return len(p["keys"])


def child_read_h5guard(p: Params) -> int:
    for key in p["keys"]:
        h5guard.read(p["output"], key)
    return len(p["keys"])


def child_check_plain(p: Params) -> int:
    paths = sorted(str(x) for x in Path(p["shards"]).glob("*.h5"))
    for path in paths:
        read_all(path)
    return len(paths)


def child_check_h5guard(p: Params) -> int:
    report = h5guard.check([p["shards"]], deep=p["deep"])
    if not report.ok:
        raise SystemExit(report.render_text())
    return len(report.files)


# The public names each h5guard child uses (their modules load before the clock starts).
NEEDS = {
    "merge-h5guard": ("merge",),
    "big-h5guard": ("ShardWriter",),
    "tiny-h5guard": ("ShardWriter",),
    "iter-h5guard": ("iter_results",),
    "df-h5guard": ("to_dataframe",),
    "read-h5guard": ("read",),
    "check-h5guard": ("check",),
}

# Children that time only their library calls (building each input is excluded).
SELF_TIMED = frozenset({"big-plain", "big-h5guard"})

CHILDREN: dict[str, Callable[[Params], float]] = {
    "merge-naive": child_merge_naive,
    "merge-h5guard": child_merge_h5guard,
    "big-plain": child_big_plain,
    "big-h5guard": child_big_h5guard,
    "tiny-plain": child_tiny_plain,
    "tiny-h5guard": child_tiny_h5guard,
    "iter-plain": child_iter_plain,
    "iter-h5guard": child_iter_h5guard,
    "df-plain": child_df_plain,
    "df-h5guard": child_df_h5guard,
    "read-plain": child_read_plain,
    "read-h5guard": child_read_h5guard,
    "check-plain": child_check_plain,
    "check-h5guard": child_check_h5guard,
}


def own_peak_mib() -> float:
    """This process's peak RSS since its ``exec``.

    ``VmHWM`` rather than ``ru_maxrss``: Linux carries ``ru_maxrss`` over ``fork`` and
    ``exec``, so a child would report at least the RSS its parent (this driver, which
    builds the inputs) had when it forked.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(kind: str, params: Params) -> None:
    fn = CHILDREN[kind]
    # Imports happen before the clock starts, on both sides: pandas, and the modules
    # behind h5guard's lazy public names.
    if kind.startswith("df"):
        import pandas  # noqa: F401
    for name in NEEDS.get(kind, ()):
        getattr(h5guard, name)
    started = time.perf_counter()
    value = fn(params)
    seconds = time.perf_counter() - started
    count = int(value)
    if kind in SELF_TIMED:  # the child timed its own calls and returned the seconds
        seconds, count = float(value), int(params["results"])
    out = {
        "seconds": seconds,
        "count": count,
        "rss_mib": own_peak_mib(),
        "children_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    print(json.dumps(out))


# -- the parent: rows, alternation, verdicts --------------------------------------------
@dataclass
class Side:
    """One side of a comparison: a child kind, its parameters, what to do before each run."""

    label: str
    kind: str
    params: Params
    prepare: Callable[[], None] = lambda: None
    runs: list[Run] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return float(statistics.median(r["seconds"] for r in self.runs))

    @property
    def rss(self) -> float:
        return float(max(max(r["rss_mib"], r["children_rss_mib"]) for r in self.runs))

    @property
    def count(self) -> int:
        return int(self.runs[0]["count"])


@dataclass
class Figure:
    """One printed line: a ratio against the baseline, a target, a verdict."""

    row: str
    text: str
    ratio: float
    target: str
    ok: bool

    def line(self) -> str:
        verdict = "PASS" if self.ok else "MISS"
        return (
            f"{self.row:<24} {self.text}  ratio {self.ratio:.2f}x (target {self.target})  {verdict}"
        )


def run_child(kind: str, params: Params) -> Run:
    os.sync()
    cmd = [sys.executable, __file__, "--child", kind, "--params", json.dumps(params)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed (exit {proc.returncode}):\n{proc.stderr}{proc.stdout}")
    result: Run = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def alternate(sides: list[Side], repeat: int) -> None:
    for _ in range(repeat):
        for side in sides:
            side.prepare()
            side.runs.append(run_child(side.kind, side.params))


def runs_text(side: Side) -> str:
    return ", ".join(f"{r['seconds']:.3f}" for r in side.runs)


def fresh_copy(src: Path, dst: Path) -> Callable[[], None]:
    def prepare() -> None:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)

    return prepare


def removing(*paths: Path) -> Callable[[], None]:
    def prepare() -> None:
        for path in paths:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    return prepare


def both(*steps: Callable[[], None]) -> Callable[[], None]:
    def prepare() -> None:
        for step in steps:
            step()

    return prepare


def time_figure(row: str, base: Side, ours: Side, *, limit: float | None) -> Figure:
    """Time ratio ours / baseline; ``limit`` None: no time target (printed for the record)."""
    ratio = ours.seconds / base.seconds
    text = f"{base.label} {base.seconds:8.3f} s | {ours.label} {ours.seconds:8.3f} s  time"
    if limit is None:
        return Figure(row, text, ratio, "none: the target is memory", True)
    return Figure(row, text, ratio, f"<= {limit:.2f}x", ratio <= limit)


def rate_figure(row: str, base: Side, ours: Side, *, limit: float) -> Figure:
    ratio = base.seconds / ours.seconds
    unit = "files/s" if "check" in row else "items/s"
    text = (
        f"{base.label} {base.count / base.seconds:9.0f} {unit} | "
        f"{ours.label} {ours.count / ours.seconds:9.0f} {unit}  rate"
    )
    return Figure(row, text, ratio, f">= {limit:.2f}x", ratio >= limit)


class Bench:
    def __init__(self, root: Path, *, quick: bool, repeat: int) -> None:
        self.root = root
        self.quick = quick
        self.repeat = repeat
        self.figures: list[Figure] = []
        self.detail: list[dict[str, Any]] = []

    def size(self, name: str) -> int:
        return SIZES[name][1 if self.quick else 0]

    def record(
        self, group: str, sides: list[Side], figures: list[Figure], load: list[float]
    ) -> None:
        for side in sides:
            print(f"  {side.label} runs (s): {runs_text(side)}; peak RSS {side.rss:.0f} MiB")
        for fig in figures:
            print(fig.line())
        self.figures.extend(figures)
        self.detail.append(
            {
                "group": group,
                "load_before": load,
                "load_after": list(os.getloadavg()),
                "sides": [
                    {
                        "label": s.label,
                        "kind": s.kind,
                        "runs": s.runs,
                        "median_s": s.seconds,
                        "peak_rss_mib": s.rss,
                    }
                    for s in sides
                ],
                "figures": [
                    {"row": f.row, "text": f.text, "ratio": f.ratio, "target": f.target, "ok": f.ok}
                    for f in figures
                ],
            }
        )

    # Shared inputs, built once per invocation, in this process.
    def results_file(self) -> Path:
        out = self.root / "results.h5"
        if not out.exists():
            n = self.size("read_results")
            per = min(100, n)
            build_shards(self.root / "results-shards", n // per, per, prefix="res", seed=4)
            report = h5guard.merge(self.root / "results-shards", out)
            assert report.exit_code == 0, report.render_text()
        return out

    def merge_sides(self, src: Path, prefix: str) -> tuple[Side, Side]:
        """The naive merge loop and h5guard.merge, each on a fresh copy of ``src``."""
        sides = []
        for label, child, tag in (
            ("naive loop", "merge-naive", "naive"),
            ("h5guard.merge", "merge-h5guard", "ours"),
        ):
            shards, out = self.root / f"{prefix}-{tag}", self.root / f"{prefix}-{tag}.h5"
            sides.append(
                Side(
                    label,
                    child,
                    {"shards": str(shards), "output": str(out)},
                    both(removing(out), fresh_copy(src, shards)),
                )
            )
        return sides[0], sides[1]

    # -- the rows ------------------------------------------------------------------
    def merge(self) -> None:
        shards, groups = self.size("merge_shards"), self.size("merge_groups")
        src = self.root / "merge-src"
        build_shards(src, shards, groups, prefix="w", seed=1)
        print(f"\nmerge: {shards} shards x {groups} groups")
        load = list(os.getloadavg())
        base, ours = self.merge_sides(src, "merge")
        alternate([base, ours], self.repeat)
        assert base.count == ours.count == shards * groups, (base.count, ours.count)
        self.record("merge", [base, ours], [rate_figure("merge", base, ours, limit=1.0)], load)

    def writer_big(self) -> None:
        results, mb = self.size("big_results"), self.size("big_mb")
        print(f"\nwriter-big: {results} results x {mb} MB, defaults")
        load = list(os.getloadavg())
        plain_out, shards = self.root / "big-plain.h5", self.root / "big-shards"
        base = Side(
            "plain h5py",
            "big-plain",
            {"output": str(plain_out), "results": results, "mb": mb},
            removing(plain_out),
        )
        ours = Side(
            "ShardWriter",
            "big-h5guard",
            {"shards": str(shards), "results": results, "mb": mb},
            removing(shards),
        )
        alternate([base, ours], self.repeat)
        rss_extra = ours.rss - base.rss
        rss = Figure(
            "writer-big peak RSS",
            f"plain h5py {base.rss:6.0f} MiB | ShardWriter {ours.rss:6.0f} MiB ({rss_extra:+.0f} MiB)",
            ours.rss / base.rss,
            "<= plain + 300 MB",
            rss_extra * MIB <= 300e6,
        )
        self.record(
            "writer-big",
            [base, ours],
            [time_figure("writer-big time", base, ours, limit=2.0), rss],
            load,
        )
        removing(plain_out, shards)()

    def merge_big(self) -> None:
        results, mb = self.size("big_results"), self.size("big_mb")
        src = self.root / "bigm-src"
        if not src.exists():
            run_child("big-h5guard", {"shards": str(src), "results": results, "mb": mb})
        print(f"\nmerge-big: {results} results x {mb} MB")
        load = list(os.getloadavg())
        base, ours = self.merge_sides(src, "bigm")
        alternate([base, ours], self.repeat)
        # The target is absolute: < 600 MB for results of 100 MB (O(one result)).
        limit = 600e6
        figs = [
            time_figure("merge-big time", base, ours, limit=None),
            Figure(
                "merge-big peak RSS",
                f"naive loop {base.rss:6.0f} MiB | h5guard.merge {ours.rss:6.0f} MiB",
                ours.rss / base.rss,
                f"< {limit / 1e6:.0f} MB",
                ours.rss * MIB < limit,
            ),
        ]
        self.record("merge-big", [base, ours], figs, load)
        removing(*(Path(v) for side in (base, ours) for v in side.params.values()))()

    def writer_tiny(self) -> None:
        n = self.size("tiny_results")
        print(f"\nwriter-tiny: {n} results of one float and two attributes")
        load = list(os.getloadavg())
        plain_out = self.root / "tiny-plain.h5"
        base = Side(
            "plain h5py",
            "tiny-plain",
            {"output": str(plain_out), "results": n},
            removing(plain_out),
        )
        ours = []
        for every in (100, 1000):
            d = self.root / f"tiny-{every}"
            ours.append(
                Side(
                    f"ShardWriter(commit_every={every})",
                    "tiny-h5guard",
                    {"shards": str(d), "results": n, "commit_every": every},
                    removing(d),
                )
            )
        alternate([base, *ours], self.repeat)
        figs = [
            time_figure(f"writer-tiny every={s.params['commit_every']}", base, s, limit=1.10)
            for s in ours
        ]
        self.record("writer-tiny", [base, *ours], figs, load)

    def iter(self) -> None:
        out = self.results_file()
        print(f"\niter: iter_results over {self.size('read_results')} results")
        load = list(os.getloadavg())
        base = Side("plain h5py loop", "iter-plain", {"output": str(out)})
        on = Side("iter_results(verify=True)", "iter-h5guard", {"output": str(out), "verify": True})
        off = Side(
            "iter_results(verify=False)", "iter-h5guard", {"output": str(out), "verify": False}
        )
        alternate([base, on, off], self.repeat)
        faster = Figure(
            "iter verify=False/True",
            f"verify=True {on.seconds:8.3f} s | verify=False {off.seconds:8.3f} s  time",
            off.seconds / on.seconds,
            "measurably < 1: <= 0.90x",
            off.seconds <= 0.90 * on.seconds,
        )
        figs = [
            time_figure("iter verify=True", base, on, limit=1.25),
            time_figure("iter verify=False", base, off, limit=1.25),
            faster,
        ]
        self.record("iter", [base, on, off], figs, load)

    def dataframe(self) -> None:
        out = self.results_file()
        print(f"\ndataframe: to_dataframe of {self.size('read_results')} results")
        load = list(os.getloadavg())
        base = Side("hand-built DataFrame", "df-plain", {"output": str(out)})
        ours = Side("to_dataframe", "df-h5guard", {"output": str(out)})
        alternate([base, ours], self.repeat)
        self.record(
            "dataframe", [base, ours], [time_figure("to_dataframe", base, ours, limit=1.25)], load
        )

    def read(self) -> None:
        out = self.results_file()
        with h5py.File(out, "r") as f:
            keys = sorted(k for k in f if not k.startswith(RESERVED))  # not the summary
        k = self.size("read_keys")
        chosen = keys[:: max(1, len(keys) // k)][:k]
        print(f"\nread: read() of {len(chosen)} keys, one call (one open) each")
        load = list(os.getloadavg())
        base = Side("plain h5py", "read-plain", {"output": str(out), "keys": chosen})
        ours = Side("h5guard.read", "read-h5guard", {"output": str(out), "keys": chosen})
        alternate([base, ours], self.repeat)
        self.record(
            "read", [base, ours], [time_figure("read() per key", base, ours, limit=1.25)], load
        )

    def check(self) -> None:
        n = self.size("check_shards")
        d = self.root / "check-shards"
        if not d.exists():
            build_shards(d, n, 10, prefix="c", seed=5)
        print(f"\ncheck: {n} shards x 10 groups")
        load = list(os.getloadavg())
        base = Side("in-process h5py read", "check-plain", {"shards": str(d)})
        deep = Side("h5guard check", "check-h5guard", {"shards": str(d), "deep": True})
        quick = Side("quick layer", "check-h5guard", {"shards": str(d), "deep": False})
        alternate([base, deep, quick], self.repeat)
        quick_rate = quick.count / quick.seconds
        figs = [
            rate_figure("check deep", base, deep, limit=7.45),
            Figure(
                "check quick layer",
                f"in-process h5py read {base.count / base.seconds:9.0f} files/s | "
                f"quick layer {quick_rate:9.0f} files/s  rate",
                base.seconds / quick.seconds,
                ">= 40,820 files/s (the earlier figure; docs: >= 10,000)",
                quick_rate >= 40_820,
            ),
        ]
        self.record("check", [base, deep, quick], figs, load)


GROUPS: dict[str, Callable[[Bench], None]] = {
    "merge": Bench.merge,
    "writer-big": Bench.writer_big,
    "merge-big": Bench.merge_big,
    "writer-tiny": Bench.writer_tiny,
    "iter": Bench.iter,
    "dataframe": Bench.dataframe,
    "read": Bench.read,
    "check": Bench.check,
}


def chosen_groups(spec: str | None) -> Iterator[str]:
    names = list(GROUPS) if not spec else [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        if name not in GROUPS:
            raise SystemExit(f"--rows: unknown row {name!r}; choose from {', '.join(GROUPS)}")
        yield name


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", help=f"comma-separated, from: {', '.join(GROUPS)} (default: all)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each side, median reported")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one run each (smoke test)")
    p.add_argument("--json", action="store_true", help="also print one JSON document at the end")
    p.add_argument("--workdir", help="where to build (default: a temporary directory)")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--params", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_main(args.child, json.loads(args.params))
        return
    groups = list(chosen_groups(args.rows))
    repeat = 1 if args.quick and args.repeat == 3 else args.repeat
    root = Path(tempfile.mkdtemp(prefix="bench_safety-", dir=args.workdir))
    load = os.getloadavg()
    print(
        f"h5guard {h5guard.__version__}, h5py {h5py.version.version}, HDF5 {h5py.version.hdf5_version}, "
        f"{os.cpu_count()} CPU(s); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"median of {repeat} alternated runs{' (--quick sizes)' if args.quick else ''}"
    )
    bench = Bench(root, quick=args.quick, repeat=repeat)
    try:
        for name in groups:
            GROUPS[name](bench)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    end = os.getloadavg()
    missed = sum(not f.ok for f in bench.figures)
    print(
        f"\n{len(bench.figures) - missed} PASS, {missed} MISS; "
        f"load average at the end {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}"
    )
    if args.json:
        doc = {
            "quick": args.quick,
            "repeat": repeat,
            "load_start": list(load),
            "load_end": list(end),
            "versions": {"h5guard": h5guard.__version__, "h5py": h5py.version.version},
            "groups": bench.detail,
        }
        print(json.dumps(doc))


if __name__ == "__main__":
    main()
