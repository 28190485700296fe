"""The merge itself, :func:`merge`: the steps of :mod:`h5guard._merge` in their order."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import functools
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from h5guard import _atomic, _background, _env, _journal, _lock
from h5guard._check.api import ProgressCallback
from h5guard._check.own import verify_groups
from h5guard._format import names, write
from h5guard._format import reader as _reader
from h5guard._format import segments as _segments
from h5guard._liveness import GoneWriters, WriterIdentity, check_lease
from h5guard._merge import fold as _fold
from h5guard._merge import output as _output
from h5guard._merge import plan as _plan
from h5guard._merge import spare as _spare
from h5guard._merge import verify as _verify
from h5guard._merge.output import Quarantined
from h5guard._sandbox import DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT, Sandbox
from h5guard._version import __version__
from h5guard.errors import (
    H5GuardError,
    InsufficientSpaceError,
    MergeSourceError,
    UnreadableOutputError,
    WriteError,
)
from h5guard.report import Code, FileSummary, Finding
from h5guard.schema import Schema

log = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT = 60.0
LAYOUTS = ("auto", "single", "segmented")
# From this size of a self-contained output on, an "auto" merge turns it into segments:
# a merge then costs what it adds instead of a copy of the whole output. Below it the
# copy is cheap and one file is simpler to hand around. Measured on the shared 2-core
# machine (ext4, benchmarks/bench_incremental.py, load 2.6): 10 new results into a
# 64 MiB single file 0.10 s against 0.02 s into an empty output, and about 1.5 ms more
# per MiB above (1 GiB: 1.5 s idle, 9 to 14 s under load); into a segmented 1 GiB output
# 1.6x the empty merge. A lower threshold would segment studies whose merge costs a
# tenth of a second, and their first segmented merge (one link per key: 5 s for 100,000
# keys) is dearer than many copies of a small file.
SEGMENT_THRESHOLD = 64 * 1024 * 1024
THRESHOLD_ENV = "H5GUARD_SEGMENT_THRESHOLD"
# A first segmented merge's new segment records which file the output was (device and
# inode): a merge after a crash recognizes it as its own leftover.
BASE_ATTR = "h5guard_segment_base"
# The shard directory's own lock (``.h5guard-merge.lock``, with ``.lock.info`` beside it).
DIR_LOCK = ".h5guard-merge"


@dataclass(frozen=True, slots=True)
class MergeReport:
    """What a merge did. ``exit_code`` is 0 when every shard merged cleanly, else 1.

    Attributes
    ----------
    output : str
        The output file (absolute path).
    shards_merged : int
        Shards whose groups were merged (conflicting quarantined ones not counted).
    groups_added, duplicates : int
        Groups added; groups already in the output with the same digest.
    conflicts : tuple of (str, str)
        ``(key, shard)`` of each group whose key is merged with another digest.
    quarantined : tuple of Quarantined
        Files moved to ``quarantine/``, and why.
    stale_partials, live_partials : tuple of str
        Uncommitted ``.partial`` files of writers that are gone (their batch is lost),
        and partials or journals still being written (left alone).
    groups_total : int
        Groups in the output after the merge.
    shards_deleted : int
        Merged shards deleted (0 with ``keep_shards``).
    seconds : float
        How long the merge took.
    findings : tuple of Finding
        What the shards' check found, and the stale partials.
    conflicts_resolved : bool
        Merged with ``on_conflict="keep-existing"``: conflicts do not fail the merge.
    recovered : tuple of (str, int)
        ``(journal, results)`` of writers that are gone, recovered into shards.
    interrupted : tuple of (str, str)
        ``(journal, key)`` of ``add()`` calls cut short by their writer's death (those
        calls never returned).
    lost : tuple of str
        Results known to be lost, each with where and why.
    pending : tuple of PendingJournal
        Journals whose writer cannot be shown gone, left alone: where, who, why. While
        any holds a returned result, the exit code is 1.
    """

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
    pending: tuple[_journal.PendingJournal, ...] = ()

    @property
    def pending_results(self) -> int:
        """Returned results not in the output because their writer may still run."""
        return sum(len(p.keys) for p in self.pending)

    @property
    def exit_code(self) -> int:
        problems = self.quarantined or self.lost or self.pending_results
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
            "pending": [_plan.pending_dict(p) for p in self.pending],
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
        lines += _plan.pending_lines(self.pending)
        journals = {p.path for p in self.pending}
        lines += [
            f"still being written, not merged: {p}" for p in self.live_partials if p not in journals
        ]
        return "\n".join(lines)


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
    gone_writers: Iterable[str | WriterIdentity] | GoneWriters | None = None,
    lease: float | None = None,
    layout: str = "auto",
) -> MergeReport:
    """Merge the committed shards of ``shard_dir`` into ``output``, under its lock.

    Each step leaves something valid on disk if the process dies there (the protocol
    is in :mod:`h5guard._merge`): re-running after a crash gives the same output as one
    clean run. The journals of writers that are gone are recovered into shards first.

    Parameters
    ----------
    shard_dir : str or os.PathLike
        The directory of shards.
    output : str or os.PathLike, optional
        The output file. Default: the one recorded in ``shard_dir``
        (:func:`~h5guard.record_output`).
    schema : Schema, optional
        Check the shards against it (default: the one the output embeds, if any).
    keep_shards : bool
        Keep the merged shards instead of deleting them.
    lock_timeout : float
        Seconds to wait for another merge into the same output.
    timeout : float
        Seconds a shard that needs a full read may take in the sandbox (and the
        verification helper its half).
    memory_limit : int
        Bytes of address space a sandbox child may add.
    workers : int, optional
        Sandbox children for the check (default: one per CPU).
    root_attrs : mapping, optional
        Attributes to set at the output's root (names must not start with ``h5guard_``).
    progress : callable, optional
        Called as ``progress(done, total)`` while shards are checked.
    on_conflict : {"quarantine", "keep-existing"}
        ``"quarantine"`` moves a shard holding a group whose key is already merged with
        another digest to ``quarantine/`` for the user to decide. ``"keep-existing"``
        keeps the merged version and drops the other, still listing it in
        ``MergeReport.conflicts``: for pipelines where a recomputation of the same key
        differs only in incidental values such as timings.
    sandbox : Sandbox, optional
        A checker pool to reuse for shards that need a full read; ``timeout`` and
        ``memory_limit`` are then its own.
    gone_writers : iterable of str or WriterIdentity, optional
        Writers to count as gone although nothing on this machine can show it: ``HOST``
        (every writer that ran there), ``HOST:PID``, ``PID`` (on this machine), or
        identities (an engine's word about its dead workers). Their batches are
        recovered, and a lock they left behind is taken over. See docs/guarantee.md.
    lease : float, optional
        Seconds after which the untouched journal of a writer on another machine
        counts as gone; it can only lengthen the lease each writer recorded (default
        300 s, ``$H5GUARD_LEASE``).
    layout : {"auto", "single", "segmented"}
        How the output holds its groups (docs/merge.md). ``"single"``: one
        self-contained file, rewritten (copied, added to, renamed) by each merge.
        ``"segmented"``: the new groups go into a new segment file in
        ``OUTPUT.segments/`` and the output becomes a small index of links to them, so
        a merge costs what it adds. ``"auto"`` (the default): an existing index stays
        segmented; a self-contained output stays one file below
        :data:`SEGMENT_THRESHOLD` bytes (``$H5GUARD_SEGMENT_THRESHOLD``) and is turned
        into an index from there on. ``h5guard.compact`` makes one file again.

    Returns
    -------
    MergeReport
        What was merged, quarantined, recovered and lost.

    Raises
    ------
    LockTimeoutError
        Another merge holds the shard directory's lock or the output's; nothing was
        touched, and the message names the holder.
    InsufficientSpaceError
        Not enough free space for the new output.
    UnreadableOutputError
        The existing output is damaged, or the new one did not verify.
    MergeSourceError
        ``shard_dir`` or the output path is unusable, or ``shard_dir`` holds HDF5 files
        h5guard did not write.
    WriteError
        Writing the new output failed.
    SettingError
        ``$H5GUARD_SEGMENT_THRESHOLD`` or ``$H5GUARD_SEGMENT_FANOUT`` holds no usable
        value; nothing was touched.
    ValueError
        A bad ``on_conflict``, ``root_attrs`` name, ``gone_writers`` entry or
        ``lease``.

    Notes
    -----
    When the merge raises, the output is untouched.
    """
    _plan.check_on_conflict(on_conflict)
    check_lease(lease)
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    gone = GoneWriters.parse(gone_writers, source="the caller")
    started = time.monotonic()
    directory, out = _plan.resolve(shard_dir, output)
    # The settings from the environment are refused here, before anything is locked or
    # written, rather than where a merge of the right kind first reads them.
    segment_threshold()
    _fold.fanout()
    extra_attrs = dict(root_attrs or {})
    for name in extra_attrs:
        if name.startswith(names.RESERVED_PREFIX):
            raise ValueError(f"root_attrs: {name!r} uses the reserved prefix 'h5guard_'")
    checking = _plan.Checking(schema, sandbox, progress, timeout, memory_limit, workers)
    earlier: list[_Altered] = []
    # A shard whose bytes were altered and resealed passes the seal check; the
    # verification of the new output catches it. It is then quarantined by name and the
    # merge starts again without it (each round removes at least one shard).
    while True:
        try:
            report = _merge_once(
                directory,
                out,
                checking,
                keep_shards=keep_shards,
                lock_timeout=lock_timeout,
                timeout=timeout,
                memory_limit=memory_limit,
                extra_attrs=extra_attrs,
                on_conflict=on_conflict,
                gone=gone,
                lease=lease,
                layout=layout,
            )
        except _Altered as altered:
            earlier.append(altered)
            continue
        break
    if not earlier:
        return dataclasses.replace(report, seconds=time.monotonic() - started)
    lost = [why for a in earlier for why in a.plan.lost]
    return dataclasses.replace(
        report,
        seconds=time.monotonic() - started,
        quarantined=tuple(q for a in earlier for q in a.quarantined) + report.quarantined,
        recovered=tuple(r for a in earlier for r in a.plan.recovered) + report.recovered,
        interrupted=tuple(i for a in earlier for i in a.plan.interrupted) + report.interrupted,
        lost=tuple(lost) + tuple(why for why in report.lost if why not in lost),
    )


class _Altered(Exception):
    """Shards found altered (and resealed) by the verification, now quarantined."""

    def __init__(self, plan: _plan.MergePlan, quarantined: list[Quarantined]) -> None:
        super().__init__(f"{len(quarantined)} altered shard(s)")
        self.plan = plan
        self.quarantined = quarantined


def _altered_sources(
    problems: list[Finding],
    plan: _plan.MergePlan,
    summaries: Mapping[str, FileSummary],
    new: Mapping[str, str | None],
) -> dict[str, list[str]] | None:
    """The shards whose own groups do not match their digests, with the reasons.

    None when some mismatch is not explained by its source shard (a fault of the copy).
    """
    bad_keys = {f.obj.lstrip("/") for f in problems}
    source_of: dict[str, str] = {}
    for shard in plan.shards:
        for key in summaries[shard].groups:
            if key in bad_keys and key not in source_of:
                source_of[key] = shard
    by_shard: dict[str, dict[str, str | None]] = {}
    for key in bad_keys:
        if key not in source_of:
            return None
        by_shard.setdefault(source_of[key], {})[key] = new.get(key)
    altered: dict[str, list[str]] = {}
    for shard, expected in by_shard.items():
        findings = verify_groups(shard, expected)
        mismatched = {f.obj.lstrip("/") for f in findings if f.code == Code.DIGEST_MISMATCH}
        if mismatched != set(expected):
            return None
        altered[shard] = [
            f"{shard}:/{key}: DIGEST_MISMATCH the group's content differs from its digest although "
            "the seal matches: the shard was altered and resealed"
            for key in sorted(expected)
        ]
    return altered


def _merge_once(
    directory: str,
    out: str,
    checking: _plan.Checking,
    *,
    keep_shards: bool,
    lock_timeout: float,
    timeout: float,
    memory_limit: int,
    extra_attrs: dict[str, Any],
    on_conflict: str,
    gone: GoneWriters,
    lease: float | None,
    layout: str = "auto",
) -> MergeReport:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        # One merge per shard directory, whatever its output (two merges of one
        # directory into two outputs would take each other's shards), then one per
        # output (two directories may merge into one output). Always in this order.
        stack.enter_context(
            _lock.exclusive(
                os.path.join(directory, DIR_LOCK),
                timeout=lock_timeout,
                purpose=f"h5guard merge {directory} -o {out}",
                gone=gone,
                lease=lease,
            )
        )
        stack.enter_context(
            _lock.exclusive(
                out,
                timeout=lock_timeout,
                purpose=f"h5guard merge {directory}",
                gone=gone,
                lease=lease,
            )
        )
        existing = stack.enter_context(contextlib.closing(_output.Output(out)))
        planned = _plan.build(
            directory,
            existing,
            stack,
            checking,
            on_conflict=on_conflict,
            gone=gone,
            lease=lease,
            claim=True,
        )
        plan, summaries = planned.plan, planned.summaries
        index = existing.index
        existing.close()
        old_size = os.path.getsize(out) if os.path.exists(out) else 0
        segmented = _segmented(layout, index is not None, old_size, out)
        new_bytes = sum(summaries[s].size for s in plan.shards)
        # A segmented merge writes the new groups and a new index (a copy of the old one
        # plus links), never the old groups.
        base = _index_size(out, index) if segmented else old_size
        needed = base + int(new_bytes * 1.25) + 1024 * 1024
        # Started now, the verification helper starts up while journals are recovered
        # and the new output is written; its reader maps the whole new output.
        helper = stack.enter_context(
            _verify.helper(plan.new_groups, timeout=timeout, memory_limit=memory_limit + needed)
        )
        quarantined = [_output.quarantine(q.path, q.reasons, directory) for q in plan.bad_shards]
        bad = {q.path for q in plan.bad_shards}
        journals = planned.journals
        for state in journals.states:
            if state.path not in bad:
                # Under the journal's lock (held by the stack): its shard, then no journal.
                _journal.recover_journal(state, journals.results[state.path])
        partial = out + _atomic.PARTIAL_SUFFIX
        needs_write = plan.new_groups > 0 or extra_attrs or not os.path.exists(out)
        if needs_write:
            _atomic.require_free_space(
                os.path.dirname(out),
                needed,
                waiting=f"{out} is unchanged; the shards wait in {directory}",
            )
            build = functools.partial(
                _build_verified,
                plan=plan,
                planned=planned,
                directory=directory,
                quarantined=quarantined,
                helper=helper,
                extra_attrs=extra_attrs,
                out=out,
                needed=needed,
            )
            try:
                if segmented:
                    added = _merge_segmented(out, index, build, plan, planned, extra_attrs)
                else:
                    added = build(out, partial, existing_groups=plan.output_groups, reserve=needed)
                    # Its errors name the file and say which step failed; after the rename
                    # only a directory fsync can fail, and then the new output is in place.
                    _atomic.commit_file(partial, out)
            finally:
                if helper is not None:
                    helper.close()  # its part is done: no child lives on through the commit
        else:
            added = {}
            _atomic.remove_quietly(partial)
        conflicted = {s for _, s in plan.conflicts} if on_conflict == "quarantine" else set()
        for shard in sorted(conflicted):
            keys = [k for k, s in plan.conflicts if s == shard]
            reasons = [
                f"{shard}:/{k}: CONFLICT group already in {out} with another digest" for k in keys
            ]
            quarantined.append(_output.quarantine(shard, reasons, directory))
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
        findings=plan.report.findings
        + tuple(_journal.partial_finding(p) for p in plan.stale_partials),
        recovered=plan.recovered,
        interrupted=plan.interrupted,
        lost=plan.lost,
        pending=plan.pending,
    )


def _build_verified(
    source: str,
    partial: str,
    *,
    existing_groups: int,
    reserve: int,
    plan: _plan.MergePlan,
    planned: _plan.Planned,
    directory: str,
    quarantined: list[Quarantined],
    helper: Sandbox | None,
    extra_attrs: Mapping[str, Any],
    out: str,
    needed: int,
) -> dict[str, tuple[int, str]]:
    """Build ``partial`` (a copy of ``source`` plus the new groups: the new output, or
    a new segment when ``source`` is "") and verify every added group from its bytes.

    On any failure ``partial`` is removed and the output is untouched; shards found
    altered are quarantined (:class:`_Altered`).
    """
    try:
        added = _output.write_partial(
            source,
            partial,
            shards=plan.shards,
            summaries=planned.summaries,
            new=planned.new,
            existing_groups=existing_groups,
            schema=planned.schema,
            root_attrs=extra_attrs,
            reserve=reserve,
        )
        problems = _verify.verify_copy(partial, added, helper=helper)
        altered = (
            _altered_sources(problems, plan, planned.summaries, planned.new) if problems else None
        )
        if altered:
            _atomic.remove_quietly(partial)
            quarantined += [
                _output.quarantine(shard, reasons, directory)
                for shard, reasons in sorted(altered.items())
            ]
            raise _Altered(plan, quarantined)
        if problems:
            raise UnreadableOutputError(
                f"{partial}: verification of the new output failed, old output kept: {problems[0]}"
            )
    except (H5GuardError, _Altered):
        _atomic.remove_quietly(partial)
        raise
    except Exception as err:
        _atomic.remove_quietly(partial)
        # libhdf5 reports a failed write as a RuntimeError (or an OSError whose text
        # names no file); ENOSPC is the full disk the estimate missed.
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
    finally:
        if helper is not None:
            helper.close()  # its part is done: no child lives on through the commit
    return added


def segment_threshold() -> int:
    """The size from which an ``"auto"`` merge segments a self-contained output."""
    return _env.whole_number(
        THRESHOLD_ENV, SEGMENT_THRESHOLD, valid=lambda n: n >= 0, expected="a number of bytes >= 0"
    )


def _segmented(layout: str, is_index: bool, size: int, out: str) -> bool:
    if is_index:
        if layout == "single":
            raise MergeSourceError(
                f"{out}: the output is segmented (an index of {out}.segments); "
                f"layout='single' would rewrite it whole: run h5guard compact {out} first"
            )
        return True
    wanted = layout == "segmented" or (
        layout == "auto" and size > 0 and size >= segment_threshold()
    )
    if not wanted:
        return False
    occupied = _occupied(out)
    if occupied is None:
        return True
    if layout == "segmented":
        raise MergeSourceError(occupied)
    log.warning("%s; merging into one file instead", occupied)
    return False


def _identity(path: str) -> str:
    """Which file ``path`` is (device and inode): what a first segmented merge's new
    segment records of the output it was made for (:data:`BASE_ATTR`)."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def _ours(path: str, identity: str) -> bool:
    """A file a first segmented merge of the output ``identity`` left: the output by a
    second name, or a new segment made for it."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return False
    if f"{st.st_dev}:{st.st_ino}" == identity:
        return True
    try:
        with _segments.open_segment(path) as f:
            return _reader.text_attr(f, BASE_ATTR) == identity
    except Exception:
        return False


def _occupied(out: str) -> str | None:
    """Why the segment directory of a new index at ``out`` cannot be used, or None.

    A first segmented merge adopts ``OUTPUT.segments`` only when it is absent or holds
    nothing but what an interrupted first segmented merge of this very output left
    (partials, second names of the output itself, and segments that record it as their
    base, all removed then): any other
    segment there may be another output's (one renamed away without its directory),
    and a merge removes the segments its index does not list.
    """
    segdir = os.path.join(os.path.dirname(out), _segments.dir_name_for(out))
    try:
        entries = os.listdir(segdir)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return f"{segdir}: expected the segment directory, found a file"
    mine = _identity(out) if os.path.exists(out) else None
    foreign = []
    for name in entries:
        path = os.path.join(segdir, name)
        if name.endswith(_atomic.PARTIAL_SUFFIX) and _segments.is_segment_name(
            name.removesuffix(_atomic.PARTIAL_SUFFIX)
        ):
            continue
        if _segments.is_segment_name(name) and mine is not None and _ours(path, mine):
            continue
        foreign.append(name)
    if not foreign:
        return None
    return (
        f"{segdir}: holds {len(foreign)} file(s) that no index of {out} lists (e.g. "
        f"{foreign[0]}): another output's segments, or an interrupted merge's; "
        "move the directory away (with its index) or remove it"
    )


def _index_size(out: str, index: _segments.Index | None) -> int:
    return os.path.getsize(out) if index is not None else 0


def _merge_segmented(
    out: str,
    index: _segments.Index | None,
    build: Callable[..., dict[str, tuple[int, str]]],
    plan: _plan.MergePlan,
    planned: _plan.Planned,
    extra_attrs: Mapping[str, Any],
) -> dict[str, tuple[int, str]]:
    """The new groups as a new segment, then a new index renamed over ``out``.

    Each step leaves the old output valid: segments are added beside it (unreferenced
    until the index that lists them is renamed over ``out``), and a crash leaves only
    unreferenced files, which the next merge removes.
    """
    # Two threads: the segment's commit beside the index's fsync (or its copy). What is
    # held for the merge (the spare) is let go after the pool has finished with it.
    with _background.Tasks("segment", workers=2) as pool, contextlib.ExitStack() as held:
        try:
            return _segmented_steps(out, index, build, plan, planned, extra_attrs, pool, held)
        except BaseException:
            pool.wait()  # the index copy may still be under way
            _atomic.remove_quietly(out + _atomic.PARTIAL_SUFFIX)
            raise


def _segmented_steps(
    out: str,
    index: _segments.Index | None,
    build: Callable[..., dict[str, tuple[int, str]]],
    plan: _plan.MergePlan,
    planned: _plan.Planned,
    extra_attrs: Mapping[str, Any],
    pool: _background.Tasks,
    held: contextlib.ExitStack,
) -> dict[str, tuple[int, str]]:
    durable: Future[None] | None = None
    dir_name = index.dir_name if index is not None else _segments.dir_name_for(out)
    segdir = os.path.join(os.path.dirname(out), dir_name)
    _require_own_dir(segdir)
    current = list(index.segments) if index is not None else []
    # What no index lists is an interrupted merge's (a new index checked it in
    # _occupied): the segment directory belongs to this output alone.
    clean_segment_dir(segdir, keep={s.name for s in current} | {_spare.SPARE_NAME})
    links: dict[str, list[str]] = {}
    carried: dict[str, Any] = {}
    if index is None and os.path.exists(out):
        # Segment 0 is the old output itself, by a second name (no byte is copied); the
        # output name keeps pointing at it until the index replaces it.
        name = _segments.new_segment_name(0)
        seg0 = os.path.join(segdir, name)
        os.link(out, seg0, follow_symlinks=False)
        _atomic.fsync_dir(segdir)
        with _segments.open_segment(seg0) as f:
            keys = _segments.segment_keys(f)
            digests = _segments.group_digests(f, keys)
            for attr in f.attrs:
                if not attr.startswith(names.RESERVED_PREFIX):
                    carried[attr] = _reader.read_attr(f, attr)
        current.append(
            _segments.Segment(
                name, os.path.getsize(seg0), len(keys), _segments.listing_digest(digests)
            )
        )
        links[name] = keys
    added: dict[str, tuple[int, str]] = {}
    partial = out + _atomic.PARTIAL_SUFFIX
    due = _fold.plan(current, _fold.fanout(), _fold.FOLD_MAX_BYTES) if index else None
    refolded = sum(s.groups for s in current[due.start :]) if due is not None else 0
    reserve = _index_size(out, index) + 256 * (plan.new_groups + refolded + 1) + 1024 * 1024
    copied: Future[None] | None = None
    spare = _spare.take(out, segdir, index, pool) if index is not None else None
    if spare is not None:
        held.enter_context(spare)  # released, and removed if the merge fails
    relinked: set[str] = set()  # segments whose keys the partial may link elsewhere
    if spare is not None:
        # The index before this one gets the links it lacks, in place (_merge/spare.py).
        partial = spare.path
        for seg in spare.missing:
            links[seg.name] = _segments.segment_keys_at(os.path.join(segdir, seg.name))
            relinked.add(seg.name)
    elif index is not None:
        # The copy of the old index (a few MB for 100,000 keys) is made and flushed to
        # disk while the new segment is built: the index's own fsync then writes only
        # the pages the new links change.
        copied = pool.submit(_copy_index, out, partial, reserve)
    folded_durable: Future[None] | None = None
    folded: _fold.Folded | None = None
    if index is not None and due is not None:
        # The last segments, copied into one (made durable while the merge goes on);
        # the new index lists it in their place and links their keys into it.
        folded = _fold.fold(
            index, due, number=_segments.next_number(current), schema=planned.schema
        )
        if folded is not None:
            folded_durable = pool.submit(_atomic.commit_file, folded.partial, folded.final)
            current[due.start :] = [folded.segment]
            for seg in folded.replaced:
                links.pop(seg.name, None)
                relinked.discard(seg.name)
            links[folded.segment.name] = folded.keys
            relinked.add(folded.segment.name)
    if plan.new_groups:
        name = _segments.new_segment_name(_segments.next_number(current))
        final = os.path.join(segdir, name)
        seg_partial = final + _atomic.PARTIAL_SUFFIX
        seg_reserve = int(sum(planned.summaries[s].size for s in plan.shards) * 1.25) + 1024 * 1024
        base = {BASE_ATTR: _identity(out)} if index is None and os.path.exists(out) else {}
        added = build(
            "",
            seg_partial,
            existing_groups=0,
            reserve=seg_reserve,
            extra_attrs={**extra_attrs, **base},
        )
        size = os.path.getsize(seg_partial)
        # The segment is made durable under its name (fsync, rename, directory fsync)
        # while the index is written: both must be on disk before the index's rename,
        # in no particular order between them.
        durable = pool.submit(_atomic.commit_file, seg_partial, final)
        listing = {k: d for k, (_, d) in added.items()}
        current.append(_segments.Segment(name, size, len(added), _segments.listing_digest(listing)))
        links[name] = sorted(added)
    total = plan.output_groups + len(added)
    attrs: dict[str, Any] = {
        **{k: write.normalize_value(k, v) for k, v in carried.items()},
        names.VERSION_ATTR: np.bytes_(__version__.encode()),
        _output.LAST_MERGE_ATTR: np.bytes_(
            _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").encode()
        ),
        **{k: write.normalize_value(k, v) for k, v in extra_attrs.items()},
    }
    if planned.schema is not None:
        attrs[names.SCHEMA_ATTR] = np.bytes_(planned.schema.to_json().encode())
    recorded = (
        _spare.fingerprint(out, _spare.common_prefix(index.segments, current))
        if index is not None
        else None
    )
    if recorded is not None:  # the old output, kept as the next merge's spare
        attrs[_segments.SPARE_ATTR] = np.bytes_(recorded.encode())
    try:
        # A copy of the old index (its links kept) or a new, empty one; reserved.
        if copied is not None:
            copied.result()
        elif spare is not None:
            spare.ready()
            _reserve_more(spare.fd, partial, 256 * (sum(len(k) for k in links.values()) + 1))
        else:
            reserve += 256 * sum(len(k) for k in links.values())
            _output.start_partial("", partial, reserve)
        _segments.write_index(
            partial,
            dir_name=dir_name,
            segments=current,
            links=links,
            groups=total,
            root_attrs=attrs,
            fresh=index is None,
            relinked=relinked,
        )
        # The index goes to disk while it is read back: the read-back is CPU (holding
        # the GIL), the fsync waits for the disk, and begins before the read-back does.
        synced = pool.begin(_atomic.fsync_opened, os.open(partial, os.O_RDONLY | os.O_CLOEXEC))
        # The new groups' links are read back one by one; the others written (those a
        # spare index lacked, or all the keys of a file turned into segment 0) are
        # counted: they were written by the same loop.
        expected = {k: current[-1].name for k in added}
        if folded is not None:  # every re-pointed key too
            expected.update(dict.fromkeys(folded.keys, folded.segment.name))
        problems = _segments.check_links(partial, expected, total=total)
        synced.result()
        if problems:
            raise UnreadableOutputError(
                f"{partial}: the new index did not read back, old output kept: {problems[0]}"
            )
        if durable is not None:
            durable.result()  # its OSError names the segment
        if folded_durable is not None:
            folded_durable.result()
        if index is not None:
            _spare.keep_old(out, segdir)
        _atomic.commit_file(partial, out, flushed=True)  # rename, directory fsync
    except H5GuardError:
        _atomic.remove_quietly(partial)
        raise
    except Exception as err:
        _atomic.remove_quietly(partial)
        if isinstance(err, OSError | RuntimeError):
            raise WriteError(
                partial, f"writing the new index failed, {out} is unchanged", err
            ) from err
        raise
    return added


def _reserve_more(fd: int, path: str, extra: int) -> None:
    """Room for ``extra`` more bytes at the end of the spare index, before libhdf5 writes."""
    size = os.fstat(fd).st_size
    _atomic.reserve(fd, size + extra + 1024 * 1024, path=path, waiting="the output is unchanged")


def _copy_index(out: str, partial: str, reserve: int) -> None:
    """``partial`` as a reserved copy of the index ``out``, already on disk."""
    _output.start_partial(out, partial, reserve)
    _atomic.fsync_path(partial)


def _require_own_dir(path: str) -> None:
    """The segment directory: a real directory (never a link), owned by this account.

    Its files become the output's contents: one planted by someone else would be too.
    """
    _atomic.require_real_dir(path, create=True)
    st = os.lstat(path)
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise WriteError(
            path,
            f"expected a segment directory owned by this account, found one of uid {st.st_uid}; "
            "remove it (h5guard creates it)",
            PermissionError(errno.EPERM, "owned by another account"),
        )


def clean_segment_dir(segdir: str, *, keep: Iterable[str]) -> list[str]:
    """Remove what a crashed merge or compaction left in ``segdir``, and the segments
    the merge before folded (:mod:`h5guard._merge.fold`): segments that no index lists,
    and partials; the spare index too unless ``keep`` names it. Only names
    h5guard gives are touched.

    Returns
    -------
    list of str
        The names removed.
    """
    removed: list[str] = []
    try:
        # Nearly every entry is kept (the listed segments): only the others are looked at.
        entries = set(os.listdir(segdir)).difference(keep)
    except FileNotFoundError:
        return removed
    for name in sorted(entries):
        base = name.removesuffix(_atomic.PARTIAL_SUFFIX)
        if _segments.is_segment_name(base) or base == _spare.SPARE_NAME:
            _atomic.remove_quietly(os.path.join(segdir, name))
            removed.append(name)
    if removed:
        log.info(
            "%s: removed %d file(s) no index lists (segments folded by the merge before, "
            "or an interrupted merge's leftovers)",
            segdir,
            len(removed),
        )
        _atomic.fsync_dir(segdir)
    return removed
