"""Where batches run: one small interface, a local process pool and a Dask cluster.

The sweep logic (what is pending, retries, failure records, merging) exists once, in
:mod:`optimizer.sweep`; an engine only runs ``run_batch`` calls and reports, per
batch, either the outcomes or how the process running it died.
"""

from __future__ import annotations

import abc
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from h5guard import Sandbox, WriterIdentity
from optimizer._worker import BatchReply, ConfigOutcome

log = logging.getLogger(__name__)

Batch = Sequence[Mapping[str, Any]]
BATCH_TARGET = "optimizer._worker:run_batch"
WARM_TARGET = "optimizer._worker:warm_up_worker"
DEFAULT_CONFIG_TIMEOUT = 3600.0
DEFAULT_WORKER_MEMORY = 4 * 1024**3
DEFAULT_CHECK_TIMEOUT = 120.0  # per file checked in a worker (h5guard's own default)


class EngineError(RuntimeError):
    """The engine cannot run: no cluster, or workers that cannot reach the temp dir."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Outcomes of a batch, or (``failure`` set) why its worker never answered."""

    outcomes: tuple[ConfigOutcome, ...] = ()
    failure: str | None = None  # "crashed" | "timeout" | "memory" | "error" | "killed"
    detail: str = ""
    writer_seconds: float = 0.0  # time the worker spent in h5guard's ShardWriter

    @staticmethod
    def from_reply(reply: BatchReply) -> BatchResult:
        return BatchResult(
            outcomes=tuple((str(c), str(s), str(e)) for c, s, e in reply["outcomes"]),
            writer_seconds=float(reply["writer_seconds"]),
        )


class Engine(abc.ABC):
    """Runs batches of configs in worker processes."""

    workers: int
    # True where a reported worker death already went through the engine's own retries.
    deaths_are_final = False

    @abc.abstractmethod
    def run(
        self, temp_dir: str, batches: Sequence[Batch], attempts: Mapping[str, int]
    ) -> Iterator[tuple[int, BatchResult]]:
        """Run every batch; yield ``(index, result)`` as each finishes."""

    def warm_up(self) -> None:  # noqa: B027 - optional hook
        """Start the workers and import PyWake in each (benchmarks time without it)."""

    def checker(self) -> Sandbox | None:
        """A sandbox for h5guard's checks that reuses the engine's processes, if it has any."""
        return None

    def gone_writers(self) -> tuple[WriterIdentity, ...]:
        """Worker processes that ran batches and are known to be dead now.

        The merge may then take their uncommitted batches from the temp dir at once,
        even where their journals' locks and processes cannot be seen (another node).

        Returns
        -------
        tuple of WriterIdentity
            Empty unless the engine knows (Dask's scheduler does).
        """
        return ()

    def check_temp_dir(self, temp_dir: str) -> None:  # noqa: B027 - optional hook
        """Raise :class:`EngineError` if workers cannot write ``temp_dir``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LocalEngine(Engine):
    """Worker processes on this machine, through h5guard's sandbox pool.

    Each worker is a long-lived child with one BLAS thread and a memory limit; a
    worker that dies (killed, out of memory, segfault) is replaced and the batch it
    was running is reported as ``crashed``, without disturbing the other workers.
    """

    def __init__(
        self,
        *,
        workers: int | None = None,
        config_timeout: float = DEFAULT_CONFIG_TIMEOUT,
        memory_limit: int = DEFAULT_WORKER_MEMORY,
    ) -> None:
        self.workers = workers or os.cpu_count() or 1
        # The workers run the user's own code (a site = "package.module:function" may
        # live beside their script, or read their settings), not untrusted files: they
        # get this process's environment and its sys.path, as multiprocessing's would,
        # appended after site-packages so nothing there shadows numpy, h5py or PyWake.
        self._box = Sandbox(
            workers=self.workers,
            timeout=config_timeout,
            memory_limit=memory_limit,
            pass_env=tuple(os.environ),
            path=[os.path.abspath(p or os.curdir) for p in sys.path],
        )

    def run(
        self, temp_dir: str, batches: Sequence[Batch], attempts: Mapping[str, int]
    ) -> Iterator[tuple[int, BatchResult]]:
        calls = [(temp_dir, list(batch), dict(attempts)) for batch in batches]
        for index, result in self._box.map(BATCH_TARGET, calls):
            if result.ok:
                yield index, BatchResult.from_reply(result.value)
            else:
                yield index, BatchResult(failure=result.failure, detail=result.detail)

    def checker(self) -> Sandbox:
        # The workers have numpy and h5py loaded already: a check of the merged output
        # in one of them saves starting a checker interpreter (~0.2 s) at the end.
        return self._box.share(timeout=DEFAULT_CHECK_TIMEOUT)

    def warm_up(self) -> None:
        # As many calls as workers are in flight at once, so each child gets one.
        for _, result in self._box.map(WARM_TARGET, [()] * self.workers):
            if not result.ok:
                raise EngineError(f"a worker failed to start: {result.failure} {result.detail}")

    def close(self) -> None:
        self._box.close()
