"""SIGKILL a real merge process at random moments; the output must stay old-or-new.

Each trial copies a template (an old output of bulky groups, new shards, one bad file,
one stale writer partial), starts ``_merge_child.py`` on it and kills it: either after
a random delay from start-up, or at a finely varied offset after the child reports a
phase (``write``, ``verify``, ``verified``, ``commit`` = right before the fsync and
rename of the output, ``committed``), so kills land in the short final phase too. After
each kill the output must be byte-identical to the old one or hold exactly the new set
of groups, validate clean, and a re-run of the merge must give every group once with
the right digest.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import h5py
import pytest

from h5guard import Sandbox, merge, validate
from h5guard._atomic import writer_tag
from h5guard._merge.output import GROUPS_ATTR
from tests.crash._merge_child import (
    expected_digest,
    output_index,
    read_phases,
    run_and_kill,
    sha256_file,
    wait_for_phase,
    write_shards,
)
from tests.procs import descendants

REPO = Path(__file__).resolve().parents[2]
BIG = 65536  # float64 values of bulk data per group: 512 KiB, so copying takes a while
OLD = range(0, 30)  # groups already in the old output
NEW = range(30, 54)  # groups in the shards
BAD = "bad-notes.h5"


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@dataclass
class Template:
    root: Path
    with_old: bool
    old_sha: str | None
    shard_names: frozenset[str]
    partial_name: str
    partial_sha: str
    expected: dict[str, str]


def build_template(root: Path, *, with_old: bool) -> Template:
    tmp = root / "tmp"
    tmp.mkdir(parents=True)
    if with_old:
        write_shards(tmp, OLD, per_shard=10, big=BIG)
        merge(tmp, root / "out.h5", workers=1)
    write_shards(tmp, NEW, per_shard=8, big=BIG)
    (tmp / BAD).write_bytes(b"not an HDF5 file, a worker's log " * 100)
    host = writer_tag().rsplit("-", 1)[0]
    partial = tmp / f"shard-20200101T000000-{host}-{dead_pid()}-deadbeef.h5.partial"
    partial.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 4000)
    keys = list(OLD if with_old else []) + list(NEW)
    return Template(
        root=root,
        with_old=with_old,
        old_sha=sha256_file(root / "out.h5") if with_old else None,
        shard_names=frozenset(p.name for p in tmp.iterdir() if p.suffix == ".h5"),
        partial_name=partial.name,
        partial_sha=sha256_file(partial),
        expected={f"g{i}": expected_digest(i, big=BIG) for i in keys},
    )


def check_after_kill(tpl: Template, work: Path, box: Sandbox) -> str:
    """The output is the old or the new one, validates, and nothing unmerged is gone."""
    out, tmp = work / "out.h5", work / "tmp"
    assert (tmp / tpl.partial_name).exists(), "a writer's partial file was removed"
    assert sha256_file(tmp / tpl.partial_name) == tpl.partial_sha
    if not out.exists():
        assert not tpl.with_old, "the old output disappeared"
        outcome = "none"
    else:
        report = validate(out, sandbox=box)
        assert report.ok, report.render_text()
        index = output_index(out)
        if tpl.with_old and set(index) == {f"g{i}" for i in OLD}:
            assert sha256_file(out) == tpl.old_sha, "old output modified in place"
            outcome = "old"
        else:
            assert index == tpl.expected, "output is neither the old nor the new one"
            outcome = "new"
    left = {p.name for p in tmp.iterdir() if p.suffix == ".h5"}
    quarantined = {p.name for p in (tmp / "quarantine").glob("*.h5")}
    for name in tpl.shard_names - left:
        if name in quarantined:
            assert name == BAD, f"good shard {name} was quarantined"
        else:
            assert outcome == "new", f"shard {name} deleted but not in the output"
    return outcome


def check_remerge(tpl: Template, work: Path, box: Sandbox) -> None:
    out, tmp = work / "out.h5", work / "tmp"
    result = merge(tmp, out, workers=1)
    assert not result.conflicts
    assert output_index(out) == tpl.expected
    with h5py.File(out, "r") as f:
        assert int(f.attrs[GROUPS_ATTR]) == len(tpl.expected)
    report = validate(out, sandbox=box)
    assert report.ok, report.render_text()
    assert {p.name for p in tmp.iterdir() if p.suffix == ".h5"} == set()
    assert (tmp / "quarantine" / BAD).exists()
    note = json.loads((tmp / "quarantine" / f"{BAD}.json").read_text(encoding="utf-8"))
    assert note["reasons"] and "NOT_HDF5" in note["reasons"][0]
    assert sha256_file(tmp / tpl.partial_name) == tpl.partial_sha
    assert not (work / "out.h5.partial").exists()
    assert str(tmp / tpl.partial_name) in result.stale_partials


def campaign(tmp_path: Path, n: int, seed: int) -> tuple[Counter[str], Counter[str]]:
    rnd = random.Random(seed)
    templates = [
        build_template(tmp_path / "tpl-old", with_old=True),
        build_template(tmp_path / "tpl-new", with_old=False),
    ]
    # An unkilled run measures how long a whole merge takes on this machine.
    work = tmp_path / "calibrate"
    shutil.copytree(templates[0].root, work)
    started = time.monotonic()
    run_and_kill(work, "done", 0.0)
    total = time.monotonic() - started
    shutil.rmtree(work)
    phases: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    plans: list[tuple[str | None, float]] = []
    cycle = ["commit", None, "verified", "write", "commit", "verify", "committed", "verified"]
    for t in range(n):
        anchor = cycle[t % len(cycle)] if t < n - 1 else "commit"
        if anchor is None:  # anywhere, from interpreter start-up to the end
            offset = rnd.uniform(0.0, total * 1.1)
        elif anchor == "write":  # while the partial output is built
            offset = rnd.uniform(0.0, 0.15)
        elif anchor == "verify":  # re-reading the partial, then into the commit
            offset = rnd.uniform(0.0, 0.1)
        elif anchor == "verified":  # verified, about to replace the output
            offset = rnd.uniform(0.0, 0.03)
        elif anchor == "commit":  # inside the fsync + rename, finely varied
            offset = rnd.choice([0.0, 0.001, 0.003]) + rnd.uniform(0, 0.04)
        else:  # after the rename: while shards are deleted
            offset = rnd.uniform(0.0, 0.03)
        plans.append((anchor, offset))
    with Sandbox(workers=1, timeout=60) as box:
        for t, (anchor, offset) in enumerate(plans):
            tpl = templates[1] if t % 4 == 3 else templates[0]
            work = tmp_path / f"t{t}"
            shutil.copytree(tpl.root, work)
            phase, _ = run_and_kill(work, anchor, offset)
            outcome = check_after_kill(tpl, work, box)
            check_remerge(tpl, work, box)
            phases[phase] += 1
            outcomes[outcome] += 1
            shutil.rmtree(work)
    return phases, outcomes


@pytest.mark.slow
def test_sigkilled_merge_leaves_old_or_new_output(tmp_path: Path) -> None:
    phases, outcomes = campaign(tmp_path, 10, seed=11)
    print(f"killed in phase: {dict(phases)}; outputs after the kill: {dict(outcomes)}")
    assert phases["commit"] >= 1, f"no kill landed between fsync and rename: {phases}"
    assert outcomes["old"] >= 1 and outcomes["new"] >= 1, outcomes


@pytest.mark.campaign
def test_sigkilled_merge_campaign(tmp_path: Path) -> None:
    phases, outcomes = campaign(tmp_path, 150, seed=12)
    print(f"killed in phase: {dict(phases)}; outputs after the kill: {dict(outcomes)}")
    assert phases["commit"] >= 10, phases
    assert {"old", "new", "none"} <= set(outcomes), outcomes


# -- two merges at once ---------------------------------------------------------------
def start_cli_merge(shard_dir: Path, out: Path, lock_timeout: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "h5guard.cli",
            "merge",
            str(shard_dir),
            "-o",
            str(out),
            "--json",
            "--lock-timeout",
            str(lock_timeout),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        results.append((proc.returncode, out, err))
    return results


def check_output(out: Path, keys: range, box: Sandbox | None = None) -> None:
    assert output_index(out) == {f"g{i}": expected_digest(i, big=BIG) for i in keys}
    with h5py.File(out, "r") as f:
        results = [k for k in f if not k.startswith("h5guard_")]  # not the summary
        assert int(f.attrs[GROUPS_ATTR]) == len(keys) == len(results)
    report = validate(out, sandbox=box) if box else validate(out)
    assert report.ok, report.render_text()


@pytest.mark.slow
def test_two_merges_of_different_directories_both_finish(tmp_path: Path) -> None:
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out.h5"
    a.mkdir()
    b.mkdir()
    write_shards(a, range(0, 30), per_shard=10, big=BIG)
    write_shards(b, range(20, 50), per_shard=10, big=BIG)  # g20..g29 in both: duplicates
    results = finish([start_cli_merge(a, out, 120), start_cli_merge(b, out, 120)])
    for code, _, err in results:
        assert code == 0, err
    docs = [json.loads(text) for _, text, _ in results]
    assert sum(d["groups_added"] for d in docs) == 50
    assert sum(d["duplicates"] for d in docs) == 10
    assert sorted(d["groups_total"] for d in docs) in ([30, 50], [40, 50])
    check_output(out, range(50))


@pytest.mark.slow
def test_two_merges_of_one_directory_lock_or_wait(tmp_path: Path) -> None:
    tmp, out = tmp_path / "tmp", tmp_path / "out.h5"
    tmp.mkdir()
    write_shards(tmp, range(40), per_shard=10, big=BIG)
    procs = [start_cli_merge(tmp, out, 0.2), start_cli_merge(tmp, out, 0.2)]
    results = finish(procs)
    codes = sorted(code for code, _, _ in results)
    print(f"exit codes of the two merges: {codes}")
    assert codes in ([0, 0], [0, 2]), results
    for proc, (code, text, err) in zip(procs, results, strict=True):
        if code == 2:
            [winner] = [p for p in procs if p is not proc]
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in err, err
            assert "still locked after 0.2 s" in lines[0]
            assert f"pid {winner.pid} " in lines[0], lines[0]
            assert text == ""
        else:
            assert json.loads(text)["ok"] is True
    added = [json.loads(text)["groups_added"] for code, text, _ in results if code == 0]
    assert sum(added) == 40
    check_output(out, range(40))
    # Whatever happened, one more merge changes nothing and finds nothing left.
    again = merge(tmp, out, workers=1)
    assert (again.groups_added, again.shards_merged) == (0, 0)
    check_output(out, range(40))


def test_sigkill_during_helper_verification_leaves_old_output_and_no_helper(
    tmp_path: Path,
) -> None:
    """The merge has a sandbox child verify half of a big copy. Killed right then, the old
    output stays byte-identical, the helper dies with it (PR_SET_PDEATHSIG) instead of
    living on as an orphan, and a re-run merges everything."""
    root = tmp_path / "tpl"
    tmp = root / "tmp"
    tmp.mkdir(parents=True)
    write_shards(tmp, range(0, 50), per_shard=50)
    merge(tmp, root / "out.h5", workers=1)
    write_shards(tmp, range(50, 650), per_shard=100)  # small groups: h5guard's reader
    old_sha = sha256_file(root / "out.h5")
    log = tmp_path / "phases.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tests" / "crash" / "_merge_child.py"),
            str(tmp),
            str(root / "out.h5"),
            str(log),
            "--parallel-verify-min",
            "1",
            "--slow-helper",
            "60",
        ],
        cwd=REPO,
        # Not a pipe: an orphaned helper would hold it open and hang the read.
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for_phase(log, "helper", proc, limit=60), read_phases(log)
        helpers = descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert helpers, "no verification helper was running at the kill"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in helpers):
        time.sleep(0.05)
    assert not any(alive(pid) for pid in helpers), "the helper outlived the merge"
    assert sha256_file(root / "out.h5") == old_sha
    report = merge(tmp, root / "out.h5", workers=1)
    assert report.exit_code == 0
    assert output_index(root / "out.h5") == {f"g{i}": expected_digest(i) for i in range(650)}


def alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
