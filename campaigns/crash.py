"""Crash campaign: SIGKILL writers, merges and whole sweeps at random moments.

(a) ``writer``: a forked child adds groups with ``ShardWriter(commit_every=3)`` and
    logs each key after its ``add()`` returned (fsynced); it is SIGKILLed after a random
    delay. A merge of its directory (which recovers the dead writer's journal) must
    hold every logged key exactly once with the right digest and pass validation, with
    nothing reported lost; a re-run writing the missing keys, merged, must complete the
    output with every key exactly once.
(b) ``merge``: ``h5guard merge`` (the CLI, a real process) merges new shards (plus a
    non-HDF5 file and a stale partial) into an output that already holds groups, and is
    SIGKILLed after a random delay. The output must be the old one byte for byte or the
    complete new one; a re-run must give every group exactly once with the right digest,
    no shard left, no partial left, the bad file quarantined once.
(b2) ``segmented``: the same as (b) into a segmented output (an index of segments,
    docs/merge.md), in turn one that is already an index (without a spare: the merge
    copies it; with one: the merge changes the spare in place) and a self-contained one
    that this merge turns into one (``H5GUARD_SEGMENT_THRESHOLD=1``); half the merges
    into an index fold its segments into one (``H5GUARD_SEGMENT_FANOUT=2``). The output must be
    the old one (the index or file byte for byte, every segment it lists unchanged) or
    the complete new one (``check`` of the index and its segments clean, every key);
    after the re-run, no partial and no segment the index does not list is left.
(c) ``sweep``: ``layout-sweep run`` (tiny spec: iea37, 16 turbines, 4 configs, maxiter
    15, 2 workers) is SIGKILLed at a random moment, either the main process or one of its
    children (a worker or a checker). The output (if any) must validate clean; the
    resumed (or surviving) run must end with exit 0 and every config exactly once, no
    failure records and no shard left. Recomputed configs (optimized more than once) are
    counted from completion logs written by :mod:`campaigns._sweep_main`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import h5py

from campaigns import _samples
from campaigns._common import (
    TINY_SWEEP_SPEC,
    CampaignResult,
    Deadline,
    Row,
    children_of,
    sha256_file,
    stop,
)
from h5guard import H5GuardError, Sandbox, Severity, ShardWriter, merge, validate_many

NAME = "crash"
WRITER_KEYS = 30
LEGEND = (
    "runs = trials (one SIGKILL each); flagged = merges after the kill that failed, quarantined "
    "or reported a loss (writer) or outputs that failed validation; passed-unchanged = trials "
    "where every check held; silent = wrong values; crashes = re-runs that failed; hangs = "
    "re-runs that overran; lost = results whose add() returned (writer) or committed results "
    "(merge, sweep) missing; recomputed = configs optimized more than once."
)


# -- (a) the writer ----------------------------------------------------------------------
def _writer_child(directory: Path, log: Path, keys: list[int]) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    with ShardWriter(directory, schema=_samples.SCHEMA, commit_every=3, prefix="shard") as w:
        for i in keys:
            datasets, attrs = _samples.group(i, wake=_samples.wake_of(i, 4))
            w.add(f"g{i}", datasets, attrs)
            os.write(fd, f"g{i}\n".encode())  # add() returned: promised
            os.fsync(fd)
    os.close(fd)


def _fork_writer(directory: Path, log: Path, keys: list[int]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            _writer_child(directory, log, keys)
            code = 0
        finally:
            os._exit(code)
    return pid


def _merged_state(
    directory: Path, out: Path, box: Sandbox
) -> tuple[dict[str, str], list[str], int]:
    """Merge ``directory`` into ``out``: ``{key: digest}`` of the output, problems, exit."""
    try:
        report = merge(directory, out, schema=_samples.SCHEMA, sandbox=box)
    except (H5GuardError, OSError) as err:
        return {}, [f"merge failed: {err}"], 2
    checked = validate_many([str(out)], sandbox=box)
    problems = [str(f) for f in checked.findings if f.severity >= Severity.WARNING]
    problems += [f"LOST: {why}" for why in report.lost]
    problems += [q.reasons[0] for q in report.quarantined if q.reasons]
    digests = {k: d or "" for k, d in checked.files[0].groups.items()}
    return digests, problems, report.exit_code


def _expected(i: int) -> str:
    return _samples.expected_digest(i, wake=_samples.wake_of(i, 4))


def writer_trial(
    result: CampaignResult,
    row: Row,
    work: Path,
    box: Sandbox,
    rng: random.Random,
    span: list[float],
) -> None:
    """``span[0]``: longest kill delay, shrunk when a writer ends before its kill."""
    directory, log = work / "shards", work / "committed.log"
    directory.mkdir(parents=True)
    pid = _fork_writer(directory, log, list(range(WRITER_KEYS)))
    delay = rng.uniform(0.0, span[0])
    time.sleep(delay)
    done, _ = os.waitpid(pid, os.WNOHANG)
    counted = not done
    if done:
        result.tally("writer trials not counted: the writer finished before the kill")
        span[0] = max(0.05, min(span[0], 0.98 * delay))
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        row.runs += 1
    ok = True
    out = work / "out.h5"
    digests, problems, code = _merged_state(directory, out, box)
    promised = set(log.read_text().split()) if log.exists() else set()
    if counted and promised:
        result.tally("writer kills after at least one returned add()")
    if problems or code != 0:
        ok = False
        row.flagged = (row.flagged or 0) + 1
        result.violate(row, f"merge after SIGKILL: exit {code}, {problems[:1]}")
    missing = promised - set(digests)
    if missing:
        ok = False
        row.lost = (row.lost or 0) + len(missing)
        result.violate(
            row, f"keys whose add() returned missing after SIGKILL: {sorted(missing)[:5]}"
        )
    wrong = [k for k, d in digests.items() if d != _expected(int(k[1:]))]
    if wrong or len(set(digests) - promised) > 1:
        ok = False
        row.silent = (row.silent or 0) + len(wrong)
        result.violate(row, f"wrong-digest {wrong[:3]} or unpromised groups in the output")
    # Re-run: a fresh writer adds what is missing, and a merge completes the output.
    todo = [i for i in range(WRITER_KEYS) if f"g{i}" not in digests]
    pid = _fork_writer(directory, work / "rerun.log", todo)
    deadline = time.monotonic() + 120
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        row.hangs += 1
        result.violate(row, "the re-run writer did not finish within 120 s")
        return
    if status != 0:
        row.crashes += 1
        result.violate(row, f"the re-run writer failed (wait status {status})")
        return
    digests, problems, code = _merged_state(directory, out, box)
    if problems or code != 0 or set(digests) != {f"g{i}" for i in range(WRITER_KEYS)}:
        ok = False
        lost = {f"g{i}" for i in range(WRITER_KEYS)} - set(digests)
        row.lost = (row.lost or 0) + len(lost)
        result.violate(
            row,
            f"after the re-run: exit {code}, problems {problems[:1]}, missing {sorted(lost)[:5]}",
        )
    if ok and counted:
        row.passed = (row.passed or 0) + 1
    if list(directory.glob("*.journal")) or list(directory.glob("*.partial")):
        result.violate(row, "a journal or partial was left after the merges")


def _calibrate_writer(work: Path) -> float:
    directory = work / "calibrate"
    directory.mkdir(parents=True)
    started = time.monotonic()
    pid = _fork_writer(directory, work / "calibrate.log", list(range(WRITER_KEYS)))
    os.waitpid(pid, 0)
    return time.monotonic() - started


# -- (b) the merge ------------------------------------------------------------------------
OLD = range(0, 12)
NEW = range(12, 30)
BIG_EVERY = 2
BIG = 20000


def _expected_merge(i: int) -> str:
    return _samples.expected_digest(i, wake=BIG if i % BIG_EVERY == 0 else 0)


def _merge_template(root: Path) -> tuple[Path, str, set[str]]:
    tmp = root / "tmp"
    _samples.write_shards(tmp, OLD, per_shard=4, wake_every=BIG_EVERY, wake=BIG)
    merge(tmp, root / "out.h5", workers=1)
    _samples.write_shards(tmp, NEW, per_shard=3, wake_every=BIG_EVERY, wake=BIG)
    (tmp / "bad.h5").write_bytes(b"not an HDF5 file: a worker's log\n" * 200)
    host = _atomic_host()
    (tmp / f"shard-20200101T000000-{host}-{_dead_pid()}-deadbeef.h5.partial").write_bytes(
        b"\x89HDF\r\n\x1a\n" + b"\0" * 4000
    )
    return root, sha256_file(root / "out.h5"), {p.name for p in tmp.glob("*.h5")}


def _atomic_host() -> str:
    from h5guard._atomic import writer_tag

    return writer_tag().rsplit("-", 1)[0]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _merge_cmd(work: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "h5guard.cli",
        "merge",
        str(work / "tmp"),
        "-o",
        str(work / "out.h5"),
        "--lock-timeout",
        "30",
        "--json",
    ]


def _output_keys(path: Path, box: Sandbox) -> tuple[bool, dict[str, str], str]:
    report = validate_many([str(path)], sandbox=box)
    problems = [f for f in report.findings if f.severity >= Severity.WARNING]
    summary = report.files[0]
    groups = {k: v or "" for k, v in summary.groups.items()}
    return not problems, groups, str(problems[0]) if problems else ""


def _judge_exit(proc: subprocess.Popen[bytes], row: Row, result: CampaignResult) -> None:
    """A killed merge may exit 0, 1 or by the SIGKILL; anything else is a crash."""
    if proc.returncode not in (0, 1, -signal.SIGKILL):
        row.crashes += 1
        assert proc.stderr is not None
        result.violate(row, f"merge exited {proc.returncode}: {proc.stderr.read()[-300:]!r}")
    if proc.stderr is not None:
        proc.stderr.close()


def _shards_unchanged(
    work: Path, root: Path, shard_names: set[str], row: Row, result: CampaignResult
) -> bool:
    """Whether every shard of the trial is the template's, byte for byte (a merge never
    changes or adds one); each one that is not is a violation."""
    ok = True
    for p in (work / "tmp").glob("*.h5"):
        if p.name not in shard_names or sha256_file(p) != sha256_file(root / "tmp" / p.name):
            ok = False
            result.violate(row, f"shard {p.name} changed or appeared after the kill")
    return ok


def merge_trial(
    result: CampaignResult,
    row: Row,
    work: Path,
    template: tuple[Path, str, set[str]],
    box: Sandbox,
    rng: random.Random,
    span: list[float],
) -> None:
    """``span[0]``: longest kill delay, shrunk when a merge ends before its kill."""
    root, old_sha, shard_names = template
    shutil.copytree(root, work)
    proc = subprocess.Popen(
        _merge_cmd(work), cwd=_samples.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    # Uniform over the run, with extra weight on its end (writing, verifying, committing).
    s = span[0]
    delay = rng.uniform(0.0, s) if rng.random() < 0.6 else rng.uniform(0.6 * s, 1.05 * s)
    time.sleep(delay)
    counted = proc.poll() is None
    if not counted:
        result.tally("merge trials not counted: the merge finished before the kill")
        span[0] = max(0.1, min(span[0], 0.98 * delay))
    else:
        row.runs += 1
    stop(proc)
    ok = True
    old_keys = {f"g{i}" for i in OLD}
    all_keys = {f"g{i}" for i in (*OLD, *NEW)}
    out = work / "out.h5"
    _judge_exit(proc, row, result)
    if sha256_file(out) == old_sha:
        if counted:
            result.tally("merge kills that left the old output (byte-identical)")
    else:
        if counted:
            result.tally("merge kills that left the complete new output")
        valid, groups, problem = _output_keys(out, box)
        if not valid or set(groups) != all_keys:
            ok = False
            row.flagged = (row.flagged or 0) + 1
            result.violate(
                row,
                f"after a kill at {delay:.3f} s the output is neither old nor complete: {problem} "
                f"keys {len(groups)}",
            )
    ok = _shards_unchanged(work, root, shard_names, row, result) and ok
    if counted and (work / "out.h5.partial").exists():
        result.tally("merge trials leaving out.h5.partial after the kill (the re-run removes it)")
    # Re-run to completion, in-process.
    try:
        rerun = merge(work / "tmp", out, workers=1, lock_timeout=30)
        code = rerun.exit_code
    except Exception as err:
        row.crashes += 1
        result.violate(row, f"re-run merge raised {type(err).__name__}: {err}")
        return
    valid, groups, problem = _output_keys(out, box)
    missing = all_keys - set(groups)
    wrong = [k for k in groups if k in all_keys and groups[k] != _expected_merge(int(k[1:]))]
    leftovers = [p.name for p in (work / "tmp").glob("*.h5")]
    quarantined = sorted(p.name for p in (work / "tmp" / "quarantine").glob("*.h5"))
    if not valid or missing or wrong or set(groups) - all_keys:
        ok = False
        row.lost = (row.lost or 0) + len(missing)
        row.silent = (row.silent or 0) + len(wrong)
        result.violate(
            row,
            f"after the re-run (exit {code}): {problem} missing {sorted(missing)[:5]} wrong {wrong[:3]}",
        )
    if leftovers or (work / "out.h5.partial").exists() or quarantined != ["bad.h5"]:
        ok = False
        result.violate(
            row,
            f"after the re-run: shards left {leftovers[:3]}, partial "
            f"{(work / 'out.h5.partial').exists()}, quarantine {quarantined}",
        )
    if sha256_file(out) != old_sha and set(groups) == old_keys:
        ok = False
        result.violate(row, "the output changed but gained nothing")
    if ok and counted:
        row.passed = (row.passed or 0) + 1


def _calibrate_merge(work: Path, template: tuple[Path, str, set[str]]) -> float:
    shutil.copytree(template[0], work)
    started = time.monotonic()
    subprocess.run(
        _merge_cmd(work), cwd=_samples.REPO, capture_output=True, timeout=300, check=False
    )
    return time.monotonic() - started


# -- (b2) the merge into a segmented output ------------------------------------------------
MIDDLE = range(12, 18)
LATE = range(18, 30)


# What the killed merge starts from: a self-contained file it turns into an index, an
# index without a spare (the merge copies it), an index with its spare (changed in place).
SEGMENTED_KINDS = ("file", "index", "spare")


def _segmented_template(root: Path, kind: str) -> tuple[Path, dict[str, str], set[str]]:
    """An output of OLD (and MIDDLE: an index of segments unless ``kind`` is "file"), new
    shards of the rest, a non-HDF5 file and a stale partial; the old state's digests."""
    from h5guard._merge import spare

    tmp = root / "tmp"
    _samples.write_shards(tmp, OLD, per_shard=4, wake_every=BIG_EVERY, wake=BIG)
    merge(tmp, root / "out.h5", workers=1)
    later = list(LATE) if kind != "file" else [*MIDDLE, *LATE]
    batches = {"file": [], "index": [MIDDLE], "spare": [MIDDLE[:3], MIDDLE[3:]]}[kind]
    for batch in batches:
        _samples.write_shards(tmp, batch, per_shard=3, wake_every=BIG_EVERY, wake=BIG)
        merge(tmp, root / "out.h5", workers=1, layout="segmented")
    spare_file = Path(spare.spare_path(str(root / "out.h5.segments")))
    if kind == "index":
        spare_file.unlink(missing_ok=True)
    elif kind == "spare" and not spare_file.is_file():
        raise RuntimeError(f"{spare_file}: expected the spare index two merges leave")
    _samples.write_shards(tmp, later, per_shard=3, wake_every=BIG_EVERY, wake=BIG)
    (tmp / "bad.h5").write_bytes(b"not an HDF5 file: a worker's log\n" * 200)
    host = _atomic_host()
    (tmp / f"shard-20200101T000000-{host}-{_dead_pid()}-deadbeef.h5.partial").write_bytes(
        b"\x89HDF\r\n\x1a\n" + b"\0" * 4000
    )
    return root, _state(root / "out.h5"), {p.name for p in tmp.glob("*.h5")}


def _spare_names() -> set[str]:
    from h5guard._atomic import PARTIAL_SUFFIX
    from h5guard._merge.spare import SPARE_NAME

    return {SPARE_NAME, SPARE_NAME + PARTIAL_SUFFIX}


def _state(out: Path) -> dict[str, str]:
    """sha256 of the output and of each file in its segment directory (the spare index,
    no part of the output, apart)."""
    state = {"out.h5": sha256_file(out)}
    segdir = Path(str(out) + ".segments")
    if segdir.is_dir():
        state.update(
            {
                f"seg/{p.name}": sha256_file(p)
                for p in sorted(segdir.iterdir())
                if p.name not in _spare_names()
            }
        )
    return state


def _checked_keys(out: Path, box: Sandbox) -> tuple[bool, dict[str, str], str]:
    from h5guard import check

    report = check([str(out)], sandbox=box)
    problems = [f for f in report.findings if f.severity >= Severity.WARNING]
    groups = {k: v or "" for s in report.files for k, v in s.groups.items()}
    return not problems, groups, str(problems[0]) if problems else ""


def _listed_only(out: Path) -> list[str]:
    """Files of the segment directory that neither the index nor its spare lists
    (leftovers): the spare index itself apart (its partial is a leftover), and the
    segments a fold replaced, which the index before (the spare) still lists until the
    next merge removes them."""
    import h5py

    from h5guard._format import segments
    from h5guard._merge.spare import SPARE_NAME, spare_path

    segdir = Path(str(out) + ".segments")
    if not segdir.is_dir():
        return []
    parts = segments.resolve(out) or []
    listed = {os.path.basename(p) for p, _ in parts} | {SPARE_NAME}
    spare = spare_path(str(segdir))
    if os.path.isfile(spare):
        with h5py.File(spare, "r", locking=False) as f:
            listed |= {s.name for s in segments.open_index(f, spare).segments}
    return sorted(p.name for p in segdir.iterdir() if p.name not in listed)


def segmented_trial(
    result: CampaignResult,
    row: Row,
    work: Path,
    template: tuple[Path, dict[str, str], set[str]],
    box: Sandbox,
    rng: random.Random,
    span: list[float],
    *,
    kind: str,
) -> None:
    """``span[0]``: longest kill delay, shrunk when a merge ends before its kill."""
    root, old_state, shard_names = template
    shutil.copytree(root, work)
    # Half the merges fold the index's last segments into one (fanout 2: due in the
    # "index" and "spare" templates), half do not (the default fanout).
    folds = kind != "file" and rng.random() < 0.5
    env = dict(
        os.environ, H5GUARD_SEGMENT_THRESHOLD="1", H5GUARD_SEGMENT_FANOUT="2" if folds else "16"
    )
    proc = subprocess.Popen(
        _merge_cmd(work),
        cwd=_samples.REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    s = span[0]
    delay = rng.uniform(0.0, s) if rng.random() < 0.6 else rng.uniform(0.6 * s, 1.05 * s)
    time.sleep(delay)
    counted = proc.poll() is None
    if not counted:
        result.tally("segmented merge trials not counted: the merge finished before the kill")
        span[0] = max(0.1, min(span[0], 0.98 * delay))
    else:
        row.runs += 1
    stop(proc)
    ok = True
    what = {
        "file": "a file turned into an index",
        "index": "an index, copied",
        "spare": "an index, its spare changed in place",
    }[kind] + (", segments folded" if folds else "")
    all_keys = {f"g{i}" for i in range(30)}
    out = work / "out.h5"
    _judge_exit(proc, row, result)
    now = _state(out)
    if now["out.h5"] == old_state["out.h5"]:
        changed = [k for k, v in old_state.items() if now.get(k) != v]
        if changed:
            ok = False
            row.flagged = (row.flagged or 0) + 1
            result.violate(row, f"the old output ({what}) kept its name but {changed[:3]} changed")
        elif counted:
            result.tally(f"segmented merge kills that left the old output ({what})")
    else:
        if counted:
            result.tally(f"segmented merge kills that left the complete new output ({what})")
        valid, groups, problem = _checked_keys(out, box)
        if not valid or set(groups) != all_keys:
            ok = False
            row.flagged = (row.flagged or 0) + 1
            result.violate(
                row,
                f"after a kill at {delay:.3f} s the output ({what}) is neither old nor complete: "
                f"{problem} keys {len(groups)}",
            )
    ok = _shards_unchanged(work, root, shard_names, row, result) and ok
    try:
        rerun = merge(work / "tmp", out, workers=1, lock_timeout=30, layout="segmented")
        code = rerun.exit_code
    except Exception as err:
        row.crashes += 1
        result.violate(row, f"re-run merge ({what}) raised {type(err).__name__}: {err}")
        return
    valid, groups, problem = _checked_keys(out, box)
    missing = all_keys - set(groups)
    wrong = [k for k in groups if k in all_keys and groups[k] != _expected_merge(int(k[1:]))]
    leftovers = [p.name for p in (work / "tmp").glob("*.h5")]
    quarantined = sorted(p.name for p in (work / "tmp" / "quarantine").glob("*.h5"))
    stray = _listed_only(out)
    if not valid or missing or wrong or set(groups) - all_keys:
        ok = False
        row.lost = (row.lost or 0) + len(missing)
        row.silent = (row.silent or 0) + len(wrong)
        result.violate(
            row,
            f"after the re-run ({what}, exit {code}): {problem} missing {sorted(missing)[:5]} "
            f"wrong {wrong[:3]}",
        )
    if leftovers or (work / "out.h5.partial").exists() or quarantined != ["bad.h5"] or stray:
        ok = False
        result.violate(
            row,
            f"after the re-run ({what}): shards left {leftovers[:3]}, partial "
            f"{(work / 'out.h5.partial').exists()}, quarantine {quarantined}, "
            f"unlisted in the segment directory {stray[:3]}",
        )
    if ok and counted:
        row.passed = (row.passed or 0) + 1


def _calibrate_segmented(work: Path, template: tuple[Path, dict[str, str], set[str]]) -> float:
    shutil.copytree(template[0], work)
    started = time.monotonic()
    subprocess.run(
        _merge_cmd(work),
        cwd=_samples.REPO,
        env=dict(os.environ, H5GUARD_SEGMENT_THRESHOLD="1"),
        capture_output=True,
        timeout=300,
        check=False,
    )
    return time.monotonic() - started


# -- (c) the sweep ------------------------------------------------------------------------
def _sweep_cmd() -> list[str]:
    return [
        sys.executable,
        "-m",
        "campaigns._sweep_main",
        "run",
        "spec.toml",
        "-o",
        "out.h5",
        "--workers",
        "2",
        "--json",
    ]


def _sweep_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CAMPAIGN_COMPLETIONS"] = str(work / "completions.log")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_samples.REPO), env.get("PYTHONPATH")) if p)
    env.pop("LAYOUT_SWEEP_FAULT", None)
    return env


def _planned(work: Path) -> set[str]:
    from optimizer import expand_spec, load_spec

    return {c.config_id for c in expand_spec(load_spec(str(work / "spec.toml")))}


def _run_sweep(work: Path, timeout: float = 600) -> tuple[int, dict[str, object], str]:
    proc = subprocess.run(
        _sweep_cmd(),
        cwd=work,
        env=_sweep_env(work),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        doc = {}
    return proc.returncode, doc, proc.stderr[-500:]


def sweep_trial(
    result: CampaignResult,
    row: Row,
    work: Path,
    box: Sandbox,
    rng: random.Random,
    span: list[float],
) -> None:
    """``span[0]``: longest kill delay, shrunk when a sweep ends before its kill."""
    work.mkdir(parents=True)
    (work / "spec.toml").write_text(TINY_SWEEP_SPEC, encoding="utf-8")
    planned = _planned(work)
    proc = subprocess.Popen(
        _sweep_cmd(),
        cwd=work,
        env=_sweep_env(work),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    target = "main" if rng.random() < 0.5 else "child"
    delay = rng.uniform(0.3, span[0])
    time.sleep(delay)
    victim = proc.pid
    if target == "child":
        kids = children_of(proc.pid)
        if kids:
            victim = rng.choice(kids)
        else:
            target = "main"
    counted = proc.poll() is None
    if counted:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        row.runs += 1
        result.tally(f"sweep trials that killed the {target}")
    else:
        result.tally("sweep trials not counted: the sweep finished before the kill")
        span[0] = max(1.0, min(span[0], 0.95 * delay))
    ok = True
    try:
        _, err_text = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        stop(proc)
        row.hangs += 1
        result.violate(row, f"the sweep did not finish within 600 s after its {target} was killed")
        return
    out = work / "out.h5"
    if target == "main" or proc.returncode != 0:
        if out.exists():
            valid, _, problem = _output_keys(out, box)
            if not valid:
                ok = False
                row.flagged = (row.flagged or 0) + 1
                result.violate(row, f"output invalid after killing the {target}: {problem}")
        code, _, err = _run_sweep(work)
        if code != 0:
            row.crashes += 1
            result.violate(
                row,
                f"resume after killing the {target} at {delay:.2f} s exited {code}: {err.strip()[-300:]}",
            )
            return
    elif proc.returncode != 0:
        row.crashes += 1
        result.violate(
            row, f"the sweep exited {proc.returncode} after a {target} kill: {err_text[-300:]}"
        )
        return
    valid, groups, problem = _output_keys(out, box)
    cfgs = {k for k in groups if k.startswith("cfg-")}
    fails = [k for k in groups if k.startswith("fail-")]
    leftovers = list((work / "out.h5_temp").glob("*.h5"))
    if not valid or cfgs != planned or fails or leftovers:
        ok = False
        lost = planned - cfgs
        row.lost = (row.lost or 0) + len(lost)
        result.violate(
            row,
            f"after killing the {target} at {delay:.2f} s: {problem} missing {sorted(lost)} "
            f"failures {fails} shards left {[p.name for p in leftovers]}",
        )
    with h5py.File(out, "r", locking=False) as f:
        statuses = {k: f[k].attrs["status"] for k in cfgs}
    if any(s != b"ok" for s in statuses.values()):
        ok = False
        result.violate(row, f"a config is not ok: {statuses}")
    log = work / "completions.log"
    counts = Counter(log.read_text().split()) if log.exists() else Counter()
    row.recomputed = (row.recomputed or 0) + sum(n - 1 for n in counts.values() if n > 1)
    if ok and counted:
        row.passed = (row.passed or 0) + 1


def _calibrate_sweep(work: Path) -> float:
    work.mkdir(parents=True)
    (work / "spec.toml").write_text(TINY_SWEEP_SPEC, encoding="utf-8")
    started = time.monotonic()
    code, _, err = _run_sweep(work)
    if code != 0:
        raise RuntimeError(f"the calibration sweep failed ({code}): {err}")
    return time.monotonic() - started


# -- the campaign ------------------------------------------------------------------------
def run(
    budget: float,
    seed: int = 0,
    *,
    parts: tuple[str, ...] = ("writer", "merge", "segmented", "sweep"),
) -> CampaignResult:
    deadline = Deadline(budget)
    result = CampaignResult(NAME, legend=LEGEND)
    rng = random.Random(seed)
    shares = {"writer": 0.15, "merge": 0.25, "segmented": 0.25, "sweep": 0.35}
    with (
        tempfile.TemporaryDirectory(prefix="campaign-crash-") as tmp,
        Sandbox(workers=2, timeout=60) as box,
    ):
        work = Path(tmp)
        for n, part in enumerate(parts):
            left = sum(shares[p] for p in parts[n:])
            sub = deadline.share(shares[part] / left if left else 1.0)
            started = time.monotonic()
            if part == "writer":
                row = result.row("(a) SIGKILL a ShardWriter (commit_every=3)", lost=0)
                span = [_calibrate_writer(work / "a-cal")]
                t = 0
                while not sub.expired() or row.runs < 2:
                    writer_trial(result, row, work / f"a{t}", box, rng, span)
                    shutil.rmtree(work / f"a{t}", ignore_errors=True)
                    t += 1
            elif part == "merge":
                row = result.row("(b) SIGKILL h5guard merge into a non-empty output", lost=0)
                template = _merge_template(work / "b-template")
                span = [_calibrate_merge(work / "b-cal", template)]
                t = 0
                while not sub.expired() or row.runs < 2:
                    merge_trial(result, row, work / f"b{t}", template, box, rng, span)
                    shutil.rmtree(work / f"b{t}", ignore_errors=True)
                    t += 1
            elif part == "segmented":
                row = result.row(
                    "(b2) SIGKILL h5guard merge into a segmented output (or one it segments)",
                    lost=0,
                )
                templates = {
                    kind: _segmented_template(work / f"b2-template-{kind}", kind)
                    for kind in SEGMENTED_KINDS
                }
                spans = {
                    kind: [_calibrate_segmented(work / f"b2-cal-{kind}", templates[kind])]
                    for kind in SEGMENTED_KINDS
                }
                t = 0
                while not sub.expired() or row.runs < len(SEGMENTED_KINDS):
                    kind = SEGMENTED_KINDS[t % len(SEGMENTED_KINDS)]
                    segmented_trial(
                        result,
                        row,
                        work / f"b2-{t}",
                        templates[kind],
                        box,
                        rng,
                        spans[kind],
                        kind=kind,
                    )
                    shutil.rmtree(work / f"b2-{t}", ignore_errors=True)
                    t += 1
            else:
                row = result.row(
                    "(c) SIGKILL layout-sweep run (main or a child), resume", lost=0, recomputed=0
                )
                spans = [_calibrate_sweep(work / "c-cal")]
                t = 0
                while not sub.expired() or row.runs < 1:
                    sweep_trial(result, row, work / f"c{t}", box, rng, spans)
                    shutil.rmtree(work / f"c{t}", ignore_errors=True)
                    t += 1
            row.seconds = time.monotonic() - started
    result.seconds = deadline.elapsed()
    return result
