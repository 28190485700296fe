"""Validation: everything that can be wrong with a file, as findings, never as a crash.

Two layers. The quick layer (:mod:`h5guard._check.quick`) reads a few hundred bytes
with pure Python. The deep layer (:mod:`h5guard._check.deep`) opens the file with libhdf5 in
a sandboxed child, reads every dataset and attribute, verifies every digest and
applies the schema. The deep layer is skipped for files the quick layer already
condemned: there is nothing to learn, and they are the likeliest to hurt libhdf5.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from h5guard import _atomic, _journal
from h5guard._check.quick import quick_check
from h5guard._format import names as _names
from h5guard._format import seal as _seal
from h5guard._sandbox import DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT, Sandbox, SandboxResult
from h5guard.report import Code, FileKind, FileSummary, Finding, Report, Severity
from h5guard.schema import Schema

if TYPE_CHECKING:  # segments imports h5py, which a check of plain files never needs
    from h5guard._format.segments import Verdict

log = logging.getLogger(__name__)

_DEEP_TARGET = "h5guard._check.deep:inspect_file"
QUARANTINE_DIR = "quarantine"
SEAL_CHECK_LIMIT = 256 * 1024 * 1024  # bytes; bigger files' seals are not re-hashed
ProgressCallback = Callable[[int, int], None]


# Notes about what the check did not follow or read. They describe a readable file, so
# they pass by default; ``strict=True`` makes them warnings (exit 1) for those who want
# every byte of a file accounted for.
STRUCTURAL_NOTES = frozenset({Code.LINK_NOT_FOLLOWED, Code.EXTERNAL_DATA, Code.TRAILING_DATA})
_OWNED = (FileKind.SHARD, FileKind.OUTPUT)


def apply_policy(
    findings: Iterable[Finding], kinds: Mapping[str, FileKind], *, strict: bool = False
) -> list[Finding]:
    """The verdict policy, the same for every object at every depth (docs/check.md).

    Bytes past the recorded end of an h5guard file are a warning (h5guard never leaves
    any; a writer was killed after a flush, or the file was appended to); in a foreign
    file, libhdf5 ignores them: a note. ``strict`` turns structural notes into warnings.
    """
    out: list[Finding] = []
    for f in findings:
        severity = f.severity
        if f.code is Code.TRAILING_DATA and kinds.get(f.path) in _OWNED:
            severity = max(severity, Severity.WARNING)
        if strict and f.code in STRUCTURAL_NOTES:
            severity = max(severity, Severity.WARNING)
        out.append(f if severity is f.severity else replace(f, severity=severity))
    return out


def _sandbox_findings(path: str, result: SandboxResult) -> list[Finding]:
    if result.failure == "timeout":
        code, msg = (
            Code.TIMEOUT,
            (
                f"reading the file {result.detail}; libhdf5 can loop forever on damaged "
                "metadata (e.g. a variable-length string heap); a huge intact file may "
                "need a longer --timeout"
            ),
        )
    elif result.failure == "memory":
        code, msg = Code.MEMORY_LIMIT, f"reading the file {result.detail} (damaged sizes?)"
    elif result.failure == "crashed" and result.detail.startswith("the checker process sent"):
        code, msg = (
            Code.CHECKER_CRASHED,
            f"the reader's answer was unusable: {result.detail} (something in the reader "
            "process, a filter plugin or a damaged heap, wrote where only answers go)",
        )
    elif result.failure == "crashed":
        code, msg = Code.CHECKER_CRASHED, f"libhdf5 crashed while reading: {result.detail}"
    else:
        code, msg = Code.UNREADABLE, f"checker failed: {result.detail}"
    return [Finding(path, "/", code, Severity.ERROR, msg)]


def _quick_summary(path: str) -> FileSummary:
    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0
    return FileSummary(path, FileKind.UNREADABLE, size)


PathOrPaths = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


def path_list(paths: PathOrPaths) -> list[str]:
    """``paths`` as a list of ``str``; one path alone is a list of one.

    A ``str`` is itself an iterable of strings: taken as a sequence, ``"out.h5"`` would
    be checked as the files ``o``, ``u``, ``t``, ``.`` (this directory), ...
    """
    if isinstance(paths, str | os.PathLike):
        return [os.fspath(paths)]
    if isinstance(paths, bytes):
        raise TypeError(f"expected a path or a list of paths as str, got bytes {paths!r}")
    return [os.fspath(p) for p in paths]


def validate_many(
    paths: PathOrPaths,
    *,
    schema: Schema | None = None,
    deep: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    workers: int | None = None,
    sandbox: Sandbox | None = None,
    progress: ProgressCallback | None = None,
    trust_seals: bool = False,
    strict: bool = False,
    allow_external: bool = False,
    swmr: bool = False,
) -> Report:
    """Validate each file; one report for all of them. Never raises for a bad file.

    Parameters
    ----------
    paths
        The files to validate (no directories: see :func:`check`); one path alone
        stands for itself.
    schema
        Check every top-level group against it; None: against the schema each file
        embeds, if any.
    deep
        Read every file fully in the sandbox (digests, schema) after the quick layer;
        False: the quick layer alone (no libhdf5, no h5py).
    timeout, memory_limit
        Limits of the sandboxed read of one file, in seconds and bytes.
    workers
        Sandbox children to start (default: one per CPU, at most one per file).
    sandbox
        A running :class:`~h5guard.Sandbox` to use instead of starting one.
    progress
        Called as ``progress(done, total)`` after each file.
    trust_seals
        A shard whose seal matches its bytes is summarized from its index in-process
        instead of being read fully in the sandbox (what the merge does; see
        :mod:`h5guard._format.seal`). A sandbox is started only if some file needs the
        full read.
    strict
        Notes about what was not followed (links, external data, bytes past the end
        of file) become warnings; see :func:`apply_policy`.
    allow_external
        Also read raw data that a file keeps in other files (HDF5 external storage,
        sources of virtual datasets). False (the default): those files are named in
        an ``EXTERNAL_DATA`` note and not read: a file is read only where it is.
    swmr
        A file whose superblock says an SWMR writer holds it is read as an SWMR
        reader reads it (``swmr=True``), and the flag is a note, not an error.

    Returns
    -------
    Report
        Every finding and a :class:`~h5guard.FileSummary` per file.
    """
    return _validate(
        path_list(paths),
        regular=frozenset(),
        schema=schema,
        deep=deep,
        timeout=timeout,
        memory_limit=memory_limit,
        workers=workers,
        sandbox=sandbox,
        progress=progress,
        trust_seals=trust_seals,
        strict=strict,
        allow_external=allow_external,
        swmr=swmr,
    )


def _validate(
    paths: Sequence[str],
    *,
    regular: AbstractSet[str],
    schema: Schema | None,
    deep: bool,
    timeout: float,
    memory_limit: int,
    workers: int | None,
    sandbox: Sandbox | None,
    progress: ProgressCallback | None,
    trust_seals: bool,
    strict: bool,
    allow_external: bool,
    swmr: bool,
) -> Report:
    """:func:`validate_many`; ``regular``: the paths known to be regular files (listed
    from a directory), which the quick layer opens without a ``stat`` first."""
    findings: list[Finding] = []
    summaries: dict[str, FileSummary] = {}
    deep_paths: list[str] = []
    refused: set[str] = set()  # write flags set: libhdf5 refuses it as it is
    done = 0
    schema_json = schema.to_json() if schema is not None else None
    swmr_paths: set[str] = set()
    sizes: dict[str, int] = {}
    for path in paths:
        quick, info = quick_check(path, regular=path in regular)
        if swmr and info is not None and info.swmr_write:
            quick = [_as_swmr(f) for f in quick]
            info = replace(info, refused=False)
            swmr_paths.add(path)
        findings.extend(quick)
        if info is not None:
            sizes[path] = info.file_size
        # A flag libhdf5 refuses the file for does not stop the deep layer: it reads the
        # file as if the flags were clear, so that damage behind them is reported too.
        fatal = info is None or any(
            f.severity is Severity.ERROR and f.code is not Code.OPEN_FOR_WRITE for f in quick
        )
        if info is not None and info.refused:
            refused.add(path)
            fatal = fatal or not deep
        if fatal or not deep:
            size = info.file_size if info is not None else _quick_summary(path).size
            kind = FileKind.UNREADABLE if fatal else FileKind.UNOPENED
            summaries[path] = FileSummary(path, kind, size)
            done += 1
            if progress:
                progress(done, len(paths))
        elif trust_seals and (sealed := _sealed(path, schema_json)) is not None:
            summaries[path] = sealed
            done += 1
            if progress:
                progress(done, len(paths))
        else:
            deep_paths.append(path)
    if deep_paths:
        seals: dict[str, bool | None] = {}
        # The byte reader first, in this process: a sealed shard that passes it needs
        # no libhdf5 and no sandbox (h5guard._check.sealed); every other file is read
        # through libhdf5 in the sandbox, one call per file.
        eligible = [
            p
            for p in deep_paths
            if p not in refused
            and p not in swmr_paths
            and sizes.get(p, SEAL_CHECK_LIMIT + 1) <= SEAL_CHECK_LIMIT
        ]
        if eligible:
            from h5guard._check.sealed import inspect_sealed  # imports h5py: not for --quick

            for path, (seal, answer) in zip(
                eligible, inspect_sealed(eligible, schema_json), strict=True
            ):
                seals[path] = seal
                if answer is not None:
                    findings.extend(answer[0])
                    summaries[path] = answer[1]
                    done += 1
                    if progress:
                        progress(done, len(paths))
        rest = [p for p in deep_paths if p not in summaries]
        if rest:
            _read_in_sandbox(
                rest,
                seals,
                findings,
                summaries,
                sandbox=sandbox,
                workers=workers,
                timeout=timeout,
                memory_limit=memory_limit,
                calls=[
                    (p, schema_json, p in refused, allow_external, p in swmr_paths) for p in rest
                ],
                progress=lambda: progress(len(summaries), len(paths)) if progress else None,
            )
        findings.extend(_seal_finding(p) for p in deep_paths if seals.get(p) is False)
    kinds = {p: s.kind for p, s in summaries.items()}
    findings = apply_policy(findings, kinds, strict=strict)
    return Report(tuple(sorted(findings)), tuple(summaries[p] for p in paths))


def _read_in_sandbox(
    paths: Sequence[str],
    seals: dict[str, bool | None],
    findings: list[Finding],
    summaries: dict[str, FileSummary],
    *,
    sandbox: Sandbox | None,
    workers: int | None,
    timeout: float,
    memory_limit: int,
    calls: list[tuple[str, str | None, bool, bool, bool]],
    progress: Callable[[], None],
) -> None:
    """Read each of ``paths`` fully through libhdf5 in the sandbox, adding to the results."""
    # The seals not hashed yet are hashed here, in a thread, while the children read the
    # files: the thread runs while this one waits on the children's pipes. Past
    # SEAL_CHECK_LIMIT the hash would compete with the child's own digesting for little
    # news: the digests and checksums already vouch for the content.
    unhashed = [p for p in paths if p not in seals and _size(p) <= SEAL_CHECK_LIMIT]
    hashing = threading.Thread(
        target=lambda: seals.update((p, _seal.check_seal(p)) for p in unhashed),
        name="h5guard-seals",
        daemon=True,
    )
    hashing.start()
    owned = sandbox is None
    box = sandbox or Sandbox(
        workers=min(workers or os.cpu_count() or 1, len(paths)),
        timeout=timeout,
        memory_limit=memory_limit,
    )
    try:
        for index, result in box.map(_DEEP_TARGET, calls):
            path = paths[index]
            if result.ok:
                file_findings, summary = result.value
                findings.extend(file_findings)
                summaries[path] = summary
            else:
                findings.extend(_sandbox_findings(path, result))
                summaries[path] = _quick_summary(path)
            progress()
    finally:
        if owned:
            box.close()
        hashing.join()


def _as_swmr(finding: Finding) -> Finding:
    """The open-for-write finding of a file an SWMR writer holds, read with ``swmr``."""
    if finding.code is not Code.OPEN_FOR_WRITE:
        return finding
    return replace(
        finding,
        severity=Severity.INFO,
        message=(
            "superblock says an SWMR writer holds the file: read as an SWMR reader sees it "
            "now (what the writer adds later is not covered)"
        ),
    )


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _seal_finding(path: str) -> Finding:
    return Finding(
        path,
        "/",
        Code.SEAL_MISMATCH,
        Severity.INFO,
        "the bytes changed after the shard was committed (its seal does not match);"
        " every group was read and checked instead",
    )


def _sealed(path: str, schema_json: str | None) -> FileSummary | None:
    """The summary of a shard whose seal matches, or None (then read it fully)."""
    try:
        # The seal is hashed through a bounded buffer; the map below is for the byte
        # reader, which touches only the root group's headers, not every page.
        if _seal.check_seal(path) is not True:
            return None
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            # Imported here: `check --quick` never gets this far, and must not pay for them.
            from h5guard._format import bytes as bytes_reader

            try:
                root_attrs: dict[str, bytes] | None = bytes_reader.root_attribute_values(buf)
            except (bytes_reader.Unsupported, bytes_reader.Malformed):
                root_attrs = None  # e.g. attributes in dense storage: libhdf5 reads them
        from h5guard._check.own import sealed_summary  # imports h5py: only when a seal matched

        return sealed_summary(path, schema_json, root_attrs)
    except Exception as err:  # readable only in theory: let the sandbox say what is wrong
        log.debug("%s: sealed summary failed (%s); reading it fully", path, err)
        return None


def validate(
    path: str | os.PathLike[str],
    *,
    schema: Schema | None = None,
    deep: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    sandbox: Sandbox | None = None,
    strict: bool = False,
    allow_external: bool = False,
    swmr: bool = False,
) -> Report:
    """Validate one file: quick layer, then (``deep=True``) the sandboxed full read.

    Never raises for a bad file; every problem is a :class:`~h5guard.Finding`.

    Parameters
    ----------
    path
        The file.
    schema, deep, timeout, memory_limit, sandbox, strict, allow_external, swmr
        As for :func:`validate_many`.

    Returns
    -------
    Report
        The file's findings and its :class:`~h5guard.FileSummary`.
    """
    return validate_many(
        [os.fspath(path)],
        schema=schema,
        deep=deep,
        timeout=timeout,
        memory_limit=memory_limit,
        workers=1,
        sandbox=sandbox,
        strict=strict,
        allow_external=allow_external,
        swmr=swmr,
    )


def expand_paths(paths: PathOrPaths) -> tuple[list[str], list[Finding]]:
    """Files to check for each PATH argument, and findings about leftovers.

    A directory stands for its ``*.h5`` files (not recursing, and not into its
    quarantine); its ``*.partial`` files are reported, never read, and its shard journals
    are reported with what they hold (a partial whose journal exists is a commit in
    progress or cut short: the journal speaks for it).

    Parameters
    ----------
    paths
        Files and directories, as given on the command line.

    Returns
    -------
    tuple[list[str], list[Finding]]
        The files to validate, and the findings about partials, journals and
        directories with nothing to check.
    """
    files, findings, _ = _expand(path_list(paths))
    return files, findings


def _expand(
    paths: Iterable[str | os.PathLike[str]],
) -> tuple[list[str], list[Finding], set[str]]:
    """:func:`expand_paths`, and the files whose directory entry says they are regular.

    One ``os.scandir`` per directory: its entries carry their type, so listing a
    directory costs no ``stat`` per file.
    """
    files: list[str] = []
    findings: list[Finding] = []
    regular: set[str] = set()
    for raw in paths:
        path = os.fspath(raw)
        try:
            st = os.stat(path)
        except OSError:
            files.append(path)  # the quick layer says what is wrong with it
            continue
        if not stat.S_ISDIR(st.st_mode):
            # One stat per named file: the quick layer need not stat it again.
            files.append(path)
            if stat.S_ISREG(st.st_mode):
                regular.add(path)
            continue
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        # The paths as pathlib joins them ("./d" -> "d/x.h5", "." -> "x.h5").
        base = str(Path(path))
        prefix = "" if base == "." else base if base.endswith(os.sep) else base + os.sep
        found: list[str] = []
        for entry in entries:
            name = entry.name
            # pathlib's suffix: ".h5" alone is a hidden file's name, not a suffix
            if name.endswith(".h5") and len(name) > 3 and entry.is_file():
                full = prefix + name
                found.append(full)
                if entry.is_file(follow_symlinks=False):
                    regular.add(full)
        files.extend(found)
        names = {e.name for e in entries}
        journals = [n for n in names if n.endswith(_journal.JOURNAL_SUFFIX)]
        partials = [
            n
            for n in names
            if n.endswith(_atomic.PARTIAL_SUFFIX) and _journal.journal_beside(n) not in names
        ]
        findings.extend(_journal.journal_finding(prefix + n) for n in sorted(journals))
        findings.extend(_journal.partial_finding(prefix + n) for n in sorted(partials))
        if not found and not partials and not journals:
            findings.append(_nothing_to_check(path))
    return files, findings, regular


# From this many files of one directory, listing it once is cheaper than a stat each.
_SCAN_FROM = 64


_INDEX_TARGET = "h5guard._format.segments:inspect_if_index"


def _index_verdicts(
    candidates: Sequence[str], box: Sandbox, findings: list[Finding]
) -> tuple[dict[str, Verdict | None], set[str]]:
    """What the sandbox's children find of each of ``candidates``
    (``segments.inspect_if_index``: a verdict, or None for no index), and the files a
    child failed on (libhdf5 crashed or hung on a damaged index), each of those a
    finding."""
    verdicts: dict[str, Verdict | None] = {}
    failed: set[str] = set()
    for i, result in box.map(_INDEX_TARGET, [(p,) for p in candidates]):
        if result.ok:
            verdicts[candidates[i]] = result.value
        else:
            failed.add(candidates[i])
            findings.extend(_sandbox_findings(candidates[i], result))
    return verdicts, failed


def _segments_hint(finding: Finding) -> Finding:
    """An unreadable root of a file with ``FILE.segments`` beside it, with what to do
    if it was a segmented output's index: its results are all in the segments."""
    from h5guard._format.segments import salvage_recipe  # imported already: an index's

    if finding.code is not Code.UNREADABLE or finding.obj != "/":
        return finding
    segdir = finding.path + _names.SEGMENT_DIR_SUFFIX
    return replace(
        finding,
        message=f"{finding.message}; {segdir} is beside it: if this was a segmented "
        f"output's index, its results are in the segments: {salvage_recipe(segdir)}",
    )


def _beside_segment_dirs(files: Sequence[str]) -> list[str]:
    """The files with a directory ``FILE.segments`` beside them (indexes, likely).

    Many files of one directory cost one ``os.scandir`` of it, not a ``stat`` each.
    """
    by_dir: dict[str, dict[str, str]] = {}
    for f in files:
        head, name = os.path.split(f)
        by_dir.setdefault(head, {})[name + _names.SEGMENT_DIR_SUFFIX] = f
    found: set[str] = set()
    for directory, wanted in by_dir.items():
        if len(wanted) < _SCAN_FROM:
            found.update(f for d, f in wanted.items() if os.path.isdir(os.path.join(directory, d)))
            continue
        try:
            with os.scandir(directory or ".") as it:
                found.update(wanted[e.name] for e in it if e.name in wanted and e.is_dir())
        except OSError:
            continue
    return [f for f in files if f in found]


def _nothing_to_check(directory: str) -> Finding:
    quarantine = Path(directory) / QUARANTINE_DIR
    held = (
        sum(1 for p in quarantine.iterdir() if p.is_file() and p.suffix == ".h5")
        if quarantine.is_dir()
        else 0
    )
    where = f" ({held} quarantined file(s) in {QUARANTINE_DIR}/, not checked)" if held else ""
    return Finding(
        directory,
        "/",
        Code.NOTHING_TO_CHECK,
        Severity.WARNING,
        f"directory holds no *.h5 file to check{where}",
    )


def check(
    paths: PathOrPaths,
    *,
    schema: Schema | None = None,
    expect: Iterable[str] | None = None,
    deep: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    sandbox: Sandbox | None = None,
    strict: bool = False,
    allow_external: bool = False,
    swmr: bool = False,
) -> Report:
    """What ``h5guard check`` does: validate files and directories, then expected keys.

    A directory argument that holds no file to check is a ``NOTHING_TO_CHECK``
    warning: an empty result must not pass silently.

    Parameters
    ----------
    paths
        Files and directories (a directory stands for its ``*.h5`` files; see
        :func:`expand_paths`); one path alone stands for itself.
    schema
        Check every top-level group against it, nested groups included; None: against
        the schema each file embeds, if any.
    expect
        Keys that must be present: each one that no valid group of any checked file
        has is an ``EXPECTED_MISSING`` finding.
    deep, timeout, memory_limit, workers, progress, sandbox, strict, allow_external, swmr
        As for :func:`validate_many`.

    Returns
    -------
    Report
        ``report.ok`` is whether everything passed; ``report.exit_code`` what the CLI
        exits with.

    Examples
    --------
    >>> report = h5guard.check(["results/"], expect=[f"cfg{i}" for i in range(10)])  # doctest: +SKIP
    >>> print(report.render_text())  # doctest: +SKIP
    """
    paths = path_list(paths)
    files, extra, regular = _expand(paths)
    indexes: list[Verdict] = []
    verdicts: Mapping[str, Verdict | None] = {}
    failed: AbstractSet[str] = set()
    with contextlib.ExitStack() as owned:
        candidates = _beside_segment_dirs(files)
        if candidates:  # a segmented output's index, likely
            from h5guard._format import segments  # imports h5py: only for an index

            if sandbox is None:  # one for the indexes and the files after them
                sandbox = owned.enter_context(
                    Sandbox(workers=workers, timeout=timeout, memory_limit=memory_limit)
                )
            verdicts, failed = _index_verdicts(candidates, sandbox, extra)
            files = [f for f in files if f not in failed]
            files, found, indexes = segments.expand_indexes(files, verdicts)
            extra += found
        report = _validate(
            files,
            regular=regular,
            trust_seals=False,
            schema=schema,
            deep=deep,
            timeout=timeout,
            memory_limit=memory_limit,
            workers=workers,
            progress=progress,
            sandbox=sandbox,
            strict=strict,
            allow_external=allow_external,
            swmr=swmr,
        )
    findings = list(report.findings) + extra
    not_indexes = {f for f in candidates if verdicts.get(f) is None and f not in failed}
    if not_indexes:
        findings = [_segments_hint(x) if x.path in not_indexes else x for x in findings]
    if indexes:
        found, summaries = segments.findings_after(indexes, report)
        findings += found
        report = Report(report.findings, tuple(summaries))
    if expect is not None:
        present: set[str] = set()
        for summary in report.files:
            present.update(summary.groups)
        where = os.fspath(paths[0]) if len(paths) == 1 else "(all paths)"
        for key in sorted(set(expect) - present):
            findings.append(
                Finding(
                    where,
                    f"/{key}",
                    Code.EXPECTED_MISSING,
                    Severity.ERROR,
                    "expected group is missing or invalid",
                )
            )
    return Report(tuple(sorted(findings)), report.files)
