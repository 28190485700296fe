"""``layout-sweep``: run, resume and inspect a parallel PyWake layout-optimization sweep.

Exit codes: 0 every planned config is done and the output checks clean; 1 the run
finished with failed or missing configs (or the check found problems); 2 it could
not run (bad spec or option, output not writable, temp dir in use).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from h5guard import H5GuardError
from optimizer.config import DEMO_SPEC, SpecError, load_spec, parse_range
from optimizer.engines import EngineError
from optimizer.report import MissingExtraError
from optimizer.summary import NotASweepOutputError
from optimizer.sweep import (
    ProgressHook,
    RunResult,
    SweepError,
    default_temp_dir,
    read_state,
    run_sweep,
)

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2
DEFAULT_OUTPUT = "layouts.h5"


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _int_list(text: str) -> list[int]:
    try:
        return parse_range(text, "value")
    except SpecError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("value: ")) from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like '0,25,50', got {text!r}") from None


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of workers, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 worker, got {value}")
    return value


def _version_line() -> str:
    """``layout-sweep VERSION (h5guard VERSION)``: the name and version first, as h5guard's."""
    from importlib import metadata

    from h5guard import __version__ as h5guard_version

    try:
        own = metadata.version("layout-sweep")
    except metadata.PackageNotFoundError:  # run from a checkout: released together
        own = h5guard_version
    return f"layout-sweep {own} (h5guard {h5guard_version})"


# What each subcommand imports from the wind stack (checked before anything runs, so a
# missing dependency is one line, not a sweep whose every config fails in the workers).
_NEEDS = {"run": ("py_wake", "scipy"), "report": ("py_wake",), "show": ("py_wake",)}
INSTALL_SWEEP = "pip install ./sweep (from a checkout of the h5guard repository)"


def _require_sweep_deps(command: str) -> None:
    import importlib.util

    missing = []
    for module in _NEEDS.get(command, ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module.replace("_", "-"))
    if missing:
        raise UsageError(
            f"layout-sweep {command} needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed; install the sweep with: "
            f"{INSTALL_SWEEP}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="layout-sweep",
        description="Parallel PyWake wind-farm layout optimization sweeps that never lose a result.",
        epilog="Exit codes: 0 all done and clean, 1 failed or missing configs, 2 could not run.",
    )
    parser.add_argument("--version", action="version", version=_version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "run",
        help="run or resume a sweep (no SPEC: a built-in demo of ~1 minute)",
        description=(
            "Optimize every configuration of SPEC (a TOML file) in parallel, each worker writing "
            "crash-safe shards; then merge them into the output and check it. Re-running the "
            "same command after a crash computes only what is missing."
        ),
    )
    p.add_argument(
        "spec", nargs="?", metavar="SPEC", help="sweep spec (TOML); default: the built-in demo"
    )
    p.add_argument(
        "-o", "--output", default=DEFAULT_OUTPUT, help=f"output file (default {DEFAULT_OUTPUT})"
    )
    p.add_argument(
        "--workers",
        type=_workers,
        default=os.cpu_count() or 1,
        metavar="N",
        help="worker processes (default: one per core)",
    )
    p.add_argument(
        "--temp-dir", metavar="DIR", help="where workers write shards (default OUTPUT_temp)"
    )
    p.add_argument("--retry-failed", action="store_true", help="compute failed configs again")
    p.add_argument(
        "--engine",
        choices=["local", "dask"],
        default="local",
        help="where workers run (default local)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="with --engine dask: an existing scheduler, e.g. tcp://host:8786",
    )
    axes = p.add_argument_group("sweep axes (override the spec or the demo in every block)")
    axes.add_argument(
        "--site",
        dest="site",
        metavar="NAME",
        help="iea37, hornsrev1, iea37-cs3, iea37-cs4, a [sites.NAME] of the spec, or "
        "package.module:function",
    )
    axes.add_argument("--n-turbines", type=_int_list, metavar="LIST", help="e.g. 16 or 16,36")
    axes.add_argument("--grid-size", type=_int_list, metavar="LIST", help="e.g. 4,5 or 3-6")
    axes.add_argument("--random-pct", type=_float_list, metavar="LIST", help="e.g. 0,25,50")
    axes.add_argument("--seeds", type=_int_list, metavar="LIST", help="e.g. 0-9")
    axes.add_argument("--maxiter", type=_workers, metavar="N", help="SLSQP iteration limit")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no log")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details on stderr")
    p.set_defaults(run=_cmd_run)

    p = sub.add_parser(
        "status",
        help="planned / done / failed / pending, from the files only",
        description="Show the state of a sweep from its output and temp dir; works while a run is going or after it died. Changes nothing.",
        epilog="Exit codes: 0 every planned config is done, 1 configs failed or are pending (or the spec is unknown, so nothing can be said about what is pending), 2 could not run.",
    )
    p.add_argument(
        "-o",
        "--output",
        help=f"output file (default: the one the run recorded in --temp-dir, else {DEFAULT_OUTPUT})",
    )
    p.add_argument("--temp-dir", metavar="DIR", help="temp dir (default OUTPUT_temp)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=_cmd_status)

    from optimizer._report_cli import register

    register(sub)
    return parser


def _spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = load_spec(args.spec) if args.spec else json.loads(json.dumps(DEMO_SPEC))
    overrides = {
        "site": args.site,
        "n_turbines": args.n_turbines,
        "grid_size": args.grid_size,
        "random_pct": args.random_pct,
        "seeds": args.seeds,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    blocks = spec.get("sweep")
    if overrides and isinstance(blocks, list):
        if not args.spec:
            blocks = blocks[:1]  # the demo's first block is the plain grid sweep
        spec["sweep"] = [{**b, **overrides} for b in blocks if isinstance(b, dict)]
    if args.maxiter is not None:
        optimizer = spec.setdefault("optimizer", {})
        if isinstance(optimizer, dict):
            optimizer["maxiter"] = args.maxiter
    return spec


def _make_engine(args: argparse.Namespace) -> Any:
    if args.engine == "dask":
        try:
            from optimizer.dask_engine import DaskEngine
        except ImportError as err:
            raise UsageError(
                f"layout-sweep run: --engine dask needs Dask distributed ({err.name} is missing); "
                'install it with: pip install ".[dask]"'
            ) from None
        # distributed sets its loggers to INFO when imported; they would drown the summary.
        logging.getLogger("distributed").setLevel(logging.INFO if args.verbose else logging.WARNING)
        return DaskEngine(workers=args.workers, scheduler=args.scheduler)
    if args.scheduler:
        raise UsageError("layout-sweep run: --scheduler needs --engine dask")
    from optimizer.engines import LocalEngine

    return LocalEngine(workers=args.workers)


def _progress(args: argparse.Namespace) -> Callable[[int], ProgressHook] | None:
    if args.quiet or args.json or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    def start(total: int) -> ProgressHook:
        bar = tqdm(total=total, desc="configs", unit="cfg", file=sys.stderr, dynamic_ncols=True)
        counts = {"ok": 0, "failed": 0, "retry": 0}

        def hook(config_id: str, status: str) -> None:
            counts[status] = counts.get(status, 0) + 1
            if status != "retry":
                bar.update(1)
            bar.set_postfix(
                done=counts["ok"], failed=counts["failed"], retried=counts["retry"], refresh=False
            )
            if bar.n >= total:
                bar.close()

        return hook

    return start


def _run_summary(result: RunResult) -> dict[str, Any]:
    from optimizer.summary import iter_records, summarize

    sites, errors = summarize(list(iter_records(result.output)))
    counts = result.state.counts() if result.state else {}
    return {
        "output": os.path.abspath(result.output),
        "temp_dir": os.path.abspath(result.temp_dir),
        "planned": result.planned,
        "computed_ok": result.computed_ok,
        "computed_failed": result.computed_failed,
        "skipped": result.skipped,
        "worker_deaths": result.worker_deaths,
        "counts": counts,
        "seconds": round(result.seconds, 2),
        "check_ok": result.check_report.ok if result.check_report else None,
        "best": [
            {
                "site": s.label,
                "best_aep_gwh": None if s.best_aep_gwh is None else round(s.best_aep_gwh, 4),
                "config_id": s.best_config_id,
                "done": s.done,
            }
            for s in sites
        ],
        "failed": [{"config_id": k, "error": v} for k, v in sorted(errors.items())],
    }


def _cmd_run(args: argparse.Namespace) -> int:
    spec = _spec_from_args(args)
    with _make_engine(args) as engine:
        result = run_sweep(
            spec,
            output=args.output,
            engine=engine,
            temp_dir=args.temp_dir,
            retry_failed=args.retry_failed,
            progress=_progress(args),
        )
    summary = _run_summary(result)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return result.exit_code
    c = summary["counts"]
    print(
        f"{c.get('done', 0)}/{summary['planned']} configs done, {c.get('failed', 0)} failed, "
        f"{c.get('pending', 0)} pending; this run computed {result.computed_ok} ok and "
        f"{result.computed_failed} failed, skipped {result.skipped} already done "
        f"({summary['seconds']:.1f} s)"
    )
    for s in summary["best"]:
        print(
            f"  best AEP {s['site']:>12}: {s['best_aep_gwh']:.2f} GWh ({s['config_id']}, {s['done']} configs)"
        )
    for f in summary["failed"][:10]:
        print(f"  failed {f['config_id']}: {f['error']}")
    verdict = (
        "check passed"
        if summary["check_ok"]
        else "check FOUND PROBLEMS (run: h5guard check " + result.output + ")"
    )
    print(f"results: {summary['output']} ({verdict})")
    return result.exit_code


def _recorded_output(temp_dir: str | None) -> str | None:
    """The output a run recorded in ``temp_dir`` (what ``h5guard merge DIR`` would use)."""
    if temp_dir is None or not os.path.isdir(temp_dir):
        return None
    from h5guard import MergeSourceError, plan_merge

    try:
        return plan_merge(temp_dir).output
    except MergeSourceError:
        return None


def _cmd_status(args: argparse.Namespace) -> int:
    # Read-only: an output it can infer from the temp dir is inferred, not demanded.
    output = args.output or _recorded_output(args.temp_dir) or DEFAULT_OUTPUT
    temp_dir = args.temp_dir or os.fspath(default_temp_dir(output))
    if not os.path.exists(output) and not os.path.isdir(temp_dir):
        raise UsageError(
            f"layout-sweep status: neither {output} nor {temp_dir} exists; nothing to show"
        )
    state, spec = read_state(output, temp_dir)
    counts: dict[str, int | None] = dict(state.counts())
    if spec is None:
        # Nothing is planned that we know of: count every result found, and say that
        # planned and pending are unknown instead of printing zeros.
        counts.update(planned=None, done=len(state.done), failed=len(state.failed), pending=None)
    doc = {
        "output": os.path.abspath(output),
        "temp_dir": os.path.abspath(temp_dir),
        "running": state.running,
        **counts,
        "spec_known": spec is not None,
    }
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        if spec is None:
            print(
                "planned: unknown (no sweep.json in the temp dir and no sweep_spec in the output)"
            )
        shown = {k: "unknown" if v is None else v for k, v in counts.items()}
        print(
            f"planned {shown['planned']}, done {shown['done']}, failed {shown['failed']}, "
            f"pending {shown['pending']}"
        )
        print(f"run in progress: {state.running}" if state.running else "no run in progress")
    clean = spec is not None and not counts["failed"] and not counts["pending"]
    return EXIT_OK if clean else EXIT_PROBLEMS


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_ERROR
        level = logging.ERROR if getattr(args, "quiet", False) else logging.WARNING
        if getattr(args, "verbose", False):
            level = logging.INFO
        logging.basicConfig(
            level=level, format="layout-sweep: %(levelname)s: %(message)s", stream=sys.stderr
        )
        _require_sweep_deps(args.command)
        code: int = args.run(args)
        return code
    except (
        UsageError,
        SpecError,
        SweepError,
        EngineError,
        NotASweepOutputError,
        MissingExtraError,
        H5GuardError,
    ) as err:
        print(f"layout-sweep: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        print(f"layout-sweep: error: {where}{err.strerror or err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(
            "layout-sweep: interrupted; committed results are safe, re-run the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
