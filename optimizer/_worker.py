"""Code that runs inside a worker process: optimize a batch, commit it as one shard.

A batch returns only after its shard is committed, so whatever the parent hears back
is durable. An exception in one config becomes a failure record in the same shard;
only the death of the process loses the (uncommitted) batch.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from h5guard import SchemaError, ShardWriter
from optimizer.config import SweepConfig
from optimizer.results import RESULT_SCHEMA, failure_group, failure_key, result_group

log = logging.getLogger(__name__)

_warm: set[tuple[str, str, int]] = set()

# Outcome of one config in a batch: (config_id, "ok" | "failed", one-line error).
ConfigOutcome = tuple[str, str, str]
# What run_batch returns: {"outcomes": [ConfigOutcome...], "writer_seconds": float}.
BatchReply = dict[str, Any]


FAULT_ENV = "LAYOUT_SWEEP_FAULT"


def _inject_fault(config_id: str) -> None:
    """Fault injection for tests and campaigns: ``LAYOUT_SWEEP_FAULT=<id>:kill|raise[,...]``.

    ``kill`` behaves like a config that takes its worker down every time (an
    out-of-memory kill, a segfault); ``raise`` like one whose optimization raises.
    """
    for item in os.environ.get(FAULT_ENV, "").split(","):
        target, _, action = item.partition(":")
        if target != config_id:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "raise":
            raise RuntimeError(f"injected fault for {config_id}")


def _optimize(config: SweepConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    from optimizer.optimize import optimize_layout, warm_up

    key = (config.site, config.site_def, config.n_turbines)
    if key not in _warm:
        # PyWake's import and model set-up (~2 s) would otherwise be billed to the
        # first config's wall time.
        warm_up(site=config.site, site_def=config.site_def, n_turbines=config.n_turbines)
        _warm.add(key)
    _inject_fault(config.config_id)
    result = optimize_layout(
        site=config.site,
        site_def=config.site_def,
        n_turbines=config.n_turbines,
        start=config.start,
        grid_size=config.grid_size,
        random_pct=config.random_pct,
        seed=config.seed,
        method=config.method,
        maxiter=config.maxiter,
        tol=config.tol,
        wec=config.wec,
        wec_tol=config.wec_tol,
        evaluator=config.evaluator,
        lattice=config.lattice,
        hops=config.hops,
        hop_m=config.hop_m,
    )
    return result_group(config, result)


def warm_up_worker() -> int:
    """Import PyWake and build the default model now; returns this worker's pid."""
    from optimizer.optimize import warm_up

    warm_up(site="iea37", n_turbines=16)
    _warm.add(("iea37", "", 16))
    return os.getpid()


def run_batch(
    temp_dir: str, configs: Sequence[Mapping[str, Any]], attempts: Mapping[str, int]
) -> BatchReply:
    """Optimize each config and commit all of their records as one shard.

    A config's exception becomes its failure record; a failure to *store* (a full
    disk) propagates, since recording it would fail the same way.
    """
    outcomes: list[ConfigOutcome] = []
    storing = 0.0
    started = time.perf_counter()
    writer = ShardWriter(
        temp_dir,
        schema=RESULT_SCHEMA,
        prefix="worker",
        commit_every=len(configs) + 1,
    )
    storing += time.perf_counter() - started
    with writer:
        for data in configs:
            config = SweepConfig.from_mapping(data)
            cid = config.config_id
            try:
                datasets, attrs = _optimize(config)
                key, status, error = cid, "ok", ""
            except Exception as err:
                error = traceback.format_exception_only(err)[-1].strip()
                log.warning("config %s failed: %s", cid, error)
                attempt = attempts.get(cid, 0) + 1
                datasets, attrs = failure_group(
                    config,
                    error=error,
                    traceback=traceback.format_exc(),
                    attempt=attempt,
                    kind="exception",
                )
                key, status = failure_key(cid, attempt), "failed"
            t0 = time.perf_counter()
            try:
                writer.add(key, datasets, attrs)
            except SchemaError as err:
                # A result the schema refuses (e.g. NaN in a layout) is a failed config.
                attempt = attempts.get(cid, 0) + 1
                error = str(err)
                datasets, attrs = failure_group(
                    config, error=error, traceback="", attempt=attempt, kind="invalid-result"
                )
                writer.add(failure_key(cid, attempt), datasets, attrs)
                status = "failed"
            storing += time.perf_counter() - t0
            outcomes.append((cid, status, error))
        t0 = time.perf_counter()
        writer.commit()
        storing += time.perf_counter() - t0
    return {"outcomes": outcomes, "writer_seconds": storing}
