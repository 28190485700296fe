"""Salvage: recover the intact result groups of HDF5 files that h5guard did not write.

For directories of ``worker_<pid>.h5`` files left by a crashed run written with plain
h5py: some are empty, some were left "open for write" by a killed writer, some are
truncated, some are fine. :func:`salvage` never touches its inputs. For each file it

1. runs the quick layer (pure Python): empty or non-HDF5 files get a verdict at once;
2. in a sandboxed child (time and memory limits) copies the file next to the output,
   patches the copy's superblock so libhdf5 opens it (clears the write flags a killed
   writer left, fixes the end-of-file address, recomputes the checksum), and reads it
   top-level group by top-level group: a group is kept only if every dataset and
   attribute reads completely, its ``h5guard_digest`` (if any) matches, and it passes
   the schema (if given);
3. has that child write the kept groups into ordinary committed h5guard shards
   (``salvaged-*.h5``, root attribute ``salvaged_from``), which ``h5guard merge`` takes
   as they are.

A child that hangs or crashes costs only its file: what it committed stays (shards are
committed atomically), the group it was reading is reported lost, and the rest of the
file is read by a fresh child (at most :data:`MAX_RESUMES` times per file).

Groups written after a writer's last ``flush()`` are normally not recoverable: the file
on disk describes itself as of that flush. Root attributes of the sources are not
carried over (a merge keeps groups only), and are not even read: a damaged global heap
makes libhdf5 spin forever on any string attribute.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from h5guard import _atomic
from h5guard._check.api import PathOrPaths, ProgressCallback, path_list
from h5guard._check.quick import quick_check
from h5guard._salvage.child import (
    SALVAGE_PREFIX,
    FileOutcome,
    read_progress,
)
from h5guard._sandbox import DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT, Sandbox, SandboxResult
from h5guard.errors import MergeSourceError
from h5guard.report import Code, Severity
from h5guard.schema import Schema

log = logging.getLogger(__name__)

Verdict = Literal[
    "ok", "partial", "empty", "not_hdf5", "truncated", "unreadable", "timeout", "crashed"
]
VERDICTS: tuple[Verdict, ...] = (
    "ok",
    "partial",
    "empty",
    "not_hdf5",
    "truncated",
    "unreadable",
    "timeout",
    "crashed",
)
# Verdicts of a file whose groups could not be listed at all.
_UNLISTABLE = frozenset({"truncated", "unreadable", "timeout", "crashed"})
# Each resume can cost a full timeout; a file that hangs on every group is given up.
MAX_RESUMES = 2
_CHILD_TARGET = "h5guard._salvage.child:salvage_file"
_SCAN_TARGET = "h5guard._salvage.child:committed_by_run"


@dataclass(frozen=True, slots=True)
class FileSalvage:
    """What salvage did with one input file.

    Parameters
    ----------
    path
        The input file.
    verdict
        ``"ok"``, ``"partial"``, ``"empty"``, ``"not_hdf5"``, ``"truncated"``,
        ``"unreadable"``, ``"timeout"`` or ``"crashed"``.
    recovered
        The keys now in ``shards``.
    lost
        The ``(key, reason)`` of groups that were found but not salvaged.
    shards
        The shards the recovered results were written to.
    note
        What else there is to know (e.g. a superblock that had to be patched).
    """

    path: str
    verdict: Verdict
    recovered: tuple[str, ...] = ()
    lost: tuple[tuple[str, str], ...] = ()
    shards: tuple[str, ...] = ()
    note: str = ""

    @property
    def results_unknown(self) -> bool:
        """No group of the file could even be listed: whatever results it held are lost."""
        return self.verdict in _UNLISTABLE and not self.recovered and not self.lost

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "verdict": self.verdict,
            "recovered": list(self.recovered),
            "lost": [{"key": k, "reason": r} for k, r in self.lost],
            "results_unknown": self.results_unknown,
            "shards": list(self.shards),
            "note": self.note,
        }

    def render_text(self) -> str:
        if self.results_unknown:
            # "0 recovered, 0 lost" would read as "nothing was there": say what is known.
            head = (
                f"{self.path}: {self.verdict.upper()}: no group could be listed, so how many "
                "results it held is unknown; any it held are lost"
            )
        else:
            head = (
                f"{self.path}: {self.verdict.upper()}: {len(self.recovered)} group(s) "
                f"recovered, {len(self.lost)} lost"
            )
        if self.note:
            head += f"; {self.note}"
        return "\n".join([head, *(f"{self.path}:/{k}: LOST {r}" for k, r in self.lost)])


@dataclass(frozen=True, slots=True)
class SalvageReport:
    """Every file's :class:`FileSalvage`. ``exit_code`` is 0 only if every file was ok.

    Parameters
    ----------
    files
        One per input file.
    out_dir
        Where the recovered shards are.
    seconds
        How long the salvage took.
    """

    files: tuple[FileSalvage, ...]
    out_dir: str
    seconds: float = 0.0

    @property
    def groups_recovered(self) -> int:
        return sum(len(f.recovered) for f in self.files)

    @property
    def groups_lost(self) -> int:
        return sum(len(f.lost) for f in self.files)

    @property
    def shards(self) -> tuple[str, ...]:
        return tuple(s for f in self.files for s in f.shards)

    @property
    def verdicts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(VERDICTS, 0)
        for f in self.files:
            counts[f.verdict] += 1
        return counts

    @property
    def exit_code(self) -> int:
        return 0 if all(f.verdict == "ok" for f in self.files) else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir,
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "totals": {
                "files": len(self.files),
                "groups_recovered": self.groups_recovered,
                "groups_lost": self.groups_lost,
                "shards": len(self.shards),
                "verdicts": self.verdicts,
            },
            "files": [f.to_dict() for f in self.files],
            "seconds": round(self.seconds, 3),
        }

    def render_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def render_text(self) -> str:
        """One line per file, each followed by ``path:/key: LOST reason`` lines."""
        lines = [f.render_text() for f in self.files]
        bad = sum(1 for f in self.files if f.verdict != "ok")
        lines.append(
            f"salvaged {self.groups_recovered} group(s) from {len(self.files)} file(s) into "
            f"{self.out_dir} ({len(self.shards)} shard(s)); {self.groups_lost} group(s) lost; "
            f"{bad} file(s) not fully recovered"
            + (
                f"; {unknown} file(s) unreadable, their results unknown and lost"
                if (unknown := sum(1 for f in self.files if f.results_unknown))
                else ""
            )
            + ("; no *.h5 or *.h5.partial file found" if not self.files else "")
        )
        return "\n".join(lines)


@dataclass
class _Job:
    """One input file's salvage in progress, across resumed attempts."""

    index: int
    path: str
    source: str
    truncated: bool = False
    attempts: int = 0
    skip: set[str] = field(default_factory=set)
    recovered: dict[str, None] = field(default_factory=dict)  # ordered set
    lost: dict[str, str] = field(default_factory=dict)
    shards: dict[str, None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    fatal: str | None = None
    incomplete: str | None = None

    def absorb(self, outcome: FileOutcome) -> None:
        for key in outcome.recovered:
            self.recovered[key] = None
            self.lost.pop(key, None)
        for key, reason in outcome.lost:
            if key not in self.recovered:
                self.lost.setdefault(key, reason)
        self.shards.update(dict.fromkeys(outcome.shards))
        for note in outcome.notes:
            if note not in self.notes:
                self.notes.append(note)
        self.fatal = outcome.fatal
        self.incomplete = outcome.incomplete

    def result(self) -> FileSalvage:
        verdict: Verdict
        if self.failures:
            verdict = "timeout" if any(f == "timeout" for f in self.failures) else "crashed"
        elif self.fatal is not None and not self.recovered:
            verdict = "truncated" if self.truncated else "unreadable"
        elif self.lost or self.fatal is not None or self.incomplete is not None:
            verdict = "partial"
        else:
            verdict = "ok"
        notes = list(self.notes)
        for problem in (self.incomplete, self.fatal):
            if problem is not None:
                notes.insert(0, problem)
        if verdict == "ok" and not self.recovered:
            notes.append("no result groups in the file")
        return FileSalvage(
            path=self.path,
            verdict=verdict,
            recovered=tuple(self.recovered),
            lost=tuple(sorted(self.lost.items())),
            shards=tuple(sorted(self.shards)),
            note="; ".join(notes),
        )


def _expand(paths: PathOrPaths) -> list[str]:
    items = path_list(paths)
    if not items:
        raise MergeSourceError("paths: expected at least one file or directory, got none")
    files: list[str] = []
    seen: set[str] = set()
    for raw in items:
        path = os.fspath(raw)
        if os.path.isdir(path):
            # Uncommitted batches (``*.h5.partial``) are HDF5 files too: the results in
            # them were never committed anywhere else, so they are read like the rest.
            found = [
                str(p)
                for p in sorted(Path(path).iterdir())
                if p.is_file() and (p.suffix == ".h5" or p.name.endswith(".h5.partial"))
            ]
        elif os.path.lexists(path):
            found = [path]
        else:
            raise MergeSourceError(
                f"{path}: expected a file or a directory of *.h5 files, found nothing there"
            )
        for p in found:
            real = os.path.realpath(p)
            if real not in seen:
                seen.add(real)
                files.append(p)
    return files


def _prepare_out_dir(
    out_dir: str | os.PathLike[str],
    paths: PathOrPaths,
) -> str:
    out = os.path.abspath(os.fspath(out_dir))
    if os.path.lexists(out) and not os.path.isdir(out):
        raise MergeSourceError(f"{out}: expected a directory for the salvaged shards, found a file")
    for raw in path_list(paths):
        if os.path.isdir(raw) and os.path.realpath(raw) == os.path.realpath(out):
            raise MergeSourceError(
                f"{out}: expected an output directory apart from the inputs, got input directory {os.fspath(raw)}"
            )
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise MergeSourceError(
            f"{out}: cannot create the output directory: {err.strerror or err}"
        ) from err
    if not os.access(out, os.W_OK | os.X_OK):
        raise MergeSourceError(f"{out}: expected a writable directory, found no write permission")
    return out


def _check_limits(timeout: float, memory_limit: int, workers: int | None) -> None:
    if not timeout > 0:
        raise ValueError(f"timeout: expected seconds > 0, got {timeout}")
    if memory_limit < 16 * 1024 * 1024:
        raise ValueError(f"memory_limit: expected at least 16 MiB, got {memory_limit} bytes")
    if workers is not None and workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers}")


def _quick_verdict(path: str, index: int) -> FileSalvage | _Job:
    """A final verdict from the quick layer, or the job of reading the file deeply."""
    findings, info = quick_check(path)
    errors = [f for f in findings if f.severity is Severity.ERROR]
    codes = {f.code for f in errors}
    truncated = next((f.message for f in errors if f.code is Code.TRUNCATED), None)
    if Code.EMPTY in codes:
        return FileSalvage(path, "empty", note=errors[0].message)
    if Code.NOT_HDF5 in codes:
        return FileSalvage(path, "not_hdf5", note=errors[0].message)
    if info is None:
        if truncated is not None:
            return FileSalvage(path, "truncated", note=truncated)
        shown = errors[0] if errors else (findings[0] if findings else None)
        message = f"{shown.code} {shown.message}" if shown is not None else "superblock unusable"
        return FileSalvage(path, "unreadable", note=message)
    job = _Job(index, path, os.path.abspath(path), truncated=truncated is not None)
    if truncated is not None:
        job.notes.append(truncated)
    else:
        size = os.path.getsize(path)
        if info.eof_address < size:
            job.notes.append(
                f"{size - info.eof_address} of its {size} bytes were written after the "
                "writer's last flush (or it was never flushed)"
            )
    return job


def _remove_stale_partials(out_dir: str) -> None:
    """Drop the uncommitted batches of killed salvage children (their writers are dead)."""
    for p in Path(out_dir).glob(f"{SALVAGE_PREFIX}-*{_atomic.PARTIAL_SUFFIX}"):
        if _atomic.partial_owner_alive(p.name) is False:
            _atomic.remove_quietly(p)
            log.debug("removed the uncommitted batch %s of a killed salvage child", p)


def _failure_text(result: SandboxResult) -> str:
    if result.failure in ("timeout", "memory"):
        return f"the reader {result.detail}"  # "did not finish within ..." / "ran out of ..."
    return result.detail


class _Run:
    """One call of :func:`salvage`: the jobs, the sandbox and the rounds of attempts."""

    def __init__(
        self,
        jobs: list[_Job],
        out_dir: str,
        work_dir: str,
        ignore: tuple[str, ...],
        schema_json: str | None,
        box: Sandbox,
        finished: Callable[[_Job], None],
        allow_external: bool = False,
    ) -> None:
        self.jobs = jobs
        self.out_dir = out_dir
        self.work_dir = work_dir
        self.ignore = ignore
        self.schema_json = schema_json
        self.box = box
        self.finished = finished
        self.allow_external = allow_external
        self.run_id = uuid.uuid4().hex

    def _work_path(self, job: _Job, suffix: str) -> str:
        return os.path.join(self.work_dir, f"{job.index}-{job.attempts}{suffix}")

    def run(self) -> None:
        queue = list(self.jobs)
        while queue:
            calls = [
                (
                    job.source,
                    self._work_path(job, ".h5"),
                    self.out_dir,
                    self._work_path(job, ".progress"),
                    self.run_id,
                    self.ignore,
                    tuple(sorted(job.skip)),
                    self.schema_json,
                    self.allow_external,
                )
                for job in queue
            ]
            failed: list[tuple[_Job, SandboxResult]] = []
            for i, result in self.box.map(_CHILD_TARGET, calls):
                job = queue[i]
                if result.ok:
                    job.absorb(result.value)
                    self.finished(job)
                else:
                    failed.append((job, result))
            queue = self._after_failures(failed) if failed else []

    def _after_failures(self, failed: list[tuple[_Job, SandboxResult]]) -> list[_Job]:
        _remove_stale_partials(self.out_dir)
        scan = self.box.call(_SCAN_TARGET, self.out_dir, self.run_id)
        committed: dict[str, list[tuple[str, list[str]]]] = scan.value if scan.ok else {}
        retry: list[_Job] = []
        for job, result in failed:
            Path(self._work_path(job, ".h5")).unlink(missing_ok=True)
            stage, key, began = read_progress(self._work_path(job, ".progress"))
            before = len(job.recovered)
            for shard, keys in committed.get(job.source, []):
                job.shards[shard] = None
                for k in keys:
                    job.recovered[k] = None
                    job.lost.pop(k, None)
            if result.failure == "error":
                # Salvage code itself raised (a bug, or e.g. out_dir vanished): no resume.
                job.fatal = f"salvage failed at stage {stage!r}: {result.detail}"
                log.error("%s: %s", job.path, job.fatal)
                self.finished(job)
                continue
            failure = "timeout" if result.failure == "timeout" else "crashed"
            first_failure = not job.failures
            job.failures.append(failure)
            what = _failure_text(result)
            note = f"{what} " + (
                f"while reading group {key!r}" if stage == "group" else f"at stage {stage!r}"
            )
            if not scan.ok:
                note += f"; could not list what it had committed ({scan.failure}: {scan.detail})"
            elif len(job.recovered) > before:
                note += f"; kept the {len(job.recovered) - before} group(s) it had committed"
            job.notes.append(note)
            log.warning("%s: %s", job.path, note)
            if stage == "group" and key is not None:
                job.lost[key] = f"{failure}: {what}"
                # Stuck again on the first group it tried: the damage is file-wide (e.g.
                # the shared global heap of every string attribute), not in one group.
                resumable = first_failure or began > 1
                if resumable and scan.ok and job.attempts < MAX_RESUMES:
                    job.attempts += 1
                    job.skip |= set(job.recovered) | {key}
                    retry.append(job)
                    continue
            self.finished(job)
        return retry


def salvage(
    paths: PathOrPaths,
    out_dir: str | os.PathLike[str],
    *,
    schema: Schema | None = None,
    ignore: Collection[str] = ("init",),
    timeout: float = DEFAULT_TIMEOUT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    allow_external: bool = False,
) -> SalvageReport:
    """Recover every intact top-level group of ``paths`` into shards in ``out_dir``.

    Never modifies the inputs and never raises for a bad file: each gets a verdict.

    Parameters
    ----------
    paths
        Files, or directories (their ``*.h5`` files).
    out_dir
        Where the recovered results are written, as committed h5guard shards.
    schema
        A group that breaks it is not recovered (nested rules included); its reason
        names the violation.
    ignore
        Top-level objects that are not results (the seed pipeline's ``init`` dataset).
    timeout
        Seconds per file and attempt.
    memory_limit
        Bytes per reader process.
    workers
        Reader processes (default: one per CPU, at most one per file).
    progress
        Called as ``progress(done, total)`` as each file is settled.
    allow_external
        Also copy data that a dataset keeps in other files (HDF5 external storage,
        virtual datasets with sources elsewhere). False (the default): such a group is
        lost, its reason naming the other files, and their bytes are never read: an
        untrusted file can name any file the user can read.

    Returns
    -------
    SalvageReport
        A :class:`FileSalvage` per file: its verdict, the keys recovered and lost.

    Raises
    ------
    MergeSourceError
        A path does not exist, or ``out_dir`` cannot be used.
    ValueError
        Impossible limits.
    """
    started = time.monotonic()
    _check_limits(timeout, memory_limit, workers)
    files = _expand(paths)
    out = _prepare_out_dir(out_dir, paths)
    ignored = (ignore,) if isinstance(ignore, str) else tuple(ignore)
    results: dict[int, FileSalvage] = {}
    done = 0

    def settle(index: int, result: FileSalvage) -> None:
        nonlocal done
        results[index] = result
        done += 1
        log.info(
            "%s: %s (%d recovered, %d lost)",
            result.path,
            result.verdict,
            len(result.recovered),
            len(result.lost),
        )
        if progress:
            progress(done, len(files))

    jobs: list[_Job] = []
    for index, path in enumerate(files):
        quick = _quick_verdict(path, index)
        if isinstance(quick, FileSalvage):
            settle(index, quick)
        else:
            jobs.append(quick)
    if jobs:
        try:
            work = tempfile.mkdtemp(prefix=".salvage-", dir=out)
        except OSError as err:
            raise MergeSourceError(
                f"{out}: expected a writable directory, cannot create a work directory: "
                f"{err.strerror or err}"
            ) from err
        try:
            with Sandbox(
                workers=min(workers or os.cpu_count() or 1, len(jobs)),
                timeout=timeout,
                memory_limit=memory_limit,
            ) as box:
                run = _Run(
                    jobs,
                    out,
                    work,
                    ignored,
                    schema.to_json() if schema is not None else None,
                    box,
                    lambda job: settle(job.index, job.result()),
                    allow_external,
                )
                run.run()
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError):
                _remove_stale_partials(out)
    return SalvageReport(
        files=tuple(results[i] for i in range(len(files))),
        out_dir=out,
        seconds=time.monotonic() - started,
    )
