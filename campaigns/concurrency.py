"""Concurrency campaign: many merges and sweeps on one output (and one temp dir) at once.

* ``merges``: several ``h5guard merge`` processes (the CLI), started together, each
  merging its own directory of shards into the same output that already holds groups,
  with lock timeouts of 0, 0.5 or 30 s. Losers must exit 2 with a message naming the
  lock holder (a pid of one of the other processes); their re-run must succeed.
* ``two sweeps``: a second ``layout-sweep run`` on the temp dir of a running one must be
  refused with exit 2, naming the first run's pid, while the first keeps running.
* ``sweep + merges``: a ``layout-sweep run`` (tiny spec) and three ``h5guard merge``
  processes on its output, one of them released the moment the sweep's own merge holds
  the output's lock (lock timeout 0); plus the refused second sweep. The sweep must
  exit 0.

Throughout, a monitor thread copies every version of the output it sees; afterwards
each copy must validate clean and the group sets must only grow (no interleaving, no
lost group). At the end every group (sweep configs and merged shards) is in the
output exactly once with the right digest, and no shard is left in any directory.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from campaigns import _samples
from campaigns._common import TINY_SWEEP_SPEC, CampaignResult, Deadline, Row, problems_by_path, stop
from h5guard import Sandbox, Schema, ShardWriter, validate_many
from h5guard._format import result as _result

NAME = "concurrency"
GROUPS_PER_DIR = 6
LEGEND = (
    "runs = trials; flagged = processes that lost the lock or were refused (exit 2 naming the "
    "holder, as required); passed-unchanged = trials where every check held; silent = "
    "groups with a wrong digest; crashes = processes with an unexpected exit or message; "
    "hangs = processes that overran; lost = groups missing at the end."
)
# A pre-started CLI process: imports done, it runs `h5guard ARGS` the moment GO exists.
_WAITING_CLI = """
import os, sys, time
import h5guard.cli as cli
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.0005)
sys.exit(cli.main(sys.argv[2:]))
"""


def _result_schema() -> Schema:
    from optimizer.results import RESULT_SCHEMA

    return RESULT_SCHEMA


def fake_result(m: int, i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A group that satisfies layout-sweep's result schema, keyed ``ext<m>-<i>``."""
    rng = np.random.default_rng([m, i])
    layout = rng.uniform(-1000.0, 1000.0, (16, 2))
    datasets = {"layout": layout, "initial_layout": layout + rng.normal(0.0, 5.0, (16, 2))}
    attrs = {
        "status": "ok",
        "config": json.dumps({"source": f"merge-dir-{m}", "i": i}),
        "config_id": f"ext{m}-{i}",
        "versions": "{}",
    }
    return datasets, attrs


def fake_digest(m: int, i: int) -> str:
    datasets, attrs = fake_result(m, i)
    return _result.prepare(f"ext{m}-{i}", datasets, attrs, schema=None).digest


def write_fake_shards(directory: Path, m: int, schema: Schema) -> set[str]:
    directory.mkdir(parents=True, exist_ok=True)
    with ShardWriter(directory, schema=schema, commit_every=3, prefix="ext") as w:
        for i in range(GROUPS_PER_DIR):
            w.add(f"ext{m}-{i}", *fake_result(m, i))
    return {f"ext{m}-{i}" for i in range(GROUPS_PER_DIR)}


class Monitor:
    """Copies every version of ``path`` it sees (an atomic replace gives a new inode)."""

    def __init__(self, path: Path, into: Path) -> None:
        self.path, self.into = path, into
        into.mkdir(parents=True, exist_ok=True)
        self.copies: list[Path] = []
        self._last: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._snap()

    def _snap(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                ident = (st.st_ino, st.st_mtime_ns, st.st_size)
                if ident == self._last:
                    return
                data = fh.read()
        except FileNotFoundError:
            return
        copy = self.into / f"v{len(self.copies):04d}.h5"
        copy.write_bytes(data)
        self.copies.append(copy)
        self._last = ident

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._snap()
            time.sleep(0.005)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[str]
    lock_timeout: float | None = None
    out: str = ""
    err: str = ""

    def finish(self, timeout: float) -> bool:
        try:
            self.out, self.err = self.popen.communicate(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            stop(self.popen)
            self.out, self.err = "", "timed out"
            return False


def _waiting_merge(go: Path, shard_dir: Path, out: Path, lock_timeout: float, name: str) -> Proc:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _WAITING_CLI,
            str(go),
            "merge",
            str(shard_dir),
            "-o",
            str(out),
            "--lock-timeout",
            f"{lock_timeout:g}",
            "--json",
        ],
        cwd=_samples.REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "ready"
    return Proc(name, proc, lock_timeout)


def _sweep(work: Path) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("LAYOUT_SWEEP_FAULT", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "optimizer.cli",
            "run",
            "spec.toml",
            "-o",
            "out.h5",
            "--workers",
            "2",
            "--json",
        ],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _holder_pid(info: Path) -> int | None:
    try:
        return int(json.loads(info.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _wait_for_holder(info: Path, pid: int, proc: subprocess.Popen[str], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if _holder_pid(info) == pid:
            return True
        time.sleep(0.002)
    return False


def _judge_loser(result: CampaignResult, row: Row, p: Proc, pids: set[int]) -> bool:
    """A process that exited 2: its message must name a holder among ``pids``."""
    named = [int(x) for x in re.findall(r"pid (\d+)", p.err)]
    if p.popen.returncode == 2 and any(n in pids for n in named):
        row.flagged = (row.flagged or 0) + 1
        return True
    row.crashes += 1
    result.violate(
        row,
        f"{p.name} exited {p.popen.returncode} without naming a holder among {sorted(pids)}: {p.err.strip()[-300:]}",
        kind=f"bad loser message ({p.name.split()[0]})",
    )
    return False


def _check_monitor(result: CampaignResult, row: Row, monitor: Monitor, box: Sandbox) -> bool:
    if not monitor.copies:
        return True
    report = validate_many([str(p) for p in monitor.copies], sandbox=box)
    ok = True
    previous: set[str] = set()
    problems_of = problems_by_path(report)
    summary_of = {s.path: s for s in report.files}
    for copy in monitor.copies:
        problems = problems_of.get(str(copy), [])
        summary = summary_of.get(str(copy))
        keys = set(summary.groups) if summary else set()
        if problems:
            ok = False
            result.violate(row, f"a version of the output seen mid-run is invalid: {problems[0]}")
        if not previous <= keys:
            ok = False
            result.violate(
                row,
                f"groups vanished between two versions of the output: {sorted(previous - keys)[:5]}",
            )
        previous = keys
    result.tally(f"{row.scenario}: output versions seen by the monitor", len(monitor.copies))
    return ok


def _check_final(
    result: CampaignResult,
    row: Row,
    out: Path,
    expected: dict[str, str | None],
    dirs: list[Path],
    box: Sandbox,
) -> bool:
    report = validate_many([str(out)], sandbox=box)
    groups = report.files[0].groups
    ok = report.ok
    if not report.ok:
        result.violate(row, f"final output invalid: {report.render_text()[:300]}")
    missing = set(expected) - set(groups)
    extra = set(groups) - set(expected)
    wrong = [k for k, d in expected.items() if d is not None and k in groups and groups[k] != d]
    if missing or extra or wrong:
        ok = False
        row.lost = (row.lost or 0) + len(missing)
        row.silent = (row.silent or 0) + len(wrong)
        result.violate(
            row,
            f"final output: missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}, wrong digest {wrong[:5]}",
        )
    left = [p for d in dirs for p in d.glob("*.h5")]
    quarantined = [p for d in dirs for p in (d / "quarantine").glob("*.h5")] if dirs else []
    if left or quarantined:
        ok = False
        result.violate(
            row,
            f"shards left {[p.name for p in left][:3]} or quarantined {[p.name for p in quarantined][:3]}",
        )
    return ok


# -- merges only ------------------------------------------------------------------------------
def merges_trial(
    result: CampaignResult,
    row: Row,
    work: Path,
    box: Sandbox,
    rng: random.Random,
    schema: Schema,
    timeouts: tuple[float, ...] = (0.0, 0.5, 30.0),
) -> None:
    out = work / "out.h5"
    base = work / "base"
    expected: dict[str, str | None] = {}
    base_keys = write_fake_shards(base, 9, schema)
    from h5guard import merge

    merge(base, out, workers=1)  # an output that already holds groups
    expected.update({k: fake_digest(9, int(k.split("-")[1])) for k in base_keys})
    dirs = []
    for m in range(4):
        d = work / f"m{m}"
        keys = write_fake_shards(d, m, schema)
        expected.update({k: fake_digest(m, int(k.split("-")[1])) for k in keys})
        dirs.append(d)
    go = work / "go"
    procs = [
        _waiting_merge(go, d, out, rng.choice(timeouts), f"merge m{m}") for m, d in enumerate(dirs)
    ]
    pids = {p.popen.pid for p in procs}
    row.runs += 1
    ok = True
    with Monitor(out, work / "seen") as monitor:
        go.touch()
        for p in procs:
            if not p.finish(120):
                row.hangs += 1
                ok = False
                result.violate(row, f"{p.name} did not finish within 120 s")
    losers = []
    for p in procs:
        code = p.popen.returncode
        if code == 0:
            continue
        if code == 2:
            ok &= _judge_loser(result, row, p, pids)
            losers.append(p)
        else:
            ok = False
            row.crashes += 1
            result.violate(row, f"{p.name} exited {code}: {p.err.strip()[-300:]}")
    for p in losers:
        ok &= _rerun_loser(result, row, p.name, dirs[int(p.name[-1])], out)
    result.tally(f"{row.scenario}: merges that lost the lock (exit 2) and were re-run", len(losers))
    ok &= _check_monitor(result, row, monitor, box)
    ok &= _check_final(result, row, out, expected, [base, *dirs], box)
    if ok:
        row.passed = (row.passed or 0) + 1


# -- sweeps ------------------------------------------------------------------------------------
def _second_sweep(result: CampaignResult, row: Row, work: Path, a: subprocess.Popen[str]) -> bool:
    """Start a second sweep on A's temp dir while A runs: it must exit 2 naming A."""
    info = work / "out.h5_temp" / "run.lock.info"
    if not _wait_for_holder(info, a.pid, a, 60):
        result.tally("second-sweep checks skipped: the first sweep never held its run lock")
        return True
    b = _sweep(work)
    try:
        _, err = b.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        stop(b)
        row.hangs += 1
        result.violate(row, "the second sweep did not return within 120 s")
        return False
    if a.poll() is not None:
        result.tally("second-sweep checks inconclusive: the first sweep had ended")
        return True
    if b.returncode == 2 and f"pid {a.pid}" in err:
        row.flagged = (row.flagged or 0) + 1
        return True
    row.crashes += 1
    result.violate(
        row,
        f"the second sweep exited {b.returncode}, expected 2 naming pid {a.pid}: {err.strip()[-300:]}",
        kind="second sweep not refused",
    )
    return False


def two_sweeps_trial(result: CampaignResult, row: Row, work: Path) -> None:
    (work / "spec.toml").write_text(TINY_SWEEP_SPEC, encoding="utf-8")
    a = _sweep(work)
    row.runs += 1
    try:
        if _second_sweep(result, row, work, a):
            row.passed = (row.passed or 0) + 1
    finally:
        stop(a)  # its workers die with it (PR_SET_PDEATHSIG)


def sweep_trial(
    result: CampaignResult, row: Row, work: Path, box: Sandbox, rng: random.Random, schema: Schema
) -> None:
    from optimizer import expand_spec, load_spec

    work.mkdir(parents=True, exist_ok=True)
    (work / "spec.toml").write_text(TINY_SWEEP_SPEC, encoding="utf-8")
    out = work / "out.h5"
    planned = {c.config_id for c in expand_spec(load_spec(str(work / "spec.toml")))}
    expected: dict[str, str | None] = dict.fromkeys(planned)
    dirs = []
    for m in range(3):
        d = work / f"m{m}"
        keys = write_fake_shards(d, m, schema)
        expected.update({k: fake_digest(m, int(k.split("-")[1])) for k in keys})
        dirs.append(d)
    row.runs += 1
    ok = True
    gos = [work / f"go{m}" for m in range(3)]
    merges = [
        _waiting_merge(gos[0], dirs[0], out, 30.0, "merge m0"),
        _waiting_merge(gos[1], dirs[1], out, rng.choice([0.0, 1.0, 30.0]), "merge m1"),
        _waiting_merge(gos[2], dirs[2], out, 0.0, "merge m2"),
    ]
    with Monitor(out, work / "seen") as monitor:
        a = _sweep(work)
        try:
            gos[0].touch()
            ok &= _second_sweep(result, row, work, a)
            time.sleep(rng.uniform(0.0, 4.0))
            gos[1].touch()
            # m2 is released the moment the sweep's own merge holds the output's lock.
            if _wait_for_holder(work / "out.h5.lock.info", a.pid, a, 300):
                result.tally(
                    "sweep trials where m2 was released while the sweep held the output lock"
                )
            gos[2].touch()
            try:
                _, a_err = a.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                row.hangs += 1
                result.violate(row, "the sweep did not finish within 600 s")
                return
        finally:
            stop(a)
        for p in merges:
            if not p.finish(300):
                row.hangs += 1
                ok = False
    if a.returncode != 0:
        ok = False
        row.crashes += 1
        result.violate(row, f"the sweep exited {a.returncode}: {a_err.strip()[-300:]}")
    pids = {a.pid} | {p.popen.pid for p in merges}
    for p in merges:
        code = p.popen.returncode
        if code == 2:
            ok &= _judge_loser(result, row, p, pids)
            if "pid " + str(a.pid) in p.err:
                result.tally("merges refused while the sweep held the output lock")
            ok &= _rerun_loser(result, row, p.name, dirs[int(p.name[-1])], out)
        elif code != 0:
            ok = False
            row.crashes += 1
            result.violate(row, f"{p.name} exited {code}: {p.err.strip()[-300:]}")
    ok &= _check_monitor(result, row, monitor, box)
    ok &= _check_final(result, row, out, expected, [*dirs, work / "out.h5_temp"], box)
    if ok:
        row.passed = (row.passed or 0) + 1


def run(budget: float, seed: int = 0) -> CampaignResult:
    deadline = Deadline(budget)
    result = CampaignResult(NAME, legend=LEGEND)
    rng = random.Random(seed)
    schema = _result_schema()
    full = budget >= 60
    with (
        tempfile.TemporaryDirectory(prefix="campaign-concurrency-") as tmp,
        Sandbox(workers=2, timeout=60) as box,
    ):
        work = Path(tmp)
        row = result.row("4 h5guard merge processes at once, non-empty output", lost=0)
        started = time.monotonic()
        share = deadline.share(0.3 if full else 0.6)
        t = 0
        # The short run waits for the lock (no losers, whose messages can name a stale
        # holder: see the report); the full run mixes in 0 s and 0.5 s lock timeouts.
        timeouts = (0.0, 0.5, 30.0) if full else (30.0,)
        while t < 1 or not share.expired():
            merges_trial(result, row, work / f"merges{t}", box, rng, schema, timeouts)
            t += 1
        row.seconds = time.monotonic() - started
        if not full:
            row = result.row("second layout-sweep run on a running one's temp dir")
            started = time.monotonic()
            d = work / "two"
            d.mkdir()
            two_sweeps_trial(result, row, d)
            row.seconds = time.monotonic() - started
        else:
            row = result.row("layout-sweep run + 3 merges + a refused second sweep", lost=0)
            started = time.monotonic()
            t = 0
            while t < 1 or not deadline.expired():
                sweep_trial(result, row, work / f"sweep{t}", box, rng, schema)
                t += 1
            row.seconds = time.monotonic() - started
    result.seconds = deadline.elapsed()
    return result


def _rerun_loser(result: CampaignResult, row: Row, name: str, shard_dir: Path, out: Path) -> bool:
    """A merge that lost the lock must succeed when re-run with a patient lock timeout."""
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "h5guard.cli",
            "merge",
            str(shard_dir),
            "-o",
            str(out),
            "--lock-timeout",
            "60",
        ],
        cwd=_samples.REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if again.returncode == 0:
        return True
    row.crashes += 1
    result.violate(row, f"re-run of {name} exited {again.returncode}: {again.stderr[-300:]}")
    return False
