"""Run batches on a Dask distributed cluster (a LocalCluster, or an existing scheduler).

Dask is the one engine we measured that survives a SIGKILLed worker without losing
work (the scheduler reschedules the task, the nanny restarts the worker) and isolates
a task that kills every worker it runs on (``KilledWorker`` after
``distributed.scheduler.allowed-failures`` tries). Results never travel through the
scheduler: workers commit shards to the shared temp dir, and resume reads the files.

A worker killed on another node leaves its batch's journal in the temp dir, and from
the client's node h5guard cannot see that its writer is gone (its lock may be
node-local, its pid is another machine's). Dask can: every batch first logs the
identity of the worker process running it (topic :data:`WRITERS_TOPIC`), and at the
end a worker that ran a batch and is no longer one of the scheduler's is dead, so the
sweep's merge takes its batch (:meth:`DaskEngine.gone_writers`).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster, as_completed
from distributed.scheduler import KilledWorker

from h5guard import WriterIdentity, writer_identity
from optimizer._worker import BatchReply, run_batch
from optimizer.engines import Batch, BatchResult, Engine, EngineError

log = logging.getLogger(__name__)

_SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def probe_temp_dir(temp_dir: str) -> str:
    """Run on a worker: create, read back and remove a file in ``temp_dir``."""
    name = Path(temp_dir) / f".probe-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        name.write_text("ok", encoding="utf-8")
        if name.read_text(encoding="utf-8") != "ok":
            return f"{socket.gethostname()}: wrote {name} but read back something else"
        name.unlink()
    except OSError as err:
        return f"{socket.gethostname()}: cannot write {temp_dir}: {err.strerror or err}"
    return ""


WRITERS_TOPIC = "h5guard-writers"


def _identity() -> dict[str, Any]:
    return writer_identity().to_json()


def run_batch_logged(
    temp_dir: str, configs: Sequence[Mapping[str, Any]], attempts: Mapping[str, int]
) -> BatchReply:
    """``run_batch``, after telling the scheduler which process runs it."""
    try:
        from distributed import get_worker

        get_worker().log_event(WRITERS_TOPIC, _identity())
    except ValueError:  # not in a Dask worker (called directly)
        pass
    return run_batch(temp_dir, configs, attempts)


class DaskEngine(Engine):
    """Batches as Dask tasks; without ``scheduler``, a LocalCluster of ``workers`` processes."""

    # Dask already retried a task that killed its worker allowed-failures times.
    deaths_are_final = True

    def __init__(self, *, workers: int | None = None, scheduler: str | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._cluster: LocalCluster | None = None
        try:
            if scheduler is None:
                self._cluster = LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    env=_SINGLE_THREAD,
                )
                self._client = Client(self._cluster)
            else:
                self._client = Client(scheduler, timeout="30s")
                n = len(self._client.scheduler_info().get("workers", {}))
                self.workers = max(1, n)
        except (OSError, TimeoutError) as err:
            self.close()
            where = scheduler or "a local cluster"
            raise EngineError(f"cannot connect to {where}: {err}") from None

    def check_temp_dir(self, temp_dir: str) -> None:
        absolute = os.path.abspath(temp_dir)
        answers: Mapping[str, str] = self._client.run(probe_temp_dir, absolute)
        problems = [text for text in answers.values() if text]
        if not answers:
            raise EngineError("the Dask cluster has no workers")
        if problems:
            raise EngineError(
                f"{absolute}: Dask workers cannot use the temp dir ({problems[0]}); "
                "it must be on a file system shared by every worker"
            )

    def run(
        self, temp_dir: str, batches: Sequence[Batch], attempts: Mapping[str, int]
    ) -> Iterator[tuple[int, BatchResult]]:
        absolute = os.path.abspath(temp_dir)
        futures: dict[Any, int] = {}
        for index, batch in enumerate(batches):
            future = self._client.submit(
                run_batch_logged, absolute, list(batch), dict(attempts), pure=False, retries=0
            )
            futures[future] = index
        try:
            for future in as_completed(list(futures)):
                index = futures[future]
                try:
                    outcomes = future.result()
                except KilledWorker as err:
                    yield index, BatchResult(failure="killed", detail=str(err).split("\n")[0])
                except Exception as err:
                    yield index, BatchResult(failure="error", detail=f"{type(err).__name__}: {err}")
                else:
                    yield index, BatchResult.from_reply(outcomes)
                # Forget the result at once: a key the client still holds is recomputed
                # when the worker keeping it dies, which would run the batch twice.
                future.release()
        finally:
            unfinished = [f for f in futures if not f.done()]
            if unfinished:
                self._client.cancel(unfinished)

    def gone_writers(self) -> tuple[WriterIdentity, ...]:
        """Worker processes that ran a batch and are no longer the scheduler's.

        Returns
        -------
        tuple of WriterIdentity
            Sorted by host and pid; empty if the scheduler cannot be asked.
        """
        try:
            events = self._client.get_events(WRITERS_TOPIC)
            alive = self._client.run(_identity)
        except Exception as err:  # a lost scheduler: the lease rule still applies
            log.warning("cannot ask the Dask scheduler which workers are gone: %s", err)
            return ()
        ran = {WriterIdentity.from_json(msg) for _, msg in events}
        live = {WriterIdentity.from_json(msg) for msg in alive.values()}
        gone = [w for w in ran - live if w is not None]
        return tuple(sorted(gone, key=lambda w: (w.host, w.pid)))

    def close(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
