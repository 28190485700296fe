"""Child process for merge crash tests, plus the shard builders the merge tests share.

Run as ``python tests/crash/_merge_child.py SHARD_DIR OUTPUT PHASE_LOG [--lock-timeout S]
[--parallel-verify-min N] [--slow-helper S]``:
it runs :func:`h5guard.merge` and appends ``<phase> <CLOCK_MONOTONIC>`` lines to PHASE_LOG
as the merge passes its steps (plan, quarantine, write, verify, helper (the verification
helper, a sandbox child, started on its half), verified, commit, committed, done),
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
    "helper",
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
        # h5guard_* members (the summary) are h5guard's own, not results.
        return {
            k: bytes(f[k].attrs[DIGEST_ATTR]).decode() for k in f if not k.startswith("h5guard_")
        }


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
    import h5guard._atomic
    import h5guard._merge.output
    import h5guard._merge.plan
    import h5guard._merge.verify

    atomic: Any = h5guard._atomic
    plan_mod: Any = h5guard._merge.plan
    output_mod: Any = h5guard._merge.output
    verify_mod: Any = h5guard._merge.verify

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def mark(phase: str) -> None:
        os.write(fd, f"{phase} {time.monotonic():.6f}\n".encode())

    def before(phase: str, func: F) -> F:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            mark(phase)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    plan_mod.build = before("plan", plan_mod.build)
    output_mod.quarantine = before("quarantine", output_mod.quarantine)
    output_mod.write_partial = before("write", output_mod.write_partial)
    # The whole verification: h5guard's reader, its helper, the libhdf5 fallback.
    verify = verify_mod.verify_copy

    def verify_wrapper(*args: Any, **kwargs: Any) -> Any:
        mark("verify")
        result = verify(*args, **kwargs)
        mark("verified")
        return result

    verify_mod.verify_copy = verify_wrapper
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


_SLOW_HELPER_ENV = "H5GUARD_TEST_SLOW_HELPER"  # "<seconds> <phase log>"


def slow_helper(partial: str, groups: Any) -> Any:
    """The verification helper's function under ``--slow-helper``: it runs in the
    sandbox child, says so in the phase log, sleeps, then verifies as the merge's does."""
    from h5guard._check.own import verify_copied

    seconds, log_path = os.environ[_SLOW_HELPER_ENV].split(" ", 1)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, f"helper {time.monotonic():.6f}\n".encode())
    os.close(fd)
    time.sleep(float(seconds))
    return verify_copied(partial, groups)


def _slow_down_helper(seconds: float, log_path: str) -> None:
    import h5guard._merge.verify
    import h5guard._sandbox

    verify_mod: Any = h5guard._merge.verify
    sandbox_mod: Any = h5guard._sandbox
    # The sandbox child gets a reduced environment: let this one variable through (the
    # child imports this module by name, from the checkout's root).
    os.environ[_SLOW_HELPER_ENV] = f"{seconds} {os.path.abspath(log_path)}"
    sandbox_mod.ENV_KEPT = sandbox_mod.ENV_KEPT | {_SLOW_HELPER_ENV}
    verify_mod.HELPER_TARGET = "tests.crash._merge_child:slow_helper"


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
        help="the verification helper sleeps this long first (so a kill finds it)",
    )
    parser.add_argument(
        "--parallel-verify-min",
        type=int,
        help="verify with a helper from this many added groups (the merge's threshold)",
    )
    args = parser.parse_args(argv)
    output = os.path.abspath(args.output)
    mark = _instrument(args.phase_log, output)
    if args.parallel_verify_min is not None:
        import h5guard._merge.verify

        verify_mod: Any = h5guard._merge.verify
        verify_mod.PARALLEL_VERIFY_MIN = args.parallel_verify_min
    if args.slow_helper:
        _slow_down_helper(args.slow_helper, args.phase_log)
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
