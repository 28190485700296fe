"""``h5guard``: the command line. Thin: parse, call the library, render, exit code.

Exit codes: 0 clean; 1 the command ran and found (or left) problems; 2 it could not
run (bad usage, missing path, held lock, full disk, unreadable output).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from h5guard import _version
from h5guard._check.api import check
from h5guard._sandbox import DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT
from h5guard.errors import H5GuardError
from h5guard.report import Report, Severity
from h5guard.schema import Schema

# merge and salvage (and with them h5py) are imported by their commands only:
# ``h5guard check --quick`` must not pay for h5py (it reads superblocks in pure Python).

if TYPE_CHECKING:
    from h5guard._merge.plan import MergePlan

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2
# h5guard._merge.plan.ON_CONFLICT, spelled here so that building the parser imports no h5py
# (tests/cli/test_merge_cli.py checks that the two agree).
ON_CONFLICT = ("quarantine", "keep-existing")
# h5guard._merge.run.LAYOUTS, spelled here for the same reason (same test).
LAYOUTS = ("auto", "single", "segmented")


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _megabytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole megabytes, got {text!r}") from None
    if value < 16:
        raise argparse.ArgumentTypeError(f"expected at least 16 MB, got {text!r}")
    return value * 1024 * 1024


def _add_sandbox_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds allowed to read one file before it is reported as hanging (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--memory-limit",
        type=_megabytes,
        default=DEFAULT_MEMORY_LIMIT,
        metavar="MB",
        help=f"memory the reader of one file may use (default {DEFAULT_MEMORY_LIMIT // 2**20})",
    )
    p.add_argument(
        "--schema",
        metavar="FILE",
        help="JSON schema every group must satisfy (default: the one embedded in each file)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar, no summary on stderr"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what is being done on stderr")


def _add_allow_external(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-external",
        action="store_true",
        help=(
            "also read data a file keeps in other files (HDF5 external storage, virtual "
            "datasets' sources); by default they are named, never read"
        ),
    )


def _add_on_conflict(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--on-conflict",
        choices=ON_CONFLICT,
        default="quarantine",
        help=(
            "a key already merged with another digest: move its shard to quarantine/ "
            "(default), or keep the merged version and drop the other"
        ),
    )


def _add_liveness(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gone",
        nargs="+",
        action="extend",
        default=[],
        metavar="HOST_OR_PID",
        help=(
            "writers that are gone although this machine cannot see it (another node's): "
            "HOST, HOST:PID or PID; their batches are recovered (see docs/guarantee.md)"
        ),
    )
    p.add_argument(
        "--lease",
        type=_positive,
        default=None,
        metavar="S",
        help=(
            "a journal of another machine's writer untouched for S seconds counts as gone; "
            "only lengthens each writer's own lease (default 300, $H5GUARD_LEASE)"
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="h5guard",
        description="Write, check and merge HDF5 result files from parallel runs without losing results.",
        epilog="Exit codes: 0 clean, 1 problems found, 2 could not run.",
    )
    parser.add_argument("--version", action="version", version=f"h5guard {_version.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "check",
        help="validate HDF5 files and directories of shards",
        description=(
            "Validate each file: signature, truncation, 'writer did not close' flag, then a "
            "full read in a sandboxed process (time and memory limits), digests and schema. "
            "A directory stands for its *.h5 files; *.partial leftovers are reported, and a "
            "directory with nothing to check is a warning. A file that libhdf5 reads "
            "completely passes; notes say what was not followed (docs/check.md)."
        ),
        epilog="Prints 'path:/object: CODE message' per finding. Exit codes: 0 clean, 1 problems found, 2 could not run.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="file or directory to check")
    p.add_argument(
        "--expect",
        metavar="KEYS_FILE",
        help="file with one expected group key per line; each missing key is a finding",
    )
    p.add_argument(
        "--quick", action="store_true", help="only the quick layer (no libhdf5, no digests)"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help=(
            "fail on structural notes too: links not followed (soft, external, "
            "user-defined), data stored in other files, bytes past the end of file"
        ),
    )
    _add_allow_external(p)
    p.add_argument(
        "--swmr",
        action="store_true",
        help=(
            "a file a live SWMR writer holds is read as an SWMR reader sees it "
            "(its open-for-write flag is then a note, not an error)"
        ),
    )
    _add_sandbox_options(p)
    p.set_defaults(run=_cmd_check)

    p = sub.add_parser(
        "merge",
        help="merge a directory of shards into one output, crash-safely",
        description=(
            "Validate every shard (a sealed shard by hashing it, any other by a full read in "
            "a sandboxed process), quarantine bad ones, and atomically replace OUTPUT with a "
            "copy that holds the new groups, each verified against its digest. Holds "
            "OUTPUT.lock for the whole merge."
        ),
        epilog=(
            "Journals of writers that are gone (a pool that never closed its writers, a killed "
            "worker) are recovered into shards first. Readable HDF5 files that h5guard did not "
            "write are refused (convert them with 'h5guard salvage'). "
            "Exit codes: 0 merged cleanly, 1 merged but something was quarantined, conflicted or is "
            "known to be lost, 2 could not run (output untouched)."
        ),
    )
    p.add_argument("shard_dir", metavar="TEMP_DIR", help="directory of committed shards")
    p.add_argument(
        "-o", "--output", help="output file (default: the one recorded in TEMP_DIR by the run)"
    )
    p.add_argument(
        "--keep-shards", action="store_true", help="keep merged shards instead of deleting them"
    )
    p.add_argument(
        "--lock-timeout",
        type=_non_negative,
        default=_LockTimeoutDefault(),
        metavar="S",
        help="seconds to wait for another merge on the same output (default %(default)s)",
    )
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="auto",
        help=(
            "auto: one file below 64 MiB ($H5GUARD_SEGMENT_THRESHOLD), segments and an index "
            "above; single: one file whatever its size; segmented: segments even when small "
            "(default %(default)s; docs/merge.md)"
        ),
    )
    _add_on_conflict(p)
    _add_liveness(p)
    _add_sandbox_options(p)
    p.set_defaults(run=_cmd_merge)

    p = sub.add_parser(
        "compact",
        help="rewrite a segmented OUTPUT as one self-contained file",
        description=(
            "Copy every group of a segmented output's segments into one new file, verify "
            "every copied group's digest from its bytes, rename it over OUTPUT (the old "
            "index or the new file at every instant), then remove the segments. A "
            "self-contained OUTPUT is left as it is."
        ),
        epilog="Exit codes: 0 compacted (or already one file), 2 could not run.",
    )
    p.add_argument("output", metavar="OUTPUT", help="the merged output")
    p.add_argument(
        "--lock-timeout",
        type=_non_negative,
        default=_LockTimeoutDefault(),
        metavar="S",
        help="seconds to wait for a merge into OUTPUT (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is being done on stderr")
    p.set_defaults(run=_cmd_compact)

    p = sub.add_parser(
        "status",
        help="show what a merge of TEMP_DIR would do, changing nothing",
        description=(
            "Run the merge's own planning on TEMP_DIR: what it would add, recover, quarantine "
            "and report lost; modifies nothing."
        ),
        epilog="Exit codes: 0 everything would merge cleanly, 1 something would be quarantined, conflict or is lost, 2 could not run.",
    )
    p.add_argument("shard_dir", metavar="TEMP_DIR", help="directory of committed shards")
    p.add_argument(
        "-o",
        "--output",
        help="output file (default: the one recorded in TEMP_DIR; without one, plan a first merge)",
    )
    _add_on_conflict(p)
    _add_liveness(p)
    _add_sandbox_options(p)
    p.set_defaults(run=_cmd_status)

    p = sub.add_parser(
        "salvage",
        help="recover every readable group of files left by a crashed run",
        description=(
            "Copy each file, clear a killed writer's 'open for write' flags on the copy, and, in the "
            "sandbox, copy every group that reads completely (and passes the schema and its digest, "
            "where present) into committed h5guard shards in OUT_DIR. Inputs are never modified; "
            "'h5guard merge OUT_DIR -o merged.h5' takes the result."
        ),
        epilog="Exit codes: 0 everything recovered, 1 something was lost, 2 could not run.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="file or directory of *.h5 files")
    p.add_argument(
        "-o", "--out-dir", required=True, metavar="OUT_DIR", help="where recovered shards go"
    )
    p.add_argument(
        "--ignore",
        action="append",
        metavar="NAME",
        help="top-level object to skip (repeatable; default: init, as in the original pipeline)",
    )
    _add_allow_external(p)
    _add_sandbox_options(p)
    p.set_defaults(run=_cmd_salvage)
    return parser


class _LockTimeoutDefault:
    """merge's default lock timeout, looked up only when the merge parser needs it."""

    def value(self) -> float:
        from h5guard._merge.run import DEFAULT_LOCK_TIMEOUT

        return DEFAULT_LOCK_TIMEOUT

    def __str__(self) -> str:
        return f"{self.value():g}"


def _load_schema(args: argparse.Namespace) -> Schema | None:
    return Schema.load(args.schema) if getattr(args, "schema", None) else None


@contextlib.contextmanager
def _progress(args: argparse.Namespace, what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A tqdm bar on a terminal (none with -q, --json or when stderr is not a TTY)."""
    if args.quiet or args.json or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=what, unit="file", file=sys.stderr, leave=False)
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def _cmd_check(args: argparse.Namespace) -> int:
    for path in args.paths:
        if not os.path.exists(path):
            raise UsageError(f"h5guard check: {path}: no such file or directory")
        if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK):
            raise UsageError(f"h5guard check: {path}: directory is not readable")
    if args.quick and args.expect:
        raise UsageError(
            "h5guard check: --expect needs the deep layer to list groups; drop --quick"
        )
    expect = None
    if args.expect:
        try:
            with open(args.expect, encoding="utf-8") as fh:
                expect = [line.strip() for line in fh if line.strip() and not line.startswith("#")]
        except OSError as err:
            raise UsageError(
                f"h5guard check: --expect {args.expect}: {err.strerror or err}"
            ) from err
    schema = _load_schema(args)
    with _progress(args, "checking") as update:
        report = check(
            args.paths,
            schema=schema,
            expect=expect,
            deep=not args.quick,
            timeout=args.timeout,
            memory_limit=args.memory_limit,
            progress=update,
            strict=args.strict,
            allow_external=args.allow_external,
            swmr=args.swmr,
        )
    _render_report(report, args)
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _render_report(report: Report, args: argparse.Namespace) -> None:
    if args.json:
        print(report.render_json())
        return
    text = report.render_text()
    if text:
        print(text)
    if not args.quiet:
        print(report.render_summary(), file=sys.stderr)


def _cmd_merge(args: argparse.Namespace) -> int:
    from h5guard._merge.run import merge

    schema = _load_schema(args)
    if isinstance(args.lock_timeout, _LockTimeoutDefault):
        args.lock_timeout = args.lock_timeout.value()
    with _progress(args, "validating shards") as update:
        result = merge(
            args.shard_dir,
            args.output,
            schema=schema,
            keep_shards=args.keep_shards,
            lock_timeout=args.lock_timeout,
            timeout=args.timeout,
            memory_limit=args.memory_limit,
            progress=update,
            on_conflict=args.on_conflict,
            gone_writers=_gone(args),
            lease=args.lease,
            layout=args.layout,
        )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        for finding in sorted(result.findings):
            if finding.severity >= Severity.WARNING:
                print(finding)
        if not args.quiet:
            print(result.render_text(), file=sys.stderr)
    return result.exit_code


def _cmd_compact(args: argparse.Namespace) -> int:
    from h5guard._merge.compact import compact

    if isinstance(args.lock_timeout, _LockTimeoutDefault):
        args.lock_timeout = args.lock_timeout.value()
    groups = compact(args.output, lock_timeout=args.lock_timeout)
    if args.json:
        print(json.dumps({"output": os.path.abspath(args.output), "groups": groups}))
    elif not args.quiet:
        print(f"{args.output}: one self-contained file, {groups} group(s)", file=sys.stderr)
    return 0


def _gone(args: argparse.Namespace) -> Any:
    from h5guard._liveness import GoneWriters

    try:
        return GoneWriters.parse(args.gone, source="--gone")
    except ValueError as err:
        raise UsageError(f"h5guard {args.command}: --gone: {err}") from None


def _cmd_status(args: argparse.Namespace) -> int:
    from h5guard._merge.plan import plan_merge

    schema = _load_schema(args)
    with _progress(args, "validating shards") as update:
        plan = plan_merge(
            args.shard_dir,
            args.output,
            schema=schema,
            timeout=args.timeout,
            memory_limit=args.memory_limit,
            progress=update,
            on_conflict=args.on_conflict,
            gone_writers=_gone(args),
            lease=args.lease,
        )
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2, sort_keys=True))
    else:
        print(_render_plan(plan))
    return plan.exit_code


def _render_plan(plan: MergePlan) -> str:
    from h5guard._merge.plan import pending_lines

    shard_groups = plan.new_groups + plan.duplicates + len(plan.conflicts)
    output = (
        f"{plan.output} ({plan.output_groups} group(s))"
        if plan.output
        else "none recorded (planned as a first merge; name one with -o)"
    )
    recovered = sum(n for _, n in plan.recovered)
    lines = [
        f"output:           {output}",
        f"valid shards:     {len(plan.shards)} holding {shard_groups} group(s)",
        f"would recover:    {recovered} result(s) from {len(plan.recovered)} journal(s) of writers that are gone",
        f"would add:        {plan.new_groups} new group(s), {plan.duplicates} duplicate(s)",
        f"conflicts:        {len(plan.conflicts)} (on conflict: {plan.on_conflict})",
        f"would quarantine: {len(plan.quarantines)} file(s)",
    ]
    lines += [f"  {q.reasons[0] if q.reasons else q.path}" for q in plan.bad_shards]
    lines += [f"  {k!r} conflicts in {s}" for k, s in plan.conflicts]
    lines.append(
        f"pending:          {plan.pending_results} result(s) in {len(plan.pending)} journal(s) "
        "of writers not shown gone"
    )
    lines += [f"  {line}" for line in pending_lines(plan.pending)]
    lines.append(f"still being written: {len(plan.live_partials)}")
    lines += [f"interrupted add(): {k!r} in {j}" for j, k in plan.interrupted]
    lines.append(f"lost:             {len(plan.lost)}")
    lines += [f"  LOST: {why}" for why in plan.lost]
    return "\n".join(lines)


def _cmd_salvage(args: argparse.Namespace) -> int:
    from h5guard._salvage.api import salvage

    for path in args.paths:
        if not os.path.exists(path):
            raise UsageError(f"h5guard salvage: {path}: no such file or directory")
    schema = _load_schema(args)
    with _progress(args, "salvaging") as update:
        result = salvage(
            args.paths,
            args.out_dir,
            schema=schema,
            ignore=tuple(args.ignore) if args.ignore else ("init",),
            timeout=args.timeout,
            memory_limit=args.memory_limit,
            progress=update,
            allow_external=args.allow_external,
        )
    print(result.render_json() if args.json else result.render_text())
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_ERROR
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.ERROR,
            format="h5guard: %(levelname)s: %(message)s",
            stream=sys.stderr,
        )
        code: int = args.run(args)
        return code
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except H5GuardError as err:
        print(f"h5guard: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        print(f"h5guard: error: {where}{err.strerror or err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("h5guard: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
