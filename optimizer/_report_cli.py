"""The ``layout-sweep report`` and ``layout-sweep show`` subcommands.

:func:`register` adds both to the main CLI's subparsers. The handlers raise
:class:`~optimizer.summary.NotASweepOutputError` (bad or foreign input file, unknown
config id) and :class:`~optimizer.report.MissingExtraError` (matplotlib not installed);
the main CLI turns those into one ``layout-sweep: error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

EXIT_OK, EXIT_PROBLEMS = 0, 1


def _top_k(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``report`` and ``show`` subcommands (each sets ``run=handler``)."""
    p = subparsers.add_parser(
        "report",
        help="write a static HTML report (summary, best layouts, wakes, sweep axes)",
        description=(
            "Write REPORT_DIR/index.html and its PNG figures for a sweep output: planned / done / "
            "failed configs, AEP statistics per site, the best layouts with their wake at the "
            "dominant wind direction, how the gain depends on the sweep axes, IEA37 reference "
            "AEPs, and the h5guard check verdict and provenance of the file. The page opens from "
            "disk (no server, nothing fetched). Works while a sweep is still running: it shows "
            'what has been merged so far. Needs matplotlib: pip install ".[report]".'
        ),
        epilog=(
            "Exit codes: 0 every planned config is done and the check passed, 1 the report was "
            "written but configs failed or are pending (or the check found problems), "
            "2 it could not run."
        ),
    )
    p.add_argument("output", metavar="OUTPUT", help="sweep output file, e.g. layouts.h5")
    p.add_argument(
        "-o",
        "--report-dir",
        metavar="DIR",
        help="where to write index.html and the PNGs (default: OUTPUT's stem + _report, next "
        "to OUTPUT)",
    )
    p.add_argument(
        "--top",
        type=_top_k,
        default=3,
        metavar="K",
        help="plot the best K layouts of each site (default 3)",
    )
    p.add_argument(
        "--no-check", action="store_true", help="skip the h5guard check of the output (faster)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print a summary document (counts, per-site stats, paths written)",
    )
    p.set_defaults(run=_cmd_report)

    p = subparsers.add_parser(
        "show",
        help="plot one optimized layout as a PNG",
        description=(
            "Plot the boundary, starting and optimized turbine positions and the minimum-spacing "
            "circles of one config. CONFIG_ID may be a unique prefix, with or without 'cfg-'. "
            'Needs matplotlib: pip install ".[report]".'
        ),
    )
    p.add_argument("output", metavar="OUTPUT", help="sweep output file, e.g. layouts.h5")
    p.add_argument("config_id", metavar="CONFIG_ID", help="e.g. cfg-2f549f5f9259021c")
    p.add_argument(
        "-o", "--png", metavar="PNG", help="image to write (default: CONFIG_ID.png here)"
    )
    p.set_defaults(run=_cmd_show)


def _cmd_report(args: argparse.Namespace) -> int:
    from optimizer.report import write_report

    result = write_report(args.output, args.report_dir, top_k=args.top, run_check=not args.no_check)
    s = result.summary
    if args.json:
        print(json.dumps(s, indent=2, sort_keys=True))
    else:
        planned = "unknown" if s["planned"] is None else s["planned"]
        pending = "unknown" if s["pending"] is None else s["pending"]
        extra = f" (+{s['unplanned_results']} not in the spec)" if s["unplanned_results"] else ""
        print(
            f"{s['done']}/{planned} configs done{extra}, {s['failed']} failed, {pending} pending; "
            f"check: {s['check']['summary']}"
        )
        for site in s["sites"]:
            best, gain = site["best_aep_gwh"], site["median_gain_pct"]
            if best is not None:
                gain_text = "n/a" if gain is None else f"{gain:+.2f} %"
                print(
                    f"  {site['site']:>14}: best {best:.2f} GWh, median gain {gain_text} "
                    f"({site['done']} done)"
                )
        for c in s["published"]:
            diffs = ", ".join(
                f"{entry} {aep:.2f} ({c['difference_gwh'][entry]:+.2f} GWh)"
                for entry, aep in c["published_aep_gwh"].items()
            )
            print(f"  {c['site']:>14}: best {c['best_aep_gwh']:.2f} GWh vs published {diffs}")
        print(
            f"report: {os.path.relpath(result.index_html)} ({len(result.images)} image(s), "
            f"{s['seconds']:.1f} s)"
        )
    return EXIT_OK if result.complete else EXIT_PROBLEMS


def _cmd_show(args: argparse.Namespace) -> int:
    from optimizer.report import write_layout_plot

    path = write_layout_plot(args.output, args.config_id, args.png)
    print(f"wrote {path}")
    return EXIT_OK
