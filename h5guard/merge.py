"""The locked, crash-safe, idempotent merge of committed shards into one output.

Protocol (each step leaves something valid on disk if the process dies there):

1. take ``OUTPUT.lock`` (waits up to ``lock_timeout``; never deletes the lock file);
2. validate every committed shard: one whose seal matches its bytes is exactly what an
   h5guard writer committed and is planned from its index; any other is read fully in
   the sandbox (quick + deep + digests + schema). Look the shards' keys up in the
   existing output; move bad shards to ``quarantine/`` with a JSON note;
3. check the free space for the new output before writing anything;
4. build ``OUTPUT.partial``: a byte copy of the old output plus the new groups;
   a key already present with the same digest is a duplicate, with another digest
   a conflict (the output keeps its version);
5. recompute the digest of every added group from the bytes of the partial file
   (h5guard's own reader, libhdf5 for what it does not know) and match it;
6. fsync it, ``os.replace`` it over the output, fsync the directory;
7. only now delete (or keep) the merged shards and quarantine conflicting ones.

Re-running after a crash at any step gives the same output as one clean run: shards
are deleted only after step 6, and their groups then count as duplicates.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import pickle
import select
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from h5guard import _atomic, _deep, _fastread, _journal, _layout, _lock, _result
from h5guard._version import __version__
from h5guard.errors import (
    H5GuardError,
    InsufficientSpaceError,
    MergeSourceError,
    SchemaError,
    UnreadableOutputError,
    WriteError,
)
from h5guard.report import Code, FileKind, FileSummary, Finding, Report, Severity
from h5guard.sandbox import DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT, Sandbox, die_with_parent
from h5guard.schema import Schema
from h5guard.shards import JournalState, read_journal, recover_journal
from h5guard.validate import QUARANTINE_DIR, ProgressCallback, partial_finding, validate_many

log = logging.getLogger(__name__)

RECORD_FILE = ".h5guard-output.json"
GROUPS_ATTR = "h5guard_groups"
SOURCES_ATTR = "h5guard_sources"  # JSON {shard file name: its file attributes}
LAST_MERGE_ATTR = "h5guard_last_merge"
DEFAULT_LOCK_TIMEOUT = 60.0
ON_CONFLICT = ("quarantine", "keep-existing")


def record_output(shard_dir: str | os.PathLike[str], output: str | os.PathLike[str]) -> None:
    """Remember in ``shard_dir`` which output its shards belong to (for ``h5guard merge DIR``)."""
    record = Path(shard_dir) / RECORD_FILE
    tmp = record.with_name(record.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"output": os.path.abspath(output)}), encoding="utf-8")
    _atomic.commit_file(tmp, record)


def recorded_output(shard_dir: str | os.PathLike[str]) -> str | None:
    try:
        data = json.loads((Path(shard_dir) / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    out = data.get("output") if isinstance(data, dict) else None
    return out if isinstance(out, str) else None


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A shard moved aside, and why."""

    path: str
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MergePlan:
    """What a merge would do, worked out without changing anything."""

    shard_dir: str
    output: str
    output_groups: int
    shards: tuple[str, ...]  # valid committed shards, in merge order
    bad_shards: tuple[Quarantined, ...]
    new_groups: int
    duplicates: int
    conflicts: tuple[tuple[str, str], ...]  # (key, shard)
    stale_partials: tuple[str, ...]
    live_partials: tuple[str, ...]
    report: Report
    recovered: tuple[tuple[str, int], ...] = ()  # (journal, results) of writers that are gone
    interrupted: tuple[tuple[str, str], ...] = ()  # (journal, key) of add() calls cut short
    lost: tuple[str, ...] = ()  # results known to be lost, each with where and why
    on_conflict: str = "quarantine"
    # Every key of the existing output: listed by plan_merge; merge() only looks up the
    # keys it brings and leaves this empty.
    output_keys: frozenset[str] = frozenset()
    shard_keys: frozenset[str] = frozenset()  # keys of the valid shards

    @property
    def keys(self) -> frozenset[str]:
        """Every group key that is committed somewhere: in the output or a valid shard."""
        return self.output_keys | self.shard_keys

    @property
    def quarantines(self) -> tuple[str, ...]:
        """Every file the merge will move to ``quarantine/``: bad ones, and conflicting
        ones under ``on_conflict="quarantine"``."""
        conflicted = (
            sorted({s for _, s in self.conflicts}) if self.on_conflict == "quarantine" else []
        )
        return tuple(q.path for q in self.bad_shards) + tuple(conflicted)

    @property
    def exit_code(self) -> int:
        """What the merge's exit code will be: 1 while anything is lost or quarantined."""
        return 1 if (self.quarantines or self.lost) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard_dir": self.shard_dir,
            "output": self.output,
            "output_groups": self.output_groups,
            "valid_shards": len(self.shards),
            "bad_shards": [{"path": q.path, "reasons": list(q.reasons)} for q in self.bad_shards],
            "new_groups": self.new_groups,
            "duplicates": self.duplicates,
            "conflicts": [{"key": k, "shard": s} for k, s in self.conflicts],
            "stale_partials": list(self.stale_partials),
            "live_partials": list(self.live_partials),
            "recovered": [{"journal": j, "results": n} for j, n in self.recovered],
            "interrupted": [{"journal": j, "key": k} for j, k in self.interrupted],
            "lost": list(self.lost),
            "would_quarantine": list(self.quarantines),
            "on_conflict": self.on_conflict,
            "ok": self.exit_code == 0,
        }


@dataclass(frozen=True, slots=True)
class MergeReport:
    """What a merge did. ``exit_code`` is 0 when every shard merged cleanly, else 1."""

    output: str
    shards_merged: int
    groups_added: int
    duplicates: int
    conflicts: tuple[tuple[str, str], ...]
    quarantined: tuple[Quarantined, ...]
    stale_partials: tuple[str, ...]
    live_partials: tuple[str, ...]
    groups_total: int
    shards_deleted: int
    seconds: float
    findings: tuple[Finding, ...] = field(default=())

    conflicts_resolved: bool = False  # merged with on_conflict="keep-existing"
    recovered: tuple[tuple[str, int], ...] = ()
    interrupted: tuple[tuple[str, str], ...] = ()
    lost: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        problems = self.quarantined or self.lost
        return 1 if (problems or (self.conflicts and not self.conflicts_resolved)) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "ok": self.exit_code == 0,
            "shards_merged": self.shards_merged,
            "groups_added": self.groups_added,
            "duplicates": self.duplicates,
            "conflicts": [{"key": k, "shard": s} for k, s in self.conflicts],
            "quarantined": [{"path": q.path, "reasons": list(q.reasons)} for q in self.quarantined],
            "stale_partials": list(self.stale_partials),
            "live_partials": list(self.live_partials),
            "groups_total": self.groups_total,
            "shards_deleted": self.shards_deleted,
            "seconds": round(self.seconds, 3),
            "recovered": [{"journal": j, "results": n} for j, n in self.recovered],
            "interrupted": [{"journal": j, "key": k} for j, k in self.interrupted],
            "lost": list(self.lost),
        }

    def render_text(self) -> str:
        lines = [
            f"merged {self.shards_merged} shard(s) into {self.output}: "
            f"{self.groups_added} group(s) added, {self.duplicates} duplicate(s), "
            f"{len(self.conflicts)} conflict(s), {len(self.quarantined)} quarantined; "
            f"{self.groups_total} group(s) in the output ({self.seconds:.2f} s)"
        ]
        lines += [
            f"conflict: group {k!r} of {s} differs from the output's; kept the output's"
            for k, s in self.conflicts
        ]
        for q in self.quarantined:
            lines.append(f"quarantined {q.path}: {q.reasons[0] if q.reasons else ''}")
        lines += [
            f"recovered {n} result(s) from the journal of a writer that did not commit: {j}"
            for j, n in self.recovered
        ]
        lines += [
            f"interrupted: result {k!r} was being added when its writer died (its add() never returned): {j}"
            for j, k in self.interrupted
        ]
        lines += [f"LOST: {why}" for why in self.lost]
        lines += [f"still being written, not merged: {p}" for p in self.live_partials]
        return "\n".join(lines)


def _resolve(
    shard_dir: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    *,
    need_output: bool = True,
) -> tuple[str, str]:
    """The shard directory and the absolute output path ("" when none is known and
    ``need_output`` is false: a plan against no output, as for a first merge)."""
    directory = os.fspath(shard_dir)
    if not os.path.isdir(directory):
        raise MergeSourceError(f"{directory}: expected a directory of shards, found none")
    if output is None:
        output = recorded_output(directory)
        if output is None:
            if not need_output:
                return directory, ""
            raise MergeSourceError(
                f"{directory}: no output is recorded for this directory; name one with -o OUTPUT"
            )
    out = os.path.abspath(os.fspath(output))
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise MergeSourceError(f"{out}: expected an existing directory {parent}")
    if os.path.isdir(out):
        raise MergeSourceError(f"{out}: expected a file path for the output, found a directory")
    return directory, out


@dataclass(frozen=True, slots=True)
class _Sources:
    shards: list[str]
    journals: list[str]
    stale: list[str]  # partials without a journal whose writer is known to be gone
    live: list[str]  # journals and partials whose writer may still be running


def _sources(directory: str, output: str) -> _Sources:
    found = _Sources([], [], [], [])
    # The output (and its partial) may live in the shard directory: it is no shard, and
    # "merging" it into itself would delete it.
    own = {os.path.realpath(output), os.path.realpath(output + _atomic.PARTIAL_SUFFIX)}
    names = {p.name for p in Path(directory).iterdir()}
    for p in sorted(Path(directory).iterdir()):
        if not p.is_file() or (output and os.path.realpath(p) in own):
            continue
        if p.name.endswith(_journal.JOURNAL_SUFFIX):
            found.journals.append(str(p))
        elif p.name.endswith(_atomic.PARTIAL_SUFFIX):
            if _journal.journal_beside(p.name) in names:
                continue  # a commit in progress (or cut short): its journal speaks for it
            # Stale only when its writer is known to be dead; a writer on another host
            # (a shared file system) may still be writing it.
            alive = _atomic.partial_owner_alive(p.name)
            (found.stale if alive is False else found.live).append(str(p))
        elif p.suffix == ".h5":
            found.shards.append(str(p))
    return found


@dataclass(frozen=True, slots=True)
class _Journals:
    """The journals of writers that are gone, read under their locks."""

    states: list[JournalState]
    results: dict[str, list[_result.PreparedResult]]  # journal path -> its results
    live: list[str]


def _read_journals(paths: Sequence[str], stack: contextlib.ExitStack) -> _Journals:
    states: list[JournalState] = []
    results: dict[str, list[_result.PreparedResult]] = {}
    live: list[str] = []
    for path in paths:
        # Held until the caller's stack closes: nobody else recovers it meanwhile, and
        # its writer cannot come back (a journal is never reopened).
        if not stack.enter_context(_journal.claim(path)):
            if os.path.exists(path):
                live.append(path)
            continue
        state, decoded = read_journal(path)
        states.append(state)
        results[path] = decoded
    return _Journals(states, results, live)


class _Output:
    """The existing output, opened read-only in-process to look keys up.

    Only the keys a merge brings are looked up, so an incremental merge costs what it
    adds, not what the output already holds. The quick layer vets the file first; it
    is a file this library wrote (and verified) in an earlier merge.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: h5py.File | None = None
        self.schema_json: str | None = None
        self.count = 0
        if not path or not os.path.exists(path):
            return
        quick = validate_many([path], deep=False)
        errors = [f for f in quick.findings if f.severity is Severity.ERROR]
        if errors:
            raise UnreadableOutputError(
                f"{path}: existing output is damaged, left untouched: {errors[0].code} {errors[0].message}"
            )
        try:
            self.file = h5py.File(path, "r", locking=False)
            fmt = _layout.text_attr(self.file, _layout.FORMAT_ATTR)
            self.schema_json = _layout.text_attr(self.file, _layout.SCHEMA_ATTR)
            self.count = self.file.id.get_num_objs()
        except Exception as err:
            self.close()
            raise UnreadableOutputError(
                f"{path}: existing output could not be opened ({_one_line(err)}); left untouched"
            ) from err
        if fmt != _layout.OUTPUT_FORMAT and fmt != _layout.SHARD_FORMAT:
            self.close()
            found = f"format {fmt!r}" if fmt else "an HDF5 file h5guard did not write"
            raise UnreadableOutputError(
                f"{path}: expected an h5guard output, found {found}; "
                "merge into a new output, or salvage it first"
            )

    def digest(self, key: str) -> str | None:
        """The digest of ``key`` in the output, or None if the output has no such group."""
        if self.file is None:
            return None
        name = key.encode("utf-8")
        try:
            if not self.file.id.links.exists(name):
                return None
            aid = h5py.h5a.open(self.file.id, _layout.DIGEST_ATTR.encode(), obj_name=name)
            value = _layout.read_attr_id(aid)
        except KeyError:
            value = None
        except Exception as err:
            raise UnreadableOutputError(
                f"{self.path}:/{key}: existing output group unreadable ({_one_line(err)}); left untouched"
            ) from err
        if value is None:
            raise UnreadableOutputError(f"{self.path}: group {key!r} has no digest; left untouched")
        return bytes(np.asarray(value)[()]).decode("utf-8", "replace")

    def keys(self) -> frozenset[str]:
        if self.file is None:
            return frozenset()
        return frozenset(self.file.keys())

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _plan(
    directory: str,
    output: _Output,
    schema: Schema | None,
    sandbox: Sandbox | None,
    progress: ProgressCallback | None,
    stack: contextlib.ExitStack,
    *,
    timeout: float,
    memory_limit: int,
    workers: int | None,
    on_conflict: str,
    list_output_keys: bool = False,
) -> tuple[MergePlan, dict[str, str | None], Schema | None, dict[str, FileSummary], _Journals]:
    """What to merge; the one planning path of both :func:`merge` and :func:`plan_merge`.

    Also returns the new keys with their digests in merge order, the schema the output
    will embed, each source's summary, and the journals to recover.
    """
    effective = schema
    if effective is None and output.schema_json is not None:
        effective = Schema.from_json(output.schema_json, source=f"{output.path} embedded schema")
    found = _sources(directory, output.path)
    journals = _read_journals(found.journals, stack)
    report = validate_many(
        found.shards,
        schema=effective,
        sandbox=sandbox,
        progress=progress,
        timeout=timeout,
        memory_limit=memory_limit,
        workers=workers,
        trust_seals=True,
    )
    good: list[str] = []
    bad: list[Quarantined] = []
    foreign: list[str] = []
    summaries: dict[str, FileSummary] = {}
    # Indexed once: looking each shard up in the report would be quadratic in shards.
    problems_of: dict[str, list[Finding]] = {}
    for finding in report.findings:
        if finding.severity >= Severity.WARNING:
            problems_of.setdefault(finding.path, []).append(finding)
    summary_of = {s.path: s for s in report.files}
    for path in found.shards:
        problems = problems_of.get(path, [])
        summary = summary_of[path]
        if _readable_foreign(summary, problems):
            foreign.append(path)
        elif problems:
            bad.append(Quarantined(path, tuple(str(f) for f in problems)))
        elif summary.kind not in (FileKind.SHARD, FileKind.OUTPUT) or None in set(
            summary.groups.values()
        ):
            foreign.append(path)
        else:
            summaries[path] = summary
            good.append(path)
    if foreign:
        # Readable HDF5 that a pipeline wrote without h5guard: its groups carry no
        # digests, so they could never be verified once merged, and moving the user's
        # files aside without being asked is not the merge's to do.
        raise MergeSourceError(
            f"{directory}: {len(foreign)} readable HDF5 file(s) that h5guard did not write "
            f"(e.g. {os.path.basename(foreign[0])}); merge takes only h5guard shards and "
            f"leaves them untouched. Convert them first: h5guard salvage {directory} -o "
            "SALVAGED_DIR, then h5guard merge SALVAGED_DIR -o OUTPUT"
        )
    recovered: list[tuple[str, int]] = []
    interrupted: list[tuple[str, str]] = []
    lost: list[str] = [
        f"{p}: uncommitted batch of a writer that died without a journal; "
        "h5guard salvage may recover part of it"
        for p in found.stale
    ]
    for state in journals.states:
        lost.extend(state.lost)
        if state.interrupted is not None:
            interrupted.append((state.path, state.interrupted))
        if state.committed or not state.results:
            continue
        violations = _schema_violations(effective, state, journals.results[state.path])
        if violations:
            bad.append(Quarantined(state.path, tuple(violations)))
            continue
        recovered.append((state.path, len(state.results)))
        summaries[state.shard] = FileSummary(
            state.shard,
            FileKind.SHARD,
            os.path.getsize(state.path),
            state.groups,
            state.schema_json,
        )
        good.append(state.shard)
    # Merge order is path order, recovered batches included: the first version of a key
    # wins, so the order has to be one a user (and a test's model) can predict.
    good.sort()
    new: dict[str, str | None] = {}
    dups = 0
    conflicts: list[tuple[str, str]] = []
    for path in good:
        for key, digest in sorted(summaries[path].groups.items()):
            if key in new:
                known: str | None = new[key]
            else:
                known = output.digest(key)
                if known is None:
                    new[key] = digest
                    continue
            if known == digest:
                dups += 1
            else:
                conflicts.append((key, path))
    plan = MergePlan(
        shard_dir=directory,
        output=output.path,
        output_groups=output.count,
        shards=tuple(good),
        bad_shards=tuple(bad),
        new_groups=len(new),
        duplicates=dups,
        conflicts=tuple(conflicts),
        stale_partials=tuple(found.stale),
        live_partials=tuple(found.live + journals.live),
        report=report,
        recovered=tuple(recovered),
        interrupted=tuple(interrupted),
        lost=tuple(lost),
        on_conflict=on_conflict,
        output_keys=output.keys() if list_output_keys else frozenset(),
        shard_keys=frozenset(k for p in good for k in summaries[p].groups),
    )
    if effective is None:
        effective = _common_schema([summaries[p] for p in good], output.count)
    return plan, new, effective, summaries, journals


def _readable_foreign(summary: FileSummary, problems: Sequence[Finding]) -> bool:
    """HDF5 that libhdf5 reads, written by someone else (its only "problem" is that)."""
    return summary.kind is FileKind.FOREIGN and all(
        f.severity < Severity.ERROR or f.code is Code.NO_DIGESTS or f.code.startswith("SCHEMA_")
        for f in problems
    )


def _schema_violations(
    schema: Schema | None, state: JournalState, results: Sequence[_result.PreparedResult]
) -> list[str]:
    """A recovered batch is checked like a shard: against the schema the output embeds."""
    if schema is None or schema.to_json() == state.schema_json:
        return []  # its writer checked every result against this very schema at add()
    out: list[str] = []
    for result in results:
        try:
            _result.check_schema(schema, result)
        except SchemaError as err:
            out.append(f"{state.path}:/{result.key}: {err}")
    return out


def _common_schema(summaries: Sequence[FileSummary], existing_groups: int) -> Schema | None:
    """The schema every source carries, if they all carry the same one.

    Sources with different schemas, or some with none (failure records written without
    one, say), give an output with no schema: embedding one would make ``h5guard check``
    fail the groups that never claimed to follow it.
    """
    texts = {s.schema_json for s in summaries}
    if existing_groups == 0 and len(texts) == 1 and None not in texts:
        return Schema.from_json(str(texts.pop()))
    if len(texts) > 1:
        log.info("sources carry %d different schemas (or none); the output embeds none", len(texts))
    return None


def plan_merge(
    shard_dir: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    schema: Schema | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    sandbox: Sandbox | None = None,
    on_conflict: str = "quarantine",
) -> MergePlan:
    """What :func:`merge` would do now, without taking the output's lock or changing any file.

    It runs the merge's own planning, so it predicts exactly what a merge started now
    would do. Without ``output`` and with none recorded in ``shard_dir``, it plans as
    for a first merge into a new output. ``sandbox``: a checker pool to reuse for shards
    that need a full read; ``timeout``/``memory_limit`` are then its own.
    """
    _check_on_conflict(on_conflict)
    directory, out = _resolve(shard_dir, output, need_output=False)
    with contextlib.ExitStack() as stack:
        existing = stack.enter_context(contextlib.closing(_Output(out)))
        plan, _, _, _, _ = _plan(
            directory,
            existing,
            schema,
            sandbox,
            progress,
            stack,
            timeout=timeout,
            memory_limit=memory_limit,
            workers=workers,
            on_conflict=on_conflict,
            list_output_keys=True,
        )
    return plan


def _check_on_conflict(on_conflict: str) -> None:
    if on_conflict not in ON_CONFLICT:
        raise ValueError(
            f"on_conflict: expected 'quarantine' or 'keep-existing', got {on_conflict!r}"
        )


def _quarantine(path: str, reasons: Sequence[str], directory: str) -> Quarantined:
    qdir = Path(directory) / QUARANTINE_DIR
    qdir.mkdir(exist_ok=True)
    # Never replace an earlier quarantined file of the same name: pick a free name.
    name, n = Path(path).name, 0
    while (qdir / name).exists():
        n += 1
        name = f"{Path(path).stem}.{n}{Path(path).suffix}"
    target = qdir / name
    note = qdir / (name + ".json")
    tmp = note.with_name(note.name + ".tmp")
    tmp.write_text(
        json.dumps(
            {
                "file": Path(path).name,
                "quarantined": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "reasons": list(reasons),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    # The note first: a crash between the two leaves a note without a file (harmless,
    # the next merge quarantines again), never a file without its reason.
    _atomic.commit_file(tmp, note)
    os.replace(path, target)
    _atomic.fsync_dir(qdir)
    _atomic.fsync_dir(directory)
    log.warning("quarantined %s: %s", path, reasons[0] if reasons else "")
    return Quarantined(str(target), tuple(reasons))


def _write_partial(
    output: str,
    partial: str,
    plan: MergePlan,
    summaries: Mapping[str, FileSummary],
    new: Mapping[str, str | None],
    existing_groups: int,
    schema: Schema | None,
    root_attrs: Mapping[str, Any],
) -> dict[str, tuple[int, str]]:
    """Build the new output in ``partial``.

    Returns each added group's object header address and digest, for the verification.
    """
    if os.path.exists(output):
        _atomic.copy_file(output, partial)
        f = h5py.File(partial, "r+", libver=_layout.LIBVER, locking=False)
    else:
        f = _layout.create_file(partial, "w")
    added: dict[str, tuple[int, str]] = {}
    todo = set(new)
    sources: dict[str, dict[str, Any]] = {}
    try:
        if SOURCES_ATTR in f.attrs:
            sources = json.loads(_layout.text_attr(f, SOURCES_ATTR) or "{}")
        for shard in plan.shards:
            keys = [k for k in sorted(summaries[shard].groups) if k in todo]
            if not keys:
                continue
            with h5py.File(shard, "r", locking=False) as src:
                attrs = _file_attrs(src)
                if attrs:
                    sources[os.path.basename(shard)] = attrs
                for key in keys:
                    link = key.encode("utf-8")
                    # The low-level call: h5py's Group.copy spends as long resolving its
                    # arguments as libhdf5 spends copying a small group.
                    h5py.h5o.copy(src.id, link, f.id, link, lcpl=_layout.LINK_CREATE_UTF8)
                    added[key] = (h5py.h5o.get_info(f.id, link).addr, str(new[key]))
                    todo.discard(key)
        f.attrs[_layout.FORMAT_ATTR] = np.bytes_(_layout.OUTPUT_FORMAT.encode())
        f.attrs[_layout.VERSION_ATTR] = np.bytes_(__version__.encode())
        if schema is not None:
            f.attrs[_layout.SCHEMA_ATTR] = np.bytes_(schema.to_json().encode())
        f.attrs[GROUPS_ATTR] = np.int64(existing_groups + len(added))
        f.attrs[LAST_MERGE_ATTR] = np.bytes_(
            _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").encode()
        )
        for name, value in root_attrs.items():
            _layout.write_attr(f, name, _layout.normalize_value(name, value))
        if sources:
            text = json.dumps(sources, sort_keys=True, ensure_ascii=False)
            _layout.write_attr(f, SOURCES_ATTR, np.array(text.encode(), dtype=np.bytes_))
    finally:
        f.close()
    return added


def _file_attrs(src: h5py.File) -> dict[str, Any]:
    """A shard's worker-level attributes (``ShardWriter(file_attrs=...)``), as JSON values."""
    out: dict[str, Any] = {}
    for name in src.attrs:
        if not name.startswith(_layout.RESERVED_PREFIX):
            out[name] = _jsonable(_layout.read_attr(src, name))
    return out


def _jsonable(value: Any) -> Any:
    arr = np.asarray(value)
    if arr.dtype.kind == "S":
        decoded = np.char.decode(arr, "utf-8", errors="backslashreplace")
        return decoded.tolist()
    return arr.tolist()


# Below this many added groups a forked helper costs more than the half it verifies.
PARALLEL_VERIFY_MIN = 2000


def _verify_copy(partial: str, added: Mapping[str, tuple[int, str]]) -> list[Finding]:
    """Recompute the digest of every added group from the bytes of the new output.

    h5guard's own reader (:mod:`h5guard._fastread`) parses the copied objects straight
    from the file, independently of the libhdf5 that wrote them; groups outside the
    layout it knows (big chunked datasets, say) are read back through libhdf5. The new
    file is one this process just wrote, so it is read in-process.
    """
    if not added:
        return []
    mismatched, unsupported = _verify_in_two(partial, added)
    problems = [
        Finding(partial, f"/{key}", Code.DIGEST_MISMATCH, Severity.ERROR, message)
        for key, message in mismatched
    ]
    if unsupported:
        log.debug("%d group(s) verified through libhdf5", len(unsupported))
        problems += _deep.verify_groups(partial, {k: added[k][1] for k in unsupported})
    return problems


def _verify_in_two(
    partial: str, added: Mapping[str, tuple[int, str]]
) -> tuple[list[tuple[str, str]], list[str]]:
    """Run the reader on half of the groups in a forked copy of this process.

    Only when this process has a single thread (a fork copies just the calling thread,
    so a lock held by another one would never be released in the child) and the work is
    big enough; the child runs pure Python on the closed file and leaves with _exit, so
    nothing of libhdf5's state in it is used. (A spawned checker was measured slower:
    its interpreter start-up slows the copy more than it saves.) Any failure of the
    child means this process verifies its half too.
    """
    fork = getattr(os, "fork", None)
    if fork is None or len(added) < PARALLEL_VERIFY_MIN or threading.active_count() != 1:
        return _fastread.verify_groups_at(partial, added)
    keys = list(added)
    mine = {k: added[k] for k in keys[: len(keys) // 2]}
    theirs = {k: added[k] for k in keys[len(keys) // 2 :]}
    read_end, write_end = os.pipe()
    pid = fork()
    if pid == 0:  # the child: verify, report, leave without running any exit handler
        code = 1
        try:
            die_with_parent()
            os.close(read_end)
            with os.fdopen(write_end, "wb") as out:
                pickle.dump(_fastread.verify_groups_at(partial, theirs), out)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    reply = b""
    try:
        problems, unsupported = _fastread.verify_groups_at(partial, mine)
        # The reader never loops, but a verification must never hang: give the child a
        # generous deadline (it has done half the work in the time this process took).
        deadline = time.monotonic() + 60.0 + 0.001 * len(theirs)
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            chunks: list[bytes] = []
            while time.monotonic() < deadline:
                ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    break
                chunk = pipe.read(1 << 20)
                if not chunk:
                    reply = b"".join(chunks)
                    break
                chunks.append(chunk)
    finally:
        if not reply:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    try:
        if status != 0:
            raise ValueError(f"exit status {status}")
        more, more_unsupported = pickle.loads(reply)
    except Exception as err:
        log.info("verification helper failed (%s); verifying its half here", err)
        more, more_unsupported = _fastread.verify_groups_at(partial, theirs)
    return problems + more, unsupported + more_unsupported


def merge(
    shard_dir: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    schema: Schema | None = None,
    keep_shards: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    timeout: float = DEFAULT_TIMEOUT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    workers: int | None = None,
    root_attrs: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    on_conflict: str = "quarantine",
    sandbox: Sandbox | None = None,
) -> MergeReport:
    """Merge the committed shards of ``shard_dir`` into ``output`` (see module docs).

    ``on_conflict``: ``"quarantine"`` (default) moves a shard holding a group whose
    key is already merged with another digest to ``quarantine/`` for the user to
    decide. ``"keep-existing"`` keeps the merged version and drops the other, still
    listing it in ``MergeReport.conflicts``: for pipelines where a recomputation of
    the same key differs only in incidental values such as timings.

    Raises :class:`~h5guard.LockTimeoutError`, :class:`~h5guard.InsufficientSpaceError`,
    :class:`~h5guard.UnreadableOutputError` or :class:`~h5guard.MergeSourceError` when
    it cannot run; the output is then untouched.
    """
    _check_on_conflict(on_conflict)
    started = time.monotonic()
    directory, out = _resolve(shard_dir, output)
    extra_attrs = dict(root_attrs or {})
    for name in extra_attrs:
        if name.startswith(_layout.RESERVED_PREFIX):
            raise ValueError(f"root_attrs: {name!r} uses the reserved prefix 'h5guard_'")
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            _lock.exclusive(out, timeout=lock_timeout, purpose=f"h5guard merge {directory}")
        )
        existing = stack.enter_context(contextlib.closing(_Output(out)))
        plan, new, effective, summaries, journals = _plan(
            directory,
            existing,
            schema,
            sandbox,
            progress,
            stack,
            timeout=timeout,
            memory_limit=memory_limit,
            workers=workers,
            on_conflict=on_conflict,
        )
        existing.close()
        quarantined = [_quarantine(q.path, q.reasons, directory) for q in plan.bad_shards]
        bad = {q.path for q in plan.bad_shards}
        for state in journals.states:
            if state.path not in bad:
                # Under the journal's lock (held by the stack): its shard, then no journal.
                recover_journal(state, journals.results[state.path])
        partial = out + _atomic.PARTIAL_SUFFIX
        needs_write = plan.new_groups > 0 or extra_attrs or not os.path.exists(out)
        if needs_write:
            old_size = os.path.getsize(out) if os.path.exists(out) else 0
            new_bytes = sum(summaries[s].size for s in plan.shards)
            needed = old_size + int(new_bytes * 1.25) + 1024 * 1024
            _atomic.require_free_space(os.path.dirname(out), needed)
            try:
                added = _write_partial(
                    out, partial, plan, summaries, new, plan.output_groups, effective, extra_attrs
                )
                problems = _verify_copy(partial, added)
                if problems:
                    raise UnreadableOutputError(
                        f"{partial}: verification of the new output failed, old output kept: {problems[0]}"
                    )
            except H5GuardError:
                _atomic.remove_quietly(partial)
                raise
            except Exception as err:
                _atomic.remove_quietly(partial)
                # libhdf5 reports a failed write as a RuntimeError (or an OSError whose
                # text names no file); ENOSPC is the full disk the estimate missed.
                if getattr(err, "errno", None) == errno.ENOSPC or "errno = 28," in str(err):
                    raise InsufficientSpaceError(
                        os.path.dirname(out), needed, _atomic.free_bytes(os.path.dirname(out))
                    ) from err
                if isinstance(err, OSError | RuntimeError):
                    raise WriteError(
                        partial, f"writing the new output failed, {out} is unchanged", err
                    ) from err
                raise
            except BaseException:
                _atomic.remove_quietly(partial)
                raise
            # Its errors name the file and say which step failed; after the rename only a
            # directory fsync can fail, and then the new output is already in place.
            _atomic.commit_file(partial, out)
        else:
            added = {}
            _atomic.remove_quietly(partial)
        conflicted = {s for _, s in plan.conflicts} if on_conflict == "quarantine" else set()
        for shard in sorted(conflicted):
            keys = [k for k, s in plan.conflicts if s == shard]
            reasons = [
                f"{shard}:/{k}: CONFLICT group already in {out} with another digest" for k in keys
            ]
            quarantined.append(_quarantine(shard, reasons, directory))
        deleted = 0
        if not keep_shards:
            for shard in plan.shards:
                if shard not in conflicted:
                    _atomic.remove_quietly(shard)
                    deleted += 1
            if deleted:
                _atomic.fsync_dir(directory)
        total = plan.output_groups + len(added)
    return MergeReport(
        output=out,
        shards_merged=len(plan.shards) - len(conflicted),
        groups_added=len(added),
        duplicates=plan.duplicates,
        conflicts=plan.conflicts,
        quarantined=tuple(quarantined),
        stale_partials=plan.stale_partials,
        live_partials=plan.live_partials,
        groups_total=total,
        shards_deleted=deleted,
        seconds=time.monotonic() - started,
        conflicts_resolved=on_conflict == "keep-existing",
        findings=plan.report.findings + tuple(partial_finding(p) for p in plan.stale_partials),
        recovered=plan.recovered,
        interrupted=plan.interrupted,
        lost=plan.lost,
    )
