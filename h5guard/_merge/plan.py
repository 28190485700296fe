"""What a merge will do, worked out without changing anything: the one planning path
of both :func:`h5guard.merge` and :func:`h5guard.plan_merge`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h5guard import _atomic, _journal
from h5guard._check.api import ProgressCallback, validate_many
from h5guard._format import result as _result
from h5guard._liveness import GoneWriters, WriterIdentity, check_lease
from h5guard._merge.output import Output, Quarantined, recorded_output
from h5guard._sandbox import DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT, Sandbox
from h5guard.errors import MergeSourceError, SchemaError
from h5guard.report import Code, FileKind, FileSummary, Finding, Report, Severity
from h5guard.schema import Schema

log = logging.getLogger(__name__)

ON_CONFLICT = ("quarantine", "keep-existing")


class OutputListing:
    """The keys of an output, listed the first time they are asked for.

    ``h5guard status`` and the sweep's status ask; a plan printed as JSON does not, and
    then costs what the merge brings (the keys of a million-result output take seconds
    to list).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._keys: frozenset[str] | None = None

    def keys(self) -> frozenset[str]:
        if self._keys is None:
            with contextlib.closing(Output(self.path)) as out:
                self._keys = out.keys()
        return self._keys


@dataclass(frozen=True, slots=True)
class MergePlan:
    """What a merge would do, worked out without changing anything.

    Attributes
    ----------
    shard_dir, output : str
        The shard directory and the output file ("" when none is known).
    output_groups : int
        Groups already in the output.
    shards : tuple of str
        The valid committed shards (recovered journals' shards included), in merge order.
    bad_shards : tuple of Quarantined
        Shards (and journals) the merge will quarantine, and why.
    new_groups, duplicates : int
        Groups the merge will add; groups already merged with the same digest.
    conflicts : tuple of (str, str)
        ``(key, shard)`` of each group whose key is merged with another digest.
    stale_partials, live_partials : tuple of str
        Partials of writers that are gone; partials and journals still being written.
    report : Report
        The check of the shards.
    recovered : tuple of (str, int)
        ``(journal, results)`` of writers that are gone.
    interrupted : tuple of (str, str)
        ``(journal, key)`` of ``add()`` calls cut short.
    lost : tuple of str
        Results known to be lost, each with where and why.
    on_conflict : str
        The conflict policy planned with.
    output_keys : frozenset of str
        Every key of the output (``plan_merge`` only; listed on first use, so a plan
        that is not asked for them costs what the merge brings, not what the output
        holds; empty in a merge's own plan).
    shard_keys : frozenset of str
        Every key of the valid shards.
    pending : tuple of PendingJournal
        Journals whose writer cannot be shown gone (it runs, or runs elsewhere and may):
        where, who, why, and the keys of the results they hold. While any holds a
        result, the exit code is 1.
    """

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
    shard_keys: frozenset[str] = frozenset()  # keys of the valid shards
    pending: tuple[_journal.PendingJournal, ...] = ()
    # Lists the existing output's keys on first use (plan_merge); merge() only looks up
    # the keys it brings and has none.
    listing: OutputListing | None = field(default=None, repr=False, compare=False)

    @property
    def output_keys(self) -> frozenset[str]:
        """Every key of the existing output (listed on first use; see the class)."""
        return self.listing.keys() if self.listing is not None else frozenset()

    @property
    def pending_keys(self) -> frozenset[str]:
        """Keys whose ``add()`` returned, in journals of writers not shown gone."""
        return frozenset(k for p in self.pending for k in p.keys)

    @property
    def pending_results(self) -> int:
        """How many returned results are pending (not in the output, not to be merged)."""
        return sum(len(p.keys) for p in self.pending)

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
        """What the merge's exit code will be: 1 while anything is lost or quarantined,
        or returned results are pending."""
        return 1 if (self.quarantines or self.lost or self.pending_results) else 0

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
            "pending": [pending_dict(p) for p in self.pending],
            "would_quarantine": list(self.quarantines),
            "on_conflict": self.on_conflict,
            "ok": self.exit_code == 0,
        }


def pending_dict(p: _journal.PendingJournal) -> dict[str, Any]:
    """A pending journal as JSON (``--json`` output of merge and status)."""
    return {
        "journal": p.path,
        "results": len(p.keys),
        "writer": p.writer,
        "alive": p.alive,
        "reason": p.reason,
    }


def pending_lines(pending: Sequence[_journal.PendingJournal]) -> list[str]:
    """``PENDING: ...`` lines for a report: every pending journal with where and who."""
    return [f"PENDING: {p.describe()}" for p in pending if p.keys] + [
        f"still being written (no result yet): {p.path}: {p.reason}" for p in pending if not p.keys
    ]


def check_on_conflict(on_conflict: str) -> None:
    if on_conflict not in ON_CONFLICT:
        raise ValueError(
            f"on_conflict: expected 'quarantine' or 'keep-existing', got {on_conflict!r}"
        )


def resolve(
    shard_dir: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    *,
    need_output: bool = True,
) -> tuple[str, str]:
    """The shard directory and the absolute output path ("" when none is known and
    ``need_output`` is false: a plan against no output, as for a first merge)."""
    directory = os.fspath(shard_dir)
    _atomic.require_own_link(directory)
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
    if os.path.islink(out):
        target = os.path.realpath(out)
        raise MergeSourceError(
            f"{out}: the output is a symbolic link to {target}; a merge replaces its output "
            f"atomically and never writes through a link: name the target (-o {target}) or "
            "remove the link"
        )
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
    links: list[str]  # symbolic links named like shards or journals: never read through


def _sources(directory: str, output: str) -> _Sources:
    found = _Sources([], [], [], [], [])
    # The output (and its partial) may live in the shard directory: it is no shard, and
    # "merging" it into itself would delete it.
    own = {os.path.realpath(output), os.path.realpath(output + _atomic.PARTIAL_SUFFIX)}
    names = {p.name for p in Path(directory).iterdir()}
    for p in sorted(Path(directory).iterdir()):
        if p.is_symlink():
            # Someone else's file under a shard's or a journal's name: h5guard reads no
            # shard or journal through a link (a link at a .partial is h5guard's own
            # name, removed when that name is next written).
            if p.name.endswith((_journal.JOURNAL_SUFFIX, ".h5")) and os.path.abspath(p) != output:
                found.links.append(str(p))
            continue
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
class Checking:
    """How a merge (or its plan) checks the shards: the options both take for it."""

    schema: Schema | None = None
    sandbox: Sandbox | None = None
    progress: ProgressCallback | None = None
    timeout: float = DEFAULT_TIMEOUT
    memory_limit: int = DEFAULT_MEMORY_LIMIT
    workers: int | None = None


@dataclass(frozen=True, slots=True)
class Planned:
    """A plan, with what :func:`h5guard.merge` needs to carry it out."""

    plan: MergePlan
    new: dict[str, str | None]  # the keys to add with their digests, in merge order
    schema: Schema | None  # the schema the output will embed
    summaries: dict[str, FileSummary]  # each valid source's summary, recovered ones too
    journals: _journal.ClaimedJournals  # gone writers' journals, held until the stack closes


def build(
    directory: str,
    output: Output,
    stack: contextlib.ExitStack,
    checking: Checking,
    *,
    on_conflict: str,
    list_output_keys: bool = False,
    gone: GoneWriters | None = None,
    lease: float | None = None,
    claim: bool = False,
) -> Planned:
    """What to merge; the one planning path of both :func:`merge` and :func:`plan_merge`.

    Parameters
    ----------
    directory : str
        The shard directory.
    output : Output
        The existing output, open for key lookups.
    stack : contextlib.ExitStack
        Holds the claimed journals' locks for the caller.
    checking : Checking
        How the shards are checked.
    on_conflict : str
        One of :data:`ON_CONFLICT`.
    list_output_keys : bool
        List every key of the output in the plan (``plan_merge``); a merge looks up
        only the keys it brings.
    gone : GoneWriters, optional
        Writers declared gone (the user's ``--gone``, the engine's word).
    lease : float, optional
        Lengthens the writers' recorded leases.
    claim : bool
        Mark the journals of gone writers claimed (the merge, which recovers them).

    Returns
    -------
    Planned
        The plan, the new keys with their digests, the schema the output will embed,
        each source's summary, and the journals to recover.

    Raises
    ------
    MergeSourceError
        ``directory`` holds HDF5 files that h5guard did not write.
    """
    effective = checking.schema
    if effective is None and output.schema_json is not None:
        effective = Schema.from_json(output.schema_json, source=f"{output.path} embedded schema")
    found = _sources(directory, output.path)
    journals = _journal.claim_journals(found.journals, stack, gone=gone, lease=lease, mark=claim)
    report = validate_many(
        found.shards,
        schema=effective,
        sandbox=checking.sandbox,
        progress=checking.progress,
        timeout=checking.timeout,
        memory_limit=checking.memory_limit,
        workers=checking.workers,
        trust_seals=True,
    )
    good: list[str] = []
    bad: list[Quarantined] = [
        Quarantined(
            link,
            (
                f"{link}:/: SYMBOLIC_LINK a symbolic link to {os.readlink(link)!r} in the shard "
                "directory; h5guard reads no shard or journal through a link",
            ),
        )
        for link in found.links
    ]
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
        if state.refused:
            bad.append(Quarantined(state.path, state.refused))
            continue
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
        listing=OutputListing(output.path) if list_output_keys and output.path else None,
        shard_keys=frozenset(k for p in good for k in summaries[p].groups),
        pending=tuple(journals.pending),
    )
    if effective is None:
        effective = _common_schema([summaries[p] for p in good], output.count)
    return Planned(plan, new, effective, summaries, journals)


def _readable_foreign(summary: FileSummary, problems: Sequence[Finding]) -> bool:
    """HDF5 that libhdf5 reads, written by someone else (its only "problem" is that)."""
    return summary.kind is FileKind.FOREIGN and all(
        f.severity < Severity.ERROR or f.code is Code.NO_DIGESTS or f.code.startswith("SCHEMA_")
        for f in problems
    )


def _schema_violations(
    schema: Schema | None,
    state: _journal.JournalState,
    results: Iterable[_result.PreparedResult],
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
    gone_writers: Iterable[str | WriterIdentity] | GoneWriters | None = None,
    lease: float | None = None,
) -> MergePlan:
    """What :func:`~h5guard.merge` would do now, without taking the output's lock or
    changing any file.

    It runs the merge's own planning, so it predicts exactly what a merge started now
    would do.

    Parameters
    ----------
    shard_dir : str or os.PathLike
        The directory of shards.
    output : str or os.PathLike, optional
        The output file. Default: the one recorded in ``shard_dir``
        (:func:`~h5guard.record_output`); without one, it plans as for a first merge
        into a new output.
    schema : Schema, optional
        Check the shards against this schema (default: the one the output embeds).
    timeout : float
        Seconds a shard that needs a full read may take in the sandbox.
    memory_limit : int
        Bytes of address space a sandbox child may add.
    workers : int, optional
        Sandbox children (default: one per CPU).
    progress : callable, optional
        Called as ``progress(done, total)`` while shards are checked.
    sandbox : Sandbox, optional
        A checker pool to reuse for shards that need a full read; ``timeout`` and
        ``memory_limit`` are then its own.
    on_conflict : {"quarantine", "keep-existing"}
        The policy the merge would apply (see :func:`~h5guard.merge`).
    gone_writers : iterable of str or WriterIdentity, optional
        Writers to count as gone (see :func:`~h5guard.merge`).
    lease : float, optional
        Lengthens the writers' recorded leases (see :func:`~h5guard.merge`).

    Returns
    -------
    MergePlan
        What the merge would add, recover, quarantine and lose.

    Raises
    ------
    MergeSourceError
        ``shard_dir`` is no directory, the output path is not usable, or the directory
        holds HDF5 files h5guard did not write.
    UnreadableOutputError
        The existing output is damaged or not an h5guard output.
    ValueError
        ``on_conflict`` is not one of the two policies.
    """
    check_on_conflict(on_conflict)
    check_lease(lease)
    gone = GoneWriters.parse(gone_writers, source="the caller")
    directory, out = resolve(shard_dir, output, need_output=False)
    checking = Checking(schema, sandbox, progress, timeout, memory_limit, workers)
    with contextlib.ExitStack() as stack:
        existing = stack.enter_context(contextlib.closing(Output(out)))
        planned = build(
            directory,
            existing,
            stack,
            checking,
            on_conflict=on_conflict,
            list_output_keys=True,
            gone=gone,
            lease=lease,
        )
    return planned.plan
