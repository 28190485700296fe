"""Child process for merge crash tests, plus the shard builders the merge tests share.

Run as ``python tests/crash/_merge_child.py SHARD_DIR OUTPUT PHASE_LOG [--lock-timeout S]
[--parallel-verify-min N] [--slow-helper S]``:
it runs :func:`h5guard.merge` and appends ``<phase> <CLOCK_MONOTONIC>`` lines to PHASE_LOG
as the merge passes its steps (plan, quarantine, write, verify, forked (a verification
helper was forked), verified, commit, committed, done),
so the parent knows where its SIGKILL landed. The phases are observed by wrapping the
merge's internal functions; what they do is unchanged. Exit codes as the CLI: 0/1 merged,
2 ``LockTimeoutError`` (message on stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np
import numpy.typing as npt

# Run as a script, sys.path[0] is tests/crash; the package lives two levels up.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from h5guard import (  # noqa: E402
    LockTimeoutError,
    ShardWriter,
)
from h5guard._format import result as _result  # noqa: E402
from h5guard._format.names import DIGEST_ATTR  # noqa: E402

F = TypeVar("F", bound=Callable[..., Any])
PHASES = (
    "start",
    "plan",
    "quarantine",
    "write",
    "verify",
    "forked",
    "verified",
    "commit",
    "committed",
    "done",
)


# -- shared builders -----------------------------------------------------------------
def make_group(
    i: int, *, rows: int | None = None, big: int = 0, variant: int = 0
) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
    """Deterministic result group ``i``: an (n, 2) layout, an aep, optional bulk data.

    ``variant`` changes the content (same key, other digest: a conflict).
    """
    rng = np.random.default_rng([i, variant])
    n = rows if rows is not None else 16 + (i * 7) % 49
    datasets: dict[str, npt.NDArray[Any]] = {
        "layout": rng.random((n, 2)) * 1000.0,
        "aep": np.asarray(rng.random() * 400.0),
    }
    if big:
        datasets["wake"] = rng.random(big)
    attrs: dict[str, Any] = {"seed": i, "status": "ok", "runtime": float(rng.random())}
    return datasets, attrs


def expected_digest(i: int, *, rows: int | None = None, big: int = 0, variant: int = 0) -> str:
    """The digest group ``i`` must carry, computed from its values, not from any file."""
    datasets, attrs = make_group(i, rows=rows, big=big, variant=variant)
    return _result.prepare(f"g{i}", datasets, attrs, schema=None).digest


def write_shards(
    directory: Path,
    indices: Iterable[int],
    *,
    per_shard: int = 10,
    big: int = 0,
    variant: int = 0,
    prefix: str = "shard",
) -> list[Path]:
    """Commit groups ``g<i>`` with ShardWriter, ``per_shard`` per shard."""
    with ShardWriter(directory, commit_every=per_shard, prefix=prefix) as w:
        for i in indices:
            datasets, attrs = make_group(i, big=big, variant=variant)
            w.add(f"g{i}", datasets, attrs)
    return list(w.committed)


def output_index(path: Path) -> dict[str, str]:
    """``{key: stored digest}`` of every top-level group of an HDF5 file."""
    with h5py.File(path, "r", locking=False) as f:
        return {k: bytes(f[k].attrs[DIGEST_ATTR]).decode() for k in f}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_phases(log: Path) -> list[tuple[str, float]]:
    if not log.exists():
        return []
    out: list[tuple[str, float]] = []
    for line in log.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in PHASES:
            out.append((parts[0], float(parts[1])))
    return out


def wait_for_phase(log: Path, phase: str, proc: subprocess.Popen[bytes], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if any(name == phase for name, _ in read_phases(log)):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.0005)
    raise AssertionError(f"merge child never reached phase {phase!r}")


def run_and_kill(work: Path, anchor: str | None, offset: float) -> tuple[str, int | None]:
    """Merge ``work/tmp`` into ``work/out.h5`` in a child; SIGKILL it ``offset`` s after it
    reports phase ``anchor`` (None: after it was started). Returns the last phase it
    reached and its exit status."""
    log = work / "phases.log"
    log.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, __file__, str(work / "tmp"), str(work / "out.h5"), str(log)],
        cwd=_ROOT,
        stderr=subprocess.PIPE,
    )
    try:
        if anchor is None or wait_for_phase(log, anchor, proc, limit=60):
            time.sleep(offset)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode not in (0, 1, -signal.SIGKILL):
        raise AssertionError(f"merge child failed ({proc.returncode}): {err.decode()[-2000:]}")
    phases = read_phases(log)
    return (phases[-1][0] if phases else "spawn"), proc.returncode


# -- the child -----------------------------------------------------------------------
def _instrument(log_path: str, output: str) -> Callable[[str], None]:
    import importlib

    import h5guard._atomic

    atomic: Any = h5guard._atomic
    # ``h5guard.merge`` the attribute is the function; the module is in sys.modules
    # once imported (the package imports its modules lazily).
    merge_mod: Any = importlib.import_module("h5guard.merge")

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def mark(phase: str) -> None:
        os.write(fd, f"{phase} {time.monotonic():.6f}\n".encode())

    def before(phase: str, func: F) -> F:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            mark(phase)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    merge_mod._plan = before("plan", merge_mod._plan)
    merge_mod._quarantine = before("quarantine", merge_mod._quarantine)
    merge_mod._write_partial = before("write", merge_mod._write_partial)
    # The whole verification: h5guard's reader, its forked helper, the libhdf5 fallback.
    verify = merge_mod._verify_copy

    def verify_wrapper(*args: Any, **kwargs: Any) -> Any:
        mark("verify")
        result = verify(*args, **kwargs)
        mark("verified")
        return result

    merge_mod._verify_copy = verify_wrapper
    fork = os.fork

    def fork_wrapper() -> int:
        pid = fork()
        if pid:
            mark("forked")  # the verification helper is running
        return pid

    os.fork = fork_wrapper
    commit = atomic.commit_file

    def commit_wrapper(partial: Any, final: Any) -> None:
        is_output = os.path.abspath(os.fspath(final)) == output
        if is_output:
            mark("commit")
        commit(partial, final)
        if is_output:
            mark("committed")

    atomic.commit_file = commit_wrapper
    return mark


def _slow_down_helper(seconds: float) -> None:
    from h5guard._format import bytes as _fastread

    fastread: Any = _fastread
    parent = os.getpid()
    verify = fastread.verify_groups_at

    def slow_in_child(*args: Any, **kwargs: Any) -> Any:
        if os.getpid() != parent:
            time.sleep(seconds)
        return verify(*args, **kwargs)

    fastread.verify_groups_at = slow_in_child


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("shard_dir")
    parser.add_argument("output")
    parser.add_argument("phase_log")
    parser.add_argument("--lock-timeout", type=float, default=60.0)
    parser.add_argument(
        "--slow-helper",
        type=float,
        default=0.0,
        help="a forked verification helper sleeps this long first (so a kill finds it)",
    )
    parser.add_argument(
        "--parallel-verify-min",
        type=int,
        help="verify in a forked helper from this many added groups (the merge's threshold)",
    )
    args = parser.parse_args(argv)
    output = os.path.abspath(args.output)
    mark = _instrument(args.phase_log, output)
    if args.parallel_verify_min is not None:
        sys.modules["h5guard.merge"].PARALLEL_VERIFY_MIN = args.parallel_verify_min
    if args.slow_helper:
        _slow_down_helper(args.slow_helper)
    mark("start")
    from h5guard import merge

    try:
        report = merge(args.shard_dir, output, lock_timeout=args.lock_timeout, workers=1)
    except LockTimeoutError as err:
        print(f"h5guard: error: {err}", file=sys.stderr)
        return 2
    mark("done")
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
