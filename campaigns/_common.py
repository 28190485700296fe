"""What every campaign shares: result rows, the figure table, deadlines, small helpers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # h5guard is imported lazily: the quick-layer fuzzer instruments it first
    from h5guard import Finding, Report

COLUMNS = (
    "campaign",
    "scenario",
    "runs",
    "flagged",
    "passed-unchanged",
    "silent",
    "crashes",
    "hangs",
    "lost",
    "recomputed",
    "violations",
    "s",
)


@dataclass
class Row:
    """One line of figures. ``None`` prints as ``-`` (the column means nothing here)."""

    campaign: str
    scenario: str
    runs: int = 0
    flagged: int | None = 0
    passed: int | None = 0
    silent: int | None = 0
    crashes: int = 0
    hangs: int = 0
    lost: int | None = None
    recomputed: int | None = None
    violations: int = 0
    seconds: float = 0.0

    def cells(self) -> list[str]:
        def show(v: int | None) -> str:
            return "-" if v is None else str(v)

        return [
            self.campaign,
            self.scenario,
            str(self.runs),
            show(self.flagged),
            show(self.passed),
            show(self.silent),
            str(self.crashes),
            str(self.hangs),
            show(self.lost),
            show(self.recomputed),
            str(self.violations),
            f"{self.seconds:.1f}",
        ]


@dataclass
class CampaignResult:
    """Rows of figures, every broken invariant (one line each), and notes."""

    name: str
    rows: list[Row] = field(default_factory=list)
    _kinds: dict[str, list[Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    legend: str = ""
    seconds: float = 0.0
    tallies: dict[str, int] = field(default_factory=dict)

    def tally(self, text: str, n: int = 1) -> None:
        """Count an event worth a note (printed as ``text: n``)."""
        self.tallies[text] = self.tallies.get(text, 0) + n

    def row(self, scenario: str, **defaults: int | None) -> Row:
        """The row for ``scenario``, created on first use."""
        for r in self.rows:
            if r.scenario == scenario:
                return r
        r = Row(self.name, scenario)
        for k, v in defaults.items():
            setattr(r, k, v)
        self.rows.append(r)
        return r

    def violate(self, row: Row, text: str, *, kind: str | None = None) -> None:
        """Record a broken invariant; the same ``kind`` is listed once, with a count."""
        row.violations += 1
        key = f"[{self.name}/{row.scenario}] {kind or text}"
        if key in self._kinds:
            self._kinds[key][0] += 1
            return
        self._kinds[key] = [1, text]

    @property
    def violations(self) -> list[str]:
        out = []
        for key, (n, first) in self._kinds.items():
            scenario = key.split("] ", 1)[0] + "]"
            out.append(f"{scenario} {first}" + (f" (and {n - 1} more like it)" if n > 1 else ""))
        return out

    @property
    def ok(self) -> bool:
        return not self.violations and all(r.violations == 0 for r in self.rows)


def render_table(rows: Sequence[Row], *, markdown: bool) -> str:
    cells = [list(COLUMNS)] + [r.cells() for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |"]
        lines.append("|" + "|".join("---" if i < 2 else "--:" for i in range(len(COLUMNS))) + "|")
        lines += ["| " + " | ".join(c) + " |" for c in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    out = []
    for n, row in enumerate(cells):
        out.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def render_notes(result: CampaignResult, *, markdown: bool) -> str:
    """The legend, notes and violations of a campaign, one per line."""
    parts = []
    if result.legend:
        parts.append(f"_{result.legend}_" if markdown else result.legend)
    notes = result.notes + [f"{text}: {n}" for text, n in sorted(result.tallies.items())]
    for note in notes:
        parts.append(("* " if markdown else "note: ") + note)
    for v in result.violations:
        parts.append(("* **VIOLATION** " if markdown else "VIOLATION: ") + v)
    return "\n".join(parts)


def render_result(result: CampaignResult, *, markdown: bool) -> str:
    return (
        render_table(result.rows, markdown=markdown)
        + "\n"
        + render_notes(result, markdown=markdown)
    )


class Deadline:
    """A time budget; ``share(f)`` carves a sub-deadline out of what is left."""

    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.end = self.start + seconds

    @property
    def left(self) -> float:
        return self.end - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def share(self, fraction: float) -> Deadline:
        return Deadline(max(0.0, self.left * fraction))

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def problems_by_path(report: Report) -> dict[str, list[Finding]]:
    """Warnings and errors of a report, per file."""
    from h5guard import Severity

    out: dict[str, list[Finding]] = {}
    for f in report.findings:
        if f.severity >= Severity.WARNING:
            out.setdefault(f.path, []).append(f)
    return out


def scratch_root() -> str | None:
    """A memory-backed directory for throw-away files (``/dev/shm``) if there is one."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    return None


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """SIGKILL a child we started (and nothing else), reap it and close its pipes."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[tuple[Path | None, str]]:
    """Mount a tmpfs of ``size`` on ``where``; yields ``(path, "")`` or ``(None, reason)``."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        yield None, "mounting a tmpfs needs root"
        return
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        yield None, f"mount failed: {err}"
        return
    if proc.returncode != 0:
        yield None, f"mount failed: {proc.stderr.strip() or proc.returncode}"
        return
    try:
        yield where, ""
    finally:
        done = subprocess.run(["umount", str(where)], check=False, timeout=30, capture_output=True)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


def fill_file_system(directory: Path, leave: int = 0) -> Path:
    """Write a filler file until at most ``leave`` bytes are free on ``directory``'s fs."""
    filler = directory / f"filler-{os.getpid()}-{time.monotonic_ns()}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        block = 1 << 16
        while True:
            st = os.statvfs(directory)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            try:
                os.write(fd, b"\0" * max(1, min(block, free - leave)))
            except OSError:
                if block == 1:
                    break
                block //= 2
    finally:
        os.close(fd)
    return filler


# The sweep the crash and concurrency campaigns run: 4 configs, a few seconds of work.
TINY_SWEEP_SPEC = """
[[sweep]]
site = "iea37"
n_turbines = 16
grid_size = [4]
random_pct = [25, 50]
seeds = [0, 1]

[optimizer]
maxiter = 15
"""
