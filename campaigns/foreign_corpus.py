"""Does ``h5guard check`` agree with libhdf5 on real files h5guard did not write?

A verdict per file comes either from a ``VERDICTS.tsv`` beside the files (the shared
corpus: what a complete read with plain h5py gave) or, for a directory without one, from
:func:`oracle_verdict`: the same complete read, in a fresh process per file with a time
limit. Agreement rules (``docs/check.md``):

* ``readable``: no warning and no error (exit 0; notes are fine);
* ``unreadable``: at least one error finding;
* ``needs_plugin``: clean, or a ``FILTER_MISSING`` finding naming the filter;
* ``ambiguous``: anything.

A ``CHECKER_CRASHED`` finding is counted as a crash and a ``TIMEOUT`` as a hang, whatever
the verdict (a hang or a crash of libhdf5 inside the sandbox is still a finding, but the
figures say how often it happens). Run::

    python -m campaigns.foreign_corpus ../shared/corpus/foreign
    python -m campaigns.foreign_corpus /tmp/extra-h5 --oracle   # verdicts computed here
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from h5guard import Code, Finding, Report, Severity, validate_many

VERDICTS = "VERDICTS.tsv"
SIGNATURE = b"\x89HDF\r\n\x1a\n"
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".nc", ".nc4", ".h5ad", ".nxs", ".cdf", ".mat")
KINDS = ("readable", "unreadable", "needs_plugin", "ambiguous")


@dataclass(frozen=True)
class Verdict:
    name: str
    source: str
    verdict: str
    first_error: str = ""


def load_verdicts(directory: Path) -> list[Verdict]:
    with open(directory / VERDICTS, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [
        Verdict(r["file"], r["source"], r["verdict"], r.get("h5py_first_error") or "") for r in rows
    ]


def disagreement(verdict: str, findings: Sequence[Finding]) -> str | None:
    """None when the findings agree with the verdict, else why not ("false alarm", "missed")."""
    failing = [f for f in findings if f.severity >= Severity.WARNING]
    errors = [f for f in failing if f.severity is Severity.ERROR]
    if verdict == "readable":
        return "false alarm" if failing else None
    if verdict == "unreadable":
        return None if errors else "missed"
    if verdict == "needs_plugin":
        if not failing:
            return None
        if any(f.code is Code.FILTER_MISSING and "filter" in f.message for f in failing):
            return None
        return "false alarm"
    return None


@dataclass
class SourceFigures:
    files: int = 0
    false_alarms: int = 0
    missed: int = 0
    crashes: int = 0
    hangs: int = 0
    by_verdict: dict[str, list[int]] = field(default_factory=dict)  # verdict -> [files, agree]


@dataclass
class CorpusResult:
    figures: dict[str, SourceFigures]
    problems: list[str]
    seconds: float

    @property
    def total(self) -> SourceFigures:
        out = SourceFigures()
        for fig in self.figures.values():
            out.files += fig.files
            out.false_alarms += fig.false_alarms
            out.missed += fig.missed
            out.crashes += fig.crashes
            out.hangs += fig.hangs
            for kind, (n, ok) in fig.by_verdict.items():
                agg = out.by_verdict.setdefault(kind, [0, 0])
                agg[0] += n
                agg[1] += ok
        return out


def compare(verdicts: Iterable[Verdict], report: Report, paths: Mapping[str, str]) -> CorpusResult:
    by_path: dict[str, list[Finding]] = {}
    for f in report.findings:
        by_path.setdefault(f.path, []).append(f)
    figures: dict[str, SourceFigures] = {}
    problems: list[str] = []
    for v in verdicts:
        fig = figures.setdefault(v.source, SourceFigures())
        findings = by_path.get(paths[v.name], [])
        fig.files += 1
        codes = {f.code for f in findings}
        fig.crashes += Code.CHECKER_CRASHED in codes
        fig.hangs += Code.TIMEOUT in codes
        why = disagreement(v.verdict, findings)
        agg = fig.by_verdict.setdefault(v.verdict, [0, 0])
        agg[0] += 1
        agg[1] += why is None
        if why == "false alarm":
            fig.false_alarms += 1
        elif why == "missed":
            fig.missed += 1
        if why is not None:
            shown = "; ".join(str(f) for f in findings if f.severity >= Severity.WARNING)[:300]
            problems.append(f"{why}: {v.name} ({v.verdict}): {shown or 'no finding'}")
    return CorpusResult(figures, problems, 0.0)


def check_corpus(
    directory: Path, verdicts: Sequence[Verdict], *, timeout: float = 120.0, workers: int = 2
) -> CorpusResult:
    """One ``validate_many`` call over every file (the library's many-file path)."""
    paths = {v.name: str(directory / v.name) for v in verdicts}
    started = time.monotonic()
    report = validate_many(list(paths.values()), timeout=timeout, workers=workers)
    result = compare(verdicts, report, paths)
    result.seconds = time.monotonic() - started
    return result


# -- the oracle: a complete read with plain h5py, one fresh process per file -------------
_ORACLE = r"""
import sys, h5py
path = sys.argv[1]
def attrs(obj, where):
    for name in obj.attrs:
        obj.attrs[name]
def visit(name, obj):
    attrs(obj, name)
    if isinstance(obj, h5py.Dataset) and obj.nbytes <= 200 * 2**20:
        obj[()]
try:
    with h5py.File(path, "r") as f:
        attrs(f, "/")
        f.visititems(visit)
except Exception as err:
    print(type(err).__name__ + ": " + " ".join(str(err).split())[:200])
    sys.exit(3)
"""


def oracle_verdict(path: str, *, timeout: float = 20.0) -> tuple[str, str]:
    """``(verdict, first error)`` of a complete read with plain h5py (no hdf5plugin)."""
    env = dict(os.environ, HDF5_PLUGIN_PATH="/nonexistent")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _ORACLE, path],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return "ambiguous", "h5py timed out"
    if proc.returncode == 0:
        return "readable", ""
    if proc.returncode < 0:
        return "ambiguous", f"h5py died (signal {-proc.returncode})"
    first = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-200:]
    if "filter" in first or "plugin" in first or "can't open directory" in first:
        return "needs_plugin", first
    return "unreadable", first


def oracle_verdicts(directory: Path, source: str) -> list[Verdict]:
    out = []
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.suffix.lower() in HDF5_SUFFIXES:
            with open(p, "rb") as fh:
                head = fh.read(520)
            if SIGNATURE not in (head[:8], head[512:520]):  # netCDF-3, MAT v5 and the like
                continue
            verdict, first = oracle_verdict(str(p))
            out.append(Verdict(str(p.relative_to(directory)), source, verdict, first))
    return out


def render(result: CorpusResult) -> str:
    lines = [
        "| source | files | false alarms | missed | crashes | hangs |",
        "|---|---|---|---|---|---|",
    ]
    for source in sorted(result.figures):
        f = result.figures[source]
        lines.append(
            f"| {source} | {f.files} | {f.false_alarms} | {f.missed} | {f.crashes} | {f.hangs} |"
        )
    t = result.total
    lines.append(
        f"| **all** | {t.files} | {t.false_alarms} | {t.missed} | {t.crashes} | {t.hangs} |"
    )
    lines.append("")
    lines.append("| verdict | files | agree |")
    lines.append("|---|---|---|")
    for kind in KINDS:
        if kind in t.by_verdict:
            n, ok = t.by_verdict[kind]
            lines.append(f"| {kind} | {n} | {ok} |")
    lines.append(f"\nchecked in {result.seconds:.1f} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--oracle", action="store_true", help="compute verdicts (no VERDICTS.tsv)")
    parser.add_argument("--source", default=None, help="source label for --oracle")
    parser.add_argument("--timeout", type=float, default=120.0, help="per file (check default)")
    args = parser.parse_args(argv)
    if args.oracle:
        verdicts = oracle_verdicts(args.directory, args.source or args.directory.name)
    else:
        verdicts = load_verdicts(args.directory)
    result = check_corpus(args.directory, verdicts, timeout=args.timeout)
    print(render(result))
    for line in result.problems:
        print(line)
    return 0 if not result.problems else 1


if __name__ == "__main__":
    sys.exit(main())
