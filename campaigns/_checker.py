"""Run h5guard's checker on many damaged files, under a watchdog, and classify each.

One :class:`h5guard.Sandbox` pool serves every call. A batch of variants is written to
disk and given to one ``validate_many`` call, which runs in a helper thread so that the
campaign process can give up on it: if the call has not returned long after every file
could have timed out, it is a hang of h5guard itself; the pool's children are then
killed (by pid, only the ones this process started), which makes the stuck call return,
and the batch is re-run file by file to name the culprit. A call that raises is a crash
of the checker and is bisected the same way.

Outcomes: ``flagged`` (any warning or error finding), ``passed`` (no finding, and every
dataset and attribute of the damaged copy, read back in a sandbox child, equals the
original's), ``silent`` (no finding, but the values differ or cannot be read back),
``crash`` and ``hang``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from campaigns._common import children_of, cmdline, kill_pid, problems_by_path, scratch_root
from campaigns._readback import differences
from h5guard import Report, Sandbox, validate_many

T = TypeVar("T")

FLAGGED, PASSED, SILENT, CRASH, HANG = "flagged", "passed", "silent", "crash", "hang"
_READBACK = "campaigns._readback:fingerprint"


@dataclass
class Variant:
    """A damaged copy of an original file."""

    origin: str  # "h5guard" or "foreign"
    source: str  # name of the original
    row: str  # table row it counts towards
    describe: str  # what was done, precise enough to redo it
    data: bytes


@dataclass
class Outcome:
    variant: Variant
    kind: str
    detail: str = ""


class Checker:
    """Checks variants with one shared sandbox pool; keeps reproducers of failures."""

    def __init__(self, work: Path, keep: Path, *, timeout: float = 3.0, workers: int = 2) -> None:
        self.work = work
        self.keep = keep
        self.timeout = timeout
        self.workers = workers
        self.box = self._new_box()
        self.references: dict[str, dict[str, str]] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._stuck = False
        self._kept = 0
        self._scratch = tempfile.TemporaryDirectory(prefix="campaign-batch-", dir=scratch_root())
        self.batch_dir = Path(self._scratch.name)

    def _new_box(self) -> Sandbox:
        return Sandbox(workers=self.workers, timeout=self.timeout, memory_limit=512 * 1024**2)

    def close(self) -> None:
        self.box.close()
        # Join the helper thread (no thread may outlive the checker: campaigns fork later),
        # unless it is stuck inside a hung call.
        self._pool.shutdown(wait=not self._stuck, cancel_futures=True)
        self._scratch.cleanup()

    def __enter__(self) -> Checker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- references --------------------------------------------------------------------
    def add_reference(self, source: str, path: Path) -> None:
        """Read the intact original back once; variants are compared with this."""
        result = self.box.call(_READBACK, str(path))
        if not result.ok:
            raise RuntimeError(f"cannot read the original {path}: {result.failure} {result.detail}")
        self.references[source] = result.value

    # -- the watchdog ------------------------------------------------------------------
    def _guarded(self, fn: Callable[[], T], calls: int) -> tuple[str, T | None, str]:
        """``("ok", value, "")``, ``("raised", None, error)`` or ``("hang", None, "")``."""
        limit = math.ceil(max(1, calls) / self.workers) * (self.timeout + 2.0) + 30.0
        future = self._pool.submit(fn)
        try:
            return "ok", future.result(timeout=limit), ""
        except concurrent.futures.TimeoutError:
            self._unstick(future)
            return "hang", None, f"did not return within {limit:.0f} s"
        except Exception as err:
            return "raised", None, f"{type(err).__name__}: {err}"

    def _unstick(self, future: concurrent.futures.Future[Any]) -> None:
        for pid in children_of(os.getpid()):
            if "h5guard._check.child" in cmdline(pid):
                kill_pid(pid)
        with contextlib.suppress(Exception):
            future.result(timeout=30)
        if not future.done():
            # The helper thread is stuck for good; carry on with a fresh one.
            self._stuck = True
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        with contextlib.suppress(Exception):
            self.box.close()
        self.box = self._new_box()

    # -- checking ----------------------------------------------------------------------
    def _validate(self, paths: list[str]) -> tuple[str, Report | None, str]:
        box = self.box
        return self._guarded(
            lambda: validate_many(paths, sandbox=box, timeout=self.timeout), len(paths)
        )

    def check(self, variants: Sequence[Variant]) -> list[Outcome]:
        paths = []
        for i, v in enumerate(variants):
            target = self.batch_dir / f"v{i}.h5"
            target.write_bytes(v.data)
            paths.append(str(target))
        try:
            return self._check_paths(list(variants), paths)
        finally:
            for p in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)

    def _check_paths(self, variants: list[Variant], paths: list[str]) -> list[Outcome]:
        status, report, detail = self._validate(paths)
        if status != "ok" or report is None:
            if len(paths) == 1:
                kind = HANG if status == "hang" else CRASH
                out = Outcome(variants[0], kind, f"validate_many {detail}")
                self._keep(out, paths[0])
                return [out]
            outcomes: list[Outcome] = []
            for v, p in zip(variants, paths, strict=True):
                outcomes += self._check_paths([v], [p])
            return outcomes
        outcomes_by_index: dict[int, Outcome] = {}
        passed: list[int] = []
        problems_of = problems_by_path(report)
        for i, (v, p) in enumerate(zip(variants, paths, strict=True)):
            problems = problems_of.get(p, [])
            if problems:
                codes = ",".join(sorted({str(f.code) for f in problems}))
                outcomes_by_index[i] = Outcome(v, FLAGGED, codes)
            else:
                passed.append(i)
        if passed:
            calls = [(paths[i],) for i in passed]
            box = self.box
            status, results, detail = self._guarded(
                lambda: list(box.map(_READBACK, calls)), len(calls)
            )
            if status != "ok" or results is None:
                for i in passed:
                    outcomes_by_index[i] = Outcome(variants[i], SILENT, f"readback {detail}")
            else:
                for j, result in results:
                    i = passed[j]
                    ref = self.references.get(variants[i].source)
                    if ref is None:
                        # No intact original to compare with: only crashes and hangs count.
                        outcomes_by_index[i] = Outcome(variants[i], PASSED, "unverified")
                    elif not result.ok:
                        outcomes_by_index[i] = Outcome(
                            variants[i],
                            SILENT,
                            f"check passed but the values cannot be read back: {result.failure} {result.detail[:200]}",
                        )
                    elif result.value != ref:
                        diff = differences(ref, result.value)
                        outcomes_by_index[i] = Outcome(
                            variants[i], SILENT, f"check passed, values differ at {diff}"
                        )
                    else:
                        outcomes_by_index[i] = Outcome(variants[i], PASSED)
        outcomes = [outcomes_by_index[i] for i in range(len(variants))]
        for out, p in zip(outcomes, paths, strict=True):
            if out.kind in (CRASH, HANG) or (
                out.kind == SILENT and out.variant.origin == "h5guard"
            ):
                self._keep(out, p)
        return outcomes

    def _keep(self, outcome: Outcome, path: str) -> None:
        """Save a reproducer and point the outcome's detail at it."""
        if self._kept >= 50:
            return
        self._kept += 1
        self.keep.mkdir(parents=True, exist_ok=True)
        target = self.keep / f"{outcome.kind}-{self._kept:03d}-{outcome.variant.source}"
        with contextlib.suppress(OSError):
            shutil.copyfile(path, target)
            (target.parent / (target.name + ".txt")).write_text(
                f"{outcome.variant.describe}\n{outcome.detail}\n", encoding="utf-8"
            )
            outcome.detail += f" (reproducer: {target})"
