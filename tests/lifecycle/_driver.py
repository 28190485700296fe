"""Run one cell of the lifecycle matrix in a fresh process; print the promised keys.

    python tests/lifecycle/_driver.py EXECUTOR ENDING DIRECTORY

EXECUTOR: mp-fork, mp-spawn, ppe-fork, ppe-spawn, loky, joblib-main, dask.
ENDING: close, terminate, sigkill, exception, interrupt, fork.
Prints ``{"promised": [...]}``: every key whose ``add()`` returned in a worker.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.lifecycle import _pipelines as p

N = 12
TASKS: dict[str, Callable[[str, int], tuple[str, int]]] = {
    "exception": p.add_then_raise,
    "interrupt": p.add_then_interrupt,
}


def collect(results: Iterable[Callable[[], tuple[str, int]]]) -> tuple[list[str], list[int]]:
    keys: list[str] = []
    pids: list[int] = []
    for get in results:
        try:
            key, pid = get()
        except p.AddedThenFailed as err:
            keys.append(err.key)
            continue
        keys.append(key)
        pids.append(pid)
    return keys, pids


def killed_keys(directory: str) -> list[str]:
    """Keys a task added just before its worker was SIGKILLed (see add_then_die)."""
    log = Path(directory).parent / "killed.log"
    return log.read_text(encoding="utf-8").split() if log.exists() else []


def die_in_one_worker(submit: Callable[[], Any], directory: str) -> list[str]:
    """Run one more task that adds a result, then its worker is SIGKILLed mid-task."""
    pending = submit()
    deadline = time.monotonic() + 60
    while not killed_keys(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    del pending
    time.sleep(0.2)
    return killed_keys(directory)


def parent_writes_before_fork(directory: str) -> str:
    """A writer made (and used) before the pool forks; the children inherit it."""
    p.WRITER = p.ShardWriter(directory, commit_every=5)
    p.WRITER.add("parent-a", *p.payload(100))
    return "parent-a"


def parent_writes_after_fork() -> str:
    """The parent goes on with its own writer after its children used their copies."""
    assert p.WRITER is not None
    p.WRITER.add("parent-b", *p.payload(101))
    p.WRITER.close()
    return "parent-b"


def end_processes(ending: str, pids: list[int]) -> None:
    if ending == "terminate":
        for pid in sorted(set(pids)):
            os.kill(pid, signal.SIGTERM)


def run_pool(method: str, ending: str, directory: str) -> list[str]:
    ctx = multiprocessing.get_context(method)
    task = TASKS.get(ending, p.add_one)
    promised: list[str] = []
    init: dict[str, Any] = {"initializer": p.init_writer, "initargs": (directory,)}
    if ending == "fork":
        # A writer made before the fork, used by the children through the global.
        promised.append(parent_writes_before_fork(directory))
        init = {}
    pool = ctx.Pool(2, **init)
    asyncs = [pool.apply_async(task, (directory, i)) for i in range(N)]
    keys, pids = collect(lambda a=a: a.get(timeout=120) for a in asyncs)
    promised += keys
    if ending == "sigkill":
        promised += die_in_one_worker(
            lambda: pool.apply_async(p.add_then_die, (directory, N)), directory
        )
    if ending in ("terminate", "sigkill"):
        pool.terminate()  # SIGTERM to every worker
    else:
        end_processes(ending, pids)
        pool.close()
        pool.join()
    if ending == "fork":
        promised.append(parent_writes_after_fork())
    return promised


def run_executor(
    make: Callable[..., Any], method: str | None, ending: str, directory: str
) -> list[str]:
    task = TASKS.get(ending, p.add_one)
    promised: list[str] = []
    kwargs: dict[str, Any] = {"initializer": p.init_writer, "initargs": (directory,)}
    if method is not None:
        kwargs["mp_context"] = multiprocessing.get_context(method)
    if ending == "fork":
        promised.append(parent_writes_before_fork(directory))
        del kwargs["initializer"], kwargs["initargs"]
    executor = make(max_workers=2, **kwargs)
    futures: list[Future[tuple[str, int]]] = [executor.submit(task, directory, i) for i in range(N)]
    keys, _pids = collect(lambda f=f: f.result(timeout=120) for f in futures)
    promised += keys
    if ending == "sigkill":
        promised += die_in_one_worker(
            lambda: executor.submit(p.add_then_die, directory, N), directory
        )
    if ending == "terminate":
        # What a job scheduler does to a job's processes: SIGTERM to every worker (also
        # those that ran no task: one left alive would wait for work for ever).
        end_processes(ending, [proc.pid for proc in executor._processes.values()])
    executor.shutdown(wait=True)
    if ending == "fork":
        promised.append(parent_writes_after_fork())
    return promised


# Defined in __main__: cloudpickle sends it by value, with fresh globals for every task,
# so each task makes a writer of its own that nothing ever closes.
MAIN_WRITER: Any = None


def main_add_one(directory: str, i: int) -> tuple[str, int]:
    global MAIN_WRITER
    if MAIN_WRITER is None:
        MAIN_WRITER = p.ShardWriter(directory, commit_every=5)
    MAIN_WRITER.add(p.key_of(i), *p.payload(i))
    return p.key_of(i), os.getpid()


def run_joblib_main(ending: str, directory: str) -> list[str]:
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    out = Parallel(n_jobs=2, backend="loky")(delayed(main_add_one)(directory, i) for i in range(N))
    keys = [k for k, _ in out]
    # "terminate" is loky's own: it kills the workers (SIGTERM from outside could hit
    # an idle worker holding the task queue's lock, and shutdown would wait for ever).
    get_reusable_executor().shutdown(wait=True, kill_workers=ending == "terminate")
    return keys


def run_dask(ending: str, directory: str) -> list[str]:
    import logging

    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    task = TASKS.get(ending, p.add_one)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        futures = [client.submit(task, directory, i, pure=False) for i in range(N)]
        keys, _pids = collect(lambda f=f: f.result(timeout=120) for f in futures)
        if ending == "sigkill":
            keys += die_in_one_worker(
                lambda: client.submit(p.add_then_die, directory, N, pure=False, retries=0),
                directory,
            )
        if ending == "terminate":
            client.restart()
    return keys


def main() -> None:
    executor, ending, directory = sys.argv[1:4]
    if executor.startswith("mp-"):
        promised = run_pool(executor[3:], ending, directory)
    elif executor.startswith("ppe-"):
        promised = run_executor(ProcessPoolExecutor, executor[4:], ending, directory)
    elif executor == "loky":
        from joblib.externals.loky import ProcessPoolExecutor as LokyExecutor

        promised = run_executor(LokyExecutor, None, ending, directory)
    elif executor == "joblib-main":
        promised = run_joblib_main(ending, directory)
    elif executor == "dask":
        promised = run_dask(ending, directory)
    else:
        raise SystemExit(f"unknown executor {executor!r}")
    print(json.dumps({"promised": promised}))


if __name__ == "__main__":
    main()
