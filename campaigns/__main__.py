"""``python -m campaigns NAME [--budget SECONDS] [--seed N] [--markdown]``.

NAME is one of :data:`campaigns.CAMPAIGNS` or ``all`` (each campaign with the same
budget, one combined Markdown table). Prints the figures; exits 1 if any invariant
broke, 2 on bad usage. A watchdog ends the process (with a traceback of every thread)
if a campaign overruns its budget by far: a hang of the campaign itself is a finding too.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import sys
import time

from campaigns import (
    CAMPAIGNS,
    CampaignResult,
    render_notes,
    render_result,
    render_table,
    run_campaign,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m campaigns",
        description="Fault-injection and corruption campaigns for h5guard and layout-sweep.",
        epilog="Exit codes: 0 every invariant held, 1 an invariant broke, 2 bad usage.",
    )
    p.add_argument("name", choices=[*CAMPAIGNS, "all"], help="campaign to run, or all")
    p.add_argument(
        "--budget",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="time per campaign (default 60)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    p.add_argument("--markdown", action="store_true", help="print Markdown (default for all)")
    return p


def _run(name: str, budget: float, seed: int) -> CampaignResult:
    # Last line of defence: a campaign that overruns its budget this much is stuck.
    faulthandler.dump_traceback_later(budget * 3 + 600, exit=True)
    try:
        return run_campaign(name, budget, seed)
    finally:
        faulthandler.cancel_dump_traceback_later()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.budget <= 0:
        print("python -m campaigns: --budget must be > 0", file=sys.stderr)
        return 2
    # h5guard logs each sandbox timeout as a warning; here they are expected by the thousand.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(levelname)s: %(message)s")
    names = list(CAMPAIGNS) if args.name == "all" else [args.name]
    markdown = args.markdown or args.name == "all"
    started = time.monotonic()
    results = []
    for name in names:
        result = _run(name, args.budget, args.seed)
        results.append(result)
        if args.name != "all":
            print(render_result(result, markdown=markdown))
        else:
            print(
                f"{name}: {len(result.violations)} violation kind(s), {result.seconds:.0f} s",
                file=sys.stderr,
            )
    if args.name == "all":
        print(
            f"`python -m campaigns all --budget {args.budget:g} --seed {args.seed}` "
            f"({time.monotonic() - started:.0f} s)\n"
        )
        print(render_table([r for res in results for r in res.rows], markdown=True))
        for res in results:
            print(f"\n**{res.name}** ({res.seconds:.0f} s)\n\n{render_notes(res, markdown=True)}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
