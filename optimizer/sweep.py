"""The sweep: plan, resume, run batches on an engine, record failures, merge, check.

Everything the sweep knows comes from files, never from memory of an earlier run:
a config is done when a valid group ``cfg-<id>`` exists in the output or in a
committed shard of the temp dir. Re-running the same command after any crash
therefore computes exactly what is missing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h5guard import (
    LockTimeoutError,
    Report,
    Sandbox,
    ShardWriter,
    WriterIdentity,
    check,
    exclusive,
    merge,
    plan_merge,
    record_output,
)
from optimizer.config import SpecError, SweepConfig, expand_spec
from optimizer.engines import Batch, BatchResult, Engine
from optimizer.results import (
    RESULT_SCHEMA,
    config_id_of_failure,
    failure_group,
    failure_key,
    is_failure_key,
    is_result_key,
)

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
RUN_LOCK = "run"
MAX_WORKER_DEATHS = 3
ProgressHook = Callable[[str, str], None]  # (config_id, "ok" | "failed" | "retry")


class SweepError(RuntimeError):
    """The sweep cannot run (another run holds the temp dir, output not writable...)."""


def default_temp_dir(output: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(output)}_temp")


@dataclass(frozen=True, slots=True)
class SweepState:
    """Planned configs, and what the files say about each of them."""

    planned: tuple[SweepConfig, ...]
    done: frozenset[str]
    failed: Mapping[str, int]  # config id -> failure records found (not done ones)
    running: str | None = None  # who holds the run lock, if anyone

    @property
    def pending(self) -> tuple[SweepConfig, ...]:
        return tuple(
            c
            for c in self.planned
            if c.config_id not in self.done and c.config_id not in self.failed
        )

    def counts(self) -> dict[str, int]:
        planned_ids = {c.config_id for c in self.planned}
        return {
            "planned": len(self.planned),
            "done": len(self.done & planned_ids),
            "failed": len(set(self.failed) & planned_ids),
            "pending": len(self.pending),
        }


def read_state(
    output: str,
    temp_dir: str,
    spec: Mapping[str, Any] | None = None,
    *,
    sandbox: Sandbox | None = None,
    planned: Sequence[SweepConfig] | None = None,
    gone_writers: Sequence[WriterIdentity] = (),
) -> tuple[SweepState, dict[str, Any] | None]:
    """What is planned, done and failed, from the files alone.

    ``planned``: the configs of ``spec`` when the caller has expanded it already.
    ``gone_writers``: worker processes the engine knows to be dead. A result in the
    journal of a writer that may still run (pending) counts as done: it reaches the
    output once its writer commits or is shown gone, and computing it again would
    compute it twice.
    """
    if spec is None:
        spec = _recorded_spec(output, temp_dir)
    if planned is None:
        planned = tuple(expand_spec(spec)) if spec is not None else ()
    keys: frozenset[str] = frozenset()
    if os.path.isdir(temp_dir):
        plan = plan_merge(
            temp_dir, output, schema=RESULT_SCHEMA, sandbox=sandbox, gone_writers=gone_writers
        )
        keys = plan.keys | plan.pending_keys
    elif os.path.exists(output):
        report = check([output], schema=RESULT_SCHEMA, sandbox=sandbox)
        keys = frozenset(report.files[0].groups) if report.files else frozenset()
    state = _state_from_keys(tuple(planned), keys, _lock_holder(temp_dir))
    return state, dict(spec) if spec else None


def _state_from_keys(
    planned: tuple[SweepConfig, ...], keys: frozenset[str], running: str | None
) -> SweepState:
    done = frozenset(k for k in keys if is_result_key(k))
    failed: Counter[str] = Counter(config_id_of_failure(k) for k in keys if is_failure_key(k))
    for cid in done:
        failed.pop(cid, None)
    return SweepState(planned, done, dict(failed), running)


def _recorded_spec(output: str, temp_dir: str) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(temp_dir) / SWEEP_FILE).read_text(encoding="utf-8"))
        spec = data.get("spec")
        if isinstance(spec, dict):
            return spec
    except (OSError, ValueError):
        pass
    if os.path.exists(output):
        from optimizer.summary import read_root_spec

        return read_root_spec(output)
    return None


def _lock_holder(temp_dir: str) -> str | None:
    if not os.path.isdir(temp_dir):
        return None
    try:
        with exclusive(Path(temp_dir) / RUN_LOCK, timeout=0):
            return None
    except LockTimeoutError as err:
        return err.holder


def make_batches(configs: Sequence[SweepConfig], workers: int) -> list[list[SweepConfig]]:
    """Big configs first; enough batches per worker to balance load and show progress."""
    ordered = sorted(configs, key=lambda c: (-c.n_turbines, c.config_id))
    if not ordered:
        return []
    size = max(1, min(8, math.ceil(len(ordered) / (workers * 4))))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


@dataclass
class RunResult:
    """What ``run_sweep`` did."""

    output: str
    temp_dir: str
    planned: int
    computed_ok: int = 0
    computed_failed: int = 0
    skipped: int = 0  # already done (or failed, without --retry-failed) before this run
    worker_deaths: int = 0
    seconds: float = 0.0
    # Time spent in h5guard: workers' ShardWriter calls (summed over workers), and the
    # parent's state reads, merge and check.
    writer_seconds: float = 0.0
    parent_h5guard_seconds: float = 0.0
    merge_exit_code: int = 0
    check_report: Report | None = None
    state: SweepState | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    ok_ids: set[str] = field(default_factory=set)

    @property
    def exit_code(self) -> int:
        if self.check_report is not None and not self.check_report.ok:
            return 1
        if self.merge_exit_code:
            return 1
        counts = self.state.counts() if self.state else {"failed": 0, "pending": 0}
        return 1 if counts["failed"] or counts["pending"] else 0


def _probe_writable(directory: str, what: str) -> None:
    # os.access() says yes to root on read-only mounts and /proc: actually try.
    try:
        fd, probe = tempfile.mkstemp(prefix=".layout-sweep-probe-", dir=directory)
    except OSError as err:
        raise SweepError(
            f"{what}: the directory {directory} is not writable ({err.strerror or err})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _validate_paths(output: str, temp_dir: str) -> None:
    out_dir = os.path.dirname(os.path.abspath(output)) or "."
    if not os.path.isdir(out_dir):
        raise SweepError(f"{output}: the output directory {out_dir} does not exist")
    if os.path.isdir(output):
        raise SweepError(f"{output}: expected a file path for the output, found a directory")
    _probe_writable(out_dir, output)
    if os.path.exists(temp_dir) and not os.path.isdir(temp_dir):
        raise SweepError(f"{temp_dir}: expected a directory for the temp dir, found a file")
    parent = os.path.dirname(os.path.abspath(temp_dir))
    if not os.path.isdir(parent):
        raise SweepError(f"{temp_dir}: the parent directory {parent} does not exist")
    _probe_writable(os.path.abspath(temp_dir) if os.path.isdir(temp_dir) else parent, temp_dir)


def run_sweep(
    spec: Mapping[str, Any],
    *,
    output: str,
    engine: Engine,
    temp_dir: str | None = None,
    retry_failed: bool = False,
    progress: Callable[[int], ProgressHook] | None = None,
) -> RunResult:
    """Run (or resume) a sweep to completion and merge it into ``output``.

    ``progress``, if given, is called with the number of configs to compute and
    returns a hook called once per finished config.
    """
    started = time.monotonic()
    configs = expand_spec(spec)  # raises SpecError before anything is written
    tdir = os.fspath(temp_dir) if temp_dir is not None else os.fspath(default_temp_dir(output))
    _validate_paths(output, tdir)
    Path(tdir).mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(
                exclusive(Path(tdir) / RUN_LOCK, timeout=0, purpose=f"layout-sweep run -o {output}")
            )
        except LockTimeoutError as err:
            raise SweepError(
                f"{tdir}: another layout-sweep run is using this temp dir ({err.holder}); "
                "wait for it, or use another --temp-dir"
            ) from None
        engine.check_temp_dir(tdir)
        _write_sweep_file(tdir, spec, configs)
        record_output(tdir, output)
        box = engine.checker() or stack.enter_context(Sandbox(workers=engine.workers))
        result = RunResult(output=output, temp_dir=tdir, planned=len(configs))
        with _timer(result):
            state, _ = read_state(
                output, tdir, spec, sandbox=box, planned=configs, gone_writers=engine.gone_writers()
            )
        todo = [c for c in configs if c.config_id not in state.done]
        if not retry_failed:
            todo = [c for c in todo if c.config_id not in state.failed]
        result.skipped = len(configs) - len(todo)
        log.info(
            "%d configs planned, %d to compute, %d skipped", len(configs), len(todo), result.skipped
        )
        hook = progress(len(todo)) if progress else None
        _compute(tdir, todo, dict(state.failed), engine, result, hook)
        with _timer(result):
            # What the files hold now, from what they held plus what this run
            # committed, instead of validating every shard once more before the merge.
            done = set(state.done) | result.ok_ids
            failed = (set(state.failed) | {cid for cid, _ in result.failures}) - done
            planned_ids = {c.config_id for c in configs}
            counts = {
                "planned": len(configs),
                "done": len(done & planned_ids),
                "failed": len(failed & planned_ids),
            }
            merged = merge(
                tdir,
                output,
                schema=RESULT_SCHEMA,
                # A config computed twice (its worker died after committing, before
                # reporting back) differs only in timings: keep the first copy.
                on_conflict="keep-existing",
                sandbox=box,
                # Workers the engine saw die: their batches are taken now, even from
                # nodes whose locks and processes this one cannot see.
                gone_writers=engine.gone_writers(),
                root_attrs={
                    "sweep_spec": json.dumps(spec, sort_keys=True),
                    "total_configs": counts["planned"],
                    "successful_configs": counts["done"],
                    "failed_configs": counts["failed"],
                    "grid_size": sorted({c.grid_size for c in configs}),
                    "random_pct": sorted({c.random_pct for c in configs}),
                    "sites": ",".join(sorted({c.site for c in configs})),
                },
            )
            result.merge_exit_code = merged.exit_code
            result.check_report = check([output], schema=RESULT_SCHEMA, sandbox=box)
            # The merge emptied the temp dir into the output: the check's view of the
            # output is the whole state, no need to index it again.
            summary = result.check_report.files[0] if result.check_report.files else None
            keys = frozenset(summary.groups) if summary is not None else frozenset()
            result.state = _state_from_keys(tuple(configs), keys, None)
        result.seconds = time.monotonic() - started
        return result
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _timer(result: RunResult) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        result.parent_h5guard_seconds += time.perf_counter() - t0


def _write_sweep_file(
    temp_dir: str, spec: Mapping[str, Any], configs: Sequence[SweepConfig]
) -> None:
    path = Path(temp_dir) / SWEEP_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps({"spec": spec, "planned": len(configs)}, sort_keys=True, indent=1),
        encoding="utf-8",
    )
    os.replace(tmp, path)


def _compute(
    temp_dir: str,
    todo: Sequence[SweepConfig],
    prior_failures: Mapping[str, int],
    engine: Engine,
    result: RunResult,
    hook: ProgressHook | None,
) -> None:
    """Run every config once; isolate and give up on configs that keep killing workers."""
    attempts = dict(prior_failures)
    deaths: Counter[str] = Counter()
    batches: list[list[SweepConfig]] = make_batches(todo, engine.workers)
    while batches:
        retry: list[list[SweepConfig]] = []
        payload: list[Batch] = [[c.canonical() for c in b] for b in batches]
        for index, outcome in engine.run(temp_dir, payload, attempts):
            batch = batches[index]
            result.writer_seconds += outcome.writer_seconds
            if outcome.failure == "error":
                # The batch function itself raised: storing results failed (a full
                # disk), which every retry would repeat. What was committed is kept.
                raise SweepError(
                    f"{temp_dir}: a worker could not store its results: {outcome.detail}"
                )
            if outcome.failure is None:
                for cid, status, error in outcome.outcomes:
                    if status == "ok":
                        result.computed_ok += 1
                        result.ok_ids.add(cid)
                    else:
                        result.computed_failed += 1
                        result.failures.append((cid, error))
                    if hook:
                        hook(cid, status)
                continue
            result.worker_deaths += 1
            log.warning(
                "a worker running %d config(s) died: %s %s",
                len(batch),
                outcome.failure,
                outcome.detail,
            )
            if len(batch) > 1:
                # Which config killed it is unknown: run each alone to find out.
                retry.extend([c] for c in batch)
                continue
            [config] = batch
            deaths[config.config_id] += 1
            if deaths[config.config_id] < MAX_WORKER_DEATHS and not engine.deaths_are_final:
                retry.append([config])
                if hook:
                    hook(config.config_id, "retry")
                continue
            _record_death(temp_dir, config, outcome, attempts)
            result.computed_failed += 1
            result.failures.append((config.config_id, _death_text(outcome)))
            if hook:
                hook(config.config_id, "failed")
        batches = retry


def _death_text(outcome: BatchResult) -> str:
    what = {
        "crashed": "its worker process died",
        "timeout": "it ran past the time limit and its worker was killed",
        "memory": "its worker ran out of memory",
        "killed": "its worker was killed",
    }.get(outcome.failure or "", f"its worker failed ({outcome.failure})")
    return f"{what} {MAX_WORKER_DEATHS} times: {outcome.detail}".strip()


def _record_death(
    temp_dir: str, config: SweepConfig, outcome: BatchResult, attempts: dict[str, int]
) -> None:
    cid = config.config_id
    attempt = attempts.get(cid, 0) + 1
    attempts[cid] = attempt
    datasets, attrs = failure_group(
        config,
        error=_death_text(outcome),
        traceback="",
        attempt=attempt,
        kind=outcome.failure or "died",
    )
    with ShardWriter(temp_dir, schema=RESULT_SCHEMA, prefix="supervisor") as writer:
        writer.add(failure_key(cid, attempt), datasets, attrs)


__all__ = ["RunResult", "SpecError", "SweepError", "SweepState", "read_state", "run_sweep"]
